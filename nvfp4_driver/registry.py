"""The kernel registry: ``cubins/manifest.json`` as typed entries, read once.

The manifest that build_cubins.py writes is the only table of kernels. Each entry here is one
``extern "C"`` symbol: its family, its cut of the work (``Tiles``, GEMM kernels) or its operation
(quantizer kernels), its ABI (a name and the parameter list) and one file per target. Everything
else asks this module: the valid cuts (:func:`gemm_cuts`), the kernel of a family and cut
(:func:`gemm`), of a quantizer operation (:func:`quantizer`), what a launch needs
(:meth:`KernelEntry.spec`) and the launch arguments' type (:meth:`KernelEntry.args`). No kernel
name is rebuilt from pieces. Pure Python: no GPU is needed to read it.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import re
from pathlib import Path
from typing import Mapping, NamedTuple

from .driver import CUBIN_DIR, KernelSpec


class UnsupportedGpuError(RuntimeError):
    """No compiled kernel can run on this GPU."""


@dataclasses.dataclass(frozen=True)
class Tiles:
    """A cut of the work (FlashInfer's arguments; the defaults are FlashInfer's); never changes
    the result. The cuts that exist are those of the manifest's GEMM kernels (:func:`gemm_cuts`):
    FlashInfer's (tile_m 128), token tiles of 16/32/64 rows for groups of few rows (tile_n 128,
    swap_ab only; 8 rows too, on Hopper's sm90ws kernel only), and 128 x 256 x 128 (tile_n 256: the
    Hopper wgmma kernel's and the warp-specialized sm_12x kernel's)."""

    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    swap_ab: bool = True


_TARGET = re.compile(r"^(?:(twin|standin)_)?(sm|compute)_(\d+?)(\d)(a?)$")


@dataclasses.dataclass(frozen=True)
class Target:
    """A build target as a value: ``sm_120a`` is Target("sm", 12, 0, arch_specific=True)."""

    kind: str                     # "sm": machine code; "compute": PTX that the driver compiles
    major: int
    minor: int
    arch_specific: bool = False   # the "a" suffix: machine code for exactly this major.minor
    proxy: str = ""               # "twin" / "standin": an sm_90 build that stands in for sm_120 hardware

    @classmethod
    def parse(cls, text: str) -> Target:
        m = _TARGET.match(text)
        if m is None:
            raise ValueError(f"{text!r} is not a build target such as 'sm_90', 'sm_120a', 'compute_80' or 'twin_sm_90'")
        proxy, kind, major, minor, a = m.groups()
        return cls(kind, int(major), int(minor), bool(a), proxy or "")

    @property
    def name(self) -> str:
        """The manifest's spelling, also the middle of the file name."""
        return (f"{self.proxy}_" if self.proxy else "") + f"{self.kind}_{self.major}{self.minor}" + (
            "a" if self.arch_specific else "")

    @property
    def is_ptx(self) -> bool:
        return self.kind == "compute"

    def __str__(self) -> str:
        return self.name


class Param(NamedTuple):
    name: str
    type: str  # "ptr" | "i64" | "i32" | "f32" | "tmap" (a CUtensorMap by value)


@dataclasses.dataclass(frozen=True, eq=False)  # one object per manifest entry: identity is equality
class KernelEntry:
    name: str                     # the extern "C" symbol, its files' stem and its manifest key
    family: str                   # "sm80" | "sm90a" | "sm90ws" | "sm90ws_splitk" | "sm120" | "sm120ws" | "probe" | "quantize": one source file
    source: str
    threads: int
    smem_bytes: int
    abi: str                      # kernels of one ABI take the same parameters: "grouped_gemm", "probe", an op
    params: tuple[Param, ...]
    files: Mapping[Target, str]   # one cubin or PTX per target
    tiles: Tiles | None = None    # GEMM kernels: the cut
    op: str | None = None         # quantizer kernels: the operation ("quantize_rows", ...)
    dtype: str | None = None      # row quantizer kernels: the unquantized side ("bf16", "f16", "f32")
    blocks_per_sm: int = 0        # persistent GEMM kernels: blocks per SM of their grid; 0: one block per tile

    def spec(self, target: Target, folder: Path | None = None) -> KernelSpec:
        """What the launcher needs to run this kernel's ``target`` build (the one place that makes a
        KernelSpec from the manifest); ``folder``: the build's cubins are there, not in the package."""
        return _spec(self, target, folder)

    @property
    def args(self) -> type:
        """The NamedTuple of this kernel's launch arguments, fields named and ordered as its parameters."""
        return args_type(self.abi)


# Builds of the native kernel for sm_90 that stand in for hardware we lack (build_cubins.py's proxy
# targets): the twin (its FP4 MMA modelled in software) and the standin (its MMA replaced by a cheap
# op). Only our tests and benchmarks use them, so the wheel leaves them out (pyproject.toml); a
# source checkout has them.
CHECKOUT_ONLY_TARGETS = ("twin_sm_90", "standin_sm_90")


@functools.lru_cache(maxsize=1)
def manifest() -> dict:
    """cubins/manifest.json, read once."""
    path = CUBIN_DIR / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the installed package is incomplete")
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def entries() -> dict[str, KernelEntry]:
    """Every kernel of the manifest by name."""
    return read_entries(manifest()["kernels"])


def read_entries(kernels: Mapping[str, dict]) -> dict[str, KernelEntry]:
    """The entries of a manifest's ``kernels`` table (this package's, or another build's for a
    benchmark's comparison)."""
    out = {}
    for name, e in kernels.items():
        tiles = Tiles(e["tile_m"], e["tile_n"], e["tile_k"], e["swap_ab"]) if "tile_m" in e else None
        out[name] = KernelEntry(
            name=name, family=e["family"], source=e["source"], threads=e["threads"], smem_bytes=e["smem_bytes"],
            abi=e["abi"], params=tuple(Param(p["name"], p["type"]) for p in e["params"]),
            files={Target.parse(t): b["file"] for t, b in e["targets"].items()},
            tiles=tiles, op=e.get("op"), dtype=e.get("dtype"), blocks_per_sm=e.get("blocks_per_sm", 0))
    return out


@functools.lru_cache(maxsize=1)
def _gemm_index() -> dict[tuple[str, Tiles], KernelEntry]:
    return {(e.family, e.tiles): e for e in entries().values() if e.tiles is not None}


def gemm(family: str, tiles: Tiles) -> KernelEntry:
    """The grouped-GEMM kernel of ``family`` ("sm80", "sm90a", "sm90ws", "sm90ws_splitk", "sm120", "sm120ws")
    compiled for ``tiles``."""
    found = _gemm_index().get((family, tiles))
    if found is None:
        raise UnsupportedGpuError(f"the {family} family has no kernel for {tiles} in the manifest")
    return found


@functools.lru_cache(maxsize=1)
def gemm_cuts() -> frozenset[Tiles]:
    """Every cut some grouped-GEMM kernel is compiled for: the valid ``Tiles``."""
    return frozenset(tiles for _family, tiles in _gemm_index())


@functools.lru_cache(maxsize=None)
def family_cuts(family: str) -> frozenset[Tiles]:
    """The cuts the grouped-GEMM kernels of ``family`` are compiled for."""
    return frozenset(tiles for fam, tiles in _gemm_index() if fam == family)


@functools.lru_cache(maxsize=None)
def quantizer(op: str, dtype: str | None = None) -> KernelEntry:
    """The quantizer kernel of ``op`` ("quantize_rows", "amax_rows", ...) for the unquantized dtype
    tag ``dtype`` ("bf16", "f16", "f32"; None for the scalar ops)."""
    for e in entries().values():
        if e.op == op and e.dtype == dtype:
            return e
    raise UnsupportedGpuError(f"the manifest has no quantizer kernel for op={op!r}, dtype={dtype!r}")


def probe() -> KernelEntry:
    """The argument-echo probe kernel (nvfp4_probe.cu): the loader's smoke test."""
    (found,) = (e for e in entries().values() if e.family == "probe")
    return found


def checkout_only_builds_missing(target: str = "twin_sm_90") -> str | None:
    """Why the manifest's ``target`` builds (one of :data:`CHECKOUT_ONLY_TARGETS`) cannot run here,
    or None when every one of them is present."""
    t = Target.parse(target)
    files = [e.files[t] for e in entries().values() if t in e.files]
    missing = sum(not (CUBIN_DIR / name).exists() for name in files)
    if not missing:
        return None
    return (f"the {target} cubins exist only in a source checkout of nvfp4-driver ({missing} of {len(files)} "
            f"missing from {CUBIN_DIR}): they test the native Blackwell kernel on an sm_90 GPU and are not "
            f"shipped in the wheel. Run from a clone of the repository (its root on PYTHONPATH, or "
            f"'pip install -e .')" + (", or unset NVFP4_DRIVER_TWIN" if target.startswith("twin_") else ""))


@functools.lru_cache(maxsize=None)
def _spec(entry: KernelEntry, target: Target, folder: Path | None) -> KernelSpec:
    file = entry.files.get(target)
    if file is None:
        raise UnsupportedGpuError(f"{entry.name} has no {target} build in the manifest")
    if folder is not None:
        file = str(folder / file)
    elif target.name in CHECKOUT_ONLY_TARGETS and not (CUBIN_DIR / file).exists():
        raise UnsupportedGpuError(checkout_only_builds_missing(target.name))  # an installed wheel
    return KernelSpec(file=file, symbol=entry.name, threads=entry.threads, smem_bytes=entry.smem_bytes,
                      param_types=tuple(p.type for p in entry.params))


@functools.lru_cache(maxsize=None)
def args_type(abi: str) -> type:
    """The launch arguments of the kernels of ``abi`` as a NamedTuple class (``GroupedGemmArgs``, ...),
    made from the manifest's parameter list; every kernel of one ABI lists the same parameters."""
    lists = {e.params for e in entries().values() if e.abi == abi}
    if len(lists) != 1:
        raise ValueError(f"ABI {abi!r}: {len(lists)} parameter lists in the manifest (need exactly one)")
    (params,) = lists
    name = "".join(part.capitalize() for part in abi.split("_")) + "Args"
    return collections.namedtuple(name, [p.name for p in params])
