"""The node-side guard (h100fleet.node.rollout_guard): nothing before the deadline or on a closed journal; past
the deadline of an open journal, current and previous back on the journal's stacks, the trainer restarted, the
journal marked recovered; a restore target that is not a complete stack refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from h100fleet.fleet import rollout
from h100fleet.node import rollout_guard


@pytest.fixture
def node(tmp_path):
    root = tmp_path / "stacks"
    for name in ("a", "b", "old"):
        (root / name).mkdir(parents=True)
        (root / name / "h100fleet-stack.json").write_text("{}")
    (root / "current").symlink_to(root / "b")
    (root / "previous").symlink_to(root / "a")
    calls = tmp_path / "calls"
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    systemctl.chmod(0o755)
    a = {"id": "A", "lock_hash": "1", "path": str(root / "a")}
    b = {"id": "B", "lock_hash": "2", "path": str(root / "b")}
    old = {"id": "O", "lock_hash": "3", "path": str(root / "old")}
    journal = rollout.journal_open(
        None, kind="rollout", active=a, previous=old, to=b, was_active=True, now=100, timeout=60
    )
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal))
    return {"root": root, "journal": path, "systemctl": str(systemctl), "calls": calls}


def guard(node, now):
    return rollout_guard.guard(node["journal"], node["root"], "trainer.service", now=now, systemctl=node["systemctl"])


def test_nothing_before_the_deadline(node):
    assert guard(node, 150).startswith("nothing: the flip has 10 s left")
    assert (node["root"] / "current").resolve().name == "b"
    assert not node["calls"].exists()


def test_past_the_deadline_it_restores_the_journals_stack_and_restarts_the_trainer(node):
    what = guard(node, 161)
    assert what.startswith("restored A") and "restarted trainer.service" in what
    assert (node["root"] / "current").resolve().name == "a"
    assert (node["root"] / "previous").resolve().name == "old"
    assert node["calls"].read_text().splitlines() == ["reset-failed trainer.service", "restart trainer.service"]
    j = json.loads(node["journal"].read_text())
    assert (j["state"], j["recovered_to"], j["recovered_at"]) == ("recovered", "A", 161)
    # the journal is no longer open: the next timer run does nothing
    assert guard(node, 200) == "nothing: the journal is recovered"
    assert rollout.journal_unfinished(j)


def test_nothing_on_a_closed_or_missing_journal(node):
    j = json.loads(node["journal"].read_text())
    node["journal"].write_text(json.dumps(rollout.journal_close(j, "done", 120)))
    assert guard(node, 1000) == "nothing: the journal is closed"
    node["journal"].unlink()
    assert guard(node, 1000) == "nothing: no flip journal"


def test_a_restore_target_that_is_not_a_complete_stack_is_refused(node):
    (node["root"] / "a" / "h100fleet-stack.json").unlink()
    r = subprocess.run(
        [
            sys.executable,
            rollout_guard.__file__,
            "--journal",
            str(node["journal"]),
            "--stack-root",
            str(node["root"]),
            "--service",
            "t.service",
            "--now",
            "1000",
            "--systemctl",
            node["systemctl"],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    assert "not a complete stack" in r.stderr
    assert (node["root"] / "current").resolve().name == "b"
    assert json.loads(node["journal"].read_text())["state"] == "open"
