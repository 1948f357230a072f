"""Training throughput on a Llama-3.1-8B-architecture model with random weights built locally (no download).

    python benchmarks/train_throughput.py --out results.json [--batch 2] [--seq 2048] [--warmup 3] [--steps 8]

For each backend (unsloth, hf), each in processes of its own (Unsloth patches transformers on import):

- `bare`: the reference, a bare loop as in H100-BASELINE.md: random token ids (labels = inputs), bf16, LoRA r=64
  alpha=16 dropout 0 on q/k/v/o_proj, AdamW lr 1e-4, gradient checkpointing on, `--warmup` untimed steps, then
  the median of `--steps` cuda-synchronised steps;
- `trainer`: `python -m h100fleet.trainer --config ...`, the service's entry point, at the same batch with
  gradient checkpointing on, on a packed JSONL dataset; its metrics.jsonl (one record per step) gives the median
  step time after the same warm-up;
- `auto`: the same with batch_size and gradient_checkpointing "auto": the plan the trainer picks and its speed;
- `torchrun` (with `--torchrun`): the `trainer` run started through torchrun with one process
  (`torch.distributed.run --standalone --nproc-per-node 1`, the launcher h100fleet.trainer.launch runs for a
  multi-GPU unit): world size 1 must cost nothing against `trainer`.

Tokens per second count every position of every sequence (batch x seq). Peak memory is
torch.cuda.max_memory_allocated. Results are written to --out after every run, so a cut-off run keeps what it had.

    python -m h100fleet.harness.train_bench build DIR            the 8B model (bf16, created on the GPU) + tokenizer
    python -m h100fleet.harness.train_bench bare --backend B ... one reference run, JSON on stdout
    python -m h100fleet.harness.train_bench smoke --out FILE [--backend B] [--torchrun]
                                                           a small model trained through the entry point (stop
                                                           after 3 steps, resume to 6), plain or through torchrun
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from h100fleet.trainer import tiny
from h100fleet.trainer.backends import version_tuple

GIB = 1 << 30
TOKENIZER_VOCAB = 32000
SRC = str(Path(__file__).resolve().parents[2])


def child_env(work: Path | None = None) -> dict[str, str]:
    """The package importable in child processes; one set of compiler caches shared by every run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    if work is not None:
        for name, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
            env.setdefault(name, str(work / "cache" / sub))
        env.setdefault("UNSLOTH_COMPILE_LOCATION", str(work / "cache" / "unsloth"))
    return env


SIZES = {"8b": tiny.LLAMA_8B, "small": tiny.SMALL, "tiny": tiny.TINY}


def build(directory: Path, size: str = "8b", device: str = "cuda") -> dict[str, Any]:
    started = time.monotonic()
    tiny.build_model(
        directory,
        size=SIZES[size],
        vocab=TOKENIZER_VOCAB,
        dtype="bfloat16" if device == "cuda" else "float32",
        device=device,
        tokenizer_vocab=TOKENIZER_VOCAB,
    )
    return {"model_dir": str(directory), "seconds": round(time.monotonic() - started, 1)}


def bare(backend: str, model_dir: str, *, batch: int, seq: int, warmup: int, steps: int, device: str = "cuda") -> dict:
    """The reference loop (the method of H100-BASELINE.md)."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()
    if backend == "unsloth":
        import torch
        from unsloth import FastLanguageModel

        model, _ = FastLanguageModel.from_pretrained(
            model_name=model_dir, max_seq_length=seq, dtype=torch.bfloat16, load_in_4bit=False, local_files_only=True
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=64,
            lora_alpha=16,
            lora_dropout=0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            use_gradient_checkpointing="unsloth",
            random_state=0,
        )
    else:
        import torch
        import transformers
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        dtype_kw = "dtype" if version_tuple(transformers.__version__) >= (4, 56) else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            attn_implementation="sdpa",
            device_map={"": 0} if device == "cuda" else None,
            local_files_only=True,
            **{dtype_kw: torch.bfloat16 if device == "cuda" else torch.float32},
        )
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        model = get_peft_model(
            model,
            LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        )
    load_seconds = time.monotonic() - started
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    times, losses = [], []
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        ids = torch.randint(0, vocab, (batch, seq), generator=generator).to(device)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # Unsloth's forward under bf16 autocast, as its own trainer and the trainer's unsloth backend run it (its
        # fast LoRA kernels mix bf16 activations with float32 adapters: without autocast the backward pass fails).
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=backend == "unsloth" and cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # synchronises with the device
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "batch": batch,
        "gradient_checkpointing": True,
        "tokens_per_second": round(batch * seq / median, 1),
        "median_step_seconds": round(median, 4),
        "step_seconds": [round(t, 4) for t in times],
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if cuda else None,
        "losses_finite": all(math.isfinite(x) for x in losses),
        "load_seconds": round(load_seconds, 1),
    }


def dataset(path: Path, rows_needed: int, seq: int) -> Path:
    """Prompt/response records of random words: enough packed rows of seq tokens for rows_needed sequences."""
    words_per_record = 2 * 1000
    records = max(16, (rows_needed * seq) // words_per_record + 8)
    return tiny.write_dataset(
        path,
        records=records,
        vocab=TOKENIZER_VOCAB,
        min_words=900,
        max_words=1100,
        forms=("prompt_response",),
    )


def trainer_config(
    work: Path, model_dir: Path, data: Path, *, backend: str, batch, gc, steps: int, seq: int, device: str = "cuda"
) -> Path:
    doc = {
        "stack_id": os.environ.get("H100FLEET_STACK_ID", "bench"),
        "model": {"path": str(model_dir)},
        "data": {"path": str(data), "max_seq_length": seq, "packing": True, "loss_on": "all"},
        "train": {
            "backend": backend,
            "device": device,
            "output_dir": str(work / "out"),
            "max_steps": steps,
            "batch_size": batch,
            "gradient_checkpointing": gc,
            "learning_rate": 1e-4,
            "warmup_steps": 0,
        },
        "checkpoint": {"every_steps": 100000, "keep_last": 1},
        "progress": {"every_steps": 1},
    }
    work.mkdir(parents=True, exist_ok=True)
    return tiny.write_config(work / "trainer.yml", doc)


def trainer_argv(config: Path, *extra: str, torchrun: bool = False) -> list[str]:
    """The trainer's command line: a plain process, or torchrun with one process (the launcher a multi-GPU unit
    runs through h100fleet.trainer.launch)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"] if torchrun else []
    return [sys.executable, *launcher, "-m", "h100fleet.trainer", "--config", str(config), *extra]


def run_trainer(
    config: Path, warmup: int, seq: int, timeout: float, env: dict[str, str], *, torchrun: bool = False
) -> dict[str, Any]:
    started, started_wall = time.monotonic(), time.time()
    proc = subprocess.run(
        trainer_argv(config, torchrun=torchrun),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    wall = time.monotonic() - started
    out = config.parent / "out"
    result: dict[str, Any] = {"exit_code": proc.returncode, "wall_seconds": round(wall, 1), "torchrun": torchrun}
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-3000:]
        return result
    status = json.loads((out / "status.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if r["step"] > warmup]
    median = statistics.median(r["seconds"] for r in timed)
    batch = status["batch_size"] * status["gradient_accumulation_steps"]
    result.update(
        batch=status["batch_size"],
        gradient_accumulation_steps=status["gradient_accumulation_steps"],
        gradient_checkpointing=status["gradient_checkpointing"],
        plan_source=status["plan_source"],
        plan_reason=status.get("plan_reason"),
        tokens_per_second=round(batch * seq / median, 1),
        median_step_seconds=round(median, 4),
        step_seconds=[round(r["seconds"], 4) for r in timed],
        peak_memory_gib=status.get("peak_memory_gib"),
        losses_finite=all(math.isfinite(r["loss"]) for r in rows),
        checkpoint_seconds=(status.get("last_checkpoint") or {}).get("seconds"),
        first_step_done_after_seconds=round(rows[0]["time"] - started_wall, 1),
    )
    plan_file = out / "autotune.json"
    if plan_file.exists():
        result["autotune_measurements"] = json.loads(plan_file.read_text())["plan"]["measurements"]
    log_lines = [line for line in proc.stderr.splitlines() if "h100fleet.trainer" in line and "step=" not in line]
    result["log"] = log_lines[-25:]
    return result


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "peft", "accelerate", "unsloth", "unsloth_zoo", "tensorboard"):
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = None
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        )
        env["gpus"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError) as exc:
        env["gpus"] = f"nvidia-smi failed: {exc}"
    return env


def table(results: dict[str, Any]) -> str:
    lines = [
        "| backend | path | batch | checkpointing | tokens/s | vs bare | peak GiB | step s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend, runs in results["runs"].items():
        ref = (runs.get("bare") or {}).get("tokens_per_second")
        for path in ("bare", "trainer", "torchrun", "auto"):
            r = runs.get(path)
            if not r:
                continue
            if "tokens_per_second" not in r:
                lines.append(f"| {backend} | {path} | - | - | failed (exit {r.get('exit_code')}) | - | - | - |")
                continue
            ratio = f"{r['tokens_per_second'] / ref:.3f}" if ref else "-"
            lines.append(
                f"| {backend} | {path} | {r['batch']} | {r['gradient_checkpointing']} | {r['tokens_per_second']:,.0f} "
                f"| {ratio} | {r['peak_memory_gib']} | {r['median_step_seconds']} |"
            )
    return "\n".join(lines)


def orchestrate(args) -> int:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "environment": environment(),
        "settings": {"batch": args.batch, "seq": args.seq, "warmup": args.warmup, "steps": args.steps},
        "runs": {},
    }

    def save() -> None:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")

    model_dir = work / f"llama-{args.size}-random"
    if not (model_dir / "config.json").exists():
        argv = ["build", str(model_dir), "--size", args.size, "--device", args.device]
        results["build"] = json.loads(subcommand(argv, timeout=900, env=child_env(work)))
        print(f"built {model_dir} in {results['build']['seconds']} s", flush=True)
    data = dataset(work / "train.jsonl", rows_needed=16 * (args.warmup + args.steps), seq=args.seq)
    save()
    backends = args.backends.split(",")
    # Same-batch comparisons first (both backends), the automatic choice last: a short budget drops those first.
    order = [(b, n) for n in ("bare", "trainer", *(["torchrun"] if args.torchrun else [])) for b in backends]
    order += [] if args.no_auto else [(b, "auto") for b in backends]
    for backend in backends:
        results["runs"][backend] = {}
    for backend, name in order:
        runs = results["runs"][backend]
        left = deadline - time.monotonic()
        if left < 60:
            runs[name] = {"skipped": f"time budget spent ({args.budget_s} s)"}
            continue
        t0 = time.monotonic()
        try:
            if name == "bare":
                argv = ["bare", "--backend", backend, "--model", str(model_dir), "--batch", str(args.batch)]
                argv += ["--seq", str(args.seq), "--warmup", str(args.warmup), "--steps", str(args.steps)]
                argv += ["--device", args.device]
                runs[name] = json.loads(subcommand(argv, timeout=left, env=child_env(work)))
            else:
                setting = ("auto", "auto") if name == "auto" else (args.batch, True)
                config = trainer_config(
                    work / f"{backend}-{name}",
                    model_dir,
                    data,
                    backend=backend,
                    batch=setting[0],
                    gc=setting[1],
                    steps=args.warmup + args.steps,
                    seq=args.seq,
                    device=args.device,
                )
                runs[name] = run_trainer(
                    config, args.warmup, args.seq, timeout=left, env=child_env(work), torchrun=name == "torchrun"
                )
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError, ValueError) as exc:
            detail = getattr(exc, "stderr", None) or ""
            runs[name] = {"error": f"{type(exc).__name__}: {str(exc)[-500:]}", "stderr_tail": str(detail)[-3000:]}
        runs[name]["process_seconds"] = round(time.monotonic() - t0, 1)
        print(f"{backend} {name}: {json.dumps({k: v for k, v in runs[name].items() if k != 'log'})[:800]}", flush=True)
        save()
    results["table"] = table(results)
    save()
    print(results["table"])
    return 0


def subcommand(argv: list[str], timeout: float, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "h100fleet.harness.train_bench", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr[-3000:])
    return proc.stdout.strip().splitlines()[-1]


def smoke(out: str, work: str, backend: str = "unsloth", torchrun: bool = False, device: str = "cuda") -> int:
    """A backend through the entry point on a small model: 3 steps, stop, resume to 6; plain or through torchrun.
    On a GPU the plan is automatic; on the CPU (a check of this code) a tiny float32 model at batch 2."""
    workdir = Path(work)
    gpu = device == "cuda"
    model_dir = workdir / ("small" if gpu else "tiny")
    if not (model_dir / "config.json").exists():
        # transformers only: the runs are children
        tiny.build_model(model_dir, size=tiny.SMALL if gpu else tiny.TINY, dtype="bfloat16" if gpu else "float32")
    data = tiny.write_dataset(workdir / "small.jsonl", records=64)
    run_dir = workdir / f"smoke-{backend}{'-torchrun' if torchrun else ''}"
    # A fresh run every time: the trainer would take an earlier run's output as its own progress (a finished run
    # exits at once), which another stack's smoke in the same workdir must never pass for its own.
    shutil.rmtree(run_dir, ignore_errors=True)
    plan = ("auto", "auto") if gpu else (2, False)
    config = trainer_config(
        run_dir,
        model_dir,
        data,
        backend=backend,
        batch=plan[0],
        gc=plan[1],
        steps=6,
        seq=256 if gpu else 64,
        device=device,
    )
    runs = []
    for extra in (["--stop-after", "3"], []):
        t0 = time.monotonic()
        argv = trainer_argv(config, *extra, torchrun=torchrun)
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=child_env(),
            check=False,
        )
        runs.append(
            {
                "argv": ["python", *argv[1:]],
                "exit_code": proc.returncode,
                "seconds": round(time.monotonic() - t0, 1),
                "log": [line for line in proc.stderr.splitlines() if "h100fleet.trainer" in line][-40:],
                "status": json.loads((config.parent / "out" / "status.json").read_text()),
            }
        )
    metrics = [json.loads(x) for x in (config.parent / "out" / "metrics.jsonl").read_text().splitlines()]
    result = {"backend": backend, "torchrun": torchrun, "environment": environment(), "runs": runs, "metrics": metrics}
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    ok = (
        [r["exit_code"] for r in runs] == [0, 0]
        and [r["status"]["step"] for r in runs] == [3, 6]
        and any("resumed from" in line for line in runs[1]["log"])
        and [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    )
    steps, exits = [m["step"] for m in metrics], [r["exit_code"] for r in runs]
    launched = "torchrun, 1 process" if torchrun else "plain process"
    print(f"smoke {backend} ({launched}) {'ok' if ok else 'FAILED'}: steps {steps}, exit codes {exits}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd")
    p_build = sub.add_parser("build")
    p_build.add_argument("dir")
    for p in (p_build, parser):
        p.add_argument("--size", choices=sorted(SIZES), default="8b", help="model size (default: %(default)s)")
    p_bare = sub.add_parser("bare")
    p_bare.add_argument("--backend", required=True, choices=["unsloth", "hf"])
    p_bare.add_argument("--model", required=True)
    p_smoke = sub.add_parser("smoke")
    for p in (p_bare, p_build, p_smoke, parser):
        p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a check of this script only")
    for p in (p_bare, parser):
        p.add_argument("--batch", type=int, default=2)
        p.add_argument("--seq", type=int, default=2048)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--steps", type=int, default=8)
    p_smoke.add_argument("--out", required=True)
    p_smoke.add_argument("--workdir", default="/tmp/h100fleet-smoke")
    p_smoke.add_argument("--backend", choices=["unsloth", "hf"], default="unsloth")
    for p in (p_smoke, parser):
        p.add_argument("--torchrun", action="store_true", help="(also) launch the trainer through torchrun, 1 process")
    parser.add_argument("--out", help="JSON results file")
    parser.add_argument("--workdir", default="/tmp/h100fleet-bench", help="model, data and runs (about 17 GB)")
    parser.add_argument("--backends", default="unsloth,hf")
    parser.add_argument("--no-auto", action="store_true", help="skip the batch_size/gradient_checkpointing auto runs")
    parser.add_argument("--budget-s", type=float, default=3000, help="skip runs once this much time has passed")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        print(json.dumps(build(Path(args.dir), args.size, args.device)))
        return 0
    if args.cmd == "bare":
        result = bare(
            args.backend,
            args.model,
            batch=args.batch,
            seq=args.seq,
            warmup=args.warmup,
            steps=args.steps,
            device=args.device,
        )
        print(json.dumps(result))
        return 0
    if args.cmd == "smoke":
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return smoke(args.out, args.workdir, args.backend, args.torchrun, args.device)
    if not args.out:
        parser.error("--out is required")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
