// NVFP4 quantization on the GPU (SPEC §4), its inverse, and the scalar helpers a MoE layer needs.
// Portable CUDA: the same source is built for sm_80, sm_90, sm_120a, sm_121a and as compute_80 PTX,
// and every build writes the same bytes as nvfp4_driver.reference (the codecs are software, in
// nvfp4_quantize.cuh, and the file is compiled with -fmad=false).
//
// build_cubins.py compiles one symbol per build, chosen by macros:
//   NVFP4_KERNEL_NAME  the extern "C" symbol, e.g. nvfp4_quantize_rows_bf16
//   NVFP4_QUANT_OP     1 quantize_rows | 2 dequantize_rows | 3 amax_rows | 4 global_scale_from_amax
//                      | 5 alpha_from_global_scales
//   NVFP4_DTYPE        0 bfloat16 | 1 float16 | 2 float32: the unquantized side (input or output)
//   NVFP4_QUANT_STEPS, NVFP4_QUANT_MIN_BLOCKS  tuning knobs: 512-element steps per unit (default
//                      4 for quantize with 16-bit input, else 2; nvfp4_driver/quantize.py's _segment
//                      mirrors it) and the resident blocks per SM that __launch_bounds__ asks of ptxas
//
// Row kernels (quantize, dequantize, amax) share one cut of the work. A unit is a row and a
// segment of kSegment elements of it (2048 for quantize with 16-bit input, else 1024); units are numbered row-major (unit = row * segments + segment). The
// grid is persistent: the host launches min(ceil(units / 8), SMs x resident blocks per SM) blocks of
// 8 warps (SM count and occupancy read once per device, cached), and warp w of the W in the grid
// takes units w, w + W, w + 2W, ..., so the warps that run together still stream consecutive memory.
// Any grid size is correct (a warp without a unit exits); only the speed depends on it.
//
// Why persistent, with the next unit's loads issued before the current unit is encoded: v0.1 gave
// each warp one unit (load, wait, encode, store, exit), so a warp had no bytes in flight while it
// encoded, and HBM delivered ~61% of the copy rate (docs/perf-notes.md, "Quantizer v0.1"). Now a warp
// holds two units in registers: it issues unit n+1's loads, then encodes unit n from the registers
// its previous iteration loaded (register double buffering): 4 KB per warp (amax: 2 KB), 64 KB per
// SM, stay in flight while the ALUs work. The buffers' registers set the resident blocks per SM
// (NVFP4_QUANT_MIN_BLOCKS).
//
// Lanes (quantize, amax): per 512-element step a lane holds 16 consecutive elements, one whole SPEC
// §4 scale block (two 16-byte loads of 16-bit input, four of float32), so a block's amax, ue4m3 byte
// and reciprocal are computed once per 16 elements instead of by both lanes of a pair (v0.1), and
// amax runs on bf16x2 / f16x2 pairs. The lane's second load reads the 32-byte sectors its first
// brought into L1. A lane stores 8 bytes of codes (the warp 256 contiguous bytes), and 4 lanes one
// 4-byte word of the swizzled scale layout. Instruction count matters as much as bytes in flight:
// v0.1 issued ~26 instructions per element (sm_90 SASS), ~12 us of issue at 16 M elements against a
// 14 us byte floor; this layout and the branch-free codecs of nvfp4_quantize.cuh issue ~18.
// dequantize keeps 8 elements per lane (256-element steps) so each of its 16-byte stores fills half
// of a contiguous 512-byte warp store.
//
// Rows map to groups in one of two ways (a warp finds its own on the device, no host sync):
//   m_indptr != nullptr  activations: group g owns rows [m_indptr[g], m_indptr[g+1]); its scale
//                        rows start at sf_base(g) = ((m_indptr[g] + 127 g) / 128) * 128 (SPEC §3).
//   m_indptr == nullptr  weights: group g owns rows [g N, (g+1) N) (N = group_rows) and scale rows
//                        [g N_pad, g N_pad + N), N_pad = ceil(N / 128) * 128.
// m_indptr entries are clamped into [0, rows] and made non-decreasing per group, as the GEMM does,
// so a malformed m_indptr can never send an access outside the buffers. The quantizer's warps keep
// the last group they found (its scale-row run and global scale) and search again only when a unit
// leaves it.
#include "nvfp4_common.cuh"
#include "nvfp4_quantize.cuh"

namespace {

using namespace nvfp4;

constexpr int kThreads = 256;  // 8 warps: 4 schedulers x 2, and 8 consecutive units per block
constexpr int kWarps = kThreads / 32;
#ifndef NVFP4_QUANT_STEPS
// quantize with 16-bit input: 4 steps (2048-element units), which halves the per-unit work (the
// group lookup, the loop) per element: 8% faster at 64 M elements with one group, 16% with 32
// groups, and no slower at 16 M than 2 steps (H100, docs/perf-notes.md "Quantizer v0.2"). float32
// buffers would not fit twice, and amax has no encode to hide, so they keep 2 (1024 elements).
#define NVFP4_QUANT_STEPS (NVFP4_QUANT_OP == 1 && NVFP4_DTYPE != 2 ? 4 : 2)
#endif
constexpr int kBlockStep = 32 * kSfVec;        // 512 elements per warp step: one scale block per lane
constexpr int kSteps = NVFP4_QUANT_STEPS;      // steps per unit
constexpr int kSegment = kBlockStep * kSteps;  // elements of one row per unit
constexpr int kPairLaneElems = 8;              // dequantize: 8 elements per lane, a lane pair per block
constexpr int kPairStep = 32 * kPairLaneElems; // 256 elements per dequantize step
constexpr int kPairSteps = kSegment / kPairStep;
static_assert(kSegment % kPairStep == 0, "a unit is a whole number of dequantize steps");
#ifndef NVFP4_QUANT_MIN_BLOCKS
// Resident blocks per SM that the double-buffered kernels ask ptxas to fit (registers <= 65536 /
// (256 x blocks)). Two units of quantize's 16-bit input (4 steps) or float32 (2 steps) are 64
// registers of buffers, ~126 in all: 2 blocks, 16 warps, 64 KB in flight per SM, about twice what
// 3 TB/s x ~1 us of latency asks of 132 SMs. amax with 16-bit input (2 steps, 60 registers) fits 4.
#define NVFP4_QUANT_MIN_BLOCKS (NVFP4_QUANT_OP == 3 && NVFP4_DTYPE != 2 ? 4 : 2)
#endif
constexpr int kMinBlocks = NVFP4_QUANT_MIN_BLOCKS;
constexpr int kScalarThreads = 128;      // the per-group scalar kernels

constexpr int kBf16 = 0, kF16 = 1, kF32 = 2;

template <int D>
struct ElemSize { static constexpr int value = D == kF32 ? 4 : 2; };

// ------------------------------------------------------------------------------------------------
// One lane's 16 consecutive input elements (one scale block) <-> float32, exactly.

template <int D>
struct Chunk;

// 16 elements of a 16-bit type as 8 pairs, element 2i in the low half of w[i].
struct Pairs16 {
  uint32_t w[8];
  __device__ __forceinline__ void load(const void* p) {
    const uint4 a = __ldcs(static_cast<const uint4*>(p)), b = __ldcs(static_cast<const uint4*>(p) + 1);
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = 0u;
  }
};

template <>
struct Chunk<kBf16> : Pairs16 {
  // bfloat16 -> float32 is exact: the bf16 bits are the float32's upper half.
  __device__ __forceinline__ float at(int i) const {
    return __uint_as_float(i & 1 ? w[i >> 1] & 0xFFFF0000u : w[i >> 1] << 16);
  }
  // max|x| over the 16, NaN if one is NaN (as max_nan): on bf16 pairs, exact (max returns an input).
  __device__ __forceinline__ float amax() const {
    __nv_bfloat162 m = __habs2(pair(0));
#pragma unroll
    for (int i = 1; i < 8; ++i) m = __hmax2_nan(m, __habs2(pair(i)));
    return max_nan(__low2float(m), __high2float(m));
  }
  __device__ __forceinline__ __nv_bfloat162 pair(int i) const { return *reinterpret_cast<const __nv_bfloat162*>(&w[i]); }
};

template <>
struct Chunk<kF16> : Pairs16 {
  __device__ __forceinline__ float at(int i) const {  // exact
    const __half2 h = pair(i >> 1);
    return i & 1 ? __high2float(h) : __low2float(h);
  }
  __device__ __forceinline__ float amax() const {
    __half2 m = __habs2(pair(0));
#pragma unroll
    for (int i = 1; i < 8; ++i) m = __hmax2_nan(m, __habs2(pair(i)));
    return max_nan(__low2float(m), __high2float(m));
  }
  __device__ __forceinline__ __half2 pair(int i) const { return *reinterpret_cast<const __half2*>(&w[i]); }
};

template <>
struct Chunk<kF32> {
  float v[16];
  __device__ __forceinline__ void load(const void* p) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 f = __ldcs(static_cast<const float4*>(p) + i);
      v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
    }
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = 0.f;
  }
  __device__ __forceinline__ float at(int i) const { return v[i]; }
  __device__ __forceinline__ float amax() const {
    float m = fabsf(v[0]);
#pragma unroll
    for (int i = 1; i < 16; ++i) m = max_nan(m, fabsf(v[i]));
    return m;
  }
};

// A unit's chunks: step j of row `row` (nullptr: none) at columns seg * kSegment + j * kBlockStep +
// lane * 16. Lanes past K get zeros (|0| leaves an amax unchanged; their codes are not stored).
template <int D>
__device__ __forceinline__ void load_unit(Chunk<D> (&c)[kSteps], const char* row, int seg, int k) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = seg * kSegment + j * kBlockStep + lane * kSfVec;
    if (row != nullptr && col < k) c[j].load(row + (int64_t)col * ElemSize<D>::value);
    else c[j].zero();
  }
}

// ------------------------------------------------------------------------------------------------
// This warp's walk over the units: w, w + W, w + 2W, ... as (row, segment), with no division per unit.

struct Walk {
  int64_t row;          // the unit's row (quantize: its scale row)
  int seg;              // its segment of kSegment elements
  int segments;         // ceil(K / kSegment)
  int stride_seg;       // W % segments
  int64_t stride_rows;  // W / segments
  __device__ __forceinline__ void advance() {
    row += stride_rows;
    seg += stride_seg;
    if (seg >= segments) {
      seg -= segments;
      ++row;
    }
  }
};

__device__ __forceinline__ Walk first_unit(int k) {
  Walk w;
  w.segments = (k + kSegment - 1) / kSegment;
  const int64_t unit = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int64_t stride = (int64_t)gridDim.x * kWarps;
  w.row = unit / w.segments;
  w.seg = (int)(unit - w.row * w.segments);
  w.stride_rows = stride / w.segments;
  w.stride_seg = (int)(stride - w.stride_rows * w.segments);
  return w;
}

// Store 8 float32 values rounded to nearest even into the output dtype.
template <int D>
__device__ __forceinline__ void store8(void* out, int64_t index, const float (&v)[8]) {
  if constexpr (D == kF32) {
    float4* p = reinterpret_cast<float4*>(static_cast<float*>(out) + index);
    p[0] = make_float4(v[0], v[1], v[2], v[3]);
    p[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (D == kBf16) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
        w[i] = *reinterpret_cast<const uint32_t*>(&h);
      } else {
        const __half2 h = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
        w[i] = *reinterpret_cast<const uint32_t*>(&h);
      }
    }
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + index) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// ------------------------------------------------------------------------------------------------
// Row -> group lookups (warp-uniform results)

// Largest i in [0, n) with key(i) <= target, or -1; key non-decreasing. The warp probes 32
// indices per round, so G <= 32 takes one round of loads and G <= 1024 two.
template <class Key>
__device__ __forceinline__ int64_t warp_last_le(int64_t n, int64_t target, Key key) {
  const int lane = threadIdx.x & 31;
  int64_t lo = 0, hi = n;  // the answer + 1 lies in [lo, hi]
  while (lo < hi) {
    const int64_t step = (hi - lo + 31) / 32;
    const int64_t i = lo + lane * step;
    const unsigned le = __ballot_sync(0xffffffffu, i < hi && key(i) <= target);
    const int count = __popc(le);
    if (count == 0) break;  // key(lo) > target
    const int64_t last = lo + (count - 1) * step;
    lo = last + 1;
    hi = min(hi, last + step);  // key(last + step) > target, when it exists
  }
  return lo - 1;
}

// Group g's row range in activation mode, clamped like the GEMM's find_m_tile.
struct GroupRows {
  int64_t lo, hi;
};
__device__ __forceinline__ GroupRows group_rows_of(const int32_t* __restrict__ m_indptr, int64_t g, int64_t rows) {
  const int64_t lo = min(max((int64_t)__ldg(m_indptr + g), (int64_t)0), rows);
  const int64_t hi = min(max((int64_t)__ldg(m_indptr + g + 1), lo), rows);
  return GroupRows{lo, hi};
}
__device__ __forceinline__ int64_t sf_base_of(const int32_t* __restrict__ m_indptr, int64_t g, int64_t rows) {
  const int64_t lo = min(max((int64_t)__ldg(m_indptr + g), (int64_t)0), rows);
  return ((lo + g * 127) / 128) * 128;
}

// Where one data row lives: its group (-1: outside every group) and its scale row.
struct RowPlace {
  int64_t group;
  int64_t sf_row;
};

// Data row r (dequantize, amax): activation mode searches m_indptr, weights mode divides, and
// group_rows == 0 without m_indptr (amax over a whole tensor) puts every row in group 0.
__device__ __forceinline__ RowPlace place_data_row(const int32_t* __restrict__ m_indptr, int64_t r, int64_t rows,
                                                   int num_groups, int group_rows) {
  if (m_indptr == nullptr && group_rows == 0) return RowPlace{0, r};
  if (m_indptr == nullptr) {
    const int64_t n_pad = ((int64_t)group_rows + 127) / 128 * 128;
    const int64_t g = r / group_rows;
    return RowPlace{g, g * n_pad + (r - g * group_rows)};
  }
  const int64_t g = warp_last_le(num_groups, r, [&](int64_t i) {
    return min(max((int64_t)__ldg(m_indptr + i), (int64_t)0), rows);
  });
  if (g < 0) return RowPlace{-1, -1};
  const GroupRows gr = group_rows_of(m_indptr, g, rows);
  if (r >= gr.hi) return RowPlace{-1, -1};
  return RowPlace{g, sf_base_of(m_indptr, g, rows) + (r - gr.lo)};
}

__device__ __forceinline__ float group_global_scale(const float* __restrict__ gs, int gs_stride, float gs_value,
                                                    int64_t g) {
  return gs != nullptr ? __ldg(gs + g * gs_stride) : gs_value;
}

// Scale rows [sf_lo, sf_hi) hold data rows data_lo + (s - sf_lo) of one group, quantized with its
// (checked) global scale: what a quantizer warp keeps between units. A scale row of the group's
// padding lies outside the run; an empty run (sf_lo == sf_hi) holds no row.
struct SfRun {
  int64_t sf_lo, sf_hi, data_lo;
  float gsf, inv_gsf;
  __device__ __forceinline__ bool holds(int64_t s) const { return s >= sf_lo && s < sf_hi; }
};

// The run of the group whose scale rows scale row s falls in (warp-uniform; the m_indptr search
// needs the whole warp).
__device__ __forceinline__ SfRun find_sf_run(const int32_t* __restrict__ m_indptr, const float* __restrict__ gs,
                                             int gs_stride, float gs_value, int64_t s, int64_t rows, int num_groups,
                                             int group_rows) {
  int64_t g, sf_lo, count, data_lo;
  if (m_indptr == nullptr) {
    const int64_t n_pad = ((int64_t)group_rows + 127) / 128 * 128;
    g = s / n_pad;
    if (g >= num_groups) return SfRun{0, 0, 0, 0.f, 0.f};
    sf_lo = g * n_pad;
    count = group_rows;
    data_lo = g * group_rows;
  } else {
    g = warp_last_le(num_groups, s, [&](int64_t i) { return sf_base_of(m_indptr, i, rows); });
    if (g < 0) return SfRun{0, 0, 0, 0.f, 0.f};
    const GroupRows gr = group_rows_of(m_indptr, g, rows);
    sf_lo = sf_base_of(m_indptr, g, rows);
    count = gr.hi - gr.lo;
    data_lo = gr.lo;
  }
  const float gsf = checked_global_scale(group_global_scale(gs, gs_stride, gs_value, g));
  return SfRun{sf_lo, sf_lo + count, data_lo, gsf, rcp_rn(gsf)};
}

// ------------------------------------------------------------------------------------------------
// quantize_rows: x (rows, K) -> q (rows, K/2) e2m1 pairs + q_scale (sf_rows, K/16) swizzled ue4m3.
//
// The units walk SCALE rows, so every byte of q_scale is written: a scale row that holds a data
// row gets its block scales, a padding row gets zeros. The warp on scale row s also zeroes data row
// s of q when that row lies outside every group (activation mode; the walk covers max(rows,
// sf_rows) rows), so all of q is defined too: rows outside the groups hold 0x00 (e2m1 +0).

template <int D>
__device__ __forceinline__ void quantize_rows(const void* __restrict__ x, uint8_t* __restrict__ q,
                                              uint8_t* __restrict__ q_scale, const float* __restrict__ gs,
                                              const int32_t* __restrict__ m_indptr, int64_t rows, int64_t sf_rows,
                                              int k, int num_groups, int group_rows, int gs_stride, float gs_value) {
  const int lane = threadIdx.x & 31;
  const int64_t total = max(rows, sf_rows);
  Walk walk = first_unit(k);
  if (walk.row >= total) return;
  const int64_t sf_k = k / kSfVec;
  const int64_t row_bytes = (int64_t)k * ElemSize<D>::value;

  // Activation mode: data rows outside [m_indptr[0], m_indptr[G]) belong to no group; scale row s's
  // warp zeroes data row s of q there (the two roles of s are independent). Read per unit (two L1
  // hits) rather than kept: 4 registers more spill on sm_80.
  auto outside_groups = [&](int64_t s) -> bool {
    if (m_indptr == nullptr || s >= rows) return false;
    const int64_t first = min(max((int64_t)__ldg(m_indptr), (int64_t)0), rows);
    const int64_t last = min(max((int64_t)__ldg(m_indptr + num_groups), first), rows);
    return s < first || s >= last;
  };

  SfRun run{0, 0, 0, 0.f, 0.f};
  // Unit (s, seg): find its data row (-1: a padding scale row) and issue its loads.
  auto start_unit = [&](Chunk<D> (&c)[kSteps], int64_t s, int seg) -> int64_t {
    if (!run.holds(s)) run = find_sf_run(m_indptr, gs, gs_stride, gs_value, s, rows, num_groups, group_rows);
    const int64_t data_row = run.holds(s) ? run.data_lo + (s - run.sf_lo) : -1;
    load_unit<D>(c, data_row >= 0 ? static_cast<const char*>(x) + data_row * row_bytes : nullptr, seg, k);
    return data_row;
  };

  Chunk<D> cur[kSteps];
  int64_t cur_s = walk.row;
  int cur_seg = walk.seg;
  int64_t cur_data = start_unit(cur, cur_s, cur_seg);
  float cur_gsf = run.gsf, cur_inv_gsf = run.inv_gsf;
  for (;;) {
    // Issue the next unit's loads first: they fly while this unit is encoded.
    walk.advance();
    const bool more = walk.row < total;
    Chunk<D> nxt[kSteps];
    int64_t nxt_data = -1;
    if (more) nxt_data = start_unit(nxt, walk.row, walk.seg);

    const bool zero_data_row = outside_groups(cur_s);
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int base = cur_seg * kSegment + j * kBlockStep;
      if (base >= k) break;  // warp-uniform: the shuffles below need every lane
      const int col = base + lane * kSfVec;
      const bool in_k = col < k;
      if (zero_data_row && in_k) *reinterpret_cast<uint2*>(q + cur_s * (k / 2) + col / 2) = make_uint2(0u, 0u);
      uint32_t byte = 0;  // a padding row's scales are 0
      if (cur_data >= 0) {
        const BlockScale bs = block_scale(cur[j].amax(), cur_gsf, cur_inv_gsf);
        uint32_t lo = 0, hi = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          lo |= encode_e2m1(mul_rn(cur[j].at(i), bs.scale)) << (4 * i);
          hi |= encode_e2m1(mul_rn(cur[j].at(8 + i), bs.scale)) << (4 * i);
        }
        if (in_k) *reinterpret_cast<uint2*>(q + cur_data * (k / 2) + col / 2) = make_uint2(lo, hi);
        byte = bs.byte;
      }
      // Lanes 4t .. 4t+3 hold blocks kb .. kb+3 (kb % 4 == 0): one 4-byte word of the swizzled layout.
      uint32_t sf_word = byte << (8 * (lane & 3));
      sf_word |= __shfl_xor_sync(0xffffffffu, sf_word, 1);
      sf_word |= __shfl_xor_sync(0xffffffffu, sf_word, 2);
      if (in_k && (lane & 3) == 0 && cur_s < sf_rows)
        *reinterpret_cast<uint32_t*>(q_scale + swizzled_offset(cur_s, col / kSfVec, sf_k)) = sf_word;
    }
    if (!more) break;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) cur[j] = nxt[j];
    cur_s = walk.row;
    cur_seg = walk.seg;
    cur_data = nxt_data;
    cur_gsf = run.gsf;
    cur_inv_gsf = run.inv_gsf;
  }
}

// ------------------------------------------------------------------------------------------------
// dequantize_rows: q (rows, K/2) + q_scale -> out (rows, K) = e2m1 * ue4m3 [* (1 / gsf)].
// With gs == nullptr and gs_value == 1 the decode is exact in every output dtype (at most 6
// significant bits in [2^-10, 2688]). Rows outside every group are written as 0; a row whose
// scale row lies beyond sf_rows (q_scale too small) is written as NaN. It reads 0.56 bytes per
// element and writes 2-4, so a plain persistent loop (stores need no waiting) is enough.

template <int D>
__device__ __forceinline__ void dequantize_rows(const uint8_t* __restrict__ q, const uint8_t* __restrict__ q_scale,
                                                const float* __restrict__ gs, const int32_t* __restrict__ m_indptr,
                                                void* __restrict__ out, int64_t rows, int64_t sf_rows, int k,
                                                int num_groups, int group_rows, int gs_stride, float gs_value) {
  const int lane = threadIdx.x & 31;
  const int64_t sf_k = k / kSfVec;
  for (Walk walk = first_unit(k); walk.row < rows; walk.advance()) {
    const int64_t r = walk.row;
    const int col0 = walk.seg * kSegment + lane * kPairLaneElems;
    const RowPlace place = place_data_row(m_indptr, r, rows, num_groups, group_rows);
    float inv_gsf = 0.f;
    if (place.group >= 0)
      inv_gsf = rcp_rn(checked_global_scale(group_global_scale(gs, gs_stride, gs_value, place.group)));
#pragma unroll
    for (int j = 0; j < kPairSteps; ++j) {
      const int col = col0 + j * kPairStep;
      if (col >= k) break;
      float v[8];
      if (place.group < 0) {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = 0.f;
      } else {
        const uint32_t codes = __ldg(reinterpret_cast<const uint32_t*>(q + r * (k / 2) + col / 2));
        const float scale = place.sf_row < sf_rows
                                ? decode_ue4m3(__ldg(q_scale + swizzled_offset(place.sf_row, col / kSfVec, sf_k)))
                                : u2f(0x7FFFFFFFu);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = mul_rn(mul_rn(decode_e2m1(codes >> (4 * i)), scale), inv_gsf);
      }
      store8<D>(out, r * k + col, v);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// amax_rows: amax_bits[g] = max(amax_bits[g], bits of max|x| over the rows of group g) (per_group),
// or slot 0 for all. The caller zeroes amax_bits first. Non-negative float32 bit patterns order like
// their values and every NaN pattern lies above +inf, so an unsigned atomicMax is a NaN-keeping max.
// A warp keeps a running max while its units stay in one slot and issues one atomic per change of
// slot and at its end (v0.1: one per unit, 16 K atomics on one address at 16 M elements).

template <int D>
__device__ __forceinline__ void amax_rows(const void* __restrict__ x, uint32_t* __restrict__ amax_bits,
                                          const int32_t* __restrict__ m_indptr, int64_t rows, int k, int num_groups,
                                          int group_rows, int per_group) {
  Walk walk = first_unit(k);
  if (walk.row >= rows) return;
  const int64_t row_bytes = (int64_t)k * ElemSize<D>::value;
  // Unit (r, seg): its slot (-1: row r is outside every group, not part of any global scale) and loads.
  auto start_unit = [&](Chunk<D> (&c)[kSteps], int64_t r, int seg) -> int64_t {
    const RowPlace place = place_data_row(m_indptr, r, rows, num_groups, group_rows);
    const int64_t slot = place.group < 0 ? -1 : (per_group ? place.group : 0);
    load_unit<D>(c, slot >= 0 ? static_cast<const char*>(x) + r * row_bytes : nullptr, seg, k);
    return slot;
  };
  int64_t acc_slot = -1;
  float acc = 0.f;
  auto flush = [&]() {  // warp-uniform
    if (acc_slot < 0) return;
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) acc = max_nan(acc, __shfl_xor_sync(0xffffffffu, acc, d));
    if ((threadIdx.x & 31) == 0) atomicMax(amax_bits + acc_slot, __float_as_uint(acc) & 0x7FFFFFFFu);
  };

  Chunk<D> cur[kSteps];
  int64_t cur_slot = start_unit(cur, walk.row, walk.seg);
  for (;;) {
    walk.advance();
    const bool more = walk.row < rows;
    Chunk<D> nxt[kSteps];
    int64_t nxt_slot = -1;
    if (more) nxt_slot = start_unit(nxt, walk.row, walk.seg);
    if (cur_slot >= 0) {
      float m = cur[0].amax();
#pragma unroll
      for (int j = 1; j < kSteps; ++j) m = max_nan(m, cur[j].amax());
      if (cur_slot != acc_slot) {
        flush();
        acc_slot = cur_slot;
        acc = m;
      } else {
        acc = max_nan(acc, m);
      }
    }
    if (!more) break;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) cur[j] = nxt[j];
    cur_slot = nxt_slot;
  }
  flush();
}

}  // namespace

#if NVFP4_QUANT_OP == 1
extern "C" __global__ void __launch_bounds__(kThreads, kMinBlocks) NVFP4_KERNEL_NAME(
    const void* __restrict__ x,            // (rows, K) NVFP4_DTYPE, 16-byte aligned
    uint8_t* __restrict__ q,               // (rows, K/2) e2m1 pairs, element 2i in the low nibble
    uint8_t* __restrict__ q_scale,         // (sf_rows, K/16) ue4m3, 128x4-swizzled (SPEC §3)
    const float* __restrict__ gs,          // global scale(s): gs[g * gs_stride]; nullptr: gs_value
    const int32_t* __restrict__ m_indptr,  // (G+1,) activation groups; nullptr: weights mode
    int64_t rows,                          // rows of x and q: cum_m, or G * N
    int64_t sf_rows,                       // rows of q_scale (a multiple of 128)
    int k,                                 // K, a multiple of 64
    int num_groups,                        // G
    int group_rows,                        // weights mode: N rows per group (0 otherwise)
    int gs_stride,                         // 0: one global scale for all groups, 1: one per group
    float gs_value) {                      // the global scale when gs is nullptr
  quantize_rows<NVFP4_DTYPE>(x, q, q_scale, gs, m_indptr, rows, sf_rows, k, num_groups, group_rows, gs_stride,
                             gs_value);
}
#elif NVFP4_QUANT_OP == 2
extern "C" __global__ void __launch_bounds__(kThreads) NVFP4_KERNEL_NAME(
    const uint8_t* __restrict__ q,         // (rows, K/2) e2m1 pairs
    const uint8_t* __restrict__ q_scale,   // (sf_rows, K/16) ue4m3, 128x4-swizzled
    const float* __restrict__ gs,          // global scale(s) to divide by; nullptr: gs_value (1: exact)
    const int32_t* __restrict__ m_indptr,  // (G+1,) activation groups; nullptr: weights mode
    void* __restrict__ out,                // (rows, K) NVFP4_DTYPE, 16-byte aligned
    int64_t rows, int64_t sf_rows, int k, int num_groups, int group_rows, int gs_stride, float gs_value) {
  dequantize_rows<NVFP4_DTYPE>(q, q_scale, gs, m_indptr, out, rows, sf_rows, k, num_groups, group_rows, gs_stride,
                               gs_value);
}
#elif NVFP4_QUANT_OP == 3
extern "C" __global__ void __launch_bounds__(kThreads, kMinBlocks) NVFP4_KERNEL_NAME(
    const void* __restrict__ x,            // (rows, K) NVFP4_DTYPE, 16-byte aligned
    uint32_t* __restrict__ amax_bits,      // (G,) or (1,): float32 bits of max|x|, zeroed by the caller
    const int32_t* __restrict__ m_indptr,  // (G+1,) activation groups; nullptr: rows of group_rows each
    int64_t rows, int k, int num_groups, int group_rows,
    int per_group) {                       // 1: one amax per group, 0: one for all
  amax_rows<NVFP4_DTYPE>(x, amax_bits, m_indptr, rows, k, num_groups, group_rows, per_group);
}
#elif NVFP4_QUANT_OP == 4
// In place: amax (float32) -> FlashInfer's global scale 448 * 6 / amax (correctly rounded). An
// all-zero input (amax 0) gets 1, which quantizes it to zeros exactly; a quotient that overflows
// (amax < 2688 / FLT_MAX) is clamped to FLT_MAX. amax = inf gives 0 and NaN gives NaN, which the
// quantizer turns into NaN scales (see checked_global_scale).
extern "C" __global__ void __launch_bounds__(kScalarThreads) NVFP4_KERNEL_NAME(
    float* __restrict__ scale,  // (n,) in: amax, out: global scale
    int n) {
  const int i = blockIdx.x * kScalarThreads + threadIdx.x;
  if (i >= n) return;
  const float amax = scale[i];
  float gsf = __fdiv_rn(kUe4m3Max * kE2m1Max, amax);
  if (amax == 0.f) gsf = 1.f;
  else if (isinf(gsf)) gsf = 3.4028234663852886e38f;
  scale[i] = gsf;
}
#elif NVFP4_QUANT_OP == 5
// alpha[g] = 1 / (gs_a[g * a_stride] * gs_b[g * b_stride]), each step correctly rounded.
extern "C" __global__ void __launch_bounds__(kScalarThreads) NVFP4_KERNEL_NAME(
    const float* __restrict__ gs_a, const float* __restrict__ gs_b,
    float* __restrict__ alpha,  // (n,)
    int a_stride, int b_stride, int n) {
  const int i = blockIdx.x * kScalarThreads + threadIdx.x;
  if (i >= n) return;
  alpha[i] = rcp_rn(mul_rn(__ldg(gs_a + (int64_t)i * a_stride), __ldg(gs_b + (int64_t)i * b_stride)));
}
#else
#error "NVFP4_QUANT_OP must be 1..5"
#endif
