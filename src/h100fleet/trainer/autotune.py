"""The micro-batch and gradient-checkpointing setting, chosen for the GPU when the config says "auto".

Rule (CUDA; docs/trainer.md has the same text):

1. For each checkpointing setting still open (both when gradient_checkpointing is "auto"), run one forward and
   backward pass at micro-batch 1 and at 2 on real samples and read the peak of allocated GPU memory. Memory is
   modelled as peak(b) = a + s * b (fixed part a: weights, LoRA, workspace; s: activations per sequence), plus the
   AdamW state (two copies of the trainable weights), which the passes do not allocate.
2. The largest micro-batch b <= auto_max_batch_size with a + s * b + AdamW <= auto_memory_fraction * the usable
   memory of the job's smallest GPU (a divisor of global_batch_size when that is set) is that setting's candidate;
   a setting whose batch-1 pass runs out of memory has none. Usable memory is what a rank can still allocate on its
   GPU after loading the model (free memory plus what torch's allocator already holds); every rank measures its
   own, rank 0 takes the smallest (another process on one GPU, a smaller card) and plans for it alone, and every
   rank trains with that plan.
3. Each candidate is timed (one warm-up pass, then the median of two forward+backward passes, cuda-synchronised);
   the one with the most tokens per second wins. A candidate that runs out of memory is retried one sequence
   smaller.

An explicit batch_size is kept (the timing then only decides checkpointing); explicit settings for both skip all
of this. On CPU there is no memory model: batch 1 and no checkpointing unless the config sets them.

The result is cached in <output_dir>/autotune.json, keyed by the GPU, the model, the stack and the settings that
matter (and the budget in whole GiB), so a restart does not measure again; a resumed run takes the plan stored in
its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from h100fleet.trainer import logs
from h100fleet.trainer.checkpoint import write_json_atomic

log = logs.get("autotune")
GIB = 1 << 30


@dataclass
class Plan:
    batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    source: str  # config, auto, auto-cache, checkpoint
    reason: str = ""
    measurements: list[dict[str, Any]] = field(default_factory=list)
    global_batch_size: int = 0  # sequences per optimizer step over all processes; 0: batch x accumulation
    world_size: int = 1  # processes (torchrun's WORLD_SIZE) the plan was made for
    memory: dict[str, Any] = field(default_factory=dict)  # the smallest GPU's Memory.to_dict() (auto on CUDA)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | None = None) -> Plan:
        return cls(
            batch_size=int(d["batch_size"]),
            gradient_accumulation_steps=int(d["gradient_accumulation_steps"]),
            gradient_checkpointing=bool(d["gradient_checkpointing"]),
            source=source or d.get("source", "checkpoint"),
            reason=d.get("reason", ""),
            measurements=list(d.get("measurements", [])),
            global_batch_size=int(d.get("global_batch_size") or 0),
            world_size=int(d.get("world_size") or 1),
            memory=dict(d.get("memory") or {}),
        )


@dataclass(frozen=True)
class Memory:
    """GPU memory one rank can use: `usable` bytes (free on the device plus what this process's allocator holds,
    which it can reuse) of the card's `total`."""

    rank: int
    device: str
    gpu: str
    usable: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable_gib": round(self.usable / GIB, 2), "total_gib": round(self.total / GIB, 2)}

    def describe(self, world: int) -> str:
        where = f"rank {self.rank}'s GPU ({self.device}, {self.gpu})"
        of = f", the smallest of {world} GPUs" if world > 1 else ""
        return f"{self.usable / GIB:.1f} GiB usable of {self.total / GIB:.1f} GiB on {where}{of}"


def device_memory(torch, device, rank: int) -> Memory:
    """This rank's Memory on its CUDA device (after the model is loaded)."""
    free, total = torch.cuda.mem_get_info(device)
    return Memory(
        rank, str(device), torch.cuda.get_device_name(device), free + torch.cuda.memory_reserved(device), total
    )


def smallest(figures: list[Memory]) -> Memory:
    """The rank with the least usable memory (the lowest such rank on a tie)."""
    if not figures:
        raise ValueError("no GPU memory figures to choose from")
    return min(figures, key=lambda m: (m.usable, m.rank))


def measures_memory(cfg, device) -> bool:
    """Whether choose() plans from GPU memory (an automatic setting on CUDA): then every rank measures its GPU."""
    return device.type == "cuda" and "auto" in (cfg.train.batch_size, cfg.train.gradient_checkpointing)


def job_memory(group, mine: Memory) -> Memory | None:
    """Every rank hands its Memory to rank 0 (one all_gather through the job's process group): the smallest on
    rank 0, None on the others. Every rank must call it."""
    figures = group.gather_object(mine)
    return smallest(figures) if figures is not None else None


def share(cfg, world: int) -> int | None:
    """Sequences per step of the largest per-process share of train.global_batch_size (None when unset)."""
    g = cfg.train.global_batch_size
    return -(-g // world) if g else None


def accumulation(cfg, batch: int, world: int = 1) -> int:
    """Micro-batches per optimizer step of one process."""
    if cfg.train.global_batch_size:
        return max(1, -(-share(cfg, world) // batch))
    return cfg.train.gradient_accumulation_steps


def allowed_batches(cfg, limit: int, world: int = 1) -> list[int]:
    top = min(limit, cfg.train.auto_max_batch_size)
    mine = share(cfg, world)
    if mine:
        top = min(top, mine)
        return [b for b in range(1, top + 1) if mine % b == 0]
    return list(range(1, top + 1))


def fit_batch(a: float, s: float, extra: float, budget: float, options: list[int]) -> int | None:
    """Largest option b with a + s * b + extra <= budget."""
    fitting = [b for b in options if a + s * b + extra <= budget]
    return max(fitting) if fitting else None


def cache_key(cfg, gpu: dict[str, Any], backend: str, versions: dict[str, str]) -> dict[str, Any]:
    model_config = Path(cfg.model.path) / "config.json"
    digest = hashlib.sha256(model_config.read_bytes()).hexdigest() if model_config.is_file() else cfg.model.path
    return {
        "gpu": gpu,
        "model_config_sha256": digest,
        "backend": backend,
        "versions": versions,
        "max_seq_length": cfg.data.max_seq_length,
        "packing": cfg.data.packing,
        "lora": {"r": cfg.lora.r, "target_modules": list(cfg.lora.target_modules)},
        "batch_size": cfg.train.batch_size,
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "global_batch_size": cfg.train.global_batch_size,
        "auto_max_batch_size": cfg.train.auto_max_batch_size,
        "auto_memory_fraction": cfg.train.auto_memory_fraction,
    }


def choose(
    cfg, loaded, batches, cache_path: Path, versions: dict[str, str], *, world: int = 1, memory: Memory | None = None
) -> Plan:
    """The plan for this run (see the module docstring). batches(b) returns a training batch of b sequences;
    memory: the job's smallest GPU (job_memory); None: this process's own GPU."""
    b_cfg, gc_cfg = cfg.train.batch_size, cfg.train.gradient_checkpointing
    if b_cfg != "auto" and gc_cfg != "auto":
        return Plan(
            b_cfg,
            accumulation(cfg, b_cfg, world),
            gc_cfg,
            "config",
            "batch_size and gradient_checkpointing set",
            world_size=world,
        )
    if loaded.device.type != "cuda":
        b = 1 if b_cfg == "auto" else b_cfg
        gc = False if gc_cfg == "auto" else gc_cfg
        return Plan(
            b,
            accumulation(cfg, b, world),
            gc,
            "auto",
            "CPU: no memory model, batch 1 and no checkpointing",
            world_size=world,
        )

    import torch

    props = torch.cuda.get_device_properties(loaded.device)
    memory = memory or device_memory(torch, loaded.device, 0)
    budget = cfg.train.auto_memory_fraction * memory.usable
    key = cache_key(cfg, {"name": props.name, "total_memory": props.total_memory}, loaded.backend, versions)
    key["world_size"] = world
    key["memory_budget_gib"] = int(budget // GIB)
    cached = _cached(cache_path, key)
    if cached:
        return cached
    rng = _rng_state(torch)
    measurements: list[dict[str, Any]] = []
    candidates = [
        (gc, b)
        for gc in ([False, True] if gc_cfg == "auto" else [gc_cfg])
        if (b := _candidate(cfg, torch, loaded, batches, gc=gc, budget=budget, measurements=measurements, world=world))
    ]
    best = _fastest(cfg, torch, loaded, batches, candidates=candidates, measurements=measurements, world=world)
    _set_rng_state(torch, rng)
    torch.cuda.empty_cache()
    if best is None:
        raise RuntimeError("automatic batch choice: not even batch 1 fits in GPU memory")
    tps, gc, b = best
    plan = Plan(
        b,
        accumulation(cfg, b, world),
        gc,
        "auto",
        f"fastest measured: {tps:.0f} tokens/s of {len(candidates)} candidate(s), memory budget "
        f"{budget / GIB:.1f} GiB: {cfg.train.auto_memory_fraction:g} x {memory.describe(world)}",
        measurements,
        world_size=world,
        memory=memory.to_dict(),
    )
    try:
        write_json_atomic(Path(cache_path), {"key": key, "plan": plan.to_dict()})
    except OSError as exc:
        log.warning("could not cache the plan in %s: %s", cache_path, exc)
    return plan


def _cached(cache_path: Path, key: dict[str, Any]) -> Plan | None:
    try:
        cached = json.loads(Path(cache_path).read_text())
        if cached.get("key") == key:
            plan = Plan.from_dict(cached["plan"], source="auto-cache")
            log.info("plan from %s: %s", cache_path, describe(plan))
            return plan
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _candidate(cfg, torch, loaded, batches, *, gc: bool, budget: float, measurements: list, world: int) -> int | None:
    """The largest micro-batch predicted to fit with this checkpointing setting (None: not even 1)."""
    b_cfg = cfg.train.batch_size
    adam = 2 * sum(p.numel() * p.element_size() for p in loaded.trainable)
    loaded.set_gradient_checkpointing(gc)
    p1 = _measure(torch, loaded, batches, 1)
    p2 = _measure(torch, loaded, batches, 2) if p1["ok"] else {"batch": 2, "ok": False}
    measurements += [dict(p1, gradient_checkpointing=gc), dict(p2, gradient_checkpointing=gc)]
    if not p1["ok"]:
        log.info("gradient_checkpointing=%s: batch 1 does not fit (%s)", gc, p1.get("error"))
        return None
    options = [b_cfg] if b_cfg != "auto" else allowed_batches(cfg, limit=10**6, world=world)
    if p2["ok"]:
        s = max(p2["peak"] - p1["peak"], 1)
        a = p1["peak"] - s
        b = fit_batch(a, s, adam, budget, options)
    else:
        s = math.inf
        b = 1 if 1 in options else None
    if b_cfg != "auto" and b is None:
        b = b_cfg  # an explicit batch is kept even if predicted not to fit; the timing finds out
    log.info(
        "gradient_checkpointing=%s: peak %.1f GiB at batch 1, %.1f GiB per extra sequence; candidate batch %s",
        gc,
        p1["peak"] / GIB,
        s / GIB,
        b,
    )
    return b


def _fastest(
    cfg, torch, loaded, batches, *, candidates, measurements: list, world: int
) -> tuple[float, bool, int] | None:
    """(tokens/s, checkpointing, batch) of the fastest candidate; one that runs out of memory is retried smaller."""
    best = None
    for gc, first in candidates:
        loaded.set_gradient_checkpointing(gc)
        b = first
        while b >= 1:
            t = _time(torch, loaded, batches, b)
            measurements.append(dict(t, gradient_checkpointing=gc, timed=True))
            if t["ok"]:
                tps = b * cfg.data.max_seq_length / t["seconds"]
                log.info("gradient_checkpointing=%s batch %d: %.0f tokens/s", gc, b, tps)
                if best is None or tps > best[0]:
                    best = (tps, gc, b)
                break
            if cfg.train.batch_size != "auto":
                break
            b = max(allowed_batches(cfg, b - 1, world), default=0)
    return best


def describe(plan: Plan) -> str:
    return (
        f"batch_size={plan.batch_size} gradient_accumulation_steps={plan.gradient_accumulation_steps} "
        f"gradient_checkpointing={plan.gradient_checkpointing} ({plan.source}: {plan.reason})"
    )


def _rng_state(torch) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all()


def _set_rng_state(torch, state: tuple) -> None:
    torch.set_rng_state(state[0])
    torch.cuda.set_rng_state_all(state[1])


def _pass(torch, loaded, batches, b: int) -> None:
    batch = batches(b)
    out = loaded.forward(batch)
    out.loss.backward()
    del out, batch


def _zero(loaded) -> None:
    for p in loaded.trainable:
        p.grad = None


def _measure(torch, loaded, batches, b: int) -> dict[str, Any]:
    """Peak allocated bytes of one forward+backward pass at micro-batch b."""
    _zero(loaded)
    torch.cuda.synchronize(loaded.device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(loaded.device)
    try:
        _pass(torch, loaded, batches, b)
        torch.cuda.synchronize(loaded.device)
    except torch.cuda.OutOfMemoryError as exc:
        _zero(loaded)
        torch.cuda.empty_cache()
        return {"batch": b, "ok": False, "error": str(exc).splitlines()[0][:200]}
    peak = torch.cuda.max_memory_allocated(loaded.device)
    _zero(loaded)
    return {"batch": b, "ok": True, "peak": peak, "peak_gib": round(peak / GIB, 2)}


def _time(torch, loaded, batches, b: int, *, warmup: int = 1, timed: int = 2) -> dict[str, Any]:
    times = []
    try:
        for i in range(warmup + timed):
            torch.cuda.synchronize(loaded.device)
            start = time.perf_counter()
            _pass(torch, loaded, batches, b)
            torch.cuda.synchronize(loaded.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
            _zero(loaded)
    except torch.cuda.OutOfMemoryError as exc:
        _zero(loaded)
        torch.cuda.empty_cache()
        return {"batch": b, "ok": False, "error": str(exc).splitlines()[0][:200]}
    return {"batch": b, "ok": True, "seconds": statistics.median(times)}
