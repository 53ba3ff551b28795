"""Plans: what a call's metadata decides (the problem, the kernel, the grid, the launch's constant
arguments), computed once and kept under a key of that metadata. The checks that make a plan are in
``checks.py``; the public functions that use them in ``ops.py``."""
from __future__ import annotations

import dataclasses
import sys

from . import driver, registry, tensor_maps
from .config import Flags
from .problem import Problem
from .variants import Family, grid, kernel_spec, select_variant, tile_counts, variant_for

NAMES = ("a", "b", "a_scale", "b_scale", "m_indptr", "alpha", "out")  # the GEMM's arrays, in launch order
_OUT_DTYPE_CODE = {"bfloat16": 0, "float16": 1}
_MAX_PLANS = 4096  # distinct metadata kept; a serving loop sees one per batch size and layer shape


class Plan:
    """A validated problem, cut and NVFP4_DRIVER_* setting; the kernel and grid per GPU, made lazily."""

    __slots__ = ("problem", "tiles", "flags", "a_scale_nbytes", "a_scale_rows", "args_type", "tail", "_kernels")

    @property
    def ptr_sizes(self) -> dict:
        """Elements of each buffer of the raw-pointer entry point (for its NULL and alignment checks)."""
        p = self.problem
        return {"a": p.cum_m * p.k // 2, "b": p.num_groups * p.n * p.k // 2, "a_scale": self.a_scale_nbytes,
                "b_scale": p.num_groups * p.n_pad * p.sf_k, "m_indptr": p.num_groups + 1, "out": p.cum_m * p.n}

    def __init__(self, problem: Problem, tiles, a_scale_nbytes: int, flags: Flags):
        p = problem
        self.problem, self.tiles, self.flags, self.a_scale_nbytes = problem, tiles, flags, a_scale_nbytes
        # The kernel bounds its a_scale reads by rows, and the swizzle spreads a row's bytes over its
        # whole 128-row block: only whole blocks inside the tensor may be read, so round down.
        rows = self.a_scale_rows = a_scale_nbytes // (128 * p.sf_k) * 128
        # The kernel's scalar parameters, named as in its ABI; the arrays' addresses come per call.
        constants = {"cum_m": p.cum_m, "a_scale_rows": rows, "n": p.n, "k": p.k, "num_groups": p.num_groups,
                     "out_dtype": _OUT_DTYPE_CODE[p.out_dtype]}
        # The same values in the ABI's order, after the addresses (args) or for the torch fast path's
        # positional launch (TorchPlan).
        self.tail = tuple(constants.values())
        self.args_type = registry.args_type("grouped_gemm")  # every GEMM kernel has this ABI
        if NAMES + tuple(constants) != self.args_type._fields:
            raise RuntimeError(f"the manifest's grouped_gemm parameters {self.args_type._fields} are not "
                               f"{NAMES + tuple(constants)}: the package and its cubins disagree")
        self._kernels: dict[int, tuple] = {}

    def args(self, a: int, b: int, a_scale: int, b_scale: int, m_indptr: int, alpha: int, out: int) -> tuple:
        """The launch arguments (a GroupedGemmArgs) for these addresses. Positional: the field order is
        checked once in __init__, and keywords cost twice as much on every launch."""
        return self.args_type._make((a, b, a_scale, b_scale, m_indptr, alpha, out) + self.tail)

    def kernel(self, ordinal: int) -> tuple:
        """(launcher, grid) on GPU ``ordinal``: a PreparedKernel, or for the TMA kernels a
        tensor_maps.TmaGemmLaunch; either takes ``launch(grid, stream, self.args(...))``."""
        found = self._kernels.get(ordinal)
        if found is None:
            info = driver.device_info(ordinal)
            f = self.flags
            variant = select_variant(self.problem, self.tiles, info.capability, force_ptx=f.force_ptx, twin=f.twin,
                                     portable=f.portable, log=f.log)
            found = self._kernels[ordinal] = launcher(self.problem, variant, self.a_scale_rows, ordinal,
                                                      info.sm_count)
        return found


def launcher(problem: Problem, variant, a_scale_rows: int, ordinal: int, sm_count: int, spec=None) -> tuple:
    """(launcher, grid) of ``variant`` on GPU ``ordinal``; ``spec``: another build of it (benchmarks).
    A TMA kernel's launcher adds the tensor maps, and falls back to the same cut of the sm120 kernel
    (sm90ws: of the portable one) where the maps cannot serve (tensor_maps.py); for a cut that kernel
    lacks, to its nearest one: tile_n 256 to 128 columns, tile_m 8 to 16 tokens (a cut never changes
    the sums)."""
    spec = spec or kernel_spec(variant)
    kernel, launch_grid = driver.prepared(spec, ordinal), grid(problem, variant, sm_count)
    if variant.entry.abi != "grouped_gemm_tma":
        return kernel, launch_grid
    t = variant.tiles
    old_tiles = dataclasses.replace(t, tile_m=max(t.tile_m, 16), tile_n=min(t.tile_n, 128))
    hopper = variant.family in (Family.SM90WS, Family.SM90WS_SPLITK)
    old = variant_for(Family.SM80 if hopper else Family.SM120, old_tiles, variant.target)
    rows, cols = tile_counts(problem, variant.tiles)
    tma = tensor_maps.TmaGemmLaunch(kernel, launch_grid, driver.prepared(kernel_spec(old), ordinal),
                                    grid(problem, old), problem, variant.tiles, a_scale_rows, rows * cols)
    return tma, launch_grid


array_plans: dict = {}    # DeviceArray metadata key -> Plan
pointer_plans: dict = {}  # raw-pointer entry point's sizes, tiles and flags -> Plan
torch_plans: dict = {}    # torch metadata key -> TorchPlan


def remember(cache: dict, key, value) -> None:
    if len(cache) >= _MAX_PLANS:
        cache.clear()  # crude but bounded; a serving loop refills what it uses in one step
    cache[key] = value


def _array_key(arr):
    return None if arr is None else (arr.shape, arr.strides, arr.dtype, arr.device, arr.readonly, arr.framework)


def meta_key(arrays: dict, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags):
    """The plan key of one call, or None where a value's type could make a cache hit lie (128.0 ==
    128, True == 1) or cannot be hashed: such calls take the full checks every time."""
    if not plain_tiles(tile_m, tile_n, tile_k, swap_ab):
        return None
    key = (tuple(_array_key(arrays.get(name)) for name in NAMES), tile_m, tile_n, tile_k, swap_ab,
           type(out_dtype), out_dtype, flags)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def plain_tiles(tile_m, tile_n, tile_k, swap_ab) -> bool:
    """Tile arguments a plan key may hold: ints / a bool, or None (automatic). Other types could make
    a cache hit lie (128.0 == 128, True == 1); such calls take the full checks every time."""
    return ((tile_m is None or type(tile_m) is int) and (tile_n is None or type(tile_n) is int)
            and (tile_k is None or type(tile_k) is int) and (swap_ab is None or type(swap_ab) is bool))



class TorchPlan:
    """What the fast path needs for one torch metadata key: the launch and the output's description.

    The fast path launches with a plain tuple, the seven addresses then ``tail``, in the order that
    Plan checked against its args_type (GroupedGemmArgs): building the NamedTuple costs 0.43 us a call more than the
    tuple (CPython 3.11, 2026-12-03), a few percent of the whole torch call.

    The key (see the public function) holds, per tensor, exactly what the checks depended on: shape,
    dtype, device and contiguity (torch's is_contiguous() is our C-order rule: size-1 dimensions and
    empty tensors are contiguous). A hit therefore passed every metadata check before; only the
    addresses are new, and the public function checks them.
    """

    __slots__ = ("launch", "grid", "tail", "ordinal", "out_shape", "out_dtype", "device")

    def __init__(self, plan: Plan, ordinal: int, device):
        torch = sys.modules["torch"]
        kernel, self.grid = plan.kernel(ordinal)
        self.launch = kernel.launch if self.grid[0] and self.grid[1] else None  # None: nothing to write
        self.tail, self.ordinal, self.device = plan.tail, ordinal, device
        self.out_shape = (plan.problem.cum_m, plan.problem.n)
        self.out_dtype = getattr(torch, plan.problem.out_dtype)


def torch_key(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags):
    """The fast path's key, as the public function builds it inline."""
    def meta(x):
        return None if x is None else (x.shape, x.dtype, x.get_device(), x.is_contiguous())

    a, b, a_scale, b_scale, m_indptr, alpha, out = given
    return (*meta(a), *meta(b), *meta(a_scale), *meta(b_scale), *meta(m_indptr), meta(alpha), meta(out),
            tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)


def remember_torch(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags, plan, ordinal) -> None:
    try:
        key = torch_key(given, tile_m, tile_n, tile_k, swap_ab, out_dtype, flags)
        hash(key)
    except TypeError:
        return
    remember(torch_plans, key, TorchPlan(plan, ordinal, given[0].device))
