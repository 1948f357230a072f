"""The per-node fleet summary printed at the end of `ansible-playbook site.yml`.

Input is what Ansible knows of each node (its hostvars: facts, the local facts from node_baseline, the fleet
pins, and what fleet_summary read of the training service: its unit's state and its status file); output is one
row per node, rendered as a Markdown table and as JSON. Missing facts show as "-", never as
an error: the summary must come out even when a node failed half-way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from h100fleet.fleet import MISSING, markdown_table, trainer_status
from h100fleet.probes import drivers

COLUMNS = (
    ("node", "node"),
    ("status", "status"),
    ("os", "OS"),
    ("kernel", "kernel"),
    ("gpus", "GPUs"),
    ("nvswitches", "NVSwitch"),
    ("secure_boot", "Secure Boot"),
    ("driver_installed", "driver installed"),
    ("nvidia_module", "NVIDIA module"),
    ("driver_pin", "driver pin"),
    ("driver_support", "driver support"),
    ("cuda_pin", "CUDA pin"),
    ("stack_pin", "stack pin"),
    ("stack", "stack installed"),
    ("trainer", "trainer"),
    ("step", "step"),
    ("kernel_headers", "kernel headers"),
    ("time_sync", "time sync"),
)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _driver(driver: Mapping[str, Any]) -> str:
    version = driver.get("installed_version")
    if not version:
        return MISSING
    flavor = driver.get("module_flavor")
    return f"{version} ({flavor}{', held' if driver.get('held') else ''})" if flavor else str(version)


def _support(version: Any, today: date) -> str:
    """The driver branch's place in NVIDIA's lifecycle (h100fleet.probes.drivers): 'R580 LTSB until 2028-06',
    'R550 unsupported', 'R535 LTSB until 2026-06 (past)'."""
    if not version:
        return MISSING
    try:
        return str(drivers.lifecycle(str(version), today)["describe"])
    except ValueError:
        return MISSING


def _gpus(node: Mapping[str, Any]) -> str:
    count = node.get("gpu_count")
    if count is None:
        return MISSING
    if count == 0:
        return "0"
    models = node.get("gpu_models") or {}
    return ", ".join(f"{n}x {name}" for name, n in sorted(models.items())) or str(count)


def _time_sync(baseline: Mapping[str, Any]) -> str:
    if "time_sync" not in baseline:
        return MISSING
    if not baseline["time_sync"]:
        return "off"
    return "chrony" if baseline.get("time_sync_active") else "chrony (host clock: container)"


def _headers(baseline: Mapping[str, Any]) -> str:
    package = baseline.get("kernel_headers_package")
    if not package:
        return MISSING
    return package if baseline.get("kernel_headers_match_running_kernel") else f"{package} (not the running kernel)"


def _stack(stack: Mapping[str, Any]) -> str:
    """The active stack from python_stack's h100fleet_stack fact: its id, or "none" when no stack is active."""
    if "id" not in stack:
        return MISSING
    return str(stack["id"]) if stack["id"] else "none"


def _status_file(slurped: Any) -> Mapping[str, Any]:
    """The trainer's status.json from a registered ansible.builtin.slurp result ({} when unread or not JSON)."""
    return trainer_status.read(slurped)


def _trainer(unit: Any, status: Mapping[str, Any]) -> str:
    """The training service: systemd's state of its unit, and the trainer's own state while it runs or after it ran.

    unit: a registered ansible.builtin.systemd_service result (name only: it reads the unit's properties).
    """
    props = _mapping(_mapping(unit).get("status"))
    if not props or props.get("LoadState") in (None, "not-found"):
        return MISSING
    active = str(props.get("ActiveState") or MISSING)
    state = status.get("state")
    if active == "active":
        return f"running ({state})" if state else "running"
    if active == "failed":
        return f"failed ({props.get('Result') or 'exit'})"
    return f"{active} ({state})" if state else active


def _step(status: Mapping[str, Any]) -> str:
    step = status.get("step")
    if step is None:
        return MISSING
    total = status.get("total_steps")
    return f"{step} of {total}" if total else str(step)


def node_row(host: str, hostvars: Mapping[str, Any], status: str, today: date | None = None) -> dict[str, str]:
    """One node's row. status: 'ok', or 'failed' for a node that failed or was unreachable earlier in the run.
    The driver's support is judged on `today` (default: the control node's date) for the installed driver, else
    the pinned branch."""
    facts = hostvars.get("ansible_facts") or {}
    local = hostvars.get("ansible_local") or facts.get("local") or {}
    # A fact script that fails leaves Ansible's error text where the JSON would be: show the fields as missing.
    node = _mapping(local.get("h100fleet_node"))
    baseline = _mapping(local.get("h100fleet_baseline"))
    driver = _mapping(local.get("h100fleet_driver"))
    stack = _mapping(local.get("h100fleet_stack"))
    progress = _status_file(hostvars.get("__fleet_summary_trainer_status"))
    distro = facts.get("distribution")
    module = node.get("nvidia_module_version")
    if module is None and node.get("nvidia_module_loaded"):
        module = "loaded (version unknown)"
    elif module is None and "nvidia_module_loaded" in node:
        module = "nouveau" if node.get("nouveau_loaded") else "none"
    row = {
        "node": host,
        "status": status,
        "os": f"{distro} {facts.get('distribution_version', '')}".strip() if distro else MISSING,
        "kernel": node.get("kernel") or facts.get("kernel") or MISSING,
        "gpus": _gpus(node),
        "nvswitches": str(node["nvswitch_count"]) if "nvswitch_count" in node else MISSING,
        "secure_boot": node.get("secure_boot") or MISSING,
        "driver_installed": _driver(driver),
        "nvidia_module": module or MISSING,
        "driver_pin": str(hostvars.get("h100fleet_driver_branch") or MISSING),
        "driver_support": _support(
            driver.get("installed_version") or hostvars.get("h100fleet_driver_branch"), today or date.today()
        ),
        "cuda_pin": str(hostvars.get("h100fleet_cuda_version") or MISSING),
        "stack_pin": str(hostvars.get("h100fleet_stack_id") or MISSING),
        "stack": _stack(stack),
        "trainer": _trainer(hostvars.get("__fleet_summary_trainer_unit"), progress),
        "step": _step(progress),
        "kernel_headers": _headers(baseline),
        "time_sync": _time_sync(baseline),
    }
    return row


def rows(
    all_hosts: Iterable[str],
    ok_hosts: Iterable[str],
    hostvars: Mapping[str, Mapping[str, Any]],
    today: date | None = None,
) -> list[dict[str, str]]:
    ok = set(ok_hosts)
    return [node_row(h, hostvars.get(h) or {}, "ok" if h in ok else "failed", today) for h in sorted(all_hosts)]


def markdown(table: list[dict[str, str]]) -> str:
    ok = sum(1 for r in table if r.get("status") == "ok")
    return "\n".join([*markdown_table(COLUMNS, table), "", f"{ok} of {len(table)} nodes ok."]) + "\n"
