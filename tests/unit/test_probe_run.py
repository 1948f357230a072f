"""The probe run and its command line, on recorded snapshots (no GPU here)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from h100fleet.probes import run
from h100fleet.probes.checks import Expectations
from h100fleet.probes.result import Status

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvml"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_no_gpu_gives_one_clear_crit_and_runs_nothing_else():
    report = run.probe(Expectations(), run.Thresholds(), snapshot=load("no_gpu.json"), node="n1")
    assert [c.name for c in report.checks] == ["nvidia_gpu_visible"]
    assert report.status is Status.CRIT and report.exit_code == 2
    assert report.summary_line().startswith("CRIT n1: 1 CRIT")
    assert "no NVIDIA GPU visible" in report.summary_line()


def test_cli_writes_the_report_atomically_and_exits_with_the_status(tmp_path, capsys):
    out = tmp_path / "reports" / "probe.json"
    code = run.main(["--snapshot", str(FIXTURES / "no_gpu.json"), "--node", "n1", "--json", str(out)])
    assert code == 2
    data = json.loads(out.read_text())
    assert data["status"] == "CRIT" and data["exit_code"] == 2 and data["node"] == "n1"
    assert not out.with_suffix(".json.tmp").exists()
    assert capsys.readouterr().out.startswith("CRIT n1:")


def test_cli_nvml_only_on_a_healthy_recorded_node(capsys):
    code = run.main(
        [
            "--snapshot",
            str(FIXTURES / "healthy_h100_8gpu.json"),
            "--expect-gpus",
            "8",
            "--driver",
            "550",
            "--no-compute",
            "--no-unsloth",
            "--node",
            "gpu-a01",
        ]
    )
    # Healthy, but R550 is no longer supported by NVIDIA: the probe warns and names the supported branches.
    assert code == 1
    out = capsys.readouterr().out
    assert out.startswith("WARN gpu-a01: 1 WARN, 100 OK")
    assert "driver_branch: driver branch R550 is no longer supported by NVIDIA" in out


def test_cli_a100_fails_on_compute_capability(capsys):
    code = run.main(["--snapshot", str(FIXTURES / "a100.json"), "--no-compute", "--no-unsloth", "--node", "a"])
    assert code == 2
    assert "compute_capability[0]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--compute-capability", "nine"], "argument --compute-capability: expected MAJOR.MINOR such as 9.0"),
        (["--expect-gpus", "-1"], "--expect-gpus must be 0 or more, got -1"),
        (["--min-gemm-tflops", "fast"], "argument --min-gemm-tflops: invalid float value: 'fast'"),
    ],
)
def test_cli_bad_arguments_are_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_measure_turns_an_exception_into_a_crit_check():
    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    check = run._measure("gemm_bf16_tflops[0]", 600, "TFLOP/s", "reset", broken)
    assert check.status is Status.CRIT
    assert check.detail == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_measure_compares_with_the_threshold():
    assert run._measure("x", 600, "TFLOP/s", "r", lambda: 612.34).status is Status.OK
    low = run._measure("x", 600, "TFLOP/s", "r", lambda: 512.0)
    assert low.status is Status.CRIT and low.detail == "512.0 TFLOP/s < 600 TFLOP/s"


def test_unsloth_check_reports_a_broken_stack_as_crit():
    # This machine has no torch or unsloth: the subprocess fails and the probe says why instead of raising.
    check, version = run.finish_unsloth(run.start_unsloth(), timeout=120)
    assert version is None
    assert check.name == "unsloth_train_step"
    assert check.status is Status.CRIT
    assert "ModuleNotFoundError" in check.detail or "No module named" in check.detail


STACKS = Path(__file__).resolve().parents[2] / "files" / "stacks"


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        ("torch2.3-unsloth2024.8-py310/lock-py3.10.txt", True),
        ("torch2.6-transformers5.17-py313/lock-py3.13.txt", False),
        (None, True),
    ],
    ids=["unsloth-stack", "hf-stack", "no-stack-venv"],
)
def test_the_unsloth_probe_belongs_to_stacks_that_pin_unsloth(tmp_path, lock, expected):
    # A stack venv keeps its lock; a Hugging Face stack is not failed for lacking Unsloth, an Unsloth stack that
    # lost it still is (the probe runs and fails), and so is any interpreter that is no stack venv.
    if lock is not None:
        (tmp_path / run.VENV_LOCK).write_text((STACKS / lock).read_text())
    assert run.unsloth_in_stack(tmp_path) is expected


def test_the_probe_reads_the_lock_where_python_stack_keeps_it():
    role_vars = yaml.safe_load((STACKS.parents[1] / "roles/python_stack/vars/main.yml").read_text())
    assert role_vars["__python_stack_lock_name"] == run.VENV_LOCK


def test_the_probes_import_nothing_outside_their_package():
    # gpu_validate installs h100fleet/probes alone on a node without a stack: any other h100fleet import fails there.
    for path in (STACKS.parents[1] / "src" / "h100fleet" / "probes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            outside = [n for n in names if n.startswith("h100fleet") and not n.startswith("h100fleet.probes")]
            assert not outside, f"{path.name} imports {outside}"
