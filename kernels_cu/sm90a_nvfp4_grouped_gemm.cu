// NVFP4 grouped GEMM on Hopper's warpgroup MMA (wgmma, sm_90a) for groups of many rows (prefill).
//
// Hopper has no fp4 MMA, so both operands are decoded exactly to fp16 (nvfp4_decode.cuh) and the
// decode overlaps the tensor cores: wgmma runs asynchronously, so while it multiplies K sub-tile t
// the same warps decode sub-tile t+1. The two operands take the two sides of wgmma:
//   P (wgmma A, 64 rows a warpgroup) is decoded by each warp straight into its A fragment
//           registers: a warp owns 16 P rows, so nothing is decoded twice;
//   Q (wgmma B, the N side) is decoded once per block into shared memory, in the
//           128-byte-swizzled K-major layout wgmma reads, and shared by every warpgroup.
// Without swap_ab P is the 128 tokens (two warpgroups) and Q the tile_n weight rows; with swap_ab P
// is the tile_n weight rows (tile_n / 64 warpgroups) and Q the tile_m tokens, so the decode in
// shared memory -- written once, read by every warpgroup's wgmma -- is the smaller operand's and
// there are two or three blocks an SM to hide the decode's latency (docs/perf-notes.md, v0.7).
// The packed fp4 tiles arrive through the same cp.async pipeline as the portable kernel's
// (nvfp4_grouped_gemm.cuh: StageLoader, one stage = 128 K), and each stage is decoded as two
// sub-tiles of 64 K (one 128-byte fp16 row per Q row).
//
// Per sub-tile t (B buffer t % 2, A registers t % 2, or the one set of Sm90aConfig::A_BUFS):
//   barrier                   every warpgroup's wgmma t-2 has completed (its wait_group 1 at t-1)
//   (even t) cp.async of the stage STAGES-1 ahead, into the one sub-tiles t-2 and t-1 read
//   decode t                  into the buffers wgmma t-2 read (one A set: Q, wait for wgmma t-1, P)
//   proxy fence, barrier      the decoded B visible to every warpgroup's wgmma
//   wgmma t (4 x k16), commit; wait until only wgmma t is in flight
// Blocks walk bands of row tiles (block_tile), so the blocks resident together share L2 lines.
//
// Macros (from build_cubins.py): NVFP4_KERNEL_NAME, NVFP4_TILE_M (swap_ab: 32 | 64 | 128; else 128),
// NVFP4_TILE_N (128 | 256), NVFP4_SWAP_AB, NVFP4_STAGES, NVFP4_THREADS, NVFP4_SMEM_BYTES,
// NVFP4_BLOCKS_PER_SM. TILE_K = 128.
// Diagnostics for timing experiments only (wrong results; never in the variant table):
// NVFP4_DIAG_SKIP = 1 no decode, 2 no wgmma, 4 no loads after the prologue (bits may be combined);
// 8: issue each stage's loads after the proxy fence instead of before the decode (a timing test).
#define NVFP4_OWN_BUILD_CONFIG 1  // Sm90aConfig below, not nvfp4_grouped_gemm.cuh's BuildConfig
#include "nvfp4_decode.cuh"
#include "nvfp4_grouped_gemm.cuh"
#include "sm90a_wgmma.cuh"

#include <type_traits>

#ifndef NVFP4_BLOCKS_PER_SM
#define NVFP4_BLOCKS_PER_SM 1  // blocks per SM the register budget is cut for (build_cubins.py: 2-3 with swap_ab)
#endif

namespace {

using namespace nvfp4;

template <int TM_, int TN_, bool SWAP_, int STAGES_>
struct Sm90aConfig {
  static constexpr int TM = TM_, TN = TN_, TK = 128, STAGES = STAGES_;
  static constexpr bool SWAP = SWAP_;
  static constexpr int P_ROWS = SWAP ? TN : TM;         // wgmma's M side: 64 rows a warpgroup
  static constexpr int Q_ROWS = SWAP ? TM : TN;         // wgmma's N side, decoded into shared memory
  static constexpr int THREADS = 128 * (P_ROWS / 64), MIN_BLOCKS = NVFP4_BLOCKS_PER_SM;
  static constexpr int K_SUB = 64;                      // K of one decoded sub-tile
  static constexpr int ACC = Q_ROWS / 2;                // m64nQk16 accumulators per thread
  static constexpr int B_ROW = K_SUB * 2;               // 128 bytes: one swizzle atom row
  static constexpr int B_BUF = Q_ROWS * B_ROW;          // one decoded Q sub-tile
  using Raw = GemmConfig<TM, TN, TK, SWAP, STAGES>;     // the packed stages' layout
  static constexpr int ALIGN = 1024;                    // a 128-byte swizzle atom (8 rows)
  // A fragment sets in registers: two, so the decode of sub-tile t overlaps wgmma t-1 -- but one where
  // registers are short (two sets spilled): 128 tokens on wgmma's N side at two blocks an SM (128
  // registers), and three blocks an SM (80). That block waits for wgmma t-1 before decoding t's
  // weights, while the other blocks on the SM keep the tensor cores busy (4-5% faster than two sets
  // with their spills; perf-notes, v0.7).
  static constexpr int A_BUFS = SWAP && (Q_ROWS == 128 || MIN_BLOCKS >= 3) ? 1 : 2;
  static constexpr int EPILOGUE = 64;                   // EpilogueTile, after the stages
  static constexpr int SMEM_BYTES = ALIGN + 2 * B_BUF + STAGES * Raw::STAGE_BYTES + EPILOGUE;
  static_assert(P_ROWS % 64 == 0 && (SWAP || TM == 128), "whole warpgroups; tokens on M are 128");
  static_assert(Q_ROWS == 32 || Q_ROWS == 64 || Q_ROWS == 128 || Q_ROWS == 256, "wgmma shapes spelled out in sm90a_wgmma.cuh");
};

#ifndef NVFP4_DIAG_SKIP
#define NVFP4_DIAG_SKIP 0
#endif
constexpr bool kSkipDecode = NVFP4_DIAG_SKIP & 1, kSkipMma = NVFP4_DIAG_SKIP & 2, kSkipLoads = NVFP4_DIAG_SKIP & 4;
constexpr bool kLoadsAfterFence = NVFP4_DIAG_SKIP & 8;

#if defined(NVFP4_TILE_N)
using Config = Sm90aConfig<NVFP4_TILE_M, NVFP4_TILE_N, NVFP4_SWAP_AB != 0, NVFP4_STAGES>;
static_assert(Config::THREADS == NVFP4_THREADS, "build_cubins.py and the kernel disagree on the block size");
static_assert(Config::SMEM_BYTES == NVFP4_SMEM_BYTES, "build_cubins.py and the kernel disagree on shared memory");
#endif

// Q rows of the current raw stage -> fp16 B buffer. A unit is one row's 32-element block
// (16 packed bytes, 2 scale blocks); its 4 words decode to registers R[w][j] = elements
// (8w + j, 8w + j + 4), and 16-byte chunk c of the block's 64 fp16 bytes holds R[0..3][c]: the
// order the A fragments use (decode_q_tile and decode_p_frags must agree; see decode_p_frags).
// With fewer units than threads (swap_ab's tokens) the first warps decode, one a scheduler in turn.
template <class C>
__device__ __forceinline__ void decode_q_tile(const uint8_t* s_q, const uint32_t* s_sq, int half, uint8_t* buf,
                                              int tid) {
  constexpr int UNITS = C::Q_ROWS * 2;
  static_assert(UNITS % C::THREADS == 0 || UNITS < C::THREADS, "every decoding thread takes as many units");
#pragma unroll
  for (int i = 0; i < (UNITS + C::THREADS - 1) / C::THREADS; ++i) {
    const int u = tid + i * C::THREADS;
    if (UNITS < C::THREADS && u >= UNITS) break;
    const int row = u % C::Q_ROWS, blk = u / C::Q_ROWS;  // consecutive lanes: consecutive rows, no bank conflicts
    const uint4 w = *reinterpret_cast<const uint4*>(s_q + row * C::Raw::ROW_PITCH + half * 32 + blk * 16);
    const uint32_t sf = s_sq[half * C::Q_ROWS + row];  // scale word of this 64-K half: blocks 0..3
    const __half2 s01 = ue4m3x2_to_f16x2<false>(sf >> (16 * blk));  // blocks 2*blk and 2*blk + 1
    const __half2 s0 = __low2half2(s01), s1 = __high2half2(s01);
    uint32_t r[4][4];
    decode_word(w.x, s0, r[0]);
    decode_word(w.y, s0, r[1]);
    decode_word(w.z, s1, r[2]);
    decode_word(w.w, s1, r[3]);
    uint8_t* dst = buf + row * C::B_ROW;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int chunk = (blk * 4 + c) ^ (row & 7);  // the 128-byte swizzle
      *reinterpret_cast<uint4*>(dst + chunk * 16) = make_uint4(r[0][c], r[1][c], r[2][c], r[3][c]);
    }
  }
}

// This warp's 16 P rows of the current raw stage -> A fragments of the sub-tile's 4 k16 steps.
// Lane (g, p) decodes word p of each 32-element block for rows g and g+8: registers j of word p
// hold elements (8p + j, 8p + j + 4), and step 2*blk + h takes registers 2h (k slots 2p, 2p+1) and
// 2h+1 (k slots 8+2p, 9+2p). In B that is chunk 4*blk + 2h (+1), 4-byte word p: R[p][2h] (+1).
template <class C>
__device__ __forceinline__ void decode_p_frags(const uint8_t* s_p, const uint32_t* s_sp, int half, int row0,
                                               int lane, uint32_t (&frag)[4][4]) {
  const int p = lane & 3;
  __half2 scales[2];  // rows g and g + 8: the scales of word p in blk 0 and 1 (lane_scales)
#pragma unroll
  for (int h = 0; h < 2; ++h) scales[h] = lane_scales<false>(s_sp[half * C::P_ROWS + row0 + h * 8], p);
#pragma unroll
  for (int blk = 0; blk < 2; ++blk) {
    uint32_t r[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + h * 8;
      const uint32_t w = *reinterpret_cast<const uint32_t*>(s_p + row * C::Raw::ROW_PITCH + half * 32 + blk * 16 + p * 4);
      decode_word(w, blk ? __high2half2(scales[h]) : __low2half2(scales[h]), r[h]);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      frag[blk * 2 + h][0] = r[0][2 * h];
      frag[blk * 2 + h][1] = r[1][2 * h];
      frag[blk * 2 + h][2] = r[0][2 * h + 1];
      frag[blk * 2 + h][3] = r[1][2 * h + 1];
    }
  }
}

// What the epilogue needs of the tile, kept in shared memory through the main loop instead of in
// registers: at three blocks an SM (80 registers a thread) the 32-token cut spilled with these live.
struct EpilogueTile {
  int64_t row_begin, row_end, n0;
  int group;
};

template <class C>
__device__ __forceinline__ void grouped_gemm_wgmma(const uint8_t* __restrict__ a, const uint8_t* __restrict__ b,
                                                   const uint8_t* __restrict__ a_scale,
                                                   const uint8_t* __restrict__ b_scale,
                                                   const int32_t* __restrict__ m_indptr,
                                                   const float* __restrict__ alpha, void* __restrict__ out,
                                                   int64_t cum_m, int64_t a_scale_rows, int n, int k,
                                                   int num_groups, int out_dtype) {
  using Raw = typename C::Raw;
  constexpr int STAGES = C::STAGES;
  extern __shared__ __align__(16) uint8_t smem_base[];
  const uint32_t base_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_base));
  uint8_t* smem = smem_base + ((C::ALIGN - (base_addr & (C::ALIGN - 1))) & (C::ALIGN - 1));
  uint8_t* b_bufs = smem;               // [2][Q_ROWS][128 B] decoded Q, swizzled
  uint8_t* raw = smem + 2 * C::B_BUF;   // [STAGES] packed stages
  EpilogueTile* epilogue = reinterpret_cast<EpilogueTile*>(raw + STAGES * Raw::STAGE_BYTES);
  static_assert(sizeof(EpilogueTile) <= C::EPILOGUE, "the epilogue's slot");

  const BlockTile bt = block_tile<kRasterBand>();
  const MTile tile = find_m_tile<C::TM>(m_indptr, num_groups, cum_m, bt.m_tile);
  if (tile.group < 0) return;
  const int g = tile.group;
  const int64_t n0 = static_cast<int64_t>(bt.n_tile) * C::TN;
  if (n0 >= n) return;

  const int64_t row_bytes = k / 2, sf_k = k / kSfVec;
  const int64_t n_pad = (static_cast<int64_t>(n) + 127) / 128 * 128;
  const uint8_t* b_group = b + static_cast<int64_t>(g) * n * row_bytes;
  const uint8_t* sb_group = b_scale + static_cast<int64_t>(g) * n_pad * sf_k;
  const TileSource src{a, b, a_scale, b_scale, b_group, sb_group, tile, n0, n, row_bytes, sf_k, a_scale_rows};
  // The v0.4 loader (a pointer per weight row): faster here without swap_ab (perf-notes, v0.5); the
  // strided one, with fewer registers, for swap_ab's two blocks an SM (128 registers a thread).
  const StageLoader<Raw, C::THREADS, !C::SWAP> loader(src, threadIdx.x);
  const int k_tiles = k / C::TK;  // K % 128 == 0 (SPEC §2)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int p_row0 = warp * 16 + (lane >> 2);  // warpgroup warp / 4 owns P rows 64*(warp/4) ..
  if (tid == 0) *epilogue = EpilogueTile{tile.row_begin, tile.row_end, n0, g};  // read after the loop's barriers

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) loader.load(raw + s * Raw::STAGE_BYTES, s);
    cp_async_commit();
  }

  float acc[C::ACC];
#pragma unroll
  for (int i = 0; i < C::ACC; ++i) acc[i] = 0.f;
  constexpr int A_BUFS = C::A_BUFS;
  uint32_t a_frag[A_BUFS][4][4];
  if (kSkipDecode) {  // diagnostics only: defined operands
#pragma unroll
    for (int i = 0; i < A_BUFS * 16; ++i) (&a_frag[0][0][0])[i] = 0u;
  }

  // Sub-tile t = 2 * kt + half, into buffers `buf` (a compile-time index keeps a_frag in registers).
  auto sub_tile = [&](auto buf_tag, int kt, int half) {
    constexpr int buf = decltype(buf_tag)::value;
    if (half == 0) cp_async_wait<STAGES - 2>();  // stage kt has landed (for this thread's copies)
    __syncthreads();
    auto refill = [&] {
      const int next = kt + STAGES - 1;  // refills the stage sub-tiles 2kt-2 and 2kt-1 read
      if (next < k_tiles && !kSkipLoads)
        loader.load(raw + (next % STAGES) * Raw::STAGE_BYTES, next);
      cp_async_commit();
    };
    if (half == 0 && !kLoadsAfterFence) refill();  // before the decode: measured 2-4% faster (v0.3)
    const uint8_t* s_a = raw + (kt % STAGES) * Raw::STAGE_BYTES;
    const uint8_t* s_b = s_a + Raw::STAGE_A;
    const uint32_t* s_sa = reinterpret_cast<const uint32_t*>(s_b + Raw::STAGE_B);
    const uint32_t* s_sb = reinterpret_cast<const uint32_t*>(s_b + Raw::STAGE_B + Raw::STAGE_SA);
    uint8_t* b_buf = b_bufs + buf * C::B_BUF;
    if (!kSkipDecode) {
      decode_q_tile<C>(C::SWAP ? s_a : s_b, C::SWAP ? s_sa : s_sb, half, b_buf, tid);
      if (A_BUFS == 1) wgmma_wait<0>();  // wgmma t-1 has read the one set of A registers
      decode_p_frags<C>(C::SWAP ? s_b : s_a, C::SWAP ? s_sb : s_sa, half, p_row0, lane, a_frag[buf % A_BUFS]);
    }
    fence_proxy_async_smem();
    __syncthreads();
    if (half == 0 && kLoadsAfterFence) refill();
    if (!kSkipMma) {
      wgmma_fence();
      const uint64_t desc = wgmma_desc_k128b(b_buf);
#pragma unroll
      for (int s = 0; s < 4; ++s) Wgmma<C::Q_ROWS>::mma(acc, a_frag[buf % A_BUFS][s], desc + 2 * s);  // +32 bytes per k16
      wgmma_commit();
      wgmma_wait<1>();
    }
  };
  for (int kt = 0; kt < k_tiles; ++kt) {
    sub_tile(std::integral_constant<int, 0>{}, kt, 0);
    sub_tile(std::integral_constant<int, 1>{}, kt, 1);
  }
  wgmma_wait<0>();
  pin_registers(acc);
  cp_async_wait<0>();

  // Accumulator 4j+v: P row 16*warp + lane/4 (+8 for v >= 2), Q column 8j + 2(lane%4) + (v&1).
  const EpilogueTile e = *epilogue;  // k_tiles >= 1 (K >= 128): the loop's barriers have published it
  const float scale = alpha != nullptr ? __ldg(alpha + e.group) : 1.f;
#pragma unroll
  for (int j = 0; j < C::Q_ROWS / 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float v0 = acc[4 * j + 2 * h] * kDecodedAccScale * scale;
      const float v1 = acc[4 * j + 2 * h + 1] * kDecodedAccScale * scale;
      store_fragment_pair<C::SWAP>(out, e.row_begin, e.row_end, e.n0, n, p_row0 + h * 8, j * 8 + 2 * (lane & 3),
                                   v0, v1, out_dtype);
    }
}

}  // namespace

#if defined(NVFP4_TILE_N)
NVFP4_DEFINE_GROUPED_GEMM(NVFP4_KERNEL_NAME, Config, grouped_gemm_wgmma<Config>)
#endif
