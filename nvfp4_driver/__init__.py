"""nvfp4-driver: NVFP4 grouped GEMMs from precompiled cubins, through the CUDA driver API.

    from nvfp4_driver import group_gemm_nvfp4_nt_groupwise   # FlashInfer's signature and layouts

Importing never needs a GPU or a driver; the first GPU call reports what is missing.
"""
from . import layout, reference
from .driver import CudaError, NoCudaDeviceError, NoCudaDriverError
from .layout import a_scale_group_bases, a_scale_rows
from .ops import group_gemm_nvfp4_nt_groupwise, group_gemm_nvfp4_nt_groupwise_ptr
from .variants import UnsupportedGpuError

__version__ = "0.1.0"

__all__ = [
    "group_gemm_nvfp4_nt_groupwise", "group_gemm_nvfp4_nt_groupwise_ptr", "a_scale_group_bases",
    "a_scale_rows", "layout", "reference", "CudaError", "NoCudaDriverError", "NoCudaDeviceError",
    "UnsupportedGpuError", "__version__",
]
