"""tensors.py, streams.py, outputs.py, dtypes.py: caller objects -> DeviceArray, checks, streams, outputs.

The CPU part drives every protocol through fakes: dicts for __cuda_array_interface__, real
PyCapsules built with ctypes for DLPack, and real torch CPU capsules as an independent check of
our struct layout. The real frameworks on a GPU: tests/gpu/test_tensors_gpu.py.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import types

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nvfp4_driver.dlpack import read_capsule
from nvfp4_driver.dtypes import canonical_out_dtype, dtype_name
from nvfp4_driver.outputs import allocate
from nvfp4_driver.streams import resolve_stream
from nvfp4_driver.tensors import DeviceArray, as_device_array, check_array, check_same_device

FAKE_PTR = 0x7F00_0000_0000  # an address in the range CUDA hands out; never dereferenced


# ---------------------------------------------------------------------------------------------
# fakes
# ---------------------------------------------------------------------------------------------

class FakeCAI:
    """Exposes whatever __cuda_array_interface__ dict it is given."""

    def __init__(self, cai, dtype=None):
        self.__cuda_array_interface__ = cai
        if dtype is not None:
            self.dtype = dtype


class FakeCupyDevice:
    def __init__(self, id):
        self.id = id


class FakeCupyArray(FakeCAI):
    __module__ = "cupy._core.core"

    def __init__(self, cai, device_id, dtype=None):
        super().__init__(cai, dtype)
        self.device = FakeCupyDevice(device_id)


def cai(shape, typestr="|u1", strides=None, ptr=FAKE_PTR, readonly=False, **extra):
    d = {"shape": shape, "typestr": typestr, "data": (ptr, readonly), "strides": strides,
         "version": 3}
    d.update(extra)
    return d


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DELETER)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", DELETER), ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


# Counters for the tensor deleter (must never run: we do not consume) and the capsule
# destructor (runs when the last reference to the capsule goes).
COUNTS = {"deleter": 0, "destructor": 0}


@DELETER
def _deleter(_self):
    COUNTS["deleter"] += 1


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _destructor(_capsule):
    COUNTS["destructor"] += 1


# PyCapsule keeps the name pointer, not a copy: the names live as long as the module.
_NAMES = {n: ctypes.create_string_buffer(n) for n in (b"dltensor", b"dltensor_versioned", b"other")}
_PyCapsule_New = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_void_p,
                                   ctypes.c_void_p)(("PyCapsule_New", ctypes.pythonapi))
_PyCapsule_GetName = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", ctypes.pythonapi))


class FakeDLPack:
    """A DLPack producer whose capsules are real PyCapsules over ctypes-owned structs."""

    def __init__(self, shape, strides=None, *, ptr=FAKE_PTR, byte_offset=0, code=1, bits=8,
                 lanes=1, device=(2, 0), capsule_device=None, versioned=True,
                 version=(1, 0), flags=0, capsule_name=None):
        self.shape, self.strides, self.ptr, self.byte_offset = shape, strides, ptr, byte_offset
        self.dtype = (code, bits, lanes)
        self.device, self.capsule_device = device, capsule_device or device
        self.versioned, self.version, self.flags = versioned, version, flags
        self.capsule_name = capsule_name
        self.keep = []      # ctypes memory behind every capsule handed out
        self.calls = []     # the kwargs of every __dlpack__ call

    def __dlpack_device__(self):
        return self.device

    def _capsule(self, versioned):
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*self.strides) if self.strides else None
        t = DLTensor(self.ptr, DLDevice(*self.capsule_device), ndim, DLDataType(*self.dtype),
                     ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
                     ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64)) if strides else None,
                     self.byte_offset)
        if versioned:
            mt = DLManagedTensorVersioned(DLPackVersion(*self.version), None, _deleter,
                                          self.flags, t)
            name = b"dltensor_versioned"
        else:
            mt = DLManagedTensor(t, None, _deleter)
            name = b"dltensor"
        name = self.capsule_name or name
        self.keep.append((shape, strides, mt))
        return _PyCapsule_New(ctypes.addressof(mt), ctypes.addressof(_NAMES[name]),
                              ctypes.cast(_destructor, ctypes.c_void_p).value)

    def __dlpack__(self, *, stream=None, max_version=None):
        self.calls.append({"stream": stream, "max_version": max_version})
        return self._capsule(self.versioned and max_version is not None)


class LegacyDLPack(FakeDLPack):
    """A pre-1.0 producer: __dlpack__ has no max_version keyword."""

    def __dlpack__(self, *, stream=None):
        self.calls.append({"stream": stream})
        return self._capsule(False)


class DLPackOf:
    """Only the DLPack half of a real torch tensor (torch itself takes the fast path)."""

    def __init__(self, t, claim_device=None):
        self.t, self.claim = t, claim_device

    def __dlpack_device__(self):
        return self.claim or self.t.__dlpack_device__()

    def __dlpack__(self, **kw):
        return self.t.__dlpack__(**kw)


class FakeTorchDevice:
    def __init__(self, type, index):
        self.type, self.index = type, index

    def __str__(self):
        return f"{self.type}:{self.index}"


class FakeCudaTensor:
    """What the torch fast path reads from a CUDA tensor, without needing CUDA."""
    __module__ = "torch.fake"

    def __init__(self, ptr, shape, stride, dtype, index):
        self._ptr, self.shape, self._stride = ptr, torch.Size(shape), stride
        self.dtype, self.device = dtype, FakeTorchDevice("cuda", index)

    def data_ptr(self):
        return self._ptr

    def stride(self):
        return self._stride


def da(shape=(4, 8), dtype="uint8", strides=None, device=0, readonly=False, framework="cai",
       stream=None):
    return DeviceArray(FAKE_PTR, shape, strides or _c(shape), dtype, device, framework, None,
                       readonly=readonly, stream=stream)


def _c(shape):
    return tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))


# ---------------------------------------------------------------------------------------------
# refusals of what is not device memory
# ---------------------------------------------------------------------------------------------

def test_torch_cpu_tensor_refused_with_fix():
    with pytest.raises(ValueError, match=r"a is on the CPU \(torch device 'cpu'\).*\.cuda\(\)"):
        as_device_array(torch.zeros(4, dtype=torch.uint8), "a")


def test_torch_meta_tensor_refused():
    with pytest.raises(ValueError, match=r"b is not on a CUDA device \(torch device 'meta'\)"):
        as_device_array(torch.empty(4, device="meta"), "b")


def test_torch_subclass_takes_torch_path():
    class Mine(torch.Tensor):  # module is this test file, not 'torch'
        pass

    with pytest.raises(ValueError, match="on the CPU"):
        as_device_array(torch.zeros(2).as_subclass(Mine), "a")


@pytest.mark.parametrize("x, pattern", [
    (np.zeros(4, np.uint8), r"a is a numpy\.ndarray in host memory"),
    (np.float32(1.0), r"a is a numpy\.float32 in host memory"),
    ([1, 2, 3], r"a is a Python list"),
    ((1, 2), r"a is a Python tuple"),
    (3, r"a is a Python int"),
    (None, r"a is None but a CUDA device array is required"),
    (object(), r"a is a builtins\.object, which exposes none of"),
])
def test_non_device_objects_refused(x, pattern):
    with pytest.raises(TypeError, match=pattern):
        as_device_array(x, "a")


def test_torch_cpu_dlpack_refused_by_device_type():
    with pytest.raises(ValueError, match=r"m_indptr is in CPU memory \(kDLCPU\).*\(1, 0\)"):
        as_device_array(DLPackOf(torch.zeros(3, dtype=torch.int32)), "m_indptr")


@pytest.mark.parametrize("dev_type, word", [(3, "kDLCUDAHost"), (13, "kDLCUDAManaged"),
                                            (10, "kDLROCM"), (7, "DLPack device type 7")])
def test_other_dlpack_devices_refused(dev_type, word):
    x = FakeDLPack((4,), device=(dev_type, 0))
    with pytest.raises(ValueError, match=word):
        as_device_array(x, "a")
    assert x.calls == []  # refused before asking for a capsule


# ---------------------------------------------------------------------------------------------
# torch fast path (fake CUDA tensor) and its dtype table
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tdtype, name", [(torch.uint8, "uint8"), (torch.int32, "int32"),
                                          (torch.float32, "float32"), (torch.bfloat16, "bfloat16"),
                                          (torch.float16, "float16"),
                                          (torch.float4_e2m1fn_x2, "float4_e2m1fn_x2")])
def test_torch_fast_path_reads_attributes(tdtype, name):
    t = FakeCudaTensor(FAKE_PTR + 64, (3, 5), (10, 2), tdtype, 1)
    a = as_device_array(t, "a")
    assert (a.ptr, a.shape, a.strides, a.dtype, a.device, a.framework) == \
        (FAKE_PTR + 64, (3, 5), (10, 2), name, 1, "torch")
    assert a.obj is t and not a.is_contiguous


def test_torch_reader_matches_the_constructor():
    t = FakeCudaTensor(FAKE_PTR, (2, 3), (3, 1), torch.uint8, 0)
    fast = as_device_array(t, "a")
    slow = DeviceArray(FAKE_PTR, (2, 3), (3, 1), "uint8", 0, "torch", t)
    assert type(fast) is DeviceArray and fast == slow and repr(fast) == repr(slow)
    assert fast._asdict() == slow._asdict()  # every field, defaults included
    with pytest.raises(AttributeError):
        fast.ptr = 0


def test_torch_unsupported_dtype_refused():
    with pytest.raises(TypeError, match=r"a\.dtype=torch\.complex64"):
        as_device_array(FakeCudaTensor(FAKE_PTR, (2,), (1,), torch.complex64, 0), "a")


def test_device_array_passes_through_and_ignores_obj_in_eq():
    a = DeviceArray(FAKE_PTR, (2,), (1,), "uint8", 0, "torch", torch.zeros(2))
    b = DeviceArray(FAKE_PTR, (2,), (1,), "uint8", 0, "torch", torch.ones(2))
    assert as_device_array(a, "a") is a
    assert a == b and hash(a) == hash(b)  # would raise if tensors were compared


# ---------------------------------------------------------------------------------------------
# __cuda_array_interface__
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("typestr, name, size", [
    ("|u1", "uint8", 1), ("|i1", "int8", 1), ("|b1", "bool", 1), ("<u2", "uint16", 2),
    ("<i2", "int16", 2), ("<f2", "float16", 2), ("<i4", "int32", 4), ("<f4", "float32", 4),
    ("=i8", "int64", 8), ("<f8", "float64", 8)])
def test_cai_typestrs(typestr, name, size):
    a = as_device_array(FakeCAI(cai((3, 4), typestr)), "a")
    assert (a.dtype, a.itemsize, a.nbytes) == (name, size, 12 * size)


def test_cai_v3_strides_none_is_c_contiguous():
    x = FakeCAI(cai((4, 8, 2)))
    a = as_device_array(x, "a")
    assert (a.ptr, a.shape, a.strides, a.device, a.framework) == \
        (FAKE_PTR, (4, 8, 2), (16, 2, 1), None, "cai")
    assert a.obj is x and a.is_contiguous and a.numel == 64 and not a.readonly


def test_cai_byte_strides_become_element_strides():
    a = as_device_array(FakeCAI(cai((3, 4), "<f4", strides=(32, 4))), "a")
    assert a.strides == (8, 1) and not a.is_contiguous
    t = as_device_array(FakeCAI(cai((3, 4), "<f2", strides=(2, 6))), "a")  # a transpose
    assert t.strides == (1, 3) and not t.is_contiguous


def test_cai_records_readonly_and_stream():
    a = as_device_array(FakeCAI(cai((2,), readonly=True, stream=0xBEEF)), "a")
    assert a.readonly and a.stream == 0xBEEF
    with pytest.raises(ValueError, match=r"'stream'\]=0 is not a positive"):
        as_device_array(FakeCAI(cai((2,), stream=0)), "a")


def test_cai_cupy_framework_and_device():
    a = as_device_array(FakeCupyArray(cai((2, 2), "<f2"), device_id=3), "out")
    assert (a.framework, a.device, a.dtype) == ("cupy", 3, "float16")


def test_cai_void_typestr_needs_ml_dtypes_dtype():
    with pytest.raises(TypeError, match=r"out has typestr '<V2' \(raw bytes\) and dtype unknown"):
        as_device_array(FakeCAI(cai((2,), "<V2")), "out")
    bf = as_device_array(FakeCAI(cai((2,), "<V2"), dtype=np.dtype(ml_dtypes.bfloat16)), "out")
    assert bf.dtype == "bfloat16" and bf.itemsize == 2
    with pytest.raises(TypeError, match="dtype void16"):  # a plain 2-byte void is not bfloat16
        as_device_array(FakeCAI(cai((2,), "<V2"), dtype=np.dtype("V2")), "out")


@pytest.mark.parametrize("d, exc, pattern", [
    (cai((2,), ">f4"), ValueError, "big-endian"),
    (cai((2,), "<c8"), TypeError, r"typestr '<c8'"),
    (cai((2,), "f4"), ValueError, "is not a numpy typestr"),
    (cai((2, 3), "<i4", strides=(12, 2)), ValueError, "whole elements"),
    (cai((2, 3), "<i4", strides=(12,)), ValueError, "one per dim"),
    (cai((2,), mask=object()), ValueError, "masked array"),
    ({"shape": (2,), "typestr": "|u1", "version": 2}, ValueError, r"lacks \['data'\]"),
    (cai((2,), ptr=None), ValueError, r"is not \(ptr, readonly\)"),
    (cai((-1,)), ValueError, "negative"),
])
def test_cai_malformed_refused(d, exc, pattern):
    with pytest.raises(exc, match=pattern):
        as_device_array(FakeCAI(d), "a")


def test_cai_not_a_dict():
    with pytest.raises(TypeError, match="is a list, not a dict"):
        as_device_array(FakeCAI([1]), "a")


@st.composite
def numpy_views(draw):
    """Host arrays with arbitrary strides (steps, reversal, transposes, size-0/size-1 dims)."""
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.float16, np.int32, np.float32]))
    ndim = draw(st.integers(1, 4))
    base_shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    v = np.zeros(base_shape, dtype)
    v = v[tuple(slice(None, None, draw(st.sampled_from([1, 2, -1, -2]))) for _ in range(ndim))]
    return v.transpose(draw(st.permutations(range(ndim))))


@settings(max_examples=100, deadline=None)
@given(numpy_views())
def test_cai_matches_numpy_layout(v):
    # numpy is the oracle: its own strides and its (relaxed) C-contiguity flag.
    ai = v.__array_interface__
    x = FakeCAI(dict(ai, version=3))
    a = as_device_array(x, "a")
    assert a.ptr == ai["data"][0] and a.shape == v.shape and a.dtype == v.dtype.name
    # Every element's address from our element strides equals numpy's (numpy may report any
    # stride for a size-1 dimension, so compare addresses, not stride tuples).
    idx = np.indices(v.shape).reshape(v.ndim, -1)
    ours = a.ptr + a.itemsize * (np.array(a.strides).reshape(-1, 1) * idx).sum(axis=0)
    numpys = ai["data"][0] + (np.array(v.strides).reshape(-1, 1) * idx).sum(axis=0)
    assert np.array_equal(ours, numpys)
    if ai["strides"] is not None and v.size:
        assert a.strides == tuple(s // v.itemsize for s in v.strides)
    assert a.is_contiguous == v.flags.c_contiguous
    assert a.nbytes == v.nbytes


# ---------------------------------------------------------------------------------------------
# DLPack
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("versioned", [True, False])
def test_dlpack_capsule_parsed(versioned):
    x = FakeDLPack((3, 4), (8, 2), byte_offset=256, code=4, bits=16, device=(2, 1),
                   versioned=versioned)
    a = as_device_array(x, "out")
    assert (a.ptr, a.shape, a.strides, a.dtype, a.device, a.framework) == \
        (FAKE_PTR + 256, (3, 4), (8, 2), "bfloat16", 1, "dlpack")
    assert a.obj is x and not a.is_contiguous
    assert x.calls == [{"stream": None, "max_version": (1, 0)}]
    assert _PyCapsule_GetName(a.keepalive) == (b"dltensor_versioned" if versioned else b"dltensor")


def test_dlpack_null_strides_are_c_contiguous_and_scalar():
    a = as_device_array(FakeDLPack((2, 3, 5), code=2, bits=32), "alpha")
    assert a.strides == (15, 5, 1) and a.is_contiguous and a.dtype == "float32"
    s = as_device_array(FakeDLPack((), code=0, bits=32), "s")
    assert s.shape == () and s.strides == () and s.numel == 1


@pytest.mark.parametrize("code, bits, lanes, name", [
    (0, 8, 1, "int8"), (0, 32, 1, "int32"), (1, 8, 1, "uint8"), (1, 16, 1, "uint16"),
    (2, 16, 1, "float16"), (2, 32, 1, "float32"), (4, 16, 1, "bfloat16"), (6, 8, 1, "bool"),
    (10, 8, 1, "float8_e4m3fn"), (17, 4, 2, "float4_e2m1fn_x2")])
def test_dlpack_dtype_codes(code, bits, lanes, name):
    assert as_device_array(FakeDLPack((4,), code=code, bits=bits, lanes=lanes), "a").dtype == name


@pytest.mark.parametrize("code, bits, lanes", [(2, 16, 2), (5, 64, 1), (4, 32, 1), (17, 4, 1)])
def test_dlpack_unsupported_dtype(code, bits, lanes):
    with pytest.raises(TypeError, match=f"code={code}, bits={bits}, lanes={lanes}"):
        as_device_array(FakeDLPack((4,), code=code, bits=bits, lanes=lanes), "a")


def test_dlpack_legacy_producer_fallback_and_stream_forwarding():
    x = LegacyDLPack((4,))
    a = as_device_array(x, "a", stream=0x1234)
    assert a.ptr == FAKE_PTR and a.framework == "dlpack"
    # First try with max_version (TypeError from the producer), then the legacy call.
    assert x.calls == [{"stream": 0x1234}]
    y = FakeDLPack((4,))
    as_device_array(y, "a", stream=0)  # handle 0 = legacy default = DLPack's "no stream"
    assert y.calls == [{"stream": None, "max_version": (1, 0)}]


def test_dlpack_versioned_flags_mean_readonly():
    assert as_device_array(FakeDLPack((4,), flags=1), "a").readonly
    assert as_device_array(FakeDLPack((4,), flags=2), "a").readonly  # a copy: writes are lost
    assert not as_device_array(FakeDLPack((4,), flags=4), "a").readonly


def test_dlpack_bad_capsules():
    with pytest.raises(ValueError, match=r"version 2\.0; nvfp4_driver reads major version 1"):
        as_device_array(FakeDLPack((4,), version=(2, 0)), "a")
    with pytest.raises(TypeError, match=r"returned b'other', not a 'dltensor'"):
        as_device_array(FakeDLPack((4,), capsule_name=b"other"), "a")
    with pytest.raises(ValueError, match=r"says \(2, 0\) but its capsule says \(2, 1\)"):
        as_device_array(FakeDLPack((4,), capsule_device=(2, 1)), "a")


def test_dlpack_capsule_kept_alive_not_consumed():
    # No gc.collect(): nothing here is in a cycle, so CPython frees by reference count at once.
    before = dict(COUNTS)
    a = as_device_array(FakeDLPack((4,)), "a")
    # Alive while the DeviceArray is: no destructor, and we never call the deleter ourselves.
    assert COUNTS == before
    del a
    assert COUNTS["destructor"] == before["destructor"] + 1
    assert COUNTS["deleter"] == before["deleter"]


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_real_torch_capsule_matches_torch(max_version):
    # torch is an independent producer: our ctypes layout must read what it wrote.
    base = torch.arange(60, dtype=torch.int16).reshape(5, 12)
    t = base[1:, 3::2]  # storage offset and non-unit strides
    kw = {} if max_version is None else {"max_version": max_version}
    cap = t.__dlpack__(**kw)
    v = read_capsule(cap, "t")
    assert (v.ptr, v.shape, v.strides, v.dtype, v.device_type, v.device_id) == \
        (t.data_ptr(), tuple(t.shape), t.stride(), "int16", 1, 0)
    # Not consumed: torch can still import the very same capsule.
    assert torch.equal(torch.from_dlpack(cap), t)


def test_real_torch_capsule_through_full_path_checks_device_claim():
    t = torch.zeros(4, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"says \(2, 0\) but its capsule says \(1, 0\)"):
        as_device_array(DLPackOf(t, claim_device=(2, 0)), "a")


# ---------------------------------------------------------------------------------------------
# dtype names
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, name", [
    ("bfloat16", "bfloat16"), (torch.bfloat16, "bfloat16"), (ml_dtypes.bfloat16, "bfloat16"),
    (np.float16, "float16"), ("<f2", "float16"), (np.dtype("int32"), "int32"),
    (torch.float8_e4m3fn, "float8_e4m3fn"), (ml_dtypes.float8_e4m3fn, "float8_e4m3fn")])
def test_dtype_name(x, name):
    assert dtype_name(x) == name


@pytest.mark.parametrize("x", ["bf16x", torch.complex64, np.complex64, None, object(), "<c8"])
def test_dtype_name_refused(x):
    with pytest.raises(TypeError):
        dtype_name(x)


@pytest.mark.parametrize("value, want", [
    (torch.bfloat16, "bfloat16"), (torch.float16, "float16"), ("bfloat16", "bfloat16"),
    ("bf16", "bfloat16"), ("BF16", "bfloat16"), ("float16", "float16"), ("fp16", "float16"),
    ("half", "float16"), (np.float16, "float16"), (np.dtype("float16"), "float16"),
    (ml_dtypes.bfloat16, "bfloat16"), (np.dtype(ml_dtypes.bfloat16), "bfloat16")])
def test_canonical_out_dtype_accepted(value, want):
    assert canonical_out_dtype(value) == want


@pytest.mark.parametrize("value", [torch.float32, torch.uint8, "float32", "fp8", "", np.float32,
                                   np.dtype("V2"), float, None, 16, True, object()])
def test_canonical_out_dtype_refused(value):
    with pytest.raises(ValueError, match=r"out_dtype=.* not supported; accepted: torch\.bfloat16"):
        canonical_out_dtype(value)


# ---------------------------------------------------------------------------------------------
# check_array / check_same_device
# ---------------------------------------------------------------------------------------------

def test_check_array_passes_and_returns_arr():
    a = da((4, 8))
    assert check_array(a, "a", dtype="uint8", shape=(4, 8), ndim=2, min_nbytes=32) is a
    assert check_array(a, "a", dtype=("float16", "uint8"), shape=(None, 8)) is a


def test_check_array_dtype():
    with pytest.raises(TypeError, match=r"^a\.dtype=float16 but uint8 is required$"):
        check_array(da(dtype="float16"), "a", dtype="uint8")
    with pytest.raises(TypeError, match=r"out\.dtype=float32 but one of bfloat16, float16 is"):
        check_array(da(dtype="float32"), "out", dtype=("bfloat16", "float16"))


def test_check_array_shape_ndim():
    with pytest.raises(ValueError, match=r"b\.shape=\(8, 4096, 3584\) but \(\*, \*, 1792\) is"):
        check_array(da((8, 4096, 3584)), "b", dtype="uint8", shape=(None, None, 1792))
    with pytest.raises(ValueError, match=r"m_indptr\.shape=\(4, 1\) but \(4,\) is required"):
        check_array(da((4, 1), "int32"), "m_indptr", dtype="int32", shape=(4,))
    with pytest.raises(ValueError, match=r"a\.ndim=3 \(shape \(2, 2, 2\)\) but 2 is required"):
        check_array(da((2, 2, 2)), "a", dtype="uint8", ndim=2)


def test_check_array_contiguity_size_readonly():
    strided = da((4, 8), strides=(16, 1))
    with pytest.raises(ValueError, match=r"a is not contiguous: shape=\(4, 8\), strides=\(16, 1\)"):
        check_array(strided, "a", dtype="uint8")
    assert check_array(strided, "a", dtype="uint8", contiguous=False) is strided
    with pytest.raises(ValueError, match=r"a_scale has 32 bytes .* at least 64 are required"):
        check_array(da((4, 8)), "a_scale", dtype="uint8", min_nbytes=64)
    ro = da(readonly=True)
    check_array(ro, "a", dtype="uint8")  # inputs may be read-only
    with pytest.raises(ValueError, match="out is read-only"):
        check_array(ro, "out", dtype="uint8", writable=True)


@pytest.mark.parametrize("shape, strides, want", [
    ((4, 1, 8), (8, 999, 1), True),     # size-1 dim: any stride
    ((1, 8), (1, 1), True),
    ((0, 8), (123, 7), True),           # empty: nothing is addressed
    ((4, 8), (1, 4), False),            # Fortran order
    ((4, 8), (8, -1), False),           # reversed
    ((), (), True)])
def test_is_contiguous(shape, strides, want):
    assert da(shape, strides=strides).is_contiguous is want


def test_check_same_device():
    assert check_same_device({"a": da(device=1), "b": da(device=None), "c": da(device=1)}) == 1
    assert check_same_device({"a": da(device=None)}) is None
    assert check_same_device({}) is None
    with pytest.raises(ValueError, match=r"^a is on cuda:0 but b on cuda:1; all arrays"):
        check_same_device({"a": da(device=0), "x": da(device=None), "b": da(device=1)})
    with pytest.raises(ValueError, match=r"a is on cuda:0 but b on cuda:0, c on cuda:2"):
        check_same_device({"a": da(device=0), "b": da(device=0), "c": da(device=2)})


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------

class StreamProto:
    def __init__(self, ret):
        self.ret = ret

    def __cuda_stream__(self):
        return self.ret


class FakeTorchStream:
    __module__ = "torch.cuda.streams"
    cuda_stream = 0xAA00


class FakeCupyStream:
    __module__ = "cupy.cuda.stream"
    ptr = 0xBB00


def test_resolve_stream_explicit():
    arrays = {"a": da()}
    assert resolve_stream(0, arrays) == 0
    assert resolve_stream(0xDEAD, arrays) == 0xDEAD
    assert resolve_stream(StreamProto((0, 0x77)), arrays) == 0x77
    assert resolve_stream(FakeTorchStream(), arrays) == 0xAA00
    assert resolve_stream(FakeCupyStream(), arrays) == 0xBB00
    from cuda.bindings import driver
    assert resolve_stream(driver.CUstream(0x55), arrays) == 0x55


@pytest.mark.parametrize("bad, exc", [
    (True, TypeError), (1.5, TypeError), ("0", TypeError), (object(), TypeError),
    (StreamProto(0x77), TypeError), (StreamProto((0, "x")), TypeError),
    (-1, ValueError), (1 << 64, ValueError), (StreamProto((0, -5)), ValueError)])
def test_resolve_stream_refused(bad, exc):
    with pytest.raises(exc, match="stream"):
        resolve_stream(bad, [da()])


def test_resolve_stream_default_without_framework_stream():
    assert resolve_stream(None, {}) == 0
    assert resolve_stream(None, [da(framework="dlpack")]) == 0
    assert resolve_stream(None, [da(framework="raw", device=None)]) == 0
    assert resolve_stream(None, [da(framework="cai")]) == 0
    assert resolve_stream(None, {"a": da(framework="cai", stream=0x99), "b": da()}) == 0x99


def test_resolve_stream_default_torch(monkeypatch):
    seen = []
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream",
                        lambda d: seen.append(d) or 0x1000 + d, raising=False)
    assert resolve_stream(None, {"a": da(framework="torch", device=2)}) == 0x1002
    assert seen == [2]
    # Builds without the private call: the public API.
    monkeypatch.delattr(torch._C, "_cuda_getCurrentRawStream", raising=False)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda d: types.SimpleNamespace(cuda_stream=0x2000 + d))
    assert resolve_stream(None, [da(framework="torch", device=3)]) == 0x2003


def _fake_cupy(monkeypatch, bf16_ok=True):
    log = []

    class Device:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            log.append(("device", self.i))

        def __exit__(self, *exc):
            log.append(("exit", self.i))

    def empty(shape, dtype):
        dtype = np.dtype(dtype)
        if dtype.name == "bfloat16" and not bf16_ok:
            raise TypeError("Unsupported type bfloat16")
        dev = [e[1] for e in log if e[0] == "device"][-1]
        return FakeCupyArray(cai(shape, dtype.str, ptr=FAKE_PTR + 4096), dev, dtype=dtype)

    cupy = types.SimpleNamespace(
        empty=empty,
        cuda=types.SimpleNamespace(
            Device=Device,
            get_current_stream=lambda *d: types.SimpleNamespace(ptr=0x3000 + sum(d))))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    return log


def test_resolve_stream_default_cupy(monkeypatch):
    _fake_cupy(monkeypatch)
    assert resolve_stream(None, [da(framework="cupy", device=1)]) == 0x3001


# ---------------------------------------------------------------------------------------------
# allocation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["dlpack", "cai", "raw"])
def test_allocate_refuses_other_frameworks(framework):
    with pytest.raises(TypeError, match=rf"for {framework} inputs; pass out= .*\(5, 8\).*bfloat16"):
        allocate(da(framework=framework), (5, 8), "bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_allocate_cupy_on_inputs_device(monkeypatch, dtype):
    log = _fake_cupy(monkeypatch)
    obj, out = allocate(da(framework="cupy", device=2), (5, 8), dtype)
    assert log == [("device", 2), ("exit", 2)]
    assert (out.shape, out.dtype, out.device, out.framework, out.ptr) == \
        ((5, 8), dtype, 2, "cupy", FAKE_PTR + 4096)
    assert out.obj is obj and out.is_contiguous


def test_allocate_cupy_without_bfloat16(monkeypatch):
    _fake_cupy(monkeypatch, bf16_ok=False)
    with pytest.raises(TypeError, match=r"CuPy has no bfloat16; pass out=.*out_dtype='float16'"):
        allocate(da(framework="cupy", device=0), (5, 8), "bfloat16")


# ---------------------------------------------------------------------------------------------
# import cost
# ---------------------------------------------------------------------------------------------

def test_import_does_not_import_frameworks():
    code = ("import sys, nvfp4_driver.tensors; "
            "print(sorted(m for m in ('torch', 'cupy', 'jax', 'numba') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         check=True).stdout.strip()
    assert out == "[]"
