// The smallest kernel the package ships: it writes its own arguments back, one of each ABI type
// the GEMMs use. Tests load it before any GEMM (does loading and launching work at all, and do
// int64/int32/float arguments arrive intact?), and the overhead benchmark launches it as the
// empty-kernel baseline.
#include <cstdint>

extern "C" __global__ void nvfp4_probe(int64_t* __restrict__ out,  // 4 int64 slots, written by thread 0
                                       int64_t i64, int32_t i32, float f32) {
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    out[0] = i64;
    out[1] = i32;
    out[2] = static_cast<int64_t>(__float_as_uint(f32));
    out[3] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(out));
  }
}
