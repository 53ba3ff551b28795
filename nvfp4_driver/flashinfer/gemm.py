"""``flashinfer.gemm``'s NVFP4 grouped GEMM names: the GEMM with FlashInfer's defaults, ``skip_check``
and ``is_compute_capability_supported``, and ``pad_indptr_to_multiple_of_4``."""
from __future__ import annotations

import sys

import numpy as np

from .. import ops
from ..variants import is_compute_capability_supported

__all__ = ["group_gemm_nvfp4_nt_groupwise", "pad_indptr_to_multiple_of_4"]


def group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m: int = 128,
                                  tile_n: int = 128, tile_k: int = 128, swap_ab: bool = True, out=None,
                                  out_dtype=None, *, skip_check: bool = False):
    """FlashInfer's grouped NVFP4 GEMM, its signature and defaults (tile 128 x 128 x 128, swap_ab).

    Arguments, layouts and result as :func:`nvfp4_driver.group_gemm_nvfp4_nt_groupwise` (which picks
    the tiles from the shapes when none are named). ``skip_check=True`` skips our host checks of
    ``m_indptr``'s values even when NVFP4_DRIVER_CHECK is set (the metadata checks are cached per
    shape and cost nothing on a repeat call); False follows NVFP4_DRIVER_CHECK.
    ``group_gemm_nvfp4_nt_groupwise.is_compute_capability_supported(cc)`` answers from the manifest.
    """
    return ops.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k,
                                             swap_ab, out, out_dtype, skip_check=skip_check)


group_gemm_nvfp4_nt_groupwise.is_compute_capability_supported = is_compute_capability_supported


def pad_indptr_to_multiple_of_4(m_indptr):
    """Round every group's row count up to a multiple of 4: FlashInfer's helper of the same name.

    Args:
      m_indptr: (G+1,) integer torch tensor (any device; the work runs there with torch ops) or NumPy.

    Returns ``(padded_m_indptr, padded_m_rank)`` of m_indptr's dtype: ``padded_m_indptr`` (G+1,) starts at
    0 and steps by ``ceil(rows_g / 4) * 4``; ``padded_m_rank`` (m_indptr[G],) gives every row r of group g
    (``m_indptr[g] <= r < m_indptr[g+1]``) its row in the padded stacking, ``padded_m_indptr[g] + r -
    m_indptr[g]``, and 0 to rows below ``m_indptr[0]``. Its length is a value of m_indptr, so a GPU
    m_indptr is read back once (a synchronisation, as in FlashInfer).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(m_indptr, torch.Tensor):
        xp, ind = torch, m_indptr
        _check_entries(ind.shape)
        sizes = ind[1:] - ind[:-1]
        padded = torch.cat((ind.new_zeros(1), torch.cumsum((sizes + 3) // 4 * 4, 0).to(ind.dtype)))
        rows = torch.arange(int(ind[-1]), dtype=ind.dtype, device=ind.device)
        group = torch.searchsorted(ind[1:], rows, right=True).clamp_(max=max(ind.shape[0] - 2, 0))
    else:
        xp, ind = np, np.asarray(m_indptr)
        if ind.dtype.kind not in "iu":
            raise TypeError(f"m_indptr must be integer, got dtype {ind.dtype}")
        _check_entries(ind.shape)
        sizes = np.diff(ind)
        padded = np.concatenate(([0], np.cumsum((sizes + 3) // 4 * 4))).astype(ind.dtype)
        rows = np.arange(int(ind[-1]), dtype=ind.dtype)
        group = np.minimum(np.searchsorted(ind[1:], rows, side="right"), max(ind.shape[0] - 2, 0))
    rank = padded[group] + rows - ind[group]
    padded_rank = xp.where(rows >= ind[0], rank, xp.zeros_like(rank))
    return padded, padded_rank


def _check_entries(shape) -> None:
    if len(shape) != 1 or shape[0] < 2:
        raise ValueError(f"m_indptr.shape={tuple(shape)} must be (G+1,) with G >= 1")
