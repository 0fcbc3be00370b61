// CPU kernels of the FFT convolution family: fftConv, s4dKernel and ssmConv.
//
// fftConv: every filter (D folded into its first tap, a bidirectional filter's second half wrapped to
// the end) is transformed once per call; rows (batch x H) are spread over the pool, each convolved with
// the real FFT of fft.h. Long filters use one transform of n >= L + Lk - 1; short ones use overlap-save
// blocks, the size picked by a cost model. Gates, gelu and the dtype conversions are fused into the
// passes that fill and drain the transform buffer.
//
// s4dKernel and ssmConv share one primitive, a real GEMM that expands mode coefficients into
// sums of exponentials: out[a S + i] += sum_n Re(G[a, n] lambda_n^i), with lambda^i tabulated for
// i < S (kSub) and G[a, n] = g_n lambda_n^(a S) carried in double. ssmConv is H3's state passing:
// inside a block of T samples the output is the FFT convolution with the T-tap kernel, the state
// before the block adds sum_n Re(2 C_n lambda_n^(j+1) x_n) (the same GEMM), and the block's inputs move
// the state by x <- lambda^T x + B sum_j lambda^(T-1-j) u_j (the transposed GEMM). Time is linear in L
// and the scratch (per thread: O(T + N S)) does not depend on L.
//
// Math in float32 except the mode coefficients and the carried state (double). SIMD levels as in
// fft.cc: generic vector templates inlined into per-level entry points.
#include "ssmkit/fft_conv.h"

#include <algorithm>
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

// Columns of the lambda^i tables: a multiple of 2W for every level, small enough that a table of
// 2 N2 x kSub floats stays in L1 for N2 <= 64.
constexpr int64_t kSub = 64;

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
const level_kernels k_base = {&to_float_base, &from_float_base, &gelu_base,
                              &mul_base,      &expand_base,     &reduce_base};

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
const level_kernels k_avx2 = {&to_float_avx2, &from_float_avx2, &gelu_avx2,
                              &mul_avx2,      &expand_avx2,     &reduce_avx2};

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
const level_kernels k_avx512 = {&to_float_avx512, &from_float_avx512, &gelu_avx512,
                                &mul_avx512,      &expand_avx512,     &reduce_avx512};
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

// How a row is cut: transforms of n = 2^log2n real samples, each producing `outputs` samples.
struct conv_layout {
  int log2n = 1;
  int64_t outputs = 0;
};

// Overlap-save with history Lk - 1 (and as much future when bidirectional) costs about
// blocks * n * (log2 n + 4); one transform of n >= L + Lk - 1 needs no overlap at all.
conv_layout choose_layout(int64_t L, int64_t Lk, bool bidirectional) {
  const int64_t halo = (Lk - 1) * (bidirectional ? 2 : 1);
  conv_layout best;
  best.log2n = std::max(1, cpu::fft::log2_ceil(L + Lk - 1));
  best.outputs = L;
  double best_cost = static_cast<double>(int64_t{1} << best.log2n) * (best.log2n + 4);
  for (int k = std::max(1, cpu::fft::log2_ceil(halo + 2)); k < best.log2n; ++k) {
    const int64_t n = int64_t{1} << k;
    const int64_t outputs = n - halo;
    const double blocks = static_cast<double>((L + outputs - 1) / outputs);
    const double cost = blocks * static_cast<double>(n) * (k + 4);
    if (cost < best_cost) {
      best_cost = cost;
      best.log2n = k;
      best.outputs = outputs;
    }
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

template <class F>
void for_rows(int64_t rows, const F& fn) {
  cpu::parallel_for(rows, 1, [&](int64_t r0, int64_t r1) {
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

  const conv_layout lay = choose_layout(p.L, p.Lk, p.bidirectional);
  const plan& pl = cpu::fft::get_plan(lay.log2n);
  const int64_t n = pl.n, m = pl.m, L = p.L, Lk = p.Lk, H = p.H;
  const int64_t history = Lk - 1, future = p.bidirectional ? Lk - 1 : 0;
  const float* k = p.k.ptr<const float>();
  const float* D = p.D.ptr<const float>();
  const level_kernels& lk = kern();

  // Filter spectra, (H, 2, m): transformed once per call.
  thread_local scratch spectra_buf;
  float* spectra = spectra_buf.get(H * 2 * m);
  for_rows(H, [&](int64_t h) {
    thread_local scratch time_buf;
    float* x = time_buf.get(n);
    std::fill(x, x + n, 0.0f);
    const float* k0 = k + h * Lk * (p.bidirectional ? 2 : 1);
    std::memcpy(x, k0, static_cast<size_t>(Lk) * sizeof(float));
    if (D != nullptr) x[0] += D[h];
    if (p.bidirectional) {
      const float* k1 = k0 + Lk;
      x[0] += k1[0];
      for (int64_t j = 1; j < Lk; ++j) x[n - j] += k1[j];
    }
    float* hre = spectra + h * 2 * m;
    float* him = hre + m;
    cpu::fft::pack(pl, x, hre, him);
    cpu::fft::forward(pl, hre, him);
    cpu::fft::filter_spectrum(pl, hre, him, 1.0f);
  });

  const int64_t rows = p.batch * H;
  const int64_t outputs = lay.outputs;
  const int64_t vec = level_width();
  for_rows(rows, [&](int64_t r) {
    thread_local scratch x_buf, re_buf, im_buf, gate_buf;
    float* x = x_buf.get(n);
    float* re = re_buf.get(m);
    float* im = im_buf.get(m);
    float* gate = gate_buf.get(round_up(std::min(n, L + history), vec));
    const float* hre = spectra + (r % H) * 2 * m;
    const float* him = hre + m;
    const int64_t base = r * L;
    // Fills x[at, at + count) with v = u * pregate at row offsets [t, t + count).
    auto load = [&](int64_t t, int64_t count, float* to) {
      lk.to_float(dt, p.u.data, base + t, to, count);
      if (p.pregate.present()) {
        lk.to_float(dt, p.pregate.data, base + t, gate, count);
        lk.mul(to, gate, count);
      }
    };
    for (int64_t t0 = 0; t0 < L; t0 += outputs) {
      const int64_t ahead = std::min(L, t0 + outputs + future) - t0;
      const int64_t behind = t0 - std::max<int64_t>(0, t0 - history);
      load(t0, ahead, x);
      std::fill(x + ahead, x + n - behind, 0.0f);
      if (behind > 0) load(t0 - behind, behind, x + n - behind);
      cpu::fft::pack(pl, x, re, im);
      cpu::fft::forward(pl, re, im);
      cpu::fft::convolve(pl, re, im, hre, him);
      cpu::fft::inverse(pl, re, im);
      const int64_t count = std::min(outputs, L - t0);
      cpu::fft::unpack(pl, re, im, x, count);
      if (p.gelu) lk.gelu(x, count);
      if (p.postgate.present()) {
        lk.to_float(dt, p.postgate.data, base + t0, gate, count);
        lk.mul(x, gate, count);
      }
      lk.from_float(dt, x, p.out.data, base + t0, count);
    }
  });
  return ok_status();
}

// ---- S4D modes ----

namespace {

// The modes of one channel, in double: lambda = exp(dt A), B = (lambda - 1) / A, C' = C B.
struct s4d_modes {
  int64_t n2 = 0;
  double dt = 0;
  const float* A = nullptr;  // (N2, 2)
  const float* C = nullptr;  // (N2, 2)

  cplx dtA(int64_t i) const { return dt * cplx(A[2 * i], A[2 * i + 1]); }
  cplx lambda(int64_t i) const { return std::exp(dtA(i)); }
  cplx lambda_pow(int64_t i, int64_t e) const { return std::exp(static_cast<double>(e) * dtA(i)); }
  // (exp(dt A) - 1) / A, with its limit dt near A = 0.
  cplx b(int64_t i) const {
    const cplx z = dtA(i);
    if (std::abs(z) < 1e-5) return dt * (1.0 + z * (0.5 + z / 6.0));
    return (std::exp(z) - 1.0) / cplx(A[2 * i], A[2 * i + 1]);
  }
  cplx c(int64_t i) const { return cplx(C[2 * i], C[2 * i + 1]); }
};

// The tables of one channel: lambda^i (i < kSub) laid out for expand (rows 2n: Re, 2n+1: -Im) and, for
// the state update, lambda^(kSub-1-i) laid out for reduce (row i: Re, Im of each mode, padded to Kp).
void build_tables(const s4d_modes& md, float* expand_tab, float* reduce_tab, int64_t Kp) {
  const int64_t K = 2 * md.n2;
  for (int64_t n = 0; n < md.n2; ++n) {
    for (int64_t i = 0; i < kSub; ++i) {
      const cplx v = md.lambda_pow(n, i);
      expand_tab[(2 * n) * kSub + i] = static_cast<float>(v.real());
      expand_tab[(2 * n + 1) * kSub + i] = static_cast<float>(-v.imag());
      if (reduce_tab != nullptr) {
        reduce_tab[(kSub - 1 - i) * Kp + 2 * n] = static_cast<float>(v.real());
        reduce_tab[(kSub - 1 - i) * Kp + 2 * n + 1] = static_cast<float>(v.imag());
      }
    }
  }
  if (reduce_tab != nullptr) {
    for (int64_t i = 0; i < kSub; ++i) {
      for (int64_t kk = K; kk < Kp; ++kk) reduce_tab[i * Kp + kk] = 0.0f;
    }
  }
}

// G rows for out[a kSub + i] += sum_n Re(coef_n lambda_n^(a kSub + i)), a in [a0, a0 + na), from
// coef in double: G[a, 2n] = Re, G[a, 2n + 1] = Im of coef_n lambda_n^(a kSub).
void fill_g(const s4d_modes& md, const cplx* coef, int64_t a0, int64_t na, float* G) {
  const int64_t K = 2 * md.n2;
  for (int64_t n = 0; n < md.n2; ++n) {
    const cplx step = md.lambda_pow(n, kSub);
    cplx v = coef[n] * md.lambda_pow(n, a0 * kSub);
    for (int64_t a = 0; a < na; ++a) {
      G[a * K + 2 * n] = static_cast<float>(v.real());
      G[a * K + 2 * n + 1] = static_cast<float>(v.imag());
      v *= step;
    }
  }
}

// Rows of G per expand call: bounds the G scratch (kRowsPerCall x 2 N2) for any length.
constexpr int64_t kRowsPerCall = 64;

// out[0, count) = (accumulate ? out : 0) + sum_n Re(coef_n lambda_n^j); out has room for
// round_up(count, kSub) floats.
void expand_series(const s4d_modes& md, const cplx* coef, const float* expand_tab, float* G, int64_t count,
                   bool accumulate, float* out) {
  const int64_t K = 2 * md.n2;
  const int64_t rows = (count + kSub - 1) / kSub;
  if (!accumulate) std::fill(out, out + rows * kSub, 0.0f);
  for (int64_t a0 = 0; a0 < rows; a0 += kRowsPerCall) {
    const int64_t na = std::min(kRowsPerCall, rows - a0);
    fill_g(md, coef, a0, na, G);
    kern().expand(G, expand_tab, na, K, kSub, out + a0 * kSub);
  }
}

status check_modes(const char* op, const tensor_view& log_dt, const tensor_view& A, const tensor_view& C) {
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, log_dt, SSMKIT_DTYPE_F32, "logDt"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, A, SSMKIT_DTYPE_F32, "A"));
  SSMKIT_RETURN_IF_ERROR(check_float_io(op, C, SSMKIT_DTYPE_F32, "C"));
  return ok_status();
}

s4d_modes modes_of(const float* log_dt, const float* A, const float* C, int64_t h, int64_t n2) {
  s4d_modes md;
  md.n2 = n2;
  md.dt = std::exp(static_cast<double>(log_dt[h]));
  md.A = A + h * n2 * 2;
  md.C = C + h * n2 * 2;
  return md;
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
  for_rows(p.H * pieces, [&](int64_t unit) {
    const int64_t h = unit / pieces, t0 = (unit % pieces) * kPiece;
    const int64_t count = std::min(kPiece, L - t0);
    thread_local scratch tab_buf, g_buf, out_buf, coef_buf;
    const s4d_modes md = modes_of(log_dt, A, C, h, n2);
    float* tab = tab_buf.get(2 * n2 * kSub);
    build_tables(md, tab, nullptr, 0);
    auto* coef = reinterpret_cast<cplx*>(coef_buf.get(4 * n2));
    for (int64_t n = 0; n < n2; ++n) coef[n] = 2.0 * md.c(n) * md.b(n) * md.lambda_pow(n, t0);
    float* G = g_buf.get(kRowsPerCall * 2 * n2);
    float* out = out_buf.get(round_up(count, kSub));
    expand_series(md, coef, tab, G, count, false, out);
    std::memcpy(k + h * L + t0, out, static_cast<size_t>(count) * sizeof(float));
  });
  return ok_status();
}

// ---- ssmConv ----

namespace {

// Block length when the caller leaves it out: long enough that the FFT's log factor stays small next
// to the state passing's O(N) per sample, short enough that a block's buffers stay in L2.
constexpr int64_t kDefaultBlock = 2048;

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

  const int64_t L = p.L, H = p.H, n2 = p.N2, K = 2 * n2;
  const int64_t T = std::min(L, p.block_size > 0 ? p.block_size : kDefaultBlock);
  const int64_t blocks = (L + T - 1) / T;
  const int64_t t_pad = round_up(T, kSub);
  const int64_t Kp = round_up(std::max<int64_t>(K, 1), 16);
  const plan& pl = cpu::fft::get_plan(std::max(1, cpu::fft::log2_ceil(2 * T - 1)));
  const int64_t n = pl.n, m = pl.m;
  const float* log_dt = p.log_dt.ptr<const float>();
  const float* A = p.A.ptr<const float>();
  const float* C = p.C.ptr<const float>();
  const float* D = p.D.ptr<const float>();
  const float* init = p.initial_state.ptr<const float>();
  float* last = p.last_state.ptr<float>();
  const bool need_last = last != nullptr;
  const level_kernels& lk = kern();

  // Units of work: one channel with all its batch rows (the channel's tables and kernel spectrum are
  // built once), or one (channel, row) pair when there are fewer channels than threads.
  const bool split_batch = H < cpu::get_num_threads() && p.batch > 1;
  const int64_t units = split_batch ? H * p.batch : H;
  for_rows(units, [&](int64_t unit) {
    const int64_t h = split_batch ? unit / p.batch : unit;
    const int64_t b_begin = split_batch ? unit % p.batch : 0;
    const int64_t b_end = split_batch ? b_begin + 1 : p.batch;
    thread_local scratch etab_buf, rtab_buf, spec_buf, x_buf, re_buf, im_buf, u_buf, g_buf, r_buf, state_buf;
    const s4d_modes md = modes_of(log_dt, A, C, h, n2);
    float* etab = etab_buf.get(K * kSub);
    float* rtab = rtab_buf.get(kSub * Kp);
    build_tables(md, etab, rtab, Kp);
    float* G = g_buf.get(kRowsPerCall * std::max<int64_t>(K, 1));
    // (N2) complex each: the coefficients of a series, the state, the block's input sum, lambda^T, B.
    auto* work = reinterpret_cast<cplx*>(state_buf.get(4 * 5 * std::max<int64_t>(n2, 1)));
    cplx* coef = work;
    cplx* state = work + n2;
    cplx* sum = work + 2 * n2;
    cplx* lam_t = work + 3 * n2;
    cplx* bbar = work + 4 * n2;
    for (int64_t i = 0; i < n2; ++i) {
      lam_t[i] = md.lambda_pow(i, T);
      bbar[i] = md.b(i);
    }

    // The block kernel k[0, T) (D on its first tap) and its spectrum.
    float* x = x_buf.get(std::max(n, t_pad));
    for (int64_t i = 0; i < n2; ++i) coef[i] = 2.0 * md.c(i) * bbar[i];
    expand_series(md, coef, etab, G, T, false, x);
    if (D != nullptr) x[0] += D[h];
    std::fill(x + T, x + n, 0.0f);
    float* spec = spec_buf.get(2 * m);
    cpu::fft::pack(pl, x, spec, spec + m);
    cpu::fft::forward(pl, spec, spec + m);
    cpu::fft::filter_spectrum(pl, spec, spec + m, 1.0f);

    float* re = re_buf.get(m);
    float* im = im_buf.get(m);
    float* ub = u_buf.get(t_pad);
    float* R = r_buf.get((t_pad / kSub) * Kp);
    for (int64_t b = b_begin; b < b_end; ++b) {
      const int64_t row = b * H + h;
      bool has_state = false;
      for (int64_t i = 0; i < n2; ++i) {
        state[i] = 0.0;
        if (init != nullptr) {
          state[i] = cplx(init[(row * n2 + i) * 2], init[(row * n2 + i) * 2 + 1]);
          has_state = has_state || state[i] != 0.0;
        }
      }
      for (int64_t c = 0; c < blocks; ++c) {
        const int64_t t0 = c * T, count = std::min(T, L - t0);
        lk.to_float(dt, p.u.data, row * L + t0, x, count);
        const bool update = c + 1 < blocks || need_last;
        if (update) {
          // Right-aligned so that sum_p ub[p] lambda^(t_pad - 1 - p) = sum_j u_j lambda^(count - 1 - j).
          std::fill(ub, ub + t_pad - count, 0.0f);
          std::memcpy(ub + t_pad - count, x, static_cast<size_t>(count) * sizeof(float));
          const int64_t na = t_pad / kSub;
          lk.reduce(ub, rtab, na, Kp, kSub, R);
          for (int64_t i = 0; i < n2; ++i) {
            const cplx step = md.lambda_pow(i, kSub);
            cplx acc = 0.0;
            for (int64_t a = 0; a < na; ++a)
              acc = acc * step + cplx(R[a * Kp + 2 * i], R[a * Kp + 2 * i + 1]);
            sum[i] = acc;
          }
        }
        std::fill(x + count, x + n, 0.0f);
        cpu::fft::pack(pl, x, re, im);
        cpu::fft::forward(pl, re, im);
        cpu::fft::convolve(pl, re, im, spec, spec + m);
        cpu::fft::inverse(pl, re, im);
        cpu::fft::unpack(pl, re, im, x, count);
        if (has_state) {
          for (int64_t i = 0; i < n2; ++i) coef[i] = 2.0 * md.c(i) * md.lambda(i) * state[i];
          expand_series(md, coef, etab, G, count, true, x);
        }
        lk.from_float(dt, x, p.out.data, row * L + t0, count);
        if (update) {
          const bool full = count == T;
          for (int64_t i = 0; i < n2; ++i) {
            state[i] = (full ? lam_t[i] : md.lambda_pow(i, count)) * state[i] + bbar[i] * sum[i];
          }
          has_state = true;
        }
      }
      if (need_last) {
        for (int64_t i = 0; i < n2; ++i) {
          last[(row * n2 + i) * 2] = static_cast<float>(state[i].real());
          last[(row * n2 + i) * 2 + 1] = static_cast<float>(state[i].imag());
        }
      }
    }
  });
  return ok_status();
}

int64_t fft_scratch_bytes() {
  return cpu::fft::scratch_bytes();
}
int64_t fft_scratch_peak_bytes() {
  return cpu::fft::scratch_peak_bytes();
}

}  // namespace ssmkit
