"""Which compiled kernel serves a problem on a GPU: a pure function of the compute capability,
the problem and the caller's tiles, plus the manifest that build_cubins.py wrote."""
from __future__ import annotations

import dataclasses
import enum
import functools
import json
import sys

from . import config
from .driver import CUBIN_DIR, KernelSpec
from .problem import Problem, Tiles, validate


class Family(enum.Enum):
    SM80 = "sm80"    # portable: fp4 decoded to fp16 in registers, mma.sync; sm_80 and newer
    SM90A = "sm90a"  # Hopper: fp4 decoded to fp16, wgmma overlapped with the decode; sm_90a (9.0 only)
    SM120 = "sm120"  # native Blackwell FP4: block-scaled mma.sync; sm_120a, sm_121a (and its sm_90 twin)


class UnsupportedGpuError(RuntimeError):
    """No compiled kernel can run on this GPU."""


@dataclasses.dataclass(frozen=True)
class Variant:
    family: Family
    tile_m: int  # tokens per block: 128, or 16/32/64 (swap_ab only) for groups of few rows
    tile_n: int
    tile_k: int
    swap_ab: bool
    target: str  # "sm_90" / "sm_90a" / ... (cubin) or "compute_80" (PTX, compiled by the driver)

    @property
    def symbol(self) -> str:
        """The extern "C" name, the same in the .cu build, the cubin and the manifest."""
        return (f"{self.family.value}_nvfp4_grouped_gemm_m{self.tile_m}n{self.tile_n}k{self.tile_k}"
                + ("_swapab" if self.swap_ab else ""))

    @property
    def file(self) -> str:
        return f"{self.symbol}.{self.target}." + ("ptx" if self.target.startswith("compute_") else "cubin")


def target_for(capability: tuple[int, int], force_ptx: bool = False, twin: bool = False) -> tuple[Family, str]:
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
        return Family.SM120, "twin_sm_90"
    if force_ptx:
        return Family.SM80, "compute_80"
    if capability in ((12, 0), (12, 1)):
        return Family.SM120, f"sm_12{minor}a"
    if major == 8:
        return Family.SM80, "sm_80"
    if major == 9:
        return Family.SM80, "sm_90"
    return Family.SM80, "compute_80"


# The cuts the Hopper wgmma kernel (sm90a_nvfp4_grouped_gemm.cu) is built for: 128 tokens x
# tile_n weights, stages of 128 K, tokens on the MMA's M side. On a 9.0 GPU these cuts run there.
WGMMA_CUTS = (Tiles(128, 128, 128, False), Tiles(128, 256, 128, False))


def auto_tiles(problem: Problem, wgmma: bool = True) -> Tiles:
    """The cut used when the caller names none, from shapes alone (rows per group are on the GPU).

    The measurements behind each rule are in docs/perf-notes.md. With few rows per group on average,
    a token tile of 16/32/64 rows with the weights on the MMA's M side decodes each weight byte once
    per 16-64 tokens instead of once per mostly empty 128-row tile (3.4-4.3x faster at 4-16 rows on
    an H100), with tile_k = 256 (faster than 128 on every decode shape). Many rows per group:
    128 x 128 x 256. Where the wgmma kernel runs (``wgmma``: a 9.0 GPU), its widest cut above 32 rows
    per group: at 64 rows it ran 1.3x faster than the 64-token tile; at an average of 32 rows split
    unevenly (as routing does) the 32-token tile was as fast or 10% faster (H200).
    """
    rows = problem.cum_m / max(problem.num_groups, 1)
    if wgmma and rows > 32:
        return Tiles(128, 256, 128, False)
    if rows > 64:
        return Tiles(128, 128, 256, False)
    tile_m = 16 if rows <= 16 else 32 if rows <= 32 else 64
    return Tiles(tile_m, 128, 256, True)


def select_variant(problem: Problem, tiles: Tiles | None, capability: tuple[int, int],
                   force_ptx: bool | None = None, twin: bool | None = None,
                   portable: bool | None = None) -> Variant:
    """The kernel for ``problem`` cut by ``tiles`` (None: :func:`auto_tiles`) on a GPU of
    ``capability``; validates first.

    ``force_ptx`` / ``twin`` / ``portable`` default to the NVFP4_DRIVER_FORCE_PTX / _TWIN / _PORTABLE
    variables. On a 9.0 GPU the cuts in :data:`WGMMA_CUTS` run on the wgmma kernel unless
    ``portable``.
    """
    env = config.flags()
    force_ptx = env.force_ptx if force_ptx is None else force_ptx
    twin = env.twin if twin is None else twin
    portable = env.portable if portable is None else portable
    family, target = target_for(capability, force_ptx, twin)
    wgmma = target == "sm_90" and capability == (9, 0) and not portable
    if tiles is None:
        tiles = auto_tiles(problem, wgmma)
    validate(problem, tiles)
    if wgmma and tiles in WGMMA_CUTS:
        family, target = Family.SM90A, "sm_90a"
    elif tiles.tile_n == 256:
        raise UnsupportedGpuError(
            f"tile_n=256 runs on the Hopper wgmma kernel only (compute capability 9.0, without "
            f"NVFP4_DRIVER_PORTABLE, _FORCE_PTX or _TWIN); here the {family.value} kernel ({target}) serves "
            f"compute capability {capability[0]}.{capability[1]}: use tile_n 32, 64 or 128")
    variant = Variant(family, tiles.tile_m, tiles.tile_n, tiles.tile_k, tiles.swap_ab, target)
    if env.log:
        _log(problem, tiles, capability, variant)
    return variant


@functools.lru_cache(maxsize=256)
def _log(problem: Problem, tiles: Tiles, capability: tuple[int, int], variant: Variant) -> None:
    print(f"nvfp4_driver: G={problem.num_groups} N={problem.n} K={problem.k} cum_m={problem.cum_m} "
          f"{problem.out_dtype} tiles={tiles} on sm_{capability[0]}{capability[1]} -> "
          f"{variant.symbol} ({variant.target})", file=sys.stderr)


@functools.lru_cache(maxsize=1)
def manifest() -> dict:
    """cubins/manifest.json, read once."""
    path = CUBIN_DIR / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the installed package is incomplete")
    return json.loads(path.read_text())


# Builds of the native kernel for sm_90 that stand in for hardware we lack (build_cubins.py's proxy
# targets): the twin (its FP4 MMA modelled in software) and the standin (its MMA replaced by a cheap
# op). Only our tests and benchmarks use them, so the wheel leaves them out (pyproject.toml); a
# source checkout has them.
CHECKOUT_ONLY_TARGETS = ("twin_sm_90", "standin_sm_90")


def checkout_only_builds_missing(target: str = "twin_sm_90") -> str | None:
    """Why the manifest's ``target`` builds (one of :data:`CHECKOUT_ONLY_TARGETS`) cannot run here,
    or None when every one of them is present."""
    files = [e["targets"][target]["file"] for e in manifest()["kernels"].values() if target in e.get("targets", {})]
    missing = sum(not (CUBIN_DIR / name).exists() for name in files)
    if not missing:
        return None
    return (f"the {target} cubins exist only in a source checkout of nvfp4-driver ({missing} of {len(files)} "
            f"missing from {CUBIN_DIR}): they test the native Blackwell kernel on an sm_90 GPU and are not "
            f"shipped in the wheel. Run from a clone of the repository (its root on PYTHONPATH, or "
            f"'pip install -e .')" + (", or unset NVFP4_DRIVER_TWIN" if target.startswith("twin_") else ""))


@functools.lru_cache(maxsize=None)
def kernel_spec(variant: Variant) -> KernelSpec:
    """What the launcher needs for ``variant``, from the manifest."""
    entry = manifest()["kernels"].get(variant.symbol)
    if entry is None or variant.target not in entry["targets"]:
        raise UnsupportedGpuError(f"{variant.symbol} has no {variant.target} build in the manifest")
    if variant.target in CHECKOUT_ONLY_TARGETS and not (CUBIN_DIR / entry["targets"][variant.target]["file"]).exists():
        raise UnsupportedGpuError(checkout_only_builds_missing(variant.target))  # an installed wheel
    return KernelSpec(
        file=entry["targets"][variant.target]["file"],
        symbol=variant.symbol,
        threads=entry["threads"],
        smem_bytes=entry["smem_bytes"],
        param_types=tuple(p["type"] for p in entry["params"]),
    )


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
        kernel_spec(Variant(family, 128, 128, 128, True, target))
    except UnsupportedGpuError:
        return False
    return True


def grid(problem: Problem, variant: Variant) -> tuple[int, int, int]:
    """The launch grid from shapes alone (no m_indptr read): row tiles x column tiles.

    Rows: the most tiles of tile_m rows any m_indptr with m_indptr[G] <= cum_m can need, the sum
    of ceilings sum_g ceil(rows_g / tile_m) <= (cum_m + (tile_m - 1) * G) // tile_m.
    """
    tm = variant.tile_m
    return ((problem.cum_m + (tm - 1) * problem.num_groups) // tm, -(-problem.n // variant.tile_n), 1)


PROBE_SYMBOL = "nvfp4_probe"


def probe_spec(capability: tuple[int, int], force_ptx: bool | None = None) -> KernelSpec:
    """The argument-echo probe kernel (nvfp4_probe.cu) for a GPU: the loader's smoke test."""
    _family, target = target_for(capability, config.flags().force_ptx if force_ptx is None else force_ptx)
    if target.startswith("sm_12"):
        target = "compute_80"  # the probe is built for the portable targets only; PTX runs anywhere
    entry = manifest()["kernels"][PROBE_SYMBOL]
    return KernelSpec(file=entry["targets"][target]["file"], symbol=PROBE_SYMBOL, threads=entry["threads"],
                      smem_bytes=entry["smem_bytes"], param_types=tuple(p["type"] for p in entry["params"]))


@functools.lru_cache(maxsize=None)
def quantize_spec(symbol: str, capability: tuple[int, int], force_ptx: bool = False) -> KernelSpec:
    """A kernel of the quantizer family (nvfp4_quantize.cu: ``nvfp4_quantize_rows_bf16``, ...) for a
    GPU of ``capability``. Same targets as the GEMM (:func:`target_for`): sm_80/sm_90 cubins, sm_120a /
    sm_121a cubins on 12.0 / 12.1, the compute_80 PTX on every other GPU or with ``force_ptx``."""
    _family, target = target_for(capability, force_ptx)
    entry = manifest()["kernels"].get(symbol)
    if entry is None or entry.get("family") != "quantize" or target not in entry["targets"]:
        raise UnsupportedGpuError(f"{symbol} has no {target} build in the manifest")
    return KernelSpec(file=entry["targets"][target]["file"], symbol=symbol, threads=entry["threads"],
                      smem_bytes=entry["smem_bytes"], param_types=tuple(p["type"] for p in entry["params"]))
