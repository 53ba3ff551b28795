// The grouped-GEMM kernel body every family shares: group lookup, the cp.async pipeline that
// brings fp4 rows and scale words into shared memory, and the epilogue. A family supplies only
// its `Math` policy: how one K chunk of a stage turns into MMA instructions.
//
//   out[m, n] = alpha[g] * sum_k e2m1(a[m,k]) sa(m,k/16) * e2m1(b[g,n,k]) sb(g,n,k/16)
//
// One block computes a TM x TN output tile of one group (TM tokens: 16, 32, 64 or 128); warps
// tile it min(TM, 64) tokens x WARP_N columns (32, or 64 where fewer warps should decode the same
// tokens), and WARPS_K warps share each such tile by taking turns
// over the K chunks of every stage (their partial sums are added through shared memory at the
// end). Splitting K inside the block gives a narrow token tile more warps to hide the latency of
// its decode chain with, without a second kernel or a workspace. "P" is the operand on the MMA's M side (16-row fragments), "Q" the one on its N side
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

template <int TM_, int TN_, int TK_, bool SWAP_, int STAGES_, int WARPS_K_ = 1, int WARP_N_ = 32>
struct GemmConfig {
  static constexpr int TM = TM_, TN = TN_, TK = TK_, STAGES = STAGES_, WARPS_K = WARPS_K_;
  static constexpr bool SWAP = SWAP_;
  static constexpr int WARP_M = TM < 64 ? TM : 64, WARP_N = WARP_N_;
  static constexpr int WARPS_M = TM / WARP_M, WARPS_N = TN / WARP_N;
  static constexpr int TILE_WARPS = WARPS_M * WARPS_N;  // warps of one K share
  static constexpr int THREADS = 32 * TILE_WARPS * WARPS_K;
  // 16-token tiles are latency-bound: two blocks per SM (at most 128 registers a thread at 256
  // threads) keep more warps in flight. Wider tiles need their registers for the MMA fragments
  // (32 tokens spill at 128), and so does sm_80's longer scale conversion (nvfp4_decode.cuh).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
  static constexpr int MIN_BLOCKS = 1;
#else
  static constexpr int MIN_BLOCKS = TM == 16 && THREADS <= 256 ? 2 : 1;
#endif
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
  static_assert(TM % 16 == 0 && TN % WARP_N == 0, "fragments are 16 rows (P) and 8 columns (Q)");
  // The K shares' partial sums, [WARPS_K - 1][TILE_WARPS][P_TILES * Q_TILES * 4][32] floats, reuse
  // the pipeline's shared memory once it has drained.
  static constexpr int REDUCE_BYTES = (WARPS_K - 1) * TILE_WARPS * P_TILES * Q_TILES * 4 * 32 * 4;
  static_assert(REDUCE_BYTES <= STAGES * STAGE_BYTES, "the K shares' reduction must fit the pipeline");
};

// One pipeline stage seen by the math: the P and Q operands' rows and scale words.
struct StageView {
  const uint8_t* p_data;  // [P_ROWS][ROW_PITCH]
  const uint8_t* q_data;  // [Q_ROWS][ROW_PITCH]
  const uint32_t* p_sf;   // [SF_WORDS][P_ROWS]
  const uint32_t* q_sf;   // [SF_WORDS][Q_ROWS]
};

// Where one block's operands live: its M tile of `a` (rows of one group) and its N tile of group
// g's weights. The bases `a`, `b`, `a_scale`, `b_scale` stand in as the address of copies that
// read nothing (zero-filled).
struct TileSource {
  const uint8_t* a;
  const uint8_t* b;
  const uint8_t* a_scale;
  const uint8_t* b_scale;
  const uint8_t* b_group;   // group g's (N, K/2) weights
  const uint8_t* sb_group;  // group g's (N_pad, K/16) swizzled scales
  MTile tile;
  int64_t n0;               // first column of the N tile
  int n;
  int64_t row_bytes, sf_k, a_scale_rows;
};

// The cp.async copies of one thread, k tile by k tile, into the pipeline stages (layout above).
// Everything that does not change along K -- which rows and columns this thread copies, where its
// rows start, the swizzled offsets of its scale words -- is worked out once per block; a k tile
// then only adds an offset (the scale words of the next k tile lie (TK / 64) * 512 bytes further in
// SPEC §3's layout). A thread's weight rows are ROWS_PER_PASS apart, so one row address and a stride
// name them all: fewer registers than a pointer per row, which the 16-token tiles need. (Token rows
// keep a pointer each: with 128-token tiles of 64 threads, 16 of them, the stride's products spill.)
// ROW_POINTERS keeps the v0.4 loader instead -- a pointer per weight row, nullptr past N, every bound
// tested per copy -- for the wgmma kernel, which ran 2% slower on the prefill shapes with the strided
// one though its loop has fewer instructions (docs/perf-notes.md, v0.5).
//
// Copies that must read nothing -- weight rows past N, scale words past a_scale or past N,
// anything past K (K = 384 with TILE_K = 256) -- use cp.async's source size 0: they fill zeros and
// read nothing (zero data times zero scale contributes exactly 0). Token rows past the group end
// are clamped to its last row: real data whose results are never stored. Addresses stay inside the
// operand where it is cheap (k offset 0, the operand's base for a scale word); a weight row past N
// is only named, never read.
template <class C, int THREADS, bool ROW_POINTERS = false>
struct StageLoader {
  static constexpr int CPR = C::CHUNKS_PER_ROW, ROWS_PER_PASS = THREADS / CPR;
  static_assert(THREADS % CPR == 0, "each thread copies one 16-byte column of its rows");
  static constexpr int A_PASSES = (C::TM + ROWS_PER_PASS - 1) / ROWS_PER_PASS;
  static constexpr int B_PASSES = (C::TN + ROWS_PER_PASS - 1) / ROWS_PER_PASS;
  static constexpr int SA_WORDS = C::SF_WORDS * C::TM, SB_WORDS = C::SF_WORDS * C::TN;
  static constexpr int SA_PASSES = (SA_WORDS + THREADS - 1) / THREADS;
  static constexpr int SB_PASSES = (SB_WORDS + THREADS - 1) / THREADS;
  static_assert(A_PASSES <= 32 && B_PASSES <= 32 && SA_PASSES <= 32 && SB_PASSES <= 32, "one bit a pass");
  static constexpr int SF_STEP = C::TK / 64 * 512;
  static constexpr bool K_TAIL = ROW_POINTERS || C::TK > 128;  // K % 128 == 0: only a 256-wide k tile can pass K

  const TileSource& src;
  int tid, col;
  const uint8_t* a_row[A_PASSES];  // rows past the group end are clamped to its last (never stored)
  const uint8_t* b_row[ROW_POINTERS ? B_PASSES : 1];  // pass 0's row (ROW_POINTERS: each pass's, nullptr past N)
  int64_t b_step;         // ROWS_PER_PASS rows of `b`: pass p's row is p steps past pass 0's
  uint32_t b_live;        // bit p: pass p's row is below N
  const uint8_t* sa_word[SA_PASSES]; // k tile 0's word; nullptr: a row past a_scale
  const uint8_t* sb_word[SB_PASSES]; // nullptr: a row past N (with tile_n 256, also past N_pad)
  int sa_col[SA_PASSES], sb_col[SB_PASSES];  // the word's first scale column within a k tile

  __device__ __forceinline__ StageLoader(const TileSource& s, int t) : src(s), tid(t), col(t % CPR) {
    const int r0 = t / CPR;
#pragma unroll
    for (int p = 0; p < A_PASSES; ++p) {
      const int64_t row = min(s.tile.row_begin + t / CPR + p * ROWS_PER_PASS, s.tile.row_end - 1);
      a_row[p] = s.a + row * s.row_bytes;
    }
    if constexpr (ROW_POINTERS) {
#pragma unroll
      for (int p = 0; p < B_PASSES; ++p) {
        const int64_t row = s.n0 + t / CPR + p * ROWS_PER_PASS;
        b_row[p] = row < s.n ? s.b_group + row * s.row_bytes : nullptr;
      }
    } else {
      b_step = static_cast<int64_t>(ROWS_PER_PASS) * s.row_bytes;
      b_row[0] = s.b_group + (s.n0 + r0) * s.row_bytes;
      b_live = 0;
#pragma unroll
      for (int p = 0; p < B_PASSES; ++p) b_live |= static_cast<uint32_t>(s.n0 + r0 + p * ROWS_PER_PASS < s.n) << p;
    }
#pragma unroll
    for (int p = 0; p < SA_PASSES; ++p) {
      const int i = t + p * THREADS, w = i / C::TM;
      const int64_t row = s.tile.sf_row + i % C::TM;
      sa_word[p] = row < s.a_scale_rows ? s.a_scale + swizzled_offset(row, 4 * w, s.sf_k) : nullptr;
      sa_col[p] = 4 * w;
    }
#pragma unroll
    for (int p = 0; p < SB_PASSES; ++p) {
      const int i = t + p * THREADS, w = i / C::TN;
      const int64_t row = s.n0 + i % C::TN;  // rows past N hold no data (zero-filled): skip their scales
      sb_word[p] = row < s.n ? s.sb_group + swizzled_offset(row, 4 * w, s.sf_k) : nullptr;
      sb_col[p] = 4 * w;
    }
  }

  __device__ __forceinline__ void load(uint8_t* stage, int kt) const {
    uint8_t* s_a = stage;
    uint8_t* s_b = s_a + C::STAGE_A;
    uint8_t* s_sa = s_b + C::STAGE_B;
    uint8_t* s_sb = s_sa + C::STAGE_SA;
    const int64_t k_byte = static_cast<int64_t>(kt) * C::ROW_BYTES + col * 16;
    const bool k_ok = !K_TAIL || k_byte < src.row_bytes;
    const int64_t k_off = k_ok ? k_byte : 0;
#pragma unroll
    for (int p = 0; p < A_PASSES; ++p) {
      const int r = tid / CPR + p * ROWS_PER_PASS;
      if (C::TM % ROWS_PER_PASS == 0 || r < C::TM)
        cp_async_16(s_a + r * C::ROW_PITCH + col * 16, ROW_POINTERS ? (k_ok ? a_row[p] + k_byte : src.a) : a_row[p] + k_off,
                    k_ok);
    }
#pragma unroll
    for (int p = 0; p < B_PASSES; ++p) {
      const int r = tid / CPR + p * ROWS_PER_PASS;
      if constexpr (ROW_POINTERS) {
        const bool ok = k_ok && b_row[p] != nullptr;
        if (C::TN % ROWS_PER_PASS == 0 || r < C::TN)
          cp_async_16(s_b + r * C::ROW_PITCH + col * 16, ok ? b_row[p] + k_byte : src.b, ok);
      } else if (C::TN % ROWS_PER_PASS == 0 || r < C::TN) {
        cp_async_16(s_b + r * C::ROW_PITCH + col * 16, b_row[0] + p * b_step + k_off, k_ok && (b_live >> p & 1));
      }
    }
    const int sf_col0 = kt * (C::TK / kSfVec);
    const int64_t sf_step = static_cast<int64_t>(kt) * SF_STEP;
#pragma unroll
    for (int p = 0; p < SA_PASSES; ++p) {
      const int i = tid + p * THREADS;
      const bool ok = sa_word[p] != nullptr && (!K_TAIL || sf_col0 + sa_col[p] < src.sf_k);
      if (SA_WORDS % THREADS == 0 || i < SA_WORDS) cp_async_4(s_sa + i * 4, ok ? sa_word[p] + sf_step : src.a_scale, ok);
    }
#pragma unroll
    for (int p = 0; p < SB_PASSES; ++p) {
      const int i = tid + p * THREADS;
      const bool ok = sb_word[p] != nullptr && (!K_TAIL || sf_col0 + sb_col[p] < src.sf_k);
      if (SB_WORDS % THREADS == 0 || i < SB_WORDS) cp_async_4(s_sb + i * 4, ok ? sb_word[p] + sf_step : src.b_scale, ok);
    }
  }
};

// Math policy interface:
//   static constexpr int K_CHUNK;   // K elements one call consumes (a multiple of 32, divides 128)
//   static constexpr float ACC_SCALE;  // what the accumulators are multiplied by before alpha
//   template <class C> static void chunk(float (&acc)[C::P_TILES][C::Q_TILES][4], const StageView&,
//                                        int p_base, int q_base, int kc, int lane);
// acc[i][j] is the m16n8 accumulator of P fragment i and Q fragment j in the mma.sync C layout:
// element v at P row lane/4 (+8 for v >= 2), Q column 2*(lane%4) + (v&1).

constexpr int kRasterBand = 8;  // row tiles per band of the block order (block_tile)

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

  const BlockTile bt = block_tile<kRasterBand>();
  const MTile tile = find_m_tile<TM>(m_indptr, num_groups, cum_m, bt.m_tile);
  if (tile.group < 0) return;
  const int g = tile.group;
  const int64_t n0 = static_cast<int64_t>(bt.n_tile) * TN;
  if (n0 >= n) return;

  const int64_t row_bytes = k / 2;
  const int64_t sf_k = k / kSfVec;
  const int64_t n_pad = (static_cast<int64_t>(n) + 127) / 128 * 128;
  const uint8_t* b_group = b + static_cast<int64_t>(g) * n * row_bytes;
  const uint8_t* sb_group = b_scale + static_cast<int64_t>(g) * n_pad * sf_k;
  const int k_tiles = (k + TK - 1) / TK;
  const int tid = threadIdx.x;

  const TileSource src{a, b, a_scale, b_scale, b_group, sb_group, tile, n0, n, row_bytes, sf_k, a_scale_rows};
  const StageLoader<C, THREADS> loader(src, tid);
  auto load_stage = [&](int s, int kt) { loader.load(smem + s * C::STAGE_BYTES, kt); };

  const int warp = tid >> 5, lane = tid & 31;
  const int warp_k = warp / C::TILE_WARPS, tile_warp = warp % C::TILE_WARPS;
  const int warp_m = tile_warp % C::WARPS_M, warp_n = tile_warp / C::WARPS_M;
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
    static_assert((TK / Math::K_CHUNK) % C::WARPS_K == 0, "every K share takes the same number of chunks");
#pragma unroll
    for (int i = 0; i < TK / Math::K_CHUNK / C::WARPS_K; ++i)
      Math::template chunk<C>(acc, view, p_base, q_base, i * C::WARPS_K + warp_k, lane);
  }
  cp_async_wait<0>();

  if constexpr (C::WARPS_K > 1) {
    // K shares 1.. hand their sums to share 0 through the drained pipeline buffers; lane-major
    // so the 32 lanes of a store hit 32 banks.
    constexpr int ACC = C::P_TILES * C::Q_TILES * 4;
    float* red = reinterpret_cast<float*>(smem);
    __syncthreads();  // every warp is done reading the last stage
    if (warp_k > 0) {
      float* mine = red + ((warp_k - 1) * C::TILE_WARPS + tile_warp) * ACC * 32 + lane;
#pragma unroll
      for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
        for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
          for (int v = 0; v < 4; ++v) mine[((i * C::Q_TILES + j) * 4 + v) * 32] = acc[i][j][v];
    }
    __syncthreads();
    if (warp_k > 0) return;
#pragma unroll
    for (int w = 0; w < C::WARPS_K - 1; ++w) {
      const float* theirs = red + (w * C::TILE_WARPS + tile_warp) * ACC * 32 + lane;
#pragma unroll
      for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
        for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
          for (int v = 0; v < 4; ++v) acc[i][j][v] += theirs[((i * C::Q_TILES + j) * 4 + v) * 32];
    }
  }

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
        const float v0 = acc[i][j][2 * h] * Math::ACC_SCALE * scale;
        const float v1 = acc[i][j][2 * h + 1] * Math::ACC_SCALE * scale;
        store_fragment_pair<C::SWAP>(out, tile.row_begin, tile.row_end, n0, n, p, qc, v0, v1, out_dtype);
      }
}

#if defined(NVFP4_TILE_M) && !defined(NVFP4_OWN_BUILD_CONFIG)  // sm90a checks its own
// The variant of a build_cubins.py compile (its -D macros), checked against the block size and
// shared memory the host will launch it with.
#ifndef NVFP4_WARP_N
#define NVFP4_WARP_N 32
#endif
using BuildConfig = GemmConfig<NVFP4_TILE_M, NVFP4_TILE_N, NVFP4_TILE_K, NVFP4_SWAP_AB != 0, NVFP4_STAGES,
                               NVFP4_WARPS_K, NVFP4_WARP_N>;
static_assert(BuildConfig::THREADS == NVFP4_THREADS, "build_cubins.py and the kernel disagree on the block size");
static_assert(BuildConfig::STAGES * BuildConfig::STAGE_BYTES == NVFP4_SMEM_BYTES,
              "build_cubins.py and the kernel disagree on the shared memory size");
#endif

}  // namespace nvfp4

// The extern "C" entry every family's .cu instantiates, with the ABI of build_cubins.py's
// GROUPED_GEMM_PARAMS. BODY (the trailing argument, commas allowed) is the kernel body to call
// with those parameters, e.g. nvfp4::grouped_gemm<Config, MathSm80>.
#define NVFP4_DEFINE_GROUPED_GEMM(NAME, CONFIG, ...)                                                    \
  extern "C" __global__ void __launch_bounds__(CONFIG::THREADS, CONFIG::MIN_BLOCKS) NAME(               \
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
    __VA_ARGS__(a, b, a_scale, b_scale, m_indptr, alpha, out, cum_m, a_scale_rows, n, k, num_groups,    \
                out_dtype);                                                                             \
  }
