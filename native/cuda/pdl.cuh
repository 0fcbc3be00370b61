// Programmatic dependent launch (sm_90), shared by the kernels that use it: a kernel launched with the
// programmatic-stream-serialization attribute may start while the kernel before it on the stream still
// runs. pdl_trigger() lets the next kernel be scheduled once every block of this one has called it (or
// exited); pdl_wait() returns once the previous kernel has completed and its writes are visible (at once
// when this kernel was launched without the attribute). Code compiled for older architectures has
// neither instruction: both are no-ops there, and such kernels must be launched without the attribute.
// On the host: pdl_capable (whether a kernel's code has the wait), launch_pdl (a launch with or
// without the attribute) and launch_after_wait (the attribute where the code has the wait). Also the
// device-side helpers that go with such waits: prefetch_l2 (safe before the wait) and the acq_rel
// counter bump of the last-block-finishes reductions.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <utility>

#include "cuda_check.cuh"
#include "env.cuh"
#include "trace.cuh"

namespace ssmkit {

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#ifdef SSMKIT_TRACE
  trace::waited();
#endif
}

// Whether the decode step's weight-streaming kernels (the float gemv, the W4A16 GEMV and ring GEMM) let
// the kernel after them be scheduled only once their own wait has returned, rather than as they start
// (SSMKIT_CUDA_LATE_TRIGGER=0: as they start; part of the decode step's graph fingerprint). Their first
// weight loads still go out before the wait. Triggered as they start, the next kernel's blocks take SM
// slots and send their own early loads while this one still waits on the kernel ahead, and in a chain of
// such kernels several of them queue at once; the latest trigger placement won 8.5% of the W4A16 step
// and 4.4% of the bfloat16 step (bench/RESULTS.md, thirteenth session).
inline bool pdl_trigger_late() {
  return env_flag("SSMKIT_CUDA_LATE_TRIGGER", true);
}

// A hint that pulls the line at p into L2. It returns nothing to the thread, and L2 is where every SM's
// stores meet, so it may go out before pdl_wait() even for data the kernel ahead still writes: a kernel's
// constant inputs (weights, states of the last token) start on their way from DRAM during its wait.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// A counter bump that publishes this block's earlier stores and acquires the other blocks' (release over
// the block barrier before it: the stores of every thread of the block; acquire: the block barrier after
// it hands the acquired view to every thread): one fence a block instead of one a thread, for the
// last-block-finishes reductions.
__device__ __forceinline__ int atomic_add_acq_rel(int* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// A flag that another block of the running grid publishes: load-acquire and store-release at GPU scope.
// As with atomic_add_acq_rel, a release after a block barrier covers the stores of every thread of the
// block, and a block barrier after an acquire hands its view to every thread.
__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_gpu(int* p, int v) {
  asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// Whether the code of `kernel` that runs on the current device was compiled for sm_90 or later, machine
// code and PTX alike (not the device's architecture: code compiled for an older one has no pdl_wait()
// and must not overlap the kernel before it). A property of the image (every kernel of it has the same
// versions): asked once per device and kernel signature, not per call.
template <class Kernel>
status pdl_capable(Kernel* kernel, bool* out) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> known[kMaxDevices];  // 0 unknown, 1 no, 2 yes
  int dev = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  int state = dev >= 0 && dev < kMaxDevices ? known[dev].load(std::memory_order_acquire) : 0;
  if (state == 0) {
    cudaFuncAttributes fa{};
    SSMKIT_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
    state = fa.binaryVersion >= 90 && fa.ptxVersion >= 90 ? 2 : 1;
    if (dev >= 0 && dev < kMaxDevices) known[dev].store(state, std::memory_order_release);
  }
  *out = state == 2;
  return ok_status();
}

// Launches `kernel` on `stream`, with programmatic dependent launch (it may start while the kernel
// before it runs) when `overlap`, plainly otherwise.
template <typename... KArgs, typename... Args>
status launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                  bool overlap, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = overlap ? 1 : 0;
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

// Launches `kernel`, whose pdl_wait() comes before any global access (L2 prefetches aside), with
// programmatic dependent launch where its code has that wait (pdl_capable), plainly otherwise: its
// launch and its blocks' start then overlap the tail of the kernel ahead.
template <typename... KArgs, typename... Args>
status launch_after_wait(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         Args&&... args) {
  bool pdl = false;
  SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &pdl));
  return launch_pdl(kernel, grid, block, smem, stream, pdl, std::forward<Args>(args)...);
}

}  // namespace ssmkit
