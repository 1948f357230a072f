"""The fleet validation table: one row per node from its probe report (h100fleet.probes JSON).

Columns: node, GPUs, compute capability, driver, stack, GEMM TFLOP/s (the slowest GPU), status. A node that has
no report (it failed before the probe ran) shows as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from h100fleet.fleet import MISSING, markdown_table

COLUMNS = (
    ("node", "node"),
    ("gpus", "GPUs"),
    ("compute_capability", "compute capability"),
    ("driver", "driver"),
    ("stack", "stack"),
    ("gemm_tflops", "GEMM TFLOP/s (min)"),
    ("status", "status"),
)
_INDEXED = re.compile(r"^(?P<base>[a-z_0-9]+)\[(?P<index>\d+)\]$")


def _per_gpu(checks: Iterable[Mapping[str, Any]], base: str) -> list[Any]:
    values = []
    for check in checks:
        m = _INDEXED.match(check.get("name", ""))
        if m and m["base"] == base:
            values.append(check.get("value"))
    return values


def _stack(report: Mapping[str, Any], pin: Any) -> str:
    env = report.get("environment") or {}
    parts = [str(pin)] if pin else []
    parts += [f"{name} {env[name]}" for name in ("torch", "unsloth") if env.get(name)]
    return ", ".join(parts) or MISSING


def row(node: str, report: Mapping[str, Any] | None, stack_pin: Any = None) -> dict[str, str]:
    if not isinstance(report, Mapping) or "checks" not in report:
        return {key: MISSING for key, _ in COLUMNS} | {"node": node, "status": "no report"}
    checks = report["checks"]
    names = _per_gpu(checks, "gpu_model")
    ccs = sorted({str(v) for v in _per_gpu(checks, "compute_capability") if v is not None})
    gemm = [v for v in _per_gpu(checks, "gemm_bf16_tflops") if isinstance(v, (int, float))]
    gpus = MISSING
    if names:
        gpus = f"{len(names)}x {names[0]}" if len(set(names)) == 1 else ", ".join(map(str, names))
    elif any(c.get("name") == "nvidia_gpu_visible" and c.get("status") != "OK" for c in checks):
        gpus = "none visible"
    return {
        "node": node,
        "gpus": gpus,
        "compute_capability": ", ".join(ccs) or MISSING,
        "driver": str((report.get("environment") or {}).get("driver") or MISSING),
        "stack": _stack(report, stack_pin),
        "gemm_tflops": f"{min(gemm):.1f}" if gemm else MISSING,
        "status": str(report.get("status", MISSING)),
    }


def rows(hostvars: Mapping[str, Mapping[str, Any]], hosts: Iterable[str]) -> list[dict[str, str]]:
    result = []
    for host in sorted(hosts):
        hv = hostvars.get(host) or {}
        result.append(row(host, hv.get("gpu_validate_report"), hv.get("h100fleet_stack_id")))
    return result


def markdown(table: list[dict[str, str]]) -> str:
    counts: dict[str, int] = {}
    for r in table:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    total = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + f" of {len(table)} nodes."
    return "\n".join([*markdown_table(COLUMNS, table), "", total]) + "\n"


def probe_modules() -> list[str]:
    """The file names of the h100fleet.probes modules, which gpu_validate copies onto each node: every module of
    the package, so that a new probe module needs no list to be kept up to date."""
    from h100fleet import probes  # noqa: PLC0415 - the node-side package, read for its files only

    return sorted(path.name for path in Path(probes.__file__).parent.glob("*.py"))
