"""What gpu_validate leaves on a node without a GPU, and what it reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

INSTALL = "/opt/h100fleet/probes"
REPORT = "/var/lib/h100fleet/probes/probe.json"
FETCHED = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "validation"


def test_probe_modules_installed(host):
    for name in ["__init__.py", "__main__.py", "checks.py", "nvml.py", "result.py", "run.py"]:
        assert host.file(f"{INSTALL}/h100fleet/probes/{name}").is_file
    assert host.file(f"{INSTALL}/h100fleet/__init__.py").is_file


def test_compiler_cache_dir_survives_reboots(host):
    cache = host.file("/var/cache/h100fleet/probes")
    assert cache.is_directory and cache.user == "root"


def test_probe_venv_has_nvml_binding(host):
    out = host.check_output(f"{INSTALL}/venv/bin/python -c 'import pynvml; print(pynvml.__name__)'")
    assert out == "pynvml"


def test_report_on_the_node_says_no_gpu_plainly(host):
    report = json.loads(host.file(REPORT).content_string)
    assert report["status"] == "CRIT" and report["exit_code"] == 2
    assert [c["name"] for c in report["checks"]] == ["nvidia_gpu_visible"]
    check = report["checks"][0]
    assert check["value"].startswith("no NVIDIA GPU visible: libnvidia-ml.so not found")
    assert check["remedy"].startswith("Install and load the NVIDIA driver")
    assert "Traceback" not in host.file(REPORT).content_string


def test_probe_command_exits_crit_without_a_traceback(host):
    result = host.run(f"PYTHONPATH={INSTALL} {INSTALL}/venv/bin/python -m h100fleet.probes --no-compute --node x")
    assert result.rc == 2
    assert result.stdout.startswith("CRIT x: 1 CRIT")
    assert "Traceback" not in result.stderr


def test_report_fetched_and_fleet_table_written(host):
    name = host.backend.get_hostname()
    fetched = json.loads((FETCHED / f"{name}.json").read_text())
    assert fetched["node"] == name and fetched["status"] == "CRIT"
    table = (FETCHED / "fleet-validation.md").read_text()
    assert f"| {name} | none visible | - | - | - | - | CRIT |" in table
    rows = json.loads((FETCHED / "fleet-validation.json").read_text())
    assert rows[0]["status"] == "CRIT"
