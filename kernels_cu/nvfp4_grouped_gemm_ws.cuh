// The warp-specialized grouped-GEMM body: one producer warp fills a ring of shared-memory stages
// with bulk-tensor copies (TMA), the consumer warps run the MMAs, and the two sides hand stages
// over through full/empty mbarriers, so no consumer waits at a block-wide barrier in the main loop.
// The grid is persistent: each block walks the (group, m tile, n tile) list with a stride of the
// grid, and the producer runs ahead into the next tile while the consumers store the current one.
//
//   out[m, n] = alpha[g] * sum_k e2m1(a[m,k]) sa(m,k/16) * e2m1(b[g,n,k]) sb(g,n,k/16)
//
// A family supplies its `Math` policy: `PFragments<C>`, `load_p` (the P operand's fragments and
// scales of one 64-K chunk) and `mma` (that chunk's Q fragments and MMAs). The P fragments of the
// next chunk are loaded before the current chunk's MMAs issue, the next stage's first chunk
// included (its full barrier is waited for there), so the ldmatrix latency at a stage boundary
// hides behind the last chunk's MMAs (where registers allow: WsConfig::PREFETCH_NEXT_STAGE). The tile,
// warp tiling and epilogue follow nvfp4_grouped_gemm.cuh (64 x 32 warp tiles, P = the MMA's M
// side, Q its N side, swapped with SWAP). The 128 x 256 tile takes 64 x 64 warp tiles and no
// producer warp: consumer warp 0 issues the copies (WsInlineProducer, for the registers).
//
// One stage (bytes; the stage base is 1024-aligned, as the TMA swizzle patterns repeat at 1024):
//   A  [TM][TK/2]  packed fp4 rows, unpadded; 16-byte chunk c of row r stored at chunk
//                  c ^ ((r * TK/2 / 128) & (TK/32 - 1)) (TMA's 64B / 128B swizzle for TK 128 / 256),
//                  so the 8 rows one ldmatrix phase reads hit 8 distinct 16-byte bank groups;
//                  its slot rounded up to 1024 B (the 8-token tile's rows fill half of it or all)
//   B  [TN][TK/2]  the same
//   SA [TK/64][512] the k tile of the 128-row scale block that holds the tile's rows, exactly as
//                  SPEC §3 lays it out: word (row r, quad w) at w*128 + (r%32)*4 + r/32
//   SB [SB_BLOCKS][TK/64][512] the same for B: the k tiles of the tile's 128-row scale blocks, one
//                  after another (two for the 256-row tile)
// Tensor maps (host: nvfp4_driver/tensor_maps.py) let the copies zero-fill what lies outside a
// tensor: K past the end (K = 384 with TK = 256), weight rows past N, token rows past cum_m and
// scale blocks past a_scale's last whole 128-row block, or past sf_k. Token rows past the group's
// end inside cum_m are another group's data: their results are never stored, and each output
// reads only its own row's data and scales.
#pragma once
#include "nvfp4_common.cuh"
#include "tma_pipeline.cuh"

namespace nvfp4 {

// WARP_N_: columns of a warp's tile (32; 64 for the wide tile and for sm90ws, whose decode of each
// token fragment then serves 64 weight rows). MIN_BLOCKS_: blocks per SM the persistent grid runs
// (build_cubins.py's blocks_per_sm), which caps the registers a thread may take. K_SPLIT_: sets of
// consumer warps that each cover the whole tile, set h taking the k tiles of global step h mod
// K_SPLIT (2, or 1: no split); their sums meet in shared memory before the epilogue. It keeps a
// call of few tiles (E=8 decode: 256 tiles) on twice the warps (sm90ws_splitk).
template <int TM_, int TN_, int TK_, bool SWAP_, int STAGES_, int WARP_N_ = (TN_ > 128 ? 64 : 32),
          int MIN_BLOCKS_ = (TM_ < 128 ? 2 : 1), int K_SPLIT_ = 1>
struct WsConfig {
  static constexpr int TM = TM_, TN = TN_, TK = TK_, STAGES = STAGES_;
  static constexpr bool SWAP = SWAP_;
  // 256-column tiles: 64-column warp tiles (128 accumulators a thread) and no producer warp, so 8
  // warps share the 4 schedulers, 2 each, and a thread may take 255 registers; 16 warps of 64 x 32
  // plus a producer would leave 96. Warp 0 issues the copies there (WsInlineProducer).
  static constexpr bool WIDE = TN > 128;
  static constexpr bool PRODUCER_WARP = !WIDE;
  static constexpr int WARP_M = TM < 64 ? TM : 64, WARP_N = WARP_N_;
  static constexpr int WARPS_M = TM / WARP_M, WARPS_N = TN / WARP_N;
  static constexpr int K_SPLIT = K_SPLIT_;
  static constexpr int TILE_WARPS = WARPS_M * WARPS_N;  // one set: the tile once
  static constexpr int CONSUMER_WARPS = TILE_WARPS * K_SPLIT;
  static constexpr int THREADS = 32 * CONSUMER_WARPS + (PRODUCER_WARP ? 32 : 0);
  // sm_120: token tiles are sized for two blocks per SM (their stages fit 50 KB), twice the warps to
  // cover the latency of each other's loads and stores; 128-row tiles take one.
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int ROW_BYTES = TK / 2;  // one swizzle span: 64 B (TK 128) or 128 B (TK 256)
  static constexpr int SWIZZLE_MASK = ROW_BYTES / 16 - 1;
  static constexpr int SF_QUADS = TK / 64;  // 4-byte scale words per row per k tile
  // A's box fills TM rows; its slot is rounded up to 1024 B so that B starts on a swizzle repeat
  // (the 8-token tile's box is 512 or 1,024 B). The copies deliver STAGE_TX bytes a stage.
  static constexpr int A_BOX = TM * ROW_BYTES;
  static constexpr int STAGE_A = (A_BOX + 1023) / 1024 * 1024;
  static constexpr int STAGE_B = TN * ROW_BYTES;
  static constexpr int STAGE_SF = SF_QUADS * 512;  // one 128-row scale block's k tile
  static constexpr int SB_BLOCKS = WIDE ? TN / 128 : 1;  // B's 128-row scale blocks in a tile
  static constexpr int STAGE_SB = SB_BLOCKS * STAGE_SF;
  static constexpr int STAGE_BYTES = STAGE_A + STAGE_B + STAGE_SF + STAGE_SB;
  static constexpr int STAGE_TX = A_BOX + STAGE_B + STAGE_SF + STAGE_SB;
  // Slack to align the dynamic shared memory to 1024 B at run time, the 2 x STAGES barriers (256 B),
  // then each consumer warp's 512-byte epilogue slice (8 rows x 32 columns; 64-column warp tiles
  // pass through it in two halves).
  static constexpr int EPILOGUE_BYTES = CONSUMER_WARPS * 512;
  static constexpr int P_TILES = SWAP ? WARP_N / 16 : WARP_M / 16;
  static constexpr int Q_TILES = SWAP ? WARP_M / 8 : WARP_N / 8;
  // K_SPLIT 2: set 1's accumulators, word v of every lane side by side (conflict-free), for set 0.
  static constexpr int ACC_WORDS = P_TILES * Q_TILES * 4 * 32;  // one warp's
  static constexpr int REDUCE_BYTES = K_SPLIT > 1 ? TILE_WARPS * ACC_WORDS * 4 : 0;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024 + 256 + EPILOGUE_BYTES + REDUCE_BYTES;
  // The next stage's first P fragments are loaded before the last chunk's MMAs where the registers
  // allow: two sets of P fragments (5 words per 16 rows) beside the accumulators. Nine warps leave
  // 168 registers a thread (a scheduler's 16 K registers over its 3 warps), which 4 P tiles and 64
  // accumulators exceed (ptxas spills); those cuts prefetch within the stage only. sm90ws's 8-token
  // cut (one Q fragment, 32 accumulators) fits it in exactly 168, and ran 7-14% faster with it
  // (H200, perf-notes v0.9). The wide tile's 8 warps leave 255, and its 4 P tiles and 128
  // accumulators take 246 with the prefetch (236 without).
  // The K split's ten warps an SM leave 168 registers too, and its 16-token cut spilled with it.
  static constexpr bool PREFETCH_NEXT_STAGE = P_TILES <= 2 || WIDE || Q_TILES == 1;
  static_assert(TM <= 128 && 128 % TM == 0 && (TN <= 128 ? 128 % TN == 0 : TN % 128 == 0),
                "a tile's scale rows lie in one 128-row scale block, or B's in whole blocks");
  static_assert(128 % WARP_N == 0, "a warp's Q rows lie in one 128-row scale block");
  static_assert(WARP_N == 32 || WARP_N == 64, "the epilogue's slices hold 32 columns, stored once or twice");
  static_assert(!WIDE || (!SWAP && TM == 128), "the wide tile has tokens on P, in 128-row tiles");
  static_assert(STAGE_BYTES % 1024 == 0, "every stage starts on a swizzle repeat");
  static_assert(STAGE_A % 1024 == 0 && STAGE_B % 1024 == 0, "every operand starts on a swizzle repeat");
  static_assert(2 * STAGES * 8 <= 256, "the barriers fit their slot");
  static_assert(PRODUCER_WARP || STAGES >= 2, "warp 0's refills run a stage ahead of the prefetch");
  static_assert(K_SPLIT == 1 || (K_SPLIT == 2 && PRODUCER_WARP && STAGES >= K_SPLIT),
                "a K split takes a producer warp and a stage a set at least");
};

// One stage as the math sees it.
struct WsStageView {
  const uint8_t* p_data;   // [P rows][ROW_BYTES], swizzled (above)
  const uint8_t* q_data;   // [Q rows][ROW_BYTES]
  const uint32_t* p_sf;    // [SF_QUADS][128] words in SPEC §3's order
  const uint32_t* q_sf;
  // Row of the 128-row scale block p_sf / q_sf that holds P / Q row 0. Where B spans several blocks
  // (SB_BLOCKS), q_sf is the block of this warp's Q rows and q_sf_row0 is negative past the first.
  int p_sf_row0, q_sf_row0;
};

// Word of (row r of a 128-row scale block, quad w) in a stage's scale block (SPEC §3).
__device__ __forceinline__ int sf_word(int r, int w) { return w * 128 + (r & 31) * 4 + (r >> 5); }

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled operand tile.
template <class C>
__device__ __forceinline__ int swizzled_chunk(int row, int chunk) {
  return row * C::ROW_BYTES + ((chunk ^ ((row * C::ROW_BYTES >> 7) & C::SWIZZLE_MASK)) << 4);
}

// The (m tile, n tile) of linear tile t: row tiles in bands of BAND, each band's column tiles
// taken together (the order of nvfp4_common.cuh's block_tile), so the blocks working at one time
// share a band's tokens and each column tile's weights in L2.
// 32-bit: the host launches this body only for fewer than 2^31 tiles (tensor_maps.py), and a
// 64-bit division is a call with a stack frame.
template <int BAND>
__device__ __forceinline__ BlockTile linear_tile(int t, int m_tiles, int n_tiles) {
  const int band = t / (BAND * n_tiles), within = t - band * BAND * n_tiles;
  const int band_rows = min(BAND, m_tiles - band * BAND);
  return BlockTile{band * BAND + within % band_rows, within / band_rows};
}

// The four tensor maps of one launch (the host encodes them; tensor_maps.py names the layouts).
struct GemmMaps {
  const CUtensorMap* a;   // uint8 (K/2, cum_m), box (TK/2, TM), swizzled
  const CUtensorMap* b;   // uint8 (K/2, N, G), box (TK/2, TN, 1), swizzled
  const CUtensorMap* sa;  // uint8 (256, sf_k/2, a_scale_rows/128), box (256, TK/32, 1): 256-byte lines
  const CUtensorMap* sb;  // uint8 (256, sf_k/2, G*N_pad/128), box (256, TK/32, SB_BLOCKS)
};

// The four copies of k tile kt of one tile into one stage (one lane). Out-of-bounds bytes are
// zero-filled and still counted: every stage delivers all of its bytes.
template <class C>
__device__ __forceinline__ void issue_stage(uint8_t* s_a, uint64_t* full_bar, const GemmMaps& maps, int kt, int row,
                                            int n0, int group, int sa_block, int sb_block) {
  uint8_t* s_b = s_a + C::STAGE_A;
  uint8_t* s_sa = s_b + C::STAGE_B;
  uint8_t* s_sb = s_sa + C::STAGE_SF;
  mbar_arrive_expect_tx(full_bar, C::STAGE_TX);
  tma_load_2d(s_a, maps.a, full_bar, kt * C::ROW_BYTES, row);
  tma_load_3d(s_b, maps.b, full_bar, kt * C::ROW_BYTES, n0, group);
  tma_load_3d(s_sa, maps.sa, full_bar, 0, kt * (C::TK / 32), sa_block);
  tma_load_3d(s_sb, maps.sb, full_bar, 0, kt * (C::TK / 32), sb_block);
}

__device__ __forceinline__ void prefetch_tensor_maps(const GemmMaps& maps) {
  prefetch_tensor_map(maps.a);
  prefetch_tensor_map(maps.b);
  prefetch_tensor_map(maps.sa);
  prefetch_tensor_map(maps.sb);
}

// The epilogue of one warp through its own 512-byte slice of shared memory: 8 output rows x 32
// columns of 2-byte values at a time (16-byte chunk c of row r stored at chunk c ^ ((r >> 1) & 3),
// so the fragments' 4-byte writes and the 16-byte reads both hit 32 distinct banks), then one
// 16-byte store a lane: 4 lanes cover a row's 64 contiguous bytes. N % 8 == 0, so a chunk of 8
// columns lies wholly inside or outside the output.
__device__ __forceinline__ int epilogue_offset(int row, int col) {  // bytes; col in 0..31
  return row * 64 + ((((col >> 3) ^ (row >> 1)) & 3) << 4) + (col & 7) * 2;
}

__device__ __forceinline__ uint32_t pack_out(float v0, float v1, int out_dtype) {
  if (out_dtype == kOutF16) {
    const __half2 h = __floats2half2_rn(v0, v1);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  const __nv_bfloat162 h = __floats2bfloat162_rn(v0, v1);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ uint16_t pack_one(float v, int out_dtype) {
  if (out_dtype == kOutF16) {
    const __half h = __float2half_rn(v);
    return *reinterpret_cast<const uint16_t*>(&h);
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  return *reinterpret_cast<const uint16_t*>(&h);
}

// Lane's chunk of the slice (row lane/4, columns 8*(lane%4)..+8) to out[row0 + row][col0 + ...].
__device__ __forceinline__ void store_slice(const uint8_t* slice, void* out, int64_t row0, int64_t row_end,
                                            int64_t col0, int n, int lane) {
  const int r = lane >> 2, c = lane & 3;
  const uint4 v = *reinterpret_cast<const uint4*>(slice + epilogue_offset(r, 8 * c));
  const int64_t row = row0 + r, col = col0 + 8 * c;
  if (row < row_end && col < n)
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + row * n + col) = v;
}

constexpr int kWsRasterBand = 8;

// Named barrier 1 over the consumer warps (the producer warp never waits on it).
template <class C>
__device__ __forceinline__ void consumer_barrier() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(32 * C::CONSUMER_WARPS) : "memory");
}

// The copy stream of a block without a producer warp (C::PRODUCER_WARP false), run by consumer warp
// 0: the k tiles of the block's tiles in the order the consumers take them, each into the next stage
// of the ring once every consumer warp has released it, on the producer warp's full/empty protocol.
//
// Why it cannot deadlock. Count k steps over the whole stream, across tiles. Warp 0 issues steps
// 0 .. STAGES-1 before it consumes any, and right after releasing step c it waits until every warp
// has released step c, then issues step c + STAGES into that stage. So when warp 0 waits after step
// c, steps 0 .. c + STAGES - 1 have all been issued. A warp that has not released step c needs at
// most steps c and c + 1 to do so (step c + 1's full barrier where it loads the next stage's first
// fragments before releasing, PREFETCH_NEXT_STAGE), both issued as STAGES >= 2, and waits on nothing
// else: no block-wide barrier, its own epilogue slice. The refill is part of warp 0's k loop, so
// the next tile's first steps are issued while warp 0 finishes the current tile's last ones, before
// its own epilogue; no warp ever waits for warp 0's epilogue. The phases cannot alias: empty[s]
// completes its next phase only after full[s] completes its next one, which only warp 0's next
// issue into s can start.
//
// The tile after the one being issued is looked up ahead (find_next, a warp-wide scan) outside the
// k loop, once per consumer tile: the k_tiles refills of one consumer tile cross exactly one tile
// boundary of the stream (while it lasts), so the k loop only takes the tile found and holds no scan.
template <class C>
struct WsInlineProducer {
  struct Tile {
    int row, n0, group, sa_block, sb_block;  // issue_stage's coordinates
  };
  uint8_t* smem;
  uint64_t *full, *empty;
  GemmMaps maps;
  const int32_t* m_indptr;
  int64_t cum_m;
  int num_groups, m_tiles, n_tiles, tiles, k_tiles, n_pad_blocks;
  int searched;     // the last tile index looked at (-1: none yet)
  bool has_next;    // `next` holds the tile after `cur`
  Tile cur, next;
  int kt;           // cur's next k tile (k_tiles: cur is done)
  int stage;
  uint32_t phase;

  // Looks up the block's next tile with rows (the consumers' walk) unless it is known or there is
  // none. Whole warp.
  __device__ __forceinline__ void find_next() {
    while (!has_next && searched < tiles) {
      searched = searched < 0 ? static_cast<int>(blockIdx.x) : min(searched + static_cast<int>(gridDim.x), tiles);
      if (searched == tiles) break;
      const BlockTile bt = linear_tile<kWsRasterBand>(searched, m_tiles, n_tiles);
      const MTile tile = find_m_tile<C::TM>(m_indptr, num_groups, cum_m, bt.m_tile);
      if (tile.group < 0) continue;
      const int n0 = bt.n_tile * C::TN;
      next = Tile{static_cast<int>(tile.row_begin), n0, tile.group, static_cast<int>(tile.sf_row >> 7),
                  tile.group * n_pad_blocks + (n0 >> 7)};
      has_next = true;
    }
  }

  // Issues the stream's next k step once its stage is free; false when the stream has ended (or the
  // next tile has not been looked up). Whole warp; lane 0 issues.
  __device__ __forceinline__ bool issue_next(int lane) {
    if (kt == k_tiles) {
      if (!has_next) return false;
      cur = next, has_next = false, kt = 0;
    }
    mbar_wait(&empty[stage], phase ^ 1);
    if (lane == 0)
      issue_stage<C>(smem + stage * C::STAGE_BYTES, &full[stage], maps, kt, cur.row, cur.n0, cur.group, cur.sa_block,
                     cur.sb_block);
    __syncwarp();
    ++kt;
    if (++stage == C::STAGES) stage = 0, phase ^= 1;
    return true;
  }

  // The first STAGES steps, which may span several tiles where k_tiles < STAGES.
  __device__ __forceinline__ void fill(int lane) {
    for (int s = 0; s < C::STAGES; ++s) {
      find_next();
      if (!issue_next(lane)) break;
    }
    find_next();
  }
};

template <class C, class Math>
__device__ __forceinline__ void grouped_gemm_ws(const int32_t* __restrict__ m_indptr, const float* __restrict__ alpha,
                                                void* __restrict__ out, int64_t cum_m, int n, int k, int num_groups,
                                                int out_dtype, const GemmMaps& maps) {
  constexpr int TM = C::TM, TN = C::TN, TK = C::TK, STAGES = C::STAGES;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_address(smem_raw) & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + STAGES * C::STAGE_BYTES);
  uint64_t* empty = full + STAGES;
  uint8_t* epilogue = smem + STAGES * C::STAGE_BYTES + 256;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(&full[s], 1);                      // the producer's expect-tx arrival
      mbar_init(&empty[s], C::TILE_WARPS);         // one arrival per consumer warp of the stage's set
    }
    mbar_init_fence();
  }
  __syncthreads();  // the only block-wide barrier: before the warps take their roles

  const int m_tiles = static_cast<int>((cum_m + static_cast<int64_t>(TM - 1) * num_groups) / TM);
  const int n_tiles = (n + TN - 1) / TN;
  const int tiles = m_tiles * n_tiles;
  const int k_tiles = (k + TK - 1) / TK;
  const int n_pad_blocks = (n + 127) / 128;
  int stage = 0;
  uint32_t phase = 0;

  WsInlineProducer<C> producer{smem, full, empty, maps, m_indptr, cum_m, num_groups, m_tiles, n_tiles, tiles,
                               k_tiles, n_pad_blocks, -1, false, {}, {}, k_tiles, 0, 0};
  if (!C::PRODUCER_WARP && warp == 0) {
    if (lane == 0) prefetch_tensor_maps(maps);
    producer.fill(lane);
  }

  if (C::PRODUCER_WARP && warp == C::CONSUMER_WARPS) {
    // Producer: the whole warp walks the tiles (find_m_tile is a warp-wide scan); lane 0 issues.
    if (lane == 0) prefetch_tensor_maps(maps);
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
      const BlockTile bt = linear_tile<kWsRasterBand>(t, m_tiles, n_tiles);
      const MTile tile = find_m_tile<TM>(m_indptr, num_groups, cum_m, bt.m_tile);
      if (tile.group < 0) continue;
      const int n0 = bt.n_tile * TN;
      const int row = static_cast<int>(tile.row_begin);
      const int sa_block = static_cast<int>(tile.sf_row >> 7);
      const int sb_block = tile.group * n_pad_blocks + (n0 >> 7);
      for (int kt = 0; kt < k_tiles; ++kt) {
        mbar_wait(&empty[stage], phase ^ 1);
        if (lane == 0)
          issue_stage<C>(smem + stage * C::STAGE_BYTES, &full[stage], maps, kt, row, n0, tile.group, sa_block,
                         sb_block);
        __syncwarp();
        if (++stage == STAGES) stage = 0, phase ^= 1;
      }
    }
    return;
  }

  // Consumers. Set kh (K_SPLIT > 1) takes global k steps kh, kh + K_SPLIT, ...: its stages and phases
  // advance K_SPLIT steps at a time, across tiles too, and step0 (the tile's first global step)
  // says which of a tile's k tiles are its own.
  const int kh = C::K_SPLIT == 1 ? 0 : warp / C::TILE_WARPS;
  const int tile_warp = C::K_SPLIT == 1 ? warp : warp % C::TILE_WARPS;
  const int warp_m = tile_warp % C::WARPS_M, warp_n = tile_warp / C::WARPS_M;
  const int p_base = C::SWAP ? warp_n * C::WARP_N : warp_m * C::WARP_M;
  const int q_base = C::SWAP ? warp_m * C::WARP_M : warp_n * C::WARP_N;
  const int grp = lane >> 2, quad_lane = lane & 3;
  const int q_block = q_base >> 7;  // B's scale block of this warp's Q rows (SB_BLOCKS > 1)
  if (C::K_SPLIT > 1) stage = kh;
  int step0 = 0;

  for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
    const BlockTile bt = linear_tile<kWsRasterBand>(t, m_tiles, n_tiles);
    const MTile tile = find_m_tile<TM>(m_indptr, num_groups, cum_m, bt.m_tile);
    if (tile.group < 0) continue;
    if (!C::PRODUCER_WARP && warp == 0) producer.find_next();  // the tile the k loop's refills cross into
    const int64_t n0 = static_cast<int64_t>(bt.n_tile) * TN;
    const int a_row0 = static_cast<int>(tile.sf_row & 127), b_row0 = static_cast<int>(n0 & 127);

    float acc[C::P_TILES][C::Q_TILES][4];
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
      for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.f;

    auto view_of = [&](int st) {
      const uint8_t* s_a = smem + st * C::STAGE_BYTES;
      const uint8_t* s_b = s_a + C::STAGE_A;
      const uint32_t* s_sa = reinterpret_cast<const uint32_t*>(s_b + C::STAGE_B);
      const uint32_t* s_sb = s_sa + C::STAGE_SF / 4;
      if (C::SB_BLOCKS > 1)  // the block of this warp's Q rows (the box holds them one after another)
        return WsStageView{s_a, s_b, s_sa, s_sb + q_block * (C::STAGE_SF / 4), a_row0, b_row0 - 128 * q_block};
      return C::SWAP ? WsStageView{s_b, s_a, s_sb, s_sa, b_row0, a_row0}
                     : WsStageView{s_a, s_b, s_sa, s_sb, a_row0, b_row0};
    };
    // Two sets of P fragments taking turns: chunk kc computes from set kc % 2 while set (kc+1) % 2
    // is loaded; a stage has an even number of chunks, so the next stage's chunk 0 lands in set 0
    // again and no fragment is ever copied between registers.
    static_assert((TK / 64) % 2 == 0, "the P fragment sets alternate per chunk");
    typename Math::template PFragments<C> frag[2];
    const int kt_first = C::K_SPLIT == 1 ? 0 : (kh - step0) & 1;
    step0 += k_tiles;
    if (C::PREFETCH_NEXT_STAGE && (C::K_SPLIT == 1 || kt_first < k_tiles)) {
      mbar_wait(&full[stage], phase);
      Math::template load_p<C>(frag[0], view_of(stage), p_base, 0, lane);
    }
    for (int kt = kt_first; kt < k_tiles; kt += C::K_SPLIT) {
      const WsStageView view = view_of(stage);
      int next_stage;
      uint32_t next_phase;
      if (C::K_SPLIT == 1) {
        next_stage = stage + 1 == STAGES ? 0 : stage + 1;
        next_phase = next_stage == 0 ? phase ^ 1 : phase;
      } else {
        const bool wraps = stage + C::K_SPLIT >= STAGES;
        next_stage = wraps ? stage + C::K_SPLIT - STAGES : stage + C::K_SPLIT;
        next_phase = wraps ? phase ^ 1 : phase;
      }
      if (!C::PREFETCH_NEXT_STAGE) {
        mbar_wait(&full[stage], phase);
        Math::template load_p<C>(frag[0], view, p_base, 0, lane);
      }
#pragma unroll
      for (int kc = 0; kc < TK / 64; ++kc) {
        if (kc + 1 < TK / 64) {
          Math::template load_p<C>(frag[(kc + 1) & 1], view, p_base, kc + 1, lane);
        } else if (C::PREFETCH_NEXT_STAGE && kt + C::K_SPLIT < k_tiles) {
          mbar_wait(&full[next_stage], next_phase);
          Math::template load_p<C>(frag[0], view_of(next_stage), p_base, 0, lane);
        }
        Math::template mma<C>(acc, frag[kc & 1], view, q_base, kc, lane);
      }
      __syncwarp();  // every lane's ldmatrix of this stage has returned
      if (lane == 0) mbar_arrive(&empty[stage]);
      if (!C::PRODUCER_WARP && warp == 0) producer.issue_next(lane);  // into the stage just released
      stage = next_stage, phase = next_phase;
    }

    if (C::K_SPLIT > 1) {
      // Set 1's sums to shared memory, set 0 adds them and stores the tile. The first barrier says
      // that set 0 has read the last tile's (named barrier 1: the consumers only).
      float* reduce = reinterpret_cast<float*>(epilogue + C::EPILOGUE_BYTES) + tile_warp * C::ACC_WORDS;
      consumer_barrier<C>();
      if (kh == 1) {
#pragma unroll
        for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
          for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
            for (int v = 0; v < 4; ++v) reduce[((i * C::Q_TILES + j) * 4 + v) * 32 + lane] = acc[i][j][v];
      }
      consumer_barrier<C>();
      if (kh == 1) continue;
#pragma unroll
      for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
        for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
          for (int v = 0; v < 4; ++v) acc[i][j][v] += reduce[((i * C::Q_TILES + j) * 4 + v) * 32 + lane];
    }

    // Epilogue (the producer is already loading the next tile): accumulator element v of
    // fragment (i, j) sits at P row lane/4 (+8 for v >= 2) and Q column 2*(lane%4) + (v & 1).
    const float scale = (alpha != nullptr ? __ldg(alpha + tile.group) : 1.f) * Math::kAccScale;
    if ((reinterpret_cast<uintptr_t>(out) & 15) == 0) {
      // 16-byte stores through this warp's slice, 8 output rows at a time.
      uint8_t* slice = epilogue + (warp << 9);
      if (!C::SWAP) {  // P = output rows: fragment (i, h) is 8 rows x 32 of the warp's columns at a time
#pragma unroll
        for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int c = 0; c < C::WARP_N / 32; ++c) {
#pragma unroll
              for (int j = 0; j < 4; ++j)
                *reinterpret_cast<uint32_t*>(slice + epilogue_offset(grp, j * 8 + 2 * quad_lane)) =
                    pack_out(acc[i][4 * c + j][2 * h] * scale, acc[i][4 * c + j][2 * h + 1] * scale, out_dtype);
              __syncwarp();
              store_slice(slice, out, tile.row_begin + p_base + i * 16 + h * 8, tile.row_end, n0 + q_base + 32 * c, n,
                          lane);
              __syncwarp();  // the slice is read before the next fragment overwrites it
            }
      } else {  // Q = output rows: fragment column j is 8 rows x the warp's P rows, 32 at a time
        constexpr int P_PER_SLICE = 2;  // 16-row P fragments in a slice's 32 columns
#pragma unroll
        for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
          for (int c = 0; c < C::P_TILES / P_PER_SLICE; ++c) {
#pragma unroll
            for (int i = c * P_PER_SLICE; i < (c + 1) * P_PER_SLICE; ++i)
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                const int col = (i - c * P_PER_SLICE) * 16 + h * 8 + grp;
                *reinterpret_cast<uint16_t*>(slice + epilogue_offset(2 * quad_lane, col)) =
                    pack_one(acc[i][j][2 * h] * scale, out_dtype);
                *reinterpret_cast<uint16_t*>(slice + epilogue_offset(2 * quad_lane + 1, col)) =
                    pack_one(acc[i][j][2 * h + 1] * scale, out_dtype);
              }
            __syncwarp();
            store_slice(slice, out, tile.row_begin + q_base + j * 8, tile.row_end, n0 + p_base + 32 * c, n, lane);
            __syncwarp();
          }
      }
      continue;
    }
    // `out` only 4-byte aligned (a view): each lane stores its own values.
#pragma unroll
    for (int i = 0; i < C::P_TILES; ++i)
#pragma unroll
      for (int j = 0; j < C::Q_TILES; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int p = p_base + i * 16 + grp + h * 8;
          const int qc = q_base + j * 8 + 2 * quad_lane;
          store_fragment_pair<C::SWAP>(out, tile.row_begin, tile.row_end, n0, n, p, qc, acc[i][j][2 * h] * scale,
                                       acc[i][j][2 * h + 1] * scale, out_dtype);
        }
  }
}

#if defined(NVFP4_TILE_M)
#if !defined(NVFP4_K_SPLIT)
#define NVFP4_K_SPLIT 1
#endif
using WsBuildConfig = WsConfig<NVFP4_TILE_M, NVFP4_TILE_N, NVFP4_TILE_K, NVFP4_SWAP_AB != 0, NVFP4_STAGES, NVFP4_WARP_N,
                               NVFP4_BLOCKS_PER_SM, NVFP4_K_SPLIT>;
static_assert(WsBuildConfig::THREADS == NVFP4_THREADS, "build_cubins.py and the kernel disagree on the block size");
static_assert(WsBuildConfig::SMEM_BYTES == NVFP4_SMEM_BYTES,
              "build_cubins.py and the kernel disagree on the shared memory size");
#endif

}  // namespace nvfp4

// The extern "C" entry with the ABI of build_cubins.py's GROUPED_GEMM_TMA_PARAMS: the grouped-GEMM
// parameters (the four operand addresses are read through the maps, but stay in the list so
// every GEMM kernel starts with the same arguments), then the four tensor maps, passed by value
// in the parameter space (__grid_constant__: the TMA unit reads them from there).
#define NVFP4_DEFINE_GROUPED_GEMM_TMA(NAME, CONFIG, ...)                                                \
  extern "C" __global__ void __launch_bounds__(CONFIG::THREADS, CONFIG::MIN_BLOCKS) NAME(               \
      const uint8_t* __restrict__ a, const uint8_t* __restrict__ b, const uint8_t* __restrict__ a_scale, \
      const uint8_t* __restrict__ b_scale, const int32_t* __restrict__ m_indptr,                        \
      const float* __restrict__ alpha, void* __restrict__ out, int64_t cum_m, int64_t a_scale_rows,     \
      int n, int k, int num_groups, int out_dtype,                                                      \
      const __grid_constant__ CUtensorMap tmap_a,  /* over a */                                         \
      const __grid_constant__ CUtensorMap tmap_b,  /* over b */                                         \
      const __grid_constant__ CUtensorMap tmap_sa, /* over a_scale, whole 128-row blocks */             \
      const __grid_constant__ CUtensorMap tmap_sb) {                                                    \
    (void)a, (void)b, (void)a_scale, (void)b_scale, (void)a_scale_rows;                                 \
    const nvfp4::GemmMaps maps{&tmap_a, &tmap_b, &tmap_sa, &tmap_sb};                                   \
    __VA_ARGS__(m_indptr, alpha, out, cum_m, n, k, num_groups, out_dtype, maps);                        \
  }
