"""The quantizer ops' refusals (before any launch, so no GPU is needed) and the MoE helpers."""
from __future__ import annotations

import numpy as np
import pytest

from nvfp4_driver import layout, moe, quantize, variants
from nvfp4_driver.dlpack import c_strides
from nvfp4_driver.tensors import DeviceArray

FAKE_PTR = 0x7F00_0000_0000  # a plausible device address; nothing here dereferences it


def dev(shape, dtype, ptr=FAKE_PTR, device=0, strides=None) -> DeviceArray:
    """A device-array description with no memory behind it: enough for every check before a launch."""
    shape = tuple(shape)
    return DeviceArray(ptr, shape, strides or c_strides(shape), dtype, device, "raw", None)


X = dev((100, 256), "bfloat16")
IND = dev((4,), "int32")
GS = dev((1,), "float32")


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(x=dev((100, 256), "int8")), TypeError, "x.dtype=int8"),
    (dict(x=dev((100, 2, 128), "bfloat16")), ValueError, r"x.shape=\(100, 2, 128\) must be 2-D"),
    (dict(x=dev((100, 96), "bfloat16")), ValueError, "K=96"),
    (dict(x=dev((100, 0), "float32")), ValueError, "K=0"),
    (dict(x=dev((100, 256), "float16", strides=(512, 1))), ValueError, "not contiguous"),
    (dict(x=dev((100, 256), "float16", ptr=FAKE_PTR + 8)), ValueError, "16-byte aligned"),
    (dict(m_indptr=dev((4,), "int64")), TypeError, "m_indptr.dtype=int64"),
    (dict(m_indptr=dev((0,), "int32")), ValueError, "G \\+ 1 >= 1"),
    (dict(m_indptr=dev((2, 2), "int32")), ValueError, "m_indptr.ndim=2"),
    (dict(global_scale=dev((2,), "float32")), ValueError, r"global_scale.shape=\(2,\).*\(G,\) = \(3,\)"),
    (dict(global_scale=dev((3,), "bfloat16")), TypeError, "global_scale.dtype=bfloat16"),
    (dict(global_scale=0.0), ValueError, "global_scale=0.0 must be finite and > 0"),
    (dict(global_scale=float("nan")), ValueError, "must be finite"),
    (dict(global_scale=-3), ValueError, "global_scale=-3"),
    (dict(global_scale=True), TypeError, "bool"),
    (dict(global_scale=np.ones(1, np.float32)), TypeError, "host memory"),
    (dict(x=dev((100, 256), "bfloat16", device=0), m_indptr=dev((4,), "int32", device=1)), ValueError,
     "all arrays must be on one device"),
])
def test_quantize_activations_refusals(kwargs, exc, needle):
    args = dict(x=X, m_indptr=IND, global_scale=GS)
    args.update(kwargs)
    with pytest.raises(exc, match=needle):
        quantize.quantize_activations(args["x"], args["m_indptr"], args["global_scale"])


@pytest.mark.parametrize("w,gs,exc,needle", [
    (dev((4, 64, 128), "uint8"), GS, TypeError, "w.dtype=uint8"),
    (dev((64, 128), "bfloat16"), GS, ValueError, "must be 3-D"),
    (dev((4, 64, 80), "bfloat16"), GS, ValueError, "K=80"),
    (dev((4, 64, 128), "bfloat16"), dev((3,), "float32"), ValueError, r"\(G,\) = \(4,\)"),
    (dev((4, 64, 128), "bfloat16"), dev((4, 1), "float32"), ValueError, r"global_scale.shape=\(4, 1\)"),
])
def test_quantize_weights_refusals(w, gs, exc, needle):
    with pytest.raises(exc, match=needle):
        quantize.quantize_weights(w, gs)


@pytest.mark.parametrize("args,kwargs,exc,needle", [
    ((dev((10, 64), "bfloat16"), dev((128, 8), "uint8"), IND), {}, TypeError, "q.dtype=bfloat16"),
    ((dev((10, 64), "uint8"), dev((128, 8), "uint8")), {}, ValueError, "m_indptr is required for 2-D q"),
    ((dev((2, 8, 64), "uint8"), dev((2, 128, 8), "uint8"), IND), {}, ValueError, "m_indptr must be None"),
    ((dev((2, 8, 64), "uint8"), dev((2, 8, 8), "uint8")), {}, ValueError, r"\(G, N_pad, K/16\) = \(2, 128, 8\)"),
    ((dev((10, 40), "uint8"), dev((128, 5), "uint8"), IND), {}, ValueError, "K=80"),
    ((dev((10, 64), "uint8"), dev((128, 8), "bfloat16"), IND), {}, TypeError, "q_scale.dtype=bfloat16"),
    ((dev((10, 64), "uint8"), dev((128, 8), "uint8"), IND), dict(out_dtype="int8"), ValueError, "out_dtype='int8'"),
    ((dev((10, 64), "uint8"), dev((128, 8), "uint8"), IND, dev((2,), "float32")), {}, ValueError,
     r"global_scale.shape=\(2,\)"),
])
def test_dequantize_refusals(args, kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        quantize.dequantize(*args, **kwargs)


@pytest.mark.parametrize("args,kwargs,exc,needle", [
    ((dev((10, 64), "int32"),), {}, TypeError, "x.dtype=int32"),
    ((dev((10, 48), "float32"),), {}, ValueError, "K=48"),
    ((dev((2, 10, 64), "float32"), IND), {}, ValueError, "m_indptr must be None for 3-D x"),
    ((dev((10, 64), "float32"),), dict(per_group=1), TypeError, "per_group must be a bool"),
])
def test_global_scale_refusals(args, kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        quantize.global_scale_from_amax(*args, **kwargs)


@pytest.mark.parametrize("a,b,exc,needle", [
    (dev((3,), "float32"), dev((4,), "float32"), ValueError, "gsf_a has 3 values but gsf_b has 4"),
    (dev((3,), "float16"), dev((3,), "float32"), TypeError, "gsf_a.dtype=float16"),
    (dev((0,), "float32"), dev((1,), "float32"), ValueError, "gsf_a is empty"),
    (dev((2, 2), "float32"), dev((1,), "float32"), ValueError, r"gsf_a.shape=\(2, 2\)"),
    (1.0, dev((1,), "float32"), TypeError, "gsf_a is a Python float"),
])
def test_alpha_refusals(a, b, exc, needle):
    with pytest.raises(exc, match=needle):
        quantize.alpha_from_global_scales(a, b)


def test_cpu_tensors_are_refused_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="x is on the CPU"):
        quantize.quantize_activations(torch.zeros(4, 64, dtype=torch.bfloat16), IND, GS)


def test_every_quantizer_symbol_has_every_target():
    """The family the ops launch from: 15 symbols, each built for every target the GEMM uses."""
    kernels = {n: e for n, e in variants.manifest()["kernels"].items() if e["family"] == "quantize"}
    ops = {"quantize_rows", "dequantize_rows", "amax_rows"}
    want = {f"nvfp4_{op}_{t}" for op in ops for t in ("bf16", "f16", "f32")}
    want |= {f"nvfp4_silu_mul_{op}_{t}" for op in ("quantize_rows", "amax_rows") for t in ("bf16", "f16")}
    want |= {"nvfp4_global_scale_from_amax", "nvfp4_alpha_from_global_scales"}
    assert set(kernels) == want
    # One name from the build table to Python: the manifest's op and dtype are the symbol's pieces.
    for name, e in kernels.items():
        assert name == f"nvfp4_{e['op']}" + (f"_{e['dtype']}" if e["dtype"] else "") and e["abi"] == e["op"]
    for cap in ((8, 0), (8, 9), (9, 0), (10, 0), (12, 0), (12, 1), (13, 0)):
        for name, e in kernels.items():
            spec = variants.quantize_spec(e["op"], e["dtype"], cap)
            assert spec.symbol == name and spec.file.startswith(name)
    assert variants.quantize_spec("quantize_rows", "bf16", (9, 0), True).file.endswith(".compute_80.ptx")
    with pytest.raises(variants.UnsupportedGpuError):
        variants.quantize_spec("quantize_rows", "int4", (9, 0))


# ------------------------------------------------------------------------------------ helpers


def test_m_indptr_from_counts():
    np.testing.assert_array_equal(moe.m_indptr_from_counts([3, 0, 5, 1]), [0, 3, 3, 8, 9])
    assert moe.m_indptr_from_counts(np.array([], dtype=np.int64)).tolist() == [0]
    assert moe.m_indptr_from_counts(np.array([7], dtype=np.uint8)).dtype == np.int32
    with pytest.raises(ValueError, match=r"counts\[1\]=-2"):
        moe.m_indptr_from_counts([1, -2])
    with pytest.raises(TypeError, match="integers"):
        moe.m_indptr_from_counts([1.5])
    with pytest.raises(ValueError, match="int32"):
        moe.m_indptr_from_counts([2**30, 2**30])
    with pytest.raises(ValueError, match="1-D"):
        moe.m_indptr_from_counts([[1, 2]])


@pytest.mark.parametrize("multiple", [1, 4, 8, 128])
def test_pad_groups_round_trips(rng, multiple):
    sizes = rng.integers(0, 20, size=9)
    sizes[2] = 0
    start = int(rng.integers(0, 5))
    ind = np.concatenate([[start], start + np.cumsum(sizes)])
    pad = moe.pad_groups(ind, multiple)
    assert pad.m_indptr.dtype == np.int32 and pad.m_indptr[0] == 0
    padded_sizes = np.diff(pad.m_indptr)
    assert (padded_sizes % multiple == 0).all() and (padded_sizes >= sizes).all()
    assert (padded_sizes - sizes < multiple).all()
    rows = np.arange(ind[-1]) * 10.0  # a "tensor" whose row i holds 10 i
    x_pad = np.where(pad.src_rows >= 0, rows[np.maximum(pad.src_rows, 0)], -1.0)
    for g in range(sizes.size):
        block = x_pad[pad.m_indptr[g]:pad.m_indptr[g + 1]]
        np.testing.assert_array_equal(block[: sizes[g]], rows[ind[g]:ind[g + 1]])
        assert (block[sizes[g]:] == -1).all()
    np.testing.assert_array_equal(x_pad[pad.dst_rows[start:]], rows[start:])
    assert (pad.dst_rows[:start] == -1).all()


def test_pad_groups_refusals():
    with pytest.raises(ValueError, match="multiple=0"):
        moe.pad_groups([0, 4], 0)
    with pytest.raises(ValueError, match="non-decreasing"):
        moe.pad_groups([0, 4, 2])


def test_scale_sizes_reuse_the_layout(rng):
    ind = [0, 128, 256, 384]
    assert moe.cum_m_padded(ind) == 640  # group 2 starts at 384 (SPEC §3)
    assert moe.a_scale_shape(ind, 256) == (640, 16)
    with pytest.raises(ValueError, match="K=100"):
        moe.a_scale_shape(ind, 100)
    for _ in range(200):
        g = int(rng.integers(0, 12))
        cut = np.sort(rng.integers(0, 1000, size=g + 1))
        rows = moe.cum_m_padded(cut)
        # SPEC §3's formula, written out here rather than read from the layout module.
        assert rows == (int(cut[-1]) + 127 * g) // 128 * 128
        # Every group's scale rows, from its base sf_base(g) on, fit below it.
        for i in range(g):
            base = (int(cut[i]) + 127 * i) // 128 * 128
            assert base + int(cut[i + 1] - cut[i]) <= rows
        assert moe.a_scale_shape(cut, 256) == (rows, 16)
        # The quantizer's shape-only size is never below what any m_indptr of that length needs.
        assert layout.a_scale_rows_upper_bound(1000, g) >= rows
