"""After the rollout cases (side_effect.yml): every node runs the fixed stack, its trainer is active and its
step keeps advancing, the old stack is the rollback target, and the fleet report on the control node says so."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from h100fleet.harness import testinfra

testinfra_hosts = testinfra.hosts()

UNIT = "h100fleet-trainer.service"
STATUS = "/var/lib/h100fleet/trainer/status.json"
ROOT = "/var/cache/h100fleet/uv/molecule-rollout"
REPORT = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")) / "report-b"


def status(host) -> dict:
    return json.loads(host.file(STATUS).content_string)


def explain(host) -> str:
    return host.run(f"journalctl -u {UNIT} -n 30 --no-pager; cat {STATUS}").stdout


def test_current_is_the_fixed_stack_and_previous_the_old_one(host):
    root = f"{ROOT}/{host.backend.get_hostname()}"
    current = host.file(f"{root}/current").linked_to
    previous = host.file(f"{root}/previous").linked_to
    assert os.path.basename(current).startswith("rollout-next-py3.11-")
    assert os.path.basename(previous).startswith("torch2.3-unsloth2024.8-py310-py3.11-")
    assert host.file(f"{current}/h100fleet-stack.json").exists


def test_trainer_runs_on_it_and_advances(host):
    assert host.service(UNIT).is_running, explain(host)
    first = status(host)
    assert first["state"] in ("training", "checkpointing"), explain(host)
    # rollout-3 trains one job of two processes (molecule.yml): the new stack resumed it at two ranks
    assert first["world_size"] == (2 if host.backend.get_hostname() == "rollout-3" else 1), explain(host)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(2)
        if status(host)["step"] > first["step"]:
            break
    else:
        raise AssertionError(f"step stayed at {first['step']} for 60 s\n{explain(host)}")
    # the trainer's process has the new stack's libraries mapped (torch from rollout-next's venv)
    maps = host.run(f"grep -c rollout-next-py3.11 /proc/{int(first['pid'])}/maps").stdout.strip()
    assert maps not in ("", "0"), explain(host)


def test_fleet_report():
    doc = json.loads((REPORT / "rollout-report.json").read_text())
    assert doc["summary"]["state"] == "complete"
    assert [n["status"] for n in doc["nodes"]] == ["done", "done", "done"]
    md = (REPORT / "rollout-report.md").read_text()
    assert "**complete**. 3 of 3 nodes on the new stack." in md
    assert "<svg" in (REPORT / "rollout-report.html").read_text()


def test_flip_journal_closed_and_guard_timer_stopped(host):
    journal = json.loads(host.file("/var/lib/h100fleet/rollout/journal.json").content_string)
    assert (journal["state"], journal["outcome"], journal["to"]["id"]) == ("closed", "done", "rollout-next")
    assert not host.service("h100fleet-rollout-guard.timer").is_running
    assert host.file("/usr/local/libexec/h100fleet-rollout-guard").mode == 0o755
