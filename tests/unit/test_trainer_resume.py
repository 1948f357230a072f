"""Whether a config can resume its checkpoints: a changed LoRA rank, target modules or model is refused at --check
and at start with exit 78 (not restarted) naming the field; checkpoints outside checkpoint.dir are reported. Fake
checkpoints written by checkpoint.write_dir: no torch needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from h100fleet.trainer import checkpoint, config, resume

REPO = Path(__file__).resolve().parents[2]
FRESH = "start a new run in an empty checkpoint.dir (or move the checkpoints away)"


def setup_run(tmp_path: Path, **lora) -> Path:
    """A model directory, a dataset and a config; returns the config's path."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    doc = {"model": {"path": "model"}, "data": {"path": "data.jsonl"}, "train": {"output_dir": "out"}}
    if lora:
        doc["lora"] = lora
    path = tmp_path / "trainer.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def fake_checkpoint(directory: Path, step: int, cfg: config.Config, *, record: bool = True, **adapter) -> Path:
    """A checkpoint as the trainer writes it (manifest with the resume identity; adapter_config.json as PEFT writes
    it); record=False: as older trainers wrote it (no identity in the manifest)."""
    adapter_config = {"r": cfg.lora.r, "target_modules": list(cfg.lora.target_modules), **adapter}

    def writer(tmp: Path) -> None:
        (tmp / "adapter_config.json").write_text(json.dumps(adapter_config))
        (tmp / "adapter_model.safetensors").write_bytes(b"weights")

    manifest = {"step": step, "total_steps": 100, "finished": False, "model_path": cfg.model.path}
    if record:
        manifest["resume"] = {
            **resume.identity(cfg),
            "lora_r": adapter_config["r"],
            "lora_target_modules": sorted(adapter_config["target_modules"]),
        }
    path = directory / checkpoint.name_for(step)
    checkpoint.write_dir(path, writer, manifest)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run(
        [sys.executable, "-m", "h100fleet.trainer", *args], capture_output=True, text=True, env=env, check=False
    )


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split("ERROR h100fleet.trainer: ", 1)[1] for line in result.stderr.splitlines() if " ERROR " in line]


def test_the_same_config_resumes(tmp_path):
    path = setup_run(tmp_path, target_modules=["v_proj", "q_proj"])
    cfg = config.load(path)
    fake_checkpoint(Path(cfg.checkpoint.dir), 200, cfg, target_modules=["q_proj", "v_proj"])  # order is free
    assert resume.conflicts(cfg, resume.newest(cfg.checkpoint.dir)) == []
    result = cli("--config", str(path), "--check")
    assert (result.returncode, result.stdout) == (0, f"{path}: valid\n"), result.stderr


def test_another_rank_or_modules_is_refused_at_check_and_at_start(tmp_path):
    path = setup_run(tmp_path)
    cfg = config.load(path)
    ckdir = Path(cfg.checkpoint.dir)
    fake_checkpoint(ckdir, 100, cfg)
    newest = fake_checkpoint(ckdir, 200, cfg)
    before = sorted(p.name for p in ckdir.iterdir())
    setup_run(tmp_path, r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    where = f"the checkpoints in {ckdir} (newest: step 200)"
    expected = [
        f"config error in {path}: lora.r = 16: expected 64, the rank of {where}; to train another rank, {FRESH}",
        f'config error in {path}: lora.target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]: '
        f"expected [k_proj, o_proj, q_proj, v_proj] (in any order), the modules of {where}; to adapt other "
        f"modules, {FRESH}",
    ]
    check = cli("--config", str(path), "--check")
    assert check.returncode == 78 and check.stdout == ""
    assert errors(check) == [*expected, "the config cannot resume the checkpoints: exit 78 (not restarted)"]
    # At start: refused before the data is read or torch imported; no traceback, the checkpoints untouched.
    start = cli("--config", str(path))
    assert start.returncode == 78, start.stderr
    assert errors(start) == [*expected, "invalid config: exit 78 (not restarted)"]
    assert "Traceback" not in start.stderr
    assert sorted(p.name for p in ckdir.iterdir()) == before and checkpoint.verify(newest)[1] is None
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("config: lora.r = 16: expected 64")


def test_another_model_is_refused(tmp_path):
    path = setup_run(tmp_path)
    cfg = config.load(path)
    fake_checkpoint(Path(cfg.checkpoint.dir), 50, cfg)
    # The same directory now holds another architecture.
    (tmp_path / "model" / "config.json").write_text(json.dumps({"hidden_size": 128}))
    check = cli("--config", str(path), "--check")
    assert check.returncode == 78
    assert errors(check)[0] == (
        f'config error in {path}: model.path = "{tmp_path}/model": expected a model with the config.json of '
        f"{tmp_path}/model, the model of the checkpoints in {cfg.checkpoint.dir} (newest: step 50); for another "
        f"model, {FRESH}"
    )
    # A copy of the same model elsewhere resumes.
    (tmp_path / "model" / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "config.json").write_text(json.dumps({"hidden_size": 64}))
    moved = config.from_dict(
        {"model": {"path": "copy"}, "data": {"path": "data.jsonl"}, "train": {"output_dir": "out"}}, tmp_path
    )
    assert resume.conflicts(moved, resume.newest(moved.checkpoint.dir)) == []


def test_checkpoints_of_older_trainers_are_read_off_their_adapter_config(tmp_path):
    path = setup_run(tmp_path)
    cfg = config.load(path)
    found_path = fake_checkpoint(Path(cfg.checkpoint.dir), 10, cfg, record=False, r=32)
    found = resume.newest(cfg.checkpoint.dir)
    assert found.path == found_path and "resume" not in found.manifest
    assert [str(i) for i in resume.conflicts(cfg, found)] == [
        f"lora.r = 64: expected 32, the rank of the checkpoints in {cfg.checkpoint.dir} (newest: step 10); to "
        f"train another rank, {FRESH}"
    ]
    other = config.from_dict(
        {"model": {"path": "/srv/other"}, "data": {"path": "data.jsonl"}, "lora": {"r": 32}}, tmp_path
    )
    assert [i.field for i in resume.conflicts(other, found)] == ["model.path"]


def test_checkpoints_outside_checkpoint_dir_are_reported(tmp_path):
    path = setup_run(tmp_path)
    cfg = config.load(path)
    old = Path(cfg.train.output_dir) / "checkpoints"
    fake_checkpoint(old, 300, cfg)
    fake_checkpoint(old, 400, cfg)
    other = Path(cfg.train.output_dir) / "runs" / "a" / "ck"
    fake_checkpoint(other, 20, cfg)
    (Path(cfg.train.output_dir) / "data-cache" / "step-00000001").mkdir(parents=True)  # never searched
    doc = yaml.safe_load(path.read_text())
    doc["checkpoint"] = {"dir": "out/new-checkpoints"}
    path.write_text(yaml.safe_dump(doc))
    cfg = config.load(path)
    strays = resume.stray(cfg)
    assert [(f.path.parent, f.step) for f in strays] == [(old, 400), (other, 20)]
    message = (
        f"checkpoint.dir {tmp_path}/out/new-checkpoints holds no checkpoint, but {old} (newest: step 400); {other} "
        f"(newest: step 20) does: training starts over from step 0; to resume instead, set checkpoint.dir: {old}"
    )
    assert resume.stray_message(cfg, strays) == message
    check = cli("--config", str(path), "--check")
    assert check.returncode == 0 and check.stderr.strip().endswith(f"WARNING h100fleet.trainer: {message}")
    assert not (tmp_path / "out" / "new-checkpoints").exists()  # --check creates nothing
    # Once checkpoint.dir holds a checkpoint of its own, the others are none of its business.
    fake_checkpoint(Path(cfg.checkpoint.dir), 1, cfg)
    assert "WARNING" not in cli("--config", str(path), "--check").stderr
