// CPU kernels of the selective-scan family: the Mamba-1 selective scan, its one-step decode update (in
// the Mamba-1 and the multi-head form), the Mamba-2 SSD scan, and the depthwise causal convolution with
// its streaming update.
//
// Every kernel is written once against a small vector interface (vec_scalar, vec_avx2, vec_avx512) and
// instantiated per SIMD path; simd() picks the path at run time. The per-path entry points carry the
// target attribute and `flatten`, so that the generic code and the interface's intrinsics are inlined
// into a function compiled for that instruction set while the binary stays generic x86-64.
//
// Layout of the work: the scans run their recurrence sequentially over time and in parallel over
// independent rows (channels, or heads). Per-time-step scalars (softplus, silu, dtype conversions) are
// computed vectorized over a block of time steps before and after the recurrence, so that the
// recurrence itself touches only float32 scratch. The selective scan vectorizes the state dimension;
// variable B and C, stored (dstate, seqlen), are transposed one time block at a time and the block is
// shared by every channel of a work item. The SSD scan vectorizes the head dimension and keeps a tile of
// the state in registers across a time block. All scratch is per thread and grows, so steady-state calls
// allocate nothing.
//
// Assumptions: tensors are contiguous; the TypeScript layer has checked dtypes and shapes (the entry
// points re-check shapes so that a direct call cannot read out of bounds); seqIdx is non-decreasing (the
// entry points check it). A state resets to zero before each step where seqIdx differs from the step
// before; an initial state belongs to the sequence at step 0.
#include "ssmkit/selective_scan.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

#if SSMKIT_X86
#include <immintrin.h>
#endif

// The vector interface passes __m256/__m512 by value between functions that are all inlined into one
// target-specific caller, so GCC's note about the ABI of such calls does not apply; and GCC 12's
// intrinsic headers start some results from a self-initialized "undefined" register, which
// -Wmaybe-uninitialized reports once they are inlined here.
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define SSMKIT_FLATTEN __attribute__((flatten))
#else
#define SSMKIT_FLATTEN
#endif

namespace ssmkit {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;
constexpr float kSqrt2 = 1.41421356237309505f;
// softplus(x) = x above this, as in mamba_ssm and the Triton kernels.
constexpr float kSoftplusThreshold = 20.0f;

// 2^f on [-0.5, 0.5]: a degree-6 minimax fit of the relative error (8e-8 with float32 Horner). The
// round-to-nearest reduction keeps 1 - 2^x accurate for small |x|, where a decay close to 1 would
// otherwise amplify the error over many steps.
constexpr float kExp2C0 = 1.0f;
constexpr float kExp2C1 = 0.693147182464599609f;
constexpr float kExp2C2 = 0.240226462483406067f;
constexpr float kExp2C3 = 0.0555032864212989807f;
constexpr float kExp2C4 = 0.00961848907172679901f;
constexpr float kExp2C5 = 0.00133999309036880732f;
constexpr float kExp2C6 = 0.000153458124259486794f;
// 2^f on [0, 1) for the AVX-512 path, whose scalef takes the floor of x itself: one instruction less
// per exponential than the reduction above, for an error of 8.4e-8 instead of 9.6e-8.
constexpr float kExp2F0 = 1.0f;
constexpr float kExp2F1 = 0.693147003650665283f;
constexpr float kExp2F2 = 0.240229830145835876f;
constexpr float kExp2F3 = 0.0554833412170410156f;
constexpr float kExp2F4 = 0.00967884063720703125f;
constexpr float kExp2F5 = 0.00124396884348243475f;
constexpr float kExp2F6 = 0.000217022548895329237f;

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

// ------------------------------------------------------------------------------------------------------
// Scratch memory: one growing, 64-byte aligned buffer per thread and slot. Slot 0 holds what an entry
// point shares with its workers; slot 1 is a worker's own (the calling thread is a worker too).

template <int kSlot>
void* thread_scratch(size_t bytes) {
  struct buffer {
    std::unique_ptr<unsigned char[]> data;
    size_t size = 0;
  };
  thread_local buffer b;
  if (b.size < bytes + 64) {
    const size_t want = std::max(bytes + 64, b.size + b.size / 2);
    b.data.reset(new unsigned char[want]);
    b.size = want;
  }
  const uintptr_t p = reinterpret_cast<uintptr_t>(b.data.get());
  return reinterpret_cast<void*>((p + 63) & ~static_cast<uintptr_t>(63));
}

// Hands out 64-byte aligned regions of a scratch buffer; measure() with a null base sizes them first.
class carver {
 public:
  explicit carver(void* base) : base_(static_cast<unsigned char*>(base)) {}
  template <class T>
  T* take(int64_t n) {
    T* r = reinterpret_cast<T*>(base_ + used_);
    used_ += static_cast<size_t>(round_up(std::max<int64_t>(n, 1) * static_cast<int64_t>(sizeof(T)), 64));
    return r;
  }
  size_t used() const { return used_; }

 private:
  unsigned char* base_;
  size_t used_ = 0;
};

// ------------------------------------------------------------------------------------------------------
// The vector interface. T is the register type, W its float lanes; load_n/store_n touch the first n < W
// lanes only; hsum_w(acc, out) writes out[i] = the lane sum of the W vectors stored at acc + i * W;
// gather/scatter read or write lane i at base[i * stride].

struct vec_scalar {
  using T = float;
  static constexpr int W = 1;
  static constexpr int kTile = 8;   // state registers of the SSD tile
  static constexpr int kMaxPv = 2;  // widest SSD tile, in vectors
  static T zero() { return 0.0f; }
  static T set1(float x) { return x; }
  static T load(const float* p) { return *p; }
  static void store(float* p, T v) { *p = v; }
  static T load_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
  static void store_n(float* p, T v, int n) {
    if (n > 0) *p = v;
  }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T div(T a, T b) { return a / b; }
  static T fma(T a, T b, T c) { return a * b + c; }
  static T max(T a, T b) { return a > b ? a : b; }
  static T abs(T a) { return std::fabs(a); }
  static T select_gt(T x, T t, T a, T b) { return x > t ? a : b; }
  static T exp2(T x) {
    x = x < -126.0f ? -126.0f : (x > 127.0f ? 127.0f : x);
    // Round to nearest through the float32 significand (exact for |x| < 2^22).
    const float k = (x + 12582912.0f) - 12582912.0f;
    const float f = x - k;
    float p = kExp2C6;
    p = p * f + kExp2C5;
    p = p * f + kExp2C4;
    p = p * f + kExp2C3;
    p = p * f + kExp2C2;
    p = p * f + kExp2C1;
    p = p * f + kExp2C0;
    return p * bits_f32(static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23);
  }
  static void hsum_w(const float* acc, float* out) { out[0] = acc[0]; }
  static T gather(const float* base, int stride) { return *base; }
  static void scatter(float* base, int stride, T v) { *base = v; }
  static T load_f16(const uint16_t* p) { return f16_to_f32(*p); }
  static T load_bf16(const uint16_t* p) { return bf16_to_f32(*p); }
  static void store_f16(uint16_t* p, T v) { *p = f32_to_f16(v); }
  static void store_bf16(uint16_t* p, T v) { *p = f32_to_bf16(v); }
};

#if SSMKIT_X86

struct vec_avx2 {
  using T = __m256;
  static constexpr int W = 8;
  static constexpr int kTile = 8;
  static constexpr int kMaxPv = 2;
  SSMKIT_TARGET_AVX2 static inline T zero() { return _mm256_setzero_ps(); }
  SSMKIT_TARGET_AVX2 static inline T set1(float x) { return _mm256_set1_ps(x); }
  SSMKIT_TARGET_AVX2 static inline T load(const float* p) { return _mm256_loadu_ps(p); }
  SSMKIT_TARGET_AVX2 static inline void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  SSMKIT_TARGET_AVX2 static inline __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  SSMKIT_TARGET_AVX2 static inline T load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  SSMKIT_TARGET_AVX2 static inline void store_n(float* p, T v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  SSMKIT_TARGET_AVX2 static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  SSMKIT_TARGET_AVX2 static inline T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  SSMKIT_TARGET_AVX2 static inline T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  SSMKIT_TARGET_AVX2 static inline T div(T a, T b) { return _mm256_div_ps(a, b); }
  SSMKIT_TARGET_AVX2 static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  SSMKIT_TARGET_AVX2 static inline T max(T a, T b) { return _mm256_max_ps(a, b); }
  SSMKIT_TARGET_AVX2 static inline T abs(T a) {
    return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  }
  SSMKIT_TARGET_AVX2 static inline T select_gt(T x, T t, T a, T b) {
    return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, t, _CMP_GT_OQ));
  }
  SSMKIT_TARGET_AVX2 static inline T exp2(T x) {
    // max/min with x second keep a NaN; the clamp keeps 2^k a normal float for the exponent trick.
    x = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), x));
    const T k = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const T f = _mm256_sub_ps(x, k);
    T p = _mm256_set1_ps(kExp2C6);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C5));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C0));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  SSMKIT_TARGET_AVX2 static inline void hsum_w(const float* acc, float* out) {
    T r[4];
    for (int i = 0; i < 4; ++i) {
      const T a = _mm256_loadu_ps(acc + (2 * i) * 8);
      const T b = _mm256_loadu_ps(acc + (2 * i + 1) * 8);
      r[i] = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    }
    const T q0 = _mm256_add_ps(_mm256_shuffle_ps(r[0], r[1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(r[0], r[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const T q1 = _mm256_add_ps(_mm256_shuffle_ps(r[2], r[3], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(r[2], r[3], _MM_SHUFFLE(3, 2, 3, 2)));
    _mm256_storeu_ps(
        out, _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31)));
  }
  SSMKIT_TARGET_AVX2 static inline T gather(const float* base, int stride) {
    const __m256i idx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
    return _mm256_i32gather_ps(base, idx, 4);
  }
  SSMKIT_TARGET_AVX2 static inline void scatter(float* base, int stride, T v) {
    alignas(32) float tmp[8];
    _mm256_store_ps(tmp, v);
    for (int i = 0; i < 8; ++i) base[i * stride] = tmp[i];
  }
  SSMKIT_TARGET_AVX2 static inline T load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  SSMKIT_TARGET_AVX2 static inline T load_bf16(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  SSMKIT_TARGET_AVX2 static inline void store_f16(uint16_t* p, T v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  SSMKIT_TARGET_AVX2 static inline void store_bf16(uint16_t* p, T v) {
    // Round to nearest even on the dropped half; a NaN stays a quiet NaN.
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

struct vec_avx512 {
  using T = __m512;
  static constexpr int W = 16;
  static constexpr int kTile = 16;
  static constexpr int kMaxPv = 4;
  SSMKIT_TARGET_AVX512 static inline T zero() { return _mm512_setzero_ps(); }
  SSMKIT_TARGET_AVX512 static inline T set1(float x) { return _mm512_set1_ps(x); }
  SSMKIT_TARGET_AVX512 static inline T load(const float* p) { return _mm512_loadu_ps(p); }
  SSMKIT_TARGET_AVX512 static inline void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  SSMKIT_TARGET_AVX512 static inline T load_n(const float* p, int n) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
  }
  SSMKIT_TARGET_AVX512 static inline void store_n(float* p, T v, int n) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
  }
  SSMKIT_TARGET_AVX512 static inline T add(T a, T b) { return _mm512_add_ps(a, b); }
  SSMKIT_TARGET_AVX512 static inline T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  SSMKIT_TARGET_AVX512 static inline T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  SSMKIT_TARGET_AVX512 static inline T div(T a, T b) { return _mm512_div_ps(a, b); }
  SSMKIT_TARGET_AVX512 static inline T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  SSMKIT_TARGET_AVX512 static inline T max(T a, T b) { return _mm512_max_ps(a, b); }
  SSMKIT_TARGET_AVX512 static inline T abs(T a) { return _mm512_abs_ps(a); }
  SSMKIT_TARGET_AVX512 static inline T select_gt(T x, T t, T a, T b) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, t, _CMP_GT_OQ), b, a);
  }
  SSMKIT_TARGET_AVX512 static inline T exp2(T x) {
    // f = x - floor(x) in one reduce; scalef multiplies by 2^floor(x) and handles the whole exponent
    // range (underflow to zero, overflow to infinity).
    const T f = _mm512_reduce_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    T p = _mm512_set1_ps(kExp2F6);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F5));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F4));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F3));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F2));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F1));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2F0));
    return _mm512_scalef_ps(p, x);
  }
  SSMKIT_TARGET_AVX512 static inline void hsum_w(const float* acc, float* out) {
    // A transpose folded into the adds: 16 vectors -> 8 holding pairs -> 4 holding quads per 128-bit
    // lane -> 2 -> 1, about three instructions per input vector.
    T r[8];
    for (int i = 0; i < 8; ++i) {
      const T a = _mm512_loadu_ps(acc + (2 * i) * 16);
      const T b = _mm512_loadu_ps(acc + (2 * i + 1) * 16);
      r[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    T q[4];
    for (int i = 0; i < 4; ++i) {
      q[i] = _mm512_add_ps(_mm512_shuffle_ps(r[2 * i], r[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm512_shuffle_ps(r[2 * i], r[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    T w[2];
    for (int i = 0; i < 2; ++i) {
      w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(q[2 * i], q[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                           _mm512_shuffle_f32x4(q[2 * i], q[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                        _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1))));
  }
  SSMKIT_TARGET_AVX512 static inline __m512i lane_offsets(int stride) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(stride));
  }
  SSMKIT_TARGET_AVX512 static inline T gather(const float* base, int stride) {
    return _mm512_i32gather_ps(lane_offsets(stride), base, 4);
  }
  SSMKIT_TARGET_AVX512 static inline void scatter(float* base, int stride, T v) {
    _mm512_i32scatter_ps(base, lane_offsets(stride), v, 4);
  }
  SSMKIT_TARGET_AVX512 static inline T load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  SSMKIT_TARGET_AVX512 static inline T load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  SSMKIT_TARGET_AVX512 static inline void store_f16(uint16_t* p, T v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  SSMKIT_TARGET_AVX512 static inline void store_bf16(uint16_t* p, T v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
};

#endif  // SSMKIT_X86

// ------------------------------------------------------------------------------------------------------
// Vector math and row conversions built on the interface.

template <class V>
inline typename V::T vexp(const typename V::T& x) {
  return V::exp2(V::mul(x, V::set1(kLog2e)));
}

// log(1 + y) for y in [0, 1]: log(u) of u = 1 + y through s = (m - 1) / (m + 1) with m in
// [sqrt(1/2), sqrt(2)], plus the rounding of 1 + y as a first-order correction.
template <class V>
inline typename V::T vlog1p_unit(const typename V::T& y) {
  using T = typename V::T;
  const T one = V::set1(1.0f);
  const T u = V::add(one, y);
  const T m = V::select_gt(u, V::set1(kSqrt2), V::mul(u, V::set1(0.5f)), u);
  const T e = V::select_gt(u, V::set1(kSqrt2), V::set1(kLn2), V::zero());
  const T f = V::sub(m, one);
  const T s = V::div(f, V::add(V::set1(2.0f), f));
  const T s2 = V::mul(s, s);
  T r = V::set1(2.0f / 9.0f);
  r = V::fma(r, s2, V::set1(2.0f / 7.0f));
  r = V::fma(r, s2, V::set1(2.0f / 5.0f));
  r = V::fma(r, s2, V::set1(2.0f / 3.0f));
  r = V::fma(r, s2, V::set1(2.0f));
  const T correction = V::div(V::sub(y, V::sub(u, one)), u);
  return V::add(V::fma(s, r, e), correction);
}

template <class V>
inline typename V::T vsoftplus(const typename V::T& x) {
  using T = typename V::T;
  const T e = vexp<V>(V::sub(V::zero(), V::abs(x)));
  const T sp = V::add(V::max(x, V::zero()), vlog1p_unit<V>(e));
  return V::select_gt(x, V::set1(kSoftplusThreshold), x, sp);
}

template <class V>
inline typename V::T vsilu(const typename V::T& z) {
  return V::div(z, V::add(V::set1(1.0f), vexp<V>(V::sub(V::zero(), z))));
}

inline float softplus1(float x) {
  return x > kSoftplusThreshold ? x : std::log1p(std::exp(x));
}

inline float load1(const void* p, ssmkit_dtype t, int64_t i) {
  switch (t) {
    case SSMKIT_DTYPE_F16: return load_f32<SSMKIT_DTYPE_F16>(p, i);
    case SSMKIT_DTYPE_BF16: return load_f32<SSMKIT_DTYPE_BF16>(p, i);
    default: return load_f32<SSMKIT_DTYPE_F32>(p, i);
  }
}

// dst[0, n) = src[off, off + n) as float32.
template <class V>
inline void load_row(const void* src, ssmkit_dtype t, int64_t off, int64_t n, float* dst) {
  constexpr int W = V::W;
  if (t == SSMKIT_DTYPE_F32) {
    // Rows are short (a head, a state) and many: an inline loop beats a call to memcpy.
    const float* s = static_cast<const float*>(src) + off;
    int64_t i = 0;
    for (; i + W <= n; i += W) V::store(dst + i, V::load(s + i));
    for (; i < n; ++i) dst[i] = s[i];
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src) + off;
  int64_t i = 0;
  if (t == SSMKIT_DTYPE_F16) {
    for (; i + W <= n; i += W) V::store(dst + i, V::load_f16(s + i));
    for (; i < n; ++i) dst[i] = f16_to_f32(s[i]);
  } else {
    for (; i + W <= n; i += W) V::store(dst + i, V::load_bf16(s + i));
    for (; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
  }
}

// dst[off, off + n) = src[0, n) rounded to the dtype.
template <class V>
inline void store_row(void* dst, ssmkit_dtype t, int64_t off, int64_t n, const float* src) {
  constexpr int W = V::W;
  if (t == SSMKIT_DTYPE_F32) {
    float* d = static_cast<float*>(dst) + off;
    int64_t i = 0;
    for (; i + W <= n; i += W) V::store(d + i, V::load(src + i));
    for (; i < n; ++i) d[i] = src[i];
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  int64_t i = 0;
  if (t == SSMKIT_DTYPE_F16) {
    for (; i + W <= n; i += W) V::store_f16(d + i, V::load(src + i));
    for (; i < n; ++i) d[i] = f32_to_f16(src[i]);
  } else {
    for (; i + W <= n; i += W) V::store_bf16(d + i, V::load(src + i));
    for (; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  }
}

inline void zero_floats(float* p, int64_t n) {
  if (n > 0) std::memset(p, 0, static_cast<size_t>(n) * sizeof(float));
}

// Elements [off, off + n) of a float-typed buffer as one vector, n <= W (lanes past n are zero). The
// result is returned through `v`: a by-value vector return here draws GCC's ABI note.
template <class V>
inline void load_vec(typename V::T& v, const void* src, ssmkit_dtype t, int64_t off, int n) {
  constexpr int W = V::W;
  if (t == SSMKIT_DTYPE_F32) {
    const float* p = static_cast<const float*>(src) + off;
    v = n >= W ? V::load(p) : V::load_n(p, n);
    return;
  }
  const uint16_t* p = static_cast<const uint16_t*>(src) + off;
  uint16_t tmp[W] = {};
  if (n < W) {
    for (int i = 0; i < n; ++i) tmp[i] = p[i];
    p = tmp;
  }
  v = t == SSMKIT_DTYPE_F16 ? V::load_f16(p) : V::load_bf16(p);
}

// Stores the first n <= W lanes of v to elements [off, off + n), rounded to the dtype.
template <class V>
inline void store_vec(void* dst, ssmkit_dtype t, int64_t off, int n, const typename V::T& v) {
  constexpr int W = V::W;
  if (t == SSMKIT_DTYPE_F32) {
    float* p = static_cast<float*>(dst) + off;
    if (n >= W) {
      V::store(p, v);
    } else {
      V::store_n(p, v, n);
    }
    return;
  }
  uint16_t* p = static_cast<uint16_t*>(dst) + off;
  uint16_t tmp[W];
  uint16_t* q = n >= W ? p : tmp;
  if (t == SSMKIT_DTYPE_F16) {
    V::store_f16(q, v);
  } else {
    V::store_bf16(q, v);
  }
  if (q == tmp) {
    for (int i = 0; i < n; ++i) p[i] = tmp[i];
  }
}

// Splits steps [t0, t0 + nt) of one batch row into runs of one sequence: run i is [starts[i],
// starts[i + 1]) relative to t0, and resets[i] says whether the state restarts at its first step.
// Returns the number of runs.
inline int split_runs(const int32_t* seq, int64_t t0, int64_t nt, int32_t* starts, uint8_t* resets) {
  int n = 0;
  starts[0] = 0;
  resets[0] = seq != nullptr && t0 > 0 && seq[t0] != seq[t0 - 1];
  if (seq != nullptr) {
    for (int64_t t = 1; t < nt; ++t) {
      if (seq[t0 + t] != seq[t0 + t - 1]) {
        starts[++n] = static_cast<int32_t>(t);
        resets[n] = 1;
      }
    }
  }
  starts[++n] = static_cast<int32_t>(nt);
  return n;
}

// ------------------------------------------------------------------------------------------------------
// selectiveScan.

struct scan_plan {
  const selective_scan_params* p;
  int64_t npad;       // dstate rounded up to the vector width
  int64_t chunk;      // time steps per block, a multiple of 16
  int64_t block;      // channels per work item
  int64_t groups;     // groups of the variable B/C (1 when both are constant)
  int64_t group_dim;  // channels per group
  int64_t items_per_group;
  size_t worker_bytes;
};

// Worker scratch of the scan; carve(nullptr) sizes it.
struct scan_scratch {
  float* bt;      // (chunk, npad) variable B of the block, transposed
  float* ct;      // (chunk, npad) variable C of the block, transposed
  float* states;  // (block, npad)
  float* a2;      // (npad,) A of the channel times log2(e)
  float* bc;      // (npad,) constant B of the channel
  float* cc;      // (npad,) constant C of the channel
  float* dt;      // (chunk,) softplus(delta + bias)
  float* du;      // (chunk,) dt * u
  float* uf;      // (chunk,) u
  float* zf;      // (chunk,) z
  float* y;       // (chunk,) readout
  float* row;     // (chunk,) conversion buffer
  float* acc;     // (chunk, W) per-step partial readouts before the lane sums
  int32_t* starts;
  uint8_t* resets;

  template <int W>
  size_t carve(void* base, const scan_plan& pl) {
    carver c(base);
    const int64_t ch = pl.chunk;
    bt = c.take<float>(pl.p->groups_b > 0 ? ch * pl.npad : 0);
    ct = c.take<float>(pl.p->groups_c > 0 ? ch * pl.npad : 0);
    states = c.take<float>(pl.block * pl.npad);
    a2 = c.take<float>(pl.npad);
    bc = c.take<float>(pl.npad);
    cc = c.take<float>(pl.npad);
    dt = c.take<float>(ch);
    du = c.take<float>(ch);
    uf = c.take<float>(ch);
    zf = c.take<float>(ch);
    y = c.take<float>(ch);
    row = c.take<float>(ch);
    acc = c.take<float>(ch * W);
    starts = c.take<int32_t>(ch + 2);
    resets = c.take<uint8_t>(ch + 2);
    return c.used();
  }
};

// The recurrence over steps [tb, te) of one channel with the state in kNv registers (kNv = 0: any
// dstate, state in memory). acc[t * W, (t + 1) * W) receives the lane-wise partial of <h_t, C_t>.
template <class V, int kNv, bool kVarB, bool kVarC>
inline void scan_run(float* h_mem, int64_t npad, const float* a2, const float* bc, const float* cc,
                     const float* bt, const float* ct, const float* dt, const float* du, float* acc,
                     int64_t tb, int64_t te, bool reset) {
  using T = typename V::T;
  constexpr int W = V::W;
  if constexpr (kNv > 0) {
    T h[kNv], a[kNv], b[kNv], c[kNv];
    for (int v = 0; v < kNv; ++v) {
      h[v] = reset ? V::zero() : V::load(h_mem + v * W);
      a[v] = V::load(a2 + v * W);
      if (!kVarB) b[v] = V::load(bc + v * W);
      if (!kVarC) c[v] = V::load(cc + v * W);
    }
    for (int64_t t = tb; t < te; ++t) {
      const T dtv = V::set1(dt[t]);
      const T duv = V::set1(du[t]);
      const float* brow = bt + t * npad;
      const float* crow = ct + t * npad;
      T s = V::zero();
      for (int v = 0; v < kNv; ++v) {
        const T decay = V::exp2(V::mul(dtv, a[v]));
        const T bv = kVarB ? V::load(brow + v * W) : b[v];
        h[v] = V::fma(decay, h[v], V::mul(duv, bv));
        const T cv = kVarC ? V::load(crow + v * W) : c[v];
        s = v == 0 ? V::mul(cv, h[v]) : V::fma(cv, h[v], s);
      }
      V::store(acc + t * W, s);
    }
    for (int v = 0; v < kNv; ++v) V::store(h_mem + v * W, h[v]);
  } else {
    if (reset) zero_floats(h_mem, npad);
    for (int64_t t = tb; t < te; ++t) {
      const T dtv = V::set1(dt[t]);
      const T duv = V::set1(du[t]);
      const float* brow = kVarB ? bt + t * npad : bc;
      const float* crow = kVarC ? ct + t * npad : cc;
      T s = V::zero();
      for (int64_t v = 0; v < npad; v += W) {
        const T decay = V::exp2(V::mul(dtv, V::load(a2 + v)));
        const T hv = V::fma(decay, V::load(h_mem + v), V::mul(duv, V::load(brow + v)));
        V::store(h_mem + v, hv);
        s = V::fma(V::load(crow + v), hv, s);
      }
      V::store(acc + t * W, s);
    }
  }
}

template <class V, int kNv, bool kVarB, bool kVarC>
inline void scan_runs(float* h, const scan_plan& pl, const scan_scratch& s, int runs) {
  for (int r = 0; r < runs; ++r) {
    scan_run<V, kNv, kVarB, kVarC>(h, pl.npad, s.a2, s.bc, s.cc, s.bt, s.ct, s.dt, s.du, s.acc, s.starts[r],
                                   s.starts[r + 1], s.resets[r] != 0);
  }
}

template <class V, bool kVarB, bool kVarC>
inline void scan_dispatch_nv(float* h, const scan_plan& pl, const scan_scratch& s, int runs) {
  switch (pl.npad / V::W) {
    case 1: scan_runs<V, 1, kVarB, kVarC>(h, pl, s, runs); break;
    case 2: scan_runs<V, 2, kVarB, kVarC>(h, pl, s, runs); break;
    case 4: scan_runs<V, 4, kVarB, kVarC>(h, pl, s, runs); break;
    default: scan_runs<V, 0, kVarB, kVarC>(h, pl, s, runs); break;
  }
}

template <class V>
void scan_items(const scan_plan& pl, void* scratch, int64_t i0, int64_t i1) {
  using T = typename V::T;
  constexpr int W = V::W;
  const selective_scan_params& p = *pl.p;
  scan_scratch s;
  s.carve<W>(scratch, pl);
  const int64_t N = p.dstate, L = p.seqlen, npad = pl.npad;
  const bool var_b = p.groups_b > 0, var_c = p.groups_c > 0;
  const int32_t* seq = p.seq_idx.present() ? p.seq_idx.ptr<const int32_t>() : nullptr;
  const float* A = p.A.ptr<const float>();
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t bg = item / pl.items_per_group;
    const int64_t b = bg / pl.groups, g = bg % pl.groups;
    const int64_t c0 = g * pl.group_dim + (item % pl.items_per_group) * pl.block;
    const int64_t c1 = std::min(c0 + pl.block, (g + 1) * pl.group_dim);
    const int32_t* seq_b = seq != nullptr ? seq + b * L : nullptr;
    for (int64_t c = c0; c < c1; ++c) {
      float* h = s.states + (c - c0) * npad;
      zero_floats(h, npad);
      if (p.initial_state.present()) {
        std::memcpy(h, p.initial_state.ptr<const float>() + (b * p.dim + c) * N, N * sizeof(float));
      }
    }
    if (var_b) zero_floats(s.bt, pl.chunk * npad);
    if (var_c) zero_floats(s.ct, pl.chunk * npad);
    for (int64_t t0 = 0; t0 < L; t0 += pl.chunk) {
      const int64_t nt = std::min(pl.chunk, L - t0);
      const int64_t ntw = round_up(nt, 16);
      // Transpose this block's B and C once for all its channels: (dstate, steps) -> (steps, npad).
      for (int k = 0; k < 2; ++k) {
        const tensor_view& src = k == 0 ? p.B : p.C;
        if ((k == 0 ? p.groups_b : p.groups_c) == 0) continue;
        float* dst = k == 0 ? s.bt : s.ct;
        for (int64_t n = 0; n < N; ++n) {
          load_row<V>(src.data, src.dtype, ((b * pl.groups + g) * N + n) * L + t0, nt, s.row);
          for (int64_t t = 0; t < nt; ++t) dst[t * npad + n] = s.row[t];
        }
      }
      const int runs = split_runs(seq_b, t0, nt, s.starts, s.resets);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t row_off = (b * p.dim + c) * L + t0;
        for (int64_t n = 0; n < npad; ++n) s.a2[n] = n < N ? A[c * N + n] * kLog2e : 0.0f;
        if (!var_b) {
          zero_floats(s.bc, npad);
          load_row<V>(p.B.data, p.B.dtype, c * N, N, s.bc);
        }
        if (!var_c) {
          zero_floats(s.cc, npad);
          load_row<V>(p.C.data, p.C.dtype, c * N, N, s.cc);
        }
        // Per-step scalars, vectorized over time.
        load_row<V>(p.delta.data, p.delta.dtype, row_off, nt, s.dt);
        load_row<V>(p.u.data, p.u.dtype, row_off, nt, s.uf);
        zero_floats(s.dt + nt, ntw - nt);
        zero_floats(s.uf + nt, ntw - nt);
        const T bias = V::set1(p.delta_bias.present() ? p.delta_bias.ptr<const float>()[c] : 0.0f);
        for (int64_t t = 0; t < ntw; t += W) {
          T d = V::add(V::load(s.dt + t), bias);
          if (p.delta_softplus) d = vsoftplus<V>(d);
          V::store(s.dt + t, d);
          V::store(s.du + t, V::mul(d, V::load(s.uf + t)));
        }
        float* h = s.states + (c - c0) * npad;
        if (var_b && var_c) {
          scan_dispatch_nv<V, true, true>(h, pl, s, runs);
        } else if (var_b) {
          scan_dispatch_nv<V, true, false>(h, pl, s, runs);
        } else if (var_c) {
          scan_dispatch_nv<V, false, true>(h, pl, s, runs);
        } else {
          scan_dispatch_nv<V, false, false>(h, pl, s, runs);
        }
        const float* y = s.acc;
        if (W > 1) {
          for (int64_t t = 0; t < nt; t += W) V::hsum_w(s.acc + t * W, s.y + t);
          y = s.y;
        }
        // Readout: y + D u, gated by silu(z).
        const T dv = V::set1(p.D.present() ? p.D.ptr<const float>()[c] : 0.0f);
        if (p.z.present()) {
          load_row<V>(p.z.data, p.z.dtype, row_off, nt, s.zf);
          zero_floats(s.zf + nt, ntw - nt);
        }
        for (int64_t t = 0; t < ntw; t += W) {
          T o = V::fma(dv, V::load(s.uf + t), V::load(y + t));
          if (p.z.present()) o = V::mul(o, vsilu<V>(V::load(s.zf + t)));
          V::store(s.row + t, o);
        }
        store_row<V>(p.out.data, p.out.dtype, row_off, nt, s.row);
      }
    }
    if (p.last_state.present()) {
      for (int64_t c = c0; c < c1; ++c) {
        std::memcpy(p.last_state.ptr<float>() + (b * p.dim + c) * N, s.states + (c - c0) * npad,
                    N * sizeof(float));
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// selectiveStateUpdate.

struct update_plan {
  const selective_state_update_params* p;
  int64_t npad;
  int64_t cblock;  // Mamba-1 form: channels per work item, a multiple of 16
  int64_t items_per_row;
};

struct update_scratch {
  float* bf;   // (npad,)
  float* cf;   // (npad,)
  float* acc;  // (W, W) or (headdim rounded to W, W)
  float* v0;   // (max(W, headdim rounded up),) per-channel scalars
  float* v1;
  float* v2;
  float* v3;

  template <int W>
  size_t carve(void* base, const update_plan& pl) {
    carver c(base);
    const int64_t cols = std::max<int64_t>(16, round_up(pl.p->headdim, 16));
    bf = c.take<float>(pl.npad);
    cf = c.take<float>(pl.npad);
    acc = c.take<float>(cols * W);
    v0 = c.take<float>(cols);
    v1 = c.take<float>(cols);
    v2 = c.take<float>(cols);
    v3 = c.take<float>(cols);
    return c.used();
  }
};

// One state row (n, ) of length `n`: h = decay(A) * h + dx * B, returns the lane partials of <h, C>.
// Mamba-1 rows carry a per-state A (a_row, scaled by dt * log2e inside); multi-head rows a scalar decay.
template <class V, bool kRowA>
inline typename V::T update_state_row(float* h, const float* a_row, const typename V::T& dl,
                                      const typename V::T& decay, const typename V::T& dx, const float* bf,
                                      const float* cf, int64_t n) {
  using T = typename V::T;
  constexpr int W = V::W;
  T s = V::zero();
  int64_t v = 0;
  for (; v + W <= n; v += W) {
    const T a = kRowA ? V::exp2(V::mul(dl, V::load(a_row + v))) : decay;
    const T hv = V::fma(a, V::load(h + v), V::mul(dx, V::load(bf + v)));
    V::store(h + v, hv);
    s = V::fma(V::load(cf + v), hv, s);
  }
  if (v < n) {
    const int k = static_cast<int>(n - v);
    const T a = kRowA ? V::exp2(V::mul(dl, V::load_n(a_row + v, k))) : decay;
    const T hv = V::fma(a, V::load_n(h + v, k), V::mul(dx, V::load(bf + v)));
    V::store_n(h + v, hv, k);
    s = V::fma(V::load(cf + v), hv, s);
  }
  return s;
}

// Mamba-1 rows of `cnt` consecutive channels: h = exp(dt A) h + dt x B, acc_j = lane partials of
// <h, C>. kNv > 0: dstate is exactly kNv vectors, B and C stay in registers.
template <class V, int kNv>
inline void update_m1_rows(float* h, const float* a, const float* dl, const float* dx, const float* bf,
                           const float* cf, int64_t n, int cnt, float* acc) {
  using T = typename V::T;
  constexpr int W = V::W;
  if constexpr (kNv > 0) {
    T bv[kNv], cv[kNv];
    for (int v = 0; v < kNv; ++v) {
      bv[v] = V::load(bf + v * W);
      cv[v] = V::load(cf + v * W);
    }
    for (int j = 0; j < cnt; ++j) {
      const T dlv = V::set1(dl[j]);
      const T dxv = V::set1(dx[j]);
      float* hj = h + j * kNv * W;
      const float* aj = a + j * kNv * W;
      T s = V::zero();
      for (int v = 0; v < kNv; ++v) {
        const T decay = V::exp2(V::mul(dlv, V::load(aj + v * W)));
        const T hv = V::fma(decay, V::load(hj + v * W), V::mul(dxv, bv[v]));
        V::store(hj + v * W, hv);
        s = V::fma(cv[v], hv, s);
      }
      V::store(acc + j * W, s);
    }
  } else {
    for (int j = 0; j < cnt; ++j) {
      V::store(acc + j * W, update_state_row<V, true>(h + j * n, a + j * n, V::set1(dl[j]), V::zero(),
                                                      V::set1(dx[j]), bf, cf, n));
    }
  }
}

template <class V>
void update_items(const update_plan& pl, void* scratch, int64_t i0, int64_t i1) {
  using T = typename V::T;
  constexpr int W = V::W;
  const selective_state_update_params& p = *pl.p;
  update_scratch s;
  s.carve<W>(scratch, pl);
  const int64_t N = p.dstate, npad = pl.npad;
  const int64_t H = p.nheads, P = p.headdim;
  const float* A = p.A.ptr<const float>();
  const float* D = p.D.present() ? p.D.ptr<const float>() : nullptr;
  const float* bias = p.dt_bias.present() ? p.dt_bias.ptr<const float>() : nullptr;
  float* state = p.state.ptr<float>();
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / pl.items_per_row;
    const int64_t sb = p.state_batch_indices.present() ? p.state_batch_indices.ptr<const int32_t>()[b] : b;
    if (!p.multihead) {
      // Mamba-1 form: channels [c0, c1) of batch row b, W channels at a time.
      const int64_t c0 = (item % pl.items_per_row) * pl.cblock;
      const int64_t c1 = std::min(c0 + pl.cblock, H);
      if (sb < 0) {
        zero_floats(s.v0, c1 - c0);
        store_row<V>(p.out.data, p.out.dtype, b * H + c0, c1 - c0, s.v0);
        continue;
      }
      zero_floats(s.bf, npad);
      zero_floats(s.cf, npad);
      load_row<V>(p.B.data, p.B.dtype, b * N, N, s.bf);
      load_row<V>(p.C.data, p.C.dtype, b * N, N, s.cf);
      const int nv = N % W == 0 ? static_cast<int>(N / W) : 0;
      for (int64_t c = c0; c < c1; c += W) {
        const int cnt = static_cast<int>(std::min<int64_t>(W, c1 - c));
        const int64_t off = b * H + c;
        T d, xv;
        load_vec<V>(d, p.dt.data, p.dt.dtype, off, cnt);
        load_vec<V>(xv, p.x.data, p.x.dtype, off, cnt);
        if (bias != nullptr) d = V::add(d, cnt >= W ? V::load(bias + c) : V::load_n(bias + c, cnt));
        if (p.dt_softplus) d = vsoftplus<V>(d);
        V::store(s.v0, V::mul(d, V::set1(kLog2e)));
        V::store(s.v2, V::mul(d, xv));
        float* h = state + (sb * H + c) * N;
        const float* a = A + c * N;
        switch (nv) {
          case 1: update_m1_rows<V, 1>(h, a, s.v0, s.v2, s.bf, s.cf, N, cnt, s.acc); break;
          case 2: update_m1_rows<V, 2>(h, a, s.v0, s.v2, s.bf, s.cf, N, cnt, s.acc); break;
          case 4: update_m1_rows<V, 4>(h, a, s.v0, s.v2, s.bf, s.cf, N, cnt, s.acc); break;
          default: update_m1_rows<V, 0>(h, a, s.v0, s.v2, s.bf, s.cf, N, cnt, s.acc); break;
        }
        for (int j = cnt; j < W; ++j) V::store(s.acc + j * W, V::zero());
        V::hsum_w(s.acc, s.v3);
        T o = V::load(s.v3);
        if (D != nullptr) o = V::fma(cnt >= W ? V::load(D + c) : V::load_n(D + c, cnt), xv, o);
        if (p.z.present()) {
          T zv;
          load_vec<V>(zv, p.z.data, p.z.dtype, off, cnt);
          o = V::mul(o, vsilu<V>(zv));
        }
        store_vec<V>(p.out.data, p.out.dtype, off, cnt, o);
      }
    } else {
      // Multi-head form: head h of batch row b, W rows of headdim at a time.
      const int64_t h = item % pl.items_per_row;
      const int64_t pr = round_up(P, W);
      if (sb < 0) {
        zero_floats(s.v0, P);
        store_row<V>(p.out.data, p.out.dtype, (b * H + h) * P, P, s.v0);
        continue;
      }
      const int64_t g = h / (H / p.groups);
      zero_floats(s.bf, npad);
      zero_floats(s.cf, npad);
      load_row<V>(p.B.data, p.B.dtype, (b * p.groups + g) * N, N, s.bf);
      load_row<V>(p.C.data, p.C.dtype, (b * p.groups + g) * N, N, s.cf);
      float dtv = load1(p.dt.data, p.dt.dtype, b * H + h) + (bias != nullptr ? bias[h] : 0.0f);
      if (p.dt_softplus) dtv = softplus1(dtv);
      const T decay = V::set1(std::exp(dtv * A[h]));
      zero_floats(s.v1, pr);
      load_row<V>(p.x.data, p.x.dtype, (b * H + h) * P, P, s.v1);
      float* base = state + (sb * H + h) * P * N;
      for (int64_t q = 0; q < P; q += W) {
        const int cnt = static_cast<int>(std::min<int64_t>(W, P - q));
        for (int j = 0; j < cnt; ++j) {
          const T s_j = update_state_row<V, false>(base + (q + j) * N, nullptr, V::zero(), decay,
                                                   V::set1(dtv * s.v1[q + j]), s.bf, s.cf, N);
          V::store(s.acc + j * W, s_j);
        }
        for (int j = cnt; j < W; ++j) V::store(s.acc + j * W, V::zero());
        V::hsum_w(s.acc, s.v3 + q);
      }
      if (p.z.present()) {
        zero_floats(s.v2, pr);
        load_row<V>(p.z.data, p.z.dtype, (b * H + h) * P, P, s.v2);
      }
      const T dv = V::set1(D != nullptr ? D[h] : 0.0f);
      for (int64_t q = 0; q < pr; q += W) {
        T o = V::fma(dv, V::load(s.v1 + q), V::load(s.v3 + q));
        if (p.z.present()) o = V::mul(o, vsilu<V>(V::load(s.v2 + q)));
        V::store(s.v3 + q, o);
      }
      store_row<V>(p.out.data, p.out.dtype, (b * H + h) * P, P, s.v3);
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// ssdScan.

struct ssd_plan {
  const ssd_scan_params* p;
  int64_t ppad;   // headdim rounded up to the vector width
  int64_t nr;     // dstate rounded up to the tile's rows
  int64_t chunk;  // time steps per block
  size_t worker_bytes;
};

struct ssd_scratch {
  float* S;       // (nr, ppad) the state, transposed so that the head dimension is contiguous
  float* xs;      // (chunk, ppad)
  float* ys;      // (chunk, ppad)
  float* zs;      // (ppad,)
  float* dtb;     // (chunk, nr) dt_t * B_t / P_t
  float* cs;      // (chunk, nr)
  float* dts;     // (chunk + 16,)
  float* av;      // (chunk + 16,) exp(dt_t * A)
  float* pt;      // (chunk + 16,) P_t, the decay since the start of t's run
  float* scales;  // (chunk + 2,) what the state is multiplied by at the start of each run
  float* dv;      // (ppad,) D of the head
  float* row;     // (max(nr, ppad),)
  int32_t* starts;

  size_t carve(void* base, const ssd_plan& pl) {
    carver c(base);
    S = c.take<float>(pl.nr * pl.ppad);
    xs = c.take<float>(pl.chunk * pl.ppad);
    ys = c.take<float>(pl.chunk * pl.ppad);
    zs = c.take<float>(pl.ppad);
    dtb = c.take<float>(pl.chunk * pl.nr);
    cs = c.take<float>(pl.chunk * pl.nr);
    dts = c.take<float>(pl.chunk + 16);
    av = c.take<float>(pl.chunk + 16);
    pt = c.take<float>(pl.chunk + 16);
    scales = c.take<float>(pl.chunk + 2);
    dv = c.take<float>(pl.ppad);
    row = c.take<float>(std::max(pl.nr, pl.ppad));
    starts = c.take<int32_t>(pl.chunk + 2);
    return c.used();
  }
};

// The SSD recurrence s_t = a_t s_{t-1} + dt_t x_t B_t^T, with a scalar decay a_t per head, is evaluated
// in runs of steps: within a run that starts at t_s, s_t = P_t (S0 + sum_{t_s <= u <= t} dt_u x_u B_u^T
// / P_u) with P_t = a_{t_s + 1} ... a_t and S0 = a_{t_s} s_{t_s - 1}. The decay then costs one multiply per
// run instead of one per step and state element, and the readout is scaled by P_t once per step. A run
// ends where seqIdx changes (S0 = 0) or before P_t would fall below kMinRunDecay, which keeps 1 / P_t
// far from float32 overflow and every term within the usual rounding of the step-by-step recurrence.
constexpr float kMinRunDecay = 8.67361738e-19f;  // 2^-60

// Fills starts/scales/pt for steps [0, nt) of the block at t0; returns the number of runs.
inline int ssd_runs(const int32_t* seq, int64_t t0, int64_t nt, const float* av, int32_t* starts,
                    float* scales, float* pt) {
  int n = 0;
  starts[0] = 0;
  scales[0] = seq != nullptr && t0 > 0 && seq[t0] != seq[t0 - 1] ? 0.0f : av[0];
  pt[0] = 1.0f;
  for (int64_t t = 1; t < nt; ++t) {
    const bool reset = seq != nullptr && seq[t0 + t] != seq[t0 + t - 1];
    const float next = pt[t - 1] * av[t];
    if (reset || next < kMinRunDecay) {
      starts[++n] = static_cast<int32_t>(t);
      scales[n] = reset ? 0.0f : next;
      pt[t] = 1.0f;
    } else {
      pt[t] = next;
    }
  }
  starts[++n] = static_cast<int32_t>(nt);
  return n;
}

// A (kR state rows x kPv vectors of the head dimension) tile of the state, held in registers over every
// step of the block: per step and element one fma for the update and one for the readout.
template <class V, int kPv, int kR>
inline void ssd_tile(float* S, int64_t ppad, const float* xs, float* ys, const float* dtb, const float* cs,
                     int64_t nr, const int32_t* starts, const float* scales, int runs, float last) {
  using T = typename V::T;
  constexpr int W = V::W;
  T s[kR][kPv];
  for (int r = 0; r < kR; ++r) {
    for (int j = 0; j < kPv; ++j) s[r][j] = V::load(S + r * ppad + j * W);
  }
  for (int run = 0; run < runs; ++run) {
    const T scale = V::set1(scales[run]);
    for (int r = 0; r < kR; ++r) {
      for (int j = 0; j < kPv; ++j) s[r][j] = V::mul(s[r][j], scale);
    }
    for (int64_t t = starts[run]; t < starts[run + 1]; ++t) {
      T x[kPv], y[kPv];
      for (int j = 0; j < kPv; ++j) {
        x[j] = V::load(xs + t * ppad + j * W);
        y[j] = V::load(ys + t * ppad + j * W);
      }
      for (int r = 0; r < kR; ++r) {
        const T bb = V::set1(dtb[t * nr + r]);
        const T cc = V::set1(cs[t * nr + r]);
        for (int j = 0; j < kPv; ++j) {
          s[r][j] = V::fma(bb, x[j], s[r][j]);
          y[j] = V::fma(cc, s[r][j], y[j]);
        }
      }
      for (int j = 0; j < kPv; ++j) V::store(ys + t * ppad + j * W, y[j]);
    }
  }
  const T scale = V::set1(last);
  for (int r = 0; r < kR; ++r) {
    for (int j = 0; j < kPv; ++j) V::store(S + r * ppad + j * W, V::mul(s[r][j], scale));
  }
}

template <class V, int kPv>
inline void ssd_tiles(const ssd_plan& pl, const ssd_scratch& s, int64_t p0, int runs, float last) {
  constexpr int kR = V::kTile / kPv;
  for (int64_t n0 = 0; n0 < pl.nr; n0 += kR) {
    ssd_tile<V, kPv, kR>(s.S + n0 * pl.ppad + p0, pl.ppad, s.xs + p0, s.ys + p0, s.dtb + n0, s.cs + n0, pl.nr,
                         s.starts, s.scales, runs, last);
  }
}

template <class V>
void ssd_items(const ssd_plan& pl, void* scratch, int64_t i0, int64_t i1) {
  using T = typename V::T;
  constexpr int W = V::W;
  const ssd_scan_params& p = *pl.p;
  ssd_scratch s;
  s.carve(scratch, pl);
  const int64_t L = p.seqlen, H = p.nheads, P = p.headdim, N = p.dstate, G = p.groups;
  const int64_t ppad = pl.ppad, nr = pl.nr;
  const int32_t* seq = p.seq_idx.present() ? p.seq_idx.ptr<const int32_t>() : nullptr;
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / H, h = item % H;
    const int64_t g = h / (H / G);
    const float a_h = p.A.ptr<const float>()[h];
    const float bias = p.dt_bias.present() ? p.dt_bias.ptr<const float>()[h] : 0.0f;
    zero_floats(s.S, nr * ppad);
    if (p.initial_states.present()) {
      const float* init = p.initial_states.ptr<const float>() + (b * H + h) * P * N;
      for (int64_t q = 0; q < P; ++q) {
        for (int64_t n = 0; n < N; ++n) s.S[n * ppad + q] = init[q * N + n];
      }
    }
    zero_floats(s.xs, pl.chunk * ppad);
    zero_floats(s.zs, ppad);
    zero_floats(s.dtb, pl.chunk * nr);
    zero_floats(s.cs, pl.chunk * nr);
    zero_floats(s.dv, ppad);
    if (p.D.present()) {
      const float* D = p.D.ptr<const float>();
      for (int64_t q = 0; q < P; ++q) s.dv[q] = p.d_per_channel ? D[h * P + q] : D[h];
    }
    for (int64_t t0 = 0; t0 < L; t0 += pl.chunk) {
      const int64_t nt = std::min(pl.chunk, L - t0);
      const int64_t ntw = round_up(nt, W);
      for (int64_t t = 0; t < nt; ++t) s.dts[t] = load1(p.dt.data, p.dt.dtype, (b * L + t0 + t) * H + h);
      zero_floats(s.dts + nt, ntw - nt);
      for (int64_t t = 0; t < ntw; t += W) {
        T d = V::add(V::load(s.dts + t), V::set1(bias));
        if (p.dt_softplus) d = vsoftplus<V>(d);
        // mamba_chunk_scan_combined clamps dt to its dt_limit, (0, inf) by default.
        d = V::max(d, V::zero());
        V::store(s.dts + t, d);
        V::store(s.av + t, vexp<V>(V::mul(d, V::set1(a_h))));
      }
      const int runs =
          ssd_runs(seq != nullptr ? seq + b * L : nullptr, t0, nt, s.av, s.starts, s.scales, s.pt);
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t bc_off = ((b * L + t0 + t) * G + g) * N;
        load_row<V>(p.B.data, p.B.dtype, bc_off, N, s.row);
        const float scaled_dt = s.dts[t] / s.pt[t];
        const T dtv = V::set1(scaled_dt);
        float* dtb = s.dtb + t * nr;
        int64_t n = 0;
        for (; n + W <= N; n += W) V::store(dtb + n, V::mul(dtv, V::load(s.row + n)));
        for (; n < N; ++n) dtb[n] = scaled_dt * s.row[n];
        load_row<V>(p.C.data, p.C.dtype, bc_off, N, s.cs + t * nr);
        load_row<V>(p.x.data, p.x.dtype, ((b * L + t0 + t) * H + h) * P, P, s.xs + t * ppad);
      }
      zero_floats(s.ys, nt * ppad);
      const float last = s.pt[nt - 1];
      // Column tiles of the widest register shape, then narrower ones for the remainder.
      int64_t p0 = 0;
      for (; p0 + V::kMaxPv * W <= ppad; p0 += V::kMaxPv * W) ssd_tiles<V, V::kMaxPv>(pl, s, p0, runs, last);
      if constexpr (V::kMaxPv > 2) {
        if (p0 + 2 * W <= ppad) {
          ssd_tiles<V, 2>(pl, s, p0, runs, last);
          p0 += 2 * W;
        }
      }
      for (; p0 < ppad; p0 += W) ssd_tiles<V, 1>(pl, s, p0, runs, last);
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t off = ((b * L + t0 + t) * H + h) * P;
        if (p.z.present()) load_row<V>(p.z.data, p.z.dtype, off, P, s.zs);
        float* y = s.ys + t * ppad;
        const T scale = V::set1(s.pt[t]);
        for (int64_t q = 0; q < ppad; q += W) {
          T o = V::fma(scale, V::load(y + q), V::mul(V::load(s.dv + q), V::load(s.xs + t * ppad + q)));
          if (p.z.present()) o = V::mul(o, vsilu<V>(V::load(s.zs + q)));
          V::store(y + q, o);
        }
        store_row<V>(p.out.data, p.out.dtype, off, P, y);
      }
    }
    if (p.final_states.present()) {
      float* fin = p.final_states.ptr<float>() + (b * H + h) * P * N;
      for (int64_t q = 0; q < P; ++q) {
        for (int64_t n = 0; n < N; ++n) fin[q * N + n] = s.S[n * ppad + q];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// causalConv1d and causalConv1dUpdate.

struct conv_plan {
  const causal_conv1d_params* p;
  const int64_t* first;   // (batch + 1,) where each batch row's run boundaries begin in starts
  const int64_t* starts;  // run boundaries, 0 ... seqlen per batch row
  size_t worker_bytes;
};

// out[i] = act(bias + sum_k w[k] buf[i + k]) for i in [0, n); buf holds width - 1 + n (+ W) floats.
template <class V>
inline void conv_row(const float* buf, const float* w, int64_t width, float bias, bool silu, int64_t n,
                     float* out) {
  using T = typename V::T;
  constexpr int W = V::W;
  for (int64_t i = 0; i < n; i += W) {
    T acc = V::set1(bias);
    for (int64_t k = 0; k < width; ++k) acc = V::fma(V::set1(w[k]), V::load(buf + i + k), acc);
    if (silu) acc = vsilu<V>(acc);
    V::store(out + i, acc);
  }
}

template <class V>
void conv_rows(const conv_plan& pl, void* scratch, int64_t r0, int64_t r1) {
  constexpr int W = V::W;
  const causal_conv1d_params& p = *pl.p;
  const int64_t L = p.seqlen, K = p.width, hist = K - 1;
  carver c(scratch);
  float* w = c.take<float>(K);
  float* buf = c.take<float>(hist + L + 2 * W);
  float* out = c.take<float>(L + W);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / p.dim, ch = r % p.dim;
    load_row<V>(p.weight.data, p.weight.dtype, ch * K, K, w);
    const float bias = p.bias.present() ? load1(p.bias.data, p.bias.dtype, ch) : 0.0f;
    const int64_t* starts = pl.starts + pl.first[b];
    const int64_t nruns = pl.first[b + 1] - pl.first[b] - 1;
    for (int64_t run = 0; run < nruns; ++run) {
      const int64_t s0 = starts[run], s1 = starts[run + 1], n = s1 - s0;
      // History before the run: the initial state for the first run, zeros after a reset.
      zero_floats(buf, hist);
      if (run == 0 && p.initial_states.present()) {
        std::memcpy(buf, p.initial_states.ptr<const float>() + r * hist, hist * sizeof(float));
      }
      load_row<V>(p.x.data, p.x.dtype, r * L + s0, n, buf + hist);
      zero_floats(buf + hist + n, W);
      conv_row<V>(buf, w, K, bias, p.silu, n, out);
      store_row<V>(p.out.data, p.out.dtype, r * L + s0, n, out);
      if (run + 1 == nruns && p.final_states.present()) {
        std::memcpy(p.final_states.ptr<float>() + r * hist, buf + n, hist * sizeof(float));
      }
    }
  }
}

// The streaming update runs a few steps over many channels, so it vectorizes across W channels: their
// [state | x] windows are transposed into (step, channel) order, convolved, and the shifted state is
// written back.
template <class V>
void conv_update_items(const causal_conv1d_update_params& p, void* scratch, int64_t i0, int64_t i1) {
  using T = typename V::T;
  constexpr int W = V::W;
  const int64_t K = p.width, hist = K - 1, Ln = p.seqlen, SL = p.state_len, Dm = p.dim;
  const int64_t groups = (Dm + W - 1) / W;
  carver c(scratch);
  float* win = c.take<float>((SL + Ln) * W);  // (SL + Ln, W) the window of each lane's channel
  float* wt = c.take<float>(K * W);           // (K, W) the taps of each lane's channel
  float* col = c.take<float>(W);
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t b = item / groups, c0 = (item % groups) * W;
    const int cnt = static_cast<int>(std::min<int64_t>(W, Dm - c0));
    const int64_t sb = p.conv_state_indices.present() ? p.conv_state_indices.ptr<const int32_t>()[b] : b;
    if (sb < 0) {
      for (int j = 0; j < cnt; ++j) {
        for (int64_t t = 0; t < Ln; ++t)
          store_vec<vec_scalar>(p.out.data, p.out.dtype, (b * Dm + c0 + j) * Ln + t, 1, 0.0f);
      }
      continue;
    }
    float* st = p.conv_state.ptr<float>() + (sb * Dm + c0) * SL;
    if (cnt < W) {
      zero_floats(win, (SL + Ln) * W);
      zero_floats(wt, K * W);
    }
    const bool fast = cnt == W && p.x.dtype == SSMKIT_DTYPE_F32 && p.weight.dtype == SSMKIT_DTYPE_F32;
    if (fast) {
      const float* x = p.x.ptr<const float>() + (b * Dm + c0) * Ln;
      const float* w = p.weight.ptr<const float>() + c0 * K;
      for (int64_t q = 0; q < SL; ++q) V::store(win + q * W, V::gather(st + q, static_cast<int>(SL)));
      for (int64_t t = 0; t < Ln; ++t) {
        V::store(win + (SL + t) * W, Ln == 1 ? V::load(x) : V::gather(x + t, static_cast<int>(Ln)));
      }
      for (int64_t k = 0; k < K; ++k) V::store(wt + k * W, V::gather(w + k, static_cast<int>(K)));
    } else {
      for (int j = 0; j < cnt; ++j) {
        for (int64_t q = 0; q < SL; ++q) win[q * W + j] = st[j * SL + q];
        for (int64_t t = 0; t < Ln; ++t) {
          win[(SL + t) * W + j] = load1(p.x.data, p.x.dtype, (b * Dm + c0 + j) * Ln + t);
        }
        for (int64_t k = 0; k < K; ++k)
          wt[k * W + j] = load1(p.weight.data, p.weight.dtype, (c0 + j) * K + k);
      }
    }
    T bias = V::zero();
    if (p.bias.present()) load_vec<V>(bias, p.bias.data, p.bias.dtype, c0, cnt);
    for (int64_t t = 0; t < Ln; ++t) {
      T acc = bias;
      const float* w0 = win + (SL + t - hist) * W;
      for (int64_t k = 0; k < K; ++k) acc = V::fma(V::load(wt + k * W), V::load(w0 + k * W), acc);
      if (p.silu) acc = vsilu<V>(acc);
      if (Ln == 1) {
        store_vec<V>(p.out.data, p.out.dtype, b * Dm + c0, cnt, acc);
      } else {
        V::store(col, acc);
        for (int j = 0; j < cnt; ++j)
          store_vec<vec_scalar>(p.out.data, p.out.dtype, (b * Dm + c0 + j) * Ln + t, 1, col[j]);
      }
    }
    if (fast) {
      for (int64_t q = 0; q < SL; ++q) V::scatter(st + q, static_cast<int>(SL), V::load(win + (q + Ln) * W));
    } else {
      for (int j = 0; j < cnt; ++j) {
        for (int64_t q = 0; q < SL; ++q) st[j * SL + q] = win[(q + Ln) * W + j];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// Per-path entry points and the run-time choice between them.

struct isa_kernels {
  void (*scan)(const scan_plan&, void*, int64_t, int64_t);
  void (*update)(const update_plan&, void*, int64_t, int64_t);
  void (*ssd)(const ssd_plan&, void*, int64_t, int64_t);
  void (*conv)(const conv_plan&, void*, int64_t, int64_t);
  void (*conv_update)(const causal_conv1d_update_params&, void*, int64_t, int64_t);
  int width;
  int tile;
};

#define SSMKIT_SCAN_ENTRIES(NAME, VEC, TARGET)                                                             \
  TARGET SSMKIT_FLATTEN void scan_##NAME(const scan_plan& pl, void* s, int64_t a, int64_t b) {             \
    scan_items<VEC>(pl, s, a, b);                                                                          \
  }                                                                                                        \
  TARGET SSMKIT_FLATTEN void update_##NAME(const update_plan& pl, void* s, int64_t a, int64_t b) {         \
    update_items<VEC>(pl, s, a, b);                                                                        \
  }                                                                                                        \
  TARGET SSMKIT_FLATTEN void ssd_##NAME(const ssd_plan& pl, void* s, int64_t a, int64_t b) {               \
    ssd_items<VEC>(pl, s, a, b);                                                                           \
  }                                                                                                        \
  TARGET SSMKIT_FLATTEN void conv_##NAME(const conv_plan& pl, void* s, int64_t a, int64_t b) {             \
    conv_rows<VEC>(pl, s, a, b);                                                                           \
  }                                                                                                        \
  TARGET SSMKIT_FLATTEN void conv_update_##NAME(const causal_conv1d_update_params& p, void* s, int64_t a,  \
                                                int64_t b) {                                               \
    conv_update_items<VEC>(p, s, a, b);                                                                    \
  }                                                                                                        \
  constexpr isa_kernels kKernels_##NAME = {&scan_##NAME,        &update_##NAME, &ssd_##NAME, &conv_##NAME, \
                                           &conv_update_##NAME, VEC::W,         VEC::kTile};

#define SSMKIT_NO_TARGET
SSMKIT_SCAN_ENTRIES(scalar, vec_scalar, SSMKIT_NO_TARGET)
#if SSMKIT_X86
SSMKIT_SCAN_ENTRIES(avx2, vec_avx2, SSMKIT_TARGET_AVX2)
SSMKIT_SCAN_ENTRIES(avx512, vec_avx512, SSMKIT_TARGET_AVX512)
#endif

const isa_kernels& kernels() {
#if SSMKIT_X86
  switch (cpu::simd()) {
    case cpu::SIMD_AVX512:
    case cpu::SIMD_AVX512_VNNI: return kKernels_avx512;
    case cpu::SIMD_AVX2: return kKernels_avx2;
    default: break;
  }
#endif
  return kKernels_scalar;
}

// ------------------------------------------------------------------------------------------------------
// Argument checks that guard memory safety when native code is called directly; the TypeScript layer
// has already checked everything with friendlier messages.

status check_shape(const char* op, const char* arg, const tensor_view& t,
                   std::initializer_list<int64_t> shape) {
  bool ok = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) {
    if (ok && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) return make_status(status_code::shape, "%s: %s: unexpected shape", op, arg);
  return ok_status();
}

status check_float(const char* op, const char* arg, const tensor_view& t) {
  if (t.dtype != SSMKIT_DTYPE_F32 && t.dtype != SSMKIT_DTYPE_F16 && t.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "%s: %s: expected float32 | float16 | bfloat16, got %s", op, arg,
                       dtype_name(t.dtype));
  }
  return ok_status();
}

status check_dtype(const char* op, const char* arg, const tensor_view& t, ssmkit_dtype want) {
  if (t.dtype != want) {
    return make_status(status_code::dtype, "%s: %s: expected %s, got %s", op, arg, dtype_name(want),
                       dtype_name(t.dtype));
  }
  return ok_status();
}

// seqIdx must be non-decreasing along each row.
status check_seq_idx(const char* op, const tensor_view& seq, int64_t batch, int64_t seqlen) {
  if (!seq.present()) return ok_status();
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "options.seqIdx", seq, SSMKIT_DTYPE_I32));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.seqIdx", seq, {batch, seqlen}));
  const int32_t* s = seq.ptr<const int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 1; t < seqlen; ++t) {
      if (s[b * seqlen + t] < s[b * seqlen + t - 1]) {
        return make_status(
            status_code::value,
            "%s: options.seqIdx: expected non-decreasing values along each row, got %d after %d "
            "at [%lld, %lld]",
            op, s[b * seqlen + t], s[b * seqlen + t - 1], static_cast<long long>(b),
            static_cast<long long>(t));
      }
    }
  }
  return ok_status();
}

// Indices into a state's batch: each in [-1 - ..., state_batch), non-negative ones distinct (two rows
// writing one state would race).
status check_indices(const char* op, const char* arg, const tensor_view& idx, int64_t batch,
                     int64_t state_batch) {
  if (!idx.present()) return ok_status();
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, arg, idx, SSMKIT_DTYPE_I32));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, arg, idx, {batch}));
  const int32_t* ix = idx.ptr<const int32_t>();
  auto* seen = static_cast<uint8_t*>(thread_scratch<0>(static_cast<size_t>(state_batch)));
  std::memset(seen, 0, static_cast<size_t>(state_batch));
  for (int64_t i = 0; i < batch; ++i) {
    const int32_t v = ix[i];
    if (v < 0) continue;
    if (v >= state_batch) {
      return make_status(status_code::value,
                         "%s: %s: expected indices below %lld (the state's batch), got %d at %lld", op, arg,
                         static_cast<long long>(state_batch), v, static_cast<long long>(i));
    }
    if (seen[v]) {
      return make_status(status_code::value, "%s: %s: expected distinct indices, got %d twice", op, arg, v);
    }
    seen[v] = 1;
  }
  return ok_status();
}

// Large outputs are fresh allocations that the op's first writes fault in one 4 KB page at a time;
// asking for transparent huge pages (Linux's default THP mode is "madvise") makes that one fault per 2 MB,
// which halves the time of a 40 MB causalConv1d. Advisory: a refusal changes nothing.
void advise_huge_pages(const tensor_view& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (!t.present() || t.device >= 0) return;
  const uintptr_t bytes = static_cast<uintptr_t>(t.numel()) * static_cast<uintptr_t>(dtype_size(t.dtype));
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data);
  const uintptr_t b0 = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t b1 = (begin + bytes) & ~(kHuge - 1);
  if (b1 > b0) madvise(reinterpret_cast<void*>(b0), b1 - b0, MADV_HUGEPAGE);
#endif
}

int64_t threads() {
  return std::max(1, cpu::get_num_threads());
}

}  // namespace

status selective_scan_fwd_cpu(const selective_scan_params& p) {
  const char* op = "selectiveScan";
  const int64_t Bt = p.batch, Dm = p.dim, L = p.seqlen, N = p.dstate;
  SSMKIT_RETURN_IF_ERROR(check_float(op, "u", p.u));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "delta", p.delta));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "B", p.B));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "C", p.C));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "A", p.A, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "u", p.u, {Bt, Dm, L}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "delta", p.delta, {Bt, Dm, L}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, Dm, L}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "A", p.A, {Dm, N}));
  if (p.groups_b > 0) {
    if (Dm % p.groups_b != 0) return make_status(status_code::shape, "%s: B: groups must divide dim", op);
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "B", p.B, {Bt, p.groups_b, N, L}));
  } else {
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "B", p.B, {Dm, N}));
  }
  if (p.groups_c > 0) {
    if (Dm % p.groups_c != 0) return make_status(status_code::shape, "%s: C: groups must divide dim", op);
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "C", p.C, {Bt, p.groups_c, N, L}));
  } else {
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "C", p.C, {Dm, N}));
  }
  if (p.groups_b > 0 && p.groups_c > 0 && p.groups_b != p.groups_c) {
    return make_status(status_code::shape, "%s: C: expected the groups of B (%lld), got %lld", op,
                       static_cast<long long>(p.groups_b), static_cast<long long>(p.groups_c));
  }
  if (p.z.present()) {
    SSMKIT_RETURN_IF_ERROR(check_float(op, "options.z", p.z));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.z", p.z, {Bt, Dm, L}));
  }
  for (const auto& [name, t] : {std::pair<const char*, const tensor_view*>{"options.D", &p.D},
                                {"options.deltaBias", &p.delta_bias}}) {
    if (!t->present()) continue;
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, name, *t, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, name, *t, {Dm}));
  }
  for (const auto& [name, t] :
       {std::pair<const char*, const tensor_view*>{"options.initialState", &p.initial_state},
        {"lastState", &p.last_state}}) {
    if (!t->present()) continue;
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, name, *t, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, name, *t, {Bt, Dm, N}));
  }
  SSMKIT_RETURN_IF_ERROR(check_seq_idx(op, p.seq_idx, Bt, L));
  if (Bt == 0 || Dm == 0) return ok_status();
  if (N == 0) {
    return make_status(status_code::shape, "%s: A: expected dstate >= 1", op);
  }

  advise_huge_pages(p.out);
  const isa_kernels& k = kernels();
  scan_plan pl;
  pl.p = &p;
  pl.npad = round_up(N, k.width);
  // Keep the transposed B and C blocks of one time block within ~64 KB of L2.
  pl.chunk = std::clamp<int64_t>((8192 / pl.npad) / 16 * 16, 16, 512);
  pl.chunk = std::min(pl.chunk, round_up(L, 16));
  pl.groups = std::max<int64_t>(1, std::max(p.groups_b, p.groups_c));
  pl.group_dim = Dm / pl.groups;
  // About four items per thread for balance, at most 64 channels sharing one transposed block.
  pl.block = std::clamp<int64_t>((Bt * Dm + 4 * threads() - 1) / (4 * threads()), 1, 64);
  pl.block = std::min(pl.block, pl.group_dim);
  pl.items_per_group = (pl.group_dim + pl.block - 1) / pl.block;
  scan_scratch sizing;
  pl.worker_bytes = k.width == 16  ? sizing.carve<16>(nullptr, pl)
                    : k.width == 8 ? sizing.carve<8>(nullptr, pl)
                                   : sizing.carve<1>(nullptr, pl);
  const int64_t items = Bt * pl.groups * pl.items_per_group;
  cpu::parallel_for(items, 1,
                    [&](int64_t i0, int64_t i1) { k.scan(pl, thread_scratch<1>(pl.worker_bytes), i0, i1); });
  return ok_status();
}

status selective_state_update_cpu(const selective_state_update_params& p) {
  const char* op = "selectiveStateUpdate";
  const int64_t Bt = p.batch, H = p.nheads, P = p.headdim, N = p.dstate, G = p.groups, SB = p.state_batch;
  SSMKIT_RETURN_IF_ERROR(check_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "dt", p.dt));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "B", p.B));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "C", p.C));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "state", p.state, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "A", p.A, SSMKIT_DTYPE_F32));
  if (!p.multihead) {
    if (P != 1 || G != 1) return make_status(status_code::shape, "%s: x: the Mamba-1 form has no heads", op);
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "state", p.state, {SB, H, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, H}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "dt", p.dt, {Bt, H}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "A", p.A, {H, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "B", p.B, {Bt, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "C", p.C, {Bt, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, H}));
    if (p.z.present()) SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.z", p.z, {Bt, H}));
  } else {
    if (G <= 0 || H % G != 0) return make_status(status_code::shape, "%s: B: groups must divide nheads", op);
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "state", p.state, {SB, H, P, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, H, P}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "dt", p.dt, {Bt, H}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "A", p.A, {H}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "B", p.B, {Bt, G, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "C", p.C, {Bt, G, N}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, H, P}));
    if (p.z.present()) SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.z", p.z, {Bt, H, P}));
  }
  if (p.z.present()) SSMKIT_RETURN_IF_ERROR(check_float(op, "options.z", p.z));
  for (const auto& [name, t] :
       {std::pair<const char*, const tensor_view*>{"options.D", &p.D}, {"options.dtBias", &p.dt_bias}}) {
    if (!t->present()) continue;
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, name, *t, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, name, *t, {H}));
  }
  if (!p.state_batch_indices.present() && SB != Bt) {
    return make_status(status_code::shape, "%s: state: expected batch %lld, got %lld", op,
                       static_cast<long long>(Bt), static_cast<long long>(SB));
  }
  SSMKIT_RETURN_IF_ERROR(check_indices(op, "options.stateBatchIndices", p.state_batch_indices, Bt, SB));
  if (Bt == 0 || H == 0 || P == 0) return ok_status();
  if (N == 0) return make_status(status_code::shape, "%s: state: expected dstate >= 1", op);

  const isa_kernels& k = kernels();
  update_plan pl;
  pl.p = &p;
  pl.npad = round_up(N, k.width);
  int64_t per_item;
  if (!p.multihead) {
    pl.cblock = 64;
    pl.items_per_row = (H + pl.cblock - 1) / pl.cblock;
    per_item = pl.cblock * N;
  } else {
    pl.cblock = 1;
    pl.items_per_row = H;
    per_item = P * N;
  }
  update_scratch sizing;
  const size_t bytes = k.width == 16  ? sizing.carve<16>(nullptr, pl)
                       : k.width == 8 ? sizing.carve<8>(nullptr, pl)
                                      : sizing.carve<1>(nullptr, pl);
  // A decode step is a few microseconds of work: split it only into pieces worth waking a thread for.
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, per_item));
  cpu::parallel_for(Bt * pl.items_per_row, grain,
                    [&](int64_t i0, int64_t i1) { k.update(pl, thread_scratch<1>(bytes), i0, i1); });
  return ok_status();
}

status ssd_scan_fwd_cpu(const ssd_scan_params& p) {
  const char* op = "ssdScan";
  const int64_t Bt = p.batch, L = p.seqlen, H = p.nheads, P = p.headdim, G = p.groups, N = p.dstate;
  SSMKIT_RETURN_IF_ERROR(check_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "dt", p.dt));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "B", p.B));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "C", p.C));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "A", p.A, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, L, H, P}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, L, H, P}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "dt", p.dt, {Bt, L, H}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "A", p.A, {H}));
  if (G <= 0 || H % G != 0) return make_status(status_code::shape, "%s: B: groups must divide nheads", op);
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "B", p.B, {Bt, L, G, N}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "C", p.C, {Bt, L, G, N}));
  if (p.z.present()) {
    SSMKIT_RETURN_IF_ERROR(check_float(op, "options.z", p.z));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.z", p.z, {Bt, L, H, P}));
  }
  if (p.D.present()) {
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, "options.D", p.D, SSMKIT_DTYPE_F32));
    if (p.d_per_channel) {
      SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.D", p.D, {H, P}));
    } else {
      SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.D", p.D, {H}));
    }
  }
  if (p.dt_bias.present()) {
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, "options.dtBias", p.dt_bias, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.dtBias", p.dt_bias, {H}));
  }
  for (const auto& [name, t] :
       {std::pair<const char*, const tensor_view*>{"options.initialStates", &p.initial_states},
        {"finalStates", &p.final_states}}) {
    if (!t->present()) continue;
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, name, *t, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, name, *t, {Bt, H, P, N}));
  }
  SSMKIT_RETURN_IF_ERROR(check_seq_idx(op, p.seq_idx, Bt, L));
  if (Bt == 0 || H == 0 || P == 0) return ok_status();
  if (N == 0) return make_status(status_code::shape, "%s: B: expected dstate >= 1", op);

  advise_huge_pages(p.out);
  const isa_kernels& k = kernels();
  ssd_plan pl;
  pl.p = &p;
  pl.ppad = round_up(P, k.width);
  pl.nr = round_up(N, k.tile);
  // The tile sweeps over one time block touch its x, y, dt*B and C rows: 64 steps keep them in L1/L2.
  pl.chunk = std::min<int64_t>(64, L);
  ssd_scratch sizing;
  pl.worker_bytes = sizing.carve(nullptr, pl);
  cpu::parallel_for(Bt * H, 1,
                    [&](int64_t i0, int64_t i1) { k.ssd(pl, thread_scratch<1>(pl.worker_bytes), i0, i1); });
  return ok_status();
}

status causal_conv1d_fwd_cpu(const causal_conv1d_params& p) {
  const char* op = "causalConv1d";
  const int64_t Bt = p.batch, Dm = p.dim, L = p.seqlen, K = p.width;
  SSMKIT_RETURN_IF_ERROR(check_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "weight", p.weight));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, Dm, L}));
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, Dm, L}));
  if (K < 1) return make_status(status_code::shape, "%s: weight: expected width >= 1", op);
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "weight", p.weight, {Dm, K}));
  if (p.bias.present()) {
    SSMKIT_RETURN_IF_ERROR(check_float(op, "options.bias", p.bias));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.bias", p.bias, {Dm}));
  }
  for (const auto& [name, t] :
       {std::pair<const char*, const tensor_view*>{"options.initialStates", &p.initial_states},
        {"finalStates", &p.final_states}}) {
    if (!t->present()) continue;
    SSMKIT_RETURN_IF_ERROR(check_dtype(op, name, *t, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, name, *t, {Bt, Dm, K - 1}));
  }
  SSMKIT_RETURN_IF_ERROR(check_seq_idx(op, p.seq_idx, Bt, L));
  if (Bt == 0 || Dm == 0) return ok_status();

  // Runs of one sequence per batch row, shared by all its channels: row b's run boundaries are
  // starts[first[b], first[b + 1]), from 0 to L.
  const int32_t* seq = p.seq_idx.present() ? p.seq_idx.ptr<const int32_t>() : nullptr;
  int64_t changes = 0;
  for (int64_t i = 1; seq != nullptr && i < Bt * L; ++i) changes += (i % L != 0 && seq[i] != seq[i - 1]);
  auto* first = static_cast<int64_t*>(thread_scratch<0>(static_cast<size_t>(3 * Bt + 1 + changes) * 8));
  int64_t* starts = first + Bt + 1;
  int64_t n = 0;
  for (int64_t b = 0; b < Bt; ++b) {
    first[b] = n;
    starts[n++] = 0;
    for (int64_t t = 1; seq != nullptr && t < L; ++t) {
      if (seq[b * L + t] != seq[b * L + t - 1]) starts[n++] = t;
    }
    starts[n++] = L;
  }
  first[Bt] = n;
  advise_huge_pages(p.out);
  const isa_kernels& k = kernels();
  conv_plan pl;
  pl.p = &p;
  pl.first = first;
  pl.starts = starts;
  const int64_t W = k.width;
  pl.worker_bytes =
      static_cast<size_t>(round_up(K, 16) + round_up(K - 1 + L + 2 * W, 16) + round_up(L + W, 16)) *
          sizeof(float) +
      4 * 64;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, L * K));
  cpu::parallel_for(Bt * Dm, grain,
                    [&](int64_t r0, int64_t r1) { k.conv(pl, thread_scratch<1>(pl.worker_bytes), r0, r1); });
  return ok_status();
}

status causal_conv1d_update_cpu(const causal_conv1d_update_params& p) {
  const char* op = "causalConv1dUpdate";
  const int64_t Bt = p.batch, Dm = p.dim, Ln = p.seqlen, K = p.width, SL = p.state_len, SB = p.state_batch;
  SSMKIT_RETURN_IF_ERROR(check_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "weight", p.weight));
  SSMKIT_RETURN_IF_ERROR(check_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(check_dtype(op, "convState", p.conv_state, SSMKIT_DTYPE_F32));
  if (p.x.ndim == 2) {
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, Dm}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, Dm}));
    if (Ln != 1) return make_status(status_code::shape, "%s: x: unexpected shape", op);
  } else {
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "x", p.x, {Bt, Dm, Ln}));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "out", p.out, {Bt, Dm, Ln}));
  }
  if (K < 1) return make_status(status_code::shape, "%s: weight: expected width >= 1", op);
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "weight", p.weight, {Dm, K}));
  if (SL < K - 1) return make_status(status_code::shape, "%s: convState: expected stateLen >= width - 1", op);
  SSMKIT_RETURN_IF_ERROR(check_shape(op, "convState", p.conv_state, {SB, Dm, SL}));
  if (p.bias.present()) {
    SSMKIT_RETURN_IF_ERROR(check_float(op, "options.bias", p.bias));
    SSMKIT_RETURN_IF_ERROR(check_shape(op, "options.bias", p.bias, {Dm}));
  }
  if (!p.conv_state_indices.present() && SB != Bt) {
    return make_status(status_code::shape, "%s: convState: expected batch %lld, got %lld", op,
                       static_cast<long long>(Bt), static_cast<long long>(SB));
  }
  SSMKIT_RETURN_IF_ERROR(check_indices(op, "options.convStateIndices", p.conv_state_indices, Bt, SB));
  if (Bt == 0 || Dm == 0 || Ln == 0) return ok_status();
  const isa_kernels& k = kernels();
  const int64_t W = k.width;
  const size_t bytes =
      static_cast<size_t>(round_up((SL + Ln) * W, 16) + round_up(K * W, 16) + 16) * sizeof(float) + 3 * 64;
  const int64_t groups = (Dm + W - 1) / W;
  // A decode step is microseconds of work: split it only into pieces worth waking a thread for.
  const int64_t grain = std::max<int64_t>(1, 16384 / (W * (2 * SL + K + 2 * Ln)));
  cpu::parallel_for(Bt * groups, grain,
                    [&](int64_t i0, int64_t i1) { k.conv_update(p, thread_scratch<1>(bytes), i0, i1); });
  return ok_status();
}

}  // namespace ssmkit
