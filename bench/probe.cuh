// What the standalone CUDA probes under bench/ share: CK (a CUDA call's error printed, main returns 1),
// saddr (a shared-memory address as the 32-bit operand of PTX instructions), the mbarrier and bulk-copy
// steps (sm_90), and check_and_time (a probe kernel's xor check and its back-to-back timing).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#define CK(x)                                                          \
  do {                                                                 \
    cudaError_t e = (x);                                               \
    if (e != cudaSuccess) {                                            \
      printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

__device__ __forceinline__ uint32_t saddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// An mbarrier of `count` arrivals, and the fence that makes initialized barriers visible to the copy engine.
__device__ __forceinline__ void bar_init(uint64_t* bar, int count = 1) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(saddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
// This thread's arrival on bar, which then waits for `bytes` of copies.
__device__ __forceinline__ void bar_expect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(saddr(bar)), "r"(bytes) : "memory");
}
// `bytes` (a multiple of 16) from global src to shared dst by the bulk copy engine, completing on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(saddr(dst)),
      "l"(src), "r"(bytes), "r"(saddr(bar))
      : "memory");
}
// This thread's arrival on bar (no bytes).
__device__ __forceinline__ void bar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(saddr(bar)) : "memory");
}
// Spins until bar's phase of the given parity has completed.
__device__ __forceinline__ void bar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(saddr(bar)), "r"(parity)
        : "memory");
  } while (done == 0);
}

// A probe launch's check and time: launch(r) runs the kernel on copy r % copies of the weights, each block
// xor-ing its bytes into out[block]. Runs launch(0) once into a zeroed out and counts in *bad the blocks
// whose xor is not want's, then times `reps` launches back to back by events: *us a launch. 0, or 1 after
// printing a CUDA error.
template <class Launch>
int check_and_time(Launch launch, uint32_t* out, const std::vector<uint32_t>& want, int reps, float* us, int* bad) {
  const int blocks = static_cast<int>(want.size());
  CK(cudaMemset(out, 0, blocks * sizeof(uint32_t)));
  launch(0);
  CK(cudaGetLastError());
  std::vector<uint32_t> got(blocks);
  CK(cudaMemcpy(got.data(), out, blocks * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  *bad = 0;
  for (int b = 0; b < blocks; ++b) *bad += got[b] != want[b];
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0));
  for (int r = 0; r < reps; ++r) launch(r);
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  *us = 1e3f * ms / reps;
  return 0;
}
