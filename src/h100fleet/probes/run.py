"""The probe run: NVML inventory and health, then (when a GPU is visible) compute, attention, NCCL and Unsloth.

    python -m h100fleet.probes --expect-gpus 8 --driver 550 --json /var/lib/h100fleet/probe.json

Prints one summary line; writes the JSON report where --json says; exits 0 OK, 1 WARN, 2 CRIT, 3 UNKNOWN.
A node without a visible GPU, or with a broken stack, gets CRIT checks that say so, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from h100fleet.probes import nvml
from h100fleet.probes.checks import ANY_HOPPER, Expectations, evaluate, sku_threshold
from h100fleet.probes.result import Check, Report, Status


@dataclass(frozen=True)
class Thresholds:
    """Minimums for the measured figures; None takes each GPU's from the SKU table (checks.HOPPER_SKUS), the
    lowest of the node's GPUs for the all-reduce. A number applies to every GPU of the node."""

    min_gemm_tflops: float | None = None
    min_copy_gbs: float | None = None
    min_allreduce_busbw_gbs: float | None = None
    attention_tolerance: float = 2e-2

    def for_gpu(self, field: str, gpu_name: str | None) -> float:
        value = getattr(self, field)
        return float(value) if value is not None else float(sku_threshold(gpu_name, field))

    def for_node(self, field: str, gpu_names: Sequence[str | None]) -> float:
        return min((self.for_gpu(field, n) for n in gpu_names), default=self.for_gpu(field, None))


def _failure(name: str, exc: BaseException, remedy: str) -> Check:
    return Check(name, Status.CRIT, None, None, remedy, f"{type(exc).__name__}: {exc}"[:300])


def _measure(name: str, threshold: float, unit: str, remedy: str, measure: Callable[[], float]) -> Check:
    try:
        value = round(measure(), 1)
    except Exception as exc:  # a probe reports a failure as a check, never as a traceback
        return _failure(name, exc, remedy)
    if value >= threshold:
        return Check(name, Status.OK, value, threshold, "", f"{value} {unit}")
    return Check(name, Status.CRIT, value, threshold, remedy, f"{value} {unit} < {threshold} {unit}")


def torch_versions() -> tuple[dict[str, str | None], Check | None]:
    """torch's version and the CUDA version it was built with, or a CRIT check when the stack's torch cannot be
    imported."""
    try:
        import torch

        return {"torch": torch.__version__, "torch_cuda": torch.version.cuda}, None
    except Exception as exc:
        remedy = "Rebuild the Python stack (python_stack role); torch must import."
        return {"torch": None, "torch_cuda": None}, _failure("torch_import", exc, remedy)


def nvml_importable() -> bool:
    """Whether this interpreter can import pynvml (nvidia-ml-py)."""
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


def compute_checks(gpu_count: int, t: Thresholds, gpu_names: Sequence[str | None] = ()) -> list[Check]:
    """GEMM and copy per GPU, attention on GPU 0, all-reduce across them; `gpu_names` (NVML's, by index) pick each
    GPU's thresholds from the SKU table where `t` leaves them None."""
    from h100fleet.probes import compute

    names = list(gpu_names) + [None] * (gpu_count - len(gpu_names))
    result = []
    for i in range(gpu_count):
        result.append(
            _measure(
                f"gemm_bf16_tflops[{i}]",
                t.for_gpu("min_gemm_tflops", names[i]),
                "TFLOP/s",
                "Check clocks and throttling (nvidia-smi -q -d PERFORMANCE), power and cooling; reset the GPU.",
                lambda i=i: compute.gemm_tflops(i),
            )
        )
        result.append(
            _measure(
                f"copy_bandwidth_gbs[{i}]",
                t.for_gpu("min_copy_gbs", names[i]),
                "GB/s",
                "Check memory clocks and ECC/remapping state; reset the GPU; replace it if it stays slow.",
                lambda i=i: compute.copy_bandwidth_gbs(i),
            )
        )
    try:
        att = compute.attention(0, tolerance=t.attention_tolerance)
        status = Status.OK if att.ok else Status.CRIT
        remedy = "" if att.ok else "Attention output is wrong: reinstall flash-attn/torch for this GPU and driver."
        detail = f"{att.backend}: max |error| {att.max_abs_error:.2e}, {att.tflops:.0f} TFLOP/s"
        result.append(Check("attention", status, round(att.max_abs_error, 6), att.tolerance, remedy, detail))
    except Exception as exc:
        result.append(_failure("attention", exc, "Reinstall the stack's torch / flash-attn for this GPU."))
    if gpu_count >= 2:
        try:
            busbw, correct = compute.allreduce_busbw_gbs(gpu_count)
            if not correct:
                result.append(
                    Check(
                        "nccl_allreduce",
                        Status.CRIT,
                        busbw,
                        None,
                        "NCCL returned a wrong sum: check NVLink/NVSwitch (fabric manager) and the NCCL version.",
                        "wrong all-reduce result",
                    )
                )
            else:
                result.append(
                    _measure(
                        "nccl_allreduce_busbw_gbs",
                        t.for_node("min_allreduce_busbw_gbs", names[:gpu_count]),
                        "GB/s",
                        "Check NVLink/NVSwitch health (nvidia-smi nvlink -s, fabric manager) and PCIe topology.",
                        lambda: busbw,
                    )
                )
        except Exception as exc:
            result.append(_failure("nccl_allreduce", exc, "Check fabric manager, NVLink and NCCL (NCCL_DEBUG=INFO)."))
    return result


# The lock a stack venv keeps of itself (python_stack's __python_stack_lock_name, roles/python_stack/vars/main.yml).
VENV_LOCK = "h100fleet-lock.txt"


def unsloth_in_stack(prefix: str | Path | None = None) -> bool:
    """Whether the Unsloth probe belongs to this interpreter's stack: False only for a stack venv whose own lock
    pins no unsloth (a Hugging Face stack such as torch2.6-transformers5.17-py313). A stack that pins it, or an
    interpreter that is no stack venv, runs the probe, so a stack that lost its unsloth fails the gate."""
    lock = Path(sys.prefix if prefix is None else prefix) / VENV_LOCK
    try:
        text = lock.read_text()
    except OSError:
        return True
    # The probes import nothing outside h100fleet.probes: gpu_validate installs that package alone.
    return re.search(r"(?im)^unsloth==", text) is not None


def start_unsloth() -> subprocess.Popen[str]:
    """Start the Unsloth forward/backward probe in its own process (it patches transformers process-wide).

    Most of its time is CPU work (imports, compiling the model), so it runs while the compute probes measure."""
    argv = [sys.executable, "-m", "h100fleet.probes.unsloth_check"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_unsloth(proc: subprocess.Popen[str], timeout: float) -> tuple[Check, str | None]:
    """Wait for the Unsloth probe; return its check and the unsloth version that ran (None when it did not get
    that far)."""
    remedy = "Reinstall the stack (unsloth, unsloth_zoo, transformers, trl must be the locked versions)."
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Check(
            "unsloth_train_step", Status.CRIT, None, timeout, remedy, f"no result within {timeout:.0f} s"
        ), None
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return Check("unsloth_train_step", Status.CRIT, None, None, remedy, " | ".join(tail)[:300] or "no output"), None
    if not data.get("ok"):
        detail = data.get("error") or f"losses {data.get('losses')}, grads finite {data.get('grads_finite')}"
        check = Check("unsloth_train_step", Status.CRIT, data.get("losses"), "loss decreases", remedy, detail[:300])
        return check, data.get("unsloth_version")
    losses = data["losses"]
    detail = (
        f"unsloth {data['unsloth_version']}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps, "
        f"grad norm {data['grad_norms'][0]:.3g}, {data['seconds']:.1f} s"
    )
    check = Check("unsloth_train_step", Status.OK, [round(x, 4) for x in losses], "loss decreases", "", detail)
    return check, data["unsloth_version"]


def probe(
    expect: Expectations,
    thresholds: Thresholds,
    *,
    compute: bool = True,
    unsloth: bool = True,
    unsloth_timeout: float = 300,
    node: str | None = None,
    snapshot: dict[str, Any] | None = None,
) -> Report:
    started = time.monotonic()
    snap = snapshot if snapshot is not None else nvml.snapshot()
    environment: dict[str, Any] = {
        "python": platform.python_version(),
        "driver": snap.get("driver_version"),
        "cuda_driver": snap.get("cuda_driver_version"),
    }
    checks: list[Check] = []
    gpu_count = len(snap.get("gpus") or [])
    if gpu_count and (compute or unsloth):
        versions, broken = torch_versions()
        environment.update(versions)
        cuda = versions["torch_cuda"]
        if broken:
            checks.append(broken)
        elif cuda and expect.min_cuda_driver is not None:
            # The driver must support the CUDA runtime that torch's wheels carry.
            expect = Expectations(**{**expect.__dict__, "min_cuda_driver": ".".join(cuda.split(".")[:2])})
    checks[:0] = evaluate(snap, expect)
    visible = checks[0].status is Status.OK and checks[0].name == "nvidia_gpu_visible"
    torch_ok = not any(c.name == "torch_import" for c in checks)
    if unsloth and not unsloth_in_stack():
        unsloth, environment["unsloth"] = False, "not in the stack (its lock pins no unsloth)"
    pending = start_unsloth() if visible and torch_ok and unsloth else None
    if visible and torch_ok and compute:
        names = [g.get("name") if isinstance(g, dict) else None for g in snap.get("gpus") or []]
        checks += compute_checks(gpu_count, thresholds, names)
    if pending is not None:
        check, environment["unsloth"] = finish_unsloth(pending, unsloth_timeout)
        checks.append(check)
    runtime = round(time.monotonic() - started, 1)
    # The stack's own faults, for the rollout gate: torch not importable, or (on this node, not a recorded
    # snapshot) NVML unreadable because nvidia-ml-py is not importable.
    broken = [c.name for c in checks if c.name == "torch_import"]
    if snapshot is None and snap.get("error") and not nvml_importable():
        broken.insert(0, checks[0].name)
    return Report(
        tuple(checks), node or socket.gethostname(), runtime_s=runtime, environment=environment, stack_broken=broken
    )


def _cc(text: str) -> str:
    major, sep, minor = text.partition(".")
    if not (sep and major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR such as 9.0, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m h100fleet.probes", description=__doc__.splitlines()[0])
    p.add_argument("--expect-gpus", type=int, help="GPUs this node must show (default: do not check the count)")
    p.add_argument("--compute-capability", type=_cc, default="9.0", help="expected compute capability (9.0)")
    p.add_argument("--driver", help="driver pin: exact version (550.163.01) or branch (550)")
    p.add_argument(
        "--model",
        default=ANY_HOPPER,
        help=f"'{ANY_HOPPER}' (every GPU of compute capability 9.0; the default) or text the GPU's NVML name must "
        "contain, to require one SKU (H200, 'NVIDIA H100 80GB HBM3')",
    )
    sku = "(default: each GPU's SKU's, from the SKU table)"
    p.add_argument("--min-gemm-tflops", type=float, help=f"minimum bf16 GEMM TFLOP/s {sku}")
    p.add_argument("--min-copy-gbs", type=float, help=f"minimum device copy GB/s {sku}")
    p.add_argument("--min-allreduce-busbw-gbs", type=float, help=f"minimum all-reduce bus bandwidth {sku}")
    p.add_argument("--no-compute", action="store_true", help="NVML checks only (no GEMM, copy, attention, NCCL)")
    p.add_argument("--no-unsloth", action="store_true", help="skip the Unsloth forward/backward probe")
    p.add_argument("--unsloth-timeout", type=float, default=300)
    p.add_argument("--node", help="node name in the report (default: host name)")
    p.add_argument("--snapshot", type=Path, help="evaluate a recorded NVML snapshot (JSON) instead of this node")
    p.add_argument("--json", type=Path, help="write the JSON report here ('-' for standard output)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.expect_gpus is not None and args.expect_gpus < 0:
        build_parser().error(f"--expect-gpus must be 0 or more, got {args.expect_gpus}")
    expect = Expectations(
        expected_gpus=args.expect_gpus,
        compute_capability=args.compute_capability,
        driver_version=args.driver,
        model_substring=args.model,
        today=date.today(),
    )
    thresholds = Thresholds(args.min_gemm_tflops, args.min_copy_gbs, args.min_allreduce_busbw_gbs)
    snapshot = json.loads(args.snapshot.read_text()) if args.snapshot else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    report = probe(
        expect,
        thresholds,
        compute=not args.no_compute,
        unsloth=not args.no_unsloth,
        unsloth_timeout=args.unsloth_timeout,
        node=args.node,
        snapshot=snapshot,
    )
    if args.json is not None:
        text = report.to_json() + "\n"
        if str(args.json) == "-":
            sys.stdout.write(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(args.json)
    print(report.summary_line(), file=sys.stderr if str(args.json) == "-" else sys.stdout)
    return report.exit_code
