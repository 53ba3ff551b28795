"""The grouped GEMM on the GPU against the float64 reference (SPEC §5), every option and edge case.

Inputs are fresh random bytes every run (all 256 values, scales over every binade, NaN garbage in
the padding of the scale layouts); outputs are poisoned first and the rows outside the groups must
keep the poison bit for bit.
"""

import numpy as np
import pytest

import nvfp4_driver as nd
from nvfp4_driver import testing, variants
from seeds import SEED  # tests/gpu is on sys.path (pytest's rootdir-less import)

torch = pytest.importorskip("torch")

TORCH_OUT = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(autouse=True, params=["portable", "twin"])
def kernel_path(request, monkeypatch):
    """Every test runs twice: the portable kernel (sm_90 cubin; NVFP4_DRIVER_PORTABLE keeps the
    cuts the wgmma kernel serves on it too, test_gemm_wgmma_gpu.py covers that kernel) and the
    native Blackwell kernel's twin (sm120 source, its FP4 MMA replaced by a software model)."""
    monkeypatch.setenv("NVFP4_DRIVER_TWIN", "1" if request.param == "twin" else "0")
    monkeypatch.setenv("NVFP4_DRIVER_PORTABLE", "1")
    if request.param == "twin" and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the twin is built for sm_90")
    return request.param


def to_gpu(x):
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x)).cuda()


def run_case(p, out_dtype="bfloat16", give_out=True, stream=None, **tiles):
    """Run the op on problem ``p``; returns (out bits as uint16 numpy, the out tensor)."""
    args = [to_gpu(x) for x in (p.a, p.b, p.a_scale, p.b_scale, p.m_indptr)]
    alpha = to_gpu(p.alpha)
    out = None
    if give_out:
        out = torch.empty((p.cum_m, p.n), dtype=TORCH_OUT[out_dtype], device="cuda")
        out.view(torch.int16).fill_(np.int16(np.uint16(testing.POISON_BITS[out_dtype]).view(np.int16)))
    result = nd.group_gemm_nvfp4_nt_groupwise(*args, alpha=alpha, out=out,
                                              out_dtype=None if give_out else out_dtype, stream=stream, **tiles)
    if give_out:
        assert result is out
    assert result.dtype == TORCH_OUT[out_dtype] and tuple(result.shape) == (p.cum_m, p.n)
    torch.cuda.synchronize()
    return result.view(torch.int16).cpu().numpy().view(np.uint16), result


# Norm-wise relative error bounds: output rounding (2**-9 bf16, 2**-12 fp16 at most per element)
# plus fp32 accumulation. SPEC §5's per-element slack grows with K and would let a wrong operand
# pass at large K; this second check would not.
REL_NORM_BOUND = {"bfloat16": 3e-3, "float16": 1e-3}


def check(p, bits, out_dtype, record_ulps, poisoned=True):
    ref, abs_sum = p.reference()
    report = testing.tolerance_check(bits, ref, abs_sum, p.k, out_dtype, m_indptr=p.m_indptr)
    assert report.ok, f"seed {SEED}: {report}"
    rows = slice(int(p.m_indptr[0]), int(p.m_indptr[-1]))
    to_float = testing.bf16_bits_to_float if out_dtype == "bfloat16" else testing.f16_bits_to_float
    got, want = to_float(bits[rows]).astype(np.float64), ref[rows]
    if want.size and np.isfinite(got).all():
        rel = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300)
        assert rel <= REL_NORM_BOUND[out_dtype], f"seed {SEED}: relative error {rel:.3g}"
    if report.checked:
        record_ulps(report)
    if poisoned:
        untouched = testing.check_untouched(bits, testing.POISON_BITS[out_dtype], p.m_indptr)
        assert untouched.ok, f"seed {SEED}: {untouched}"
    return report


# Every compiled cut: FlashInfer's (tile_m 128), the token tiles (16/32/64, tile_n 128, swap_ab) and
# the native kernel's 128 x 256 (tile_n 256: the twin here; the wgmma kernel's in test_gemm_wgmma_gpu.py).
VARIANT_GRID = ([(128, tn, tk, swap) for tn in (32, 64, 128) for tk in (128, 256) for swap in (False, True)]
                + [(tm, 128, tk, True) for tm in (16, 32, 64) for tk in (128, 256)] + [(128, 256, 128, False)])
WIDE = pytest.param(dict(tile_m=128, tile_n=256, tile_k=128, swap_ab=False), id="m128n256k128")


def skip_unless_native(kernel_path, tile_n):
    """tile_n 256 exists on the native kernel only (NVFP4_DRIVER_PORTABLE keeps 9.0 off the wgmma one)."""
    if tile_n == 256 and kernel_path != "twin" and torch.cuda.get_device_capability() not in ((12, 0), (12, 1)):
        pytest.skip("tile_n 256: the native kernel's cut (its twin on 9.0)")


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("tile_m,tile_n,tile_k,swap_ab", VARIANT_GRID)
def test_every_variant(rng, record_ulps, kernel_path, tile_m, tile_n, tile_k, swap_ab, out_dtype):
    # N=136: a partial column tile for every tile_n; K=384: a partial k tile for tile_k=256;
    # groups: empty, single row, exactly one tile, several tiles (of every tile_m), and rows
    # before/after them.
    skip_unless_native(kernel_path, tile_n)
    p = testing.random_problem(rng, [37, 0, 1, 128, 200], n=136, k=384, row_offset=5, trailing_rows=7)
    bits, _ = run_case(p, out_dtype, tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, swap_ab=swap_ab)
    check(p, bits, out_dtype, record_ulps)


@pytest.mark.parametrize("rows", [[1, 3, 0, 16], [9] * 40, [20, 33, 64, 0, 2], [300, 1, 140]])
def test_automatic_cut(rng, record_ulps, rows):
    """No tile arguments: the cut comes from the shapes (variants.auto_tiles), token tiles included."""
    p = testing.random_problem(rng, rows, n=256, k=512, row_offset=2)
    bits, _ = run_case(p, "bfloat16")
    check(p, bits, "bfloat16", record_ulps)


@pytest.mark.parametrize("swap_ab", [False, True])
def test_alpha_none(rng, record_ulps, swap_ab):
    p = testing.random_problem(rng, [3, 70, 0, 150], n=64, k=256, alpha=False)
    bits, _ = run_case(p, "bfloat16", swap_ab=swap_ab)
    check(p, bits, "bfloat16", record_ulps)


@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16"])
def test_out_allocated_by_the_op(rng, record_ulps, out_dtype):
    p = testing.random_problem(rng, [20, 5], n=32, k=128, row_offset=0, trailing_rows=0)
    bits, out = run_case(p, out_dtype, give_out=False)
    assert out.device.type == "cuda"
    check(p, bits, out_dtype, record_ulps, poisoned=False)


@pytest.mark.parametrize("tile_n", [32, 128])
def test_smallest_shapes(rng, record_ulps, tile_n):
    # N=8, K=128, one group of one row.
    p = testing.random_problem(rng, [1], n=8, k=128, row_offset=0, trailing_rows=0)
    bits, _ = run_case(p, "bfloat16", tile_n=tile_n)
    check(p, bits, "bfloat16", record_ulps)


def test_sf_base_beyond_tight_stacking(rng, record_ulps):
    # Three groups of 128 rows: group 2's scales start at row 384 (SPEC §3), not 256.
    p = testing.random_problem(rng, [128, 128, 128], n=64, k=256, trailing_rows=0)
    assert list(nd.a_scale_group_bases(p.m_indptr)) == [0, 128, 384]
    bits, _ = run_case(p, "bfloat16")
    check(p, bits, "bfloat16", record_ulps)


def test_all_groups_empty_writes_nothing(rng, record_ulps):
    p = testing.random_problem(rng, [0, 0, 0], n=64, k=128, row_offset=4, trailing_rows=4)
    bits, _ = run_case(p, "bfloat16")
    assert (bits == testing.POISON_BITS["bfloat16"]).all()


def test_scale_sign_bit_is_ignored(rng, record_ulps):
    p = testing.random_problem(rng, [40, 90], n=96, k=256, scale_sign_bit=True)
    bits, _ = run_case(p, "bfloat16")
    check(p, bits, "bfloat16", record_ulps)


@pytest.mark.parametrize("swap_ab", [False, True])
def test_many_groups_moe_shape(rng, record_ulps, swap_ab):
    rows = list(rng.integers(0, 300, size=16) * (rng.random(16) < 0.85))
    p = testing.random_problem(rng, rows, n=512, k=1024, row_offset=3)
    bits, _ = run_case(p, "bfloat16", tile_n=64, tile_k=256, swap_ab=swap_ab)
    check(p, bits, "bfloat16", record_ulps)


def test_side_stream(rng, record_ulps):
    p = testing.random_problem(rng, [50, 60], n=128, k=512)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # the default: the framework's current stream
        bits, _ = run_case(p, "float16")
    check(p, bits, "float16", record_ulps)
    bits, _ = run_case(p, "float16", stream=side)  # explicit
    check(p, bits, "float16", record_ulps)


def runs_on(target: str, cap: tuple[int, int]) -> bool:
    """CUDA's compatibility rules: a cubin for sm_XY runs on X.Y and later minors of X (sm_XYa: on X.Y
    only); PTX for compute_XY is compiled by the driver for X.Y and every later GPU."""
    kind, arch = target.split("_")
    digits = arch.rstrip("a")
    built_for = (int(digits[:-1]), int(digits[-1]))
    if kind == "compute":
        return cap >= built_for
    return cap == built_for if arch.endswith("a") else (cap[0] == built_for[0] and cap[1] >= built_for[1])


def test_dispatch_follows_the_path(kernel_path):
    """The selector's rules, on whatever GPU this is: the twin where asked (the fixture runs it on 9.0
    only), else the native FP4 kernel on 12.0/12.1 and the portable one elsewhere (never the wgmma
    kernel: NVFP4_DRIVER_PORTABLE), as a build this GPU can load, machine code wherever one loads."""
    cap = torch.cuda.get_device_capability()
    v = variants.select_variant(variants.Problem(2, 64, 256, 10, "bfloat16"), variants.Tiles(), cap)
    if kernel_path == "twin":  # FlashInfer's default cut is one the warp-specialized kernel serves
        assert (v.family, v.target.name) == (variants.Family.SM120WS, "twin_sm_90")
        return
    native = cap in ((12, 0), (12, 1))
    assert v.family is (variants.Family.SM120WS if native else variants.Family.SM80)
    built = variants.manifest()["kernels"][v.symbol]["targets"]
    target = v.target.name
    assert target in built and runs_on(target, cap), (target, cap)
    cubins = [t for t in built if t.startswith("sm_") and runs_on(t, cap)]
    assert target.startswith("sm_") == bool(cubins), (target, cubins)  # PTX only where no cubin loads


@pytest.mark.parametrize("tiles", [dict(tile_m=16, tile_n=128, tile_k=128, swap_ab=True),
                                   dict(tile_m=128, tile_n=128, tile_k=128, swap_ab=False), WIDE])
def test_persistent_grid_walks_many_tiles(rng, record_ulps, kernel_path, tiles):
    """Many more tiles than the persistent grid has blocks (the sm120ws kernels on the twin: 2 x 132
    blocks of 16-token tiles, 132 of 128-row tiles): every block's stride loop, the producer running
    into the next tile (128 x 256: consumer warp 0's copies crossing tile boundaries), empty groups
    interleaved."""
    skip_unless_native(kernel_path, tiles["tile_n"])
    group_rows = rng.integers(0, 24, size=300) if tiles["tile_m"] == 16 else [300, 0, 1, 140, 77]
    n = 1024 if tiles["tile_m"] == 16 else 4096 * tiles["tile_n"] // 128  # 128-row tiles: 7 x 32
    k = 512 if tiles["tile_n"] == 256 else 256  # 4 k tiles past its 3 stages: the refills cross tiles mid-ring
    p = testing.random_problem(rng, [int(r) for r in group_rows], n=n, k=k, row_offset=3, trailing_rows=5)
    bits, _ = run_case(p, "bfloat16", **tiles)
    check(p, bits, "bfloat16", record_ulps)


@pytest.mark.parametrize("tile_n", [128, pytest.param(256, id="m128n256k128")])
@pytest.mark.parametrize("offset", [4, 8])
def test_scales_not_16_byte_aligned(rng, record_ulps, offset, kernel_path, tile_n):
    """Scale tensors 4- or 8-byte aligned (the op accepts 4; TMA needs 16): the warp-specialized
    cuts fall back to the sm120 kernel of the same cut (tile_n 256: its 128-column cut); the answer
    is the same."""
    skip_unless_native(kernel_path, tile_n)
    p = testing.random_problem(rng, [37, 0, 130], n=136, k=384, row_offset=1)
    check_misaligned_scales(p, offset, record_ulps, tile_m=128, tile_n=tile_n, tile_k=128, swap_ab=False)


def dispatched(p, tiles):
    """The kernel this GPU runs for problem ``p`` cut by ``tiles`` (a dict of FlashInfer's tile
    arguments, or None for the automatic cut)."""
    problem = variants.Problem(len(p.m_indptr) - 1, p.n, p.k, p.cum_m, "bfloat16")
    t = None if tiles is None else variants.Tiles(**tiles)
    return variants.select_variant(problem, t, torch.cuda.get_device_capability())


def hopper_kernel_path(monkeypatch, why: str):
    """For the tests of a Hopper-only family: no NVFP4_DRIVER_* switch that would send its cuts
    elsewhere, and a skip (saying ``why``) off compute capability 9.0."""
    for name in ("NVFP4_DRIVER_TWIN", "NVFP4_DRIVER_PORTABLE", "NVFP4_DRIVER_FORCE_PTX"):
        monkeypatch.delenv(name, raising=False)
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip(why)


def check_misaligned_scales(p, offset, record_ulps, **tiles):
    """Run ``p`` with both scale tensors ``offset`` bytes into their allocations, and check it."""
    args = [to_gpu(x) for x in (p.a, p.b, p.a_scale, p.b_scale, p.m_indptr)]
    views = []
    for x in args[2:4]:
        flat = torch.empty(x.numel() + offset, dtype=torch.uint8, device="cuda")
        flat[offset:].copy_(x.reshape(-1))
        views.append(flat[offset:].view(x.shape))
    out = torch.empty((p.cum_m, p.n), dtype=torch.bfloat16, device="cuda")
    out.view(torch.int16).fill_(np.int16(np.uint16(testing.POISON_BITS["bfloat16"]).view(np.int16)))
    nd.group_gemm_nvfp4_nt_groupwise(args[0], args[1], views[0], views[1], args[4], alpha=to_gpu(p.alpha), out=out,
                                     **tiles)
    torch.cuda.synchronize()
    check(p, out.view(torch.int16).cpu().numpy().view(np.uint16), "bfloat16", record_ulps)


@pytest.mark.parametrize("tiles", [dict(tile_m=16, tile_n=128, tile_k=128, swap_ab=True),
                                   dict(tile_m=128, tile_n=128, tile_k=128, swap_ab=False), WIDE])
def test_out_only_4_byte_aligned(rng, record_ulps, kernel_path, tiles):
    """An out that starts 4 bytes into its allocation: the warp-specialized epilogue's 16-byte stores
    cannot serve it and its per-lane stores do; nothing outside the view is written."""
    skip_unless_native(kernel_path, tiles["tile_n"])
    check_out_4_bytes_in(testing.random_problem(rng, [37, 0, 1, 130], n=136, k=256, row_offset=1), record_ulps,
                         **tiles)


def check_out_4_bytes_in(p, record_ulps, **tiles):
    """Run ``p`` into an out 4 bytes into its allocation; check it and the poison around it."""
    args = [to_gpu(x) for x in (p.a, p.b, p.a_scale, p.b_scale, p.m_indptr)]
    poison = np.int16(np.uint16(testing.POISON_BITS["bfloat16"]).view(np.int16))
    flat = torch.empty(p.cum_m * p.n + 4, dtype=torch.bfloat16, device="cuda")
    flat.view(torch.int16).fill_(poison)
    out = flat[2:2 + p.cum_m * p.n].view(p.cum_m, p.n)  # 2 bf16 = 4 bytes in
    assert out.data_ptr() % 16 == 4
    nd.group_gemm_nvfp4_nt_groupwise(*args, alpha=to_gpu(p.alpha), out=out, **tiles)
    torch.cuda.synchronize()
    check(p, out.view(torch.int16).cpu().numpy().view(np.uint16), "bfloat16", record_ulps)
    edges = flat.view(torch.int16).cpu().numpy()
    assert (edges[:2] == poison).all() and (edges[2 + p.cum_m * p.n:] == poison).all()


def test_ptx_path(rng, record_ulps, monkeypatch, kernel_path):
    if kernel_path == "twin":
        pytest.skip("the PTX is the portable kernel's")
    monkeypatch.setenv("NVFP4_DRIVER_FORCE_PTX", "1")
    p = testing.random_problem(rng, [33, 0, 140], n=72, k=384, row_offset=2)
    cap = torch.cuda.get_device_capability()
    v = variants.select_variant(variants.Problem(3, 72, 384, p.cum_m, "bfloat16"),
                                variants.Tiles(tile_k=256), cap)
    assert v.target.name == "compute_80"
    for swap in (False, True):
        bits, _ = run_case(p, "bfloat16", tile_k=256, swap_ab=swap)
        check(p, bits, "bfloat16", record_ulps)


def test_weights_over_4gib(rng, record_ulps):
    """257 groups of (32768, 1024/2) bytes: group 256 starts past 2**32 bytes of b."""
    g, n, k = 257, 32768, 1024
    free, _total = torch.cuda.mem_get_info()
    if free < 6 * 2**30:
        pytest.skip(f"needs 6 GiB of free GPU memory, {free / 2**30:.1f} free")
    m_indptr = np.array([0] * g + [3], dtype=np.int32)
    gen = torch.Generator(device="cuda").manual_seed(int(rng.integers(2**31)))
    b = torch.randint(0, 256, (g, n, k // 2), dtype=torch.uint8, device="cuda", generator=gen)
    assert b.numel() > 2**32
    b_scale = torch.randint(1, 0x7F, (g, n, k // 16), dtype=torch.uint8, device="cuda", generator=gen)
    small = testing.random_problem(rng, [3], n=n, k=k, trailing_rows=0)  # the last group's data
    b[g - 1].copy_(torch.from_numpy(small.b[0]))
    b_scale[g - 1].copy_(torch.from_numpy(small.b_scale[0]))
    base = int(nd.a_scale_group_bases(m_indptr)[-1])
    a_scale = torch.zeros((nd.a_scale_rows(m_indptr), k // 16), dtype=torch.uint8, device="cuda")
    a_scale[base:base + 128].copy_(torch.from_numpy(small.a_scale[:128]))
    alpha = torch.ones(g, dtype=torch.float32, device="cuda")
    alpha[-1] = float(small.alpha[0])
    out = torch.empty((3, n), dtype=torch.bfloat16, device="cuda")
    nd.group_gemm_nvfp4_nt_groupwise(to_gpu(small.a), b, a_scale, b_scale, to_gpu(m_indptr), alpha=alpha, out=out)
    torch.cuda.synchronize()
    check(small, out.view(torch.int16).cpu().numpy().view(np.uint16), "bfloat16", record_ulps, poisoned=False)


def test_raw_pointers_and_cai_buffers(rng, record_ulps):
    """No framework at all: DeviceBuffer (__cuda_array_interface__) and the raw-pointer entry."""
    from nvfp4_driver.devmem import DeviceBuffer

    p = testing.random_problem(rng, [12, 0, 130], n=48, k=256, row_offset=1)
    bufs = {name: DeviceBuffer.from_numpy(getattr(p, name)) for name in ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha")}
    out = DeviceBuffer((p.cum_m, p.n), "bfloat16")
    out.fill_bytes(0xFF)
    nd.group_gemm_nvfp4_nt_groupwise(bufs["a"], bufs["b"], bufs["a_scale"], bufs["b_scale"], bufs["m_indptr"],
                                     alpha=bufs["alpha"], out=out)
    check(p, out.to_numpy(), "bfloat16", record_ulps, poisoned=False)
    assert testing.check_untouched(out.to_numpy(), 0xFFFF, p.m_indptr).ok

    out2 = DeviceBuffer((p.cum_m, p.n), "float16")
    out2.fill_bytes(0xFF)
    nd.group_gemm_nvfp4_nt_groupwise_ptr(
        bufs["a"].ptr, bufs["b"].ptr, bufs["a_scale"].ptr, bufs["b_scale"].ptr, bufs["m_indptr"].ptr,
        bufs["alpha"].ptr, out2.ptr, num_groups=3, n=p.n, k=p.k, cum_m=p.cum_m,
        a_scale_nbytes=bufs["a_scale"].nbytes, out_dtype="float16", tile_n=32, swap_ab=False)
    bits = out2.to_numpy()
    check(p, bits, "float16", record_ulps, poisoned=False)
    assert testing.check_untouched(bits, 0xFFFF, p.m_indptr).ok
