"""The trainer under torchrun on CPU (gloo, hf backend, the tiny Llama): world sizes 2 and 4 against one process
with the same global batch, SIGTERM to every process, resume at the same and at another world size, and a rank
killed with SIGKILL. Marker `torch` (needs torch, transformers and peft: a stack environment)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_trainer_torch import dataset, env, metrics, model, ok, status, write_config  # noqa: F401 - fixtures

from h100fleet.trainer import checkpoint

pytestmark = pytest.mark.torch
GLOBAL_BATCH = 4
REFERENCE_STEPS = 12
# Different world sizes add the same per-sequence gradients in another order: float32 rounding only.
TOLERANCE = 1e-5


def ddp_config(directory: Path, model: Path, dataset: Path, **train) -> Path:  # noqa: F811 - fixture names
    settings = {
        "max_steps": 1000,
        "batch_size": 1,
        "global_batch_size": GLOBAL_BATCH,
        "collective_timeout_s": 30,
        "checkpoint": {"every_steps": 1000},
        **train,
    }
    return write_config(directory, model, dataset, **settings)


def ddp_env() -> dict[str, str]:
    return {**env(), "H100FLEET_TRAINER_LOG_RANKS": "all"}


def torchrun_argv(n: int, config: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={n}",
        "-m",
        "h100fleet.trainer",
        "--config",
        str(config),
        *args,
    ]


def torchrun(n: int, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        torchrun_argv(n, config, *args), capture_output=True, text=True, env=ddp_env(), timeout=900, check=False
    )


def start_torchrun(n: int, config: Path) -> subprocess.Popen[str]:
    """torchrun in its own session, so that a test can signal it and its workers together as systemd signals a
    unit's control group."""
    return subprocess.Popen(
        torchrun_argv(n, config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ddp_env(),
        start_new_session=True,
    )


def wait_for_steps(config: Path, proc: subprocess.Popen[str], steps: int) -> None:
    deadline = time.monotonic() + 600
    while len(metrics(config)) < steps and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-4000:]


def losses(config: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(config)}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * abs(b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model, dataset) -> dict[int, Path]:  # noqa: F811 - fixture names
    """The same config trained REFERENCE_STEPS steps by 1 process (no torchrun), 2 and 4 processes."""
    root = tmp_path_factory.mktemp("reference")
    configs = {n: ddp_config(root / f"n{n}", model, dataset) for n in (1, 2, 4)}
    for n, config in configs.items():
        if n == 1:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "h100fleet.trainer",
                    "--config",
                    str(config),
                    "--stop-after",
                    str(REFERENCE_STEPS),
                ],
                capture_output=True,
                text=True,
                env=env(),
                timeout=900,
                check=False,
            )
        else:
            result = torchrun(n, config, "--stop-after", str(REFERENCE_STEPS))
        ok(result)
    return configs


def test_world_sizes_2_and_4_give_the_losses_of_one_process(reference):
    one = losses(reference[1])
    assert sorted(one) == list(range(1, REFERENCE_STEPS + 1))
    for n in (2, 4):
        got = losses(reference[n])
        assert sorted(got) == sorted(one)
        assert all(close(got[s], one[s]) for s in one), (n, got, one)
        st = status(reference[n])
        assert (st["world_size"], st["global_batch_size"], st["gradient_accumulation_steps"]) == (n, 4, 4 // n)
        assert st["samples_seen"] == GLOBAL_BATCH * REFERENCE_STEPS
        assert [r["rank"] for r in st["ranks"]] == list(range(n))
        assert {r["host"] for r in st["ranks"]} == {socket.gethostname()}
        # The whole job's tokens (packed sequences of 64), not rank 0's share.
        assert all(r["tokens"] == GLOBAL_BATCH * 64 for r in metrics(reference[n]))
        found = checkpoint.latest_valid(reference[n].parent / "out" / "checkpoints")
        assert found.step == REFERENCE_STEPS and found.manifest["samples_seen"] == GLOBAL_BATCH * REFERENCE_STEPS
        assert (found.manifest["plan"]["world_size"], found.manifest["plan"]["global_batch_size"]) == (n, 4)


def test_sigterm_stops_every_rank_after_one_step_then_resume_at_4_and_at_2(tmp_path, reference, model, dataset):  # noqa: F811
    config = ddp_config(tmp_path / "run", model, dataset)
    proc = start_torchrun(4, config)
    wait_for_steps(config, proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)  # torchrun and every rank, as systemd stops a unit
    _stdout, stderr = proc.communicate(timeout=120)
    step = status(config)["step"]
    assert status(config)["state"] == "stopped" and 2 <= step <= REFERENCE_STEPS - 2, stderr[-4000:]
    # Every rank finished the same step and exited cleanly; rank 0 wrote the one checkpoint.
    ckdir = config.parent / "out" / "checkpoints"
    assert f"SIGTERM: stopping after step {step}" in stderr
    for rank in (0, 1, 2, 3):
        prefix = f"rank {rank}: " if rank else ""
        assert f"{prefix}stopped at step {step}; checkpoint {ckdir / checkpoint.name_for(step)}" in stderr
    assert "failed (exitcode" not in stderr, stderr[-4000:]
    assert [p.name for p in ckdir.iterdir()] == [checkpoint.name_for(step)]
    assert checkpoint.latest_valid(ckdir).manifest["samples_seen"] == GLOBAL_BATCH * step

    # Same world size: exactly the losses of the uninterrupted run.
    log = ok(torchrun(4, config, "--stop-after", str(step + 1)))
    assert f"resumed from {ckdir / checkpoint.name_for(step)}: step {step}, sample position {4 * step}" in log
    assert losses(config)[step + 1] == losses(reference[4])[step + 1]

    # 4 -> 2 processes: the same global batch from the same sample position.
    log = ok(torchrun(2, config, "--stop-after", str(step + 2)))
    assert f"resuming a run of 4 processes with 2: global batch 4, sample position {4 * (step + 1)}" in log
    assert close(losses(config)[step + 2], losses(reference[4])[step + 2])
    st = status(config)
    assert (st["world_size"], st["samples_seen"], st["gradient_accumulation_steps"]) == (2, 4 * (step + 2), 2)


def rank_pid(parent: int, rank: int) -> int:
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker with RANK={rank} under {parent}")


def test_a_killed_rank_ends_the_job_non_zero_within_the_collective_timeout(tmp_path, model, dataset):  # noqa: F811
    config = ddp_config(tmp_path / "run", model, dataset, checkpoint={"every_steps": 2})
    proc = start_torchrun(2, config)
    wait_for_steps(config, proc, 4)  # step 3 began after the checkpoint of step 2 was complete
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    _stdout, stderr = proc.communicate(timeout=300)
    seconds = time.monotonic() - killed
    assert proc.returncode != 0, stderr[-3000:]
    # The bound, not a speed: the collective timeout (30 s), plus slack for a loaded machine.
    assert seconds < 30 + 30, f"the job took {seconds:.0f}s to end after a rank was killed"
    assert "exitcode  : -9" in stderr
    # What is left is the last good checkpoint, which a restart resumes from.
    found = checkpoint.latest_valid(config.parent / "out" / "checkpoints")
    assert found is not None and found.step >= 2 and found.step % 2 == 0
