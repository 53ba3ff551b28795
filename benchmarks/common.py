"""One timing helper for every benchmark: warm-up, L2 flushed before each run, CUDA events,
median of many; the card's name and clocks; the two floors (bytes / bandwidth, FLOPs / peak).

torch is imported inside the functions that time, so the pure arithmetic here (``Ceilings``,
``floors_us``) imports without it (the CPU tests of ``bench_moe``'s tables use it)."""
from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys

L2_FLUSH_BYTES = 256 * 2**20  # several times the H100's 50 MB L2


@dataclasses.dataclass(frozen=True)
class Ceilings:
    copy_gbps: float       # device-to-device copy, bytes read + written per second / 1e9
    bf16_tflops: float     # dense bf16 matmul, 8192^3


def require_cuda(script: str):
    """torch, where it is installed and sees a CUDA GPU; else one line on stderr and exit status 2
    (what ``python -m nvfp4_driver selftest`` and ``bench`` do), so that a script run on a machine
    without a GPU says why instead of dying in its first CUDA call."""
    try:
        import torch
    except ImportError as exc:
        print(f"{script} needs torch built with CUDA and an NVIDIA GPU, and torch is not installed ({exc}); "
              f"nothing was timed", file=sys.stderr)
        raise SystemExit(2) from None
    if not torch.cuda.is_available():
        print(f"{script} needs a CUDA GPU: torch.cuda.is_available() is False (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'none, a CPU-only build'}); nothing was timed", file=sys.stderr)
        raise SystemExit(2)
    return torch


def time_us(fn, iters: int = 50, warmup: int = 5) -> float:
    """Median microseconds of ``fn()`` on the current stream, L2 flushed before each run."""
    import torch

    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    stops = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, stop in zip(starts, stops):
        flush.zero_()
        start.record()
        fn()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, stops)) * 1e3


def measure_ceilings() -> Ceilings:
    import torch

    src = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    copy_us = time_us(lambda: dst.copy_(src), iters=20)
    x = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    mm_us = time_us(lambda: x @ y, iters=20)
    return Ceilings(copy_gbps=2 * src.numel() / copy_us / 1e3, bf16_tflops=2 * 8192**3 / mm_us / 1e6)


def gpu_banner() -> str:
    import torch

    name = torch.cuda.get_device_name()
    try:
        clocks = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        clocks = f"clocks unavailable ({exc})"
    return f"{name} (sm clock, max sm clock, mem clock: {clocks})"


def floors_us(nbytes: int, flops: int, ceil: Ceilings) -> tuple[float, float]:
    """(byte floor, FLOP floor) in microseconds."""
    return nbytes / (ceil.copy_gbps * 1e3), flops / (ceil.bf16_tflops * 1e6)


def host_us_per_call(fn, calls: int = 200, rounds: int = 60, warmup: int = 3, sync=None) -> float:
    """Median host (Python) microseconds per ``fn()`` call, for work whose GPU side is shorter.

    Rounds of ``calls`` back-to-back calls, timed by the host clock; the GPU is drained between rounds
    (untimed), so no round waits on a full launch queue. The median over rounds drops the ones a
    garbage collection or an interrupt hit.
    """
    import time

    import torch

    sync = sync or torch.cuda.synchronize
    for _ in range(warmup):
        for _ in range(calls):
            fn()
        sync()
    per_call = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter_ns() - t0) / calls / 1e3)
        sync()
    return statistics.median(per_call)
