"""Device memory and events with no framework: what ``demo``, ``selftest`` and raw-pointer users need.

``DeviceBuffer`` owns a cuMemAlloc allocation and exposes ``__cuda_array_interface__`` (v3) and
DLPack (``__dlpack__`` / ``__dlpack_device__``), so it can be passed to the public op like a CuPy
array, and handed to CuPy, Numba, torch (``torch.from_dlpack``) or JAX (``jax.numpy.from_dlpack``)
without a copy. It is also what the op returns when it allocates ``out`` for inputs that come from
neither torch nor CuPy (JAX, Numba, any other DLPack or CAI producer). Copies are synchronous.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from . import driver
from .driver import _ContextGuard, check
from .dlpack import (DLDataType, DLDevice, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor,
                     kDLCUDA)

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

    ``stream`` is the CUstream handle the buffer's last writer queued its work on (None: nothing
    pending, or the legacy default stream). The op sets it when it writes an output it allocated;
    ``__cuda_array_interface__`` reports it (CAI v3) and ``__dlpack__(stream=s)`` makes stream ``s``
    wait for it, so consumers on other streams read finished data.
    """

    def __init__(self, shape, dtype: str, device: int = 0):
        if dtype not in _NUMPY_OF:
            raise ValueError(f"dtype={dtype!r} must be one of {sorted(_NUMPY_OF)}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = _DType(dtype)
        self.device = device
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.stream: int | None = None
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
        # CAI forbids stream 0 (ambiguous); the legacy default stream is 1 there.
        stream = None if self.stream is None else (self.stream or 1)
        return {"version": 3, "shape": self.shape, "typestr": _TYPESTR[self.dtype.name],
                "data": (self.ptr, False), "strides": None, "stream": stream}

    def __dlpack_device__(self) -> tuple[int, int]:
        return (kDLCUDA, self.device)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule over this buffer (no copy): 'dltensor_versioned' when the consumer
        accepts DLPack 1.x (``max_version``), else the legacy 'dltensor'.

        ``stream``: the consumer's stream (DLPack's CUDA convention: None or 1 the legacy default
        stream, 2 the per-thread default stream, -1 no ordering wanted); it is made to wait for
        :attr:`stream`, the buffer's pending writer. The buffer stays alive until the consumer
        calls the capsule's deleter (or the unconsumed capsule is collected).
        """
        if copy:
            raise BufferError("DeviceBuffer exports without a copy only (copy=True was asked)")
        if dl_device is not None and tuple(dl_device) != (kDLCUDA, self.device):
            raise BufferError(f"DeviceBuffer lives on (kDLCUDA, {self.device}), not {tuple(dl_device)}")
        if stream is not None and (isinstance(stream, bool) or not isinstance(stream, int) or stream == 0
                                   or stream < -1):
            raise ValueError(f"stream={stream!r} is not a DLPack CUDA stream (None, -1, 1, 2 or a handle)")
        consumer = 1 if stream is None else stream
        pending = self.stream
        if consumer != -1 and pending is not None and not (pending in (0, 1) and consumer in (0, 1)) \
                and pending != consumer:
            driver.stream_wait(consumer, pending, self.device)
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        return _export_capsule(self, versioned)

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


# --- DLPack export ------------------------------------------------------------------------------------
#
# A capsule points at a DLManagedTensor[Versioned] that we allocate with ctypes. _exports keeps the
# struct, its shape array and the DeviceBuffer alive (keyed by the struct's address) until its deleter
# runs: called by the consumer once it is done with the memory, or by the capsule's destructor when
# nobody consumed it. Both callbacks take the GIL through ctypes, from whatever thread calls them.

_DL_CODES = {"uint8": (1, 8), "int8": (0, 8), "int32": (0, 32), "float32": (2, 32), "float16": (2, 16),
             "bfloat16": (4, 16), "uint16": (1, 16)}
_exports: dict[int, tuple] = {}
_exports_lock = threading.Lock()
_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# PyObject* as c_void_p: the destructor runs while the capsule is being freed, so it must never be
# wrapped in a Python reference again.
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_PyCapsule_New = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", ctypes.pythonapi))
_NAME = b"dltensor"
_NAME_VERSIONED = b"dltensor_versioned"


@_DELETER
def _release(managed_address):
    with _exports_lock:
        _exports.pop(managed_address, None)


@_CAPSULE_DESTRUCTOR
def _capsule_destructor(capsule):
    # A consumed capsule was renamed ('used_dltensor...'): its consumer owns the deleter call.
    for name in (_NAME, _NAME_VERSIONED):
        if _PyCapsule_IsValid(capsule, name):
            _release(_PyCapsule_GetPointer(capsule, name))
            return


def _export_capsule(buf: DeviceBuffer, versioned: bool):
    code, bits = _DL_CODES[buf.dtype.name]
    ndim = len(buf.shape)
    shape = (ctypes.c_int64 * max(ndim, 1))(*buf.shape)
    tensor = DLTensor(buf.ptr, DLDevice(kDLCUDA, buf.device), ndim, DLDataType(code, bits, 1),
                       ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)), None, 0)  # strides NULL: C order
    deleter = ctypes.cast(_release, ctypes.c_void_p).value
    if versioned:
        managed = DLManagedTensorVersioned(DLPackVersion(1, 0), None, deleter, 0, tensor)
        name = _NAME_VERSIONED
    else:
        managed = DLManagedTensor(tensor, None, deleter)
        name = _NAME
    address = ctypes.addressof(managed)
    with _exports_lock:
        _exports[address] = (buf, managed, shape)
    return _PyCapsule_New(address, name, ctypes.cast(_capsule_destructor, ctypes.c_void_p))
