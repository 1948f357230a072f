"""One training run: resume or start, train to the end or until stopped, checkpoint, save the final adapter.

The loop is the trainer's own (no transformers Trainer / TRL SFTTrainer: their APIs differ between the two shipped
stacks, and a bare loop is what the throughput benchmark compares against): AdamW on the LoRA weights, linear warm-up
then linear/cosine/constant decay (LambdaLR), gradient clipping, gradient accumulation.
"""

from __future__ import annotations

import fcntl
import math
import os
import random
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from h100fleet.trainer import autotune, backends, checkpoint, data, dist, logs, resume
from h100fleet.trainer.config import Config, ConfigError, Issue, check_paths
from h100fleet.trainer.progress import Progress, now_iso_precise
from h100fleet.trainer.stop import StopRequest

log = logs.get()
FINAL = "final"


class Schedule:
    """Learning-rate factor after `step` optimizer steps: warm-up (step+1)/(warmup+1), then linear to 0, cosine to
    0 or constant at the end of total steps. A callable object (not a lambda) so LambdaLR can save its state."""

    def __init__(self, kind: str, warmup: int, total: int):
        self.kind, self.warmup, self.total = kind, warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)


def total_steps(cfg: Config, samples: int, global_batch: int) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * samples / global_batch))


def _lock(output_dir: str):
    path = Path(output_dir) / ".lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open (and locked) for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        other = handle.read().strip() or "?"
        raise RuntimeError(f"{output_dir} is in use by another trainer (pid {other}); not starting a second") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _finished(cfg: Config, found: checkpoint.Found | None) -> bool:
    if found is None or not found.manifest.get("finished"):
        return False
    manifest, _ = checkpoint.verify(Path(cfg.train.output_dir) / FINAL)
    return manifest is not None and manifest.get("step") == found.step


def auto_backend(cuda: bool, world: dist.World, unsloth_version: str | None) -> str:
    """train.backend "auto": unsloth on a GPU where the stack has an Unsloth that can train this world size (the
    2024 releases run on one GPU only), else hf: a stack without Unsloth, the CPU, or several processes on a 2024
    Unsloth train with the hf backend on every GPU, never on fewer GPUs."""
    if not cuda or unsloth_version is None:
        return "hf"
    return "hf" if world.distributed and dist.unsloth_runs_one_gpu_only(unsloth_version) else "unsloth"


def resolve_device(cfg: Config, torch, world: dist.World | None = None) -> tuple[Any, str, Any]:
    """(device, backend, dtype) of this process: cuda:LOCAL_RANK under torchrun (cuda:0 alone), else the CPU."""
    world = world or dist.World()
    cuda = torch.cuda.is_available()
    if cfg.train.device == "cuda" and not cuda:
        raise RuntimeError("train.device is cuda but torch sees no CUDA device (driver not loaded? GPU lost?)")
    on_gpu = cfg.train.device == "cuda" or (cfg.train.device == "auto" and cuda)
    device = _gpu(torch, world.local_rank) if on_gpu else torch.device("cpu")
    backend = cfg.train.backend
    if backend == "auto":
        backend = auto_backend(device.type == "cuda", world, backends.installed_version("unsloth"))
    if backend == "unsloth" and device.type != "cuda":
        raise RuntimeError("train.backend is unsloth but torch sees no CUDA device")
    if cfg.train.dtype == "float32":
        dtype = torch.float32
    elif cfg.train.dtype == "bfloat16" or device.type == "cuda":
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    return device, backend, dtype


def _gpu(torch, index: int):
    """cuda:index, checked: a rank whose GPU is missing or broken fails its start with a message naming it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "(all)")
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(
            f"LOCAL_RANK {index} needs GPU {index}, but torch sees {count} (CUDA_VISIBLE_DEVICES={visible}): start "
            "one process per visible GPU"
        )
    try:
        torch.cuda.set_device(index)
        torch.zeros(1, device=f"cuda:{index}").add_(1).item()
    except Exception as exc:
        raise RuntimeError(f"GPU {index} (CUDA_VISIBLE_DEVICES={visible}) cannot be used: {exc}") from exc
    return torch.device("cuda", index)


def _seed_everything(seed: int, torch) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def _rng_capture(torch, directory: Path) -> None:
    import json

    torch.save(
        {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        directory / "rng.pt",
    )
    state: dict[str, Any] = {"python": _to_lists(random.getstate())}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    (directory / "rng.json").write_text(json.dumps(state))


def _rank_rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


def _rng_state(torch) -> dict[str, Any]:
    """This process's RNG states as plain tensors and lists (what torch.load(weights_only=True) reads back)."""
    state: dict[str, Any] = {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "python": _to_lists(random.getstate()),
    }
    return state


def _rng_set(torch, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x):
    return [_to_lists(i) for i in x] if isinstance(x, (list, tuple)) else x


def _to_tuples(x):
    return tuple(_to_tuples(i) for i in x) if isinstance(x, list) else x


def _rng_restore(torch, directory: Path) -> None:
    import json

    saved = torch.load(directory / "rng.pt", weights_only=True)
    torch.set_rng_state(saved["cpu"])
    if saved["cuda"] and torch.cuda.is_available() and len(saved["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(saved["cuda"])
    state = json.loads((directory / "rng.json").read_text())
    random.setstate(_to_tuples(state["python"]))
    if "numpy" in state:
        try:
            import numpy as np

            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        except ImportError:
            pass


def prepare_tokenizer(cfg: Config, tokenizer) -> None:
    if cfg.model.chat_template:
        tokenizer.chat_template = Path(cfg.model.chat_template).read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            [Issue("model.chat_template", None, f"a Jinja file (the tokenizer in {cfg.model.path} has none)")]
        )


def pad_token_id(tokenizer) -> int:
    """What padding and the cache key use: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def build_samples(cfg: Config, tokenizer, records: data.Records, save: bool = True) -> data.Samples:
    """The training sequences: from the data cache when this data, tokenizer and these settings were tokenized
    before (a restart: about 10 s for 8 M tokens with Llama 3's tokenizer), else tokenized and then cached (unless
    save is false: the ranks other than 0, which read the cache rank 0 has just written)."""
    if not cfg.data.cache:
        return tokenize_samples(cfg, tokenizer, records)
    started = time.monotonic()
    pad_id = pad_token_id(tokenizer)
    settings = {
        "max_seq_length": cfg.data.max_seq_length,
        "packing": cfg.data.packing,
        "loss_on": cfg.data.loss_on,
        "shuffle": cfg.data.shuffle,
        "seed": cfg.data_seed,
        "pad_id": pad_id,
    }
    key = data.samples_key(records.sha256, data.tokenizer_fingerprint(tokenizer), settings)
    cache_dir = Path(cfg.train.output_dir) / "data-cache"
    path = cache_dir / f"samples-{key[:16]}.bin"
    samples = data.load_samples(path, key)
    if samples is not None:
        log.info(
            "data: %d %s sequences of %d tokens from the cache (%s) in %.1fs",
            samples.n,
            "packed" if samples.packed else "padded",
            samples.seq_len,
            path.name,
            time.monotonic() - started,
        )
        return samples
    samples = tokenize_samples(cfg, tokenizer, records)
    if not save:
        return samples
    try:
        data.save_samples(path, samples, key)
        for old in cache_dir.glob("samples-*.bin"):  # one data set at a time: older ones are never read again
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not cache the tokenized data in %s: %s", cache_dir, exc)
    return samples


def tokenize_samples(cfg: Config, tokenizer, records: data.Records) -> data.Samples:
    started = time.monotonic()
    conversations = records.conversations
    if cfg.data.shuffle:
        conversations = data.shuffled(conversations, cfg.data_seed)
    examples, stats = data.encode(conversations, tokenizer, cfg.data.max_seq_length, cfg.data.loss_on)
    if not examples:
        raise data.DataError(f"{cfg.data.path}: no example has a token that carries loss")
    pad_id = pad_token_id(tokenizer)
    build = data.pack if cfg.data.packing else data.pad
    samples = build(examples, cfg.data.max_seq_length, pad_id)
    samples.info.update(stats.__dict__)
    if stats.full_loss_fallback and cfg.data.loss_on == "assistant":
        log.warning(
            "%d of %d conversations train on all tokens: the chat template is not prefix-stable, so assistant "
            "turns could not be located",
            stats.full_loss_fallback,
            len(conversations),
        )
    log.info(
        "data: %d records -> %d examples (%d tokens, %d truncated, %d without loss) -> %d %s sequences of %d "
        "tokens in %.1fs",
        len(conversations),
        stats.examples,
        stats.tokens,
        stats.truncated,
        stats.dropped_no_labels,
        samples.n,
        "packed" if samples.packed else "padded",
        samples.seq_len,
        time.monotonic() - started,
    )
    return samples


class Batches:
    """Training batches from Samples: int32 rows gathered on the CPU, moved to the device, widened there."""

    def __init__(self, torch, samples: data.Samples, device):
        self.torch, self.device, self.samples = torch, device, samples
        n, seq = samples.n, samples.seq_len
        self.ids = torch.frombuffer(samples.input_ids, dtype=torch.int32).view(n, seq)
        self.labels = torch.frombuffer(samples.labels, dtype=torch.int32).view(n, seq)
        self.lengths = torch.frombuffer(samples.lengths, dtype=torch.int32)
        self.padded = samples.padded

    def take(self, indices: list[int]) -> tuple[dict[str, Any], int]:
        torch = self.torch
        idx = torch.tensor(indices, dtype=torch.long)
        ids = self.ids[idx].to(self.device, non_blocking=True).long()
        labels = self.labels[idx].to(self.device, non_blocking=True).long()
        batch = {"input_ids": ids, "labels": labels}
        lengths = self.lengths[idx]
        tokens = int(lengths.sum())
        if self.padded:
            positions = torch.arange(self.samples.seq_len)
            batch["attention_mask"] = (positions[None, :] < lengths[:, None]).long().to(self.device)
        return batch, tokens

    def first(self, b: int) -> dict[str, Any]:
        return self.take([i % self.samples.n for i in range(b)])[0]


def run(cfg: Config, stop: StopRequest, stop_after: int | None = None) -> int:
    """Train as configured; returns the exit code (0: finished or stopped). Raises ConfigError, DataError or
    anything else for the caller to map to exit codes."""
    return Run(cfg, stop, stop_after).main()


class Run:
    """One process's part of a run (world size N under torchrun, 1 otherwise): start (or resume), train, stop or
    finish. Rank 0 alone writes checkpoints, the status file, metrics and TensorBoard events. Attributes are set
    phase by phase."""

    def __init__(self, cfg: Config, stop: StopRequest, stop_after: int | None):
        self.cfg, self.stop, self.stop_after = cfg, stop, stop_after
        self.world = dist.from_environment()
        self.main_rank = self.world.main
        self.stack_id = cfg.resolved_stack_id()
        self.ckdir = Path(cfg.checkpoint.dir)
        self.step = self.position = 0
        self.saved_step = 0
        self.agreed_stop = False
        self.last_checkpoint: dict[str, Any] | None = None
        self.identity = resume.identity(cfg)  # what the checkpoints record, for the next start to compare
        self.group = dist.Group(None, dist.World(), None, 0)  # a no-op until start_group() (world size > 1)
        self.progress = Progress(
            cfg,
            {
                "stack_id": self.stack_id,
                "config": cfg.source,
                "output_dir": cfg.train.output_dir,
                "world_size": self.world.size,
            },
            enabled=self.main_rank,
        )

    def main(self) -> int:
        self.stop.set_immediate(True)  # nothing to save until the loop starts
        if self.world.distributed:
            issues = dist.world_issues(self.cfg, self.world.size, backends.installed_version("unsloth"))
            if issues:
                raise ConfigError(issues)
            self.start_group()
        # Every rank's stack and config to rank 0, which refuses a job whose nodes differ (exit 78, all ranks).
        peers = self.group.gather_object(dist.agreement(self.cfg, self.stack_id, self.world.rank))
        # Rank 0 looks at the output directory (and moves corrupt checkpoints aside); every rank gets its verdict.
        outcome = self.group.broadcast_object(self.prepare(peers) if self.main_rank else None)
        if outcome["error"] is not None:
            # Every rank has the verdict before any exits: a node whose ranks are gone (with the rendezvous
            # store its launcher serves) must not leave another node's ranks waiting on them.
            self.group.barrier()
            self.group.close()
            kind, payload = outcome["error"]
            if kind == "config":
                raise ConfigError(payload)
            raise RuntimeError(payload if self.main_rank else f"rank 0: {payload}")
        self.found = found = None
        if outcome["found"]:
            found = self.found = checkpoint.Found(Path(outcome["found"][0]), outcome["found"][1])
        if found and found.manifest.get("finished"):
            self.stop.set_immediate(False)
            if self.main_rank and not _finished(self.cfg, found):
                _final_from_checkpoint(self.cfg, found)
            log.info("training already finished at step %d; final adapter in %s", found.step, _final_dir(self.cfg))
            self.progress.write(state="finished", step=found.step, total_steps=found.manifest["total_steps"])
            self.group.close()
            return 0
        self.progress.write(state="starting", step=found.step if found else 0)
        self.records = data.read_jsonl(self.cfg.data.path, self.cfg.data.format)  # before the model: fail fast
        log.info(
            "starting: stack %s, config %s, %s%s",
            self.stack_id,
            self.cfg.source,
            f"resuming from {found.path}" if found else "no checkpoint: from the start",
            f", {self.world.size} processes" if self.world.distributed else "",
        )
        self.load()
        self.make_plan()
        self.make_optimizer()
        if found:
            self.restore()
        self.group.broadcast_params(self.loaded.trainable)
        self.train()
        self.progress.close()
        self.group.close()
        return 0

    def prepare(self, peers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Rank 0 (or the only process): every rank's stack and config alike, paths, the lock, the checkpoint to
        resume and whether the config can."""
        cfg = self.cfg
        issues = dist.disagreements(peers or [])
        if issues:
            return {"error": ("config", issues), "found": None}
        try:
            check_paths(cfg)
            self.lock = _lock(cfg.train.output_dir)  # held until the process exits
            for path in checkpoint.clean_partial(self.ckdir):
                log.warning("removed %s, left behind by an interrupted checkpoint write", path)
            found = checkpoint.latest_valid(self.ckdir)
        except ConfigError as exc:
            return {"error": ("config", exc.issues), "found": None}
        except (RuntimeError, OSError) as exc:
            if not self.world.distributed:
                raise
            return {"error": ("runtime", str(exc)), "found": None}
        if found:
            issues = resume.conflicts(cfg, found)
            if issues:  # exit 78, not restarted: a restart would fail the same way
                return {"error": ("config", issues), "found": None}
        else:
            strays = resume.stray(cfg)
            if strays:
                message = resume.stray_message(cfg, strays)
                log.warning("%s", message)
                self.progress.update(warning=message)
        return {"error": None, "found": (str(found.path), found.manifest) if found else None}

    def start_group(self) -> None:
        """torchrun's world: import torch, take this rank's device, join the process group."""
        backends.prepare_environment(self.cfg.model.allow_download, str(Path(self.cfg.train.output_dir) / "cache"))
        import torch

        self.torch = torch
        self.device, self.backend, self.dtype = resolve_device(self.cfg, torch, self.world)
        self.group = dist.Group(torch, self.world, self.device, self.cfg.train.collective_timeout_s)
        log.info(
            "rank %d of %d on %s (%s backend, collective timeout %gs)",
            self.world.rank,
            self.world.size,
            self.device,
            self.group.backend,
            self.cfg.train.collective_timeout_s,
        )

    def load(self) -> None:
        cfg, found = self.cfg, self.found
        if not self.world.distributed:
            backends.prepare_environment(cfg.model.allow_download, str(Path(cfg.train.output_dir) / "cache"))
            import torch

            self.torch = torch
            self.device, self.backend, self.dtype = resolve_device(cfg, torch, self.world)
        torch, dtype = self.torch, self.dtype
        if found and found.manifest.get("backend") not in (None, self.backend):
            log.warning("checkpoint written by backend %s, continuing with %s", found.manifest["backend"], self.backend)
        if self.backend == "unsloth" and cfg.lora.dropout:
            log.warning("lora.dropout %s > 0: unsloth 2024.x then skips its fast LoRA kernels", cfg.lora.dropout)
        _seed_everything(cfg.train.seed, torch)  # the same LoRA initialisation on every rank
        self.resumed_plan = autotune.Plan.from_dict(found.manifest["plan"], "checkpoint") if found else None
        gc = self.resumed_plan.gradient_checkpointing if found else cfg.train.gradient_checkpointing is not False
        started = time.monotonic()
        self.loaded = backends.load(cfg, self.backend, self.device, dtype, gc)
        if self.world.rank:  # dropout differs between ranks (rank 0 keeps the single-process stream)
            torch.manual_seed(cfg.train.seed + self.world.rank)
        self.versions = backends.stack_versions()
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        log.info(
            "loaded %s with backend %s on %s (%s, %s) in %.1fs; %d trainable parameters",
            cfg.model.path,
            self.backend,
            gpu or self.device.type,
            str(dtype).replace("torch.", ""),
            " ".join(f"{k} {v}" for k, v in self.versions.items()),
            time.monotonic() - started,
            sum(p.numel() for p in self.loaded.trainable),
        )
        ranks = self.group.gather_object(
            {"rank": self.world.rank, "host": socket.gethostname(), "device": str(self.device), "gpu": gpu}
        )
        self.progress.update(backend=self.backend, device=self.device.type, gpu=gpu, versions=self.versions)
        if self.world.distributed:
            self.progress.update(ranks=ranks)
        prepare_tokenizer(cfg, self.loaded.tokenizer)
        # Rank 0 tokenizes (and caches); the others then read its cache.
        if self.main_rank:
            self.samples = build_samples(cfg, self.loaded.tokenizer, self.records)
        self.group.barrier()
        if not self.main_rank:
            self.samples = build_samples(cfg, self.loaded.tokenizer, self.records, save=False)
        self.batches = Batches(torch, self.samples, self.device)

    def make_plan(self) -> None:
        cfg, n = self.cfg, self.world.size
        if self.resumed_plan:
            plan = self.resumed_plan
            global_batch = plan.global_batch_size or plan.batch_size * plan.gradient_accumulation_steps
        else:
            plan = memory = None
            if autotune.measures_memory(cfg, self.device):
                # Every rank's GPU after loading the model; rank 0 plans for the smallest.
                mine = autotune.device_memory(self.torch, self.device, self.world.rank)
                memory = autotune.job_memory(self.group, mine)
                if memory is not None:
                    log.info("GPU memory for the plan: %s", memory.describe(n))
            if self.main_rank:
                self.progress.write(state="autotuning")
                cache = Path(cfg.train.output_dir) / "autotune.json"
                plan = autotune.choose(
                    cfg, self.loaded, self.batches.first, cache, self.versions, world=n, memory=memory
                ).to_dict()
            plan = autotune.Plan.from_dict(self.group.broadcast_object(plan))
            global_batch = cfg.train.global_batch_size or plan.batch_size * plan.gradient_accumulation_steps * n
        if global_batch < n:
            raise ConfigError(
                [
                    Issue(
                        "train.global_batch_size",
                        global_batch,
                        f"at least the world size {n} (every process needs a sequence per step)",
                    )
                ]
            )
        self.global_batch = global_batch
        lo, hi = dist.shares(global_batch, n)[self.world.rank]
        micro = math.ceil((hi - lo) / plan.batch_size)
        self.plan = plan = autotune.Plan(
            batch_size=plan.batch_size,
            gradient_accumulation_steps=micro,
            gradient_checkpointing=plan.gradient_checkpointing,
            source=plan.source,
            reason=plan.reason,
            measurements=plan.measurements,
            global_batch_size=global_batch,
            world_size=n,
            memory=plan.memory,
        )
        self.loaded.set_gradient_checkpointing(plan.gradient_checkpointing)
        log.info("plan: %s", autotune.describe(plan))
        total = self.found.manifest["total_steps"] if self.found else None
        self.total = total or total_steps(cfg, self.samples.n, global_batch)

    def make_optimizer(self) -> None:
        cfg, torch = self.cfg, self.torch
        self.params = self.loaded.trainable
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
        schedule = Schedule(cfg.train.lr_scheduler, cfg.train.warmup_steps, self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def restore(self) -> None:
        torch, found = self.torch, self.found
        started = time.monotonic()
        backends.load_adapter(self.loaded.model, found.path)
        opt = torch.load(found.path / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(opt)
        self.scheduler.load_state_dict(torch.load(found.path / "scheduler.pt", weights_only=True))
        saved_world = int(found.manifest.get("plan", {}).get("world_size") or 1)
        if self.world.rank == 0:
            _rng_restore(torch, found.path)
        elif saved_world == self.world.size and (found.path / _rank_rng_file(self.world.rank)).is_file():
            _rng_set(torch, torch.load(found.path / _rank_rng_file(self.world.rank), weights_only=True))
        self.step = self.saved_step = found.step
        self.position = int(found.manifest["samples_seen"])
        old = found.manifest.get("data", {})
        if old.get("sha256") != self.records.sha256 or old.get("samples") != self.samples.n:
            log.warning("the dataset changed since the checkpoint: continuing from sample position %d", self.position)
        if saved_world != self.world.size:
            log.info(
                "resuming a run of %d processes with %d: global batch %d, sample position %d",
                saved_world,
                self.world.size,
                self.global_batch,
                self.position,
            )
        self.last_checkpoint = {"step": found.step, "path": str(found.path)}
        log.info(
            "resumed from %s: step %d, sample position %d, in %.1fs",
            found.path,
            self.step,
            self.position,
            time.monotonic() - started,
        )

    def save(self, finished: bool = False) -> None:
        """A checkpoint of this step: every rank hands its RNG state to rank 0, which writes the checkpoint while
        the others wait at a barrier (so no rank runs ahead of, or exits before, a checkpoint being written)."""
        torch = self.torch
        states = self.group.gather_object(_rng_state(torch)) if self.world.distributed else None
        if self.main_rank:
            self._write_checkpoint(finished, states)
        self.group.barrier()
        self.saved_step = self.step
        if not self.main_rank:
            self.last_checkpoint = {"step": self.step, "path": str(self.ckdir / checkpoint.name_for(self.step))}

    def _write_checkpoint(self, finished: bool, states: list | None) -> None:
        torch = self.torch
        self.progress.write(state="checkpointing")

        def writer(tmp: Path) -> None:
            backends.save_adapter(self.loaded.model, tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            _rng_capture(torch, tmp)
            for rank, state in enumerate(states or []):
                if rank:
                    torch.save(state, tmp / _rank_rng_file(rank))

        samples = self.samples
        manifest = {
            "step": self.step,
            "total_steps": self.total,
            "finished": finished,
            "samples_seen": self.position,
            "epoch": self.position / samples.n,
            "plan": {k: v for k, v in self.plan.to_dict().items() if k != "measurements"},
            "backend": self.backend,
            "stack_id": self.stack_id,
            "versions": self.versions,
            "model_path": self.cfg.model.path,
            "resume": self.identity,
            "data": {"path": self.cfg.data.path, "sha256": self.records.sha256, "samples": samples.n},
        }
        path = self.ckdir / checkpoint.name_for(self.step)
        seconds = checkpoint.write_dir(path, writer, manifest)
        for old_path in checkpoint.prune(self.ckdir, self.cfg.checkpoint.keep_last):
            log.info("removed old checkpoint %s", old_path.name)
        self.last_checkpoint = {"step": self.step, "path": str(path), "seconds": round(seconds, 3)}
        self.progress.write(state="training", last_checkpoint=self.last_checkpoint)
        log.info("checkpoint step %d written to %s in %.2fs", self.step, path, seconds)

    def one_step(self) -> None:
        """One optimizer step over the next global batch: this rank's share, in micro-batches, each loss weighted
        by its part of the global batch; then one reduction over the ranks (gradients, loss, stop flags)."""
        torch, g = self.torch, self.global_batch
        indices = self.order.indices(self.position, g)
        lo, hi = dist.shares(g, self.world.size)[self.world.rank]
        loss_sum = torch.zeros((), device=self.device)
        for chunk in dist.micro_batches(indices[lo:hi], self.plan.batch_size):
            batch, _tokens = self.batches.take(chunk)
            loss = self.loaded.forward(batch).loss
            weight = len(chunk) / g
            (loss * weight).backward()
            loss_sum += loss.detach().float() * weight
        self.position += g
        local_stop = self.stop.requested
        step_loss, any_stop = self.group.reduce_step(self.params, loss_sum, local_stop)
        if any_stop and not local_stop:
            self.stop.request("stop requested on another rank")
        if self.world.distributed:
            self.agreed_stop = any_stop
        if self.cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        window = self.window
        window["loss"] += step_loss.detach().float()
        window["steps"] += 1
        window["tokens"] += int(self.batches.lengths[torch.tensor(indices, dtype=torch.long)].sum())

    @property
    def stopping(self) -> bool:
        """Whether to stop after this step: with several ranks only what all of them agreed on in the last
        reduction, so every rank stops after the same step."""
        return self.agreed_stop if self.world.distributed else self.stop.requested

    def new_window(self, start: float | None = None) -> None:
        self.window = {
            "loss": self.torch.zeros((), device=self.device),
            "steps": 0,
            "tokens": 0,
            "start": time.monotonic() if start is None else start,
            "ckpt": 0.0,
        }

    def report(self, run: dict[str, float]) -> None:
        """Wall-clock accounting: a window runs from the previous report's device sync to this one's, so the time
        spent writing reports counts (in the next window); only checkpoint writes are left out. Tokens are the
        whole job's (every rank's)."""
        window, torch = self.window, self.torch
        mean_loss = float(window["loss"]) / window["steps"]  # synchronises with the device
        synced = time.monotonic()
        seconds = synced - window["start"] - window["ckpt"]
        run["seconds"] += seconds
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss is {mean_loss} at step {self.step}: training diverged")
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        self.progress.report(
            step=self.step,
            loss=mean_loss,
            lr=self.scheduler.get_last_lr()[0],
            tokens=window["tokens"],
            seconds=seconds,
            extra={
                "epoch": round(self.position / self.samples.n, 4),
                "samples_seen": self.position,
                "peak_memory_gib": round(peak, 2) if peak is not None else None,
                "seconds_per_step": run["seconds"] / run["steps"],
                "steps_in_window": window["steps"],
            },
        )
        self.new_window(start=synced)

    def train(self) -> None:
        cfg, plan, torch = self.cfg, self.plan, self.torch
        self.order = data.Order(self.samples.n, cfg.data_seed, cfg.data.shuffle)
        self.progress.update(
            total_steps=self.total,
            batch_size=plan.batch_size,
            gradient_accumulation_steps=plan.gradient_accumulation_steps,
            global_batch_size=self.global_batch,
            gradient_checkpointing=plan.gradient_checkpointing,
            plan_source=plan.source,
            plan_reason=plan.reason,
            plan_memory=plan.memory or None,
            max_seq_length=self.samples.seq_len,
            last_checkpoint=self.last_checkpoint,
        )
        self.progress.open_tensorboard(self.step)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.progress.write(state="training", step=self.step)
        log.info(
            "training steps %d..%d (%d sequences of %d tokens per step%s)",
            self.step + 1,
            self.total,
            self.global_batch,
            self.samples.seq_len,
            f" over {self.world.size} processes" if self.world.distributed else "",
        )
        self.loaded.model.train()
        self.loaded.set_gradient_checkpointing(plan.gradient_checkpointing)  # after train(): a backend may reset it
        self.group.barrier()  # every rank is ready: from here on a stop is agreed step by step
        self.stop.set_immediate(False)  # from here a signal ends the current step, then a checkpoint is written
        self.new_window()
        run = {"steps": 0, "seconds": 0.0}
        try:
            while self.step < self.total and not self.stopping:
                self.one_step()
                run["steps"] += 1
                if run["steps"] == 1:
                    # when this start's first step finished: the end of a restart's pause (a rollout's downtime)
                    self.progress.update(first_step=self.step, first_step_at=now_iso_precise())
                if self.stop_after is not None and self.step >= self.stop_after:
                    self.stop.request(f"--stop-after {self.stop_after}")
                    self.agreed_stop = True  # every rank reaches the same step
                # Also after a run's first step: a (re)started trainer shows at once that it trains again from its
                # checkpoint, which is what a rollout waits for and times.
                if (
                    run["steps"] == 1
                    or self.step % cfg.progress.every_steps == 0
                    or self.step == self.total
                    or self.stopping
                ):
                    self.report(run)
                if self.step % cfg.checkpoint.every_steps == 0 and self.step < self.total:
                    started = time.monotonic()
                    self.save()
                    self.window["ckpt"] += time.monotonic() - started
        except torch.cuda.OutOfMemoryError:
            log.error(
                "CUDA out of memory at step %d with batch_size %d, gradient_checkpointing %s: set a smaller "
                "train.batch_size or gradient_checkpointing: true",
                self.step + 1,
                plan.batch_size,
                plan.gradient_checkpointing,
            )
            raise
        if self.step >= self.total:
            self.save(finished=True)
            if self.main_rank:
                _save_final(self.cfg, self.loaded, self.step, self.stack_id, plan)
            self.group.barrier()
            self.progress.write(state="finished", step=self.step)
            log.info("finished: %d steps; final adapter in %s", self.step, _final_dir(cfg))
            return
        log.info("%s: stopping after step %d", self.stop.reason, self.step)
        if self.saved_step != self.step:
            self.save()
        self.progress.write(state="stopped", step=self.step)
        where = self.last_checkpoint["path"] if self.last_checkpoint else "none (no step done)"
        log.info("stopped at step %d; checkpoint %s", self.step, where)


def _final_dir(cfg: Config) -> Path:
    return Path(cfg.train.output_dir) / FINAL


def _save_final(cfg: Config, loaded, step: int, stack_id: str, plan) -> None:
    def writer(tmp: Path) -> None:
        backends.save_adapter(loaded.model, tmp)
        try:
            loaded.tokenizer.save_pretrained(str(tmp))
        except Exception as exc:  # the adapter matters; the tokenizer copy is a convenience
            log.warning("could not save the tokenizer with the final adapter: %s", exc)

    manifest = {"step": step, "base_model": cfg.model.path, "stack_id": stack_id, "plan": plan.to_dict()}
    checkpoint.write_dir(_final_dir(cfg), writer, manifest)


def _final_from_checkpoint(cfg: Config, found: checkpoint.Found) -> None:
    """A run that finished but died before writing final/: copy the adapter out of its last checkpoint."""

    def writer(tmp: Path) -> None:
        for name in (backends.ADAPTER_FILE, "adapter_config.json"):
            shutil.copy2(found.path / name, tmp / name)

    manifest = {"step": found.step, "base_model": cfg.model.path, "stack_id": found.manifest.get("stack_id")}
    checkpoint.write_dir(_final_dir(cfg), writer, manifest)
