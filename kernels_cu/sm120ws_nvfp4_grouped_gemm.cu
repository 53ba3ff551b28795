// Native NVFP4 grouped GEMM for sm_120a / sm_121a, warp-specialized: a producer warp feeds
// swizzled stages through TMA, consumer warps issue the block-scaled MMA
// (mma.sync m16n8k64 kind::mxf4nvf4 scale_vec::4X, SASS OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X),
// on a persistent grid. Body: nvfp4_grouped_gemm_ws.cuh; MMA atom and its twin / stand-in:
// sm120_mma.cuh (-DNVFP4_TWIN / -DNVFP4_STANDIN for sm_90, as sm120_nvfp4_grouped_gemm.cu).
//
// Macros (from build_cubins.py): NVFP4_KERNEL_NAME, NVFP4_TILE_M/N/K, NVFP4_SWAP_AB, NVFP4_STAGES,
// NVFP4_THREADS, NVFP4_SMEM_BYTES (as sm80_nvfp4_grouped_gemm.cu; no K shares), NVFP4_WARP_N (32; 64 for
// the 256-column tile) and NVFP4_BLOCKS_PER_SM (the persistent grid's blocks per SM).
#include "sm120ws_math.cuh"

NVFP4_DEFINE_GROUPED_GEMM_TMA(NVFP4_KERNEL_NAME, nvfp4::WsBuildConfig,
                              nvfp4::grouped_gemm_ws<nvfp4::WsBuildConfig, nvfp4::MathSm120Ws>)
