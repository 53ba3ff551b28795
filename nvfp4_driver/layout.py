"""Index math of the NVFP4 scale-factor layout (SPEC §3): CUTLASS's 128x4 block-scale atom.

Everything here is host-side integer arithmetic on NumPy int64 (a weight tensor can pass
4 GiB, so 32-bit offsets are never safe). No GPU and no torch import is needed.

Terms used in every docstring:

- ``sf_k``: scale columns per row, ``K / 16``. The atom is 4 columns wide, so ``sf_k`` must be
  a multiple of 4; the GEMM contract (``K % 128 == 0``) makes it a multiple of 8.
- "swizzled": a ``(rows_pad, sf_k)`` uint8 buffer whose flat bytes are placed by
  :func:`swizzled_offset`, with ``rows_pad`` a multiple of 128.
- "row-major": a plain ``(rows, sf_k)`` uint8 array, one scale byte per 16 elements along K.
"""

from __future__ import annotations

import numpy as np

SF_VEC = 16
"""Elements along K that share one scale byte."""

SF_ROW_TILE = 128
"""Rows of one swizzle atom; scale buffers are padded to a multiple of it."""

SF_COL_TILE = 4
"""Scale columns of one swizzle atom."""

_ATOM_BYTES = SF_ROW_TILE * SF_COL_TILE  # 512


def _host_numpy(x, what: str) -> np.ndarray:
    """Return ``x`` as a NumPy array on the host.

    Accepts NumPy arrays, lists, and torch tensors (detached and copied to the CPU; for a
    GPU tensor that copy synchronizes, which is why only host-side helpers call this).
    A torch float8 tensor comes back as its uint8 bytes (NumPy has no float8 dtype).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.element_size() == 1 and x.dtype.is_floating_point:
            # torch float8 has no NumPy dtype; its bytes are what we want anyway.
            import torch

            x = x.view(torch.uint8)
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: cannot convert {type(x).__name__} to a NumPy array") from exc


def _host_bytes(x, what: str) -> np.ndarray:
    """``x`` as a uint8 NumPy array (any one-byte dtype is reinterpreted, not converted)."""
    arr = _host_numpy(x, what)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.itemsize == 1 and arr.dtype.kind != "b":
        return arr.view(np.uint8)
    raise TypeError(f"{what} must hold bytes (uint8 or another one-byte dtype), got dtype {arr.dtype}")


def _check_sf_k(sf_k) -> int:
    if isinstance(sf_k, (bool, np.bool_)) or not isinstance(sf_k, (int, np.integer)):
        raise TypeError(f"sf_k must be an int, got {type(sf_k).__name__} {sf_k!r}")
    sf_k = int(sf_k)
    if sf_k <= 0 or sf_k % SF_COL_TILE:
        raise ValueError(
            f"sf_k={sf_k} must be a positive multiple of {SF_COL_TILE} (the swizzle atom is "
            f"{SF_COL_TILE} scale columns wide; K % 128 == 0 gives sf_k % 8 == 0)"
        )
    return sf_k


def _check_count(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name}={value} must be >= 0")
    return int(value)


def swizzled_offset(row, kb, sf_k: int):
    """Byte offset of scale ``(row, kb)`` in a swizzled buffer with ``sf_k`` columns (SPEC §3).

        swz(r, kb) = (r // 128) * (128 * sf_k) + (kb // 4) * 512
                   + (r % 32) * 16 + ((r % 128) // 32) * 4 + (kb % 4)

    Args:
        row: int or integer array, ``>= 0``: the scale row (a row of A or of B).
        kb: int or integer array, ``0 <= kb < sf_k``: the 16-element block index along K.
            ``row`` and ``kb`` broadcast against each other.
        sf_k: scale columns per row, a positive multiple of 4.

    Returns:
        A Python int when both ``row`` and ``kb`` are scalars, else an int64 ndarray of the
        broadcast shape.
    """
    sf_k = _check_sf_k(sf_k)
    scalar = np.ndim(row) == 0 and np.ndim(kb) == 0
    r = np.asarray(row)
    c = np.asarray(kb)
    for name, v in (("row", r), ("kb", c)):
        if v.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integer, got dtype {v.dtype}")
    r = r.astype(np.int64, copy=False)
    c = c.astype(np.int64, copy=False)
    if r.size and r.min() < 0:
        raise ValueError(f"row must be >= 0, got min {int(r.min())}")
    if c.size and (c.min() < 0 or c.max() >= sf_k):
        raise ValueError(f"kb must be in [0, sf_k={sf_k}), got range [{int(c.min())}, {int(c.max())}]")
    off = (
        (r // SF_ROW_TILE) * (SF_ROW_TILE * sf_k)
        + (c // SF_COL_TILE) * _ATOM_BYTES
        + (r % 32) * 16
        + ((r % SF_ROW_TILE) // 32) * 4
        + (c % SF_COL_TILE)
    )
    return int(off) if scalar else off


def padded_n(n: int) -> int:
    """Scale rows of one B group: ``ceil(n / 128) * 128`` (``N_pad`` of SPEC §2).

    ``b_scale`` has shape ``(G, padded_n(N), K / 16)`` uint8.
    """
    n = _check_count(n, "n")
    return -(-n // SF_ROW_TILE) * SF_ROW_TILE


def _host_indptr(m_indptr) -> np.ndarray:
    """``m_indptr`` as a validated int64 host array of shape ``(G + 1,)``."""
    arr = _host_numpy(m_indptr, "m_indptr")
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"m_indptr must be 1-D with G + 1 >= 1 entries, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"m_indptr must be integer, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr[0] < 0:
        raise ValueError(f"m_indptr[0]={int(arr[0])} must be >= 0")
    steps = np.diff(arr)
    if steps.size and steps.min() < 0:
        g = int(np.argmin(steps))
        raise ValueError(
            f"m_indptr must be non-decreasing, but m_indptr[{g}]={int(arr[g])} > "
            f"m_indptr[{g + 1}]={int(arr[g + 1])}"
        )
    return arr


def a_scale_group_bases(m_indptr) -> np.ndarray:
    """First scale row of every group in ``a_scale``: ``sf_base(g)`` of SPEC §3.

        sf_base(g) = ((m_indptr[g] + g * 127) // 128) * 128

    Row ``m`` of group ``g`` (0-based within the group) has its scales at row
    ``sf_base(g) + m`` of the swizzled ``a_scale``. This is *not* a tight stacking of
    per-group blocks: for three groups of 128 rows the bases are 0, 128, 384.

    Args:
        m_indptr: ``(G + 1,)`` non-decreasing integers (list, NumPy array, or torch tensor;
            a GPU tensor is copied to the host, which synchronizes: host-side helper only).

    Returns:
        ``(G,)`` int64 ndarray.
    """
    ind = _host_indptr(m_indptr)
    g = np.arange(ind.shape[0] - 1, dtype=np.int64)
    return ((ind[:-1] + g * (SF_ROW_TILE - 1)) // SF_ROW_TILE) * SF_ROW_TILE


def a_scale_rows(m_indptr) -> int:
    """Scale rows ``a_scale`` needs for this ``m_indptr``: ``cum_m_padded`` of SPEC §3.

        cum_m_padded = ((m_indptr[G] + 127 * G) // 128) * 128

    Allocate ``a_scale`` as ``(a_scale_rows(m_indptr), K / 16)`` uint8. Always a multiple of
    128; every group's rows ``[sf_base(g), sf_base(g) + size_g)`` fit below it.

    Args:
        m_indptr: ``(G + 1,)`` non-decreasing integers (list, NumPy array, or torch tensor;
            a GPU tensor is copied to the host, which synchronizes: host-side helper only).
    """
    ind = _host_indptr(m_indptr)
    groups = ind.shape[0] - 1
    return int(((ind[-1] + (SF_ROW_TILE - 1) * groups) // SF_ROW_TILE) * SF_ROW_TILE)


def a_scale_rows_upper_bound(cum_m: int, num_groups: int) -> int:
    """Scale rows that suffice for *any* ``m_indptr`` of ``num_groups`` groups with
    ``m_indptr[G] <= cum_m``: ``((cum_m + 127 * G) // 128) * 128``.

    Lets a caller size ``a_scale`` from shapes alone, without reading ``m_indptr``.
    """
    cum_m = _check_count(cum_m, "cum_m")
    num_groups = _check_count(num_groups, "num_groups")
    return ((cum_m + (SF_ROW_TILE - 1) * num_groups) // SF_ROW_TILE) * SF_ROW_TILE


def swizzle_scales(sf) -> np.ndarray:
    """Row-major scales -> the swizzled 128x4 layout.

    Args:
        sf: ``(rows, sf_k)`` bytes, row-major (uint8 or any one-byte dtype, NumPy or torch);
            ``sf_k`` a multiple of 4.

    Returns:
        ``(rows_pad, sf_k)`` uint8, ``rows_pad = ceil(rows / 128) * 128``, whose flat bytes
        hold scale ``(r, kb)`` at :func:`swizzled_offset` ``(r, kb, sf_k)``. Padding rows are 0.
    """
    sf = _host_bytes(sf, "sf")
    if sf.ndim != 2:
        raise ValueError(f"sf must be 2-D (rows, sf_k), got shape {sf.shape}")
    rows, sf_k = sf.shape
    sf_k = _check_sf_k(sf_k)
    rows_pad = padded_n(rows)
    padded = np.zeros((rows_pad, sf_k), dtype=np.uint8)
    padded[:rows] = sf
    # Row-major (t, i, j, c, l) indices, row = t*128 + i*32 + j, to swizzled (t, c, j, i, l).
    split = padded.reshape(rows_pad // SF_ROW_TILE, 4, 32, sf_k // SF_COL_TILE, SF_COL_TILE)
    return np.ascontiguousarray(split.transpose(0, 3, 2, 1, 4)).reshape(rows_pad, sf_k)


def unswizzle_scales(buf, rows: int, sf_k: int) -> np.ndarray:
    """Swizzled scales -> row-major; the inverse of :func:`swizzle_scales`.

    Args:
        buf: bytes (flat or any shape, uint8 or a one-byte dtype, NumPy or torch) holding at
            least ``ceil(rows / 128) * 128 * sf_k`` bytes in the swizzled layout; extra
            trailing bytes are ignored.
        rows: scale rows to read back.
        sf_k: scale columns per row, a multiple of 4.

    Returns:
        ``(rows, sf_k)`` uint8, a fresh array.
    """
    rows = _check_count(rows, "rows")
    sf_k = _check_sf_k(sf_k)
    flat = _host_bytes(buf, "buf").reshape(-1)
    rows_pad = padded_n(rows)
    need = rows_pad * sf_k
    if flat.size < need:
        raise ValueError(
            f"buf has {flat.size} bytes but rows={rows} (padded to {rows_pad}) x sf_k={sf_k} needs {need}"
        )
    # Swizzled (t, c, j, i, l) back to row-major (t, i, j, c, l): the same axis swap.
    atoms = flat[:need].reshape(rows_pad // SF_ROW_TILE, sf_k // SF_COL_TILE, 32, 4, SF_COL_TILE)
    rowmajor = atoms.transpose(0, 3, 2, 1, 4).reshape(rows_pad, sf_k)
    return np.ascontiguousarray(rowmajor[:rows])
