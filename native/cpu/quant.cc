// CPU kernels of the quantization family's element-wise ops: hadamard, quantize and dequantize (the
// GEMMs and packWeights live in gemm.cc). Every op works row by row (one row = the last dimension) on a
// float32 copy of the row held in a thread-local buffer, rows spread over the thread pool.
//
// Variants: AVX-512 (chosen for the avx512 and vnni levels), AVX2 + FMA + F16C, and scalar. All three do
// the same float32 operations in the same order (a +-1 multiply is exact, so fma(x, +-1, acc) equals
// acc +- x), so their results are bitwise identical; the tests check that.
//
// Hadamard of n = m * 2^k, m in {12, 20, 28, 40}: we follow Dao-AILab's fast-hadamard-transform
// (hadamard_transform_12N/20N/28N/40N, the kernels Quamba uses): element i * 2^k + p of a row is chunk i,
// position p; the Sylvester transform of order 2^k runs over p inside each chunk, then the m x m matrix
// H_m mixes the chunks, out[i * 2^k + p] = sum_j H_m[i][j] y[j * 2^k + p]. The sign patterns below are
// that library's (rows i, columns j, '-' = -1): H_12 is Paley's construction II for q = 5 (its
// had_12_paley, which current versions and Quamba's fork use, not the older Sloane had_12), H_20 and
// H_28 Williamson-type matrices, H_40 the two-block Paley matrix [[A, A], [B, -B]]. 20 * 2^k with k >= 1
// is also 40 * 2^(k-1) and takes H_40, as Quamba's choice of kernel does.
#include "ssmkit/quant.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

#if SSMKIT_X86
// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_* operands) as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace ssmkit {
namespace {

// ---------------------------------------------------------------------------------------------------
// The H_m sign patterns.

const char* const kHad12[] = {
    "+-++++++++++", "--+-+-+-+-+-", "+++-++----++", "+---+--+-++-", "+++++-++----", "+-+---+--+-+",
    "++--+++-++--", "+--++---+--+", "++----+++-++", "+--+-++---+-", "++++----+++-", "+-+--+-++---",
};

const char* const kHad20[] = {
    "+----+----++--++-++-", "-+----+---+++---+-++", "--+----+---+++-+-+-+", "---+----+---+++++-+-",
    "----+----++--++-++-+", "-+++++-----+--+++--+", "+-+++-+---+-+--+++--", "++-++--+---+-+--+++-",
    "+++-+---+---+-+--+++", "++++-----++--+-+--++", "--++-+-++-+-----++++", "---++-+-++-+---+-+++",
    "+---++-+-+--+--++-++", "++---++-+----+-+++-+", "-++---++-+----+++++-", "-+--+--++-+----+----",
    "+-+-----++-+----+---", "-+-+-+---+--+----+--", "--+-+++------+----+-", "+--+--++------+----+",
};

const char* const kHad28[] = {
    "+------++----++-+--+-+--++--", "-+-----+++-----+-+--+-+--++-", "--+-----+++---+-+-+----+--++",
    "---+-----+++---+-+-+-+--+--+", "----+-----+++---+-+-+++--+--", "-----+-----++++--+-+--++--+-",
    "------++----++-+--+-+--++--+", "--++++-+-------++--+++-+--+-", "---++++-+-----+-++--+-+-+--+",
    "+---+++--+----++-++--+-+-+--", "++---++---+----++-++--+-+-+-", "+++---+----+----++-++--+-+-+",
    "++++--------+-+--++-++--+-+-", "-++++--------+++--++--+--+-+", "-+-++-++--++--+--------++++-",
    "+-+-++--+--++--+--------++++", "-+-+-++--+--++--+----+---+++", "+-+-+-++--+--+---+---++---++",
    "++-+-+-++--+------+--+++---+", "-++-+-+-++--+------+-++++---", "+-++-+---++--+------+-++++--",
    "-++--++-+-++-+++----++------", "+-++--++-+-++-+++-----+-----", "++-++---+-+-++-+++-----+----",
    "-++-++-+-+-+-+--+++-----+---", "--++-++++-+-+----+++-----+--", "+--++-+-++-+-+----+++-----+-",
    "++--++-+-++-+-+----++------+",
};

const char* const kHad40[] = {
    "+-------------------+-------------------", "++-++----+-+-++++--+++-++----+-+-++++--+",
    "+++-++----+-+-++++--+++-++----+-+-++++--", "+-++-++----+-+-++++-+-++-++----+-+-++++-",
    "+--++-++----+-+-+++++--++-++----+-+-++++", "++--++-++----+-+-+++++--++-++----+-+-+++",
    "+++--++-++----+-+-+++++--++-++----+-+-++", "++++--++-++----+-+-+++++--++-++----+-+-+",
    "+++++--++-++----+-+-+++++--++-++----+-+-", "+-++++--++-++----+-++-++++--++-++----+-+",
    "++-++++--++-++----+-++-++++--++-++----+-", "+-+-++++--++-++----++-+-++++--++-++----+",
    "++-+-++++--++-++----++-+-++++--++-++----", "+-+-+-++++--++-++---+-+-+-++++--++-++---",
    "+--+-+-++++--++-++--+--+-+-++++--++-++--", "+---+-+-++++--++-++-+---+-+-++++--++-++-",
    "+----+-+-++++--++-+++----+-+-++++--++-++", "++----+-+-++++--++-+++----+-+-++++--++-+",
    "+++----+-+-++++--++-+++----+-+-++++--++-", "+-++----+-+-++++--+++-++----+-+-++++--++",
    "+--------------------+++++++++++++++++++", "++-++----+-+-++++--+--+--++++-+-+----++-",
    "+++-++----+-+-++++-----+--++++-+-+----++", "+-++-++----+-+-++++--+--+--++++-+-+----+",
    "+--++-++----+-+-++++-++--+--++++-+-+----", "++--++-++----+-+-+++--++--+--++++-+-+---",
    "+++--++-++----+-+-++---++--+--++++-+-+--", "++++--++-++----+-+-+----++--+--++++-+-+-",
    "+++++--++-++----+-+------++--+--++++-+-+", "+-++++--++-++----+-+-+----++--+--++++-+-",
    "++-++++--++-++----+---+----++--+--++++-+", "+-+-++++--++-++----+-+-+----++--+--++++-",
    "++-+-++++--++-++------+-+----++--+--++++", "+-+-+-++++--++-++----+-+-+----++--+--+++",
    "+--+-+-++++--++-++---++-+-+----++--+--++", "+---+-+-++++--++-++--+++-+-+----++--+--+",
    "+----+-+-++++--++-++-++++-+-+----++--+--", "++----+-+-++++--++-+--++++-+-+----++--+-",
    "+++----+-+-++++--++----++++-+-+----++--+", "+-++----+-+-++++--++-+--++++-+-+----++--",
};

// ---------------------------------------------------------------------------------------------------
// Row kernels, one set per SIMD level. A row is `n` floats in a float32 buffer.

struct row_kernels {
  // Loads n elements of dtype `dt` (float32, float16, bfloat16) starting at element i0 into dst.
  void (*load)(ssmkit_dtype dt, const void* src, int64_t i0, int64_t n, float* dst);
  // Stores v * scale as dtype `dt` at element i0.
  void (*store)(ssmkit_dtype dt, const float* v, int64_t n, float scale, void* dst, int64_t i0);
  // Sylvester Walsh-Hadamard transform in place of n = 2^k floats (stages h = 1, 2, 4, ...).
  void (*fwht)(float* v, int64_t n);
  // out[i * p + q] = sum_j h[i * ldh + j] v[j * p + q] for i, j < m.
  void (*mix)(const float* h, int ldh, int m, const float* v, int64_t p, float* out);
  float (*amax)(const float* v, int64_t n);
  // q[i] = clamp(rint(v[i] / s), lo, hi), NaN -> 0.
  void (*quant)(const float* v, int64_t n, float s, float lo, float hi, int8_t* q);
  // out[i] = q[i] * s.
  void (*dequant)(const int8_t* q, int64_t n, float s, float* out);
};

// Scalar.

void load_scalar(ssmkit_dtype dt, const void* src, int64_t i0, int64_t n, float* dst) {
  switch (dt) {
    case SSMKIT_DTYPE_F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f32<SSMKIT_DTYPE_F16>(src, i0 + i);
      break;
    case SSMKIT_DTYPE_BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f32<SSMKIT_DTYPE_BF16>(src, i0 + i);
      break;
    default: std::memcpy(dst, static_cast<const float*>(src) + i0, static_cast<size_t>(n) * 4); break;
  }
}

void store_scalar(ssmkit_dtype dt, const float* v, int64_t n, float scale, void* dst, int64_t i0) {
  switch (dt) {
    case SSMKIT_DTYPE_F16:
      for (int64_t i = 0; i < n; ++i) store_f32<SSMKIT_DTYPE_F16>(dst, i0 + i, v[i] * scale);
      break;
    case SSMKIT_DTYPE_BF16:
      for (int64_t i = 0; i < n; ++i) store_f32<SSMKIT_DTYPE_BF16>(dst, i0 + i, v[i] * scale);
      break;
    default:
      for (int64_t i = 0; i < n; ++i) static_cast<float*>(dst)[i0 + i] = v[i] * scale;
      break;
  }
}

void fwht_stages_scalar(float* v, int64_t n, int64_t h0) {
  for (int64_t h = h0; h < n; h <<= 1) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = v[j];
        const float b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
}

void fwht_scalar(float* v, int64_t n) {
  fwht_stages_scalar(v, n, 1);
}

void mix_scalar(const float* h, int ldh, int m, const float* v, int64_t p, float* out) {
  for (int i = 0; i < m; ++i) {
    const float* hi = h + i * ldh;
    for (int64_t q = 0; q < p; ++q) {
      float acc = hi[0] * v[q];
      for (int j = 1; j < m; ++j) acc += hi[j] * v[j * p + q];
      out[i * p + q] = acc;
    }
  }
}

float amax_scalar(const float* v, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    if (a > m) m = a;
  }
  return m;
}

inline int8_t quant_one(float v, float s, float lo, float hi) {
  float r = std::nearbyint(v / s);
  if (!(r == r)) r = 0.0f;
  r = r < lo ? lo : (r > hi ? hi : r);
  return static_cast<int8_t>(r);
}

void quant_scalar(const float* v, int64_t n, float s, float lo, float hi, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = quant_one(v[i], s, lo, hi);
}

void dequant_scalar(const int8_t* q, int64_t n, float s, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * s;
}

#if SSMKIT_X86

// AVX2 + FMA + F16C: 8 lanes.

SSMKIT_TARGET_AVX2 inline __m256 bf16x8_to_f32(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Round to nearest even, NaN kept quiet: the same as f32_to_bf16.
SSMKIT_TARGET_AVX2 inline __m128i f32x8_to_bf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                                           _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)))),
      16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  const __m256i packed = _mm256_packus_epi32(r, r);  // 16-bit values in qwords 0 and 2
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

SSMKIT_TARGET_AVX2 void load_avx2(ssmkit_dtype dt, const void* src, int64_t i0, int64_t n, float* dst) {
  int64_t i = 0;
  if (dt == SSMKIT_DTYPE_F16) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + i0;
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    }
  } else if (dt == SSMKIT_DTYPE_BF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + i0;
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(dst + i, bf16x8_to_f32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    }
  }
  load_scalar(dt, src, i0 + i, n - i, dst + i);
}

SSMKIT_TARGET_AVX2 void store_avx2(ssmkit_dtype dt, const float* v, int64_t n, float scale, void* dst,
                                   int64_t i0) {
  const __m256 sc = _mm256_set1_ps(scale);
  int64_t i = 0;
  if (dt == SSMKIT_DTYPE_F16) {
    uint16_t* d = static_cast<uint16_t*>(dst) + i0;
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), sc);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    }
  } else if (dt == SSMKIT_DTYPE_BF16) {
    uint16_t* d = static_cast<uint16_t*>(dst) + i0;
    for (; i + 8 <= n; i += 8) {
      const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(v + i), sc);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), f32x8_to_bf16(x));
    }
  } else {
    float* d = static_cast<float*>(dst) + i0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_mul_ps(_mm256_loadu_ps(v + i), sc));
  }
  store_scalar(dt, v + i, n - i, scale, dst, i0 + i);
}

// Stages h = 1, 2, 4 inside each 8-lane vector: lane l takes lane l ^ h and, where bit h of l is set,
// the difference partner - self, else the sum.
SSMKIT_TARGET_AVX2 void fwht_avx2(float* v, int64_t n) {
  if (n < 8) {
    fwht_scalar(v, n);
    return;
  }
  const __m256i p1 = _mm256_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6);
  const __m256i p2 = _mm256_setr_epi32(2, 3, 0, 1, 6, 7, 4, 5);
  const __m256i p4 = _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3);
  const __m256 s1 = _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1);
  const __m256 s2 = _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1);
  const __m256 s4 = _mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1);
  for (int64_t i = 0; i < n; i += 8) {
    __m256 x = _mm256_loadu_ps(v + i);
    x = _mm256_fmadd_ps(x, s1, _mm256_permutevar8x32_ps(x, p1));
    x = _mm256_fmadd_ps(x, s2, _mm256_permutevar8x32_ps(x, p2));
    x = _mm256_fmadd_ps(x, s4, _mm256_permutevar8x32_ps(x, p4));
    _mm256_storeu_ps(v + i, x);
  }
  int64_t h = 8;
  // Two stages per pass (h and 2h), in the same order of additions as two radix-2 passes.
  for (; 4 * h <= n; h *= 4) {
    for (int64_t i = 0; i < n; i += 4 * h) {
      for (int64_t j = i; j < i + h; j += 8) {
        const __m256 a = _mm256_loadu_ps(v + j);
        const __m256 b = _mm256_loadu_ps(v + j + h);
        const __m256 c = _mm256_loadu_ps(v + j + 2 * h);
        const __m256 d = _mm256_loadu_ps(v + j + 3 * h);
        const __m256 ab = _mm256_add_ps(a, b), a_b = _mm256_sub_ps(a, b);
        const __m256 cd = _mm256_add_ps(c, d), c_d = _mm256_sub_ps(c, d);
        _mm256_storeu_ps(v + j, _mm256_add_ps(ab, cd));
        _mm256_storeu_ps(v + j + h, _mm256_add_ps(a_b, c_d));
        _mm256_storeu_ps(v + j + 2 * h, _mm256_sub_ps(ab, cd));
        _mm256_storeu_ps(v + j + 3 * h, _mm256_sub_ps(a_b, c_d));
      }
    }
  }
  if (h < n) {
    for (int64_t j = 0; j < h; j += 8) {
      const __m256 a = _mm256_loadu_ps(v + j);
      const __m256 b = _mm256_loadu_ps(v + j + h);
      _mm256_storeu_ps(v + j, _mm256_add_ps(a, b));
      _mm256_storeu_ps(v + j + h, _mm256_sub_ps(a, b));
    }
  }
}

SSMKIT_TARGET_AVX2 void mix_avx2(const float* h, int ldh, int m, const float* v, int64_t p, float* out) {
  if (p % 8 != 0) {
    mix_scalar(h, ldh, m, v, p, out);
    return;
  }
  // Four output chunks at a time share each load of an input chunk.
  int i = 0;
  for (; i + 4 <= m; i += 4) {
    const float* h0 = h + i * ldh;
    for (int64_t q = 0; q < p; q += 8) {
      const __m256 x0 = _mm256_loadu_ps(v + q);
      __m256 a0 = _mm256_mul_ps(x0, _mm256_set1_ps(h0[0]));
      __m256 a1 = _mm256_mul_ps(x0, _mm256_set1_ps(h0[ldh]));
      __m256 a2 = _mm256_mul_ps(x0, _mm256_set1_ps(h0[2 * ldh]));
      __m256 a3 = _mm256_mul_ps(x0, _mm256_set1_ps(h0[3 * ldh]));
      for (int j = 1; j < m; ++j) {
        const __m256 x = _mm256_loadu_ps(v + j * p + q);
        a0 = _mm256_fmadd_ps(x, _mm256_set1_ps(h0[j]), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_set1_ps(h0[ldh + j]), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_set1_ps(h0[2 * ldh + j]), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_set1_ps(h0[3 * ldh + j]), a3);
      }
      _mm256_storeu_ps(out + i * p + q, a0);
      _mm256_storeu_ps(out + (i + 1) * p + q, a1);
      _mm256_storeu_ps(out + (i + 2) * p + q, a2);
      _mm256_storeu_ps(out + (i + 3) * p + q, a3);
    }
  }
  // m is a multiple of 4 for every order we have.
}

SSMKIT_TARGET_AVX2 float amax_avx2(const float* v, int64_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 m = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(v + i), abs_mask), m);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = amax_scalar(v + i, n - i);
  for (float l : lanes) r = l > r ? l : r;
  return r;
}

SSMKIT_TARGET_AVX2 void quant_avx2(const float* v, int64_t n, float s, float lo, float hi, int8_t* q) {
  const __m256 sv = _mm256_set1_ps(s), lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(v + i), sv),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
    r = _mm256_min_ps(_mm256_max_ps(r, lov), hiv);
    const __m256i w = _mm256_cvtps_epi32(r);
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packs_epi16(w16, w16));
  }
  quant_scalar(v + i, n - i, s, lo, hi, q + i);
}

SSMKIT_TARGET_AVX2 void dequant_avx2(const int8_t* q, int64_t n, float s, float* out) {
  const __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(w), sv));
  }
  dequant_scalar(q + i, n - i, s, out + i);
}

// AVX-512 (F, BW, DQ, VL): 16 lanes, masked tails.

SSMKIT_TARGET_AVX512 inline __m256i f32x16_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                           _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))),
      16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i r = _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(r);
}

SSMKIT_TARGET_AVX512 void load_avx512(ssmkit_dtype dt, const void* src, int64_t i0, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 x;
    if (dt == SSMKIT_DTYPE_F16) {
      x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(src) + i0 + i));
    } else if (dt == SSMKIT_DTYPE_BF16) {
      const __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(src) + i0 + i);
      x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    } else {
      x = _mm512_maskz_loadu_ps(k, static_cast<const float*>(src) + i0 + i);
    }
    _mm512_mask_storeu_ps(dst + i, k, x);
  }
}

SSMKIT_TARGET_AVX512 void store_avx512(ssmkit_dtype dt, const float* v, int64_t n, float scale, void* dst,
                                       int64_t i0) {
  const __m512 sc = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, v + i), sc);
    if (dt == SSMKIT_DTYPE_F16) {
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + i0 + i, k,
                               _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else if (dt == SSMKIT_DTYPE_BF16) {
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + i0 + i, k, f32x16_to_bf16(x));
    } else {
      _mm512_mask_storeu_ps(static_cast<float*>(dst) + i0 + i, k, x);
    }
  }
}

SSMKIT_TARGET_AVX512 void fwht_avx512(float* v, int64_t n) {
  if (n < 16) {
    fwht_scalar(v, n);
    return;
  }
  const __m512i p1 = _mm512_setr_epi32(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
  const __m512i p2 = _mm512_setr_epi32(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  const __m512i p4 = _mm512_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  const __m512i p8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (int64_t i = 0; i < n; i += 16) {
    __m512 x = _mm512_loadu_ps(v + i);
    x = _mm512_fmadd_ps(x, s1, _mm512_permutexvar_ps(p1, x));
    x = _mm512_fmadd_ps(x, s2, _mm512_permutexvar_ps(p2, x));
    x = _mm512_fmadd_ps(x, s4, _mm512_permutexvar_ps(p4, x));
    x = _mm512_fmadd_ps(x, s8, _mm512_permutexvar_ps(p8, x));
    _mm512_storeu_ps(v + i, x);
  }
  int64_t h = 16;
  for (; 4 * h <= n; h *= 4) {
    for (int64_t i = 0; i < n; i += 4 * h) {
      for (int64_t j = i; j < i + h; j += 16) {
        const __m512 a = _mm512_loadu_ps(v + j);
        const __m512 b = _mm512_loadu_ps(v + j + h);
        const __m512 c = _mm512_loadu_ps(v + j + 2 * h);
        const __m512 d = _mm512_loadu_ps(v + j + 3 * h);
        const __m512 ab = _mm512_add_ps(a, b), a_b = _mm512_sub_ps(a, b);
        const __m512 cd = _mm512_add_ps(c, d), c_d = _mm512_sub_ps(c, d);
        _mm512_storeu_ps(v + j, _mm512_add_ps(ab, cd));
        _mm512_storeu_ps(v + j + h, _mm512_add_ps(a_b, c_d));
        _mm512_storeu_ps(v + j + 2 * h, _mm512_sub_ps(ab, cd));
        _mm512_storeu_ps(v + j + 3 * h, _mm512_sub_ps(a_b, c_d));
      }
    }
  }
  if (h < n) {
    for (int64_t j = 0; j < h; j += 16) {
      const __m512 a = _mm512_loadu_ps(v + j);
      const __m512 b = _mm512_loadu_ps(v + j + h);
      _mm512_storeu_ps(v + j, _mm512_add_ps(a, b));
      _mm512_storeu_ps(v + j + h, _mm512_sub_ps(a, b));
    }
  }
}

SSMKIT_TARGET_AVX512 void mix_avx512(const float* h, int ldh, int m, const float* v, int64_t p, float* out) {
  if (p % 16 != 0) {
    mix_avx2(h, ldh, m, v, p, out);
    return;
  }
  for (int i = 0; i + 4 <= m; i += 4) {
    const float* h0 = h + i * ldh;
    for (int64_t q = 0; q < p; q += 16) {
      const __m512 x0 = _mm512_loadu_ps(v + q);
      __m512 a0 = _mm512_mul_ps(x0, _mm512_set1_ps(h0[0]));
      __m512 a1 = _mm512_mul_ps(x0, _mm512_set1_ps(h0[ldh]));
      __m512 a2 = _mm512_mul_ps(x0, _mm512_set1_ps(h0[2 * ldh]));
      __m512 a3 = _mm512_mul_ps(x0, _mm512_set1_ps(h0[3 * ldh]));
      for (int j = 1; j < m; ++j) {
        const __m512 x = _mm512_loadu_ps(v + j * p + q);
        a0 = _mm512_fmadd_ps(x, _mm512_set1_ps(h0[j]), a0);
        a1 = _mm512_fmadd_ps(x, _mm512_set1_ps(h0[ldh + j]), a1);
        a2 = _mm512_fmadd_ps(x, _mm512_set1_ps(h0[2 * ldh + j]), a2);
        a3 = _mm512_fmadd_ps(x, _mm512_set1_ps(h0[3 * ldh + j]), a3);
      }
      _mm512_storeu_ps(out + i * p + q, a0);
      _mm512_storeu_ps(out + (i + 1) * p + q, a1);
      _mm512_storeu_ps(out + (i + 2) * p + q, a2);
      _mm512_storeu_ps(out + (i + 3) * p + q, a3);
    }
  }
}

SSMKIT_TARGET_AVX512 float amax_avx512(const float* v, int64_t n) {
  __m512 m = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(k, v + i)), m);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, m);
  float r = 0.0f;
  for (float l : lanes) r = l > r ? l : r;
  return r;
}

SSMKIT_TARGET_AVX512 void quant_avx512(const float* v, int64_t n, float s, float lo, float hi, int8_t* q) {
  const __m512 sv = _mm512_set1_ps(s), lov = _mm512_set1_ps(lo), hiv = _mm512_set1_ps(hi);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(k, v + i), sv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), r);
    r = _mm512_min_ps(_mm512_max_ps(r, lov), hiv);
    _mm_mask_storeu_epi8(q + i, k, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(r)));
  }
}

SSMKIT_TARGET_AVX512 void dequant_avx512(const int8_t* q, int64_t n, float s, float* out) {
  const __m512 sv = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i w = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, q + i));
    _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_cvtepi32_ps(w), sv));
  }
}

#endif  // SSMKIT_X86

const row_kernels& kernels() {
  static const row_kernels k = [] {
#if SSMKIT_X86
    const cpu::simd_level level = cpu::simd();
    if (level >= cpu::SIMD_AVX512) {
      return row_kernels{load_avx512, store_avx512, fwht_avx512,   mix_avx512,
                         amax_avx512, quant_avx512, dequant_avx512};
    }
    if (level >= cpu::SIMD_AVX2) {
      return row_kernels{load_avx2, store_avx2, fwht_avx2, mix_avx2, amax_avx2, quant_avx2, dequant_avx2};
    }
#endif
    return row_kernels{load_scalar, store_scalar, fwht_scalar,   mix_scalar,
                       amax_scalar, quant_scalar, dequant_scalar};
  }();
  return k;
}

// ---------------------------------------------------------------------------------------------------
// Shared row helpers.

// Thread-local float32 and int8 row buffers that grow and are reused (no allocation per row).
struct row_scratch {
  std::vector<float> a, b;
  std::vector<int8_t> q;
  float* f0(int64_t n) {
    if (a.size() < static_cast<size_t>(n)) a.resize(static_cast<size_t>(n));
    return a.data();
  }
  float* f1(int64_t n) {
    if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
    return b.data();
  }
  int8_t* i8(int64_t n) {
    if (q.size() < static_cast<size_t>(n)) q.resize(static_cast<size_t>(n));
    return q.data();
  }
};

row_scratch& scratch() {
  thread_local row_scratch s;
  return s;
}

// H_40 is [[A, A], [B, -B]] with A, B 20 x 20 (two Paley blocks): H_40 [x1; x2] = [A (x1 + x2);
// B (x1 - x2)], 840 additions per position instead of 1600.
bool doubled_blocks(const float* h, int m) {
  if (m % 2 != 0) return false;
  const int half = m / 2;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < half; ++j) {
      if (h[i * m + half + j] != (i < half ? h[i * m + j] : -h[i * m + j])) return false;
    }
  }
  return true;
}

// Transforms a float32 row in place (or into `tmp`); returns where the result is.
float* hadamard_row(const row_kernels& k, float* v, int64_t n, int m, int64_t pow2, float* tmp) {
  if (m == 1) {
    k.fwht(v, n);
    return v;
  }
  for (int i = 0; i < m; ++i) k.fwht(v + i * pow2, pow2);
  const float* h = hadamard_signs(m);
  static const bool doubled40 = doubled_blocks(hadamard_signs(40), 40);
  if (m == 40 && doubled40) {
    const int64_t half = n / 2;
    for (int64_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[half + i];
      v[i] = a + b;
      v[half + i] = a - b;
    }
    k.mix(h, m, m / 2, v, pow2, tmp);
    k.mix(h + (m / 2) * m, m, m / 2, v + half, pow2, tmp + half);
  } else {
    k.mix(h, m, m, v, pow2, tmp);
  }
  return tmp;
}

// Packs int8 values (-8..7) of one row two per byte, low nibble first.
void pack_int4_row(const int8_t* q, int64_t n, uint8_t* out) {
  int64_t i = 0;
  for (; i + 1 < n; i += 2) {
    out[i / 2] = static_cast<uint8_t>((q[i] & 0x0f) | ((q[i + 1] & 0x0f) << 4));
  }
  if (i < n) out[i / 2] = static_cast<uint8_t>(q[i] & 0x0f);
}

void unpack_int4_row(const uint8_t* in, int64_t n, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) {
    const int nib = (in[i / 2] >> ((i & 1) * 4)) & 0x0f;
    q[i] = static_cast<int8_t>(nib >= 8 ? nib - 16 : nib);
  }
}

// One scale, from a float tensor of any float dtype.
float read_scale(const tensor_view& s, int64_t i) {
  switch (s.dtype) {
    case SSMKIT_DTYPE_F16: return load_f32<SSMKIT_DTYPE_F16>(s.data, i);
    case SSMKIT_DTYPE_BF16: return load_f32<SSMKIT_DTYPE_BF16>(s.data, i);
    default: return load_f32<SSMKIT_DTYPE_F32>(s.data, i);
  }
}

// Writes a computed scale in the scale tensor's dtype and returns the value as stored, which is what
// the quantization divides by (so that dequantize inverts it exactly).
float write_scale(const tensor_view& s, int64_t i, float v) {
  switch (s.dtype) {
    case SSMKIT_DTYPE_F16: store_f32<SSMKIT_DTYPE_F16>(s.data, i, v); break;
    case SSMKIT_DTYPE_BF16: store_f32<SSMKIT_DTYPE_BF16>(s.data, i, v); break;
    default: store_f32<SSMKIT_DTYPE_F32>(s.data, i, v); break;
  }
  const float stored = read_scale(s, i);
  if (stored == 0.0f) {
    // A scale that underflows in a 16-bit format would divide by zero; 1 keeps q = 0 for such rows.
    write_scale(s, i, 1.0f);
    return 1.0f;
  }
  return stored;
}

float scale_from_amax(float amax, int bits) {
  const float s = amax / (bits == 4 ? 7.0f : 127.0f);
  return s > 0.0f ? s : 1.0f;
}

}  // namespace

// H_m as floats (+1 / -1), row-major m x m; nullptr for an order we do not have.
const float* hadamard_signs(int m) {
  struct tables {
    std::vector<float> t12, t20, t28, t40;
    static std::vector<float> build(const char* const* rows, int m) {
      std::vector<float> t(static_cast<size_t>(m) * m);
      for (int i = 0; i < m; ++i) {
        for (int j = 0; j < m; ++j) t[i * m + j] = rows[i][j] == '-' ? -1.0f : 1.0f;
      }
      return t;
    }
  };
  static const tables t{tables::build(kHad12, 12), tables::build(kHad20, 20), tables::build(kHad28, 28),
                        tables::build(kHad40, 40)};
  switch (m) {
    case 12: return t.t12.data();
    case 20: return t.t20.data();
    case 28: return t.t28.data();
    case 40: return t.t40.data();
    default: return nullptr;
  }
}

// n = m * 2^k with m in {1, 12, 20, 28, 40}; false otherwise. 20 * 2^k for k >= 1 is also 40 * 2^(k-1):
// like Quamba (which picks 12N, then 40N, then the power of two), we take H_40 there, so H_20 serves
// n = 20 only.
bool hadamard_factor(int64_t n, int* m, int64_t* pow2) {
  if (n < 1) return false;
  for (int f : {1, 12, 40, 20, 28}) {
    if (n % f != 0) continue;
    const int64_t q = n / f;
    if ((q & (q - 1)) == 0) {
      *m = f;
      *pow2 = q;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// hadamard

status hadamard_cpu(const hadamard_params& p) {
  int m = 1;
  int64_t pow2 = 1;
  if (!hadamard_factor(p.n, &m, &pow2)) {
    return make_status(status_code::value,
                       "hadamard: x: expected a last dimension of 2^k or 12, 20, 28, 40 times 2^k, got %lld",
                       static_cast<long long>(p.n));
  }
  if (p.x.dtype != SSMKIT_DTYPE_F32 && p.x.dtype != SSMKIT_DTYPE_F16 && p.x.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "hadamard: unsupported dtype %s", dtype_name(p.x.dtype));
  }
  const row_kernels& k = kernels();
  const int64_t n = p.n;
  cpu::parallel_for(p.rows, std::max<int64_t>(1, 8192 / n), [&](int64_t r0, int64_t r1) {
    row_scratch& s = scratch();
    float* v = s.f0(n);
    float* tmp = s.f1(n);
    for (int64_t r = r0; r < r1; ++r) {
      k.load(p.x.dtype, p.x.data, r * n, n, v);
      const float* y = hadamard_row(k, v, n, m, pow2, tmp);
      k.store(p.out.dtype, y, n, p.scale, p.out.data, r * n);
    }
  });
  return ok_status();
}

// ---------------------------------------------------------------------------------------------------
// quantize

namespace {

// Loads row `line` as float32 (rotated when asked); returns where the row is.
const float* quant_input_row(const row_kernels& k, const quantize_params& p, int64_t line, int m,
                             int64_t pow2, float rot_scale, row_scratch& s) {
  float* v = s.f0(p.len);
  k.load(p.x.dtype, p.x.data, line * p.len, p.len, v);
  if (!p.hadamard) return v;
  float* y = hadamard_row(k, v, p.len, m, pow2, s.f1(p.len));
  // The rotation's scale is applied as hadamard() applies it: one multiply per element.
  for (int64_t i = 0; i < p.len; ++i) y[i] *= rot_scale;
  return y;
}

void store_q_row(const quantize_params& p, int64_t line, const int8_t* q) {
  if (p.bits == 4) {
    pack_int4_row(q, p.len, static_cast<uint8_t*>(p.q.data) + line * ((p.len + 1) / 2));
  } else {
    std::memcpy(static_cast<int8_t*>(p.q.data) + line * p.len, q, static_cast<size_t>(p.len));
  }
}

}  // namespace

status quantize_cpu(const quantize_params& p) {
  if (p.bits != 8 && p.bits != 4) {
    return make_status(status_code::value, "quantize: options.bits: expected 8 or 4, got %d", p.bits);
  }
  if (p.x.dtype != SSMKIT_DTYPE_F32 && p.x.dtype != SSMKIT_DTYPE_F16 && p.x.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "quantize: unsupported dtype %s", dtype_name(p.x.dtype));
  }
  int m = 1;
  int64_t pow2 = 1;
  if (p.hadamard && !hadamard_factor(p.len, &m, &pow2)) {
    return make_status(status_code::value,
                       "quantize: x: expected a last dimension of 2^k or 12, 20, 28, 40 times 2^k for "
                       "options.hadamard, got %lld",
                       static_cast<long long>(p.len));
  }
  if (p.granularity == QUANT_GROUP && (p.group_size <= 0 || p.len % p.group_size != 0)) {
    return make_status(status_code::value,
                       "quantize: options.groupSize: expected a divisor of %lld, got %lld",
                       static_cast<long long>(p.len), static_cast<long long>(p.group_size));
  }
  if (p.lines == 0 || p.len == 0) {
    // Nothing to quantize: every computed scale covers only zeros, so it is 1.
    if (!p.static_scale) {
      for (int64_t i = 0; i < p.scale.numel(); ++i) write_scale(p.scale, i, 1.0f);
    }
    return ok_status();
  }
  const row_kernels& k = kernels();
  const float lo = p.bits == 4 ? -8.0f : -127.0f;
  const float hi = p.bits == 4 ? 7.0f : 127.0f;
  const float rot_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.len)));
  const int64_t grain = std::max<int64_t>(1, 8192 / p.len);

  // Rows whose scale is known before the row is read: token and group scales come from the row itself,
  // static scales are given.
  auto quantize_rows = [&](int64_t r0, int64_t r1, auto&& scale_of_row) {
    row_scratch& s = scratch();
    for (int64_t r = r0; r < r1; ++r) {
      const float* v = quant_input_row(k, p, r, m, pow2, rot_scale, s);
      int8_t* q = s.i8(p.len);
      if (p.granularity == QUANT_GROUP) {
        const int64_t groups = p.len / p.group_size;
        for (int64_t g = 0; g < groups; ++g) {
          const float* vg = v + g * p.group_size;
          const float sc = p.static_scale ? read_scale(p.scale, r * groups + g)
                                          : write_scale(p.scale, r * groups + g,
                                                        scale_from_amax(k.amax(vg, p.group_size), p.bits));
          k.quant(vg, p.group_size, sc, lo, hi, q + g * p.group_size);
        }
      } else {
        k.quant(v, p.len, scale_of_row(r, v), lo, hi, q);
      }
      store_q_row(p, r, q);
    }
  };

  if (p.granularity == QUANT_GROUP || p.granularity == QUANT_TOKEN || p.static_scale) {
    cpu::parallel_for(p.lines, grain, [&](int64_t r0, int64_t r1) {
      quantize_rows(r0, r1, [&](int64_t r, const float* v) -> float {
        if (p.static_scale) {
          const int64_t idx = p.granularity == QUANT_TOKEN
                                  ? r
                                  : (p.granularity == QUANT_CHANNEL ? r / p.lines_per_channel : 0);
          return read_scale(p.scale, idx);
        }
        return write_scale(p.scale, r, scale_from_amax(k.amax(v, p.len), p.bits));
      });
    });
    return ok_status();
  }

  if (p.granularity == QUANT_CHANNEL) {
    // One scale per index of dimension 0: a first pass over its rows for amax, then the rows again.
    const int64_t channels = p.lines / p.lines_per_channel;
    const int64_t lpc = p.lines_per_channel;
    cpu::parallel_for(channels, std::max<int64_t>(1, grain / lpc), [&](int64_t c0, int64_t c1) {
      row_scratch& s = scratch();
      for (int64_t c = c0; c < c1; ++c) {
        float amax = 0.0f;
        for (int64_t r = c * lpc; r < (c + 1) * lpc; ++r) {
          amax = std::max(amax, k.amax(quant_input_row(k, p, r, m, pow2, rot_scale, s), p.len));
        }
        const float sc = write_scale(p.scale, c, scale_from_amax(amax, p.bits));
        quantize_rows(c * lpc, (c + 1) * lpc, [&](int64_t, const float*) { return sc; });
      }
    });
    return ok_status();
  }

  // Tensor: amax over everything (partial maxima combined through their bit patterns, which order like
  // the non-negative floats they are), then every row with the one scale.
  std::atomic<uint32_t> amax_bits{0};
  cpu::parallel_for(p.lines, grain, [&](int64_t r0, int64_t r1) {
    row_scratch& s = scratch();
    float local = 0.0f;
    for (int64_t r = r0; r < r1; ++r) {
      local = std::max(local, k.amax(quant_input_row(k, p, r, m, pow2, rot_scale, s), p.len));
    }
    uint32_t bits = f32_bits(local);
    uint32_t cur = amax_bits.load();
    while (bits > cur && !amax_bits.compare_exchange_weak(cur, bits)) {
    }
  });
  const float sc = write_scale(p.scale, 0, scale_from_amax(bits_f32(amax_bits.load()), p.bits));
  cpu::parallel_for(p.lines, grain, [&](int64_t r0, int64_t r1) {
    quantize_rows(r0, r1, [&](int64_t, const float*) { return sc; });
  });
  return ok_status();
}

// ---------------------------------------------------------------------------------------------------
// dequantize

status dequantize_cpu(const dequantize_params& p) {
  if (p.q.dtype != SSMKIT_DTYPE_I8 && p.q.dtype != SSMKIT_DTYPE_I4) {
    return make_status(status_code::dtype, "dequantize: q: unsupported dtype %s", dtype_name(p.q.dtype));
  }
  if (p.granularity == QUANT_GROUP && (p.group_size <= 0 || p.len % p.group_size != 0)) {
    return make_status(status_code::value,
                       "dequantize: options.groupSize: expected a divisor of %lld, got %lld",
                       static_cast<long long>(p.len), static_cast<long long>(p.group_size));
  }
  if (p.lines == 0 || p.len == 0) return ok_status();
  const row_kernels& k = kernels();
  const bool int4 = p.q.dtype == SSMKIT_DTYPE_I4;
  cpu::parallel_for(p.lines, std::max<int64_t>(1, 8192 / p.len), [&](int64_t r0, int64_t r1) {
    row_scratch& s = scratch();
    float* v = s.f0(p.len);
    int8_t* q8 = s.i8(p.len);
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* q = static_cast<const int8_t*>(p.q.data) + r * p.len;
      if (int4) {
        unpack_int4_row(static_cast<const uint8_t*>(p.q.data) + r * ((p.len + 1) / 2), p.len, q8);
        q = q8;
      }
      switch (p.granularity) {
        case QUANT_GROUP: {
          const int64_t groups = p.len / p.group_size;
          for (int64_t g = 0; g < groups; ++g) {
            k.dequant(q + g * p.group_size, p.group_size, read_scale(p.scale, r * groups + g),
                      v + g * p.group_size);
          }
          break;
        }
        case QUANT_TOKEN: k.dequant(q, p.len, read_scale(p.scale, r), v); break;
        case QUANT_CHANNEL: k.dequant(q, p.len, read_scale(p.scale, r / p.lines_per_channel), v); break;
        default: k.dequant(q, p.len, read_scale(p.scale, 0), v); break;
      }
      k.store(p.out.dtype, v, p.len, 1.0f, p.out.data, r * p.len);
    }
  });
  return ok_status();
}

}  // namespace ssmkit
