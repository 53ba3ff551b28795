// The grouped-GEMM kernel body every family shares: group lookup, the cp.async pipeline that
// brings fp4 rows and scale words into shared memory, and the epilogue. A family supplies only
// its `Math` policy: how one K chunk of a stage turns into MMA instructions.
//
//   out[m, n] = alpha[g] * sum_k e2m1(a[m,k]) sa(m,k/16) * e2m1(b[g,n,k]) sb(g,n,k/16)
//
// One block computes a TM x TN output tile of one group (TM tokens: 16, 32, 64 or 128); warps
// tile it min(TM, 64) tokens x 32 columns. "P" is the operand on the MMA's M side (16-row fragments), "Q" the one on its N side
// (8-column fragments): tokens are P and weights Q, or the other way round with SWAP_AB.
//
// Shared memory per stage (bytes):
//   A  [TM][TK/2 + 16]        packed fp4 rows; +16 B pitch so the 8 rows a warp reads hit distinct banks
//   B  [TN][TK/2 + 16]
//   SA [TK/64][TM]  u32       scale word w of row r = the 4 ue4m3 bytes of k-blocks 4w..4w+3
//   SB [TK/64][TN]  u32
#pragma once
#include "nvfp4_common.cuh"

namespace nvfp4 {

template <int TM_, int TN_, int TK_, bool SWAP_, int STAGES_>
struct GemmConfig {
  static constexpr int TM = TM_, TN = TN_, TK = TK_, STAGES = STAGES_;
  static constexpr bool SWAP = SWAP_;
  static constexpr int WARP_M = TM < 64 ? TM : 64, WARP_N = 32;
  static constexpr int WARPS_M = TM / WARP_M, WARPS_N = TN / WARP_N;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int ROW_BYTES = TK / 2;
  static constexpr int ROW_PITCH = ROW_BYTES + 16;
  static constexpr int CHUNKS_PER_ROW = ROW_BYTES / 16;
  static constexpr int SF_WORDS = TK / 64;
  static constexpr int STAGE_A = TM * ROW_PITCH;
  static constexpr int STAGE_B = TN * ROW_PITCH;
  static constexpr int STAGE_SA = SF_WORDS * TM * 4;
  static constexpr int STAGE_SB = SF_WORDS * TN * 4;
  static constexpr int STAGE_BYTES = STAGE_A + STAGE_B + STAGE_SA + STAGE_SB;
  static constexpr int P_TILES = SWAP ? WARP_N / 16 : WARP_M / 16;  // 16-row MMA fragments per warp
  static constexpr int Q_TILES = SWAP ? WARP_M / 8 : WARP_N / 8;    // 8-column MMA fragments per warp
  static constexpr int P_ROWS = SWAP ? TN : TM;                      // rows of the P operand's smem tile
  static constexpr int Q_ROWS = SWAP ? TM : TN;
  static_assert(TM % 16 == 0 && TN % 32 == 0, "fragments are 16 rows (P) and 8 columns (Q)");
};

// One pipeline stage seen by the math: the P and Q operands' rows and scale words.
struct StageView {
  const uint8_t* p_data;  // [P_ROWS][ROW_PITCH]
  const uint8_t* q_data;  // [Q_ROWS][ROW_PITCH]
  const uint32_t* p_sf;   // [SF_WORDS][P_ROWS]
  const uint32_t* q_sf;   // [SF_WORDS][Q_ROWS]
};

// Math policy interface:
//   static constexpr int K_CHUNK;   // K elements one call consumes (a multiple of 32, divides 128)
//   template <class C> static void chunk(float (&acc)[C::P_TILES][C::Q_TILES][4], const StageView&,
//                                        int p_base, int q_base, int kc, int lane);
// acc[i][j] is the m16n8 accumulator of P fragment i and Q fragment j in the mma.sync C layout:
// element v at P row lane/4 (+8 for v >= 2), Q column 2*(lane%4) + (v&1).

template <class C, class Math>
__device__ __forceinline__ void grouped_gemm(const uint8_t* __restrict__ a, const uint8_t* __restrict__ b,
                                             const uint8_t* __restrict__ a_scale,
                                             const uint8_t* __restrict__ b_scale,
                                             const int32_t* __restrict__ m_indptr,
                                             const float* __restrict__ alpha, void* __restrict__ out,
                                             int64_t cum_m, int64_t a_scale_rows, int n, int k, int num_groups,
                                             int out_dtype) {
  constexpr int TM = C::TM, TN = C::TN, TK = C::TK, STAGES = C::STAGES, THREADS = C::THREADS;
  extern __shared__ __align__(16) uint8_t smem[];

  const MTile tile = find_m_tile<TM>(m_indptr, num_groups, cum_m, blockIdx.x);
  if (tile.group < 0) return;
  const int g = tile.group;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * TN;
  if (n0 >= n) return;

  const int64_t row_bytes = k / 2;
  const int64_t sf_k = k / kSfVec;
  const int64_t n_pad = (static_cast<int64_t>(n) + 127) / 128 * 128;
  const uint8_t* b_group = b + static_cast<int64_t>(g) * n * row_bytes;
  const uint8_t* sb_group = b_scale + static_cast<int64_t>(g) * n_pad * sf_k;
  const int k_tiles = (k + TK - 1) / TK;
  const int tid = threadIdx.x;

  // One k tile into stage `s`. Reads past K (K=384 with TILE_K=256), past N, or past a_scale are
  // zero-filled: zero data times zero scale contributes exactly 0. Rows past the group end are
  // clamped to its last row: real data whose results are never stored.
  auto load_stage = [&](int s, int kt) {
    uint8_t* s_a = smem + s * C::STAGE_BYTES;
    uint8_t* s_b = s_a + C::STAGE_A;
    uint8_t* s_sa = s_b + C::STAGE_B;
    uint8_t* s_sb = s_sa + C::STAGE_SA;
    const int64_t k_byte0 = static_cast<int64_t>(kt) * C::ROW_BYTES;
    for (int i = tid; i < TM * C::CHUNKS_PER_ROW; i += THREADS) {
      const int r = i / C::CHUNKS_PER_ROW, c = i % C::CHUNKS_PER_ROW;
      const int64_t kb = k_byte0 + c * 16;
      const int64_t row = min(tile.row_begin + r, tile.row_end - 1);
      const bool ok = kb < row_bytes;
      cp_async_16(s_a + r * C::ROW_PITCH + c * 16, ok ? a + row * row_bytes + kb : a, ok);
    }
    for (int i = tid; i < TN * C::CHUNKS_PER_ROW; i += THREADS) {
      const int r = i / C::CHUNKS_PER_ROW, c = i % C::CHUNKS_PER_ROW;
      const int64_t kb = k_byte0 + c * 16;
      const bool ok = kb < row_bytes && n0 + r < n;
      cp_async_16(s_b + r * C::ROW_PITCH + c * 16, ok ? b_group + (n0 + r) * row_bytes + kb : b, ok);
    }
    const int64_t sf_col0 = static_cast<int64_t>(kt) * (TK / kSfVec);
    for (int i = tid; i < C::SF_WORDS * TM; i += THREADS) {
      const int w = i / TM, r = i % TM;
      const int64_t kb = sf_col0 + w * 4, row = tile.sf_row + r;
      const bool ok = kb < sf_k && row < a_scale_rows;
      cp_async_4(s_sa + i * 4, ok ? a_scale + swizzled_offset(row, kb, sf_k) : a_scale, ok);
    }
    for (int i = tid; i < C::SF_WORDS * TN; i += THREADS) {
      const int w = i / TN, r = i % TN;
      const int64_t kb = sf_col0 + w * 4;
      const bool ok = kb < sf_k;
      cp_async_4(s_sb + i * 4, ok ? sb_group + swizzled_offset(n0 + r, kb, sf_k) : b_scale, ok);
    }
  };

  const int warp = tid >> 5, lane = tid & 31;
  const int warp_m = warp % C::WARPS_M, warp_n = warp / C::WARPS_M;
  const int p_base = C::SWAP ? warp_n * C::WARP_N : warp_m * C::WARP_M;
  const int q_base = C::SWAP ? warp_m * C::WARP_M : warp_n * C::WARP_N;

  float acc[C::P_TILES][C::Q_TILES][4];
#pragma unroll
  for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
    for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
      for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt-1 is free to refill
    const int next = kt + STAGES - 1;
    if (next < k_tiles) load_stage(next % STAGES, next);
    cp_async_commit();

    const uint8_t* s_a = smem + (kt % STAGES) * C::STAGE_BYTES;
    const uint8_t* s_b = s_a + C::STAGE_A;
    const uint32_t* s_sa = reinterpret_cast<const uint32_t*>(s_b + C::STAGE_B);
    const uint32_t* s_sb = reinterpret_cast<const uint32_t*>(s_b + C::STAGE_B + C::STAGE_SA);
    const StageView view = C::SWAP ? StageView{s_b, s_a, s_sb, s_sa} : StageView{s_a, s_b, s_sa, s_sb};
#pragma unroll
    for (int kc = 0; kc < TK / Math::K_CHUNK; ++kc) Math::template chunk<C>(acc, view, p_base, q_base, kc, lane);
  }
  cp_async_wait<0>();

  // Epilogue: accumulator element v of fragment (i, j) sits at P row lane/4 (+8 for v >= 2) and
  // Q column 2*(lane%4) + (v & 1).
  const float scale = alpha != nullptr ? __ldg(alpha + g) : 1.f;
  const int grp = lane >> 2, q = lane & 3;
#pragma unroll
  for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
    for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int p = p_base + i * 16 + grp + h * 8;
        const int qc = q_base + j * 8 + 2 * q;
        const float v0 = acc[i][j][2 * h] * scale, v1 = acc[i][j][2 * h + 1] * scale;
        if (!C::SWAP) {
          const int64_t row = tile.row_begin + p, col = n0 + qc;
          if (row < tile.row_end && col < n) store_pair(out, row * n + col, v0, v1, out_dtype);
        } else {
          const int64_t row = tile.row_begin + qc, col = n0 + p;
          if (col < n) {
            if (row < tile.row_end) store_one(out, row * n + col, v0, out_dtype);
            if (row + 1 < tile.row_end) store_one(out, (row + 1) * n + col, v1, out_dtype);
          }
        }
      }
}

#if defined(NVFP4_TILE_M)
// The variant of a build_cubins.py compile (its -D macros), checked against the block size and
// shared memory the host will launch it with.
using BuildConfig = GemmConfig<NVFP4_TILE_M, NVFP4_TILE_N, NVFP4_TILE_K, NVFP4_SWAP_AB != 0, NVFP4_STAGES>;
static_assert(BuildConfig::THREADS == NVFP4_THREADS, "build_cubins.py and the kernel disagree on the block size");
static_assert(BuildConfig::STAGES * BuildConfig::STAGE_BYTES == NVFP4_SMEM_BYTES,
              "build_cubins.py and the kernel disagree on the shared memory size");
#endif

}  // namespace nvfp4

// The extern "C" entry every family's .cu instantiates, with the ABI of build_cubins.py's
// GROUPED_GEMM_PARAMS.
#define NVFP4_DEFINE_GROUPED_GEMM(NAME, CONFIG, MATH)                                                   \
  extern "C" __global__ void __launch_bounds__(CONFIG::THREADS, 1) NAME(                                \
      const uint8_t* __restrict__ a,        /* (cum_m, K/2) packed e2m1, row-major */                   \
      const uint8_t* __restrict__ b,        /* (G, N, K/2) packed e2m1, row-major */                    \
      const uint8_t* __restrict__ a_scale,  /* ue4m3, 128x4-swizzled, group g from sf_base(g) */        \
      const uint8_t* __restrict__ b_scale,  /* (G, N_pad, K/16) ue4m3, 128x4-swizzled */                \
      const int32_t* __restrict__ m_indptr, /* (G+1,) row offsets of the groups */                      \
      const float* __restrict__ alpha,      /* (G,) or nullptr for 1 */                                 \
      void* __restrict__ out,               /* (cum_m, N) bf16 or fp16, row-major */                    \
      int64_t cum_m,                        /* rows of a and out */                                     \
      int64_t a_scale_rows,                 /* rows of a_scale; reads past it give 0 */                 \
      int n, int k, int num_groups,         /* N % 8 == 0, K % 128 == 0, G */                           \
      int out_dtype) {                      /* kOutBf16 | kOutF16 */                                    \
    nvfp4::grouped_gemm<CONFIG, MATH>(a, b, a_scale, b_scale, m_indptr, alpha, out, cum_m, a_scale_rows, n, \
                                      k, num_groups, out_dtype);                                         \
  }
