"""Venv build benchmark: uv from a warm wheelhouse against the specification's sequential `pip install` steps.

Both installers get the same wheels (a wheelhouse holding exactly a stack's lock) in fresh containers of the same
node image, with no index (--no-index --find-links): the figure is the installer's own time, not the network's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from h100fleet.node.lockfile import Pin, parse_pins

# The specification installs torch, torchvision and torchaudio in one command, then one package per command.
TORCH_TRIPLET = ("torch", "torchvision", "torchaudio")


def specified_steps(requirements_text: str) -> list[list[str]]:
    """The specified install sequence for a requirements input: the torch triplet first, then one step per line."""
    pins = parse_pins(requirements_text)
    first = [str(pins[n]) for n in TORCH_TRIPLET if n in pins]
    rest = [[str(p)] for key, p in pins.items() if key not in TORCH_TRIPLET]
    return ([first] if first else []) + rest


@dataclass(frozen=True)
class Paths:
    wheelhouse: str = "/wheelhouse"
    lock: str = "/stack/lock.txt"
    uv: str = "/usr/local/bin/uv"
    python: str = "/usr/bin/python3"


def _timed(label: str, commands: list[str]) -> list[str]:
    return [
        "t0=$(date +%s.%N)",
        *commands,
        "t1=$(date +%s.%N)",
        f'echo "RESULT {label} $(echo "$t1 - $t0" | bc)"',
    ]


def pip_script(steps: list[list[str]], paths: Paths = Paths()) -> str:
    """Shell for the specified way: python -m venv, then one `pip install` per step, resolving from the wheelhouse."""
    pip = (
        f"/opt/specified/bin/pip install --quiet --disable-pip-version-check --no-index --find-links {paths.wheelhouse}"
    )
    commands = [f"{paths.python} -m venv /opt/specified"] + [f"{pip} {shlex.join(step)}" for step in steps]
    return "\n".join(["set -euo pipefail", *_timed("pip-sequential", commands)]) + "\n"


def uv_script(paths: Paths = Paths(), runs: int = 2) -> str:
    """Shell for python_stack's way: uv venv + uv pip sync --require-hashes; the first run starts with an empty uv
    cache (cold), later runs reuse it (warm: what a rebuild or a second stack on the node costs)."""
    lines = ["set -euo pipefail", "export UV_CACHE_DIR=/tmp/uv-cache UV_NO_CONFIG=1 UV_PYTHON_DOWNLOADS=never"]
    for i in range(runs):
        label = "uv-cold-cache" if i == 0 else "uv-warm-cache"
        lines += ["rm -rf /opt/stack"]
        lines += _timed(
            label,
            [
                f"{paths.uv} venv --quiet --python {paths.python} /opt/stack",
                f"{paths.uv} pip sync --quiet --require-hashes --no-index --find-links {paths.wheelhouse} "
                f"--python /opt/stack/bin/python {paths.lock}",
            ],
        )
    return "\n".join(lines) + "\n"


def parse_results(output: str) -> dict[str, float]:
    results = {}
    for line in output.splitlines():
        if line.startswith("RESULT "):
            _, label, seconds = line.split()
            results[label] = float(seconds)
    return results


def lock_wheels(lock_text: str) -> list[Pin]:
    return sorted(parse_pins(lock_text).values(), key=lambda p: p.key)
