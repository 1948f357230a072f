"""Probe results: one `Check` per thing judged, rolled up into a `Report` whose status is the node's verdict.

The statuses are the Nagios exit codes, so a probe's exit code can feed any monitoring system unchanged. The report
is written for two readers: a person, who gets one summary line that names what is wrong, and a machine (Ansible,
the fleet summary), which gets JSON with a fixed key order so that reports diff cleanly between runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any

# Longest text of one failed check in the summary line, and how many failed checks it names before "+N more":
# the line goes into Ansible output and monitoring alerts, where a full list of 16 per-GPU failures is unreadable.
SUMMARY_ITEM_CHARS = 120
SUMMARY_MAX_ITEMS = 4


class Status(IntEnum):
    """Nagios plugin exit codes. The numbers are fixed by Nagios; the severity order is `SEVERITY`."""

    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3


# Worst first. UNKNOWN (a check that could not be evaluated) ranks above WARN so that it never lets a node pass,
# but below CRIT: a node known to be broken is worse than one that could not be fully checked.
SEVERITY = (Status.CRIT, Status.UNKNOWN, Status.WARN, Status.OK)
_RANK = {status: rank for rank, status in enumerate(SEVERITY)}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe of `statuses` in `SEVERITY` order; OK for none."""
    return min(statuses, key=_RANK.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Check:
    """One judgement. `value` is what was measured and `threshold` what it was held against (both JSON values);
    `remedy` is a short imperative sentence for whoever has to fix the node, empty when the check is OK;
    `detail` is optional context, and what the summary line shows in place of the value when it is set."""

    name: str
    status: Status
    value: Any
    threshold: Any
    remedy: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "status": self.status.name,
            "value": self.value,
            "threshold": self.threshold,
            "remedy": self.remedy,
            "detail": self.detail,
        }


def utc_now() -> str:
    """Now as ISO 8601 UTC to the second, e.g. 2025-11-26T10:30:00Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or "none"
    return json.dumps(value)


def _shorten(text: str, limit: int = SUMMARY_ITEM_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@dataclass(frozen=True)
class Report:
    """The checks of one probe run on one node."""

    checks: tuple[Check, ...]
    node: str
    started: str = field(default_factory=utc_now)
    runtime_s: float = 0.0
    # What the checks ran on: driver, CUDA, Python, torch and unsloth versions (JSON values).
    environment: dict = field(default_factory=dict)
    # The checks that failed because the Python stack running the probes lacks a module it needs (nvidia-ml-py,
    # an importable torch), not because of the node: a rollout's gate fails a node on these whatever its GPUs.
    stack_broken: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "stack_broken", tuple(self.stack_broken))

    @property
    def status(self) -> Status:
        """The worst check's status. A report without checks verified nothing, so it is UNKNOWN, not OK."""
        return worst(c.status for c in self.checks) if self.checks else Status.UNKNOWN

    @property
    def exit_code(self) -> int:
        return int(self.status)

    def counts(self) -> dict[str, int]:
        """Checks per status, worst first, statuses without checks left out."""
        counts = {s.name: sum(1 for c in self.checks if c.status is s) for s in SEVERITY}
        return {name: n for name, n in counts.items() if n}

    def failed(self) -> list[Check]:
        """The checks that are not OK, worst first, in check order within a status."""
        return sorted((c for c in self.checks if c.status is not Status.OK), key=lambda c: _RANK[c.status])

    def summary_line(self) -> str:
        """E.g. 'CRIT gpu-a01: 2 CRIT, 1 WARN, 14 OK (6.1 s) - gpu_count: 7 of 8 expected GPUs visible; ...'."""
        counts = ", ".join(f"{n} {name}" for name, n in self.counts().items()) or "no checks"
        line = f"{self.status.name} {self.node}: {counts} ({self.runtime_s:.1f} s)"
        failed = self.failed()
        if not failed:
            return line
        items = [_shorten(f"{c.name}: {c.detail or _text(c.value)}") for c in failed[:SUMMARY_MAX_ITEMS]]
        if len(failed) > SUMMARY_MAX_ITEMS:
            items.append(f"+{len(failed) - SUMMARY_MAX_ITEMS} more")
        return f"{line} - {'; '.join(items)}"

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "status": self.status.name,
            "exit_code": self.exit_code,
            "started": self.started,
            "runtime_s": self.runtime_s,
            "counts": self.counts(),
            "summary": self.summary_line(),
            "environment": self.environment,
            "stack_broken": list(self.stack_broken),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """JSON in a fixed key order (the order of `to_dict`, not sorted: the verdict reads first)."""
        return json.dumps(self.to_dict(), indent=indent)
