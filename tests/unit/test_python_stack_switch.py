"""python_stack's `switch` entry point (the rollout's flip): current moves to a pre-staged venv that has the
role's completion marker, previous to the replaced one; anything else is refused with current untouched."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, ansible_env, flat

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role's links are owned by root")

MARKER = "h100fleet-stack.json"


def venv(root: Path, name: str, marker: bool = True) -> Path:
    path = root / name
    (path / "bin").mkdir(parents=True)
    if marker:
        (path / MARKER).write_text(json.dumps({"id": name.rsplit("-py", 1)[0], "lock_hash": "0" * 64}))
    return path


def switch(root: Path, to: Path) -> subprocess.CompletedProcess[str]:
    env = ansible_env()
    extra = {"python_stack_root": str(root), "python_stack_switch_to": str(to)}
    argv = ["ansible-playbook", str(REPO / "tests/playbooks/python_stack_switch.yml"), "-e", json.dumps(extra)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "stacks"
    a = venv(root, "a-py3.11-aaaaaaaaaaaa")
    (root / "current").symlink_to(a)
    return root


def test_switch_moves_current_to_the_staged_venv_and_previous_to_the_old_one(root):
    b = venv(root, "b-py3.11-bbbbbbbbbbbb")
    result = switch(root, b)
    assert result.returncode == 0, flat(result)
    assert os.readlink(root / "current") == str(b)
    assert os.readlink(root / "previous") == str(root / "a-py3.11-aaaaaaaaaaaa")
    again = switch(root, b)  # already there: nothing changes, previous stays the rollback target
    assert again.returncode == 0, flat(again)
    assert os.readlink(root / "previous") == str(root / "a-py3.11-aaaaaaaaaaaa")


def test_a_venv_without_its_completion_marker_is_refused(root):
    half = venv(root, "b-py3.11-bbbbbbbbbbbb", marker=False)  # an interrupted build
    result = switch(root, half)
    assert result.returncode != 0
    assert f"python_stack_switch_to '{half}' must be a venv directly under python_stack_root" in flat(result)
    assert os.readlink(root / "current") == str(root / "a-py3.11-aaaaaaaaaaaa")
    assert not (root / "previous").exists()


def test_a_venv_outside_the_stack_root_is_refused(root, tmp_path):
    elsewhere = venv(tmp_path / "elsewhere", "b-py3.11-bbbbbbbbbbbb")
    result = switch(root, elsewhere)
    assert result.returncode != 0
    assert "must be a venv directly under python_stack_root" in flat(result)
    assert os.readlink(root / "current") == str(root / "a-py3.11-aaaaaaaaaaaa")
