"""Caller objects -> device pointers, streams and outputs, with loud errors.

Everything the launch path needs from a caller's array is a `DeviceArray`: a device address,
shape and strides in elements, a canonical dtype name and the device ordinal when known.
`as_device_array` builds one from

1. a ``torch.Tensor`` (the hot path: attribute reads only, no protocol dictionaries);
2. an object with ``__cuda_array_interface__`` (CuPy, Numba, JAX for most dtypes; v0-v3);
3. an object with ``__dlpack__`` / ``__dlpack_device__`` (JAX bfloat16, anything else),
   whose capsule is read with ctypes and never consumed.

Anything else (host memory, lists, None, unknown objects) is refused with a message that names
the argument and what was found; ``check_array`` then holds a DeviceArray against what a kernel
needs. Nothing here touches the GPU or imports torch/CuPy unless the caller handed us such an
object, so the refusals are testable on a machine without a GPU. Streams: ``streams.py``;
outputs the caller did not pass: ``outputs.py``; dtype names: ``dtypes.py``.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, NamedTuple

from .dlpack import DEVICE_NAMES, c_strides, call_dlpack, kDLCUDA, read_capsule
from .dtypes import ITEMSIZE, TORCH_DTYPES, torch_table, typestr_name

__all__ = ["DeviceArray", "as_device_array", "check_array", "check_same_device"]


class DeviceArray(NamedTuple):
    """A strided view of device memory, as the launch path sees it (immutable).

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

    A NamedTuple rather than a frozen dataclass: it is built for every argument of every call on the
    general path, and a frozen dataclass's __init__ (one object.__setattr__ per field) took 1.7 us
    against 0.4 us here (CPython 3.11, 2026-12-03). ``obj`` and ``keepalive`` take no part in ==,
    hash or repr: comparing two torch tensors with == is elementwise, not a bool.
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str
    device: int | None
    framework: str
    obj: object = None
    readonly: bool = False
    stream: int | None = None
    keepalive: object = None

    def _compared(self) -> tuple:
        return self.ptr, self.shape, self.strides, self.dtype, self.device, self.framework, self.readonly, self.stream

    def __eq__(self, other):
        if type(other) is not DeviceArray:
            return NotImplemented
        return self._compared() == other._compared()

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        return (f"DeviceArray(ptr={self.ptr!r}, shape={self.shape!r}, strides={self.strides!r}, dtype={self.dtype!r}, "
                f"device={self.device!r}, framework={self.framework!r}, readonly={self.readonly!r}, "
                f"stream={self.stream!r})")

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

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

def _from_torch(x: Any, name: str) -> DeviceArray:
    dev = x.device
    if dev.type != "cuda":
        where = "on the CPU" if dev.type == "cpu" else "not on a CUDA device"
        raise ValueError(
            f"{name} is {where} (torch device '{dev}'); nvfp4_driver needs CUDA device memory "
            f"— move it with .cuda() or .to('cuda')")
    dtype = TORCH_DTYPES.get(x.dtype) or torch_table().get(x.dtype)
    if dtype is None:
        raise TypeError(f"{name}.dtype={x.dtype} has no counterpart in nvfp4_driver "
                        f"(supported: {', '.join(ITEMSIZE)})")
    return DeviceArray(x.data_ptr(), tuple(x.shape), x.stride(), dtype, dev.index, "torch", x)


# --- __cuda_array_interface__ -----------------------------------------------------------------

_SIMPLE_TYPESTR: dict[str, str] = {}  # typestr -> canonical name, for typestrs that need no .dtype
_CAI_SHAPES: dict[tuple, tuple] = {}   # C-order shape seen before -> (shape as ints, its strides)


def from_cai(x: Any, cai: Any, name: str) -> DeviceArray:
    """The DeviceArray of ``x`` from its ``__cuda_array_interface__`` dict ``cai``, already read (the
    launch cache read it for its key; a second read would make the producer build it again)."""
    return _from_cai(x, cai, name)


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
        dtype = typestr_name(typestr, x, name)
        if typestr[1] != "V":
            _SIMPLE_TYPESTR[typestr] = dtype
    itemsize = ITEMSIZE[dtype]
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
    return DeviceArray(ptr, shape, strides, dtype, device, framework, x, bool(readonly), stream)


# --- CuPy -------------------------------------------------------------------------------------

_CUPY_NDARRAY: list = [None]  # cupy.ndarray once a CuPy array has come through the CAI path
_NUMPY_NAMES = {name: name for name in ITEMSIZE}  # numpy dtype names that are also ours
_CUPY_DTYPES: dict = {}  # numpy dtype object -> our name, for the dtypes seen so far


def _from_cupy(x: Any) -> DeviceArray | None:
    """A cupy.ndarray read from its attributes: CuPy builds its __cuda_array_interface__ dict anew on
    every access (with a query of the current stream), several microseconds per argument. None for
    anything unusual (the CAI path then decides, and words any refusal)."""
    dt = x.dtype
    dtype = _CUPY_DTYPES.get(dt)
    if dtype is None:
        # numpy's dtype.name is a Python property (2.7 us on a 3.11 host, 2026-12-03; seven arrays a
        # call): read once per dtype, then the dtype object is the key.
        dtype = _NUMPY_NAMES.get(dt.name)
        if dtype is None:
            return None
        _CUPY_DTYPES[dt] = dtype
    itemsize = ITEMSIZE[dtype]
    shape = x.shape
    byte_strides = x.strides
    if any(s % itemsize for s in byte_strides):
        return None
    return DeviceArray(x.data.ptr, shape, tuple(s // itemsize for s in byte_strides), dtype, x.device.id, "cupy", x)


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
