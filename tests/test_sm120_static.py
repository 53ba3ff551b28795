"""Static checks of the native Blackwell cubins (no Blackwell GPU needed): the block-scaled FP4
MMA is in every GEMM kernel's SASS, its steady-state loop has the shape the census in
docs/sm120-census.md records (one k tile of OMMAs fed by ldmatrix; the sm120 kernels' next stage
by cp.async behind one block-wide barrier, the warp-specialized sm120ws kernels' stages by a producer
warp's bulk-tensor copies behind mbarriers, with no block-wide barrier in the consumers' loop),
nothing touches local memory, the resources fit sm_120 (blocks per SM included), and that census is
the committed cubins'."""
import json
from pathlib import Path

import pytest

import cuobjdump
import sass_census

CUBINS = Path(__file__).resolve().parents[1] / "nvfp4_driver" / "cubins"
MANIFEST = json.loads((CUBINS / "manifest.json").read_text())
SM120 = sorted(name for name, e in MANIFEST["kernels"].items() if e.get("family") == "sm120")
SM120WS = sorted(name for name, e in MANIFEST["kernels"].items() if e.get("family") == "sm120ws")
NATIVE = SM120WS + SM120
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
    # 128 x 128 x {128, 256} x swap_ab, token tiles of tile_k 128, 16 x 128 x 256, and 128 x 256 x 128
    assert len(SM120WS) == 9
    for name in NATIVE:
        assert set(MANIFEST["kernels"][name]["targets"]) == {"sm_120a", "sm_121a", "twin_sm_90", "standin_sm_90"}
    cuts = {(e["tile_m"], e["tile_n"], e["tile_k"], e["swap_ab"]) for e in map(MANIFEST["kernels"].get, SM120)}
    for name in SM120WS:  # every warp-specialized cut has an sm120 kernel, the launch's fallback: the
        e = MANIFEST["kernels"][name]  # same cut, or for tile_n 256 (which it lacks) its 128 columns
        assert (e["tile_m"], min(e["tile_n"], 128), e["tile_k"], e["swap_ab"]) in cuts


@pytest.mark.parametrize("target", ["sm_120a", "sm_121a"])
@pytest.mark.parametrize("name", NATIVE)
def test_native_sass(tool, name, target):
    entry = MANIFEST["kernels"][name]
    cubin = CUBINS / entry["targets"][target]["file"]
    sass = cuobjdump.sass(tool, cubin)
    assert f"code for {target}" in sass, f"{cubin.name} holds code for another architecture"
    instructions = [line.split(";")[0] for line in sass.splitlines() if "/*" in line and ";" in line]
    omma = [i for i in instructions if OMMA in i]
    # Each k tile issues (tile_k / 64) k-steps x the m16n8 fragment pairs of a min(tile_m, 64) x warp_n warp tile.
    per_step = min(entry["tile_m"], 64) * entry["warp_n"] // (16 * 8)
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


@pytest.mark.parametrize("target", ["sm_120a", "sm_121a"])
@pytest.mark.parametrize("name", SM120WS)
def test_warp_specialized_instruction_stream(tool, name, target):
    """The warp-specialized kernels: the consumers' k-tile loop holds the k tile's OMMAs, ldmatrix
    fragment loads (one LDSM.x4 per 16-row P fragment and per pair of 8-column Q fragments, per 64-K
    chunk), exactly one mbarrier wait (the full stage) and no block-wide barrier; the producer's k
    loop issues the four bulk-tensor copies of a stage (a, b and both scale blocks) behind its own
    mbarrier wait; the epilogue leaves through shared memory with 16-byte stores; the block holds
    the blocks per SM its persistent grid counts on. The 128 x 256 cut has no producer warp: its
    consumers' loop also holds warp 0's refill (a second wait, for the empty stage, and the four
    copies), and the ring's first fill issues its own four."""
    entry = MANIFEST["kernels"][name]
    c = sass_census.census(tool, name, target, entry)
    sass = cuobjdump.sass(tool, CUBINS / entry["targets"][target]["file"])
    assert "STG.E.128" in sass and "LDS.128" in sass
    warp_m, warp_n = min(entry["tile_m"], 64), entry["warp_n"]
    producer_warp = entry["tile_n"] <= 128
    per_step = warp_m * warp_n // (16 * 8)
    p_frags, q_pairs = (warp_n // 16, warp_m // 16) if entry["swap_ab"] else (warp_m // 16, warp_n // 16)
    assert c.loop_omma == entry["tile_k"] // 64 * per_step, c
    assert c.loop_ldsm == entry["tile_k"] // 64 * (p_frags + q_pairs), c
    assert c.loop_waits == (1 if producer_warp else 2) and c.loop_bar_sync == 0, c
    assert c.loop_copies == 4 and c.tma == (4 if producer_warp else 8), c
    assert c.bar_sync == 1, c  # the one before the warps take their roles
    assert c.local == 0
    assert c.per_omma < 10, f"{c.per_omma:.2f} instructions per OMMA in the steady-state loop"
    assert c.blocks_per_sm >= entry["blocks_per_sm"], c
    consumers = (entry["tile_m"] // warp_m) * (entry["tile_n"] // warp_n)
    assert entry["threads"] == 32 * consumers + (32 if producer_warp else 0)


def test_census_doc_is_current(tool):
    doc = Path(__file__).resolve().parents[1] / "docs" / "sm120-census.md"
    table = sass_census.table(tool)
    assert doc.exists() and table in doc.read_text(), (
        "docs/sm120-census.md is stale: python tests/sass_census.py > docs/sm120-census.md")


@pytest.mark.parametrize("name", NATIVE)
def test_standin_has_no_mma_and_the_same_loads(tool, name):
    """The stand-in is the native kernel for sm_90 with the MMA swapped for integer ops: no MMA of any
    kind, the same copies (cp.async, or the bulk-tensor copies and mbarrier waits) and ldmatrix loads,
    and no local memory."""
    sass = cuobjdump.sass(tool, CUBINS / MANIFEST["kernels"][name]["targets"]["standin_sm_90"]["file"])
    assert "code for sm_90" in sass
    copies = ("UTMALDG", "SYNCS.PHASECHK") if name in SM120WS else ("LDGSTS",)
    assert not any(op in sass for op in ("OMMA", "HMMA", "HGMMA")) and all(op in sass for op in copies + ("LDSM",))
    assert not any(op in sass for op in ("LDL", "STL"))


@pytest.mark.parametrize("name", NATIVE)
def test_twin_has_no_fp4_mma(tool, name):
    """The twin is sm_90 code: the software model replaces the one instruction sm_90 lacks."""
    sass = cuobjdump.sass(tool, CUBINS / MANIFEST["kernels"][name]["targets"]["twin_sm_90"]["file"])
    assert "OMMA" not in sass and "SHFL" in sass
