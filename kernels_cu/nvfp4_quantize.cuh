// The SPEC §4 quantizer's scalar pieces: the e2m1 and ue4m3 codecs and the per-block scale, in
// software so that every target (sm_80 ... sm_121a, and the host) writes the same bytes. One
// exception: sm_89+ builds round the ue4m3 scale with the hardware conversion, whose documented
// rounding (nearest even, .satfinite) gives the software path's bytes; the GPU tests check it at
// every ue4m3 midpoint (test_e4m3_ties), the host test checks the software path.
//
// Every function is __host__ __device__: the kernels in nvfp4_quantize.cu use them on the GPU, and
// a host build of this header is checked against nvfp4_driver.reference over every float32 input
// (tests/test_quantize_codec.py). Float arithmetic goes through mul_rn / add_rn / fma_rn / rcp_rn,
// which are the correctly rounded intrinsics on the device, so no FMA contraction and no approximate
// reciprocal can creep in (nvfp4_quantize.cu is also built with -fmad=false); fma_rn is only used
// where the product is exact (times 2 or 1/2), so it is one correctly rounded add.
//
// The encoders are branch-free and lean on the FMA pipe: the quantizer is memory-bound only if its
// ~16 instructions per element issue faster than HBM delivers 2.56 bytes, and on an H100 the
// integer/compare pipe (half the FMA pipe's width) is the one that fills first. v0.1's encoders
// cost ~26 instructions per element (branches in the scale, 10 compare/logic ops per code).
//
// Non-finite values, as in reference.py:
//   encode_e2m1:  NaN of either sign -> 7 (+6); +-inf -> 7 / 15; a negative value that rounds to 0 -> 8 (-0).
//   encode_ue4m3: NaN -> 0x7F; +inf and everything that rounds above 448 -> 0x7E (satfinite).
#pragma once
#include <cstdint>
#include <cmath>
#ifndef __CUDACC__
#include <cstring>
#endif

#ifdef __CUDACC__
#define NVFP4_HD __host__ __device__ __forceinline__
#else
#define NVFP4_HD inline
#endif

namespace nvfp4 {

constexpr float kOneSixth = 0x1.555556p-3f;  // float32(1) / float32(6), correctly rounded (SPEC §4)
constexpr float kE2m1Max = 6.0f;
constexpr float kUe4m3Max = 448.0f;
constexpr uint32_t kUe4m3NanByte = 0x7Fu;

NVFP4_HD uint32_t f2u(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

NVFP4_HD float u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Correctly rounded float32 operations (round to nearest even), never contracted into an FMA.
NVFP4_HD float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NVFP4_HD float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
// a * b + c with one rounding. Only called with b = 2 or 1/2, where a * b is exact, so it equals
// add_rn(mul_rn(a, b), c) (also for subnormal a: the fused product is not rounded).
NVFP4_HD float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
// IEEE reciprocal (1/0 = inf, 1/inf = 0, subnormal results kept): what numpy's 1 / v gives.
NVFP4_HD float rcp_rn(float a) {
#ifdef __CUDA_ARCH__
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}

// IEEE minNum / maxNum as the GPU does them: a NaN operand (quiet or signaling) yields the other
// operand. (Host libm returns NaN for a signaling NaN; the kernels never see one, since every value
// they encode comes out of a multiply, but the host build must model the device for every input.)
NVFP4_HD float min_num(float a, float b) {
#ifdef __CUDA_ARCH__
  return fminf(a, b);
#else
  return a != a ? b : (b != b ? a : (b < a ? b : a));
#endif
}
NVFP4_HD float max_num(float a, float b) {
#ifdef __CUDA_ARCH__
  return fmaxf(a, b);
#else
  return a != a ? b : (b != b ? a : (b > a ? b : a));
#endif
}

// max(a, b) that returns NaN when either is NaN (fmaxf would drop it): a block holding a NaN must
// get a NaN amax, as numpy's max does.
NVFP4_HD float max_nan(float a, float b) {
#ifdef __CUDA_ARCH__
  float d;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
  return d;
#else
  return (a != a || b != b) ? u2f(0x7FFFFFFFu) : (a > b ? a : b);
#endif
}

// ue4m3 round to nearest even, saturating at 448, for y >= 0 or NaN (a block's scaled amax).
NVFP4_HD uint32_t encode_ue4m3(float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // sm_89+: the hardware conversion rounds to nearest even, and .satfinite sends +inf and everything
  // above 448 to 448 (0x7E) and NaN to NaN (0x7F once the sign bit, set only by a negative NaN, is
  // dropped): the bytes of the software path below, in two instructions instead of ten.
  unsigned short pair;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(y));
  return pair & 0x7Fu;
#else
  const float m = min_num(y, kUe4m3Max);  // +inf and values that would round above 448 saturate; NaN -> 448
  // One magic add for every binade: e4m3 keeps 3 mantissa bits, so binade e >= -6 has steps of
  // 2^(e-3), the float32 ulp at 2^(e+20); below 2^-6 (subnormal) the step stays 2^-9, the ulp at
  // 2^14, which max(m, 2^-6) gives. The add rounds m to the step (ties to even), the bit
  // difference counts the steps (8 .. 16 in a normal binade, 0 .. 8 below), and a carry to 16
  // walks into the next binade by itself. code = steps + 8 (e + 6), and 8 (e + 6) =
  // ((127 + e) << 3) - 968.
  const uint32_t exp_bits = f2u(max_num(m, 0x1p-6f)) & 0x7F800000u;  // (127 + e) << 23
  const float magic = u2f(exp_bits + (20u << 23));
  const uint32_t steps = f2u(add_rn(m, magic)) - f2u(magic);
  const uint32_t code = steps + (exp_bits >> 20) - 968u;
  return y != y ? kUe4m3NanByte : code;
#endif
}

// ue4m3 byte -> float32, exact; the sign bit is ignored and 0x7F is NaN (design.md).
NVFP4_HD float decode_ue4m3(uint32_t byte) {
  const uint32_t b = byte & 0x7Fu;
  // The byte's exponent and mantissa fields moved into float32's are the value times 2^-120 (rebias
  // 7 -> 127), also for exponent field 0: man << 20 read as a float32 subnormal is man * 2^-129.
  // The multiply by 2^120 is exact (no FTZ: -ftz is off on the device, and the host keeps subnormals).
  const float v = mul_rn(u2f(b << 20), 0x1p120f);
  return b == kUe4m3NanByte ? u2f(0x7FFFFFFFu) : v;
}

// e2m1 round to nearest even, saturating at 6, sign kept; NaN -> 7 (SPEC §4, reference.py).
NVFP4_HD uint32_t encode_e2m1(float y) {
  // t keeps y's sign (min_num turns NaN into +6, whatever its sign); m = |y| clamped to 6.
  const float t = min_num(y, kE2m1Max);
  const float m = min_num(fabsf(t), kE2m1Max);
  // e2m1 steps are 0.5 below 2, 1 in [2, 4), 2 in [4, 6]. With r(v) = v rounded to an integer
  // (ties to even), the code of m is min(r(2m), r(m) + 2, r(m/2) + 4): each term is the code on
  // its own range and over-counts elsewhere (2m >= m + 2 for m >= 2, m + 2 >= m/2 + 4 for m >= 4,
  // and the reverse below; rounding is monotone). Adding 2^23 (ulp 1) rounds to an integer, so
  // each term is one FMA-pipe op; 2^23 + 2 and 2^23 + 4 carry the offsets. An even code is an even
  // integer in every range, so ties to even agree. Two compares replace v0.1's exponent
  // extraction (fewer ops on the integer pipe, which limits the kernel).
  constexpr float kRound = 0x1p23f;
  const uint32_t r0 = f2u(fma_rn(m, 2.0f, kRound));
  const uint32_t r1 = f2u(add_rn(m, kRound + 2.0f));
  const uint32_t r2 = f2u(fma_rn(m, 0.5f, kRound + 4.0f));
  const uint32_t code = (r0 < r1 ? r0 : r1) < r2 ? (r0 < r1 ? r0 : r1) : r2;
  return (code - f2u(kRound)) | ((f2u(t) >> 28) & 8u);
}

// The quantizer's hot path. encode_e2m1 spends ~8 of its ~13 instructions per element on what most
// blocks do not need: two NaN-proof clamps of the signed value, and moving the sign and the code into
// their nibble one element at a time. A block is *plain* when amax * scale < 7 (float32, as computed):
// then every product |x| * scale is finite, below 7 and not NaN (rounding is monotone; a NaN or an
// infinity makes the test false, and so does a scale that is NaN or infinite, or 0 against an
// infinity, where inf * 0 is NaN), its sign is x's (scale >= +0), and no clamp is needed: below 7,
// min(r(2m), r(m) + 2, r(m/2) + 4) is already at most 7 (7 itself would round m/2 = 3.5 to 4). Blocks
// of ordinary data are plain; saturated blocks (448 too small a scale) and some with subnormal ue4m3
// scales (relative rounding up to 1/2) are not, and take encode_e2m1 per element: the same bytes.
NVFP4_HD bool block_is_plain(float amax, float scale) { return mul_rn(amax, scale) < 7.0f; }

// 2^23 + the e2m1 code of m (0 <= m < 7, code <= 7) as float32 bits: encode_e2m1's three roundings.
NVFP4_HD uint32_t e2m1_magnitude_bits(float m) {
  constexpr float kRound = 0x1p23f;
  const uint32_t r0 = f2u(fma_rn(m, 2.0f, kRound));
  const uint32_t r1 = f2u(add_rn(m, kRound + 2.0f));
  const uint32_t r2 = f2u(fma_rn(m, 0.5f, kRound + 4.0f));
  return (r0 < r1 ? r0 : r1) < r2 ? (r0 < r1 ? r0 : r1) : r2;
}

NVFP4_HD uint32_t umulhi(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Byte 0 of a, b, c, d as one word (a in the low byte).
NVFP4_HD uint32_t low_bytes(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
#ifdef __CUDA_ARCH__
  return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);
#else
  return (a & 0xFFu) | (b & 0xFFu) << 8 | (c & 0xFFu) << 16 | (d & 0xFFu) << 24;
#endif
}

// One SPEC §4 block's e2m1 codes: element i in bits 4i .. 4i+3 of lo (i < 8) or of hi (i - 8).
// Block gives element i as at(i) (signed) and magnitude(i) (|x|, both exact float32), and signs(p):
// bit 15 the sign of element 2p, bit 31 that of 2p + 1, every other bit 0.
//
// A plain block makes each byte (two elements) in three integer instructions: the magnitude bits
// a + 16 b put code(a) + 16 code(b) in the low byte (2^23's bits times 17 are 0 there), and
// umulhi(signs, 2^20 + 2^8) + that moves sign(a) from bit 15 to bit 3 and sign(b) from bit 31 to 7
// (and to bit 19, which low_bytes drops).
template <class Block>
NVFP4_HD void encode_block(const Block& blk, float amax, float scale, uint32_t& lo, uint32_t& hi) {
  if (block_is_plain(amax, scale)) {
    uint32_t pairs[8];
#pragma unroll
    for (int p = 0; p < 8; ++p) {
      const uint32_t codes = e2m1_magnitude_bits(mul_rn(blk.magnitude(2 * p), scale)) +
                             16u * e2m1_magnitude_bits(mul_rn(blk.magnitude(2 * p + 1), scale));
      pairs[p] = umulhi(blk.signs(p), 0x00100100u) + codes;
    }
    lo = low_bytes(pairs[0], pairs[1], pairs[2], pairs[3]);
    hi = low_bytes(pairs[4], pairs[5], pairs[6], pairs[7]);
    return;
  }
  lo = hi = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    lo |= encode_e2m1(mul_rn(blk.at(i), scale)) << (4 * i);
    hi |= encode_e2m1(mul_rn(blk.at(8 + i), scale)) << (4 * i);
  }
}

// e2m1 code (bits 0..3) -> float32, exact; code 8 is -0.
NVFP4_HD float decode_e2m1(uint32_t code) {
  const uint32_t m = code & 7u;
  const float mag = m < 2 ? mul_rn(static_cast<float>(m), 0.5f) : u2f((((m >> 1) + 126u) << 23) | ((m & 1u) << 22));
  return u2f(f2u(mag) | ((code & 8u) << 28));
}

// One block's scale (SPEC §4): the stored byte and the multiplier its elements are quantized with.
struct BlockScale {
  uint32_t byte;  // ue4m3, 0x00 .. 0x7F
  float scale;    // 1 / (float(byte) * (1 / gsf)); 0 where byte is 0
};

// amax = max|x| over the block (NaN if the block holds one); inv_gsf = rcp_rn(gsf).
NVFP4_HD BlockScale block_scale(float amax, float gsf, float inv_gsf) {
  const uint32_t byte = encode_ue4m3(mul_rn(gsf, mul_rn(amax, kOneSixth)));
  const float scale = byte == 0 ? 0.0f : rcp_rn(mul_rn(decode_ue4m3(byte), inv_gsf));
  return BlockScale{byte, scale};
}

// A global scale the reference refuses (not finite, or <= 0) cannot be refused on the device
// without a host sync. The kernels turn it into NaN instead: every scale byte of its group becomes
// 0x7F and every code 7, so the GEMM's result for those rows is NaN, not silently wrong.
NVFP4_HD float checked_global_scale(float gsf) {
  return (gsf > 0.0f && gsf <= 3.4028234663852886e38f) ? gsf : u2f(0x7FFFFFFFu);
}

}  // namespace nvfp4
