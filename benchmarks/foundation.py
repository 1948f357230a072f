#!/usr/bin/env python3
"""Foundation timings: node image builds, first converge of a fresh 3-node fleet, idempotent re-run.

    sudo .venv/bin/python benchmarks/foundation.py [--nodes 3] [--skip-images]

Image builds use --rebuild semantics (debootstrap runs even when the cached image matches) with whatever the apt
proxy already holds, so the figure is the warm-cache rebuild time that a recipe change costs. The converge
figures are wall-clock times of `ansible-playbook site.yml -l h100s` against freshly started containers
(inventory/local), first and second run; the second run must report changed=0 on every node.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from h100fleet.testfleet import images, nodes, services, ssh

REPO = Path(__file__).resolve().parents[1]


def playbook(limit: str) -> tuple[float, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    started = time.monotonic()
    proc = subprocess.run(
        ["ansible-playbook", "site.yml", "-l", limit], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"ansible-playbook failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def changed_counts(output: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.MULTILINE)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--skip-images", action="store_true")
    args = parser.parse_args()

    services.ensure_docker()
    services.ensure_apt_proxy()
    if not args.skip_images:
        for suite in sorted(images.RECIPES):
            seconds = images.build(images.recipe(suite), proxy=services.APT_PROXY_URL)
            print(f"image build {suite} (warm apt cache): {seconds:.1f} s")

    names = ssh.up_ports("h100-node", args.nodes)
    started = time.monotonic()
    nodes.up(names, images.recipe("trixie").alias)
    print(f"start {args.nodes} trixie nodes (systemd running): {time.monotonic() - started:.1f} s")

    first, _ = playbook("h100s")
    print(f"first converge, site.yml on {args.nodes} nodes: {first:.1f} s")
    second, out = playbook("h100s")
    changed = changed_counts(out)
    print(f"idempotent re-run, site.yml on {args.nodes} nodes: {second:.1f} s (changed per node: {changed})")
    if any(changed.get(n, -1) != 0 for n in names):
        print("NOT IDEMPOTENT: a second run changed something", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
