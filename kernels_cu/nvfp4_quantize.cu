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
//   NVFP4_QUANT_STEPS, NVFP4_QUANT_MIN_BLOCKS  tuning knobs for experiments (defaults 4 and 1; the
//                      Python grid assumes 4 steps, i.e. 1024-element segments)
//
// Row kernels (quantize, dequantize, amax) share one cut of the work: each warp takes one unit, a
// row and a 1024-element segment of it, 8 elements per lane per 256-element step. Units are
// numbered row-major (unit = row * segments + segment) and a block holds 8 consecutive ones, so
// the warps that run together stream consecutive memory. (A 2-D grid of row blocks x segments made
// the resident warps read 2 KB out of every row, a stride that reached only ~60% of the copy
// bandwidth on an H100.) Each lane loads 16 contiguous bytes per step (the warp 512 contiguous
// bytes); a lane pair owns one 16-element scale block and 8 lanes one 4-byte word of the
// swizzled scale layout.
//
// Rows map to groups in one of two ways (a warp finds its own on the device, no host sync):
//   m_indptr != nullptr  activations: group g owns rows [m_indptr[g], m_indptr[g+1]); its scale
//                        rows start at sf_base(g) = ((m_indptr[g] + 127 g) / 128) * 128 (SPEC §3).
//   m_indptr == nullptr  weights: group g owns rows [g N, (g+1) N) (N = group_rows) and scale rows
//                        [g N_pad, g N_pad + N), N_pad = ceil(N / 128) * 128.
// m_indptr entries are clamped into [0, rows] and made non-decreasing per group, as the GEMM does,
// so a malformed m_indptr can never send an access outside the buffers.
#include "nvfp4_common.cuh"
#include "nvfp4_quantize.cuh"

namespace {

using namespace nvfp4;

constexpr int kThreads = 256;            // 8 warps: one row (segment) each
constexpr int kWarps = kThreads / 32;
constexpr int kLaneElems = 8;            // one 16-byte load of 16-bit inputs per lane and step
constexpr int kStep = 32 * kLaneElems;   // 256 elements per warp step
#ifndef NVFP4_QUANT_STEPS
#define NVFP4_QUANT_STEPS 4
#endif
constexpr int kSteps = NVFP4_QUANT_STEPS; // steps per warp: independent 16-byte loads in flight per lane
constexpr int kSegment = kStep * kSteps; // 1024 elements of one row per warp
#ifndef NVFP4_QUANT_MIN_BLOCKS
#define NVFP4_QUANT_MIN_BLOCKS 1
#endif
constexpr int kScalarThreads = 128;      // the per-group scalar kernels

constexpr int kBf16 = 0, kF16 = 1, kF32 = 2;

// ------------------------------------------------------------------------------------------------
// 8 consecutive elements of a row <-> float32

template <int D>
struct Elems;

template <>
struct Elems<kBf16> {
  uint4 raw;
  __device__ __forceinline__ void load(const void* p) { raw = __ldcs(static_cast<const uint4*>(p)); }
  __device__ __forceinline__ void zero() { raw = make_uint4(0, 0, 0, 0); }
  // bfloat16 -> float32 is exact: the bf16 bits are the float32's upper half.
  __device__ __forceinline__ void to_float(float (&v)[8]) const {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
    }
  }
};

template <>
struct Elems<kF16> {
  uint4 raw;
  __device__ __forceinline__ void load(const void* p) { raw = __ldcs(static_cast<const uint4*>(p)); }
  __device__ __forceinline__ void zero() { raw = make_uint4(0, 0, 0, 0); }
  __device__ __forceinline__ void to_float(float (&v)[8]) const {  // exact
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  }
};

template <>
struct Elems<kF32> {
  float4 lo, hi;
  __device__ __forceinline__ void load(const void* p) {
    lo = __ldcs(static_cast<const float4*>(p));
    hi = __ldcs(static_cast<const float4*>(p) + 1);
  }
  __device__ __forceinline__ void zero() { lo = hi = make_float4(0.f, 0.f, 0.f, 0.f); }
  __device__ __forceinline__ void to_float(float (&v)[8]) const {
    v[0] = lo.x; v[1] = lo.y; v[2] = lo.z; v[3] = lo.w;
    v[4] = hi.x; v[5] = hi.y; v[6] = hi.z; v[7] = hi.w;
  }
};

template <int D>
struct ElemSize { static constexpr int value = D == kF32 ? 4 : 2; };

// This warp's unit: its row and the segment of that row (see the header comment).
struct Unit {
  int64_t row;
  int seg;
};
__device__ __forceinline__ Unit warp_unit(int k) {
  const int segments = (k + kSegment - 1) / kSegment;
  const int64_t unit = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int64_t row = unit / segments;
  return Unit{row, (int)(unit - row * segments)};
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

// Scale row s (quantize): the data row it holds (-1: a padding row) and its group.
struct SfPlace {
  int64_t group;
  int64_t data_row;
};
__device__ __forceinline__ SfPlace place_sf_row(const int32_t* __restrict__ m_indptr, int64_t s, int64_t rows,
                                                int num_groups, int group_rows) {
  if (m_indptr == nullptr) {
    const int64_t n_pad = ((int64_t)group_rows + 127) / 128 * 128;
    const int64_t g = s / n_pad, n = s - g * n_pad;
    if (g >= num_groups || n >= group_rows) return SfPlace{g, -1};
    return SfPlace{g, g * group_rows + n};
  }
  const int64_t g = warp_last_le(num_groups, s, [&](int64_t i) { return sf_base_of(m_indptr, i, rows); });
  if (g < 0) return SfPlace{-1, -1};
  const GroupRows gr = group_rows_of(m_indptr, g, rows);
  const int64_t local = s - sf_base_of(m_indptr, g, rows);
  if (local >= gr.hi - gr.lo) return SfPlace{g, -1};
  return SfPlace{g, gr.lo + local};
}

__device__ __forceinline__ float group_global_scale(const float* __restrict__ gs, int gs_stride, float gs_value,
                                                    int64_t g) {
  return gs != nullptr ? __ldg(gs + g * gs_stride) : gs_value;
}

// ------------------------------------------------------------------------------------------------
// quantize_rows: x (rows, K) -> q (rows, K/2) e2m1 pairs + q_scale (sf_rows, K/16) swizzled ue4m3.
//
// The grid walks SCALE rows, so every byte of q_scale is written: a scale row that holds a data
// row gets its block scales, a padding row gets zeros. Warp s also zeroes data row s of q when
// that row lies outside every group (activation mode; the grid covers max(rows, sf_rows) warps),
// so all of q is defined too: rows outside the groups hold 0x00 (e2m1 +0).

template <int D>
__device__ __forceinline__ void quantize_rows(const void* __restrict__ x, uint8_t* __restrict__ q,
                                              uint8_t* __restrict__ q_scale, const float* __restrict__ gs,
                                              const int32_t* __restrict__ m_indptr, int64_t rows, int64_t sf_rows,
                                              int k, int num_groups, int group_rows, int gs_stride, float gs_value) {
  const int lane = threadIdx.x & 31;
  const Unit unit = warp_unit(k);
  const int64_t s = unit.row;  // this warp's scale row
  if (s >= max(rows, sf_rows)) return;
  const int64_t sf_k = k / kSfVec;
  const int col0 = unit.seg * kSegment + lane * kLaneElems;

  // Activation mode: data row s of q lies outside [m_indptr[0], m_indptr[G]) -> this warp zeroes it
  // (whatever scale row s holds: the two roles are independent).
  bool zero_data_row = false;
  if (m_indptr != nullptr && s < rows) {
    const int64_t first = min(max((int64_t)__ldg(m_indptr), (int64_t)0), rows);
    const int64_t last = min(max((int64_t)__ldg(m_indptr + num_groups), first), rows);
    zero_data_row = s < first || s >= last;
  }
  if (zero_data_row) {
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int col = col0 + j * kStep;
      if (col < k) *reinterpret_cast<uint32_t*>(q + s * (k / 2) + col / 2) = 0u;
    }
  }

  const SfPlace place = place_sf_row(m_indptr, s, rows, num_groups, group_rows);
  if (place.data_row < 0) {  // a padding scale row (or none): zeros
    if (s < sf_rows && (lane & 7) == 0) {
#pragma unroll
      for (int j = 0; j < kSteps; ++j) {
        const int col = col0 + j * kStep;
        if (col < k) *reinterpret_cast<uint32_t*>(q_scale + swizzled_offset(s, col / kSfVec, sf_k)) = 0u;
      }
    }
    return;
  }

  const float gsf = checked_global_scale(group_global_scale(gs, gs_stride, gs_value, place.group));
  const float inv_gsf = rcp_rn(gsf);
  const char* row = static_cast<const char*>(x) + place.data_row * (int64_t)k * ElemSize<D>::value;

  Elems<D> in[kSteps];  // all loads first: kSteps independent 16-byte loads in flight per lane
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = col0 + j * kStep;
    if (col < k) in[j].load(row + (int64_t)col * ElemSize<D>::value);
    else in[j].zero();
  }
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = col0 + j * kStep;
    if (unit.seg * kSegment + j * kStep >= k) break;  // warp-uniform: shuffles below need all lanes
    float v[8];
    in[j].to_float(v);
    float amax = fabsf(v[0]);
#pragma unroll
    for (int i = 1; i < 8; ++i) amax = max_nan(amax, fabsf(v[i]));
    amax = max_nan(amax, __shfl_xor_sync(0xffffffffu, amax, 1));  // the lane pair's 16-element block
    const BlockScale bs = block_scale(amax, gsf, inv_gsf);
    uint32_t codes = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) codes |= encode_e2m1(mul_rn(v[i], bs.scale)) << (4 * i);
    // Lanes 8t .. 8t+7 hold blocks kb .. kb+3 (kb % 4 == 0): one 4-byte word of the swizzled layout.
    uint32_t sf_word = bs.byte << (8 * ((lane >> 1) & 3));
    sf_word |= __shfl_xor_sync(0xffffffffu, sf_word, 2);
    sf_word |= __shfl_xor_sync(0xffffffffu, sf_word, 4);
    if (col < k) {
      *reinterpret_cast<uint32_t*>(q + place.data_row * (k / 2) + col / 2) = codes;
      if ((lane & 7) == 0 && s < sf_rows)
        *reinterpret_cast<uint32_t*>(q_scale + swizzled_offset(s, col / kSfVec, sf_k)) = sf_word;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// dequantize_rows: q (rows, K/2) + q_scale -> out (rows, K) = e2m1 * ue4m3 [* (1 / gsf)].
// With gs == nullptr and gs_value == 1 the decode is exact in every output dtype (at most 6
// significant bits in [2^-10, 2688]). Rows outside every group are written as 0; a row whose
// scale row lies beyond sf_rows (q_scale too small) is written as NaN.

template <int D>
__device__ __forceinline__ void dequantize_rows(const uint8_t* __restrict__ q, const uint8_t* __restrict__ q_scale,
                                                const float* __restrict__ gs, const int32_t* __restrict__ m_indptr,
                                                void* __restrict__ out, int64_t rows, int64_t sf_rows, int k,
                                                int num_groups, int group_rows, int gs_stride, float gs_value) {
  const int lane = threadIdx.x & 31;
  const Unit unit = warp_unit(k);
  const int64_t r = unit.row;
  if (r >= rows) return;
  const int64_t sf_k = k / kSfVec;
  const int col0 = unit.seg * kSegment + lane * kLaneElems;
  const RowPlace place = place_data_row(m_indptr, r, rows, num_groups, group_rows);
  float inv_gsf = 0.f;
  if (place.group >= 0) inv_gsf = rcp_rn(checked_global_scale(group_global_scale(gs, gs_stride, gs_value, place.group)));
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = col0 + j * kStep;
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

// ------------------------------------------------------------------------------------------------
// amax_rows: amax_bits[g] = max(amax_bits[g], bits of max|x| over row r's segment), g = r's group
// (per_group) or 0. The caller zeroes amax_bits first. Non-negative float32 bit patterns order like
// their values and every NaN pattern lies above +inf, so an unsigned atomicMax is a NaN-keeping max.

template <int D>
__device__ __forceinline__ void amax_rows(const void* __restrict__ x, uint32_t* __restrict__ amax_bits,
                                          const int32_t* __restrict__ m_indptr, int64_t rows, int k, int num_groups,
                                          int group_rows, int per_group) {
  const int lane = threadIdx.x & 31;
  const Unit unit = warp_unit(k);
  const int64_t r = unit.row;
  if (r >= rows) return;
  const RowPlace place = place_data_row(m_indptr, r, rows, num_groups, group_rows);
  if (place.group < 0) return;  // outside every group: not part of any global scale
  const char* row = static_cast<const char*>(x) + r * (int64_t)k * ElemSize<D>::value;
  const int col0 = unit.seg * kSegment + lane * kLaneElems;
  Elems<D> in[kSteps];
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = col0 + j * kStep;
    if (col < k) in[j].load(row + (int64_t)col * ElemSize<D>::value);
    else in[j].zero();
  }
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    float v[8];
    in[j].to_float(v);
#pragma unroll
    for (int i = 0; i < 8; ++i) amax = max_nan(amax, fabsf(v[i]));
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) amax = max_nan(amax, __shfl_xor_sync(0xffffffffu, amax, d));
  if (lane == 0) atomicMax(amax_bits + (per_group ? place.group : 0), __float_as_uint(amax) & 0x7FFFFFFFu);
}

}  // namespace

#if NVFP4_QUANT_OP == 1
extern "C" __global__ void __launch_bounds__(kThreads, NVFP4_QUANT_MIN_BLOCKS) NVFP4_KERNEL_NAME(
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
extern "C" __global__ void __launch_bounds__(kThreads) NVFP4_KERNEL_NAME(
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
