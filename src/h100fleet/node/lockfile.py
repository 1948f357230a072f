"""Reading hash-locked requirement files and requirement inputs (stdlib only: this runs inside stack venvs too)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])?\s*==\s*(?P<version>[^\s;\\]+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    extras: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return normalize(self.name)

    def __str__(self) -> str:
        extras = f"[{','.join(self.extras)}]" if self.extras else ""
        return f"{self.name}{extras}=={self.version}"


def _logical_lines(text: str) -> list[str]:
    """Requirement lines with backslash continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_pins(text: str) -> dict[str, Pin]:
    """Every ``name[extras]==version`` line (hashes kept); option lines and unpinned lines are ignored."""
    pins: dict[str, Pin] = {}
    for line in _logical_lines(text):
        match = _PIN.match(line)
        if not match:
            continue
        extras = tuple(e.strip() for e in (match["extras"] or "").split(",") if e.strip())
        pin = Pin(match["name"], match["version"], extras, tuple(_HASH.findall(line)))
        pins[pin.key] = pin
    return pins


def requirement_names(text: str) -> list[str]:
    """The project names a requirements input asks for, pinned or not (option lines skipped)."""
    names = []
    for line in _logical_lines(text):
        if line.startswith("-"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(normalize(match[1]))
    return names


def lock_hash(path: Path) -> str:
    """The identity of a lock: sha256 of its bytes (the role keys venvs and idempotence on it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def unhashed(pins: dict[str, Pin]) -> list[str]:
    """Pins without a hash (a lock for --require-hashes must have none)."""
    return sorted(str(p) for p in pins.values() if not p.hashes)
