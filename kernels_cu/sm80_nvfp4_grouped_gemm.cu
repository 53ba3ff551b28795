// Portable NVFP4 grouped GEMM (SPEC §2) for every GPU from sm_80 on: each warp reads its fp4
// fragments from shared memory, decodes them exactly to fp16 (nvfp4_decode.cuh) and feeds
// mma.sync m16n8k16 with fp32 accumulators. Pipeline, group lookup and epilogue:
// nvfp4_grouped_gemm.cuh.
//
// build_cubins.py compiles one variant per symbol with these macros:
//   NVFP4_KERNEL_NAME  the extern "C" symbol
//   NVFP4_TILE_M       16 | 32 | 64 | 128   tokens (rows of a group) per block
//   NVFP4_TILE_N       32 | 64 | 128   output columns per block
//   NVFP4_TILE_K       128 | 256       K elements per pipeline stage
//   NVFP4_SWAP_AB      0 | 1           1: weights on the MMA's M side, tokens on its N side
//   NVFP4_WARPS_K      warps that share each warp tile's K chunks (1 | 2)
//   NVFP4_STAGES       pipeline depth; NVFP4_THREADS, NVFP4_SMEM_BYTES: what the host launches with
//   NVFP4_DIAG_SKIP    timing experiments only (wrong results; never in the variant table):
//                      1 no decode (raw words into the MMA), 2 no MMA
#include "nvfp4_decode.cuh"
#include "nvfp4_grouped_gemm.cuh"

#ifndef NVFP4_DIAG_SKIP
#define NVFP4_DIAG_SKIP 0
#endif

namespace {

using namespace nvfp4;
using Config = BuildConfig;  // the variant build_cubins.py asked for (nvfp4_grouped_gemm.cuh)

__device__ __forceinline__ void mma_f16_16x8x16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

struct MathSm80 {
  // 64 k elements per call: one scale word per row (four 16-element blocks), whose two bytes this
  // lane needs are converted together, then two 32-element halves of two m16n8k16 steps each.
  static constexpr int K_CHUNK = 64;
  static constexpr float ACC_SCALE = kDecodedAccScale;  // the decode's 2^-14 on both operands

  // The scales of `row` for lane quad `q` in k-chunk `kc` (nvfp4_decode.cuh's lane_scales).
  template <class C>
  static __device__ __forceinline__ __half2 load_scales(const uint32_t* sf, int rows, int row, int kc, int q) {
    return lane_scales(sf[kc * rows + row], q);
  }

  // The fp4 word (8 elements) of `row` in half `h` of k-chunk `kc` for lane quad `q`, decoded with `scale`.
  template <class C>
  static __device__ __forceinline__ void load_decoded(const uint8_t* data, int row, int kc, int h, int q,
                                                      __half2 scale, uint32_t (&regs)[4]) {
    const uint32_t word = *reinterpret_cast<const uint32_t*>(data + row * C::ROW_PITCH + kc * 32 + h * 16 + q * 4);
    if (NVFP4_DIAG_SKIP & 1) {
      const uint32_t s = *reinterpret_cast<const uint32_t*>(&scale);
      regs[0] = word; regs[1] = word ^ s; regs[2] = word + h; regs[3] = s;
      return;
    }
    decode_word(word, scale, regs);
  }

  template <class C>
  static __device__ __forceinline__ void chunk(float (&acc)[C::P_TILES][C::Q_TILES][4], const StageView& s,
                                               int p_base, int q_base, int kc, int lane) {
    const int grp = lane >> 2, q = lane & 3;
    __half2 p_scale[C::P_TILES][2], q_scale[C::Q_TILES];
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        p_scale[i][r] = load_scales<C>(s.p_sf, C::P_ROWS, p_base + i * 16 + r * 8 + grp, kc, q);
#pragma unroll
    for (int j = 0; j < C::Q_TILES; ++j) q_scale[j] = load_scales<C>(s.q_sf, C::Q_ROWS, q_base + j * 8 + grp, kc, q);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Both operands place the same k elements in the same MMA k slots (a permutation of k within
      // the half, which the sum does not see): decoded register 2t -> slots 2q..2q+1, register
      // 2t+1 -> slots 8+2q..8+2q+1 of MMA step t.
      uint32_t q_frag[C::Q_TILES][4];
#pragma unroll
      for (int j = 0; j < C::Q_TILES; ++j)
        load_decoded<C>(s.q_data, q_base + j * 8 + grp, kc, h, q,
                        h ? __high2half2(q_scale[j]) : __low2half2(q_scale[j]), q_frag[j]);
      // One P fragment decoded at a time, right before its MMAs: the source order keeps 8 decoded
      // registers live instead of 8 per P fragment (ptxas schedules as it likes: the 16-token tile
      // went 121 -> 118 registers, still 2 blocks an SM; 3 spilled, docs/perf-notes.md v0.4, v0.5).
#pragma unroll
      for (int i = 0; i < C::P_TILES; ++i) {
        uint32_t p_frag[2][4];
#pragma unroll
        for (int r = 0; r < 2; ++r)
          load_decoded<C>(s.p_data, p_base + i * 16 + r * 8 + grp, kc, h, q,
                          h ? __high2half2(p_scale[i][r]) : __low2half2(p_scale[i][r]), p_frag[r]);
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const uint32_t a_regs[4] = {p_frag[0][2 * t], p_frag[1][2 * t], p_frag[0][2 * t + 1], p_frag[1][2 * t + 1]};
#pragma unroll
          for (int j = 0; j < C::Q_TILES; ++j) {
            if (NVFP4_DIAG_SKIP & 2) {
              acc[i][j][0] += __uint_as_float(a_regs[0] ^ a_regs[1] ^ a_regs[2] ^ a_regs[3] ^ q_frag[j][2 * t] ^
                                              q_frag[j][2 * t + 1]);
              continue;
            }
            mma_f16_16x8x16(acc[i][j], a_regs, q_frag[j][2 * t], q_frag[j][2 * t + 1]);
          }
        }
      }
    }
  }
};

}  // namespace

NVFP4_DEFINE_GROUPED_GEMM(NVFP4_KERNEL_NAME, Config, nvfp4::grouped_gemm<Config, MathSm80>)
