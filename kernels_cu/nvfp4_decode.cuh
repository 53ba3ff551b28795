// Exact decoding of NVFP4 operands to fp16 for tensor cores without an fp4 mode (sm_80..sm_90).
//
// Why fp16 is exact: an e2m1 value has at most 2 significant bits and a ue4m3 scale at most 4,
// so value*scale has at most 6 significant bits, and its magnitude lies in [2^-10, 6*448=2688]:
// inside fp16's normal range with its 11-bit significand. The MMA multiplies two such values
// exactly and accumulates in fp32, which is what SPEC §2 asks for.
#pragma once
#include <cstdint>
#include <cuda_fp16.h>

namespace nvfp4 {

// fp16 high bytes of the e2m1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; every low byte is zero.
constexpr uint32_t kE2m1F16HiLo = 0x3E3C3800u;  // magnitudes 0..3
constexpr uint32_t kE2m1F16HiHi = 0x46444240u;  // magnitudes 4..7

// One packed byte (element 2i in the low nibble) -> fp16x2 {e2m1(lo), e2m1(hi)}.
// A byte permute picks both high bytes at once; selector 0 picks the table's zero byte.
__device__ __forceinline__ uint32_t e2m1x2_to_f16x2(uint32_t byte) {
  const uint32_t sel = ((byte & 0x7u) << 4) | ((byte & 0x70u) << 8);
  const uint32_t mag = __byte_perm(kE2m1F16HiLo, kE2m1F16HiHi, sel);
  return mag | ((byte & 0x8u) << 12) | ((byte & 0x80u) << 24);
}

// A ue4m3 scale byte -> fp16x2 {s, s}. The sign bit is ignored (SPEC: the scale is unsigned);
// 0x7F is NaN as in float8_e4m3fn. Shifting the 7 bits into fp16's exponent/mantissa fields gives
// the value times 2^-8 (fp16's bias is 8 more than e4m3's), subnormals included; the multiply
// by 256 is exact.
__device__ __forceinline__ __half2 ue4m3_to_f16x2(uint32_t byte) {
  const uint32_t bits7 = byte & 0x7Fu;
  const unsigned short raw = static_cast<unsigned short>(bits7 << 7);
  __half h = __hmul(__ushort_as_half(raw), __ushort_as_half(0x5C00));  // 0x5C00 = 256
  if (bits7 == 0x7Fu) h = __ushort_as_half(0x7E00);                    // NaN
  return __half2half2(h);
}

// Four packed bytes (8 elements) times one scale -> four fp16x2 registers, byte j in reg j.
__device__ __forceinline__ void decode_word(uint32_t word, __half2 scale, uint32_t (&regs)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t raw = e2m1x2_to_f16x2((word >> (8 * j)) & 0xFFu);
    const __half2 v = __hmul2(*reinterpret_cast<const __half2*>(&raw), scale);
    regs[j] = *reinterpret_cast<const uint32_t*>(&v);
  }
}

}  // namespace nvfp4
