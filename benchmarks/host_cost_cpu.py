"""Where the host microseconds of one GEMM call go, per framework, on a machine without a GPU.

    python benchmarks/host_cost_cpu.py [--profile LABEL] [--calls 20000]

The driver layer is replaced by stand-ins (one sm_90 GPU; ``cuLaunchKernel`` and the context query
return at once; the pointer-to-device query is counted, not made), and each framework by a fake
producer that hands over what the real one does: a ``__cuda_array_interface__`` dict built per access
(``DeviceBuffer``; Numba's, after a contiguity walk, as numba-cuda 0.30 builds it), attributes (CuPy's;
Numba's ``gpu_data``, shape, strides, dtype, stream), a DLPack capsule built per call and
``unsafe_buffer_pointer()`` (JAX). So the figures are our Python only: a real producer's own cost
(CuPy's current-stream query, JAX's ``__dlpack__``) and the driver's come on top,
and ``benchmarks/bench_overhead.py`` measures those on the device. Each line: µs per call, the best round of
back-to-back calls (the host may be shared), the same problem as ``bench_overhead.py`` (one group of 16 rows, N=8,
K=128), and the driver pointer queries per call (each is four driver calls on the real path).
"""
from __future__ import annotations

import argparse
import cProfile
import ctypes
import io
import pstats
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import nvfp4_driver as nd  # noqa: E402
from nvfp4_driver import devmem, driver, plans, tensor_maps  # noqa: E402
try:
    from nvfp4_driver import launch_cache  # noqa: E402
except ImportError:  # a checkout from before the launch cache (for before/after comparisons)
    launch_cache = None
from nvfp4_driver.devmem import DeviceBuffer, _DType  # noqa: E402

BASE = 0x7F00_0000_0000  # addresses nobody dereferences
SHAPES = {"a": ((16, 64), "uint8"), "b": ((1, 8, 64), "uint8"), "a_scale": ((128, 8), "uint8"),
          "b_scale": ((1, 128, 8), "uint8"), "m_indptr": ((2,), "int32"), "alpha": ((1,), "float32"),
          "out": ((16, 8), "float16")}
_TYPESTR = {"uint8": "|u1", "int32": "<i4", "float32": "<f4", "float16": "<f2"}
_DL = {"uint8": (1, 8), "int32": (0, 32), "float32": (2, 32), "float16": (2, 16)}


# --- the driver layer, stood in for -------------------------------------------------------------------

class _Result(int):
    pass


class _FakeDriver:
    """cuda.bindings.driver as far as PreparedKernel.launch uses it: the primary context is current."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self, ctx):
        self.ctx = ctx

    def cuCtxGetCurrent(self):
        return 0, self.ctx

    def cuLaunchKernel(self, *args):
        return (0,)

    def cuMemFree(self, ptr):  # the fake DeviceBuffers at exit
        return (0,)


class _Ctx:
    def __int__(self):
        return 0xC0


POINTER_QUERIES = [0]
QUICK = [False]


def stand_in_driver() -> None:
    """One sm_90 GPU whose launches return at once; pointer queries counted."""
    ctx = _Ctx()
    driver._state["driver"] = _FakeDriver(ctx)
    driver._SUCCESS = 0
    info = driver.DeviceInfo(0, "stand-in", (9, 0), 132, 232448, 80 << 30)
    driver.device_info = lambda ordinal: info
    driver.function = lambda spec, ordinal: "FN"
    driver.primary_context = lambda ordinal: ctx

    def pointer_device(ptr):
        POINTER_QUERIES[0] += 1
        return 0
    driver.pointer_device = pointer_device
    # The problem is a few tiles, which a 9.0 GPU runs on a TMA kernel (sm90ws_splitk): its launch adds
    # tensor maps, encoded once per set of addresses and then looked up; the stand-in encodes none.
    tensor_maps.encode = lambda ptr, dims, strides, box, swizzle: bytes(128)


# --- producers ----------------------------------------------------------------------------------------

class _MemoryPointer:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id


class _CupyDevice:
    __slots__ = ("id",)

    def __init__(self, i):
        self.id = i


class FakeCupyArray:
    """cupy.ndarray's attributes and its per-access CAI dict."""

    __module__ = "cupy._core.core"

    def __init__(self, ptr, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.shape = shape
        item = self.dtype.itemsize
        self.strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * item for i in range(len(shape)))
        self.data = _MemoryPointer(ptr, 0)

    @property
    def device(self):
        return _CupyDevice(self.data.device_id)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "descr": [("", self.dtype.str)],
                "data": (self.data.ptr, False), "version": 3, "strides": None, "stream": 1}


class _DevicePointer:
    """cuda.bindings' CUdeviceptr as numba-cuda holds it: an address that int() reads."""

    __slots__ = ("ptr",)

    def __init__(self, ptr):
        self.ptr = ptr

    def __int__(self):
        return self.ptr


class _NumbaPointer:
    """numba.cuda's MemoryPointer as its arrays use it: ``device_pointer``, and the address as a new
    ctypes value built from it per access."""

    __slots__ = ("device_pointer",)

    def __init__(self, ptr):
        self.device_pointer = _DevicePointer(ptr)

    @property
    def device_ctypes_pointer(self):
        return ctypes.c_size_t(int(self.device_pointer))


class DeviceNDArrayBase:
    """numba.cuda's device array as the op sees it (numba-cuda 0.30): plain attributes (gpu_data, shape,
    strides, dtype, stream), the address through two properties, and a CAI v3 dict built per access
    after a contiguity walk over shape and strides."""

    def __init__(self, ptr, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * self.dtype.itemsize
                             for i in range(len(shape)))
        self.gpu_data, self.stream = _NumbaPointer(ptr), 0

    @property
    def device_ctypes_pointer(self):
        return self.gpu_data.device_ctypes_pointer

    @property
    def __cuda_array_interface__(self):
        size, contiguous = self.dtype.itemsize, True
        for extent, stride in zip(reversed(self.shape), reversed(self.strides)):
            if extent > 1 and stride != 0:
                if size != stride:
                    contiguous = False
                    break
                size *= extent
        stream = self.stream
        return {"shape": self.shape, "strides": None if contiguous else tuple(self.strides),
                "data": (self.device_ctypes_pointer.value or 0, False), "typestr": self.dtype.str,
                "stream": int(stream) if stream != 0 else None, "version": 3}


class FakeNumbaArray(DeviceNDArrayBase):
    """numba.cuda's DeviceNDArray (the class the op meets)."""


DeviceNDArrayBase.__module__ = FakeNumbaArray.__module__ = "numba.cuda.cudadrv.devicearray"


class FakeJaxArray:
    """A jax.Array on one GPU as the op sees it: DLPack (a capsule per call), unsafe_buffer_pointer."""

    __module__ = "jaxlib._jax"

    def __init__(self, ptr, shape, dtype):
        self.shape, self.dtype, self._ptr = shape, np.dtype(dtype), ptr
        self._keep = []

    def unsafe_buffer_pointer(self):
        return self._ptr

    def is_deleted(self):
        return False

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        code, bits = _DL[self.dtype.name]
        nd_ = len(self.shape)
        shape = (ctypes.c_int64 * nd_)(*self.shape)
        tensor = devmem.DLTensor(self._ptr, devmem.DLDevice(2, 0), nd_, devmem.DLDataType(code, bits, 1),
                                 ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)), None, 0)
        managed = devmem.DLManagedTensorVersioned(devmem.DLPackVersion(1, 0), None, None, 0, tensor)
        self._keep[:] = [shape, managed]
        return devmem._PyCapsule_New(ctypes.addressof(managed), b"dltensor_versioned", None)


def fake_buffer(ptr, shape, dtype):
    buf = object.__new__(DeviceBuffer)
    buf.shape, buf.dtype, buf.device, buf.stream = shape, _DType(dtype), 0, None
    buf.nbytes = int(np.prod(shape)) * buf.dtype.itemsize
    buf.ptr = ptr
    return buf


def arrays(make) -> list:
    return [make(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]


def install_fake_cupy() -> None:
    stream = types.SimpleNamespace(ptr=0)
    cuda = types.SimpleNamespace(get_current_stream=lambda device=None: stream)
    sys.modules["cupy"] = types.SimpleNamespace(ndarray=FakeCupyArray, cuda=cuda, __name__="cupy")


# --- timing -------------------------------------------------------------------------------------------

def us_per_call(fn, calls: int = 2000, rounds: int = 15) -> float:
    if QUICK[0]:
        calls, rounds = 50, 2
    for _ in range(calls):
        fn()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter_ns() - t0) / calls / 1e3)
    return min(per)  # CPU-bound: the least-disturbed round (the host is shared)


def clear() -> None:
    if launch_cache is not None:
        launch_cache.clear()


def paths() -> list[tuple[str, object]]:
    gemm, ptr_fn = nd.group_gemm_nvfp4_nt_groupwise, nd.group_gemm_nvfp4_nt_groupwise_ptr
    kernel = driver.prepared(driver.KernelSpec("probe", "probe", 32, 0, ("ptr", "i64", "i32", "f32")), 0)
    probe_args = (BASE, 1, 2, 3.0)
    out = []
    out.append(("bare launch (PreparedKernel.launch)", lambda: kernel.launch((1, 1, 1), 0, probe_args)))
    buf = arrays(fake_buffer)
    out.append(("DeviceBuffer, out=", lambda: gemm(*buf[:6], out=buf[6])))
    cp = arrays(FakeCupyArray)
    out.append(("CuPy (attributes), out=", lambda: gemm(*cp[:6], out=cp[6])))
    counter = [0]
    # Objects made ahead (a producer's own cost is not ours), used in turn.
    cupy_pool = [arrays(FakeCupyArray) for _ in range(64)]
    moved = [FakeCupyArray(BASE + (64 << 32) + 256 * i, *SHAPES["a"]) for i in range(64)]
    numba_pool = [arrays(FakeNumbaArray) for _ in range(64)]

    def turn(pool):
        counter[0] = (counter[0] + 1) % len(pool)
        return pool[counter[0]]

    def cupy_fresh():  # new objects at the addresses a memory pool hands out again: equal keys, a hit
        x = turn(cupy_pool)
        return gemm(*x[:6], out=x[6])

    def cupy_moved():  # a at another address every call: the launch cache misses, the plan hits
        clear()
        return gemm(turn(moved), *cp[1:6], out=cp[6])
    out.append(("CuPy, new objects, same addresses", cupy_fresh))
    out.append(("CuPy, a at a new address (cache miss)", cupy_moved))
    nb = arrays(FakeNumbaArray)
    out.append(("Numba (CAI), out=", lambda: gemm(*nb[:6], out=nb[6])))

    def numba_fresh():  # a new a each call (the weights stay): a launch cache miss
        clear()
        x = turn(numba_pool)
        x = [x[0]] + nb[1:]
        return gemm(*x[:6], out=x[6])
    out.append(("Numba, a new each call (cache miss)", numba_fresh))
    jx = arrays(FakeJaxArray)
    out.append(("JAX (DLPack), DeviceBuffer out=", lambda: gemm(*jx[:6], out=buf[6], stream=7)))
    ptrs = [x.ptr for x in buf]
    kw = dict(num_groups=1, n=8, k=128, cum_m=16, a_scale_nbytes=1024, out_dtype="float16", stream=0)
    out.append(("raw pointers, device=0", lambda: ptr_fn(*ptrs[:6], ptrs[6], device=0, **kw)))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default=None, help="cProfile the path whose label contains this text")
    parser.add_argument("--calls", type=int, default=20000, help="calls under --profile")
    parser.add_argument("--quick", action="store_true", help="few calls: that every path runs, not its time")
    args = parser.parse_args()
    QUICK[0] = args.quick
    stand_in_driver()
    install_fake_cupy()
    print(f"python {sys.version.split()[0]}; driver layer and producers stood in (no GPU)")
    rows = []
    for label, fn in paths():
        us = us_per_call(fn)
        POINTER_QUERIES[0] = 0
        for _ in range(128):
            fn()
        rows.append((label, us, POINTER_QUERIES[0] / 128))
    floor = rows[0][1]
    print(f"{'path':40} | {'us/call':>8} | {'x bare':>6} | pointer queries")
    for label, us, q in rows:
        print(f"{label:40} | {us:8.2f} | {us / floor:6.2f} | {q:.2f}")
    if args.profile:
        label, fn = next((lb, f) for lb, f in paths() if args.profile in lb)
        fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        print(f"--- {label}: {args.calls} calls ---")
        print(text.getvalue())


if __name__ == "__main__":
    main()
