"""Soak: 10,000 launches over mixed shapes and entry points must not grow host memory, device memory
or the set of loaded modules; 8 threads launching at once (cold caches) must get correct results.

Set NVFP4_SOAK_LAUNCHES to change the count (the issue asks for 10,000).
"""
import collections
import gc
import os
import threading
import tracemalloc

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import driver, ops, plans, testing
from nvfp4_driver.devmem import DeviceBuffer
from seeds import SEED  # tests/gpu is on sys.path (pytest's rootdir-less import)

torch = pytest.importorskip("torch")

LAUNCHES = int(os.environ.get("NVFP4_SOAK_LAUNCHES", 10_000))
NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")

# (group rows, N, K, tiles): empty groups, one-row groups, partial tiles, every tile shape.
SHAPES = [
    ([37, 0, 1, 128], 136, 384, dict(tile_n=128, tile_k=256)),
    ([5], 8, 128, dict(tile_n=32, swap_ab=False)),
    ([0, 0, 0], 64, 128, dict()),
    ([200, 13, 64, 1, 90, 7, 0, 33], 256, 512, dict(tile_n=64, tile_k=128)),
    ([300], 512, 256, dict(tile_n=128, tile_k=128, swap_ab=False)),
    ([17, 250], 96, 1024, dict(tile_n=32, tile_k=256)),
]


class Case:
    def __init__(self, rng, rows, n, k, tiles):
        self.p = testing.random_problem(rng, rows, n=n, k=k, row_offset=2, trailing_rows=3)
        self.tiles = tiles
        self.args = [torch.from_numpy(np.ascontiguousarray(getattr(self.p, name))).cuda() for name in NAMES]
        self.out = torch.empty((self.p.cum_m, n), dtype=torch.bfloat16, device="cuda")
        self.bufs = {name: DeviceBuffer.from_numpy(getattr(self.p, name)) for name in NAMES}
        self.out_buf = DeviceBuffer((self.p.cum_m, n), "bfloat16")
        self.rows = slice(int(self.p.m_indptr[0]), int(self.p.m_indptr[-1]))
        self.want = None

    def run(self, path: int):
        a = self.args
        if path == 0:  # torch, out given (the fast path)
            nd.group_gemm_nvfp4_nt_groupwise(*a[:5], alpha=a[5], out=self.out, **self.tiles)
            return self.out
        if path == 1:  # torch, out allocated by the op
            return nd.group_gemm_nvfp4_nt_groupwise(*a[:5], alpha=a[5], **self.tiles)
        if path == 2:  # CAI buffers (the general path, device asked of the driver)
            b = self.bufs
            nd.group_gemm_nvfp4_nt_groupwise(b["a"], b["b"], b["a_scale"], b["b_scale"], b["m_indptr"],
                                             alpha=b["alpha"], out=self.out_buf, **self.tiles)
            return self.out_buf
        b, p = self.bufs, self.p  # raw pointers
        nd.group_gemm_nvfp4_nt_groupwise_ptr(*(b[name].ptr for name in NAMES), self.out_buf.ptr,
                                             num_groups=p.num_groups, n=p.n, k=p.k, cum_m=p.cum_m,
                                             a_scale_nbytes=b["a_scale"].nbytes, **self.tiles)
        return self.out_buf

    def bits(self, out):
        got = out.to_numpy() if isinstance(out, DeviceBuffer) else out.view(torch.int16).cpu().numpy()
        return got.view(np.uint16)[self.rows]


def host_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def counts():
    return (len(driver._libraries), len(driver._functions), len(driver._prepared), len(plans.array_plans),
            len(plans.torch_plans), len(plans.pointer_plans))


def test_soak_no_growth(rng):
    cases = [Case(rng, *shape) for shape in SHAPES]
    for case in cases:  # warm-up: modules, plans, torch's allocator pool
        ref, abs_sum = case.p.reference()
        for path in range(4):
            for _ in range(3):
                out = case.run(path)
            torch.cuda.synchronize()
            got = case.bits(out)
            if case.want is None:
                full = np.full((case.p.cum_m, case.p.n), 0, np.uint16)
                full[case.rows] = got
                assert testing.tolerance_check(full, ref, abs_sum, case.p.k, "bfloat16", m_indptr=case.p.m_indptr).ok
                case.want = got
            np.testing.assert_array_equal(got, case.want, err_msg=f"seed {SEED}")
    # Repeated torch calls never reach the general path (the fast path's key matches).
    general = []
    real_call = ops._call
    ops._call = lambda *args: general.append(1) or real_call(*args)
    try:
        for case in cases:
            case.run(0)
    finally:
        ops._call = real_call
    assert not general, "a repeated torch call took the general path"
    gc.collect()
    torch.cuda.synchronize()
    before = dict(counts=counts(), torch_alloc=torch.cuda.memory_allocated(), torch_reserved=torch.cuda.memory_reserved(),
                  free=driver.mem_get_info(0)[0], rss=host_rss())
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for i in range(LAUNCHES):
        case = cases[i % len(cases)]
        out = case.run((i // len(cases)) % 4)
        if i % 1000 == 999:
            torch.cuda.synchronize()
            np.testing.assert_array_equal(case.bits(out), case.want, err_msg=f"seed {SEED}, launch {i}")
    torch.cuda.synchronize()
    del out
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)
    top = "\n".join(str(s) for s in snap1.compare_to(snap0, "lineno")[:8])
    after = dict(counts=counts(), torch_alloc=torch.cuda.memory_allocated(), torch_reserved=torch.cuda.memory_reserved(),
                 free=driver.mem_get_info(0)[0], rss=host_rss())
    print(f"soak: {LAUNCHES} launches; python heap +{grown} B; rss {before['rss']} -> {after['rss']}; "
          f"device free {before['free']} -> {after['free']}; counts {before['counts']} -> {after['counts']}")
    assert after["counts"] == before["counts"]
    assert after["torch_alloc"] == before["torch_alloc"] and after["torch_reserved"] == before["torch_reserved"]
    assert abs(after["free"] - before["free"]) <= 2 << 20, (before["free"], after["free"])
    assert grown < 64 << 10, f"python heap grew by {grown} B:\n{top}"
    assert after["rss"] - before["rss"] < 16 << 20, (before["rss"], after["rss"])


def test_eight_threads_concurrently(rng, monkeypatch):
    """Cold caches, 8 threads released at once, each on its own stream with its own problem."""
    cases = [Case(rng, *SHAPES[i % len(SHAPES)]) for i in range(8)]
    for case in cases:
        case.want = case.bits(case.run(0))
    for cache in (plans.array_plans, plans.torch_plans, plans.pointer_plans, driver._prepared, driver._functions):
        cache.clear()  # the threads race to fill them again
    # Every construction counted, by its cache key: racing threads must build each thing once.
    made = collections.Counter()
    real_prepared, real_function = driver.PreparedKernel, driver._make_function

    def counted_prepared(spec, ordinal):
        made["prepared", spec, ordinal] += 1
        return real_prepared(spec, ordinal)

    def counted_function(spec, ordinal):
        made["function", spec.file, spec.symbol, ordinal] += 1
        return real_function(spec, ordinal)

    monkeypatch.setattr(driver, "PreparedKernel", counted_prepared)
    monkeypatch.setattr(driver, "_make_function", counted_function)
    barrier = threading.Barrier(len(cases))
    errors = []

    def work(t):
        try:
            case = cases[t]
            stream = torch.cuda.Stream()
            outs = [torch.empty_like(case.out) for _ in range(4)]
            barrier.wait()
            with torch.cuda.stream(stream):
                for i in range(200):
                    out = outs[i % 4]
                    nd.group_gemm_nvfp4_nt_groupwise(*case.args[:5], alpha=case.args[5], out=out, **case.tiles)
                    if i % 40 == 39:
                        stream.synchronize()
                        np.testing.assert_array_equal(case.bits(out), case.want, err_msg=f"thread {t}, seed {SEED}")
                    if i % 50 == 0:  # the other entry points too, on this thread's stream
                        p, b = case.p, case.bufs
                        buf = DeviceBuffer((p.cum_m, p.n), "bfloat16")
                        nd.group_gemm_nvfp4_nt_groupwise_ptr(
                            *(b[name].ptr for name in NAMES), buf.ptr, num_groups=p.num_groups, n=p.n, k=p.k,
                            cum_m=p.cum_m, a_scale_nbytes=b["a_scale"].nbytes, stream=stream.cuda_stream,
                            **case.tiles)
                        stream.synchronize()
                        np.testing.assert_array_equal(case.bits(buf), case.want, err_msg=f"thread {t} ptr")
        except BaseException as exc:  # reported by the main thread
            errors.append((t, repr(exc)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # One prepared kernel and one CUfunction per (kernel, device), however many threads raced for it.
    repeated = {key: n for key, n in made.items() if n != 1}
    assert not repeated, f"built more than once: {repeated}"
    assert {key[1:] for key in made if key[0] == "prepared"} == set(driver._prepared)
    assert {key[1:] for key in made if key[0] == "function"} == set(driver._functions)
