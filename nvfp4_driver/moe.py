"""Host-side bookkeeping of a mixture-of-experts layer: group offsets from token counts, padding
groups to a row multiple, and the sizes the grouped GEMM's ``a_scale`` needs.

Pure NumPy on small integer arrays (one entry per expert or per row), no GPU. A GPU tensor passed
in is copied to the host, which synchronizes: on the hot path build ``m_indptr`` on the device
instead (``torch.searchsorted`` over the sorted expert ids; see the README's MoE example).

``nvfp4_driver.moe.NVFP4Experts``, the expert layer as a torch module, lives in
``nvfp4_driver.experts``, and ``nvfp4_driver.moe.ExpertParallelNVFP4``, its experts spread over the
ranks of a torch.distributed group, in ``nvfp4_driver.expert_parallel``; both are imported on first
use, so this module never imports torch.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .layout import SF_VEC, _host_indptr, _host_numpy, a_scale_rows

__all__ = ["m_indptr_from_counts", "GroupPadding", "pad_groups", "cum_m_padded", "a_scale_shape"]

_INT32_MAX = 2**31 - 1


def __getattr__(name: str):
    if name == "NVFP4Experts":  # imports torch, so only when asked for
        from .experts import NVFP4Experts

        return NVFP4Experts
    if name == "ExpertParallelNVFP4":  # imports torch.distributed too
        from .expert_parallel import ExpertParallelNVFP4

        return ExpertParallelNVFP4
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def m_indptr_from_counts(counts) -> np.ndarray:
    """Per-group row counts -> the GEMM's ``m_indptr``.

    Args:
      counts: (G,) non-negative integers (list, NumPy, torch), e.g. tokens routed to each expert.

    Returns:
      (G+1,) int32 ``[0, c0, c0+c1, ...]``: group g owns rows [m_indptr[g], m_indptr[g+1]).
    """
    c = _host_numpy(counts, "counts")
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D (G,), got shape {c.shape}")
    if c.size and c.dtype.kind not in "iu":
        raise TypeError(f"counts must be integers, got dtype {c.dtype}")
    c = c.astype(np.int64)
    if c.size and c.min() < 0:
        g = int(np.argmin(c))
        raise ValueError(f"counts must be >= 0, but counts[{g}]={int(c[g])}")
    indptr = np.zeros(c.size + 1, dtype=np.int64)
    np.cumsum(c, out=indptr[1:])
    if indptr[-1] > _INT32_MAX:
        raise ValueError(f"the counts add up to {int(indptr[-1])} rows, more than int32 m_indptr can hold")
    return indptr.astype(np.int32)


class GroupPadding(NamedTuple):
    """Rows of every group padded to a multiple; see :func:`pad_groups`."""

    m_indptr: np.ndarray  # (G+1,) int32, starts at 0, every group size a multiple of `multiple`
    src_rows: np.ndarray  # (m_indptr[G],) int64: original row held by each padded row, -1 for padding
    dst_rows: np.ndarray  # (original m_indptr[G],) int64: padded row of each original row, -1 before m_indptr[0]


def pad_groups(m_indptr, multiple: int = 4) -> GroupPadding:
    """Pad every group's rows up to a multiple of ``multiple`` (FlashInfer documents multiples of 4).

    Neither our GEMM nor our quantizer needs this (any non-decreasing m_indptr works); it is for
    code that does. Group g's rows keep their order and come first in its padded range; the padded
    layout starts at row 0.

    Args:
      m_indptr: (G+1,) non-decreasing integers (host data; a GPU tensor is copied).
      multiple: a positive int.

    Returns ``GroupPadding(m_indptr, src_rows, dst_rows)``. Gather with
    ``x_pad = where(src_rows >= 0, x[src_rows], 0)`` and scatter results back with
    ``out = out_pad[dst_rows]`` (for the rows in the groups).
    """
    if isinstance(multiple, (bool, np.bool_)) or not isinstance(multiple, (int, np.integer)) or multiple <= 0:
        raise ValueError(f"multiple={multiple!r} must be a positive int")
    ind = _host_indptr(m_indptr)
    sizes = np.diff(ind)
    padded_sizes = -(-sizes // multiple) * multiple
    padded = np.zeros_like(ind)
    np.cumsum(padded_sizes, out=padded[1:])
    if padded[-1] > _INT32_MAX:
        raise ValueError(f"padded groups need {int(padded[-1])} rows, more than int32 m_indptr can hold")
    # Padded row j of group g holds original row ind[g] + (j - padded[g]) when that is < ind[g+1].
    group_of_row = np.repeat(np.arange(sizes.size), padded_sizes)
    local = np.arange(padded[-1]) - padded[:-1][group_of_row]
    src_rows = np.where(local < sizes[group_of_row], ind[:-1][group_of_row] + local, -1).astype(np.int64)
    dst_rows = np.full(int(ind[-1]), -1, dtype=np.int64)
    kept = src_rows >= 0
    dst_rows[src_rows[kept]] = np.nonzero(kept)[0]
    return GroupPadding(padded.astype(np.int32), src_rows, dst_rows)


def cum_m_padded(m_indptr) -> int:
    """SPEC §3's ``cum_m_padded = ((m_indptr[G] + 127 G) // 128) * 128``: the scale rows ``a_scale``
    needs (the same as :func:`nvfp4_driver.layout.a_scale_rows`, under the SPEC's name)."""
    return a_scale_rows(m_indptr)


def a_scale_shape(m_indptr, k: int) -> tuple[int, int]:
    """The shape ``(cum_m_padded(m_indptr), K / 16)`` of a uint8 ``a_scale`` for this ``m_indptr``.

    ``quantize_activations`` sizes its ``a_scale`` from shapes alone instead
    (``layout.a_scale_rows_upper_bound(cum_m, G)`` rows, never fewer than this).
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k <= 0 or k % (4 * SF_VEC):
        raise ValueError(f"K={k!r} must be a positive multiple of 64 (4 scale columns of 16 elements)")
    return cum_m_padded(m_indptr), int(k) // SF_VEC
