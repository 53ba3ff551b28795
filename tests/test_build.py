"""The committed cubins: fresh (build_cubins.py --check), complete, and with the ABI the manifest says."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cuobjdump
from nvfp4_driver import driver, registry

PROBE = registry.probe().name  # the loader's one-warp echo kernel: no launch bounds

ROOT = Path(__file__).resolve().parents[1]
CUBINS = ROOT / "nvfp4_driver" / "cubins"
MANIFEST = json.loads((CUBINS / "manifest.json").read_text())


def _build_cubins():
    """The build script as a module (it lives at the repository root, outside the package)."""
    sys.path.insert(0, str(ROOT))
    try:
        import build_cubins
    finally:
        sys.path.pop(0)
    return build_cubins


def test_check_passes_on_committed_cubins():
    proc = subprocess.run([sys.executable, str(ROOT / "build_cubins.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check: OK" in proc.stdout


def test_check_catches_a_stale_source(tmp_path, monkeypatch):
    build_cubins = _build_cubins()
    # Same table, one header changed: every build must be reported stale.
    fake_src = tmp_path / "kernels_cu"
    fake_src.mkdir()
    for f in (ROOT / "kernels_cu").iterdir():
        (fake_src / f.name).write_bytes(f.read_bytes())
    (fake_src / "nvfp4_common.cuh").write_text((fake_src / "nvfp4_common.cuh").read_text() + "\n// edit\n")
    monkeypatch.setattr(build_cubins, "SRC_DIR", fake_src)
    problems = build_cubins.check()
    stale = [p for p in problems if "stale" in p]
    including = [v for v in build_cubins.BUILDS if "nvfp4_common.cuh" in
                 {f.name for f in build_cubins.included_files(fake_src / build_cubins.FAMILIES[v.family].source)}]
    # Every GEMM and every quantizer kernel includes it; the probe does not.
    assert len(including) == len(build_cubins.GEMM_KERNELS) + len(build_cubins.QUANT_KERNELS)
    assert len(stale) == sum(len(build_cubins.FAMILIES[v.family].targets) for v in including)


def test_every_variant_and_target_is_in_the_manifest():
    build_cubins = _build_cubins()
    for v in build_cubins.BUILDS:
        entry = MANIFEST["kernels"][v.name]
        assert set(entry["targets"]) == set(build_cubins.FAMILIES[v.family].targets)
        for target, t in entry["targets"].items():
            assert (CUBINS / t["file"]).exists()
            if not target.startswith(("compute_", "twin_")):  # the twin is checked, never timed
                assert t["stack_frame"] == 0 and t["spill_stores"] == 0 and t["spill_loads"] == 0


def test_sm90a_blocks_per_sm_fit_an_sm():
    """The wgmma kernel's swap_ab cuts are built for two or three blocks an SM (their speed rests on
    the blocks taking turns at the tensor cores): that many blocks' registers and shared memory must
    fit one sm_90 SM (64K registers; 228 KB, 1 KB of it reserved a block), as the manifest records
    them."""
    build_cubins = _build_cubins()
    cuts = [v for v in build_cubins.GEMM_KERNELS if v.family == "sm90a"]
    assert {v.tile_m for v in cuts if v.swap_ab} == {32, 64, 128}
    for v in cuts:
        blocks = build_cubins._sm90a_blocks_per_sm(v)
        entry = MANIFEST["kernels"][v.name]
        regs = entry["targets"]["sm_90a"]["registers"]
        assert blocks == (1 if not v.swap_ab else 3 if v.tile_m == 32 else 2), v.name
        assert regs * entry["threads"] * blocks <= 65_536, (v.name, regs, blocks)
        assert (entry["smem_bytes"] + 1024) * blocks <= build_cubins.SM90_SMEM_PER_SM, (v.name, blocks)



def test_sm90ws_blocks_per_sm_fit_an_sm():
    """Hopper's decode kernel runs four blocks an SM on a persistent grid sized by blocks_per_sm (a
    block that does not fit waits for a whole pass), its K-split form two: those blocks' registers (the
    limit decode_word's forms are chosen by, nvfp4_decode.cuh) and shared memory must fit one sm_90 SM."""
    build_cubins = _build_cubins()
    cuts = [v for v in build_cubins.GEMM_KERNELS if v.family in build_cubins.HOPPER_WS_FAMILIES]
    assert sorted((v.family, v.tile_m, v.tile_k) for v in cuts) == [
        ("sm90ws", 8, 128), ("sm90ws", 8, 256), ("sm90ws", 16, 128), ("sm90ws", 16, 256), ("sm90ws_splitk", 16, 128)]
    for v in cuts:
        entry = MANIFEST["kernels"][v.name]
        regs, blocks = entry["targets"]["sm_90"]["registers"], entry["blocks_per_sm"]
        assert blocks == build_cubins._ws_blocks_per_sm(v) == (4 if v.family == "sm90ws" else 2), v.name
        assert regs * entry["threads"] * blocks <= 65_536, (v.name, regs)
        assert (entry["smem_bytes"] + 1024) * blocks <= build_cubins.SM90_SMEM_PER_SM, (v.name, entry["smem_bytes"])

CUBIN_FILES = sorted((name, t["file"]) for name, e in MANIFEST["kernels"].items()
                     for tgt, t in e["targets"].items() if t["file"].endswith(".cubin"))


@pytest.mark.parametrize("name,file", CUBIN_FILES, ids=[f for _, f in CUBIN_FILES])
def test_cubin_abi_and_resources_match_manifest(name, file):
    tool = cuobjdump.find()
    if tool is None:
        pytest.skip("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    entry = MANIFEST["kernels"][name]
    types = [p["type"] for p in entry["params"]]
    assert driver.layout_mismatch(tuple(types), cuobjdump.param_layout(tool, CUBINS / file)) is None
    usage = cuobjdump.resource_usage(tool, CUBINS / file)
    target_name, target = next((n, t) for n, t in entry["targets"].items() if t["file"] == file)
    if not target_name.startswith("twin_"):
        assert usage["local"] == 0 and usage["stack"] == 0, usage
    assert usage["registers"] == target["registers"]
    # The launch asks for smem_bytes of dynamic shared memory on top of the static part; 99 KiB is
    # what sm_86/sm_89/sm_120 give one block, 227 KiB what sm_90 gives (the families built for sm_90a
    # or sm_90 alone: that machine code runs on 9.x GPUs only).
    limit = 232_448 if set(entry["targets"]) <= {"sm_90a", "sm_90"} else 101_376
    assert usage["shared"] + entry["smem_bytes"] <= limit
    # Registers x threads must fit one SM's 64K-register file, or the launch fails.
    assert usage["registers"] * entry["threads"] <= 65_536
    # The block the launcher asks for is the one the kernel was compiled for (__launch_bounds__,
    # from the kernel's own tile config): a larger one fails to launch, a smaller one leaves part of
    # every tile undone. Only the probe declares no bound.
    if name != PROBE:
        assert cuobjdump.max_threads(tool, CUBINS / file) == (entry["threads"], 1, 1)


PTX_FILES = sorted((name, t["file"]) for name, e in MANIFEST["kernels"].items()
                   for tgt, t in e["targets"].items() if t["file"].endswith(".ptx") and name != PROBE)


@pytest.mark.parametrize("name,file", PTX_FILES, ids=[f for _, f in PTX_FILES])
def test_ptx_launch_bounds_match_manifest(name, file):
    """The same for the PTX, which the driver compiles on GPUs without a cubin: its ``.maxntid``."""
    found = re.findall(r"^\s*\.maxntid\s+(\d+),\s*(\d+),\s*(\d+)", (CUBINS / file).read_text(), re.M)
    assert found == [(str(MANIFEST["kernels"][name]["threads"]), "1", "1")]
