"""Test nodes: containers running systemd as PID 1, without --privileged, on the host's network.

`--privileged` fails on hosts whose root lacks CAP_SYS_RESOURCE. systemd runs with SYS_ADMIN, seccomp and
AppArmor unconfined, the host's cgroup namespace with /sys/fs/cgroup mounted read-write, and tmpfs on /run.
CONTAINER_OPTIONS uses the names of community.docker.docker_container's options, which molecule's docker driver
passes through: every molecule scenario's platforms carry exactly these (tests/unit checks that they do).
"""

from __future__ import annotations

import time

from h100fleet._proc import run
from h100fleet.testfleet.services import CACHE_ROOT

LABEL = "org.h100fleet.testnode"
WHEEL_CACHE = f"{CACHE_ROOT}/uv"

CONTAINER_OPTIONS: dict[str, object] = {
    "command": "/sbin/init",
    "stop_signal": "SIGRTMIN+3",  # systemd's signal for a clean shutdown
    "capabilities": ["SYS_ADMIN"],
    "security_opts": ["seccomp=unconfined", "apparmor=unconfined"],
    "cgroupns_mode": "host",
    "tmpfs": ["/run", "/run/lock"],
    "volumes": ["/sys/fs/cgroup:/sys/fs/cgroup:rw", f"{WHEEL_CACHE}:{WHEEL_CACHE}:rw"],
    "network_mode": "host",
}


def docker_run_argv(name: str, image: str) -> list[str]:
    """`docker run` arguments equivalent to CONTAINER_OPTIONS for one node."""
    o = CONTAINER_OPTIONS
    argv = ["docker", "run", "--detach", "--name", name, "--hostname", name, "--label", f"{LABEL}={name}"]
    argv += [f"--cap-add={cap}" for cap in o["capabilities"]]
    argv += [f"--security-opt={opt}" for opt in o["security_opts"]]
    argv += [f"--stop-signal={o['stop_signal']}"]
    argv += [f"--cgroupns={o['cgroupns_mode']}", f"--network={o['network_mode']}"]
    argv += [f"--tmpfs={path}" for path in o["tmpfs"]]
    argv += [f"--volume={vol}" for vol in o["volumes"]]
    return [*argv, image, o["command"]]


SYSTEMD_STATES = {"initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline"}
BOOTED_STATES = {"running", "degraded", "maintenance"}


def system_state(name: str) -> str:
    """`systemctl is-system-running` inside the node; 'starting' while its D-Bus is not up yet."""
    proc = run(["docker", "exec", name, "systemctl", "is-system-running"], check=False)
    lines = (proc.stdout or "").strip().splitlines()
    return lines[-1] if lines and lines[-1] in SYSTEMD_STATES else "starting"


def wait_booted(name: str, timeout: float = 90) -> str:
    """Wait until systemd in the node has finished booting; return its state (running, degraded, maintenance)."""
    deadline = time.monotonic() + timeout
    while (state := system_state(name)) not in BOOTED_STATES:
        if time.monotonic() > deadline:
            raise TimeoutError(f"node {name}: systemd still {state!r} after {timeout:.0f} s")
        time.sleep(0.5)
    return state


def existing() -> list[str]:
    proc = run(["docker", "ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}"])
    return sorted(proc.stdout.split())


def up(names: list[str], image: str) -> dict[str, str]:
    """Start the named nodes (replacing any left over) and wait for systemd in each. Returns name -> state."""
    for name in names:
        run(["docker", "rm", "--force", name], check=False)
        run(docker_run_argv(name, image))
    return {name: wait_booted(name) for name in names}


def down(names: list[str] | None = None) -> list[str]:
    """Remove the named nodes, or every test node when no names are given."""
    targets = names if names is not None else existing()
    for name in targets:
        run(["docker", "rm", "--force", name], check=False)
    return targets
