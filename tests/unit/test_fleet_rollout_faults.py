"""playbooks/rollout.yml and rollback.yml under injected faults, on simulated hosts (rollout_simulate): a host lost
mid-flip, from the start, or as the canary; ansible-playbook killed (SIGKILL) or interrupted (SIGINT) mid-batch and
before the switch, then run again; a switch that fails after current moved; rollback.yml run twice. Each test
checks the nodes' own (simulated) state, journal included, not only the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from h100fleet.harness import rollout_sim

pytest.importorskip("ansible")

A, B = rollout_sim.STACK_A, rollout_sim.STACK_B
ROLLBACK = rollout_sim.REPO / "playbooks" / "rollback.yml"


def states(workdir):
    return {p.stem: json.loads(p.read_text()) for p in sorted((workdir / "state").glob("*.json"))}


def nodes(run_or_report):
    report = run_or_report if isinstance(run_or_report, dict) else run_or_report.report
    return {n["host"]: n for n in report["nodes"]}


def journal_state(node):
    return (node.get("journal") or {}).get("state")


def lose(workdir, host):
    (workdir / "state" / f"{host}.lost").write_text("test\n")


def find(workdir, host):
    (workdir / "state" / f"{host}.lost").unlink()


def on_a_training(node, step=110):
    return (node["current"], node["service"], node["step"]) == (A, "active", step)


def on_b_training(node, step=110):
    return (node["current"], node["service"], node["step"]) == (B, "active", step)


def test_host_lost_mid_flip_halts_the_batch_and_a_rerun_finishes_it(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 3)
    run = rollout_sim.run_rollout(
        tmp_path, inventory, batch="2", forks=3, extra_vars={"rollout_simulate_unreachable": {"sim-0002": "stopped"}}
    )
    assert run.rc != 0, run.log[-3000:]
    s, r = states(tmp_path), nodes(run)
    assert run.report["summary"]["state"] == "halted"
    assert r["sim-0001"]["status"] == "done" and on_b_training(s["sim-0001"])
    # the lost node: its trainer stopped, its journal open with what it was before the stop
    assert r["sim-0002"]["status"] == "unreachable"
    assert "unreachable (state unknown)" in r["sim-0002"]["error"]
    assert (s["sim-0002"]["current"], s["sim-0002"]["service"]) == (A, "inactive")
    assert journal_state(s["sim-0002"]) == "open"
    # lost before the checkpointed step was journalled: the re-run reads it from the stopped trainer
    assert s["sim-0002"]["journal"]["was_active"] is True and s["sim-0002"]["journal"]["step"] is None
    # its batch-mate went back to A and trains; its journal is closed
    assert r["sim-0003"]["status"] == "rolled-back" and on_a_training(s["sim-0003"])
    assert journal_state(s["sim-0003"]) == "closed"
    assert "Unreachable (state unknown): sim-0002" in (tmp_path / "report" / "rollout-report.md").read_text()

    # reachable again: the re-run finishes sim-0002 from its journal (trainer restarted, not "idle on purpose")
    find(tmp_path, "sim-0002")
    again = rollout_sim.run_rollout(tmp_path, inventory, batch="2", forks=3)
    assert again.rc == 0, again.log[-3000:]
    s, r = states(tmp_path), nodes(again)
    assert again.report["summary"]["state"] == "complete"
    assert (r["sim-0002"]["status"], r["sim-0002"]["step_before"]) == ("done", 100)
    assert on_b_training(s["sim-0002"]) and on_b_training(s["sim-0003"], step=120)
    assert all(journal_state(n) == "closed" for n in s.values())

    # rollback.yml twice: back to A where training continues, then nothing changes
    back = rollout_sim.run_rollout(tmp_path, inventory, forks=3, playbook=ROLLBACK)
    assert back.rc == 0, back.log[-3000:]
    after_first = states(tmp_path)
    for node in after_first.values():
        assert (node["current"], node["previous"], node["service"]) == (A, B, "active")
        assert node["journal"]["kind"] == "rollback" and node["journal"]["state"] == "closed"
    report = rollout_sim.report_of(tmp_path)
    assert report["summary"]["state"] == "rolled back"
    assert {n["status"] for n in report["nodes"]} == {"reverted"}
    twice = rollout_sim.run_rollout(tmp_path, inventory, forks=3, playbook=ROLLBACK)
    assert twice.rc == 0, twice.log[-3000:]
    assert states(tmp_path) == after_first
    assert "nothing to do" in twice.log

    # a target none of the nodes has, and a node lost: every node is visited, every problem is named at the end
    lose(tmp_path, "sim-0003")
    refused = rollout_sim.run_rollout(
        tmp_path, inventory, forks=3, playbook=ROLLBACK, extra_vars={"rollout_rollback_to": "no-such-stack"}
    )
    assert refused.rc != 0
    assert all(f"sim-000{i}: refused: rollout_rollback_to 'no-such-stack'" in refused.log for i in (1, 2))
    assert "sim-0003: unreachable (state unknown)" in refused.log
    assert states(tmp_path) == after_first
    report = nodes(rollout_sim.report_of(tmp_path))
    assert report["sim-0003"]["status"] == "unreachable"
    assert "refused: rollout_rollback_to 'no-such-stack'" in report["sim-0001"]["error"]
    assert report["sim-0001"]["status"] == "reverted"  # what it runs is unchanged: still switched back


def test_host_unreachable_from_the_start_stops_before_anything_changes(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    lose(tmp_path, "sim-0002")
    before = states(tmp_path)
    run = rollout_sim.run_rollout(tmp_path, inventory, forks=2)
    assert run.rc != 0
    assert states(tmp_path) == before  # sim-0001 not even pre-staged
    r = nodes(run)
    assert r["sim-0002"]["status"] == "unreachable" and "before the rollout started" in r["sim-0002"]["error"]
    assert r["sim-0001"]["status"] == "untouched" and "not started" in r["sim-0001"]["error"]
    assert run.report["summary"]["state"] == "halted"


def test_canary_lost_halts_before_the_next_batch(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 3)
    run = rollout_sim.run_rollout(
        tmp_path, inventory, batch="2", forks=3, extra_vars={"rollout_simulate_unreachable": {"sim-0001": "switched"}}
    )
    assert run.rc != 0, run.log[-3000:]
    s, r = states(tmp_path), nodes(run)
    assert r["sim-0001"]["status"] == "unreachable"
    assert (s["sim-0001"]["current"], s["sim-0001"]["service"], journal_state(s["sim-0001"])) == (B, "inactive", "open")
    for host in ("sim-0002", "sim-0003"):  # no canary passed its gate: the next batch never stopped a trainer
        assert r[host]["status"] == "untouched" and "sim-0001 cannot be reached" in r[host]["error"]
        assert on_a_training(s[host], step=100) and journal_state(s[host]) is None


@pytest.mark.parametrize(("sig", "phase"), [(signal.SIGKILL, "stopped"), (signal.SIGINT, "switched")])
def test_playbook_killed_mid_batch_then_rerun(tmp_path, sig, phase):
    inventory = rollout_sim.create_fleet(tmp_path, 3)
    argv, env = rollout_sim.rollout_command(
        tmp_path, inventory, batch="2", forks=3, extra_vars={"rollout_simulate_pause": {"sim-0002": phase}}
    )
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    paused = tmp_path / "state" / "sim-0002.paused"
    deadline = time.monotonic() + 600
    while not paused.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert paused.exists(), "the flip never reached the pause"
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    if sig != signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    s = states(tmp_path)
    expected = A if phase == "stopped" else B
    assert (s["sim-0002"]["current"], s["sim-0002"]["service"], journal_state(s["sim-0002"])) == (
        expected,
        "inactive",
        "open",
    )
    assert s["sim-0001"]["current"] == B and s["sim-0001"]["service"] == "active"

    paused.unlink()
    again = rollout_sim.run_rollout(tmp_path, inventory, batch="2", forks=3)
    assert again.rc == 0, again.log[-3000:]
    s, r = states(tmp_path), nodes(again)
    assert again.report["summary"]["state"] == "complete"
    for host in ("sim-0002", "sim-0003"):
        # finished from the journal: the trainer that ran before the interrupted flip runs again, on B
        assert r[host]["status"] == "done" and r[host]["step_before"] == 100, r[host]
        assert on_b_training(s[host]) and journal_state(s[host]) == "closed"
    assert r["sim-0001"]["note"] == "done by an earlier run of this rollout"


def test_switch_that_fails_after_current_moved_goes_back_to_a(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    run = rollout_sim.run_rollout(
        tmp_path, inventory, batch="1", forks=2, extra_vars={"rollout_simulate_switch_fail": ["sim-0001"]}
    )
    assert run.rc != 0, run.log[-3000:]
    s, r = states(tmp_path), nodes(run)
    assert r["sim-0001"]["status"] == "rolled-back", run.log[-3000:]
    assert "the switch failed after current moved" in r["sim-0001"]["error"]
    # the rescue read the links: current had moved, so it went back to A (previous as before the flip)
    assert on_a_training(s["sim-0001"]) and s["sim-0001"]["previous"] is None
    assert journal_state(s["sim-0001"]) == "closed"
    assert r["sim-0002"]["status"] == "untouched" and on_a_training(s["sim-0002"], step=100)
