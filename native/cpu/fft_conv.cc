// CPU kernels of the FFT convolution family: fftConv, s4dKernel and ssmConv.
//
// fftConv: every filter (D folded into its first tap, a bidirectional filter's second half wrapped to
// the end) is transformed once per call, and the rows (batch x H) are convolved with the real FFT of
// fft.h, one task per channel (or per row when channels are few). A cost model picks, per call, one
// transform of n >= L + Lk - 1, overlap-save blocks of a smaller n, or for short filters the direct sum.
// Gates, gelu and the dtype conversions are fused into the passes that fill and drain the buffers.
//
// s4dKernel and ssmConv share one primitive, a small real GEMM that expands mode coefficients into sums
// of exponentials: out[a S + i] += sum_n Re(G[a, n] lambda_n^i), with lambda^i tabulated for i < S
// (kSub) and G[a, n] = g_n lambda_n^(a S) carried in double. ssmConv is H3's state passing: inside a
// block of T samples the output is the FFT convolution with the T-tap kernel, the state before the block
// adds sum_n Re(2 C_n lambda_n^(j+1) x_n) (the same GEMM), and the block's inputs move the state by
// x <- lambda^T x + B sum_j lambda^(T-1-j) u_j (the transposed GEMM). Rows run in parallel; a single row
// runs its blocks in waves across the pool (each block's own part in parallel, the O(N) state recursion
// in order). Time is linear in L and the scratch (per thread: O(T + N S)) does not depend on L.
//
// Math in float32 except the mode coefficients and the carried state (double). SIMD levels as in
// fft.cc: generic vector templates inlined into per-level entry points.
#include "ssmkit/fft_conv.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <complex>
#include <cstring>

#include "fft.h"
#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

#if SSMKIT_X86
#include <immintrin.h>
#endif

namespace ssmkit {
namespace {

using cpu::fft::plan;
using cpu::fft::scratch;
using cpu::fft::vf;
using cpu::fft::vload;
using cpu::fft::vsplat;
using cpu::fft::vstore;
using cplx = std::complex<double>;

// Columns of the lambda^i tables: a multiple of 2W for every level; long enough that the per-row work in
// double (one complex step per mode per kSub samples) stays small, short enough that a table of
// 2 N2 x kSub floats stays in L1 for N2 <= 32 (L2 beyond).
constexpr int64_t kSub = 128;

// ---- element-wise kernels ----

// Coefficients of erf(t) ~ t P(t^2) / Q(t^2) on |t| <= 4 (fitted for this file; max error 4e-7 in
// float32 arithmetic; erf(4) rounds to 1 in float32).
constexpr float kErfP[6] = {1.128378987e+00f, 1.962198466e-01f, 5.346271023e-02f,
                            4.002079368e-03f, 2.879528038e-04f, 1.974406587e-06f};
constexpr float kErfQ[6] = {1.000000000e+00f, 5.072264671e-01f, 1.164635196e-01f,
                            1.544141956e-02f, 1.215874567e-03f, 3.747170558e-05f};

// gelu(x) = x/2 (1 + erf(x / sqrt 2)) over y[0, n) rounded up to W (y is scratch with slack).
template <int W>
SSMKIT_INLINE void gelu_impl(float* y, int64_t n) {
  const vf<W> lo = vsplat<W>(-4.0f), hi = vsplat<W>(4.0f), s = vsplat<W>(0.70710678118654752f);
  for (int64_t i = 0; i < n; i += W) {
    const vf<W> x = vload<W>(y + i);
    vf<W> t = x * s;
    t = t < lo ? lo : t;
    t = t > hi ? hi : t;
    const vf<W> t2 = t * t;
    vf<W> p = vsplat<W>(kErfP[5]), q = vsplat<W>(kErfQ[5]);
    for (int k = 4; k >= 0; --k) {
      p = p * t2 + kErfP[k];
      q = q * t2 + kErfQ[k];
    }
    vstore<W>(y + i, 0.5f * x * (1.0f + t * p / q));
  }
}

template <int W>
SSMKIT_INLINE void mul_impl(float* y, const float* g, int64_t n) {
  for (int64_t i = 0; i < n; i += W) vstore<W>(y + i, vload<W>(y + i) * vload<W>(g + i));
}

// out[a S + i] += sum_kk G[a K + kk] tab[kk S + i] for a < na, i < S (S a multiple of 2W).
template <int W, int R>
SSMKIT_INLINE void expand_rows(const float* G, const float* tab, int64_t K, int64_t S, int64_t i,
                               float* out) {
  vf<W> c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = vf<W>{};
  for (int64_t kk = 0; kk < K; ++kk) {
    const vf<W> t0 = vload<W>(tab + kk * S + i), t1 = vload<W>(tab + kk * S + i + W);
    for (int r = 0; r < R; ++r) {
      const vf<W> g = vsplat<W>(G[r * K + kk]);
      c0[r] += g * t0;
      c1[r] += g * t1;
    }
  }
  for (int r = 0; r < R; ++r) {
    float* o = out + r * S + i;
    vstore<W>(o, vload<W>(o) + c0[r]);
    vstore<W>(o + W, vload<W>(o + W) + c1[r]);
  }
}

template <int W>
SSMKIT_INLINE void expand_impl(const float* G, const float* tab, int64_t na, int64_t K, int64_t S,
                               float* out) {
  for (int64_t i = 0; i < S; i += 2 * W) {
    int64_t a = 0;
    for (; a + 4 <= na; a += 4) expand_rows<W, 4>(G + a * K, tab, K, S, i, out + a * S);
    for (; a < na; ++a) expand_rows<W, 1>(G + a * K, tab, K, S, i, out + a * S);
  }
}

// R[a Kp + kk] = sum_i U[a S + i] tab[i Kp + kk] for a < na, kk < Kp (Kp a multiple of W).
template <int W, int R, int V>
SSMKIT_INLINE void reduce_rows(const float* U, const float* tab, int64_t Kp, int64_t S, int64_t kk,
                               float* out) {
  vf<W> c[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) c[r][v] = vf<W>{};
  for (int64_t i = 0; i < S; ++i) {
    vf<W> t[V];
    for (int v = 0; v < V; ++v) t[v] = vload<W>(tab + i * Kp + kk + v * W);
    for (int r = 0; r < R; ++r) {
      const vf<W> u = vsplat<W>(U[r * S + i]);
      for (int v = 0; v < V; ++v) c[r][v] += u * t[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) vstore<W>(out + r * Kp + kk + v * W, c[r][v]);
}

template <int W, int V>
SSMKIT_INLINE void reduce_cols(const float* U, const float* tab, int64_t na, int64_t Kp, int64_t S,
                               int64_t kk, float* out) {
  int64_t a = 0;
  for (; a + 4 <= na; a += 4) reduce_rows<W, 4, V>(U + a * S, tab, Kp, S, kk, out + a * Kp);
  for (; a < na; ++a) reduce_rows<W, 1, V>(U + a * S, tab, Kp, S, kk, out + a * Kp);
}

template <int W>
SSMKIT_INLINE void reduce_impl(const float* U, const float* tab, int64_t na, int64_t Kp, int64_t S,
                               float* out) {
  int64_t kk = 0;
  for (; kk + 4 * W <= Kp; kk += 4 * W) reduce_cols<W, 4>(U, tab, na, Kp, S, kk, out);
  for (; kk < Kp; kk += W) reduce_cols<W, 1>(U, tab, na, Kp, S, kk, out);
}

// The direct convolution for short filters: y[t] = sum_j k0[j] v[t - j] + sum_j k1[j] v[t + j] for
// t < count (rounded up to W; y has slack), where v[-(Lk - 1) .. count + Lk - 1) is readable (zeros
// outside the row). Four vectors of outputs per pass over the taps hide the FMA latency.
template <int W>
SSMKIT_INLINE void direct_impl(const float* v, const float* k0, const float* k1, int64_t Lk, int64_t count,
                               float* y) {
  const int64_t rounded = (count + W - 1) / W * W;
  int64_t t = 0;
  for (; t + 4 * W <= rounded; t += 4 * W) {
    vf<W> a0{}, a1{}, a2{}, a3{};
    for (int64_t j = 0; j < Lk; ++j) {
      const vf<W> kj = vsplat<W>(k0[j]);
      const float* x = v + t - j;
      a0 += kj * vload<W>(x), a1 += kj * vload<W>(x + W), a2 += kj * vload<W>(x + 2 * W);
      a3 += kj * vload<W>(x + 3 * W);
    }
    if (k1 != nullptr) {
      for (int64_t j = 1; j < Lk; ++j) {
        const vf<W> kj = vsplat<W>(k1[j]);
        const float* x = v + t + j;
        a0 += kj * vload<W>(x), a1 += kj * vload<W>(x + W), a2 += kj * vload<W>(x + 2 * W);
        a3 += kj * vload<W>(x + 3 * W);
      }
    }
    vstore<W>(y + t, a0), vstore<W>(y + t + W, a1), vstore<W>(y + t + 2 * W, a2),
        vstore<W>(y + t + 3 * W, a3);
  }
  for (; t < count; t += W) {
    vf<W> a{};
    for (int64_t j = 0; j < Lk; ++j) a += vsplat<W>(k0[j]) * vload<W>(v + t - j);
    if (k1 != nullptr) {
      for (int64_t j = 1; j < Lk; ++j) a += vsplat<W>(k1[j]) * vload<W>(v + t + j);
    }
    vstore<W>(y + t, a);
  }
}

// ---- dtype conversion of row segments ----

SSMKIT_INLINE void to_float_loop(ssmkit_dtype dt, const void* src, int64_t off, float* dst, int64_t n) {
  if (dt == SSMKIT_DTYPE_F32) {
    std::memcpy(dst, static_cast<const float*>(src) + off, static_cast<size_t>(n) * sizeof(float));
  } else if (dt == SSMKIT_DTYPE_BF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + off;
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src) + off;
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
  }
}

SSMKIT_INLINE void from_float_loop(ssmkit_dtype dt, const float* src, void* dst, int64_t off, int64_t n) {
  if (dt == SSMKIT_DTYPE_F32) {
    std::memcpy(static_cast<float*>(dst) + off, src, static_cast<size_t>(n) * sizeof(float));
  } else if (dt == SSMKIT_DTYPE_BF16) {
    uint16_t* d = static_cast<uint16_t*>(dst) + off;
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  } else {
    uint16_t* d = static_cast<uint16_t*>(dst) + off;
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
  }
}

// ---- per-level entry points ----

struct level_kernels {
  void (*to_float)(ssmkit_dtype, const void*, int64_t, float*, int64_t);
  void (*from_float)(ssmkit_dtype, const float*, void*, int64_t, int64_t);
  void (*gelu)(float*, int64_t);
  void (*mul)(float*, const float*, int64_t);
  void (*expand)(const float*, const float*, int64_t, int64_t, int64_t, float*);
  void (*reduce)(const float*, const float*, int64_t, int64_t, int64_t, float*);
  void (*direct)(const float*, const float*, const float*, int64_t, int64_t, float*);
};

void to_float_base(ssmkit_dtype dt, const void* src, int64_t off, float* dst, int64_t n) {
  to_float_loop(dt, src, off, dst, n);
}
void from_float_base(ssmkit_dtype dt, const float* src, void* dst, int64_t off, int64_t n) {
  from_float_loop(dt, src, dst, off, n);
}
void gelu_base(float* y, int64_t n) {
  gelu_impl<4>(y, n);
}
void mul_base(float* y, const float* g, int64_t n) {
  mul_impl<4>(y, g, n);
}
void expand_base(const float* G, const float* tab, int64_t na, int64_t K, int64_t S, float* out) {
  expand_impl<4>(G, tab, na, K, S, out);
}
void reduce_base(const float* U, const float* tab, int64_t na, int64_t Kp, int64_t S, float* out) {
  reduce_impl<4>(U, tab, na, Kp, S, out);
}
void direct_base(const float* v, const float* k0, const float* k1, int64_t Lk, int64_t count, float* y) {
  direct_impl<4>(v, k0, k1, Lk, count, y);
}
const level_kernels k_base = {&to_float_base, &from_float_base, &gelu_base,  &mul_base,
                              &expand_base,   &reduce_base,     &direct_base};

#if SSMKIT_X86
SSMKIT_TARGET_AVX2 void to_float_avx2(ssmkit_dtype dt, const void* src, int64_t off, float* dst, int64_t n) {
  if (dt != SSMKIT_DTYPE_F16) return to_float_loop(dt, src, off, dst, n);
  const uint16_t* s = static_cast<const uint16_t*>(src) + off;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}
SSMKIT_TARGET_AVX2 void from_float_avx2(ssmkit_dtype dt, const float* src, void* dst, int64_t off,
                                        int64_t n) {
  if (dt != SSMKIT_DTYPE_F16) return from_float_loop(dt, src, dst, off, n);
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(d + i),
        _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) d[i] = f32_to_f16(src[i]);
}
SSMKIT_TARGET_AVX2 void gelu_avx2(float* y, int64_t n) {
  gelu_impl<8>(y, n);
}
SSMKIT_TARGET_AVX2 void mul_avx2(float* y, const float* g, int64_t n) {
  mul_impl<8>(y, g, n);
}
SSMKIT_TARGET_AVX2 void expand_avx2(const float* G, const float* tab, int64_t na, int64_t K, int64_t S,
                                    float* out) {
  expand_impl<8>(G, tab, na, K, S, out);
}
SSMKIT_TARGET_AVX2 void reduce_avx2(const float* U, const float* tab, int64_t na, int64_t Kp, int64_t S,
                                    float* out) {
  reduce_impl<8>(U, tab, na, Kp, S, out);
}
SSMKIT_TARGET_AVX2 void direct_avx2(const float* v, const float* k0, const float* k1, int64_t Lk,
                                    int64_t count, float* y) {
  direct_impl<8>(v, k0, k1, Lk, count, y);
}
const level_kernels k_avx2 = {&to_float_avx2, &from_float_avx2, &gelu_avx2,  &mul_avx2,
                              &expand_avx2,   &reduce_avx2,     &direct_avx2};

SSMKIT_TARGET_AVX512 void to_float_avx512(ssmkit_dtype dt, const void* src, int64_t off, float* dst,
                                          int64_t n) {
  if (dt != SSMKIT_DTYPE_F16) return to_float_loop(dt, src, off, dst, n);
  const uint16_t* s = static_cast<const uint16_t*>(src) + off;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i,
                     _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xffff,
                                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
  }
  for (; i < n; ++i) dst[i] = f16_to_f32(s[i]);
}
SSMKIT_TARGET_AVX512 void from_float_avx512(ssmkit_dtype dt, const float* src, void* dst, int64_t off,
                                            int64_t n) {
  if (dt != SSMKIT_DTYPE_F16) return from_float_loop(dt, src, dst, off, n);
  uint16_t* d = static_cast<uint16_t*>(dst) + off;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm512_mask_cvtps_ph(_mm256_setzero_si256(), 0xffff, _mm512_loadu_ps(src + i),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) d[i] = f32_to_f16(src[i]);
}
SSMKIT_TARGET_AVX512 void gelu_avx512(float* y, int64_t n) {
  gelu_impl<16>(y, n);
}
SSMKIT_TARGET_AVX512 void mul_avx512(float* y, const float* g, int64_t n) {
  mul_impl<16>(y, g, n);
}
SSMKIT_TARGET_AVX512 void expand_avx512(const float* G, const float* tab, int64_t na, int64_t K, int64_t S,
                                        float* out) {
  expand_impl<16>(G, tab, na, K, S, out);
}
SSMKIT_TARGET_AVX512 void reduce_avx512(const float* U, const float* tab, int64_t na, int64_t Kp, int64_t S,
                                        float* out) {
  reduce_impl<16>(U, tab, na, Kp, S, out);
}
SSMKIT_TARGET_AVX512 void direct_avx512(const float* v, const float* k0, const float* k1, int64_t Lk,
                                        int64_t count, float* y) {
  direct_impl<16>(v, k0, k1, Lk, count, y);
}
const level_kernels k_avx512 = {&to_float_avx512, &from_float_avx512, &gelu_avx512,  &mul_avx512,
                                &expand_avx512,   &reduce_avx512,     &direct_avx512};
#endif

const level_kernels& kern() {
  static const level_kernels* k = [] {
#if SSMKIT_X86
    switch (cpu::simd()) {
      case cpu::SIMD_AVX512:
      case cpu::SIMD_AVX512_VNNI: return &k_avx512;
      case cpu::SIMD_AVX2: return &k_avx2;
      default: break;
    }
#endif
    return &k_base;
  }();
  return *k;
}

// Vector width of the level in force: buffers handed to the element-wise kernels are rounded up to it.
int64_t level_width() {
  switch (cpu::simd()) {
    case cpu::SIMD_AVX512:
    case cpu::SIMD_AVX512_VNNI: return 16;
    case cpu::SIMD_AVX2: return 8;
    default: return 4;
  }
}

int64_t round_up(int64_t x, int64_t to) {
  return (x + to - 1) / to * to;
}

// ---- fftConv ----

// How a row is cut: the direct sum in chunks, or transforms of n = 2^log2n real samples, each producing
// `outputs` samples.
struct conv_layout {
  bool direct = false;
  int log2n = 1;
  int64_t outputs = 0;
};

// Shortest transform (complex values) whose passes are worth spreading over the pool.
constexpr int64_t kSpreadMin = int64_t{1} << 15;

// Output samples per chunk of the direct path (bounds its scratch for any L).
constexpr int64_t kDirectChunk = 4096;

// Estimated nanoseconds of one transform block of n real samples (forward, product, inverse, packing):
// about 1 ns per sample on AVX-512 from 2^10 to 2^17, more below (fixed costs, the scalar pair head)
// and above (L2 misses); narrower vectors pay about sqrt(16 / W).
double block_ns(int k, double width) {
  const double per_sample = 1.05 + 0.15 * std::max(0, 11 - k) + 0.4 * std::max(0, k - 17);
  return (static_cast<double>(int64_t{1} << k) * per_sample + 300.0) * std::sqrt(16.0 / width);
}

// Overlap-save with history Lk - 1 (and as much future when bidirectional) against one transform of
// n >= L + Lk - 1 and against the direct sum (about 0.3 / W ns per tap and sample, plus 0.3 ns of
// passes per sample), by estimated time.
conv_layout choose_layout(int64_t L, int64_t Lk, bool bidirectional, int64_t width) {
  const int64_t halo = (Lk - 1) * (bidirectional ? 2 : 1);
  const double w = static_cast<double>(width);
  conv_layout best;
  const int single = std::max(1, cpu::fft::log2_ceil(L + Lk - 1));
  best.log2n = single;
  best.outputs = L;
  double best_cost = block_ns(single, w);
  for (int k = std::max(1, cpu::fft::log2_ceil(halo + 2)); k < single; ++k) {
    const int64_t outputs = (int64_t{1} << k) - halo;
    const double cost = static_cast<double>((L + outputs - 1) / outputs) * block_ns(k, w);
    if (cost < best_cost) {
      best_cost = cost;
      best.log2n = k;
      best.outputs = outputs;
    }
  }
  const double taps = static_cast<double>(halo + 1);
  const double direct_cost = static_cast<double>(L) * (taps * 0.3 / w + 0.3);
  if (direct_cost < best_cost) {
    best.direct = true;
    best.outputs = std::min(L, kDirectChunk);
  }
  return best;
}

status check_float_io(const char* op, const tensor_view& t, ssmkit_dtype want, const char* name) {
  if (t.present() && t.dtype != want) {
    return make_status(status_code::dtype, "%s: %s: expected dtype %s, got %s", op, name, dtype_name(want),
                       dtype_name(t.dtype));
  }
  return ok_status();
}

// parallel_for over [0, n) with fn(begin, end), turning an exception on any thread (scratch that could
// not grow) into a status: pool threads must not throw.
template <class F>
status parallel_ranges(int64_t n, const F& fn) {
  std::atomic<bool> failed{false};
  cpu::parallel_for(n, 1, [&](int64_t i0, int64_t i1) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      fn(i0, i1);
    } catch (...) {
      failed.store(true, std::memory_order_relaxed);
    }
  });
  if (failed.load()) return make_status(status_code::internal, "ssmkit: out of host memory for FFT scratch");
  return ok_status();
}

// The same, one index at a time.
template <class F>
status for_rows(int64_t rows, const F& fn) {
  return parallel_ranges(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(r);
  });
}

}  // namespace

status fft_conv_cpu(const fft_conv_params& p) {
  const char* op = "fftConv";
  const ssmkit_dtype dt = p.u.dtype;
  if (dt != SSMKIT_DTYPE_F32 && dt != SSMKIT_DTYPE_F16 && dt != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "%s: u: unsupported dtype %s", op, dtype_name(dt));
  }
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.k, SSMKIT_DTYPE_F32, "k"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.D, SSMKIT_DTYPE_F32, "options.D"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.pregate, dt, "options.pregate"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.postgate, dt, "options.postgate"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.out, dt, "out"));
  if (p.L < 1 || p.Lk < 1 || p.Lk > p.L) {
    return make_status(status_code::shape, "%s: k: expected 1 <= Lk <= L, got Lk %lld, L %lld", op,
                       static_cast<long long>(p.Lk), static_cast<long long>(p.L));
  }
  if (p.batch == 0 || p.H == 0) return ok_status();

  const int64_t vec = level_width();
  const conv_layout lay = choose_layout(p.L, p.Lk, p.bidirectional, vec);
  const int64_t L = p.L, Lk = p.Lk, H = p.H;
  const int64_t history = Lk - 1, future = p.bidirectional ? Lk - 1 : 0;
  const float* k = p.k.ptr<const float>();
  const float* D = p.D.ptr<const float>();
  const level_kernels& lk = kern();
  const int64_t rows = p.batch * H;
  const int64_t outputs = lay.outputs;

  // The parts every path shares: v = u * pregate into `to`, and the epilogue from y to out.
  auto load = [&](int64_t base, int64_t t, int64_t count, float* to, float* gate) {
    lk.to_float(dt, p.u.data, base + t, to, count);
    if (p.pregate.present()) {
      lk.to_float(dt, p.pregate.data, base + t, gate, count);
      lk.mul(to, gate, count);
    }
  };
  auto store = [&](int64_t base, int64_t t, int64_t count, float* y, float* gate) {
    if (p.gelu) lk.gelu(y, count);
    if (p.postgate.present()) {
      lk.to_float(dt, p.postgate.data, base + t, gate, count);
      lk.mul(y, gate, count);
    }
    lk.from_float(dt, y, p.out.data, base + t, count);
  };

  if (lay.direct) {
    // Filters with D (and the anti-causal filter's tap 0) folded into tap 0: (H, 2, Lk).
    thread_local scratch filter_buf;
    float* filters = filter_buf.get(H * 2 * Lk);
    for (int64_t h = 0; h < H; ++h) {
      const float* k0 = k + h * Lk * (p.bidirectional ? 2 : 1);
      float* f = filters + h * 2 * Lk;
      std::memcpy(f, k0, static_cast<size_t>(Lk) * sizeof(float));
      if (D != nullptr) f[0] += D[h];
      if (p.bidirectional) {
        std::memcpy(f + Lk, k0 + Lk, static_cast<size_t>(Lk) * sizeof(float));
        f[0] += k0[Lk];
      }
    }
    // Tasks are (row, chunk of outputs): independent, and enough of them for the pool on any shape.
    const int64_t chunks = (L + outputs - 1) / outputs;
    return for_rows(rows * chunks, [&](int64_t unit) {
      thread_local scratch v_buf, y_buf, gate_buf;
      const int64_t r = unit / chunks, t0 = (unit % chunks) * outputs;
      const int64_t span = history + outputs + future;
      float* v = v_buf.get(span + 4 * vec);
      float* y = y_buf.get(outputs);
      float* gate = gate_buf.get(round_up(span, vec));
      const float* f = filters + (r % H) * 2 * Lk;
      const int64_t base = r * L;
      const int64_t count = std::min(outputs, L - t0);
      const int64_t lo = std::max<int64_t>(0, t0 - history), hi = std::min(L, t0 + count + future);
      float* v0 = v + history;  // v0[t - t0] = v_t
      std::fill(v, v0 + (lo - t0), 0.0f);
      load(base, lo, hi - lo, v0 + (lo - t0), gate);
      std::fill(v0 + (hi - t0), v + span + 4 * vec, 0.0f);
      lk.direct(v0, f, p.bidirectional ? f + Lk : nullptr, Lk, count, y);
      store(base, t0, count, y, gate);
    });
  }

  if (lay.log2n > cpu::fft::kMaxLog2n) {
    return make_status(status_code::unsupported, "%s: u: a transform of 2^%d samples is longer than 2^%d", op,
                       lay.log2n, cpu::fft::kMaxLog2n);
  }
  const plan& pl = cpu::fft::get_plan(lay.log2n);
  const int64_t n = pl.n, m = pl.m;

  const int threads = cpu::get_num_threads();
  const int64_t blocks = (L + outputs - 1) / outputs;
  // One long transform per row and fewer rows than threads: each transform's passes are spread over
  // the pool instead.
  const bool spread = rows < threads && blocks == 1 && pl.m >= kSpreadMin;
  // The spectrum of channel h's filter into (hre, him), m each.
  auto filter = [&](int64_t h, float* x, float* hre, float* him) {
    std::fill(x, x + n, 0.0f);
    const float* k0 = k + h * Lk * (p.bidirectional ? 2 : 1);
    std::memcpy(x, k0, static_cast<size_t>(Lk) * sizeof(float));
    if (D != nullptr) x[0] += D[h];
    if (p.bidirectional) {
      const float* k1 = k0 + Lk;
      x[0] += k1[0];
      for (int64_t j = 1; j < Lk; ++j) x[n - j] += k1[j];
    }
    if (spread) {
      cpu::fft::pack_parallel(pl, x, hre, him);
      cpu::fft::forward_parallel(pl, hre, him);
    } else {
      cpu::fft::pack(pl, x, hre, him);
      cpu::fft::forward(pl, hre, him);
    }
    cpu::fft::filter_spectrum(pl, hre, him, 1.0f);
  };
  // The block of row r = b H + h starting at output t0, convolved with the spectrum (hre, him).
  auto block = [&](int64_t r, int64_t t0, const float* hre, const float* him, float* x, float* re, float* im,
                   float* gate) {
    const int64_t base = r * L;
    const int64_t ahead = std::min(L, t0 + outputs + future) - t0;
    const int64_t behind = t0 - std::max<int64_t>(0, t0 - history);
    load(base, t0, ahead, x, gate);
    std::fill(x + ahead, x + n - behind, 0.0f);
    if (behind > 0) load(base, t0 - behind, behind, x + n - behind, gate);
    const int64_t count = std::min(outputs, L - t0);
    if (spread) {
      cpu::fft::pack_parallel(pl, x, re, im);
      cpu::fft::forward_parallel(pl, re, im);
      cpu::fft::convolve_parallel(pl, re, im, hre, him);
      cpu::fft::inverse_parallel(pl, re, im);
      cpu::fft::unpack_parallel(pl, re, im, x, count);
    } else {
      cpu::fft::pack(pl, x, re, im);
      cpu::fft::forward(pl, re, im);
      cpu::fft::convolve(pl, re, im, hre, him);
      cpu::fft::inverse(pl, re, im);
      cpu::fft::unpack(pl, re, im, x, count);
    }
    store(base, t0, count, x, gate);
  };
  const int64_t gate_len = round_up(std::min(n, L + history), vec);

  // Each filter is transformed once per call. With enough rows and channels to keep the pool busy, a
  // task is one channel: its spectrum stays in the task's cache for all its batch rows and blocks, and
  // nothing is shared. Otherwise all spectra are made first, (H, 2, m), and the tasks are rows, or
  // (row, block) pairs when rows are fewer than threads.
  if (rows >= threads && (p.batch == 1 || H >= 2 * threads)) {
    return for_rows(H, [&](int64_t h) {
      thread_local scratch x_buf, re_buf, im_buf, gate_buf, spec_buf;
      float* x = x_buf.get(n);
      float* re = re_buf.get(m);
      float* im = im_buf.get(m);
      float* spec = spec_buf.get(2 * m);
      float* gate = gate_buf.get(gate_len);
      filter(h, x, spec, spec + m);
      for (int64_t b = 0; b < p.batch; ++b) {
        for (int64_t t0 = 0; t0 < L; t0 += outputs) block(b * H + h, t0, spec, spec + m, x, re, im, gate);
      }
    });
  }
  thread_local scratch spectra_buf;
  float* spectra = spectra_buf.get(H * 2 * m);
  if (spread) {
    // Few long rows: one after another on this thread, each transform across the pool.
    thread_local scratch x_buf, re_buf, im_buf, gate_buf;
    float* x = x_buf.get(n);
    for (int64_t h = 0; h < H; ++h) filter(h, x, spectra + h * 2 * m, spectra + h * 2 * m + m);
    for (int64_t r = 0; r < rows; ++r) {
      const float* spec = spectra + (r % H) * 2 * m;
      block(r, 0, spec, spec + m, x, re_buf.get(m), im_buf.get(m), gate_buf.get(gate_len));
    }
  } else {
    SSMKIT_RETURN_IF_ERROR(for_rows(H, [&](int64_t h) {
      thread_local scratch x_buf;
      filter(h, x_buf.get(n), spectra + h * 2 * m, spectra + h * 2 * m + m);
    }));
    const bool per_block = rows < threads;
    SSMKIT_RETURN_IF_ERROR(for_rows(per_block ? rows * blocks : rows, [&](int64_t unit) {
      thread_local scratch x_buf, re_buf, im_buf, gate_buf;
      const int64_t r = per_block ? unit / blocks : unit;
      const float* spec = spectra + (r % H) * 2 * m;
      float* x = x_buf.get(n);
      float* re = re_buf.get(m);
      float* im = im_buf.get(m);
      float* gate = gate_buf.get(gate_len);
      if (per_block) {
        block(r, (unit % blocks) * outputs, spec, spec + m, x, re, im, gate);
      } else {
        for (int64_t t0 = 0; t0 < L; t0 += outputs) block(r, t0, spec, spec + m, x, re, im, gate);
      }
    }));
  }
  // Spectra of many long filters are not worth holding on to between calls.
  if (H * 2 * m > (int64_t{16} << 20)) spectra_buf.release();
  return ok_status();
}

// ---- S4D modes ----

namespace {

// Complex product without the NaN recovery of std::complex's operator* (inputs here are finite, and
// its slow path would sit in every inner loop otherwise).
inline cplx cmul(const cplx& a, const cplx& b) {
  return cplx(a.real() * b.real() - a.imag() * b.imag(), a.real() * b.imag() + a.imag() * b.real());
}

// The modes of one channel, in double: lambda = exp(dt A), B = (lambda - 1) / A, and the powers the
// kernels step by, computed once per channel (exp per mode, not per sample). Loops run over the modes
// innermost, so that the steps of different modes overlap instead of waiting on each other.
struct s4d_modes {
  int64_t n2 = 0;
  double dt = 0;
  const float* A = nullptr;  // (N2, 2)
  cplx* lam = nullptr;       // (N2,) exp(dt A)
  cplx* lam_sub = nullptr;   // (N2,) lambda^kSub
  cplx* b = nullptr;         // (N2,) (exp(dt A) - 1) / A, with its limit dt near A = 0
  cplx* c = nullptr;         // (N2,) C

  cplx dtA(int64_t i) const { return dt * cplx(A[2 * i], A[2 * i + 1]); }
  // lambda^e straight from exp (for exponents met once per block or less).
  cplx lambda_pow(int64_t i, int64_t e) const { return std::exp(static_cast<double>(e) * dtA(i)); }
};

// Floats of scratch a channel's modes need (four complex double arrays of N2).
int64_t modes_floats(int64_t n2) {
  return 4 * 4 * std::max<int64_t>(n2, 1);
}

s4d_modes modes_of(const float* log_dt, const float* A, const float* C, int64_t h, int64_t n2,
                   float* storage) {
  s4d_modes md;
  md.n2 = n2;
  md.dt = std::exp(static_cast<double>(log_dt[h]));
  md.A = A + h * n2 * 2;
  auto* z = reinterpret_cast<cplx*>(storage);
  md.lam = z;
  md.lam_sub = z + n2;
  md.b = z + 2 * n2;
  md.c = z + 3 * n2;
  const float* ch = C + h * n2 * 2;
  for (int64_t i = 0; i < n2; ++i) {
    const cplx a(md.A[2 * i], md.A[2 * i + 1]);
    const cplx x = md.dt * a;
    md.lam[i] = std::exp(x);
    md.lam_sub[i] = md.lambda_pow(i, kSub);
    md.b[i] = std::abs(x) < 1e-5 ? md.dt * (1.0 + x * (0.5 + x / 6.0)) : (md.lam[i] - 1.0) / a;
    md.c[i] = cplx(ch[2 * i], ch[2 * i + 1]);
  }
  return md;
}

// The tables of one channel: lambda^i (i < kSub) laid out for expand (rows 2n: Re, 2n+1: -Im) and, for
// the state update, lambda^(kSub-1-i) laid out for reduce (row i: Re, Im of each mode, padded to Kp).
void build_tables(const s4d_modes& md, float* expand_tab, float* reduce_tab, int64_t Kp, cplx* v) {
  const int64_t K = 2 * md.n2;
  for (int64_t n = 0; n < md.n2; ++n) v[n] = 1.0;
  for (int64_t i = 0; i < kSub; ++i) {
    for (int64_t n = 0; n < md.n2; ++n) {
      expand_tab[(2 * n) * kSub + i] = static_cast<float>(v[n].real());
      expand_tab[(2 * n + 1) * kSub + i] = static_cast<float>(-v[n].imag());
      v[n] = cmul(v[n], md.lam[n]);
    }
    if (reduce_tab != nullptr) {
      float* row = reduce_tab + (kSub - 1 - i) * Kp;
      for (int64_t n = 0; n < md.n2; ++n) {
        row[2 * n] = expand_tab[(2 * n) * kSub + i];
        row[2 * n + 1] = -expand_tab[(2 * n + 1) * kSub + i];
      }
      for (int64_t kk = K; kk < Kp; ++kk) row[kk] = 0.0f;
    }
  }
}

// G rows for out[a kSub + i] += sum_n Re(coef_n lambda_n^(a kSub + i)), a in [a0, a0 + na), from
// coef in double: G[a, 2n] = Re, G[a, 2n + 1] = Im of coef_n lambda_n^(a kSub).
void fill_g(const s4d_modes& md, const cplx* coef, int64_t a0, int64_t na, float* G, cplx* v) {
  const int64_t K = 2 * md.n2;
  for (int64_t n = 0; n < md.n2; ++n) v[n] = a0 == 0 ? coef[n] : cmul(coef[n], md.lambda_pow(n, a0 * kSub));
  for (int64_t a = 0; a < na; ++a) {
    float* g = G + a * K;
    for (int64_t n = 0; n < md.n2; ++n) {
      g[2 * n] = static_cast<float>(v[n].real());
      g[2 * n + 1] = static_cast<float>(v[n].imag());
      v[n] = cmul(v[n], md.lam_sub[n]);
    }
  }
}

// Rows of G per expand call: bounds the G scratch (kRowsPerCall x 2 N2) for any length.
constexpr int64_t kRowsPerCall = 64;

// out[0, count) = (accumulate ? out : 0) + sum_n Re(coef_n lambda_n^j); out has room for
// round_up(count, kSub) floats.
void expand_series(const s4d_modes& md, const cplx* coef, const float* expand_tab, float* G, cplx* tmp,
                   int64_t count, bool accumulate, float* out) {
  const int64_t K = 2 * md.n2;
  const int64_t rows = (count + kSub - 1) / kSub;
  if (!accumulate) std::fill(out, out + rows * kSub, 0.0f);
  for (int64_t a0 = 0; a0 < rows; a0 += kRowsPerCall) {
    const int64_t na = std::min(kRowsPerCall, rows - a0);
    fill_g(md, coef, a0, na, G, tmp);
    kern().expand(G, expand_tab, na, K, kSub, out + a0 * kSub);
  }
}

status check_modes(const char* op, const tensor_view& log_dt, const tensor_view& A, const tensor_view& C) {
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, log_dt, SSMKIT_DTYPE_F32, "logDt"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, A, SSMKIT_DTYPE_F32, "A"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, C, SSMKIT_DTYPE_F32, "C"));
  return ok_status();
}

}  // namespace

status s4d_kernel_cpu(const s4d_kernel_params& p) {
  SSMKIT_RETURN_IF_ERROR(check_modes("s4dKernel", p.log_dt, p.A, p.C));
  SSMKIT_RETURN_IF_ERROR(check_float_io("s4dKernel", p.k, SSMKIT_DTYPE_F32, "k"));
  if (p.H == 0 || p.L == 0) return ok_status();
  const int64_t n2 = p.N2, L = p.L;
  const float* log_dt = p.log_dt.ptr<const float>();
  const float* A = p.A.ptr<const float>();
  const float* C = p.C.ptr<const float>();
  float* k = p.k.ptr<float>();
  // Channels are independent; a long kernel is also cut into pieces of kPiece samples.
  constexpr int64_t kPiece = kSub * kRowsPerCall * 4;
  const int64_t pieces = (L + kPiece - 1) / kPiece;
  return for_rows(p.H * pieces, [&](int64_t unit) {
    const int64_t h = unit / pieces, t0 = (unit % pieces) * kPiece;
    const int64_t count = std::min(kPiece, L - t0);
    thread_local scratch tab_buf, g_buf, out_buf, coef_buf, modes_buf;
    const s4d_modes md = modes_of(log_dt, A, C, h, n2, modes_buf.get(modes_floats(n2)));
    float* tab = tab_buf.get(2 * n2 * kSub);
    auto* coef = reinterpret_cast<cplx*>(coef_buf.get(4 * 2 * std::max<int64_t>(n2, 1)));
    cplx* tmp = coef + n2;
    build_tables(md, tab, nullptr, 0, tmp);
    for (int64_t n = 0; n < n2; ++n) coef[n] = 2.0 * md.c[n] * md.b[n] * md.lambda_pow(n, t0);
    float* G = g_buf.get(kRowsPerCall * 2 * n2);
    float* out = out_buf.get(round_up(count, kSub));
    expand_series(md, coef, tab, G, tmp, count, false, out);
    std::memcpy(k + h * L + t0, out, static_cast<size_t>(count) * sizeof(float));
  });
}

// ---- ssmConv ----

namespace {

// Block length when the caller leaves it out: long enough that the FFT's log factor stays small next
// to the state passing's O(N) per sample, short enough that a block's buffers stay in L2.
constexpr int64_t kDefaultBlock = 2048;

// The sizes every block of a call shares.
struct ssm_geometry {
  int64_t L = 0, T = 0, blocks = 0, t_pad = 0, n2 = 0, K = 0, Kp = 0;
  const plan* pl = nullptr;
  int64_t y_len() const { return std::max(pl->n, t_pad); }  // room a block's output needs
};

// What all blocks of one channel read: its modes, the lambda^i tables, the block kernel's spectrum,
// lambda^T and 2 C lambda (what the state before a block is multiplied by).
struct ssm_channel {
  s4d_modes md;
  const float* etab = nullptr;  // (K, kSub)
  const float* rtab = nullptr;  // (kSub, Kp)
  const float* spec = nullptr;  // (2, m)
  const cplx* lam_t = nullptr;  // (N2,)
  const cplx* c_lam = nullptr;  // (N2,)
};

// A block's working buffers, one set per thread.
struct block_buffers {
  float* x;    // (max(n, t_pad),)
  float* re;   // (m,)
  float* im;   // (m,)
  float* ub;   // (t_pad,)
  float* R;    // (t_pad / kSub, Kp)
  float* G;    // (kRowsPerCall, K)
  cplx* coef;  // (N2,)
  cplx* tmp;   // (N2,) running powers
};

block_buffers thread_block_buffers(const ssm_geometry& g) {
  thread_local scratch x_buf, re_buf, im_buf, u_buf, r_buf, g_buf, coef_buf;
  block_buffers bb;
  bb.x = x_buf.get(g.y_len());
  bb.re = re_buf.get(g.pl->m);
  bb.im = im_buf.get(g.pl->m);
  bb.ub = u_buf.get(g.t_pad);
  bb.R = r_buf.get((g.t_pad / kSub) * g.Kp);
  bb.G = g_buf.get(kRowsPerCall * std::max<int64_t>(g.K, 1));
  bb.coef = reinterpret_cast<cplx*>(coef_buf.get(4 * 2 * std::max<int64_t>(g.n2, 1)));
  bb.tmp = bb.coef + g.n2;
  return bb;
}

// Builds channel h's shared data in this thread's buffers (valid until this thread builds another).
ssm_channel setup_channel(const ssm_geometry& g, const ssm_conv_params& p, int64_t h) {
  thread_local scratch etab_buf, rtab_buf, spec_buf, modes_buf, work_buf;
  const int64_t n2 = g.n2, n = g.pl->n, m = g.pl->m, T = g.T;
  ssm_channel ch;
  ch.md = modes_of(p.log_dt.ptr<const float>(), p.A.ptr<const float>(), p.C.ptr<const float>(), h, n2,
                   modes_buf.get(modes_floats(n2)));
  float* etab = etab_buf.get(g.K * kSub);
  float* rtab = rtab_buf.get(kSub * g.Kp);
  build_tables(ch.md, etab, rtab, g.Kp, thread_block_buffers(g).tmp);
  auto* work = reinterpret_cast<cplx*>(work_buf.get(4 * 2 * std::max<int64_t>(n2, 1)));
  cplx* lam_t = work;
  cplx* c_lam = work + n2;
  for (int64_t i = 0; i < n2; ++i) {
    lam_t[i] = ch.md.lambda_pow(i, T);
    c_lam[i] = 2.0 * cmul(ch.md.c[i], ch.md.lam[i]);
  }
  // The block kernel k[0, T) (D on its first tap) and its spectrum.
  block_buffers bb = thread_block_buffers(g);
  for (int64_t i = 0; i < n2; ++i) bb.coef[i] = 2.0 * cmul(ch.md.c[i], ch.md.b[i]);
  expand_series(ch.md, bb.coef, etab, bb.G, bb.tmp, T, false, bb.x);
  if (p.D.present()) bb.x[0] += p.D.ptr<const float>()[h];
  std::fill(bb.x + T, bb.x + n, 0.0f);
  float* spec = spec_buf.get(2 * m);
  cpu::fft::pack(*g.pl, bb.x, spec, spec + m);
  cpu::fft::forward(*g.pl, spec, spec + m);
  cpu::fft::filter_spectrum(*g.pl, spec, spec + m, 1.0f);
  ch.etab = etab;
  ch.rtab = rtab;
  ch.spec = spec;
  ch.lam_t = lam_t;
  ch.c_lam = c_lam;
  return ch;
}

// Block c of a row on its own: y[0, count) = the FFT convolution of the block's inputs with the block
// kernel, and (when `sum` is given) sum = sum_j lambda^(count-1-j) u_j, the state the block's inputs
// alone leave behind (before the factor B).
void block_local(const ssm_geometry& g, const ssm_channel& ch, const ssm_conv_params& p, int64_t row,
                 int64_t c, const block_buffers& bb, float* y, cplx* sum) {
  const plan& pl = *g.pl;
  const int64_t t0 = c * g.T, count = std::min(g.T, g.L - t0), n2 = g.n2;
  const level_kernels& lk = kern();
  float* x = bb.x;
  lk.to_float(p.u.dtype, p.u.data, row * g.L + t0, x, count);
  if (sum != nullptr) {
    // Right-aligned so that sum_q ub[q] lambda^(t_pad - 1 - q) = sum_j u_j lambda^(count - 1 - j).
    std::fill(bb.ub, bb.ub + g.t_pad - count, 0.0f);
    std::memcpy(bb.ub + g.t_pad - count, x, static_cast<size_t>(count) * sizeof(float));
    const int64_t na = g.t_pad / kSub;
    lk.reduce(bb.ub, ch.rtab, na, g.Kp, kSub, bb.R);
    for (int64_t i = 0; i < n2; ++i) sum[i] = 0.0;
    for (int64_t a = 0; a < na; ++a) {
      const float* r = bb.R + a * g.Kp;
      for (int64_t i = 0; i < n2; ++i) sum[i] = cmul(sum[i], ch.md.lam_sub[i]) + cplx(r[2 * i], r[2 * i + 1]);
    }
  }
  std::fill(x + count, x + pl.n, 0.0f);
  cpu::fft::pack(pl, x, bb.re, bb.im);
  cpu::fft::forward(pl, bb.re, bb.im);
  cpu::fft::convolve(pl, bb.re, bb.im, ch.spec, ch.spec + pl.m);
  cpu::fft::inverse(pl, bb.re, bb.im);
  cpu::fft::unpack(pl, bb.re, bb.im, y, count);
}

// Adds what the state before block c contributes (2 Re sum_n C_n lambda_n^(j+1) x_n) to y and stores the
// block's outputs.
void block_finish(const ssm_geometry& g, const ssm_channel& ch, const ssm_conv_params& p, int64_t row,
                  int64_t c, const cplx* state, const block_buffers& bb, float* y) {
  const int64_t t0 = c * g.T, count = std::min(g.T, g.L - t0);
  if (state != nullptr) {
    for (int64_t i = 0; i < g.n2; ++i) bb.coef[i] = cmul(ch.c_lam[i], state[i]);
    expand_series(ch.md, bb.coef, ch.etab, bb.G, bb.tmp, count, true, y);
  }
  kern().from_float(p.u.dtype, y, p.out.data, row * g.L + t0, count);
}

// The state after block c from the state before it and the block's own sum.
void advance(const ssm_geometry& g, const ssm_channel& ch, int64_t c, cplx* state, const cplx* sum) {
  const int64_t count = std::min(g.T, g.L - c * g.T);
  for (int64_t i = 0; i < g.n2; ++i) {
    const cplx step = count == g.T ? ch.lam_t[i] : ch.md.lambda_pow(i, count);
    state[i] = cmul(step, state[i]) + cmul(ch.md.b[i], sum[i]);
  }
}

// The state before the first block of a row; false when it is all zeros.
bool initial_state(const ssm_conv_params& p, int64_t row, cplx* state) {
  const float* init = p.initial_state.ptr<const float>();
  bool any = false;
  for (int64_t i = 0; i < p.N2; ++i) {
    state[i] = init == nullptr ? cplx(0.0) : cplx(init[(row * p.N2 + i) * 2], init[(row * p.N2 + i) * 2 + 1]);
    any = any || state[i] != 0.0;
  }
  return any;
}

void store_last_state(const ssm_conv_params& p, int64_t row, const cplx* state) {
  float* last = p.last_state.ptr<float>();
  for (int64_t i = 0; i < p.N2; ++i) {
    last[(row * p.N2 + i) * 2] = static_cast<float>(state[i].real());
    last[(row * p.N2 + i) * 2 + 1] = static_cast<float>(state[i].imag());
  }
}

}  // namespace

status ssm_conv_cpu(const ssm_conv_params& p) {
  const char* op = "ssmConv";
  const ssmkit_dtype dt = p.u.dtype;
  if (dt != SSMKIT_DTYPE_F32 && dt != SSMKIT_DTYPE_F16 && dt != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "%s: u: unsupported dtype %s", op, dtype_name(dt));
  }
  SSMKIT_RETURN_IF_ERROR(check_modes(op, p.log_dt, p.A, p.C));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.D, SSMKIT_DTYPE_F32, "options.D"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.initial_state, SSMKIT_DTYPE_F32, "options.initialState"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.last_state, SSMKIT_DTYPE_F32, "lastState"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, p.out, dt, "out"));
  if (p.L < 1 || p.block_size < 0) {
    return make_status(status_code::value, "%s: expected L >= 1 and blockSize >= 1", op);
  }
  if (p.batch == 0 || p.H == 0) return ok_status();

  ssm_geometry g;
  g.L = p.L;
  g.T = std::min(p.L, p.block_size > 0 ? p.block_size : kDefaultBlock);
  g.blocks = (g.L + g.T - 1) / g.T;
  g.t_pad = round_up(g.T, kSub);
  g.n2 = p.N2;
  g.K = 2 * p.N2;
  g.Kp = round_up(std::max<int64_t>(g.K, 1), 16);
  g.pl = &cpu::fft::get_plan(std::max(1, cpu::fft::log2_ceil(2 * g.T - 1)));
  const int64_t H = p.H, rows = p.batch * H, n2 = g.n2;
  const bool need_last = p.last_state.present();
  const int threads = cpu::get_num_threads();

  if (rows >= threads || g.blocks == 1) {
    // Enough rows for the pool: a task is a channel with all its rows (the channel's tables and kernel
    // spectrum built once) or, with fewer channels than threads, a single row; blocks run in order.
    const bool per_row = H < threads;
    return for_rows(per_row ? rows : H, [&](int64_t unit) {
      const int64_t h = unit % H;
      const int64_t b_begin = per_row ? unit / H : 0, b_end = per_row ? b_begin + 1 : p.batch;
      const ssm_channel ch = setup_channel(g, p, h);
      const block_buffers bb = thread_block_buffers(g);
      thread_local scratch state_buf;
      auto* state = reinterpret_cast<cplx*>(state_buf.get(4 * 2 * std::max<int64_t>(n2, 1)));
      cplx* sum = state + n2;
      for (int64_t b = b_begin; b < b_end; ++b) {
        const int64_t row = b * H + h;
        bool has_state = initial_state(p, row, state);
        for (int64_t c = 0; c < g.blocks; ++c) {
          const bool update = c + 1 < g.blocks || need_last;
          block_local(g, ch, p, row, c, bb, bb.x, update ? sum : nullptr);
          block_finish(g, ch, p, row, c, has_state ? state : nullptr, bb, bb.x);
          if (update) advance(g, ch, c, state, sum);
          has_state = has_state || update;
        }
        if (need_last) store_last_state(p, row, state);
      }
    });
  }

  // Fewer rows than threads: the blocks of a row go in waves across the pool. Each block's own part
  // (its convolution and its zero-state sum) is independent; the state recursion between blocks is
  // O(N) per block and runs in order; then each block adds its incoming state and is stored. The wave
  // buffers hold a few blocks per thread, whatever L is.
  constexpr int64_t kMaxWave = 64;
  const int64_t wave = std::min<int64_t>({g.blocks, 4 * static_cast<int64_t>(threads), kMaxWave});
  thread_local scratch wave_y, wave_sums;
  float* ys = wave_y.get(wave * g.y_len());
  auto* sums = reinterpret_cast<cplx*>(wave_sums.get(4 * (wave + 1) * 2 * std::max<int64_t>(n2, 1)));
  cplx* starts = sums + wave * n2;  // (wave, N2): the state before each block of the wave
  cplx* state = starts + wave * n2;
  for (int64_t row = 0; row < rows; ++row) {
    const ssm_channel ch = setup_channel(g, p, row % H);
    bool has_state = initial_state(p, row, state);
    for (int64_t c0 = 0; c0 < g.blocks; c0 += wave) {
      const int64_t nw = std::min(wave, g.blocks - c0);
      SSMKIT_RETURN_IF_ERROR(parallel_ranges(nw, [&](int64_t w0, int64_t w1) {
        const block_buffers bb = thread_block_buffers(g);
        for (int64_t w = w0; w < w1; ++w) {
          const bool update = c0 + w + 1 < g.blocks || need_last;
          block_local(g, ch, p, row, c0 + w, bb, ys + w * g.y_len(), update ? sums + w * n2 : nullptr);
        }
      }));
      bool wave_has_state[kMaxWave];
      for (int64_t w = 0; w < nw; ++w) {
        std::copy(state, state + n2, starts + w * n2);
        wave_has_state[w] = has_state;
        if (c0 + w + 1 < g.blocks || need_last) {
          advance(g, ch, c0 + w, state, sums + w * n2);
          has_state = true;
        }
      }
      SSMKIT_RETURN_IF_ERROR(parallel_ranges(nw, [&](int64_t w0, int64_t w1) {
        const block_buffers bb = thread_block_buffers(g);
        for (int64_t w = w0; w < w1; ++w) {
          block_finish(g, ch, p, row, c0 + w, wave_has_state[w] ? starts + w * n2 : nullptr, bb,
                       ys + w * g.y_len());
        }
      }));
    }
    if (need_last) store_last_state(p, row, state);
  }
  return ok_status();
}

int64_t fft_scratch_bytes() {
  return cpu::fft::scratch_bytes();
}
int64_t fft_scratch_peak_bytes() {
  return cpu::fft::scratch_peak_bytes();
}

}  // namespace ssmkit
