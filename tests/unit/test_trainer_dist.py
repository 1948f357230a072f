"""Data-parallel arithmetic and checks that need no torch: each rank's share of a global batch, micro-batches,
torchrun's environment, and what --check refuses for several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from h100fleet.trainer import autotune, config, dist

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"model": {"path": "/srv/model"}, "data": {"path": "/srv/data.jsonl"}}


def cfg(**train) -> config.Config:
    return config.from_dict({**MINIMAL, "train": train}, base_dir="/")


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [
        (4, 1, [(0, 4)]),
        (4, 2, [(0, 2), (2, 4)]),
        (16, 8, [(i * 2, i * 2 + 2) for i in range(8)]),
        # 8 -> 7 GPUs: the global batch stays 16, the first two ranks take one sequence more.
        (16, 7, [(0, 3), (3, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 16)]),
    ],
)
def test_shares_cover_the_global_batch_once_in_order(total, size, expected):
    got = dist.shares(total, size)
    assert got == expected
    assert [i for lo, hi in got for i in range(lo, hi)] == list(range(total))


def test_micro_batches():
    assert dist.micro_batches([5, 6, 7, 8, 9], 2) == [[5, 6], [7, 8], [9]]
    assert dist.micro_batches([5], 4) == [[5]]


class _Device:
    def __init__(self, kind: str):
        self.type = kind


def test_the_plan_is_made_for_the_gpu_with_the_least_usable_memory():
    gib = autotune.GIB
    figures = [
        autotune.Memory(r, f"cuda:{r}", "NVIDIA H100 80GB HBM3", u * gib, 80 * gib)
        for r, u in enumerate([78, 61, 78, 61])
    ]
    least = autotune.smallest(figures)
    assert least.rank == 1  # the lower of the two ranks with 61 GiB
    assert least.describe(4) == (
        "61.0 GiB usable of 80.0 GiB on rank 1's GPU (cuda:1, NVIDIA H100 80GB HBM3), the smallest of 4 GPUs"
    )
    assert figures[0].describe(1) == "78.0 GiB usable of 80.0 GiB on rank 0's GPU (cuda:0, NVIDIA H100 80GB HBM3)"
    with pytest.raises(ValueError, match="no GPU memory figures"):
        autotune.smallest([])
    # The plan carries the figure into checkpoints and the status file, and back on resume.
    plan = autotune.Plan(4, 2, False, "auto", "r", memory=least.to_dict())
    again = autotune.Plan.from_dict(plan.to_dict(), "checkpoint")
    assert again.memory["rank"] == 1 and again.memory["usable_gib"] == 61.0
    assert autotune.Plan.from_dict({k: v for k, v in plan.to_dict().items() if k != "memory"}).memory == {}


def test_memory_is_measured_only_where_the_plan_uses_it():
    assert autotune.measures_memory(cfg(), _Device("cuda"))  # batch_size and checkpointing default to auto
    assert autotune.measures_memory(cfg(batch_size=4), _Device("cuda"))  # checkpointing still auto
    assert not autotune.measures_memory(cfg(batch_size=4, gradient_checkpointing=True), _Device("cuda"))
    assert not autotune.measures_memory(cfg(), _Device("cpu"))


def test_accumulation_and_batches_per_process():
    c = cfg(global_batch_size=16)
    assert [autotune.accumulation(c, 2, world) for world in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert autotune.accumulation(c, 1, 7) == 3  # the largest share (3 sequences) in micro-batches of 1
    assert autotune.allowed_batches(c, 100, 4) == [1, 2, 4]
    assert autotune.allowed_batches(c, 100, 7) == [1, 3]
    assert autotune.accumulation(cfg(gradient_accumulation_steps=3), 2, 4) == 3  # no global batch: as set


def test_world_from_the_torchrun_environment():
    assert dist.from_environment({}) == dist.World(0, 1, 0)
    world = dist.from_environment({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.main, world.distributed) == (5, 8, 1, False, True)
    for environ, message in (
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected an integer (set by torchrun)"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2: expected 0..1 (WORLD_SIZE=2)"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0: expected >= 1"),
    ):
        with pytest.raises(dist.WorldError) as info:
            dist.from_environment(environ)
        assert str(info.value) == message


def test_unsloth_2024_runs_one_gpu_only():
    assert dist.unsloth_runs_one_gpu_only("2024.8")
    assert dist.unsloth_runs_one_gpu_only("2024.12.4")
    assert not dist.unsloth_runs_one_gpu_only("2026.10.9")
    assert not dist.unsloth_runs_one_gpu_only(None)  # not installed: the hf backend


def test_world_issues():
    single = "runs on one GPU only (it pins CUDA_VISIBLE_DEVICES to the first device)"
    issues = [str(i) for i in dist.world_issues(cfg(backend="unsloth"), 8, "2024.8")]
    assert issues == [
        f'train.backend = "unsloth": expected "hf" for 8 processes: this stack\'s unsloth 2024.8 {single}; or run 1 '
        "process, or use a stack with unsloth 2025 or later"
    ]
    assert dist.world_issues(cfg(), 8, "2024.8") == []  # "auto" trains with hf on all 8 (train.auto_backend)
    assert dist.world_issues(cfg(backend="unsloth"), 1, "2024.8") == []
    assert dist.world_issues(cfg(backend="hf"), 8, "2024.8") == []
    assert dist.world_issues(cfg(device="cpu"), 8, "2024.8") == []
    assert dist.world_issues(cfg(), 8, "2026.10.9") == []
    assert [str(i) for i in dist.world_issues(cfg(global_batch_size=4), 8, None)] == [
        "train.global_batch_size = 4: expected at least the world size 8 (a sequence per process)"
    ]


def test_check_with_a_world_size(tmp_path):
    path = tmp_path / "trainer.yml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"global_batch_size": 4, "output_dir": str(tmp_path)}}))
    environ = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    environ.pop("JOURNAL_STREAM", None)
    environ.pop("WORLD_SIZE", None)

    def check(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "h100fleet.trainer", "--config", str(path), "--check", *args],
            capture_output=True,
            text=True,
            env={**environ, **extra},
            check=False,
        )

    assert check("--world-size", "4").returncode == 0
    for result in (check("--world-size", "8"), check(WORLD_SIZE="8")):
        assert result.returncode == 78
        assert "train.global_batch_size = 4: expected at least the world size 8" in result.stderr
        assert "invalid config for 8 processes: exit 78 (not restarted)" in result.stderr


@pytest.mark.parametrize(
    ("cuda", "size", "unsloth", "expected"),
    [
        (True, 1, "2024.8", "unsloth"),
        (True, 8, "2024.8", "hf"),  # the 2024 Unsloth runs on one GPU: hf on all eight, never one GPU
        (True, 8, "2026.10.9", "unsloth"),
        (True, 1, None, "hf"),  # a stack without Unsloth (torch2.6-transformers5.17-py313)
        (False, 1, "2026.10.9", "hf"),
    ],
)
def test_the_automatic_backend(cuda, size, unsloth, expected):
    from h100fleet.trainer import train

    assert train.auto_backend(cuda, dist.World(0, size, 0), unsloth) == expected


def test_every_rank_of_a_job_must_have_the_same_stack_and_config():
    base = dist.agreement(cfg(learning_rate=1e-3), "stack-a", 0)
    same = dist.agreement(cfg(learning_rate=1e-3), "stack-a", 1)
    assert base["config_sha256"] == same["config_sha256"] and same["rank"] == 1
    assert dist.disagreements([base, same]) == []
    assert dist.disagreements([]) == []
    other_lr = {**dist.agreement(cfg(learning_rate=2e-3), "stack-a", 1), "host": "node-b"}
    other_stack = {**dist.agreement(cfg(learning_rate=1e-3), "stack-b", 2), "host": "node-c"}
    issues = dist.disagreements([{**base, "host": "node-a"}, other_lr, other_stack])
    assert [i.field for i in issues] == ["stack", "config"]
    assert str(issues[0]).startswith('stack = "stack-a on rank 0 (node-a)": expected the same stack on every node')
    assert "but rank 2 on node-c (stack-b) differ" in str(issues[0])
    assert "but rank 1 on node-b (" in str(issues[1]) and "node-c" not in str(issues[1])
