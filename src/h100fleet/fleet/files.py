"""Which of a role's files differ from their installed copies, from one `ansible.builtin.find` on the node.

A copy task per file costs a module call per file on every run; one find with checksums and this comparison leaves
a re-run with one call, and the copy loop runs only over what differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def sha1(path: Path) -> str:
    """The checksum Ansible's find and copy modules report (SHA-1 of the bytes)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def stale_files(
    names: Iterable[str],
    src_dir: str,
    found: Mapping[str, Any],
    *,
    mode: str = "0644",
    owner: str = "root",
    group: str = "root",
) -> list[str]:
    """The names under src_dir whose installed copy is missing or differs in content, mode, owner or group.

    found: the registered result of ansible.builtin.find (get_checksum: true) on the destination directory.
    """
    installed = {Path(f["path"]).name: f for f in (found or {}).get("files") or [] if "path" in f}
    stale = []
    for name in names:
        source = Path(src_dir) / name
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such file (a module the role installs)")
        copy = installed.get(name)
        if (
            copy is None
            or copy.get("checksum") != sha1(source)
            or copy.get("mode") != mode
            or copy.get("pw_name") != owner
            or copy.get("gr_name") != group
        ):
            stale.append(name)
    return stale
