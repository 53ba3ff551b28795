"""The 128x4 scale interleave on the tensor's own device: plain scale bytes <-> the GEMM's layout.

    buf = interleave_scales(sf)                  # (rows, K/16) row-major -> (rows_pad, K/16) swizzled
    sf = deinterleave_scales(buf, rows, K // 16)  # and back

A torch tensor is rearranged with torch tensor ops where it lives (on a CUDA tensor that is a few
GPU kernels: a zero-padded copy, then one permuting copy; nothing is copied to the host and nothing
waits). Anything else (NumPy arrays, lists) goes through the NumPy functions of
:mod:`nvfp4_driver.layout`, which hold the index math (SPEC §3, :func:`layout.swizzled_offset`).

A 3-D input is a batch of matrices, one per leading index (``b_scale`` is ``(G, N_pad, K/16)``):
each is interleaved on its own, as ``quantize_weights`` lays out each expert's block.
"""
from __future__ import annotations

import sys

import numpy as np

from .layout import SF_COL_TILE, SF_ROW_TILE, _check_count, _check_sf_k, padded_n, swizzle_scales, unswizzle_scales

__all__ = ["interleave_scales", "deinterleave_scales"]


def interleave_scales(sf):
    """Row-major ue4m3 scale bytes -> the 128x4-swizzled layout the GEMM and the quantizers use.

    Args:
        sf: ``(rows, sf_k)`` or a batch ``(B, rows, sf_k)`` of scale bytes, row-major: ``sf_k = K/16``
            columns, a multiple of 4. uint8 or any one-byte dtype (a torch float8 tensor is read as its
            bytes); a torch tensor on any device, or a NumPy array / anything ``np.asarray`` takes.

    Returns:
        uint8 ``(rows_pad, sf_k)`` (or ``(B, rows_pad, sf_k)``), ``rows_pad = ceil(rows / 128) * 128``,
        C-contiguous, whose flat bytes (per batch entry) hold scale ``(r, kb)`` at
        ``layout.swizzled_offset(r, kb, sf_k)``; the padding rows are 0. A torch tensor comes back on
        the input's device, anything else as a NumPy array.
    """
    torch = _torch_of(sf)
    if torch is None:
        arr = np.asarray(sf)
        if arr.ndim == 3:
            _check_sf_k(arr.shape[2])
            return np.stack([swizzle_scales(m) for m in arr]) if arr.shape[0] else np.zeros(
                (0, padded_n(arr.shape[1]), arr.shape[2]), dtype=np.uint8)
        return swizzle_scales(arr)
    sf = _torch_bytes(torch, sf, "sf")
    if sf.dim() not in (2, 3):
        raise ValueError(f"sf.shape={tuple(sf.shape)} must be 2-D (rows, K/16) or 3-D (B, rows, K/16)")
    *batch, rows, sf_k = sf.shape
    sf_k = _check_sf_k(sf_k)
    rows_pad = padded_n(rows)
    padded = sf.new_zeros((*batch, rows_pad, sf_k))
    padded[..., :rows, :] = sf
    count = batch[0] if batch else 1
    # Row r = t*128 + i*32 + j, column c*4 + l: row-major (t, i, j, c, l) -> swizzled (t, c, j, i, l).
    atoms = padded.reshape(count, rows_pad // SF_ROW_TILE, 4, 32, sf_k // SF_COL_TILE, SF_COL_TILE)
    return atoms.permute(0, 1, 4, 3, 2, 5).contiguous().reshape(*batch, rows_pad, sf_k)


def deinterleave_scales(buf, rows: int, sf_k: int):
    """The inverse of :func:`interleave_scales`: swizzled scale bytes -> row-major ``(rows, sf_k)``.

    Args:
        buf: one swizzled matrix, any shape (flat, or ``(rows_pad, sf_k)``), holding at least
            ``ceil(rows / 128) * 128 * sf_k`` bytes (extra trailing bytes are ignored); or a 3-D batch
            ``(B, rows_pad', sf_k)``, each entry holding at least that many bytes. uint8 or a one-byte
            dtype; torch on any device, or NumPy.
        rows: scale rows to read back (per batch entry).
        sf_k: scale columns per row (``K/16``), a multiple of 4.

    Returns:
        uint8 ``(rows, sf_k)`` (or ``(B, rows, sf_k)`` for a 3-D ``buf``), a fresh C-contiguous array
        on ``buf``'s device (torch) or NumPy.
    """
    rows = _check_count(rows, "rows")
    sf_k = _check_sf_k(sf_k)
    torch = _torch_of(buf)
    if torch is None:
        arr = np.asarray(buf)
        if arr.ndim == 3:
            _check_batch_entry(arr.shape, rows, sf_k)
            return np.stack([unswizzle_scales(m, rows, sf_k) for m in arr]) if arr.shape[0] else np.zeros(
                (0, rows, sf_k), dtype=np.uint8)
        return unswizzle_scales(arr, rows, sf_k)
    buf = _torch_bytes(torch, buf, "buf")
    rows_pad = padded_n(rows)
    need = rows_pad * sf_k
    if buf.dim() == 3:
        _check_batch_entry(tuple(buf.shape), rows, sf_k)
        flat, batch = buf.reshape(buf.shape[0], -1)[:, :need], (buf.shape[0],)
    else:
        if buf.numel() < need:
            raise ValueError(f"buf has {buf.numel()} bytes but rows={rows} (padded to {rows_pad}) x "
                             f"sf_k={sf_k} needs {need}")
        flat, batch = buf.reshape(1, -1)[:, :need], ()
    # Swizzled (t, c, j, i, l) back to row-major (t, i, j, c, l): the same axis swap.
    atoms = flat.reshape(flat.shape[0], rows_pad // SF_ROW_TILE, sf_k // SF_COL_TILE, 32, 4, SF_COL_TILE)
    rowmajor = atoms.permute(0, 1, 4, 3, 2, 5).reshape(*batch, rows_pad, sf_k)
    return rowmajor[..., :rows, :].contiguous()


def _check_batch_entry(shape: tuple, rows: int, sf_k: int) -> None:
    """A 3-D ``buf`` is (B, rows_pad', sf_k): each entry must hold one swizzled matrix."""
    need = padded_n(rows) * sf_k
    if shape[1] * shape[2] < need:
        raise ValueError(f"buf.shape={shape} is a batch whose entries hold {shape[1] * shape[2]} bytes, but "
                         f"rows={rows} (padded to {padded_n(rows)}) x sf_k={sf_k} needs {need} each")


def _torch_of(x):
    """The torch module when ``x`` is a torch tensor, else None (torch is never imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def _torch_bytes(torch, x, what: str):
    """``x`` viewed as uint8 (any one-byte dtype is reinterpreted, not converted)."""
    if x.dtype == torch.uint8:
        return x
    if x.element_size() == 1 and x.dtype != torch.bool:
        return x.view(torch.uint8)
    raise TypeError(f"{what} must hold bytes (uint8 or another one-byte dtype such as float8_e4m3fn), "
                    f"got dtype {x.dtype}; scale factors are one ue4m3 byte per 16 elements")
