"""The grouped GEMM as ``torch.library`` custom ops, so ``torch.compile`` can trace models that call it.

Importing this module imports torch and registers, once per process:

- ``torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha=None,
  tile_m=None, tile_n=None, tile_k=None, swap_ab=None, out_dtype=None) -> Tensor``: allocates ``out``;
- ``torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out(a, b, a_scale, b_scale, m_indptr, alpha,
  out, tile_m=None, tile_n=None, tile_k=None, swap_ab=None) -> ()``: writes ``out`` (declared mutated).
  (None tiles: the automatic cut, as in the public function.)

Each has a fake implementation (shapes and dtypes only, no memory touched), which is what dynamo and
AOTAutograd run while tracing. ``nvfp4_driver.ops`` imports this module by itself as soon as torch is
imported (at its own import, or at the first torch tensor it sees), and from then on the public
``group_gemm_nvfp4_nt_groupwise`` hands calls made under ``torch.compile`` to these ops, so a model
may call either. Under ``torch.compile`` the stream is the compiler's (``stream=`` is refused) and
the checked mode is not available (it synchronises).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import ops

_OUT_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
               "fp16": torch.float16, "half": torch.float16}


@torch.library.custom_op("nvfp4_driver::group_gemm_nvfp4_nt_groupwise", mutates_args=())
def group_gemm_nvfp4_nt_groupwise(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
                                  m_indptr: torch.Tensor, alpha: Optional[torch.Tensor] = None,
                                  tile_m: Optional[int] = None, tile_n: Optional[int] = None,
                                  tile_k: Optional[int] = None, swap_ab: Optional[bool] = None,
                                  out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``nvfp4_driver.group_gemm_nvfp4_nt_groupwise`` with a fresh ``(cum_m, N)`` output (see there)."""
    return ops.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k,
                                             swap_ab, out_dtype=out_dtype)


@group_gemm_nvfp4_nt_groupwise.register_fake
def _(a, b, a_scale, b_scale, m_indptr, alpha=None, tile_m=None, tile_n=None, tile_k=None, swap_ab=None,
      out_dtype=None):
    _check_shapes(a, b, m_indptr)
    return a.new_empty((a.shape[0], b.shape[1]), dtype=out_dtype or torch.bfloat16)


@torch.library.custom_op("nvfp4_driver::group_gemm_nvfp4_nt_groupwise_out", mutates_args=("out",))
def group_gemm_nvfp4_nt_groupwise_out(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor,
                                      b_scale: torch.Tensor, m_indptr: torch.Tensor, alpha: Optional[torch.Tensor],
                                      out: torch.Tensor, tile_m: Optional[int] = None,
                                      tile_n: Optional[int] = None, tile_k: Optional[int] = None,
                                      swap_ab: Optional[bool] = None) -> None:
    """``nvfp4_driver.group_gemm_nvfp4_nt_groupwise`` into the caller's ``out`` (see there)."""
    ops.group_gemm_nvfp4_nt_groupwise(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab,
                                      out=out)


@group_gemm_nvfp4_nt_groupwise_out.register_fake
def _(a, b, a_scale, b_scale, m_indptr, alpha, out, tile_m=None, tile_n=None, tile_k=None, swap_ab=None):
    _check_shapes(a, b, m_indptr)
    if out.dim() != 2 or out.shape[1] != b.shape[1]:
        raise ValueError(f"out.shape={tuple(out.shape)} but (cum_m, N) with N={b.shape[1]} is required")


def _check_shapes(a, b, m_indptr) -> None:
    """What tracing can check without values: the ranks and the sizes shared between operands (the
    real call checks everything else before its launch)."""
    if a.dim() != 2 or b.dim() != 3 or m_indptr.dim() != 1:
        raise ValueError(f"a.shape={tuple(a.shape)}, b.shape={tuple(b.shape)}, m_indptr.shape="
                         f"{tuple(m_indptr.shape)} but (cum_m, K/2), (G, N, K/2), (G+1,) are required")
    if b.shape[2] != a.shape[1]:
        raise ValueError(f"b.shape={tuple(b.shape)} but K/2={a.shape[1]} from a.shape={tuple(a.shape)}")


def traced_call(a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out, out_dtype, stream,
                check_inputs):
    """The public function's body while torch.compile traces it: one of the two ops above."""
    if stream is not None or check_inputs:
        raise ValueError(f"stream={stream!r} and check_inputs={check_inputs!r} are not available under "
                         f"torch.compile: the compiled graph chooses the stream, and the checked mode "
                         f"synchronises; call outside the compiled region for them")
    if isinstance(out_dtype, str):
        out_dtype = _OUT_DTYPES[out_dtype.lower()]
    if out is None:
        return torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise(
            a, b, a_scale, b_scale, m_indptr, alpha, tile_m, tile_n, tile_k, swap_ab, out_dtype)
    if out_dtype is not None and out_dtype != out.dtype:
        raise ValueError(f"out.dtype={out.dtype} but out_dtype={out_dtype}")
    torch.ops.nvfp4_driver.group_gemm_nvfp4_nt_groupwise_out(a, b, a_scale, b_scale, m_indptr, alpha, out, tile_m,
                                                             tile_n, tile_k, swap_ab)
    return out


_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
if _is_compiling is None:  # torch < 2.3
    _is_compiling = torch._dynamo.is_compiling
ops._traced_call = traced_call
ops._compiling = _is_compiling
