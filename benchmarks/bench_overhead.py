"""Host overhead per call: what Python costs on each entry point, against an empty kernel's launch.

    python benchmarks/bench_overhead.py [--csv docs/bench/host_overhead_h200.csv] [--profile LABEL]

The GEMM is the smallest there is (one group of 16 rows, N=8, K=128: one block), so the GPU keeps up
and the host clock measures the host. Every path runs in the same process, in three interleaved passes
(the best of each kept), and each line gives: median µs per call | its ratio to the bare launch of the
empty probe kernel through our driver layer | the issue-15 target for that ratio and whether it is met.
Frameworks that are not installed (CuPy, Numba, JAX, cuda.core) are skipped with one line each.

Also measured, for issue 15 item 4: cuda.core's ``launch`` of the same probe kernel (the cubin loaded
with ``ObjectCode.from_cubin``); the GEMM kernel the op launches for this problem (its spec, grid and
arguments, taken from the launch cache after one call) through ``PreparedKernel.launch``, through
cuda.core's ``launch`` with the arguments typed ahead, and through ``core_launch.CoreKernel`` (cuda.core
with PreparedKernel's interface, typing per call); and the cost of reading one array with cuda.core's
``StridedMemoryView`` (DLPack and ``__cuda_array_interface__``) against our reader (``tensors.as_device_array``).
``--csv`` writes every line, the GPU and the versions, for docs/bench/.
"""
from __future__ import annotations

import argparse
import cProfile
import csv
import datetime
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
from nvfp4_driver import driver, launch_cache, registry, tensors, variants  # noqa: E402
from nvfp4_driver.devmem import DeviceBuffer  # noqa: E402

NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")
BARE = "empty probe: PreparedKernel.launch"
# Issue 15's targets, as ratios to the bare launch measured in the same run.
TARGETS = {"torch, out=": 1.5, "torch.ops.nvfp4_driver (custom op, eager)": 2.5,
           "torch.ops.nvfp4_driver ..._out (custom op, eager, out given)": 2.5,
           "DeviceBuffer (CAI), out=": 2.5, "CuPy, out=": 2.5, "Numba (CAI), out=": 2.5,
           "JAX, DeviceBuffer out=": 2.5}


class DLPackOnly:
    """Only the DLPack half of a torch tensor (a torch tensor itself takes our torch reader)."""

    def __init__(self, t):
        self.t = t

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()

    def __dlpack__(self, **kw):
        return self.t.__dlpack__(**kw)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", default=None, help="write the table here (e.g. docs/bench/host_overhead_h200.csv)")
    parser.add_argument("--profile", default=None, help="cProfile the path whose label contains this text")
    args = parser.parse_args()
    require_cuda("bench_overhead.py")
    banner = gpu_banner()
    print(banner)
    versions = f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda-core {_cuda_core_version()}"
    print(f"{versions}, cpu {os.cpu_count()} cores")
    p = testing_problem()
    paths = []  # (label, fn); measured below in interleaved passes
    readers = []  # (label, fn): one array read, not a GEMM call

    def measure(label, fn, into=paths):
        fn()
        torch.cuda.synchronize()
        into.append((label, fn))

    def skip(what, exc):
        print(f"{what}: skipped ({type(exc).__name__}: {exc})")

    # The floor: the empty probe kernel through the driver layer.
    cap = driver.device_info(0).capability
    probe = variants.probe_spec(cap)
    probe_out = DeviceBuffer((8,), "int32")
    stream = torch.cuda.current_stream().cuda_stream
    kernel = driver.prepared(probe, 0)
    probe_args = registry.probe().args(out=probe_out.ptr, i64=1, i32=2, f32=3.0)
    measure(BARE, lambda: kernel.launch((1, 1, 1), stream, probe_args))
    measure("empty probe: driver.launch(spec, ...)", lambda: driver.launch(probe, 0, (1, 1, 1), stream, probe_args))
    try:
        core_launch, core_launch_handle = cuda_core_probe(probe, probe_out.ptr, stream)
        measure("empty probe: cuda.core launch (Stream object kept)", core_launch)
        measure("empty probe: cuda.core launch (Stream.from_handle per call)", core_launch_handle)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional peer is reported, and the rest runs
        skip("cuda.core launch", exc)

    t = [torch.from_numpy(np.ascontiguousarray(getattr(p, name))).cuda() for name in NAMES]
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    gemm = nd.group_gemm_nvfp4_nt_groupwise
    calls = {"torch, out=": lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out)}
    measure("torch, out=", calls["torch, out="])
    measure("torch, out=None (op allocates)", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5]))
    side = torch.cuda.Stream()
    measure("torch, out=, stream=torch.cuda.Stream", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out,
                                                                  stream=side))
    from nvfp4_driver import torch_ops  # noqa: F401
    op = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise
    measure("torch.ops.nvfp4_driver (custom op, eager)", lambda: op(t[0], t[1], t[2], t[3], t[4], t[5]))
    op_out = torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out
    measure("torch.ops.nvfp4_driver ..._out (custom op, eager, out given)",
            lambda: op_out(t[0], t[1], t[2], t[3], t[4], t[5], out))
    measure("torch, out=, check_inputs=True (syncs)", lambda: gemm(t[0], t[1], t[2], t[3], t[4], t[5], out=out,
                                                                   check_inputs=True))

    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in NAMES}
    out_buf = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    b = [bufs[name] for name in NAMES]
    calls["DeviceBuffer (CAI), out="] = lambda: gemm(b[0], b[1], b[2], b[3], b[4], b[5], out=out_buf)
    measure("DeviceBuffer (CAI), out=", calls["DeviceBuffer (CAI), out="])
    measure("DeviceBuffer, out=, launch cache cleared (general path)", uncached(calls["DeviceBuffer (CAI), out="]))
    gemm_launch = op_launch(calls["DeviceBuffer (CAI), out="])
    if gemm_launch is None:
        print("GEMM kernel launch lines: skipped (no PreparedKernel launch recorded for the op's call: a TMA kernel?)")
    else:
        gemm_kernel, grid, gemm_args = gemm_launch  # not `kernel`: the probe's lambda above reads that name
        measure("GEMM kernel: PreparedKernel.launch", lambda: gemm_kernel.launch(grid, stream, gemm_args))
        try:
            core_gemm, core_kernel = cuda_core_gemm(gemm_kernel.spec, grid, gemm_args, stream)
            measure("GEMM kernel: cuda.core launch (args typed ahead, Stream kept)", core_gemm)
            measure("GEMM kernel: core_launch.CoreKernel.launch (typed per call)",
                    lambda: core_kernel.launch(grid, stream, gemm_args))
        except Exception as exc:  # noqa: BLE001 - any failure of the optional peer is reported, and the rest runs
            skip("cuda.core GEMM launch", exc)
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
        calls["CuPy, out="] = lambda: gemm(c[0], c[1], c[2], c[3], c[4], c[5], out=c_out)
        measure("CuPy, out=", calls["CuPy, out="])
        measure("CuPy, out=, launch cache cleared (general path)", uncached(calls["CuPy, out="]))
    except ImportError as exc:
        skip("cupy", exc)
        c = None
    try:
        from numba import cuda as numba_cuda
        nb = [numba_cuda.to_device(np.ascontiguousarray(getattr(p, name))) for name in NAMES]
        nb_out = numba_cuda.device_array((p.cum_m, p.n), dtype=np.float16)
        calls["Numba (CAI), out="] = lambda: gemm(nb[0], nb[1], nb[2], nb[3], nb[4], nb[5], out=nb_out)
        measure("Numba (CAI), out=", calls["Numba (CAI), out="])
        measure("Numba, out=, launch cache cleared (general path)", uncached(calls["Numba (CAI), out="]))
    except ImportError as exc:
        skip("numba", exc)
        nb = None
    try:
        import jax.numpy as jnp
        j = [jnp.asarray(getattr(p, name)) for name in NAMES]
        for x in j:
            x.block_until_ready()
        calls["JAX, DeviceBuffer out="] = lambda: gemm(j[0], j[1], j[2], j[3], j[4], j[5], out=out_buf)
        measure("JAX, DeviceBuffer out=", calls["JAX, DeviceBuffer out="])
        measure("JAX, out=, launch cache cleared (general path)", uncached(calls["JAX, DeviceBuffer out="]))
    except (ImportError, RuntimeError, ValueError) as exc:  # not installed, or no GPU backend (arrays on the CPU)
        skip("jax", exc)

    # Readers: one array described, ours against cuda.core's StridedMemoryView.
    measure("read torch tensor: ours (torch attributes)", lambda: tensors.as_device_array(t[0], "a"), readers)
    dl = DLPackOnly(t[0])
    measure("read DLPack: ours (capsule via ctypes)", lambda: tensors.as_device_array(dl, "a"), readers)
    measure("read DeviceBuffer: ours (CAI)", lambda: tensors.as_device_array(b[0], "a"), readers)
    if c is not None:
        measure("read CuPy: ours (attributes)", lambda: tensors.as_device_array(c[0], "a"), readers)
    if nb is not None:
        measure("read Numba: ours (CAI)", lambda: tensors.as_device_array(nb[0], "a"), readers)
    try:
        from cuda.core.utils import StridedMemoryView as SMV
        # stream_ptr=-1: the consumer asks for no synchronisation with the producer's stream (DLPack's
        # stream=-1, CAI's "no sync"), which is what our reader does too: it records nothing and waits on
        # nothing, so both sides time a pure read. (None is refused for CUDA tensors as ambiguous.)
        NO_SYNC = -1
        measure("read torch tensor: StridedMemoryView.from_dlpack", lambda: SMV.from_dlpack(t[0], NO_SYNC), readers)
        measure("read torch tensor: StridedMemoryView.from_any_interface",
                lambda: SMV.from_any_interface(t[0], NO_SYNC), readers)
        measure("read DLPack: StridedMemoryView.from_dlpack", lambda: SMV.from_dlpack(dl, NO_SYNC), readers)
        measure("read DeviceBuffer: StridedMemoryView.from_cuda_array_interface",
                lambda: SMV.from_cuda_array_interface(b[0], NO_SYNC), readers)
        if c is not None:
            measure("read CuPy: StridedMemoryView.from_cuda_array_interface",
                    lambda: SMV.from_cuda_array_interface(c[0], NO_SYNC), readers)
        if nb is not None:
            measure("read Numba: StridedMemoryView.from_cuda_array_interface",
                    lambda: SMV.from_cuda_array_interface(nb[0], NO_SYNC), readers)
    except Exception as exc:  # noqa: BLE001 - the optional peer's failure is reported, the rest runs
        skip("cuda.core StridedMemoryView", exc)

    # Three passes over every path, interleaved, the best median of each: a host's clock ramp or a
    # neighbour's burst then hits one pass of every path rather than every pass of one path.
    best = {label: float("inf") for label, _fn in paths + readers}
    for _ in range(3):
        for label, fn in paths + readers:
            best[label] = min(best[label], host_us_per_call(fn, rounds=20))
    floor = best[BARE]
    print(f"host calibration: an empty Python function call takes {_python_call_ns():.0f} ns here")
    print(f"{'path':62} | {'us/call':>8} | {'x bare':>6} | target")
    table = []
    for label, _fn in paths:
        us = best[label]
        target = TARGETS.get(label)
        verdict = "" if target is None else f"<= {target}x: {'PASS' if us / floor <= target else 'FAIL'}"
        print(f"{label:62} | {us:8.2f} | {us / floor:6.2f} | {verdict}")
        table.append(("call", label, us, us / floor, target, verdict.split(": ")[-1] if verdict else ""))
    print(f"{'one array read (not a call)':62} | {'us':>8} |")
    for label, _fn in readers:
        print(f"{label:62} | {best[label]:8.2f} |")
        table.append(("read", label, best[label], best[label] / floor, None, ""))
    if args.csv:
        write_csv(args.csv, table, banner, versions)
        print(f"wrote {args.csv}")

    if args.profile:
        label, fn = next((lb, f) for lb, f in paths if args.profile in lb)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            fn()
        prof.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(20)
        print(f"--- {label} ---\n{text.getvalue()}")


def testing_problem():
    from nvfp4_driver import testing
    return testing.random_problem(np.random.default_rng(0), [16], n=8, k=128, row_offset=0, trailing_rows=0)


def uncached(call):
    """``call`` with launch_cache emptied first: the general path every time (what a call with new arrays
    pays; the plan by metadata still hits)."""
    def run():
        launch_cache.clear()
        return call()
    return run


def cuda_core_probe(spec, out_ptr: int, stream: int):
    """cuda.core's launch of our probe kernel (the same cubin or PTX), on ``stream``: with a Stream object
    made once, and with one made from the int handle per call (what our entry points receive)."""
    from cuda.core import LEGACY_DEFAULT_STREAM, Device, LaunchConfig, ObjectCode, Stream, launch

    def as_stream(handle):  # 0 is the legacy default stream, which cuda.core names rather than wraps
        return Stream.from_handle(handle) if handle else LEGACY_DEFAULT_STREAM

    Device(0).set_current()
    data = (driver.CUBIN_DIR / spec.file).read_bytes()
    code = ObjectCode.from_ptx(data) if spec.file.endswith(".ptx") else ObjectCode.from_cubin(data)
    kernel = code.get_kernel(spec.symbol)
    config = LaunchConfig(grid=(1, 1, 1), block=(spec.threads, 1, 1), shmem_size=spec.smem_bytes)
    args = (out_ptr, np.int64(1), np.int32(2), np.float32(3.0))  # the probe's (ptr, i64, i32, f32)
    s = as_stream(stream)
    return (lambda: launch(s, config, kernel, *args),
            lambda: launch(as_stream(stream), config, kernel, *args))


def op_launch(call):
    """(PreparedKernel, grid, arguments) of the launch the op made for ``call`` (a general-path call: its
    launch cache entry holds them), or None where the op's launcher is not a PreparedKernel."""
    launch_cache.clear()
    call()
    entries = list(launch_cache._entries.values())
    entry = entries[0] if len(entries) == 1 else None
    kernel = getattr(getattr(entry, "launch", None), "__self__", None)
    if not isinstance(kernel, driver.PreparedKernel) or entry.args is None:
        return None
    return kernel, entry.grid, entry.args


def cuda_core_gemm(spec, grid, args, stream: int):
    """cuda.core's launch of the op's GEMM kernel with its arguments typed once, ahead (the least cuda.core
    can cost a call), and a core_launch.CoreKernel of the same spec."""
    from cuda.core import LEGACY_DEFAULT_STREAM, LaunchConfig, Stream, launch

    from benchmarks import core_launch
    core_kernel = core_launch.CoreKernel(spec, 0)
    typed = [core_launch._CONVERT[t](a) for t, a in zip(spec.param_types, args)]
    config = LaunchConfig(grid=grid, block=(spec.threads, 1, 1), shmem_size=spec.smem_bytes)
    s = Stream.from_handle(stream) if stream else LEGACY_DEFAULT_STREAM
    return (lambda: launch(s, config, core_kernel.kernel, *typed)), core_kernel


def _cuda_core_version() -> str:
    try:
        import cuda.core
    except ImportError:
        return "not installed"
    return getattr(cuda.core, "__version__", "unknown")


def write_csv(path: str, table, banner: str, versions: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "path", "us_per_call", "x_bare_launch", "target_x", "verdict", "gpu", "versions", "date"])
        today = datetime.date.today().isoformat()
        for kind, label, us, ratio, target, verdict in table:
            w.writerow([kind, label, f"{us:.2f}", f"{ratio:.2f}", "" if target is None else target, verdict, banner,
                        versions, today])


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
