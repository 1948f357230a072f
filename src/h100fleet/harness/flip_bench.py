"""A rollout's flip on one node without Ansible: how long training pauses, phase by phase.

The sequence is the rollout role's (docs/rollout.md): a trainer runs; SIGTERM (it finishes its step and writes a
checkpoint) and wait for it to exit; run the GPU probes in the stack's interpreter; start the trainer again and
wait until its status shows a step past the checkpointed one. What Ansible adds on a real node (a few task round
trips and the link switch) is measured by the rollout's molecule scenario; this measures what the node itself
costs, on a GPU, with the service's own entry points.

    python benchmarks/flip_downtime.py --out flip.json [--size 8b] [--backend unsloth] [--flips cold,warm]
        [--probe-arg=--expect-gpus=1 --probe-arg=--driver=580]

Each flip: stop_s (SIGTERM until the process exited), probe_s (the probe command, its exit code and status),
start_s (start until the status showed the first step past the checkpoint), downtime_s (their sum, the first
SIGTERM to that status), and the restarted trainer's log lines (import, model load, data, resume, first step).
--flips names the probe runs: cold (empty compiler caches: a stack's first probe run) or warm, and -nocompile
(UNSLOTH_COMPILE_DISABLE=1, gpu_validate_unsloth_compile: false) or -nounsloth (the probes without their Unsloth
forward/backward: the rollout's default where the trainer restarts, see docs/rollout.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from h100fleet.harness import train_bench

POLL_S = 0.2


def read_status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> float:
    """Poll until check() holds; the seconds it took. Raises TimeoutError, or RuntimeError when proc exits first."""
    started = time.monotonic()
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the trainer exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic() - started


class Trainer:
    """The service's entry point as a child process, its stderr in a log file."""

    def __init__(self, config: Path, env: dict[str, str], log: Path):
        self.config, self.env, self.log = config, env, log
        self.status_path = config.parent / "out" / "status.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        handle = open(self.log, "a", encoding="utf-8")  # noqa: SIM115 - the child writes to it until it exits
        handle.write(f"--- start {time.strftime('%H:%M:%S')}\n")
        handle.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "h100fleet.trainer", "--config", str(self.config)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        handle.close()

    def step(self) -> int:
        status = read_status(self.status_path)
        return int(status.get("step") or 0) if status.get("state") in ("training", "checkpointing") else -1

    def stop(self, timeout: float) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_lines(self, since_marker: bool = True) -> list[str]:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        if since_marker:
            starts = [i for i, line in enumerate(text) if line.startswith("--- start")]
            text = text[starts[-1] :] if starts else text
        return [line for line in text if "h100fleet.trainer" in line and "step=" not in line][-30:]


def run_probes(argv: list[str], env: dict[str, str], report: Path) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "h100fleet.probes", *argv, "--json", str(report)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.monotonic() - started
    doc = read_status(report)
    return {
        "seconds": round(seconds, 1),
        "exit_code": proc.returncode,
        "status": doc.get("status"),
        "checks": len(doc.get("checks") or []),
        "tail": proc.stderr[-1500:] if proc.returncode not in (0, 1) else "",
    }


def flip(trainer: Trainer, probe_argv: list[str], probe_env: dict[str, str], report: Path, timeout: float):
    """One flip of a running trainer. Returns the phases and leaves the trainer running again."""
    before = trainer.step()
    t0 = time.monotonic()
    exit_code = trainer.stop(timeout)
    stop_s = time.monotonic() - t0
    checkpointed = int(read_status(trainer.status_path).get("step") or 0)
    probe = run_probes(probe_argv, probe_env, report)
    t_start = time.monotonic()
    trainer.start()
    start_s = wait_for(lambda: trainer.step() > checkpointed, timeout, "step past the checkpoint", trainer.proc)
    return {
        "step_seen_before_stop": before,
        "checkpointed_step": checkpointed,
        "trainer_exit_code": exit_code,
        "stop_s": round(stop_s, 1),
        "probe_s": probe["seconds"],
        "probe": probe,
        "start_s": round(start_s, 1),
        "downtime_s": round(time.monotonic() - t0, 1),
        "between_s": round(t_start - t0 - stop_s - probe["seconds"], 1),
        "first_step_after": trainer.step(),
        "trainer_log": trainer.log_lines(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON results (rewritten after every phase)")
    parser.add_argument("--workdir", default="/tmp/h100fleet-flip", help="model, data, runs and caches")
    parser.add_argument("--size", choices=sorted(train_bench.SIZES), default="8b")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a check of this script")
    parser.add_argument("--backend", choices=["unsloth", "hf"], default="unsloth")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", default="auto", help="train.batch_size (default: the service's auto)")
    parser.add_argument("--gc", default="auto", choices=["auto", "true", "false"], help="train.gradient_checkpointing")
    parser.add_argument(
        "--flips",
        default="cold,warm",
        help="one flip per entry: the probes' compiler caches cold (emptied first: a stack's first probe run) or "
        "warm, with -nocompile for UNSLOTH_COMPILE_DISABLE=1 (gpu_validate_unsloth_compile: false) and "
        "-nounsloth for no Unsloth forward/backward probe (--no-unsloth)",
    )
    parser.add_argument("--steps-before", type=int, default=3, help="steps the trainer makes before each flip")
    parser.add_argument("--probe-arg", action="append", default=[], help="an argument of python -m h100fleet.probes")
    parser.add_argument("--timeout", type=float, default=900)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"environment": train_bench.environment(), "settings": vars(args), "flips": []}

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    env = train_bench.child_env(work)
    model_dir = work / f"model-{args.size}"
    if not (model_dir / "config.json").exists():
        # in a child: the model built on the GPU must not stay in this process's memory
        result["model_build"] = json.loads(
            train_bench.subcommand(
                ["build", str(model_dir), "--size", args.size, "--device", args.device], args.timeout, env
            )
        )
        save()
    data = train_bench.dataset(work / "data.jsonl", rows_needed=4096, seq=args.seq)
    batch = args.batch if args.batch == "auto" else int(args.batch)
    config = train_bench.trainer_config(
        work / "run",
        model_dir,
        data,
        backend=args.backend,
        batch=batch,
        gc=args.gc if args.gc == "auto" else args.gc == "true",
        steps=1_000_000,
        seq=args.seq,
        device=args.device,
    )
    trainer = Trainer(config, env, work / "trainer.log")
    try:
        started = time.monotonic()
        trainer.start()
        wait_for(lambda: trainer.step() >= args.steps_before, args.timeout, "first steps", trainer.proc)
        result["first_start_s"] = round(time.monotonic() - started, 1)
        result["first_start_log"] = trainer.log_lines()
        save()
        for number, variant in enumerate(args.flips.split(","), start=1):
            caches, *options = variant.split("-")
            nocompile = "nocompile" in options
            cache = work / f"probe-cache{'-nocompile' if nocompile else ''}"
            if caches == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            probe_env = {
                **env,
                "TRITON_CACHE_DIR": str(cache / "triton"),
                "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
                "UNSLOTH_COMPILE_LOCATION": str(cache / "unsloth"),
                **({"UNSLOTH_COMPILE_DISABLE": "1"} if nocompile else {}),
            }
            probe_argv = args.probe_arg + (["--no-unsloth"] if "nounsloth" in options else [])
            target = trainer.step() + args.steps_before
            wait_for(lambda t=target: trainer.step() >= t, args.timeout, "steps before the flip", trainer.proc)
            one = flip(trainer, probe_argv, probe_env, work / f"probe-{number}.json", args.timeout)
            one["probe_variant"] = variant
            result["flips"].append(one)
            save()
            print(
                f"flip {number}: downtime {one['downtime_s']} s = stop {one['stop_s']} + probe {one['probe_s']} "
                f"({one['probe']['status']}, {variant}) + start {one['start_s']} s",
                flush=True,
            )
    except (TimeoutError, RuntimeError) as exc:
        result["error"] = str(exc)
        result["trainer_log_tail"] = trainer.log_lines(since_marker=False)
        save()
        print(f"flip benchmark stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if trainer.proc is not None and trainer.proc.poll() is None:
            trainer.stop(args.timeout)
    save()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
