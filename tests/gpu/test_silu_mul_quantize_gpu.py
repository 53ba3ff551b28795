"""SiLU * up fused with the quantizer on the GPU, bit for bit against the unfused torch composition.

The fused kernels (silu_mul_quantize_rows, silu_mul_amax_rows) compute h = silu(gate) * up per element
in float32, round it to the input dtype and quantize it (or take its amax) from registers. The unfused
path is torch's ``h = (F.silu(gate.float()) * up.float()).to(dtype)`` then ``quantize_activations`` /
``global_scale_from_amax``; the two must give the same bytes for every input (torch's CUDA silu is the
same float32 formula; kernels_cu/nvfp4_quantize.cu says why the FMA in torch's build does not change
it). Against nvfp4_driver.reference: the fused bytes equal the reference quantizer's on torch's h, bit
for bit, and torch's h is within one ulp of the dtype of reference.silu_mul's (which evaluates silu in
float64: CUDA's expf is within 2 ulp, so a product that close to a rounding midpoint may round the other
way; such elements are counted and must be rare).

Inputs: random 16-bit patterns (every sign and mantissa, exponents over many binades, never zero, never
inf or NaN), gate values whose exp(-x) overflows or vanishes, per-group m_indptr with empty groups and
rows outside the groups, groups crossing 128-row scale tiles (SPEC §3's sf_base rule), every output
poisoned before the kernel writes it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import moe_example as ex  # noqa: E402
from seeds import SEED  # noqa: E402  (tests/gpu is on sys.path)
from test_quantize_gpu import assert_bytes_equal, expected_activations, poisoned_outputs  # noqa: E402,F401

from nvfp4_driver import experts as experts_module, quantize as q, reference as R, torch_ops  # noqa: E402,F401
from nvfp4_driver.flashinfer import quantization as fi  # noqa: E402
from nvfp4_driver.moe import NVFP4Experts  # noqa: E402

TORCH = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# Binades of the random values around 1: float16 products overflow past 65504, so fewer there.
BINADES = {"bfloat16": 24, "float16": 7}
OPCHECK_TESTS = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
EXTREMES = [-1024.0, -100.0, -88.0, -17.5, -1.0, -2.0**-20, 2.0**-20, 1.0, 17.5, 88.0, 100.0, 1024.0]


def random_gate_up(rng, rows: int, k: int, dtype: str, binades: int | None = None) -> torch.Tensor:
    """(rows, 2K) of ``dtype`` on the GPU from random bit patterns: every sign and mantissa, exponents
    within ``binades`` of 1, never zero, inf or NaN; 1% of gate values from EXTREMES (exp(-x) overflows,
    vanishes, or silu is about x)."""
    binades = BINADES[dtype] if binades is None else binades
    mant_bits, bias = (7, 127) if dtype == "bfloat16" else (10, 15)
    shape = (rows, 2 * k)
    exp = rng.integers(max(1, bias - binades), min(2 * bias, bias + binades) + 1, size=shape)
    bits = (rng.integers(0, 2, size=shape) << 15) | (exp << mant_bits) | rng.integers(0, 1 << mant_bits, size=shape)
    t = torch.from_numpy(bits.astype(np.uint16).view(np.int16)).view(TORCH[dtype])
    spots = rng.random((rows, k)) < 0.01
    gate = t[:, :k]
    gate[torch.from_numpy(spots)] = torch.from_numpy(rng.choice(EXTREMES, size=int(spots.sum()))).to(TORCH[dtype])
    return t.cuda()


def unfused_h(gate_up: torch.Tensor) -> torch.Tensor:
    """torch's composition: FlashInfer's silu_and_mul semantics (float32, one rounding to the dtype)."""
    k = gate_up.shape[1] // 2
    return (F.silu(gate_up[:, :k].float()) * gate_up[:, k:].float()).to(gate_up.dtype)


def check_h_against_reference(h: torch.Tensor, gate_up: torch.Tensor, dtype: str) -> None:
    """torch's h vs reference.silu_mul: equal but for rare elements one ulp of the dtype apart."""
    got = h.cpu().view(torch.int16).numpy().astype(np.int32)
    want_f32 = R.silu_mul(gate_up.float().cpu().numpy(), dtype)
    want = torch.from_numpy(want_f32).to(TORCH[dtype]).view(torch.int16).numpy().astype(np.int32)
    # Sign-magnitude 16-bit patterns as ordered integers, so that one ulp is a difference of 1 (and
    # -0 / +0 are the same point).
    order = lambda b: np.where(b < 0, -(b & 0x7FFF), b)  # noqa: E731
    diff = np.abs(order(got) - order(want))
    assert diff.max() <= 1, f"seed {SEED}: torch's h is {diff.max()} ulps from the reference's"
    # Expected rate: a float32 silu a few ulps off flips a 16-bit rounding about once in 2^13-2^16.
    assert (diff == 1).sum() <= 4 + 1e-3 * diff.size, f"seed {SEED}: {(diff == 1).sum()} of {diff.size} one ulp apart"


CASES = [
    # (group sizes, rows before the first group, rows after the last, K)
    ([37, 0, 1, 128, 200], 5, 7, 64),
    ([300, 0, 129, 3], 0, 0, 384),
    ([0, 0], 3, 2, 256),
    ([130, 260, 5], 1, 0, 2048),
    ([50, 77], 2, 3, 7168),
    ([1, 31, 32, 33, 127, 128, 129, 0, 255, 257], 0, 1, 128),  # every padding tail of a 128-row tile
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("gs_kind", ["per_group", "single", "python"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_quantize_equals_unfused_bit_for_bit(rng, record_bytes, dtype, gs_kind, case):
    sizes, before, after, k = CASES[case]
    ind = np.concatenate([[before], before + np.cumsum(sizes)]).astype(np.int32)
    cum_m, groups = int(ind[-1]) + after, len(sizes)
    gate_up = random_gate_up(rng, cum_m, k, dtype)
    ind_d = torch.from_numpy(ind).cuda()
    h = unfused_h(gate_up)
    if gs_kind == "per_group":  # the dynamic scales of each group's h (the unfused amax)
        gs = q.global_scale_from_amax(h, ind_d)
        gsf = gs.cpu().numpy()
        bad = ~(np.isfinite(gsf) & (gsf > 0))  # inf in a float16 group's h: scale 0, NaN bytes (both paths)
        gsf = np.where(bad, np.float32(1), gsf)
        gs = torch.from_numpy(gsf).cuda()
    else:
        amax = float(h.float().abs().nan_to_num(posinf=0).max())
        gsf = np.full(groups, np.float32(448 * 6 / amax) if amax else np.float32(1), np.float32)
        gs = float(gsf[0]) if gs_kind == "python" else torch.tensor([gsf[0]], device="cuda")
    a, a_scale = q.silu_mul_quantize_activations(gate_up, ind_d, gs)
    want_a, want_scale = q.quantize_activations(h, ind_d, gs)
    assert a.dtype == torch.uint8 and a_scale.dtype == torch.uint8
    assert tuple(a.shape) == (cum_m, k // 2) and tuple(a_scale.shape) == tuple(want_scale.shape)
    assert_bytes_equal(a, want_a.cpu().numpy(), "a (fused vs unfused)", record_bytes)
    assert_bytes_equal(a_scale, want_scale.cpu().numpy(), "a_scale (fused vs unfused)", record_bytes)
    ref_a, ref_scale = expected_activations(h.float().cpu().numpy(), ind, gsf)
    assert_bytes_equal(a, ref_a, "a (fused vs reference quantizer of torch's h)", record_bytes)
    assert_bytes_equal(a_scale, ref_scale, "a_scale (fused vs reference quantizer of torch's h)", record_bytes)
    check_h_against_reference(h, gate_up, dtype)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_fused_amax_equals_torch_amax(rng, dtype):
    ind = np.array([3, 50, 50, 51, 300, 420], np.int32)  # group 1 empty, group 2 one row; rows outside
    gate_up = random_gate_up(rng, 425, 256, dtype, 6)
    ind_d = torch.from_numpy(ind).cuda()
    h = unfused_h(gate_up)
    for args in [(None, True), (ind_d, True), (ind_d, False)]:
        got = q.silu_mul_global_scale_from_amax(gate_up, args[0], per_group=args[1])
        want = q.global_scale_from_amax(h, args[0], per_group=args[1])
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), f"seed {SEED}: {args}: {got} vs {want}"
    # and against torch's amax of torch's h, divided as global_scale_from_amax documents
    got = q.silu_mul_global_scale_from_amax(gate_up, ind_d).cpu().numpy()
    for g in range(len(ind) - 1):
        amax = np.float32(h[ind[g]:ind[g + 1]].float().abs().max().item()) if ind[g + 1] > ind[g] else np.float32(0)
        want = np.float32(1) if amax == 0 else np.float32(448 * 6) / amax
        assert got[g].view(np.uint32) == want.view(np.uint32), (g, got[g], want)


def test_fused_amax_sees_float16_overflow(rng):
    """A float16 product past 65504 is inf in h (torch's cast): amax inf, global scale 0, both ways."""
    gate_up = random_gate_up(rng, 64, 128, "float16", 3)
    gate_up[5, 7] = 300.0
    gate_up[5, 128 + 7] = 400.0  # 300 * 400 = 120000 > 65504
    assert torch.isinf(unfused_h(gate_up)[5, 7])
    got = q.silu_mul_global_scale_from_amax(gate_up)
    assert got.item() == 0.0 and torch.equal(got, q.global_scale_from_amax(unfused_h(gate_up)))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_single_matrix_layout(rng, record_bytes, dtype):
    """m_indptr=None: one group, scale row r for row r: quantize_weights' layout for one matrix."""
    gate_up = random_gate_up(rng, 200, 512, dtype, 6)
    h = unfused_h(gate_up)
    gs = q.global_scale_from_amax(h)
    a, a_scale = q.silu_mul_quantize_activations(gate_up, None, gs)
    b, b_scale = q.quantize_weights(h.unsqueeze(0), gs)
    assert tuple(a_scale.shape) == (256, 32)
    assert_bytes_equal(a, b[0].cpu().numpy(), "a", record_bytes)
    assert_bytes_equal(a_scale, b_scale[0].cpu().numpy(), "a_scale", record_bytes)


@pytest.mark.parametrize("blocks", [1, 37, 4000])
def test_fused_kernels_span_any_grid(rng, record_bytes, monkeypatch, blocks):
    """Any grid writes every byte (one block walking everything, or more warps than units), across
    groups, empty groups, padding scale rows and rows outside the groups; K = 1600 ends a row on a
    partial 512-element step."""
    real_launch = q.driver.launch

    def launch(spec, ordinal, grid, stream, args):
        if spec.symbol.startswith("nvfp4_silu_mul_"):
            grid = (blocks, 1, 1)
        real_launch(spec, ordinal, grid, stream, args)

    monkeypatch.setattr(q.driver, "launch", launch)
    sizes = rng.integers(0, 4, size=40)
    sizes[rng.integers(0, 40)] += 130
    sizes[rng.integers(0, 40)] = 0
    ind = np.concatenate([[3], 3 + np.cumsum(sizes)]).astype(np.int32)
    gate_up = random_gate_up(rng, int(ind[-1]) + 5, 1600, "bfloat16", 8)
    ind_d = torch.from_numpy(ind).cuda()
    h = unfused_h(gate_up)
    gs = q.silu_mul_global_scale_from_amax(gate_up, ind_d)
    assert torch.equal(gs, q.global_scale_from_amax(h, ind_d))
    a, a_scale = q.silu_mul_quantize_activations(gate_up, ind_d, gs)
    want_a, want_scale = q.quantize_activations(h, ind_d, gs)
    assert_bytes_equal(a, want_a.cpu().numpy(), "a", record_bytes)
    assert_bytes_equal(a_scale, want_scale.cpu().numpy(), "a_scale", record_bytes)


def test_opcheck_fused_ops(rng):
    gate_up = random_gate_up(rng, 150, 256, "bfloat16", 6)
    ind = torch.tensor([0, 40, 40, 150], dtype=torch.int32, device="cuda")
    gs = torch.ops.nvfp4_driver.silu_mul_global_scale_from_amax(gate_up, ind, True)
    assert torch.equal(gs, q.silu_mul_global_scale_from_amax(gate_up, ind))
    for args in [(gate_up, ind, True), (gate_up, None, True), (gate_up, ind, False)]:
        torch.library.opcheck(torch.ops.nvfp4_driver.silu_mul_global_scale_from_amax.default, args,
                              test_utils=OPCHECK_TESTS)
    torch.library.opcheck(torch.ops.nvfp4_driver.silu_mul_quantize_activations.default, (gate_up, ind, gs),
                          test_utils=OPCHECK_TESTS)
    torch.library.opcheck(torch.ops.nvfp4_driver.silu_mul_quantize_activations.default,
                          (gate_up, None, gs[:1].clone()), test_utils=OPCHECK_TESTS)
    a, a_scale = torch.ops.nvfp4_driver.silu_mul_quantize_activations(gate_up, ind, gs)
    a_pub, a_scale_pub = q.silu_mul_quantize_activations(gate_up, ind, gs)
    assert torch.equal(a, a_pub) and torch.equal(a_scale, a_scale_pub)


def test_cuda_graph_replays_the_fused_pair(rng):
    """No host sync: the dynamic-scale pair captures, and replays on new inputs give the eager bytes."""
    gate_up = random_gate_up(rng, 96, 512, "bfloat16", 6)
    ind = torch.tensor([0, 30, 30, 96], dtype=torch.int32, device="cuda")

    def pair():
        gs = q.silu_mul_global_scale_from_amax(gate_up)
        return q.silu_mul_quantize_activations(gate_up, ind, gs)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        pair()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_a, static_scale = pair()
    for _ in range(3):
        gate_up.copy_(random_gate_up(rng, 96, 512, "bfloat16", 6))
        static_a.fill_(0xA5)
        graph.replay()
        a, a_scale = pair()
        torch.cuda.synchronize()
        assert torch.equal(static_a, a) and torch.equal(static_scale, a_scale), f"seed {SEED}"


# ------------------------------------------------------------------------------------ the layer


def count_calls(monkeypatch, name: str) -> list:
    """Count the layer's calls of ``experts_module.<name>``."""
    calls = []
    real = getattr(experts_module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(experts_module, name, spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("tokens,hidden,inter,experts,topk,seed", [
    (200, 1024, 384, 16, 4, 2),    # ragged groups, K = 384 for the down GEMM
    (24, 512, 256, 64, 8, 3),      # decode-like: most experts get no rows or one
])
def test_experts_fused_and_unfused_give_the_same_bits(monkeypatch, dtype, static, tokens, hidden, inter, experts,
                                                      topk, seed):
    x, w13, w2, ids, wts = (t.to(dtype) if t.is_floating_point() else t
                            for t in ex.make_layer(tokens, hidden, inter, experts, topk, seed, device="cuda"))
    scales = dict(input_global_scale=2688.0 / x.abs().max().float().item(), act_global_scale=2688.0 / 20) \
        if static else {}
    layer = NVFP4Experts.from_bf16(w13, w2, **scales)
    fused_calls = count_calls(monkeypatch, "silu_mul_quantize_activations")
    assert layer.fuse_silu_mul
    fused = layer(x, ids, wts)
    assert fused_calls == ["silu_mul_quantize_activations"]
    layer.fuse_silu_mul = False
    unfused = layer(x, ids, wts)
    torch.cuda.synchronize()
    assert fused_calls == ["silu_mul_quantize_activations"]  # the unfused call did not use it
    assert torch.equal(fused.view(torch.int16), unfused.view(torch.int16)), f"seed {seed}"


def test_experts_with_up_scale_ratio_stay_unfused(monkeypatch):
    """A ratio of exactly 1 changes no value: the ratio path (unfused, float32) gives the fused bits."""
    x, w13, w2, ids, wts = ex.make_layer(96, 512, 256, 8, 2, 4, device="cuda")
    plain = NVFP4Experts.from_bf16(w13, w2)
    ratio = NVFP4Experts(plain.w13, plain.w13_scale, plain.w13_global_scale, plain.w2, plain.w2_scale,
                         plain.w2_global_scale, up_scale_ratio=torch.ones(8, device="cuda"))
    fused_calls = count_calls(monkeypatch, "silu_mul_quantize_activations")
    want = plain(x, ids, wts)
    assert len(fused_calls) == 1
    got = ratio(x, ids, wts)
    assert len(fused_calls) == 1
    assert torch.equal(got, want)


# ------------------------------------------------------------------------------------ FlashInfer's name


@pytest.mark.parametrize("swizzled", [True, False])
@pytest.mark.parametrize("k", [256, 48])  # 48: not a multiple of 64, the composed fallback
def test_silu_and_mul_nvfp4_quantize_layouts(rng, record_bytes, swizzled, k):
    gate_up = random_gate_up(rng, 130, k, "bfloat16", 6).reshape(2, 65, 2 * k)
    h = unfused_h(gate_up.reshape(130, 2 * k))
    gsf = torch.tensor([np.float32(448 * 6) / np.float32(h.float().abs().max().item())], device="cuda")
    x_q, sf = fi.silu_and_mul_nvfp4_quantize(gate_up, gsf, is_sf_swizzled_layout=swizzled)
    want_q, want_sf = fi.fp4_quantize(h, gsf, is_sf_swizzled_layout=swizzled)
    assert tuple(x_q.shape) == (130, k // 2) and tuple(sf.shape) == tuple(want_sf.shape)
    assert_bytes_equal(x_q, want_q.cpu().numpy(), "x_q", record_bytes)
    assert_bytes_equal(sf, want_sf.cpu().numpy(), "sf", record_bytes)
