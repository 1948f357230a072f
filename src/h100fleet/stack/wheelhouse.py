"""A wheelhouse for air-gapped fleets: every wheel a lock needs on linux x86_64, downloaded and hash-checked.

`h100fleet stack wheelhouse <id> --python 3.11 --dest DIR` fills DIR with, for each pin of the stack's lock, the one
wheel a node of that Python installs (its sha256 must be one of the pin's hashes), so that python_stack can build the
venv with `--no-index --find-links` (python_stack_source: wheelhouse).
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
from pathlib import Path

from h100fleet.node.lockfile import Pin, parse_pins
from h100fleet.stack.index import PyPIIndex


def _tags(filename: str) -> tuple[str, str, str] | None:
    parts = filename[: -len(".whl")].split("-")
    return (parts[-3], parts[-2], parts[-1]) if filename.endswith(".whl") and len(parts) >= 5 else None


def wheel_rank(filename: str, python: str) -> int | None:
    """How well a wheel fits CPython `python` on manylinux x86_64 (lower is better); None when it does not fit."""
    tags = _tags(filename)
    if tags is None:
        return None
    pys, abis, plats = (set(t.split(".")) for t in tags)
    if not any(p == "any" or (p.startswith(("manylinux", "linux")) and p.endswith("x86_64")) for p in plats):
        return None
    minor = int(python.split(".")[1])
    cp = f"cp3{minor}"
    if cp in pys and abis & {cp, "abi3", "none"}:
        return 0  # built for exactly this Python
    if "abi3" in abis and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= minor for p in pys):
        return 1  # stable ABI of an older Python
    generic = {"py3"} | {f"py3{m}" for m in range(minor + 1)}  # py39 installs on 3.12, as pip's tags say
    if "none" in abis and pys & generic:
        return 1 if "any" not in plats else 2  # version-independent (platform-specific first)
    return None


def choose(files: list[dict], pin: Pin, python: str) -> dict | None:
    """The index file a node would install for this pin: a fitting wheel whose hash the lock lists."""
    candidates = []
    for f in files:
        digest = f.get("hashes", {}).get("sha256")
        rank = wheel_rank(f["filename"], python)
        if rank is not None and digest in pin.hashes:
            candidates.append((rank, f["filename"], f))
    return min(candidates)[2] if candidates else None


def fill(lock_text: str, python: str, dest: Path, index: PyPIIndex | None = None) -> dict[str, list[str]]:
    """Download the wheels of a lock into dest (kept when already there with the right hash)."""
    index = index or PyPIIndex()
    dest.mkdir(parents=True, exist_ok=True)
    report: dict[str, list[str]] = {"downloaded": [], "present": [], "missing": []}
    for pin in sorted(parse_pins(lock_text).values(), key=lambda p: p.key):
        files = [f for f in index._project(pin.name)["files"] if f"-{pin.version}-" in f["filename"]]
        chosen = choose(files, pin, python)
        if chosen is None:
            report["missing"].append(f"{pin} (no wheel for CPython {python} on linux x86_64 among its hashes)")
            continue
        target = dest / chosen["filename"]
        digest = chosen["hashes"]["sha256"]
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            report["present"].append(target.name)
            continue
        partial = target.with_suffix(".whl.partial")
        with index._open(urllib.request.Request(chosen["url"])) as response, open(partial, "wb") as out:
            sha = hashlib.sha256()
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != digest:
            partial.unlink()
            raise ValueError(f"{chosen['filename']}: sha256 {sha.hexdigest()} is not the lock's {digest}")
        partial.replace(target)
        report["downloaded"].append(target.name)
    return report
