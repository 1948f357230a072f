"""Shared by the unit tests: run a role's argument validation and preflight for real, on the control node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The facts of a supported node (Debian 13 on x86_64 with systemd); tests change one thing at a time.
GOOD_FACTS = {
    "distribution": "Debian",
    "distribution_version": "13.2",
    "distribution_major_version": "13",
    "distribution_release": "trixie",
    "os_family": "Debian",
    "architecture": "x86_64",
    "service_mgr": "systemd",
}
# The kernels with headers that nvidia_driver's preflight finds on a Debian 13 node (its /lib/modules): Debian 13's
# kernel, so that a test does not depend on the control node's own kernels.
KERNEL_HEADERS = str(REPO / "tests" / "fixtures" / "lib-modules")


def ansible_env(*, json_output: bool = False, **extra: str) -> dict[str, str]:
    """The environment a test's ansible-playbook runs in: the repository's ansible.cfg, this interpreter's
    ansible-playbook first on PATH; json_output: the ansible.posix.json callback (results to parse), else plain
    text without colour (messages to search)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    if json_output:
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json")
    else:
        env["ANSIBLE_NOCOLOR"] = "1"
    return {**env, **extra}


def run_preflight(playbook: str, tag: str, extra: dict, facts: dict | None = None) -> subprocess.CompletedProcess[str]:
    """ansible-playbook tests/playbooks/<playbook> --tags <tag> with the given facts and extra vars."""
    extra_vars = {"ansible_facts": {**GOOD_FACTS, **(facts or {})}, **extra}
    env = ansible_env()
    argv = [
        "ansible-playbook",
        str(REPO / "tests" / "playbooks" / playbook),
        "--tags",
        tag,
        "-e",
        json.dumps(extra_vars),
    ]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def flat(result: subprocess.CompletedProcess[str]) -> str:
    """The playbook's output with line wrapping undone, for searching messages."""
    return " ".join(result.stdout.split())
