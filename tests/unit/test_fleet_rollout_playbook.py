"""playbooks/rollout.yml's control flow on simulated hosts (rollout_simulate: local connection, node-side actions
replaced by edits of a state file): a probe failure in a batch of two halts the rollout with every node of that
batch back on A and running, later nodes untouched and a report naming them; a re-run completes the rollout and
keeps the earlier node's figures."""

from __future__ import annotations

import json

import pytest

from h100fleet.harness import rollout_sim

pytest.importorskip("ansible")


def states(workdir):
    return {p.stem: json.loads(p.read_text()) for p in sorted((workdir / "state").glob("*.json"))}


def test_halt_in_a_batch_then_rerun(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 4)
    first = rollout_sim.run_rollout(tmp_path, inventory, canary="1", batch="2", forks=4, fail=["sim-0003"])
    assert first.rc != 0, first.log[-3000:]
    nodes = {n["host"]: n for n in first.report["nodes"]}
    assert first.report["summary"]["state"] == "halted"
    # batches in inventory order, whatever order the pre-stage results came back in: the canary is the first node
    assert [nodes[f"sim-000{i}"]["batch"] for i in range(1, 5)] == [1, 2, 2, None]
    assert set(nodes["sim-0001"]["phases_s"]) == {"stop", "switch", "probe", "start"}
    assert sum(nodes["sim-0001"]["phases_s"].values()) == pytest.approx(nodes["sim-0001"]["downtime_s"], abs=0.3)
    assert nodes["sim-0001"]["driver_before"] == rollout_sim.DRIVER and nodes["sim-0001"]["driver_after"] is None
    assert nodes["sim-0001"]["status"] == "done"
    assert nodes["sim-0001"]["step_after"] == 110
    assert nodes["sim-0003"]["status"] == "rolled-back"
    assert "the stack cannot run the probes" in nodes["sim-0003"]["error"]
    # its batch-mate went through its rescue too (any_errors_fatal): back on A, running
    assert nodes["sim-0002"]["status"] == "rolled-back"
    assert "another node of this batch failed" in nodes["sim-0002"]["error"]
    assert nodes["sim-0004"]["status"] == "untouched"
    assert first.report["summary"]["remaining_on_old"] == ["sim-0002", "sim-0003", "sim-0004"]
    s = states(tmp_path)
    for host in ("sim-0002", "sim-0003"):
        assert (s[host]["current"], s[host]["service"]) == (rollout_sim.STACK_A, "active")
        assert s[host]["step"] == 110  # resumed on A from its checkpoint, and advanced
        assert s[host]["previous"] is None  # never the stack that failed: rollback.yml must not switch to it
    assert s["sim-0004"]["staged"] == {rollout_sim.STACK_B: rollout_sim.lock_hash(rollout_sim.STACK_B_DIR, "rollout-b")}
    assert s["sim-0004"]["current"] == rollout_sim.STACK_A
    assert (tmp_path / "report" / "rollout-report.html").exists()

    # the fix comes with a driver bump
    second = rollout_sim.run_rollout(tmp_path, inventory, canary="1", batch="2", forks=4, driver="580.65.06")
    assert second.rc == 0, second.log[-3000:]
    assert second.report["summary"]["state"] == "complete"
    nodes = {n["host"]: n for n in second.report["nodes"]}
    assert nodes["sim-0001"]["note"] == "done by an earlier run of this rollout"
    assert nodes["sim-0002"]["step_before"] == 110
    assert [nodes[f"sim-000{i}"]["batch"] for i in range(2, 5)] == [1, 2, 2]  # sim-0001 is no longer pending
    assert (nodes["sim-0002"]["driver_before"], nodes["sim-0002"]["driver_after"]) == (rollout_sim.DRIVER, "580.65.06")
    assert "driver" in nodes["sim-0002"]["phases_s"]
    assert all(st["current"] == rollout_sim.STACK_B and st["service"] == "active" for st in states(tmp_path).values())

    # rollback.yml takes every node back to A, where training continues
    back = rollout_sim.run_rollout(
        tmp_path, inventory, forks=4, playbook=rollout_sim.REPO / "playbooks" / "rollback.yml"
    )
    assert back.rc == 0, back.log[-3000:]
    for st in states(tmp_path).values():
        assert (st["current"], st["previous"], st["service"]) == (rollout_sim.STACK_A, rollout_sim.STACK_B, "active")


def test_preflight_refuses_bad_settings_before_anything_changes(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    before = states(tmp_path)
    run = rollout_sim.run_rollout(tmp_path, inventory, batch="0%", forks=2)
    assert run.rc != 0
    assert "rollout_batch is '0%'; expected a count of 1 or more nodes or a percentage from 1% to 100%" in run.log
    assert states(tmp_path) == before


def test_preflight_names_every_problem_of_every_host_at_once(tmp_path):
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    before = states(tmp_path)
    run = rollout_sim.run_rollout(
        tmp_path, inventory, batch="0%", driver="535", forks=2, extra_vars={"rollout_resume_poll": 0}
    )
    assert run.rc != 0
    log = " ".join(run.log.split())
    hosts = sorted(before)
    for host in hosts:
        for problem in [
            f"- {host} [rollout]: rollout_batch is '0%'; expected a count of 1 or more nodes",
            f"- {host} [rollout]: rollout_resume_poll is '0'; expected positive seconds.",
            f"- {host} [rollout]: rollout_driver_version 535 is older than the driver stack rollout-b needs",
        ]:
            assert problem in log, (problem, run.log)
    assert f"Preflight refused {len(hosts)} of {len(hosts)} hosts (6 problems)" in log, run.log
    assert states(tmp_path) == before


def test_preflight_refuses_a_driver_bump_older_than_the_new_stack_needs(tmp_path):
    # rollout-b needs driver >= 550.54.15 (its manifest's min_driver): a bump to 535 cannot run it.
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    before = states(tmp_path)
    run = rollout_sim.run_rollout(tmp_path, inventory, driver="535", forks=2)
    assert run.rc != 0
    assert "rollout_driver_version 535 is older than the driver stack rollout-b needs (>= 550.54.15" in " ".join(
        run.log.split()
    ), run.log
    assert states(tmp_path) == before


def test_preflight_refuses_batches_that_split_a_job_over_several_nodes(tmp_path):
    """Two nodes of one training job: a canary of one would stop the job and restart half of it on the new stack.
    Refused before anything changes, naming the job and its nodes' batches; a canary of two moves the job whole."""
    inventory = rollout_sim.create_fleet(tmp_path, 3)
    doc = json.loads(inventory.read_text())
    job = {"training_service_job_group": "job_pair", "training_service_nnodes": 2}
    doc["all"]["children"]["h100s"]["hosts"].update({"sim-0001": job, "sim-0002": job})
    inventory.write_text(json.dumps(doc))
    before = states(tmp_path)
    refused = rollout_sim.run_rollout(tmp_path, inventory, forks=3)
    assert refused.rc != 0
    log = " ".join(refused.log.split())
    for host in ("sim-0001", "sim-0002"):
        assert (
            f"- {host} [rollout]: the nodes of job job_pair must move in one batch (a flip stops the "
            "whole job; its nodes train it only on one stack), but sim-0001 in batch 1, sim-0002 in batch 2"
        ) in log, refused.log[-3000:]
    assert "- sim-0003 [rollout]: the nodes of job" not in log  # in no job
    assert states(tmp_path) == before
    run = rollout_sim.run_rollout(tmp_path, inventory, canary="2", forks=3)
    assert run.rc == 0, run.log[-3000:]
    assert [r["batch"] for r in sorted(run.report["nodes"], key=lambda r: r["host"])] == [1, 1, 2]
    assert all(st["current"] == rollout_sim.STACK_B for st in states(tmp_path).values())


def test_driver_bump_550_to_580_with_a_cuda_13_stack(tmp_path):
    """The shipped CUDA 13 stack (torch 2.11, driver floor 580.65.06) rolled out with the 580 bump it needs: every
    node ends on the new stack and driver 580; without the bump's new enough version the preflight refuses it."""
    inventory = rollout_sim.create_fleet(tmp_path, 3)
    cuda13 = {
        "rollout_stack": "torch2.11-unsloth2026.10-py312",
        "rollout_stack_definitions_dir": str(rollout_sim.REPO / "files" / "stacks"),
    }
    before = states(tmp_path)
    refused = rollout_sim.run_rollout(tmp_path, inventory, driver="550", forks=3, extra_vars=cuda13)
    assert refused.rc != 0
    assert "rollout_driver_version 550 is older than the driver stack torch2.11-unsloth2026.10-py312 needs" in " ".join(
        refused.log.split()
    )
    assert states(tmp_path) == before
    run = rollout_sim.run_rollout(tmp_path, inventory, driver="580", forks=3, extra_vars=cuda13)
    assert run.rc == 0, run.log
    assert run.report["summary"]["state"] == "complete"
    for host, state in states(tmp_path).items():
        assert state["driver"] == "580", host
        assert state["current"] == "torch2.11-unsloth2026.10-py312", host


def test_the_playbooks_host_pattern_is_no_typo(tmp_path):
    # -e rollout_hosts=<pattern> selects the hosts before any role loads; the settings check must accept it.
    inventory = rollout_sim.create_fleet(tmp_path, 2)
    run = rollout_sim.run_rollout(tmp_path, inventory, forks=2, extra_vars={"rollout_hosts": "all"})
    assert "rollout_hosts is not a setting of rollout" not in run.log
    assert run.rc == 0, run.log
