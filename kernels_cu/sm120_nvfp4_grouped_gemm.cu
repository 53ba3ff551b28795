// Native NVFP4 grouped GEMM for Blackwell GeForce / RTX PRO (sm_120a) and DGX Spark (sm_121a):
// the fp4 operands go from shared memory straight into the block-scaled MMA
// (mma.sync m16n8k64 kind::mxf4nvf4 scale_vec::4X, SASS OMMA.SF.16864.F32.E2M1.E2M1.UE4M3.4X)
// with their ue4m3 scales; nothing is decoded. Pipeline, group lookup and epilogue:
// nvfp4_grouped_gemm.cuh, the same code the portable kernel runs.
//
// Built with -DNVFP4_TWIN for sm_90, sm120_mma.cuh swaps the MMA instruction for its software
// model: that "twin" runs this whole file on an H100, every load, index and store included.
// Built with -DNVFP4_STANDIN for sm_90, the MMA becomes a few integer ops that still consume every
// fragment and scale register: the "stand-in" times this kernel's data movement on an H100.
//
// Macros (from build_cubins.py): as sm80_nvfp4_grouped_gemm.cu.
#include "nvfp4_grouped_gemm.cuh"
#include "sm120_mma.cuh"

namespace {

using namespace nvfp4;
using Config = BuildConfig;  // the variant build_cubins.py asked for (nvfp4_grouped_gemm.cuh)

// Four 8x8 matrices of 16-bit elements (here: 8 rows x 16 bytes of packed fp4 each) from shared
// memory; lane l names row l % 8 of matrix l / 8, and register j of lane (g, p) receives bytes
// [4p, 4p+4) of row g of matrix j: exactly the MMA's fragment word of that lane.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint8_t* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(row_address))));
}

struct MathSm120 {
  static constexpr int K_CHUNK = 64;  // one m16n8k64 step; its 4 scales are one scale word
  static constexpr float ACC_SCALE = 1.f;  // the MMA applies the scales itself
  // PTX requires bit 7 of every ue4m3 scale byte clear and leaves other bytes undefined; SPEC §1
  // reads a scale byte as byte & 0x7F, so the words are masked before the MMA sees them.
  static constexpr uint32_t kScaleMask = 0x7F7F7F7Fu;

  // Fragment words (sm120_mma.cuh): lane (g, p) holds bytes [4p, 4p+4) and [16+4p, 16+4p+4) of a
  // row's 32 chunk bytes. P (16 rows): matrices = rows 0-7 / 8-15 x first / second 16 bytes, so
  // lane l addresses row l % 8 + 8 * ((l / 8) % 2), half l / 16. Q (8 rows per fragment): two
  // fragments per ldmatrix, lane l addresses row l % 8 of fragment l / 16, half (l / 8) % 2.
  template <class C>
  static __device__ __forceinline__ void chunk(float (&acc)[C::P_TILES][C::Q_TILES][4], const StageView& s,
                                               int p_base, int q_base, int kc, int lane) {
    static_assert(C::Q_TILES % 2 == 0, "Q fragments are loaded in pairs");
    const int g = lane >> 2, p = lane & 3;
    const int l8 = lane & 7;
    uint32_t a[C::P_TILES][4], sfa[C::P_TILES];
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i) {
      const int row = p_base + i * 16 + l8 + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(a[i], s.p_data + row * C::ROW_PITCH + kc * 32 + (lane >> 4) * 16);
      // thread-id-a = 0: lane 4g carries row g's 4 scales, lane 4g+1 row g+8's (lanes 4g+2/3
      // are not read; they load row g+8's too, which keeps the load uniform).
      const int sf_row = p_base + i * 16 + g + ((p & 1) ? 8 : 0);
      sfa[i] = s.p_sf[kc * C::P_ROWS + sf_row] & kScaleMask;
    }
#pragma unroll
    for (int j = 0; j < C::Q_TILES; j += 2) {
      uint32_t b4[4];
      const int row = q_base + (j + (lane >> 4)) * 8 + l8;
      ldmatrix_x4(b4, s.q_data + row * C::ROW_PITCH + kc * 32 + ((lane >> 3) & 1) * 16);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t b[2] = {b4[2 * h], b4[2 * h + 1]};
        // thread-id-b = 0: lane 4g carries column g's 4 scales (the others are not read).
        const uint32_t sfb = s.q_sf[kc * C::Q_ROWS + q_base + (j + h) * 8 + g] & kScaleMask;
#pragma unroll
        for (int i = 0; i < C::P_TILES; ++i) mma_nvf4_16x8x64<0, 0>(acc[i][j + h], a[i], b, sfa[i], sfb);
      }
    }
  }
};

}  // namespace

NVFP4_DEFINE_GROUPED_GEMM(NVFP4_KERNEL_NAME, Config, nvfp4::grouped_gemm<Config, MathSm120>)
