"""Which compiled kernel serves a problem on a GPU: a pure function of the compute capability,
the problem and the caller's tiles, answered with an entry of the kernel registry (registry.py)."""
from __future__ import annotations

import dataclasses
import enum
import functools
import sys

from . import config, registry
from .driver import KernelSpec
from .problem import Problem, Tiles, validate
from .registry import CHECKOUT_ONLY_TARGETS, KernelEntry, Target, UnsupportedGpuError, checkout_only_builds_missing
from .registry import manifest  # noqa: F401 - the manifest as read, for tests and tools


class Family(enum.Enum):
    SM80 = "sm80"    # portable: fp4 decoded to fp16 in registers, mma.sync; sm_80 and newer
    SM90A = "sm90a"  # Hopper: fp4 decoded to fp16, wgmma overlapped with the decode; sm_90a (9.0 only)
    SM120 = "sm120"  # native Blackwell FP4: block-scaled mma.sync; sm_120a, sm_121a (and its sm_90 twin)
    SM120WS = "sm120ws"  # the same, warp-specialized: TMA producer warp, mbarriers, persistent grid
    SM90WS = "sm90ws"  # Hopper's decode kernel: sm120ws's body, its MMA as fp16 decode + mma.sync; sm_90
    SM90WS_SPLITK = "sm90ws_splitk"  # the same, each tile's K split between two sets of warps (few tiles)


@dataclasses.dataclass(frozen=True)
class Variant:
    """The selector's answer: a registry entry and the target whose build runs."""

    entry: KernelEntry
    target: Target

    @property
    def family(self) -> Family:
        return Family(self.entry.family)

    @property
    def tiles(self) -> Tiles:
        return self.entry.tiles

    @property
    def symbol(self) -> str:
        """The extern "C" name, the same in the .cu build, the cubin and the manifest."""
        return self.entry.name

    @property
    def file(self) -> str:
        return self.entry.files[self.target]


def variant_for(family: Family, tiles: Tiles, target: Target | str) -> Variant:
    """The Variant of ``family``'s kernel for ``tiles`` built for ``target`` (benchmarks force one)."""
    return Variant(registry.gemm(family.value, tiles), target if isinstance(target, Target) else Target.parse(target))


def target_for(capability: tuple[int, int], force_ptx: bool = False, twin: bool = False) -> tuple[Family, Target]:
    """(family, target) for a GPU of compute capability ``(major, minor)``.

    12.0 and 12.1 get the native FP4 kernel (arch-specific cubins: each runs on its own minor
    version only). Other machine code runs on GPUs of its own major version and an equal or higher
    minor one; any other newer GPU takes the portable PTX, which the driver compiles on first load.
    ``twin`` asks for the native kernel's sm_90 twin (its MMA instruction replaced by a software
    model), which exists to test that kernel on a Hopper GPU.
    """
    major, minor = capability
    if capability < (8, 0):
        raise UnsupportedGpuError(
            f"compute capability {major}.{minor} is not supported: the kernels need 8.0 (Ampere) or newer")
    if twin:
        if capability != (9, 0):
            raise UnsupportedGpuError(f"the sm120 twin is built for sm_90 only, not {major}.{minor}")
        return Family.SM120, TWIN
    if force_ptx:
        return Family.SM80, PTX
    if capability in ((12, 0), (12, 1)):
        return Family.SM120, Target("sm", 12, minor, arch_specific=True)
    if major in (8, 9):
        return Family.SM80, Target("sm", major, 0)
    return Family.SM80, PTX


PTX = Target("compute", 8, 0)                # the portable PTX: any GPU from 8.0 on
TWIN = Target("sm", 9, 0, proxy="twin")      # the native kernel's twin, for 9.0
HOPPER = Target("sm", 9, 0)
WGMMA = Target("sm", 9, 0, arch_specific=True)


def wgmma_cuts() -> frozenset[Tiles]:
    """The cuts the Hopper wgmma kernel (sm90a_nvfp4_grouped_gemm.cu) is built for, stages of 128 K:
    128 tokens x 128 or 256 weights with the tokens on wgmma's M side, and 32, 64 or 128 tokens x 128
    weights with swap_ab (the weights on its M side). On a 9.0 GPU these cuts run there."""
    return registry.family_cuts(Family.SM90A.value)


def auto_tiles(problem: Problem, wgmma: bool = True, native: bool = False) -> Tiles:
    """The cut used when the caller names none, from shapes alone (rows per group are on the GPU).

    The measurements behind each rule are in docs/perf-notes.md. With few rows per group on average,
    a token tile of 16/32/64 rows with the weights on the MMA's M side decodes each weight byte once
    per 16-64 tokens instead of once per mostly empty 128-row tile (3.4-4.3x faster at 4-16 rows on
    an H100), with tile_k = 256 (faster than 128 on every decode shape). Many rows per group:
    128 x 128 x 256. Where the wgmma kernel runs (``wgmma``: a 9.0 GPU), its swap_ab cuts above 16
    rows per group: 32 tokens up to 32 rows (8-19% faster than the portable 32-token tile, skewed or
    not), 64 up to 64 (26-30% faster than its 128 x 256 cut at 48 and 64 rows), 128 above (up to 11%
    faster on 6 of 7 prefill shapes, 1.7% slower on the seventh; H200, docs/perf-notes.md, v0.7).
    At 16 rows or fewer
    with at least ``SM90WS_MIN_TILES`` tiles, on 9.0: the sm90ws kernel's 16-token cut with tile_k 128
    (4 stages; 6-9% faster than its tile_k 256 on three of four decode shapes, H200), and at 8 rows or
    fewer its 8-token cut with tile_k 256 (a Hopper-only cut: half the MMAs and token decode of the
    16-token tile, registers for the next stage's prefetch; 1.13-1.25x the byte floor against
    1.52-1.63x for the 16-token cut on five decode shapes, H200, docs/perf-notes.md, v0.9). With at
    most ``SM90WS_SPLITK_MAX_TILES`` tiles instead, on 9.0: 16 x 128 x 128 on the sm90ws_splitk
    kernel (each tile's K split between two sets of warps; 6-11% faster than the portable kernel on
    DeepSeek-V3 up E=8 at 8 and 16 rows, H200, v0.9).

    The native Blackwell kernel (``native``: the sm120 family, its twin included) takes tile_k 128:
    for many rows, 4 pipeline stages fit its 99 KB where tile_k 256 fits 2, and its sm_90 stand-in
    moved DeepSeek-V3 up E=32 m=1024 15-20% faster that way (H200; docs/sm120.md); for few rows,
    the warp-specialized kernel (sm120ws) holds 3-4 stages of tile_k 128 in half an SM, two blocks
    per SM. That is data movement only: the FP4 MMA's own time is unmeasured.
    """
    rows = problem.cum_m / max(problem.num_groups, 1)
    if wgmma and rows > 16:
        return Tiles(32 if rows <= 32 else 64 if rows <= 64 else 128, 128, 128, True)
    if rows > 64:
        return Tiles(128, 128, 128 if native else 256, False)
    tile_m = 16 if rows <= 16 else 32 if rows <= 32 else 64
    if wgmma and tile_m == 16 and _enough_tiles_for_sm90ws(problem):
        if rows <= 8:
            return Tiles(8, 128, 256, True)  # the sm90ws kernel's 8-token cut: 2 stages of 256 K
        return Tiles(16, 128, 128, True)  # the sm90ws kernel's: 4 stages of 128 K (2 of 256)
    if wgmma and tile_m == 16 and _few_enough_tiles_for_splitk(problem):
        return Tiles(16, 128, 128, True)  # the sm90ws_splitk kernel's (select_variant)
    return Tiles(tile_m, 128, 128 if native else 256, True)


def _sm90ws_tiles(problem: Problem) -> int:
    rows, cols = tile_counts(problem, Tiles(16, 128, 128, True))
    return rows * cols


def _enough_tiles_for_sm90ws(problem: Problem) -> bool:
    return _sm90ws_tiles(problem) >= SM90WS_MIN_TILES


def _few_enough_tiles_for_splitk(problem: Problem) -> bool:
    return 0 < _sm90ws_tiles(problem) <= SM90WS_SPLITK_MAX_TILES


# The fewest tiles (tile_counts' bound) for which the automatic choice on a 9.0 GPU takes the sm90ws
# kernel: its persistent grid holds 4 blocks per SM (528 on an H100 or H200), and DeepSeek-V3 up E=8
# m=16 (480 tiles) ran 1.46x slower there than on the portable kernel, whose K shares give it more
# blocks; 3,648 tiles and more (the other decode shapes) ran faster (H200, docs/perf-notes.md, v0.6).
SM90WS_MIN_TILES = 1024
# The most tiles (the same bound) for which the automatic choice on a 9.0 GPU takes the sm90ws_splitk
# kernel: its persistent grid holds 2 blocks an SM (264 on an H200), each running a tile on two sets of
# warps. DeepSeek-V3 up E=8 (bounds 352 and 480 at 8 and 16 rows) ran 6-11% faster there than on the
# portable kernel; Qwen3 up E=16 m=16 (744) ran 11% slower, and between 512 and 1,024 the portable
# kernel or sm90ws was faster (H200, docs/perf-notes.md, v0.9).
SM90WS_SPLITK_MAX_TILES = 512


def select_variant(problem: Problem, tiles: Tiles | None, capability: tuple[int, int],
                   force_ptx: bool | None = None, twin: bool | None = None,
                   portable: bool | None = None, log: bool | None = None) -> Variant:
    """The kernel for ``problem`` cut by ``tiles`` (None: :func:`auto_tiles`) on a GPU of
    ``capability``; validates first.

    ``force_ptx`` / ``twin`` / ``portable`` / ``log`` default to the NVFP4_DRIVER_FORCE_PTX / _TWIN /
    _PORTABLE / _LOG variables (a caller with its own ``config.Flags`` passes all four). On a 9.0 GPU
    the cuts of :func:`wgmma_cuts` run on the wgmma kernel unless ``portable``, and the sm90ws
    family's cuts on that kernel, except where the automatic choice finds fewer than
    ``SM90WS_MIN_TILES`` tiles (then the portable kernel, same cut, or with at most
    ``SM90WS_SPLITK_MAX_TILES`` the sm90ws_splitk kernel; named cuts never go there).
    """
    if force_ptx is None or twin is None or portable is None or log is None:
        env = config.flags()
        force_ptx = env.force_ptx if force_ptx is None else force_ptx
        twin = env.twin if twin is None else twin
        portable = env.portable if portable is None else portable
        log = env.log if log is None else log
    family, target = target_for(capability, force_ptx, twin)
    wgmma = target == HOPPER and capability == (9, 0) and not portable
    few_tiles = split = False  # the automatic choice keeps the portable kernel for calls of few tiles,
    if tiles is None:           # and takes the split kernel for the fewest
        tiles = auto_tiles(problem, wgmma, native=family is Family.SM120)
        few_tiles = not _enough_tiles_for_sm90ws(problem)
        split = _few_enough_tiles_for_splitk(problem)
    validate(problem, tiles)
    if wgmma and tiles in wgmma_cuts():
        family, target = Family.SM90A, WGMMA
    elif wgmma and split and tiles in registry.family_cuts(Family.SM90WS_SPLITK.value):
        family = Family.SM90WS_SPLITK  # same target (sm_90)
    elif wgmma and not few_tiles and tiles in registry.family_cuts(Family.SM90WS.value):
        family = Family.SM90WS  # same target (sm_90)
    elif family is Family.SM120 and tiles in registry.family_cuts(Family.SM120WS.value):
        family = Family.SM120WS  # the warp-specialized kernel serves this cut (same targets)
    elif tiles not in registry.family_cuts(family.value):
        if tiles.tile_m == 8:
            raise UnsupportedGpuError(
                f"tile_m=8 runs on the Hopper decode kernel (sm90ws: compute capability 9.0, without "
                f"NVFP4_DRIVER_PORTABLE, _FORCE_PTX or _TWIN) only; here the {family.value} kernel ({target}) "
                f"serves compute capability {capability[0]}.{capability[1]}: use tile_m 16")
        raise UnsupportedGpuError(
            f"tile_n=256 runs on the Hopper wgmma kernel (compute capability 9.0, without "
            f"NVFP4_DRIVER_PORTABLE, _FORCE_PTX or _TWIN) and the native Blackwell kernel (12.0, 12.1, or "
            f"the twin) only; here the {family.value} kernel ({target}) serves compute capability "
            f"{capability[0]}.{capability[1]}: use tile_n 32, 64 or 128")
    chosen = Variant(registry.gemm(family.value, tiles), target)
    if log:
        _log(problem, tiles, capability, chosen)
    return chosen


@functools.lru_cache(maxsize=256)
def _log(problem: Problem, tiles: Tiles, capability: tuple[int, int], variant: Variant) -> None:
    print(f"nvfp4_driver: G={problem.num_groups} N={problem.n} K={problem.k} cum_m={problem.cum_m} "
          f"{problem.out_dtype} tiles={tiles} on sm_{capability[0]}{capability[1]} -> "
          f"{variant.symbol} ({variant.target})", file=sys.stderr)


def kernel_spec(variant: Variant) -> KernelSpec:
    """What the launcher needs for ``variant``."""
    return variant.entry.spec(variant.target)


def is_compute_capability_supported(cc) -> bool:
    """Whether the manifest holds a grouped-GEMM build that runs on a GPU of compute capability ``cc``.

    ``cc`` is FlashInfer's integer ``major * 10 + minor`` (90, 120, ...) or a ``(major, minor)`` tuple.
    The answer is that of the default cut (128 x 128 x 128, swap_ab) for the target :func:`target_for`
    picks, as read from ``cubins/manifest.json``; no GPU is needed.
    """
    if isinstance(cc, tuple) and len(cc) == 2 and all(type(v) is int for v in cc):
        capability = cc
    elif type(cc) is int and cc >= 10:
        capability = divmod(cc, 10)
    else:
        raise TypeError(f"cc must be an int major*10+minor (e.g. 120) or a (major, minor) tuple, got {cc!r}")
    try:
        family, target = target_for(capability)
        registry.gemm(family.value, Tiles()).spec(target)
    except UnsupportedGpuError:
        return False
    return True


def tile_counts(problem: Problem, tiles: Tiles) -> tuple[int, int]:
    """(row tiles, column tiles) from shapes alone (no m_indptr read). Rows: the most tiles of
    tile_m rows any m_indptr with m_indptr[G] <= cum_m can need, the sum of ceilings
    sum_g ceil(rows_g / tile_m) <= (cum_m + (tile_m - 1) * G) // tile_m."""
    tm = tiles.tile_m
    return (problem.cum_m + (tm - 1) * problem.num_groups) // tm, -(-problem.n // tiles.tile_n)


def grid(problem: Problem, variant: Variant, sm_count: int | None = None) -> tuple[int, int, int]:
    """The launch grid: row tiles x column tiles, one block each; for a persistent kernel
    (``blocks_per_sm`` in its entry) ``sm_count`` x blocks_per_sm blocks, or fewer when there are
    fewer tiles, each walking the tiles with a stride of the grid."""
    rows, cols = tile_counts(problem, variant.tiles)
    per_sm = variant.entry.blocks_per_sm
    if not per_sm:
        return rows, cols, 1
    if sm_count is None:
        raise ValueError(f"{variant.symbol} runs on a persistent grid: grid() needs the GPU's sm_count")
    return min(rows * cols, sm_count * per_sm), 1, 1


def probe_spec(capability: tuple[int, int], force_ptx: bool | None = None) -> KernelSpec:
    """The argument-echo probe kernel (nvfp4_probe.cu) for a GPU: the loader's smoke test."""
    _family, target = target_for(capability, config.flags().force_ptx if force_ptx is None else force_ptx)
    if target.major == 12:
        target = PTX  # the probe is built for the portable targets only; PTX runs anywhere
    return registry.probe().spec(target)


@functools.lru_cache(maxsize=None)  # per quantizer launch: a function of its arguments and the manifest
def quantize_spec(op: str, dtype: str | None, capability: tuple[int, int], force_ptx: bool = False) -> KernelSpec:
    """A kernel of the quantizer family (nvfp4_quantize.cu; ``op`` "quantize_rows", ... and the
    unquantized side's ``dtype`` tag "bf16"/"f16"/"f32" or None) for a GPU of ``capability``. Same
    targets as the GEMM (:func:`target_for`): sm_80/sm_90 cubins, sm_120a / sm_121a cubins on 12.0 /
    12.1, the compute_80 PTX on every other GPU or with ``force_ptx``."""
    _family, target = target_for(capability, force_ptx)
    return registry.quantizer(op, dtype).spec(target)
