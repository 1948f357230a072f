"""SSH into the test nodes the way real nodes are reached: an unprivileged user with passwordless sudo, by key.

Every node runs its own sshd on 127.0.0.1 (host networking: the nodes share this machine's ports, so each gets its
own). The node image (files/images/setup-node.sh) has the user, its sudo rule and an sshd that starts only once
the harness has given the node its configuration; at start each node generates its own host keys. This control node
has one key pair, generated once under STATE_DIR (never committed); its public key is authorized on every node it
starts, and each node's host key is recorded in STATE_DIR's known_hosts so that the client checks it strictly.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from h100fleet._proc import CommandError, run

REPO = Path(__file__).resolve().parents[3]
# This control node's test-fleet state (gitignored): its SSH key pair and the nodes' host keys.
STATE_DIR = REPO / ".state" / "testfleet"
# The login user every node image has (files/images/setup-node.sh creates it with passwordless sudo).
USER = "ops"
LISTEN = "127.0.0.1"
# `h100fleet testfleet up` gives node <prefix>-<i> port PORT_BASE + i (h100-node-1 -> 2201, as inventory/local has).
PORT_BASE = 2200
MAX_UP_NODES = 99
# The per-node sshd configuration; the image's ssh.service runs only where this file exists (setup-node.sh).
SSHD_CONFIG = "/etc/ssh/sshd_config.d/h100fleet-testfleet.conf"
# Authorized keys live outside the user's home, root-owned: what the harness gives a node, not the user's own.
AUTHORIZED_KEYS_DIR = "/etc/ssh/authorized_keys"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"


def key_path(state_dir: Path = STATE_DIR) -> Path:
    """The control node's private key (the public key is the same path plus .pub)."""
    return state_dir / "ssh" / "id_ed25519"


def known_hosts_path(state_dir: Path = STATE_DIR) -> Path:
    return state_dir / "ssh" / "known_hosts"


def up_ports(prefix: str, count: int) -> dict[str, int]:
    """The nodes `h100fleet testfleet up` starts and the port of each: <prefix>-<i> on PORT_BASE + i."""
    if not 1 <= count <= MAX_UP_NODES:
        raise ValueError(f"--nodes {count}: expected 1 to {MAX_UP_NODES} (node i listens on {PORT_BASE} + i)")
    return {f"{prefix}-{i}": PORT_BASE + i for i in range(1, count + 1)}


def check_ports(ports: Mapping[str, int]) -> None:
    """A clear error for a port outside 1024..65535 or a port given to two nodes."""
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
            raise ValueError(f"node {name}: SSH port {port!r} is not a port number in 1024..65535")
        if port in seen:
            raise ValueError(f"nodes {seen[port]} and {name}: both given SSH port {port}; each needs its own")
        seen[port] = name


def parse_node_specs(specs: Iterable[str]) -> dict[str, int | None]:
    """`NAME` or `NAME:PORT` arguments (`h100fleet testfleet start`) -> name -> SSH port (None: no sshd)."""
    nodes: dict[str, int | None] = {}
    for spec in specs:
        name, sep, port_text = spec.partition(":")
        if not name:
            raise ValueError(f"node {spec!r}: expected NAME or NAME:PORT")
        if name in nodes:
            raise ValueError(f"node {name}: given twice")
        port = None
        if sep:
            if not port_text.isdigit():
                raise ValueError(f"node {spec!r}: the SSH port after ':' must be a number, got {port_text!r}")
            port = int(port_text)
        nodes[name] = port
    check_ports({n: p for n, p in nodes.items() if p is not None})
    return nodes


def sshd_config(port: int, user: str = USER) -> str:
    """The node's sshd settings: its own port on loopback, keys only, the one login user, no root login."""
    return "\n".join(
        [
            "# Written by `h100fleet testfleet` when the node was created.",
            f"Port {port}",
            f"ListenAddress {LISTEN}",
            f"AllowUsers {user}",
            "PermitRootLogin no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            f"AuthorizedKeysFile {AUTHORIZED_KEYS_DIR}/%u",
            "",
        ]
    )


def node_archive(port: int, public_key: str, user: str = USER) -> bytes:
    """The tar stream `docker cp - NODE:/` unpacks into a created node: its sshd settings and authorized key."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        entries = [
            (AUTHORIZED_KEYS_DIR, None, 0o755),
            (f"{AUTHORIZED_KEYS_DIR}/{user}", public_key.strip() + "\n", 0o644),
            (SSHD_CONFIG, sshd_config(port, user), 0o644),
        ]
        for path, content, mode in entries:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.uid = info.gid = 0
            info.mode = mode
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                data = content.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def known_hosts_entry(port: int, host_key: str) -> str:
    """One known_hosts line for a node's host key ('ssh-ed25519 AAAA... comment' as the node has it)."""
    fields = host_key.split()
    if len(fields) < 2 or not fields[0].startswith("ssh-"):
        raise ValueError(f"port {port}: not an SSH public host key: {host_key.strip()[:80]!r}")
    return f"[{LISTEN}]:{port} {fields[0]} {fields[1]}"


def merge_known_hosts(text: str, entries: Mapping[int, str]) -> str:
    """known_hosts text with the lines for these ports replaced by the given host keys (port -> host key)."""
    new = {f"[{LISTEN}]:{port}": known_hosts_entry(port, key) for port, key in entries.items()}
    kept = [line for line in text.splitlines() if line.split(" ", 1)[0] not in new]
    return "\n".join([*kept, *new.values()]) + "\n"


def ssh_options(state_dir: Path = STATE_DIR) -> list[str]:
    """The options every client uses for the test nodes (inventory/local says the same to Ansible)."""
    return [
        "-i",
        str(key_path(state_dir)),
        "-o",
        f"UserKnownHostsFile={known_hosts_path(state_dir)}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
    ]


def ssh_argv(port: int, command: list[str], state_dir: Path = STATE_DIR, user: str = USER) -> list[str]:
    """`ssh` to one node as its login user, non-interactive."""
    return ["ssh", *ssh_options(state_dir), "-o", "BatchMode=yes", "-p", str(port), f"{user}@{LISTEN}", *command]


def _own(path: Path) -> None:
    """Under sudo, give the invoking user what this command creates, so that their ssh and Ansible can use it."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid:
        os.chown(path, int(uid), int(gid))


def ensure_key(state_dir: Path = STATE_DIR) -> Path:
    """This control node's key pair (ed25519, no passphrase), generated on first use. Returns the private key."""
    key = key_path(state_dir)
    if not key.exists():
        for d in (state_dir, key.parent):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            _own(d)
        comment = f"h100fleet-testfleet@{socket.gethostname()}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
        for path in (key, key.with_suffix(".pub")):
            _own(path)
    return key


def public_key(state_dir: Path = STATE_DIR) -> str:
    return key_path(state_dir).with_suffix(".pub").read_text()


def record_host_keys(entries: Mapping[int, str], state_dir: Path = STATE_DIR) -> Path:
    """Write the nodes' host keys into known_hosts (port -> key), under a lock: scenarios may start at once."""
    path = known_hosts_path(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (path.parent / ".known_hosts.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else ""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(merge_known_hosts(text, entries))
        _own(tmp)
        tmp.replace(path)
    return path


def port_in_use(port: int) -> bool:
    """True when something already listens on (or holds) LISTEN:port."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LISTEN, port))
        except OSError:
            return True
    return False


def copy_into(name: str, archive: bytes) -> None:
    """Unpack a tar stream into a created (not yet started) container's root."""
    argv = ["docker", "cp", "-", f"{name}:/"]
    proc = subprocess.run(argv, input=archive, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"))


def check_login(name: str, port: int, state_dir: Path = STATE_DIR) -> None:
    """Log in as the user and run `sudo -n true`: the path Ansible takes. A failure says what the node logged."""
    proc = run(ssh_argv(port, ["sudo", "-n", "true"], state_dir), check=False)
    if proc.returncode != 0:
        journal = run(["docker", "exec", name, "journalctl", "-u", "ssh", "--no-pager", "-n", "20"], check=False)
        raise RuntimeError(
            f"node {name}: `ssh -p {port} {USER}@{LISTEN} sudo -n true` failed (exit {proc.returncode}): "
            f"{proc.stdout.strip()}\nsshd's journal on the node:\n{journal.stdout.strip()}"
        )
