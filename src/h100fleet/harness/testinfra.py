"""What every molecule scenario's testinfra tests share: the scenario's hosts, a unit's journal, and waiting for
a condition with a failure that explains itself."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def hosts(pattern: str = "all") -> list[str]:
    """The hosts of the running scenario (molecule's inventory), for `testinfra_hosts`."""
    import testinfra.utils.ansible_runner  # noqa: PLC0415 - only where testinfra runs

    return testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(pattern)


def connect(name: str):
    """A testinfra host for one of the running scenario's hosts, for tests that act on several nodes at once."""
    import testinfra  # noqa: PLC0415 - only where testinfra runs

    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def sh(host, command: str) -> str:
    """The command's stdout; a failed command fails the test with its exit status, stdout and stderr."""
    result = host.run(command)
    assert result.rc == 0, f"{command}\nrc={result.rc}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def unit_property(host, unit: str, name: str) -> str:
    """One property of a systemd unit on the node (`systemctl show UNIT -p NAME --value`)."""
    return sh(host, f"systemctl show {unit} -p {name} --value").strip()


def json_file(host, path: str) -> dict:
    """A JSON file on the node; {} while it is missing or not valid JSON (a status file is replaced atomically,
    but a reader must never fail on it)."""
    result = host.run(f"cat {path}")
    try:
        return json.loads(result.stdout) if result.rc == 0 else {}
    except ValueError:
        return {}


def journal(host, unit: str, *, lines: int = 50, since: str | None = None) -> str:
    """The unit's journal: its last lines, or everything since a `date +%s.%N` stamp of the node's clock."""
    window = f"--since @{since}" if since else f"-n {lines}"
    return host.run(f"journalctl -u {unit} --no-pager -o cat {window}").stdout


def wait_for(
    predicate: Callable[[], T],
    what: str,
    *,
    timeout: float = 240,
    interval: float = 1.0,
    explain: Callable[[str], str] = str,
) -> T:
    """predicate() until it returns something truthy; after timeout seconds an AssertionError whose message is
    explain("timed out after ...: what") (e.g. with the unit's journal appended)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(explain(f"timed out after {timeout:.0f}s waiting for: {what}"))
        time.sleep(interval)
