"""Hopper's decode kernel (sm90ws_nvfp4_grouped_gemm.cu) against the float64 reference (SPEC §5).

It serves its 8- and 16-token cuts on a 9.0 GPU (named, or chosen automatically where there are enough
tiles); every case first checks that the dispatch lands on it, then runs test_gemm_gpu.py's checks
(poisoned output, per-element tolerance, norm-wise error, untouched rows bit for bit).
"""
import pytest

import nvfp4_driver as nd
from nvfp4_driver import testing, variants
from nvfp4_driver.devmem import DeviceBuffer

from test_gemm_gpu import (check, check_misaligned_scales, check_out_4_bytes_in, dispatched,  # on sys.path
                           hopper_kernel_path, run_case)


@pytest.fixture(autouse=True)
def hopper_path(monkeypatch):
    hopper_kernel_path(monkeypatch, "the sm90ws kernel is built for sm_90 and chosen on compute capability 9.0")


CUTS = [dict(tile_m=t.tile_m, tile_n=t.tile_n, tile_k=t.tile_k, swap_ab=t.swap_ab)
        for t in sorted(variants.registry.family_cuts(variants.Family.SM90WS.value), key=repr)]


def cut_id(t):
    return f"m{t['tile_m']}k{t['tile_k']}"


def test_the_family_has_its_cuts():
    assert sorted(cut_id(c) for c in CUTS) == ["m16k128", "m16k256", "m8k128", "m8k256"]


@pytest.mark.parametrize("tiles", CUTS, ids=cut_id)
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", ["edges", "long_k", "many_groups", "no_alpha", "sf_base", "sign_bit"])
def test_sm90ws_cases(rng, record_ulps, tiles, out_dtype, case):
    # edges: an empty group, a 1-row group, exactly one tile, several tiles, rows before and after,
    # N=136 (a partial column tile), K=384 (a partial k tile for tile_k 256)
    if case == "edges":
        p = testing.random_problem(rng, [37, 0, 1, 16, 200], n=136, k=384, row_offset=5, trailing_rows=7)
    elif case == "long_k":  # 20-40 k tiles: every stage reused many times, across tiles
        p = testing.random_problem(rng, [9, 17], n=264, k=5120, row_offset=1)
    elif case == "many_groups":  # more tiles than the persistent grid's 4 blocks per SM
        rows = [int(r) for r in rng.integers(0, 24, size=300) * (rng.random(300) < 0.85)]
        p = testing.random_problem(rng, rows, n=1024, k=256, row_offset=3, trailing_rows=5)
    elif case == "no_alpha":
        p = testing.random_problem(rng, [3, 17, 0, 15], n=64, k=256, alpha=False)
    elif case == "sf_base":  # group 2's scales start at row 384 (SPEC §3)
        p = testing.random_problem(rng, [128, 128, 128], n=64, k=256, trailing_rows=0)
    else:
        p = testing.random_problem(rng, [4, 19], n=96, k=512, scale_sign_bit=True)
    v = dispatched(p, tiles)
    assert (v.family, v.target.name) == (variants.Family.SM90WS, "sm_90")
    bits, _ = run_case(p, out_dtype, **tiles)
    check(p, bits, out_dtype, record_ulps)


def test_automatic_cut_takes_sm90ws_for_many_tiles_only(rng, record_ulps):
    many = testing.random_problem(rng, [int(r) for r in rng.integers(1, 8, size=64)], n=2048, k=512)
    assert dispatched(many, None).family is variants.Family.SM90WS  # 64 groups x 16 column tiles
    bits, _ = run_case(many, "bfloat16")
    check(many, bits, "bfloat16", record_ulps)
    few = testing.random_problem(rng, [16] * 4, n=512, k=512, trailing_rows=0)  # 16 rows a group on average
    assert dispatched(few, None).family is variants.Family.SM80  # 4 x 4 tiles: the portable kernel


@pytest.mark.parametrize("tiles", CUTS, ids=cut_id)
@pytest.mark.parametrize("offset", [4, 8])
def test_scales_not_16_byte_aligned_fall_back(rng, record_ulps, offset, tiles):
    """Scale tensors 4- or 8-byte aligned (TMA needs 16): the launch falls back to the portable
    kernel's same cut (its 16-token cut for the 8-token one); the answer is the same."""
    p = testing.random_problem(rng, [5, 0, 13], n=136, k=384, row_offset=1)
    assert dispatched(p, tiles).family is variants.Family.SM90WS
    check_misaligned_scales(p, offset, record_ulps, **tiles)


@pytest.mark.parametrize("tiles", CUTS, ids=cut_id)
def test_out_only_4_byte_aligned(rng, record_ulps, tiles):
    """An out 4 bytes into its allocation: the per-lane stores, nothing written outside the view."""
    check_out_4_bytes_in(testing.random_problem(rng, [11, 0, 1, 30], n=136, k=256, row_offset=1), record_ulps, **tiles)


@pytest.mark.parametrize("n", [64, 136])
def test_exact_size_buffers(rng, record_ulps, n):
    """Every operand in an allocation of exactly its size (cuMemAlloc), so a read past any tensor
    faults under compute-sanitizer memcheck and reads garbage under initcheck."""
    p = testing.random_problem(rng, [3, 17, 0, 15], n=n, k=256, alpha=False)
    names = ("a", "b", "a_scale", "b_scale", "m_indptr")
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in names}
    for cut in CUTS:
        out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
        out.fill_bytes(0xFF)
        assert dispatched(p, cut).family is variants.Family.SM90WS
        nd.group_gemm_nvfp4_nt_groupwise(*(bufs[name] for name in names), out=out, **cut)
        bits = out.to_numpy()
        check(p, bits, "bfloat16", record_ulps, poisoned=False)
        assert testing.check_untouched(bits, 0xFFFF, p.m_indptr).ok
