"""What is asked (``Problem``), how the caller wants it cut (``Tiles``, whose valid values are the
compiled cuts of the kernel registry), and the one predicate that says whether the pair is valid
(``validate``, SPEC §2). Pure Python: testable without a GPU."""
from __future__ import annotations

import dataclasses

from . import registry
from .dtypes import OUT_DTYPES
from .registry import Tiles

_INT32_MAX = 2**31 - 1
_GRID_Y_MAX = 65535


@dataclasses.dataclass(frozen=True)
class Problem:
    """One grouped GEMM: ``out[cum_m, n] = A[cum_m, k] @ B[g, n, k]^T`` per group, G = num_groups."""

    num_groups: int  # G = m_indptr.numel() - 1
    n: int           # output columns per group (rows of each b[g])
    k: int           # reduction length, 2 * a.shape[1]
    cum_m: int       # rows of a and out (the groups use [m_indptr[0], m_indptr[G]) of them)
    out_dtype: str   # "bfloat16" | "float16"

    @property
    def n_pad(self) -> int:
        """Rows of each group's b_scale block: N rounded up to the 128-row scale atom."""
        return (self.n + 127) // 128 * 128

    @property
    def sf_k(self) -> int:
        """Scale bytes per row: one ue4m3 per 16 elements of K."""
        return self.k // 16


def validate(problem: Problem, tiles: Tiles) -> None:
    """Raise ValueError/TypeError naming the values if ``problem`` cut by ``tiles`` is not valid."""
    p, t = problem, tiles
    if p.num_groups < 0:
        raise ValueError(f"m_indptr must have at least 1 entry (G+1 with G >= 0), got G={p.num_groups}")
    if p.n <= 0 or p.n % 8:
        raise ValueError(f"N={p.n} must be a positive multiple of 8 (b.shape[1])")
    if p.k <= 0 or p.k % 128:
        raise ValueError(f"K={p.k} must be a positive multiple of 128 (K = 2 * a.shape[1])")
    if p.cum_m < 0:
        raise ValueError(f"cum_m={p.cum_m} must be >= 0")
    if p.out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype={p.out_dtype!r} must be one of {OUT_DTYPES}")
    if type(t.swap_ab) is not bool:
        raise TypeError(f"swap_ab must be a bool, got {t.swap_ab!r}")
    cuts = registry.gemm_cuts()
    for name in ("tile_m", "tile_n", "tile_k"):
        value, choices = getattr(t, name), tuple(sorted({getattr(c, name) for c in cuts}))
        if type(value) is not int or value not in choices:
            raise ValueError(f"{name}={value!r} must be one of {choices}")
    if t not in cuts:
        # Name the cuts that share the unusual choice: tile_n 256 is the Hopper wgmma kernel's and the sm_12x
        # warp-specialized kernel's cut, tile_m < 128 a token tile for groups of few rows.
        name, value = ("tile_n", t.tile_n) if t.tile_n == 256 else ("tile_m", t.tile_m)
        built = sorted((c.tile_m, c.tile_n, c.tile_k, c.swap_ab) for c in cuts if getattr(c, name) == value)
        raise ValueError(f"tile_m={t.tile_m}, tile_n={t.tile_n}, tile_k={t.tile_k}, swap_ab={t.swap_ab} is not a "
                         f"compiled cut: {name}={value} is compiled only as (tile_m, tile_n, tile_k, swap_ab) "
                         f"in {built}")
    if p.k > _INT32_MAX or p.n > _INT32_MAX or p.num_groups > _INT32_MAX:
        raise ValueError(f"N={p.n}, K={p.k} and G={p.num_groups} must each fit in int32")
    if -(-p.n // t.tile_n) > _GRID_Y_MAX:
        raise ValueError(f"N={p.n} needs {-(-p.n // t.tile_n)} column tiles of {t.tile_n}; at most {_GRID_Y_MAX}")
    if p.cum_m + 127 * p.num_groups > _INT32_MAX:
        raise ValueError(f"cum_m={p.cum_m} with G={p.num_groups} is too large: cum_m + 127*G must fit int32 "
                         f"(the row-tile grid)")


def requested_tiles(tile_m, tile_n, tile_k, swap_ab) -> Tiles | None:
    """The caller's tile arguments as a Tiles, or None when all four are None (the automatic cut).
    Naming any of them keeps FlashInfer's defaults (128, 128, 128, True) for the rest."""
    if tile_m is None and tile_n is None and tile_k is None and swap_ab is None:
        return None
    d = Tiles()
    return Tiles(d.tile_m if tile_m is None else tile_m, d.tile_n if tile_n is None else tile_n,
                 d.tile_k if tile_k is None else tile_k, d.swap_ab if swap_ab is None else swap_ab)


def validate_request(problem: Problem, tiles: Tiles | None) -> None:
    """validate() for a request that may leave the cut to the package (tiles None)."""
    validate(problem, Tiles() if tiles is None else tiles)
