// Hopper's warpgroup MMA (wgmma, sm_90a) as the sm90a grouped GEMM uses it: fp16 A from
// registers, fp16 B from shared memory in the 128-byte-swizzled K-major layout, fp32 accumulators.
//
// A (per warp of the warpgroup, rows 16w..16w+15) has the mma.sync m16n8k16 A fragment layout:
// a0 = (row g, k 2p..2p+1), a1 = (row g+8, same k), a2 = (row g, k 8+2p..), a3 = (row g+8, k 8+2p..)
// for lane 4g+p. The accumulators of m64nNk16 are N/8 m16n8 C fragments side by side:
// d[4j+v] = row 16w + g (+8 for v >= 2), column 8j + 2p + (v & 1).
//
// Inline asm has no loops, so the operand lists are spelled out once below (macros) and shared.
#pragma once
#include <cstdint>

namespace nvfp4 {

// Shared-memory matrix descriptor for a K-major tile of 128-byte rows (64 fp16) in the 128-byte
// swizzle: 8-row atoms of 1024 bytes, one after another (stride byte offset 1024; the leading
// byte offset is unused in this mode). The tile must start 1024-byte aligned; the next 16 k of
// the same rows start 32 bytes later, i.e. desc + 2.
__device__ __forceinline__ uint64_t wgmma_desc_k128b(const void* smem) {
  const uint64_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return ((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy writes to shared memory (the decoded tile) made visible to wgmma's async proxy.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving accumulator registers while a wgmma may still write them.
template <int R>
__device__ __forceinline__ void pin_registers(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The accumulator operand lists of the shapes: %0..%15, %0..%31, %0..%63 and %64..%127.
#define NVFP4_ACC_REGS_0_15 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define NVFP4_ACC_REGS_0_31 NVFP4_ACC_REGS_0_15 ", " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define NVFP4_ACC_REGS_0_63 NVFP4_ACC_REGS_0_31 ", " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define NVFP4_ACC_REGS_64_127 \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

// Eight accumulator operands of an asm statement, d[i] .. d[i+7], read and written.
#define NVFP4_ACC8(i)                                                                                  \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])

// d += A(64 x 16, registers) * B(16 x N, shared memory via b_desc)
template <int N>
struct Wgmma;

template <>
struct Wgmma<32> {
  static __device__ __forceinline__ void mma(float (&d)[16], const uint32_t (&a)[4], uint64_t b_desc) {
    asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {" NVFP4_ACC_REGS_0_15 "}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
        : NVFP4_ACC8(0), NVFP4_ACC8(8)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));  // scale-d = 1: d += A*B
  }
};

template <>
struct Wgmma<64> {
  static __device__ __forceinline__ void mma(float (&d)[32], const uint32_t (&a)[4], uint64_t b_desc) {
    asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {" NVFP4_ACC_REGS_0_31 "}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : NVFP4_ACC8(0), NVFP4_ACC8(8), NVFP4_ACC8(16), NVFP4_ACC8(24)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));  // scale-d = 1: d += A*B
  }
};

template <>
struct Wgmma<128> {
  static __device__ __forceinline__ void mma(float (&d)[64], const uint32_t (&a)[4], uint64_t b_desc) {
    asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {" NVFP4_ACC_REGS_0_63 "}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : NVFP4_ACC8(0), NVFP4_ACC8(8), NVFP4_ACC8(16), NVFP4_ACC8(24), NVFP4_ACC8(32), NVFP4_ACC8(40),
          NVFP4_ACC8(48), NVFP4_ACC8(56)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));  // scale-d = 1: d += A*B
  }
};

template <>
struct Wgmma<256> {
  static __device__ __forceinline__ void mma(float (&d)[128], const uint32_t (&a)[4], uint64_t b_desc) {
    asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {" NVFP4_ACC_REGS_0_63 ", " NVFP4_ACC_REGS_64_127 "}, "
      "{%128, %129, %130, %131}, %132, p, 1, 1, 0;\n}\n"
        : NVFP4_ACC8(0), NVFP4_ACC8(8), NVFP4_ACC8(16), NVFP4_ACC8(24), NVFP4_ACC8(32), NVFP4_ACC8(40),
          NVFP4_ACC8(48), NVFP4_ACC8(56), NVFP4_ACC8(64), NVFP4_ACC8(72), NVFP4_ACC8(80), NVFP4_ACC8(88),
          NVFP4_ACC8(96), NVFP4_ACC8(104), NVFP4_ACC8(112), NVFP4_ACC8(120)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));  // scale-d = 1: d += A*B
  }
};

}  // namespace nvfp4
