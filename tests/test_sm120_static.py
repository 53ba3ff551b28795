"""Static checks of the native Blackwell cubins (no Blackwell GPU needed): the block-scaled FP4
MMA is in every GEMM kernel's SASS, nothing touches local memory, and the resources fit sm_120."""
import json
from pathlib import Path

import pytest

import cuobjdump

CUBINS = Path(__file__).resolve().parents[1] / "nvfp4_driver" / "cubins"
MANIFEST = json.loads((CUBINS / "manifest.json").read_text())
SM120 = sorted(name for name, e in MANIFEST["kernels"].items() if e.get("family") == "sm120")
OMMA = "OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X"
SM120_SMEM_PER_BLOCK = 101_376  # cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_120 / sm_121


@pytest.fixture(scope="module")
def tool():
    found = cuobjdump.find()
    if found is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
    return found


def test_every_tile_option_has_native_builds():
    assert len(SM120) == 18  # 12 FlashInfer cuts (tile_m 128) + 6 token tiles
    for name in SM120:
        assert set(MANIFEST["kernels"][name]["targets"]) == {"sm_120a", "sm_121a", "twin_sm_90"}


@pytest.mark.parametrize("target", ["sm_120a", "sm_121a"])
@pytest.mark.parametrize("name", SM120)
def test_native_sass(tool, name, target):
    entry = MANIFEST["kernels"][name]
    cubin = CUBINS / entry["targets"][target]["file"]
    sass = cuobjdump.sass(tool, cubin)
    assert f"code for {target}" in sass, f"{cubin.name} holds code for another architecture"
    instructions = [line.split(";")[0] for line in sass.splitlines() if "/*" in line and ";" in line]
    omma = [i for i in instructions if OMMA in i]
    # Each k tile issues (tile_k / 64) k-steps x the m16n8 fragment pairs of a min(tile_m, 64) x 32 warp tile.
    per_step = min(entry["tile_m"], 64) * 32 // (16 * 8)
    assert len(omma) >= entry["tile_k"] // 64 * per_step, f"{len(omma)} {OMMA} in {cubin.name}"
    assert not any(op in i for i in instructions for op in ("LDL", "STL")), "local memory in the SASS"
    assert not any("HMMA" in i for i in instructions), "a decode-and-HMMA path leaked into the native kernel"
    usage = cuobjdump.resource_usage(tool, cubin)
    assert usage["local"] == 0 and usage["stack"] == 0
    assert usage["shared"] + entry["smem_bytes"] <= SM120_SMEM_PER_BLOCK
    assert usage["registers"] * entry["threads"] <= 65_536


@pytest.mark.parametrize("name", SM120)
def test_twin_has_no_fp4_mma(tool, name):
    """The twin is sm_90 code: the software model replaces the one instruction sm_90 lacks."""
    sass = cuobjdump.sass(tool, CUBINS / MANIFEST["kernels"][name]["targets"]["twin_sm_90"]["file"])
    assert "OMMA" not in sass and "SHFL" in sass
