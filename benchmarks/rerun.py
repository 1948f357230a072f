#!/usr/bin/env python3
"""The demo's first converge and the cost of a re-run: `scripts/demo` on fresh nodes, then `site.yml` again.

    .venv/bin/python benchmarks/rerun.py [--json docs/benchmarks/rerun-<date>.json] [--rerun-only]

First: the wall-clock time of `scripts/demo` (3 fresh trixie nodes from `h100fleet testfleet up --nodes 3`,
provisioned to the pinned Python stack, the trainer's inputs staged, `ansible-playbook site.yml -l h100s`, the summary
30 s later), and the time of each of its stages. Then the re-run: `ansible-playbook site.yml -l h100s` once more,
its wall-clock time, the changed count of every node (it must be 0 everywhere) and its slowest tasks (the
profile_tasks callback of ansible.cfg). --rerun-only measures the re-run on the nodes that are already up.
Timings depend on the machine's load: the JSON records the load average and the core count beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from h100fleet.harness import machine

REPO = Path(__file__).resolve().parents[1]
NODES = ["h100-node-1", "h100-node-2", "h100-node-3"]
# scripts/lib/common.sh's stage(): "==> NAME: done in N s"
_STAGE = re.compile(r"==> (.+): done in (\d+) s")
# ansible's recap: "host : ok=N changed=N unreachable=N failed=N ..."
_RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
# profile_tasks' summary: "role : task name ---- 12.34s"
_TASK = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_HEADER = re.compile(r"^TASK \[(.+?)\] \*+$")
_CHANGED = re.compile(r"^changed: \[([^\]]+)\]")


def env() -> dict[str, str]:
    environ = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{environ['PATH']}"
    return environ


def timed(argv: list[str]) -> tuple[float, str]:
    """Run a command in the repository; exit with its output's tail when it fails."""
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env(), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    output = _ANSI.sub("", proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{output[-6000:]}")
    return elapsed, output


def recap(output: str) -> dict[str, dict[str, int]]:
    """The last recap of an ansible-playbook output, per host."""
    hosts: dict[str, dict[str, int]] = {}
    for host, ok, changed, unreachable, failed in _RECAP.findall(output):
        hosts[host] = {"ok": int(ok), "changed": int(changed), "unreachable": int(unreachable), "failed": int(failed)}
    return hosts


def changed_tasks(output: str) -> list[dict[str, str]]:
    """Every (task, host) that reported "changed" in the run's output."""
    found, task = [], None
    for line in output.splitlines():
        if header := _TASK_HEADER.match(line):
            task = header[1]
        elif (changed := _CHANGED.match(line)) and task:
            found.append({"task": task, "host": changed[1]})
    return found


def slowest_tasks(output: str, count: int = 10) -> list[dict[str, object]]:
    tasks = [{"task": name.strip(), "seconds": float(s)} for name, s in _TASK.findall(output)]
    return sorted(tasks, key=lambda t: -t["seconds"])[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    parser.add_argument("--rerun-only", action="store_true", help="measure only the re-run on the nodes already up")
    args = parser.parse_args()

    result: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine_before": machine.summary(),
    }
    if not args.rerun_only:
        seconds, output = timed(["scripts/demo"])
        stages = {name: int(s) for name, s in _STAGE.findall(output)}
        result["first"] = {"command": "scripts/demo", "seconds": round(seconds, 1), "stages": stages}
        print(f"first converge, scripts/demo on {len(NODES)} fresh nodes: {seconds:.1f} s")
        for name, s in stages.items():
            print(f"  {name}: {s} s")

    seconds, output = timed(["ansible-playbook", "site.yml", "-l", "h100s"])
    hosts = recap(output)
    changed = {h: v["changed"] for h, v in hosts.items()}
    result["rerun"] = {
        "command": "ansible-playbook site.yml -l h100s",
        "seconds": round(seconds, 1),
        "recap": hosts,
        "slowest_tasks": slowest_tasks(output),
        "changed_tasks": changed_tasks(output),
    }
    result["machine_after"] = machine.summary()
    print(f"re-run, ansible-playbook site.yml -l h100s on {len(NODES)} nodes: {seconds:.1f} s (changed: {changed})")
    for task in result["rerun"]["slowest_tasks"]:
        print(f"  {task['seconds']:6.2f} s  {task['task']}")
    for change in result["rerun"]["changed_tasks"]:
        print(f"  changed on {change['host']}: {change['task']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if any(changed.get(n, -1) != 0 for n in NODES):
        print("NOT IDEMPOTENT: the re-run changed something (or a node is missing from its recap)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
