"""FlashInfer's NVFP4 names on nvfp4-driver: code written for FlashInfer runs with one changed import.

    import nvfp4_driver.flashinfer as flashinfer
    a_fp4, a_sf = flashinfer.nvfp4_quantize(a, a_gsf, sfLayout=flashinfer.SfLayout.layout_128x4)
    out = flashinfer.gemm.group_gemm_nvfp4_nt_groupwise(a_fp4, b_fp4, a_scale, b_scale, m_indptr, alpha)

Top level, where FlashInfer has them: ``fp4_quantize``, ``nvfp4_quantize``, ``SfLayout``,
``block_scale_interleave`` (and its old name ``nvfp4_block_scale_interleave``),
``e2m1_and_ufp8sf_scale_to_float``, ``silu_and_mul_nvfp4_quantize``. In ``gemm``:
``group_gemm_nvfp4_nt_groupwise`` (with ``skip_check=`` and ``.is_compute_capability_supported(cc)``) and
``pad_indptr_to_multiple_of_4``. Same names, argument order, defaults, shapes, dtypes and layouts as
FlashInfer; the README's "Coming from FlashInfer" table lists every difference. Options of other
formats raise NotImplementedError naming the option. Importing needs neither torch nor a GPU.
"""
from . import gemm
from .quantization import (SfLayout, block_scale_interleave, e2m1_and_ufp8sf_scale_to_float, fp4_quantize,
                           nvfp4_block_scale_interleave, nvfp4_quantize, silu_and_mul_nvfp4_quantize)

__all__ = ["gemm", "SfLayout", "fp4_quantize", "nvfp4_quantize", "silu_and_mul_nvfp4_quantize",
           "block_scale_interleave", "nvfp4_block_scale_interleave", "e2m1_and_ufp8sf_scale_to_float"]
