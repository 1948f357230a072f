"""Atomic checkpoints with manifests, retention and the choice of the checkpoint to resume from.

Layout under checkpoint.dir:

    step-00000200/                  a complete checkpoint (only ever created by a rename)
        adapter_model.safetensors   LoRA weights (a PEFT adapter directory: loadable as is)
        adapter_config.json
        optimizer.pt  scheduler.pt  rng.pt  rng.json
        manifest.json               written last: step, data position, plan, sha256 and size of every file,
                                    and its own checksum
    .tmp-step-00000300-<pid>/       a checkpoint being written (removed on the next start if it was left behind)
    corrupt-step-00000300-<time>/   a checkpoint that failed verification, moved aside so the name is free again

A checkpoint is written into a temporary directory, each file and the directory are fsynced, the directory is
renamed to its final name and the parent fsynced: a crash at any point leaves either the complete checkpoint or
an ignored temporary directory. On start the newest checkpoint whose manifest and file checksums verify is used;
newer ones that fail are logged, moved aside and skipped. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h100fleet.trainer import logs

FORMAT = 1
MANIFEST = "manifest.json"
NAME = re.compile(r"^step-(\d{8,})$")
log = logs.get("checkpoint")


def name_for(step: int) -> str:
    return f"step-{step:08d}"


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to path through a temporary file in the same directory, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


@dataclass(frozen=True)
class Found:
    path: Path
    manifest: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.manifest["step"])


def write_dir(final: Path, writer: Callable[[Path], None], manifest: dict[str, Any]) -> float:
    """Create directory final atomically: writer(tmp) fills a temporary sibling, the manifest (with the size and
    sha256 of every file) is added last, everything is fsynced and the directory renamed. A directory already at
    final is replaced. Returns the seconds taken."""
    started = time.monotonic()
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer(tmp)
    files = {}
    for path in sorted(tmp.iterdir()):
        if path.name == MANIFEST or not path.is_file():
            continue
        fsync_path(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {**manifest, "format": FORMAT, "files": files, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_path(tmp)
    if final.exists():
        old = parent / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_path(parent)
    return time.monotonic() - started


def verify(path: Path, check_hashes: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) for a complete, intact checkpoint directory, else (None, why not)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no manifest.json (incomplete)"
    except (OSError, ValueError) as exc:
        return None, f"manifest.json unreadable ({type(exc).__name__})"
    problem = _manifest_problem(path, manifest) or _files_problem(path, manifest, check_hashes)
    return (None, problem) if problem else (manifest, None)


def _manifest_problem(path: Path, manifest: Any) -> str | None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"manifest format is not {FORMAT}"
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        return "manifest checksum mismatch"
    match = NAME.match(path.name)
    if match and int(match.group(1)) != manifest.get("step"):
        return f"manifest step {manifest.get('step')} does not match the directory name"
    return None


def _files_problem(path: Path, manifest: dict[str, Any], check_hashes: bool) -> str | None:
    for name, meta in sorted(manifest.get("files", {}).items()):
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != meta["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, manifest says {meta['bytes']}"
        if check_hashes and sha256_file(file) != meta["sha256"]:
            return f"{name} checksum mismatch"
    return None


def candidates(directory: Path) -> list[tuple[int, Path]]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for entry in directory.iterdir():
        match = NAME.match(entry.name)
        if match and entry.is_dir():
            out.append((int(match.group(1)), entry))
    return sorted(out, reverse=True)


def clean_partial(directory: Path) -> list[Path]:
    """Remove temporary directories that an interrupted write left behind."""
    removed = []
    directory = Path(directory)
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name.startswith((".tmp-", ".old-")) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def latest_valid(directory: Path, move_aside: bool = True) -> Found | None:
    """The newest checkpoint that verifies. Newer ones that fail are logged and (move_aside) renamed to
    corrupt-<name>-<time> so that their step can be written again."""
    for step, path in candidates(directory):
        manifest, problem = verify(path)
        if manifest is not None:
            return Found(path, manifest)
        log.warning("skipping checkpoint %s (step %d): %s", path, step, problem)
        if move_aside:
            aside = path.with_name(f"corrupt-{path.name}-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                os.rename(path, aside)
                log.warning("moved %s aside to %s", path.name, aside.name)
            except OSError as exc:
                log.warning("could not move %s aside: %s", path, exc)
    return None


def prune(directory: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest keep_last checkpoints (the oldest first)."""
    removed = []
    for _step, path in candidates(directory)[keep_last:]:
        doomed = path.with_name(f".tmp-delete-{path.name}")
        os.rename(path, doomed)  # no half-deleted directory ever carries a checkpoint name
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path)
    return removed
