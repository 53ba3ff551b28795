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
    v = dispatched(many, None)  # 64 groups x 16 column tiles, at most 8 rows a group: the 8-token cut
    assert (v.family, v.tiles.tile_m, v.tiles.tile_k) == (variants.Family.SM90WS, 8, 256)
    bits, _ = run_case(many, "bfloat16")
    check(many, bits, "bfloat16", record_ulps)
    between = testing.random_problem(rng, [16] * 16, n=3072, k=256, trailing_rows=0)  # 31 x 24 tiles (bound)
    assert dispatched(between, None).family is variants.Family.SM80
    few = testing.random_problem(rng, [16] * 4, n=512, k=512, trailing_rows=0)  # 16 rows a group on average
    assert dispatched(few, None).family is variants.Family.SM90WS_SPLITK  # 4 x 4 tiles: the K-split kernel


# The K-split kernel (sm90ws_splitk_nvfp4_grouped_gemm.cu) serves the automatic choice only, for calls
# of at most SM90WS_SPLITK_MAX_TILES tiles (the bound). Its two sets of warps take the global k steps of
# either parity, so an odd number of k tiles a tile (K = 384: 3) hands the extra one to the other
# set on the next tile; K = 128 leaves one set nothing; more tiles than the grid's blocks (2 an SM)
# make the blocks run several tiles. Five groups of 17 rows and five empty ones (about 9 rows a group
# on average): 10 row tiles x 27 column tiles = 270 tiles (an H100 or H200 runs 264 blocks), 405 by the
# bound.
SPLITK_CASES = {
    "edges": lambda rng: testing.random_problem(rng, [37, 0, 1, 16, 0, 2, 15], n=136, k=384, row_offset=5,
                                                trailing_rows=7),
    "k128": lambda rng: testing.random_problem(rng, [9, 17, 3], n=264, k=128, row_offset=1),
    "long_k": lambda rng: testing.random_problem(rng, [9, 17], n=264, k=5120, row_offset=1),
    "more_tiles_than_blocks": lambda rng: testing.random_problem(rng, [17, 0] * 5, n=3456, k=384, row_offset=3),
    "no_alpha": lambda rng: testing.random_problem(rng, [3, 17, 0, 15], n=64, k=256, alpha=False),
    "sign_bit": lambda rng: testing.random_problem(rng, [4, 19], n=96, k=512, scale_sign_bit=True),
}


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", sorted(SPLITK_CASES))
def test_sm90ws_splitk_cases(rng, record_ulps, out_dtype, case):
    p = SPLITK_CASES[case](rng)
    v = dispatched(p, None)
    assert (v.family, v.tiles, v.target.name) == (variants.Family.SM90WS_SPLITK, variants.Tiles(16, 128, 128, True),
                                                  "sm_90")
    bits, _ = run_case(p, out_dtype)
    check(p, bits, out_dtype, record_ulps)


def test_sm90ws_splitk_exact_size_buffers_and_misaligned_scales(rng, record_ulps):
    """Every operand in an allocation of exactly its size; then scales only 4 bytes aligned (TMA needs
    16), where the launch falls back to the portable kernel's same cut."""
    p = testing.random_problem(rng, [3, 17, 0, 15], n=136, k=384, alpha=False)
    assert dispatched(p, None).family is variants.Family.SM90WS_SPLITK
    names = ("a", "b", "a_scale", "b_scale", "m_indptr")
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in names}
    out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    out.fill_bytes(0xFF)
    nd.group_gemm_nvfp4_nt_groupwise(*(bufs[name] for name in names), out=out)
    bits = out.to_numpy()
    check(p, bits, "bfloat16", record_ulps, poisoned=False)
    assert testing.check_untouched(bits, 0xFFFF, p.m_indptr).ok
    check_misaligned_scales(p, 4, record_ulps)


@pytest.mark.parametrize("tiles", CUTS + [None], ids=lambda t: "auto" if t is None else cut_id(t))
def test_no_rows(rng, record_ulps, tiles):
    """cum_m = 0 (an empty batch; the automatic choice takes the K-split kernel): no tensor map of zero
    rows can be encoded, so the launch falls back, which finds no rows; the empty output is returned."""
    p = testing.random_problem(rng, [0, 0, 0], n=136, k=256, trailing_rows=0)
    assert p.cum_m == 0
    assert dispatched(p, tiles).family in (variants.Family.SM90WS, variants.Family.SM90WS_SPLITK)
    bits, _ = run_case(p, "bfloat16", **(tiles or {}))
    assert bits.shape == (0, 136)


def test_sm90ws_splitk_out_only_4_byte_aligned(rng, record_ulps):
    p = testing.random_problem(rng, [11, 0, 1, 30], n=136, k=384, row_offset=1)
    assert dispatched(p, None).family is variants.Family.SM90WS_SPLITK
    check_out_4_bytes_in(p, record_ulps)


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
