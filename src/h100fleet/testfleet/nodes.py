"""Test nodes: containers running systemd as PID 1, without --privileged, on the host's network.

`--privileged` fails on hosts whose root lacks CAP_SYS_RESOURCE. systemd runs with SYS_ADMIN, seccomp and
AppArmor unconfined, the host's cgroup namespace with /sys/fs/cgroup mounted read-write, and tmpfs on /run.
CONTAINER_OPTIONS uses the names of community.docker.docker_container's options, which molecule's docker driver
passes through: every molecule scenario's platforms carry exactly these (tests/unit checks that they do).

A node given an SSH port gets its sshd settings and this control node's public key before it boots
(h100fleet.testfleet.ssh); once it has booted, its host key goes into the control node's known_hosts and a login
with sudo is tried, so that a node that `up` reports is one Ansible reaches over SSH.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from h100fleet._proc import run
from h100fleet.testfleet import ssh
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


def docker_create_argv(name: str, image: str) -> list[str]:
    """`docker create` arguments equivalent to CONTAINER_OPTIONS for one node."""
    o = CONTAINER_OPTIONS
    argv = ["docker", "create", "--name", name, "--hostname", name, "--label", f"{LABEL}={name}"]
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


def up(nodes: Mapping[str, int | None], image: str, *, state_dir=ssh.STATE_DIR) -> dict[str, str]:
    """Start the nodes (name -> SSH port, None for a node without sshd), replacing any left over, and wait for
    systemd in each; for the nodes with a port, record their host keys and check a login with sudo.
    Returns name -> systemd state."""
    ports = {name: port for name, port in nodes.items() if port is not None}
    ssh.check_ports(ports)
    if ports:
        ssh.ensure_key(state_dir)
    for name in nodes:
        run(["docker", "rm", "--force", name], check=False)
    for name, port in ports.items():
        if ssh.port_in_use(port):
            raise RuntimeError(f"node {name}: port {ssh.LISTEN}:{port} for its sshd is already in use on this machine")
    for name in nodes:
        run(docker_create_argv(name, image))
        if name in ports:
            ssh.copy_into(name, ssh.node_archive(ports[name], ssh.public_key(state_dir)))
        run(["docker", "start", name])
    states = {name: wait_booted(name) for name in nodes}
    if ports:
        host_keys = {port: run(["docker", "exec", name, "cat", ssh.HOST_KEY]).stdout for name, port in ports.items()}
        ssh.record_host_keys(host_keys, state_dir)
        for name, port in ports.items():
            ssh.check_login(name, port, state_dir)
    return states


def down(names: list[str] | None = None) -> list[str]:
    """Remove the named nodes, or every test node when no names are given."""
    targets = names if names is not None else existing()
    for name in targets:
        run(["docker", "rm", "--force", name], check=False)
    return targets
