// CUDA kernels of the quantization family. hadamard: one block per row, the row held in shared memory
// in float32; log2(2^k) butterfly stages separated by barriers run inside each of the m chunks of 2^k
// values, then (for n = m * 2^k, m in {12, 20, 28, 40}) each thread mixes one position p across the m
// chunks with H_m, in the order native/cpu/quant.cc uses. The other ops of the family have no CUDA
// kernels yet; their entry points are declared in ssmkit/quant.h and not called.
#include <cuda_runtime.h>

#include "cuda_check.cuh"
#include "ssmkit/quant.h"

namespace ssmkit {
namespace {

// Rows up to 32768 floats (128 KiB) fit in one block's shared memory on sm_80 and newer.
constexpr int64_t kMaxSharedRow = 32768;
constexpr int kMaxOrder = 40;

// H_m by value (a kernel argument): bit j of row i set means -1.
struct hadamard_signs_arg {
  unsigned long long rows[kMaxOrder];
};

template <ssmkit_dtype T>
__global__ void hadamard_shared_kernel(const void* __restrict__ x, void* __restrict__ out, int64_t n,
                                       int64_t pow2, int m, hadamard_signs_arg signs, float scale) {
  extern __shared__ float row[];  // (n,) = (m, pow2)
  const int64_t r = blockIdx.x;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = load_f32<T>(x, r * n + i);
  __syncthreads();
  const int64_t half = pow2 / 2;
  for (int64_t h = 1; h < pow2; h <<= 1) {
    for (int64_t k = threadIdx.x; k < n / 2; k += blockDim.x) {
      const int64_t c = k / half, q = k % half;
      const int64_t j = c * pow2 + (q / h) * 2 * h + (q % h);
      const float a = row[j];
      const float b = row[j + h];
      row[j] = a + b;
      row[j + h] = a - b;
    }
    __syncthreads();
  }
  if (m > 1) {
    // Each thread owns position p of every chunk, so it can overwrite them in place.
    for (int64_t p = threadIdx.x; p < pow2; p += blockDim.x) {
      float v[kMaxOrder];
      for (int j = 0; j < m; ++j) v[j] = row[j * pow2 + p];
      for (int i = 0; i < m; ++i) {
        const unsigned long long s = signs.rows[i];
        float acc = (s & 1ull) ? -v[0] : v[0];
        for (int j = 1; j < m; ++j) acc += ((s >> j) & 1ull) ? -v[j] : v[j];
        row[i * pow2 + p] = acc;
      }
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) store_f32<T>(out, r * n + i, row[i] * scale);
}

}  // namespace

status hadamard_cuda(const hadamard_params& p, void* stream) {
  int m = 1;
  int64_t pow2 = 1;
  if (!hadamard_factor(p.n, &m, &pow2)) {
    return make_status(status_code::value,
                       "hadamard: x: expected a last dimension of 2^k or 12, 20, 28, 40 times 2^k, got %lld",
                       static_cast<long long>(p.n));
  }
  if (p.n > kMaxSharedRow) {
    return make_status(status_code::unsupported,
                       "hadamard: x: rows longer than %lld are not supported on CUDA",
                       static_cast<long long>(kMaxSharedRow));
  }
  if (p.rows == 0) return ok_status();
  hadamard_signs_arg signs{};
  if (m > 1) {
    const float* h = hadamard_signs(m);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < m; ++j) {
        if (h[i * m + j] < 0) signs.rows[i] |= 1ull << j;
      }
    }
  }
  return SSMKIT_FLOAT_SWITCH(p.x.dtype, "hadamard", [&] {
    const size_t smem = static_cast<size_t>(p.n) * sizeof(float);
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(
        hadamard_shared_kernel<kDType>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    const int threads = p.n >= 2048 ? 1024 : (p.n >= 64 ? static_cast<int>((p.n + 1) / 2) : 32);
    hadamard_shared_kernel<kDType>
        <<<static_cast<unsigned>(p.rows), threads, smem, static_cast<cudaStream_t>(stream)>>>(
            p.x.data, p.out.data, p.n, pow2, m, signs, p.scale);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  });
}

}  // namespace ssmkit
