"""FlashInfer's NVFP4 quantization helpers, by FlashInfer's names, on nvfp4-driver's kernels.

Signatures, defaults, shapes, dtypes and layouts follow FlashInfer's ``flashinfer.fp4_quantize`` and
friends (read from FlashInfer's docs and tests); the bytes are ours (SPEC §4: float32 steps, correctly
rounded, so they can differ from FlashInfer's approximate reciprocals in rare ties). Options that only
matter for other formats or kernels (UE8M0 scales, 32-element blocks, the 8x4 layout, TRT-LLM's row
shuffle, per-token scales, fp8 input) raise NotImplementedError naming the option. ``enable_pdl`` is
accepted and has no effect (our launches do not use programmatic dependent launch).
"""
from __future__ import annotations

import enum
import sys

import numpy as np

from .. import quantize as _quantize
from ..layout import SF_COL_TILE, SF_VEC, _host_bytes, _host_numpy, padded_n, unswizzle_scales
from ..reference import E2M1_VALUES, UE4M3_VALUES, unpack_fp4
from ..scale_interleave import deinterleave_scales, interleave_scales

__all__ = ["SfLayout", "fp4_quantize", "nvfp4_quantize", "silu_and_mul_nvfp4_quantize", "block_scale_interleave",
           "nvfp4_block_scale_interleave", "e2m1_and_ufp8sf_scale_to_float"]

_QUANT_K = 64  # our quantizer's K multiple (4 scale columns); other K % 16 == 0 are zero-padded to it


class SfLayout(enum.IntEnum):
    """Scale-factor layouts, FlashInfer's values. nvfp4-driver writes 128x4 and linear."""
    layout_128x4 = 0
    layout_8x4 = 1
    layout_linear = 2


def _torch():
    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    return torch


def _unsupported(name: str, value, why: str):
    raise NotImplementedError(f"{name}={value!r} is not supported by nvfp4_driver.flashinfer: {why}")


def _check_vec_size(sf_vec_size) -> None:
    if sf_vec_size != SF_VEC:
        _unsupported("sf_vec_size", sf_vec_size, "NVFP4 has one ue4m3 scale per 16 elements (32 is MXFP4)")


def _global_scale(torch, global_scale, device, inversed: bool):
    """FlashInfer's ``global_scale`` as our quantizer takes it: float32 on the input's device (or a
    Python float), the quantizer's gsf; None means 1.0."""
    if global_scale is None:
        return 1.0
    if isinstance(global_scale, torch.Tensor):
        gs = global_scale.to(device=device, dtype=torch.float32)
        return torch.reciprocal(gs) if inversed else gs
    return 1.0 / float(global_scale) if inversed else float(global_scale)


def fp4_quantize(input, global_scale=None, sf_vec_size: int = 16, sf_use_ue8m0: bool = False,
                 is_sf_swizzled_layout: bool = True, is_sf_8x4_layout: bool = False,
                 is_global_scale_inversed: bool = False, enable_pdl=None, backend: str = "cuda"):
    """Quantize ``input [..., K]`` to NVFP4 on its GPU: FlashInfer's ``fp4_quantize``.

    Args:
      input: bfloat16 / float16 (or float32, our extension) torch tensor on the GPU, ``[..., K]``,
             ``K % 16 == 0``; leading dimensions are rows. A column-major 2-D input (``stride(-2) == 1``)
             is quantized along its other dimension and both outputs come back transposed, as in FlashInfer.
      global_scale: float32 tensor of one element (FlashInfer: ``448 * 6 / amax``), a Python float, or
             None (1.0). ``is_global_scale_inversed=True``: it holds ``1 / gsf`` instead.
      is_sf_swizzled_layout: True: scales in the 128x4 layout, ``(ceil(M/128)*128, ceil(K/16 / 4)*4)``
             uint8; False: row-major ``(M, K/16)`` uint8.
      backend: "cuda" or "cute-dsl" (FlashInfer's two backends write the same format; both run ours).

    Returns ``(x_q, sf)``: x_q ``[..., K/2]`` uint8 (two e2m1 codes per byte, element 2i low), sf as above.
    """
    torch = _torch()
    _check_vec_size(sf_vec_size)
    if sf_use_ue8m0:
        _unsupported("sf_use_ue8m0", sf_use_ue8m0, "scales are ue4m3 (UE8M0 is MXFP4)")
    if is_sf_8x4_layout:
        _unsupported("is_sf_8x4_layout", is_sf_8x4_layout, "scales come in the 128x4 or the linear layout")
    if backend not in ("cuda", "cute-dsl"):
        raise ValueError(f"backend={backend!r} must be 'cuda' or 'cute-dsl'")
    if input.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        _unsupported("input.dtype", input.dtype, "quantize bfloat16, float16 or float32 values")
    shape = tuple(input.shape)
    column_major = input.dim() >= 2 and input.stride(-2) == 1 and input.shape[-1] != 1
    if column_major:
        input = input.transpose(-2, -1)
    if input.dim() < 1 or input.shape[-1] % SF_VEC:
        where = "its second-to-last dimension (column-major input)" if column_major else "its last dimension"
        raise ValueError(f"input.shape={shape} needs K % 16 == 0 along {where}, the quantized one")
    gsf = _global_scale(torch, global_scale, input.device, is_global_scale_inversed)
    lead, k = tuple(input.shape[:-1]), input.shape[-1]
    rows = int(np.prod(lead, dtype=np.int64))
    x = input.reshape(rows, k)
    if k % _QUANT_K:  # zero blocks quantize to code 0 and scale 0: FlashInfer's column padding
        x = torch.nn.functional.pad(x, (0, -k % _QUANT_K))
    elif not x.is_contiguous() or x.data_ptr() % 16:
        x = x.contiguous() if not x.is_contiguous() else x.clone()
    q, sf = _quantize.quantize_weights(x.unsqueeze(0), gsf)
    x_q = q[0, :, : k // 2].reshape(*lead, k // 2)
    # K padded to a multiple of 64 has ceil(K/16 / 4) * 4 scale columns: FlashInfer's swizzled width.
    sf = sf[0]
    if not is_sf_swizzled_layout:
        sf = deinterleave_scales(sf, rows, sf.shape[1])[:, : k // SF_VEC].contiguous()
    if column_major:
        return x_q.transpose(-2, -1), sf.transpose(-2, -1)
    return x_q.contiguous(), sf


def nvfp4_quantize(a, a_global_sf, sfLayout=SfLayout.layout_128x4, do_shuffle: bool = False,
                   sf_vec_size: int = 16, enable_pdl=None, backend: str = "cuda",
                   per_token_activation: bool = False, expanded_idx_to_permuted_idx=None):
    """FlashInfer's ``nvfp4_quantize``: :func:`fp4_quantize` with the layout given as :class:`SfLayout`.

    ``a`` [M, K] bfloat16/float16 (moved to the GPU like FlashInfer's ``a.cuda()``), ``a_global_sf`` a
    one-element float32 tensor or a float (``448 * 6 / amax``). Returns ``(a_fp4, a_sf)`` as
    :func:`fp4_quantize`: ``sfLayout=layout_128x4`` gives ``(ceil(M/128)*128, K/16)`` uint8 swizzled
    scales (what ``group_gemm_nvfp4_nt_groupwise`` reads), ``layout_linear`` row-major ``(M, K/16)``.
    """
    if do_shuffle:
        _unsupported("do_shuffle", do_shuffle, "TRT-LLM's row shuffle is for its own GEMM; our GEMM reads the "
                     "plain 128x4 layout")
    if per_token_activation:
        _unsupported("per_token_activation", per_token_activation, "scales are per 16-element block and tensor")
    if expanded_idx_to_permuted_idx is not None:
        _unsupported("expanded_idx_to_permuted_idx", "<tensor>", "it belongs to per-token quantization")
    layout = SfLayout(sfLayout)
    if layout == SfLayout.layout_8x4:
        _unsupported("sfLayout", layout, "use SfLayout.layout_128x4 or SfLayout.layout_linear")
    if not a.is_cuda:
        a = a.cuda()
    return fp4_quantize(a, a_global_sf, sf_vec_size, False, layout == SfLayout.layout_128x4, False,
                        enable_pdl=enable_pdl, backend=backend)


def silu_and_mul_nvfp4_quantize(input, global_scale, sf_vec_size: int = 16, is_sf_swizzled_layout: bool = True,
                                is_sf_8x4_layout: bool = False, enable_pdl=None):
    """FlashInfer's ``silu_and_mul_nvfp4_quantize``: ``h = silu(input[..., :K]) * input[..., K:]``, then NVFP4.

    As in FlashInfer, ``h`` is computed in float32 and rounded to the input dtype before quantizing.
    ``input`` [..., 2K] bfloat16/float16, contiguous; leading dimensions are rows. Where K % 64 == 0 and
    the input is 16-byte aligned, one kernel does it all (``quantize.silu_mul_quantize_activations``,
    h never stored); otherwise torch ops compute h and our quantizer pads K to 64 (:func:`fp4_quantize`).
    Both give the same bytes. Returns ``(x_q [M, K/2] uint8, sf)`` with sf as in :func:`fp4_quantize`.
    """
    torch = _torch()
    _check_vec_size(sf_vec_size)
    if is_sf_8x4_layout:
        _unsupported("is_sf_8x4_layout", is_sf_8x4_layout, "scales come in the 128x4 or the linear layout")
    if not input.is_contiguous():
        raise ValueError("input must be row-major contiguous ([..., 2K]: gate then up)")
    if input.dim() < 1 or input.shape[-1] % 2 or (input.shape[-1] // 2) % SF_VEC:
        raise ValueError(f"input.shape={tuple(input.shape)} needs a last dimension 2K with K % 16 == 0")
    k = input.shape[-1] // 2
    x = input.reshape(-1, 2 * k)
    if k % _QUANT_K == 0 and x.dtype in (torch.bfloat16, torch.float16) and x.data_ptr() % 16 == 0:
        rows = x.shape[0]
        x_q, sf = _quantize.silu_mul_quantize_activations(x, None, _global_scale(torch, global_scale, x.device, False))
        if not is_sf_swizzled_layout:  # the kernel writes the 128x4 layout; FlashInfer's linear one is row-major
            sf = deinterleave_scales(sf, rows, sf.shape[1]).contiguous()
        return x_q, sf
    h = (torch.nn.functional.silu(x[:, :k].float()) * x[:, k:].float()).to(input.dtype)
    return fp4_quantize(h, global_scale, sf_vec_size, False, is_sf_swizzled_layout, is_sf_8x4_layout,
                        enable_pdl=enable_pdl)


def block_scale_interleave(unswizzled_sf):
    """FlashInfer's ``block_scale_interleave``: row-major scales -> the 128x4 layout, flattened.

    Args:
      unswizzled_sf: uint8 ``(rows, cols)`` or ``(E, rows, cols)`` (torch on any device, where it is
          rearranged by torch ops; or NumPy). ``cols`` need not be a multiple of 4.

    Returns a 1-D uint8 buffer of ``E * ceil(rows/128)*128 * ceil(cols/4)*4`` bytes (E = 1 for 2-D)
    on the input's device; padding rows and columns are 0.
    """
    torch = sys.modules.get("torch")
    is_torch = torch is not None and isinstance(unswizzled_sf, torch.Tensor)
    if is_torch and unswizzled_sf.dtype != torch.uint8:
        if unswizzled_sf.dtype == torch.bfloat16:
            _unsupported("unswizzled_sf.dtype", unswizzled_sf.dtype, "NVFP4 scales are uint8 ue4m3 bytes")
        raise TypeError(f"unswizzled_sf.dtype={unswizzled_sf.dtype} must be torch.uint8")
    sf = unswizzled_sf if is_torch else np.asarray(unswizzled_sf)
    if sf.ndim not in (2, 3):
        raise ValueError(f"unswizzled_sf.shape={tuple(sf.shape)} must be 2-D or 3-D (experts, rows, cols)")
    pad = -sf.shape[-1] % SF_COL_TILE
    if pad:
        sf = torch.nn.functional.pad(sf, (0, pad)) if is_torch else np.pad(sf, [(0, 0)] * (sf.ndim - 1) + [(0, pad)])
    return interleave_scales(sf).reshape(-1)


nvfp4_block_scale_interleave = block_scale_interleave  # FlashInfer's older name for it


def e2m1_and_ufp8sf_scale_to_float(e2m1_tensor, ufp8_scale_tensor, global_scale_tensor=None, sf_vec_size: int = 16,
                                   ufp8_type: int = 1, is_sf_swizzled_layout: bool = True,
                                   is_sf_8x4_layout: bool = False):
    """FlashInfer's ``e2m1_and_ufp8sf_scale_to_float``: decode on the host, as FlashInfer does.

    ``value = e2m1(code) * float32(ue4m3(scale) * global_scale)`` in float32, ``global_scale`` being the
    value passed (FlashInfer's tests pass ``1 / gsf``). The scale byte's sign bit is ignored (SPEC §1).

    Args:
      e2m1_tensor: (M, K/2) uint8 packed codes (any device; copied to the host), or NumPy.
      ufp8_scale_tensor: uint8 scale bytes, exactly ``ceil(M/128)*128 * ceil(K/16 / 4)*4`` of them in the
          128x4 layout (any shape), or ``M * K/16`` row-major with ``is_sf_swizzled_layout=False``.
      global_scale_tensor: one float32 (tensor or float); required, as FlashInfer requires it for E4M3.

    Returns (M, K) float32 on the CPU (a torch tensor for torch input, else NumPy).
    """
    _check_vec_size(sf_vec_size)
    if ufp8_type != 1:
        _unsupported("ufp8_type", ufp8_type, "scales are E4M3 (ufp8_type=1); UE8M0 is MXFP4")
    if is_sf_8x4_layout:
        _unsupported("is_sf_8x4_layout", is_sf_8x4_layout, "scales come in the 128x4 or the linear layout")
    if global_scale_tensor is None:
        raise ValueError("global_scale_tensor is required for E4M3 scales (ufp8_type=1): pass 1 / global_scale "
                         "as a one-element float32 tensor (1.0 for none)")
    torch = sys.modules.get("torch")
    as_torch = torch is not None and isinstance(e2m1_tensor, torch.Tensor)
    codes = unpack_fp4(e2m1_tensor)
    if codes.ndim != 2 or codes.shape[1] % SF_VEC:
        raise ValueError(f"e2m1_tensor must be (M, K/2) uint8 with K % 16 == 0, got codes of shape {codes.shape}")
    rows, k = codes.shape
    sf_k = k // SF_VEC
    scales = _host_bytes(ufp8_scale_tensor, "ufp8_scale_tensor").reshape(-1)
    sf_cols = -(-sf_k // SF_COL_TILE) * SF_COL_TILE
    need = padded_n(rows) * sf_cols if is_sf_swizzled_layout else rows * sf_k
    if scales.size != need:
        layout = "128x4-swizzled (ceil(M/128)*128 x ceil(K/64)*4)" if is_sf_swizzled_layout else "row-major (M x K/16)"
        raise ValueError(f"ufp8_scale_tensor has {scales.size} bytes but M={rows}, K={k} in the {layout} layout "
                         f"needs {need}")
    if is_sf_swizzled_layout:
        sf = unswizzle_scales(scales, rows, sf_cols)[:, :sf_k]
    else:
        sf = scales.reshape(rows, sf_k)
    gs = np.float32(np.asarray(_host_numpy(global_scale_tensor, "global_scale_tensor"), dtype=np.float32)
                    .reshape(-1)[0])
    block_scale = UE4M3_VALUES[sf] * gs  # float32 * float32: one rounding, as FlashInfer's host loop
    out = (E2M1_VALUES[codes].reshape(rows, sf_k, SF_VEC) * block_scale[..., None]).reshape(rows, k)
    return torch.from_numpy(out) if as_torch else out

