"""The wheelhouse: the one wheel per pin a node installs, hash-checked, for air-gapped fleets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from h100fleet.node.lockfile import Pin, parse_pins
from h100fleet.stack import wheelhouse

LIGHT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "stacks" / "light"


@pytest.mark.parametrize(
    ("filename", "rank"),
    [
        ("PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", 0),
        ("torchao-0.18.0-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", 1),
        ("hf_transfer-0.1.9-cp38-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", 1),
        ("bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl", 1),
        ("six-1.16.0-py2.py3-none-any.whl", 2),
        ("PyYAML-6.0.2-cp310-cp310-manylinux_2_17_x86_64.whl", None),
        ("PyYAML-6.0.2-cp311-cp311-win_amd64.whl", None),
        ("PyYAML-6.0.2-cp311-cp311-manylinux_2_17_aarch64.whl", None),
        ("torchao-0.18.0-cp312-abi3-manylinux_2_28_x86_64.whl", None),
        ("multiprocess-0.70.19-py312-none-any.whl", None),
        ("multiprocess-0.70.19-py311-none-any.whl", 2),
        ("xformers-0.0.35-py39-none-manylinux_2_28_x86_64.whl", 1),
        ("PyYAML-6.0.2.tar.gz", None),
    ],
)
def test_wheel_rank_for_cpython_311_on_linux_x86_64(filename, rank):
    assert wheelhouse.wheel_rank(filename, "3.11") == rank


def test_choose_takes_the_best_fitting_wheel_whose_hash_is_locked():
    files = [
        {"filename": "x-1-py3-none-any.whl", "hashes": {"sha256": "a" * 64}},
        {"filename": "x-1-cp311-cp311-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "b" * 64}},
        {"filename": "x-1-cp311-cp311-manylinux_2_28_x86_64.whl", "hashes": {"sha256": "c" * 64}},
    ]
    pin = Pin("x", "1", hashes=("a" * 64, "b" * 64))
    assert wheelhouse.choose(files, pin, "3.11")["filename"] == "x-1-cp311-cp311-manylinux_2_17_x86_64.whl"
    assert wheelhouse.choose(files, Pin("x", "1", hashes=("a" * 64,)), "3.11")["filename"] == "x-1-py3-none-any.whl"
    assert wheelhouse.choose(files, Pin("x", "1", hashes=("d" * 64,)), "3.11") is None


def test_fill_downloads_the_light_stack_from_pypi(tmp_path):
    """Real downloads from PyPI; every file's sha256 is one of its pin's hashes."""
    lock = (LIGHT / "lock-py3.11.txt").read_text()
    report = wheelhouse.fill(lock, "3.11", tmp_path)
    assert sorted(report["downloaded"]) == [
        "PyYAML-6.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "packaging-24.1-py3-none-any.whl",
        "six-1.16.0-py2.py3-none-any.whl",
    ]
    pins = parse_pins(lock)
    for wheel in tmp_path.glob("*.whl"):
        name = wheel.name.split("-")[0].lower()
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() in pins[name].hashes
    again = wheelhouse.fill(lock, "3.11", tmp_path)
    assert again["downloaded"] == [] and len(again["present"]) == 3
