// NVFP4 quantization on the GPU (SPEC §4), its inverse, and the scalar helpers a MoE layer needs.
// Portable CUDA: the same source is built for sm_80, sm_90, sm_120a, sm_121a and as compute_80 PTX,
// and every build writes the same bytes as nvfp4_driver.reference (the codecs are software, in
// nvfp4_quantize.cuh, but for sm_89+'s ue4m3 conversion; the file is compiled with -fmad=false).
//
// build_cubins.py compiles one symbol per build, chosen by macros:
//   NVFP4_KERNEL_NAME  the extern "C" symbol, e.g. nvfp4_quantize_rows_bf16
//   NVFP4_QUANT_OP     1 quantize_rows | 2 dequantize_rows | 3 amax_rows | 4 global_scale_from_amax
//                      | 5 alpha_from_global_scales | 6 silu_mul_quantize_rows | 7 silu_mul_amax_rows
//   NVFP4_DTYPE        0 bfloat16 | 1 float16 | 2 float32: the unquantized side (input or output;
//                      silu_mul_*: bfloat16 and float16 only)
//   NVFP4_QUANT_STEPS, NVFP4_QUANT_MIN_BLOCKS  tuning knobs: 512-element steps per unit (default 2,
//                      1 for quantize with float32 input and for silu_mul_*; nvfp4_driver/quantize.py
//                      sizes the grid with 1024-element units of the input row) and the resident
//                      blocks per SM that __launch_bounds__ asks
//   NVFP4_DIAG_NOENCODE  timing experiments only (wrong bytes; never in the build table): quantize_rows
//                      loads and stores without the encode
//
// Row kernels (quantize, dequantize, amax) share one cut of the work. A unit is a row and a
// segment of kSegment = 1024 elements of it (512 for quantize with float32 input); units are
// numbered row-major (unit = row * segments + segment). The grid is persistent: the host launches
// min(ceil(units / 8), SMs x resident blocks per SM) blocks of 8 warps (SM count and occupancy
// read once per device, cached), and warp w of the W in the grid takes units w, w + W, w + 2W, ...,
// so the warps that run together still stream consecutive memory.
// Any grid size is correct (a warp without a unit exits); only the speed depends on it.
//
// Why persistent, with the next unit's loads issued before the current unit is encoded: v0.1 gave
// each warp one unit (load, wait, encode, store, exit), so a warp had no bytes in flight while it
// encoded, and HBM delivered ~61% of the copy rate (docs/perf-notes.md, "Quantizer v0.1"). Now a warp
// holds two units in registers: it issues unit n+1's loads, then encodes unit n from the registers
// its previous iteration loaded (register double buffering): 2 KB per warp of 16-bit input, 48 KB per
// SM with quantize's 3 blocks, stay in flight while the ALUs work. The buffers' registers set the
// resident blocks per SM (NVFP4_QUANT_MIN_BLOCKS).
//
// Lanes (quantize, amax): per 512-element step a lane holds 16 consecutive elements, one whole SPEC
// §4 scale block (two 16-byte loads of 16-bit input, four of float32), so a block's amax, ue4m3 byte
// and reciprocal are computed once per 16 elements instead of by both lanes of a pair (v0.1), and
// amax runs on bf16x2 / f16x2 pairs. The lane's second load reads the 32-byte sectors its first
// brought into L1. A lane stores 8 bytes of codes (the warp 256 contiguous bytes) and its block's
// scale byte. Instruction count matters as much as bytes in flight: v0.1 issued ~26 instructions per
// element (sm_90 SASS), ~12 us of issue at 16 M elements against a 14 us byte floor; v0.2's layout
// and branch-free codecs ~18; v0.4's plain-block encoder (nvfp4_quantize.cuh) and the hardware
// ue4m3 conversion ~15 per element of a step (9 of them the codes, the rest the block's scale and
// the two stores).
// dequantize keeps 8 elements per lane (256-element steps) so each of its 16-byte stores fills half
// of a contiguous 512-byte warp store.
//
// silu_mul_quantize_rows and silu_mul_amax_rows are quantize_rows and amax_rows on rows that are
// never stored: each input row holds 2K elements, gate in columns [0, K) and up in [K, 2K), and the
// K elements quantized (or measured) are h = silu(gate) * up, computed per element in float32 and
// rounded to the input dtype (GateUp below): FlashInfer's silu_and_mul semantics and, bit for bit,
// what torch's (F.silu(gate.float()) * up.float()).to(dtype) gives on the GPU. A lane loads its 16
// gate and its 16 up elements (the up load 2K bytes further on), and computes its block of h from
// registers when the unit is encoded, after the next unit's loads are issued: the double buffering
// above, with one 512-element step per unit so that gate and up of two units take the registers
// that two 2-step units take in quantize_rows. Unfused, h costs a (rows, K) write and read in the
// input dtype and two to five more kernels (torch's silu, multiply, casts).
//
// Rows map to groups in one of two ways (a warp finds its own on the device, no host sync):
//   m_indptr != nullptr  activations: group g owns rows [m_indptr[g], m_indptr[g+1]); its scale
//                        rows start at sf_base(g) = ((m_indptr[g] + 127 g) / 128) * 128 (SPEC §3).
//   m_indptr == nullptr  weights: group g owns rows [g N, (g+1) N) (N = group_rows) and scale rows
//                        [g N_pad, g N_pad + N), N_pad = ceil(N / 128) * 128.
// m_indptr entries are clamped into [0, rows] and made non-decreasing per group, as the GEMM does,
// so a malformed m_indptr can never send an access outside the buffers. The quantizer keeps the
// groups (G <= 256) in shared memory, and its warps keep the last group they found and search again
// only when a unit leaves it.
#include "nvfp4_common.cuh"
#include "nvfp4_quantize.cuh"

namespace {

using namespace nvfp4;

constexpr int kThreads = 256;  // 8 warps: 4 schedulers x 2, and 8 consecutive units per block
constexpr int kWarps = kThreads / 32;
#ifndef NVFP4_QUANT_STEPS
// 2 steps (1024-element units). v0.2 gave quantize with 16-bit input 4 steps, to halve the per-unit
// group lookup it paid before each unit's loads; v0.4's loads wait for no lookup (data-row walk,
// groups in shared memory), and 2 steps at 3 blocks per SM are faster at 16 M and 64 M elements
// (H100, docs/perf-notes.md "Quantizer v0.4"). quantize with float32 input takes 1 step: the same
// 2 KB per unit, and its buffers fit 3 blocks per SM without spilling on sm_120a.
#define NVFP4_QUANT_STEPS ((NVFP4_QUANT_OP == 1 && NVFP4_DTYPE == 2) || NVFP4_QUANT_OP >= 6 ? 1 : 2)
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
// (256 x blocks)). quantize: two units are 32 registers of buffers, ~80 in all, 3 blocks (24 warps,
// 48 KB in flight per SM). amax with 16-bit input (60 registers) fits 4; float32 amax and dequantize 2.
// The silu_mul ops hold as many buffer registers as their plain twins and ask the same.
#define NVFP4_QUANT_MIN_BLOCKS                                                       \
  (NVFP4_QUANT_OP == 1 || NVFP4_QUANT_OP == 6 ? 3                                    \
   : (NVFP4_QUANT_OP == 3 || NVFP4_QUANT_OP == 7) && NVFP4_DTYPE != 2 ? 4 : 2)
#endif
constexpr int kMinBlocks = NVFP4_QUANT_MIN_BLOCKS;
#ifndef NVFP4_DIAG_NOENCODE
#define NVFP4_DIAG_NOENCODE 0
#endif
constexpr int kScalarThreads = 128;      // the per-group scalar kernels

constexpr int kBf16 = 0, kF16 = 1, kF32 = 2;

template <int D>
struct ElemSize { static constexpr int value = D == kF32 ? 4 : 2; };

// ------------------------------------------------------------------------------------------------
// One lane's 16 consecutive input elements (one scale block) <-> float32, exactly.

template <int D>
struct Chunk;

// 16 elements of a 16-bit type as 8 pairs, element 2i in the low half of w[i]. Both types keep the
// sign in bit 15 of a half, so signs(p) and the magnitudes are masks of the same words (the magnitude
// words also feed amax, so each is computed once). Pair: the type's x2 vector and its exact widening.
template <class Pair>
struct Pairs16 {
  using pair = Pair;
  uint32_t w[8];
  __device__ __forceinline__ void load(const void* p) {
    const uint4 a = __ldcs(static_cast<const uint4*>(p)), b = __ldcs(static_cast<const uint4*>(p) + 1);
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = 0u;
  }
  __device__ __forceinline__ uint32_t abs_pair(int p) const { return w[p] & 0x7FFF7FFFu; }
  __device__ __forceinline__ uint32_t signs(int p) const { return w[p] & 0x80008000u; }
  __device__ __forceinline__ float at(int i) const { return Pair::widen(w[i >> 1], i & 1); }
  // |x| as an FMUL operand modifier: no mask (the masked words abs_pair feed amax only).
  __device__ __forceinline__ float magnitude(int i) const { return fabsf(Pair::widen(w[i >> 1], i & 1)); }
  // max|x| over the 16, NaN if one is NaN (as max_nan): on x2 pairs, exact (max returns an input).
  __device__ __forceinline__ float amax() const {
    typename Pair::type m = Pair::of(abs_pair(0));
#pragma unroll
    for (int i = 1; i < 8; ++i) m = __hmax2_nan(m, Pair::of(abs_pair(i)));
    return max_nan(__low2float(m), __high2float(m));
  }
};

struct Bf16Pair {
  using type = __nv_bfloat162;
  static __device__ __forceinline__ type of(uint32_t word) { return *reinterpret_cast<const type*>(&word); }
  // bfloat16 -> float32 is exact: the bf16 bits are the float32's upper half.
  static __device__ __forceinline__ float widen(uint32_t word, int high) {
    return __uint_as_float(high ? word & 0xFFFF0000u : word << 16);
  }
  // Two float32 values rounded to nearest even, lo in the low half (torch's float -> bfloat16).
  static __device__ __forceinline__ uint32_t narrow(float lo, float hi) {
    const type h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};

struct F16Pair {
  using type = __half2;
  static __device__ __forceinline__ type of(uint32_t word) { return *reinterpret_cast<const type*>(&word); }
  static __device__ __forceinline__ float widen(uint32_t word, int high) {  // exact
    return high ? __high2float(of(word)) : __low2float(of(word));
  }
  static __device__ __forceinline__ uint32_t narrow(float lo, float hi) {  // nearest even, inf past 65504
    const type h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
};

template <>
struct Chunk<kBf16> : Pairs16<Bf16Pair> {};

template <>
struct Chunk<kF16> : Pairs16<F16Pair> {};

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
  __device__ __forceinline__ float magnitude(int i) const { return fabsf(v[i]); }
  __device__ __forceinline__ uint32_t signs(int p) const {
    return ((__float_as_uint(v[2 * p]) >> 16) & 0x8000u) | (__float_as_uint(v[2 * p + 1]) & 0x80000000u);
  }
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
// silu_mul's rows: a lane's 16 gate elements and the 16 up elements K columns further on, and the
// block of h = silu(gate) * up they make.

template <int D>
struct GateUp {
  Chunk<D> gate, up;
};

// Elements of an input row per element quantized: 1, or 2 for gate and up.
template <class Buf>
struct InputRowWidth { static constexpr int value = 1; };
template <int D>
struct InputRowWidth<GateUp<D>> { static constexpr int value = 2; };

template <int D>
__device__ __forceinline__ void load_unit(GateUp<D> (&c)[kSteps], const char* row, int seg, int k) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int col = seg * kSegment + j * kBlockStep + lane * kSfVec;
    if (row != nullptr && col < k) {
      c[j].gate.load(row + (int64_t)col * ElemSize<D>::value);
      c[j].up.load(row + ((int64_t)k + col) * ElemSize<D>::value);
    } else {
      c[j].gate.zero();
      c[j].up.zero();
    }
  }
}

// torch's CUDA silu (aten/src/ATen/native/cuda/ActivationSiluKernel.cu): x / (1 + exp(-x)) in float32
// with the CUDA math library's expf (not the approximate __expf) and a correctly rounded division. torch
// is built with FMA contraction on, and then nvcc fuses expf's last step, r * 2^j (2^j a normal power
// of two, so the product is exact unless it is below 2^-126 or overflows), with the 1 + into one FMA;
// this file is built with -fmad=false, so here the product is rounded first and then added. The two
// agree for every x: an exact product rounds to itself, a product below 2^-126 leaves 1 + it = 1 both
// ways, and one that overflows gives inf both ways. The GPU tests compare with torch bit for bit.
__device__ __forceinline__ float silu(float x) { return __fdiv_rn(x, add_rn(1.0f, expf(-x))); }

// h = silu(gate) * up per element, the product rounded to float32 and then to the input dtype (as
// torch's (F.silu(gate.float()) * up.float()).to(dtype)): the chunk quantize and amax read.
template <int D>
__device__ __forceinline__ Chunk<D> silu_mul(const GateUp<D>& in) {
  static_assert(D != kF32, "silu_mul_* take bfloat16 or float16 rows");
  using Pair = typename Chunk<D>::pair;
  Chunk<D> h;
#pragma unroll
  for (int p = 0; p < 8; ++p) {
    const float lo = mul_rn(silu(Pair::widen(in.gate.w[p], 0)), Pair::widen(in.up.w[p], 0));
    const float hi = mul_rn(silu(Pair::widen(in.gate.w[p], 1)), Pair::widen(in.up.w[p], 1));
    h.w[p] = Pair::narrow(lo, hi);
  }
  return h;
}

// The 16 values a unit's buffer holds for one lane and step: the loaded elements, or silu_mul's h.
template <int D>
__device__ __forceinline__ const Chunk<D>& values_of(const Chunk<D>& c) { return c; }
template <int D>
__device__ __forceinline__ Chunk<D> values_of(const GateUp<D>& c) { return silu_mul(c); }

// ------------------------------------------------------------------------------------------------
// This warp's walk over the units: w, w + W, w + 2W, ... as (row, segment), with no division per unit.

struct Walk {
  int64_t row;          // the unit's row (zeroing the padding scale rows: a 128-row scale tile)
  int seg;              // its segment of kSegment elements (zeroing: of kZeroSliceChunks chunks)
  int segments;         // segments per row: ceil(K / kSegment)
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

// The walk of this warp over `segments` segments per row (first_unit: the units of rows of K).
__device__ __forceinline__ Walk first_of(int segments) {
  Walk w;
  w.segments = segments;
  if (gridDim.x < (1u << 27)) {
    // Every grid the host launches: 32-bit divisions, which cost a tenth of the 64-bit ones on the
    // path to the first loads (cold, each instruction-cache miss there delays them).
    const uint32_t unit = blockIdx.x * kWarps + (threadIdx.x >> 5), stride = gridDim.x * kWarps;
    const uint32_t segments = static_cast<uint32_t>(w.segments);
    w.row = unit / segments;
    w.seg = static_cast<int>(unit % segments);
    w.stride_rows = stride / segments;
    w.stride_seg = static_cast<int>(stride % segments);
    return w;
  }
  const int64_t unit = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
  const int64_t stride = (int64_t)gridDim.x * kWarps;
  w.row = unit / w.segments;
  w.seg = (int)(unit - w.row * w.segments);
  w.stride_rows = stride / w.segments;
  w.stride_seg = (int)(stride - w.stride_rows * w.segments);
  return w;
}

__device__ __forceinline__ Walk first_unit(int k) { return first_of((k + kSegment - 1) / kSegment); }

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

// The activation groups as the quantizer reads them: from the block's shared-memory copy when G <=
// kTableGroups (made once per block, one round of loads), else from m_indptr. A lookup in the copy
// is one shared-memory read per lane and a ballot per 32 groups; in m_indptr it is a chain of
// dependent global loads (the ballot search, then the group's bounds, then its global scale), and
// with a group change at every unit (8 groups and more) that chain cost ~2 us per 16 M elements.
// The copy holds 32-bit rows, so it serves when rows + 128 (G + 1) < 2^31 (every real shape).
constexpr int kTableGroups = 256;
struct GroupTable {
  int32_t lo[kTableGroups], hi[kTableGroups], sf_base[kTableGroups];
  float gsf[kTableGroups];
};

// Last index i < n with keys[i] <= v (keys non-decreasing; -1 if none), from shared memory: the
// keys <= v are a prefix, so their count is the answer + 1 (a malformed m_indptr still gives an
// index in [-1, n)).
__device__ __forceinline__ int64_t table_last_le(const int32_t* keys, int n, int64_t v) {
  const int lane = threadIdx.x & 31;
  int count = 0;
  for (int base = 0; base < n; base += 32)
    count += __popc(__ballot_sync(0xffffffffu, base + lane < n && keys[base + lane] <= v));
  return count - 1;
}

struct Groups {
  const int32_t* __restrict__ m_indptr;  // nullptr: weights mode, group_rows rows per group
  const float* __restrict__ gs;
  int gs_stride;
  float gs_value;
  int64_t rows;
  int num_groups, group_rows;
  const GroupTable* table;  // nullptr: read m_indptr

  // The last group whose rows start at or before data row r (activation mode; -1: none).
  __device__ __forceinline__ int64_t last_starting_at(int64_t r) const {
    if (table) return table_last_le(table->lo, num_groups, r);
    return warp_last_le(num_groups, r, [&](int64_t i) { return min(max((int64_t)__ldg(m_indptr + i), (int64_t)0), rows); });
  }
  // The last group whose scale rows start at or before scale row s (activation mode; -1: none).
  __device__ __forceinline__ int64_t last_scale_start_at(int64_t s) const {
    if (table) return table_last_le(table->sf_base, num_groups, s);
    return warp_last_le(num_groups, s, [&](int64_t i) { return sf_base_of(m_indptr, i, rows); });
  }
  __device__ __forceinline__ GroupRows bounds(int64_t g) const {
    return table ? GroupRows{table->lo[g], table->hi[g]} : group_rows_of(m_indptr, g, rows);
  }
  __device__ __forceinline__ int64_t sf_base(int64_t g) const {
    return table ? table->sf_base[g] : sf_base_of(m_indptr, g, rows);
  }
  __device__ __forceinline__ float gsf(int64_t g) const {
    return table ? table->gsf[g] : checked_global_scale(group_global_scale(gs, gs_stride, gs_value, g));
  }
};

// Fill the block's copy. Every thread of the block calls this: it ends in __syncthreads.
__device__ __forceinline__ void fill_group_table(GroupTable& t, const Groups& groups) {
  for (int g = threadIdx.x; g < groups.num_groups; g += kThreads) {
    const GroupRows gr = group_rows_of(groups.m_indptr, g, groups.rows);
    t.lo[g] = static_cast<int32_t>(gr.lo);
    t.hi[g] = static_cast<int32_t>(gr.hi);
    t.sf_base[g] = static_cast<int32_t>(sf_base_of(groups.m_indptr, g, groups.rows));
    t.gsf[g] = checked_global_scale(group_global_scale(groups.gs, groups.gs_stride, groups.gs_value, g));
  }
  __syncthreads();
}

// Data rows [lo, hi) of one group (in_group) or of no group: what a quantizer warp keeps between
// units. A row of a group goes to scale row r + sf_shift and is quantized with the group's (checked)
// global scale; a row of no group (activation mode: before m_indptr[0] or from m_indptr[G] on) gets
// zero codes and no scale row.
struct RowRun {
  int64_t lo, hi, sf_shift;
  float gsf, inv_gsf;
  bool in_group;
  __device__ __forceinline__ bool holds(int64_t r) const { return r >= lo && r < hi; }
};

// The run of data row r (warp-uniform: the search needs the whole warp).
__device__ __forceinline__ RowRun find_row_run(const Groups& G, int64_t r) {
  int64_t g, lo, hi, sf_lo;
  if (G.m_indptr == nullptr) {
    const int64_t n_pad = ((int64_t)G.group_rows + 127) / 128 * 128;
    g = r / G.group_rows;
    lo = g * G.group_rows;
    hi = lo + G.group_rows;
    sf_lo = g * n_pad;
  } else {
    g = G.last_starting_at(r);
    if (g < 0)  // rows before the first group (all rows when G = 0)
      return RowRun{0, min(max((int64_t)__ldg(G.m_indptr), (int64_t)0), G.rows), 0, 0.f, 0.f, false};
    const GroupRows gr = G.bounds(g);
    if (r >= gr.hi) return RowRun{r, r + 1, 0, 0.f, 0.f, false};  // past the last group (or a malformed m_indptr)
    lo = gr.lo;
    hi = gr.hi;
    sf_lo = G.sf_base(g);
  }
  const float gsf = G.gsf(g);
  return RowRun{lo, hi, sf_lo - lo, gsf, rcp_rn(gsf), true};
}

// ------------------------------------------------------------------------------------------------
// quantize_rows: x (rows, K) -> q (rows, K/2) e2m1 pairs + q_scale (sf_rows, K/16) swizzled ue4m3.
//
// The units walk DATA rows: a unit's address is known without a lookup, so its loads issue at once
// and the group lookup (m_indptr, the global scale) overlaps them. Before its first encode, each warp
// also zeroes its share of the padding scale rows (no data row maps to them; slices of 128-row
// tiles, no loads), so every byte of q_scale is written once, and a padding row costs no data unit
// (v0.2 walked scale rows, padding included: with 8 groups 18% of its units, which left the warps
// unevenly loaded).
// Rows of q outside the groups hold 0x00 (e2m1 +0).

// One 512-element step of data row r at columns base .. base + 511: its codes (zeros for a row of
// no group) and, per lane, the scale byte of its block at scale row r + run.sf_shift. (Computing the
// addresses once per unit instead, 256 and 4096 bytes apart per step, measured 5% slower at 16 M.)
template <int D>
__device__ __forceinline__ void encode_step(const Chunk<D>& c, uint8_t* __restrict__ q, uint8_t* __restrict__ q_scale,
                                            int64_t r, const RowRun& run, int base, int k, int64_t sf_k,
                                            int64_t sf_rows) {
  const int col = base + (threadIdx.x & 31) * kSfVec;
  if (col >= k) return;
  uint32_t lo = 0, hi = 0;
  if (run.in_group) {
    uint32_t byte;
#if NVFP4_DIAG_NOENCODE
    lo = hi = byte = 0;
    if constexpr (D != kF32) {  // timing only: the same loads and stores, no arithmetic
      lo = c.w[0] ^ c.w[1] ^ c.w[2] ^ c.w[3];
      hi = c.w[4] ^ c.w[5] ^ c.w[6] ^ c.w[7];
      byte = lo & 0x7Fu;
    }
#else
    const float amax = c.amax();
    const BlockScale bs = block_scale(amax, run.gsf, run.inv_gsf);
    encode_block(c, amax, bs.scale, lo, hi);
    byte = bs.byte;
#endif
    // One byte per lane: a store instruction, where gathering 4 lanes' bytes into a word took two
    // shuffles and four more instructions (the warp's 32 bytes land in the same 8 words either way).
    const int64_t srow = r + run.sf_shift;
    if (srow >= 0 && srow < sf_rows) q_scale[swizzled_offset(srow, col / kSfVec, sf_k)] = static_cast<uint8_t>(byte);
  }
  *reinterpret_cast<uint2*>(q + r * (k / 2) + col / 2) = make_uint2(lo, hi);
}

// How many rows at the start of the 128-row scale tile at lo hold data, in [0, 128]. Activation mode:
// g is the last group with sf_base(g) <= lo, whose data rows end at sf_base(g) + count(g); weights
// mode: groups of N data rows every N_pad scale rows. (Rows below sf_base(0) and past the last
// group's are padding.)
__device__ __forceinline__ int tile_data_rows(const Groups& G, int64_t lo) {
  int64_t base, count;
  if (G.m_indptr == nullptr) {
    const int64_t n_pad = ((int64_t)G.group_rows + 127) / 128 * 128;
    const int64_t g = lo / n_pad;
    if (g >= G.num_groups) return 0;
    base = g * n_pad;
    count = G.group_rows;
  } else {
    const int64_t g = G.last_scale_start_at(lo);
    if (g < 0) return 0;
    const GroupRows gr = G.bounds(g);
    base = G.sf_base(g);
    count = gr.hi - gr.lo;
  }
  return static_cast<int>(min(max(base + count - lo, (int64_t)0), (int64_t)128));
}

// The padding scale rows, zeroed. The swizzled layout stores each 128-row tile of scale rows as
// K/64 contiguous 512-byte chunks, and in every chunk lane l's 16-byte word holds rows l, l + 32,
// l + 64, l + 96 (4 bytes each, in that order). With a valid m_indptr every group starts on a tile
// boundary, so a tile is d data rows then 128 - d padding rows, and the padding part of each word is
// its tail: bytes 4 j0 .. 15, j0 = the word's data rows. A work item is a slice of one tile's chunks
// (grid stride over all tiles' slices); per chunk the warp writes its 512 contiguous bytes with one
// 16-byte store per lane where the word is all padding, and the tail stores where it is not. v0.4
// zeroed a mixed tile row by row (each 4-byte store over 32 sectors 512 bytes apart) in one warp: at
// 2 rows per group (decode), 126 rows x K/128 stores in each group's warp (docs/perf-notes.md,
// "Quantizer v0.5"). A malformed m_indptr gives unspecified bytes, but every store stays in its tile.
constexpr int kZeroSliceChunks = 16;  // 8 KB of a tile per work item

// Zero bytes 4 j0 .. 15 of the 16-byte word at p (16-byte aligned), j0 in 0..4.
__device__ __forceinline__ void zero_word_tail(uint8_t* p, int j0) {
  if (j0 == 0) {
    *reinterpret_cast<uint4*>(p) = make_uint4(0u, 0u, 0u, 0u);
    return;
  }
  if (j0 == 1) *reinterpret_cast<uint32_t*>(p + 4) = 0u;
  if (j0 <= 2) *reinterpret_cast<uint2*>(p + 8) = make_uint2(0u, 0u);
  else if (j0 == 3) *reinterpret_cast<uint32_t*>(p + 12) = 0u;
}

__device__ __forceinline__ void zero_padding_scale_rows(uint8_t* __restrict__ q_scale, const Groups& groups,
                                                        int64_t sf_rows, int k) {
  const int64_t sf_k = k / kSfVec;
  const int chunks = k / 64;  // 512-byte chunks per tile
  const int slices = (chunks + kZeroSliceChunks - 1) / kZeroSliceChunks;
  const int64_t tiles = sf_rows / 128;  // the host sizes q_scale in whole tiles
  const int lane = threadIdx.x & 31;
  // Work items are (tile, slice), walked like the units (row, segment).
  for (Walk w = first_of(slices); w.row < tiles; w.advance()) {
    // The lane's data rows per word: its rows lane + 32 j below the tile's data rows d.
    const int j0 = min((max(tile_data_rows(groups, w.row * 128) - lane, 0) + 31) / 32, 4);
    if (__all_sync(0xffffffffu, j0 == 4)) continue;  // a tile of data rows only
    uint8_t* p = q_scale + w.row * 128 * sf_k + w.seg * (kZeroSliceChunks * 512) + lane * 16;
    const int n = min(kZeroSliceChunks, chunks - w.seg * kZeroSliceChunks);
    for (int c = 0; c < n; ++c, p += 512) zero_word_tail(p, j0);
  }
}

// Buf: Chunk<D> (x holds the rows to quantize) or GateUp<D> (x holds gate and up; h is quantized).
template <int D, class Buf = Chunk<D>>
__device__ __forceinline__ void quantize_rows(const void* __restrict__ x, uint8_t* __restrict__ q,
                                              uint8_t* __restrict__ q_scale, const float* __restrict__ gs,
                                              const int32_t* __restrict__ m_indptr, int64_t rows, int64_t sf_rows,
                                              int k, int num_groups, int group_rows, int gs_stride, float gs_value) {
  const int64_t sf_k = k / kSfVec;
  const int64_t row_bytes = (int64_t)k * ElemSize<D>::value * InputRowWidth<Buf>::value;
  const char* const xb = static_cast<const char*>(x);
  Walk walk = first_unit(k);
  Buf cur[kSteps];
  int64_t cur_r = walk.row;
  int cur_seg = walk.seg;
  if (cur_r < rows) load_unit<D>(cur, xb + cur_r * row_bytes, cur_seg, k);
  // While the first loads fly: the block's copy of the groups, then the padding scale rows.
  __shared__ GroupTable table;
  Groups groups{m_indptr, gs, gs_stride, gs_value, rows, num_groups, group_rows, nullptr};
  if (m_indptr != nullptr && num_groups <= kTableGroups &&
      rows + 128 * (int64_t)(num_groups + 1) < (int64_t)INT32_MAX) {
    fill_group_table(table, groups);
    groups.table = &table;
  }
  zero_padding_scale_rows(q_scale, groups, sf_rows, k);
  if (cur_r >= rows) return;

  RowRun run{0, 0, 0, 0.f, 0.f, false};
  for (;;) {
    // Issue the next unit's loads first: they fly while this unit is looked up and encoded.
    walk.advance();
    const bool more = walk.row < rows;
    Buf nxt[kSteps];
    if (more) load_unit<D>(nxt, xb + walk.row * row_bytes, walk.seg, k);
    if (!run.holds(cur_r)) run = find_row_run(groups, cur_r);
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int base = cur_seg * kSegment + j * kBlockStep;
      if (base >= k) break;  // warp-uniform
      encode_step<D>(values_of(cur[j]), q, q_scale, cur_r, run, base, k, sf_k, sf_rows);
    }
    if (!more) break;
#pragma unroll
    for (int j = 0; j < kSteps; ++j) cur[j] = nxt[j];
    cur_r = walk.row;
    cur_seg = walk.seg;
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

// Buf: as in quantize_rows (GateUp<D>: the amax of h).
template <int D, class Buf = Chunk<D>>
__device__ __forceinline__ void amax_rows(const void* __restrict__ x, uint32_t* __restrict__ amax_bits,
                                          const int32_t* __restrict__ m_indptr, int64_t rows, int k, int num_groups,
                                          int group_rows, int per_group) {
  Walk walk = first_unit(k);
  if (walk.row >= rows) return;
  const int64_t row_bytes = (int64_t)k * ElemSize<D>::value * InputRowWidth<Buf>::value;
  // Unit (r, seg): its slot (-1: row r is outside every group, not part of any global scale) and loads.
  auto start_unit = [&](Buf (&c)[kSteps], int64_t r, int seg) -> int64_t {
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

  Buf cur[kSteps];
  int64_t cur_slot = start_unit(cur, walk.row, walk.seg);
  for (;;) {
    walk.advance();
    const bool more = walk.row < rows;
    Buf nxt[kSteps];
    int64_t nxt_slot = -1;
    if (more) nxt_slot = start_unit(nxt, walk.row, walk.seg);
    if (cur_slot >= 0) {
      float m = values_of(cur[0]).amax();
#pragma unroll
      for (int j = 1; j < kSteps; ++j) m = max_nan(m, values_of(cur[j]).amax());
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
#elif NVFP4_QUANT_OP == 6
// quantize_rows of h = silu(gate) * up (see the header): q, q_scale and the groups as in op 1.
extern "C" __global__ void __launch_bounds__(kThreads, kMinBlocks) NVFP4_KERNEL_NAME(
    const void* __restrict__ gate_up,      // (rows, 2K) NVFP4_DTYPE: gate in columns [0, K), up in [K, 2K)
    uint8_t* __restrict__ q,               // (rows, K/2) e2m1 pairs of h, element 2i in the low nibble
    uint8_t* __restrict__ q_scale,         // (sf_rows, K/16) ue4m3, 128x4-swizzled (SPEC §3)
    const float* __restrict__ gs,          // global scale(s): gs[g * gs_stride]; nullptr: gs_value
    const int32_t* __restrict__ m_indptr,  // (G+1,) activation groups; nullptr: groups of group_rows rows
    int64_t rows, int64_t sf_rows,
    int k,                                 // K (of h: half the input row), a multiple of 64
    int num_groups, int group_rows, int gs_stride, float gs_value) {
  quantize_rows<NVFP4_DTYPE, GateUp<NVFP4_DTYPE>>(gate_up, q, q_scale, gs, m_indptr, rows, sf_rows, k, num_groups,
                                                  group_rows, gs_stride, gs_value);
}
#elif NVFP4_QUANT_OP == 7
// amax_rows of h = silu(gate) * up: the amax silu_mul_quantize_rows' h would have, never stored.
extern "C" __global__ void __launch_bounds__(kThreads, kMinBlocks) NVFP4_KERNEL_NAME(
    const void* __restrict__ gate_up,      // (rows, 2K) NVFP4_DTYPE: gate in columns [0, K), up in [K, 2K)
    uint32_t* __restrict__ amax_bits,      // (G,) or (1,): float32 bits of max|h|, zeroed by the caller
    const int32_t* __restrict__ m_indptr,  // (G+1,) activation groups; nullptr: rows of group_rows each
    int64_t rows,
    int k,                                 // K (of h: half the input row)
    int num_groups, int group_rows, int per_group) {
  amax_rows<NVFP4_DTYPE, GateUp<NVFP4_DTYPE>>(gate_up, amax_bits, m_indptr, rows, k, num_groups, group_rows,
                                              per_group);
}
#else
#error "NVFP4_QUANT_OP must be 1..7"
#endif
