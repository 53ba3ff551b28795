"""The helpers GPU tests lean on: random problems and the SPEC §5 check must be able to fail."""


import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4_driver import reference as R
from nvfp4_driver.layout import a_scale_group_bases, a_scale_rows, padded_n, swizzled_offset
from nvfp4_driver.testing import (
    POISON_BITS,
    bf16_bits_to_float,
    check_untouched,
    f16_bits_to_float,
    random_problem,
    tolerance_check,
)

NP_DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@pytest.fixture
def problem(rng):
    p = random_problem(rng, [7, 0, 1, 130], n=64, k=384, row_offset=3, trailing_rows=4)
    ref, abs_sum = p.reference()
    return p, ref, abs_sum


def kernel_like(ref, out_dtype, poison_rows=True):
    """What a correct kernel stores: ref rounded to nearest-even, as raw bits; rows outside the
    groups hold the poison."""
    dtype = NP_DTYPES[out_dtype]
    bits = np.where(np.isnan(ref), 0.0, ref).astype(dtype).view(np.uint16)
    if poison_rows:
        bits = np.where(np.isnan(ref), np.uint16(POISON_BITS[out_dtype]), bits)
    return bits


def test_random_problem_shapes_and_bytes(rng):
    p = random_problem(rng, [40, 0, 33, 1], n=128, k=256, row_offset=5, trailing_rows=2)
    assert p.m_indptr.dtype == np.int32 and p.m_indptr.tolist() == [5, 45, 45, 78, 79]
    assert p.a.shape == (81, 128) and p.b.shape == (4, 128, 128)
    assert p.a_scale.shape == (a_scale_rows(p.m_indptr), 16) and p.b_scale.shape == (4, padded_n(128), 16)
    assert p.alpha.dtype == np.float32 and p.alpha.shape == (4,)
    for name, arr in (("a", p.a), ("b", p.b)):
        missing = np.setdiff1d(np.arange(256), arr)
        assert missing.size == 0, f"{name} never holds bytes {missing[:8]}"
    real = p.a_sf[5:79]
    assert real.max() <= 0x7E and real.min() == 0 and np.unique(real >> 3).size == 16  # every binade
    # Real scales sit where the layout says; every other byte of a_scale is padding.
    flat = p.a_scale.ravel()
    is_real = np.zeros(flat.size, dtype=bool)
    for g, base in enumerate(a_scale_group_bases(p.m_indptr)):
        rows = np.arange(p.m_indptr[g + 1] - p.m_indptr[g])
        offs = swizzled_offset(base + rows[:, None], np.arange(16), 16)
        assert np.array_equal(flat[offs], p.a_sf[p.m_indptr[g] + rows])
        is_real[offs.ravel()] = True
    assert np.isin([0x7F, 0xFF], flat[~is_real]).all(), "padding must hold NaN patterns"
    small = random_problem(rng, [3], n=8, k=128)
    b_flat = small.b_scale[0].ravel()
    b_real = swizzled_offset(np.arange(8)[:, None], np.arange(8), 8)
    assert np.array_equal(b_flat[b_real], small.b_sf[0])
    b_pad = np.ones(b_flat.size, dtype=bool)
    b_pad[b_real.ravel()] = False
    assert np.isin([0x7F, 0xFF], b_flat[b_pad]).all(), "b_scale padding rows must hold NaN patterns"


def test_random_problem_keeps_outputs_in_float16_range(problem):
    p, ref, abs_sum = problem
    rows = ref[p.m_indptr[0] : p.m_indptr[-1]]
    assert np.isfinite(rows).all() and np.isnan(ref[: p.m_indptr[0]]).all() and np.isnan(ref[p.m_indptr[-1] :]).all()
    peak = np.abs(rows).max()
    assert 10 < peak < 30000, f"alpha={p.alpha} gives max |out| = {peak}"


def test_padding_is_never_read(rng, problem):
    p, ref, _ = problem
    a_scale, b_scale = p.a_scale.copy(), p.b_scale.copy()
    flat = a_scale.ravel()
    keep = np.zeros(flat.size, dtype=bool)
    for g, base in enumerate(a_scale_group_bases(p.m_indptr)):
        rows = np.arange(p.m_indptr[g + 1] - p.m_indptr[g])
        keep[swizzled_offset(base + rows[:, None], np.arange(p.k // 16), p.k // 16).ravel()] = True
    flat[~keep] = 0x7F
    b_keep = np.zeros(b_scale[0].size, dtype=bool)
    b_keep[swizzled_offset(np.arange(p.n)[:, None], np.arange(p.k // 16), p.k // 16).ravel()] = True
    b_scale.reshape(p.num_groups, -1)[:, ~b_keep] = 0x7F
    other = R.group_gemm(p.a, p.b, a_scale, b_scale, p.m_indptr, p.alpha)
    assert np.array_equal(other, ref, equal_nan=True)


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
def test_exact_rounding_passes(problem, out_dtype):
    p, ref, abs_sum = problem
    bits = kernel_like(ref, out_dtype)
    report = tolerance_check(bits, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
    # ml_dtypes rounds float64 through float32, as a kernel does: a hair over half an ulp
    assert report.ok and report.failures == 0 and report.max_ulps <= 0.501, report
    assert report.checked == (p.m_indptr[-1] - p.m_indptr[0]) * p.n
    to_float = bf16_bits_to_float if out_dtype == "bfloat16" else f16_bits_to_float
    as_float = to_float(bits)
    assert tolerance_check(as_float, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr).ok
    as_torch = torch.from_numpy(bits.view(np.int16)).view(getattr(torch, out_dtype))
    assert tolerance_check(as_torch, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr).ok
    assert check_untouched(as_torch, POISON_BITS[out_dtype], p.m_indptr).ok


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
def test_two_ulps_off_fails(problem, out_dtype):
    p, ref, abs_sum = problem
    bits = kernel_like(ref, out_dtype)
    rows = slice(p.m_indptr[0], p.m_indptr[-1])
    values = bf16_bits_to_float(bits) if out_dtype == "bfloat16" else f16_bits_to_float(bits)
    with np.errstate(invalid="ignore"):  # poison rows are NaN
        ulp = np.abs(np.spacing(values.astype(NP_DTYPES[out_dtype])).astype(np.float64))
    slack = p.k * 2.0**-23 * abs_sum
    # An element whose summation slack is small next to one ulp, so 2 ulps cannot hide in it,
    # and whose value is normal and away from its binade's edges, so 2 steps are 2 ulps of ref.
    mant_mask = 0x7F if out_dtype == "bfloat16" else 0x3FF
    inner = ((bits & mant_mask) > 3) & ((bits & mant_mask) < mant_mask - 3) & ((bits & 0x7FFF) > mant_mask)
    margin = np.where(np.isnan(ref) | ~inner, -np.inf, ulp / np.where(np.isnan(slack), 1, slack))
    margin[: rows.start], margin[rows.stop :] = -np.inf, -np.inf
    idx = np.unravel_index(np.argmax(margin), ref.shape)
    assert margin[idx] > 4, "no element where 2 ulps exceed the tolerance"
    bad = bits.copy()
    bad[idx] += 2  # two steps up in magnitude
    report = tolerance_check(bad, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
    assert not report.ok and report.failures == 1 and report.worst == tuple(int(i) for i in idx), report
    assert 1.4 < report.max_ulps < 2.6
    assert "FAILED" in str(report) and str(tuple(int(i) for i in idx)) in str(report)


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
def test_nan_inf_and_unwritten_rows_fail(problem, out_dtype):
    p, ref, abs_sum = problem
    good = kernel_like(ref, out_dtype)
    lo, hi = int(p.m_indptr[0]), int(p.m_indptr[-1])
    for pattern in (0x7FC0 if out_dtype == "bfloat16" else 0x7E00, 0x7F80 if out_dtype == "bfloat16" else 0x7C00):
        bad = good.copy()
        bad[lo + 2, 5] = pattern  # a NaN, then +inf, where the reference is finite
        report = tolerance_check(bad, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
        assert not report.ok and report.worst == (lo + 2, 5) and report.max_ulps == np.inf
    unwritten = good.copy()
    unwritten[hi - 1] = POISON_BITS[out_dtype]  # the last row of the last group never stored
    assert tolerance_check(unwritten, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr).failures == p.n
    stray = good.copy()
    stray[hi + 1, 3] = good[lo, 3]  # a write past the groups
    report = check_untouched(stray, POISON_BITS[out_dtype], p.m_indptr)
    assert not report.ok and report.changed == 1 and report.first_changed == (hi + 1, 3), report
    stray = good.copy()
    stray[lo - 1, 0] ^= 1  # one bit flipped in a row before group 0
    assert not check_untouched(stray, good, p.m_indptr).ok
    assert check_untouched(good, good.copy(), p.m_indptr).ok


def test_overflow_expectations():
    ref = np.array([[1e5, -1e5, 65504.0, 70000.0, 65000.0]])
    abs_sum = np.abs(ref)
    out = np.array([[np.inf, -np.inf, 65504.0, np.inf, 65000.0]])
    assert tolerance_check(out, ref, abs_sum, 128, "float16").ok
    for j, wrong in ((0, 65504.0), (1, np.inf), (4, np.inf)):
        bad = out.copy()
        bad[0, j] = wrong
        report = tolerance_check(bad, ref, abs_sum, 128, "float16")
        assert not report.ok and report.worst == (0, j), report
    # bf16's range is float32's: 1e5 is an ordinary value there.
    assert not tolerance_check(out, ref, abs_sum, 128, "bfloat16").ok


def test_tolerance_formula_edges():
    # One ulp passes, a hair beyond fails, with subnormal spacing near zero.
    ref = np.array([[1.0, 2.0**-20, 0.0]])
    zero = np.zeros_like(ref)
    for out_dtype, ulp1, ulp_small, tiny in (("bfloat16", 2.0**-7, 2.0**-27, 2.0**-133),
                                            ("float16", 2.0**-10, 2.0**-24, 2.0**-24)):
        one_ulp = np.array([[1.0 + ulp1, 2.0**-20 + ulp_small, tiny]])
        assert tolerance_check(one_ulp, ref, zero, 128, out_dtype).ok
        assert tolerance_check(-one_ulp, -ref, zero, 128, out_dtype).ok
        beyond = one_ulp + np.array([[ulp1 / 4, ulp_small / 4, tiny / 4]])
        assert tolerance_check(beyond, ref, zero, 128, out_dtype).failures == 3
    over = np.array([[1.0 + 2.0**-7 + 2.0**-9, 2.0**-20, 0.0]])
    assert tolerance_check(over, ref, zero, 128, "bfloat16").failures == 1
    # The summation slack K * 2**-23 * abs_sum widens the band.
    assert tolerance_check(over, ref, np.array([[2.0**7, 0, 0]]), 128, "bfloat16").ok
    nan_ref = np.array([[np.nan]])
    assert tolerance_check(nan_ref, nan_ref, nan_ref, 128, "bfloat16").ok
    assert not tolerance_check(np.array([[1.0]]), nan_ref, nan_ref, 128, "bfloat16").ok
    with pytest.raises(ValueError, match="out_dtype='float32'"):
        tolerance_check(ref, ref, zero, 128, "float32")
    with pytest.raises(ValueError, match="differ"):
        tolerance_check(ref[:, :2], ref, zero, 128, "bfloat16")


def test_bits_to_float_helpers(rng):
    bits = rng.integers(0, 2**16, 5000, dtype=np.uint16)
    bf = bf16_bits_to_float(bits)
    assert bf.dtype == np.float32
    assert np.array_equal(bf, bits.view(ml_dtypes.bfloat16).astype(np.float32), equal_nan=True)
    assert np.array_equal(f16_bits_to_float(bits), bits.view(np.float16).astype(np.float32), equal_nan=True)
    assert np.array_equal(bf16_bits_to_float(torch.from_numpy(bits.view(np.int16))), bf, equal_nan=True)
