"""Unit tests for h100fleet.probes.checks and .result, driven by recorded NVML snapshots (tests/fixtures/nvml)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pynvml
import pytest

from h100fleet.probes import checks, drivers
from h100fleet.probes.checks import Expectations, evaluate
from h100fleet.probes.result import Check, Report, Status, worst

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvml"
NODE = "gpu-a01"
STARTED = "2025-11-26T10:30:00Z"
PER_GPU = (
    "gpu_model",
    "compute_capability",
    "persistence_mode",
    "ecc_mode",
    "ecc_uncorrectable_volatile",
    "ecc_uncorrectable_aggregate",
    "remapped_rows",
    "clock_event_reasons",
    "pcie_link_generation",
    "pcie_link_width",
    "temperature",
    "power_draw",
)
NODE_CHECKS = ("nvidia_gpu_visible", "gpu_count", "driver_version", "cuda_driver_version")
ROWS_OK = {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}
ROWS_THRESHOLD = {"pending": False, "failure": False}


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def report(snapshot: dict, expect: Expectations | None = None) -> Report:
    return Report(evaluate(snapshot, expect), NODE, started=STARTED, runtime_s=6.08)


def failed(result: list[Check]) -> dict[str, str]:
    """name -> status name of every check that is not OK."""
    return {c.name: c.status.name for c in result if c.status is not Status.OK}


def by_name(result: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in result}


def one_gpu(**changes) -> dict:
    """The healthy snapshot cut down to GPU 0, with `changes` to that GPU."""
    snap = load("healthy_h100_8gpu")
    snap["gpus"] = [{**snap["gpus"][0], **changes}]
    return snap


def gpu0(check: str, /, **changes) -> Check:
    """Check `check`[0] of one_gpu(**changes) with default expectations."""
    return by_name(evaluate(one_gpu(**changes)))[f"{check}[0]"]


# --- healthy --------------------------------------------------------------------------------------------------------


def test_healthy_every_check_ok():
    rep = report(load("healthy_h100_8gpu"))
    assert len(rep.checks) == 4 + 8 * 12
    assert failed(list(rep.checks)) == {}
    assert (rep.status, rep.exit_code) == (Status.OK, 0)
    assert rep.summary_line() == "OK gpu-a01: 100 OK (6.1 s)"


def test_healthy_with_every_expectation_set():
    expect = Expectations(expected_gpus=8, driver_version="550.163.01", min_cuda_driver="12.4")
    rep = report(load("healthy_h100_8gpu"), expect)
    assert rep.exit_code == 0
    assert all(c.remedy == "" for c in rep.checks)


def test_check_names_and_order():
    names = [c.name for c in evaluate(load("healthy_h100_8gpu"))]
    assert names == [*NODE_CHECKS, *(f"{check}[{i}]" for i in range(8) for check in PER_GPU)]


def test_healthy_checks_exact():
    result = evaluate(load("healthy_h100_8gpu"), Expectations(expected_gpus=8, driver_version="550"))
    assert result[: 4 + 12] == [
        Check("nvidia_gpu_visible", Status.OK, "8 NVIDIA GPUs visible", None, ""),
        Check("gpu_count", Status.OK, 8, 8, "", "8 of 8 expected GPUs visible"),
        Check("driver_version", Status.OK, "550.163.01", "550", "", "branch 550"),
        Check("cuda_driver_version", Status.OK, "12.4", "12.4", ""),
        Check(
            "gpu_model[0]", Status.OK, "NVIDIA H100 80GB HBM3", "hopper", "", "H100 SXM5: thresholds from the SKU table"
        ),
        Check("compute_capability[0]", Status.OK, "9.0", "9.0", ""),
        Check("persistence_mode[0]", Status.OK, True, True, ""),
        Check("ecc_mode[0]", Status.OK, True, True, ""),
        Check("ecc_uncorrectable_volatile[0]", Status.OK, 0, 0, ""),
        Check("ecc_uncorrectable_aggregate[0]", Status.OK, 0, 0, ""),
        Check("remapped_rows[0]", Status.OK, ROWS_OK, ROWS_THRESHOLD, ""),
        Check("clock_event_reasons[0]", Status.OK, ["gpu_idle"], [], ""),
        Check("pcie_link_generation[0]", Status.OK, 5, 5, "", "link max gen 5 of the GPU's gen 5; gen 5 now"),
        Check("pcie_link_width[0]", Status.OK, 16, 16, "", "link max x16 of x16; x16 now"),
        Check("temperature[0]", Status.OK, 35, 87, "", "35 C, 52 C below slowdown at 87 C"),
        Check("power_draw[0]", Status.OK, 70.0, 700.0, "", "70 W of 700 W limit (10%)"),
    ]


def test_checks_are_json_serialisable():
    for path in sorted(FIXTURES.glob("*.json")):
        rep = report(json.loads(path.read_text()))
        assert json.loads(rep.to_json())["checks"] == [c.to_dict() for c in rep.checks]


# --- the recorded faults --------------------------------------------------------------------------------------------


def test_throttled():
    rep = report(load("throttled"))
    result = list(rep.checks)
    assert failed(result) == {"clock_event_reasons[4]": "CRIT", "temperature[4]": "WARN", "power_draw[4]": "WARN"}
    checks_ = by_name(result)
    assert checks_["clock_event_reasons[4]"] == Check(
        "clock_event_reasons[4]",
        Status.CRIT,
        ["sw_power_cap", "hw_slowdown"],
        [],
        "Check the GPU's cooling and power supply (HW slowdown asserted); drain the node if it persists.",
    )
    assert (checks_["temperature[4]"].value, checks_["temperature[4]"].detail) == (
        85,
        "85 C, 2 C below slowdown at 87 C",
    )
    assert checks_["power_draw[4]"].detail == "695.3 W of 700 W limit (99%)"
    assert rep.exit_code == 2
    assert rep.summary_line() == (
        "CRIT gpu-a01: 1 CRIT, 2 WARN, 97 OK (6.1 s) - clock_event_reasons[4]: sw_power_cap, hw_slowdown; "
        "temperature[4]: 85 C, 2 C below slowdown at 87 C; power_draw[4]: 695.3 W of 700 W limit (99%)"
    )


def test_ecc_errors():
    rep = report(load("ecc_errors"))
    result = list(rep.checks)
    assert failed(result) == {
        "ecc_uncorrectable_volatile[3]": "CRIT",
        "ecc_uncorrectable_aggregate[3]": "WARN",
        "remapped_rows[5]": "WARN",
    }
    checks_ = by_name(result)
    assert checks_["ecc_uncorrectable_volatile[3]"] == Check(
        "ecc_uncorrectable_volatile[3]",
        Status.CRIT,
        2,
        0,
        "Drain the node and reset the GPU (nvidia-smi -r -i 3); RMA it if errors recur.",
    )
    assert checks_["remapped_rows[5]"] == Check(
        "remapped_rows[5]",
        Status.WARN,
        {"corrected": 1, "uncorrected": 0, "pending": True, "failure": False},
        ROWS_THRESHOLD,
        "Reset the GPU (nvidia-smi -r -i 5) or reboot to apply the pending row remapping.",
        "row remapping pending",
    )
    assert rep.summary_line() == (
        "CRIT gpu-a01: 1 CRIT, 2 WARN, 97 OK (6.1 s) - ecc_uncorrectable_volatile[3]: 2; "
        "ecc_uncorrectable_aggregate[3]: 2; remapped_rows[5]: row remapping pending"
    )


def test_a100():
    rep = report(load("a100"))
    result = list(rep.checks)
    assert failed(result) == {
        **{f"gpu_model[{i}]": "CRIT" for i in range(8)},
        **{f"compute_capability[{i}]": "CRIT" for i in range(8)},
    }
    for i in range(8):
        cc = by_name(result)[f"compute_capability[{i}]"]
        assert (cc.value, cc.threshold, cc.detail) == ("8.0", "9.0", "8.0, expected 9.0")
        model = by_name(result)[f"gpu_model[{i}]"]
        assert (model.value, model.threshold) == ("NVIDIA A100-SXM4-80GB", "hopper")
        assert model.detail == "NVIDIA A100-SXM4-80GB (compute capability 8.0) is not a Hopper GPU (9.0)"
    assert rep.exit_code == 2
    # 16 failures: the line names the first four and counts the rest.
    assert rep.summary_line() == (
        "CRIT gpu-a01: 16 CRIT, 84 OK (6.1 s) - gpu_model[0]: NVIDIA A100-SXM4-80GB (compute capability 8.0) is "
        "not a Hopper GPU (9.0); compute_capability[0]: 8.0, expected 9.0; gpu_model[1]: NVIDIA A100-SXM4-80GB "
        "(compute capability 8.0) is not a Hopper GPU (9.0); "
        "compute_capability[1]: 8.0, expected 9.0; +12 more"
    )


def test_a100_passes_as_an_a100():
    expect = Expectations(compute_capability="8.0", model_substring="A100")
    assert report(load("a100"), expect).exit_code == 0


def test_no_gpu():
    rep = report(load("no_gpu"))
    assert list(rep.checks) == [
        Check(
            "nvidia_gpu_visible",
            Status.CRIT,
            "no NVIDIA GPU visible: NVIDIA driver not loaded (NVML: Driver Not Loaded)",
            None,
            checks.REMEDY_NO_GPU,
        )
    ]
    assert rep.exit_code == 2
    line = rep.summary_line()
    assert line.startswith("CRIT")
    assert "no NVIDIA GPU visible" in line
    assert line == (
        "CRIT gpu-a01: 1 CRIT (6.1 s) - nvidia_gpu_visible: no NVIDIA GPU visible: "
        "NVIDIA driver not loaded (NVML: Driver Not Loaded)"
    )


def test_no_gpu_skips_every_other_check_whatever_is_expected():
    expect = Expectations(expected_gpus=8, driver_version="550.163.01")
    assert [c.name for c in evaluate(load("no_gpu"), expect)] == ["nvidia_gpu_visible"]


def test_degraded_pcie():
    result = evaluate(load("degraded_pcie"))
    assert failed(result) == {"pcie_link_width[1]": "CRIT"}
    assert by_name(result)["pcie_link_width[1]"] == Check(
        "pcie_link_width[1]",
        Status.CRIT,
        8,
        16,
        "Reseat the GPU or its riser and check the slot: the link trained narrower than the GPU.",
        "link max x8 of x16; x8 now",
    )


# --- no GPU, or nothing that is a snapshot --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "value"),
    [
        ({"schema": 1, "gpus": [], "not_supported": [], "errors": {}}, "no NVIDIA GPU visible: NVML reports 0 GPUs"),
        ({"error": "libnvidia-ml.so not found: no NVIDIA driver installed"}, None),
        ({}, "no NVIDIA GPU visible: no NVML snapshot"),
        ({"error": ""}, "no NVIDIA GPU visible: no NVML snapshot"),
        ({"gpus": "garbage"}, "no NVIDIA GPU visible: no NVML snapshot"),
        ({"gpus": [None, 3]}, "no NVIDIA GPU visible: NVML reports 0 GPUs"),
        (None, "no NVIDIA GPU visible: no NVML snapshot"),
        ("garbage", "no NVIDIA GPU visible: no NVML snapshot"),
    ],
)
def test_nothing_visible_never_raises(snapshot, value: str | None):
    [check] = evaluate(snapshot, Expectations(expected_gpus=8))
    assert (check.name, check.status) == ("nvidia_gpu_visible", Status.CRIT)
    assert check.value == (value or f"no NVIDIA GPU visible: {snapshot['error']}")


# --- node checks ----------------------------------------------------------------------------------------------------


def test_fewer_gpus_than_expected():
    snap = load("healthy_h100_8gpu")
    del snap["gpus"][6]
    rep = report(snap, Expectations(expected_gpus=8))
    check = by_name(list(rep.checks))["gpu_count"]
    assert (check.status, check.value, check.threshold) == (Status.CRIT, 7, 8)
    assert check.detail == "7 of 8 expected GPUs visible"
    assert failed(list(rep.checks)) == {"gpu_count": "CRIT"}
    assert rep.summary_line() == "CRIT gpu-a01: 1 CRIT, 87 OK (6.1 s) - gpu_count: 7 of 8 expected GPUs visible"


@pytest.mark.parametrize(
    ("expected", "status"), [(None, Status.OK), (8, Status.OK), (9, Status.CRIT), (4, Status.WARN)]
)
def test_gpu_count(expected: int | None, status: Status):
    check = checks.check_gpu_count([{}] * 8, Expectations(expected_gpus=expected))
    assert (check.status, check.value, check.threshold) == (status, 8, expected)
    assert bool(check.remedy) == (status is not Status.OK)


@pytest.mark.parametrize(
    ("pin", "driver", "status", "detail"),
    [
        ("550", "535.183.01", Status.CRIT, "535.183.01, expected branch 550"),
        ("550", "550.163.01", Status.OK, "branch 550"),
        ("550", "550.54.15", Status.OK, "branch 550"),
        ("55", "550.163.01", Status.CRIT, "550.163.01, expected branch 55"),
        ("550.163.01", "550.163.01", Status.OK, ""),
        ("550.163.01", "550.127.08", Status.CRIT, "550.127.08, pinned 550.163.01"),
        ("550.163", "550.163.01", Status.CRIT, "550.163.01, pinned 550.163"),
        (None, "535.183.01", Status.OK, "no driver pin set"),
    ],
)
def test_driver_version(pin: str | None, driver: str, status: Status, detail: str):
    snap = {**load("healthy_h100_8gpu"), "driver_version": driver}
    check = by_name(evaluate(snap, Expectations(driver_version=pin)))["driver_version"]
    assert (check.status, check.value, check.threshold, check.detail) == (status, driver, pin, detail)


def test_driver_branch_remedy():
    snap = {**load("healthy_h100_8gpu"), "driver_version": "535.183.01"}
    check = checks.check_driver_version(snap, Expectations(driver_version="550"))
    assert check.remedy == "Install an NVIDIA driver of branch 550 and reboot."
    pinned = checks.check_driver_version(snap, Expectations(driver_version="550.163.01"))
    assert pinned.remedy == "Install NVIDIA driver 550.163.01 and reboot."


def test_driver_version_query_failed():
    snap = {**load("healthy_h100_8gpu"), "driver_version": None, "errors": {"driver_version": "Unknown Error"}}
    check = checks.check_driver_version(snap, Expectations(driver_version="550"))
    assert (check.status, check.detail) == (Status.UNKNOWN, "NVML error: Unknown Error")


@pytest.mark.parametrize(
    ("supported", "needed", "status"),
    [
        ("12.4", "12.4", Status.OK),
        ("12.8", "12.4", Status.OK),
        ("13.0", "12.8", Status.OK),
        ("12.10", "12.9", Status.OK),  # compared as numbers, not text
        ("12.2", "12.4", Status.CRIT),
        ("11.8", "12.1", Status.CRIT),
        ("12.4", "12.8", Status.CRIT),
    ],
)
def test_cuda_driver_version(supported: str, needed: str, status: Status):
    snap = {**load("healthy_h100_8gpu"), "cuda_driver_version": supported}
    check = checks.check_cuda_driver(snap, Expectations(min_cuda_driver=needed))
    assert (check.status, check.value, check.threshold) == (status, supported, needed)


@pytest.mark.parametrize(
    ("needed", "remedy"),
    [
        ("12.4", "Install driver branch 550 or newer (CUDA 12.4 needs >= 550.54.15) and reboot."),
        ("12.8", "Install driver branch 570 or newer (CUDA 12.8 needs >= 570.26) and reboot."),
        ("12.7", "Install a driver that supports CUDA 12.7 and reboot."),
    ],
)
def test_cuda_driver_remedy_names_the_branch(needed: str, remedy: str):
    snap = {**load("healthy_h100_8gpu"), "cuda_driver_version": "12.2"}
    check = checks.check_cuda_driver(snap, Expectations(min_cuda_driver=needed))
    assert (check.status, check.remedy) == (Status.CRIT, remedy)
    assert check.detail == f"driver supports CUDA 12.2, stack needs {needed}"


def test_cuda_driver_without_a_minimum():
    check = checks.check_cuda_driver(load("healthy_h100_8gpu"), Expectations(min_cuda_driver=None))
    assert (check.status, check.value, check.threshold) == (Status.OK, "12.4", None)


def test_cuda_driver_version_not_comparable():
    snap = {**load("healthy_h100_8gpu"), "cuda_driver_version": "12.x"}
    assert checks.check_cuda_driver(snap, Expectations()).status is Status.UNKNOWN


def test_cuda_min_driver_table_is_ordered():
    versions = [checks._version(v) for v in checks.CUDA_MIN_DRIVER]
    drivers = [checks._version(d) for d in checks.CUDA_MIN_DRIVER.values()]
    assert versions == sorted(versions)
    assert drivers == sorted(drivers)


# --- per-GPU checks -------------------------------------------------------------------------------------------------


def test_gpu_model_mixed_hopper_node_passes_by_default_and_fails_a_group_that_requires_one_sku():
    snap = load("healthy_h100_8gpu")
    snap["gpus"][2] = {**snap["gpus"][2], "name": "NVIDIA H200", "compute_capability": "9.0"}
    assert failed(evaluate(snap)) == {}
    assert by_name(evaluate(snap))["gpu_model[2]"].detail == "H200 SXM: thresholds from the SKU table"
    result = evaluate(snap, Expectations(model_substring="NVIDIA H100 80GB HBM3"))
    assert failed(result) == {"gpu_model[2]": "CRIT"}
    assert by_name(result)["gpu_model[2]"].detail == "NVIDIA H200, expected NVIDIA H100 80GB HBM3"


def test_persistence_off():
    check = gpu0("persistence_mode", persistence_mode=False)
    assert (check.status, check.value, check.threshold) == (Status.WARN, False, True)
    assert check.remedy == "Enable persistence mode: systemctl enable --now nvidia-persistenced."
    assert evaluate(one_gpu(persistence_mode=False), Expectations(require_persistence=False))[6].status is Status.OK


def test_ecc_disabled():
    check = gpu0("ecc_mode", index=0, ecc_enabled=False)
    assert (check.status, check.value, check.threshold) == (Status.CRIT, False, True)
    assert check.remedy == "Enable ECC (nvidia-smi -i 0 -e 1), then reset the GPU or reboot."


def test_remapped_rows_failure():
    rows = {"corrected": 0, "uncorrected": 8, "pending": False, "failure": True}
    check = gpu0("remapped_rows", remapped_rows=rows)
    assert (check.status, check.value, check.detail) == (Status.CRIT, rows, "row remapping failure")
    assert check.remedy == "Drain the node and RMA the GPU: a row remapping failed."


def test_remapped_rows_failure_outranks_pending():
    rows = {"corrected": 0, "uncorrected": 8, "pending": True, "failure": True}
    assert gpu0("remapped_rows", remapped_rows=rows).status is Status.CRIT


def test_remapped_rows_that_were_applied_are_ok():
    rows = {"corrected": 2, "uncorrected": 1, "pending": False, "failure": False}
    assert gpu0("remapped_rows", remapped_rows=rows).status is Status.OK


# Fields that are None: a query error is UNKNOWN everywhere; "not supported" only where the check guards the job.
SAFETY_FIELDS = (
    ("gpu_model", "name"),
    ("compute_capability", "compute_capability"),
    ("ecc_mode", "ecc_enabled"),
    ("ecc_uncorrectable_volatile", "ecc_uncorrectable_volatile"),
    ("ecc_uncorrectable_aggregate", "ecc_uncorrectable_aggregate"),
    ("remapped_rows", "remapped_rows"),
)
INFO_FIELDS = (
    ("persistence_mode", "persistence_mode"),
    ("clock_event_reasons", "clock_event_reasons"),
    ("pcie_link_generation", "pcie_link_gen_max"),
    ("pcie_link_width", "pcie_link_width_max"),
    ("temperature", "temperature_c"),
    ("power_draw", "power_usage_w"),
)


@pytest.mark.parametrize(("check", "field"), SAFETY_FIELDS)
def test_not_supported_is_unknown_where_it_guards_the_job(check: str, field: str):
    result = gpu0(check, **{field: None, "not_supported": [field]})
    assert (result.status, result.value, result.detail) == (Status.UNKNOWN, None, "not supported")
    assert result.remedy == checks.REMEDY_UNSUPPORTED


@pytest.mark.parametrize(("check", "field"), INFO_FIELDS)
def test_not_supported_is_ok_where_it_only_costs_information(check: str, field: str):
    result = gpu0(check, **{field: None, "not_supported": [field]})
    assert (result.status, result.value, result.remedy, result.detail) == (Status.OK, None, "", "not supported")


@pytest.mark.parametrize(("check", "field"), SAFETY_FIELDS + INFO_FIELDS)
def test_query_error_is_unknown(check: str, field: str):
    result = gpu0(check, **{field: None, "errors": {field: "GPU is lost"}})
    assert (result.status, result.detail, result.remedy) == (
        Status.UNKNOWN,
        "NVML error: GPU is lost",
        checks.REMEDY_QUERY_FAILED,
    )


@pytest.mark.parametrize(("check", "field"), SAFETY_FIELDS + INFO_FIELDS)
def test_field_missing_without_a_reason_is_unknown(check: str, field: str):
    result = gpu0(check, **{field: None})
    assert (result.status, result.detail) == (Status.UNKNOWN, "not recorded in the snapshot")


def test_unknown_makes_the_node_fail_but_ranks_below_crit():
    snap = one_gpu(ecc_enabled=None, not_supported=["ecc_enabled"])
    assert report(snap).status is Status.UNKNOWN
    assert report(snap).exit_code == 3
    snap["gpus"][0]["compute_capability"] = "8.0"
    assert report(snap).status is Status.CRIT


def test_gpu_that_cannot_be_opened():
    snap = load("healthy_h100_8gpu")
    lost = {key: None for key in snap["gpus"][1]}
    snap["gpus"][1] = {**lost, "index": 1, "not_supported": [], "errors": {"handle": "GPU is lost"}}
    result = evaluate(snap, Expectations(expected_gpus=8))
    assert failed(result) == {"gpu_accessible[1]": "CRIT"}
    assert not [c for c in result if c.name.endswith("[1]") and c.name != "gpu_accessible[1]"]
    assert by_name(result)["gpu_accessible[1]"].value == "NVML cannot open GPU 1: GPU is lost"
    assert len(result) == 4 + 7 * 12 + 1


# --- clock event reasons ----------------------------------------------------------------------------------------------

REAL_EVENT_REASONS = {
    "gpu_idle": pynvml.nvmlClocksEventReasonGpuIdle,
    "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    "sw_power_cap": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
    "sw_thermal_slowdown": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "hw_thermal_slowdown": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "hw_power_brake_slowdown": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "display_clock_setting": pynvml.nvmlClocksEventReasonDisplayClockSetting,
    "board_limit": pynvml.nvmlClocksThrottleReasonBoardLimit,
    "reliability": pynvml.nvmlClocksThrottleReasonReliability,
}


def test_clock_event_bits_are_nvmls():
    assert {name: bit for bit, name, _ in checks.CLOCK_EVENT_REASONS} == REAL_EVENT_REASONS
    # The deprecated throttle-reason names carry the same bits.
    assert pynvml.nvmlClocksThrottleReasonHwSlowdown == pynvml.nvmlClocksEventReasonHwSlowdown == 0x8
    assert sum(bit for bit, _, _ in checks.CLOCK_EVENT_REASONS) == pynvml.nvmlClocksThrottleReasonAll


@pytest.mark.parametrize(
    ("mask", "reasons", "status"),
    [
        (0x0, [], Status.OK),
        (0x1, ["gpu_idle"], Status.OK),
        (0x2, ["applications_clocks_setting"], Status.OK),
        (0x4, ["sw_power_cap"], Status.WARN),
        (0x8, ["hw_slowdown"], Status.CRIT),
        (0x10, ["sync_boost"], Status.OK),
        (0x20, ["sw_thermal_slowdown"], Status.WARN),
        (0x40, ["hw_thermal_slowdown"], Status.CRIT),
        (0x80, ["hw_power_brake_slowdown"], Status.CRIT),
        (0x100, ["display_clock_setting"], Status.OK),
        (0x200, ["board_limit"], Status.WARN),
        (0x400, ["reliability"], Status.WARN),
        (0x113, ["gpu_idle", "applications_clocks_setting", "sync_boost", "display_clock_setting"], Status.OK),
        (0x24, ["sw_power_cap", "sw_thermal_slowdown"], Status.WARN),
        (0xC8, ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"], Status.CRIT),
        (0x1800, ["unknown_0x800", "unknown_0x1000"], Status.WARN),
        (0x801, ["gpu_idle", "unknown_0x800"], Status.WARN),
    ],
)
def test_clock_event_reasons(mask: int, reasons: list[str], status: Status):
    check = gpu0("clock_event_reasons", clock_event_reasons=mask)
    assert (check.status, check.value, check.threshold) == (status, reasons, [])
    assert bool(check.remedy) == (status is not Status.OK)


def test_clock_event_remedy_is_the_worst_reasons():
    check = gpu0("clock_event_reasons", clock_event_reasons=0x20 | 0x40)
    assert check.remedy == checks.CLOCK_EVENT_REMEDIES["hw_thermal_slowdown"]


# --- PCIe, temperature, power -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gens", "status", "detail"),
    [
        ((5, 5, 5), Status.OK, "link max gen 5 of the GPU's gen 5; gen 5 now"),
        ((1, 5, 5), Status.OK, "link max gen 5 of the GPU's gen 5; gen 1 now"),  # idle downshift
        ((4, 4, 5), Status.CRIT, "link max gen 4 of the GPU's gen 5; gen 4 now"),
        ((1, 4, 5), Status.CRIT, "link max gen 4 of the GPU's gen 5; gen 1 now"),
        # NVML lacks the GPU's own maximum: the SKU table's (H100 SXM5: gen 5) stands in.
        ((4, 4, None), Status.CRIT, "link max gen 4 of the GPU's gen 5; gen 4 now"),
        ((None, 5, 5), Status.OK, "link max gen 5 of the GPU's gen 5"),
    ],
)
def test_pcie_generation(gens: tuple, status: Status, detail: str):
    current, link, device = gens
    check = gpu0(
        "pcie_link_generation", pcie_link_gen_current=current, pcie_link_gen_max=link, pcie_link_gen_gpu_max=device
    )
    assert (check.status, check.value, check.threshold, check.detail) == (status, link, device or 5, detail)


@pytest.mark.parametrize(
    ("widths", "status", "detail"),
    [
        ((16, 16), Status.OK, "link max x16 of x16; x16 now"),
        ((8, 16), Status.OK, "link max x16 of x16; x8 now"),
        ((8, 8), Status.CRIT, "link max x8 of x16; x8 now"),
        ((4, 8), Status.CRIT, "link max x8 of x16; x4 now"),
    ],
)
def test_pcie_width(widths: tuple, status: Status, detail: str):
    current, link = widths
    check = gpu0("pcie_link_width", pcie_link_width_current=current, pcie_link_width_max=link)
    assert (check.status, check.value, check.threshold, check.detail) == (status, link, 16, detail)


@pytest.mark.parametrize(
    ("temp", "status", "detail"),
    [
        (35, Status.OK, "35 C, 52 C below slowdown at 87 C"),
        (77, Status.OK, "77 C, 10 C below slowdown at 87 C"),
        (78, Status.WARN, "78 C, 9 C below slowdown at 87 C"),
        (86, Status.WARN, "86 C, 1 C below slowdown at 87 C"),
        (87, Status.CRIT, "87 C, at or above slowdown at 87 C"),
        (91, Status.CRIT, "91 C, at or above slowdown at 87 C"),
    ],
)
def test_temperature(temp: int, status: Status, detail: str):
    check = gpu0("temperature", temperature_c=temp)
    assert (check.status, check.value, check.threshold, check.detail) == (status, temp, 87, detail)


def test_temperature_headroom_is_configurable():
    snap = one_gpu(temperature_c=80)
    assert evaluate(snap, Expectations(max_temp_headroom_c=5))[14].status is Status.OK
    assert evaluate(snap, Expectations(max_temp_headroom_c=10))[14].status is Status.WARN


def test_temperature_without_slowdown_threshold():
    check = gpu0("temperature", temperature_slowdown_c=None, not_supported=["temperature_slowdown_c"])
    assert (check.status, check.value, check.detail) == (Status.OK, 35, "35 C; slowdown threshold not reported")


@pytest.mark.parametrize(
    ("draw", "status", "detail"),
    [
        (70.0, Status.OK, "70 W of 700 W limit (10%)"),
        (685.9, Status.OK, "685.9 W of 700 W limit (98%)"),
        (686.0, Status.WARN, "686 W of 700 W limit (98%)"),
        (700.0, Status.WARN, "700 W of 700 W limit (100%)"),
        (712.4, Status.WARN, "712.4 W of 700 W limit (102%)"),
    ],
)
def test_power(draw: float, status: Status, detail: str):
    check = gpu0("power_draw", power_usage_w=draw)
    assert (check.status, check.value, check.threshold, check.detail) == (status, draw, 700.0, detail)


def test_power_without_limit():
    check = gpu0("power_draw", power_limit_w=None, not_supported=["power_limit_w"])
    assert (check.status, check.detail) == (Status.OK, "70 W; power limit not reported")


# --- result: statuses and the report ---------------------------------------------------------------------------------


def test_status_values_are_nagios_exit_codes():
    assert [(s.name, int(s)) for s in Status] == [("OK", 0), ("WARN", 1), ("CRIT", 2), ("UNKNOWN", 3)]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], Status.OK),
        ([Status.OK], Status.OK),
        ([Status.OK, Status.WARN], Status.WARN),
        ([Status.WARN, Status.UNKNOWN], Status.UNKNOWN),
        ([Status.UNKNOWN, Status.CRIT], Status.CRIT),
        ([Status.CRIT, Status.UNKNOWN, Status.WARN, Status.OK], Status.CRIT),
        ([Status.UNKNOWN, Status.OK], Status.UNKNOWN),
    ],
)
def test_worst(statuses: list[Status], expected: Status):
    assert worst(statuses) is expected
    assert worst(iter(statuses)) is expected


def test_report_without_checks_is_unknown():
    rep = Report([], NODE, started=STARTED, runtime_s=0.04)
    assert (rep.status, rep.exit_code) == (Status.UNKNOWN, 3)
    assert rep.summary_line() == "UNKNOWN gpu-a01: no checks (0.0 s)"


def test_report_to_json():
    rep = Report(
        [
            Check("gpu_count", Status.OK, 8, 8, ""),
            Check("temperature[2]", Status.WARN, 80, 87, "Check the GPU's cooling.", "80 C, 7 C below slowdown"),
            Check("ecc_mode[1]", Status.UNKNOWN, None, True, "Rerun.", "not supported"),
        ],
        NODE,
        started=STARTED,
        runtime_s=1.25,
    )
    assert rep.to_json() == json.dumps(
        {
            "node": NODE,
            "status": "UNKNOWN",
            "exit_code": 3,
            "started": STARTED,
            "runtime_s": 1.25,
            "counts": {"UNKNOWN": 1, "WARN": 1, "OK": 1},
            "summary": "UNKNOWN gpu-a01: 1 UNKNOWN, 1 WARN, 1 OK (1.2 s) - ecc_mode[1]: not supported; "
            "temperature[2]: 80 C, 7 C below slowdown",
            "environment": {},
            "stack_broken": [],
            "checks": [
                {"name": "gpu_count", "status": "OK", "value": 8, "threshold": 8, "remedy": "", "detail": ""},
                {
                    "name": "temperature[2]",
                    "status": "WARN",
                    "value": 80,
                    "threshold": 87,
                    "remedy": "Check the GPU's cooling.",
                    "detail": "80 C, 7 C below slowdown",
                },
                {
                    "name": "ecc_mode[1]",
                    "status": "UNKNOWN",
                    "value": None,
                    "threshold": True,
                    "remedy": "Rerun.",
                    "detail": "not supported",
                },
            ],
        },
        indent=2,
    )
    assert list(json.loads(rep.to_json())) == [
        "node",
        "status",
        "exit_code",
        "started",
        "runtime_s",
        "counts",
        "summary",
        "environment",
        "stack_broken",
        "checks",
    ]


def test_summary_worst_first_then_in_check_order():
    rep = Report(
        [
            Check("a", Status.WARN, 1, 0, "x"),
            Check("b", Status.OK, 1, 1, ""),
            Check("c", Status.CRIT, 1, 0, "x"),
            Check("d", Status.UNKNOWN, None, 0, "x", "not supported"),
            Check("e", Status.CRIT, [], 0, "x"),
            Check("f", Status.WARN, 2, 0, "x"),
        ],
        "n1",
        started=STARTED,
        runtime_s=2,
    )
    assert rep.summary_line() == (
        "CRIT n1: 2 CRIT, 1 UNKNOWN, 2 WARN, 1 OK (2.0 s) - c: 1; e: none; d: not supported; a: 1; +1 more"
    )


def test_summary_item_is_truncated():
    long = "x" * 300
    rep = Report([Check("gpu_model[0]", Status.CRIT, long, "H100", "Fix it.")], NODE, started=STARTED, runtime_s=1)
    item = rep.summary_line().split(" - ", 1)[1]
    assert item == "gpu_model[0]: " + "x" * (120 - len("gpu_model[0]: ") - 3) + "..."
    assert len(item) == 120


def test_report_started_defaults_to_utc_now():
    rep = Report([], NODE)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rep.started)


def test_report_and_check_are_frozen():
    rep = report(load("healthy_h100_8gpu"))
    assert isinstance(rep.checks, tuple)
    with pytest.raises(AttributeError):
        rep.node = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        rep.checks[0].status = Status.CRIT  # type: ignore[misc]
    assert replace(rep.checks[0], status=Status.CRIT).status is Status.CRIT


def test_evaluate_does_not_change_the_snapshot():
    snap = load("ecc_errors")
    before = copy.deepcopy(snap)
    evaluate(snap, Expectations(expected_gpus=8, driver_version="550"))
    assert snap == before


def test_no_minimum_cuda_checks_nothing():
    check = checks.check_cuda_driver(load("healthy_h100_8gpu"), Expectations(min_cuda_driver=None))
    assert (check.status, check.value, check.threshold) == (Status.OK, "12.4", None)


# --- driver branch lifecycle (h100fleet.probes.drivers) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "today", "status", "words"),
    [
        ("550.163.01", date(2025, 1, 1), Status.WARN, "driver branch R550 is no longer supported by NVIDIA"),
        ("535.230.02", date(2026, 6, 30), Status.OK, "R535 LTSB until 2026-06"),
        ("535.230.02", date(2026, 7, 1), Status.WARN, "R535 (LTSB) reached its end of life in 2026-06"),
        ("570.172.08", date(2026, 1, 1), Status.WARN, "driver branch R570 is no longer supported"),
        ("580.159.04", date(2026, 12, 1), Status.OK, "R580 LTSB until 2028-06"),
        ("595.45.04", date(2027, 4, 1), Status.WARN, "R595 (production branch) reached its end of life in 2027-03"),
        ("640.10", date(2030, 1, 1), Status.OK, "R640 (not in the table)"),
    ],
)
def test_driver_branch_past_end_of_life_warns_and_names_the_supported_ones(driver, today, status, words):
    snap = {**load("healthy_h100_8gpu"), "driver_version": driver}
    check = checks.check_driver_branch(snap, Expectations(today=today))
    assert check.status is status
    assert words in check.detail
    if status is Status.WARN:
        assert check.remedy.startswith("Plan a driver bump to a supported branch (")
        supported = [f"R{b.branch}" for b in drivers.supported_branches(today)]
        assert (
            check.remedy
            == f"Plan a driver bump to a supported branch ({', '.join(supported)}) with the rollout playbook."
        )
        assert all(name in check.detail for name in supported)


def test_driver_branch_is_judged_only_with_a_date():
    snap = load("healthy_h100_8gpu")
    names = [c.name for c in evaluate(snap, Expectations())]
    assert "driver_branch" not in names
    dated = evaluate(snap, Expectations(today=date(2026, 12, 1)))
    assert [c.name for c in dated][:4] == ["nvidia_gpu_visible", "gpu_count", "driver_version", "driver_branch"]
    assert worst(c.status for c in dated) is Status.WARN  # the fixture runs 550.163.01


def test_driver_branch_of_a_snapshot_without_a_driver_version_is_unknown():
    snap = {**load("healthy_h100_8gpu"), "driver_version": None, "errors": {"driver_version": "NVML_ERROR_UNKNOWN"}}
    assert checks.check_driver_branch(snap, Expectations(today=date(2026, 12, 1))).status is Status.UNKNOWN


def test_cuda_remedy_reads_the_driver_table():
    assert checks.CUDA_MIN_DRIVER is drivers.CUDA_MIN_DRIVER
    assert checks.driver_for_cuda("13.0") == "driver branch 580 or newer (CUDA 13.0 needs >= 580.65.06)"
