"""What only the GPU can see: malformed m_indptr values and an a_scale too small for them.

Unchecked, the kernel clamps: the call must neither fault nor touch memory outside the given tensors
(``out`` sits inside a larger poisoned buffer whose guard rows must keep the poison; with exact-size
cuMemAlloc buffers, compute-sanitizer memcheck sees any stray access). Checked (``check_inputs=True``
or NVFP4_DRIVER_CHECK=1), the same calls raise ValueError naming the values, before the launch.
"""

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import testing
from nvfp4_driver.devmem import DeviceBuffer

torch = pytest.importorskip("torch")

NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")
GUARD = 64  # poisoned rows before and after out
POISON = testing.POISON_BITS["bfloat16"]


def base(rng):
    # cum_m = 3 + 300 + 5 = 308; m_indptr = [3, 103, 153, 303]; a_scale_rows(m_indptr) = 640
    return testing.random_problem(rng, [100, 50, 150], n=72, k=256, row_offset=3, trailing_rows=5)


BAD_M_INDPTR = {
    "decreasing": [3, 200, 60, 303],
    "all_reversed": [303, 200, 100, 0],
    "beyond_cum_m": [3, 103, 900, 5000],
    "negative": [-100, -5, 50, 303],
    "int32_extremes": [0, 2**31 - 1, -2**31, 2**31 - 1],
    "end_past_cum_m_by_one": [3, 103, 153, 309],
}


def poisoned_out(p):
    big = torch.empty((GUARD + p.cum_m + GUARD, p.n), dtype=torch.bfloat16, device="cuda")
    big.view(torch.int16).fill_(int(np.uint16(POISON).view(np.int16)))
    return big, big[GUARD:GUARD + p.cum_m]


def assert_guards_untouched(big, p):
    got = big.view(torch.int16).cpu().numpy().view(np.uint16)
    assert (got[:GUARD] == POISON).all(), "rows before out were written"
    assert (got[GUARD + p.cum_m:] == POISON).all(), "rows after out were written"


def assert_still_correct(p, args):
    """After a malformed call the context must be healthy: a valid call gives the right answer."""
    big, out = poisoned_out(p)
    nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
    torch.cuda.synchronize()
    ref, abs_sum = p.reference()
    got = out.view(torch.int16).cpu().numpy().view(np.uint16)
    assert testing.tolerance_check(got, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr).ok
    assert testing.check_untouched(got, POISON, p.m_indptr).ok
    assert_guards_untouched(big, p)


def torch_args(p, m_indptr=None, a_scale=None):
    args = [torch.from_numpy(np.ascontiguousarray(getattr(p, name))).cuda() for name in NAMES]
    if m_indptr is not None:
        args[4] = torch.tensor(m_indptr, dtype=torch.int32, device="cuda")
    if a_scale is not None:
        args[2] = a_scale
    return args


@pytest.mark.parametrize("case", sorted(BAD_M_INDPTR))
@pytest.mark.parametrize("tile_n,swap_ab", [(128, True), (32, False)])
def test_malformed_m_indptr_unchecked_stays_inside(rng, case, tile_n, swap_ab):
    p = base(rng)
    args = torch_args(p, BAD_M_INDPTR[case])
    big, out = poisoned_out(p)
    for _ in range(2):
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, tile_n=tile_n, swap_ab=swap_ab)
    torch.cuda.synchronize()  # raises if the kernel faulted
    assert_guards_untouched(big, p)
    assert_still_correct(p, torch_args(p))


@pytest.mark.parametrize("case", sorted(BAD_M_INDPTR))
def test_malformed_m_indptr_checked_raises(rng, case, monkeypatch):
    p = base(rng)
    args = torch_args(p, BAD_M_INDPTR[case])
    big, out = poisoned_out(p)
    with pytest.raises(ValueError, match=r"m_indptr\[\d+\]=-?\d+"):
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, check_inputs=True)
    monkeypatch.setenv("NVFP4_DRIVER_CHECK", "1")
    with pytest.raises(ValueError, match=r"m_indptr\[\d+\]=-?\d+"):
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
    torch.cuda.synchronize()
    got = big.view(torch.int16).cpu().numpy().view(np.uint16)
    assert (got == POISON).all(), "a refused call wrote to out"


@pytest.mark.parametrize("rows", [0, 130, 384, 639])
def test_a_scale_too_small(rng, rows):
    """Fewer scale rows than the kernel reads, here 640 = a_scale_rows(m_indptr) (130: a partial 128-row
    block, whose bytes the swizzle spreads over the whole block; 384: group 2's block is missing)."""
    p = base(rng)
    small = torch.from_numpy(np.ascontiguousarray(p.a_scale[:rows])).cuda()
    args = torch_args(p, a_scale=small)
    big, out = poisoned_out(p)
    nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out)
    torch.cuda.synchronize()
    assert_guards_untouched(big, p)
    got = out.view(torch.int16).cpu().numpy().view(np.uint16)
    assert testing.check_untouched(got, POISON, p.m_indptr).ok
    # Groups whose scale blocks lie wholly inside the tensor are exact (group 0: rows 0..99).
    if rows >= 128:
        ref, abs_sum = p.reference()
        g0 = slice(int(p.m_indptr[0]), int(p.m_indptr[1]))
        ok = testing.tolerance_check(got[g0], ref[g0], abs_sum[g0], p.k, "bfloat16")
        assert ok.ok, ok
    with pytest.raises(ValueError, match=rf"a_scale has {rows * p.k // 16} bytes .* needs 640 rows"):
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, check_inputs=True)
    assert_still_correct(p, torch_args(p))


def test_checked_mode_matches_unchecked_on_valid_input(rng):
    p = base(rng)
    args = torch_args(p)
    outs = []
    for checked in (False, True):
        _big, out = poisoned_out(p)  # written everywhere first: initcheck watches these tests
        nd.group_gemm_nvfp4_nt_groupwise(*args[:5], alpha=args[5], out=out, check_inputs=checked)
        outs.append(out.view(torch.int16).cpu().numpy())
    rows = slice(int(p.m_indptr[0]), int(p.m_indptr[-1]))
    np.testing.assert_array_equal(outs[0][rows], outs[1][rows])


def test_exact_size_buffers_for_memcheck(rng):
    """Every operand its own cuMemAlloc of exactly its size: under compute-sanitizer memcheck, any
    read or write past an operand is reported (a caching allocator's slack would hide it). Outside
    the sanitizer, the answers are checked: the valid m_indptr against the reference (every group
    with the whole a_scale, group 0 with 130 scale rows, whose first block holds its rows), and the
    rows outside the groups keep the poison."""
    p = base(rng)
    ref, abs_sum = p.reference()
    g0 = slice(int(p.m_indptr[0]), int(p.m_indptr[1]))
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in NAMES}
    for values in list(BAD_M_INDPTR.values()) + [list(p.m_indptr), [0, 308, 308, 308]]:
        valid = values == list(p.m_indptr)
        m = DeviceBuffer.from_numpy(np.array(values, dtype=np.int32))
        for rows in (p.a_scale.shape[0], 130, 0):
            a_scale = DeviceBuffer.from_numpy(np.ascontiguousarray(p.a_scale[:rows])) if rows else \
                DeviceBuffer((0, p.k // 16), "uint8")
            out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
            for tile_n, tile_k, swap in ((128, 128, True), (32, 256, False)):
                out.fill_bytes(0xFF)  # bfloat16 0xFFFF: a NaN no result is
                nd.group_gemm_nvfp4_nt_groupwise(bufs["a"], bufs["b"], a_scale, bufs["b_scale"], m,
                                                 alpha=bufs["alpha"], out=out, tile_n=tile_n, tile_k=tile_k,
                                                 swap_ab=swap)
                got = out.to_numpy()  # synchronises: a fault would surface here
                if not valid:
                    continue
                cut = f"tile_n={tile_n} tile_k={tile_k} swap_ab={swap}, {rows} scale rows"
                assert testing.check_untouched(got, 0xFFFF, p.m_indptr).ok, cut
                if rows == p.a_scale.shape[0]:
                    report = testing.tolerance_check(got, ref, abs_sum, p.k, "bfloat16", m_indptr=p.m_indptr)
                    assert report.ok, f"{cut}: {report}"
                elif rows == 130:
                    report = testing.tolerance_check(got[g0], ref[g0], abs_sum[g0], p.k, "bfloat16")
                    assert report.ok, f"{cut}: {report}"
    torch.cuda.synchronize()
