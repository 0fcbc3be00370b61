// The one checking macro for CUDA runtime calls: a failure returns a status naming the call, the error
// and the file and line; an allocation failure is reported as cuda_oom. A failed call also leaves its
// error in the calling thread's last-error slot, where the next op's launch check (cudaGetLastError())
// would find it and report it as its own: the macro takes it out of the slot. An error that leaves the
// context lost (a kernel fault) cannot be cleared; every later call returns it, and the message says so.
#pragma once
#include <cuda_runtime.h>

#include "ssmkit/status.h"

namespace ssmkit::cuda_detail {

// Errors after which the CUDA context cannot be used again: every later call of the process returns
// them (the driver's documentation: "the process must be terminated and relaunched").
inline bool context_lost(cudaError_t e) {
  switch (e) {
    case cudaErrorECCUncorrectable:
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure: return true;
    default: return false;
  }
}

// The status of a failed call `what` at file:line.
inline status failed(cudaError_t e, const char* what, const char* file, int line) {
  return make_status(e == cudaErrorMemoryAllocation ? status_code::cuda_oom : status_code::cuda,
                     "cuda: %s failed: %s (%s)%s (%s:%d)", what, cudaGetErrorString(e), cudaGetErrorName(e),
                     context_lost(e) ? "; the CUDA context is lost until the process exits (a kernel fault "
                                       "here or in an earlier op; SSMKIT_CUDA_SYNC=1 reports it on its op)"
                                     : "",
                     file, line);
}

}  // namespace ssmkit::cuda_detail

#define SSMKIT_CUDA_CHECK(call)                                                   \
  do {                                                                            \
    const cudaError_t ssmkit_e_ = (call);                                         \
    if (ssmkit_e_ != cudaSuccess) {                                               \
      cudaGetLastError();                                                         \
      return ::ssmkit::cuda_detail::failed(ssmkit_e_, #call, __FILE__, __LINE__); \
    }                                                                             \
  } while (0)
