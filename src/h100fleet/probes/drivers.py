"""NVIDIA's driver branches and the oldest driver of each CUDA version: the project's one table of both.

The probes (on the node), the stack rules, the nvidia_driver role's preflight (through its filter plugin) and the
fleet summary all read this module; nothing else keeps a copy. Plain data and pure functions (standard library
only), because the probes copy it onto nodes with the rest of h100fleet.probes.

Sources:
- Branches: NVIDIA's "Supported Drivers and CUDA Toolkit Versions" (docs.nvidia.com/datacenter/tesla/drivers):
  R535 LTSB until June 2026, R580 LTSB until June 2028, R595 production branch until March 2027, R620 LTSB until
  September 2029; every branch it does not list (R550, R560, R570, ...) is end of life. R550 stays in the table as
  the project's default branch, marked unsupported.
- CUDA minimums: the CUDA release notes, "CUDA Toolkit and Corresponding Driver Versions" (12.4 is Update 1,
  >= 550.54.15; GA needed 550.54.14), and for each CUDA major the oldest driver that runs its minors through
  minor-version compatibility (no JIT of newer PTX).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from typing import Any

LTSB, PRODUCTION, UNSUPPORTED = "ltsb", "production", "unsupported"
KIND_NAMES = {LTSB: "LTSB", PRODUCTION: "production branch", UNSUPPORTED: "unsupported"}


@dataclass(frozen=True)
class Branch:
    """One driver branch. `end_of_life` is (year, month): supported through the last day of that month; None for
    an unsupported branch. `cuda_major`: the newest CUDA major it runs, every minor of it through minor-version
    compatibility (NVIDIA's "Maximum CUDA Version Supported")."""

    branch: int
    kind: str
    end_of_life: tuple[int, int] | None
    cuda_major: int

    @property
    def last_day(self) -> date | None:
        if self.end_of_life is None:
            return None
        year, month = self.end_of_life
        return date(year, month, calendar.monthrange(year, month)[1])

    def supported(self, today: date) -> bool:
        last = self.last_day
        return self.kind != UNSUPPORTED and last is not None and today <= last

    def describe(self) -> str:
        """'R580 LTSB until 2028-06', 'R550 unsupported'."""
        if self.end_of_life is None:
            return f"R{self.branch} {KIND_NAMES[self.kind]}"
        year, month = self.end_of_life
        return f"R{self.branch} {KIND_NAMES[self.kind]} until {year}-{month:02d}"


BRANCHES: tuple[Branch, ...] = (
    Branch(535, LTSB, (2026, 6), 12),
    Branch(550, UNSUPPORTED, None, 12),
    Branch(580, LTSB, (2028, 6), 13),
    Branch(595, PRODUCTION, (2027, 3), 13),
    Branch(620, LTSB, (2029, 9), 13),
)
_BY_NUMBER = {b.branch: b for b in BRANCHES}

# The oldest Linux driver of each CUDA version: what the version needs natively.
CUDA_MIN_DRIVER = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.15",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

# The oldest driver that runs a CUDA major's minors through minor-version compatibility.
CUDA_MAJOR_FLOOR = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}


def version_key(version: str) -> tuple[int, ...]:
    """A driver or CUDA version ("550.54.15", "12.4") as a tuple that compares numerically."""
    return tuple(int(part) for part in str(version).split("."))


def branch_of(version: str) -> int:
    """The branch of a driver version or branch: "550.163.01" -> 550, "580" -> 580."""
    return int(str(version).split(".", maxsplit=1)[0])


def branch(number: int) -> Branch | None:
    """The table's entry for a branch; an unlisted branch older than the newest listed one is unsupported
    (NVIDIA: every branch not listed is end of life); a newer one is not known yet (None)."""
    if number in _BY_NUMBER:
        return _BY_NUMBER[number]
    if number < max(_BY_NUMBER):
        native = newest_native_cuda(number)
        return Branch(number, UNSUPPORTED, None, int(native.split(".")[0]) if native else 11)
    return None


def newest_native_cuda(number: int) -> str | None:
    """The newest CUDA version in CUDA_MIN_DRIVER whose minimum driver is of this branch or older."""
    native = [cuda for cuda, driver in CUDA_MIN_DRIVER.items() if branch_of(driver) <= number]
    return max(native, key=version_key, default=None)


def supported_branches(today: date) -> list[Branch]:
    """The branches NVIDIA supports on `today`, oldest first."""
    return [b for b in BRANCHES if b.supported(today)]


def lifecycle(version: str, today: date) -> dict[str, Any]:
    """Where a driver version's branch stands on `today`, for the preflight, the probe and the summary.

    status: "supported", "end_of_life" (an LTSB or production branch past its date, or an unsupported one), or
    "unknown" (newer than the table). warning: the sentence to show when it is not supported, naming the
    supported branches; "" otherwise."""
    number = branch_of(version)
    entry = branch(number)
    supported = supported_branches(today)
    names = ", ".join(b.describe() for b in supported) or "none listed"
    if entry is None:
        return {
            "branch": number,
            "status": "unknown",
            "kind": None,
            "end_of_life": None,
            "describe": f"R{number} (not in the table)",
            "supported": [b.branch for b in supported],
            "warning": "",
        }
    ok = entry.supported(today)
    if ok:
        warning = ""
    elif entry.kind == UNSUPPORTED:
        warning = f"driver branch R{number} is no longer supported by NVIDIA (no security fixes); supported: {names}"
    else:
        warning = (
            f"driver branch R{number} ({KIND_NAMES[entry.kind]}) reached its end of life in "
            f"{entry.end_of_life[0]}-{entry.end_of_life[1]:02d} (no security fixes); supported: {names}"
        )
    return {
        "branch": number,
        "status": "supported" if ok else "end_of_life",
        "kind": entry.kind,
        "end_of_life": entry.last_day.isoformat() if entry.last_day else None,
        "describe": entry.describe() + ("" if ok or entry.kind == UNSUPPORTED else " (past)"),
        "supported": [b.branch for b in supported],
        "warning": warning,
    }


def min_driver(cuda: str) -> str | None:
    """The oldest driver that runs `cuda` natively, or None for a CUDA version the table does not know."""
    return CUDA_MIN_DRIVER.get(str(cuda))


def runs_cuda(version: str, cuda: str) -> bool:
    """Whether a driver version (exact) or branch can run `cuda` natively: an exact version at or above the
    minimum, a branch at or above the minimum's branch (its newest release is what gets installed)."""
    minimum = min_driver(cuda)
    if minimum is None:
        return False
    if "." in str(version):
        return version_key(version) >= version_key(minimum)
    return branch_of(version) >= branch_of(minimum)


def driver_check(version: str, cuda: str, today: date) -> dict[str, Any]:
    """Everything the nvidia_driver preflight asks of the table for one node's settings."""
    return {
        "cuda_known": min_driver(cuda) is not None,
        "cuda_versions": list(CUDA_MIN_DRIVER),
        "min_driver": min_driver(cuda),
        "min_branch": branch_of(min_driver(cuda)) if min_driver(cuda) else None,
        "runs_cuda": runs_cuda(version, cuda),
        "lifecycle": lifecycle(version, today),
    }
