"""Carrying files in parts: split with a manifest, receive part by part, reassemble with every sha256 checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from h100fleet.harness import carry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"a-1.0-py3-none-any.whl": 2500, "b-2.0-py3-none-any.whl": 10, "empty.txt": 0, "c.tar.xz": 4096}
    files = []
    for i, (name, size) in enumerate(sizes.items()):
        path = src / name
        path.write_bytes(os.urandom(size) if i % 2 == 0 else bytes([i]) * size)
        files.append(path)
    return files


def test_split_cuts_parts_no_larger_than_asked_and_lists_every_hash(wheels, tmp_path):
    manifest = carry.split(wheels, tmp_path / "parts", part_size=1000)
    total = sum(w.stat().st_size for w in wheels)
    assert manifest["total_size"] == total
    assert [p["name"] for p in manifest["parts"]] == [f"part-{i:04d}" for i in range(7)]  # ceil(6606 / 1000)
    assert all(p["size"] <= 1000 for p in manifest["parts"])
    assert sum(p["size"] for p in manifest["parts"]) == total
    for part in manifest["parts"]:
        data = (tmp_path / "parts" / part["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
    for entry, wheel in zip(manifest["files"], wheels, strict=True):
        assert entry["name"] == wheel.name
        assert entry["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "parts" / "manifest.json").read_text()) == manifest


def test_receive_then_assemble_rebuilds_every_file(wheels, tmp_path):
    manifest = carry.split(wheels, tmp_path / "parts", part_size=1000)
    store = tmp_path / "store"
    for part in manifest["parts"]:
        assert part["name"] in carry.missing(manifest, store)
        carry.receive(tmp_path / "parts" / part["name"], manifest, store)
    assert carry.missing(manifest, store) == []
    written = carry.assemble(manifest, store, tmp_path / "out")
    assert [w.name for w in written] == [w.name for w in wheels]
    for wheel in wheels:
        assert (tmp_path / "out" / wheel.name).read_bytes() == wheel.read_bytes()


def test_a_bad_part_is_refused_by_name_before_it_is_kept(wheels, tmp_path):
    manifest = carry.split(wheels, tmp_path / "parts", part_size=1000)
    bad = tmp_path / "parts" / "part-0003"
    data = bytearray(bad.read_bytes())
    data[10] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(carry.CarryError, match=r"^part-0003: sha256 [0-9a-f]{64} is not the manifest's"):
        carry.receive(bad, manifest, tmp_path / "store")
    assert not (tmp_path / "store" / "part-0003").exists()
    bad.write_bytes(bytes(data[:-1]))
    with pytest.raises(carry.CarryError, match=r"^part-0003: 999 bytes, the manifest says 1000$"):
        carry.check_part(bad, manifest)


def test_assemble_names_missing_parts_and_a_part_spoiled_in_the_store(wheels, tmp_path):
    manifest = carry.split(wheels, tmp_path / "parts", part_size=1000)
    store = tmp_path / "store"
    for part in manifest["parts"][:5]:
        carry.receive(tmp_path / "parts" / part["name"], manifest, store)
    with pytest.raises(carry.CarryError, match=r"^2 parts missing: part-0005, part-0006$"):
        carry.assemble(manifest, store, tmp_path / "out")
    for part in manifest["parts"][5:]:
        carry.receive(tmp_path / "parts" / part["name"], manifest, store)
    spoiled = store / "part-0001"
    spoiled.write_bytes(b"x" * 1000)
    with pytest.raises(carry.CarryError, match=r"^part-0001: sha256"):
        carry.assemble(manifest, store, tmp_path / "out")


def test_a_file_whose_rebuilt_hash_is_wrong_is_removed(wheels, tmp_path):
    manifest = carry.split(wheels, tmp_path / "parts", part_size=1000)
    manifest["files"][0]["sha256"] = "0" * 64
    store = tmp_path / "store"
    for part in manifest["parts"]:
        carry.receive(tmp_path / "parts" / part["name"], manifest, store)
    with pytest.raises(
        carry.CarryError, match=r"^a-1\.0-py3-none-any\.whl: sha256 [0-9a-f]{64} is not the manifest's 0+$"
    ):
        carry.assemble(manifest, store, tmp_path / "out")
    assert not (tmp_path / "out" / "a-1.0-py3-none-any.whl").exists()


def test_split_refuses_two_files_of_one_name(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for d in ("x", "y"):
        (tmp_path / d / "same.whl").write_bytes(b"1")
    with pytest.raises(ValueError, match=r"two files share a name: same\.whl"):
        carry.split([tmp_path / "x" / "same.whl", tmp_path / "y" / "same.whl"], tmp_path / "parts")


def test_the_script_runs_the_whole_round_trip(wheels, tmp_path):
    script = ROOT / "scripts" / "gpu" / "carry"
    env = {**os.environ, "PYTHON": sys.executable}

    def sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, check=False)

    parts, store = tmp_path / "parts", tmp_path / "store"
    split = sh("split", *map(str, wheels), "--dest", str(parts), "--part-mib", "1")
    assert split.returncode == 0, split.stderr
    assert split.stdout.strip() == f"4 files, 6606 bytes -> 1 parts in {parts}"
    m = ["--manifest", str(parts / "manifest.json"), "--store", str(store)]
    assert sh("missing", *m).stdout.strip() == "part-0000"
    got = sh("receive", str(parts / "part-0000"), *m)
    assert got.stdout.strip() == "received part-0000; 0 of 1 to go"
    assert sh("missing", *m).returncode == 0
    done = sh("assemble", *m, "--dest", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    (parts / "part-0000").write_bytes(b"spoiled")
    refused = sh("receive", str(parts / "part-0000"), *m)
    assert refused.returncode == 2
    assert refused.stderr.startswith("carry: part-0000: 7 bytes, the manifest says 6606")
