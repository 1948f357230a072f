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


def node_facts(distribution: str, version: str, os_family: str, **more) -> dict:
    """The facts of an x86_64 systemd node of this distribution and version (more: facts to add or change)."""
    return {
        "distribution": distribution,
        "distribution_version": version,
        "distribution_major_version": version.split(".", maxsplit=1)[0],
        "os_family": os_family,
        "architecture": "x86_64",
        "service_mgr": "systemd",
        **more,
    }


def run_role_cases(
    playbook: Path,
    workdir: Path,
    group: str,
    hosts: dict[str, dict],
    *,
    tags: str,
    extra: dict | None = None,
    children: dict[str, list[str]] | None = None,
    **env: str,
) -> dict[str, str | None]:
    """Run a role's cases in one ansible-playbook: one host per case (connection local, this interpreter; each
    host's variables are the case's settings, in the playbook's group; the inventory is written to workdir), the
    tasks tagged `tags`. children: further groups of the playbook's group, by name, with the cases in each.
    Returns case -> the message of the task that failed it, or None for a case that passed."""
    cases = {
        name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **v}
        for name, v in hosts.items()
    }
    inventory = workdir / "inventory.json"
    groups = {name: {"hosts": {h: {} for h in members}} for name, members in (children or {}).items()}
    inventory.write_text(json.dumps({group: {"hosts": cases, **({"children": groups} if groups else {})}}))
    argv = ["ansible-playbook", str(playbook), "-i", str(inventory), "--tags", tags]
    argv += ["-e", json.dumps(extra)] if extra else []
    result = subprocess.run(
        argv, cwd=REPO, env=ansible_env(json_output=True, **env), capture_output=True, text=True, check=False
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"ansible-playbook printed no JSON report:\n{result.stdout}\n{result.stderr}") from None
    assert set(report["stats"]) == set(cases), result.stderr
    failures: dict[str, str | None] = dict.fromkeys(cases)
    for task in report["plays"][0]["tasks"]:
        for host, outcome in task["hosts"].items():
            if outcome.get("failed"):
                failures[host] = outcome.get("msg", "") or json.dumps(outcome)
    return failures


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
