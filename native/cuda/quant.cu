// CUDA kernels of the quantization family. hadamard: one block per row, the row held in shared memory
// in float32, log2(n) butterfly stages separated by barriers.
#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "ssmkit/quant.h"

namespace ssmkit {
namespace {

// Rows up to 32768 floats (128 KiB) fit in one block's shared memory on sm_80 and newer.
constexpr int64_t kMaxSharedRow = 32768;

template <ssmkit_dtype T>
__global__ void hadamard_shared_kernel(const void* __restrict__ x, void* __restrict__ out, int64_t n,
                                       float scale) {
  extern __shared__ float row[];  // (n,)
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = load_f32<T>(x, r * n + i);
  __syncthreads();
  for (int64_t h = 1; h < n; h <<= 1) {
    for (int64_t k = threadIdx.x; k < n / 2; k += blockDim.x) {
      const int64_t j = (k / h) * 2 * h + (k % h);
      const float a = row[j];
      const float b = row[j + h];
      row[j] = a + b;
      row[j + h] = a - b;
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) store_f32<T>(out, r * n + i, row[i] * scale);
}

}  // namespace

status hadamard_cuda(const hadamard_params& p, void* stream) {
  if (p.n <= 0 || (p.n & (p.n - 1)) != 0) {
    return make_status(status_code::value, "hadamard: x: last dimension must be a power of two, got %lld",
                       static_cast<long long>(p.n));
  }
  if (p.n > kMaxSharedRow) {
    return make_status(status_code::unsupported,
                       "hadamard: x: rows longer than %lld are not supported on CUDA",
                       static_cast<long long>(kMaxSharedRow));
  }
  if (p.rows == 0) return ok_status();
  return SSMKIT_FLOAT_SWITCH(p.x.dtype, "hadamard", [&] {
    const size_t smem = static_cast<size_t>(p.n) * sizeof(float);
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(
        hadamard_shared_kernel<kDType>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int threads = p.n >= 2048 ? 1024 : (p.n >= 64 ? static_cast<int>(p.n / 2) : 32);
    hadamard_shared_kernel<kDType>
        <<<static_cast<unsigned>(p.rows), threads, smem, static_cast<cudaStream_t>(stream)>>>(
            p.x.data, p.out.data, p.n, p.scale);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  });
}

}  // namespace ssmkit
