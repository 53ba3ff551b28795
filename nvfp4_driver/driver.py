"""The CUDA driver, through cuda.bindings: errors by name, lazy loading, per-device caches, launch.

Nothing here runs at import time: ``import nvfp4_driver`` works on a machine with no driver and no
GPU, and the first GPU operation raises :class:`NoCudaDriverError` or :class:`NoCudaDeviceError`.

Kernels are loaded with ``cuLibraryLoadData`` (context-independent: one load serves every GPU), once
per process and file, on first use. A launch runs in the primary context of the device that holds
the tensors (the context PyTorch, CuPy and JAX use); if another context is current, that context is
pushed and popped around the launch so the caller's state is left as it was.
"""
from __future__ import annotations

import ctypes
import dataclasses
import struct
import threading
from pathlib import Path

CUBIN_DIR = Path(__file__).resolve().parent / "cubins"
MIN_DRIVER_VERSION = 13000  # the cubins and PTX are built with nvcc 13.0


class CudaError(RuntimeError):
    """A CUDA driver call failed; ``name`` is the driver's error name (``CUDA_ERROR_...``)."""

    def __init__(self, call: str, name: str, detail: str = ""):
        self.call, self.name = call, name
        super().__init__(f"{call} failed with {name}" + (f": {detail}" if detail else ""))


class NoCudaDriverError(RuntimeError):
    """No usable CUDA driver (libcuda) or cuda-bindings on this machine."""


class NoCudaDeviceError(RuntimeError):
    """The driver is there but reports no GPU."""


_lock = threading.RLock()


def _once(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` at most once per process: a lock-free read when present,
    else a second look under the module lock (another thread may have made it meanwhile)."""
    value = cache.get(key)
    if value is None:
        with _lock:
            value = cache.get(key)
            if value is None:
                value = cache[key] = make()
    return value
_state: dict = {}  # "driver": the cuda.bindings.driver module once initialised
_SUCCESS = None  # CUresult.CUDA_SUCCESS once initialised (compared on every launch)


def _import_driver():
    try:
        from cuda.bindings import driver
    except ImportError as exc:  # cuda-bindings missing or built for another Python
        raise NoCudaDriverError(f"cuda-bindings is not importable ({exc}); pip install cuda-bindings") from exc
    return driver


def _error_name(drv, err) -> str:
    res = drv.cuGetErrorName(err)
    if res[0] == drv.CUresult.CUDA_SUCCESS and res[1]:
        return res[1].decode() if isinstance(res[1], bytes) else str(res[1])
    return f"CUresult({int(err)})"


def check(result, call: str):
    """Unwrap a cuda.bindings result tuple ``(CUresult, values...)``; raise CudaError on failure."""
    drv = _state["driver"]
    err = result[0] if isinstance(result, tuple) else result
    if err != drv.CUresult.CUDA_SUCCESS:
        raise CudaError(call, _error_name(drv, err))
    if not isinstance(result, tuple) or len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


def driver():
    """The initialised cuda.bindings.driver module (cuInit done once, thread-safe)."""
    drv = _state.get("driver")
    if drv is not None:
        return drv
    with _lock:
        if "driver" in _state:
            return _state["driver"]
        drv = _import_driver()
        try:
            err = drv.cuInit(0)[0]
        except (OSError, RuntimeError) as exc:  # libcuda.so absent: cuda.bindings cannot dlopen it
            raise NoCudaDriverError(f"no NVIDIA driver found (libcuda could not be loaded: {exc})") from exc
        if err == drv.CUresult.CUDA_ERROR_NO_DEVICE:
            raise NoCudaDeviceError("the CUDA driver is installed but reports no GPU")
        if err != drv.CUresult.CUDA_SUCCESS:
            raise NoCudaDriverError(f"cuInit failed with {_error_name(drv, err)}")
        global _SUCCESS
        _SUCCESS = drv.CUresult.CUDA_SUCCESS
        _state["driver"] = drv
        return drv


def driver_version() -> int:
    """The driver's CUDA version as 1000*major + 10*minor (13000 for CUDA 13.0)."""
    drv = driver()
    return check(drv.cuDriverGetVersion(), "cuDriverGetVersion")


def is_available() -> bool:
    """True when a driver and at least one GPU are present (never raises)."""
    try:
        return device_count() > 0
    except (NoCudaDriverError, NoCudaDeviceError):
        return False


def device_count() -> int:
    drv = driver()
    return check(drv.cuDeviceGetCount(), "cuDeviceGetCount")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    capability: tuple[int, int]   # (major, minor)
    sm_count: int
    max_smem_optin: int           # dynamic shared memory a block may opt into, bytes
    total_memory: int


_device_info: dict[int, DeviceInfo] = {}


def device_info(ordinal: int) -> DeviceInfo:
    """Attributes of GPU ``ordinal``, read from the driver once per process."""
    info = _device_info.get(ordinal)
    if info is not None:
        return info
    drv = driver()
    count = device_count()
    if not 0 <= ordinal < count:
        raise ValueError(f"CUDA device {ordinal} does not exist (this machine has {count})")
    dev = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
    attr = drv.CUdevice_attribute

    def get(a):
        return check(drv.cuDeviceGetAttribute(a, dev), "cuDeviceGetAttribute")

    name = check(drv.cuDeviceGetName(256, dev), "cuDeviceGetName")
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
    info = DeviceInfo(
        ordinal=ordinal,
        name=name,
        capability=(get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                    get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
        sm_count=get(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        max_smem_optin=get(attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
        total_memory=check(drv.cuDeviceTotalMem(dev), "cuDeviceTotalMem"),
    )
    _device_info[ordinal] = info
    return info


_primary: dict[int, object] = {}


def primary_context(ordinal: int):
    """The device's primary context, retained once per process (the one frameworks share)."""
    def retain():
        drv = driver()
        dev = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        return check(drv.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    return _once(_primary, ordinal, retain)


def pointer_device(ptr: int) -> int:
    """Ordinal of the GPU that owns device address ``ptr`` (no synchronisation).

    Asked as the allocation's context, then that context's device: on a 2-GPU H100 machine
    (driver 580, cuda-bindings 13.3) CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL answered 0 for memory on
    GPU 1, and the kernel then ran in the wrong GPU's context. Allocations with no context of their
    own (stream-ordered pools) fall back to that attribute.
    """
    drv = driver()
    attrs = drv.CUpointer_attribute
    try:
        ctx = check(drv.cuPointerGetAttribute(attrs.CU_POINTER_ATTRIBUTE_CONTEXT, ptr), "cuPointerGetAttribute")
        if ctx is not None and int(ctx):
            check(drv.cuCtxPushCurrent(ctx), "cuCtxPushCurrent")
            try:
                return int(check(drv.cuCtxGetDevice(), "cuCtxGetDevice"))
            finally:
                check(drv.cuCtxPopCurrent(), "cuCtxPopCurrent")
        return int(check(drv.cuPointerGetAttribute(attrs.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr),
                         "cuPointerGetAttribute"))
    except CudaError as exc:
        raise ValueError(f"0x{ptr:x} is not a CUDA device address the driver knows ({exc.name})") from exc


class _ContextGuard:
    """Make the primary context of ``ordinal`` current for a block; a no-op when it already is."""

    __slots__ = ("ctx", "pushed")

    def __init__(self, ordinal: int):
        self.ctx = primary_context(ordinal)
        self.pushed = False

    def __enter__(self):
        drv = _state["driver"]
        current = check(drv.cuCtxGetCurrent(), "cuCtxGetCurrent")
        if current is None or int(current) != int(self.ctx):
            check(drv.cuCtxPushCurrent(self.ctx), "cuCtxPushCurrent")
            self.pushed = True
        return self

    def __exit__(self, *exc):
        if self.pushed:
            check(_state["driver"].cuCtxPopCurrent(), "cuCtxPopCurrent")


_libraries: dict[str, object] = {}


def load_library(file_name: str):
    """cuLibraryLoadData of one cubin or PTX file from ``cubins/``, once per process."""
    return _once(_libraries, file_name, lambda: _load_library(file_name))


def _load_library(file_name: str):
    drv = driver()
    path = CUBIN_DIR / file_name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the installed package is incomplete")
    data = path.read_bytes()
    if path.suffix == ".ptx":
        data += b"\0"  # the driver's JIT wants a NUL-terminated image
    try:
        return check(drv.cuLibraryLoadData(data, [], [], 0, [], [], 0), "cuLibraryLoadData")
    except CudaError as exc:
        version = driver_version()
        hint = ""
        if version < MIN_DRIVER_VERSION:
            hint = (f"; the driver supports CUDA {version // 1000}.{version % 1000 // 10} but these "
                    f"kernels need a CUDA {MIN_DRIVER_VERSION // 1000}.0 driver (580 or newer)")
        raise CudaError(exc.call, exc.name, f"loading {file_name}{hint}") from exc


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """What a launch needs from the manifest: the file, the symbol, block, shared memory, ABI."""

    file: str
    symbol: str
    threads: int
    smem_bytes: int
    param_types: tuple[str, ...]  # "ptr" | "i64" | "i32" | "f32", in order


_functions: dict[tuple[str, str, int], object] = {}


def function(spec: KernelSpec, ordinal: int):
    """The CUfunction of ``spec`` in device ``ordinal``'s primary context, set up once."""
    return _once(_functions, (spec.file, spec.symbol, ordinal), lambda: _make_function(spec, ordinal))


def _make_function(spec: KernelSpec, ordinal: int):
    drv = driver()
    lib = load_library(spec.file)
    kernel = check(drv.cuLibraryGetKernel(lib, spec.symbol.encode()), f"cuLibraryGetKernel({spec.symbol})")
    info = device_info(ordinal)
    if spec.smem_bytes > info.max_smem_optin:
        raise RuntimeError(f"{spec.symbol} needs {spec.smem_bytes} B of shared memory per block; "
                           f"{info.name} allows {info.max_smem_optin}")
    with _ContextGuard(ordinal):
        fn = check(drv.cuKernelGetFunction(kernel), "cuKernelGetFunction")
        check_abi(spec, param_layout(drv, fn, spec.symbol))
        check(drv.cuFuncSetAttribute(
            fn, drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, spec.smem_bytes),
            "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")
    return fn


def param_info(spec: KernelSpec, ordinal: int) -> list[tuple[int, int]]:
    """(offset, size) of every kernel parameter as the loaded image declares it, all of them."""
    return param_layout(driver(), function(spec, ordinal), spec.symbol)


_MAX_PARAMS = 256


def param_layout(drv, fn, symbol: str) -> list[tuple[int, int]]:
    """(offset, size) of each parameter of CUfunction ``fn``, read until the driver has no next one (it
    answers CUDA_ERROR_INVALID_VALUE past the last), so a parameter the manifest lacks shows too."""
    out = []
    for i in range(_MAX_PARAMS + 1):
        result = drv.cuFuncGetParamInfo(fn, i)
        if result[0] == drv.CUresult.CUDA_ERROR_INVALID_VALUE:
            return out
        out.append(tuple(int(x) for x in check(result, f"cuFuncGetParamInfo({symbol}, {i})")))
    raise RuntimeError(f"{symbol}: the driver reports more than {_MAX_PARAMS} parameters")


# "tmap": a CUtensorMap passed by value (``__grid_constant__``): 128 bytes, 64-byte aligned.
_SIZES = {"ptr": 8, "i64": 8, "i32": 4, "f32": 4, "tmap": 128}
_ALIGN = {"ptr": 8, "i64": 8, "i32": 4, "f32": 4, "tmap": 16}  # in an image's list; see layout_mismatch


def expected_layout(param_types: tuple[str, ...]) -> list[tuple[int, int]]:
    """(offset, size) of each parameter of this type list, each aligned as the C ABI aligns it."""
    layout, offset = [], 0
    for t in param_types:
        size, align = _SIZES[t], _ALIGN[t]
        offset = (offset + align - 1) // align * align
        layout.append((offset, size))
        offset += size
    return layout


def layout_mismatch(param_types: tuple[str, ...], declared: list[tuple[int, int]]) -> str | None:
    """Why ``declared`` ((offset, size) per parameter, as an image reports them) is not a parameter
    list of ``param_types``, or None. Up to the first tensor map every offset is the C ABI's; a map's
    offset is the compiler's, which aligns maps in the constant bank whose parameter base differs by
    architecture (the same list puts its first map at 112 on sm_90 and 128 on sm_120): from there on
    the sizes, the order and that no parameter overlaps the one before are checked."""
    want = expected_layout(param_types)
    if len(declared) != len(want):
        return f"{len(declared)} parameters, not {len(want)}"
    end = 0
    for i, (t, (off, size), (want_off, want_size)) in enumerate(zip(param_types, declared, want)):
        free = "tmap" in param_types[: i + 1]
        if size != want_size or (not free and off != want_off) or (free and (off < end or off % _ALIGN[t])):
            return f"parameter {i} ({t}) at {off} of {size} bytes, expected {want_off} of {want_size}"
        end = off + size
    return None


def check_abi(spec: KernelSpec, declared: list[tuple[int, int]]) -> None:
    """Raise RuntimeError unless the image's parameters (``declared``, from :func:`param_layout`) are
    exactly the manifest's: a kernel with a parameter more or less would read garbage."""
    why = layout_mismatch(spec.param_types, declared)
    if why is not None:
        want = expected_layout(spec.param_types)
        raise RuntimeError(f"{spec.symbol} in {spec.file} declares {len(declared)} parameters {declared} but the "
                           f"manifest lists {len(want)} ({', '.join(spec.param_types)}: {want}): {why}; the "
                           f"cubins and manifest.json disagree: run build_cubins.py")


# Every parameter gets a slot in one buffer, 8 bytes (a tensor map: 128, 64-byte aligned), and
# kernelParams[i] points at slot i; the driver copies each parameter's own size from there.
# struct.pack_into fills the slots in one C call, where cuda.bindings' (values, ctypes types) form
# builds a ctypes object per argument.
_PACK = {"ptr": "Q", "i64": "q", "i32": "i", "f32": "f", "tmap": "128s"}


def _slots(param_types: tuple[str, ...]) -> tuple[list[int], int, str]:
    """(offset of each parameter's slot, buffer size, struct format that fills them)."""
    offsets, fmt, offset = [], "<", 0
    for t in param_types:
        align = 64 if t == "tmap" else 8  # the map's own alignment in host memory
        start = (offset + align - 1) // align * align
        fmt += f"{start - offset}x" if start > offset else ""
        offsets.append(start)
        fmt += _PACK[t]
        offset = start + _SIZES[t]
        if offset % 8:
            fmt += f"{8 - offset % 8}x"
            offset += 8 - offset % 8
    return offsets, offset, fmt


class PreparedKernel:
    """One kernel on one device, ready to launch with the least Python work per call.

    Holds the CUfunction, its primary context and a packer for its parameter list. The argument
    buffers are per thread (``threading.local``): ``cuLaunchKernel`` reads them before it returns, so
    one buffer per thread can be reused by every launch of that thread, and threads never share one.
    """

    __slots__ = ("spec", "ordinal", "fn", "ctx", "ctx_id", "_pack", "_local", "_symbol", "_slot_offsets",
                 "_slot_bytes")

    def __init__(self, spec: KernelSpec, ordinal: int):
        self.spec, self.ordinal = spec, ordinal
        self.fn = function(spec, ordinal)
        self.ctx = primary_context(ordinal)
        self.ctx_id = int(self.ctx)
        self._slot_offsets, self._slot_bytes, fmt = _slots(spec.param_types)
        self._pack = struct.Struct(fmt).pack_into
        self._local = threading.local()
        self._symbol = spec.symbol

    def _buffers(self):
        n = len(self.spec.param_types)
        storage = ctypes.create_string_buffer(self._slot_bytes + 64)
        skip = -ctypes.addressof(storage) % 64  # a tensor map's slot is 64-byte aligned, like the map itself
        base = ctypes.addressof(storage) + skip
        params = (ctypes.c_void_p * n)(*(base + off for off in self._slot_offsets))
        # The int address is what cuLaunchKernel takes; storage and params stay alive with it.
        buffers = self._local.buffers = (storage, params, ctypes.addressof(params), skip)
        return buffers

    def launch(self, grid: tuple[int, int, int], stream: int, args: tuple) -> None:
        """Launch on ``stream`` (an int CUstream handle) with ``args`` in the manifest's order."""
        try:
            storage, _params, params_addr, skip = self._local.buffers
        except AttributeError:
            storage, _params, params_addr, skip = self._buffers()
        try:
            self._pack(storage, skip, *args)
        except struct.error as exc:
            raise TypeError(f"{self._symbol} takes ({', '.join(self.spec.param_types)}), got {args!r}: "
                            f"{exc}") from None
        drv = _state["driver"]
        err, current = drv.cuCtxGetCurrent()
        if err != _SUCCESS:
            raise CudaError("cuCtxGetCurrent", _error_name(drv, err))
        pushed = current is None or int(current) != self.ctx_id
        if pushed:
            check(drv.cuCtxPushCurrent(self.ctx), "cuCtxPushCurrent")
        try:
            spec = self.spec
            err = drv.cuLaunchKernel(self.fn, grid[0], grid[1], grid[2], spec.threads, 1, 1, spec.smem_bytes,
                                     stream, params_addr, 0)[0]
        finally:
            if pushed:
                check(drv.cuCtxPopCurrent(), "cuCtxPopCurrent")
        if err != _SUCCESS:
            raise CudaError(f"cuLaunchKernel({self._symbol})", _error_name(drv, err))


_prepared: dict[tuple[KernelSpec, int], PreparedKernel] = {}


def prepared(spec: KernelSpec, ordinal: int) -> PreparedKernel:
    """The PreparedKernel of ``spec`` on device ``ordinal``, made once per process."""
    return _once(_prepared, (spec, ordinal), lambda: PreparedKernel(spec, ordinal))


def launch(spec: KernelSpec, ordinal: int, grid: tuple[int, int, int], stream: int, args: tuple) -> None:
    """Launch ``spec`` on device ``ordinal`` and ``stream`` with ``args`` in the manifest's order."""
    if len(args) != len(spec.param_types):
        raise TypeError(f"{spec.symbol} takes {len(spec.param_types)} arguments, got {len(args)}")
    prepared(spec, ordinal).launch(grid, stream, tuple(args))


# --- small synchronous helpers: checked mode, DLPack export, tests -----------------------------------

def read_device(ptr: int, nbytes: int, ordinal: int, stream: int) -> bytes:
    """``nbytes`` at device address ``ptr``, copied in ``stream``'s order (after the work already queued
    on it) and waited for. Synchronises ``stream``: the checked mode's price."""
    import numpy as np

    drv = driver()
    host = np.empty(max(nbytes, 1), dtype=np.uint8)
    if nbytes:
        with _ContextGuard(ordinal):
            check(drv.cuMemcpyDtoHAsync(host.ctypes.data, ptr, nbytes, stream), "cuMemcpyDtoHAsync")
            check(drv.cuStreamSynchronize(stream), "cuStreamSynchronize")
    return host[:nbytes].tobytes()


def stream_is_capturing(stream: int, ordinal: int) -> bool:
    """Whether ``stream`` is being captured into a CUDA graph (where nothing may synchronise it)."""
    drv = driver()
    with _ContextGuard(ordinal):
        err, status = drv.cuStreamIsCapturing(stream)
    if err == drv.CUresult.CUDA_ERROR_STREAM_CAPTURE_IMPLICIT:
        return True  # the legacy stream, while another stream captures in global mode
    if err != _SUCCESS:
        raise CudaError("cuStreamIsCapturing", _error_name(drv, err))
    return status != drv.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_NONE


def stream_wait(consumer: int, producer: int, ordinal: int) -> None:
    """Make ``consumer`` wait for the work queued on ``producer`` so far (an event, no host wait)."""
    drv = driver()
    with _ContextGuard(ordinal):
        event = check(drv.cuEventCreate(drv.CUevent_flags.CU_EVENT_DISABLE_TIMING), "cuEventCreate")
        try:
            check(drv.cuEventRecord(event, producer), "cuEventRecord")
            check(drv.cuStreamWaitEvent(consumer, event, 0), "cuStreamWaitEvent")
        finally:
            check(drv.cuEventDestroy(event), "cuEventDestroy")  # released once the wait is done


def mem_get_info(ordinal: int) -> tuple[int, int]:
    """(free, total) bytes of device memory on GPU ``ordinal``, as the driver reports them."""
    drv = driver()
    with _ContextGuard(ordinal):
        free, total = check(drv.cuMemGetInfo(), "cuMemGetInfo")
    return int(free), int(total)
