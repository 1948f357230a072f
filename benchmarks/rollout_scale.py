#!/usr/bin/env python3
"""Rollout scale: the control node's time per host for playbooks/rollout.yml, and a projected 1000-node rollout.

    .venv/bin/python benchmarks/rollout_scale.py [--sizes 10 100 300 1000] [--forks 50] [--batch 25%]
        [--node-wait 60] [--json out.json]

Each size N runs the real playbook against N simulated hosts (ansible_connection: local, `rollout_simulate: true`:
every node-side action becomes an edit of a JSON state file, see h100fleet.harness.rollout_sim), canary 1 and the
given batch, with the repository's ansible.cfg (forks from --forks). Then T(N) = c + h N is fitted over the sizes
and a real rollout of 1000 nodes is projected as c + h N + batches x node wait, where --node-wait is the slowest
node's stop + switch + probe + resume per batch (measured by molecule/rollout: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from h100fleet.harness import rollout_sim


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 300, 1000])
    p.add_argument("--forks", type=int, default=50)
    p.add_argument("--canary", default="1")
    p.add_argument("--batch", default="25%")
    p.add_argument("--node-wait", type=float, default=60.0, help="seconds a real batch waits on its nodes")
    p.add_argument("--project", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    runs = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"rollout-scale-{n}-"))
        try:
            inventory = rollout_sim.create_fleet(work, n)
            run = rollout_sim.run_rollout(
                work, inventory, canary=args.canary, batch=args.batch, forks=args.forks, timeout=args.timeout
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        state = (run.report or {}).get("summary", {}).get("state")
        if run.rc != 0 or state != "complete":
            print(run.log[-4000:], file=sys.stderr)
            print(f"N={n}: rollout failed (rc {run.rc}, report {state})", file=sys.stderr)
            return 1
        batches = rollout_sim.batches(n, int(args.canary), args.batch)
        runs.append(rollout_sim.as_dict(run) | {"batches": batches, "per_host_s": round(run.seconds / n, 3)})
        print(
            f"N={n:5d}  batches={batches:3d}  wall={run.seconds:8.1f} s  per host={run.seconds / n:6.3f} s", flush=True
        )

    out: dict = {"runs": runs, "forks": args.forks, "canary": args.canary, "batch": args.batch}
    if len(runs) >= 2:
        c, h = rollout_sim.fit([(r["hosts"], r["seconds"]) for r in runs])
        proj = rollout_sim.project(
            c, h, args.project, wait_per_batch=args.node_wait, canary=int(args.canary), batch=args.batch
        )
        out |= {"fit": {"c_s": round(c, 1), "h_s": round(h, 3)}, "projection": proj}
        print(f"fit: T(N) = {c:.1f} s + {h:.3f} s x N")
        print(
            f"projected {args.project}-node rollout: control {proj['control_s']} s + {proj['batches']} batches x "
            f"{args.node_wait:.0f} s node wait = {proj['total_s']} s ({proj['total_s'] / 60:.1f} min)"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
