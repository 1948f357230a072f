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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_one_job_stop_together_and_resume(tmp_path, model, dataset):  # noqa: F811
    """Two launchers, as two nodes would run them (one process each, a c10d rendezvous on a localhost port, the
    output directory on storage both see): one job of world size 2; SIGTERM to both; both start again and resume."""
    config = ddp_config(tmp_path / "run", model, dataset)
    port = free_port()

    def node(*extra: str) -> subprocess.Popen[str]:
        argv = launch_argv(1, config, "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job-1")
        return subprocess.Popen(
            [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ddp_env()
        )

    nodes = [node(), node()]
    wait_for_steps(config, nodes[0], 2)
    assert status(config)["world_size"] == 2
    for proc in nodes:
        proc.send_signal(signal.SIGTERM)
    results = [proc.communicate(timeout=120) for proc in nodes]
    assert [proc.returncode for proc in nodes] == [0, 0], [err[-3000:] for _out, err in results]
    step = status(config)["step"]
    ckdir = config.parent / "out" / "checkpoints"
    assert status(config)["state"] == "stopped" and [p.name for p in ckdir.iterdir()] == [checkpoint.name_for(step)]
    nodes = [node("--stop-after", str(step + 1)), node("--stop-after", str(step + 1))]
    results = [proc.communicate(timeout=300) for proc in nodes]
    assert [proc.returncode for proc in nodes] == [0, 0], [err[-3000:] for _out, err in results]
    assert any(f"resumed from {ckdir / checkpoint.name_for(step)}" in err for _out, err in results)
    assert metrics(config)[-1]["step"] == step + 1 and status(config)["world_size"] == 2


def test_nodes_configured_apart_are_refused_with_exit_78(tmp_path, model, dataset):  # noqa: F811
    """Two nodes of one job whose configs differ (another learning rate on one): rank 0 sees every rank's config
    digest before anything trains, and every node's unit exits 78 (not restarted), naming the other rank's host."""
    config = ddp_config(tmp_path / "run", model, dataset)
    other = config.parent / "other.yml"
    other.write_text(config.read_text().replace("learning_rate: 0.001", "learning_rate: 0.002"))
    assert other.read_text() != config.read_text()
    port = free_port()
    argv = ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job-2"]
    nodes = [
        subprocess.Popen(
            launch_argv(1, path, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ddp_env()
        )
        for path in (config, other)
    ]
    results = [proc.communicate(timeout=300) for proc in nodes]
    assert [proc.returncode for proc in nodes] == [78, 78], [err[-3000:] for _out, err in results]
    logs = " ".join(" ".join(err.split()) for _out, err in results)
    assert "expected the same config on every node of the job, but rank 1 on" in logs, logs[-3000:]
    assert not (config.parent / "out" / "checkpoints").exists() or not any(
        (config.parent / "out" / "checkpoints").iterdir()
    )
