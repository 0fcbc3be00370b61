// The one checking macro for CUDA runtime calls: a failure returns a status naming the call, the error
// and the file and line; an allocation failure is reported as cuda_oom.
#pragma once
#include <cuda_runtime.h>

#include "ssmkit/status.h"

#define SSMKIT_CUDA_CHECK(call)                                                                             \
  do {                                                                                                      \
    const cudaError_t ssmkit_e_ = (call);                                                                   \
    if (ssmkit_e_ != cudaSuccess) {                                                                         \
      return ::ssmkit::make_status(ssmkit_e_ == cudaErrorMemoryAllocation ? ::ssmkit::status_code::cuda_oom \
                                                                          : ::ssmkit::status_code::cuda,    \
                                   "cuda: %s failed: %s (%s:%d)", #call, cudaGetErrorString(ssmkit_e_),     \
                                   __FILE__, __LINE__);                                                     \
    }                                                                                                       \
  } while (0)
