"""Drive playbooks/rollout.yml against N simulated hosts and measure the control node's time per host.

Each simulated host is an inventory entry with `ansible_connection: local` whose state (active, previous and
staged stacks, training service, step) is a JSON file; the role's `rollout_simulate: true` swaps every node-side
action (python_stack build and switch, service stop/start, probes, driver) for a cheap equivalent on that file,
and leaves the control flow as in a real rollout: the same plays, serial batches, any_errors_fatal,
block/rescue/always, per-node records and report renders. benchmarks/rollout_scale.py is the command line.

Model: a rollout's control-node time is T(N) = c + h * N, where c is the fixed cost (start-up, the preflight and
pre-stage plays' run_once tasks, the last report) and h the cost per host (its tasks in both plays, its record
and report render). With the real node-side actions, a batch of b nodes also waits for the slowest node's
stop + switch + probe + resume (w): T_real(N) ~ c + h * N + w * batches(N).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from h100fleet.fleet import rollout

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / "playbooks" / "rollout.yml"
STACK_A = "torch2.3-unsloth2024.8-py310"
STACK_A_DIR = REPO / "files" / "stacks"
STACK_B = "rollout-b"
STACK_B_DIR = REPO / "tests" / "fixtures" / "stacks"
PYTHON = "3.11"
DRIVER = "550.163.01"


def lock_hash(definitions: Path, stack: str, python: str = PYTHON) -> str:
    return hashlib.sha256((definitions / stack / f"lock-py{python}.txt").read_bytes()).hexdigest()


def create_fleet(workdir: Path, n: int, *, step: int = 100) -> Path:
    """N simulated hosts on stack A with a running trainer at `step`: their state files and an inventory. Returns
    the inventory's path."""
    state = workdir / "state"
    state.mkdir(parents=True, exist_ok=True)
    a_hash = lock_hash(STACK_A_DIR, STACK_A)
    hosts = {}
    for i in range(1, n + 1):
        name = f"sim-{i:04d}"
        node = {
            "current": STACK_A,
            "current_lock": a_hash,
            "previous": None,
            "previous_lock": None,
            "python": PYTHON,
            "staged": {},
            "service": "active",
            "step": step,
            "driver": DRIVER,
        }
        (state / f"{name}.json").write_text(json.dumps(node))
        hosts[name] = {}
    inventory = {
        "all": {
            "children": {"h100s": {"hosts": hosts}},
            "vars": {
                # A host is lost (unreachable) once <state>/<host>.lost exists: its connection becomes SSH to a
                # closed port (rollout_simulate_unreachable, or a test that writes the file).
                "ansible_connection": (
                    f"{{{{ 'ssh' if ('{state}/' ~ inventory_hostname ~ '.lost') is exists else 'local' }}}}"
                ),
                "ansible_host": "127.0.0.1",
                "ansible_port": 9,
                "ansible_become": False,
                "ansible_python_interpreter": sys.executable,
                "rollout_simulate": True,
                "rollout_simulate_dir": str(state),
            },
        }
    }
    path = workdir / "inventory.json"
    path.write_text(json.dumps(inventory))
    return path


@dataclass
class Run:
    hosts: int
    rc: int
    seconds: float
    canary: str
    batch: str
    forks: int
    report: dict[str, Any] | None
    log: str


def rollout_command(
    workdir: Path,
    inventory: Path,
    *,
    canary: str = "1",
    batch: str = "25%",
    forks: int = 50,
    fail: list[str] | None = None,
    driver: str = "",
    playbook: Path = PLAYBOOK,
    extra_vars: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ansible-playbook playbooks/rollout.yml (or another playbook of the rollout
    role, rollback.yml) on the simulated fleet with the repository's ansible.cfg. extra_vars: more -e settings
    (the fault knobs rollout_simulate_unreachable, _pause, _switch_fail; rollout_rollback_to)."""
    report_dir = workdir / "report"
    extra = {
        "rollout_stack": STACK_B,
        "rollout_stack_definitions_dir": str(STACK_B_DIR),
        "rollout_report_dir": str(report_dir),
        "rollout_canary": canary,
        "rollout_batch": batch,
        "rollout_simulate_fail": fail or [],
        "rollout_driver_version": driver,
        **(extra_vars or {}),
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.timer",  # no per-task timing tables: they cost time per task
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_FACT_CACHING": "memory",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        # A lost host's SSH connection fails at once (a closed port), without asking about host keys.
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **(extra_env or {}),
    }
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(inventory),
        str(playbook),
        "-e",
        json.dumps(extra),
    ]
    return argv, env


def report_of(workdir: Path) -> dict[str, Any] | None:
    path = workdir / "report" / "rollout-report.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_rollout(
    workdir: Path,
    inventory: Path,
    *,
    canary: str = "1",
    batch: str = "25%",
    forks: int = 50,
    fail: list[str] | None = None,
    driver: str = "",
    playbook: Path = PLAYBOOK,
    extra_vars: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Run:
    """Run rollout_command to its end: the wall time of the whole run and the report it left."""
    argv, env = rollout_command(
        workdir,
        inventory,
        canary=canary,
        batch=batch,
        forks=forks,
        fail=fail,
        driver=driver,
        playbook=playbook,
        extra_vars=extra_vars,
        extra_env=extra_env,
    )
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    seconds = time.monotonic() - started
    hosts = len(json.loads(inventory.read_text())["all"]["children"]["h100s"]["hosts"])
    return Run(
        hosts, proc.returncode, round(seconds, 1), canary, batch, forks, report_of(workdir), proc.stdout + proc.stderr
    )


def batches(n: int, canary: int, batch: str) -> int:
    """Ansible's batch count for serial [canary, batch] over n hosts (a percentage is of all n, at least 1)."""
    return len(rollout.serial_batches(n, [canary, batch])) if n > 0 else 0


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares T = c + h * N over (N, T) points: (c, h)."""
    n = len(points)
    if n < 2:
        raise ValueError("need at least two sizes to fit")
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    h = sxy / sxx
    return my - h * mx, h


def project(c: float, h: float, n: int, *, wait_per_batch: float, canary: int, batch: str) -> dict[str, float]:
    """A real rollout of n nodes: the control node's own time (c + h n) plus the batches' waits on the nodes."""
    b = batches(n, canary, batch)
    control = c + h * n
    return {
        "nodes": n,
        "batches": b,
        "control_s": round(control, 1),
        "node_wait_s": round(b * wait_per_batch, 1),
        "total_s": round(control + b * wait_per_batch, 1),
    }


def as_dict(run: Run) -> dict[str, Any]:
    out = asdict(run)
    out.pop("log")
    out["report"] = (run.report or {}).get("summary")
    return out
