// The math of the warp-specialized body (nvfp4_grouped_gemm_ws.cuh) in the block-scaled MMA's
// fragments: ldmatrix loads of the swizzled stages, the scale words, and mma_nvf4_16x8x64
// (sm120_mma.cuh), which is the native instruction on sm_120a / sm_121a, its fp16 model on sm90ws
// (NVFP4_HMMA), or the twin / stand-in (NVFP4_TWIN / NVFP4_STANDIN).
#pragma once
#include "nvfp4_grouped_gemm_ws.cuh"
#include "sm120_mma.cuh"

namespace nvfp4 {

// Four 8x8 matrices of 16-bit elements (8 rows x 16 bytes of packed fp4 each); lane l names row
// l % 8 of matrix l / 8, and register j of lane (g, p) receives bytes [4p, 4p+4) of row g of
// matrix j: exactly the MMA's fragment word of that lane.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint8_t* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row_address)));
}

// Two such matrices: lanes 0-15 give the row addresses (lane l: row l % 8 of matrix l / 8).
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const uint8_t* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_address(row_address)));
}

struct MathSm120Ws {
  // PTX requires bit 7 of every ue4m3 scale byte clear and leaves other bytes undefined; SPEC §1
  // reads a scale byte as byte & 0x7F, so the words are masked before the MMA sees them.
  static constexpr uint32_t kScaleMask = 0x7F7F7F7Fu;
  static constexpr float kAccScale = kMmaAccScale;  // 1 but in the HMMA model (sm120_mma.cuh)

  // The P operand of one 64-K chunk (kc: its index in the stage, also its scale quad): fragment
  // words as in sm120_nvfp4_grouped_gemm.cu, the chunk's two 16-byte halves of a row being chunks
  // 2kc, 2kc+1 of the swizzled row. Loaded one chunk ahead of its MMAs (the body's loop), across
  // the stage boundary too.
  template <class C>
  struct PFragments {
    uint32_t a[C::P_TILES][4], sf[C::P_TILES];
  };

  // P fragment i (16 rows) of chunk kc: lane l addresses row l % 8 + 8 * ((l / 8) % 2), half l / 16.
  template <class C>
  static __device__ __forceinline__ void load_p_fragment(uint32_t (&a)[4], const WsStageView& s, int p_base, int i,
                                                         int kc, int lane) {
    const int row = p_base + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    ldmatrix_x4(a, s.p_data + swizzled_chunk<C>(row, 2 * kc + (lane >> 4)));
  }

  // Q fragments j and j + 1 (8 rows each) of chunk kc: row l % 8 of fragment l / 16, half (l / 8) % 2;
  // registers 0-1 are fragment j's, 2-3 fragment j + 1's.
  template <class C>
  static __device__ __forceinline__ void load_q_pair(uint32_t (&b4)[4], const WsStageView& s, int q_base, int j,
                                                     int kc, int lane) {
    const int row = q_base + (j + (lane >> 4)) * 8 + (lane & 7);
    ldmatrix_x4(b4, s.q_data + swizzled_chunk<C>(row, 2 * kc + ((lane >> 3) & 1)));
  }

  // Scales of P: thread-id-a = 0, so lane 4g carries row g's 4 scales and lane 4g+1 row g+8's (lanes
  // 4g+2/3 are not read; they load row g+8's too, which keeps the load uniform). SPEC §3 puts rows
  // r and r+32 of a 128-row block side by side (words r%32*4 + r/32), so where a warp's P fragments
  // i and i+2 are such rows with r/32 even (tokens on P, 128-row tiles: warp rows 0-63 or 64-127)
  // one 8-byte load serves both.
  template <class C>
  static __device__ __forceinline__ void load_p(PFragments<C>& f, const WsStageView& s, int p_base, int kc,
                                                int lane) {
    const int g = lane >> 2, p = lane & 3;
    constexpr bool kPairedScales = !C::SWAP && C::TM == 128 && C::P_TILES == 4;
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i) {
      load_p_fragment<C>(f.a[i], s, p_base, i, kc, lane);
      const int sf_row = s.p_sf_row0 + p_base + i * 16 + g + ((p & 1) ? 8 : 0);
      if (!kPairedScales) {
        f.sf[i] = s.p_sf[sf_word(sf_row, kc)] & kScaleMask;
      } else if (i < 2) {  // row sf_row (r/32 = 0 or 2: p_sf_row0 = 0, p_base = 0 or 64) and sf_row + 32
        const uint2 both = *reinterpret_cast<const uint2*>(s.p_sf + sf_word(sf_row, kc));
        f.sf[i] = both.x & kScaleMask;
        f.sf[i + 2] = both.y & kScaleMask;
      }
    }
  }

  // The chunk's MMAs: Q fragments and their scales, each pair loaded as its MMAs need it.
  template <class C>
  static __device__ __forceinline__ void mma(float (&acc)[C::P_TILES][C::Q_TILES][4], const PFragments<C>& f,
                                             const WsStageView& s, int q_base, int kc, int lane) {
    static_assert(C::Q_TILES % 2 == 0, "Q fragments are loaded in pairs");
    const int g = lane >> 2;
#pragma unroll
    for (int j = 0; j < C::Q_TILES; j += 2) {
      uint32_t b4[4];
      load_q_pair<C>(b4, s, q_base, j, kc, lane);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t b[2] = {b4[2 * h], b4[2 * h + 1]};
        // thread-id-b = 0: lane 4g carries column g's 4 scales (the others are not read).
        const uint32_t sfb = s.q_sf[sf_word(s.q_sf_row0 + q_base + (j + h) * 8 + g, kc)] & kScaleMask;
#pragma unroll
        for (int i = 0; i < C::P_TILES; ++i) mma_nvf4_16x8x64<0, 0>(acc[i][j + h], f.a[i], b, f.sf[i], sfb);
      }
    }
  }
};

#if defined(NVFP4_HMMA)
// sm90ws: the same stages through the MMA's fp16 model (sm120_mma.cuh), in the order that decodes
// each fragment once -- a chunk's Q fragments first, then each P fragment against all of them --
// and with everything a chunk needs loaded one chunk ahead (the body's PFragments double buffer):
// P and Q fragments, and the scale words in the lanes that decode with them (row g and row g + 8
// of P, column g of Q), so no shuffle is needed.
// The scale words are not masked: lane_scales converts the raw bytes and takes |x| (folded into
// the HMUL2 that applies it), which is SPEC §1's byte & 0x7F, NaN included (0x7F and 0xFF are both
// float8_e4m3fn NaN).
struct MathSm90Ws {
  static constexpr float kAccScale = kMmaAccScale;  // the decode's 2^-28

  template <class C>
  struct PFragments {
    uint32_t a[C::P_TILES][4], sf[C::P_TILES][2];  // P rows g, g + 8 (and their scale words)
    uint32_t b[C::Q_TILES][2], sfb[C::Q_TILES];     // Q column g
  };

  template <class C>
  static __device__ __forceinline__ void load_p(PFragments<C>& f, const WsStageView& s, int p_base, int kc,
                                                int lane) {
    static_assert(C::Q_TILES == 1 || C::Q_TILES % 2 == 0, "Q fragments are loaded in pairs, or one alone");
    const int g = lane >> 2;
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i) {
      MathSm120Ws::load_p_fragment<C>(f.a[i], s, p_base, i, kc, lane);
#pragma unroll
      for (int h = 0; h < 2; ++h)
        f.sf[i][h] = s.p_sf[sf_word(s.p_sf_row0 + p_base + i * 16 + g + 8 * h, kc)];
    }
    // A warp's Q rows start at its q_base, which the body passes to mma only; in sm90ws's cuts
    // (tokens on Q, one warp row) that is 0 for every warp.
    static_assert(C::SWAP && C::WARPS_M == 1, "every warp's Q rows are the tile's");
    if (C::Q_TILES == 1) {  // the 8-token tile: one fragment, its two 16-byte halves (ldmatrix .x2)
      ldmatrix_x2(f.b[0], s.q_data + swizzled_chunk<C>(lane & 7, 2 * kc + ((lane >> 3) & 1)));
      f.sfb[0] = s.q_sf[sf_word(s.q_sf_row0 + g, kc)];
      return;
    }
#pragma unroll
    for (int j = 0; j < C::Q_TILES; j += 2) {
      uint32_t b4[4];
      MathSm120Ws::load_q_pair<C>(b4, s, 0, j, kc, lane);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        f.b[j + h][0] = b4[2 * h];
        f.b[j + h][1] = b4[2 * h + 1];
        f.sfb[j + h] = s.q_sf[sf_word(s.q_sf_row0 + (j + h) * 8 + g, kc)];
      }
    }
  }

  template <class C>
  static __device__ __forceinline__ void mma(float (&acc)[C::P_TILES][C::Q_TILES][4], const PFragments<C>& f,
                                             const WsStageView&, int, int, int) {
    uint32_t dq[C::Q_TILES][4][2];
#pragma unroll
    for (int j = 0; j < C::Q_TILES; ++j) hmma::decode_b(f.b[j], f.sfb[j], dq[j]);
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i) {
      uint32_t dp[4][4];
      hmma::decode_a<C::Q_TILES == 1>(f.a[i], f.sf[i][0], f.sf[i][1], dp);
#pragma unroll
      for (int j = 0; j < C::Q_TILES; ++j) hmma::mma_decoded(acc[i][j], dp, dq[j]);
    }
  }
};
#endif  // NVFP4_HMMA

}  // namespace nvfp4
