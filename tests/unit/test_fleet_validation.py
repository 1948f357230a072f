"""The fleet validation table, from real probe reports (docs/validation) and recorded snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from h100fleet.fleet import validation
from h100fleet.probes import run

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "nvml"
H100_REPORT = REPO / "docs" / "validation" / "2026-11-26-h100-probe.json"


def test_row_from_the_h100_report():
    report = json.loads(H100_REPORT.read_text())
    row = validation.row("h100-device", report, "current-2026.11")
    assert row == {
        "node": "h100-device",
        "gpus": "1x NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
        "driver": row["driver"],
        "stack": row["stack"],
        "gemm_tflops": "793.3",
        "status": "OK",
    }
    assert row["stack"].startswith("current-2026.11")


def test_row_from_a_recorded_a100_node():
    snap = json.loads((FIXTURES / "a100.json").read_text())
    report = run.probe(run.Expectations(), run.Thresholds(), compute=False, unsloth=False, node="a", snapshot=snap)
    row = validation.row("a", report.to_dict())
    assert row["gpus"] == "8x NVIDIA A100-SXM4-80GB"
    assert row["compute_capability"] == "8.0"
    assert row["driver"] == snap["driver_version"]
    assert row["gemm_tflops"] == "-"
    assert row["status"] == "CRIT"


def test_row_without_gpu_and_without_report():
    snap = json.loads((FIXTURES / "no_gpu.json").read_text())
    report = run.probe(run.Expectations(), run.Thresholds(), snapshot=snap, node="n")
    assert validation.row("n", report.to_dict())["gpus"] == "none visible"
    missing = validation.row("m", None)
    assert missing["status"] == "no report" and missing["gpus"] == "-"


def test_rows_and_markdown():
    report = json.loads(H100_REPORT.read_text())
    hostvars = {"b": {"gpu_validate_report": report}, "a": {}}
    table = validation.rows(hostvars, ["b", "a"])
    assert [r["node"] for r in table] == ["a", "b"]
    text = validation.markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| node | GPUs | compute capability | driver | stack | GEMM TFLOP/s (min) | status |"
    assert lines[2].startswith("| a | - |") and lines[2].endswith("| no report |")
    assert lines[-1] == "1 OK, 1 no report of 2 nodes."


def test_role_copies_every_probe_module():
    """The role's module list is read from the package: every module of h100fleet.probes, the driver table
    included, and nothing that is not a module."""
    modules = validation.probe_modules()
    assert modules == sorted(p.name for p in (REPO / "src" / "h100fleet" / "probes").glob("*.py"))
    assert {"__init__.py", "__main__.py", "checks.py", "drivers.py", "run.py"} <= set(modules)
    assert all(name.endswith(".py") for name in modules)
    role_vars = yaml.safe_load((REPO / "roles" / "gpu_validate" / "vars" / "main.yml").read_text())
    assert "gpu_validate_probe_modules" in role_vars["__gpu_validate_modules"]
