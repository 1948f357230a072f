"""The one table of NVIDIA driver branches and CUDA minimums (h100fleet.probes.drivers) and who reads it."""

from __future__ import annotations

from datetime import date

import pytest

from h100fleet.fleet import summary
from h100fleet.probes import checks, drivers
from h100fleet.stack import knowledge

TODAY = date(2026, 12, 1)


def test_nvidias_branch_table():
    """NVIDIA's "Supported Drivers and CUDA Toolkit Versions": type, end of life, newest CUDA major."""
    table = {b.branch: (b.kind, b.end_of_life, b.cuda_major) for b in drivers.BRANCHES}
    assert table == {
        535: ("ltsb", (2026, 6), 12),
        550: ("unsupported", None, 12),
        580: ("ltsb", (2028, 6), 13),
        595: ("production", (2027, 3), 13),
        620: ("ltsb", (2029, 9), 13),
    }


@pytest.mark.parametrize(
    ("today", "supported"),
    [
        (date(2026, 6, 30), [535, 580, 595, 620]),
        (date(2026, 7, 1), [580, 595, 620]),
        (date(2027, 4, 1), [580, 620]),
        (date(2028, 7, 1), [620]),
        (date(2029, 10, 1), []),
    ],
)
def test_supported_branches_through_the_last_day_of_the_month(today, supported):
    assert [b.branch for b in drivers.supported_branches(today)] == supported


@pytest.mark.parametrize(
    ("version", "status", "describe"),
    [
        ("550.163.01", "end_of_life", "R550 unsupported"),
        ("550", "end_of_life", "R550 unsupported"),
        ("535.230.02", "end_of_life", "R535 LTSB until 2026-06 (past)"),
        ("570.172.08", "end_of_life", "R570 unsupported"),  # not listed, older than the newest listed: end of life
        ("470.256.02", "end_of_life", "R470 unsupported"),
        ("580.159.04", "supported", "R580 LTSB until 2028-06"),
        ("595", "supported", "R595 production branch until 2027-03"),
        ("620.10.01", "supported", "R620 LTSB until 2029-09"),
        ("640.1", "unknown", "R640 (not in the table)"),
    ],
)
def test_lifecycle(version, status, describe):
    state = drivers.lifecycle(version, TODAY)
    assert (state["status"], state["describe"]) == (status, describe)
    assert state["supported"] == [580, 595, 620]
    if status == "end_of_life":
        assert state["warning"].endswith(
            "supported: R580 LTSB until 2028-06, R595 production branch until 2027-03, R620 LTSB until 2029-09"
        )
    else:
        assert state["warning"] == ""


def test_unlisted_branches_get_the_cuda_major_they_run_natively():
    assert drivers.branch(570).cuda_major == 12
    assert drivers.branch(470).cuda_major == 11
    assert drivers.newest_native_cuda(550) == "12.4"
    assert drivers.newest_native_cuda(580) == "13.0"
    assert drivers.branch(700) is None


@pytest.mark.parametrize(
    ("version", "cuda", "runs"),
    [
        ("550", "12.4", True),
        ("550.54.15", "12.4", True),
        ("550.54.14", "12.4", False),  # GA's minimum; 12.4 Update 1 needs 550.54.15
        ("535", "12.4", False),
        ("550.163.01", "13.0", False),
        ("580", "13.0", True),
        ("580.65.06", "13.0", True),
        ("580", "12.4", True),
        ("580", "12.7", False),  # a CUDA version the table does not know
    ],
)
def test_runs_cuda(version, cuda, runs):
    assert drivers.runs_cuda(version, cuda) is runs


def test_driver_check_for_the_preflight():
    check = drivers.driver_check("550.163.01", "13.0", TODAY)
    assert check["cuda_known"] is True
    assert (check["min_driver"], check["min_branch"], check["runs_cuda"]) == ("580.65.06", 580, False)
    assert check["lifecycle"]["status"] == "end_of_life"
    assert check["cuda_versions"] == list(drivers.CUDA_MIN_DRIVER)
    assert drivers.driver_check("580", "12.9", TODAY)["cuda_known"] is True
    assert drivers.driver_check("580", "12.7", TODAY)["cuda_known"] is False


def test_cuda_table_is_ordered_and_every_major_has_a_floor():
    versions = [drivers.version_key(v) for v in drivers.CUDA_MIN_DRIVER]
    minimums = [drivers.version_key(d) for d in drivers.CUDA_MIN_DRIVER.values()]
    assert versions == sorted(versions) and minimums == sorted(minimums)
    for cuda, minimum in drivers.CUDA_MIN_DRIVER.items():
        floor = drivers.CUDA_MAJOR_FLOOR[cuda.split(".")[0]]
        assert drivers.version_key(floor) <= drivers.version_key(minimum)


def test_every_reader_uses_the_one_table():
    """The probes, the stack rules and the fleet summary hold no copy of their own."""
    assert checks.CUDA_MIN_DRIVER is drivers.CUDA_MIN_DRIVER
    assert knowledge.CUDA_MIN_DRIVER is drivers.CUDA_MIN_DRIVER
    assert knowledge.CUDA_MAJOR_FLOOR is drivers.CUDA_MAJOR_FLOOR
    assert summary.drivers is drivers
