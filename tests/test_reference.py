"""The NumPy oracle against independent ones: ml_dtypes and torch casts, slow loops."""


import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4_driver import reference as R
from nvfp4_driver.layout import a_scale_group_bases, a_scale_rows, padded_n, swizzle_scales, swizzled_offset

F4 = ml_dtypes.float4_e2m1fn
F8 = ml_dtypes.float8_e4m3fn


def f32_bits(x):
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def random_float32(rng, size):
    """Finite float32 of every kind: random bit patterns (all binades, subnormals, both
    signs), small uniform values around the fp4 grid, exact ties, zeros of both signs."""
    bits = rng.integers(0, 2**32, size=size, dtype=np.uint64).astype(np.uint32)
    patterns = bits.view(np.float32)
    patterns = patterns[np.isfinite(patterns)]
    grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, 8], np.float32)
    ties = (grid[:-1] + grid[1:]) / 2
    near = rng.uniform(-8, 8, size).astype(np.float32)
    tiny = -np.abs(rng.standard_normal(size).astype(np.float32)) * np.float32(0.2)
    specials = np.array([0.0, -0.0, 6.0, -6.0, 7.0, -7.0, 1e30, -1e30, 1e-45, -1e-45, 5.0, -5.0], np.float32)
    return np.concatenate([patterns, near, tiny, ties, -ties, specials])


# ----------------------------------------------------------------------------- e2m1


def test_e2m1_decode_all_codes():
    codes = np.arange(16, dtype=np.uint8)
    expect = codes.view(F4).astype(np.float32)
    assert np.array_equal(f32_bits(R.decode_e2m1(codes)), f32_bits(expect))  # -0 included
    assert np.array_equal(f32_bits(R.E2M1_VALUES), f32_bits(expect))


def test_e2m1_encode_roundtrips_every_code():
    assert np.array_equal(R.encode_e2m1(R.E2M1_VALUES), np.arange(16))


def test_e2m1_encode_matches_ml_dtypes(rng):
    x = random_float32(rng, 20000)
    expect = x.astype(F4).view(np.uint8)
    got = R.encode_e2m1(x)
    bad = np.flatnonzero(got != expect)
    assert bad.size == 0, f"x={x[bad[:5]]} got={got[bad[:5]]} ml_dtypes={expect[bad[:5]]}"
    # The rules by name, in case ml_dtypes ever changes its mind.
    assert R.encode_e2m1(np.float32([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])).tolist() == [0, 2, 2, 4, 4, 6, 6]
    assert R.encode_e2m1(np.float32([-1e-30, -0.0, -0.25, 1e30, -np.inf, np.inf])).tolist() == [8, 8, 8, 7, 15, 7]


def test_e2m1_nan_is_plus_six():
    nan_neg = np.array([0xFFC00001], np.uint32).view(np.float32)
    assert R.encode_e2m1(np.concatenate([np.float32([np.nan]), nan_neg])).tolist() == [7, 7]


def test_e2m1_accepts_half_precision_and_torch(rng):
    x = rng.uniform(-7, 7, 1000).astype(np.float32)
    bf = x.astype(ml_dtypes.bfloat16)
    expect = R.encode_e2m1(bf.astype(np.float32))
    assert np.array_equal(R.encode_e2m1(bf), expect)
    assert np.array_equal(R.encode_e2m1(torch.from_numpy(x).to(torch.bfloat16)), expect)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        R.decode_e2m1(np.array([16]))


# ----------------------------------------------------------------------------- ue4m3


def test_ue4m3_decode_all_bytes():
    b = np.arange(256, dtype=np.uint8)
    got = R.decode_ue4m3(b)
    via_torch = torch.from_numpy(b & 0x7F).view(torch.float8_e4m3fn).float().numpy()
    via_ml = (b & 0x7F).view(F8).astype(np.float32)
    for other in (via_torch, via_ml):
        assert np.array_equal(np.isnan(got), np.isnan(other))
        finite = ~np.isnan(got)
        assert np.array_equal(f32_bits(got[finite]), f32_bits(other[finite]))
    assert np.flatnonzero(np.isnan(got)).tolist() == [0x7F, 0xFF]
    assert got[0x7E] == 448 and got[1] == 2.0**-9 and got[0x08] == 2.0**-6


def test_ue4m3_encode_matches_ml_dtypes_and_torch(rng):
    size = 20000
    # Every binade from below the smallest subnormal to past 448, random mantissas.
    exps = rng.integers(-14, 12, size)
    x = np.ldexp(rng.uniform(1, 2, size), exps).astype(np.float32)
    table = R.UE4M3_VALUES[:0x7F].astype(np.float64)
    ties = ((table[:-1] + table[1:]) / 2).astype(np.float32)  # all exact in float32
    specials = np.float32([0.0, -0.0, 448, 464, 479.9, 480, 1e6, 3e38, np.inf, 1e-45, 2.0**-10, 3 * 2.0**-11])
    x = np.concatenate([x, ties, specials, np.abs(random_float32(rng, 2000))])
    got = R.encode_ue4m3(x)
    # satfinite: clamp, then round; abs because ue4m3 has no -0 (ml_dtypes would give 0x80)
    satfinite = np.minimum(np.abs(x), np.float32(448))
    via_ml = satfinite.astype(F8).view(np.uint8)
    via_torch = torch.from_numpy(satfinite).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    for name, other in (("ml_dtypes", via_ml), ("torch", via_torch)):
        bad = np.flatnonzero(got != other)
        assert bad.size == 0, f"{name}: x={x[bad[:5]]} got={got[bad[:5]]} expect={other[bad[:5]]}"


def test_ue4m3_encode_special_values():
    specials = np.float32([np.nan, np.inf, 464, 2.0**-10, 3 * 2.0**-10, -0.0])
    assert R.encode_ue4m3(specials).tolist() == [0x7F, 0x7E, 0x7E, 0, 2, 0]
    with pytest.raises(ValueError, match="x >= 0"):
        R.encode_ue4m3(np.float32([1.0, -0.5]))


# ----------------------------------------------------------------------------- packing


def test_pack_nibble_order_and_roundtrip(rng):
    assert R.pack_fp4(np.array([1, 2, 15, 0], np.uint8)).tolist() == [0x21, 0x0F]
    assert R.unpack_fp4(np.array([0x21, 0xF0], np.uint8)).tolist() == [1, 2, 0, 15]
    codes = rng.integers(0, 16, size=(3, 5, 64), dtype=np.uint8)
    packed = R.pack_fp4(codes)
    assert packed.shape == (3, 5, 32) and packed.dtype == np.uint8
    assert np.array_equal(R.unpack_fp4(packed), codes)
    every_byte = np.arange(256, dtype=np.uint8)
    assert np.array_equal(R.pack_fp4(R.unpack_fp4(every_byte)), every_byte)
    with pytest.raises(ValueError, match="even"):
        R.pack_fp4(np.zeros(3, np.uint8))


# ----------------------------------------------------------------------------- quantizer


def slow_quantize(x: np.ndarray, gsf: float):
    """SPEC §4 one block at a time, with ml_dtypes doing every cast."""
    gsf = np.float32(gsf)
    one, sixth = np.float32(1), np.float32(1) / np.float32(6)
    rows, k = x.shape
    codes = np.zeros((rows, k), np.uint8)
    sf = np.zeros((rows, k // 16), np.uint8)
    for r in range(rows):
        for kb in range(k // 16):
            block = x[r, kb * 16 : (kb + 1) * 16]
            amax = np.float32(np.max(np.abs(block)))
            value = np.float32(gsf * np.float32(amax * sixth))
            byte = np.array([min(value, np.float32(448))], np.float32).astype(F8)
            sf[r, kb] = byte.view(np.uint8)[0]
            decoded = byte.astype(np.float32)[0]
            scale = np.float32(0) if sf[r, kb] == 0 else one / np.float32(decoded * (one / gsf))
            q = (block * scale).astype(np.float32).astype(F4)
            codes[r, kb * 16 : (kb + 1) * 16] = q.view(np.uint8)
    return codes, sf


def quantize_inputs(rng, rows, k):
    """Blocks whose magnitudes span 12 decades, exact grid values, and all-zero blocks."""
    blocks = rng.standard_normal((rows, k // 16, 16)).astype(np.float32)
    blocks *= (10.0 ** rng.uniform(-6, 6, (rows, k // 16, 1))).astype(np.float32)
    blocks[rng.random((rows, k // 16)) < 0.1] = 0
    grid = rng.random((rows, k // 16)) < 0.1
    blocks[grid] = rng.choice(R.E2M1_VALUES, size=(int(grid.sum()), 16))
    return blocks.reshape(rows, k)


@pytest.mark.parametrize("convention", ["flashinfer", "random"])
def test_quantize_matches_slow_blocks(rng, convention):
    x = quantize_inputs(rng, 24, 256)
    gsf = 448 * 6 / float(np.max(np.abs(x))) if convention == "flashinfer" else float(10 ** rng.uniform(-3, 3))
    codes, sf = R.quantize_blocks(x, gsf)
    slow_codes, slow_sf = slow_quantize(x, gsf)
    assert np.array_equal(sf, slow_sf)
    bad = np.argwhere(codes != slow_codes)
    assert bad.size == 0, f"first mismatches at {bad[:5].tolist()}"
    packed, swizzled = R.quantize(x, gsf)
    assert np.array_equal(packed, R.pack_fp4(slow_codes))
    assert swizzled.shape == (128, 16) and np.array_equal(swizzled, swizzle_scales(slow_sf))
    # all-zero blocks: scale byte 0 and codes +-0
    zero = np.all(x.reshape(24, 16, 16) == 0, axis=-1)
    assert zero.any() and not sf[zero].any()


def vectorized_quantize(x: np.ndarray, gsf) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §4 over whole arrays, ml_dtypes doing the casts (satfinite as a clamp first)."""
    gsf = np.float32(gsf)
    one = np.float32(1)
    blocks = x.reshape(x.shape[0], -1, 16)
    value = gsf * (np.max(np.abs(blocks), axis=-1) * (one / np.float32(6)))
    sf8 = np.minimum(value, np.float32(448)).astype(F8)
    with np.errstate(divide="ignore"):
        scale = np.where(sf8.view(np.uint8) == 0, np.float32(0), one / (sf8.astype(np.float32) * (one / gsf)))
    codes = (blocks * scale.astype(np.float32)[..., None]).astype(F4).view(np.uint8)
    return codes.reshape(x.shape), sf8.view(np.uint8)


def test_quantize_rounding_order_at_ties(rng):
    # Inputs steered onto the rounding boundaries, where "every step in float32, in this
    # order" decides the bytes: block maxima whose gsf * amax * (1/6) straddles an e4m3 tie,
    # and elements whose x * scale straddles an e2m1 tie.
    gsf = np.float32(10 ** rng.uniform(-2, 3))
    e4m3 = R.UE4M3_VALUES[:0x7F].astype(np.float64)
    ties = (e4m3[:-1] + e4m3[1:]) / 2
    amax = np.float32(ties * 6 / np.float64(gsf))
    amax = np.concatenate([amax + np.spacing(amax) * d for d in range(-3, 4)]).astype(np.float32)
    amax = amax[amax > 0]
    one = np.float32(1)
    sf8 = np.minimum(gsf * (amax * (one / np.float32(6))), np.float32(448)).astype(F8)
    with np.errstate(divide="ignore"):  # the tie below the smallest subnormal gives scale 0
        scale = np.where(sf8.view(np.uint8) == 0, np.float32(0), one / (sf8.astype(np.float32) * (one / gsf)))
    e2m1_ties = np.float32([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    pick = rng.choice(e2m1_ties, size=(amax.size, 15))
    with np.errstate(divide="ignore"):
        near = np.where(scale[:, None] > 0, pick / scale[:, None], 0).astype(np.float32)
    near = near + np.spacing(near) * rng.integers(-2, 3, near.shape).astype(np.float32)
    near = np.minimum(near, amax[:, None]) * rng.choice(np.float32([-1, 1]), near.shape)
    x = np.concatenate([amax[:, None] * rng.choice(np.float32([-1, 1]), (amax.size, 1)), near], axis=1)
    x = x.reshape(-1)[: x.size // 64 * 64].reshape(-1, 64)  # 4 blocks a row
    codes, sf = R.quantize_blocks(x, gsf)
    want_codes, want_sf = vectorized_quantize(x, gsf)
    assert np.array_equal(sf, want_sf), f"{np.count_nonzero(sf != want_sf)} scale bytes differ"
    bad = np.argwhere(codes != want_codes)
    assert bad.size == 0, f"{len(bad)} codes differ, first at {bad[:3].tolist()}"


def test_quantize_tiny_blocks_get_zero_scale():
    # gsf * amax / 6 below half the smallest subnormal: byte 0, so scale 0, codes +-0.
    x = np.zeros((1, 64), np.float32)
    x[0, :16] = np.float32(1e-6) * np.linspace(-1, 1, 16, dtype=np.float32)
    codes, sf = R.quantize_blocks(x, 1.0)
    assert sf[0, 0] == 0 and set(codes[0, :16].tolist()) <= {0, 8}
    assert np.array_equal(codes[0, :16], slow_quantize(x, 1.0)[0][0, :16])


def test_quantize_accepts_bfloat16_torch_and_nan_rule(rng):
    x = quantize_inputs(rng, 8, 128)
    xt = torch.from_numpy(x).to(torch.bfloat16)
    expect = R.quantize_blocks(xt.float().numpy(), 3.0)
    got = R.quantize_blocks(xt, torch.tensor([3.0]))
    assert all(np.array_equal(e, g) for e, g in zip(expect, got))
    x[0, 3] = np.nan
    codes, sf = R.quantize_blocks(x, 3.0)
    assert sf[0, 0] == 0x7F and np.all(codes[0, :16] == 7)
    assert np.isnan(R.dequantize(R.pack_fp4(codes), sf)[0, :16]).all()
    for bad in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="global_scale"):
            R.quantize_blocks(x, bad)


def test_dequantize_is_exact_decode(rng):
    codes = rng.integers(0, 16, (5, 64), dtype=np.uint8)
    sf = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    got = R.dequantize(R.pack_fp4(codes), sf)
    expect = codes.view(F4).astype(np.float64) * np.repeat((sf & 0x7F).view(F8).astype(np.float64), 16, axis=1)
    assert np.array_equal(got.astype(np.float64), expect, equal_nan=True)


# ----------------------------------------------------------------------------- grouped GEMM


def slow_group_gemm(a, b, a_scale, b_scale, m_indptr, alpha):
    """SPEC §2 term by term: every byte decoded with ml_dtypes, every scale found by swz."""
    cum_m, half_k = a.shape
    groups, n, _ = b.shape
    k, sf_k = 2 * half_k, half_k // 8
    n_pad = padded_n(n)
    a_flat, b_flat = np.asarray(a_scale).ravel(), np.asarray(b_scale).ravel()
    f4 = np.arange(16, dtype=np.uint8).view(F4).astype(float)
    f8 = lambda byte: float(np.array([byte & 0x7F], np.uint8).view(F8).astype(float)[0])  # noqa: E731
    out = np.full((cum_m, n), np.nan)
    abs_out = np.full((cum_m, n), np.nan)
    for g in range(groups):
        base = ((m_indptr[g] + g * 127) // 128) * 128  # sf_base, written out again on purpose
        for m in range(m_indptr[g], m_indptr[g + 1]):
            for col in range(n):
                total = total_abs = 0.0
                for kk in range(k):
                    kb = kk // 16
                    ea = f4[(a[m, kk // 2] >> (4 * (kk % 2))) & 0xF]
                    eb = f4[(b[g, col, kk // 2] >> (4 * (kk % 2))) & 0xF]
                    sa = f8(a_flat[swizzled_offset(int(base + m - m_indptr[g]), kb, sf_k)])
                    sb = f8(b_flat[g * n_pad * sf_k + swizzled_offset(col, kb, sf_k)])
                    total += ea * sa * eb * sb
                    total_abs += abs(ea * sa * eb * sb)
                scale = 1.0 if alpha is None else float(alpha[g])
                out[m, col], abs_out[m, col] = scale * total, abs(scale) * total_abs
    return out, abs_out


def flashinfer_recipe_a_scale(x_groups, gsfs, m_indptr, k):
    """FlashInfer's test: quantize each group alone (its own swizzled block), then copy that
    block to row sf_base(g) of a zero buffer of a_scale_rows(m_indptr) rows."""
    buf = np.zeros(a_scale_rows(m_indptr) * (k // 16), np.uint8)
    packed = []
    for g, (xg, gsf) in enumerate(zip(x_groups, gsfs)):
        p, s = R.quantize(xg, gsf)
        base = ((m_indptr[g] + g * 127) // 128) * 128
        if xg.shape[0]:
            buf[base * (k // 16) : base * (k // 16) + s.size] = s.ravel()
        packed.append(p)
    return packed, buf


def test_group_gemm_matches_slow_loops(rng):
    k, n, sizes, offset = 128, 8, [3, 0, 2, 1], 2
    m_indptr = offset + np.concatenate([[0], np.cumsum(sizes)])
    cum_m = int(m_indptr[-1]) + 2
    x_groups = [rng.standard_normal((s, k)).astype(np.float32) for s in sizes]
    gsfs = [448 * 6 / float(np.abs(xg).max()) if xg.size else 1.0 for xg in x_groups]
    packed, a_scale = flashinfer_recipe_a_scale(x_groups, gsfs, m_indptr, k)
    a = rng.integers(0, 256, (cum_m, k // 2), dtype=np.uint8)  # rows outside groups: junk
    a[offset : m_indptr[-1]] = np.concatenate(packed)
    codes_and_sf = [R.quantize_blocks(xg, gsf) for xg, gsf in zip(x_groups, gsfs)]
    sf_all = np.zeros((cum_m, k // 16), np.uint8)
    sf_all[offset : m_indptr[-1]] = np.concatenate([s for _, s in codes_and_sf])
    assert np.array_equal(R.grouped_a_scale(sf_all, m_indptr).ravel(), a_scale)
    b = rng.integers(0, 256, (len(sizes), n, k // 2), dtype=np.uint8)
    b_scale = rng.integers(0, 256, (len(sizes), padded_n(n), k // 16), dtype=np.uint8)
    r, c = np.meshgrid(np.arange(n), np.arange(k // 16), indexing="ij")
    for g in range(len(sizes)):  # real rows in swizzled place, padding rows stay junk
        real = rng.integers(0, 0x7F, (n, k // 16), dtype=np.uint8)
        real |= rng.integers(0, 2, real.shape, dtype=np.uint8) << 7  # the sign bit is ignored
        b_scale[g].reshape(-1)[swizzled_offset(r, c, k // 16)] = real
    alpha = rng.uniform(0.5, 2, len(sizes)).astype(np.float32)
    got, got_abs = R.group_gemm_with_abs(a, b, a_scale, b_scale, m_indptr, alpha)
    expect, expect_abs = slow_group_gemm(a, b, a_scale, b_scale, m_indptr, alpha)
    assert np.allclose(got, expect, rtol=1e-12, atol=0, equal_nan=True)
    assert np.allclose(got_abs, expect_abs, rtol=1e-12, atol=0, equal_nan=True)
    assert np.isnan(got[:offset]).all() and np.isnan(got[m_indptr[-1] :]).all()
    assert not np.isnan(got[offset : m_indptr[-1]]).any()
    # group_gemm and group_gemm_with_abs share one body: each is held to the slow loops, not to the other.
    plain = R.group_gemm(a, b, a_scale, b_scale, m_indptr, alpha)
    assert np.allclose(plain, expect, rtol=1e-12, atol=0, equal_nan=True)
    cols = np.array([7, 0, 3])
    some = R.group_gemm(a, b, a_scale.reshape(-1, k // 16), b_scale.ravel(), m_indptr, alpha, columns=cols)
    assert np.allclose(some, expect[:, cols], rtol=1e-12, atol=0, equal_nan=True)


def test_group_gemm_three_full_groups_and_tight_stacking_pitfall(rng):
    # Three groups of 128 rows: group 2's scales live at row 384, not 256 (SPEC §3).
    k, n, sizes = 128, 16, [128, 128, 128]
    m_indptr = np.array([0, 128, 256, 384])
    assert a_scale_group_bases(m_indptr).tolist() == [0, 128, 384]
    x = rng.standard_normal((384, k)).astype(np.float32)
    codes, sf = R.quantize_blocks(x, 448 * 6 / float(np.abs(x).max()))
    a = R.pack_fp4(codes)
    a_scale = R.grouped_a_scale(sf, m_indptr)
    assert a_scale.shape == (640, k // 16)
    flat = a_scale.ravel()
    r, c = np.meshgrid(np.arange(128), np.arange(k // 16), indexing="ij")
    assert np.array_equal(flat[swizzled_offset(384 + r, c, k // 16)], sf[256:384])
    assert not flat[swizzled_offset(256 + r, c, k // 16)].any()  # the gap a tight stacking would fill
    b = rng.integers(0, 256, (3, n, k // 2), dtype=np.uint8)
    b_sf = rng.integers(0, 0x7F, (3, n, k // 16), dtype=np.uint8)
    b_scale = np.stack([swizzle_scales(b_sf[g]) for g in range(3)])
    got = R.group_gemm(a, b, a_scale, b_scale, m_indptr)
    deq_a = R.dequantize(a, sf).astype(np.float64)
    for g in range(3):
        expect = deq_a[128 * g : 128 * (g + 1)] @ R.dequantize(b[g], b_sf[g]).astype(np.float64).T
        assert np.allclose(got[128 * g : 128 * (g + 1)], expect, rtol=1e-12, atol=0)
    tight = np.zeros_like(a_scale)
    tight.ravel()[: 384 * (k // 16)] = swizzle_scales(sf).ravel()  # what users wrongly do
    wrong = R.group_gemm(a, b, tight, b_scale, m_indptr)
    assert np.array_equal(wrong[:256], got[:256]) and not np.allclose(wrong[256:], got[256:])


@pytest.mark.parametrize(
    "change,exc,needle",
    [
        (dict(b=np.zeros((2, 8, 32), np.uint8)), ValueError, r"b.shape=\(2, 8, 32\)"),
        (dict(m_indptr=[0, 4]), ValueError, "m_indptr has 2 entries"),
        (dict(m_indptr=[0, 4, 99]), ValueError, "m_indptr\\[G\\]=99"),
        (dict(a_scale=np.zeros(100, np.uint8)), ValueError, "a_scale has 100 bytes"),
        (dict(b_scale=np.zeros((2, 8, 8), np.uint8)), ValueError, r"b_scale.shape=\(2, 8, 8\)"),
        (dict(alpha=np.ones(3, np.float32)), ValueError, "alpha has 3"),
        (dict(a=np.zeros((10, 48), np.uint8)), ValueError, "K=96"),
        (dict(b=np.zeros((2, 8, 64), np.float32)), TypeError, "dtype float32"),
    ],
)
def test_group_gemm_refusals(change, exc, needle):
    args = dict(a=np.zeros((10, 64), np.uint8), b=np.zeros((2, 8, 64), np.uint8),
                a_scale=np.zeros((384, 8), np.uint8), b_scale=np.zeros((2, 128, 8), np.uint8),
                m_indptr=[0, 4, 9], alpha=None)
    args.update(change)
    with pytest.raises(exc, match=needle):
        R.group_gemm(**args)
