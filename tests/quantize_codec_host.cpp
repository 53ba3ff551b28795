// Host build of kernels_cu/nvfp4_quantize.cuh, loaded by tests/test_quantize_codec.py with ctypes:
// the exact codec and block-scale code the quantizer kernels run, checked on the CPU against
// nvfp4_driver.reference. The block loop mirrors encode_step in nvfp4_quantize.cu.
#include <cstdint>

#include "../kernels_cu/nvfp4_quantize.cuh"

using namespace nvfp4;

extern "C" {

void encode_e2m1_n(const float* x, uint8_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(encode_e2m1(x[i]));
}

void encode_ue4m3_n(const float* x, uint8_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(encode_ue4m3(x[i]));
}

void decode_n(const uint8_t* codes, const uint8_t* scales, float* e2m1_out, float* ue4m3_out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    e2m1_out[i] = decode_e2m1(codes[i]);
    ue4m3_out[i] = decode_ue4m3(scales[i]);
  }
}

// One block of float32 as the kernels' chunks present it to encode_block.
struct HostBlock {
  const float* v;
  float at(int i) const { return v[i]; }
  float magnitude(int i) const { return fabsf(v[i]); }
  uint32_t signs(int p) const { return ((f2u(v[2 * p]) >> 16) & 0x8000u) | (f2u(v[2 * p + 1]) & 0x80000000u); }
};

// x (rows, k) float32 -> codes (rows, k) and sf (rows, k/16), one global scale for all rows, through
// the kernels' encode_block (plain blocks by their fast path, the rest by encode_e2m1). Returns how
// many blocks were plain, so the tests can see both paths ran.
int64_t quantize_blocks(const float* x, int64_t rows, int64_t k, float global_scale, uint8_t* codes, uint8_t* sf) {
  const float gsf = checked_global_scale(global_scale);
  const float inv_gsf = rcp_rn(gsf);
  int64_t plain = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < k / 16; ++b) {
      const float* v = x + r * k + b * 16;
      float amax = fabsf(v[0]);
      for (int i = 1; i < 16; ++i) amax = max_nan(amax, fabsf(v[i]));
      const BlockScale bs = block_scale(amax, gsf, inv_gsf);
      sf[r * (k / 16) + b] = static_cast<uint8_t>(bs.byte);
      uint32_t lo, hi;
      encode_block(HostBlock{v}, amax, bs.scale, lo, hi);
      plain += block_is_plain(amax, bs.scale);
      for (int i = 0; i < 8; ++i) {
        codes[r * k + b * 16 + i] = static_cast<uint8_t>((lo >> (4 * i)) & 0xFu);
        codes[r * k + b * 16 + 8 + i] = static_cast<uint8_t>((hi >> (4 * i)) & 0xFu);
      }
    }
  }
  return plain;
}

}  // extern "C"
