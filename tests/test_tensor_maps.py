"""The TMA kernels' host side without a GPU: the four tensor maps' shapes (what the kernel's copies
may read, SPEC §3's scale blocks as 256-byte lines), their cache, the launch that appends them to
the grouped-GEMM arguments, and the fallback to the sm120 kernel where TMA cannot serve."""
import contextlib
import pytest

from nvfp4_driver import plans, registry, tensor_maps, variants
from nvfp4_driver.config import Flags
from nvfp4_driver.problem import Problem, Tiles


def test_map_shapes_cover_exactly_the_tensors():
    p = Problem(num_groups=3, n=136, k=384, cum_m=300, out_dtype="bfloat16")
    shapes = tensor_maps.gemm_map_shapes(p, Tiles(16, 128, 256, True), a_scale_rows=640)
    row = 384 // 2
    assert shapes["a"] == ((row, 300), (row,), (128, 16), 128)            # 128 B rows: 128B swizzle
    assert shapes["b"] == ((row, 136, 3), (row, 136 * row), (128, 128, 1), 128)
    sf_k = 384 // 16
    # (256 bytes, sf_k/2 lines, whole 128-row blocks); a box = tile_k/32 lines = tile_k/64 quads of one block
    assert shapes["a_scale"] == ((256, sf_k // 2, 5), (256, 128 * sf_k), (256, 8, 1), 0)
    assert shapes["b_scale"] == ((256, sf_k // 2, 3 * 256 // 128), (256, 128 * sf_k), (256, 8, 1), 0)
    k128 = tensor_maps.gemm_map_shapes(p, Tiles(128, 128, 128, False), a_scale_rows=640)
    assert k128["a"][2:] == ((64, 128), 64) and k128["a_scale"][2] == (256, 4, 1)  # 64B swizzle
    # the scale map's strides walk SPEC §3: line l of block b is byte b*128*sf_k + 256*l, a block is
    # 128*sf_k contiguous bytes, and the blocks end where a_scale's whole blocks end
    d, s, _, _ = shapes["a_scale"]
    assert d[0] * d[1] == s[1] == 128 * sf_k and s[1] * d[2] == 640 * sf_k


class FakeKernel:
    ordinal = 0

    def __init__(self):
        self.calls = []

    def launch(self, grid, stream, args):
        self.calls.append((grid, stream, tuple(args)))


@pytest.fixture
def fake_encode(monkeypatch):
    seen = []

    def encode(ptr, dims, strides, box, swizzle):
        seen.append((ptr, dims, strides, box, swizzle))
        return bytes([len(seen)]) * 128

    monkeypatch.setattr(tensor_maps, "encode", encode)
    # no driver here: the primary-context guard around the encoding is a no-op
    monkeypatch.setattr(tensor_maps.driver, "_ContextGuard", lambda ordinal: contextlib.nullcontext())
    return seen


def make_launch(a_scale_rows=256, tiles_total=10, cum_m=200):
    p = Problem(num_groups=2, n=256, k=512, cum_m=cum_m, out_dtype="bfloat16")
    kernel, fallback = FakeKernel(), FakeKernel()
    launch = tensor_maps.TmaGemmLaunch(kernel, (264, 1, 1), fallback, (15, 2, 1), p, Tiles(16, 128, 128, True),
                                       a_scale_rows, tiles_total)
    return launch, kernel, fallback


def test_launch_appends_the_four_maps_in_abi_order(fake_encode):
    launch, kernel, fallback = make_launch()
    args = (0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0, 0x6000, 200, 256, 256, 512, 2, 0)
    launch.launch((99, 1, 1), 7, args)
    assert not fallback.calls
    ((grid, stream, sent),) = kernel.calls
    assert grid == (264, 1, 1) and stream == 7  # its own persistent grid, not the one it was handed
    assert sent[:13] == args and [m[0] for m in sent[13:]] == [1, 2, 3, 4]
    assert [call[0] for call in fake_encode] == [0x1000, 0x2000, 0x3000, 0x4000]  # a, b, a_scale, b_scale
    params = [prm.name for prm in next(e for e in registry.entries().values() if e.abi == "grouped_gemm_tma").params]
    assert params[13:] == ["tmap_a", "tmap_b", "tmap_sa", "tmap_sb"]
    assert tuple(params[:13]) == registry.args_type("grouped_gemm")._fields


@pytest.mark.parametrize("why", ["a_scale 4-aligned", "b_scale 8-aligned", "no whole scale block", "2**31 tiles",
                                 "no rows"])
def test_fallback_where_tma_cannot_serve(fake_encode, why):
    launch, kernel, fallback = make_launch(a_scale_rows=0 if why == "no whole scale block" else 256,
                                           tiles_total=2**31 if why == "2**31 tiles" else 10,
                                           cum_m=0 if why == "no rows" else 200)
    a_scale = 0x3004 if why == "a_scale 4-aligned" else 0x3000
    b_scale = 0x4008 if why == "b_scale 8-aligned" else 0x4000
    args = (0x1000, 0x2000, a_scale, b_scale, 0x5000, 0, 0x6000, 200, 256, 256, 512, 2, 0)
    launch.launch((99, 1, 1), 7, args)
    assert not kernel.calls and not fake_encode
    assert fallback.calls == [((15, 2, 1), 7, args)]  # the sm120 kernel's own grid


def test_plan_launcher_wraps_the_tma_kernels(monkeypatch):
    """plans.launcher: a sm120ws variant gets a TmaGemmLaunch over a persistent grid, whose fallback is
    the same cut of the sm120 kernel with the one-block-per-tile grid; other kernels launch as before."""
    made = []
    monkeypatch.setattr(plans.driver, "prepared", lambda spec, ordinal: made.append(spec.symbol) or spec.symbol)
    p = Problem(num_groups=8, n=4096, k=7168, cum_m=8 * 16, out_dtype="bfloat16")
    v = variants.select_variant(p, None, (12, 0), force_ptx=False, twin=False, portable=False)
    assert v.family is variants.Family.SM120WS and v.tiles == Tiles(16, 128, 128, True)
    plan = plans.Plan(p, None, 1 << 20, Flags())
    launch, grid = plans.launcher(p, v, plan.a_scale_rows, 0, sm_count=170)
    rows, cols = variants.tile_counts(p, v.tiles)
    assert grid == launch.grid == (min(rows * cols, 170 * 2), 1, 1)
    assert launch.fallback == v.symbol.replace("sm120ws_", "sm120_") and launch.fallback_grid == (rows, cols, 1)
    old = variants.variant_for(variants.Family.SM120, Tiles(128, 64, 128, False), "sm_120a")
    kernel, grid = plans.launcher(p, old, plan.a_scale_rows, 0, sm_count=170)
    assert kernel == old.symbol and grid == variants.grid(p, old)
    with pytest.raises(ValueError, match="persistent grid"):
        variants.grid(p, v)


def test_wide_tile_takes_two_scale_blocks_of_b():
    """128 x 256: the weight tile's 256 rows lie in two 128-row scale blocks, one box of depth 2 (past
    the last block the copy zero-fills); the tokens' box and the operand boxes keep their shapes."""
    p = Problem(num_groups=3, n=136, k=384, cum_m=300, out_dtype="bfloat16")
    shapes = tensor_maps.gemm_map_shapes(p, Tiles(128, 256, 128, False), a_scale_rows=640)
    sf_k = 384 // 16
    assert shapes["a"][2:] == ((64, 128), 64) and shapes["b"][2] == (64, 256, 1)
    assert shapes["a_scale"][2] == (256, 4, 1)
    assert shapes["b_scale"] == ((256, sf_k // 2, 3 * 256 // 128), (256, 128 * sf_k), (256, 4, 2), 0)


def test_wide_cut_falls_back_to_the_128_column_cut(monkeypatch):
    """The sm120 kernel has no tile_n 256: the 128 x 256 cut's fallback is its 128 x 128 cut, one block
    per 128-column tile (the same sums)."""
    monkeypatch.setattr(plans.driver, "prepared", lambda spec, ordinal: spec.symbol)
    p = Problem(num_groups=8, n=4096, k=7168, cum_m=8 * 512, out_dtype="bfloat16")
    v = variants.select_variant(p, Tiles(128, 256, 128, False), (12, 0), force_ptx=False, twin=False, portable=False)
    assert v.symbol == "sm120ws_nvfp4_grouped_gemm_m128n256k128"
    plan = plans.Plan(p, v.tiles, 1 << 24, Flags())
    launch, grid = plans.launcher(p, v, plan.a_scale_rows, 0, sm_count=170)
    rows, cols = variants.tile_counts(p, v.tiles)
    assert grid == launch.grid == (min(rows * cols, 170), 1, 1) and cols == 16
    assert launch.fallback == "sm120_nvfp4_grouped_gemm_m128n128k128" and launch.fallback_grid == (rows, 32, 1)
    assert launch.shapes["b_scale"][2] == (256, 4, 2)
