"""One training job over two nodes: both train it, stopping both units stops it after one checkpoint and both resume
from it, and a node's launcher killed makes the job restart on both nodes and resume from its last checkpoint.

The tests act on both nodes at once (each test runs once, against the job), in file order, and each leaves the
job training. A failure message carries both units' state and journal and the job's status file.
"""

from __future__ import annotations

import re
import time

import pytest

from h100fleet.harness import testinfra

UNIT = "h100fleet-trainer.service"
STATE = "/var/cache/h100fleet/uv/molecule-training-multinode/job"  # molecule.yml: the job's shared output directory
STATUS = f"{STATE}/status.json"
CHECKPOINTS = f"{STATE}/checkpoints"
NODES = ("job-node-1", "job-node-2")

sh = testinfra.sh


@pytest.fixture(scope="module")
def nodes():
    return [testinfra.connect(name) for name in NODES]


def explain(nodes, what: str) -> str:
    parts = [what]
    for name, host in zip(NODES, nodes):
        show = host.run(f"systemctl show {UNIT} -p ActiveState -p SubState -p Result -p ExecMainStatus -p NRestarts")
        journal = host.run(f"journalctl -u {UNIT} --no-pager -n 40 -o short-precise")
        parts.append(f"--- {name}: systemctl show\n{show.stdout}--- {name}: journalctl -u {UNIT}\n{journal.stdout}")
    parts.append(f"--- {STATUS}\n{nodes[0].run(f'cat {STATUS}').stdout}")
    return "\n".join(parts)


def prop(host, name: str) -> str:
    return testinfra.unit_property(host, UNIT, name)


def status(host) -> dict:
    return testinfra.json_file(host, STATUS)


def wait_for(nodes, predicate, what: str, timeout: float = 240):
    return testinfra.wait_for(predicate, what, timeout=timeout, explain=lambda m: explain(nodes, m))


def training_beyond(nodes, step: int, not_pid: int | None = None) -> dict:
    """Wait until the job trains past step (rank 0's status, from another process than not_pid when given)."""
    return wait_for(
        nodes,
        lambda: (
            (s := status(nodes[0])).get("state") == "training"
            and s.get("step", 0) > step
            and (not_pid is None or s.get("pid") != not_pid)
            and s
        ),
        f"the job training past step {step}" + (f" from a process other than {not_pid}" if not_pid else ""),
    )


def newest_checkpoint(host) -> int:
    names = sh(host, f"ls -1 {CHECKPOINTS}").split()
    return max((int(m.group(1)) for n in names if (m := re.fullmatch(r"step-(\d+)", n))), default=0)


def journals(nodes, since: list[str]) -> str:
    """Both nodes' journals of the unit since the stamps (rank 0 logs on whichever node it runs)."""
    return "\n".join(testinfra.journal(host, UNIT, since=s) for host, s in zip(nodes, since))


def stamps(nodes) -> list[str]:
    return [sh(host, "date +%s.%N").strip() for host in nodes]


def test_both_nodes_train_one_job(nodes):
    for name, host in zip(NODES, nodes):
        assert host.service(UNIT).is_running, explain(nodes, f"{UNIT} is not running on {name}")
        unit = sh(host, f"systemctl cat {UNIT}")
        assert "--nnodes 2 --rdzv-endpoint 127.0.0.1:29400 --rdzv-id job_tiny" in unit, unit
    first = training_beyond(nodes, 0)
    second = training_beyond(nodes, first["step"])
    assert second["world_size"] == 2, explain(nodes, f"status: {second}")
    # One rank on each node, in the one status file both nodes see.
    assert sorted(r["host"] for r in second["ranks"]) == list(NODES), explain(nodes, f"ranks: {second['ranks']}")
    assert (second["global_batch_size"], second["stack_id"]) == (4, "torch2.3-unsloth2024.8-py310")
    for host in nodes:
        assert status(host)["step"] >= second["step"]  # the same file on both nodes (the shared directory)


def test_stopping_the_job_writes_one_checkpoint_and_both_nodes_resume_from_it(nodes):
    training_beyond(nodes, 0)
    restarts = [int(prop(host, "NRestarts")) for host in nodes]
    since = stamps(nodes)
    t0 = time.monotonic()
    # Both units stopped together, as the role and a rollout stop a job's nodes: every rank sees SIGTERM, they agree
    # on the step, rank 0 writes one checkpoint and every launcher exits 0.
    sh(nodes[1], f"systemctl stop --no-block {UNIT}")
    sh(nodes[0], f"systemctl stop {UNIT}")  # returns once this node's rank has exited
    wait_for(nodes, lambda: prop(nodes[1], "ActiveState") == "inactive", f"{UNIT} on {NODES[1]} to end", timeout=120)
    stopped_s = round(time.monotonic() - t0, 1)
    for name, host in zip(NODES, nodes):
        shown = (prop(host, "Result"), prop(host, "ExecMainStatus"))
        assert shown == ("success", "0"), explain(nodes, f"{name} after the stop: Result, status = {shown}")
    stopped = status(nodes[0])
    at = stopped["step"]
    assert stopped["state"] == "stopped" and at > 0, explain(nodes, f"after the stop: {stopped}")
    log = journals(nodes, since)
    checkpoint = f"{CHECKPOINTS}/step-{at:08d}"
    assert log.count(f"stopped at step {at}; checkpoint {checkpoint}") == 1, explain(nodes, "not one checkpoint")
    assert newest_checkpoint(nodes[1]) == at

    t1 = time.monotonic()
    for host in nodes:
        sh(host, f"systemctl start {UNIT}")
    resumed = training_beyond(nodes, at)
    log = journals(nodes, since)
    assert f"resumed from {checkpoint}: step {at}," in log, explain(nodes, f"no resume from {checkpoint}")
    assert resumed["world_size"] == 2 and sorted(r["host"] for r in resumed["ranks"]) == list(NODES)
    assert [int(prop(host, "NRestarts")) for host in nodes] == restarts
    print(
        f"\nstop of both nodes: both down in {stopped_s} s; both started, training past step {at} "
        f"{time.monotonic() - t1:.1f} s later"
    )


def test_a_killed_node_restarts_the_job_on_both_nodes_from_its_last_checkpoint(nodes):
    training_beyond(nodes, 0)
    wait_for(nodes, lambda: newest_checkpoint(nodes[0]) > 0, "a checkpoint")
    restarts = [int(prop(host, "NRestarts")) for host in nodes]
    launchers = [int(prop(host, "MainPID")) for host in nodes]
    rank0 = status(nodes[0])["pid"]
    since = stamps(nodes)
    # The second node's launcher: systemd then kills its worker (KillMode=mixed), the unit fails and restarts.
    sh(nodes[1], f"kill -9 {launchers[1]}")
    t0 = time.monotonic()
    wait_for(
        nodes,
        lambda: int(prop(nodes[1], "NRestarts")) == restarts[1] + 1 and prop(nodes[1], "MainPID") != "0",
        f"systemd to restart {UNIT} on {NODES[1]} after SIGKILL",
        timeout=60,
    )
    last = newest_checkpoint(nodes[0])  # nothing writes a checkpoint between the kill and the resume
    resumed = training_beyond(nodes, last, not_pid=rank0)
    resumed_s = round(time.monotonic() - t0, 1)
    log = journals(nodes, since)
    assert "status=9/KILL" in log, explain(nodes, "no SIGKILL in the journal")
    assert f"resumed from {CHECKPOINTS}/step-{last:08d}: step {last}," in log, explain(nodes, f"no resume from {last}")
    assert resumed["world_size"] == 2 and sorted(r["host"] for r in resumed["ranks"]) == list(NODES)
    # The first node's rank lost its peer: it ended (its unit restarted) or its launcher restarted it for the new
    # rendezvous round; either way it runs in a new process that resumed from the checkpoint.
    first_restarted = int(prop(nodes[0], "NRestarts")) - restarts[0]
    print(
        f"\nkill -9 of {NODES[1]}'s launcher: the job trains again past step {last} after {resumed_s} s; "
        f"{NODES[0]}'s unit restarted {first_restarted} time(s)"
    )
