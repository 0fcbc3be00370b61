// The quantizers' arithmetic, shared by gemm.cu's quantize kernels and quant.cu's rotating one so that
// every path gives the CPU's bits (native/cpu/quant.cc): scales as stored in their dtype, q = rint(v /
// scale) (round half to even, a true division) clamped to the bits' range, NaN to 0.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "ssmkit/dtype.h"

namespace ssmkit {

__device__ __forceinline__ float load_float(const void* p, ssmkit_dtype dt, int64_t i) {
  if (dt == SSMKIT_DTYPE_F16) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == SSMKIT_DTYPE_BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_float(void* p, ssmkit_dtype dt, int64_t i, float v) {
  if (dt == SSMKIT_DTYPE_F16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else if (dt == SSMKIT_DTYPE_BF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// scale = amax / 7 or / 127 (1 where that is not positive), rounded to the scale's dtype; a scale that
// rounds to 0 becomes 1. Returns the value as stored.
__device__ __forceinline__ float scale_as_stored(float amax, int bits, ssmkit_dtype dt) {
  float s = amax / (bits == 4 ? 7.0f : 127.0f);
  if (!(s > 0.0f)) s = 1.0f;
  if (dt == SSMKIT_DTYPE_F16) s = __half2float(__float2half_rn(s));
  if (dt == SSMKIT_DTYPE_BF16) s = __bfloat162float(__float2bfloat16_rn(s));
  return s == 0.0f ? 1.0f : s;
}

__device__ __forceinline__ int quant_one(float v, float s, int bits) {
  float r = rintf(__fdiv_rn(v, s));
  if (r != r) r = 0.0f;
  const float lo = bits == 4 ? -8.0f : -127.0f;
  const float hi = bits == 4 ? 7.0f : 127.0f;
  return static_cast<int>(fminf(fmaxf(r, lo), hi));
}

}  // namespace ssmkit
