"""The automatic plan's GPU memory is the job's smallest: every rank hands its figure to rank 0 through the job's
process group (gloo on CPU, torchrun, three ranks), rank 0 takes the least and the plan made from it reaches every
rank. The figures are given to each rank (a CPU has no GPU memory to measure); the gathering, the choice and the
sharing are the trainer's own (autotune.job_memory, dist.Group). Marker `torch`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_trainer_torch import env

pytestmark = pytest.mark.torch
GIB = 1 << 30

# One rank of the job: its usable memory from argv (by RANK), the job's smallest from rank 0, then what every rank
# received written to <out>/rank<r>.json.
WORKER = """
import json, sys
import torch
from h100fleet.trainer import autotune, dist

out, usable = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
world = dist.from_environment()
group = dist.Group(torch, world, torch.device("cpu"), 30)
mine = autotune.Memory(world.rank, f"cuda:{world.local_rank}", "test GPU", usable[world.rank], 80 << 30)
smallest = autotune.job_memory(group, mine)
assert (smallest is None) == (world.rank != 0), smallest
shared = group.broadcast_object(
    {"memory": smallest.to_dict(), "described": smallest.describe(world.size)} if smallest else None
)
with open(f"{out}/rank{world.rank}.json", "w") as f:
    json.dump(shared, f)
group.close()
"""


def run_job(tmp_path: Path, usable: list[int]) -> dict[int, dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={len(usable)}"]
    argv += [str(script), str(tmp_path), ",".join(map(str, usable))]
    result = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return {r: json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(len(usable))}


def test_every_rank_gets_the_smallest_gpu_of_the_job(tmp_path):
    got = run_job(tmp_path, [70 * GIB, 75 * GIB, 52 * GIB])
    assert got[0] == got[1] == got[2]
    memory = got[0]["memory"]
    assert (memory["rank"], memory["device"], memory["usable"], memory["usable_gib"]) == (2, "cuda:2", 52 * GIB, 52.0)
    assert got[0]["described"] == (
        "52.0 GiB usable of 80.0 GiB on rank 2's GPU (cuda:2, test GPU), the smallest of 3 GPUs"
    )


def test_a_tie_names_the_lowest_rank(tmp_path):
    got = run_job(tmp_path, [60 * GIB, 50 * GIB, 50 * GIB])
    assert got[2]["memory"]["rank"] == 1
