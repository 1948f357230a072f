"""Unit tests for h100fleet.fleet.summary: the per-node table at the end of site.yml."""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from h100fleet.fleet import summary
from h100fleet.node import facts

KERNEL = "6.1.0-28-amd64"
KEYS = [key for key, _ in summary.COLUMNS]

# What the h100fleet_node fact (h100fleet.node.facts.collect) reports on a converged HGX H100 node.
NODE_FACT: dict[str, Any] = {
    "schema": 1,
    "kernel": KERNEL,
    "secure_boot": "enabled",
    "gpu_count": 8,
    "gpu_models": {"NVIDIA H100 80GB HBM3": 8},
    "nvswitch_count": 4,
    "devices": [],
    "nvidia_module_version": "550.163.01",
    "nvidia_module_loaded": True,
    "nouveau_loaded": False,
}
# What node_baseline's h100fleet_baseline.fact.j2 records.
BASELINE_FACT: dict[str, Any] = {
    "schema": 1,
    "kernel_headers_package": f"linux-headers-{KERNEL}",
    "kernel_headers_match_running_kernel": True,
    "time_sync": True,
    "time_sync_active": True,
    "package_proxy": "",
}


# What nvidia_driver's configure.yml records.
DRIVER_FACT: dict[str, Any] = {
    "schema": 1,
    "installed_version": "550.163.01",
    "package_version": "550.163.01-2",
    "module_flavor": "open",
    "held": True,
    "dkms": ["nvidia-current-open/550.163.01, 6.1.0-28-amd64, x86_64: installed"],
}


# What python_stack's h100fleet_stack.fact.j2 reports (the parts the summary reads).
STACK_FACT: dict[str, Any] = {
    "schema": 1,
    "root": "/opt/h100fleet/stacks",
    "id": "torch2.3-unsloth2024.8-py310",
    "lock_hash": "0123abcd",
    "active": {"id": "torch2.3-unsloth2024.8-py310", "python": "3.10"},
    "previous": None,
    "installed": [],
}
# The trainer's status.json while it trains (h100fleet.trainer.progress), as fleet_summary slurps it.
TRAINER_STATUS: dict[str, Any] = {"state": "training", "step": 37, "total_steps": 512, "stack_id": "x"}


def unit_result(active: str, load: str = "loaded", result: str = "success") -> dict[str, Any]:
    """A registered ansible.builtin.systemd_service result for the trainer's unit (name only)."""
    return {"name": "h100fleet-trainer.service", "status": {"LoadState": load, "ActiveState": active, "Result": result}}


def slurped(doc: Any) -> dict[str, Any]:
    return {"content": base64.b64encode(json.dumps(doc).encode()).decode(), "encoding": "base64"}


def full_hostvars() -> dict[str, Any]:
    return {
        "inventory_hostname": "gpu-a01",
        "ansible_facts": {
            "distribution": "Debian",
            "distribution_version": "12.8",
            "distribution_release": "bookworm",
            "kernel": KERNEL,
        },
        "ansible_local": {
            "h100fleet_node": copy.deepcopy(NODE_FACT),
            "h100fleet_baseline": copy.deepcopy(BASELINE_FACT),
            "h100fleet_driver": copy.deepcopy(DRIVER_FACT),
            "h100fleet_stack": copy.deepcopy(STACK_FACT),
        },
        "__fleet_summary_trainer_unit": unit_result("active"),
        "__fleet_summary_trainer_status": slurped(TRAINER_STATUS),
        "h100fleet_driver_branch": "550",
        "h100fleet_cuda_version": "12.4",
        "h100fleet_stack_id": "torch2.3-unsloth2024.8-py310",
    }


FULL_ROW = {
    "node": "gpu-a01",
    "status": "ok",
    "os": "Debian 12.8",
    "kernel": KERNEL,
    "gpus": "8x NVIDIA H100 80GB HBM3",
    "nvswitches": "4",
    "secure_boot": "enabled",
    "driver_installed": "550.163.01 (open, held)",
    "nvidia_module": "550.163.01",
    "driver_pin": "550",
    "driver_support": "R550 unsupported",
    "cuda_pin": "12.4",
    "stack_pin": "torch2.3-unsloth2024.8-py310",
    "stack": "torch2.3-unsloth2024.8-py310",
    "trainer": "running (training)",
    "step": "37 of 512",
    "kernel_headers": f"linux-headers-{KERNEL}",
    "time_sync": "chrony",
}


def row_with(node: dict | None = None, baseline: dict | None = None, **hostvars: Any) -> dict[str, str]:
    """The row of a fully converged node, with some of its node fact, baseline fact or hostvars changed."""
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_node"].update(node or {})
    hv["ansible_local"]["h100fleet_baseline"].update(baseline or {})
    hv.update(hostvars)
    return summary.node_row("gpu-a01", hv, "ok")


# --- node_row ------------------------------------------------------------------------------------------------


def test_full_row():
    assert summary.node_row("gpu-a01", full_hostvars(), "ok") == FULL_ROW


def test_row_has_exactly_the_columns_in_order():
    assert list(summary.node_row("gpu-a01", full_hostvars(), "ok")) == KEYS


def test_local_facts_under_ansible_facts():
    # With INJECT_FACTS_AS_VARS off there is no ansible_local, only ansible_facts['local'].
    hv = full_hostvars()
    hv["ansible_facts"]["local"] = hv.pop("ansible_local")
    assert summary.node_row("gpu-a01", hv, "ok") == FULL_ROW


@pytest.mark.parametrize("hostvars", [{}, {"ansible_facts": {}, "ansible_local": {}}, {"ansible_facts": None}])
def test_node_without_facts(hostvars: dict):
    row = summary.node_row("gpu-z99", hostvars, "failed")
    assert row == {"node": "gpu-z99", "status": "failed", **dict.fromkeys(KEYS[2:], "-")}


def test_node_with_only_ansible_facts():
    hv = {"ansible_facts": {"distribution": "Ubuntu", "distribution_version": "22.04", "kernel": "5.15.0-1"}}
    row = summary.node_row("gpu-a01", hv, "failed")
    assert row == {
        "node": "gpu-a01",
        "status": "failed",
        "os": "Ubuntu 22.04",
        "kernel": "5.15.0-1",
        **dict.fromkeys(KEYS[4:], "-"),
    }


def test_os_without_version():
    hv = full_hostvars()
    del hv["ansible_facts"]["distribution_version"]
    assert summary.node_row("gpu-a01", hv, "ok")["os"] == "Debian"


def test_kernel_prefers_the_node_fact():
    hv = full_hostvars()
    hv["ansible_facts"]["kernel"] = "5.10.0-1-amd64"
    assert summary.node_row("gpu-a01", hv, "ok")["kernel"] == KERNEL
    del hv["ansible_local"]["h100fleet_node"]["kernel"]
    assert summary.node_row("gpu-a01", hv, "ok")["kernel"] == "5.10.0-1-amd64"


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        ({"nvidia_module_version": "550.163.01", "nvidia_module_loaded": True, "nouveau_loaded": False}, "550.163.01"),
        ({"nvidia_module_version": None, "nvidia_module_loaded": False, "nouveau_loaded": True}, "nouveau"),
        ({"nvidia_module_version": None, "nvidia_module_loaded": False, "nouveau_loaded": False}, "none"),
    ],
)
def test_nvidia_module(modules: dict, expected: str):
    assert row_with(node=modules)["nvidia_module"] == expected


def test_nvidia_module_missing_from_an_old_fact():
    hv = full_hostvars()
    for key in ("nvidia_module_version", "nvidia_module_loaded", "nouveau_loaded"):
        del hv["ansible_local"]["h100fleet_node"][key]
    assert summary.node_row("gpu-a01", hv, "ok")["nvidia_module"] == "-"


@pytest.mark.parametrize(
    ("gpu_count", "gpu_models", "expected"),
    [
        (8, {"NVIDIA H100 80GB HBM3": 8}, "8x NVIDIA H100 80GB HBM3"),
        (8, {"GH100 [H100 SXM5 80GB]": 8}, "8x GH100 [H100 SXM5 80GB]"),
        (
            3,
            {"NVIDIA device 0x2335": 1, "GH100 [H100 PCIe]": 2},
            "2x GH100 [H100 PCIe], 1x NVIDIA device 0x2335",
        ),
        (0, {}, "0"),
        (2, {}, "2"),  # a count without the models
        (2, None, "2"),
    ],
)
def test_gpus(gpu_count: int, gpu_models: dict | None, expected: str):
    assert row_with(node={"gpu_count": gpu_count, "gpu_models": gpu_models})["gpus"] == expected


def test_gpus_without_count():
    hv = full_hostvars()
    del hv["ansible_local"]["h100fleet_node"]["gpu_count"]
    assert summary.node_row("gpu-a01", hv, "ok")["gpus"] == "-"


@pytest.mark.parametrize(("count", "expected"), [(4, "4"), (0, "0")])
def test_nvswitches(count: int, expected: str):
    assert row_with(node={"nvswitch_count": count})["nvswitches"] == expected


@pytest.mark.parametrize("value", ["enabled", "disabled", "not_uefi", "unknown"])
def test_secure_boot(value: str):
    assert row_with(node={"secure_boot": value})["secure_boot"] == value


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        ({"time_sync": True, "time_sync_active": True}, "chrony"),
        ({"time_sync": True, "time_sync_active": False}, "chrony (host clock: container)"),
        ({"time_sync": False, "time_sync_active": False}, "off"),
        ({"time_sync": False, "time_sync_active": True}, "off"),
    ],
)
def test_time_sync(baseline: dict, expected: str):
    assert row_with(baseline=baseline)["time_sync"] == expected


def test_time_sync_missing():
    hv = full_hostvars()
    del hv["ansible_local"]["h100fleet_baseline"]["time_sync"]
    assert summary.node_row("gpu-a01", hv, "ok")["time_sync"] == "-"


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        (
            {"kernel_headers_package": "linux-headers-6.1.0-28-amd64", "kernel_headers_match_running_kernel": True},
            "linux-headers-6.1.0-28-amd64",
        ),
        (
            {"kernel_headers_package": "linux-headers-amd64", "kernel_headers_match_running_kernel": False},
            "linux-headers-amd64 (not the running kernel)",
        ),
        (
            {"kernel_headers_package": "linux-headers-amd64", "kernel_headers_match_running_kernel": None},
            "linux-headers-amd64 (not the running kernel)",
        ),
        # node_baseline_kernel_headers false: the template records none.
        ({"kernel_headers_package": None, "kernel_headers_match_running_kernel": None}, "-"),
        ({"kernel_headers_package": "", "kernel_headers_match_running_kernel": None}, "-"),
    ],
)
def test_kernel_headers(baseline: dict, expected: str):
    assert row_with(baseline=baseline)["kernel_headers"] == expected


@pytest.mark.parametrize(
    ("pins", "expected"),
    [
        ({}, ("550", "12.4", "torch2.3-unsloth2024.8-py310")),
        ({"h100fleet_driver_branch": 550}, ("550", "12.4", "torch2.3-unsloth2024.8-py310")),
        ({"h100fleet_cuda_version": None, "h100fleet_stack_id": ""}, ("550", "-", "-")),
    ],
)
def test_pins(pins: dict, expected: tuple[str, str, str]):
    row = row_with(**pins)
    assert (row["driver_pin"], row["cuda_pin"], row["stack_pin"]) == expected


@pytest.mark.parametrize(
    ("installed", "pin", "today", "expected"),
    [
        ("580.159.04", "550", date(2026, 12, 1), "R580 LTSB until 2028-06"),
        ("535.230.02", "535", date(2026, 12, 1), "R535 LTSB until 2026-06 (past)"),
        ("535.230.02", "535", date(2026, 6, 1), "R535 LTSB until 2026-06"),
        (None, "595", date(2026, 12, 1), "R595 production branch until 2027-03"),
        (None, None, date(2026, 12, 1), "-"),
    ],
)
def test_driver_support_reads_the_driver_table(installed, pin, today, expected):
    """The installed driver's branch, else the pinned one, in NVIDIA's lifecycle (h100fleet.probes.drivers)."""
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_driver"]["installed_version"] = installed
    hv["h100fleet_driver_branch"] = pin
    assert summary.node_row("gpu-a01", hv, "ok", today)["driver_support"] == expected


def test_row_from_a_real_fact_of_a_node_without_gpus(tmp_path: Path):
    # The fact as facts.collect() writes it on a machine with no GPU (as in the container test fleet).
    (tmp_path / "sys/firmware").mkdir(parents=True)
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_node"] = facts.collect(str(tmp_path), kernel="6.18.44-fc-v669")
    hv["ansible_local"]["h100fleet_baseline"].update(
        kernel_headers_package="linux-headers-amd64", kernel_headers_match_running_kernel=False, time_sync_active=False
    )
    row = summary.node_row("h100-node-1", hv, "ok")
    assert row == {
        **FULL_ROW,
        "node": "h100-node-1",
        "kernel": "6.18.44-fc-v669",
        "gpus": "0",
        "nvswitches": "0",
        "secure_boot": "not_uefi",
        "nvidia_module": "none",
        "kernel_headers": "linux-headers-amd64 (not the running kernel)",
        "time_sync": "chrony (host clock: container)",
    }


FACT_ERROR = "Failure executing fact script (/etc/ansible/facts.d/h100fleet_node.fact), rc: 1, err: Traceback ..."


def test_failed_node_fact_script_shows_as_missing():
    # Ansible leaves its error text where the JSON of a failed fact script would be.
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_node"] = FACT_ERROR
    assert summary.node_row("gpu-a01", hv, "failed") == {
        **FULL_ROW,
        "status": "failed",
        "gpus": "-",
        "nvswitches": "-",
        "secure_boot": "-",
        "nvidia_module": "-",
    }


def test_failed_baseline_fact_shows_as_missing():
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_baseline"] = "error loading facts as JSON or ini - please check content: x"
    assert summary.node_row("gpu-a01", hv, "failed") == {
        **FULL_ROW,
        "status": "failed",
        "kernel_headers": "-",
        "time_sync": "-",
    }


# --- rows ----------------------------------------------------------------------------------------------------


def test_rows_status_and_order():
    hostvars = {"gpu-b01": full_hostvars(), "gpu-a01": full_hostvars(), "gpu-a02": {}}
    table = summary.rows(["gpu-b01", "gpu-a02", "gpu-a01"], ["gpu-b01", "gpu-a01"], hostvars)
    assert [(r["node"], r["status"]) for r in table] == [
        ("gpu-a01", "ok"),
        ("gpu-a02", "failed"),
        ("gpu-b01", "ok"),
    ]
    assert table[0] == FULL_ROW
    assert table[2] == {**FULL_ROW, "node": "gpu-b01"}
    assert table[1] == {"node": "gpu-a02", "status": "failed", **dict.fromkeys(KEYS[2:], "-")}


def test_rows_host_missing_from_hostvars():
    table = summary.rows(["gpu-c01"], [], {})
    assert table == [{"node": "gpu-c01", "status": "failed", **dict.fromkeys(KEYS[2:], "-")}]


def test_rows_ignore_ok_hosts_outside_the_play():
    table = summary.rows(iter(["gpu-a01"]), iter(["gpu-a01", "gpu-x01"]), {"gpu-a01": full_hostvars()})
    assert table == [FULL_ROW]


def test_rows_all_failed():
    table = summary.rows(["n2", "n1"], [], {"n1": full_hostvars(), "n2": full_hostvars()})
    assert [(r["node"], r["status"]) for r in table] == [("n1", "failed"), ("n2", "failed")]
    # The facts a failed node gathered before it failed are still shown.
    assert table[0]["gpus"] == "8x NVIDIA H100 80GB HBM3"


def test_rows_empty():
    assert summary.rows([], [], {}) == []


# --- markdown ------------------------------------------------------------------------------------------------

HEADER = (
    "| node | status | OS | kernel | GPUs | NVSwitch | Secure Boot | driver installed | NVIDIA module | driver pin | "
    "driver support | CUDA pin | stack pin | stack installed | trainer | step | kernel headers | time sync |"
)
SEPARATOR = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_exact():
    table = summary.rows(["gpu-b01", "gpu-a01"], ["gpu-a01"], {"gpu-a01": full_hostvars()})
    assert summary.markdown(table) == (
        f"{HEADER}\n"
        f"{SEPARATOR}\n"
        "| gpu-a01 | ok | Debian 12.8 | 6.1.0-28-amd64 | 8x NVIDIA H100 80GB HBM3 | 4 | enabled | "
        "550.163.01 (open, held) | 550.163.01 | 550 | R550 unsupported | 12.4 | torch2.3-unsloth2024.8-py310 | "
        "torch2.3-unsloth2024.8-py310 | running (training) | 37 of 512 | linux-headers-6.1.0-28-amd64 | chrony |\n"
        "| gpu-b01 | failed | - | - | - | - | - | - | - | - | - | - | - | - | - | - | - | - |\n"
        "\n"
        "1 of 2 nodes ok.\n"
    )


def test_markdown_one_line_per_node():
    names = [f"gpu-a{i:02d}" for i in range(1, 6)]
    table = summary.rows(names, names[:3], {n: full_hostvars() for n in names})
    lines = summary.markdown(table).splitlines()
    assert lines[0] == HEADER
    assert lines[1] == SEPARATOR
    body = lines[2:-2]
    assert [line.split(" | ")[0] for line in body] == [f"| {n}" for n in names]
    assert all(unescaped_pipes(line) == len(summary.COLUMNS) + 1 for line in body)
    assert lines[-2:] == ["", "3 of 5 nodes ok."]


def test_markdown_escapes_pipes():
    row = {**FULL_ROW, "gpus": "1x A|B, 2x C", "kernel": "6.1|x"}
    lines = summary.markdown([row]).splitlines()
    assert "| 6.1\\|x | 1x A\\|B, 2x C |" in lines[2]
    assert unescaped_pipes(lines[2]) == len(summary.COLUMNS) + 1


def test_markdown_missing_keys_show_as_dash():
    assert summary.markdown([{"node": "n1", "status": "ok"}]).splitlines()[2] == "| n1 | ok |" + " - |" * 16


def test_markdown_stringifies_values():
    row = {**FULL_ROW, "nvswitches": 4}
    assert "| 8x NVIDIA H100 80GB HBM3 | 4 | enabled |" in summary.markdown([row])


@pytest.mark.parametrize(
    ("statuses", "footer"),
    [([], "0 of 0 nodes ok."), (["ok"], "1 of 1 nodes ok."), (["failed", "failed"], "0 of 2 nodes ok.")],
)
def test_markdown_footer(statuses: list[str], footer: str):
    table = [{"node": f"n{i}", "status": s} for i, s in enumerate(statuses)]
    text = summary.markdown(table)
    assert text.endswith(f"\n\n{footer}\n")
    assert len(text.splitlines()) == 2 + len(statuses) + 2


def test_loaded_module_without_version_is_not_reported_as_none():
    row = summary.node_row("n", {"ansible_local": {"h100fleet_node": {"nvidia_module_loaded": True}}}, "ok")
    assert row["nvidia_module"] == "loaded (version unknown)"


def test_driver_installed_column():
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_driver"]["held"] = False
    assert summary.node_row("n", hv, "ok")["driver_installed"] == "550.163.01 (open)"
    del hv["ansible_local"]["h100fleet_driver"]
    assert summary.node_row("n", hv, "ok")["driver_installed"] == "-"


# --- stack and training service ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fact", "expected"),
    [
        ({"id": "torch2.6-transformers5.17-py313"}, "torch2.6-transformers5.17-py313"),
        ({"id": None, "active": None}, "none"),
        ({}, "-"),
        ("Failure executing fact script (h100fleet_stack.fact)", "-"),
    ],
)
def test_stack_installed(fact: Any, expected: str):
    hv = full_hostvars()
    hv["ansible_local"]["h100fleet_stack"] = fact
    assert summary.node_row("gpu-a01", hv, "ok")["stack"] == expected


@pytest.mark.parametrize(
    ("unit", "status", "trainer", "step"),
    [
        (unit_result("active"), {"state": "training", "step": 3, "total_steps": 40}, "running (training)", "3 of 40"),
        (unit_result("active"), {"state": "starting", "step": 0, "total_steps": None}, "running (starting)", "0"),
        (unit_result("active"), None, "running", "-"),
        (
            unit_result("inactive"),
            {"state": "finished", "step": 40, "total_steps": 40},
            "inactive (finished)",
            "40 of 40",
        ),
        (unit_result("inactive"), None, "inactive", "-"),
        (unit_result("failed", result="exit-code"), {"state": "failed", "step": 7}, "failed (exit-code)", "7"),
        (unit_result("inactive", load="not-found"), None, "-", "-"),
        (None, None, "-", "-"),
        ({"failed": True, "msg": "no systemd"}, None, "-", "-"),
    ],
)
def test_trainer_and_step(unit: Any, status: Any, trainer: str, step: str):
    hv = full_hostvars()
    hv["__fleet_summary_trainer_unit"] = unit
    hv["__fleet_summary_trainer_status"] = slurped(status) if status is not None else {"failed": True}
    row = summary.node_row("gpu-a01", hv, "ok")
    assert (row["trainer"], row["step"]) == (trainer, step)


@pytest.mark.parametrize("content", ["", "bm90IGpzb24=", "W10=", "!!!"])
def test_unreadable_status_file_shows_as_missing(content: str):
    # "not json", a JSON list, and bytes that are not base64.
    hv = full_hostvars()
    hv["__fleet_summary_trainer_status"] = {"content": content}
    row = summary.node_row("gpu-a01", hv, "ok")
    assert (row["trainer"], row["step"]) == ("running", "-")
