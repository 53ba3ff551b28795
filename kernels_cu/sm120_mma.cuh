// The MMA atom of the sm120 family: one warp computes D(16x8, f32) += (A * SFA)(16x64, e2m1) x
// (B * SFB)(64x8, e2m1) with one ue4m3 scale per 16 consecutive K elements (NVFP4, block 16).
//
//   native (sm_120a, sm_121a):  mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale
//                               .scale_vec::4X.f32.e2m1.e2m1.f32.ue4m3   (SASS OMMA.SF.16864...4X)
//   twin   (-DNVFP4_TWIN, sm_90): a software model of that instruction, built from warp shuffles,
//                               so the whole sm120 kernel can run on an H100 with this one
//                               instruction as its only difference.
//   stand-in (-DNVFP4_STANDIN, sm_90): a few integer ops and one FADD that consume every operand
//                               register (so no load is optimised away), for timing the kernel's
//                               data movement on an H100. Its results are meaningless.
//
// ---- Who holds what (PTX ISA 9.x) ---------------------------------------------------------------
// lane = %laneid, g = lane >> 2 ("groupID"), p = lane & 3 ("threadID_in_group").
// Operand layouts: "Matrix Fragments for mma.m16n8k64" (the .e2m1 rows and the row/col formulas).
// Scale layouts:   "Block Scaling for mma.sync" (scale shapes per .scale_vec_size, the thread-id /
//                  byte-id selectors and their valid values).
// Nibble j of a register is bits [4j, 4j+4): element 2i sits in the low nibble of byte i, the
// order in which SPEC §1 packs a row of K, so every register below is one aligned 32-bit word
// of the row-major (K-contiguous) operand: no repacking between memory and the instruction.
//
//   operand             register / byte     holds                          lane
//   A  16x64 e2m1       a[0] nibble j       A[g    ][ 8p + j     ]         4g + p
//      (row-major)      a[1] nibble j       A[g + 8][ 8p + j     ]
//                       a[2] nibble j       A[g    ][ 8p + j + 32]
//                       a[3] nibble j       A[g + 8][ 8p + j + 32]
//   B  64x8 e2m1        b[0] nibble j       B[ 8p + j     ][g]  (= row g of "NT" weights)
//      (column-major)   b[1] nibble j       B[ 8p + j + 32][g]
//   C/D 16x8 f32        d[0] d[1]           D[g    ][2p], D[g    ][2p + 1]
//                       d[2] d[3]           D[g + 8][2p], D[g + 8][2p + 1]
//   SFA 16 rows x 4     sfa byte j          scale of A[r][16j, 16j+16)     r = g: lane 4g + 2*tA
//      k-blocks                                                            r = g+8: lane 4g + 2*tA + 1
//   SFB 8 cols x 4      sfb byte j          scale of B[16j, 16j+16)[n]     n = g: lane 4g + tB
//      k-blocks
//
// tA = kThreadIdA (thread-id-a, 0 or 1) and tB = kThreadIdB (thread-id-b, 0..3) are the
// selectors below; byte-id-a = byte-id-b = 0, as scale_vec::4X requires (all four bytes count).
// The default, tA = tB = 0 (what CUTLASS's SM120_16x8x64_TN_VS issues):
//   SFA: lane 4g holds the 4 scale bytes of row g, lane 4g+1 those of row g+8; lanes 4g+2, 4g+3
//        are not read.   SFB: lane 4g holds the 4 scale bytes of column n = g; lanes 4g+1..3
//        are not read.
// Byte j is k-block j, so sfa is also one aligned 32-bit word of SPEC §3's swizzled scale layout
// (its 4 innermost bytes are k-blocks 4t..4t+3 of one row).
// The ISA's text fixes which lanes of a quad are read (the pair 2*tA, 2*tA+1 for A; lane tB for
// B) and that 4X reads all four bytes. That the quad holding row g of A (column g of B) supplies
// its scales, which lane of the pair carries row g vs g+8, and byte j = k-block j are drawn only
// in the ISA's figures; here they are taken from CUTLASS's SFALayout/SFBLayout
// (include/cute/atom/mma_traits_sm120.hpp), which Triton's sm120 scale layout repeats. For
// tA = 1, lanes 4g+2 / 4g+3 are taken to play the roles of 4g / 4g+1 (CUTLASS fills them so, but
// issues only tA = 0): prefer tA = 0 until the hardware has confirmed it.
// tests/mma_layouts.py states all of this as functions; tests/test_mma_model.py checks it against
// CUTLASS's layouts element by element.
//
// Scale bytes are read as float8_e4m3fn(byte & 0x7F) (docs/design.md): the sign bit is ignored,
// 0x7F is NaN. PTX describes ue4m3 as 7 bits with the top bit padded with zero.
#pragma once
#include <cstdint>
#if defined(NVFP4_HMMA)
#include "nvfp4_decode.cuh"
#endif

namespace nvfp4 {

#if defined(NVFP4_TWIN) || defined(NVFP4_HMMA)
__device__ __forceinline__ uint32_t lane_id() {
  uint32_t lane;
  asm("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}

#endif

#if defined(NVFP4_HMMA)
// The fp16 model of the instruction (sm90ws, Hopper): both operands decoded exactly to fp16
// (nvfp4_decode.cuh: scale applied, times 2^-14 each) and multiplied by four mma.sync m16n8k16.
// Lane (g, p) holds k [8p, 8p+8) and [8p+32, 8p+40) of rows g, g+8 of A and of column g of B; in
// step j its m16n8k16 k slots {2p, 2p+1} and {2p+8, 2p+9} take elements (j, j+4) of those two words
// (decode_word's order). Both operands see the same permutation of K, so the sum is unchanged and
// no data leaves the lane. The scales do not sit where 4X keeps them (lanes 4g, 4g+1): each lane
// takes the words of its own rows and column (sm120ws_math.cuh's MathSm90Ws loads them so).
// The sums carry 2^-28 (kMmaAccScale below undoes it).
namespace hmma {

// A (16 x 64) -> da[j]: the A fragment of step j; sf_g / sf_g8: the scale words of rows g and g + 8.
// kSignsOnce: decode_word's form (nvfp4_decode.cuh). The 8-token cuts take the 10-instruction one
// (3-7% faster than the 11 there, H200, perf-notes v0.9); the 16-token cuts the 11-instruction
// one, as with the 10 they spill.
template <bool kSignsOnce>
__device__ __forceinline__ void decode_a(const uint32_t (&a)[4], uint32_t sf_g, uint32_t sf_g8, uint32_t (&da)[4][4]) {
  const int p = static_cast<int>(lane_id()) & 3;
  const __half2 lo = lane_scales(sf_g, p), hi = lane_scales(sf_g8, p);  // {block p/2, block 2 + p/2}
  uint32_t r[4][4];
  decode_word<kSignsOnce>(a[0], __low2half2(lo), r[0]);
  decode_word<kSignsOnce>(a[1], __low2half2(hi), r[1]);
  decode_word<kSignsOnce>(a[2], __high2half2(lo), r[2]);
  decode_word<kSignsOnce>(a[3], __high2half2(hi), r[3]);
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int w = 0; w < 4; ++w) da[j][w] = r[w][j];
}

// B (64 x 8) -> db[j]: the B fragment of step j; sf_g: the scale word of column g.
__device__ __forceinline__ void decode_b(const uint32_t (&b)[2], uint32_t sf_g, uint32_t (&db)[4][2]) {
  const __half2 s = lane_scales(sf_g, static_cast<int>(lane_id()) & 3);
  uint32_t r[2][4];
  decode_word(b[0], __low2half2(s), r[0]);
  decode_word(b[1], __high2half2(s), r[1]);
#pragma unroll
  for (int j = 0; j < 4; ++j) db[j][0] = r[0][j], db[j][1] = r[1][j];
}

__device__ __forceinline__ void mma_decoded(float (&d)[4], const uint32_t (&da)[4][4], const uint32_t (&db)[4][2]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(da[j][0]), "r"(da[j][1]), "r"(da[j][2]), "r"(da[j][3]), "r"(db[j][0]), "r"(db[j][1]));
}

}  // namespace hmma
#endif  // NVFP4_HMMA

#if defined(NVFP4_TWIN)
namespace twin {

// Four e2m1 codes (nibbles 0..3 of `codes`) -> four int8 lanes holding 2 * value (e2m1 values are
// multiples of 1/2, so this is exact): magnitudes 0,1,2,3,4,6,8,12 and their negatives. Two byte
// permutes look up both signs, a third picks per byte; no lane carries into its neighbour.
__device__ __forceinline__ uint32_t e2m1x4_to_s8x4(uint32_t codes) {
  const uint32_t index = codes & 0x7777u;
  const uint32_t pos = __byte_perm(0x03020100u, 0x0C080604u, index);  // {0,1,2,3},{4,6,8,12}
  const uint32_t neg = __byte_perm(0xFDFEFF00u, 0xF4F8FAFCu, index);  // the same, negated
  const uint32_t pick = 0x3210u | ((codes >> 1) & 0x4444u);            // sign bit -> byte of neg
  return __byte_perm(pos, neg, pick);
}

// sum_j e2m1(x_j) * e2m1(y_j) over the 8 nibbles of two registers, in units of 1/4, added to acc.
// Each call adds at most 8 * 144 quarters in magnitude: int32 never overflows here.
__device__ __forceinline__ int dot8_e2m1(uint32_t x, uint32_t y, int acc) {
  acc = __dp4a(static_cast<int>(e2m1x4_to_s8x4(x)), static_cast<int>(e2m1x4_to_s8x4(y)), acc);
  return __dp4a(static_cast<int>(e2m1x4_to_s8x4(x >> 16)), static_cast<int>(e2m1x4_to_s8x4(y >> 16)),
                acc);
}

// Scale byte -> float32, exactly: float8_e4m3fn(byte & 0x7F). Built from an integer significand
// and a normal power of two, so no subnormal float ever appears (the result does not depend on
// -ftz or fast-math flags).
__device__ __forceinline__ float ue4m3_to_float(uint32_t byte) {
  const uint32_t bits = byte & 0x7Fu;
  const uint32_t exp_field = bits >> 3;
  const uint32_t significand = exp_field ? (bits & 7u) | 8u : (bits & 7u);  // subnormal: 0.m
  const int exponent = (exp_field ? static_cast<int>(exp_field) : 1) - 10;  // bias 7, 3 bits
  const float value = static_cast<float>(significand) * __int_as_float((exponent + 127) << 23);
  return bits == 0x7Fu ? __int_as_float(0x7FC00000) : value;
}

}  // namespace twin
#endif  // NVFP4_TWIN

// What the accumulators of mma_nvf4_16x8x64 are multiplied by in the epilogue: the HMMA model's
// sums carry its decode's 2^-28; every other build's are the true sums.
#if defined(NVFP4_HMMA)
constexpr float kMmaAccScale = kDecodedAccScale;
#else
constexpr float kMmaAccScale = 1.f;
#endif

// D += (A * SFA) x (B * SFB) for one 16x8x64 tile; fragments as in the table above.
// Convergent: all 32 lanes of the warp must call it together, with the same template arguments.
// kThreadIdA / kThreadIdB: the instruction's thread-id-a (0..1) and thread-id-b (0..3).
template <int kThreadIdA = 0, int kThreadIdB = 0>
__device__ __forceinline__ void mma_nvf4_16x8x64(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2], uint32_t sfa,
                                                 uint32_t sfb) {
  static_assert(kThreadIdA >= 0 && kThreadIdA <= 1, "thread-id-a is 0 or 1 for scale_vec::4X");
  static_assert(kThreadIdB >= 0 && kThreadIdB <= 3, "thread-id-b is 0..3 for scale_vec::4X");
#if defined(NVFP4_TWIN)
  // Every output needs a full row of A (one quad: lanes 4g..4g+3) and a full column of B (the
  // quad of that column), fetched one K-chunk of 8 at a time by shuffles. Within one 16-wide
  // k-block, the sum of e2m1*e2m1 products is an integer number of quarters (|sum| <= 2304) and
  // is formed exactly in int32; times the two scales (significands of <= 4 bits each) it needs at
  // most 12 + 8 significant bits, so each block's scaled sum is exact in float32: what an fp32 sum of
  // the 16 exact products would give in any order. Only the four block sums are rounded, added
  // onto C in k-block order 0..3 (SPEC §2 leaves the float32 summation order free).
  constexpr unsigned kFull = 0xFFFFFFFFu;
  const uint32_t lane = lane_id();
  const uint32_t quad = lane & ~3u;            // 4g: first lane of this row's quad
  const uint32_t col_quad = (lane & 3u) << 3;  // 4 * (2p): first lane of column 2p's quad

  // Scale bytes, read only from the lanes the hardware reads (the others may hold anything).
  const uint32_t sfa_lo = __shfl_sync(kFull, sfa, quad + 2 * kThreadIdA);      // row g
  const uint32_t sfa_hi = __shfl_sync(kFull, sfa, quad + 2 * kThreadIdA + 1);  // row g + 8
  const uint32_t sfb_0 = __shfl_sync(kFull, sfb, col_quad + kThreadIdB);       // column 2p
  const uint32_t sfb_1 = __shfl_sync(kFull, sfb, col_quad + 4 + kThreadIdB);   // column 2p + 1

  // sum[o][kb]: o = the d[] index, kb = k-block; integer quarters.
  int sum[4][4];
#pragma unroll
  for (int o = 0; o < 4; ++o) {
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) sum[o][kb] = 0;
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) {  // lane q of a quad holds K chunk [8q, 8q+8) and [8q+32, 8q+40)
    const uint32_t a_row_lo_k0 = __shfl_sync(kFull, a[0], quad + q);  // A[g    ][8q + j]
    const uint32_t a_row_hi_k0 = __shfl_sync(kFull, a[1], quad + q);  // A[g + 8][8q + j]
    const uint32_t a_row_lo_k1 = __shfl_sync(kFull, a[2], quad + q);  // A[g    ][8q + j + 32]
    const uint32_t a_row_hi_k1 = __shfl_sync(kFull, a[3], quad + q);  // A[g + 8][8q + j + 32]
    const uint32_t b_col0_k0 = __shfl_sync(kFull, b[0], col_quad + q);      // B[8q + j][2p]
    const uint32_t b_col1_k0 = __shfl_sync(kFull, b[0], col_quad + 4 + q);  // B[8q + j][2p+1]
    const uint32_t b_col0_k1 = __shfl_sync(kFull, b[1], col_quad + q);      // ...[+32][2p]
    const uint32_t b_col1_k1 = __shfl_sync(kFull, b[1], col_quad + 4 + q);  // ...[+32][2p+1]
    const int kb0 = q >> 1;  // k-block of [8q, 8q+8)
    const int kb1 = kb0 + 2;  // k-block of [8q+32, 8q+40)
    sum[0][kb0] = twin::dot8_e2m1(a_row_lo_k0, b_col0_k0, sum[0][kb0]);
    sum[1][kb0] = twin::dot8_e2m1(a_row_lo_k0, b_col1_k0, sum[1][kb0]);
    sum[2][kb0] = twin::dot8_e2m1(a_row_hi_k0, b_col0_k0, sum[2][kb0]);
    sum[3][kb0] = twin::dot8_e2m1(a_row_hi_k0, b_col1_k0, sum[3][kb0]);
    sum[0][kb1] = twin::dot8_e2m1(a_row_lo_k1, b_col0_k1, sum[0][kb1]);
    sum[1][kb1] = twin::dot8_e2m1(a_row_lo_k1, b_col1_k1, sum[1][kb1]);
    sum[2][kb1] = twin::dot8_e2m1(a_row_hi_k1, b_col0_k1, sum[2][kb1]);
    sum[3][kb1] = twin::dot8_e2m1(a_row_hi_k1, b_col1_k1, sum[3][kb1]);
  }
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    const float sa_lo = twin::ue4m3_to_float((sfa_lo >> (8 * kb)) & 0xFFu);
    const float sa_hi = twin::ue4m3_to_float((sfa_hi >> (8 * kb)) & 0xFFu);
    const float sb_0 = twin::ue4m3_to_float((sfb_0 >> (8 * kb)) & 0xFFu);
    const float sb_1 = twin::ue4m3_to_float((sfb_1 >> (8 * kb)) & 0xFFu);
    // 0.25f: the sums count quarters. Each product below is exact (see above).
    d[0] = __fadd_rn(d[0], static_cast<float>(sum[0][kb]) * (0.25f * sa_lo * sb_0));
    d[1] = __fadd_rn(d[1], static_cast<float>(sum[1][kb]) * (0.25f * sa_lo * sb_1));
    d[2] = __fadd_rn(d[2], static_cast<float>(sum[2][kb]) * (0.25f * sa_hi * sb_0));
    d[3] = __fadd_rn(d[3], static_cast<float>(sum[3][kb]) * (0.25f * sa_hi * sb_1));
  }
#elif defined(NVFP4_HMMA)
  // Not one instruction's model: sm90ws decodes each fragment once for all its MMAs, with the scale
  // words loaded into the lanes that use them (MathSm90Ws: hmma::decode_a / decode_b / mma_decoded).
  static_assert(kThreadIdA < 0, "NVFP4_HMMA builds compute through MathSm90Ws, not this atom");
#elif defined(NVFP4_STANDIN)
  const uint32_t x = a[0] ^ a[1] ^ a[2] ^ a[3] ^ b[0] ^ b[1] ^ sfa ^ sfb;
  d[0] += __uint_as_float(x & 0x007FFFFFu);  // a subnormal: no NaN, no overflow, full-speed FADD
#else
#if defined(__CUDA_ARCH__) && !(defined(__CUDA_ARCH_FAMILY_SPECIFIC__) && \
                                __CUDA_ARCH_FAMILY_SPECIFIC__ >= 1200 &&  \
                                __CUDA_ARCH_FAMILY_SPECIFIC__ < 1300)
#error "mma_nvf4_16x8x64 needs sm_120a / sm_121a (block-scaled mma.sync); build the H100 twin with -DNVFP4_TWIN"
#endif
  // C and D share registers ("+f"); the selectors are immediates {byte-id, thread-id}.
  asm("mma.sync.aligned.m16n8k64.row.col.kind::mxf4nvf4.block_scale.scale_vec::4X"
      ".f32.e2m1.e2m1.f32.ue4m3 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3}, "
      "%10, {0, %12}, %11, {0, %13};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(sfa), "r"(sfb),
        "n"(kThreadIdA), "n"(kThreadIdB));
#endif
}

}  // namespace nvfp4
