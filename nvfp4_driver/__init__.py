"""nvfp4-driver: NVFP4 grouped GEMMs from precompiled cubins, through the CUDA driver API.

    from nvfp4_driver import group_gemm_nvfp4_nt_groupwise   # FlashInfer's signature and layouts

Importing never needs a GPU or a driver (nor torch); the first GPU call reports what is missing.
"""
from . import layout, moe, quantize, reference, torch_hooks
from .devmem import DeviceBuffer
from .driver import CudaError, NoCudaDeviceError, NoCudaDriverError
from .layout import a_scale_group_bases, a_scale_rows, a_scale_rows_upper_bound
from .moe import a_scale_shape, cum_m_padded, m_indptr_from_counts, pad_groups
from .ops import check_m_indptr, group_gemm_nvfp4_nt_groupwise, group_gemm_nvfp4_nt_groupwise_ptr
from .quantize import (alpha_from_global_scales, dequantize, global_scale_from_amax, quantize_activations,
                       quantize_weights, silu_mul_global_scale_from_amax, silu_mul_quantize_activations)
from .registry import UnsupportedGpuError

__version__ = "0.1.0"



def _torch_ops_hooks():
    """Import torch_ops (which registers the torch.library ops) and return what it offers torch_hooks."""
    from . import torch_ops

    return torch_ops.compile_hooks()


# The torch.library ops: registered now if torch is imported, else as soon as it is (torch_hooks).
torch_hooks.install(_torch_ops_hooks)

__all__ = [
    "group_gemm_nvfp4_nt_groupwise", "group_gemm_nvfp4_nt_groupwise_ptr", "check_m_indptr",
    "quantize_activations", "quantize_weights", "dequantize", "global_scale_from_amax", "alpha_from_global_scales",
    "silu_mul_quantize_activations", "silu_mul_global_scale_from_amax",
    "a_scale_group_bases", "a_scale_rows", "a_scale_rows_upper_bound", "a_scale_shape", "cum_m_padded",
    "m_indptr_from_counts", "pad_groups", "DeviceBuffer", "layout", "moe", "quantize", "reference",
    "CudaError", "NoCudaDriverError", "NoCudaDeviceError", "UnsupportedGpuError", "__version__",
]
