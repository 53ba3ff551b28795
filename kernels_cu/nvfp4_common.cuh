// Device pieces shared by every NVFP4 grouped-GEMM family: the SPEC §3 scale layout, the group
// lookup that replaces a host-side tile schedule, asynchronous copies and the epilogue store.
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nvfp4 {

constexpr int kSfAtomRows = 128;  // rows of one 128x4 scale atom (SPEC §3)
constexpr int kSfVec = 16;      // fp4 elements per ue4m3 scale
constexpr int kOutBf16 = 0;     // values of the `out_dtype` kernel argument
constexpr int kOutF16 = 1;

// SPEC §3: byte offset of scale (row, kb) in a 128x4-swizzled block of `sf_k` scale columns.
// 64-bit: a weight tensor's scales pass 4 GiB long before its rows do.
__device__ __forceinline__ int64_t swizzled_offset(int64_t row, int64_t kb, int64_t sf_k) {
  return (row >> 7) * (128 * sf_k) + (kb >> 2) * 512 + (row & 31) * 16 + ((row & 127) >> 5) * 4 +
         (kb & 3);
}

// The rows of one M tile, found on the device from m_indptr so the host never reads it.
struct MTile {
  int group;         // -1: this block has no tile (the grid is an upper bound)
  int64_t row_begin; // first output row of the tile (global row of `a` / `out`)
  int64_t row_end;   // one past the last row of the tile's group (the tile may end earlier)
  int64_t sf_row;    // row of a_scale that holds the tile's first row
};

// Tile `tile` in the concatenation of every group's ceil(rows/TM) tiles of TM rows. Each warp
// computes it on its own (a scan of G entries, 32 at a time), so no barrier or shared memory is
// needed.
// Entries are clamped into [0, cum_m] and made non-decreasing per group, so a malformed
// m_indptr can never send a read or write outside `a` or `out`.
template <int TM>
__device__ __forceinline__ MTile find_m_tile(const int32_t* __restrict__ m_indptr, int num_groups,
                                             int64_t cum_m, int64_t tile) {
  const int lane = threadIdx.x & 31;
  int64_t tiles_before = 0;
  for (int g0 = 0; g0 < num_groups; g0 += 32) {
    const int g = g0 + lane;
    int64_t lo = 0, hi = 0, tiles = 0;
    if (g < num_groups) {
      lo = min(max((int64_t)__ldg(m_indptr + g), (int64_t)0), cum_m);
      hi = min(max((int64_t)__ldg(m_indptr + g + 1), lo), cum_m);
      tiles = (hi - lo + TM - 1) / TM;
    }
    int64_t inclusive = tiles;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int64_t v = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += v;
    }
    const int64_t chunk_total = __shfl_sync(0xffffffffu, inclusive, 31);
    if (tile < tiles_before + chunk_total) {
      const unsigned hit = __ballot_sync(0xffffffffu, g < num_groups && tile < tiles_before + inclusive);
      const int owner = __ffs(hit) - 1;
      const int64_t o_lo = __shfl_sync(0xffffffffu, lo, owner);
      const int64_t o_hi = __shfl_sync(0xffffffffu, hi, owner);
      const int64_t o_first = tiles_before + __shfl_sync(0xffffffffu, inclusive - tiles, owner);
      const int owner_group = g0 + owner;
      const int64_t local = (tile - o_first) * TM;
      // sf_base(g) of SPEC §3: each group's scale rows start at a 128-aligned row.
      const int64_t sf_base = ((o_lo + (int64_t)owner_group * 127) / 128) * 128;
      return MTile{owner_group, o_lo + local, o_hi, sf_base + local};
    }
    tiles_before += chunk_total;
  }
  return MTile{-1, 0, 0, 0};
}

// The (row tile, column tile) of this block. The grid is row tiles (x) by column tiles (y), and
// blocks start roughly in launch order, x fastest; this order takes the column tiles of a band of
// BAND row tiles before moving on, so the blocks resident at once share one band's token rows and
// each column tile's weights in L2 instead of streaming all row tiles past each weight tile.
struct BlockTile {
  int64_t m_tile;
  int n_tile;
};
template <int BAND>
__device__ __forceinline__ BlockTile block_tile() {
  const int64_t gx = gridDim.x, gy = gridDim.y;
  const int64_t linear = static_cast<int64_t>(blockIdx.y) * gx + blockIdx.x;
  const int64_t band = linear / (BAND * gy), within = linear - band * BAND * gy;
  const int64_t band_rows = min(static_cast<int64_t>(BAND), gx - band * BAND);
  return BlockTile{band * BAND + within % band_rows, static_cast<int>(within / band_rows)};
}

// cp.async with a source size: 0 bytes reads nothing and fills the destination with zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Two output values of one row, adjacent columns: one 4-byte store (the column is even and
// N % 8 == 0, so the pair never straddles the row end).
__device__ __forceinline__ void store_pair(void* out, int64_t index, float v0, float v1, int out_dtype) {
  if (out_dtype == kOutF16) {
    reinterpret_cast<__half2*>(static_cast<__half*>(out) + index)[0] = __floats2half2_rn(v0, v1);
  } else {
    reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(out) + index)[0] =
        __floats2bfloat162_rn(v0, v1);
  }
}
__device__ __forceinline__ void store_one(void* out, int64_t index, float v, int out_dtype) {
  if (out_dtype == kOutF16) {
    static_cast<__half*>(out)[index] = __float2half_rn(v);
  } else {
    static_cast<__nv_bfloat16*>(out)[index] = __float2bfloat16_rn(v);
  }
}


// The two values an MMA accumulator fragment gives one lane, (P row p; Q columns qc, qc + 1) of the
// tile at (row_begin, n0), to `out`: P is the output's rows (one 4-byte store) or, with SWAP, its
// columns (two 2-byte stores, rows qc and qc + 1). Rows past the group's end and columns past N
// are not written.
template <bool SWAP>
__device__ __forceinline__ void store_fragment_pair(void* out, int64_t row_begin, int64_t row_end, int64_t n0,
                                                    int n, int p, int qc, float v0, float v1, int out_dtype) {
  if (!SWAP) {
    const int64_t row = row_begin + p, col = n0 + qc;
    if (row < row_end && col < n) store_pair(out, row * n + col, v0, v1, out_dtype);
  } else {
    const int64_t row = row_begin + qc, col = n0 + p;
    if (col < n) {
      if (row < row_end) store_one(out, row * n + col, v0, out_dtype);
      if (row + 1 < row_end) store_one(out, (row + 1) * n + col, v1, out_dtype);
    }
  }
}

}  // namespace nvfp4
