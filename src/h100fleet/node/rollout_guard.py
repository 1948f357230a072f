"""The node-side guard of a flip: puts a node back on a safe stack when the control node died mid-flip.

Node-side code with the standard library only: the rollout role copies this file to each node
(/usr/local/libexec/h100fleet-rollout-guard) and runs it from a systemd timer with the system Python, never from a
stack venv (the stack being flipped to may be the broken part). Before a flip stops the trainer it writes the
node's flip journal (h100fleet.fleet.rollout, "the flip journal") with a deadline and starts the timer; the flip
closes the journal once the trainer is confirmed training and stops the timer. Each time the timer fires:

- no journal, or a journal that is not open, or an open one whose deadline has not passed: nothing;
- an open journal past its deadline (the control node died, was killed or lost the node): point `current` (and
  `previous`) back at the journal's restore stacks, restart the training service when it ran before the flip,
  and mark the journal recovered (recovered_at, recovered_by, what it did). A later run of the rollout or of
  rollback.yml reads that, confirms the trainer and closes the journal.

    h100fleet-rollout-guard --journal J --stack-root R --service UNIT [--now EPOCH] [--systemctl PATH]

Exit status 0 when nothing had to be done or the node was restored, 1 when restoring failed (the journal then
stays open and the next timer run tries again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _link(root: Path, name: str, target: str | None) -> None:
    """Point root/name at target (or remove it for None) by renaming a new link over it: readers see the old
    target or the new one, never none."""
    link = root / name
    if target is None:
        if link.is_symlink():
            link.unlink()
        return
    if not (Path(target) / "h100fleet-stack.json").is_file():
        raise RuntimeError(f"{target} is not a complete stack (no h100fleet-stack.json): {name} not changed")
    tmp = root / f".{name}.guard.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(link)


def guard(
    journal_path: Path, stack_root: Path, service: str, *, now: float | None = None, systemctl: str = "systemctl"
) -> str:
    """One check; returns what it did ("nothing: ..." or "restored ...")."""
    now = time.time() if now is None else now
    try:
        journal = json.loads(journal_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "nothing: no flip journal"
    if not isinstance(journal, dict) or journal.get("state") != "open":
        return f"nothing: the journal is {journal.get('state') if isinstance(journal, dict) else 'not an object'}"
    deadline = float(journal.get("deadline") or 0)
    if now < deadline:
        return f"nothing: the flip has {deadline - now:.0f} s left to confirm"
    restore = journal.get("restore") or {}
    current = (restore.get("current") or {}).get("path")
    if not current:
        raise RuntimeError("the journal names no stack to restore (restore.current.path)")
    previous = (restore.get("previous") or {}).get("path")
    _link(stack_root, "current", current)
    if previous and previous != current and (Path(previous) / "h100fleet-stack.json").is_file():
        _link(stack_root, "previous", previous)
    else:
        _link(stack_root, "previous", None)
    restarted = bool(journal.get("was_active"))
    if restarted:
        subprocess.run([systemctl, "reset-failed", service], check=False, capture_output=True)
        subprocess.run([systemctl, "restart", service], check=True, capture_output=True, text=True)
    journal.update(
        state="recovered",
        recovered_at=round(now, 3),
        recovered_by="h100fleet-rollout-guard",
        recovered_to=(restore.get("current") or {}).get("id"),
        recovered_restarted=restarted,
    )
    _write_json(journal_path, journal)
    what = f"restored {(restore.get('current') or {}).get('id')} ({current})"
    return what + (f" and restarted {service}" if restarted else f"; {service} was not running before the flip")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="h100fleet-rollout-guard", description=__doc__.splitlines()[0])
    p.add_argument("--journal", type=Path, required=True, help="the node's flip journal")
    p.add_argument("--stack-root", type=Path, required=True, help="python_stack's root (current, previous)")
    p.add_argument("--service", required=True, help="the training service's unit")
    p.add_argument("--now", type=float, help="the time to judge the deadline by (epoch seconds; tests)")
    p.add_argument("--systemctl", default="systemctl", help="systemctl to call (tests)")
    args = p.parse_args(argv)
    try:
        print(guard(args.journal, args.stack_root, args.service, now=args.now, systemctl=args.systemctl))
    except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        print(f"h100fleet-rollout-guard: restoring failed: {exc} {detail}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
