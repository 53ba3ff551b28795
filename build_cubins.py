#!/usr/bin/env python3
"""The only place nvcc runs: the kernel table in, cubins + PTX + manifest.json out.

    python build_cubins.py            # rebuild what is stale (all kernels, all targets)
    python build_cubins.py --force    # rebuild everything
    python build_cubins.py --check    # no nvcc: committed files match the sources and the table

Every kernel is one ``extern "C"`` symbol compiled from one source with -D macros, once per target.
The manifest records, per kernel, what the launcher needs (its ABI: a name and the parameter list;
block, dynamic shared memory) and, per target, the file, its sha256, registers and the ptxas
report. A kernel whose ptxas report shows a stack frame or spills fails the build: local memory in a GEMM main loop
is a performance bug we want to see at build time, not in a benchmark. (Twin builds, which stand
in for hardware we lack and are never timed, are exempt.)
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SRC_DIR = ROOT / "kernels_cu"
OUT_DIR = ROOT / "nvfp4_driver" / "cubins"
MANIFEST = OUT_DIR / "manifest.json"
MANIFEST_VERSION = 1
NVCC_FLAGS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr")

# The kernel ABI of every grouped-GEMM family, in order. Types: ptr (8-byte device address),
# i64, i32, f32. The launcher builds its argument tuple from this list, and a test compares it
# with the parameter table that ptxas wrote into the cubin.
GROUPED_GEMM_PARAMS = (
    ("a", "ptr"), ("b", "ptr"), ("a_scale", "ptr"), ("b_scale", "ptr"), ("m_indptr", "ptr"),
    ("alpha", "ptr"), ("out", "ptr"), ("cum_m", "i64"), ("a_scale_rows", "i64"), ("n", "i32"),
    ("k", "i32"), ("num_groups", "i32"), ("out_dtype", "i32"),
)

# The warp-specialized kernels (sm120ws) take the same parameters and then the four tensor maps
# their TMA copies read ("tmap": a CUtensorMap, 128 bytes, 64-byte aligned, passed by value);
# nvfp4_driver/tensor_maps.py encodes them per call.
GROUPED_GEMM_TMA_PARAMS = GROUPED_GEMM_PARAMS + (
    ("tmap_a", "tmap"), ("tmap_b", "tmap"), ("tmap_sa", "tmap"), ("tmap_sb", "tmap"),
)

# Shared memory a block may ask for on every GPU we target: sm_86/sm_89/sm_120 allow 99 KiB
# (101,376 B) of dynamic shared memory per block; we keep a little under it.
SMEM_BUDGET = 98_304


@dataclasses.dataclass(frozen=True)
class GemmKernel:
    family: str      # "sm80": the portable mma.sync kernel; "sm120": native Blackwell FP4
    tile_m: int      # tokens per block: 128 (FlashInfer's tile_m), or 16/32/64 for few rows per group
    tile_n: int
    tile_k: int
    swap_ab: bool

    @property
    def name(self) -> str:
        return f"{self.family}_nvfp4_grouped_gemm_m{self.tile_m}n{self.tile_n}k{self.tile_k}" + (
            "_swapab" if self.swap_ab else "")


@dataclasses.dataclass(frozen=True)
class FamilyBuild:
    source: str
    targets: tuple[str, ...]  # "sm_XX" -> cubin, "compute_XX" -> PTX
    threads: callable         # kernel -> block size
    stage_bytes: callable     # kernel -> shared memory of one pipeline stage
    max_stages: int
    flags: tuple[str, ...] = ()  # nvcc flags of this family only (hashed with the sources)
    fixed_smem: callable = lambda v: 0  # kernel -> shared memory besides the pipeline stages
    smem_budget: int = 0                # 0: SMEM_BUDGET (every target); more where the family's targets allow
    blocks_per_sm: callable = lambda v: 0  # kernel -> blocks per SM of a persistent grid (0: not persistent)


# The warp-specialized families (nvfp4_grouped_gemm_ws.cuh): the native one and Hopper's two.
HOPPER_WS_FAMILIES = ("sm90ws", "sm90ws_splitk")
WS_FAMILIES = ("sm120ws",) + HOPPER_WS_FAMILIES


def gemm_warp_n(v: GemmKernel) -> int:
    """Columns of one warp's tile (nvfp4_grouped_gemm.cuh's WARP_N). The portable kernel's 16-token
    tiles take 64: with weights on the MMA's M side, each warp decodes the tile's 16 tokens again,
    and 64 weight rows a warp halve those repeats against 32 (perf-notes, v0.4)."""
    if v.family == "sm120ws" and v.tile_n > 128:  # nvfp4_grouped_gemm_ws.cuh: 8 warps, 64 x 64 each
        return 64
    if v.family in HOPPER_WS_FAMILIES:  # each decoded token fragment serves 64 weight rows (perf-notes, v0.6)
        return 64
    return 64 if v.family == "sm80" and v.tile_m == 16 and v.tile_k == 256 and v.tile_n % 64 == 0 else 32


def gemm_warps_k(v: GemmKernel) -> int:
    """Warps sharing each warp tile's K chunks (nvfp4_grouped_gemm.cuh's WARPS_K). The portable
    kernel's token tiles take 2: their decode chain is latency-bound with 4 warps a block (v0.2 in
    docs/perf-notes.md); 4 where wider warp tiles (gemm_warp_n) leave half the warps per K share.
    The native kernel has no decode chain and keeps 1."""
    if v.family != "sm80" or v.tile_m == 128:
        return 1
    return 4 if gemm_warp_n(v) == 64 else 2


def _gemm_threads(v: GemmKernel) -> int:
    """Warps of min(tile_m, 64) tokens x warp_n columns over a tile_m x tile_n block, times the K
    shares (nvfp4_grouped_gemm.cuh)."""
    return 32 * (v.tile_m // min(v.tile_m, 64)) * (v.tile_n // gemm_warp_n(v)) * gemm_warps_k(v)


def _stage_bytes(v: GemmKernel) -> int:
    """One pipeline stage of nvfp4_grouped_gemm.cuh (its layout comment)."""
    pitch = v.tile_k // 2 + 16                  # padded row of packed fp4
    sf_words = v.tile_k // 64                   # 4-byte scale words per row per stage
    return (v.tile_m + v.tile_n) * pitch + sf_words * (v.tile_m + v.tile_n) * 4


def _gemm_family(source: str, targets: tuple[str, ...]) -> FamilyBuild:
    """A grouped-GEMM family: the shared body (nvfp4_grouped_gemm.cuh) with its own math policy."""
    return FamilyBuild(source=source, targets=targets, threads=_gemm_threads, stage_bytes=_stage_bytes, max_stages=4)


def _sm90a_blocks_per_sm(v: GemmKernel) -> int:
    """Blocks per SM the sm90a cut is built for (registers and shared memory). swap_ab: three for 32
    tokens, two for 64 and 128 (at three the 64-token cut spills), whose blocks take turns at the
    tensor cores (one block of four warpgroups ran 21-30% slower: its barriers wait for the warps
    that also decode the tokens; perf-notes, v0.7)."""
    return 1 if not v.swap_ab else 3 if v.tile_m == 32 else 2


def _sm90a_threads(v: GemmKernel) -> int:
    """A warpgroup per 64 rows of wgmma's M side: the tokens, or with swap_ab the weight rows."""
    return 128 * (v.tile_n if v.swap_ab else v.tile_m) // 64


def _sm90a_smem(v: GemmKernel) -> int:
    """sm90a_nvfp4_grouped_gemm.cu besides its stages: 1 KB of alignment slack, two decoded fp16
    sub-tiles of wgmma's N side (the weights, or with swap_ab the tokens), rows x 128 bytes, and the
    epilogue's 64 bytes."""
    return 1024 + 2 * (v.tile_m if v.swap_ab else v.tile_n) * 128 + 64


SM120_SMEM_PER_SM = 102_400  # sm_120 / sm_121: 100 KiB of shared memory per SM, 1 KiB of it reserved per block
SM90_SMEM_PER_SM = 233_472   # sm_90: 228 KiB of shared memory per SM, 1 KiB of it reserved per block


def _ws_blocks_per_sm(v: GemmKernel) -> int:
    """The persistent grid's blocks per SM. sm120ws: two for token tiles, whose stages fit half an
    sm_120 SM, one for 128-row tiles. sm90ws: four (8 consumer warps and 4 producer warps an SM in a
    quarter of an H100 SM's 228 KB each; perf-notes, v0.6)."""
    if v.family == "sm90ws":
        return 4
    if v.family == "sm90ws_splitk":  # five warps a block, 168 registers a thread (three warps a scheduler)
        return 2
    return 2 if v.tile_m < 128 else 1


def _ws_tile_warps(v: GemmKernel) -> int:
    """Warps of 64 x warp_n (tile_m < 64: tile_m x warp_n) output tiles: one set, the tile once."""
    return (v.tile_m // min(v.tile_m, 64)) * (v.tile_n // gemm_warp_n(v))


def _ws_k_split(v: GemmKernel) -> int:
    """Sets of consumer warps that split each tile's K (nvfp4_grouped_gemm_ws.cuh's K_SPLIT)."""
    return 2 if v.family == "sm90ws_splitk" else 1


def _ws_consumer_warps(v: GemmKernel) -> int:
    return _ws_tile_warps(v) * _ws_k_split(v)


def _ws_fixed_smem(v: GemmKernel) -> int:
    """Besides the stages: 1,024 B of alignment slack, 256 B of mbarriers, a 512-byte epilogue slice
    per consumer warp, and with a K split the second set's accumulators (4 bytes x 32 lanes x
    warp_n / 16 weight fragments x tile_m / 8 token fragments x 4, a warp of one set)."""
    reduce = _ws_tile_warps(v) * 4 * 32 * (gemm_warp_n(v) // 16) * (v.tile_m // 8) * 4 if _ws_k_split(v) > 1 else 0
    return 1024 + 256 + 512 * _ws_consumer_warps(v) + reduce


def _ws_threads(v: GemmKernel) -> int:
    """The consumer warps, plus the producer warp where there is one (tile_n <= 128: the 256-column
    tile's consumer warp 0 issues the copies, so its 8 warps may take 255 registers a thread)."""
    return 32 * _ws_consumer_warps(v) + (32 if v.tile_n <= 128 else 0)


def _ws_stage_bytes(v: GemmKernel) -> int:
    """One stage of nvfp4_grouped_gemm_ws.cuh: unpadded fp4 rows, and the k tile of each 128-row
    scale block a tile's rows lie in: one for the tokens, tile_n / 128 (at least one) for the weights."""
    blocks = 1 + max(1, v.tile_n // 128)
    a_slot = (v.tile_m * v.tile_k // 2 + 1023) // 1024 * 1024  # A's rows, their slot rounded up to 1 KB
    return a_slot + v.tile_n * v.tile_k // 2 + blocks * (v.tile_k // 64) * 512


def _ws_smem_budget(v: GemmKernel) -> int:
    if v.family in HOPPER_WS_FAMILIES:
        return SM90_SMEM_PER_SM // _ws_blocks_per_sm(v) - 1024
    return min(SMEM_BUDGET, SM120_SMEM_PER_SM // _ws_blocks_per_sm(v) - 1024)


FAMILIES = {
    "sm80": _gemm_family("sm80_nvfp4_grouped_gemm.cu", ("sm_80", "sm_90", "compute_80")),
    # Hopper's wgmma with the decode overlapped (sm_90a cubins run on compute capability 9.0 only).
    # Two warpgroups a block; one block an SM (227 KB of shared memory), two with swap_ab.
    "sm90a": FamilyBuild(source="sm90a_nvfp4_grouped_gemm.cu", targets=("sm_90a",), threads=_sm90a_threads,
                         stage_bytes=_stage_bytes, max_stages=6, fixed_smem=_sm90a_smem,
                         smem_budget=lambda v: SM90_SMEM_PER_SM // _sm90a_blocks_per_sm(v) - 1024),
    # Native Blackwell FP4 (block-scaled mma.sync). "twin_sm_90": the same source with the MMA
    # replaced by its software model (-DNVFP4_TWIN), which runs on an H100; "standin_sm_90": with the
    # MMA replaced by a cheap op that consumes every operand (-DNVFP4_STANDIN), which times the
    # kernel's data movement on an H100.
    "sm120": _gemm_family("sm120_nvfp4_grouped_gemm.cu", ("sm_120a", "sm_121a", "twin_sm_90", "standin_sm_90")),
    # The native kernel, warp-specialized (nvfp4_grouped_gemm_ws.cuh): a TMA producer warp, mbarrier
    # hand-overs, a persistent grid. Besides the stages: 1,024 B of alignment slack, 256 B of mbarriers
    # and a 512-byte epilogue slice per consumer warp.
    "sm120ws": FamilyBuild(source="sm120ws_nvfp4_grouped_gemm.cu",
                           targets=("sm_120a", "sm_121a", "twin_sm_90", "standin_sm_90"), threads=_ws_threads,
                           stage_bytes=_ws_stage_bytes, max_stages=4,
                           fixed_smem=_ws_fixed_smem,
                           smem_budget=_ws_smem_budget, blocks_per_sm=_ws_blocks_per_sm),
    # Hopper's decode kernel: that body with the MMA's fp16 model (decode + mma.sync m16n8k16), sm_90
    # (TMA and mbarriers need 9.0; the cubin also runs on later 9.x).
    "sm90ws": FamilyBuild(source="sm90ws_nvfp4_grouped_gemm.cu", targets=("sm_90",), threads=_ws_threads,
                          stage_bytes=_ws_stage_bytes, max_stages=4, fixed_smem=_ws_fixed_smem,
                          smem_budget=_ws_smem_budget, blocks_per_sm=_ws_blocks_per_sm),
    # The same with each tile's K split between two sets of consumer warps, two blocks an SM: for
    # calls of few tiles (sm90ws_splitk_nvfp4_grouped_gemm.cu). Up to 8 stages of tile_k 128.
    "sm90ws_splitk": FamilyBuild(source="sm90ws_splitk_nvfp4_grouped_gemm.cu", targets=("sm_90",),
                                 threads=_ws_threads, stage_bytes=_ws_stage_bytes, max_stages=8,
                                 fixed_smem=_ws_fixed_smem, smem_budget=_ws_smem_budget,
                                 blocks_per_sm=_ws_blocks_per_sm),
}
# Builds of another target's kernel for sm_90, by the macro that makes them: they stand in for
# hardware we lack, for tests and benchmarks; no GPU is ever dispatched to them.
PROXY_TARGETS = {"twin_": "-DNVFP4_TWIN", "standin_": "-DNVFP4_STANDIN"}

# FlashInfer's cut (tile_m = 128, every tile_n / tile_k / swap_ab), plus token tiles of 16/32/64
# with swap_ab for groups of few rows (decode): weights on the MMA's M side, so each weight byte is
# decoded once per 16-64 tokens instead of once per 128-row tile that is mostly empty.
GEMM_KERNELS = tuple(
    GemmKernel(family, tm, tn, tk, swap)
    for family in ("sm80", "sm120")
    for tm, swaps in ((128, (False, True)), (16, (True,)), (32, (True,)), (64, (True,)))
    for tn in (32, 64, 128)
    for tk in (128, 256)
    for swap in swaps
    if tm == 128 or tn == 128
) + tuple(GemmKernel("sm90a", 128, tn, 128, False) for tn in (128, 256)) + tuple(  # Hopper: tokens on wgmma's M
    GemmKernel("sm90a", tm, 128, 128, True) for tm in (32, 64, 128))  # weights on wgmma's M: 32-128 tokens a tile
# The warp-specialized native kernel serves the cuts the automatic choice takes on sm_12x and
# FlashInfer's 128 x 128 ones; the others (tile_n 32/64, the wider token tiles' tile_k 256, whose
# two stages would not fit two blocks per SM) stay on the sm120 kernel.
GEMM_KERNELS += tuple(GemmKernel("sm120ws", 128, 128, tk, swap) for tk in (128, 256) for swap in (False, True)) + tuple(
    GemmKernel("sm120ws", tm, 128, 128, True) for tm in (16, 32, 64)) + (GemmKernel("sm120ws", 16, 128, 256, True),)
# Hopper's decode cuts: 16 tokens (tile_k 256 the automatic one, 128 by name).
GEMM_KERNELS += tuple(GemmKernel("sm90ws", tm, 128, tk, True) for tm in (8, 16) for tk in (128, 256))
# Hopper's decode kernel with each tile's K split, for calls of few tiles (E=8 decode): 16 tokens, tile_k 128
# (as fast as 256 on E=8, 3-5% faster on three other few-tile shapes; H200, perf-notes v0.9).
GEMM_KERNELS += (GemmKernel("sm90ws_splitk", 16, 128, 128, True),)
# The prefill cut of 256 weight columns: 25% fewer L2 bytes per FLOP than 128 x 128 (docs/sm120.md's
# performance model); sm_12x only (the sm120 kernel has no such cut), chosen by name, not automatically.
GEMM_KERNELS += (GemmKernel("sm120ws", 128, 256, 128, False),)


@dataclasses.dataclass(frozen=True)
class ProbeKernel:
    """nvfp4_probe.cu: echoes its arguments; the loader test and the empty-launch baseline."""

    family: str = "probe"
    name: str = "nvfp4_probe"


PROBE = ProbeKernel()
FAMILIES["probe"] = FamilyBuild(source="nvfp4_probe.cu", targets=("sm_80", "sm_90", "compute_80"),
                                threads=lambda v: 32, stage_bytes=lambda v: 0, max_stages=0)
PROBE_PARAMS = (("out", "ptr"), ("i64", "i64"), ("i32", "i32"), ("f32", "f32"))

# nvfp4_quantize.cu: the SPEC §4 quantizer, its inverse and the global-scale helpers. One symbol per
# build (op x dtype of the unquantized side). The same portable source serves every target; its
# codecs are software so every target writes the same bytes, and -fmad=false keeps every float32
# step separately rounded as SPEC §4 asks (the source also uses the _rn intrinsics throughout).
QUANTIZE_PARAMS = (
    ("x", "ptr"), ("q", "ptr"), ("q_scale", "ptr"), ("global_scale", "ptr"), ("m_indptr", "ptr"),
    ("rows", "i64"), ("sf_rows", "i64"), ("k", "i32"), ("num_groups", "i32"), ("group_rows", "i32"),
    ("gs_stride", "i32"), ("gs_value", "f32"),
)
DEQUANTIZE_PARAMS = (
    ("q", "ptr"), ("q_scale", "ptr"), ("global_scale", "ptr"), ("m_indptr", "ptr"), ("out", "ptr"),
    ("rows", "i64"), ("sf_rows", "i64"), ("k", "i32"), ("num_groups", "i32"), ("group_rows", "i32"),
    ("gs_stride", "i32"), ("gs_value", "f32"),
)
AMAX_PARAMS = (
    ("x", "ptr"), ("amax_bits", "ptr"), ("m_indptr", "ptr"), ("rows", "i64"), ("k", "i32"),
    ("num_groups", "i32"), ("group_rows", "i32"), ("per_group", "i32"),
)
# silu_mul_*: the rows hold gate and up (2K elements), k is K of h = silu(gate) * up.
SILU_MUL_QUANTIZE_PARAMS = (("gate_up", "ptr"),) + QUANTIZE_PARAMS[1:]
SILU_MUL_AMAX_PARAMS = (("gate_up", "ptr"),) + AMAX_PARAMS[1:]
GLOBAL_SCALE_PARAMS = (("scale", "ptr"), ("n", "i32"))
ALPHA_PARAMS = (("gs_a", "ptr"), ("gs_b", "ptr"), ("alpha", "ptr"), ("a_stride", "i32"), ("b_stride", "i32"),
                ("n", "i32"))



@dataclasses.dataclass(frozen=True)
class QuantOp:
    """One operation of nvfp4_quantize.cu. Its name is the symbol's stem, the manifest's "op" and what
    quantize.py asks the registry for; ``code`` is the value of -DNVFP4_QUANT_OP that selects it (the
    source's header lists the codes by these names)."""

    code: int
    params: tuple[tuple[str, str], ...]
    threads: int
    dtypes: tuple[str, ...] = ()  # keys of QUANT_DTYPES it is built for (the row ops); () for the scalar ops


# The grids are the launcher's (quantize.py).
QUANT_DTYPES = {"bf16": 0, "f16": 1, "f32": 2}
QUANT_OPS = {
    "quantize_rows": QuantOp(1, QUANTIZE_PARAMS, 256, tuple(QUANT_DTYPES)),
    "dequantize_rows": QuantOp(2, DEQUANTIZE_PARAMS, 256, tuple(QUANT_DTYPES)),
    "amax_rows": QuantOp(3, AMAX_PARAMS, 256, tuple(QUANT_DTYPES)),
    "global_scale_from_amax": QuantOp(4, GLOBAL_SCALE_PARAMS, 128),
    "alpha_from_global_scales": QuantOp(5, ALPHA_PARAMS, 128),
    # SiLU(gate) * up fused into the quantizer and its amax: 16-bit rows only, as FlashInfer's
    # silu_and_mul_nvfp4_quantize (a float32 gate/up would need h in float32, another semantics).
    "silu_mul_quantize_rows": QuantOp(6, SILU_MUL_QUANTIZE_PARAMS, 256, ("bf16", "f16")),
    "silu_mul_amax_rows": QuantOp(7, SILU_MUL_AMAX_PARAMS, 256, ("bf16", "f16")),
}


@dataclasses.dataclass(frozen=True)
class QuantKernel:
    """One symbol of nvfp4_quantize.cu: an op and, for the row kernels, the unquantized dtype."""

    op: str     # a key of QUANT_OPS
    dtype: str  # a key of QUANT_DTYPES, or "" for the scalar kernels
    family: str = "quantize"

    @property
    def name(self) -> str:
        return f"nvfp4_{self.op}" + (f"_{self.dtype}" if self.dtype else "")


QUANT_KERNELS = tuple(QuantKernel(op, dtype) for op, spec in QUANT_OPS.items() for dtype in (spec.dtypes or ("",)))
FAMILIES["quantize"] = FamilyBuild(source="nvfp4_quantize.cu",
                                   targets=("sm_80", "sm_90", "compute_80", "sm_120a", "sm_121a"),
                                   threads=lambda v: QUANT_OPS[v.op].threads, stage_bytes=lambda v: 0,
                                   max_stages=0, flags=("-fmad=false",))
Kernel = GemmKernel | ProbeKernel | QuantKernel  # one extern "C" symbol: one manifest entry
BUILDS = GEMM_KERNELS + (PROBE,) + QUANT_KERNELS


def stages(v: Kernel) -> int:
    fam = FAMILIES[v.family]
    if not fam.max_stages:
        return 0
    budget = _budget(fam, v) - fam.fixed_smem(v)
    return max(2, min(fam.max_stages, budget // fam.stage_bytes(v)))


def _budget(fam: FamilyBuild, v: Kernel) -> int:
    budget = fam.smem_budget(v) if callable(fam.smem_budget) else fam.smem_budget
    return budget or SMEM_BUDGET


def launch_config(v: Kernel) -> dict:
    fam = FAMILIES[v.family]
    n_stages = stages(v)
    smem = n_stages * fam.stage_bytes(v) + fam.fixed_smem(v) if n_stages else 0
    budget = _budget(fam, v)
    if smem > budget:
        raise SystemExit(f"{v.name}: {n_stages} stages need {smem} B of shared memory > {budget}")
    return {"threads": fam.threads(v), "stages": n_stages, "smem_bytes": smem}


def macros(v: Kernel) -> list[str]:
    if isinstance(v, ProbeKernel):
        return []
    if isinstance(v, QuantKernel):
        return [f"-DNVFP4_KERNEL_NAME={v.name}", f"-DNVFP4_QUANT_OP={QUANT_OPS[v.op].code}",
                f"-DNVFP4_DTYPE={QUANT_DTYPES.get(v.dtype, 0)}"]
    cfg = launch_config(v)
    if v.family == "sm90a":  # tile_k 128; the kernel checks its own config (Sm90aConfig)
        return [f"-DNVFP4_KERNEL_NAME={v.name}", f"-DNVFP4_TILE_M={v.tile_m}", f"-DNVFP4_TILE_N={v.tile_n}",
                f"-DNVFP4_SWAP_AB={int(v.swap_ab)}", f"-DNVFP4_STAGES={cfg['stages']}",
                f"-DNVFP4_THREADS={cfg['threads']}", f"-DNVFP4_SMEM_BYTES={cfg['smem_bytes']}",
                f"-DNVFP4_BLOCKS_PER_SM={_sm90a_blocks_per_sm(v)}"]
    return [
        f"-DNVFP4_KERNEL_NAME={v.name}", f"-DNVFP4_TILE_M={v.tile_m}", f"-DNVFP4_TILE_N={v.tile_n}",
        f"-DNVFP4_TILE_K={v.tile_k}",
        f"-DNVFP4_SWAP_AB={int(v.swap_ab)}", f"-DNVFP4_STAGES={cfg['stages']}",
        f"-DNVFP4_THREADS={cfg['threads']}", f"-DNVFP4_SMEM_BYTES={cfg['smem_bytes']}",
        f"-DNVFP4_WARPS_K={gemm_warps_k(v)}", f"-DNVFP4_WARP_N={gemm_warp_n(v)}",
    ] + ([f"-DNVFP4_BLOCKS_PER_SM={_ws_blocks_per_sm(v)}"] if v.family in WS_FAMILIES else [])


def output_file(v: Kernel, target: str) -> str:
    return f"{v.name}.{target}." + ("ptx" if target.startswith("compute_") else "cubin")


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def included_files(source: Path) -> list[Path]:
    """``source`` and every project header it includes, transitively, in a stable order."""
    seen, todo = {}, [source]
    while todo:
        f = todo.pop()
        if f.name in seen:
            continue
        seen[f.name] = f
        todo.extend(SRC_DIR / name for name in _INCLUDE.findall(f.read_text()) if (SRC_DIR / name).exists())
    return [seen[name] for name in sorted(seen)]


def source_hash(v: Kernel, target: str) -> str:
    """sha256 of everything that decides the output: the source, every header, flags, macros."""
    h = hashlib.sha256()
    for f in included_files(SRC_DIR / FAMILIES[v.family].source):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(" ".join((*NVCC_FLAGS, *FAMILIES[v.family].flags, *macros(v), target)).encode())
    return h.hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"release (\S+), (V\S+)", out)
    return m.group(2) if m else out.strip().splitlines()[-1]


_PTXAS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "stack_frame": re.compile(r"(\d+) bytes stack frame"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
}


def compile_one(nvcc: str, v: Kernel, target: str) -> dict:
    out = OUT_DIR / output_file(v, target)
    src = SRC_DIR / FAMILIES[v.family].source
    flags = (*NVCC_FLAGS, *FAMILIES[v.family].flags)
    if target.startswith("compute_"):
        cmd = [nvcc, *flags, "-ptx", f"-arch={target}", *macros(v), "-o", str(out), str(src)]
    else:
        proxy = [flag for prefix, flag in PROXY_TARGETS.items() if target.startswith(prefix)]
        real = target.split("_", 1)[1] if proxy else target
        arch = real.replace("sm_", "compute_")
        cmd = [nvcc, *flags, "-cubin", f"-gencode=arch={arch},code={real}", "-Xptxas", "-v", *proxy,
               *macros(v), "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nvcc failed for {v.name} {target}:\n{' '.join(cmd)}\n{proc.stderr}")
    entry = {"file": out.name, "sha256": file_hash(out), "source_sha256": source_hash(v, target)}
    if not target.startswith("compute_"):
        report = {k: int(m.group(1)) for k, rx in _PTXAS.items() if (m := rx.search(proc.stderr))}
        # The twin's software MMA model is far heavier than the one instruction it stands for, and
        # it exists to be checked, not timed: its spills are recorded, not refused.
        spills = report.get("stack_frame", 0) or report.get("spill_stores", 0) or report.get("spill_loads", 0)
        if spills and not target.startswith("twin_"):
            raise SystemExit(f"{v.name} {target}: local memory in the ptxas report {report}:\n{proc.stderr}")
        entry.update(report)
    return entry


def manifest_entry(v: Kernel) -> dict:
    if isinstance(v, QuantKernel):
        return {"family": v.family, "source": FAMILIES[v.family].source, "op": v.op, "dtype": v.dtype or None,
                **launch_config(v), "abi": v.op, "params": [{"name": n, "type": t} for n, t in QUANT_OPS[v.op].params]}
    if isinstance(v, ProbeKernel):
        return {"family": v.family, "source": FAMILIES[v.family].source, **launch_config(v), "abi": "probe",
                "params": [{"name": n, "type": t} for n, t in PROBE_PARAMS]}
    entry = {
        "family": v.family, "source": FAMILIES[v.family].source, "tile_m": v.tile_m, "tile_n": v.tile_n,
        "tile_k": v.tile_k, "swap_ab": v.swap_ab, "warps_k": gemm_warps_k(v), "warp_n": gemm_warp_n(v),
        **launch_config(v), "abi": "grouped_gemm",
        "params": [{"name": n, "type": t} for n, t in GROUPED_GEMM_PARAMS],
    }
    persistent = FAMILIES[v.family].blocks_per_sm(v)
    if persistent:  # a persistent grid of SMs x blocks_per_sm, and the tensor maps after the common arguments
        entry.update(blocks_per_sm=persistent, abi="grouped_gemm_tma",
                     params=[{"name": n, "type": t} for n, t in GROUPED_GEMM_TMA_PARAMS])
    return entry


def load_manifest() -> dict:
    if MANIFEST.exists():
        return json.loads(MANIFEST.read_text())
    return {"version": MANIFEST_VERSION, "kernels": {}}


def check() -> list[str]:
    """Problems that make the committed cubins disagree with the sources or the table."""
    problems = []
    manifest = load_manifest()
    kernels = manifest.get("kernels", {})
    wanted = {v.name: v for v in BUILDS}
    for name in sorted(set(kernels) - set(wanted)):
        problems.append(f"{name}: in the manifest but not in the kernel table")
    for name, v in wanted.items():
        entry = kernels.get(name)
        if entry is None:
            problems.append(f"{name}: missing from the manifest")
            continue
        expected = manifest_entry(v)
        for key, value in expected.items():
            if entry.get(key) != value:
                problems.append(f"{name}: manifest {key}={entry.get(key)!r}, table says {value!r}")
        for target in FAMILIES[v.family].targets:
            t = entry.get("targets", {}).get(target)
            path = OUT_DIR / output_file(v, target)
            if t is None or not path.exists():
                problems.append(f"{name}: no {target} build ({path.name})")
                continue
            if t["source_sha256"] != source_hash(v, target):
                problems.append(f"{name} {target}: stale (sources or flags changed since it was built)")
            if t["sha256"] != file_hash(path):
                problems.append(f"{name} {target}: {path.name} differs from the manifest's sha256")
    return problems


def build(force: bool, jobs: int, families: set[str] | None = None) -> None:
    nvcc = os.environ.get("NVCC", "nvcc")
    manifest = load_manifest()
    manifest["version"] = MANIFEST_VERSION
    manifest["nvcc"] = nvcc_version(nvcc)
    manifest["nvcc_flags"] = list(NVCC_FLAGS)
    kernels = {name: e for name, e in manifest.get("kernels", {}).items() if name in {v.name for v in BUILDS}}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    todo = []
    for v in BUILDS:
        old = kernels.get(v.name, {}).get("targets", {})
        for target in FAMILIES[v.family].targets:
            path = OUT_DIR / output_file(v, target)
            fresh = (target in old and path.exists() and old[target]["source_sha256"] == source_hash(v, target)
                     and old[target]["sha256"] == file_hash(path))
            if (force or not fresh) and (families is None or v.family in families):
                todo.append((v, target))
    print(f"{len(todo)} of {sum(len(FAMILIES[v.family].targets) for v in BUILDS)} builds are stale; nvcc {manifest['nvcc']}")
    results, failures = {}, []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(compile_one, nvcc, v, t): (v, t) for v, t in todo}
        for fut in concurrent.futures.as_completed(futures):
            v, t = futures[fut]
            try:
                results[(v.name, t)] = fut.result()
            except SystemExit as exc:  # keep building: one bad kernel must not cost the others' work
                failures.append(str(exc))
                print(exc, flush=True)
                continue
            print(f"  built {output_file(v, t)}  {results[(v.name, t)].get('registers', '-')} regs", flush=True)
    for v in BUILDS:
        entry = manifest_entry(v)
        targets = dict(kernels.get(v.name, {}).get("targets", {}))
        for t in FAMILIES[v.family].targets:
            if (v.name, t) in results:
                targets[t] = results[(v.name, t)]
        entry["targets"] = targets
        kernels[v.name] = entry
    manifest["kernels"] = dict(sorted(kernels.items()))
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    known = {output_file(v, t) for v in BUILDS for t in FAMILIES[v.family].targets}
    for f in OUT_DIR.iterdir():
        if f.suffix in (".cubin", ".ptx") and f.name not in known:
            f.unlink()
            print(f"  removed {f.name} (no longer in the table)")
    if failures:  # the manifest keeps the old entries of the failed builds: --check calls them stale
        raise SystemExit(f"{len(failures)} of {len(todo)} builds failed (the manifest records the others)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="verify committed outputs against sources; no nvcc")
    p.add_argument("--force", action="store_true", help="rebuild every kernel")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--families", default=None,
                   help="comma-separated families to rebuild (default: all), e.g. sm80,sm90a")
    args = p.parse_args(argv)
    if args.check:
        problems = check()
        for line in problems:
            print(line)
        print("check: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    families = None if args.families is None else {f.strip() for f in args.families.split(",") if f.strip()}
    unknown = (families or set()) - set(FAMILIES)
    if unknown:
        p.error(f"unknown families {sorted(unknown)}; known: {sorted(FAMILIES)}")
    build(args.force, args.jobs, families)
    return 0


if __name__ == "__main__":
    sys.exit(main())
