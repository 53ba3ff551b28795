// Hopper's decode kernel (sm90ws_nvfp4_grouped_gemm.cu) for calls of few tiles: each tile's K split
// between two sets of consumer warps (nvfp4_grouped_gemm_ws.cuh's K_SPLIT), whose fp32 sums meet in
// shared memory before the epilogue. DeepSeek-V3's E=8 decode has 256 tiles: one set of warps a tile
// leaves half of sm90ws's 528 blocks idle, two sets run twice the warps on the same tiles.
//
// Macros (from build_cubins.py): as sm90ws_nvfp4_grouped_gemm.cu, with NVFP4_BLOCKS_PER_SM = 2
// (ten warps an SM: 168 registers a thread, as sm90ws).
#define NVFP4_HMMA 1
#define NVFP4_K_SPLIT 2
#include "sm120ws_math.cuh"

NVFP4_DEFINE_GROUPED_GEMM_TMA(NVFP4_KERNEL_NAME, nvfp4::WsBuildConfig,
                              nvfp4::grouped_gemm_ws<nvfp4::WsBuildConfig, nvfp4::MathSm90Ws>)
