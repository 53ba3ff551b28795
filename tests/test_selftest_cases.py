"""The selftest's hardware questions build the inputs they name (CPU only: the GPU side runs in
``python -m nvfp4_driver selftest`` and tests/gpu)."""
import numpy as np
import pytest

from nvfp4_driver import selftest, testing


@pytest.fixture
def rng():
    return np.random.default_rng()


def real_scales(p):
    rows = slice(int(p.m_indptr[0]), int(p.m_indptr[-1]))
    return np.concatenate([p.a_sf[rows].reshape(-1), p.b_sf.reshape(-1)])


def test_the_cases_are_named_once():
    assert set(selftest.HARDWARE_CASES) == {"scale bytes with bit 7 set", "NaN scale bytes (0x7F)",
                                            "subnormal scales only", "K = 7168 cancellation"}


def test_sign_bit_case_sets_bit_7_and_the_reference_ignores_it(rng):
    p = selftest.HARDWARE_CASES["scale bytes with bit 7 set"](rng)
    sf = real_scales(p)
    assert np.count_nonzero(sf & 0x80) > sf.size // 4
    masked = testing.RandomProblem(p.a, p.b, p.a_scale & 0x7F, p.b_scale & 0x7F, p.m_indptr, p.alpha,
                                   p.a_sf & 0x7F, p.b_sf & 0x7F)
    np.testing.assert_array_equal(p.reference()[0], masked.reference()[0])


def test_nan_case_has_nan_scales_and_nan_outputs_only_there(rng):
    p = selftest.HARDWARE_CASES["NaN scale bytes (0x7F)"](rng)
    assert np.count_nonzero(real_scales(p) == 0x7F) > 0
    ref = p.reference()[0][int(p.m_indptr[0]):int(p.m_indptr[-1])]
    nan = np.isnan(ref)
    assert 0 < np.count_nonzero(nan) < nan.size


def test_subnormal_case_has_only_subnormal_or_zero_scales(rng):
    p = selftest.HARDWARE_CASES["subnormal scales only"](rng)
    sf = real_scales(p)
    assert sf.max() <= 7 and np.count_nonzero(sf) > sf.size // 2


def test_cancellation_case_sums_to_exactly_zero_and_needs_the_tolerance(rng):
    p = selftest.HARDWARE_CASES["K = 7168 cancellation"](rng)
    assert p.k == 7168
    ref, abs_sum = p.reference()
    rows = slice(int(p.m_indptr[0]), int(p.m_indptr[-1]))
    assert np.all(ref[rows] == 0) and np.all(abs_sum[rows] > 0)
    # A kernel output of exactly zero passes; one of 1 ulp of the largest product sum does not.
    bits = np.zeros(ref.shape, dtype=np.uint16)
    assert testing.tolerance_check(bits, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr).ok
    wrong = testing.tolerance_check(np.full(ref.shape, 1e30), ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr)
    assert not wrong.ok
