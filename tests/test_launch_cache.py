"""The host-cost caches without a GPU: launch_cache (whole launches of the general path), the
per-object device answers of ops._pointer_device, and the CuPy dtype memo of tensors._from_cupy.

Each cache is held to: a hit with identical values (the general path is not entered, the launch is
the same), a miss when any keyed value changes, a fresh entry for a new object at a reused address, and
a bounded size. The driver layer is stood in for (one sm_90 GPU whose launches are recorded), and the
producers are small fakes of Numba (a CAI dict per access, no device), CuPy (attributes), JAX (DLPack
and ``unsafe_buffer_pointer``) and DeviceBuffer (our own class over an address nobody reads)."""
from __future__ import annotations

import ctypes
import gc
import sys
import types

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import config, devmem, driver, launch_cache, ops, plans, tensors, variants
from nvfp4_driver.devmem import DeviceBuffer, _DType

BASE = 0x7F00_0000_0000
SHAPES = {"a": ((16, 64), "uint8"), "b": ((1, 8, 64), "uint8"), "a_scale": ((128, 8), "uint8"),
          "b_scale": ((1, 128, 8), "uint8"), "m_indptr": ((2,), "int32"), "alpha": ((1,), "float32"),
          "out": ((16, 8), "float16")}
GEMM = nd.group_gemm_nvfp4_nt_groupwise


class Kernel:
    def __init__(self):
        self.launches = []

    def launch(self, grid, stream, args):
        self.launches.append((grid, stream, tuple(args)))


@pytest.fixture
def gpu(monkeypatch):
    """One sm_90 GPU: launches recorded, pointer queries counted, every cache empty before and after."""
    kernel = Kernel()
    kernel.queries = []
    info = driver.DeviceInfo(0, "fake", (9, 0), 132, 232448, 80 << 30)
    monkeypatch.setattr(driver, "device_info", lambda ordinal: info)
    monkeypatch.setattr(driver, "pointer_device", lambda ptr: kernel.queries.append(ptr) or 0)
    monkeypatch.setattr(driver, "prepared", lambda spec, ordinal: kernel)
    # These calls are a few tiles, which 9.0's automatic choice sends to the K-split TMA kernel, whose
    # launch encodes tensor maps (a driver call); the cache under test is the same for every kernel, so
    # they keep to the portable kernel's plain launch.
    monkeypatch.setattr(variants, "SM90WS_SPLITK_MAX_TILES", 0)
    for module, name, value in ((launch_cache, "_entries", {}), (launch_cache, "_readers", {}), (ops, "_owners", {}),
                                (plans, "array_plans", {}), (plans, "pointer_plans", {}), (plans, "torch_plans", {})):
        monkeypatch.setattr(module, name, value)
    slow = []
    real = plans.meta_key
    monkeypatch.setattr(plans, "meta_key", lambda *args: slow.append(1) or real(*args))
    kernel.slow = slow  # one entry per call that ran the general path (its plan lookup)
    yield kernel


class Numba:
    """A producer like numba.cuda's DeviceNDArray: a CAI v3 dict built per access, no device."""

    def __init__(self, ptr, shape, dtype, strides=None, stream=None):
        self.ptr, self.shape, self.dtype, self.strides, self.stream = ptr, shape, np.dtype(dtype), strides, stream

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "strides": self.strides, "data": (self.ptr, False), "typestr": self.dtype.str,
                "stream": self.stream, "version": 3}


def numba_args(**change):
    made = {name: Numba(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)}
    made.update(change)
    return [made[name] for name in plans.NAMES]


def call(args, **kw):
    return GEMM(*args[:6], out=args[6], **kw)


# ---------------------------------------------------------------------------------------------------
# launch_cache
# ---------------------------------------------------------------------------------------------------

def test_hit_replays_the_same_launch_without_the_general_path(gpu):
    args = numba_args()
    call(args)
    assert len(gpu.slow) == 1 and len(gpu.queries) == 7
    first = gpu.launches[-1]
    for _ in range(3):
        call(args)
    assert len(gpu.slow) == 1 and len(gpu.queries) == 7, "a repeated call read its arrays again"
    assert gpu.launches[1:] == [first] * 3
    assert first[2][:7] == tuple(BASE + (i << 32) for i in range(7))
    assert launch_cache.describe(args[0]) == "cai_key" and len(launch_cache._entries) == 1


@pytest.mark.parametrize("index,field,value", [
    (0, "ptr", BASE + (9 << 32)), (2, "shape", (256, 8)), (0, "strides", (64, 1)), (0, "dtype", np.dtype("int8")),
    (0, "stream", 0x5000), (5, "ptr", BASE + (9 << 32))])
def test_any_changed_value_misses(gpu, index, field, value):
    args = numba_args()
    call(args)
    setattr(args[index], field, value)  # the same object, another value read from its CAI dict
    call(args)
    assert len(gpu.slow) == 2, f"a changed {field} of {plans.NAMES[index]} hit the old entry"
    assert len(gpu.launches) == 2
    launched = gpu.launches[-1]
    if field == "ptr":
        assert launched[2][index] == value
    if field == "shape":
        assert launched[2][8] == 256  # a_scale_rows from a_scale's new shape
    if field == "stream":
        assert launched[1] == 0x5000  # a CAI v3 stream of a is the default launch stream


def test_out_shape_change_is_refused_not_replayed(gpu):
    args = numba_args()
    call(args)
    args[0].shape = (32, 64)  # now out (16, 8) is too small: the checks of the general path must run
    with pytest.raises(ValueError, match=r"out\.shape=\(16, 8\) but \(32, 8\)"):
        call(args)
    assert len(gpu.launches) == 1


@pytest.mark.parametrize("options", [dict(tile_m=32), dict(tile_n=64, tile_k=256, tile_m=128, swap_ab=False),
                                     dict(out_dtype="float16"), dict(stream=7)])
def test_changed_call_options_miss(gpu, options):
    args = numba_args()
    call(args)
    call(args, **options)
    call(args, **options)
    assert len(gpu.slow) == 2  # one miss for the new options, then their own entry hits
    if "stream" in options:
        assert [s for _g, s, _a in gpu.launches] == [0, 7, 7]


def test_environment_flags_are_part_of_the_key(gpu, monkeypatch):
    args = numba_args()
    call(args)
    monkeypatch.setenv("NVFP4_DRIVER_PORTABLE", "1")
    call(args)
    assert len(gpu.slow) == 2


def test_checked_mode_and_odd_tiles_never_replay(gpu, monkeypatch):
    monkeypatch.setattr(ops, "_host_m_indptr", lambda *a, **k: np.array([0, 16], np.int32))
    args = numba_args()
    for _ in range(2):
        call(args, check_inputs=True)
        with pytest.raises(ValueError, match="tile_m=128.0"):  # 128.0 == 128: a key could lie, so always checked
            call(args, tile_m=128.0)
    assert len(gpu.slow) == 4 and not launch_cache._entries and len(gpu.launches) == 2


def test_new_object_at_a_reused_address_gets_a_fresh_entry(gpu):
    args = numba_args()
    call(args)
    old = args[1]
    args[1] = Numba(old.ptr, (1, 16, 64), "uint8")  # b freed and made again, larger, at the same address
    del old
    gc.collect()
    with pytest.raises(ValueError, match=r"out\.shape=\(16, 8\) but \(16, 16\)"):  # N=16 now: refused, not replayed
        call(args)
    args[1] = Numba(args[1].ptr, (1, 8, 64), "uint8")  # the same values as the first b, a new object
    call(args)
    assert len(gpu.slow) == 3, "an object the driver located was trusted without being the same object"
    assert len(gpu.queries) == 7 + 1, "the new b was not located by the driver"
    call(args)
    assert len(gpu.slow) == 3 and len(gpu.launches) == 3


def test_reused_address_on_another_gpu_is_asked_again(gpu, monkeypatch):
    where = {}
    monkeypatch.setattr(driver, "pointer_device", lambda ptr: where.get(ptr, 0))
    args = numba_args()
    call(args)
    args[:] = numba_args()  # every array freed and made again at the same addresses, now on GPU 1
    where.update({BASE + (i << 32): 1 for i in range(7)})
    gc.collect()
    call(args)
    assert gpu.launches[-1] is not gpu.launches[0] and len(gpu.slow) == 2
    (entry,) = launch_cache._entries.values()
    assert entry.ordinal == 1


def test_cache_is_bounded(gpu, monkeypatch):
    monkeypatch.setattr(launch_cache, "_MAX_ENTRIES", 4)
    args = numba_args()
    for i in range(10):
        args[0] = Numba(BASE + (40 << 32) + 256 * i, *SHAPES["a"])
        call(args)
        assert len(launch_cache._entries) <= 4
    assert len(gpu.launches) == 10


def test_entries_hold_no_strong_reference(gpu):
    import weakref
    args = numba_args()
    call(args)
    ref = weakref.ref(args[1])
    args[1] = None
    gc.collect()
    assert ref() is None


# --- other producers ---------------------------------------------------------------------------------

def fake_buffer(ptr, shape, dtype):
    buf = object.__new__(DeviceBuffer)
    buf.shape, buf.dtype, buf.device, buf.stream = shape, _DType(dtype), 0, None
    buf.nbytes, buf.ptr = int(np.prod(shape)) * buf.dtype.itemsize, ptr
    return buf


@pytest.fixture
def buffers():
    made = [fake_buffer(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]
    yield made
    for buf in made:
        buf.ptr = 0  # never cuMemFree the fake addresses


def test_device_buffer_is_keyed_by_attributes(gpu, buffers):
    call(buffers)
    assert buffers[6].stream == 0  # the op tags the out it wrote; the key holds that value from now on
    call(buffers)
    call(buffers)
    assert len(gpu.slow) == 1 and len(gpu.launches) == 3 and not gpu.queries
    assert launch_cache.describe(buffers[0]) == "buffer_key"
    buffers[2].shape = (256, 8)  # a larger a_scale: a_scale_rows changes, so must the launch
    call(buffers)
    assert len(gpu.slow) == 2 and gpu.launches[-1][2][8] == 256


def test_allocated_outputs_are_new_each_hit(gpu, buffers, monkeypatch):
    made = []

    class Recorder(DeviceBuffer):
        def __init__(self, shape, dtype, device=0):
            self.shape, self.dtype, self.device, self.stream = tuple(shape), _DType(dtype), device, None
            self.nbytes, self.ptr = 0, BASE + (20 << 32) + 256 * len(made)
            made.append(self)

    monkeypatch.setattr(devmem, "DeviceBuffer", Recorder)
    outs = [GEMM(*buffers[:6], out_dtype="float16", stream=3) for _ in range(3)]
    assert outs == made and len(gpu.slow) == 1  # the general path once; later calls allocate and replay
    assert [args[6] for _g, _s, args in gpu.launches] == [o.ptr for o in outs]
    assert all(o.stream == 3 and o.shape == (16, 8) for o in outs)
    for o in outs:
        o.ptr = 0


class FakeMemoryPointer:
    def __init__(self, ptr, device_id):
        self.ptr, self.device_id = ptr, device_id


class FakeCupy:
    """cupy.ndarray as the op reads it: attributes (CuPy's own CAI dict is never needed)."""

    def __init__(self, ptr, shape, dtype, device_id=0):
        self.dtype, self.shape = np.dtype(dtype), shape
        self.strides = tuple(int(np.prod(shape[i + 1:])) * self.dtype.itemsize for i in range(len(shape)))
        self.data = FakeMemoryPointer(ptr, device_id)
        self.device = types.SimpleNamespace(id=device_id)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.data.ptr, False), "strides": None,
                "version": 3}


FakeCupy.__module__ = "cupy._core.core"


@pytest.fixture
def cupy(monkeypatch):
    stream = types.SimpleNamespace(ptr=0x77)
    module = types.SimpleNamespace(ndarray=FakeCupy, cuda=types.SimpleNamespace(
        get_current_stream=lambda device=None: stream), __name__="cupy")
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(tensors, "_CUPY_NDARRAY", [None])
    return stream


def test_cupy_keys_on_values_not_identity(gpu, cupy):
    args = [FakeCupy(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]
    call(args)
    call(args)
    assert launch_cache.describe(args[0]) == "cupy_key"
    # New objects at the addresses the memory pool hands out again, on the same GPU: the same launch.
    again = [FakeCupy(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]
    call(again)
    assert len(gpu.slow) == 1 and len(gpu.launches) == 3
    cupy.ptr = 0x99  # CuPy's current stream is asked on every hit
    call(again)
    assert [s for _g, s, _a in gpu.launches] == [0x77] * 3 + [0x99] and len(gpu.slow) == 1
    again[1] = FakeCupy(again[1].data.ptr, (1, 8, 64), "int8")  # same address, another dtype: read again
    call(again)
    assert len(gpu.slow) == 2
    again[3] = FakeCupy(again[3].data.ptr, *SHAPES["b_scale"], device_id=1)  # another GPU: the key differs
    with pytest.raises(ValueError, match="one device"):
        call(again)


def test_cupy_dtype_names_are_memoised_per_dtype(cupy):
    for dtype, name in (("uint8", "uint8"), ("int32", "int32"), ("float16", "float16"), ("uint8", "uint8")):
        arr = tensors._from_cupy(FakeCupy(BASE, (4, 8), dtype))
        assert arr.dtype == name and arr.strides == (8, 1)
    assert tensors._CUPY_DTYPES[np.dtype("int32")] == "int32"
    assert tensors._from_cupy(FakeCupy(BASE, (4,), "complex64")) is None  # not ours: the CAI path words it


class FakeJax:
    """A jax.Array on one GPU: a DLPack capsule per call (the stream it is given recorded) and
    unsafe_buffer_pointer(), which raises once the array is deleted."""

    def __init__(self, ptr, shape, dtype):
        self.ptr, self.shape, self.dtype = ptr, shape, np.dtype(dtype)
        self.deleted = False
        self.dlpack_streams = []
        self._keep = []

    def unsafe_buffer_pointer(self):
        if self.deleted:
            raise RuntimeError("Array has been deleted")
        return self.ptr

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, *, stream=None, max_version=None):
        if self.deleted:
            raise RuntimeError("Array has been deleted")
        self.dlpack_streams.append(stream)
        codes = {"uint8": (1, 8), "int32": (0, 32), "float32": (2, 32)}
        code, bits = codes[self.dtype.name]
        shape = (ctypes.c_int64 * len(self.shape))(*self.shape)
        tensor = devmem.DLTensor(self.ptr, devmem.DLDevice(2, 0), len(self.shape), devmem.DLDataType(code, bits, 1),
                                 ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)), None, 0)
        managed = devmem.DLManagedTensor(tensor, None, None)
        self._keep.append((shape, managed))
        return devmem._PyCapsule_New(ctypes.addressof(managed), b"dltensor", None)


FakeJax.__module__ = "jaxlib._jax"


def test_jax_arrays_replay_on_the_stream_they_were_ordered_for(gpu, buffers):
    jx = [FakeJax(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES[:6])]
    for _ in range(3):
        GEMM(*jx, out=buffers[6], stream=5)
    assert [x.dlpack_streams for x in jx] == [[5]] * 6  # DLPack once: its wait covers later launches on 5
    assert launch_cache.describe(jx[0]) == "jax_key" and len(gpu.launches) == 3
    GEMM(*jx, out=buffers[6], stream=6)  # another stream: the first wait orders nothing there
    assert [x.dlpack_streams for x in jx] == [[5, 6]] * 6
    jx[0].deleted = True  # deleted (or donated): its memory may already hold something else
    with pytest.raises(RuntimeError, match="deleted"):
        GEMM(*jx, out=buffers[6], stream=5)
    assert len(gpu.launches) == 4


# ---------------------------------------------------------------------------------------------------
# ops._pointer_device
# ---------------------------------------------------------------------------------------------------

def test_pointer_device_is_remembered_per_live_object(gpu, monkeypatch):
    x = Numba(BASE, (4,), "uint8")
    arr = tensors.as_device_array(x, "a")
    assert [ops._pointer_device(arr) for _ in range(3)] == [0, 0, 0] and gpu.queries == [BASE]
    x.ptr = BASE + 256  # the same object now reports another address: asked again
    ops._pointer_device(tensors.as_device_array(x, "a"))
    assert gpu.queries == [BASE, BASE + 256]
    del x, arr
    gc.collect()
    y = Numba(BASE + 256, (4,), "uint8")  # a new object, perhaps at the freed one's id: asked again
    ops._pointer_device(tensors.as_device_array(y, "a"))
    assert gpu.queries == [BASE, BASE + 256, BASE + 256]
    raw = tensors.DeviceArray(BASE, (4,), (1,), "uint8", None, "raw", None)  # no object: asked every time
    ops._pointer_device(raw)
    ops._pointer_device(raw)
    assert len(gpu.queries) == 5
    monkeypatch.setattr(ops, "_MAX_OWNERS", 3)
    keep = [Numba(BASE + 512 * i, (4,), "uint8") for i in range(8)]
    for z in keep:
        ops._pointer_device(tensors.as_device_array(z, "a"))
        assert len(ops._owners) <= 3


def test_flags_object_in_key_is_the_callers(gpu):
    """run_with_flags (selftest) passes its own Flags: an entry made under them is not replayed for
    the environment's."""
    args = numba_args()
    ops.run_with_flags(config.Flags(portable=True), *args[:6], out=args[6])
    call(args)
    assert len(gpu.slow) == 2


def test_device_buffer_out_hits_from_the_second_call(gpu, buffers):
    """With every reader known, the first call's key is read before the call; the op then tags out with
    its stream, and the entry is kept under the tagged value, so the second call already replays."""
    call(buffers)  # learns the DeviceBuffer reader
    fresh = [fake_buffer(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]
    for _ in range(3):
        call(fresh)
    assert len(gpu.slow) == 2 and len(gpu.launches) == 4
    for buf in fresh:
        buf.ptr = 0


# --- numba.cuda's device arrays, read through their attributes -------------------------------------------

class FakeNumbaPointer:
    """numba.cuda's MemoryPointer as far as the array uses it: the address as an int-convertible object,
    and as a ctypes value built from it per access."""

    def __init__(self, ptr):
        self.device_pointer = FakeDevicePointer(ptr)

    @property
    def device_ctypes_pointer(self):
        p = self.device_pointer  # older numba: already a ctypes value
        return p if isinstance(p, ctypes.c_void_p) else ctypes.c_size_t(int(p))


class FakeDevicePointer:
    """cuda.bindings' CUdeviceptr: an address that int() reads."""

    def __init__(self, ptr):
        self.ptr = ptr

    def __int__(self):
        return self.ptr


class DeviceNDArrayBase:
    """numba.cuda's DeviceNDArrayBase: plain attributes, and a CAI dict built from them per access (counted)."""

    reads = 0

    def __init__(self, ptr, shape, dtype, stream=0):
        self.dtype = np.dtype(dtype)
        self.shape, self.strides = shape, tuple(int(np.prod(shape[i + 1:])) * self.dtype.itemsize
                                                for i in range(len(shape)))
        self.gpu_data, self.stream = FakeNumbaPointer(ptr), stream

    @property
    def device_ctypes_pointer(self):
        return self.gpu_data.device_ctypes_pointer

    @property
    def __cuda_array_interface__(self):
        DeviceNDArrayBase.reads += 1
        contiguous = self.strides == tuple(int(np.prod(self.shape[i + 1:])) * self.dtype.itemsize
                                           for i in range(len(self.shape)))
        return {"shape": self.shape, "strides": None if contiguous else self.strides,
                "data": (self.device_ctypes_pointer.value, False), "typestr": self.dtype.str,
                "stream": int(self.stream) if self.stream != 0 else None, "version": 3}


class DeviceNDArray(DeviceNDArrayBase):
    pass


class OwnInterface(DeviceNDArray):
    """A subclass with its own CAI property: its attributes may not be what it hands over."""

    @property
    def __cuda_array_interface__(self):
        return DeviceNDArrayBase.__cuda_array_interface__.fget(self)


for _cls in (DeviceNDArrayBase, DeviceNDArray, OwnInterface):
    _cls.__module__ = "numba.cuda.cudadrv.devicearray"


class NumbaStream:
    def __init__(self, handle):
        self.handle = handle

    def __int__(self):
        return self.handle


def numba_arrays(cls=DeviceNDArray):
    return [cls(BASE + (i << 32), *SHAPES[name]) for i, name in enumerate(plans.NAMES)]


def test_numba_arrays_hit_without_reading_their_interface(gpu):
    args = numba_arrays()
    call(args)
    assert launch_cache.describe(args[0]) == "numba_key" and len(gpu.slow) == 1
    DeviceNDArrayBase.reads = 0
    for _ in range(3):
        call(args)
    assert len(gpu.slow) == 1 and DeviceNDArrayBase.reads == 0, "a hit built the CAI dicts"
    assert gpu.launches[1:] == [gpu.launches[0]] * 3


@pytest.mark.parametrize("index,change", [
    (0, lambda x: setattr(x, "gpu_data", FakeNumbaPointer(BASE + (9 << 32)))),
    (0, lambda x: setattr(x.gpu_data, "device_pointer", FakeDevicePointer(BASE + (9 << 32)))),
    (0, lambda x: setattr(x.gpu_data.device_pointer, "ptr", BASE + (9 << 32))),
    (2, lambda x: setattr(x, "shape", (256, 8))),
    (0, lambda x: setattr(x, "strides", (128, 1))),
    (0, lambda x: setattr(x, "dtype", np.dtype("int8"))),
    (0, lambda x: setattr(x, "stream", NumbaStream(0x5000)))])
def test_numba_array_with_a_changed_attribute_misses(gpu, index, change):
    args = numba_arrays()
    call(args)
    change(args[index])
    try:
        call(args)
    except ValueError:  # strides (128, 1) over a (16, 64) a: refused by the general path's checks, not replayed
        pass
    assert len(gpu.slow) == 2, "a changed attribute hit the old entry"
    if len(gpu.launches) == 2 and index == 0:
        launched = gpu.launches[-1]
        assert launched[2][0] == args[0].device_ctypes_pointer.value
        assert launched[1] == (0x5000 if isinstance(args[0].stream, NumbaStream) else 0)


def test_new_numba_array_at_a_reused_address_misses(gpu):
    args = numba_arrays()
    call(args)
    args[1] = DeviceNDArray(BASE + (1 << 32), *SHAPES["b"])  # the same values, a new object (memory reused)
    gc.collect()
    call(args)
    assert len(gpu.slow) == 2 and len(gpu.queries) == 7 + 1, "the new array was not read and located afresh"
    call(args)
    assert len(gpu.slow) == 2


def test_numba_subclass_with_its_own_interface_is_read_through_it(gpu):
    args = numba_arrays(OwnInterface)
    call(args)
    assert launch_cache.describe(args[0]) == "cai_key"


def test_numba_with_ctypes_pointers_is_read_through_its_interface(gpu):
    """Older numba's pointer objects are ctypes values, which int() refuses: the CAI dict, not a guess."""
    args = numba_arrays()
    for x in args:
        x.gpu_data.device_pointer = ctypes.c_void_p(int(x.gpu_data.device_pointer))
    call(args)
    call(args)
    assert launch_cache.describe(args[0]) == "cai_key" and len(gpu.slow) == 1


def test_real_numba_array_key_matches_its_interface():
    """numba.cuda's own class (no GPU needed over a given pointer): found as Numba's, and its key holds
    every value its CAI dict does."""
    da = pytest.importorskip("numba.cuda.cudadrv.devicearray")
    from numba.cuda.cudadrv import driver as numba_driver
    memory = numba_driver.MemoryPointer(context=None, pointer=ctypes.c_void_p(BASE), size=4096)
    x = da.DeviceNDArray((16, 64), (64, 1), np.uint8, gpu_data=memory)
    assert launch_cache._is_numba_array(x)
    ptr, shape, strides, dtype, stream = launch_cache._numba_key(x)
    cai = x.__cuda_array_interface__
    assert (cai["data"][0], cai["shape"], cai["typestr"], cai["stream"]) == (ptr, shape, dtype.str, stream)
    assert strides == (64, 1) and cai["strides"] is None
