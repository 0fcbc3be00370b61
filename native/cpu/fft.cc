// The FFT of fft.h. Kernels are templates on the vector width W written with GCC/clang vector types;
// each SIMD level (AVX-512: W = 16, AVX2: W = 8, baseline SSE2/NEON: W = 4) has entry points compiled
// with its target attribute into which the templates are inlined. A plan's width is the largest W of
// the level with W * W <= m; smaller transforms (m < 16) use plain scalar radix-2 loops.
//
// Stage order of the forward transform: radix-4 passes over the whole array while the block is larger
// than kChunk (so each later pass works on a chunk that stays in L1/L2), then per chunk the radix-4
// passes down to block 4W (and one radix-2 pass at block 2W when the count is odd), then the in-register
// transposed W-point stage. The inverse runs the same stages backwards with conjugate twiddles.
#include "fft.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

namespace ssmkit::cpu::fft {
namespace {

// Blocks at most this many complex values (32 KiB of re + im) are finished in one go.
constexpr int64_t kChunk = 4096;
constexpr double kTwoPi = 6.283185307179586476925286766559;

// ---- scratch accounting ----

std::atomic<int64_t> g_scratch_bytes{0};
std::atomic<int64_t> g_scratch_peak{0};

void count_scratch(int64_t delta) {
  const int64_t now = g_scratch_bytes.fetch_add(delta, std::memory_order_relaxed) + delta;
  int64_t peak = g_scratch_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_scratch_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// ---- twiddle tables, shared by every plan: one per block size ----

std::mutex g_table_mutex;
std::atomic<const float*> g_tw4[31];
std::atomic<const float*> g_tw2[31];
std::atomic<const plan*> g_plans[31];

// Radix-4 block of S = 2^log2s: for j < S/4, W^j, W^2j, W^3j (W = exp(-2 pi i / S)) as
// (w1 re, w1 im, w2 re, w2 im, w3 re, w3 im), each S/4 long.
const float* tw4(int log2s) {
  const float* t = g_tw4[log2s].load(std::memory_order_acquire);
  if (t != nullptr) return t;
  std::lock_guard<std::mutex> lock(g_table_mutex);
  t = g_tw4[log2s].load(std::memory_order_relaxed);
  if (t != nullptr) return t;
  const int64_t s = int64_t{1} << log2s;
  const int64_t q = s / 4;
  float* v = new float[6 * q];
  for (int64_t j = 0; j < q; ++j) {
    for (int k = 1; k <= 3; ++k) {
      const double a = -kTwoPi * static_cast<double>(k * j) / static_cast<double>(s);
      v[(2 * k - 2) * q + j] = static_cast<float>(std::cos(a));
      v[(2 * k - 1) * q + j] = static_cast<float>(std::sin(a));
    }
  }
  g_tw4[log2s].store(v, std::memory_order_release);
  return v;
}

// Radix-2 block of S = 2^log2s: for j < S/2, W^j as (re, im), each S/2 long.
const float* tw2(int log2s) {
  const float* t = g_tw2[log2s].load(std::memory_order_acquire);
  if (t != nullptr) return t;
  std::lock_guard<std::mutex> lock(g_table_mutex);
  t = g_tw2[log2s].load(std::memory_order_relaxed);
  if (t != nullptr) return t;
  const int64_t s = int64_t{1} << log2s;
  const int64_t h = s / 2;
  float* v = new float[2 * h];
  for (int64_t j = 0; j < h; ++j) {
    const double a = -kTwoPi * static_cast<double>(j) / static_cast<double>(s);
    v[j] = static_cast<float>(std::cos(a));
    v[h + j] = static_cast<float>(std::sin(a));
  }
  g_tw2[log2s].store(v, std::memory_order_release);
  return v;
}

int level_width() {
  switch (simd()) {
    case SIMD_AVX512:
    case SIMD_AVX512_VNNI: return 16;
    case SIMD_AVX2: return 8;
    default: return 4;
  }
}

uint64_t bit_reverse(uint64_t x, int bits) {
  uint64_t r = 0;
  for (int i = 0; i < bits; ++i) {
    r = (r << 1) | (x & 1);
    x >>= 1;
  }
  return r;
}

// The transposed last stage swaps the two low fields of log2(w) bits each.
uint64_t swap_fields(uint64_t p, int w) {
  if (w == 0) return p;
  const int b = __builtin_ctz(static_cast<unsigned>(w));
  const uint64_t mask = static_cast<uint64_t>(w - 1);
  const uint64_t r = (p >> b) & mask;
  const uint64_t c = p & mask;
  return (p & ~((mask << b) | mask)) | (c << b) | r;
}

plan* build_plan(int log2n) {
  auto* p = new plan();
  p->log2n = log2n;
  p->n = int64_t{1} << log2n;
  p->m = p->n / 2;
  const int bits = log2n - 1;
  const int64_t m = p->m;
  int w = level_width();
  while (w >= 4 && static_cast<int64_t>(w) * w > m) w /= 2;
  p->width = w >= 4 ? w : 0;
  p->head = p->width == 0 ? m : static_cast<int64_t>(p->width) * p->width;
  for (int k = 1; k <= bits; ++k) {
    tw2(k);
    if (k >= 2) tw4(k);
  }
  auto freq_of = [&](uint64_t pos) { return bit_reverse(swap_fields(pos, p->width), bits); };
  auto* re = new float[m];
  auto* im = new float[m];
  for (int64_t pos = 0; pos < m; ++pos) {
    const double a = -kTwoPi * static_cast<double>(freq_of(pos)) / static_cast<double>(p->n);
    re[pos] = static_cast<float>(std::cos(a));
    im[pos] = static_cast<float>(std::sin(a));
  }
  auto* partner = new int32_t[p->head];
  auto* freq = new int64_t[p->head];
  for (int64_t pos = 0; pos < p->head; ++pos) {
    const uint64_t f = freq_of(pos);
    freq[pos] = static_cast<int64_t>(f);
    const uint64_t g = (static_cast<uint64_t>(m) - f) & static_cast<uint64_t>(m - 1);
    partner[pos] = static_cast<int32_t>(swap_fields(bit_reverse(g, bits), p->width));
  }
  p->pair_re = re;
  p->pair_im = im;
  p->partner = partner;
  p->freq = freq;
  if (p->width > 0) {
    std::vector<int32_t> ks, ms;
    for (int64_t pos = 1; pos < p->head; ++pos) {
      if (partner[pos] < pos) continue;
      ks.push_back(static_cast<int32_t>(pos));
      ms.push_back(partner[pos]);
    }
    while (ks.size() % static_cast<size_t>(p->width) != 0) {
      ks.push_back(ks.back());
      ms.push_back(ms.back());
    }
    const size_t np = ks.size();
    auto* hk = new int32_t[np];
    auto* hm = new int32_t[np];
    auto* wr = new float[np];
    auto* wi = new float[np];
    for (size_t j = 0; j < np; ++j) {
      hk[j] = ks[j];
      hm[j] = ms[j];
      wr[j] = re[ks[j]];
      wi[j] = im[ks[j]];
    }
    p->head_pairs = static_cast<int64_t>(np);
    p->head_k = hk;
    p->head_m = hm;
    p->head_wr = wr;
    p->head_wi = wi;
  }
  return p;
}

// ---- scalar kernels: transforms with m < 16, and the pair positions below a plan's head ----

void forward_scalar(const plan& p, float* re, float* im) {
  const int64_t m = p.m;
  for (int64_t s = m; s >= 2; s /= 2) {
    const int64_t h = s / 2;
    const float* tw = tw2(__builtin_ctzll(static_cast<uint64_t>(s)));
    for (int64_t b = 0; b < m; b += s) {
      for (int64_t j = 0; j < h; ++j) {
        const float ar = re[b + j], ai = im[b + j], br = re[b + j + h], bi = im[b + j + h];
        const float dr = ar - br, di = ai - bi, wr = tw[j], wi = tw[h + j];
        re[b + j] = ar + br;
        im[b + j] = ai + bi;
        re[b + j + h] = dr * wr - di * wi;
        im[b + j + h] = dr * wi + di * wr;
      }
    }
  }
}

void inverse_scalar(const plan& p, float* re, float* im) {
  const int64_t m = p.m;
  for (int64_t s = 2; s <= m; s *= 2) {
    const int64_t h = s / 2;
    const float* tw = tw2(__builtin_ctzll(static_cast<uint64_t>(s)));
    for (int64_t b = 0; b < m; b += s) {
      for (int64_t j = 0; j < h; ++j) {
        const float wr = tw[j], wi = tw[h + j];
        const float br0 = re[b + j + h], bi0 = im[b + j + h];
        const float br = br0 * wr + bi0 * wi, bi = bi0 * wr - br0 * wi;
        const float ar = re[b + j], ai = im[b + j];
        re[b + j] = ar + br;
        im[b + j] = ai + bi;
        re[b + j + h] = ar - br;
        im[b + j + h] = ai - bi;
      }
    }
  }
}

// Spectrum of the packed real filter at the head positions (see filter_spectrum_impl for the math).
void filter_head(const plan& p, float* re, float* im, float scale) {
  const float g0 = scale / static_cast<float>(2 * p.m);
  scale /= static_cast<float>(8 * p.m);
  for (int64_t pos = 0; pos < p.head; ++pos) {
    const int64_t q = p.partner[pos];
    if (q < pos) continue;
    if (pos == 0) {
      const float a = re[0], b = im[0];
      re[0] = (a + b) * g0;
      im[0] = (a - b) * g0;
      continue;
    }
    const float ar = re[pos], ai = im[pos], br = re[q], bi = im[q];
    const float wr = p.pair_re[pos], wi = p.pair_im[pos];
    const float er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
    const float wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
    re[pos] = (er + wor) * scale;
    im[pos] = (ei + woi) * scale;
    re[q] = (er - wor) * scale;
    im[q] = (woi - ei) * scale;
  }
}

void convolve_head(const plan& p, float* re, float* im, const float* hre, const float* him) {
  for (int64_t pos = 0; pos < p.head; ++pos) {
    const int64_t q = p.partner[pos];
    if (q < pos) continue;
    if (pos == 0) {
      const float a = re[0], b = im[0];
      const float y0 = (a + b) * hre[0], ym = (a - b) * him[0];
      re[0] = y0 + ym;
      im[0] = y0 - ym;
      continue;
    }
    const float ar = re[pos], ai = im[pos], br = re[q], bi = im[q];
    const float wr = p.pair_re[pos], wi = p.pair_im[pos];
    const float er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
    const float wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
    const float xkr = er + wor, xki = ei + woi, xmr = er - wor, xmi = woi - ei;
    const float hkr = hre[pos], hki = him[pos], hmr = hre[q], hmi = him[q];
    const float ykr = xkr * hkr - xki * hki, yki = xkr * hki + xki * hkr;
    const float ymr = xmr * hmr - xmi * hmi, ymi = xmr * hmi + xmi * hmr;
    const float fr = ykr + ymr, fi = yki - ymi, gr = ykr - ymr, gi = yki + ymi;
    const float tr = wi * gr - wr * gi, ti = wr * gr + wi * gi;
    re[pos] = fr + tr;
    im[pos] = fi + ti;
    re[q] = fr - tr;
    im[q] = ti - fi;
  }
}

// ---- vector kernels ----

template <int W>
struct cplx {
  vf<W> r, i;
};

template <int W>
SSMKIT_INLINE cplx<W> cmul(const vf<W>& ar, const vf<W>& ai, const vf<W>& br, const vf<W>& bi) {
  return {ar * br - ai * bi, ar * bi + ai * br};
}
// a * conj(b)
template <int W>
SSMKIT_INLINE cplx<W> cmulc(const vf<W>& ar, const vf<W>& ai, const vf<W>& br, const vf<W>& bi) {
  return {ar * br + ai * bi, ai * br - ar * bi};
}

// Radix-4 decimation-in-frequency butterfly on x0..x3 (re, im), in place; twiddles w1..w3 unless
// kUnit. Outputs land where two radix-2 stages would put them.
template <int W, bool kUnit>
SSMKIT_INLINE void bfly4_dif(vf<W>& x0r, vf<W>& x0i, vf<W>& x1r, vf<W>& x1i, vf<W>& x2r, vf<W>& x2i,
                             vf<W>& x3r, vf<W>& x3i, const vf<W>& w1r, const vf<W>& w1i, const vf<W>& w2r,
                             const vf<W>& w2i, const vf<W>& w3r, const vf<W>& w3i) {
  const vf<W> t0r = x0r + x2r, t0i = x0i + x2i, t1r = x0r - x2r, t1i = x0i - x2i;
  const vf<W> t2r = x1r + x3r, t2i = x1i + x3i, dr = x1r - x3r, di = x1i - x3i;
  x0r = t0r + t2r;
  x0i = t0i + t2i;
  const vf<W> ar = t0r - t2r, ai = t0i - t2i;
  const vf<W> br = t1r + di, bi = t1i - dr;
  const vf<W> cr = t1r - di, ci = t1i + dr;
  if (kUnit) {
    x1r = ar, x1i = ai, x2r = br, x2i = bi, x3r = cr, x3i = ci;
  } else {
    const cplx<W> y1 = cmul<W>(ar, ai, w2r, w2i), y2 = cmul<W>(br, bi, w1r, w1i),
                  y3 = cmul<W>(cr, ci, w3r, w3i);
    x1r = y1.r, x1i = y1.i, x2r = y2.r, x2i = y2.i, x3r = y3.r, x3i = y3.i;
  }
}

// The inverse of bfly4_dif (times 4), with conjugate twiddles.
template <int W, bool kUnit>
SSMKIT_INLINE void bfly4_dit(vf<W>& x0r, vf<W>& x0i, vf<W>& x1r, vf<W>& x1i, vf<W>& x2r, vf<W>& x2i,
                             vf<W>& x3r, vf<W>& x3i, const vf<W>& w1r, const vf<W>& w1i, const vf<W>& w2r,
                             const vf<W>& w2i, const vf<W>& w3r, const vf<W>& w3i) {
  vf<W> br = x1r, bi = x1i, cr = x2r, ci = x2i, dr = x3r, di = x3i;
  if (!kUnit) {
    const cplx<W> b = cmulc<W>(x1r, x1i, w2r, w2i), c = cmulc<W>(x2r, x2i, w1r, w1i),
                  d = cmulc<W>(x3r, x3i, w3r, w3i);
    br = b.r, bi = b.i, cr = c.r, ci = c.i, dr = d.r, di = d.i;
  }
  const vf<W> t0r = x0r + br, t0i = x0i + bi, t2r = x0r - br, t2i = x0i - bi;
  const vf<W> t1r = cr + dr, t1i = ci + di, t3r = cr - dr, t3i = ci - di;
  x0r = t0r + t1r;
  x0i = t0i + t1i;
  x2r = t0r - t1r;
  x2i = t0i - t1i;
  x1r = t2r - t3i;
  x1i = t2i + t3r;
  x3r = t2r + t3i;
  x3i = t2i - t3r;
}

// Vector butterflies [u0, u1) of a radix-4 pass at block s, numbered block by block: unit u is column
// (u mod q/W) W of block u div (q/W), q = s/4.
template <int W>
SSMKIT_INLINE void dif4_units(float* re, float* im, int64_t s, const float* tw, int64_t u0, int64_t u1) {
  const int64_t q = s / 4, per = q / W;
  int64_t blk = u0 / per, j = (u0 % per) * W;
  for (int64_t u = u0; u < u1; ++u) {
    float* r = re + blk * s;
    float* i = im + blk * s;
    vf<W> x0r = vload<W>(r + j), x0i = vload<W>(i + j), x1r = vload<W>(r + q + j), x1i = vload<W>(i + q + j);
    vf<W> x2r = vload<W>(r + 2 * q + j), x2i = vload<W>(i + 2 * q + j), x3r = vload<W>(r + 3 * q + j),
          x3i = vload<W>(i + 3 * q + j);
    bfly4_dif<W, false>(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i, vload<W>(tw + j), vload<W>(tw + q + j),
                        vload<W>(tw + 2 * q + j), vload<W>(tw + 3 * q + j), vload<W>(tw + 4 * q + j),
                        vload<W>(tw + 5 * q + j));
    vstore<W>(r + j, x0r), vstore<W>(i + j, x0i), vstore<W>(r + q + j, x1r), vstore<W>(i + q + j, x1i);
    vstore<W>(r + 2 * q + j, x2r), vstore<W>(i + 2 * q + j, x2i), vstore<W>(r + 3 * q + j, x3r);
    vstore<W>(i + 3 * q + j, x3i);
    j += W;
    if (j == q) {
      j = 0;
      ++blk;
    }
  }
}

template <int W>
SSMKIT_INLINE void dif4_pass(float* re, float* im, int64_t len, int64_t s, const float* tw) {
  dif4_units<W>(re, im, s, tw, 0, len / 4 / W);
}

// Vector butterflies [u0, u1) of a radix-4 pass at block s, numbered block by block: unit u is column
// (u mod q/W) W of block u div (q/W), q = s/4.
template <int W>
SSMKIT_INLINE void dit4_units(float* re, float* im, int64_t s, const float* tw, int64_t u0, int64_t u1) {
  const int64_t q = s / 4, per = q / W;
  int64_t blk = u0 / per, j = (u0 % per) * W;
  for (int64_t u = u0; u < u1; ++u) {
    float* r = re + blk * s;
    float* i = im + blk * s;
    vf<W> x0r = vload<W>(r + j), x0i = vload<W>(i + j), x1r = vload<W>(r + q + j), x1i = vload<W>(i + q + j);
    vf<W> x2r = vload<W>(r + 2 * q + j), x2i = vload<W>(i + 2 * q + j), x3r = vload<W>(r + 3 * q + j),
          x3i = vload<W>(i + 3 * q + j);
    bfly4_dit<W, false>(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i, vload<W>(tw + j), vload<W>(tw + q + j),
                        vload<W>(tw + 2 * q + j), vload<W>(tw + 3 * q + j), vload<W>(tw + 4 * q + j),
                        vload<W>(tw + 5 * q + j));
    vstore<W>(r + j, x0r), vstore<W>(i + j, x0i), vstore<W>(r + q + j, x1r), vstore<W>(i + q + j, x1i);
    vstore<W>(r + 2 * q + j, x2r), vstore<W>(i + 2 * q + j, x2i), vstore<W>(r + 3 * q + j, x3r);
    vstore<W>(i + 3 * q + j, x3i);
    j += W;
    if (j == q) {
      j = 0;
      ++blk;
    }
  }
}

template <int W>
SSMKIT_INLINE void dit4_pass(float* re, float* im, int64_t len, int64_t s, const float* tw) {
  dit4_units<W>(re, im, s, tw, 0, len / 4 / W);
}

template <int W>
SSMKIT_INLINE void dif2_pass(float* re, float* im, int64_t len, int64_t s, const float* tw) {
  const int64_t h = s / 2;
  for (int64_t b = 0; b < len; b += s) {
    float* r = re + b;
    float* i = im + b;
    for (int64_t j = 0; j < h; j += W) {
      const vf<W> ar = vload<W>(r + j), ai = vload<W>(i + j), br = vload<W>(r + h + j),
                  bi = vload<W>(i + h + j);
      const cplx<W> d = cmul<W>(ar - br, ai - bi, vload<W>(tw + j), vload<W>(tw + h + j));
      vstore<W>(r + j, ar + br), vstore<W>(i + j, ai + bi), vstore<W>(r + h + j, d.r),
          vstore<W>(i + h + j, d.i);
    }
  }
}

template <int W>
SSMKIT_INLINE void dit2_pass(float* re, float* im, int64_t len, int64_t s, const float* tw) {
  const int64_t h = s / 2;
  for (int64_t b = 0; b < len; b += s) {
    float* r = re + b;
    float* i = im + b;
    for (int64_t j = 0; j < h; j += W) {
      const vf<W> ar = vload<W>(r + j), ai = vload<W>(i + j);
      const cplx<W> d =
          cmulc<W>(vload<W>(r + h + j), vload<W>(i + h + j), vload<W>(tw + j), vload<W>(tw + h + j));
      vstore<W>(r + j, ar + d.r), vstore<W>(i + j, ai + d.i), vstore<W>(r + h + j, ar - d.r);
      vstore<W>(i + h + j, ai - d.i);
    }
  }
}

template <int W>
SSMKIT_INLINE void transpose(vf<W>* v) {
#pragma GCC unroll 8
  for (int step = 1; step < W; step *= 2) {
    vf<W> o[W];
#pragma GCC unroll 16
    for (int k = 0; k < W / 2; ++k) {
      o[2 * k] = vzip_lo<W>(v[k], v[k + W / 2]);
      o[2 * k + 1] = vzip_hi<W>(v[k], v[k + W / 2]);
    }
#pragma GCC unroll 16
    for (int k = 0; k < W; ++k) v[k] = o[k];
  }
}

constexpr int ilog2(int x) {
  return x <= 1 ? 0 : 1 + ilog2(x / 2);
}
int ilog2s(int64_t x) {
  return __builtin_ctzll(static_cast<uint64_t>(x));
}

// The W-point DIF across rows r[0..W), i[0..W) (each lane an independent sequence).
template <int W>
SSMKIT_INLINE void rows_dif(vf<W>* r, vf<W>* i) {
  int b = W;
  if (ilog2(W) & 1) {
    const float* tw = tw2(ilog2(W));
#pragma GCC unroll 16
    for (int j = 0; j < W / 2; ++j) {
      const vf<W> ar = r[j], ai = i[j], br = r[j + W / 2], bi = i[j + W / 2];
      r[j] = ar + br;
      i[j] = ai + bi;
      const cplx<W> d = cmul<W>(ar - br, ai - bi, vsplat<W>(tw[j]), vsplat<W>(tw[W / 2 + j]));
      r[j + W / 2] = d.r;
      i[j + W / 2] = d.i;
    }
    b = W / 2;
  }
  for (; b >= 4; b /= 4) {
    const int q = b / 4;
    const float* tw = tw4(ilog2(b));
#pragma GCC unroll 16
    for (int s = 0; s < W; s += b) {
#pragma GCC unroll 4
      for (int j = 0; j < q; ++j) {
        const int k = s + j;
        if (j == 0) {
          const vf<W> z{};
          bfly4_dif<W, true>(r[k], i[k], r[k + q], i[k + q], r[k + 2 * q], i[k + 2 * q], r[k + 3 * q],
                             i[k + 3 * q], z, z, z, z, z, z);
        } else {
          bfly4_dif<W, false>(r[k], i[k], r[k + q], i[k + q], r[k + 2 * q], i[k + 2 * q], r[k + 3 * q],
                              i[k + 3 * q], vsplat<W>(tw[j]), vsplat<W>(tw[q + j]), vsplat<W>(tw[2 * q + j]),
                              vsplat<W>(tw[3 * q + j]), vsplat<W>(tw[4 * q + j]), vsplat<W>(tw[5 * q + j]));
        }
      }
    }
  }
}

template <int W>
SSMKIT_INLINE void rows_dit(vf<W>* r, vf<W>* i) {
  const int top = (ilog2(W) & 1) ? W / 2 : W;
  for (int b = 4; b <= top; b *= 4) {
    const int q = b / 4;
    const float* tw = tw4(ilog2(b));
#pragma GCC unroll 16
    for (int s = 0; s < W; s += b) {
#pragma GCC unroll 4
      for (int j = 0; j < q; ++j) {
        const int k = s + j;
        if (j == 0) {
          const vf<W> z{};
          bfly4_dit<W, true>(r[k], i[k], r[k + q], i[k + q], r[k + 2 * q], i[k + 2 * q], r[k + 3 * q],
                             i[k + 3 * q], z, z, z, z, z, z);
        } else {
          bfly4_dit<W, false>(r[k], i[k], r[k + q], i[k + q], r[k + 2 * q], i[k + 2 * q], r[k + 3 * q],
                              i[k + 3 * q], vsplat<W>(tw[j]), vsplat<W>(tw[q + j]), vsplat<W>(tw[2 * q + j]),
                              vsplat<W>(tw[3 * q + j]), vsplat<W>(tw[4 * q + j]), vsplat<W>(tw[5 * q + j]));
        }
      }
    }
  }
  if (ilog2(W) & 1) {
    const float* tw = tw2(ilog2(W));
#pragma GCC unroll 16
    for (int j = 0; j < W / 2; ++j) {
      const vf<W> ar = r[j], ai = i[j];
      const cplx<W> d = cmulc<W>(r[j + W / 2], i[j + W / 2], vsplat<W>(tw[j]), vsplat<W>(tw[W / 2 + j]));
      r[j] = ar + d.r;
      i[j] = ai + d.i;
      r[j + W / 2] = ar - d.r;
      i[j + W / 2] = ai - d.i;
    }
  }
}

// Last forward stage: W blocks of W values are transposed, transformed across rows and stored as rows.
template <int W>
SSMKIT_INLINE void dif_last(float* re, float* im, int64_t len) {
  for (int64_t g = 0; g < len; g += W * W) {
    vf<W> r[W], i[W];
#pragma GCC unroll 16
    for (int c = 0; c < W; ++c) {
      r[c] = vload<W>(re + g + c * W);
      i[c] = vload<W>(im + g + c * W);
    }
    transpose<W>(r);
    transpose<W>(i);
    rows_dif<W>(r, i);
#pragma GCC unroll 16
    for (int c = 0; c < W; ++c) {
      vstore<W>(re + g + c * W, r[c]);
      vstore<W>(im + g + c * W, i[c]);
    }
  }
}

template <int W>
SSMKIT_INLINE void dit_first(float* re, float* im, int64_t len) {
  for (int64_t g = 0; g < len; g += W * W) {
    vf<W> r[W], i[W];
#pragma GCC unroll 16
    for (int c = 0; c < W; ++c) {
      r[c] = vload<W>(re + g + c * W);
      i[c] = vload<W>(im + g + c * W);
    }
    rows_dit<W>(r, i);
    transpose<W>(r);
    transpose<W>(i);
#pragma GCC unroll 16
    for (int c = 0; c < W; ++c) {
      vstore<W>(re + g + c * W, r[c]);
      vstore<W>(im + g + c * W, i[c]);
    }
  }
}

// The stage list of a vector plan: whole-array radix-4 passes (block sizes big[0..nbig)), then per
// chunk the radix-4 passes at block sizes small[0..nsmall), the radix-2 pass at 2W when `odd`, and the
// transposed last stage.
struct stages {
  int64_t big[16];
  int nbig = 0;
  int64_t chunk = 0;
  int64_t small[16];
  int nsmall = 0;
  bool odd = false;
};

stages stage_list(int64_t m, int w) {
  stages st;
  int64_t s = m;
  while (s > kChunk) {
    st.big[st.nbig++] = s;
    s /= 4;
  }
  st.chunk = s;
  int count = ilog2(static_cast<int>(s)) - ilog2(w);
  while (count >= 2) {
    st.small[st.nsmall++] = s;
    s /= 4;
    count -= 2;
  }
  st.odd = count == 1;
  return st;
}

// Big stage k of the forward transform, vector butterflies [u0, u1) of m / 4W.
template <int W>
SSMKIT_INLINE void forward_stage_impl(const plan& p, float* re, float* im, int k, int64_t u0, int64_t u1) {
  const stages st = stage_list(p.m, W);
  dif4_units<W>(re, im, st.big[k], tw4(ilog2s(st.big[k])), u0, u1);
}

// Chunks [c0, c1) through the rest of the forward transform.
template <int W>
SSMKIT_INLINE void forward_chunks_impl(const plan& p, float* re, float* im, int64_t c0, int64_t c1) {
  const stages st = stage_list(p.m, W);
  for (int64_t c = c0; c < c1; ++c) {
    float* r = re + c * st.chunk;
    float* i = im + c * st.chunk;
    for (int k = 0; k < st.nsmall; ++k) dif4_pass<W>(r, i, st.chunk, st.small[k], tw4(ilog2s(st.small[k])));
    if (st.odd) dif2_pass<W>(r, i, st.chunk, 2 * W, tw2(ilog2(2 * W)));
    dif_last<W>(r, i, st.chunk);
  }
}

template <int W>
SSMKIT_INLINE void inverse_chunks_impl(const plan& p, float* re, float* im, int64_t c0, int64_t c1) {
  const stages st = stage_list(p.m, W);
  for (int64_t c = c0; c < c1; ++c) {
    float* r = re + c * st.chunk;
    float* i = im + c * st.chunk;
    dit_first<W>(r, i, st.chunk);
    if (st.odd) dit2_pass<W>(r, i, st.chunk, 2 * W, tw2(ilog2(2 * W)));
    for (int k = st.nsmall - 1; k >= 0; --k)
      dit4_pass<W>(r, i, st.chunk, st.small[k], tw4(ilog2s(st.small[k])));
  }
}

template <int W>
SSMKIT_INLINE void inverse_stage_impl(const plan& p, float* re, float* im, int k, int64_t u0, int64_t u1) {
  const stages st = stage_list(p.m, W);
  dit4_units<W>(re, im, st.big[k], tw4(ilog2s(st.big[k])), u0, u1);
}

// The pair math of filter_spectrum_impl / convolve_impl for the head: lanes of (k, m - k) pairs gathered
// through the plan's index lists, the results scattered back.
template <int W>
SSMKIT_INLINE void filter_head_vec(const plan& p, float* re, float* im, float scale) {
  {
    const float a = re[0], b = im[0], g0 = scale / static_cast<float>(2 * p.m);
    re[0] = (a + b) * g0;
    im[0] = (a - b) * g0;
  }
  const vf<W> sc = vsplat<W>(scale / static_cast<float>(8 * p.m));
  for (int64_t j = 0; j < p.head_pairs; j += W) {
    const int32_t* ik = p.head_k + j;
    const int32_t* im_ = p.head_m + j;
    vf<W> ar, ai, br, bi;
    for (int l = 0; l < W; ++l) ar[l] = re[ik[l]], ai[l] = im[ik[l]], br[l] = re[im_[l]], bi[l] = im[im_[l]];
    const vf<W> wr = vload<W>(p.head_wr + j), wi = vload<W>(p.head_wi + j);
    const vf<W> er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
    const vf<W> wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
    const vf<W> xkr = (er + wor) * sc, xki = (ei + woi) * sc, xmr = (er - wor) * sc, xmi = (woi - ei) * sc;
    for (int l = 0; l < W; ++l)
      re[ik[l]] = xkr[l], im[ik[l]] = xki[l], re[im_[l]] = xmr[l], im[im_[l]] = xmi[l];
  }
}

template <int W>
SSMKIT_INLINE void convolve_head_vec(const plan& p, float* re, float* im, const float* hre,
                                     const float* him) {
  {
    const float a = re[0], b = im[0];
    const float y0 = (a + b) * hre[0], ym = (a - b) * him[0];
    re[0] = y0 + ym;
    im[0] = y0 - ym;
  }
  for (int64_t j = 0; j < p.head_pairs; j += W) {
    const int32_t* ik = p.head_k + j;
    const int32_t* im_ = p.head_m + j;
    vf<W> ar, ai, br, bi, hkr, hki, hmr, hmi;
    for (int l = 0; l < W; ++l) {
      ar[l] = re[ik[l]], ai[l] = im[ik[l]], br[l] = re[im_[l]], bi[l] = im[im_[l]];
      hkr[l] = hre[ik[l]], hki[l] = him[ik[l]], hmr[l] = hre[im_[l]], hmi[l] = him[im_[l]];
    }
    const vf<W> wr = vload<W>(p.head_wr + j), wi = vload<W>(p.head_wi + j);
    const vf<W> er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
    const vf<W> wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
    const vf<W> xkr = er + wor, xki = ei + woi, xmr = er - wor, xmi = woi - ei;
    const vf<W> ykr = xkr * hkr - xki * hki, yki = xkr * hki + xki * hkr;
    const vf<W> ymr = xmr * hmr - xmi * hmi, ymi = xmr * hmi + xmi * hmr;
    const vf<W> fr = ykr + ymr, fi = yki - ymi, gr = ykr - ymr, gi = yki + ymi;
    const vf<W> tr = wi * gr - wr * gi, ti = wr * gr + wi * gi;
    const vf<W> zkr = fr + tr, zki = fi + ti, zmr = fr - tr, zmi = ti - fi;
    for (int l = 0; l < W; ++l)
      re[ik[l]] = zkr[l], im[ik[l]] = zki[l], re[im_[l]] = zmr[l], im[im_[l]] = zmi[l];
  }
}

// Positions P >= head come in octaves [B, 2B); P in the first half pairs with 3B - 1 - P. For each
// pair (frequencies k and m - k) the packed spectrum Z gives the real signal's spectrum as
//   2X_k = (Z_k + conj Z_{m-k}) + w (-i)(Z_k - conj Z_{m-k}),   w = W_n^k,
//   2X_{m-k} = conj of the same with w's term negated.
template <int W>
SSMKIT_INLINE void filter_spectrum_impl(const plan& p, float* re, float* im, float scale) {
  filter_head_vec<W>(p, re, im, scale);
  const vf<W> sc = vsplat<W>(scale / static_cast<float>(8 * p.m));
  for (int64_t b = p.head; b < p.m; b *= 2) {
    for (int64_t pos = b; pos < b + b / 2; pos += W) {
      const int64_t q = 3 * b - W - pos;
      const vf<W> ar = vload<W>(re + pos), ai = vload<W>(im + pos);
      const vf<W> br = vreverse<W>(vload<W>(re + q)), bi = vreverse<W>(vload<W>(im + q));
      const vf<W> wr = vload<W>(p.pair_re + pos), wi = vload<W>(p.pair_im + pos);
      const vf<W> er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
      const vf<W> wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
      vstore<W>(re + pos, (er + wor) * sc);
      vstore<W>(im + pos, (ei + woi) * sc);
      vstore<W>(re + q, vreverse<W>((er - wor) * sc));
      vstore<W>(im + q, vreverse<W>((woi - ei) * sc));
    }
  }
}

// Per pair: X_k, X_{m-k} as above, Y = X H, then the packed spectrum of the inverse,
//   Z'_k = F + T, Z'_{m-k} = conj(F - T), F = Y_k + conj Y_{m-k}, T = i conj(w) (Y_k - conj Y_{m-k}).
// The factors 2 and the 1/m of the unnormalized inverse live in the filter spectrum's scale.
template <int W>
SSMKIT_INLINE void convolve_impl(const plan& p, float* re, float* im, const float* hre, const float* him,
                                 int64_t f0, int64_t f1) {
  if (f0 == 0) {
    convolve_head_vec<W>(p, re, im, hre, him);
    f0 = 1;
  }
  // Unit f >= 1 is the (f - 1)-th vector of first-half positions, octave after octave.
  int64_t b = p.head, v = f0 - 1;
  while (v >= b / 2 / W) {
    v -= b / 2 / W;
    b *= 2;
  }
  for (int64_t f = f0; f < f1; ++f) {
    {
      const int64_t pos = b + v * W;
      const int64_t q = 3 * b - W - pos;
      const vf<W> ar = vload<W>(re + pos), ai = vload<W>(im + pos);
      const vf<W> br = vreverse<W>(vload<W>(re + q)), bi = vreverse<W>(vload<W>(im + q));
      const vf<W> wr = vload<W>(p.pair_re + pos), wi = vload<W>(p.pair_im + pos);
      const vf<W> er = ar + br, ei = ai - bi, orr = ai + bi, oi = br - ar;
      const vf<W> wor = wr * orr - wi * oi, woi = wr * oi + wi * orr;
      const vf<W> xkr = er + wor, xki = ei + woi, xmr = er - wor, xmi = woi - ei;
      const vf<W> hkr = vload<W>(hre + pos), hki = vload<W>(him + pos);
      const vf<W> hmr = vreverse<W>(vload<W>(hre + q)), hmi = vreverse<W>(vload<W>(him + q));
      const vf<W> ykr = xkr * hkr - xki * hki, yki = xkr * hki + xki * hkr;
      const vf<W> ymr = xmr * hmr - xmi * hmi, ymi = xmr * hmi + xmi * hmr;
      const vf<W> fr = ykr + ymr, fi = yki - ymi, gr = ykr - ymr, gi = yki + ymi;
      const vf<W> tr = wi * gr - wr * gi, ti = wr * gr + wi * gi;
      vstore<W>(re + pos, fr + tr);
      vstore<W>(im + pos, fi + ti);
      vstore<W>(re + q, vreverse<W>(fr - tr));
      vstore<W>(im + q, vreverse<W>(ti - fi));
    }
    if (++v == b / 2 / W) {
      v = 0;
      b *= 2;
    }
  }
}

// Complex positions [k0, k1) (multiples of W) of pack and unpack.
template <int W>
SSMKIT_INLINE void pack_impl(const float* x, float* re, float* im, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; k += W) {
    const vf<W> a = vload<W>(x + 2 * k), b = vload<W>(x + 2 * k + W);
    vstore<W>(re + k, vevens<W>(a, b));
    vstore<W>(im + k, vodds<W>(a, b));
  }
}

template <int W>
SSMKIT_INLINE void unpack_impl(const float* re, const float* im, float* x, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; k += W) {
    const vf<W> a = vload<W>(re + k), b = vload<W>(im + k);
    vstore<W>(x + 2 * k, vzip_lo<W>(a, b));
    vstore<W>(x + 2 * k + W, vzip_hi<W>(a, b));
  }
}

void pack_scalar(const plan& p, const float* x, float* re, float* im) {
  for (int64_t k = 0; k < p.m; ++k) {
    re[k] = x[2 * k];
    im[k] = x[2 * k + 1];
  }
}

void unpack_scalar(const plan& p, const float* re, const float* im, float* x, int64_t count) {
  for (int64_t k = 0; 2 * k < count; ++k) {
    x[2 * k] = re[k];
    x[2 * k + 1] = im[k];
  }
}

// ---- per-level entry points ----

// Every kernel takes a range of its work units so that one long transform can be spread over the pool:
// big stages count vector butterflies (m / 4W), the chunk phase counts chunks, convolve counts the head
// (unit 0) and then vectors of first-half positions, pack and unpack count complex positions.
struct kernels {
  void (*forward_stage)(const plan&, float*, float*, int, int64_t, int64_t);
  void (*forward_chunks)(const plan&, float*, float*, int64_t, int64_t);
  void (*inverse_chunks)(const plan&, float*, float*, int64_t, int64_t);
  void (*inverse_stage)(const plan&, float*, float*, int, int64_t, int64_t);
  void (*filter_spectrum)(const plan&, float*, float*, float);
  void (*convolve)(const plan&, float*, float*, const float*, const float*, int64_t, int64_t);
  void (*pack)(const plan&, const float*, float*, float*, int64_t, int64_t);
  void (*unpack)(const plan&, const float*, const float*, float*, int64_t, int64_t);
};

// Calls F<W>(args...) for the plan's width W among the level's widths Ws.
#define SSMKIT_FFT_WIDTH(F, ...) (void)((p.width == Ws ? (F<Ws>(__VA_ARGS__), true) : false) || ...)

// Expands the entry points of one level, for the widths up to its own.
#define SSMKIT_FFT_LEVEL(NAME, ATTR, ...)                                                                \
  template <int... Ws>                                                                                   \
  struct NAME##_widths {                                                                                 \
    ATTR static void forward_stage(const plan& p, float* re, float* im, int k, int64_t u0, int64_t u1) { \
      SSMKIT_FFT_WIDTH(forward_stage_impl, p, re, im, k, u0, u1);                                        \
    }                                                                                                    \
    ATTR static void forward_chunks(const plan& p, float* re, float* im, int64_t c0, int64_t c1) {       \
      if (p.width == 0) return forward_scalar(p, re, im);                                                \
      SSMKIT_FFT_WIDTH(forward_chunks_impl, p, re, im, c0, c1);                                          \
    }                                                                                                    \
    ATTR static void inverse_chunks(const plan& p, float* re, float* im, int64_t c0, int64_t c1) {       \
      if (p.width == 0) return inverse_scalar(p, re, im);                                                \
      SSMKIT_FFT_WIDTH(inverse_chunks_impl, p, re, im, c0, c1);                                          \
    }                                                                                                    \
    ATTR static void inverse_stage(const plan& p, float* re, float* im, int k, int64_t u0, int64_t u1) { \
      SSMKIT_FFT_WIDTH(inverse_stage_impl, p, re, im, k, u0, u1);                                        \
    }                                                                                                    \
    ATTR static void filter_spectrum(const plan& p, float* re, float* im, float scale) {                 \
      if (p.width == 0) return filter_head(p, re, im, scale);                                            \
      SSMKIT_FFT_WIDTH(filter_spectrum_impl, p, re, im, scale);                                          \
    }                                                                                                    \
    ATTR static void convolve(const plan& p, float* re, float* im, const float* hre, const float* him,   \
                              int64_t f0, int64_t f1) {                                                  \
      if (p.width == 0) return convolve_head(p, re, im, hre, him);                                       \
      SSMKIT_FFT_WIDTH(convolve_impl, p, re, im, hre, him, f0, f1);                                      \
    }                                                                                                    \
    ATTR static void pack(const plan& p, const float* x, float* re, float* im, int64_t k0, int64_t k1) { \
      if (p.width == 0) return pack_scalar(p, x, re, im);                                                \
      SSMKIT_FFT_WIDTH(pack_impl, x, re, im, k0, k1);                                                    \
    }                                                                                                    \
    ATTR static void unpack(const plan& p, const float* re, const float* im, float* x, int64_t k0,       \
                            int64_t k1) {                                                                \
      if (p.width == 0) return unpack_scalar(p, re, im, x, 2 * k1);                                      \
      SSMKIT_FFT_WIDTH(unpack_impl, re, im, x, k0, k1);                                                  \
    }                                                                                                    \
  };                                                                                                     \
  const kernels NAME = {&NAME##_widths<__VA_ARGS__>::forward_stage,                                      \
                        &NAME##_widths<__VA_ARGS__>::forward_chunks,                                     \
                        &NAME##_widths<__VA_ARGS__>::inverse_chunks,                                     \
                        &NAME##_widths<__VA_ARGS__>::inverse_stage,                                      \
                        &NAME##_widths<__VA_ARGS__>::filter_spectrum,                                    \
                        &NAME##_widths<__VA_ARGS__>::convolve,                                           \
                        &NAME##_widths<__VA_ARGS__>::pack,                                               \
                        &NAME##_widths<__VA_ARGS__>::unpack};

#define SSMKIT_NO_ATTR
SSMKIT_FFT_LEVEL(k_base, SSMKIT_NO_ATTR, 4)
#if SSMKIT_X86
SSMKIT_FFT_LEVEL(k_avx2, SSMKIT_TARGET_AVX2, 8, 4)
SSMKIT_FFT_LEVEL(k_avx512, SSMKIT_TARGET_AVX512, 16, 8, 4)
#endif

const kernels& active() {
  static const kernels* k = [] {
#if SSMKIT_X86
    switch (simd()) {
      case SIMD_AVX512:
      case SIMD_AVX512_VNNI: return &k_avx512;
      case SIMD_AVX2: return &k_avx2;
      default: break;
    }
#endif
    return &k_base;
  }();
  return *k;
}

}  // namespace

int log2_ceil(int64_t x) {
  int k = 0;
  while ((int64_t{1} << k) < x) ++k;
  return k;
}

const plan& get_plan(int log2n) {
  const plan* p = g_plans[log2n].load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  plan* built = build_plan(log2n);
  std::lock_guard<std::mutex> lock(g_table_mutex);
  p = g_plans[log2n].load(std::memory_order_relaxed);
  if (p != nullptr) {
    delete[] built->pair_re;
    delete[] built->pair_im;
    delete[] built->partner;
    delete[] built->freq;
    delete[] built->head_k;
    delete[] built->head_m;
    delete[] built->head_wr;
    delete[] built->head_wi;
    delete built;
    return *p;
  }
  g_plans[log2n].store(built, std::memory_order_release);
  return *built;
}

namespace {

// How a plan's work splits into units (see kernels).
struct work {
  stages st;
  int64_t chunks = 1;
  int64_t stage_units = 0;
  int64_t conv_units = 1;
};

work work_of(const plan& p) {
  work w;
  if (p.width == 0) return w;
  w.st = stage_list(p.m, p.width);
  w.chunks = p.m / w.st.chunk;
  w.stage_units = p.m / 4 / p.width;
  w.conv_units = 1 + (p.m - p.head) / (2 * p.width);
  return w;
}

// Units per task when a pass is spread over the pool: a few microseconds of work each.
constexpr int64_t kUnitsPerTask = 512;

}  // namespace

void forward(const plan& p, float* re, float* im) {
  const kernels& k = active();
  const work w = work_of(p);
  for (int s = 0; s < w.st.nbig; ++s) k.forward_stage(p, re, im, s, 0, w.stage_units);
  k.forward_chunks(p, re, im, 0, w.chunks);
}
void inverse(const plan& p, float* re, float* im) {
  const kernels& k = active();
  const work w = work_of(p);
  k.inverse_chunks(p, re, im, 0, w.chunks);
  for (int s = w.st.nbig - 1; s >= 0; --s) k.inverse_stage(p, re, im, s, 0, w.stage_units);
}
void filter_spectrum(const plan& p, float* re, float* im, float scale) {
  active().filter_spectrum(p, re, im, scale);
}
void convolve(const plan& p, float* re, float* im, const float* hre, const float* him) {
  active().convolve(p, re, im, hre, him, 0, work_of(p).conv_units);
}
void pack(const plan& p, const float* x, float* re, float* im) {
  active().pack(p, x, re, im, 0, p.m);
}
void unpack(const plan& p, const float* re, const float* im, float* x, int64_t count) {
  const int64_t w = std::max(p.width, 1);
  active().unpack(p, re, im, x, 0, std::min(p.m, (count + 2 * w - 1) / (2 * w) * w));
}

void forward_parallel(const plan& p, float* re, float* im) {
  const kernels& k = active();
  const work w = work_of(p);
  for (int s = 0; s < w.st.nbig; ++s) {
    parallel_for(w.stage_units, kUnitsPerTask,
                 [&](int64_t u0, int64_t u1) { k.forward_stage(p, re, im, s, u0, u1); });
  }
  parallel_for(w.chunks, 1, [&](int64_t c0, int64_t c1) { k.forward_chunks(p, re, im, c0, c1); });
}
void inverse_parallel(const plan& p, float* re, float* im) {
  const kernels& k = active();
  const work w = work_of(p);
  parallel_for(w.chunks, 1, [&](int64_t c0, int64_t c1) { k.inverse_chunks(p, re, im, c0, c1); });
  for (int s = w.st.nbig - 1; s >= 0; --s) {
    parallel_for(w.stage_units, kUnitsPerTask,
                 [&](int64_t u0, int64_t u1) { k.inverse_stage(p, re, im, s, u0, u1); });
  }
}
void convolve_parallel(const plan& p, float* re, float* im, const float* hre, const float* him) {
  const kernels& k = active();
  parallel_for(work_of(p).conv_units, kUnitsPerTask,
               [&](int64_t f0, int64_t f1) { k.convolve(p, re, im, hre, him, f0, f1); });
}
void pack_parallel(const plan& p, const float* x, float* re, float* im) {
  const kernels& k = active();
  const int64_t w = std::max(p.width, 1);
  parallel_for(p.m / w, kUnitsPerTask, [&](int64_t u0, int64_t u1) { k.pack(p, x, re, im, u0 * w, u1 * w); });
}
void unpack_parallel(const plan& p, const float* re, const float* im, float* x, int64_t count) {
  const kernels& k = active();
  const int64_t w = std::max(p.width, 1);
  const int64_t units = std::min(p.m / w, (count + 2 * w - 1) / (2 * w));
  parallel_for(units, kUnitsPerTask, [&](int64_t u0, int64_t u1) { k.unpack(p, re, im, x, u0 * w, u1 * w); });
}

scratch::~scratch() {
  release();
}

void scratch::release() {
  if (data_ != nullptr) {
    count_scratch(-capacity_ * static_cast<int64_t>(sizeof(float)));
    std::free(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
}

float* scratch::get(int64_t n) {
  if (n <= capacity_) return data_;
  release();
  // Round up to whole cache lines, and a little beyond so that vector tails may read past the end.
  const int64_t cap = (n + 16 + 15) / 16 * 16;
  void* mem = std::aligned_alloc(64, static_cast<size_t>(cap) * sizeof(float));
  if (mem == nullptr) throw std::bad_alloc();
  data_ = static_cast<float*>(mem);
  capacity_ = cap;
  count_scratch(cap * static_cast<int64_t>(sizeof(float)));
  return data_;
}

int64_t scratch_bytes() {
  return g_scratch_bytes.load(std::memory_order_relaxed);
}
int64_t scratch_peak_bytes() {
  return g_scratch_peak.load(std::memory_order_relaxed);
}

}  // namespace ssmkit::cpu::fft
