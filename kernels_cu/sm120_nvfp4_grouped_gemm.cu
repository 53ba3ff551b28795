// Native NVFP4 grouped GEMM for Blackwell GeForce / RTX PRO (sm_120a) and DGX Spark (sm_121a):
// the fp4 operands go from shared memory straight into the block-scaled MMA
// (mma.sync m16n8k64 kind::mxf4nvf4 scale_vec::4X, SASS OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X)
// with their ue4m3 scales; nothing is decoded. Pipeline, group lookup and epilogue:
// nvfp4_grouped_gemm.cuh, the same code the portable kernel runs.
//
// Built with -DNVFP4_TWIN for sm_90, sm120_mma.cuh swaps the MMA instruction for its software
// model: that "twin" runs this whole file on an H100, every load, index and store included.
//
// Macros (from build_cubins.py): as sm80_nvfp4_grouped_gemm.cu.
#include "nvfp4_grouped_gemm.cuh"
#include "sm120_mma.cuh"

namespace {

using namespace nvfp4;
using Config = BuildConfig;  // the variant build_cubins.py asked for (nvfp4_grouped_gemm.cuh)

struct MathSm120 {
  static constexpr int K_CHUNK = 64;  // one m16n8k64 step; its 4 scales are one smem scale word
  static constexpr float ACC_SCALE = 1.f;  // the MMA applies the scales itself

  // Every fragment register is one aligned 32-bit word of a K-contiguous smem row (sm120_mma.cuh):
  // lane (g, p) reads bytes [4p, 4p+4) and [16+4p, 16+4p+4) of the chunk's 32 bytes.
  template <class C>
  static __device__ __forceinline__ uint32_t word(const uint8_t* data, int row, int kc, int half, int p) {
    return *reinterpret_cast<const uint32_t*>(data + row * C::ROW_PITCH + kc * 32 + half * 16 + p * 4);
  }

  template <class C>
  static __device__ __forceinline__ void chunk(float (&acc)[C::P_TILES][C::Q_TILES][4], const StageView& s,
                                               int p_base, int q_base, int kc, int lane) {
    const int g = lane >> 2, p = lane & 3;
    uint32_t a[C::P_TILES][4], sfa[C::P_TILES];
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i) {
      const int row = p_base + i * 16 + g;
      a[i][0] = word<C>(s.p_data, row, kc, 0, p);
      a[i][1] = word<C>(s.p_data, row + 8, kc, 0, p);
      a[i][2] = word<C>(s.p_data, row, kc, 1, p);
      a[i][3] = word<C>(s.p_data, row + 8, kc, 1, p);
      // thread-id-a = 0: lane 4g carries row g's 4 scales, lane 4g+1 row g+8's (lanes 4g+2/3
      // are not read; they load row g+8's too, which keeps the load uniform).
      sfa[i] = s.p_sf[kc * C::P_ROWS + row + ((p & 1) ? 8 : 0)];
    }
#pragma unroll
    for (int j = 0; j < C::Q_TILES; ++j) {
      const int row = q_base + j * 8 + g;
      const uint32_t b[2] = {word<C>(s.q_data, row, kc, 0, p), word<C>(s.q_data, row, kc, 1, p)};
      // thread-id-b = 0: lane 4g carries column g's 4 scales (the others are not read).
      const uint32_t sfb = s.q_sf[kc * C::Q_ROWS + row];
#pragma unroll
      for (int i = 0; i < C::P_TILES; ++i) mma_nvf4_16x8x64<0, 0>(acc[i][j], a[i], b, sfa[i], sfb);
    }
  }
};

}  // namespace

NVFP4_DEFINE_GROUPED_GEMM(NVFP4_KERNEL_NAME, Config, nvfp4::grouped_gemm<Config, MathSm120>)
