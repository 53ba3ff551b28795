"""Host overhead per call: what Python costs on each entry point, against an empty kernel's launch.

    python benchmarks/bench_overhead.py [--profile]

The GEMM is the smallest there is (one group of 16 rows, N=8, K=128: one block), so the GPU keeps up
and the host clock measures the host. Each line: median us per call | us above the bare launch of the
empty probe kernel through the same driver layer. Target (issue 5): the torch path within 10 us.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
from pathlib import Path

import numpy as np
try:
    import torch
except ImportError:  # main() says so in one line (common.require_cuda)
    torch = None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import gpu_banner, host_us_per_call, require_cuda  # noqa: E402
import nvfp4_driver as nd  # noqa: E402
from nvfp4_driver import driver, registry, testing, variants  # noqa: E402
from nvfp4_driver.devmem import DeviceBuffer  # noqa: E402

NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")
TARGET_US = 10.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", action="store_true", help="cProfile the torch path (top 20 by own time)")
    args = parser.parse_args()
    require_cuda("bench_overhead.py")
    print(gpu_banner())
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cpu {os.cpu_count()} cores")
    p = testing.random_problem(np.random.default_rng(0), [16], n=8, k=128, row_offset=0, trailing_rows=0)
    paths = []  # (label, fn); measured below in interleaved passes

    def measure(label, fn):
        fn()
        torch.cuda.synchronize()
        paths.append((label, fn))

    # The floor: the empty probe kernel through the driver layer.
    cap = driver.device_info(0).capability
    probe = variants.probe_spec(cap)
    probe_out = DeviceBuffer((8,), "int32")
    stream = torch.cuda.current_stream().cuda_stream
    kernel = driver.prepared(probe, 0)
    probe_args = registry.probe().args(out=probe_out.ptr, i64=1, i32=2, f32=3.0)
    measure("empty probe: PreparedKernel.launch", lambda: kernel.launch((1, 1, 1), stream, probe_args))
    measure("empty probe: driver.launch(spec, ...)", lambda: driver.launch(probe, 0, (1, 1, 1), stream, probe_args))

    t = [torch.from_numpy(np.ascontiguousarray(getattr(p, name))).cuda() for name in NAMES]
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    gemm = nd.group_gemm_nvfp4_nt_groupwise
    torch_call = lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out)  # noqa: E731
    measure("torch, out=", torch_call)
    measure("torch, out=None (op allocates)", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5]))
    side = torch.cuda.Stream()
    measure("torch, out=, stream=torch.cuda.Stream", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out,
                                                                  stream=side))
    from nvfp4_driver import torch_ops  # noqa: F401
    op = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise
    measure("torch.ops.nvfp4_driver (custom op, eager)", lambda: op(t[0], t[1], t[2], t[3], t[4], t[5]))
    measure("torch, out=, check_inputs=True (syncs)", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out,
                                                                   check_inputs=True))

    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in NAMES}
    out_buf = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    b = [bufs[name] for name in NAMES]
    measure("DeviceBuffer (CAI, device asked of the driver)",
            lambda: gemm(b[0], b[1], b[2], b[3], b[4], b[5], out=out_buf))
    ptrs = [x.ptr for x in b]
    kw = dict(num_groups=1, n=p.n, k=p.k, cum_m=p.cum_m, a_scale_nbytes=bufs["a_scale"].nbytes, stream=stream)
    ptr_fn = nd.group_gemm_nvfp4_nt_groupwise_ptr
    measure("raw pointers, device asked of the driver",
            lambda: ptr_fn(ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], out_buf.ptr, **kw))
    measure("raw pointers, device=0",
            lambda: ptr_fn(ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], out_buf.ptr, device=0, **kw))
    try:
        import cupy
        c = [cupy.asarray(getattr(p, name)) for name in NAMES]
        c_out = cupy.empty((p.cum_m, p.n), dtype=cupy.float16)
        measure("cupy, out=", lambda: gemm(c[0], c[1], c[2], c[3], c[4], c[5], out=c_out))
    except ImportError as exc:
        print(f"cupy: skipped ({exc})")
    try:
        from numba import cuda as numba_cuda
        nb = [numba_cuda.to_device(np.ascontiguousarray(getattr(p, name))) for name in NAMES]
        nb_out = numba_cuda.device_array((p.cum_m, p.n), dtype=np.float16)
        measure("numba (CAI), out=", lambda: gemm(nb[0], nb[1], nb[2], nb[3], nb[4], nb[5], out=nb_out))
    except ImportError as exc:
        print(f"numba: skipped ({exc})")

    # Three passes over every path, interleaved, the best median of each: a host's clock ramp or a
    # neighbour's burst then hits one pass of every path rather than every pass of one path.
    best = {label: float("inf") for label, _fn in paths}
    for _ in range(3):
        for label, fn in paths:
            best[label] = min(best[label], host_us_per_call(fn, rounds=20))
    rows = [(label, best[label]) for label, _fn in paths]
    floor = rows[0][1]
    python_ns = _python_call_ns()
    print(f"host calibration: an empty Python function call takes {python_ns:.0f} ns here")
    print(f"{'path':48} | {'us/call':>8} | {'over empty launch':>17}")
    for label, us in rows:
        print(f"{label:48} | {us:8.2f} | {us - floor:17.2f}")
    torch_us = next(us for label, us in rows if label == "torch, out=")
    verdict = "PASS" if torch_us <= TARGET_US else "FAIL"
    print(f"torch path {torch_us:.2f} us per call vs target {TARGET_US:.0f} us: {verdict}")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            torch_call()
        prof.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
        print(text.getvalue())


def _python_call_ns() -> float:
    """One empty Python call, for comparing hosts (the whole path is a few dozen of them)."""
    import time

    def nothing():
        return None

    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter_ns()
        for _ in range(10000):
            nothing()
        best = min(best, (time.perf_counter_ns() - t0) / 10000)
    return best


if __name__ == "__main__":
    main()
