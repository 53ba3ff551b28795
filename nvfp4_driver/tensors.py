"""Caller objects -> device pointers, streams and outputs, with loud errors.

Everything the launch path needs from a caller's array is a `DeviceArray`: a device address,
shape and strides in elements, a canonical dtype name and the device ordinal when known.
`as_device_array` builds one from

1. a ``torch.Tensor`` (the hot path: attribute reads only, no protocol dictionaries);
2. an object with ``__cuda_array_interface__`` (CuPy, Numba, JAX for most dtypes; v0-v3);
3. an object with ``__dlpack__`` / ``__dlpack_device__`` (JAX bfloat16, anything else),
   whose capsule is read with ctypes and never consumed.

Anything else (host memory, lists, None, unknown objects) is refused with a message that names
the argument and what was found. Nothing here touches the GPU or imports torch/CuPy unless the
caller handed us such an object, so the refusals are testable on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .dlpack import DEVICE_NAMES, _U64, c_strides, call_dlpack, kDLCUDA, read_capsule

__all__ = [
    "DeviceArray",
    "as_device_array",
    "raw_pointer_array",
    "check_array",
    "check_same_device",
    "resolve_stream",
    "allocate",
    "dtype_name",
    "canonical_out_dtype",
]

# Canonical dtype name -> bytes per element. These names are the only spelling the rest of
# the package compares against. float4_e2m1fn_x2 is torch's packed pair (one byte, two codes).
_ITEMSIZE: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "float8_e4m3fn": 1, "float4_e2m1fn_x2": 1,
    "uint16": 2, "int16": 2, "float16": 2, "bfloat16": 2,
    "uint32": 4, "int32": 4, "float32": 4,
    "uint64": 8, "int64": 8, "float64": 8,
}

@dataclass(frozen=True)
class DeviceArray:
    """A strided view of device memory, as the launch path sees it.

    ptr       device address of element [0, ..., 0] (byte offsets already applied)
    shape     sizes per dimension
    strides   in ELEMENTS, not bytes (C-contiguous strides filled in where the source said None)
    dtype     canonical name: 'uint8', 'int32', 'float32', 'float16', 'bfloat16', ...
    device    CUDA device ordinal; None where the source does not say (raw pointers, Numba/CAI);
              the driver layer then resolves it from the pointer
    framework 'torch' | 'cupy' | 'cai' | 'dlpack' | 'raw'
    obj       the caller's object: kept alive as long as this view, and used to allocate
              outputs in the same framework
    readonly  the producer said the memory must not be written (CAI data[1], DLPack flags)
    stream    the producer's stream from CAI v3 ('stream' key), a CUstream handle; None if absent
    keepalive anything else whose lifetime must cover the view (the DLPack capsule)
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str
    device: int | None
    framework: str
    # Excluded from ==/hash: comparing two torch tensors with == is elementwise, not a bool.
    obj: object = field(repr=False, compare=False)
    readonly: bool = False
    stream: int | None = None
    keepalive: object = field(default=None, repr=False, compare=False)

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.dtype]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of the logical elements (numel * itemsize), not of the strided span."""
        return self.numel * self.itemsize

    @property
    def is_contiguous(self) -> bool:
        """C order. Dimensions of size 1 may carry any stride, and an empty array is contiguous:
        frameworks disagree on the strides they report there, and no address depends on them."""
        if 0 in self.shape:
            return True
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


# ---------------------------------------------------------------------------------------------
# as_device_array
# ---------------------------------------------------------------------------------------------

def as_device_array(x: Any, name: str, *, stream: int | None = None) -> DeviceArray:
    """Describe the CUDA device memory behind `x`, without copying it.

    x       torch.Tensor on a CUDA device, an object with __cuda_array_interface__ (CuPy, Numba,
            JAX), an object with __dlpack__/__dlpack_device__ on kDLCUDA, or a DeviceArray
            (returned unchanged).
    name    the argument's name, used in every error message ('a', 'b_scale', 'out', ...).
    stream  only used for DLPack producers: the CUstream handle the array will be used on, handed
            to ``x.__dlpack__(stream=...)`` so the producer orders its pending writes before our
            launch. None or 0 means the legacy default stream, which is also DLPack's default.

    Raises TypeError for objects that are not device arrays (None, lists, numpy arrays, objects
    with no protocol, unsupported dtypes) and ValueError for arrays in the wrong memory space
    (CPU torch tensors, DLPack devices other than kDLCUDA) or malformed protocol data.
    """
    # Hot path first: a module-name test is cheaper than isinstance against an imported class.
    if type(x).__module__.startswith("torch") and hasattr(x, "data_ptr"):
        return _from_torch(x, name)
    if isinstance(x, DeviceArray):
        return x
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):  # user-defined Tensor subclasses
        return _from_torch(x, name)
    if type(x) is _CUPY_NDARRAY[0]:
        arr = _from_cupy(x)
        if arr is not None:
            return arr

    try:
        cai = x.__cuda_array_interface__
    except AttributeError:
        # Absent, or declined: JAX raises AttributeError for dtypes it cannot describe this way
        # (bfloat16, fp8) and for non-GPU arrays; those still reach us through DLPack below.
        cai = None
    if cai is not None:
        return _from_cai(x, cai, name)

    if x is None:
        raise TypeError(f"{name} is None but a CUDA device array is required")
    if isinstance(x, (list, tuple, int, float, complex, bytes, bytearray, memoryview)):
        raise TypeError(
            f"{name} is a Python {type(x).__name__}; nvfp4_driver needs a CUDA device array "
            f"(torch.Tensor on cuda, CuPy/Numba array, or a DLPack-capable GPU array)")
    module = type(x).__module__
    host = hasattr(x, "__array_interface__") and not hasattr(x, "__dlpack_device__")
    if module == "numpy" or host:
        raise TypeError(
            f"{name} is a {module}.{type(x).__name__} in host memory; nvfp4_driver needs CUDA "
            f"device memory — copy it to the GPU first (torch.from_numpy(...).cuda(), "
            f"cupy.asarray(...), jax.device_put(...))")
    if hasattr(x, "__dlpack_device__") and hasattr(x, "__dlpack__"):
        return _from_dlpack(x, name, stream)
    raise TypeError(
        f"{name} is a {module}.{type(x).__qualname__}, which exposes none of "
        f"torch.Tensor, __cuda_array_interface__ or __dlpack__/__dlpack_device__; "
        f"nvfp4_driver needs a CUDA device array")


# --- torch ------------------------------------------------------------------------------------

_TORCH_DTYPES: dict[Any, str] = {}


def _torch_dtype_table() -> dict[Any, str]:
    # Built on first use from the already-imported torch, so importing this module never
    # imports torch. getattr because older torch builds lack some of these dtypes.
    if not _TORCH_DTYPES:
        torch = sys.modules["torch"]
        for canon in _ITEMSIZE:
            dt = getattr(torch, canon, None)
            if dt is not None:
                _TORCH_DTYPES[dt] = canon
    return _TORCH_DTYPES


def _from_torch(x: Any, name: str) -> DeviceArray:
    dev = x.device
    if dev.type != "cuda":
        where = "on the CPU" if dev.type == "cpu" else "not on a CUDA device"
        raise ValueError(
            f"{name} is {where} (torch device '{dev}'); nvfp4_driver needs CUDA device memory "
            f"— move it with .cuda() or .to('cuda')")
    dtype = _TORCH_DTYPES.get(x.dtype) or _torch_dtype_table().get(x.dtype)
    if dtype is None:
        raise TypeError(f"{name}.dtype={x.dtype} has no counterpart in nvfp4_driver "
                        f"(supported: {', '.join(_ITEMSIZE)})")
    return _fast_device_array(x.data_ptr(), tuple(x.shape), x.stride(), dtype, dev.index,
                              "torch", x)


_new = object.__new__


def _fast_device_array(ptr, shape, strides, dtype, device, framework, obj) -> DeviceArray:
    # The frozen dataclass __init__ pays one object.__setattr__ per field (about 2 us for ten
    # fields, most of the torch path); filling __dict__ directly builds the same object in
    # about 0.7 us. tests/test_tensors.py checks it stays equal to the regular constructor.
    d = _new(DeviceArray)
    d.__dict__.update({"ptr": ptr, "shape": shape, "strides": strides, "dtype": dtype,
                       "device": device, "framework": framework, "obj": obj,
                       "readonly": False, "stream": None, "keepalive": None})
    return d


# --- __cuda_array_interface__ -----------------------------------------------------------------

# (kind, itemsize) of a typestr -> canonical name. 'V' (void) is handled separately.
_TYPESTR: dict[tuple[str, int], str] = {
    ("b", 1): "bool",
    ("u", 1): "uint8", ("u", 2): "uint16", ("u", 4): "uint32", ("u", 8): "uint64",
    ("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32", ("i", 8): "int64",
    ("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64",
}


def _typestr_name(typestr: Any, x: Any, name: str) -> str:
    """Canonical name of a numpy array-interface typestr ('|u1', '<f2', ...).

    bfloat16 and fp8 have no typestr of their own: ml_dtypes (what CuPy uses for bfloat16)
    reports them as raw bytes, '<V2' / '|V1', with an uninformative descr. We accept a 'V'
    typestr only when the object's own ``.dtype`` names an ml_dtypes type of that size;
    a bare '<V2' is refused, since it may just as well be a 2-byte struct.
    """
    if not isinstance(typestr, str) or len(typestr) < 3 or not typestr[2:].isdigit():
        raise ValueError(f"{name}.__cuda_array_interface__['typestr']={typestr!r} is not a "
                         f"numpy typestr such as '|u1' or '<f2'")
    order, kind, size = typestr[0], typestr[1], int(typestr[2:])
    if order == ">" and size > 1:
        raise ValueError(f"{name} is big-endian (typestr {typestr!r}); GPUs are little-endian")
    if kind == "V":
        dt_name = str(getattr(getattr(x, "dtype", None), "name", ""))
        if dt_name in ("bfloat16", "float8_e4m3fn") and _ITEMSIZE[dt_name] == size:
            return dt_name
        raise TypeError(f"{name} has typestr {typestr!r} (raw bytes) and dtype "
                        f"{dt_name or 'unknown'}; only ml_dtypes bfloat16/float8_e4m3fn arrays "
                        f"are read from a 'V' typestr")
    canon = _TYPESTR.get((kind, size))
    if canon is None:
        raise TypeError(f"{name} has typestr {typestr!r}, which nvfp4_driver does not support "
                        f"(supported: {', '.join(_ITEMSIZE)})")
    return canon


_SIMPLE_TYPESTR: dict[str, str] = {}  # typestr -> canonical name, for typestrs that need no .dtype
_CAI_SHAPES: dict[tuple, tuple] = {}   # C-order shape seen before -> (shape as ints, its strides)


def _from_cai(x: Any, cai: Any, name: str) -> DeviceArray:
    # Called for every CAI argument of every call (CuPy, Numba, DeviceBuffer): the common case takes
    # exact-type tests and dictionary lookups only; the checks and messages are those of the general case.
    if type(cai) is not dict and not isinstance(cai, Mapping):
        raise TypeError(f"{name}.__cuda_array_interface__ is a {type(cai).__name__}, not a dict")
    if "shape" not in cai or "typestr" not in cai or "data" not in cai:
        missing = [k for k in ("shape", "typestr", "data") if k not in cai]
        raise ValueError(f"{name}.__cuda_array_interface__ lacks {missing} "
                         f"(version {cai.get('version')!r})")
    if cai.get("mask") is not None:
        raise ValueError(f"{name} is a masked array (__cuda_array_interface__['mask'] is set); "
                         f"nvfp4_driver reads every element, so pass unmasked data")
    data = cai["data"]
    if not (type(data) is tuple and len(data) == 2 and isinstance(data[0], int)):
        raise ValueError(f"{name}.__cuda_array_interface__['data']={data!r} is not (ptr, readonly)")
    ptr, readonly = data
    byte_strides = cai.get("strides")
    known = _CAI_SHAPES.get(cai["shape"]) if byte_strides is None else None
    if known is not None:
        shape, strides = known  # a shape seen before: ints, non-negative, its C strides
    else:
        shape = tuple(int(s) for s in cai["shape"])
        if any(s < 0 for s in shape):
            raise ValueError(f"{name}.shape={shape} has a negative size")
        strides = None
    typestr = cai["typestr"]
    dtype = _SIMPLE_TYPESTR.get(typestr) if type(typestr) is str else None
    if dtype is None:
        dtype = _typestr_name(typestr, x, name)
        if typestr[1] != "V":
            _SIMPLE_TYPESTR[typestr] = dtype
    itemsize = _ITEMSIZE[dtype]
    if strides is not None:
        pass
    elif byte_strides is None:
        strides = c_strides(shape)
        if len(_CAI_SHAPES) >= 4096:
            _CAI_SHAPES.clear()
        _CAI_SHAPES[shape] = (shape, strides)
    else:
        byte_strides = tuple(int(s) for s in byte_strides)
        if len(byte_strides) != len(shape) or any(s % itemsize for s in byte_strides):
            raise ValueError(f"{name} has byte strides {byte_strides} for shape {shape} and "
                             f"itemsize {itemsize}; they must be whole elements, one per dim")
        strides = tuple(s // itemsize for s in byte_strides)
    stream = cai.get("stream")  # CAI v3: the stream the producer's data is ordered on
    if stream is not None:
        if isinstance(stream, bool) or not isinstance(stream, int) or stream <= 0:
            # The CAI spec forbids 0 (ambiguous between legacy and per-thread default streams).
            raise ValueError(f"{name}.__cuda_array_interface__['stream']={stream!r} is not a "
                             f"positive CUstream handle")
    cls = type(x)
    module = cls.__module__
    if module.startswith("cupy"):
        framework = "cupy"
        # A CuPy array knows its device; this spares the driver a pointer query.
        dev_id = getattr(getattr(x, "device", None), "id", None)
        device = dev_id if isinstance(dev_id, int) else None
        cupy = sys.modules.get("cupy")
        if cupy is not None and cls is getattr(cupy, "ndarray", None):
            _CUPY_NDARRAY[0] = cls  # from now on, the attribute path (_from_cupy)
    elif module == "nvfp4_driver.devmem" and cls.__name__ == "DeviceBuffer":
        framework, device = "cai", x.device  # our own buffer: its device is an attribute
    else:
        framework, device = "cai", None
    d = _new(DeviceArray)  # as in _fast_device_array: the frozen dataclass __init__ costs ~2 us
    d.__dict__.update({"ptr": ptr, "shape": shape, "strides": strides, "dtype": dtype, "device": device,
                       "framework": framework, "obj": x, "readonly": bool(readonly), "stream": stream,
                       "keepalive": None})
    return d


# --- CuPy -------------------------------------------------------------------------------------

_CUPY_NDARRAY: list = [None]  # cupy.ndarray once a CuPy array has come through the CAI path
_NUMPY_NAMES = {name: name for name in _ITEMSIZE}  # numpy dtype names that are also ours


def _from_cupy(x: Any) -> DeviceArray | None:
    """A cupy.ndarray read from its attributes: CuPy builds its __cuda_array_interface__ dict anew on
    every access (with a query of the current stream), several microseconds per argument. None for
    anything unusual (the CAI path then decides, and words any refusal)."""
    dtype = _NUMPY_NAMES.get(x.dtype.name)
    if dtype is None:
        return None
    itemsize = _ITEMSIZE[dtype]
    shape = x.shape
    byte_strides = x.strides
    if any(s % itemsize for s in byte_strides):
        return None
    d = _new(DeviceArray)
    d.__dict__.update({"ptr": x.data.ptr, "shape": shape, "strides": tuple(s // itemsize for s in byte_strides),
                       "dtype": dtype, "device": x.device.id, "framework": "cupy", "obj": x, "readonly": False,
                       "stream": None, "keepalive": None})
    return d


# --- DLPack (capsule reading: dlpack.py) ----------------------------------------------------

def _from_dlpack(x: Any, name: str, stream: int | None) -> DeviceArray:
    dev_type, dev_id = (int(v) for v in x.__dlpack_device__())
    if dev_type != kDLCUDA:
        # Only kDLCUDA: pinned host memory (3) is reachable from kernels but every load crosses
        # PCIe, a silent 10-100x slowdown; managed memory (13) would compute correctly, but its
        # device_id is 0 by convention rather than where the pages are, and first-touch page
        # migration inside our launch makes timings meaningless. Both should be explicit copies.
        what = DEVICE_NAMES.get(dev_type, f"DLPack device type {dev_type}")
        raise ValueError(f"{name} is in {what} per __dlpack_device__()=({dev_type}, {dev_id}); "
                         f"nvfp4_driver needs CUDA device memory (kDLCUDA = 2) — copy it to "
                         f"the GPU first")
    capsule = call_dlpack(x, stream)
    view = read_capsule(capsule, name)
    if (view.device_type, view.device_id) != (dev_type, dev_id):
        raise ValueError(f"{name}: __dlpack_device__() says ({dev_type}, {dev_id}) but its "
                         f"capsule says ({view.device_type}, {view.device_id})")
    # obj keeps x alive and keepalive the capsule: the producer keeps ownership of the memory
    # throughout, and the capsule's own destructor releases its reference when we are done.
    return DeviceArray(view.ptr, view.shape, view.strides, view.dtype, dev_id, "dlpack", x,
                       readonly=view.readonly, keepalive=capsule)


# --- raw pointers -----------------------------------------------------------------------------

def raw_pointer_array(ptr: int, shape: Iterable[int], dtype: Any, name: str) -> DeviceArray:
    """A C-contiguous DeviceArray for a bare device address (the ``*_ptr`` entry point).

    ptr must be a non-negative int below 2**64; 0 only when the array is empty. The device is
    unknown (None): the driver layer resolves it from the pointer.
    """
    if isinstance(ptr, bool) or not isinstance(ptr, int):
        raise TypeError(f"{name} pointer must be an int device address, got {type(ptr).__name__}")
    shape_t = tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape_t):
        raise ValueError(f"{name}.shape={shape_t} must be non-negative ints")
    canon = dtype_name(dtype)
    numel = 1
    for s in shape_t:
        numel *= s
    if not 0 <= ptr < _U64:
        raise ValueError(f"{name} pointer={ptr:#x} is not a 64-bit device address")
    if ptr == 0 and numel != 0:
        raise ValueError(f"{name} pointer is 0 (NULL) for shape {shape_t} with {numel} elements")
    return DeviceArray(ptr, shape_t, c_strides(shape_t), canon, None, "raw", None)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

def check_array(arr: DeviceArray, name: str, *, dtype: str | tuple[str, ...],
                shape: tuple | None = None, ndim: int | None = None, contiguous: bool = True,
                min_nbytes: int | None = None, writable: bool = False) -> DeviceArray:
    """Check one argument against what a kernel needs; return it unchanged.

    dtype       the required canonical name, or a tuple of acceptable ones  -> TypeError
    shape       the required shape; a None entry accepts any size there      -> ValueError
    ndim        the required number of dimensions                            -> ValueError
    contiguous  require C order (size-0/size-1 dimensions tolerated)         -> ValueError
    min_nbytes  the least number of bytes the kernel may read                -> ValueError
    writable    refuse memory its producer marked read-only (outputs)        -> ValueError
    """
    allowed = (dtype,) if isinstance(dtype, str) else tuple(dtype)
    if arr.dtype not in allowed:
        need = allowed[0] if len(allowed) == 1 else "one of " + ", ".join(allowed)
        raise TypeError(f"{name}.dtype={arr.dtype} but {need} is required")
    if ndim is not None and len(arr.shape) != ndim:
        raise ValueError(f"{name}.ndim={len(arr.shape)} (shape {arr.shape}) but {ndim} is required")
    if shape is not None:
        if len(arr.shape) != len(shape) or any(
                want is not None and got != want for got, want in zip(arr.shape, shape)):
            want_s = "(" + ", ".join("*" if w is None else str(w) for w in shape) + \
                     ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"{name}.shape={arr.shape} but {want_s} is required")
    if contiguous and not arr.is_contiguous:
        raise ValueError(f"{name} is not contiguous: shape={arr.shape}, strides={arr.strides} "
                         f"(elements); pass a C-contiguous copy (e.g. .contiguous())")
    if min_nbytes is not None and arr.nbytes < min_nbytes:
        raise ValueError(f"{name} has {arr.nbytes} bytes (shape {arr.shape}, {arr.dtype}) but "
                         f"at least {min_nbytes} are required")
    if writable and arr.readonly:
        raise ValueError(f"{name} is read-only (its {arr.framework} producer says so) but is "
                         f"written by the kernel")
    return arr


def check_same_device(arrays: Mapping[str, DeviceArray]) -> int | None:
    """The common CUDA ordinal of all arrays whose device is known; None if none is known.

    Raises ValueError naming each array and its device when they disagree.
    """
    known = {n: a.device for n, a in arrays.items() if a.device is not None}
    devices = set(known.values())
    if len(devices) > 1:
        items = [f"{n} on cuda:{d}" for n, d in known.items()]
        first = items[0].replace(" on ", " is on ", 1)
        raise ValueError(f"{first} but {', '.join(items[1:])}; all arrays must be on one device")
    return devices.pop() if devices else None


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------

def resolve_stream(stream: Any, arrays: Mapping[str, DeviceArray] | Iterable[DeviceArray]) -> int:
    """The CUstream handle (an int) to launch on.

    stream  None: the current stream of the first array's framework — torch's current stream
                  on that array's device, CuPy's current stream, a CAI v3 producer's declared
                  stream; otherwise 0, the legacy default stream. JAX and other DLPack inputs
                  have no "current stream" we can ask for: pass ``stream=`` explicitly to run
                  elsewhere than the legacy default stream.
            int: a handle as is (0 = legacy default, 1/2 = CU_STREAM_LEGACY/PER_THREAD).
            an object with ``__cuda_stream__()`` (cuda.core, cuda.bindings CUstream, torch),
            a torch.cuda.Stream (``.cuda_stream``) or a cupy.cuda.Stream (``.ptr``).
    arrays  the DeviceArrays of the call (a mapping name -> array, or a sequence).

    Raises TypeError for anything else, ValueError for a negative or >64-bit handle.
    """
    if stream is None:
        return _current_stream(arrays)
    if isinstance(stream, bool):
        raise TypeError(f"stream={stream!r} is a bool, not a CUDA stream")
    if isinstance(stream, int):
        return _check_handle(stream, repr(stream))
    if hasattr(stream, "__cuda_stream__"):
        got = stream.__cuda_stream__()
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], int)
                and not isinstance(got[1], bool)):
            raise TypeError(f"stream.__cuda_stream__() returned {got!r}, not (version, handle)")
        return _check_handle(got[1], f"{type(stream).__name__}.__cuda_stream__()")
    module = type(stream).__module__
    if module.startswith("torch") and hasattr(stream, "cuda_stream"):
        return _check_handle(int(stream.cuda_stream), "torch stream")
    if module.startswith("cupy") and hasattr(stream, "ptr"):
        return _check_handle(int(stream.ptr), "cupy stream")
    raise TypeError(
        f"stream={stream!r} ({module}.{type(stream).__qualname__}) is not a CUDA stream; pass "
        f"None, an int CUstream handle (0 = legacy default stream), a torch.cuda.Stream, a "
        f"cupy.cuda.Stream, or an object with __cuda_stream__()")


def _check_handle(handle: int, what: str) -> int:
    if not 0 <= handle < _U64:
        raise ValueError(f"stream handle {handle} from {what} is not a 64-bit CUstream")
    return handle


def _current_stream(arrays: Mapping[str, DeviceArray] | Iterable[DeviceArray]) -> int:
    values = arrays.values() if isinstance(arrays, Mapping) else arrays
    first = next(iter(values), None)
    if first is None:
        return 0
    if first.framework == "torch":
        torch = sys.modules["torch"]
        device = first.device if first.device is not None else torch.cuda.current_device()
        # The private call skips building a torch.cuda.Stream object (about 1 us vs 10 us);
        # builds without it fall back to the public API.
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        if raw is not None:
            return int(raw(device))
        return int(torch.cuda.current_stream(device).cuda_stream)
    if first.framework == "cupy":
        get_current_stream = sys.modules["cupy"].cuda.get_current_stream
        # CuPy's current stream is per device; ask for the array's device where CuPy can.
        if first.device is None:
            return int(get_current_stream().ptr)
        try:
            return int(get_current_stream(first.device).ptr)
        except TypeError:  # older CuPy: no device_id argument, only the current device's stream
            return int(get_current_stream().ptr)
    if first.framework == "cai" and first.stream is not None:
        return first.stream
    return 0


# ---------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------

def allocate(like: DeviceArray, shape: tuple[int, ...], dtype: str, *,
             device: int | None = None) -> tuple[Any, DeviceArray]:
    """Allocate an uninitialized C-contiguous array in `like`'s framework and on its device.

    Returns (the framework's object, its DeviceArray). torch and CuPy inputs get a torch tensor or
    a CuPy array. For every other framework (JAX, Numba, other DLPack/CAI producers, raw pointers):
    with ``device`` (a GPU ordinal) a :class:`nvfp4_driver.devmem.DeviceBuffer` on that GPU, which
    exposes ``__cuda_array_interface__`` and ``__dlpack__`` (``jax.numpy.from_dlpack(out)``,
    ``numba.cuda.as_cuda_array(out)``, ``torch.from_dlpack(out)`` take it without a copy); without
    ``device``, a TypeError asking for ``out=``. CuPy has bfloat16 only through ml_dtypes (recent
    CuPy); where it is missing, a TypeError says to pass out= or use float16.
    """
    canon = dtype_name(dtype)
    shape = tuple(int(s) for s in shape)
    if like.framework == "torch":
        torch = sys.modules.get("torch")
        if torch is None:
            import torch
        out = torch.empty(shape, dtype=getattr(torch, canon), device=like.obj.device)
        return out, _from_torch(out, "out")
    if like.framework == "cupy":
        cupy = sys.modules.get("cupy")
        if cupy is None:
            import cupy
        device = like.device if like.device is not None else like.obj.device.id
        if canon == "bfloat16":
            try:
                import ml_dtypes
                np_dtype = ml_dtypes.bfloat16
                with cupy.cuda.Device(device):
                    out = cupy.empty(shape, dtype=np_dtype)
            except (ImportError, TypeError, ValueError, NotImplementedError) as e:
                raise TypeError(
                    f"cannot allocate a bfloat16 output with CuPy ({type(e).__name__}: {e}): "
                    f"this CuPy has no bfloat16; pass out= (a CUDA bfloat16 array, e.g. from "
                    f"torch) or out_dtype='float16'") from e
        else:
            import numpy
            with cupy.cuda.Device(device):
                out = cupy.empty(shape, dtype=numpy.dtype(canon))
        return out, as_device_array(out, "out")
    if device is not None:
        from .devmem import DeviceBuffer

        buf = DeviceBuffer(shape, canon, device)
        arr = as_device_array(buf, "out")
        return buf, dataclasses.replace(arr, device=device)
    raise TypeError(f"cannot allocate the output for {like.framework} inputs; pass out= "
                    f"(a C-contiguous CUDA array of shape {shape} and dtype {canon})")


# ---------------------------------------------------------------------------------------------
# dtype names
# ---------------------------------------------------------------------------------------------

def dtype_name(x: Any) -> str:
    """Canonical dtype name of a canonical string, a torch dtype, a numpy dtype-like (numpy
    type, numpy.dtype, ml_dtypes type) or a numpy typestr ('<f2'). TypeError otherwise."""
    if isinstance(x, str):
        if x in _ITEMSIZE:
            return x
        if len(x) >= 3 and x[0] in "<>|=" and x[2:].isdigit():
            return _typestr_name(x, None, "dtype")
        raise TypeError(f"dtype {x!r} is not one of {', '.join(_ITEMSIZE)}")
    if type(x).__module__.startswith("torch"):
        canon = _torch_dtype_table().get(x)
        if canon is None:
            raise TypeError(f"torch dtype {x} has no counterpart in nvfp4_driver")
        return canon
    if x is None:
        raise TypeError("dtype is None")
    import numpy
    try:
        dt = numpy.dtype(x)
    except TypeError as e:
        raise TypeError(f"{x!r} ({type(x).__name__}) is not a dtype") from e
    if dt.name in _ITEMSIZE:
        return dt.name
    raise TypeError(f"dtype {dt} is not one of {', '.join(_ITEMSIZE)}")


_OUT_ALIASES = {"bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16", "half": "float16"}
_OUT_ACCEPTED = ("torch.bfloat16, torch.float16, 'bfloat16', 'bf16', 'float16', 'fp16', 'half', "
                 "numpy.float16, ml_dtypes.bfloat16 (jax.numpy.bfloat16/float16)")


def canonical_out_dtype(value: Any) -> str:
    """'bfloat16' or 'float16' for a user's out_dtype; ValueError listing what is accepted."""
    if isinstance(value, str):
        canon = _OUT_ALIASES.get(value.lower())
    elif value is None or isinstance(value, (bool, int, float)):
        canon = None  # numpy.dtype(None) would be float64; None has no meaning here
    else:
        try:
            canon = dtype_name(value)
        except TypeError:
            canon = None
    if canon not in ("bfloat16", "float16"):
        raise ValueError(f"out_dtype={value!r} is not supported; accepted: {_OUT_ACCEPTED}")
    return canon
