"""The sm_90 proxy builds (twin, standin) stay in the source tree and out of the wheel, and where they
are missing (an installed wheel) asking for them says so instead of failing to load a file."""
import fnmatch
from pathlib import Path

import pytest

from nvfp4_driver import registry, selftest, variants
from nvfp4_driver.problem import Problem, Tiles

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_leaves_out_exactly_the_proxy_builds():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = setuptools["package-data"]["nvfp4_driver"]
    exclude = setuptools["exclude-package-data"]["nvfp4_driver"]
    shipped, left_out = [], []
    for entry in variants.manifest()["kernels"].values():
        for target, build in entry["targets"].items():
            path = f"cubins/{build['file']}"
            assert any(fnmatch.fnmatch(path, pattern) for pattern in include), path
            (left_out if any(fnmatch.fnmatch(path, pattern) for pattern in exclude) else shipped).append(
                (target, path))
    assert {target for target, _ in left_out} == set(variants.CHECKOUT_ONLY_TARGETS)
    assert not {target for target, _ in shipped} & set(variants.CHECKOUT_ONLY_TARGETS)
    assert all((ROOT / "nvfp4_driver" / path).exists() for _, path in left_out)  # the checkout has them


@pytest.fixture
def wheel_layout(tmp_path, monkeypatch):
    """cubins/ as an installed wheel has it: the manifest lists the proxy builds, their files are absent."""
    monkeypatch.setattr(registry, "CUBIN_DIR", tmp_path)
    registry._spec.cache_clear()
    yield tmp_path
    registry._spec.cache_clear()


def test_twin_without_its_cubins_says_where_they_are(wheel_layout):
    problem = Problem(num_groups=2, n=64, k=256, cum_m=10, out_dtype="bfloat16")
    twin = variants.select_variant(problem, Tiles(), (9, 0), force_ptx=False, twin=True, portable=False)
    with pytest.raises(variants.UnsupportedGpuError,
                       match=r"twin_sm_90 cubins exist only in a source checkout .*unset NVFP4_DRIVER_TWIN"):
        variants.kernel_spec(twin)
    builds = sum("twin_sm_90" in entry["targets"] for entry in variants.manifest()["kernels"].values())
    assert f"{builds} of {builds} missing" in variants.checkout_only_builds_missing("twin_sm_90")
    assert "source checkout" in variants.checkout_only_builds_missing("standin_sm_90")
    # The shipped builds are looked up as before (their files are opened at load time, on a GPU).
    portable = variants.select_variant(problem, Tiles(), (9, 0), force_ptx=False, twin=False, portable=True)
    assert variants.kernel_spec(portable).symbol == portable.symbol


@pytest.mark.parametrize("flag,env", [(True, None), (False, "1")])
def test_selftest_twin_without_its_cubins_stops_first(wheel_layout, monkeypatch, capsys, flag, env):
    if env is None:
        monkeypatch.delenv("NVFP4_DRIVER_TWIN", raising=False)
    else:
        monkeypatch.setenv("NVFP4_DRIVER_TWIN", env)
    assert selftest.run_selftest(seed=0, twin=flag) == 2
    err = capsys.readouterr().err
    assert "selftest --twin: the twin_sm_90 cubins exist only in a source checkout" in err


def test_the_checkout_has_every_proxy_build():
    for target in variants.CHECKOUT_ONLY_TARGETS:
        assert variants.checkout_only_builds_missing(target) is None
