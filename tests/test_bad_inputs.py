"""Malformed arguments at the public ops (hypothesis): each must raise the documented ValueError or
TypeError, naming the offending values, before any driver call.

The arrays are fakes that expose what a torch tensor, a CuPy array or a bare __cuda_array_interface__
producer would (addresses that are never dereferenced), and every function of ``nvfp4_driver.driver``
the op could reach is replaced by one that fails the test. A valid configuration must get as far as
the driver (``test_valid_base_reaches_the_driver``), so each mutation below is what the error is about.
"""
from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from nvfp4_driver import driver, layout, ops, plans, testing
from nvfp4_driver.ops import check_m_indptr, group_gemm_nvfp4_nt_groupwise, group_gemm_nvfp4_nt_groupwise_ptr

BASE_PTR = 0x7F00_0000_0000
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class ReachedDriver(Exception):
    """A call got past validation into the driver layer."""


@pytest.fixture(autouse=True, scope="module")
def no_driver():
    mp = pytest.MonkeyPatch()

    def reached(name):
        def fail(*args, **kwargs):
            raise ReachedDriver(name)
        return fail

    for name in ("launch", "pointer_device", "device_info", "prepared", "driver", "read_device",
                 "stream_is_capturing", "primary_context", "function", "load_library"):
        mp.setattr(driver, name, reached(name))
    yield
    mp.undo()


# ---------------------------------------------------------------------------------------------------
# fakes
# ---------------------------------------------------------------------------------------------------

class FakeDevice:
    def __init__(self, type_, index):
        self.type, self.index = type_, index

    def __str__(self):
        return f"{self.type}:{self.index}"


class FakeTorchCuda:
    """What nvfp4_driver reads from a CUDA torch.Tensor (not one: the fast path's type test fails)."""
    __module__ = "torch.fake"

    def __init__(self, ptr, shape, strides, dtype, device):
        self._ptr, self.shape, self._strides = ptr, torch.Size(shape), tuple(strides)
        self.dtype, self.device = getattr(torch, dtype), FakeDevice("cuda", device)

    def data_ptr(self):
        return self._ptr

    def stride(self):
        return self._strides


_TYPESTR = {"uint8": "|u1", "int8": "|i1", "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
            "int64": "<i8", "float16": "<f2", "float32": "<f4", "float64": "<f8", "bfloat16": "<V2",
            "float8_e4m3fn": "|V1"}
_ITEMSIZE = {"uint8": 1, "int8": 1, "float8_e4m3fn": 1, "float4_e2m1fn_x2": 1, "int16": 2, "uint16": 2,
             "float16": 2, "bfloat16": 2, "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "float64": 8}


class _Named:
    def __init__(self, name):
        self.name = name


class FakeCAI:
    """A bare __cuda_array_interface__ producer (Numba-like: the device is not said)."""

    def __init__(self, ptr, shape, strides, dtype, readonly):
        size = _ITEMSIZE[dtype]
        self.dtype = _Named(dtype)
        self.__cuda_array_interface__ = {
            "version": 3, "shape": tuple(shape), "typestr": _TYPESTR[dtype], "data": (ptr, readonly),
            "strides": None if strides is None else tuple(s * size for s in strides), "stream": None}


class FakeCupy(FakeCAI):
    __module__ = "cupy._core.core"

    def __init__(self, ptr, shape, strides, dtype, readonly, device):
        super().__init__(ptr, shape, strides, dtype, readonly)
        self.device = _Named(None)
        self.device.id = device


@dataclasses.dataclass
class Arg:
    shape: tuple
    dtype: str
    ptr: int
    kind: str = "torch"     # torch | cupy | cai | cpu (a real CPU torch tensor)
    device: int = 0
    strides: tuple | None = None  # elements; None = C order
    readonly: bool = False

    def make(self):
        strides = self.strides
        if self.kind == "cpu":
            return torch.zeros(self.shape, dtype=getattr(torch, self.dtype))
        if self.kind == "torch":
            return FakeTorchCuda(self.ptr, self.shape, strides or c_strides(self.shape), self.dtype, self.device)
        if self.kind == "cupy":
            return FakeCupy(self.ptr, self.shape, strides, self.dtype, self.readonly, self.device)
        return FakeCAI(self.ptr, self.shape, strides, self.dtype, self.readonly)


def c_strides(shape):
    out, step = [], 1
    for s in reversed(shape):
        out.append(step)
        step *= max(s, 1)
    return tuple(reversed(out))


@dataclasses.dataclass
class Case:
    args: dict             # name -> Arg (alpha/out may be missing)
    kwargs: dict           # tile_m, tile_n, tile_k, swap_ab, out_dtype, stream, check_inputs
    g: int
    n: int
    k: int
    cum_m: int

    def call(self):
        made = {name: arg.make() for name, arg in self.args.items()}
        return group_gemm_nvfp4_nt_groupwise(made["a"], made["b"], made["a_scale"], made["b_scale"],
                                             made["m_indptr"], alpha=made.get("alpha"), out=made.get("out"),
                                             **self.kwargs)


ARRAY_NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out")
KINDS = st.sampled_from(["torch", "cupy", "cai"])


@st.composite
def valid_cases(draw):
    g = draw(st.integers(0, 4))
    n = 8 * draw(st.integers(1, 40))
    k = 128 * draw(st.integers(1, 6))
    cum_m = draw(st.integers(0, 400))
    n_pad = -(-n // 128) * 128
    sf_rows = layout.a_scale_rows_upper_bound(cum_m, g)
    out_dtype = draw(st.sampled_from(["bfloat16", "float16"]))
    packed = draw(st.sampled_from(["uint8", "int8"]))
    scale = draw(st.sampled_from(["uint8", "int8"]))
    shapes = {"a": ((cum_m, k // 2), packed), "b": ((g, n, k // 2), packed),
              "a_scale": ((sf_rows, k // 16), scale), "b_scale": ((g, n_pad, k // 16), scale),
              "m_indptr": ((g + 1,), "int32"), "alpha": ((g,), "float32"), "out": ((cum_m, n), out_dtype)}
    args = {}
    for i, name in enumerate(ARRAY_NAMES):
        if name in ("alpha", "out") and not draw(st.booleans()):
            continue
        shape, dtype = shapes[name]
        args[name] = Arg(shape, dtype, BASE_PTR + (i << 32), kind=draw(KINDS))
    kwargs = {"tile_m": 128, "tile_n": draw(st.sampled_from([32, 64, 128])),
              "tile_k": draw(st.sampled_from([128, 256])), "swap_ab": draw(st.booleans())}
    if "out" not in args or draw(st.booleans()):
        kwargs["out_dtype"] = draw(st.sampled_from([out_dtype, torch.float16 if out_dtype == "float16" else
                                                    torch.bfloat16, "bf16" if out_dtype == "bfloat16" else "fp16"]))
    return Case(args, kwargs, g, n, k, cum_m)


# ---------------------------------------------------------------------------------------------------
# mutations: each turns a valid case into an invalid one and says what must be raised
# ---------------------------------------------------------------------------------------------------

def _esc(value) -> str:
    return re.escape(str(value))


def m_dtype(case, data):
    name = data.draw(st.sampled_from(["a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out"]), label="arg")
    if name not in case.args:
        case.args[name] = Arg((case.g,), "float32", BASE_PTR + (9 << 32)) if name == "alpha" else \
            Arg((case.cum_m, case.n), "bfloat16", BASE_PTR + (10 << 32))
        case.kwargs.pop("out_dtype", None)
    arg = case.args[name]
    wrong = {"a": ["float16", "int32", "float32", "bfloat16"], "b": ["float16", "int32", "int64"],
             "a_scale": ["float16", "int32", "float32"], "b_scale": ["float16", "int16", "float32"],
             "m_indptr": ["int64", "uint32", "float32", "int16"], "alpha": ["float64", "float16", "bfloat16"],
             "out": ["float32", "int16", "uint16"]}[name]
    arg.dtype = data.draw(st.sampled_from(wrong), label="dtype")
    if name == "b_scale":  # keep the byte count right, so the dtype is the only fault
        arg.shape = arg.shape[:-1] + (arg.shape[-1] // _ITEMSIZE[arg.dtype],) if arg.shape[-1] % 2 == 0 else arg.shape
    return TypeError, rf"{name}\.dtype={arg.dtype} but .*is required"


def m_ndim(case, data):
    name = data.draw(st.sampled_from(["a", "b", "m_indptr"]), label="arg")
    arg = case.args[name]
    arg.shape = (1,) + arg.shape if data.draw(st.booleans()) or len(arg.shape) == 1 else (int(np.prod(arg.shape)),)
    want = {"a": 2, "b": 3, "m_indptr": 1}[name]
    return ValueError, rf"{name}\.ndim={len(arg.shape)} \(shape {_esc(arg.shape)}\) but {want} is required"


def m_strides(case, data):
    name = data.draw(st.sampled_from(["a", "b", "a_scale", "b_scale", "out"]), label="arg")
    assume(name in case.args)
    arg = case.args[name]
    assume(len(arg.shape) >= 2 and arg.shape[-2] >= 2 and int(np.prod(arg.shape)) > 0)  # empty is contiguous
    strides = list(c_strides(arg.shape))
    strides[-2] *= 2  # a row pitch twice the row: a slice of a wider buffer
    arg.strides = tuple(strides)
    return ValueError, rf"{name} is not contiguous: shape={_esc(arg.shape)}, strides={_esc(arg.strides)}"


def m_cpu(case, data):
    name = data.draw(st.sampled_from(sorted(case.args)), label="arg")
    arg = case.args[name]
    assume(int(np.prod(arg.shape)) <= 1 << 20)
    arg.kind = "cpu"
    return ValueError, rf"{name} is on the CPU \(torch device 'cpu'\)"


def m_not_an_array(case, data):
    name = data.draw(st.sampled_from(["a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out"]), label="arg")
    value, pattern = data.draw(st.sampled_from([
        ([1, 2], "a Python list"), (np.zeros(4, np.uint8), r"a numpy\.ndarray in host memory"),
        (3, "a Python int"), ("x", r"a builtins\.str, which exposes none of")]), label="value")
    if name not in ("alpha", "out") and data.draw(st.booleans()):
        value, pattern = None, "None but a CUDA device array is required"
    case.args[name] = _Literal(value)
    return TypeError, rf"{name} is {pattern}"


@dataclasses.dataclass
class _Literal:
    value: object

    def make(self):
        return self.value


def m_k_not_multiple(case, data):
    k = data.draw(st.integers(0, 1024).filter(lambda v: v % 128 and v % 2 == 0), label="K")
    case.args["a"].shape = (case.cum_m, k // 2)
    b = case.args["b"]
    b.shape = (b.shape[0], b.shape[1], k // 2)
    return ValueError, rf"K={k} must be a positive multiple of 128"


def m_n_not_multiple(case, data):
    n = data.draw(st.integers(0, 300).filter(lambda v: v % 8), label="N")
    b = case.args["b"]
    b.shape = (b.shape[0], n, b.shape[2])
    if "out" in case.args:
        case.args["out"].shape = (case.cum_m, n)
    return ValueError, rf"N={n} must be a positive multiple of 8"


def m_b_groups(case, data):
    delta = data.draw(st.integers(-case.g, 3).filter(lambda d: d != 0), label="delta")
    b = case.args["b"]
    b.shape = (case.g + delta,) + b.shape[1:]
    return ValueError, (rf"b\.shape={_esc(b.shape)} but \(G, N, K/2\) needs G={case.g} from m_indptr.shape="
                        rf"\({case.g + 1},\) and K/2={case.k // 2}")


def m_b_k(case, data):
    half = data.draw(st.integers(0, 600).filter(lambda v: v != case.k // 2), label="K/2")
    b = case.args["b"]
    b.shape = b.shape[:2] + (half,)
    return ValueError, rf"b\.shape={_esc(b.shape)} but \(G, N, K/2\) needs .*K/2={case.k // 2} from a\.shape"


def m_b_scale_size(case, data):
    assume(case.g >= 1)
    bs = case.args["b_scale"]
    n_pad = bs.shape[1]
    rows = data.draw(st.sampled_from([n_pad + 128, max(n_pad - 128, 0), case.n]).filter(lambda r: r != n_pad),
                     label="rows")
    bs.shape = (case.g, rows, case.k // 16)
    need = case.g * n_pad * case.k // 16
    return ValueError, (rf"b_scale has {case.g * rows * case.k // 16} bytes \(shape {_esc(bs.shape)}\) but "
                        rf"\(G, N_pad, K/16\) = \({case.g}, {n_pad}, {case.k // 16}\) needs {need}")


def m_m_indptr_empty(case, data):
    case.args["m_indptr"].shape = (0,)
    return ValueError, r"m_indptr\.shape=\(0,\) but it needs G\+1 >= 1 entries"


def m_alpha_shape(case, data):
    shape = data.draw(st.sampled_from([(case.g + 1,), (case.g, 1), (1, case.g), (case.g + 2,)]), label="shape")
    case.args["alpha"] = Arg(shape, "float32", BASE_PTR + (9 << 32))
    return ValueError, rf"alpha\.shape={_esc(shape)} but \({case.g},\) is required"


def m_out_shape(case, data):
    shape = data.draw(st.sampled_from([(case.cum_m + 1, case.n), (case.cum_m, case.n + 8), (case.n, case.cum_m),
                                       (case.cum_m * case.n,), (1, case.cum_m, case.n)]), label="shape")
    assume(shape != (case.cum_m, case.n))
    dtype = case.kwargs.pop("out_dtype", None)
    case.args["out"] = Arg(shape, "bfloat16", BASE_PTR + (10 << 32))
    if dtype is not None:
        case.kwargs["out_dtype"] = "bfloat16"
    return ValueError, rf"out\.shape={_esc(shape)} but \({case.cum_m}, {case.n}\) is required"


def m_out_dtype_mismatch(case, data):
    case.kwargs.pop("out_dtype", None)
    have = data.draw(st.sampled_from(["bfloat16", "float16"]), label="out.dtype")
    want = "float16" if have == "bfloat16" else "bfloat16"
    case.args["out"] = Arg((case.cum_m, case.n), have, BASE_PTR + (10 << 32), kind=data.draw(KINDS))
    case.kwargs["out_dtype"] = want
    return ValueError, rf"out\.dtype={have} but out_dtype={want}"


def m_out_readonly(case, data):
    case.kwargs.pop("out_dtype", None)
    case.args["out"] = Arg((case.cum_m, case.n), "float16", BASE_PTR + (10 << 32),
                           kind=data.draw(st.sampled_from(["cupy", "cai"])), readonly=True)
    return ValueError, r"out is read-only \(its (cupy|cai) producer says so\)"


def m_out_dtype_value(case, data):
    value = data.draw(st.sampled_from(["float32", "int8", "fp8", "", 3, 1.5, True, torch.float32,
                                       np.float32]), label="out_dtype")
    case.kwargs["out_dtype"] = value
    return ValueError, rf"out_dtype={re.escape(repr(value))} is not supported"


def m_tile(case, data):
    name = data.draw(st.sampled_from(["tile_m", "tile_n", "tile_k"]), label="tile")
    # None is not malformed: it leaves the cut to the package (problem.requested_tiles).
    choices = {"tile_m": (8, 16, 32, 64, 128), "tile_n": (32, 64, 128, 256), "tile_k": (128, 256)}[name]
    value = data.draw(st.one_of(st.integers(-512, 1024).filter(lambda v: v not in choices),
                                st.sampled_from([128.0, "128", True, np.int64(choices[0]), [128]])),
                      label="value")
    case.kwargs[name] = value
    return ValueError, rf"{name}={re.escape(repr(value))} must be one of {_esc(choices)}"


def m_swap_ab(case, data):
    value = data.draw(st.sampled_from([1, 0, "True", np.bool_(True), 1.0]), label="swap_ab")
    case.kwargs["swap_ab"] = value
    return TypeError, rf"swap_ab must be a bool, got {re.escape(repr(value))}"


def m_device_mismatch(case, data):
    for arg in case.args.values():
        arg.kind = data.draw(st.sampled_from(["torch", "cupy"]), label="kind")
    name = data.draw(st.sampled_from(sorted(case.args)), label="arg")
    case.args[name].device = data.draw(st.integers(1, 7), label="device")
    return ValueError, (rf"is on cuda:\d but .*{name} on cuda:{case.args[name].device}.*; all arrays must be "
                        rf"on one device|{name} is on cuda:{case.args[name].device} but .*; all arrays must be on "
                        rf"one device")


def m_misaligned(case, data):
    name = data.draw(st.sampled_from(sorted(case.args)), label="arg")
    arg = case.args[name]
    assume(int(np.prod(arg.shape)) > 0)
    need = 16 if name in ("a", "b") else 4
    arg.ptr += data.draw(st.integers(1, need - 1), label="offset")
    return ValueError, rf"{name} starts at 0x{arg.ptr:x}, which is not {need}-byte aligned"


def m_null(case, data):
    name = data.draw(st.sampled_from(sorted(case.args)), label="arg")
    arg = case.args[name]
    numel = int(np.prod(arg.shape))
    assume(numel > 0)
    arg.ptr = 0
    return ValueError, rf"{name} has {numel} elements but its address is 0 \(NULL\)"


def m_stream(case, data):
    value, exc, pattern = data.draw(st.sampled_from([
        ("0", TypeError, r"stream='0' \(builtins\.str\) is not a CUDA stream"),
        (1.5, TypeError, r"stream=1\.5 \(builtins\.float\) is not a CUDA stream"),
        (True, TypeError, r"stream=True is a bool"),
        (-1, ValueError, r"stream handle -1 from -1 is not a 64-bit CUstream"),
        (2**64, ValueError, r"stream handle 18446744073709551616 .*is not a 64-bit CUstream")]), label="stream")
    case.kwargs["stream"] = value
    return exc, pattern


def m_check_inputs(case, data):
    value = data.draw(st.sampled_from(["yes", 1, 0, 1.0]), label="check_inputs")
    case.kwargs["check_inputs"] = value
    return TypeError, rf"check_inputs must be True, False or None, got {re.escape(repr(value))}"


MUTATIONS = [m_dtype, m_ndim, m_strides, m_cpu, m_not_an_array, m_k_not_multiple, m_n_not_multiple, m_b_groups,
             m_b_k, m_b_scale_size, m_m_indptr_empty, m_alpha_shape, m_out_shape, m_out_dtype_mismatch,
             m_out_readonly, m_out_dtype_value, m_tile, m_swap_ab, m_device_mismatch, m_misaligned, m_null,
             m_stream, m_check_inputs]


def test_valid_base_reaches_the_driver():
    """The unmutated cases pass every check: the first thing they hit is the (failing) driver layer."""
    @SETTINGS
    @given(valid_cases())
    def run(case):
        with pytest.raises(ReachedDriver):
            case.call()
    run()


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda f: f.__name__[2:])
def test_malformed_arguments_are_refused_before_the_driver(mutation):
    @SETTINGS
    @given(valid_cases(), st.data())
    def run(case, data):
        case = copy.deepcopy(case)
        exc, pattern = mutation(case, data)
        with pytest.raises(exc) as info:
            case.call()
        assert re.search(pattern, str(info.value)), f"{str(info.value)!r} does not match {pattern!r}"
    run()


def test_cached_plan_still_checks_addresses():
    """A plan cached for some metadata must not let a misaligned address through with that metadata."""
    case = _checked_case()
    del case.kwargs["stream"]
    for _ in range(2):
        with pytest.raises(ReachedDriver):
            case.call()
    case.args["a"].ptr += 8
    with pytest.raises(ValueError, match="a starts at 0x.*not 16-byte aligned"):
        case.call()


def test_real_cpu_torch_tensors_refused_on_the_fast_path():
    a = torch.zeros(4, 64, dtype=torch.uint8)
    b = torch.zeros(1, 8, 64, dtype=torch.uint8)
    a_scale = torch.zeros(128, 8, dtype=torch.uint8)
    b_scale = torch.zeros(1, 128, 8, dtype=torch.uint8)
    m_indptr = torch.tensor([0, 4], dtype=torch.int32)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"a is on the CPU"):
            group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr)


# ---------------------------------------------------------------------------------------------------
# the raw-pointer entry point
# ---------------------------------------------------------------------------------------------------

def _ptr_kwargs(g=2, n=64, k=256, cum_m=100):
    return dict(num_groups=g, n=n, k=k, cum_m=cum_m, a_scale_nbytes=layout.a_scale_rows_upper_bound(cum_m, g) * k // 16)


PTRS = dict(a=BASE_PTR, b=BASE_PTR + (1 << 32), a_scale=BASE_PTR + (2 << 32), b_scale=BASE_PTR + (3 << 32),
            m_indptr=BASE_PTR + (4 << 32), alpha=BASE_PTR + (5 << 32), out=BASE_PTR + (6 << 32))


def test_ptr_valid_reaches_the_driver():
    with pytest.raises(ReachedDriver):
        group_gemm_nvfp4_nt_groupwise_ptr(**PTRS, **_ptr_kwargs())


@pytest.mark.parametrize("change,exc,pattern", [
    (dict(num_groups=2.0), TypeError, r"num_groups must be an int, got 2\.0"),
    (dict(n="64"), TypeError, r"n must be an int, got '64'"),
    (dict(k=200), ValueError, r"K=200 must be a positive multiple of 128"),
    (dict(n=60), ValueError, r"N=60 must be a positive multiple of 8"),
    (dict(cum_m=-1), ValueError, r"cum_m=-1 must be >= 0"),
    (dict(num_groups=-1), ValueError, r"G=-1"),
    (dict(a_scale_nbytes=-5), ValueError, r"a_scale_nbytes=-5 must be an int >= 0"),
    (dict(a_scale_nbytes=None), TypeError, r"a_scale_nbytes must be an int, got None"),
    (dict(out_dtype="float32"), ValueError, r"out_dtype='float32' is not supported"),
    (dict(tile_n=48), ValueError, r"tile_n=48 must be one of \(32, 64, 128, 256\)"),
    (dict(swap_ab="no"), TypeError, r"swap_ab must be a bool, got 'no'"),
    (dict(device=-1), ValueError, r"device=-1 must be None or a GPU ordinal"),
    (dict(device="cuda:0"), ValueError, r"device='cuda:0' must be None or a GPU ordinal"),
    (dict(a=BASE_PTR + 8), ValueError, r"a starts at 0x7f0000000008, which is not 16-byte aligned"),
    (dict(b_scale=BASE_PTR + 2), ValueError, r"b_scale starts at 0x7f0000000002, which is not 4-byte aligned"),
    (dict(alpha=BASE_PTR + 1), ValueError, r"alpha starts at 0x7f0000000001, which is not 4-byte aligned"),
    (dict(out=0), ValueError, r"out has 6400 elements but its address is 0 \(NULL\)"),
    (dict(m_indptr=0), ValueError, r"m_indptr has 3 elements but its address is 0"),
    (dict(a=-16), TypeError, r"a must be a device address \(int >= 0\), got -16"),
    (dict(b=1.5), TypeError, r"b must be a device address \(int >= 0\), got 1\.5"),
    (dict(alpha="x"), TypeError, r"alpha must be a device address \(int\) or None, got 'x'"),
    (dict(stream="s"), TypeError, r"stream='s' .*is not a CUDA stream"),
    (dict(stream=-3), ValueError, r"stream handle -3"),
    (dict(check_inputs="on"), TypeError, r"check_inputs must be True, False or None, got 'on'"),
])
def test_ptr_refusals(change, exc, pattern):
    kwargs = {**PTRS, **_ptr_kwargs()}
    kwargs.update(change)
    with pytest.raises(exc, match=pattern):
        group_gemm_nvfp4_nt_groupwise_ptr(**kwargs)


@SETTINGS
@given(g=st.integers(0, 5), n=st.integers(-16, 600), k=st.integers(-128, 2048), cum_m=st.integers(-2, 1000),
       tile_n=st.sampled_from([16, 32, 64, 96, 128]), tile_k=st.sampled_from([64, 128, 256, 512]))
def test_ptr_shapes_property(g, n, k, cum_m, tile_n, tile_k):
    valid = n > 0 and n % 8 == 0 and k > 0 and k % 128 == 0 and cum_m >= 0 and tile_n in (32, 64, 128) \
        and tile_k in (128, 256)
    kwargs = dict(PTRS, num_groups=g, n=n, k=k, cum_m=cum_m, a_scale_nbytes=4096, tile_n=tile_n, tile_k=tile_k)
    if valid:
        with pytest.raises(ReachedDriver):
            group_gemm_nvfp4_nt_groupwise_ptr(**kwargs)
    else:
        with pytest.raises(ValueError, match=r"N=|K=|cum_m=|tile_n=|tile_k="):
            group_gemm_nvfp4_nt_groupwise_ptr(**kwargs)


# ---------------------------------------------------------------------------------------------------
# checked mode: the host-side test of m_indptr's values
# ---------------------------------------------------------------------------------------------------

def _oracle(ind, cum_m, a_scale_nbytes, sf_k):
    """Independent statement of the checked mode's conditions: None if fine, else the failing one."""
    ind = [int(v) for v in ind]
    if ind[0] < 0:
        return "first"
    if any(x > y for x, y in zip(ind, ind[1:])):
        return "order"
    if ind[-1] > cum_m:
        return "end"
    return "a_scale" if testing.a_scale_rows_read(ind) * sf_k > a_scale_nbytes else None


@SETTINGS
@given(ind=st.lists(st.integers(-50, 700), min_size=1, max_size=9), cum_m=st.integers(0, 700),
       sf_k=st.sampled_from([8, 16, 64]), a_scale_rows=st.integers(0, 1200), sorted_=st.booleans())
def test_check_m_indptr_property(ind, cum_m, sf_k, a_scale_rows, sorted_):
    if sorted_:
        ind = sorted(ind)
    nbytes = a_scale_rows * sf_k
    want = _oracle(ind, cum_m, nbytes, sf_k)
    arr = np.array(ind, dtype=np.int32)
    if want is None:
        check_m_indptr(arr, cum_m, nbytes, sf_k)
        return
    pattern = {"first": rf"m_indptr\[0\]={ind[0]} must be >= 0",
               "order": r"m_indptr must be non-decreasing, but m_indptr\[(\d+)\]=(-?\d+) > m_indptr\[(\d+)\]=(-?\d+)",
               "end": rf"m_indptr\[{len(ind) - 1}\]={ind[-1]} exceeds cum_m={cum_m}",
               "a_scale": rf"a_scale has {nbytes} bytes .* needs (\d+) rows"}[want]
    with pytest.raises(ValueError) as info:
        check_m_indptr(arr, cum_m, nbytes, sf_k)
    match = re.search(pattern, str(info.value))
    assert match, str(info.value)
    if want == "order":  # the named pair really is the first decrease
        g = int(match.group(1))
        assert int(match.group(3)) == g + 1 and ind[g] > ind[g + 1]
        assert all(x <= y for x, y in zip(ind[:g + 1], ind[1:g + 1]))
    if want == "a_scale":  # the rows asked for are the rows the kernel reads
        assert int(match.group(1)) == testing.a_scale_rows_read(ind)


class _FakeKernel:
    def __init__(self):
        self.launches = []

    def launch(self, grid, stream, args):
        self.launches.append((grid, stream, args))


@pytest.fixture
def fake_gpu(monkeypatch):
    """A driver layer that says 'one sm_90 GPU' and records launches instead of making them."""
    kernel = _FakeKernel()
    info = driver.DeviceInfo(0, "fake", (9, 0), 132, 232448, 80 << 30)
    monkeypatch.setattr(driver, "device_info", lambda ordinal: info)
    monkeypatch.setattr(driver, "pointer_device", lambda ptr: 0)
    monkeypatch.setattr(driver, "prepared", lambda spec, ordinal: kernel)
    clear_plans()
    yield kernel
    clear_plans()  # the plans hold this fake kernel: no later test may find them


def clear_plans():
    for cache in (plans.array_plans, plans.torch_plans, plans.pointer_plans):
        cache.clear()


def _checked_case(g=3, cum_m=300, k=256):
    n = 64
    args = {"a": Arg((cum_m, k // 2), "uint8", BASE_PTR, kind="cupy"),
            "b": Arg((g, n, k // 2), "uint8", BASE_PTR + (1 << 32), kind="cupy"),
            "a_scale": Arg((layout.a_scale_rows_upper_bound(cum_m, g), k // 16), "uint8", BASE_PTR + (2 << 32),
                           kind="cupy"),
            "b_scale": Arg((g, 128, k // 16), "uint8", BASE_PTR + (3 << 32), kind="cupy"),
            "m_indptr": Arg((g + 1,), "int32", BASE_PTR + (4 << 32), kind="cupy"),
            "out": Arg((cum_m, n), "bfloat16", BASE_PTR + (5 << 32), kind="cupy")}
    return Case(args, {"stream": 0}, g, n, k, cum_m)  # explicit: no framework to ask for its stream


@pytest.mark.parametrize("values,pattern", [
    ([0, 50, 40, 100], r"non-decreasing, but m_indptr\[1\]=50 > m_indptr\[2\]=40"),
    ([-4, 0, 10, 20], r"m_indptr\[0\]=-4 must be >= 0"),
    ([0, 100, 200, 301], r"m_indptr\[3\]=301 exceeds cum_m=300"),
])
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_checked_mode_refuses_before_launch(fake_gpu, monkeypatch, values, pattern, how):
    values = list(values)  # the parametrize list is shared between the cases: never modify it
    case = _checked_case()
    seen = []

    def host_m_indptr(ptr, num_groups, ordinal, stream, explicit):
        seen.append((ptr, num_groups, explicit))
        return np.array(values, dtype=np.int32)

    monkeypatch.setattr(ops, "_host_m_indptr", host_m_indptr)
    if how == "argument":
        case.kwargs["check_inputs"] = True
    else:
        monkeypatch.setenv("NVFP4_DRIVER_CHECK", "1")
    with pytest.raises(ValueError, match=pattern):
        case.call()
    assert seen == [(case.args["m_indptr"].ptr, 3, how == "argument")] and not fake_gpu.launches
    # Valid values launch; check_inputs=False skips the read even with the variable set.
    values[:] = [0, 100, 200, 300]
    case.call()
    assert len(fake_gpu.launches) == 1
    case.kwargs["check_inputs"] = False
    values[:] = [0, 50, 40, 100]
    case.call()
    assert len(fake_gpu.launches) == 2 and len(seen) == 2


def test_checked_mode_a_scale_too_small(fake_gpu, monkeypatch):
    case = _checked_case(g=3, cum_m=300)
    case.args["a_scale"].shape = (384, case.k // 16)  # group 2 starts at row sf_base(2) = 384
    monkeypatch.setattr(ops, "_host_m_indptr", lambda *a, **k: np.array([0, 100, 200, 300], np.int32))
    case.kwargs["check_inputs"] = True
    # Group 2's 100 rows read scale rows 384..511 (one block): 512 rows, fewer than a_scale_rows = 640.
    with pytest.raises(ValueError, match=r"a_scale has 6144 bytes \(384 rows of K/16=16\) but this m_indptr needs "
                                         r"512 rows \(8192 bytes\)"):
        case.call()
    assert not fake_gpu.launches


def test_unchecked_launch_reads_whole_a_scale_blocks_only(fake_gpu):
    """The kernel's a_scale bound is in rows, and a row's bytes spread over its 128-row block: the op
    passes the rows of whole blocks only, so no read can pass the tensor's end."""
    case = _checked_case(g=2, cum_m=200, k=256)
    case.args["a_scale"].shape = (130, 16)  # 128 rows + 2: the second block is not whole
    case.call()
    (_grid, _stream, args), = fake_gpu.launches
    assert args.a_scale_rows == 128  # the named GroupedGemmArgs
    case.args["a_scale"].shape = (256 + 127, 16)
    case.call()
    assert fake_gpu.launches[-1][2].a_scale_rows == 256


@pytest.mark.parametrize("tiles", [{}, dict(tile_m=32), dict(tile_m=128, tile_n=64, tile_k=256, swap_ab=False)])
def test_ptr_plans_are_reused(fake_gpu, tiles):
    """The raw-pointer entry point validates a set of sizes once: the automatic cut (no tile
    arguments) and explicit tiles alike keep one plan, and every call launches. (tile_m 16 would
    take the fake 9.0 GPU's TMA kernel, whose tensor maps need a driver: tests/gpu covers it.)"""
    for _ in range(3):
        group_gemm_nvfp4_nt_groupwise_ptr(**PTRS, **_ptr_kwargs(), device=0, **tiles)
    assert len(plans.pointer_plans) == 1 and len(fake_gpu.launches) == 3
