"""DLPack capsules read with ctypes, never consumed: the device pointer, shape, strides and dtype of
an array from any DLPack producer (JAX, and everything else without ``__cuda_array_interface__``),
and the structs that ``devmem.DeviceBuffer`` uses to export its own.

We neither rename a capsule to 'used_dltensor' nor call its deleter: the capsule stays owned by its
producer and its destructor releases the tensor when the capsule dies; callers keep the capsule (and
the producer's object) alive while the pointer is in use.
"""
from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

_U64 = 1 << 64


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides in elements of a C-contiguous array of ``shape``."""
    strides = []
    step = 1
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


kDLCPU, kDLCUDA, kDLCUDAHost, kDLROCM, kDLCUDAManaged = 1, 2, 3, 10, 13
DEVICE_NAMES = {kDLCPU: "CPU memory (kDLCPU)", kDLCUDAHost: "pinned host memory (kDLCUDAHost)",
                kDLROCM: "ROCm device memory (kDLROCM)",
                kDLCUDAManaged: "CUDA managed memory (kDLCUDAManaged)"}

# (type code, bits, lanes) -> canonical name. Codes from dlpack.h (DLPack 1.1). The only
# vector type is torch's float4_e2m1fn_x2, exported as two 4-bit lanes per (1-byte) element.
_DL_DTYPES: dict[tuple[int, int, int], str] = {
    (0, 8, 1): "int8", (0, 16, 1): "int16", (0, 32, 1): "int32", (0, 64, 1): "int64",
    (1, 8, 1): "uint8", (1, 16, 1): "uint16", (1, 32, 1): "uint32", (1, 64, 1): "uint64",
    (2, 16, 1): "float16", (2, 32, 1): "float32", (2, 64, 1): "float64",
    (4, 16, 1): "bfloat16",
    (6, 8, 1): "bool",
    (10, 8, 1): "float8_e4m3fn",
    (17, 4, 2): "float4_e2m1fn_x2",
}
_DLPACK_FLAG_READ_ONLY = 1 << 0
_DLPACK_FLAG_IS_COPIED = 1 << 1


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),  # NULL = C-contiguous; in elements
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):  # capsule "dltensor" (DLPack < 1.0 layout)
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):  # capsule "dltensor_versioned" (>= 1.0)
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64),
                ("dl_tensor", DLTensor)]


# Private prototypes instead of setting argtypes on ctypes.pythonapi's shared function objects,
# which other libraries in the process may have configured differently.
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))
_PyCapsule_GetName = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", ctypes.pythonapi))


class DLPackView(NamedTuple):
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str
    device_type: int
    device_id: int
    readonly: bool


def read_capsule(capsule: Any, name: str = "array") -> DLPackView:
    """Read a DLPack capsule's tensor description without consuming it.

    We neither rename the capsule to 'used_dltensor' nor call its deleter: the capsule stays
    owned by its producer, and its destructor releases the tensor when the capsule dies. The
    caller keeps the capsule (and the producer's object) alive while the pointer is in use.
    """
    if _PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        mt = DLManagedTensorVersioned.from_address(
            _PyCapsule_GetPointer(capsule, b"dltensor_versioned"))
        if mt.version.major != 1:
            # A different major version may change the struct layout we are about to read.
            raise ValueError(f"{name}: DLPack capsule has version {mt.version.major}."
                             f"{mt.version.minor}; nvfp4_driver reads major version 1")
        t = mt.dl_tensor
        # A copy made for us would swallow writes to an output: treat it as read-only.
        readonly = bool(mt.flags & (_DLPACK_FLAG_READ_ONLY | _DLPACK_FLAG_IS_COPIED))
    elif _PyCapsule_IsValid(capsule, b"dltensor"):
        t = DLManagedTensor.from_address(_PyCapsule_GetPointer(capsule, b"dltensor")).dl_tensor
        readonly = False
    else:
        found = (_PyCapsule_GetName(capsule) if type(capsule).__name__ == "PyCapsule"
                 else type(capsule).__name__)
        raise TypeError(f"{name}.__dlpack__() returned {found!r}, not a 'dltensor' or "
                        f"'dltensor_versioned' capsule (already consumed?)")
    ndim = t.ndim
    if ndim < 0 or (ndim > 0 and not t.shape):
        raise ValueError(f"{name}: DLPack tensor has ndim={ndim} and shape pointer {t.shape}")
    shape = tuple(t.shape[i] for i in range(ndim))
    strides = tuple(t.strides[i] for i in range(ndim)) if t.strides else c_strides(shape)
    code, bits, lanes = t.dtype.code, t.dtype.bits, t.dtype.lanes
    dtype = _DL_DTYPES.get((code, bits, lanes))
    if dtype is None:
        raise TypeError(f"{name} has DLPack dtype (code={code}, bits={bits}, lanes={lanes}), "
                        f"which nvfp4_driver does not support (supported: "
                        f"{', '.join(sorted(set(_DL_DTYPES.values())))})")
    ptr = ((t.data or 0) + t.byte_offset) % _U64
    return DLPackView(ptr, shape, strides, dtype, t.device.device_type, t.device.device_id,
                       readonly)


def call_dlpack(x: Any, stream: int | None) -> Any:
    # DLPack forbids stream=0 (ambiguous); our handle 0 is the legacy default, which is what
    # the producer assumes when no stream is passed at all.
    kwargs = {} if not stream else {"stream": stream}
    try:
        return x.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:
        # Producers older than DLPack 1.0 reject max_version: the array API standard's
        # recommended fallback is the legacy call, which returns a "dltensor" capsule.
        return x.__dlpack__(**kwargs)
