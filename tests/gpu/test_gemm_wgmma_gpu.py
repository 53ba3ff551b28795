"""The Hopper wgmma kernel (sm90a_nvfp4_grouped_gemm.cu) against the float64 reference (SPEC §5).

It serves the cuts of ``variants.wgmma_cuts()`` on a 9.0 GPU; every case here first checks that the
dispatch really lands on it, then runs the same checks as test_gemm_gpu.py (poisoned output,
per-element tolerance, norm-wise error, untouched rows bit for bit).
"""
import pytest

import nvfp4_driver as nd
from nvfp4_driver import testing, variants
from nvfp4_driver.devmem import DeviceBuffer

from test_gemm_gpu import (check, dispatched, hopper_kernel_path, run_case,  # tests/gpu is on sys.path
                           torch)


@pytest.fixture(autouse=True)
def wgmma_path(monkeypatch):
    hopper_kernel_path(monkeypatch, "the wgmma kernel is built for sm_90a (compute capability 9.0)")


CUTS = [dict(tile_m=t.tile_m, tile_n=t.tile_n, tile_k=t.tile_k, swap_ab=t.swap_ab) for t in sorted(variants.wgmma_cuts(), key=repr)]


@pytest.mark.parametrize("tiles", CUTS, ids=lambda t: f"m{t['tile_m']}n{t['tile_n']}" + ("s" if t["swap_ab"] else ""))
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", ["edges", "long_k", "many_groups", "no_alpha", "sf_base", "sign_bit"])
def test_wgmma_cases(rng, record_ulps, tiles, out_dtype, case):
    # edges: an empty group, a 1-row group, exactly one tile, several tiles, rows before and after,
    # N=136 (a partial column tile), K=384 (three stages: the pipeline's wrap-around)
    if case == "edges":
        p = testing.random_problem(rng, [37, 0, 1, 128, 200], n=136, k=384, row_offset=5, trailing_rows=7)
    elif case == "long_k":  # 20 stages: every buffer reused many times
        p = testing.random_problem(rng, [129, 255], n=264, k=2560, row_offset=1)
    elif case == "many_groups":
        rows = list(rng.integers(0, 300, size=12) * (rng.random(12) < 0.85))
        p = testing.random_problem(rng, rows, n=512, k=1024, row_offset=3)
    elif case == "no_alpha":
        p = testing.random_problem(rng, [3, 170, 0, 150], n=64, k=256, alpha=False)
    elif case == "sf_base":  # group 2's scales start at row 384 (SPEC §3)
        p = testing.random_problem(rng, [128, 128, 128], n=64, k=256, trailing_rows=0)
    else:
        p = testing.random_problem(rng, [40, 190], n=96, k=512, scale_sign_bit=True)
    v = dispatched(p, tiles)
    assert (v.family, v.target.name) == (variants.Family.SM90A, "sm_90a")
    bits, _ = run_case(p, out_dtype, **tiles)
    check(p, bits, out_dtype, record_ulps)


def test_automatic_cut_takes_wgmma_for_many_rows(rng, record_ulps):
    p = testing.random_problem(rng, [300, 1, 140], n=256, k=512, row_offset=2)
    v = dispatched(p, None)
    assert v.family is variants.Family.SM90A
    bits, _ = run_case(p, "bfloat16")
    check(p, bits, "bfloat16", record_ulps)


def test_side_stream(rng, record_ulps):
    p = testing.random_problem(rng, [150, 90], n=128, k=512)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        bits, _ = run_case(p, "bfloat16", **CUTS[0])
    check(p, bits, "bfloat16", record_ulps)


@pytest.mark.parametrize("n", [64, 136, 264])
def test_exact_size_buffers(rng, record_ulps, n):
    """Every operand in an allocation of exactly its size (cuMemAlloc, not a framework's pool), so a
    read past b_scale's N_pad rows -- which a 256-column tile over N=64 (N_pad 128) could make for
    the last group -- faults under compute-sanitizer memcheck and reads garbage under initcheck."""
    p = testing.random_problem(rng, [3, 170, 0, 150], n=n, k=256, alpha=False)
    names = ("a", "b", "a_scale", "b_scale", "m_indptr")
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in names}
    for cut in CUTS:
        out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
        out.fill_bytes(0xFF)
        assert dispatched(p, cut).family is variants.Family.SM90A
        nd.group_gemm_nvfp4_nt_groupwise(*(bufs[name] for name in names), out=out, **cut)
        bits = out.to_numpy()
        check(p, bits, "bfloat16", record_ulps, poisoned=False)
        assert testing.check_untouched(bits, 0xFFFF, p.m_indptr).ok
