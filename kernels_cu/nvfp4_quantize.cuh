// The SPEC §4 quantizer's scalar pieces: the e2m1 and ue4m3 codecs and the per-block scale, in
// software so that every target (sm_80 ... sm_121a, and the host) writes the same bytes.
//
// Every function is __host__ __device__: the kernels in nvfp4_quantize.cu use them on the GPU, and
// a host build of this header is checked against nvfp4_driver.reference over every float32 input
// (tests/test_quantize_codec.py). Float arithmetic goes through mul_rn / add_rn / rcp_rn, which
// are the correctly rounded intrinsics on the device, so no FMA contraction and no approximate
// reciprocal can creep in (nvfp4_quantize.cu is also built with -fmad=false).
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
  if (y != y) return kUe4m3NanByte;
  const float m = min_num(y, kUe4m3Max);  // +inf and values that would round above 448 saturate
  if (m < 0x1p-6f) {
    // Subnormal: steps of 2^-9, which is the float32 ulp at 2^14, so the add rounds to the step
    // (ties to even) and the bit difference counts the steps: 0 .. 8 (8 is the first normal).
    return f2u(add_rn(m, 0x1p14f)) - f2u(0x1p14f);
  }
  // Normal: keep 3 of float32's 23 mantissa bits, rounding to nearest even on the integer bits;
  // a carry walks into the exponent by itself. Rebias from 127 to 7: (127 - 7) << 3 = 960.
  const uint32_t u = f2u(m);
  return ((u + 0x7FFFFu + ((u >> 20) & 1u)) >> 20) - 960u;
}

// ue4m3 byte -> float32, exact; the sign bit is ignored and 0x7F is NaN (design.md).
NVFP4_HD float decode_ue4m3(uint32_t byte) {
  const uint32_t b = byte & 0x7Fu;
  if (b == kUe4m3NanByte) return u2f(0x7FFFFFFFu);
  const uint32_t exp_field = b >> 3, man = b & 7u;
  if (exp_field == 0) return mul_rn(static_cast<float>(man), 0x1p-9f);  // subnormal, exact
  return u2f(((exp_field + 120u) << 23) | (man << 20));
}

// e2m1 round to nearest even, saturating at 6, sign kept; NaN -> 7 (SPEC §4, reference.py).
NVFP4_HD uint32_t encode_e2m1(float y) {
  // Clamp first (rounding is monotone, so clamping to 6 then rounding is rounding then
  // saturating). min_num returns the number when y is NaN, so NaN becomes +6 whatever its sign.
  const float c = max_num(min_num(y, kE2m1Max), -kE2m1Max);
  const float m = fabsf(c);
  // e2m1 steps are 0.5 below 2, 1 in [2, 4), 2 in [4, 8): 2^(e-1) for e = max(exponent of m, 0).
  // 2^(22+e) has exactly that float32 ulp, so adding it rounds m to the step, ties to even, and
  // the bit difference counts the steps; the code is steps + 2e.
  const uint32_t exp_bits = f2u(max_num(m, 1.0f)) & 0x7F800000u;  // (127 + e) << 23
  const float magic = u2f(exp_bits + (22u << 23));
  const uint32_t steps = f2u(add_rn(m, magic)) - f2u(magic);
  const uint32_t code = steps + ((exp_bits >> 22) - 254u);
  return code | ((f2u(c) >> 28) & 8u);
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
