// NVFP4 grouped GEMM for Hopper's few-rows regime (decode), warp-specialized: the native Blackwell
// kernel's body (nvfp4_grouped_gemm_ws.cuh: a TMA producer warp, mbarrier hand-overs, a persistent
// grid) with its block-scaled MMA computed the way sm_90 can (sm120_mma.cuh, NVFP4_HMMA): each
// operand fragment decoded exactly to fp16 in its own lane, four mma.sync m16n8k16 per m16n8k64.
// Against the portable kernel's cp.async stages, the copies leave the consumer warps' instruction
// stream and the hand-overs need no block-wide barrier (docs/perf-notes.md, v0.6).
//
// Macros (from build_cubins.py): as sm120ws_nvfp4_grouped_gemm.cu; NVFP4_WARP_N = 64, so each decoded
// token fragment serves 64 weight rows, and NVFP4_BLOCKS_PER_SM = 4 (an H100 SM's 228 KB).
#define NVFP4_HMMA 1
#include "sm120ws_math.cuh"

NVFP4_DEFINE_GROUPED_GEMM_TMA(NVFP4_KERNEL_NAME, nvfp4::WsBuildConfig,
                              nvfp4::grouped_gemm_ws<nvfp4::WsBuildConfig, nvfp4::MathSm90Ws>)
