"""GPU measurements with PyTorch: bf16 GEMM throughput, device memory copy bandwidth, attention correctness and
NCCL all-reduce bus bandwidth. Each returns plain numbers; checks.py-style thresholds are applied by the caller.

torch is imported inside each function: the probe package must import (and report "no GPU" cleanly) on a node
whose stack is broken or not yet installed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Multicast over NVLink (NVLS) can take a shared host's GPUs out of service; the probes never need it.
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def _timed(fn, device, warmup: int, iters: int) -> float:
    """Median seconds of fn() over iters runs after warmup runs, timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def gemm_tflops(device: int, n: int = 8192, warmup: int = 3, iters: int = 10) -> float:
    """bf16 n x n x n matrix product throughput in TFLOP/s (random data; 2 n^3 FLOP per product)."""
    import torch

    with torch.cuda.device(device):
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
        seconds = _timed(lambda: torch.matmul(a, b, out=out), device, warmup, iters)
    return 2 * n**3 / seconds / 1e12


def copy_bandwidth_gbs(device: int, nbytes: int = 2 << 30, warmup: int = 3, iters: int = 10) -> float:
    """Device-to-device copy bandwidth in GB/s, counting the bytes read and the bytes written."""
    import torch

    with torch.cuda.device(device):
        src = torch.empty(nbytes, device=device, dtype=torch.uint8)
        dst = torch.empty_like(src)
        seconds = _timed(lambda: dst.copy_(src), device, warmup, iters)
    return 2 * nbytes / seconds / 1e9


@dataclass(frozen=True)
class AttentionResult:
    backend: str  # "flash_attn" or "sdpa_flash"
    max_abs_error: float
    tolerance: float
    tflops: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.tolerance


def attention(
    device: int, *, batch: int = 4, heads: int = 32, seq: int = 2048, head_dim: int = 128, tolerance: float = 2e-2
) -> AttentionResult:
    """Causal bf16 attention through flash-attn's flash_attn_func when installed, else PyTorch SDPA's flash
    backend, compared with PyTorch's math backend in float32 on the same inputs."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    shape = (batch, heads, seq, head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16) for _ in range(3))
    try:
        from flash_attn import flash_attn_func  # layout (batch, seq, heads, dim)

        backend = "flash_attn"

        def run():
            return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True).transpose(1, 2)
    except ImportError:
        backend = "sdpa_flash"

        def run():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    out = run()
    with sdpa_kernel(SDPBackend.MATH):
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    error = (out.float() - reference).abs().max().item()
    seconds = _timed(run, device, warmup=3, iters=10)
    # Causal: half of the 4 * b * h * s^2 * d FLOP of full attention's two matrix products.
    flop = 4 * batch * heads * seq * seq * head_dim / 2
    return AttentionResult(backend, error, tolerance, flop / seconds / 1e12)


def _allreduce_worker(rank: int, world: int, port: int, nbytes: int, iters: int, results) -> None:  # noqa: PLR0917 (mp.start_processes passes positionally)
    import torch
    import torch.distributed as dist

    os.environ.update(NCCL_SAFE_ENV)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tensor = torch.ones(nbytes // 2, device=rank, dtype=torch.bfloat16)
        for _ in range(3):
            dist.all_reduce(tensor)
        torch.cuda.synchronize()
        tensor.fill_(1)
        dist.all_reduce(tensor)
        correct = bool((tensor == world).all().item())
        dist.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(tensor)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iters
        if rank == 0:
            # nccl-tests' definition: bus bandwidth = algorithm bandwidth * 2 (n - 1) / n.
            results.put((nbytes / seconds / 1e9 * 2 * (world - 1) / world, correct))
    finally:
        dist.destroy_process_group()


def allreduce_busbw_gbs(world: int, nbytes: int = 1 << 30, iters: int = 10, port: int = 29591) -> tuple[float, bool]:
    """NCCL all-reduce bus bandwidth in GB/s across `world` GPUs of this node (one process a GPU), and whether
    the sum was right. The port is on 127.0.0.1 only."""
    import torch.multiprocessing as mp

    os.environ.update(NCCL_SAFE_ENV)
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(
        _allreduce_worker, args=(world, port, nbytes, iters, results), nprocs=world, join=True, start_method="spawn"
    )
    return results.get()
