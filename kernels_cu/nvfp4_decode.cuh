// Exact decoding of NVFP4 operands to fp16 for tensor cores without an fp4 mode (sm_80..sm_90).
//
// The trick: an e2m1 code's three magnitude bits (2 exponent, 1 mantissa) placed at fp16 bits
// 9..11 (the two low exponent bits and the top mantissa bit), with the sign at bit 15, read as an
// fp16 equal to the e2m1 value times 2^-14, subnormals included: fp16's exponent bias (15) is 14
// more than e2m1's (1), and both formats' subnormals continue their normals the same way. So a
// packed word of 8 codes becomes 4 fp16x2 registers with shifts, masks and byte permutes (10
// integer instructions), and one HMUL2 per register applies the block scale.
//
// Why this stays exact: the decoded value v * 2^-14 times a ue4m3 scale s is k * 2^-24 for an
// integer k (v is a multiple of 1/2, s of 2^-9), with at most 6 significant bits, and at most
// 6 * 448 * 2^-14 in magnitude: every such number is an fp16 (2^-24 is fp16's smallest subnormal).
// The MMA multiplies two of them exactly into fp32 and accumulates in fp32, so the sum is the
// SPEC §2 sum times 2^-28; the epilogue multiplies by kDecodedAccScale = 2^28 (exact).
#pragma once
#include <cstdint>
#include <cuda_fp16.h>

namespace nvfp4 {

constexpr float kDecodedAccScale = 0x1p28f;  // undoes both operands' 2^-14

// Scale bytes -> fp16. The sign bit is ignored (SPEC: the scale is unsigned); 0x7F is NaN as in
// float8_e4m3fn.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 890
// Before sm_89 (no e4m3 conversion): the 7 bits shifted into fp16's exponent/mantissa fields give
// the value times 2^-8 (fp16's bias is 8 more than e4m3's), subnormals included; times 256 is exact.
__device__ __forceinline__ __half ue4m3_to_f16_soft(uint32_t byte) {
  const uint32_t bits7 = byte & 0x7Fu;
  const __half h = __hmul(__ushort_as_half(static_cast<unsigned short>(bits7 << 7)), __ushort_as_half(0x5C00));
  return bits7 == 0x7Fu ? __ushort_as_half(0x7E00) : h;  // 0x5C00 = 256; 0x7E00 = NaN
}
#endif

// Two scale bytes, in bits 0..7 and 8..15 of `pair` -> fp16x2 {s0, s1}: one conversion serves
// two data words whose blocks share a scale word (MathSm80 takes them with .H0_H0 / .H1_H1).
// FOLD_ABS drops the sign bit after the conversion (|x| is exact, and NaN stays NaN): ptxas folds
// the absolute value into the HMUL2 that applies the scale, where masking the bytes first costs a
// LOP3. The wgmma kernel keeps the mask (with the fold it ran 2% slower: docs/perf-notes.md, v0.5).
template <bool FOLD_ABS = true>
__device__ __forceinline__ __half2 ue4m3x2_to_f16x2(uint32_t pair) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint32_t h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(static_cast<unsigned short>(FOLD_ABS ? pair : pair & 0x7F7Fu)));
  const __half2 v = *reinterpret_cast<const __half2*>(&h2);
  return FOLD_ABS ? __habs2(v) : v;
#else
  return __halves2half2(ue4m3_to_f16_soft(pair), ue4m3_to_f16_soft(pair >> 8));
#endif
}

// The scales of lane quad q's words in a row's scale word (four 16-element blocks, 64 k): word q
// (elements 8q..8q+7) of 32-element half h lies in block 2h + q/2, so -> {s(q/2), s(2 + q/2)};
// the caller takes half h's with __low2half2 / __high2half2.
template <bool FOLD_ABS = true>
__device__ __forceinline__ __half2 lane_scales(uint32_t sf_word, int q) {
  return ue4m3x2_to_f16x2<FOLD_ABS>(__byte_perm(sf_word, 0u, (q >> 1) | ((2 + (q >> 1)) << 4)));
}

// Four packed bytes (elements e0..e7, e_i in nibble i) times one scale, times 2^-14 ->
// reg j = fp16x2 {e_j, e_(j+4)}. (Any fixed order works as long as both MMA operands use the
// same one: the K sum does not see a permutation within the word.)
//
// A code's sign and magnitude need different shifts, so each byte lane is spread once for all
// four bytes -- the even and the odd codes of every byte into a byte `s000mmm0`, the high byte of
// the fp16 above -- and byte permutes place two such bytes into an fp16x2 with zero low bytes.
// The sign bits are masked once (`signs`, bits 3 and 7 of every byte); one LOP3 then takes a
// byte's magnitude bits (kMag) from one shifted word and every other bit from the (shifted) signs,
// whose only bit outside kMag is the wanted sign (the other lands on bit 3, inside kMag):
// 10 integer instructions per word (3 LOP3, 3 shifts, 4 PRMT). Both steps are written in PTX
// because NVVM turns `signs << 4` back into a second mask of `w << 4` (11 instructions).
// kSignsOnce = false keeps that 11-instruction form (the sign bits masked per shift): the weight
// fragments of sm90ws's 16-token cuts take it, because with the 10-instruction form there ptxas
// needs more than the 168 registers of four blocks an SM and spills (perf-notes, v0.8); its
// 8-token cuts have the registers for the 10-instruction form.
__device__ __forceinline__ uint32_t bits_select(uint32_t where_set, uint32_t where_clear, uint32_t mask) {
  uint32_t d;  // (where_set & mask) | (where_clear & ~mask)
  asm("lop3.b32 %0, %1, %2, %3, 0xE4;" : "=r"(d) : "r"(where_set), "r"(where_clear), "r"(mask));
  return d;
}

template <bool kSignsOnce = true>
__device__ __forceinline__ void decode_word(uint32_t w, __half2 scale, uint32_t (&regs)[4]) {
  constexpr uint32_t kMag = 0x0E0E0E0Eu, kSign = 0x80808080u;
  uint32_t even, odd;  // byte b: code 2b (bits 0..3), code 2b + 1 (bits 4..7) as s000mmm0
  if (kSignsOnce) {
    const uint32_t signs = w & 0x88888888u;
    uint32_t signs_up;  // signs << 4: the even codes' signs on bit 7 of their bytes
    asm("shl.b32 %0, %1, 4;" : "=r"(signs_up) : "r"(signs));
    even = bits_select(w << 1, signs_up, kMag);
    odd = bits_select(w >> 3, signs, kMag);
  } else {
    even = ((w << 1) & kMag) | ((w << 4) & kSign);
    odd = ((w >> 3) & kMag) | (w & kSign);
  }
  uint32_t raw[4];
  raw[0] = __byte_perm(even, 0u, 0x2404);  // {byte 0, byte 2} of `even` -> high bytes: {e0, e4}
  raw[1] = __byte_perm(odd, 0u, 0x2404);   // {e1, e5}
  raw[2] = __byte_perm(even, 0u, 0x3414);  // {byte 1, byte 3}: {e2, e6}
  raw[3] = __byte_perm(odd, 0u, 0x3414);   // {e3, e7}
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const __half2 v = __hmul2(*reinterpret_cast<const __half2*>(&raw[j]), scale);
    regs[j] = *reinterpret_cast<const uint32_t*>(&v);
  }
}

}  // namespace nvfp4
