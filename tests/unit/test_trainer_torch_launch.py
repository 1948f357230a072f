"""The training unit's multi-process entry point (`python -m h100fleet.trainer.launch`, torchrun inside) on CPU
(gloo, hf backend, the tiny Llama): the exit codes systemd sees. A config no restart can fix exits 78 before any
worker starts, a worker's malformed-dataset exit (65) reaches the unit, SIGTERM to the launcher alone (systemd's
KillMode=mixed) stops every rank after one checkpoint with exit 0, a killed rank exits 1 (restarted, resumes).
Marker `torch`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer_torch import dataset, metrics, model, status  # noqa: F401 - fixtures
from test_trainer_torch_ddp import ddp_config, ddp_env, rank_pid, wait_for_steps

from h100fleet.trainer import checkpoint, tiny

pytestmark = pytest.mark.torch


def launch_argv(n: int, config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "h100fleet.trainer.launch",
        "--nproc-per-node",
        str(n),
        "--config",
        str(config),
        *args,
    ]


def launch(n: int, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = launch_argv(n, config, *args)
    return subprocess.run(argv, capture_output=True, text=True, env=ddp_env(), timeout=600, check=False)


def start(n: int, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        launch_argv(n, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ddp_env()
    )


def test_a_config_no_restart_can_fix_exits_78_before_any_worker(tmp_path, model, dataset):  # noqa: F811
    config = ddp_config(tmp_path / "run", model, dataset)
    config.write_text(config.read_text().replace("global_batch_size: 4", "global_batch_size: 3"))
    result = launch(4, config)  # a global batch of 3 cannot give each of 4 processes a sequence
    assert result.returncode == 78, result.stderr[-3000:]
    assert "config error" in result.stderr and "through torchrun" not in result.stderr


def test_a_workers_malformed_dataset_exit_reaches_the_unit(tmp_path, model):  # noqa: F811
    data = tiny.write_dataset(tmp_path / "train.jsonl", records=16)
    data.write_text(data.read_text() + "{not json\n")
    result = launch(2, ddp_config(tmp_path / "run", model, data))
    assert result.returncode == 65, result.stderr[-3000:]
    assert "(not restarted)" in result.stderr


def test_sigterm_to_the_launcher_alone_stops_every_rank_after_one_checkpoint(tmp_path, model, dataset):  # noqa: F811
    config = ddp_config(tmp_path / "run", model, dataset)
    proc = start(2, config)
    wait_for_steps(config, proc, 2)
    proc.send_signal(signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-4000:]
    step = status(config)["step"]
    assert status(config)["state"] == "stopped", stderr[-4000:]
    ckdir = config.parent / "out" / "checkpoints"
    for prefix in ("", "rank 1: "):  # both ranks finished the same step
        assert f"{prefix}stopped at step {step}; checkpoint {ckdir / checkpoint.name_for(step)}" in stderr
    assert [p.name for p in ckdir.iterdir()] == [checkpoint.name_for(step)]
    # The restart (the unit started again) resumes from that step.
    result = launch(2, config, "--stop-after", str(step + 1))
    assert result.returncode == 0 and f"resumed from {ckdir / checkpoint.name_for(step)}" in result.stderr
    assert metrics(config)[-1]["step"] == step + 1


def test_a_killed_rank_exits_1_so_that_systemd_restarts_the_job(tmp_path, model, dataset):  # noqa: F811
    config = ddp_config(tmp_path / "run", model, dataset)
    proc = start(2, config)
    wait_for_steps(config, proc, 2)
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    assert "workers failed" in stderr
