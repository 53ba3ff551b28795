"""Validation (SPEC §2) and variant selection: pure functions, no GPU."""
import numpy as np
import pytest

from nvfp4_driver import variants
from nvfp4_driver.problem import Problem, Tiles, validate
from nvfp4_driver.registry import Target
from nvfp4_driver.variants import (Family, UnsupportedGpuError, grid, kernel_spec, select_variant,
                                   target_for)


def problem(**kw):
    base = dict(num_groups=4, n=256, k=512, cum_m=1000, out_dtype="bfloat16")
    base.update(kw)
    return Problem(**base)


@pytest.mark.parametrize("kw,needle", [
    (dict(n=12), "N=12"), (dict(n=0), "N=0"), (dict(k=192), "K=192"), (dict(k=0), "K=0"),
    (dict(out_dtype="float32"), "out_dtype='float32'"), (dict(num_groups=-1), "G=-1"),
    (dict(n=8 * 2**20), "column tiles"),
])
def test_problem_refusals_name_the_value(kw, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        validate(problem(**kw), Tiles())


@pytest.mark.parametrize("tiles,exc,needle", [
    (Tiles(tile_m=48), ValueError, "tile_m=48"), (Tiles(tile_n=96), ValueError, "tile_n=96"),
    (Tiles(tile_m=64, swap_ab=False), ValueError, "tile_m=64"), (Tiles(16, 64, 128, True), ValueError, "tile_n=64"),
    (Tiles(8, 64, 128, True), ValueError, r"tile_m=8 is compiled only as .* in \[\(8, 128, 128, True\), \(8, 128, 256, True\)\]"),
    (Tiles(tile_k=64), ValueError, "tile_k=64"), (Tiles(tile_n=128.0), ValueError, "tile_n=128.0"),
    (Tiles(swap_ab=1), TypeError, "swap_ab"),
])
def test_tile_refusals(tiles, exc, needle):
    with pytest.raises(exc, match=needle):
        validate(problem(), tiles)


@pytest.mark.parametrize("cap,target", [
    ((8, 0), "sm_80"), ((8, 6), "sm_80"), ((8, 9), "sm_80"), ((9, 0), "sm_90"),
    ((10, 0), "compute_80"), ((10, 3), "compute_80"), ((11, 0), "compute_80"), ((12, 0), "sm_120a"),
    ((12, 1), "sm_121a"), ((12, 2), "compute_80"), ((13, 0), "compute_80"),
])
def test_target_by_capability(cap, target):
    family = Family.SM120 if target.startswith("sm_12") else Family.SM80
    assert target_for(cap) == (family, Target.parse(target))
    assert target_for(cap)[1].name == target
    assert target_for(cap, force_ptx=True) == (Family.SM80, Target.parse("compute_80"))


def test_twin_only_on_sm90():
    assert target_for((9, 0), twin=True) == (Family.SM120, Target.parse("twin_sm_90"))
    for cap in ((8, 0), (12, 0), (10, 0)):
        with pytest.raises(UnsupportedGpuError, match="sm_90"):
            target_for(cap, twin=True)


def test_old_gpus_refused():
    with pytest.raises(UnsupportedGpuError, match="7.5"):
        target_for((7, 5))


def test_every_option_selects_a_built_kernel():
    for tn in (32, 64, 128):  # tile_n 256: test_tile_n_256_runs_on_hopper_and_sm_12x_only
        for tk in (128, 256):
            for swap in (False, True):
                for cap, twin in (((8, 0), False), ((9, 0), False), ((12, 0), False), ((12, 1), False),
                                  ((10, 0), False), ((9, 0), True)):
                    v = select_variant(problem(), Tiles(128, tn, tk, swap), cap, force_ptx=False, twin=twin,
                                       portable=False)
                    assert (v.tiles.tile_n, v.tiles.tile_k, v.tiles.swap_ab) == (tn, tk, swap)
                    spec = kernel_spec(v)
                    assert spec.symbol == v.symbol and spec.file == v.file
                    assert spec.param_types[:7] == ("ptr",) * 7
                    if v.family is Family.SM90A:  # two warpgroups, up to 227 KB on sm_90
                        assert cap == (9, 0) and not twin and Tiles(128, tn, tk, swap) in variants.wgmma_cuts()
                        assert v.target.name == "sm_90a" and spec.threads == 256 and spec.smem_bytes <= 232_448
                    else:  # its block size: against each cubin's launch bounds in test_build.py
                        entry = variants.manifest()["kernels"][spec.symbol]
                        assert (entry["tile_m"], entry["tile_n"], entry["tile_k"], entry["swap_ab"]) == \
                            (128, tn, tk, swap)
                        assert 0 < spec.smem_bytes <= 98_304


def test_wgmma_cuts_only_on_9_0_and_not_when_portable():
    for cut in variants.wgmma_cuts():
        assert select_variant(problem(), cut, (9, 0), force_ptx=False, twin=False,
                              portable=False).family is Family.SM90A
        for cap, twin, ptx, portable in (((9, 0), False, False, True), ((9, 0), True, False, False),
                                         ((9, 0), False, True, False), ((8, 9), False, False, False),
                                         ((12, 0), False, False, False)):
            if cut.tile_n == 256 and not (twin or cap == (12, 0)):  # the sm120ws kernel has it too
                with pytest.raises(UnsupportedGpuError, match="tile_n=256"):
                    select_variant(problem(), cut, cap, force_ptx=ptx, twin=twin, portable=portable)
                continue
            v = select_variant(problem(), cut, cap, force_ptx=ptx, twin=twin, portable=portable)
            assert v.family is not Family.SM90A


def test_token_tiles_select_built_kernels():
    for tm in (16, 32, 64):
        for tk in (128, 256):
            for cap, twin in (((8, 0), False), ((9, 0), False), ((12, 0), False), ((9, 0), True)):
                v = select_variant(problem(), Tiles(tm, 128, tk, True), cap, force_ptx=False, twin=twin)
                spec = kernel_spec(v)
                entry = variants.manifest()["kernels"][spec.symbol]  # its block size: test_build.py, from the cubin
                assert v.tiles.tile_m == tm and (entry["tile_m"], entry["tile_n"], entry["tile_k"], entry["swap_ab"]) == \
                    (tm, 128, tk, True)
                # The portable kernel's 16-token tiles over 256 K: warps of 64 weight rows, 4 K shares
                # (half as many warps decode the same tokens); its other token tiles: 32 rows, 2 shares.
                # sm90ws (Hopper's named 16-token cuts): warps of 64 weight rows, no K shares.
                wide = v.family is Family.SM80 and tm == 16 and tk == 256
                assert (v.family is Family.SM90WS) == (cap == (9, 0) and not twin and tm == 16)
                assert (entry["warp_n"], entry["warps_k"]) == ((64, 4) if wide else (32, 2) if v.family is Family.SM80
                                                               else (64, 1) if v.family is Family.SM90WS else (32, 1))


@pytest.mark.parametrize("tk", [128, 256])
def test_8_token_tiles_run_on_hopper_only(tk):
    """tile_m 8 is the sm90ws kernel's alone: 9.0 runs it; every other GPU, and 9.0 with the portable,
    PTX or twin path, refuses it by name (no other kernel has the cut, and none is substituted)."""
    cut = Tiles(8, 128, tk, True)
    v = select_variant(problem(), cut, (9, 0), force_ptx=False, twin=False, portable=False)
    assert (v.family, v.tiles, v.target.name) == (Family.SM90WS, cut, "sm_90")
    entry = variants.manifest()["kernels"][kernel_spec(v).symbol]
    assert (entry["tile_m"], entry["warp_n"], entry["warps_k"], entry["blocks_per_sm"]) == (8, 64, 1, 4)
    for cap, flags in (((8, 0), {}), ((8, 9), {}), ((12, 0), {}), ((12, 1), {}), ((9, 0), dict(portable=True)),
                       ((9, 0), dict(force_ptx=True)), ((9, 0), dict(twin=True))):
        kw = dict(force_ptx=False, twin=False, portable=False) | flags
        with pytest.raises(variants.UnsupportedGpuError, match="tile_m=8 runs on the Hopper decode kernel"):
            select_variant(problem(), cut, cap, **kw)


@pytest.mark.parametrize("cum_m,groups,expect", [
    (128, 8, Tiles(16, 128, 128, True)),        # DeepSeek decode, E=8 x 16 rows: 15 x 32 tiles, sm90ws_splitk on 9.0
    (2048, 256, Tiles(8, 128, 256, True)),      # E=256 x 8 rows: 368 x 32 tiles, the sm90ws 8-token cut on 9.0
    (512, 128, Tiles(8, 128, 256, True)),       # Qwen3 decode, 4 rows: 152 x 32 tiles, likewise
    (2304, 256, Tiles(16, 128, 128, True)),     # 9 rows: the sm90ws 16-token cut on 9.0
    (8 * 16, 16, Tiles(16, 128, 256, True)),    # 8 rows but 23 x 32 tiles: the portable kernel
    (4 * 24, 4, Tiles(32, 128, 128, True)),     # 24 rows: the wgmma kernel's 32-token cut on 9.0
    (64 * 32, 32, Tiles(64, 128, 128, True)),   # 64 rows: the wgmma kernel's 64-token cut on 9.0
    (33 * 32, 32, Tiles(64, 128, 128, True)),   # the first average on it
    (32 * 32, 32, Tiles(32, 128, 128, True)),   # the last average on it
    (17 * 32, 32, Tiles(32, 128, 128, True)),   # the first average on it
    (65 * 32, 32, Tiles(128, 128, 128, True)),  # the first average on its 128-token cut
    (32 * 1024, 32, Tiles(128, 128, 128, True)),  # prefill: the wgmma kernel's 128 x 128 swap_ab cut
    (0, 0, Tiles(16, 128, 256, True)),
])
def test_auto_tiles(cum_m, groups, expect):
    p = problem(num_groups=groups, cum_m=cum_m, n=4096, k=7168)
    assert variants.auto_tiles(p) == expect
    if expect.tile_m == 8:  # only where the sm90ws kernel runs; everywhere else the 16-token cut
        v = select_variant(p, None, (9, 0), force_ptx=False, twin=False, portable=False)
        assert (v.family, v.tiles) == (Family.SM90WS, expect)
        assert variants.auto_tiles(p, wgmma=False) == Tiles(16, 128, 256, True)
        assert variants.auto_tiles(p, wgmma=False, native=True) == Tiles(16, 128, 128, True)
    if expect.tile_m == 16:  # 9.0 runs the sm90ws kernel's cut where there are enough tiles, else the portable one's
        rows, cols = variants.tile_counts(p, expect)
        v = select_variant(p, None, (9, 0), force_ptx=False, twin=False, portable=False)
        many, fewest = rows * cols >= variants.SM90WS_MIN_TILES, 0 < rows * cols <= variants.SM90WS_SPLITK_MAX_TILES
        assert (v.family, v.tiles.tile_k) == ((Family.SM90WS, 128) if many else (Family.SM90WS_SPLITK, 128) if fewest
                                              else (Family.SM80, 256))
        if fewest:  # named, the same cut runs on sm90ws: the split kernel is the automatic choice's only
            named = select_variant(p, expect, (9, 0), force_ptx=False, twin=False, portable=False)
            assert named.family is Family.SM90WS
        assert variants.auto_tiles(p, wgmma=False) == Tiles(16, 128, 256, True)
    if expect.tile_m == 128 and cum_m // groups > 64:  # without the wgmma kernel: the portable kernel's cut
        assert variants.auto_tiles(p, wgmma=False) == Tiles(128, 128, 256, False)
        for cap, flags in (((8, 9), {}), ((9, 0), dict(portable=True)), ((9, 0), dict(force_ptx=True)),
                           ((9, 0), dict(twin=True)), ((12, 0), {})):
            kw = dict(force_ptx=False, twin=False, portable=False) | flags
            v = select_variant(p, None, cap, **kw)
            assert (v.tiles.tile_n, v.family is Family.SM90A) == (128, False)
        v = select_variant(p, None, (9, 0), force_ptx=False, twin=False, portable=False)
        assert v.family is Family.SM90A and v.tiles == Tiles(128, 128, 128, True)
    if groups and 16 < cum_m / groups <= 64:  # 9.0: the wgmma kernel's token cuts; the portable ones elsewhere
        v = select_variant(p, None, (9, 0), force_ptx=False, twin=False, portable=False)
        assert (v.family, v.tiles) == (Family.SM90A, expect)
        v = select_variant(p, None, (9, 0), force_ptx=False, twin=False, portable=True)
        assert (v.family, v.tiles) == (Family.SM80, Tiles(expect.tile_m, 128, 256, True))
        assert variants.auto_tiles(p, wgmma=False) == Tiles(expect.tile_m, 128, 256, True)
    assert select_variant(p, None, (9, 0), force_ptx=False, twin=False).tiles.tile_m == expect.tile_m


def test_native_kernel_takes_the_warp_specialized_k128_cuts():
    many = problem(num_groups=32, cum_m=32 * 1024, n=4096, k=7168)
    few = problem(num_groups=256, cum_m=256 * 8, n=4096, k=7168)
    assert variants.auto_tiles(many, wgmma=False, native=True) == Tiles(128, 128, 128, False)
    assert variants.auto_tiles(few, wgmma=False, native=True) == Tiles(16, 128, 128, True)
    for cap, twin in (((12, 0), False), ((12, 1), False), ((9, 0), True)):
        for p in (many, few):
            v = select_variant(p, None, cap, force_ptx=False, twin=twin, portable=False)
            assert (v.family, v.tiles.tile_k, v.entry.abi) == (Family.SM120WS, 128, "grouped_gemm_tma")
        # an explicit cut the warp-specialized kernel lacks stays on the sm120 kernel
        v = select_variant(many, Tiles(128, 64, 256, False), cap, force_ptx=False, twin=twin, portable=False)
        assert (v.family, v.target) == (Family.SM120, variants.target_for(cap, twin=twin)[1])
    v = select_variant(many, None, (8, 9), force_ptx=False, twin=False, portable=False)  # the portable kernel
    assert (v.family, v.tiles.tile_k) == (Family.SM80, 256)


def test_auto_tiles_without_wgmma_keeps_token_tiles_to_64_rows():
    p = problem(num_groups=32, cum_m=64 * 32, n=4096, k=7168)
    assert variants.auto_tiles(p, wgmma=False) == Tiles(64, 128, 256, True)


def test_tile_n_256_runs_on_hopper_and_sm_12x_only():
    with pytest.raises(ValueError, match=r"tile_n=256 is compiled only as .* in \[\(128, 256, 128, False\)\]"):
        validate(problem(), Tiles(128, 256, 256, False))
    with pytest.raises(ValueError, match="tile_n=256"):
        validate(problem(), Tiles(128, 256, 128, True))
    wide = Tiles(128, 256, 128, False)
    for cap, flags in (((8, 0), {}), ((10, 0), {}), ((9, 0), dict(portable=True)), ((12, 0), dict(force_ptx=True))):
        kw = dict(force_ptx=False, twin=False, portable=False) | flags
        with pytest.raises(UnsupportedGpuError, match="tile_n=256 runs on the Hopper wgmma kernel .* and the native"):
            select_variant(problem(), wide, cap, **kw)
    assert select_variant(problem(), wide, (9, 0), force_ptx=False, twin=False, portable=False).family is Family.SM90A
    # sm_12x and the twin: the warp-specialized kernel's 128 x 256 cut, asked for by name only
    for cap, twin, target in (((12, 0), False, "sm_120a"), ((12, 1), False, "sm_121a"), ((9, 0), True, "twin_sm_90")):
        v = select_variant(problem(), wide, cap, force_ptx=False, twin=twin, portable=False)
        assert (v.family, v.tiles, v.target.name) == (Family.SM120WS, wide, target)
        spec = kernel_spec(v)
        assert spec.symbol == "sm120ws_nvfp4_grouped_gemm_m128n256k128" and spec.threads == 256
        assert spec.smem_bytes == 3 * ((128 + 256) * 64 + 3 * 2 * 512) + 1024 + 256 + 8 * 512
    for rows in (1, 16, 64, 65, 1024):  # never the automatic cut on sm_12x
        p = problem(num_groups=8, cum_m=8 * rows, n=4096, k=7168)
        assert select_variant(p, None, (12, 0), force_ptx=False, twin=False, portable=False).tiles.tile_n == 128


def test_env_forces_ptx(monkeypatch):
    monkeypatch.setenv("NVFP4_DRIVER_FORCE_PTX", "1")
    assert select_variant(problem(), Tiles(), (9, 0)).target.name == "compute_80"
    assert select_variant(problem(), Tiles(), (12, 0)).target.name == "compute_80"
    monkeypatch.setenv("NVFP4_DRIVER_FORCE_PTX", "0")
    assert select_variant(problem(), Tiles(), (9, 0)).target.name == "sm_90a"  # FlashInfer's cut: the wgmma kernel's
    assert select_variant(problem(), Tiles(tile_n=64), (9, 0)).target.name == "sm_90"
    monkeypatch.setenv("NVFP4_DRIVER_TWIN", "1")
    assert select_variant(problem(), Tiles(), (9, 0)).target.name == "twin_sm_90"


def test_log_prints_the_decision(monkeypatch, capsys):
    monkeypatch.setenv("NVFP4_DRIVER_LOG", "1")
    variants._log.cache_clear()
    select_variant(problem(n=136), Tiles(tile_n=64), (9, 0), force_ptx=False)
    err = capsys.readouterr().err
    assert "N=136" in err and "sm80_nvfp4_grouped_gemm_m128n64k128_swapab" in err and "sm_90" in err


def test_grid_bounds_every_m_indptr():
    rng = np.random.default_rng()
    for _ in range(500):
        g = int(rng.integers(1, 40))
        rows = rng.integers(0, 300, size=g) * (rng.random(g) < 0.8)
        start = int(rng.integers(0, 50))
        m_indptr = np.concatenate([[start], start + np.cumsum(rows)])
        cum_m = int(m_indptr[-1] + rng.integers(0, 20))
        p = problem(num_groups=g, cum_m=cum_m)
        needed = int(sum(-(-r // 128) for r in rows))
        v = select_variant(p, Tiles(tile_n=32), (9, 0), force_ptx=False)
        gx, gy, gz = grid(p, v)
        assert needed <= gx and gy == 256 // 32 and gz == 1


def test_requested_tiles():
    from nvfp4_driver.problem import requested_tiles
    assert requested_tiles(None, None, None, None) is None
    assert requested_tiles(None, 64, None, None) == Tiles(128, 64, 128, True)
    assert requested_tiles(16, None, 256, None) == Tiles(16, 128, 256, True)
    assert requested_tiles(128, 128, 128, False) == Tiles(128, 128, 128, False)


def test_log_line_follows_the_callers_flags(monkeypatch, capsys):
    """select_variant prints its decision when the caller's flags say so, whatever NVFP4_DRIVER_LOG says
    (selftest and run_with_flags pass their own Flags); Plan.kernel passes the plan's."""
    from nvfp4_driver import config, driver, plans

    monkeypatch.delenv("NVFP4_DRIVER_LOG", raising=False)
    select_variant(Problem(3, 40, 128, 11, "bfloat16"), None, (9, 0), False, False, False, log=True)
    assert "G=3 N=40 K=128 cum_m=11" in capsys.readouterr().err
    monkeypatch.setenv("NVFP4_DRIVER_LOG", "1")
    select_variant(Problem(3, 48, 128, 11, "bfloat16"), None, (9, 0), False, False, False, log=False)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("NVFP4_DRIVER_LOG")
    info = driver.DeviceInfo(0, "fake", (9, 0), 132, 232448, 80 << 30)
    monkeypatch.setattr(driver, "device_info", lambda ordinal: info)
    monkeypatch.setattr(driver, "prepared", lambda spec, ordinal: None)
    plans.Plan(Problem(3, 56, 128, 11, "bfloat16"), None, 1 << 20, config.Flags(log=True)).kernel(0)
    assert "G=3 N=56 K=128 cum_m=11" in capsys.readouterr().err
