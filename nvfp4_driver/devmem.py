"""Device memory and events with no framework: what ``demo``, ``selftest`` and raw-pointer users need.

``DeviceBuffer`` owns a cuMemAlloc allocation and exposes ``__cuda_array_interface__``, so it can be
passed to the public op like a CuPy array (and to CuPy/Numba themselves). Copies are synchronous.
"""
from __future__ import annotations

import numpy as np

from . import driver
from .driver import _ContextGuard, check

_NUMPY_OF = {"uint8": np.uint8, "int8": np.int8, "int32": np.int32, "float32": np.float32,
             "float16": np.float16, "bfloat16": np.uint16, "uint16": np.uint16}
_TYPESTR = {"uint8": "|u1", "int8": "|i1", "int32": "<i4", "float32": "<f4", "float16": "<f2",
            "uint16": "<u2", "bfloat16": "<V2"}


class _DType:
    """Names a dtype numpy lacks (bfloat16): the marshaller reads ``dtype.name`` for 'V' typestrs."""

    def __init__(self, name: str):
        self.name = name
        self.itemsize = np.dtype(_NUMPY_OF[name]).itemsize

    def __repr__(self):
        return self.name


class DeviceBuffer:
    """A C-contiguous device array of ``shape`` and ``dtype`` (a name from ``_NUMPY_OF``) on GPU ``device``.

    bfloat16 buffers travel to and from the host as their uint16 bit patterns.
    """

    def __init__(self, shape, dtype: str, device: int = 0):
        if dtype not in _NUMPY_OF:
            raise ValueError(f"dtype={dtype!r} must be one of {sorted(_NUMPY_OF)}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = _DType(dtype)
        self.device = device
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = 0
        drv = driver.driver()
        with _ContextGuard(device):
            self.ptr = int(check(drv.cuMemAlloc(max(self.nbytes, 1)), "cuMemAlloc"))

    @classmethod
    def from_numpy(cls, array: np.ndarray, dtype: str | None = None, device: int = 0) -> "DeviceBuffer":
        array = np.ascontiguousarray(array)
        buf = cls(array.shape, dtype or array.dtype.name, device)
        if array.nbytes != buf.nbytes:
            raise ValueError(f"{array.nbytes} host bytes for a {buf.nbytes}-byte {buf.dtype} buffer")
        if buf.nbytes:
            with _ContextGuard(device):
                check(driver.driver().cuMemcpyHtoD(buf.ptr, array, buf.nbytes), "cuMemcpyHtoD")
        return buf

    def fill_bytes(self, value: int) -> None:
        """Set every byte to ``value`` (poisoning outputs before a test)."""
        with _ContextGuard(self.device):
            check(driver.driver().cuMemsetD8(self.ptr, value, self.nbytes), "cuMemsetD8")

    def to_numpy(self) -> np.ndarray:
        """A host copy; waits for all work on the device's streams that the legacy stream waits for."""
        host = np.empty(self.shape, dtype=_NUMPY_OF[self.dtype.name])
        if self.nbytes:
            with _ContextGuard(self.device):
                check(driver.driver().cuMemcpyDtoH(host, self.ptr, self.nbytes), "cuMemcpyDtoH")
        return host

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"version": 3, "shape": self.shape, "typestr": _TYPESTR[self.dtype.name],
                "data": (self.ptr, False), "strides": None, "stream": None}

    def __del__(self):
        if self.ptr and driver._state.get("driver") is not None:
            try:
                with _ContextGuard(self.device):
                    driver._state["driver"].cuMemFree(self.ptr)
            except driver.CudaError:
                pass  # the context is gone at interpreter exit; the driver reclaims the memory
            self.ptr = 0


def time_ms(run, iters: int = 50, warmup: int = 5, stream: int = 0, device: int = 0) -> list[float]:
    """Per-iteration times in ms of ``run()`` (which enqueues work on ``stream``), by CUDA events."""
    drv = driver.driver()
    with _ContextGuard(device):
        start = check(drv.cuEventCreate(0), "cuEventCreate")
        stop = check(drv.cuEventCreate(0), "cuEventCreate")
        try:
            for _ in range(warmup):
                run()
            times = []
            for _ in range(iters):
                check(drv.cuEventRecord(start, stream), "cuEventRecord")
                run()
                check(drv.cuEventRecord(stop, stream), "cuEventRecord")
                check(drv.cuEventSynchronize(stop), "cuEventSynchronize")
                times.append(float(check(drv.cuEventElapsedTime(start, stop), "cuEventElapsedTime")))
            return times
        finally:
            drv.cuEventDestroy(start)
            drv.cuEventDestroy(stop)
