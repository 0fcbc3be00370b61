// Element types shared by the TypeScript layer, the CPU kernels and the CUDA kernels, and the scalar
// conversions between float32 and the 16-bit float formats (round to nearest even, NaN kept quiet).
// The numeric values of ssmkit_dtype are part of the addon ABI: lib/dtype.ts uses the same codes.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SSMKIT_HD __host__ __device__ __forceinline__
#else
#define SSMKIT_HD inline
#endif

enum ssmkit_dtype : int32_t {
  SSMKIT_DTYPE_F32 = 0,
  SSMKIT_DTYPE_F16 = 1,
  SSMKIT_DTYPE_BF16 = 2,
  SSMKIT_DTYPE_I8 = 3,
  SSMKIT_DTYPE_U8 = 4,
  SSMKIT_DTYPE_I32 = 5,
  SSMKIT_DTYPE_I4 = 6,
  SSMKIT_DTYPE_F64 = 7,
};

namespace ssmkit {

inline const char* dtype_name(ssmkit_dtype t) {
  switch (t) {
    case SSMKIT_DTYPE_F32: return "float32";
    case SSMKIT_DTYPE_F16: return "float16";
    case SSMKIT_DTYPE_BF16: return "bfloat16";
    case SSMKIT_DTYPE_I8: return "int8";
    case SSMKIT_DTYPE_U8: return "uint8";
    case SSMKIT_DTYPE_I32: return "int32";
    case SSMKIT_DTYPE_I4: return "int4";
    case SSMKIT_DTYPE_F64: return "float64";
  }
  return "unknown";
}

// Bytes per element; int4 is packed two to a byte along the last dimension, so callers size its rows
// with packed_row_bytes() instead.
inline int dtype_size(ssmkit_dtype t) {
  switch (t) {
    case SSMKIT_DTYPE_F64: return 8;
    case SSMKIT_DTYPE_F32:
    case SSMKIT_DTYPE_I32: return 4;
    case SSMKIT_DTYPE_F16:
    case SSMKIT_DTYPE_BF16: return 2;
    default: return 1;
  }
}

SSMKIT_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

SSMKIT_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

SSMKIT_HD float bf16_to_f32(uint16_t h) {
  return bits_f32(static_cast<uint32_t>(h) << 16);
}

SSMKIT_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

SSMKIT_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // Subnormal half: value = mant * 2^-24, exact in float32.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

SSMKIT_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return sign | 0x7e00u | static_cast<uint16_t>((u >> 13) & 0x3ffu);
  if (u >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (u < 0x38800000u) {
    // Result is subnormal or zero: shift the mantissa (with its implicit bit) into place, then round
    // half to even on the bits shifted out.
    if (u < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t e = u >> 23;
    const uint32_t m = (u & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return sign | static_cast<uint16_t>(r);
  }
  u += 0xfffu + ((u >> 13) & 1u);
  return sign | static_cast<uint16_t>((u - 0x38000000u) >> 13);
}

// Loads one element of a float-typed buffer as float32.
template <ssmkit_dtype T>
SSMKIT_HD float load_f32(const void* p, int64_t i);
template <>
SSMKIT_HD float load_f32<SSMKIT_DTYPE_F32>(const void* p, int64_t i) {
  return static_cast<const float*>(p)[i];
}
template <>
SSMKIT_HD float load_f32<SSMKIT_DTYPE_F16>(const void* p, int64_t i) {
  return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
template <>
SSMKIT_HD float load_f32<SSMKIT_DTYPE_BF16>(const void* p, int64_t i) {
  return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

template <ssmkit_dtype T>
SSMKIT_HD void store_f32(void* p, int64_t i, float v);
template <>
SSMKIT_HD void store_f32<SSMKIT_DTYPE_F32>(void* p, int64_t i, float v) {
  static_cast<float*>(p)[i] = v;
}
template <>
SSMKIT_HD void store_f32<SSMKIT_DTYPE_F16>(void* p, int64_t i, float v) {
  static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
}
template <>
SSMKIT_HD void store_f32<SSMKIT_DTYPE_BF16>(void* p, int64_t i, float v) {
  static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
}

}  // namespace ssmkit

// Expands BODY with `kDType` bound to the compile-time float dtype of DT (float32, float16, bfloat16);
// any other dtype returns a dtype error naming OP.
#define SSMKIT_FLOAT_SWITCH(DT, OP, ...)                                                           \
  [&]() -> ::ssmkit::status {                                                                      \
    switch (DT) {                                                                                  \
      case SSMKIT_DTYPE_F32: {                                                                     \
        constexpr ssmkit_dtype kDType = SSMKIT_DTYPE_F32;                                          \
        return __VA_ARGS__();                                                                      \
      }                                                                                            \
      case SSMKIT_DTYPE_F16: {                                                                     \
        constexpr ssmkit_dtype kDType = SSMKIT_DTYPE_F16;                                          \
        return __VA_ARGS__();                                                                      \
      }                                                                                            \
      case SSMKIT_DTYPE_BF16: {                                                                    \
        constexpr ssmkit_dtype kDType = SSMKIT_DTYPE_BF16;                                         \
        return __VA_ARGS__();                                                                      \
      }                                                                                            \
      default:                                                                                     \
        return ::ssmkit::make_status(::ssmkit::status_code::dtype, "%s: unsupported dtype %s", OP, \
                                     ::ssmkit::dtype_name(DT));                                    \
    }                                                                                              \
  }()

#define SSMKIT_BOOL_SWITCH(COND, NAME, ...) \
  [&]() -> ::ssmkit::status {               \
    if (COND) {                             \
      constexpr bool NAME = true;           \
      return __VA_ARGS__();                 \
    } else {                                \
      constexpr bool NAME = false;          \
      return __VA_ARGS__();                 \
    }                                       \
  }()
