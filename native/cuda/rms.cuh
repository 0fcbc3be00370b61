// The rms_norm scale shared by every CUDA path that normalizes a row (the norm kernels, the gemv's norm
// prologue and tail in nn.cu, the ring GEMM's folded norm in gemm.cu), so that they agree bit for bit.
#pragma once

#include <cstdint>

namespace ssmkit {

// 1 / sqrt(mean of squares + eps) from a row's float64 sum of squares, as the CPU rounds it.
__device__ __forceinline__ float rms_rstd(double ss, int64_t d, float eps) {
  return 1.0f / sqrtf(static_cast<float>(ss / static_cast<double>(d)) + eps);
}

}  // namespace ssmkit
