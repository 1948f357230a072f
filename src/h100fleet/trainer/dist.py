"""Data-parallel training over the processes that torchrun starts: one per GPU (NCCL), or gloo processes on CPU.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a plain `python -m h100fleet.trainer` is
world size 1 and uses none of this. With N processes:

- Process group: torch.distributed.init_process_group (NCCL on GPUs, each rank on cuda:LOCAL_RANK; gloo on CPU)
  with `train.collective_timeout_s` as the timeout of every collective, so a rank that dies makes the others fail
  within that time (torchrun usually ends them sooner: it stops every worker once one exits non-zero).
- Data: every optimizer step reads the next global-batch sequences of the seeded order (data.Order), exactly as a
  single process would; rank r takes its contiguous share (shares differ by at most one sequence when N does not
  divide the global batch) and splits it into micro-batches of the plan's batch size.
- Gradients: each micro-batch's loss is weighted by its share of the global batch (its size / global batch), so
  the sum over all ranks of the weighted gradients is the gradient of the mean loss over the global batch: the same
  as one process accumulating every micro-batch. One all_reduce (SUM) per step carries the LoRA gradients, the
  step's loss and each rank's stop flag. There is no DistributedDataParallel wrapper: the frozen base weights are
  never broadcast, Unsloth's own gradient checkpointing is left alone, and unequal shares need no special case.
  Every rank then applies the same AdamW update to the same weights.
- Stop: a rank that has seen SIGTERM/SIGINT sets its flag; after the reduction every rank knows whether any rank
  did, so all finish the same step; rank 0 writes the one checkpoint while the others wait; all exit 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from h100fleet.trainer.config import Config, Issue

# NVLink SHARP / multicast stay off in every process the trainer runs on a GPU (the lent machines' NVSwitch set-up
# cannot provide them; NCCL would fail or hang at the first collective).
GPU_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class WorldError(ValueError):
    """The torchrun environment is inconsistent (names the variable)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_environment(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in the environment; world size 1 when it is not set."""
    env = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = env.get(name, "").strip()
        try:
            values[name] = int(text) if text else default
        except ValueError:
            raise WorldError(f"{name}={text!r}: expected an integer (set by torchrun)") from None
    size, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if size < 1:
        raise WorldError(f"WORLD_SIZE={size}: expected >= 1")
    if not 0 <= rank < size:
        raise WorldError(f"RANK={rank}: expected 0..{size - 1} (WORLD_SIZE={size})")
    if local < 0:
        raise WorldError(f"LOCAL_RANK={local}: expected >= 0")
    return World(rank, size, local)


def unsloth_runs_one_gpu_only(version: str | None) -> bool:
    """Unsloth's 2024 releases (2024.8 is the 2024-era stack's) run on one GPU only: on import they set
    CUDA_VISIBLE_DEVICES to the first device or raise "Unsloth currently does not support multi GPU setups"."""
    if not version:
        return False
    year = version.split(".", 1)[0]
    return year.isdigit() and int(year) < 2025


def world_issues(cfg: Config, size: int, unsloth_version: str | None) -> list[Issue]:
    """What the config cannot do with `size` processes (--check --world-size N, and every rank at start)."""
    if size <= 1:
        return []
    issues = []
    if cfg.train.backend == "unsloth" and cfg.train.device != "cpu" and unsloth_runs_one_gpu_only(unsloth_version):
        issues.append(
            Issue(
                "train.backend",
                cfg.train.backend,
                f'"hf" for {size} processes: this stack\'s unsloth {unsloth_version} runs on one GPU only (it pins '
                "CUDA_VISIBLE_DEVICES to the first device); or run 1 process, or use a stack with unsloth 2025 or "
                "later",
            )
        )
    g = cfg.train.global_batch_size
    if g is not None and g < size:
        issues.append(Issue("train.global_batch_size", g, f"at least the world size {size} (a sequence per process)"))
    return issues


def agreement(cfg: Config, stack_id: str, rank: int) -> dict[str, Any]:
    """What every rank of one job must share, with where this rank runs: the stack and the whole config (a digest
    of its fields; the file's path may differ). Nodes configured apart (one flipped to another stack, an
    inventory change that reached one node) would otherwise train one job with two settings."""
    fields = cfg.to_dict()
    fields.pop("source", None)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return {"rank": rank, "host": socket.gethostname(), "stack_id": stack_id, "config_sha256": digest}


def disagreements(peers: list[dict[str, Any]]) -> list[Issue]:
    """The ranks whose stack or config differ from rank 0's (each names the rank and its host), for rank 0."""
    if not peers:
        return []
    first, issues = peers[0], []
    for key, what, shown in (("stack_id", "stack", None), ("config_sha256", "config", 16)):
        odd = [p for p in peers[1:] if p[key] != first[key]]
        if odd:
            where = ", ".join(f"rank {p['rank']} on {p['host']} ({p[key][:shown]})" for p in odd)
            issues.append(
                Issue(
                    what,
                    f"{first[key][:shown]} on rank 0 ({first['host']})",
                    f"the same {what} on every node of the job, but {where} differ: configure the job's nodes "
                    "alike and start them together",
                )
            )
    return issues


def shares(total: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each rank's contiguous share of total items; the first total % size ranks get one more."""
    q, extra = divmod(total, size)
    out, start = [], 0
    for r in range(size):
        end = start + q + (1 if r < extra else 0)
        out.append((start, end))
        start = end
    return out


def micro_batches(indices: list[int], batch: int) -> list[list[int]]:
    return [indices[i : i + batch] for i in range(0, len(indices), batch)]


class Group:
    """The process group of a run (world size 1: every method is a no-op or returns its input)."""

    def __init__(self, torch, world: World, device, timeout_s: float):
        self.torch, self.world, self.device = torch, world, device
        self.timeout_s = timeout_s
        self.dist = None
        if not world.distributed:
            return
        import torch.distributed as dist

        if device.type == "cuda":
            for name, value in GPU_ENV.items():
                os.environ.setdefault(name, value)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if device.type == "cuda":
            kwargs["device_id"] = device  # binds NCCL to this rank's GPU (and makes the first collective eager)
        try:
            dist.init_process_group(**kwargs)
        except TypeError:  # torch < 2.3 has no device_id
            kwargs.pop("device_id", None)
            dist.init_process_group(**kwargs)
        self.dist = dist
        self.backend = backend

    @property
    def comm_device(self):
        return self.device if self.device.type == "cuda" else self.torch.device("cpu")

    def reduce_step(self, params: list, loss_sum, stop: bool) -> tuple[Any, bool]:
        """Sum the weighted gradients, the weighted loss and the stop flags of every rank (one all_reduce).
        Returns (the step's mean loss as a 0-d tensor, whether any rank asked to stop)."""
        torch = self.torch
        if self.dist is None:
            return loss_sum, stop
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat(
            [g.reshape(-1).float() for g in grads]
            + [loss_sum.reshape(1).float(), torch.tensor([1.0 if stop else 0.0], device=loss_sum.device)]
        ).to(self.comm_device)
        self.dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(dtype=g.dtype, device=g.device).clone()
            offset += n
        return flat[offset].to(loss_sum.device), bool(flat[offset + 1].item() > 0)

    def broadcast_params(self, params: list) -> None:
        """Make every rank's trainable weights rank 0's (one broadcast; they are equal already when every rank
        initialised or loaded them alike: this makes sure)."""
        if self.dist is None:
            return
        torch = self.torch
        flat = torch.cat([p.detach().reshape(-1).float() for p in params]).to(self.comm_device)
        self.dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                p.copy_(flat[offset : offset + n].view_as(p).to(dtype=p.dtype, device=p.device))
                offset += n

    def broadcast_object(self, obj: Any) -> Any:
        """rank 0's obj on every rank."""
        if self.dist is None:
            return obj
        box = [obj if self.world.main else None]
        self.dist.broadcast_object_list(box, src=0, device=self.comm_device if self.backend == "nccl" else None)
        return box[0]

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's obj, in rank order, on rank 0 (None elsewhere)."""
        if self.dist is None:
            return [obj]
        out: list[Any] = [None] * self.world.size
        self.dist.all_gather_object(out, obj)
        return out if self.world.main else None

    def barrier(self) -> None:
        if self.dist is not None:
            if self.backend == "nccl":
                self.dist.barrier(device_ids=[self.device.index])
            else:
                self.dist.barrier()

    def close(self) -> None:
        if self.dist is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()
            self.dist = None
