#!/usr/bin/env python3
"""The control node's cost per host over SSH next to `docker exec`: the same playbook on the same nodes, both ways.

    sudo .venv/bin/python benchmarks/connection.py [--nodes 3] [--repeat 2] [--reuse] [--json FILE]

Starts trixie test nodes h100-node-1..N (`h100fleet testfleet up`; --reuse takes the ones already up), converges
them once with `playbooks/baseline.yml` (node_baseline; not timed for the comparison), then runs that idempotent
playbook again --repeat times each way, alternating: over SSH as inventory/local says (user ops, sudo, ansible.cfg's
pipelining and ControlPersist), and through `docker exec` as root (the connection the local inventory used before:
community.docker.docker, given as extra vars). For each run: wall-clock time, the CPU time of ansible-playbook
and everything it waited for (its forks, the ssh or docker clients; not the sshd or dockerd on the other side,
nor a ControlPersist master that outlives the run), that CPU time per host, and the changed count (0 everywhere,
or the run is not comparable). The load average is printed beside them: timings depend on what else runs.
The docker-exec way is given as extra vars, which also apply to tasks delegated to localhost: the playbook
measured must have none (node_baseline has none).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from h100fleet.harness import machine
from h100fleet.testfleet import images, nodes, services, ssh

REPO = Path(__file__).resolve().parents[1]

PLAYBOOK = "playbooks/baseline.yml"
# The connection inventory/local had before it used SSH: `docker exec` into the container named like the host, as
# root. inventory/local's ansible_host (127.0.0.1) is no container name, hence ansible_docker_host.
DOCKER_EXEC = {
    "ansible_connection": "community.docker.docker",
    "ansible_user": "root",
    "ansible_docker_host": "{{ inventory_hostname }}",
}
_RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def env() -> dict[str, str]:
    environ = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{environ['PATH']}"
    return environ


def playbook(hosts: list[str], extra: dict[str, str] | None = None) -> dict[str, object]:
    """One ansible-playbook run: wall seconds, CPU seconds of it and its children, the recap per host."""
    argv = ["ansible-playbook", PLAYBOOK, "-l", ",".join(hosts)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env(), capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-6000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    recap = {h: {"ok": int(ok), "changed": int(ch)} for h, ok, ch, _u, _f in _RECAP.findall(proc.stdout)}
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "recap": recap}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, choices=[1, 2, 3], help="nodes of inventory/local (1-3)")
    parser.add_argument("--repeat", type=int, default=2, help="runs each way (default: 2)")
    parser.add_argument("--reuse", action="store_true", help="use the nodes already up instead of starting them")
    parser.add_argument("--json", type=Path, help="write the figures to this file as JSON")
    args = parser.parse_args()

    ports = ssh.up_ports("h100-node", args.nodes)
    hosts = list(ports)
    result: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"benchmarks/connection.py --nodes {args.nodes} --repeat {args.repeat}",
        "playbook": PLAYBOOK,
        "machine_before": machine.summary(),
    }
    if not args.reuse:
        services.ensure_docker()
        services.ensure_apt_proxy()
        recipe = images.recipe("trixie")
        images.ensure(recipe, proxy=services.APT_PROXY_URL)
        nodes.up(ports, recipe.alias)
    first = playbook(hosts)
    result["first_converge"] = first
    print(f"first converge over SSH, {PLAYBOOK} on {len(hosts)} nodes: {first['wall_s']} s")

    runs: dict[str, list[dict[str, object]]] = {"docker exec": [], "ssh": []}
    for _ in range(args.repeat):
        for way, extra in (("docker exec", DOCKER_EXEC), ("ssh", None)):
            run = playbook(hosts, extra)
            runs[way].append(run)
            changed = {h: v["changed"] for h, v in run["recap"].items()}
            print(f"  {way:11}  wall {run['wall_s']:6.1f} s  cpu {run['cpu_s']:6.1f} s  changed {changed}")
    result["runs"] = runs
    result["machine_after"] = machine.summary()

    print(f"\n{PLAYBOOK}, idempotent, {len(hosts)} nodes, {args.repeat} runs each way (medians):")
    print("| connection | wall | control-node CPU | CPU per host | tasks per host |")
    print("|---|---|---|---|---|")
    summary = {}
    for way, way_runs in runs.items():
        wall = statistics.median(r["wall_s"] for r in way_runs)
        cpu = statistics.median(r["cpu_s"] for r in way_runs)
        tasks = statistics.median(v["ok"] for r in way_runs for v in r["recap"].values())
        summary[way] = {"wall_s": wall, "cpu_s": cpu, "cpu_per_host_s": round(cpu / len(hosts), 2), "tasks": tasks}
        print(f"| {way} | {wall:.1f} s | {cpu:.1f} s | {cpu / len(hosts):.1f} s | {tasks:g} |")
    result["summary"] = summary
    before, after = result["machine_before"], result["machine_after"]
    print(f"machine: {before['host']}, {before['cores']} cores, {before['os']}; date {result['date']}")
    print(f"load average before {before['load_average']}, after {after['load_average']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"figures written to {args.json}")
    changed = [(way, h) for way, rs in runs.items() for r in rs for h, v in r["recap"].items() if v["changed"]]
    if changed or any(set(r["recap"]) != set(hosts) for rs in runs.values() for r in rs):
        print(f"NOT COMPARABLE: a re-run changed something or missed a node: {changed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
