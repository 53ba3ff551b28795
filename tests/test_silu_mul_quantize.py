"""SiLU * up fused with the quantizer, without a GPU: the refusals (before any launch), the torch ops'
fake implementations and their tracing, the kernel table, and the NumPy reference itself.

The GPU side (fused vs unfused bit for bit, the amax, NVFP4Experts both ways) is
tests/gpu/test_silu_mul_quantize_gpu.py."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nvfp4_driver import layout, quantize, reference as R, registry, torch_ops  # noqa: F401  (torch_ops: the ops)
from nvfp4_driver.driver import CUBIN_DIR
from nvfp4_driver.dlpack import c_strides
from nvfp4_driver.tensors import DeviceArray

FAKE_PTR = 0x7F00_0000_0000  # a plausible device address; nothing here dereferences it


def dev(shape, dtype, ptr=FAKE_PTR, device=0, strides=None) -> DeviceArray:
    shape = tuple(shape)
    return DeviceArray(ptr, shape, strides or c_strides(shape), dtype, device, "raw", None)


GATE_UP = dev((100, 512), "bfloat16")
IND = dev((4,), "int32")
GS = dev((1,), "float32")


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(gate_up=dev((100, 512), "float32")), TypeError, "gate_up.dtype=float32 but one of bfloat16, float16"),
    (dict(gate_up=dev((100, 512), "uint8")), TypeError, "gate_up.dtype=uint8"),
    (dict(gate_up=dev((100, 2, 256), "bfloat16")), ValueError, r"gate_up.shape=\(100, 2, 256\) must be 2-D \(rows, 2K\)"),
    (dict(gate_up=dev((100, 513), "float16")), ValueError, r"must be 2-D \(rows, 2K\)"),
    (dict(gate_up=dev((100, 192), "bfloat16")), ValueError, r"K=96 \(gate_up.shape\[1\] / 2\)"),
    (dict(gate_up=dev((100, 0), "bfloat16")), ValueError, "K=0"),
    (dict(gate_up=dev((100, 512), "float16", strides=(1024, 1))), ValueError, "not contiguous"),
    (dict(gate_up=dev((100, 512), "float16", ptr=FAKE_PTR + 8)), ValueError, "gate_up starts at .* 16-byte aligned"),
    (dict(m_indptr=dev((4,), "int64")), TypeError, "m_indptr.dtype=int64"),
    (dict(m_indptr=dev((0,), "int32")), ValueError, "G \\+ 1 >= 1"),
    (dict(global_scale=dev((2,), "float32")), ValueError, r"global_scale.shape=\(2,\).*\(G,\) = \(3,\)"),
    (dict(m_indptr=None, global_scale=dev((3,), "float32")), ValueError, r"\(G,\) = \(1,\)"),
    (dict(global_scale=0.0), ValueError, "global_scale=0.0 must be finite and > 0"),
    (dict(global_scale=np.ones(1, np.float32)), TypeError, "host memory"),
    (dict(gate_up=dev((100, 512), "bfloat16", device=0), m_indptr=dev((4,), "int32", device=1)), ValueError,
     "all arrays must be on one device"),
])
def test_silu_mul_quantize_activations_refusals(kwargs, exc, needle):
    args = dict(gate_up=GATE_UP, m_indptr=IND, global_scale=GS)
    args.update(kwargs)
    with pytest.raises(exc, match=needle):
        quantize.silu_mul_quantize_activations(args["gate_up"], args["m_indptr"], args["global_scale"])


@pytest.mark.parametrize("args,kwargs,exc,needle", [
    ((dev((10, 256), "float32"),), {}, TypeError, "gate_up.dtype=float32"),
    ((dev((10, 96), "bfloat16"),), {}, ValueError, "K=48"),
    ((dev((2, 10, 256), "bfloat16"),), {}, ValueError, "must be 2-D"),
    ((dev((10, 256), "float16"), dev((3, 1), "int32")), {}, ValueError, "m_indptr.ndim=2"),
    ((dev((10, 256), "float16"),), dict(per_group=1), TypeError, "per_group must be a bool"),
])
def test_silu_mul_global_scale_refusals(args, kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        quantize.silu_mul_global_scale_from_amax(*args, **kwargs)


def test_cpu_tensors_are_refused_by_name():
    with pytest.raises(ValueError, match="gate_up is on the CPU"):
        quantize.silu_mul_quantize_activations(torch.zeros(4, 256, dtype=torch.bfloat16), IND, GS)


# ------------------------------------------------------------------------------------ the kernel table


def test_silu_mul_kernels_follow_the_naming_grammar():
    """One name from the build table through the manifest and the registry: op + dtype tag, the ABI
    the op, the parameters the plain quantizer's but for the input, which holds gate and up."""
    for op, plain in (("silu_mul_quantize_rows", "quantize_rows"), ("silu_mul_amax_rows", "amax_rows")):
        for tag in ("bf16", "f16"):
            entry = registry.quantizer(op, tag)
            assert entry.name == f"nvfp4_{op}_{tag}" and entry.abi == op and entry.threads == 256
            params = [p.name for p in entry.params]
            assert params[0] == "gate_up" and params[1:] == [p.name for p in registry.quantizer(plain, tag).params][1:]
            assert {t.name for t in entry.files} == {"sm_80", "sm_90", "compute_80", "sm_120a", "sm_121a"}
        with pytest.raises(registry.UnsupportedGpuError):
            registry.quantizer(op, "f32")  # 16-bit rows only


# expf's last steps and silu's: r = ex2.approx.ftz(..), r * 2^j rounded (mul.rn, not fused into the add),
# 1 + that (add.rn), x / that (div.rn, IEEE).
_SILU_TAIL = re.compile(r"ex2\.approx\.ftz\.f32\s+(%f\d+), %f\d+;\s+mul\.rn\.f32\s+(%f\d+), \1, %f\d+;"
                        r"(?:\s+mov\.f32\s+%f\d+, 0f3F800000;)?\s+add\.rn\.f32\s+(%f\d+), (%f\d+), \2;"
                        r"\s+div\.rn\.f32\s+%f\d+, %f\d+, \3;")


@pytest.mark.parametrize("name", [f"nvfp4_silu_mul_{op}_{tag}" for op in ("quantize_rows", "amax_rows")
                                  for tag in ("bf16", "f16")])
def test_silu_is_torchs_formula_in_the_ptx(name):
    """What the equivalence with torch's silu (nvfp4_quantize.cu) rests on, in the shipped PTX: CUDA's
    expf (not __expf), its final product rounded on its own and then 1 added, and a correctly rounded
    division; one per element of the lane's 16-element block, and no approximate division anywhere."""
    text = (CUBIN_DIR / f"{name}.compute_80.ptx").read_text()
    ones = set(re.findall(r"mov\.f32\s+(%f\d+), 0f3F800000;", text))
    tails = _SILU_TAIL.findall(text)
    assert len(tails) == 16 == text.count("ex2.approx") == text.count("div.rn.f32"), len(tails)
    assert all(one in ones for *_, one in tails)
    for approximate in ("div.approx", "div.full", "rcp.approx", "ex2.approx.f32 "):
        assert approximate not in text


def test_launch_passes_the_input_row_to_the_grid(monkeypatch):
    """The fused kernels' units are 512 elements of h: _launch_rows gets the input row's 2K, so the grid
    counts as many units as the kernel walks."""
    seen = []
    monkeypatch.setattr(quantize, "_launch_rows", lambda op, tag, ordinal, units_rows, units_k, stream, /, **args:
                        seen.append((op, tag, units_rows, units_k, args["k"], args["gate_up"])))
    monkeypatch.setattr(quantize, "_launch", lambda *a, **k: None)
    monkeypatch.setattr(quantize, "_zero_words", lambda *a: None)
    monkeypatch.setattr(quantize, "_device", lambda arrays, first: 0)
    monkeypatch.setattr(quantize.streams, "resolve_stream", lambda stream, arrays: 0)
    monkeypatch.setattr(quantize.outputs, "allocate", lambda like, shape, dtype: (shape, dev(shape, dtype)))
    a, a_scale = quantize.silu_mul_quantize_activations(dev((300, 1024), "float16"), IND, 2.0)
    assert (a, a_scale) == ((300, 256), (layout.a_scale_rows_upper_bound(300, 3), 32))
    quantize.silu_mul_global_scale_from_amax(dev((300, 1024), "bfloat16"), IND)
    a, a_scale = quantize.silu_mul_quantize_activations(dev((300, 1024), "bfloat16"), None, 2.0)
    assert a_scale == (384, 32)  # one group: a single matrix's 128-row padding
    assert seen == [("silu_mul_quantize_rows", "f16", 640, 1024, 512, FAKE_PTR),
                    ("silu_mul_amax_rows", "bf16", 300, 1024, 512, FAKE_PTR),
                    ("silu_mul_quantize_rows", "bf16", 384, 1024, 512, FAKE_PTR)]


# ------------------------------------------------------------------------------------ torch ops


def fake(shape, dtype):
    return torch.empty(shape, dtype=dtype)


@pytest.mark.parametrize("rows,groups,k", [(0, 1, 64), (1, 1, 128), (300, 7, 256), (513, 256, 2048)])
def test_fake_shapes_are_the_unfused_ops(rows, groups, k):
    with FakeTensorMode():
        gate_up = fake((rows, 2 * k), torch.float16)
        ind, gs = fake((groups + 1,), torch.int32), fake((groups,), torch.float32)
        a, a_scale = torch.ops.nvfp4_driver.silu_mul_quantize_activations(gate_up, ind, gs)
        want_a, want_scale = torch.ops.nvfp4_driver.quantize_activations(fake((rows, k), torch.float16), ind, gs)
        a1, s1 = torch.ops.nvfp4_driver.silu_mul_quantize_activations(gate_up, None, fake((1,), torch.float32))
        amax = [tuple(torch.ops.nvfp4_driver.silu_mul_global_scale_from_amax(gate_up, *args).shape)
                for args in [(), (ind,), (ind, False)]]
    assert (tuple(a.shape), a.dtype, tuple(a_scale.shape), a_scale.dtype) == \
        (tuple(want_a.shape), torch.uint8, tuple(want_scale.shape), torch.uint8)
    assert tuple(a_scale.shape) == (layout.a_scale_rows_upper_bound(rows, groups), k // 16)
    assert tuple(a1.shape) == (rows, k // 2) and tuple(s1.shape) == (layout.padded_n(rows), k // 16)
    assert amax == [(1,), (groups,), (1,)]


@pytest.mark.parametrize("call,match", [
    (lambda: torch.ops.nvfp4_driver.silu_mul_quantize_activations(
        fake((4, 192), torch.bfloat16), fake((3,), torch.int32), fake((1,), torch.float32)), r"K=96"),
    (lambda: torch.ops.nvfp4_driver.silu_mul_quantize_activations(
        fake((4, 256), torch.float32), fake((3,), torch.int32), fake((1,), torch.float32)), r"bfloat16 or float16"),
    (lambda: torch.ops.nvfp4_driver.silu_mul_quantize_activations(
        fake((4, 256), torch.bfloat16), fake((3,), torch.int32), fake((3,), torch.float32)), r"\(G,\) = \(2,\)"),
    (lambda: torch.ops.nvfp4_driver.silu_mul_quantize_activations(
        fake((4, 256), torch.bfloat16), None, fake((2,), torch.float32)), r"\(G,\) = \(1,\)"),
    (lambda: torch.ops.nvfp4_driver.silu_mul_global_scale_from_amax(fake((4, 2, 256), torch.bfloat16)), r"\(rows, 2K\)"),
])
def test_fake_implementations_refuse_bad_shapes(call, match):
    with FakeTensorMode(), pytest.raises(ValueError, match=match):
        call()


def test_dynamo_traces_the_fused_functions_into_their_ops():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def block(gate_up, m_indptr):
        gsf = quantize.silu_mul_global_scale_from_amax(gate_up)
        a, a_scale = quantize.silu_mul_quantize_activations(gate_up, m_indptr, gsf)
        a1, s1 = quantize.silu_mul_quantize_activations(gate_up, None, 3.0)  # a float becomes a tensor
        return a, a_scale, a1, s1

    torch._dynamo.reset()
    gate_up = torch.empty((40, 512), dtype=torch.bfloat16, device="meta")
    ind = torch.empty((4,), dtype=torch.int32, device="meta")
    a, a_scale, a1, s1 = torch.compile(block, backend=backend, fullgraph=True)(gate_up, ind)
    assert tuple(a.shape) == (40, 128) and tuple(a_scale.shape) == (layout.a_scale_rows_upper_bound(40, 3), 16)
    assert tuple(s1.shape) == (128, 16)
    (gm,) = graphs
    targets = [str(n.target).removesuffix(".default") for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count("nvfp4_driver.silu_mul_quantize_activations") == 2, targets
    assert targets.count("nvfp4_driver.silu_mul_global_scale_from_amax") == 1, targets
    torch._dynamo.reset()


def test_traced_forms_refuse_a_stream():
    gate_up = torch.empty((8, 256), dtype=torch.bfloat16, device="meta")
    with pytest.raises(ValueError, match="not available under torch.compile"):
        torch_ops.traced_silu_mul_quantize_activations(gate_up, None, 1.0, stream=7)
    with pytest.raises(ValueError, match="not available under torch.compile"):
        torch_ops.traced_silu_mul_global_scale_from_amax(gate_up, None, True, stream=7)


# ------------------------------------------------------------------------------------ the reference


def bits16(rng, shape, dtype: str, binades: int) -> np.ndarray:
    """Random finite nonzero 16-bit values of ``dtype`` (every mantissa and sign, exponents within
    ``binades`` of 1), as float32."""
    mant_bits = 7 if dtype == "bfloat16" else 10
    bias = 127 if dtype == "bfloat16" else 15
    exp = rng.integers(max(1, bias - binades), min(2 * bias, bias + binades) + 1, size=shape)
    bits = (rng.integers(0, 2, size=shape) << 15) | (exp << mant_bits) | rng.integers(0, 1 << mant_bits, size=shape)
    view = np.float16 if dtype == "float16" else None
    if view is not None:
        return bits.astype(np.uint16).view(np.float16).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_round_to_16_bits_is_torchs_cast(rng, dtype):
    x = rng.integers(0, 2**32, size=100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], np.float32([65504, 65519.996, 65520, -65520, 3.4028235e38, 0.0, -0.0])])
    want = torch.from_numpy(x.copy()).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(R.round_to_16_bits(x, dtype).view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_silu_mul_reference(rng, dtype):
    """h is the float32 formula rounded once more to the dtype: within half an ulp of the dtype of the
    exact product where silu is a normal float32 and exp(-gate) does not overflow, and the torch
    semantics at the extremes (-0 where exp(-gate) passes FLT_MAX, inf past float16's range)."""
    rows, k = 64, 256
    gate_up = bits16(rng, (rows, 2 * k), dtype, 20 if dtype == "bfloat16" else 12)
    gate_up[0, :8] = [-1024.0, -100.0, -88.0, -20.0, 20.0, 88.0, 100.0, 2.0**-17]  # exp(-x) overflows / vanishes
    h = R.silu_mul(gate_up, dtype)
    g, u = gate_up[:, :k].astype(np.float64), gate_up[:, k:].astype(np.float64)
    with np.errstate(over="ignore"):
        silu64 = g / (1 + np.exp(-g))
        e32 = np.exp(-g).astype(np.float32)
    exact = silu64 * u
    # One rounding to the dtype: h is a value of the dtype, the nearest one to the float32 product.
    np.testing.assert_array_equal(R.round_to_16_bits(h, dtype), h)
    prod32 = (gate_up[:, :k] / (np.float32(1) + e32)) * gate_up[:, k:]
    np.testing.assert_array_equal(h, R.round_to_16_bits(prod32, dtype))
    # Within half an ulp (plus the float32 steps) of the exact value where silu's float32 is normal (a
    # subnormal one has fewer significant bits than h) and exp(-gate) is finite in float32.
    overflow = np.isinf(e32)
    finite = np.isfinite(h) & (np.abs(silu64) >= 2.0**-126) & ~overflow
    ulp = np.spacing(np.abs(h[finite]).astype(np.float16 if dtype == "float16" else np.float32))
    if dtype == "bfloat16":
        ulp = ulp * 2.0**16
    assert (np.abs(h[finite] - exact[finite]) <= 0.5 * ulp.astype(np.float64) * (1 + 2**-6) +
            np.abs(exact[finite]) * 2**-22).all()
    assert (h[overflow] == 0).all() and overflow[0, 0] and (g[overflow] < -88.7).all()
    if dtype == "float16":  # an overflowing product is inf, as torch's cast gives
        assert (np.abs(exact[np.isinf(h)]) >= 65520 * (1 - 2**-20)).all()
    else:
        assert np.isfinite(h).all()
    assert np.signbit(h[0, 0]) != np.signbit(gate_up[0, k])  # -0 * up


def test_silu_mul_quantize_blocks_is_quantize_of_h(rng):
    gate_up = bits16(rng, (40, 512), "bfloat16", 6)
    h = R.silu_mul(gate_up, "bfloat16")
    codes, sf = R.silu_mul_quantize_blocks(gate_up, 448 * 6 / np.abs(h).max(), "bfloat16")
    want_codes, want_sf = R.quantize_blocks(h, 448 * 6 / np.abs(h).max())
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(sf, want_sf)
    with pytest.raises(ValueError, match="bfloat16' or 'float16"):
        R.silu_mul(gate_up, "float32")
    with pytest.raises(ValueError, match=r"\(rows, 2K\)"):
        R.silu_mul(gate_up[:, :-1], "bfloat16")


# ------------------------------------------------------------------------------------ FlashInfer's name


def test_flashinfer_silu_and_mul_takes_the_fused_kernel_and_both_layouts(monkeypatch, rng):
    """K % 64 == 0: one call of the fused function (m_indptr None: a single matrix's layout), its 128x4
    scales returned as they are or converted to FlashInfer's row-major layout; otherwise torch's ops
    and fp4_quantize. The kernels are replaced by the reference (bytes are the GPU tests' business)."""
    from nvfp4_driver.flashinfer import quantization as fi

    calls = []

    def fused(x, m_indptr, gs):
        calls.append(("fused", tuple(x.shape), m_indptr))
        packed, swizzled = R.quantize(R.silu_mul(x, "bfloat16"), gs)
        return torch.from_numpy(packed), torch.from_numpy(swizzled)

    monkeypatch.setattr(fi._quantize, "silu_mul_quantize_activations", fused)
    monkeypatch.setattr(fi, "fp4_quantize", lambda *args, **kw: calls.append(("composed",)) or ("q", "sf"))
    gate_up = torch.from_numpy(bits16(rng, (130, 512), "bfloat16", 6)).to(torch.bfloat16).reshape(2, 65, 512)
    h = R.silu_mul(gate_up.reshape(130, 512).float().numpy(), "bfloat16")
    codes, sf_rows = R.quantize_blocks(h, 3.0)
    q_sw, sf_sw = fi.silu_and_mul_nvfp4_quantize(gate_up, 3.0)
    q_lin, sf_lin = fi.silu_and_mul_nvfp4_quantize(gate_up, 3.0, is_sf_swizzled_layout=False)
    assert calls == [("fused", (130, 512), None)] * 2
    np.testing.assert_array_equal(q_sw.numpy(), R.pack_fp4(codes))
    np.testing.assert_array_equal(q_lin.numpy(), R.pack_fp4(codes))
    np.testing.assert_array_equal(sf_sw.numpy(), layout.swizzle_scales(sf_rows))
    assert tuple(sf_lin.shape) == (130, 16) and sf_lin.is_contiguous()
    np.testing.assert_array_equal(sf_lin.numpy(), sf_rows)
    assert fi.silu_and_mul_nvfp4_quantize(gate_up[..., :192].contiguous(), 3.0) == ("q", "sf")  # K = 96
    assert calls[-1] == ("composed",)
    with pytest.raises(NotImplementedError, match="is_sf_8x4_layout"):
        fi.silu_and_mul_nvfp4_quantize(gate_up, 3.0, is_sf_8x4_layout=True)
