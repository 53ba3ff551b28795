"""Static checks of the native Blackwell cubins (no Blackwell GPU needed): the block-scaled FP4
MMA is in every GEMM kernel's SASS, its steady-state loop has the shape the census in
docs/sm120-census.md records (one k tile of OMMAs fed by ldmatrix, the next stage's cp.async copies),
nothing touches local memory, the resources fit sm_120, and that census is the committed cubins'."""
import json
from pathlib import Path

import pytest

import cuobjdump
import sass_census

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
        assert set(MANIFEST["kernels"][name]["targets"]) == {"sm_120a", "sm_121a", "twin_sm_90", "standin_sm_90"}


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


@pytest.mark.parametrize("target", ["sm_120a", "sm_121a"])
@pytest.mark.parametrize("name", SM120)
def test_native_steady_state_loop(tool, name, target):
    """The census of one kernel: its steady-state loop is one k tile: the k tile's OMMAs, fragments
    through ldmatrix (4 fp4 words a lane per instruction), the next stage's cp.async copies, and one
    block-wide barrier (the stage hand-over), with few other instructions per OMMA."""
    entry = MANIFEST["kernels"][name]
    c = sass_census.census(tool, name, target, entry)
    per_step = min(entry["tile_m"], 64) * 32 // (16 * 8)
    assert c.loop_omma == entry["tile_k"] // 64 * per_step, c
    assert c.ldsm > 0 and c.loop_copies > 0 and c.loop_bar_sync == 1, c
    assert c.local == 0
    assert c.per_omma < 16, f"{c.per_omma:.2f} instructions per OMMA in the steady-state loop"


def test_census_doc_is_current(tool):
    doc = Path(__file__).resolve().parents[1] / "docs" / "sm120-census.md"
    table = sass_census.table(tool)
    assert doc.exists() and table in doc.read_text(), (
        "docs/sm120-census.md is stale: python tests/sass_census.py > docs/sm120-census.md")


@pytest.mark.parametrize("name", SM120)
def test_standin_has_no_mma_and_the_same_loads(tool, name):
    """The stand-in is the native kernel for sm_90 with the MMA swapped for integer ops: no MMA of any
    kind, the same cp.async copies and ldmatrix loads."""
    sass = cuobjdump.sass(tool, CUBINS / MANIFEST["kernels"][name]["targets"]["standin_sm_90"]["file"])
    assert "code for sm_90" in sass
    assert not any(op in sass for op in ("OMMA", "HMMA", "HGMMA")) and "LDGSTS" in sass and "LDSM" in sass


@pytest.mark.parametrize("name", SM120)
def test_twin_has_no_fp4_mma(tool, name):
    """The twin is sm_90 code: the software model replaces the one instruction sm_90 lacks."""
    sass = cuobjdump.sass(tool, CUBINS / MANIFEST["kernels"][name]["targets"]["twin_sm_90"]["file"])
    assert "OMMA" not in sass and "SHFL" in sass
