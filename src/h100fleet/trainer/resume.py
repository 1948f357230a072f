"""What a config can resume, checked at `--check` and at every start before anything heavy is imported.

A checkpoint holds LoRA weights of one rank on a set of modules of one model. A config that names another rank,
other target modules or another model cannot continue from it: loading would fail with a traceback, exit 1 and be
restarted by systemd, over and over. conflicts() turns each such change into a config issue (exit 78, which the
unit does not restart) that names the field, the value and what the checkpoints hold:

    lora.r = 16: expected 64, the rank of the checkpoints in /var/lib/h100fleet/trainer/checkpoints (newest:
    step 200); to train another rank, start a new run in an empty checkpoint.dir (or move the checkpoints away)

stray() finds checkpoints under the output directory outside checkpoint.dir: when checkpoint.dir holds none, the
start reports them (log and status file) before it trains from step 0, so that a moved or renamed checkpoint.dir is
noticed. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from h100fleet.trainer import checkpoint
from h100fleet.trainer.config import Config, Issue

# Directories under the output directory that never hold checkpoints (and can be large).
_SKIP = {"data-cache", "tensorboard", "cache", "final"}
_DEPTH = 4


def model_config_sha256(model_path: str) -> str | None:
    """The digest of the model's config.json (architecture and sizes), None where it cannot be read."""
    try:
        return hashlib.sha256((Path(model_path) / "config.json").read_bytes()).hexdigest()
    except OSError:
        return None


def identity(cfg: Config) -> dict[str, Any]:
    """What a checkpoint records (manifest "resume") so that a later start can tell whether it can continue."""
    return {
        "model_path": cfg.model.path,
        "model_config_sha256": model_config_sha256(cfg.model.path),
        "lora_r": cfg.lora.r,
        "lora_target_modules": sorted(cfg.lora.target_modules),
    }


def recorded(found: checkpoint.Found) -> dict[str, Any]:
    """The identity a checkpoint was written with; for checkpoints without it, read off its adapter_config.json."""
    if isinstance(found.manifest.get("resume"), dict):
        return found.manifest["resume"]
    out: dict[str, Any] = {"model_path": found.manifest.get("model_path"), "model_config_sha256": None}
    try:
        adapter = json.loads((found.path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        adapter = {}
    out["lora_r"] = adapter.get("r")
    modules = adapter.get("target_modules")
    out["lora_target_modules"] = sorted(modules) if isinstance(modules, list) else None
    return out


def conflicts(cfg: Config, found: checkpoint.Found) -> list[Issue]:
    """Each setting of cfg that the checkpoint found cannot continue with, as a config issue."""
    rec, now = recorded(found), identity(cfg)
    where = f"the checkpoints in {found.path.parent} (newest: step {found.step})"
    fresh = "start a new run in an empty checkpoint.dir (or move the checkpoints away)"
    issues = []
    if rec.get("lora_r") is not None and rec["lora_r"] != now["lora_r"]:
        issues.append(
            Issue("lora.r", cfg.lora.r, f"{rec['lora_r']}, the rank of {where}; to train another rank, {fresh}")
        )
    if rec.get("lora_target_modules") is not None and rec["lora_target_modules"] != now["lora_target_modules"]:
        issues.append(
            Issue(
                "lora.target_modules",
                list(cfg.lora.target_modules),
                f"[{', '.join(rec['lora_target_modules'])}] (in any order), the modules of {where}; to adapt other "
                f"modules, {fresh}",
            )
        )
    old_digest, new_digest = rec.get("model_config_sha256"), now["model_config_sha256"]
    if old_digest and new_digest:
        changed = old_digest != new_digest
        what = f"a model with the config.json of {rec.get('model_path')}"
    else:
        changed = rec.get("model_path") not in (None, now["model_path"])
        what = f"{rec.get('model_path')}"
    if changed:
        issues.append(Issue("model.path", cfg.model.path, f"{what}, the model of {where}; for another model, {fresh}"))
    return issues


def newest(directory: str | Path) -> checkpoint.Found | None:
    """The newest checkpoint whose manifest verifies, read only (no file hashes, nothing moved): for --check."""
    for _step, path in checkpoint.candidates(Path(directory)):
        manifest, _problem = checkpoint.verify(path, check_hashes=False)
        if manifest is not None:
            return checkpoint.Found(path, manifest)
    return None


def stray(cfg: Config) -> list[checkpoint.Found]:
    """The newest checkpoint of each directory under train.output_dir (up to 4 levels down), other than
    checkpoint.dir, that holds checkpoints: newest first."""
    root, own = Path(cfg.train.output_dir), Path(cfg.checkpoint.dir).resolve()
    found = []
    if not root.is_dir():
        return []
    for top, dirs, _files in os.walk(root):
        here = Path(top)
        depth = len(here.relative_to(root).parts)
        dirs[:] = [] if depth >= _DEPTH else sorted(d for d in dirs if d not in _SKIP and not d.startswith("."))
        if here.resolve() == own:
            dirs[:] = []
            continue
        if any(checkpoint.NAME.match(d) for d in dirs):
            dirs[:] = [d for d in dirs if not checkpoint.NAME.match(d)]
            best = newest(here)
            if best is not None:
                found.append(best)
    return sorted(found, key=lambda f: f.step, reverse=True)


def stray_message(cfg: Config, strays: list[checkpoint.Found]) -> str:
    where = "; ".join(f"{f.path.parent} (newest: step {f.step})" for f in strays)
    return (
        f"checkpoint.dir {cfg.checkpoint.dir} holds no checkpoint, but {where} does: training starts over from "
        f"step 0; to resume instead, set checkpoint.dir: {strays[0].path.parent}"
    )
