"""A readable summary of a bump from one stack to another: what changes, and what the fleet must do for it."""

from __future__ import annotations

from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from h100fleet.node.lockfile import Pin
from h100fleet.stack.knowledge import driver_key
from h100fleet.stack.manifest import Stack

# Packages a reader looks for first in a bump.
KEY_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "trl",
    "unsloth",
    "unsloth-zoo",
    "bitsandbytes",
    "datasets",
    "xformers",
    "flash-attn",
    "triton",
    "numpy",
)


@dataclass
class StackDiff:
    old: Stack
    new: Stack
    python: str
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def driver_change(self) -> bool:
        return self.old.min_driver != self.new.min_driver

    @property
    def driver_bump(self) -> bool:
        """The new stack needs a newer driver than the old one declared: install it and reboot."""
        return driver_key(self.new.min_driver) > driver_key(self.old.min_driver)

    @property
    def cuda_change(self) -> bool:
        return self.old.cuda_runtime != self.new.cuda_runtime

    def to_json(self) -> dict:
        return {
            "old": self.old.id,
            "new": self.new.id,
            "python": self.python,
            "added": self.added,
            "removed": self.removed,
            "changed": {k: {"old": a, "new": b} for k, (a, b) in self.changed.items()},
            "unchanged": self.unchanged,
            "min_driver": {"old": self.old.min_driver, "new": self.new.min_driver},
            "cuda_runtime": {"old": self.old.cuda_runtime, "new": self.new.cuda_runtime},
            "driver_bump": self.driver_bump,
            "reboot_needed": self.driver_bump,
        }

    def render(self) -> str:
        lines = [f"# Stack bump: {self.old.id} -> {self.new.id} (Python {self.python})", ""]
        drv = (
            f"{self.old.min_driver} -> {self.new.min_driver}"
            if self.driver_change
            else f"{self.new.min_driver} (unchanged)"
        )
        cuda = (
            f"{self.old.cuda_runtime} -> {self.new.cuda_runtime}"
            if self.cuda_change
            else f"{self.new.cuda_runtime} (unchanged)"
        )
        lines += [f"- minimum driver: {drv}", f"- CUDA runtime of the wheels: {cuda}"]
        if self.driver_bump:
            lines.append(
                f"- reboot needed: YES: nodes need driver >= {self.new.min_driver} before the switch "
                "(nvidia_driver role, then a reboot)"
            )
        else:
            lines.append("- reboot needed: no: pre-stage the venv, switch `current`, restart the trainer")
        lines.append(
            f"- packages: {len(self.changed)} changed, {len(self.added)} added, {len(self.removed)} removed, "
            f"{self.unchanged} unchanged"
        )
        key = [k for k in KEY_PACKAGES if k in self.changed or k in self.added or k in self.removed]
        if key:
            lines += ["", "## Key packages", "", "| package | old | new | change |", "|---|---|---|---|"]
            for k in key:
                old = self.changed.get(k, (self.removed.get(k, "-"), None))[0]
                new = self.changed[k][1] if k in self.changed else self.added.get(k, "-")
                lines.append(f"| {k} | {old} | {new} | {_kind(old, new)} |")
        rest = sorted(set(self.changed) - set(key))
        if rest:
            lines += ["", "## Other changes", ""]
            lines += [f"- {k}: {self.changed[k][0]} -> {self.changed[k][1]} ({_kind(*self.changed[k])})" for k in rest]
        for title, items in (("Added", self.added), ("Removed", self.removed)):
            extra = sorted(set(items) - set(key))
            if extra:
                lines += ["", f"## {title}", "", ", ".join(f"{k} {items[k]}" for k in extra)]
        return "\n".join(lines) + "\n"


def _kind(old: str | None, new: str | None) -> str:
    if old in (None, "-"):
        return "added"
    if new in (None, "-"):
        return "removed"
    try:
        a, b = Version(old), Version(new)
    except InvalidVersion:
        return "changed"
    if a == b:
        return "same"
    direction = "upgrade" if b > a else "DOWNGRADE"
    part = "major" if a.major != b.major else "minor" if a.minor != b.minor else "patch"
    return f"{part} {direction}"


def diff(old: Stack, new: Stack, python: str | None = None) -> StackDiff:
    """Compare two stacks' locks for one Python version (default: the newest both support)."""
    common = [p for p in new.python if p in old.python]
    if python is None:
        if not common:
            raise ValueError(
                f"{old.id} ({', '.join(old.python)}) and {new.id} ({', '.join(new.python)}) share no "
                "Python version: pass --python to compare the locks of different versions"
            )
        python = max(common, key=lambda v: tuple(int(x) for x in v.split(".")))
    a = _pins(old, python if python in old.python else old.python[0])
    b = _pins(new, python if python in new.python else new.python[0])
    result = StackDiff(old, new, python)
    for name in sorted(set(a) | set(b)):
        if name not in a:
            result.added[name] = b[name].version
        elif name not in b:
            result.removed[name] = a[name].version
        elif a[name].version != b[name].version:
            result.changed[name] = (a[name].version, b[name].version)
        else:
            result.unchanged += 1
    return result


def _pins(stack: Stack, python: str) -> dict[str, Pin]:
    pins = stack.lock_pins(python)
    if pins is None:
        raise ValueError(f"{stack.id} has no lock for Python {python}: run `h100fleet stack lock {stack.id}`")
    return pins
