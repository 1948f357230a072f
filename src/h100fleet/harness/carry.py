"""Carry a set of files (a stack's wheelhouse, an interpreter archive) to a machine in parts of bounded size.

A lent GPU machine has no network and takes at most 64 MiB per call, while a stack's wheels are gigabytes. So:

    split FILES... --dest DIR        cut the files, one after another, into parts of <= 58 MiB with a manifest
                                     (sha256 of every part and of every file, and where each file lies in the stream)
    receive PART --manifest M --store S   on the machine, one part per call: check its sha256, keep it in S
    missing --manifest M --store S   which parts S still lacks
    assemble --manifest M --store S --dest D   once every part is in: rebuild each file and check its sha256

A part whose sha256 is not the manifest's is refused by name, before it is kept; assemble refuses to start while a
part is missing or bad, and removes any rebuilt file whose sha256 is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

MIB = 1 << 20
# A call carries 64 MiB in all, the checkout (about 5 MiB) included.
DEFAULT_PART_SIZE = 58 * MIB
MANIFEST = "manifest.json"
_CHUNK = 4 * MIB


class CarryError(Exception):
    """A part or file that is missing or whose contents are not what the manifest says."""


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def part_name(index: int) -> str:
    return f"part-{index:04d}"


def split(files: Iterable[Path], dest: Path, part_size: int = DEFAULT_PART_SIZE) -> dict:
    """Write `files` (in the order given) as one stream cut into parts under `dest`, and dest/manifest.json."""
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, got {part_size}")
    files = [Path(f) for f in files]
    names = [f.name for f in files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two files share a name: {', '.join(duplicates)}")
    dest.mkdir(parents=True, exist_ok=True)
    entries, parts = [], []
    offset, index, filled = 0, 0, 0
    out, part_sha = None, hashlib.sha256()

    def close_part() -> None:
        nonlocal out, part_sha, index, filled
        if out is None:
            return
        out.close()
        parts.append({"name": part_name(index), "size": filled, "sha256": part_sha.hexdigest()})
        out, part_sha, index, filled = None, hashlib.sha256(), index + 1, 0

    for path in files:
        size, file_sha = path.stat().st_size, hashlib.sha256()
        entries.append({"name": path.name, "offset": offset, "size": size})
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                file_sha.update(chunk)
                while chunk:
                    if out is None:
                        out = open(dest / part_name(index), "wb")  # noqa: SIM115 (closed by close_part)
                    take = chunk[: part_size - filled]
                    out.write(take)
                    part_sha.update(take)
                    filled += len(take)
                    chunk = chunk[len(take) :]
                    if filled == part_size:
                        close_part()
        entries[-1]["sha256"] = file_sha.hexdigest()
        offset += size
    close_part()
    manifest = {"part_size": part_size, "total_size": offset, "parts": parts, "files": entries}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CarryError(f"{path}: not a readable carry manifest ({exc})") from exc
    for key in ("parts", "files", "total_size"):
        if key not in manifest:
            raise CarryError(f"{path}: carry manifest lacks {key!r}")
    return manifest


def _part(manifest: dict, name: str) -> dict:
    for part in manifest["parts"]:
        if part["name"] == name:
            return part
    raise CarryError(f"{name}: not a part of this manifest (it has {len(manifest['parts'])} parts)")


def check_part(path: Path, manifest: dict) -> None:
    """Raise CarryError naming the part unless its size and sha256 are the manifest's."""
    want = _part(manifest, path.name)
    if not path.is_file():
        raise CarryError(f"{path.name}: missing")
    size = path.stat().st_size
    if size != want["size"]:
        raise CarryError(f"{path.name}: {size} bytes, the manifest says {want['size']}")
    digest = sha256_file(path)
    if digest != want["sha256"]:
        raise CarryError(f"{path.name}: sha256 {digest} is not the manifest's {want['sha256']}")


def receive(path: Path, manifest: dict, store: Path) -> Path:
    """Check one part and keep it in `store` (copied: the source may be read-only). Returns the kept path."""
    check_part(path, manifest)
    store.mkdir(parents=True, exist_ok=True)
    target = store / path.name
    tmp = target.with_name(target.name + ".tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
    tmp.replace(target)
    return target


def missing(manifest: dict, store: Path) -> list[str]:
    """Parts not yet in `store` (by presence and size; `assemble` checks their sha256)."""
    result = []
    for part in manifest["parts"]:
        path = store / part["name"]
        if not path.is_file() or path.stat().st_size != part["size"]:
            result.append(part["name"])
    return result


def assemble(manifest: dict, store: Path, dest: Path) -> list[Path]:
    """Rebuild every file of the manifest into `dest` from the parts in `store`; check every part and file."""
    absent = missing(manifest, store)
    if absent:
        raise CarryError(f"{len(absent)} parts missing: {', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}")
    for part in manifest["parts"]:
        check_part(store / part["name"], manifest)
    dest.mkdir(parents=True, exist_ok=True)
    part_size = manifest["part_size"]
    written = []
    for entry in manifest["files"]:
        target = dest / entry["name"]
        sha, remaining, position = hashlib.sha256(), entry["size"], entry["offset"]
        with open(target, "wb") as out:
            while remaining:
                index, within = divmod(position, part_size)
                with open(store / part_name(index), "rb") as f:
                    f.seek(within)
                    chunk = f.read(min(remaining, part_size - within))
                if not chunk:
                    raise CarryError(f"{part_name(index)}: ends before {entry['name']} does")
                out.write(chunk)
                sha.update(chunk)
                remaining -= len(chunk)
                position += len(chunk)
        if sha.hexdigest() != entry["sha256"]:
            target.unlink()
            raise CarryError(f"{entry['name']}: sha256 {sha.hexdigest()} is not the manifest's {entry['sha256']}")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu/carry", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="cut files into parts with a manifest")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--dest", type=Path, required=True)
    s.add_argument("--part-mib", type=int, default=DEFAULT_PART_SIZE // MIB)
    for name in ("receive", "missing", "assemble"):
        q = sub.add_parser(name)
        q.add_argument("--manifest", type=Path, required=True)
        q.add_argument("--store", type=Path, required=True)
        if name == "receive":
            q.add_argument("parts", nargs="+", type=Path)
        if name == "assemble":
            q.add_argument("--dest", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        if args.command == "split":
            m = split(args.files, args.dest, args.part_mib * MIB)
            print(f"{len(m['files'])} files, {m['total_size']} bytes -> {len(m['parts'])} parts in {args.dest}")
            return 0
        manifest = load_manifest(args.manifest)
        if args.command == "receive":
            for part in args.parts:
                receive(part, manifest, args.store)
            left = missing(manifest, args.store)
            print(f"received {', '.join(x.name for x in args.parts)}; {len(left)} of {len(manifest['parts'])} to go")
        elif args.command == "missing":
            left = missing(manifest, args.store)
            print(" ".join(left) if left else "none")
            return 1 if left else 0
        else:
            written = assemble(manifest, args.store, args.dest)
            print(f"assembled {len(written)} files, sha256 checked, into {args.dest}")
    except CarryError as exc:
        print(f"carry: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
