#!/usr/bin/env python3
"""Full-stack venv build: uv from a warm wheelhouse vs the specification's sequential `pip install` steps, same wheels,
same container image (h100fleet/node:bookworm, Python 3.11).

    sudo .venv/bin/python benchmarks/venv_build.py [--stack torch2.3-unsloth2024.8-py310] [--json out.json]

The wheelhouse (every wheel of the stack's lock-py3.11.txt, downloaded once with `pip download --require-hashes`)
is mounted read-only; the containers run with no index. Prints one line per run and the speed-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from h100fleet.harness import venv_bench
from h100fleet.stack import manifest
from h100fleet.stack.lock import find_uv
from h100fleet.testfleet import images, services

REPO = Path(__file__).resolve().parents[1]
PROXY = "-o Acquire::http::Proxy=http://127.0.0.1:3142"


def _pip_python() -> str:
    """An interpreter with pip (the project's uv-made .venv has none): this one, else the machine's python3."""
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    return sys.executable if has_pip.returncode == 0 else "python3"


def wheelhouse(stack: manifest.Stack, python: str, root: Path) -> Path:
    target = root / f"{stack.id}-py{python}"
    done = target / ".complete"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            # --isolated: no pip.conf or PIP_* settings of this machine; wheels for this machine's Python 3.11.
            [
                _pip_python(),
                "-m",
                "pip",
                "--isolated",
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--cert",
                "/etc/ssl/certs/ca-certificates.crt",
                "--index-url",
                "https://pypi.org/simple",
                "-r",
                str(stack.lock_path(python)),
                "-d",
                str(target),
            ],
            check=True,
        )
        done.write_text("ok\n")
    return target


def in_container(image: str, house: Path, lock: Path, uv: str, script: str, *, setup: str = "") -> str:
    argv = [
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        f"{house}:/wheelhouse:ro",
        "-v",
        f"{lock}:/stack/lock.txt:ro",
        "-v",
        f"{uv}:/usr/local/bin/uv:ro",
        image,
        "bash",
        "-c",
        setup + script,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"benchmark container failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="torch2.3-unsloth2024.8-py310")
    parser.add_argument("--python", default="3.11", help="the image's Python (bookworm: 3.11)")
    parser.add_argument("--wheelhouse-root", default="/var/cache/h100fleet/wheelhouse")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    stack = manifest.load(REPO / "files" / "stacks" / args.stack)
    services.ensure_docker()
    services.ensure_apt_proxy()
    recipe = images.recipe("bookworm")
    images.ensure(recipe, proxy=services.APT_PROXY_URL)
    house = wheelhouse(stack, args.python, Path(args.wheelhouse_root))
    wheels = sorted(house.glob("*.whl"))
    size_gb = sum(w.stat().st_size for w in wheels) / 1e9
    uv = os.path.realpath(find_uv())
    lock = stack.lock_path(args.python)

    setup = f"set -e; apt-get {PROXY} update -qq && apt-get {PROXY} install -y -qq python3-venv bc >/dev/null\n"
    steps = venv_bench.specified_steps(stack.requirements_text())
    pip_out = in_container(recipe.alias, house, lock, uv, venv_bench.pip_script(steps), setup=setup)
    uv_out = in_container(
        recipe.alias, house, lock, uv, venv_bench.uv_script(), setup=setup.replace("python3-venv ", "")
    )
    results = {**venv_bench.parse_results(pip_out), **venv_bench.parse_results(uv_out)}
    pip_s, cold, warm = results["pip-sequential"], results["uv-cold-cache"], results["uv-warm-cache"]
    print(f"stack {stack.id}, Python {args.python}: {len(wheels)} wheels, {size_gb:.2f} GB, image {recipe.alias}")
    label = f"specified sequential pip install ({len(steps)} steps):"
    print(f"{label:<58}{pip_s:7.1f} s")
    print(f"uv venv + uv pip sync --require-hashes, empty uv cache:   {cold:7.1f} s  ({pip_s / cold:.1f}x faster)")
    print(f"uv venv + uv pip sync --require-hashes, warm uv cache:    {warm:7.1f} s  ({pip_s / warm:.1f}x faster)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "date": dt.date.today().isoformat(),
                    "machine": f"{platform.node()} ({os.cpu_count()} cores)",
                    "stack": stack.id,
                    "python": args.python,
                    "wheels": len(wheels),
                    "wheel_gb": round(size_gb, 2),
                    "seconds": results,
                    "speedup_cold": round(pip_s / cold, 2),
                    "speedup_warm": round(pip_s / warm, 2),
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
