// Programmatic dependent launch (sm_90), shared by the kernels that use it: a kernel launched with the
// programmatic-stream-serialization attribute may start while the kernel before it on the stream still
// runs. pdl_trigger() lets the next kernel be scheduled once every block of this one has called it (or
// exited); pdl_wait() returns once the previous kernel has completed and its writes are visible (at once
// when this kernel was launched without the attribute). Code compiled for older architectures has
// neither instruction: both are no-ops there, and such kernels must be launched without the attribute.
#pragma once

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
}

}  // namespace ssmkit
