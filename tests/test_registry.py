"""The kernel registry (registry.py): the manifest as typed entries, the only table of kernels; the
launch-argument types made from its parameter lists; the loader's check of a cubin's full parameter
list. Pure Python and a fake driver: no GPU."""
import itertools
import json

import pytest

from nvfp4_driver import driver, ops, plans, quantize, registry, variants
from nvfp4_driver.driver import CUBIN_DIR, KernelSpec
from nvfp4_driver.problem import Problem, validate
from nvfp4_driver.registry import Target, Tiles

RAW = json.loads((CUBIN_DIR / "manifest.json").read_text())["kernels"]  # read here independently


def test_every_target_parses_back_to_its_spelling():
    names = {t for e in RAW.values() for t in e["targets"]}
    assert {"sm_80", "sm_90", "sm_90a", "sm_120a", "sm_121a", "compute_80", "twin_sm_90"} <= names
    for name in names:
        assert Target.parse(name).name == name
    assert Target.parse("sm_121a") == Target("sm", 12, 1, arch_specific=True)
    assert Target.parse("twin_sm_90") == Target("sm", 9, 0, proxy="twin") and Target.parse("compute_80").is_ptx
    for bad in ("sm90", "sm_", "gfx_90", "sm_90b"):
        with pytest.raises(ValueError, match="not a build target"):
            Target.parse(bad)


def test_entries_hold_what_the_manifest_says():
    entries = registry.entries()
    assert set(entries) == set(RAW)
    for name, raw in RAW.items():
        e = entries[name]
        assert (e.family, e.threads, e.smem_bytes, e.abi) == (raw["family"], raw["threads"], raw["smem_bytes"],
                                                              raw["abi"])
        assert [(p.name, p.type) for p in e.params] == [(p["name"], p["type"]) for p in raw["params"]]
        assert {t.name: f for t, f in e.files.items()} == {t: b["file"] for t, b in raw["targets"].items()}
        if "tile_m" in raw:
            assert e.tiles == Tiles(raw["tile_m"], raw["tile_n"], raw["tile_k"], raw["swap_ab"])


def test_valid_tiles_are_exactly_the_compiled_cuts():
    built = {(e["tile_m"], e["tile_n"], e["tile_k"], e["swap_ab"]) for e in RAW.values() if "tile_m" in e}
    assert {(t.tile_m, t.tile_n, t.tile_k, t.swap_ab) for t in registry.gemm_cuts()} == built
    p = Problem(num_groups=2, n=256, k=512, cum_m=100, out_dtype="bfloat16")
    for cut in itertools.product((8, 16, 32, 64, 96, 128, 256), (16, 32, 64, 128, 256, 512), (64, 128, 256, 512),
                                 (False, True)):
        if cut in built:
            validate(p, Tiles(*cut))
        else:
            with pytest.raises(ValueError, match=f"tile_m={cut[0]}|tile_n={cut[1]}|tile_k={cut[2]}"):
                validate(p, Tiles(*cut))


def test_the_selector_answers_with_a_registry_entry():
    p = Problem(num_groups=4, n=256, k=512, cum_m=1000, out_dtype="bfloat16")
    for cap, flags in (((9, 0), {}), ((9, 0), dict(portable=True)), ((12, 0), {}), ((8, 6), {}), ((10, 0), {}),
                       ((9, 0), dict(twin=True))):
        kw = dict(force_ptx=False, twin=False, portable=False) | flags
        for tiles in sorted(registry.gemm_cuts(), key=repr):
            try:
                v = variants.select_variant(p, tiles, cap, **kw)
            except registry.UnsupportedGpuError:
                assert cap != (9, 0) or flags
                if tiles.tile_m == 8:  # the sm90ws kernel's alone
                    continue
                assert tiles.tile_n == 256
                assert cap != (12, 0) and not flags.get("twin")  # the sm120ws kernel's 128 x 256 serves those
                continue
            assert v.entry is registry.entries()[v.symbol] and v.tiles == tiles
            assert RAW[v.symbol]["targets"][v.target.name]["file"] == v.file == variants.kernel_spec(v).file


def test_argument_types_follow_the_parameter_lists():
    for abi in {e["abi"] for e in RAW.values()}:
        fields = registry.args_type(abi)._fields
        for name, e in RAW.items():
            if e["abi"] == abi:
                assert fields == tuple(p["name"] for p in e["params"]), name
    assert registry.args_type("grouped_gemm").__name__ == "GroupedGemmArgs"
    assert registry.args_type("quantize_rows").__name__ == "QuantizeRowsArgs"
    with pytest.raises(TypeError):
        registry.args_type("probe")(out=1, i64=2, i32=3)  # a parameter short


def test_the_gemm_plan_names_its_arguments():
    p = Problem(num_groups=3, n=64, k=256, cum_m=300, out_dtype="float16")
    plan = plans.Plan(p, None, a_scale_nbytes=640 * 16 + 5, flags=variants.config.Flags())
    args = plan.args(11, 12, 13, 14, 15, 16, 17)
    assert type(args).__name__ == "GroupedGemmArgs"
    assert args._asdict() == {"a": 11, "b": 12, "a_scale": 13, "b_scale": 14, "m_indptr": 15, "alpha": 16,
                              "out": 17, "cum_m": 300, "a_scale_rows": 640, "n": 64, "k": 256, "num_groups": 3,
                              "out_dtype": 1}
    assert tuple(args) == (11, 12, 13, 14, 15, 16, 17) + plan.tail  # what the torch fast path packs


class _ParamDriver:
    """cuFuncGetParamInfo of a kernel whose image declares ``layout``; out of range: INVALID_VALUE."""

    class CUresult:
        CUDA_SUCCESS = 0
        CUDA_ERROR_INVALID_VALUE = 1

    def __init__(self, layout):
        self.layout, self.asked = layout, []

    def cuFuncGetParamInfo(self, fn, i):
        self.asked.append(i)
        if i >= len(self.layout):
            return (self.CUresult.CUDA_ERROR_INVALID_VALUE, 0, 0)
        return (self.CUresult.CUDA_SUCCESS, *self.layout[i])


def test_the_loader_reads_every_parameter_and_refuses_a_mismatch(monkeypatch):
    spec = KernelSpec("k.cubin", "my_kernel", 32, 0, ("ptr", "i64", "i32", "f32"))
    want = [(0, 8), (8, 8), (16, 4), (20, 4)]
    assert driver.expected_layout(spec.param_types) == want
    monkeypatch.setitem(driver._state, "driver", _ParamDriver(want))
    drv = _ParamDriver(want)
    assert driver.param_layout(drv, "FN", "my_kernel") == want and drv.asked == [0, 1, 2, 3, 4]
    driver.check_abi(spec, want)
    extra = want + [(24, 4)]  # one parameter more than the manifest lists: read, and refused
    assert driver.param_layout(_ParamDriver(extra), "FN", "my_kernel") == extra
    with pytest.raises(RuntimeError, match=r"my_kernel in k.cubin declares 5 parameters .* manifest lists 4"):
        driver.check_abi(spec, extra)
    with pytest.raises(RuntimeError, match="declares 3 parameters"):
        driver.check_abi(spec, want[:3])
    with pytest.raises(RuntimeError, match="declares 4 parameters"):
        driver.check_abi(spec, [(0, 8), (8, 4), (16, 4), (20, 4)])  # an i64 that became an i32


def test_the_quantizer_launches_with_named_arguments(monkeypatch):
    launched = []
    info = driver.DeviceInfo(0, "fake", (9, 0), 132, 232448, 80 << 30)
    monkeypatch.setattr(driver, "device_info", lambda ordinal: info)
    monkeypatch.setattr(driver, "launch", lambda spec, ordinal, grid, stream, args: launched.append((spec, args)))
    monkeypatch.setattr(quantize, "_resident_blocks", lambda spec, ordinal: 2)
    quantize._launch_rows("amax_rows", "bf16", 0, 10, 256, 0, x=1, amax_bits=2, m_indptr=3, rows=10, k=256,
                          num_groups=1, group_rows=0, per_group=1)
    quantize._launch("global_scale_from_amax", None, 0, (1, 1, 1), 0, scale=2, n=1)
    (spec_a, args_a), (spec_g, args_g) = launched
    assert spec_a.symbol == "nvfp4_amax_rows_bf16" and type(args_a).__name__ == "AmaxRowsArgs"
    assert args_a._asdict() == dict(x=1, amax_bits=2, m_indptr=3, rows=10, k=256, num_groups=1, group_rows=0,
                                    per_group=1)
    assert spec_g.symbol == "nvfp4_global_scale_from_amax" and args_g._asdict() == dict(scale=2, n=1)
    with pytest.raises(TypeError):  # a misspelt parameter cannot reach the kernel
        quantize._launch("global_scale_from_amax", None, 0, (1, 1, 1), 0, scale=2, count=1)


def test_no_kernel_name_is_rebuilt_in_python():
    """The registry is the only table: no module assembles a symbol from pieces."""
    import pathlib
    import re
    src = pathlib.Path(ops.__file__).parent
    pattern = re.compile(r'f"nvfp4_\{|_nvfp4_grouped_gemm_m\{')
    offenders = [p.name for p in src.glob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
