// The asynchronous pieces of a warp-specialized pipeline (sm_90 and newer, sm_120a/sm_121a
// included): mbarriers that count both thread arrivals and the bytes a bulk-tensor copy (TMA)
// delivers, and the copies themselves. PTX ISA: "mbarrier" (the phase and its parity, expect-tx)
// and "cp.async.bulk.tensor" (a box of a tensor map into shared memory, out-of-bounds elements
// written as zeros and counted as delivered bytes all the same).
#pragma once
#include <cstdint>
#include <cuda.h>  // CUtensorMap: 128 bytes, 64-byte aligned; the host encodes it

namespace nvfp4 {

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(arrivals));
}

// The initialised barriers must be visible to the TMA unit (the async proxy) before a copy
// signals them; the block-wide barrier that follows makes them visible to the other warps.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival that also announces `bytes` still to come from bulk copies in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
}

// Wait until the phase of parity `parity` has completed. A fresh barrier is in phase 0, and the
// phase "before" it counts as completed with parity 1: a producer waiting on parity 1 of an empty
// slot passes at once, so the first round needs no special case.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_address(bar);
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// One box of `map` at element coordinates c0 (innermost) .. into shared memory at `dst`; the
// bytes are counted on `bar`. `dst` must be aligned as the map's swizzle requires (1024 B).
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n"
      ::"r"(smem_address(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1,
                                            int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cta.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], "
      "[%2];\n" ::"r"(smem_address(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0),
      "r"(c1), "r"(c2)
      : "memory");
}

}  // namespace nvfp4
