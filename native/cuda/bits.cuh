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

}  // namespace ssmkit
