"""Tensor maps for the TMA kernels (the sm120ws, sm90ws and sm90ws_splitk families), and their launch.

A warp-specialized kernel reads its operands through four ``CUtensorMap`` parameters (its ABI,
``grouped_gemm_tma``, is the grouped-GEMM parameter list plus ``tmap_a``, ``tmap_b``, ``tmap_sa``,
``tmap_sb``). A map depends only on an address, the tensor's dims and strides, the box and the
swizzle, so its 128 encoded bytes are cached under exactly those values: a reused address with the
same shape gets the same bytes, which is right, and ``cuTensorMapEncodeTiled`` is a pure host call
(no synchronisation, no context).

The maps (``nvfp4_grouped_gemm_ws.cuh`` reads them):

- ``a``: uint8 (K/2, cum_m), box (tile_k/2, tile_m), swizzled (64 B for tile_k 128, 128 B for 256).
- ``b``: uint8 (K/2, N, G), box (tile_k/2, tile_n, 1), swizzled alike.
- ``a_scale`` / ``b_scale`` as 256-byte lines of SPEC §3's 128x4 layout: uint8 (256, sf_k/2, blocks)
  with strides (256, 128*sf_k) and box (256, tile_k/32, 1), i.e. one 128-row block's k tile of
  (tile_k/64) * 512 contiguous bytes. The TMA unit works row by row of a box, so the widest rows
  it takes (256 elements) move the scales in 4-8 rows a stage; as 16-byte lines they took 64-128,
  as many as the weight tile itself. A tile of 256 weight rows takes the k tiles of two consecutive
  blocks of ``b_scale`` in one box (256, tile_k/32, 2); past the last block it zero-fills, and the
  rows past N it holds are never stored. ``a_scale`` counts only its whole 128-row blocks
  (``a_scale_rows``, what the other kernels bound their reads by), so nothing past the tensor is
  read and the copies zero-fill the rest, as they do past sf_k (K = 384 with tile_k 256).

Launches these kernels cannot take go to the same cut's sm120 kernel (sm90ws: sm80) (``fallback``): scale tensors
not 16-byte aligned (TMA needs it; the op accepts 4), an ``a_scale`` without one whole 128-row block,
2**31 tiles and more (the kernel's tile index is 32-bit), or no rows at all (cum_m = 0: no map of zero rows).
"""
from __future__ import annotations

import ctypes

from . import driver

_MAX_MAPS = 4096  # encoded maps kept; a serving loop sees a few per layer and batch size
_maps: dict = {}


def encode(ptr: int, dims: tuple[int, ...], strides: tuple[int, ...], box: tuple[int, ...], swizzle: int) -> bytes:
    """The 128 bytes of a uint8 tiled tensor map: ``dims`` innermost first, ``strides`` in bytes of
    dims 1.., ``box`` in elements, ``swizzle`` the span in bytes (0, 64 or 128); zero fill out of bounds."""
    key = (ptr, dims, strides, box, swizzle)
    found = _maps.get(key)
    if found is not None:
        return found
    drv = driver.driver()
    u64, u32 = drv.cuuint64_t, drv.cuuint32_t
    swizzles = {0: drv.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_NONE,
                64: drv.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_64B,
                128: drv.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B}
    tmap = driver.check(drv.cuTensorMapEncodeTiled(
        drv.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_UINT8, len(dims), ptr, [u64(d) for d in dims],
        [u64(s) for s in strides], [u32(b) for b in box], [u32(1)] * len(dims),
        drv.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE, swizzles[swizzle],
        drv.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
        drv.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
        f"cuTensorMapEncodeTiled(dims={dims}, strides={strides}, box={box}, swizzle={swizzle})")
    raw = ctypes.string_at(int(tmap.getPtr()), 128)
    if len(_maps) >= _MAX_MAPS:
        _maps.clear()
    _maps[key] = raw
    return raw


def gemm_map_shapes(problem, tiles, a_scale_rows: int) -> dict:
    """{operand: (dims, strides, box, swizzle)} of the four maps (the module docstring's table)."""
    p, t = problem, tiles
    row = p.k // 2
    span = t.tile_k // 2  # one swizzle span per stage row: 64 or 128 bytes
    lines = p.sf_k // 2  # 256-byte lines of one 128-row scale block (128 * sf_k bytes)
    sf_box = (256, t.tile_k // 32, 1)
    sb_box = (256, t.tile_k // 32, max(1, t.tile_n // 128))  # every 128-row block of the weight tile
    sf_strides = (256, 128 * p.sf_k)
    return {
        "a": ((row, p.cum_m), (row,), (span, t.tile_m), span),
        "b": ((row, p.n, p.num_groups), (row, p.n * row), (span, t.tile_n, 1), span),
        "a_scale": ((256, lines, a_scale_rows // 128), sf_strides, sf_box, 0),
        "b_scale": ((256, lines, p.num_groups * p.n_pad // 128), sf_strides, sb_box, 0),
    }


class TmaGemmLaunch:
    """The launch of one TMA kernel (sm120ws, sm90ws, sm90ws_splitk) for one plan, with the interface of
    driver.PreparedKernel:
    ``launch(grid, stream, args)`` takes the grouped-GEMM arguments (plans.Plan.args' order), adds
    the tensor maps of their addresses and launches on the persistent grid; the ``grid`` it is
    given (the plan's) only says whether there is anything to do."""

    __slots__ = ("kernel", "grid", "fallback", "fallback_grid", "shapes", "usable", "_recent")

    def __init__(self, kernel, grid, fallback, fallback_grid, problem, tiles, a_scale_rows: int, tiles_total: int):
        self.kernel, self.grid = kernel, grid
        self.fallback, self.fallback_grid = fallback, fallback_grid
        self.shapes = gemm_map_shapes(problem, tiles, a_scale_rows)
        # cum_m = 0 (an empty batch): a map of no rows cannot be encoded; the fallback finds no rows.
        self.usable = a_scale_rows >= 128 and tiles_total < 2**31 and 0 < problem.cum_m < 2**31
        # The maps of the addresses this plan saw last, by the four addresses alone (the shapes are the
        # plan's): one lookup of a 4-int key per launch instead of four of nested tuples (~2 us).
        self._recent: dict = {}

    def launch(self, grid, stream: int, args: tuple) -> None:
        a, b, a_scale, b_scale = args[0], args[1], args[2], args[3]
        if not self.usable or (a_scale | b_scale) & 15:
            self.fallback.launch(self.fallback_grid, stream, args)
            return
        key = (a, b, a_scale, b_scale)
        maps = self._recent.get(key)
        if maps is None:
            s = self.shapes
            # cuTensorMapEncodeTiled wants a current context (CUDA_ERROR_INVALID_CONTEXT otherwise: a
            # caller with no torch, as selftest, has none); only a miss pays for the guard.
            with driver._ContextGuard(self.kernel.ordinal):
                maps = (encode(a, *s["a"]), encode(b, *s["b"]), encode(a_scale, *s["a_scale"]),
                        encode(b_scale, *s["b_scale"]))
            if len(self._recent) >= 64:
                self._recent.clear()
            self._recent[key] = maps
        self.kernel.launch(self.grid, stream, tuple(args) + maps)
