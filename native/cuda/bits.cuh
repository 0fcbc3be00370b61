// Loads of float32, float16 and bfloat16 elements in two halves: the element's bits, then its value.
// A load whose value is converted right after it (a dtype test on each element) makes the thread wait
// for that load there, so a batch of such loads becomes one memory round trip after another; taking
// the bits of the whole batch first sends every load out before any is waited for.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "ssmkit/dtype.h"

namespace ssmkit {

// Element i of p: all 32 bits (float32) or the low 16 (16-bit dtypes); through L2 only when kL2 (data
// other blocks of the running kernel wrote).
template <bool kL2 = false>
__device__ __forceinline__ uint32_t ld_bits(const void* p, int dt, int64_t i) {
  if (dt == SSMKIT_DTYPE_F32) {
    const unsigned int* f = static_cast<const unsigned int*>(p) + i;
    if constexpr (kL2) return __ldcg(f);
    return *f;
  }
  const unsigned short* h = static_cast<const unsigned short*>(p) + i;
  if constexpr (kL2) return __ldcg(h);
  return *h;
}

// The value of bits b of dtype dt (zero bits: 0.0f in every dtype).
__device__ __forceinline__ float bits_value(int dt, uint32_t b) {
  if (dt == SSMKIT_DTYPE_F32) return __uint_as_float(b);
  if (dt == SSMKIT_DTYPE_F16) return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
  return __uint_as_float(b << 16);
}

// Element i of p as float (one load and its conversion).
template <bool kL2 = false>
__device__ __forceinline__ float ld_value(const void* p, int dt, int64_t i) {
  return bits_value(dt, ld_bits<kL2>(p, dt, i));
}

// Elements i..i + kN - 1 of p as float: every load issued before any is converted.
template <int kN>
__device__ __forceinline__ void ld_values(const void* p, int dt, int64_t i, float (&v)[kN]) {
  if (dt == SSMKIT_DTYPE_F32) {
    const float* f = static_cast<const float*>(p) + i;
#pragma unroll
    for (int q = 0; q < kN; ++q) v[q] = f[q];
    return;
  }
  const uint16_t* h = static_cast<const uint16_t*>(p) + i;
  uint16_t b[kN];
#pragma unroll
  for (int q = 0; q < kN; ++q) b[q] = h[q];
  if (dt == SSMKIT_DTYPE_F16) {
#pragma unroll
    for (int q = 0; q < kN; ++q) v[q] = __half2float(__ushort_as_half(b[q]));
  } else {
#pragma unroll
    for (int q = 0; q < kN; ++q) v[q] = __uint_as_float(static_cast<uint32_t>(b[q]) << 16);
  }
}

// v rounded to dtype dt, as a store and a load of that dtype would leave it.
__device__ __forceinline__ float round_to(int dt, float v) {
  if (dt == SSMKIT_DTYPE_BF16) return bf16_to_f32(f32_to_bf16(v));
  if (dt == SSMKIT_DTYPE_F16) return f16_to_f32(f32_to_f16(v));
  return v;
}

__device__ __forceinline__ float silu(float x) {
  return x / (1.0f + expf(-x));
}

}  // namespace ssmkit
