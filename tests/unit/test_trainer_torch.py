"""The trainer end to end through its entry point (`python -m h100fleet.trainer`) on a tiny random Llama and a
generated dataset: training, SIGTERM, resume, corrupt checkpoints. Marker `torch`: needs torch, transformers and
peft (a stack venv); the `gpu` tests also need a CUDA GPU, and Unsloth for the unsloth backend."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from h100fleet.trainer import checkpoint, tiny

pytestmark = pytest.mark.torch
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny.write_dataset(tmp_path_factory.mktemp("data") / "train.jsonl", records=64)


def write_config(directory: Path, model: Path, dataset: Path, **train) -> Path:
    doc = {
        "stack_id": "test-stack",
        "model": {"path": str(model)},
        "data": {"path": str(dataset), "max_seq_length": 64},
        "train": {
            "output_dir": str(directory / "out"),
            "device": "cpu",
            "max_steps": 10,
            "learning_rate": 1e-3,
            "warmup_steps": 2,
            **train,
        },
        "checkpoint": {"every_steps": 2, "keep_last": 2},
        "progress": {"every_steps": 1},
    }
    for section in ("data", "checkpoint", "progress", "lora"):
        if section in train:
            doc[section] = {**doc.get(section, {}), **doc["train"].pop(section)}
    directory.mkdir(parents=True, exist_ok=True)
    return tiny.write_config(directory / "trainer.yml", doc)


def env() -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out.pop("JOURNAL_STREAM", None)
    out.setdefault("OMP_NUM_THREADS", "1")  # identical CPU arithmetic in every run
    return out


def trainer(config: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "h100fleet.trainer", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        check=False,
    )


def start(config: Path) -> subprocess.Popen[str]:
    """The trainer in the background (its output in proc.communicate()), for tests that signal it."""
    return subprocess.Popen(
        [sys.executable, "-m", "h100fleet.trainer", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def metrics(config: Path) -> list[dict]:
    path = config.parent / "out" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def status(config: Path) -> dict:
    return json.loads((config.parent / "out" / "status.json").read_text())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def test_trains_reports_and_saves_the_final_adapter(tmp_path, model, dataset):
    config = write_config(tmp_path / "run", model, dataset, max_steps=5)
    log = ok(trainer(config))
    rows = metrics(config)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["tokens"] == 64 for r in rows)
    st = status(config)
    assert (st["state"], st["step"], st["total_steps"], st["stack_id"], st["backend"]) == (
        "finished",
        5,
        5,
        "test-stack",
        "hf",
    )
    assert st["last_checkpoint"]["step"] == 5 and st["tokens_per_second"] > 0
    out = config.parent / "out"
    final, problem = checkpoint.verify(out / "final")
    assert problem is None and final["step"] == 5 and final["stack_id"] == "test-stack"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    done, _ = checkpoint.verify(out / "checkpoints" / "step-00000005")
    assert done["finished"] is True and done["samples_seen"] == 5 and done["plan"]["batch_size"] == 1
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    assert "step=5/5 loss=" in log and "finished: 5 steps" in log

    # The final adapter is a PEFT adapter directory.
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), out / "final")
    saved = load_file(out / "final" / "adapter_model.safetensors")
    name = next(k for k in saved if "lora_B" in k)
    live = dict(peft_model.named_parameters())[name.replace(".weight", ".default.weight")]
    assert saved[name].abs().sum() > 0 and bool((live.detach() == saved[name]).all())

    # A restart of a finished run does nothing and exits 0.
    again = ok(trainer(config))
    assert "training already finished at step 5" in again
    assert len(metrics(config)) == 5


def test_sigterm_checkpoints_exits_0_and_the_restart_resumes_from_that_step(tmp_path, model, dataset):
    config = write_config(tmp_path / "run", model, dataset, max_steps=100000, checkpoint={"every_steps": 100000})
    proc = start(config)
    deadline = time.monotonic() + 300
    while len(metrics(config)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-4000:]
    stopped = status(config)
    step = stopped["step"]
    assert stopped["state"] == "stopped" and step >= 3
    assert f"SIGTERM: stopping after step {step}" in stderr
    found = checkpoint.latest_valid(config.parent / "out" / "checkpoints")
    assert found.step == step and found.manifest["samples_seen"] == step
    assert stopped["last_checkpoint"]["step"] == step

    log = ok(trainer(config, "--stop-after", str(step + 2)))
    assert f"resumed from {found.path}: step {step}, sample position {step}" in log
    assert [r["step"] for r in metrics(config)][-2:] == [step + 1, step + 2]
    assert status(config)["step"] == step + 2


def test_the_first_step_of_every_start_is_reported(tmp_path, model, dataset):
    # A restarted trainer shows at once that it trains again (a rollout waits for and times exactly that), whatever
    # progress.every_steps is; after that, every every_steps steps and at the stop.
    config = write_config(tmp_path / "run", model, dataset, max_steps=100, progress={"every_steps": 10})
    ok(trainer(config, "--stop-after", "3"))
    assert [r["step"] for r in metrics(config)] == [1, 3]
    ok(trainer(config, "--stop-after", "12"))
    assert [r["step"] for r in metrics(config)] == [1, 3, 4, 10, 12]
    done = status(config)
    assert done["step"] == 12 and done["first_step"] == 4  # this start's first step, and when it finished
    # updated_at is truncated to the second: compare at that resolution
    assert datetime.fromisoformat(done["first_step_at"]).replace(microsecond=0) <= datetime.fromisoformat(
        done["updated_at"].replace("+0000", "+00:00")
    )


def test_sigterm_before_training_starts_exits_0_at_once(tmp_path, model, dataset):
    config = write_config(tmp_path / "run", model, dataset)
    proc = start(config)
    status_file = config.parent / "out" / "status.json"
    deadline = time.monotonic() + 120
    while not status_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # during the imports and the model load
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-4000:]
    assert "SIGTERM before training started: exiting without a checkpoint (nothing trained yet)" in stderr
    assert status(config)["state"] == "stopped" and metrics(config) == []
    assert not any((config.parent / "out" / "checkpoints").iterdir())


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path, model, dataset):
    whole = write_config(tmp_path / "whole", model, dataset)
    ok(trainer(whole, "--stop-after", "6"))
    parts = write_config(tmp_path / "parts", model, dataset)
    ok(trainer(parts, "--stop-after", "3"))
    assert status(parts)["step"] == 3
    ok(trainer(parts, "--stop-after", "6"))
    expected = {r["step"]: r["loss"] for r in metrics(whole)}
    got = {r["step"]: r["loss"] for r in metrics(parts)}
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    # Same data position, adapter, optimizer, schedule and RNG: bit-identical losses and weights after the restart.
    assert [got[s] for s in (4, 5, 6)] == [expected[s] for s in (4, 5, 6)]
    a = checkpoint.verify(whole.parent / "out" / "checkpoints" / "step-00000006")[0]
    b = checkpoint.verify(parts.parent / "out" / "checkpoints" / "step-00000006")[0]
    assert a["files"]["adapter_model.safetensors"] == b["files"]["adapter_model.safetensors"]


def test_a_corrupt_newest_checkpoint_and_a_partial_write_are_skipped(tmp_path, model, dataset):
    config = write_config(tmp_path / "run", model, dataset)
    ok(trainer(config, "--stop-after", "3"))
    ckdir = config.parent / "out" / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["step-00000002", "step-00000003"]
    adapter = ckdir / "step-00000003" / "adapter_model.safetensors"
    raw = bytearray(adapter.read_bytes())
    raw[-1] ^= 0xFF
    adapter.write_bytes(bytes(raw))
    (ckdir / ".tmp-step-00000004-12345").mkdir()
    (ckdir / ".tmp-step-00000004-12345" / "optimizer.pt").write_bytes(b"half")

    log = ok(trainer(config, "--stop-after", "4"))
    assert f"skipping checkpoint {ckdir}/step-00000003 (step 3): adapter_model.safetensors checksum mismatch" in log
    assert f"removed {ckdir}/.tmp-step-00000004-12345, left behind by an interrupted checkpoint write" in log
    assert f"resumed from {ckdir}/step-00000002: step 2, sample position 2" in log
    steps = [r["step"] for r in metrics(config)]
    assert steps == [1, 2, 3, 3, 4]
    names = sorted(p.name for p in ckdir.iterdir())
    assert names[0].startswith("corrupt-step-00000003-") and names[1:] == ["step-00000002", "step-00000004"]


def test_padded_batches_with_accumulation_and_full_loss(tmp_path, model, dataset):
    config = write_config(
        tmp_path / "run",
        model,
        dataset,
        max_steps=3,
        batch_size=2,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        data={"packing": False, "loss_on": "all"},
        lora={"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]},
    )
    ok(trainer(config))
    rows = metrics(config)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    assert all(0 < r["tokens"] <= 4 * 64 for r in rows)
    st = status(config)
    assert (st["batch_size"], st["gradient_accumulation_steps"], st["gradient_checkpointing"]) == (2, 2, True)
    assert st["plan_source"] == "config"


def test_a_tokenizer_without_chat_template_is_a_config_error(tmp_path, model, dataset):
    import shutil

    bare = tmp_path / "model"
    shutil.copytree(model, bare)
    for name in ("tokenizer_config.json",):
        cfg = json.loads((bare / name).read_text())
        cfg.pop("chat_template", None)
        (bare / name).write_text(json.dumps(cfg))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = write_config(tmp_path / "run", bare, dataset, max_steps=1)
    result = trainer(config)
    assert result.returncode == 78, result.stderr[-3000:]
    assert f"config error in {config}: model.chat_template = null: expected a Jinja file (the tokenizer in {bare} " in (
        result.stderr
    )
    (tmp_path / "template.jinja").write_text(tiny.CHAT_TEMPLATE)
    config = write_config(tmp_path / "run2", bare, dataset, max_steps=1)
    text = config.read_text().replace("model:\n", f"model:\n  chat_template: {tmp_path}/template.jinja\n", 1)
    config.write_text(text)
    ok(trainer(config))


def test_a_changed_rank_is_refused_and_a_moved_checkpoint_dir_is_reported(tmp_path, model, dataset):
    config = write_config(tmp_path / "run", model, dataset)
    ok(trainer(config, "--stop-after", "2"))
    ckdir = config.parent / "out" / "checkpoints"
    changed = write_config(tmp_path / "run", model, dataset, lora={"r": 4})
    result = trainer(changed)
    assert result.returncode == 78, result.stderr[-3000:]
    assert f"config error in {changed}: lora.r = 4: expected 64, the rank of the checkpoints in {ckdir} " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and checkpoint.latest_valid(ckdir).step == 2

    moved = write_config(tmp_path / "run", model, dataset, checkpoint={"dir": str(tmp_path / "run" / "out" / "ck2")})
    log = ok(trainer(moved, "--stop-after", "1"))
    warning = f"holds no checkpoint, but {ckdir} (newest: step 2) does: training starts over from step 0"
    assert warning in log and "no checkpoint: from the start" in log
    assert warning in status(moved)["warning"]


# --- on a GPU ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_bf16(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("small") / "model", size=tiny.SMALL, dtype="bfloat16")


def gpu_config(directory: Path, model: Path, dataset: Path, backend: str, **train) -> Path:
    config = write_config(directory, model, dataset, device="cuda", backend=backend, **train)
    text = config.read_text().replace("max_seq_length: 64", "max_seq_length: 128")
    config.write_text(text)
    return config


@pytest.mark.gpu
def test_unsloth_backend_trains_stops_and_resumes_on_the_gpu(tmp_path, small_bf16, dataset):
    pytest.importorskip("unsloth")
    config = gpu_config(tmp_path / "u", small_bf16, dataset, "unsloth", max_steps=8, auto_max_batch_size=4)
    log = ok(trainer(config, "--stop-after", "4"))
    assert "with backend unsloth on" in log
    st = status(config)
    assert (st["state"], st["step"], st["backend"], st["plan_source"]) == ("stopped", 4, "unsloth", "auto")
    assert 1 <= st["batch_size"] <= 4 and st["peak_memory_gib"] > 0
    log = ok(trainer(config))
    assert "resumed from" in log and ": step 4," in log
    rows = metrics(config)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert status(config)["state"] == "finished" and status(config)["plan_source"] == "checkpoint"


@pytest.mark.gpu
def test_hf_backend_with_automatic_batch_on_the_gpu(tmp_path, small_bf16, dataset):
    config = gpu_config(tmp_path / "h", small_bf16, dataset, "hf", max_steps=4, auto_max_batch_size=4)
    ok(trainer(config))
    st = status(config)
    assert (st["state"], st["backend"], st["plan_source"]) == ("finished", "hf", "auto")
    assert "fastest measured" in st["plan_reason"]
    assert json.loads((config.parent / "out" / "autotune.json").read_text())["plan"]["batch_size"] == st["batch_size"]
    assert all(math.isfinite(r["loss"]) for r in metrics(config))


def test_the_bench_smoke_stops_and_resumes_through_torchrun(tmp_path):
    """The GPU smoke run's own code on the CPU, through torchrun with one process: 3 steps, stop, resume to 6."""
    torchrun = True
    out = tmp_path / "smoke.json"
    argv = [sys.executable, "-m", "h100fleet.harness.train_bench", "smoke", "--device", "cpu", "--backend", "hf"]
    argv += ["--out", str(out), "--workdir", str(tmp_path / "work"), *(["--torchrun"] if torchrun else [])]
    result = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["torchrun"] is torchrun
    assert [r["exit_code"] for r in report["runs"]] == [0, 0]
    assert [r["status"]["step"] for r in report["runs"]] == [3, 6]
    assert [m["step"] for m in report["metrics"]] == [1, 2, 3, 4, 5, 6]
    assert ("torch.distributed.run" in report["runs"][0]["argv"]) is torchrun
    # Run again in the same workdir: a fresh run, never the earlier one's finished output taken for its own.
    result = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert [r["status"]["step"] for r in json.loads(out.read_text())["runs"]] == [3, 6]
