// CPU kernels of the model building blocks. The linear layer is a blocked GEMM over weight panels
// packed once at load (32 output columns each; float32, or bfloat16 in pairs of k): x is packed into
// blocks of MR rows laid out (K, MR) so a tile broadcasts one x value against a whole panel row; tiles
// of MR x 32 outputs accumulate in registers over all of K. Variants: AVX-512 (MR = 12, the panel as
// two zmm; bfloat16 activations on bfloat16 panels take AVX512-BF16's vdpbf16ps where the CPU has it),
// AVX2 (MR = 6, the panel as two 16-column halves) and portable C++ (MR = 4), chosen by cpu::simd() at
// run time. Decode (M = batch <= MR) is the same code with one row block, bound by the weight bytes it
// streams; row blocks and panels are spread over the thread pool. The norms, the embedding lookup, the
// column and transposing splits and dt's limits are row loops in float32. Last, the fused decode step:
// one token per sequence through a whole Mamba / Mamba-2 model in one call, composing these kernels
// with the scan and quantization families' CPU kernels. Every entry point first runs its op's check from
// ssmkit/nn_check.h, the same one the CUDA entry point runs.
#include "ssmkit/nn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ssmkit/cpu_features.h"
#include "ssmkit/nn_check.h"
#include "ssmkit/parallel.h"
#include "ssmkit/quant.h"
#include "ssmkit/selective_scan.h"

#if SSMKIT_X86
#include <immintrin.h>
#endif

namespace ssmkit {
namespace {

constexpr int kPanel = kLinearPanel;
// Row blocks that share one pass over a weight panel, so the panel is read from memory once per
// kRowBlocksPerPanel * MR rows and from cache otherwise.
constexpr int64_t kRowBlocksPerPanel = 8;
// Below this many weight bytes times rows a linear layer runs on the calling thread alone.
constexpr int64_t kInlineLinearBytes = 256 * 1024;

inline float load_any(const tensor_view& t, int64_t i) {
  switch (t.dtype) {
    case SSMKIT_DTYPE_F16: return f16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    case SSMKIT_DTYPE_BF16: return bf16_to_f32(static_cast<const uint16_t*>(t.data)[i]);
    default: return static_cast<const float*>(t.data)[i];
  }
}

inline void store_any(const tensor_view& t, int64_t i, float v) {
  switch (t.dtype) {
    case SSMKIT_DTYPE_F16: static_cast<uint16_t*>(t.data)[i] = f32_to_f16(v); break;
    case SSMKIT_DTYPE_BF16: static_cast<uint16_t*>(t.data)[i] = f32_to_bf16(v); break;
    default: static_cast<float*>(t.data)[i] = v; break;
  }
}

// ---- linear: tiles -------------------------------------------------------------------------------

// Panel layouts (pack_linear_cpu writes them):
// - float32: (K, 32), row k holding columns 0..31.
// - bfloat16: (K2 = ceil(K / 2), 32, 2), pair row k2 holding for each column c the 32-bit word
//   w[2 k2][c] | w[2 k2 + 1][c] << 16 (K padded with a zero row when odd). Widening takes one shift
//   (the even k) or one mask (the odd k) per register, without crossing lanes, and the words are the
//   operands of AVX512-BF16's vdpbf16ps as they are.

// acc (MR, 32) = xp (Kx, MR) ^T @ panel (Kx, 32), for one row block and one weight panel; Kx is K
// rounded up to even for bfloat16 panels (x's padding row is zero).
using tile_fn = void (*)(const float* xp, const void* panel, int64_t kx, float* acc);

inline int64_t pair_index(int64_t k, int64_t c) {
  return ((k >> 1) * kPanel + c) * 2 + (k & 1);
}

template <int MR, bool kBF16>
void tile_scalar(const float* xp, const void* panel, int64_t kx, float* acc) {
  float sum[MR][kPanel] = {};
  for (int64_t kk = 0; kk < kx; ++kk) {
    float w[kPanel];
    if constexpr (kBF16) {
      const uint16_t* wp = static_cast<const uint16_t*>(panel);
      for (int j = 0; j < kPanel; ++j) w[j] = bf16_to_f32(wp[pair_index(kk, j)]);
    } else {
      const float* wp = static_cast<const float*>(panel) + kk * kPanel;
      for (int j = 0; j < kPanel; ++j) w[j] = wp[j];
    }
    for (int r = 0; r < MR; ++r) {
      const float xv = xp[kk * MR + r];
      for (int j = 0; j < kPanel; ++j) sum[r][j] += xv * w[j];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int j = 0; j < kPanel; ++j) acc[r * kPanel + j] = sum[r][j];
  }
}

#if SSMKIT_X86

#define SSMKIT_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")))

// MR rows x 32 columns in 2 * MR zmm accumulators (24 at MR = 12, leaving room for the panel registers
// and the broadcast). Below 5 rows there are too few independent FMA chains to hide the FMA latency,
// so even and odd k accumulate separately.
template <int MR>
SSMKIT_TARGET_AVX512 void tile_avx512_f32(const float* xp, const void* panel, int64_t kx, float* acc) {
  constexpr bool kSplit = MR <= 4;
  const float* wp = static_cast<const float*>(panel);
  __m512 a0[MR], a1[MR], b0[kSplit ? MR : 1], b1[kSplit ? MR : 1];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    a0[r] = _mm512_setzero_ps();
    a1[r] = _mm512_setzero_ps();
    if constexpr (kSplit) {
      b0[r] = _mm512_setzero_ps();
      b1[r] = _mm512_setzero_ps();
    }
  }
  int64_t kk = 0;
  if constexpr (kSplit) {
    for (; kk + 2 <= kx; kk += 2) {
      const __m512 w0 = _mm512_loadu_ps(wp + kk * kPanel);
      const __m512 w1 = _mm512_loadu_ps(wp + kk * kPanel + 16);
      const __m512 v0 = _mm512_loadu_ps(wp + kk * kPanel + 32);
      const __m512 v1 = _mm512_loadu_ps(wp + kk * kPanel + 48);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        const __m512 x0 = _mm512_set1_ps(xp[kk * MR + r]);
        const __m512 x1 = _mm512_set1_ps(xp[(kk + 1) * MR + r]);
        a0[r] = _mm512_fmadd_ps(x0, w0, a0[r]);
        a1[r] = _mm512_fmadd_ps(x0, w1, a1[r]);
        b0[r] = _mm512_fmadd_ps(x1, v0, b0[r]);
        b1[r] = _mm512_fmadd_ps(x1, v1, b1[r]);
      }
    }
  }
  for (; kk < kx; ++kk) {
    const __m512 w0 = _mm512_loadu_ps(wp + kk * kPanel);
    const __m512 w1 = _mm512_loadu_ps(wp + kk * kPanel + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 x0 = _mm512_set1_ps(xp[kk * MR + r]);
      a0[r] = _mm512_fmadd_ps(x0, w0, a0[r]);
      a1[r] = _mm512_fmadd_ps(x0, w1, a1[r]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if constexpr (kSplit) {
      a0[r] = _mm512_add_ps(a0[r], b0[r]);
      a1[r] = _mm512_add_ps(a1[r], b1[r]);
    }
    _mm512_storeu_ps(acc + r * kPanel, a0[r]);
    _mm512_storeu_ps(acc + r * kPanel + 16, a1[r]);
  }
}

// bfloat16 pairs widened in registers: per pair row, two loads give the even-k and odd-k weights of 32
// columns (a shift and a mask each). Even and odd k accumulate separately below 5 rows (latency) and
// into the same registers above (24 accumulators leave no room for 48).
template <int MR>
SSMKIT_TARGET_AVX512 void tile_avx512_bf16(const float* xp, const void* panel, int64_t kx, float* acc) {
  constexpr bool kSplit = MR <= 4;
  const uint16_t* wp = static_cast<const uint16_t*>(panel);
  const __m512i odd_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 a0[MR], a1[MR], b0[kSplit ? MR : 1], b1[kSplit ? MR : 1];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    a0[r] = _mm512_setzero_ps();
    a1[r] = _mm512_setzero_ps();
    if constexpr (kSplit) {
      b0[r] = _mm512_setzero_ps();
      b1[r] = _mm512_setzero_ps();
    }
  }
  const __mmask16 all = 0xffff;
  for (int64_t k2 = 0; k2 < kx / 2; ++k2) {
    const __m512i p0 = _mm512_loadu_si512(wp + k2 * 2 * kPanel);
    const __m512i p1 = _mm512_loadu_si512(wp + k2 * 2 * kPanel + 32);
    // The all-ones masked shift: the unmasked one trips GCC 12's -Wmaybe-uninitialized.
    const __m512 e0 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, p0, 16));
    const __m512 e1 = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, p1, 16));
    const __m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(p0, odd_mask));
    const __m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(p1, odd_mask));
    const float* x = xp + k2 * 2 * MR;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 xe = _mm512_set1_ps(x[r]);
      const __m512 xo = _mm512_set1_ps(x[MR + r]);
      a0[r] = _mm512_fmadd_ps(xe, e0, a0[r]);
      a1[r] = _mm512_fmadd_ps(xe, e1, a1[r]);
      if constexpr (kSplit) {
        b0[r] = _mm512_fmadd_ps(xo, o0, b0[r]);
        b1[r] = _mm512_fmadd_ps(xo, o1, b1[r]);
      } else {
        a0[r] = _mm512_fmadd_ps(xo, o0, a0[r]);
        a1[r] = _mm512_fmadd_ps(xo, o1, a1[r]);
      }
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if constexpr (kSplit) {
      a0[r] = _mm512_add_ps(a0[r], b0[r]);
      a1[r] = _mm512_add_ps(a1[r], b1[r]);
    }
    _mm512_storeu_ps(acc + r * kPanel, a0[r]);
    _mm512_storeu_ps(acc + r * kPanel + 16, a1[r]);
  }
}

// AVX512-BF16: x (exactly bfloat16: the model's activations) packed as pairs like the panel, and
// vdpbf16ps adds both products of a pair per instruction, half the FMAs of the widening tile. xq is
// (Kx / 2, MR) 32-bit pairs.
template <int MR>
SSMKIT_TARGET_AVX512_BF16 void tile_avx512_dot(const uint32_t* xq, const void* panel, int64_t kx,
                                               float* acc) {
  // Below 5 rows, even and odd pair rows accumulate separately: two chains per column half would wait
  // on vdpbf16ps's latency.
  constexpr bool kSplit = MR <= 4;
  const uint16_t* wp = static_cast<const uint16_t*>(panel);
  __m512 a0[MR], a1[MR], b0[kSplit ? MR : 1], b1[kSplit ? MR : 1];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    a0[r] = _mm512_setzero_ps();
    a1[r] = _mm512_setzero_ps();
    if constexpr (kSplit) {
      b0[r] = _mm512_setzero_ps();
      b1[r] = _mm512_setzero_ps();
    }
  }
  const int64_t k2n = kx / 2;
  int64_t k2 = 0;
  if constexpr (kSplit) {
    for (; k2 + 2 <= k2n; k2 += 2) {
      const __m512bh p0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel));
      const __m512bh p1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel + 32));
      const __m512bh q0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel + 64));
      const __m512bh q1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel + 96));
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512bh x0 = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xq[k2 * MR + r])));
        const __m512bh x1 =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xq[(k2 + 1) * MR + r])));
        a0[r] = _mm512_dpbf16_ps(a0[r], x0, p0);
        a1[r] = _mm512_dpbf16_ps(a1[r], x0, p1);
        b0[r] = _mm512_dpbf16_ps(b0[r], x1, q0);
        b1[r] = _mm512_dpbf16_ps(b1[r], x1, q1);
      }
    }
  }
  for (; k2 < k2n; ++k2) {
    const __m512bh p0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel));
    const __m512bh p1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(wp + k2 * 2 * kPanel + 32));
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512bh xb = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(xq[k2 * MR + r])));
      a0[r] = _mm512_dpbf16_ps(a0[r], xb, p0);
      a1[r] = _mm512_dpbf16_ps(a1[r], xb, p1);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if constexpr (kSplit) {
      a0[r] = _mm512_add_ps(a0[r], b0[r]);
      a1[r] = _mm512_add_ps(a1[r], b1[r]);
    }
    _mm512_storeu_ps(acc + r * kPanel, a0[r]);
    _mm512_storeu_ps(acc + r * kPanel + 16, a1[r]);
  }
}

// 16 ymm registers: MR rows x 16 columns (2 * MR accumulators, 12 at MR = 6) per pass, two passes per
// panel; bfloat16 even and odd k go into the same accumulators, one after the other.
template <int MR, bool kBF16>
SSMKIT_TARGET_AVX2 void tile_avx2(const float* xp, const void* panel, int64_t kx, float* acc) {
  for (int half = 0; half < 2; ++half) {
    __m256 a0[MR], a1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      a0[r] = _mm256_setzero_ps();
      a1[r] = _mm256_setzero_ps();
    }
    if constexpr (kBF16) {
      const uint16_t* wp = static_cast<const uint16_t*>(panel) + half * 32;
      const __m256i odd_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
      for (int64_t k2 = 0; k2 < kx / 2; ++k2) {
        const __m256i p0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + k2 * 2 * kPanel));
        const __m256i p1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + k2 * 2 * kPanel + 16));
        const float* x = xp + k2 * 2 * MR;
        {
          const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(p0, 16));
          const __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(p1, 16));
#pragma GCC unroll 6
          for (int r = 0; r < MR; ++r) {
            const __m256 xe = _mm256_broadcast_ss(x + r);
            a0[r] = _mm256_fmadd_ps(xe, w0, a0[r]);
            a1[r] = _mm256_fmadd_ps(xe, w1, a1[r]);
          }
        }
        const __m256 w0 = _mm256_castsi256_ps(_mm256_and_si256(p0, odd_mask));
        const __m256 w1 = _mm256_castsi256_ps(_mm256_and_si256(p1, odd_mask));
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
          const __m256 xo = _mm256_broadcast_ss(x + MR + r);
          a0[r] = _mm256_fmadd_ps(xo, w0, a0[r]);
          a1[r] = _mm256_fmadd_ps(xo, w1, a1[r]);
        }
      }
    } else {
      const float* wp = static_cast<const float*>(panel) + half * 16;
      for (int64_t kk = 0; kk < kx; ++kk) {
        const __m256 w0 = _mm256_loadu_ps(wp + kk * kPanel);
        const __m256 w1 = _mm256_loadu_ps(wp + kk * kPanel + 8);
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
          const __m256 x0 = _mm256_broadcast_ss(xp + kk * MR + r);
          a0[r] = _mm256_fmadd_ps(x0, w0, a0[r]);
          a1[r] = _mm256_fmadd_ps(x0, w1, a1[r]);
        }
      }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(acc + r * kPanel + half * 16, a0[r]);
      _mm256_storeu_ps(acc + r * kPanel + half * 16 + 8, a1[r]);
    }
  }
}

#endif  // SSMKIT_X86

// The tile functions of one SIMD path for 1..kMaxMR rows, float32 and bfloat16 panels, and the
// bfloat16 dot-product tiles where the CPU has them.
constexpr int kMaxMR = 12;
using dot_tile_fn = void (*)(const uint32_t* xq, const void* panel, int64_t kx, float* acc);
struct linear_path {
  int mr = 4;
  tile_fn f32[kMaxMR + 1] = {};
  tile_fn bf16[kMaxMR + 1] = {};
  dot_tile_fn dot[kMaxMR + 1] = {};
  bool has_dot = false;
};

template <int MR, bool kBF16>
struct scalar_tile {
  static void run(const float* xp, const void* panel, int64_t kx, float* acc) {
    tile_scalar<MR, kBF16>(xp, panel, kx, acc);
  }
};
#if SSMKIT_X86
template <int MR, bool kBF16>
struct avx512_tile {
  static void run(const float* xp, const void* panel, int64_t kx, float* acc) {
    if constexpr (kBF16) {
      tile_avx512_bf16<MR>(xp, panel, kx, acc);
    } else {
      tile_avx512_f32<MR>(xp, panel, kx, acc);
    }
  }
};
template <int MR, bool kBF16>
struct avx2_tile {
  static void run(const float* xp, const void* panel, int64_t kx, float* acc) {
    tile_avx2<MR, kBF16>(xp, panel, kx, acc);
  }
};
template <int... R>
void fill_dot(linear_path& p, std::integer_sequence<int, R...>) {
  ((p.dot[R + 1] = &tile_avx512_dot<R + 1>), ...);
}
#endif

template <template <int, bool> class Tile, int... R>
void fill_path(linear_path& p, std::integer_sequence<int, R...>) {
  ((p.f32[R + 1] = &Tile<R + 1, false>::run), ...);
  ((p.bf16[R + 1] = &Tile<R + 1, true>::run), ...);
}

const linear_path& select_path() {
  static const linear_path path = [] {
    linear_path p;
#if SSMKIT_X86
    if (cpu::simd() >= cpu::SIMD_AVX512) {
      p.mr = 12;
      fill_path<avx512_tile>(p, std::make_integer_sequence<int, 12>{});
      // AVX512-BF16 rides with the AVX-512 level (SSMKIT_SIMD=avx2 or below turns it off too).
      __builtin_cpu_init();
      if (__builtin_cpu_supports("avx512bf16")) {
        fill_dot(p, std::make_integer_sequence<int, 12>{});
        p.has_dot = true;
      }
      return p;
    }
    if (cpu::simd() >= cpu::SIMD_AVX2) {
      p.mr = 6;
      fill_path<avx2_tile>(p, std::make_integer_sequence<int, 6>{});
      return p;
    }
#endif
    p.mr = 4;
    fill_path<scalar_tile>(p, std::make_integer_sequence<int, 4>{});
    return p;
  }();
  return path;
}

// ---- linear: packing and the epilogue --------------------------------------------------------------

// x -> float32 row blocks: block b (rows m0 = b * mr .. m0 + rows - 1) at xp + m0 * Kx as (Kx, rows),
// the rows past K zero.
template <ssmkit_dtype T>
void pack_x(const linear_params& p, int mr, int64_t kx, float* xp) {
  const int64_t m = p.m, k = p.k, len = p.seqlen;
  const int64_t blocks = (m + mr - 1) / mr;
  // k in slices whose destination rows (slice * rows floats) stay in L1 while every row is read.
  constexpr int64_t kSlice = 64;
  cpu::parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * mr;
      const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
      float* dst = xp + m0 * kx;  // (Kx, rows)
      for (int64_t kk = k; kk < kx; ++kk) {
        for (int r = 0; r < rows; ++r) dst[kk * rows + r] = 0.0f;
      }
      if (!p.x_transposed) {
        for (int64_t k0 = 0; k0 < k; k0 += kSlice) {
          const int64_t k1 = std::min(k, k0 + kSlice);
          for (int r = 0; r < rows; ++r) {
            const int64_t src = (m0 + r) * k;
            for (int64_t kk = k0; kk < k1; ++kk) dst[kk * rows + r] = load_f32<T>(p.x.data, src + kk);
          }
        }
      } else {
        // x (batch, K, seqlen): a row block's tokens are consecutive in each channel, so every k reads
        // one contiguous run per batch it spans.
        int64_t base[kMaxMR];  // (rows,) offset of token m0 + r at k = 0
        for (int r = 0; r < rows; ++r) {
          const int64_t row = m0 + r;
          base[r] = (row / len) * k * len + row % len;
        }
        for (int64_t kk = 0; kk < k; ++kk) {
          for (int r = 0; r < rows; ++r) dst[kk * rows + r] = load_f32<T>(p.x.data, base[r] + kk * len);
        }
      }
    }
  });
}

#if SSMKIT_X86
// dst[i] = bf16(src[i] + bias[i]) for n <= 16 values, rounded as f32_to_bf16 does (to nearest even,
// NaN kept quiet), 16 lanes at once.
SSMKIT_TARGET_AVX512 void store_bf16_avx512(uint16_t* dst, const float* src, const float* bias, int64_t n) {
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
  // The all-ones masked shifts: the unmasked ones trip GCC 12's -Wmaybe-uninitialized.
  const __mmask16 all = 0xffff;
  __m512 v = _mm512_maskz_loadu_ps(m, src);
  if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias));
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_maskz_srli_epi32(all, u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_maskz_srli_epi32(all, _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_maskz_srli_epi32(all, u, 16), _mm512_set1_epi32(0x40));
  _mm512_mask_cvtepi32_storeu_epi16(dst, m, _mm512_mask_blend_epi32(nan, rounded, quiet));
}
#endif

template <ssmkit_dtype T>
inline void store_row(void* out, int64_t base, const float* a, const float* bias, int64_t lo, int64_t hi) {
#if SSMKIT_X86
  if constexpr (T == SSMKIT_DTYPE_BF16) {
    if (cpu::simd() >= cpu::SIMD_AVX512) {
      for (int64_t c = lo; c < hi; c += 16) {
        store_bf16_avx512(static_cast<uint16_t*>(out) + base + c, a + c, bias ? bias + c : nullptr,
                          std::min<int64_t>(16, hi - c));
      }
      return;
    }
  }
#endif
  for (int64_t c = lo; c < hi; ++c) store_f32<T>(out, base + c, a[c] + (bias ? bias[c] : 0.0f));
}

// out (batch, cols, seqlen): for one column the block's rows are consecutive tokens, so when they lie
// in one batch (all but the blocks that straddle two) the inner loop writes one contiguous run.
template <ssmkit_dtype T>
void store_transposed(const linear_params& p, const linear_output& out, int64_t m0, int rows, int64_t c0,
                      int64_t lo, int64_t hi, const float* acc, const float* bias) {
  const int64_t len = p.seqlen;
  float col[kMaxMR];
  if (m0 / len == (m0 + rows - 1) / len) {
    const int64_t base = (m0 / len) * out.cols * len + m0 % len;
    for (int64_t c = lo; c < hi; ++c) {
      const float bc = bias ? bias[c] : 0.0f;
      for (int r = 0; r < rows; ++r) col[r] = acc[r * kPanel + c - c0] + bc;
      store_row<T>(out.out.data, base + (c - out.col0) * len, col, nullptr, 0, rows);
    }
    return;
  }
  for (int64_t c = lo; c < hi; ++c) {
    const float bc = bias ? bias[c] : 0.0f;
    for (int r = 0; r < rows; ++r) {
      const int64_t row = m0 + r;
      store_f32<T>(out.out.data, ((row / len) * out.cols + (c - out.col0)) * len + row % len,
                   acc[r * kPanel + c - c0] + bc);
    }
  }
}

// Adds the bias to acc (rows, 32) for columns c0.. and writes each column to the output that takes it.
void store_tile(const linear_params& p, int64_t m0, int rows, int64_t c0, const float* acc) {
  const int64_t c1 = std::min<int64_t>(c0 + kPanel, p.n);
  const float* bias = p.bias.present() ? p.bias.ptr<const float>() : nullptr;
  for (int o = 0; o < p.num_outputs; ++o) {
    const linear_output& out = p.outputs[o];
    const int64_t lo = std::max(c0, out.col0), hi = std::min(c1, out.col0 + out.cols);
    if (lo >= hi) continue;
    if (!out.transposed) {
      for (int r = 0; r < rows; ++r) {
        const float* a = acc + r * kPanel - c0;
        const int64_t base = (m0 + r) * out.cols - out.col0;
        switch (out.out.dtype) {
          case SSMKIT_DTYPE_BF16: store_row<SSMKIT_DTYPE_BF16>(out.out.data, base, a, bias, lo, hi); break;
          case SSMKIT_DTYPE_F16: store_row<SSMKIT_DTYPE_F16>(out.out.data, base, a, bias, lo, hi); break;
          default: store_row<SSMKIT_DTYPE_F32>(out.out.data, base, a, bias, lo, hi); break;
        }
      }
      continue;
    }
    switch (out.out.dtype) {
      case SSMKIT_DTYPE_BF16:
        store_transposed<SSMKIT_DTYPE_BF16>(p, out, m0, rows, c0, lo, hi, acc, bias);
        break;
      case SSMKIT_DTYPE_F16:
        store_transposed<SSMKIT_DTYPE_F16>(p, out, m0, rows, c0, lo, hi, acc, bias);
        break;
      default: store_transposed<SSMKIT_DTYPE_F32>(p, out, m0, rows, c0, lo, hi, acc, bias); break;
    }
  }
}

status linear_run(const linear_params& p) {
  const linear_path& path = select_path();
  const int mr = path.mr;
  const bool bf16 = p.w.dtype == SSMKIT_DTYPE_BF16;
  const int64_t m = p.m, k = p.k, n = p.n;
  const int64_t kx = bf16 ? (k + 1) / 2 * 2 : k;
  // bfloat16 activations against bfloat16 panels: the dot-product tiles, exact on such inputs.
  const bool dot = bf16 && path.has_dot && p.x.dtype == SSMKIT_DTYPE_BF16;
  // (M * Kx) float32 row blocks of x, then (M * Kx / 2) 32-bit pairs for the dot tiles; grows once
  // to the largest call on this thread.
  thread_local std::vector<float> scratch;
  const size_t need = static_cast<size_t>(m * kx) * (dot ? 2 : 1);
  if (scratch.size() < need) scratch.resize(need);
  float* xp = scratch.data();
  uint32_t* xq = reinterpret_cast<uint32_t*>(xp + m * kx);
  SSMKIT_RETURN_IF_ERROR(SSMKIT_FLOAT_SWITCH(p.x.dtype, "linear", [&] {
    pack_x<kDType>(p, mr, kx, xp);
    return ok_status();
  }));
  const int64_t blocks = (m + mr - 1) / mr;
  if (dot) {
    cpu::parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t m0 = b * mr;
        const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
        const float* src = xp + m0 * kx;   // (Kx, rows)
        uint32_t* dst = xq + m0 * kx / 2;  // (Kx / 2, rows)
        for (int64_t k2 = 0; k2 < kx / 2; ++k2) {
          for (int r = 0; r < rows; ++r) {
            dst[k2 * rows + r] = (f32_bits(src[2 * k2 * rows + r]) >> 16) |
                                 (f32_bits(src[(2 * k2 + 1) * rows + r]) & 0xffff0000u);
          }
        }
      }
    });
  }
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const int64_t groups = (blocks + kRowBlocksPerPanel - 1) / kRowBlocksPerPanel;
  const size_t panel_bytes = static_cast<size_t>(kx) * kPanel * (bf16 ? 2 : 4);
  const char* w = static_cast<const char*>(p.w.data);
  // A small product (decode's x_proj and dt_proj: ~150 KB of weights for one row) finishes on the calling
  // thread in less time than waking the pool would take.
  const bool small = static_cast<double>(panels) * static_cast<double>(panel_bytes) * static_cast<double>(m) <
                     static_cast<double>(kInlineLinearBytes);
  cpu::parallel_for(groups * panels, small ? groups * panels : 1, [&](int64_t i0, int64_t i1) {
    alignas(64) float acc[kMaxMR * kPanel];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t g = i / panels, pn = i % panels;
      const void* panel = w + pn * panel_bytes;
      const int64_t bend = std::min(blocks, (g + 1) * kRowBlocksPerPanel);
      for (int64_t b = g * kRowBlocksPerPanel; b < bend; ++b) {
        const int64_t m0 = b * mr;
        const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
        if (dot) {
          path.dot[rows](xq + m0 * kx / 2, panel, kx, acc);
        } else {
          (bf16 ? path.bf16 : path.f32)[rows](xp + m0 * kx, panel, kx, acc);
        }
        store_tile(p, m0, rows, pn * kPanel, acc);
      }
    }
  });
  return ok_status();
}

// Rows of any float dtype to and from float32, one dtype switch per row (the typed loops vectorize).
void load_row_f32(const tensor_view& t, int64_t off, int64_t n, float* dst) {
  switch (t.dtype) {
    case SSMKIT_DTYPE_BF16: {
      const uint16_t* s = t.ptr<const uint16_t>() + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case SSMKIT_DTYPE_F16: {
      const uint16_t* s = t.ptr<const uint16_t>() + off;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
    default: std::memcpy(dst, t.ptr<const float>() + off, static_cast<size_t>(n) * sizeof(float)); break;
  }
}

void store_row_f32(const tensor_view& t, int64_t off, int64_t n, const float* src) {
  switch (t.dtype) {
    case SSMKIT_DTYPE_BF16: store_row<SSMKIT_DTYPE_BF16>(t.data, off, src, nullptr, 0, n); break;
    case SSMKIT_DTYPE_F16: store_row<SSMKIT_DTYPE_F16>(t.data, off, src, nullptr, 0, n); break;
    default: std::memcpy(t.ptr<float>() + off, src, static_cast<size_t>(n) * sizeof(float)); break;
  }
}

// sum of v[i]^2 in 16 lanes (vectorizes; float32 lanes are exact enough for rows of thousands).
float sum_squares(const float* v, int64_t n) {
  float part[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) part[j] += v[i + j] * v[i + j];
  }
  for (; i < n; ++i) part[0] += v[i] * v[i];
  double s = 0;
  for (float x : part) s += x;
  return static_cast<float>(s);
}

#if SSMKIT_X86
// v[i] *= silu(z[i]) over 8 lanes: silu(z) = z * sigmoid(z), sigmoid from e = exp(-|z|) <= 1.
SSMKIT_TARGET_AVX2 void gate_silu_avx2(float* v, const float* z, int64_t n) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 zv = _mm256_loadu_ps(z + i);
    const __m256 x = _mm256_or_ps(_mm256_andnot_ps(sign, zv), sign);  // -|z|
    const __m256 xc = _mm256_max_ps(x, lo);
    const __m256 nf = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(1.428606765330187e-06f),
                                      _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693145751953125f), xc));
    __m256 e = _mm256_set1_ps(1.0f / 720.0f);
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 120.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 24.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 6.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.5f));
    e = _mm256_fmadd_ps(e, r, one);
    e = _mm256_fmadd_ps(e, r, one);
    const __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127)), 23);
    e = _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(bits)), _mm256_cmp_ps(x, lo, _CMP_GT_OQ));
    // sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below.
    const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 sig =
        _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), _mm256_cmp_ps(zv, _mm256_setzero_ps(), _CMP_LT_OQ));
    _mm256_storeu_ps(v + i, _mm256_mul_ps(_mm256_loadu_ps(v + i), _mm256_mul_ps(zv, sig)));
  }
  for (; i < n; ++i) v[i] *= z[i] / (1.0f + std::exp(-z[i]));
}
#endif

void gate_silu(float* v, const float* z, int64_t n) {
#if SSMKIT_X86
  if (cpu::simd() >= cpu::SIMD_AVX2) {
    gate_silu_avx2(v, z, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) v[i] *= z[i] / (1.0f + std::exp(-z[i]));
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------------

status pack_linear_cpu(const pack_linear_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_pack_linear(p));
  const int64_t n = p.n, k = p.k;
  const bool bf16 = p.out.dtype == SSMKIT_DTYPE_BF16;
  const int64_t kx = bf16 ? (k + 1) / 2 * 2 : k;
  const int64_t panels = (n + kPanel - 1) / kPanel;
  cpu::parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t pn = p0; pn < p1; ++pn) {
      for (int j = 0; j < kPanel; ++j) {
        const int64_t col = pn * kPanel + j;
        for (int64_t kk = 0; kk < kx; ++kk) {
          const int64_t dst = pn * kx * kPanel + (bf16 ? pair_index(kk, j) : kk * kPanel + j);
          if (col >= n || kk >= k) {
            store_any(p.out, dst, 0.0f);
          } else if (p.w.dtype == p.out.dtype) {
            // Same format: copy the bits (bfloat16 stays exact).
            if (bf16) {
              p.out.ptr<uint16_t>()[dst] = p.w.ptr<const uint16_t>()[col * k + kk];
            } else {
              p.out.ptr<float>()[dst] = p.w.ptr<const float>()[col * k + kk];
            }
          } else {
            store_any(p.out, dst, load_any(p.w, col * k + kk));
          }
        }
      }
    }
  });
  return ok_status();
}

status linear_cpu(const linear_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_linear(p));
  if (p.m == 0 || p.n == 0) return ok_status();
  if (p.k == 0) {
    // An empty sum: every output is the bias.
    for (int o = 0; o < p.num_outputs; ++o) {
      const linear_output& out = p.outputs[o];
      for (int64_t i = 0; i < out.out.numel(); ++i) {
        const int64_t c = out.transposed ? (i / p.seqlen) % out.cols : i % out.cols;
        store_any(out.out, i, p.bias.present() ? p.bias.ptr<const float>()[out.col0 + c] : 0.0f);
      }
    }
    return ok_status();
  }
  return linear_run(p);
}

status split_columns_cpu(const split_columns_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_split_columns(p));
  cpu::parallel_for(p.num_outputs, 1, [&](int64_t o0, int64_t o1) {
    for (int64_t o = o0; o < o1; ++o) {
      const linear_output& out = p.outputs[o];
      for (int64_t row = 0; row < p.m; ++row) {
        for (int64_t c = 0; c < out.cols; ++c) {
          const float v = load_any(p.x, row * p.n + out.col0 + c);
          // out (M, cols) or (batch, cols, seqlen)
          const int64_t dst = out.transposed ? ((row / p.seqlen) * out.cols + c) * p.seqlen + row % p.seqlen
                                             : row * out.cols + c;
          store_any(out.out, dst, v);
        }
      }
    }
  });
  return ok_status();
}

status rms_norm_cpu(const rms_norm_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_rms_norm(p));
  const int64_t d = p.d;
  const int64_t out_rows = p.last_of > 0 ? p.rows / p.last_of : p.rows;
  cpu::parallel_for(out_rows, 4, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> buf;  // (3, d): the residual sum of one row, the other input, weight
    if (buf.size() < static_cast<size_t>(3 * d)) buf.resize(static_cast<size_t>(3 * d));
    float* row = buf.data();
    float* tmp = row + d;
    float* w = row + 2 * d;
    load_row_f32(p.weight, 0, d, w);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t src = p.last_of > 0 ? (r + 1) * p.last_of - 1 : r;
      load_row_f32(p.x, src * d, d, row);
      if (p.residual.present()) {
        load_row_f32(p.residual, src * d, d, tmp);
        for (int64_t i = 0; i < d; ++i) row[i] += tmp[i];
      }
      if (p.residual_out.present()) store_row_f32(p.residual_out, src * d, d, row);
      const float rstd = 1.0f / std::sqrt(sum_squares(row, d) / static_cast<float>(d) + p.eps);
      for (int64_t i = 0; i < d; ++i) tmp[i] = row[i] * rstd * w[i];
      store_row_f32(p.out, r * d, d, tmp);
    }
  });
  return ok_status();
}

status gated_rms_norm_cpu(const gated_rms_norm_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_gated_rms_norm(p));
  const int64_t d = p.d, gs = p.d / p.groups;
  cpu::parallel_for(p.rows, 4, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> buf;  // (3, d): the gated values of one row, z, the weight
    if (buf.size() < static_cast<size_t>(3 * d)) buf.resize(static_cast<size_t>(3 * d));
    float* row = buf.data();
    float* z = row + d;
    float* w = row + 2 * d;
    load_row_f32(p.weight, 0, d, w);
    for (int64_t r = r0; r < r1; ++r) {
      load_row_f32(p.y, r * d, d, row);
      if (p.z.present()) {
        load_row_f32(p.z, r * d, d, z);
        gate_silu(row, z, d);
      }
      for (int64_t g = 0; g < p.groups; ++g) {
        float* v = row + g * gs;
        const float rstd = 1.0f / std::sqrt(sum_squares(v, gs) / static_cast<float>(gs) + p.eps);
        for (int64_t i = 0; i < gs; ++i) z[g * gs + i] = v[i] * rstd * w[g * gs + i];
      }
      store_row_f32(p.out, r * d, d, z);
    }
  });
  return ok_status();
}

status embedding_cpu(const embedding_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_embedding(p));
  SSMKIT_RETURN_IF_ERROR(nn_check::check_embedding_ids(p));
  const int32_t* ids = p.ids.ptr<const int32_t>();
  const int64_t d = p.d, dx = (d + 1) / 2 * 2;
  cpu::parallel_for(p.count, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t v = ids[i];
      for (int64_t j = 0; j < d; ++j) {
        // packed: token v is column v % 32 of panel v / 32 (float32 (d, 32), bfloat16 pairs (dx / 2, 32, 2))
        const int64_t src = !p.packed ? v * d + j
                            : p.weight.dtype == SSMKIT_DTYPE_BF16
                                ? (v / kPanel) * dx * kPanel + pair_index(j, v % kPanel)
                                : ((v / kPanel) * d + j) * kPanel + v % kPanel;
        store_any(p.out, i * d + j, load_any(p.weight, src));
      }
    }
  });
  return ok_status();
}

status transpose_split_cpu(const transpose_split_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_transpose_split(p));
  const int64_t r = p.r, c = p.c;
  cpu::parallel_for(p.batch * p.num_outputs, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / p.num_outputs;
      const split_output& o = p.outputs[i % p.num_outputs];
      for (int64_t j = 0; j < o.rows; ++j) {
        const int64_t src = (b * r + o.row0 + j) * c;
        for (int64_t cc = 0; cc < c; ++cc)
          store_any(o.out, (b * c + cc) * o.rows + j, load_any(p.x, src + cc));
      }
    }
  });
  return ok_status();
}

status dt_limit_cpu(const dt_limit_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_dt_limit(p));
  const int64_t h = p.heads;
  for (int64_t i = 0; i < p.rows * h; ++i) {
    float v = load_any(p.dt, i);
    if (p.bias.present()) v += p.bias.ptr<const float>()[i % h];
    // softplus as the reference computes it: linear above 20 where exp would only add rounding.
    v = v <= 20.0f ? std::log1p(std::exp(v)) : v;
    store_any(p.out, i, std::min(std::max(v, p.lo), p.hi));
  }
  return ok_status();
}

namespace {

// e^x for x <= 0 to about 2 ulp, branch-free so that the loop over a row vectorizes: x = n ln2 + r
// with |r| <= ln2 / 2, e^r by its degree-6 Taylor polynomial, 2^n by the exponent bits. Below -87 (and
// for NaN) the result is 0: under float32's normal range, it adds nothing to a softmax.
inline float exp_nonpositive(float x) {
  const float xc = x > -87.0f ? x : -87.0f;
  const float t = xc * 1.44269504088896341f;
  // Round to nearest by the 1.5 * 2^23 trick (exact for |t| < 2^22).
  const float n = (t + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float e = 1.0f / 720.0f;
  e = e * r + 1.0f / 120.0f;
  e = e * r + 1.0f / 24.0f;
  e = e * r + 1.0f / 6.0f;
  e = e * r + 0.5f;
  e = e * r + 1.0f;
  e = e * r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return x > -87.0f ? e * bits_f32(bits) : 0.0f;
}

#if SSMKIT_X86
// exp_nonpositive over 8 lanes (the scalar form's branches keep GCC from vectorizing its loop).
SSMKIT_TARGET_AVX2 void exp_row_avx2(const float* logits, int64_t n, float mx, float inv_t, float* out) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x =
        _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(logits + i), _mm256_set1_ps(mx)), _mm256_set1_ps(inv_t));
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GT_OQ);  // false for NaN and below -87
    const __m256 xc = _mm256_max_ps(x, lo);
    const __m256 nf = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(1.428606765330187e-06f),
                                      _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693145751953125f), xc));
    __m256 e = _mm256_set1_ps(1.0f / 720.0f);
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 120.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 24.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f / 6.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.5f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.0f));
    const __m256i bits =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127)), 23);
    _mm256_storeu_ps(out + i, _mm256_and_ps(_mm256_mul_ps(e, _mm256_castsi256_ps(bits)), keep));
  }
  for (; i < n; ++i) out[i] = exp_nonpositive((logits[i] - mx) * inv_t);
}
#endif

// exp((logits - mx) * inv_t) over a row.
void exp_row(const float* logits, int64_t n, float mx, float inv_t, float* out) {
#if SSMKIT_X86
  if (cpu::simd() >= cpu::SIMD_AVX2) {
    exp_row_avx2(logits, n, mx, inv_t, out);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = exp_nonpositive((logits[i] - mx) * inv_t);
}

// Buckets of -log p (width 1/64 nat over [0, 32), the rest in the last): tokens in an earlier bucket
// are always more likely, so the descending order that top-k and top-p walk is the buckets in order,
// each sorted only when the walk reaches it.
constexpr int kSampleBins = 2048;
constexpr float kBinsPerNat = 64.0f;

// Values per block of the sampler's running sums: the blocks' sums find the block a draw lands in,
// and only that block is walked element by element.
constexpr int64_t kSumBlock = 256;

// A logit's bits as an unsigned key that orders as the logits do (NaN lowest, -0 as +0).
uint32_t logit_key(float l) {
  if (l != l) return 0u;
  uint32_t b = 0;
  if (l != 0.0f) std::memcpy(&b, &l, sizeof b);
  return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

int32_t sample_row(const float* logits, int64_t vocab, const sample_params& p, double draw) {
  // The max in 16 independent lanes (vectorizes), then its first index.
  float lanes[16];
  for (float& l : lanes) l = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) lanes[i & 15] = logits[i] > lanes[i & 15] ? logits[i] : lanes[i & 15];
  float mx = -INFINITY;
  for (float l : lanes) mx = l > mx ? l : mx;
  int64_t best = 0;
  while (best < vocab && !(logits[best] == mx)) ++best;
  if (best == vocab) best = 0;  // every logit NaN
  if (p.temperature <= 0.0f || !(mx > -INFINITY) || mx == INFINITY) return static_cast<int32_t>(best);
  const float inv_t = 1.0f / p.temperature;
  thread_local std::vector<float> prob;   // (vocab,) exp((l - max) / T); NaN logits 0
  thread_local std::vector<double> sums;  // (vocab / kSumBlock,) each block's mass
  const int64_t blocks = (vocab + kSumBlock - 1) / kSumBlock;
  if (prob.size() < static_cast<size_t>(vocab)) prob.resize(static_cast<size_t>(vocab));
  if (sums.size() < static_cast<size_t>(blocks)) sums.resize(static_cast<size_t>(blocks));
  float* pr = prob.data();
  double total = 0;
  exp_row(logits, vocab, mx, inv_t, pr);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t i0 = b * kSumBlock, i1 = std::min(vocab, i0 + kSumBlock);
    // 16 partial sums per block, so that the adds vectorize.
    float part[16] = {};
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16) {
      for (int j = 0; j < 16; ++j) part[j] += pr[i + j];
    }
    for (; i < i1; ++i) part[0] += pr[i];
    double block = 0;
    for (float v : part) block += v;
    sums[b] = block;
    total += block;
  }
  const int64_t top_k = p.top_k > 0 ? std::min(p.top_k, vocab) : vocab;
  const double top_p = p.top_p > 0.0f && p.top_p < 1.0f ? p.top_p : 1.0;
  if (top_k == vocab && top_p >= 1.0) {
    // No filter: the cumulative mass in index order, block sums first.
    double u = draw * total;
    int64_t b = 0;
    while (b + 1 < blocks && u >= sums[b]) u -= sums[b++];
    int64_t last = best;
    for (int64_t i = b * kSumBlock; i < std::min(vocab, (b + 1) * kSumBlock); ++i) {
      if (pr[i] <= 0.0f) continue;
      last = i;
      u -= pr[i];
      if (u < 0) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(last);
  }
  // Counting sort of the tokens by bucket (stable: by index within one).
  thread_local std::vector<int32_t> order;   // (vocab,) token ids by bucket
  thread_local std::vector<int32_t> bucket;  // (vocab,)
  thread_local std::vector<int64_t> start;   // (kSampleBins + 1,)
  if (order.size() < static_cast<size_t>(vocab)) {
    order.resize(static_cast<size_t>(vocab));
    bucket.resize(static_cast<size_t>(vocab));
  }
  start.assign(kSampleBins + 1, 0);
  for (int64_t i = 0; i < vocab; ++i) {
    const float nl = (mx - logits[i]) * inv_t * kBinsPerNat;
    const int b =
        nl < static_cast<float>(kSampleBins - 1) ? static_cast<int>(nl) : kSampleBins - 1;  // NaN: last
    bucket[i] = b;
    ++start[b + 1];
  }
  for (int b = 0; b < kSampleBins; ++b) start[b + 1] += start[b];
  {
    thread_local std::vector<int64_t> fill;
    fill.assign(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < vocab; ++i) order[fill[bucket[i]]++] = static_cast<int32_t>(i);
  }
  // Walks the tokens in descending probability, sorting each bucket as it is first reached; calls
  // visit(token) until it returns true; returns how many tokens it visited.
  int sorted_upto = 0;
  const auto walk = [&](int64_t limit, auto&& visit) -> int64_t {
    int64_t n = 0;
    for (int b = 0; b < kSampleBins && n < limit; ++b) {
      int32_t* first = order.data() + start[b];
      int32_t* last = order.data() + start[b + 1];
      if (b >= sorted_upto) {
        // By logit, not by the float probability: two logits closer than p's resolution (an ulp of p near
        // 1 is 6e-8) round to one p, or to swapped ones within exp's error; the order of exp((l - max) / T)
        // is strictly that of the logits (the CUDA sampler's keys, ties by index in both).
        std::sort(first, last, [&](int32_t x, int32_t y) {
          const uint32_t kx = logit_key(logits[x]), ky = logit_key(logits[y]);
          return kx > ky || (kx == ky && x < y);
        });
        sorted_upto = b + 1;
      }
      for (int32_t* t = first; t < last && n < limit; ++t) {
        ++n;
        if (visit(*t)) return n;
      }
    }
    return n;
  };
  // The mass top-p is a fraction of: the top-k survivors', or (without top-k) every token's.
  double kept = 0;
  if (top_k < vocab) {
    walk(top_k, [&](int32_t t) {
      kept += pr[t];
      return false;
    });
  } else {
    kept = total;
  }
  int64_t n = top_k;
  if (top_p < 1.0) {
    // The smallest prefix whose mass reaches top_p of the survivors'; at least one token.
    double cum = 0;
    n = walk(top_k, [&](int32_t t) {
      cum += pr[t];
      return cum >= top_p * kept;
    });
    n = std::max<int64_t>(1, n);
    kept = cum;
  }
  double u = draw * kept;
  int32_t picked = static_cast<int32_t>(best);
  walk(n, [&](int32_t t) {
    picked = t;
    u -= pr[t];
    return u < 0;
  });
  return picked;
}

}  // namespace

status sample_cpu(const sample_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_sample(p));
  const bool sampled = p.temperature > 0.0f;
  cpu::parallel_for(p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const double draw = sampled ? p.draws.ptr<const double>()[r] : 0.0;
      p.tokens.ptr<int32_t>()[r] = sample_row(p.logits.ptr<const float>() + r * p.vocab, p.vocab, p, draw);
    }
  });
  return ok_status();
}

}  // namespace ssmkit

// ---- the fused decode step ---------------------------------------------------------------------------
// One worker-thread call per token instead of one op call per kernel: the same kernels in the same order
// as the runner's op-by-op path (so the results agree bit for bit), on views of one scratch block, with
// the scan family's state updates and the quantization family's GEMMs called through their C++ API.

namespace ssmkit {
namespace {

tensor_view view_of(void* data, ssmkit_dtype dtype, std::initializer_list<int64_t> dims) {
  tensor_view v;
  v.data = data;
  v.dtype = dtype;
  v.ndim = static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) v.shape[i++] = d;
  return v;
}

// Bump allocation of 64-byte aligned buffers from one thread_local block that grows to the largest
// step this thread has run.
class scratch_arena {
 public:
  void reserve(size_t bytes) {
    thread_local std::vector<char> block;
    if (block.size() < bytes + 64) block.resize(bytes + 64);
    base_ = block.data() + ((64 - reinterpret_cast<uintptr_t>(block.data()) % 64) % 64);
    used_ = 0;
  }
  void* take(size_t bytes) {
    void* p = base_ + used_;
    used_ += (bytes + 63) / 64 * 64;
    return p;
  }

 private:
  char* base_ = nullptr;
  size_t used_ = 0;
};

struct quant_scratch {
  void* tmp = nullptr;      // (batch, max n) activation dtype: a quantized GEMM's output before its split
  int8_t* aq = nullptr;     // (batch, max k) int8 activations
  float* as = nullptr;      // (batch,) per-token activation scales
  void* rotated = nullptr;  // (batch, max k) activation dtype: w4a16's rotated input
};

// out[i] = columns [col0_i, col0_i + cols_i) of x @ W^T + b, for x (batch, k).
status run_linear(const linear_weight& lw, const tensor_view& x, int64_t batch, const linear_output* outs,
                  int n_outs, ssmkit_dtype act, const quant_scratch& qs) {
  if (lw.kind == LINEAR_FLOAT) {
    linear_params p;
    p.x = x;
    p.w = lw.w;
    p.bias = lw.bias;
    p.m = batch;
    p.k = lw.k;
    p.n = lw.n;
    p.num_outputs = n_outs;
    for (int i = 0; i < n_outs; ++i) p.outputs[i] = outs[i];
    return linear_cpu(p);
  }
  // A single output of every column takes the GEMM's result directly.
  const bool direct = n_outs == 1 && outs[0].col0 == 0 && outs[0].cols == lw.n;
  tensor_view out = direct ? outs[0].out : view_of(qs.tmp, act, {batch, lw.n});
  if (lw.kind == LINEAR_W4A16) {
    tensor_view xin = x;
    if (lw.rotate) {
      hadamard_params h;
      h.x = x;
      h.out = view_of(qs.rotated, x.dtype, {batch, lw.k});
      h.rows = batch;
      h.n = lw.k;
      h.scale = 1.0f / std::sqrt(static_cast<float>(lw.k));
      SSMKIT_RETURN_IF_ERROR(hadamard_cpu(h));
      xin = h.out;
    }
    gemm_w4a16_params g;
    g.x = xin;
    g.w = lw.w;
    g.scales = lw.w_scale;
    g.bias = lw.bias;
    g.out = out;
    g.m = batch;
    g.n = lw.n;
    g.k = lw.k;
    g.group_size = lw.group_size;
    g.w_packed = true;
    SSMKIT_RETURN_IF_ERROR(gemm_w4a16_cpu(g));
  } else {
    quantize_params q;
    q.x = x;
    q.q = view_of(qs.aq, SSMKIT_DTYPE_I8, {batch, lw.k});
    q.lines = batch;
    q.len = lw.k;
    q.bits = 8;
    q.hadamard = lw.rotate;
    if (lw.act_scale.present()) {
      q.scale = lw.act_scale;
      q.granularity = QUANT_TENSOR;
      q.static_scale = true;
    } else {
      q.scale = view_of(qs.as, SSMKIT_DTYPE_F32, {batch});
      q.granularity = QUANT_TOKEN;
    }
    SSMKIT_RETURN_IF_ERROR(quantize_cpu(q));
    if (lw.kind == LINEAR_W8A8) {
      gemm_w8a8_params g;
      g.a = q.q;
      g.w = lw.w;
      g.a_scale = q.scale;
      g.w_scale = lw.w_scale;
      g.bias = lw.bias;
      g.out = out;
      g.m = batch;
      g.n = lw.n;
      g.k = lw.k;
      g.w_packed = true;
      SSMKIT_RETURN_IF_ERROR(gemm_w8a8_cpu(g));
    } else {
      gemm_w4a8_params g;
      g.a = q.q;
      g.w = lw.w;
      g.a_scale = q.scale;
      g.w_scale = lw.w_scale;
      g.bias = lw.bias;
      g.out = out;
      g.m = batch;
      g.n = lw.n;
      g.k = lw.k;
      g.group_size = lw.group_size;
      g.w_packed = true;
      SSMKIT_RETURN_IF_ERROR(gemm_w4a8_cpu(g));
    }
  }
  if (direct) return ok_status();
  split_columns_params sp;
  sp.x = out;
  sp.m = batch;
  sp.n = lw.n;
  sp.num_outputs = n_outs;
  for (int i = 0; i < n_outs; ++i) sp.outputs[i] = outs[i];
  return split_columns_cpu(sp);
}

linear_output col(const tensor_view& out, int64_t col0, int64_t cols) {
  linear_output o;
  o.out = out;
  o.col0 = col0;
  o.cols = cols;
  return o;
}

}  // namespace

status mamba_decode_step_cpu(const mamba_decode_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_decode(p));
  const mamba_decode_model& m = *p.model;
  const int64_t B = p.batch, d = m.d_model, di = m.d_inner, ds = m.d_state;
  const int64_t gds = m.ngroups * ds;
  const int64_t conv_dim = m.mamba2 ? di + 2 * gds : di;
  const int64_t nh = m.nheads, r = m.dt_rank;
  const ssmkit_dtype act = m.act;
  const ssmkit_dtype res_t = m.residual_fp32 ? SSMKIT_DTYPE_F32 : act;
  const size_t e = static_cast<size_t>(dtype_size(act));
  // The widest linear input and output, for the quantized layers' scratch.
  int64_t max_k = d, max_n = 0;
  for (int l = 0; l < m.num_layers; ++l) {
    for (const linear_weight* lw :
         {&m.layers[l].in_proj, &m.layers[l].x_proj, &m.layers[l].dt_proj, &m.layers[l].out_proj}) {
      max_k = std::max(max_k, lw->k);
      max_n = std::max(max_n, lw->n);
    }
  }
  const size_t row = static_cast<size_t>(B);
  scratch_arena arena;
  arena.reserve(
      row * (4 * d * 4 + 10 * (conv_dim + di + nh + r + 2 * gds) * e + max_k * (e + 1) + max_n * e + 4) +
      64 * 32);
  void* hidden = arena.take(row * d * e);                      // (B, d)
  void* residual = arena.take(row * d * 4);                    // (B, d) res_t
  void* hn = arena.take(row * d * e);                          // (B, d)
  void* z = arena.take(row * di * e);                          // (B, di)
  void* xin = arena.take(row * conv_dim * e);                  // (B, conv_dim): x (Mamba) or xBC (Mamba-2)
  void* xc = arena.take(row * conv_dim * e);                   // (B, conv_dim) after the conv
  void* dt = arena.take(row * std::max(di, nh) * e);           // (B, di) or (B, nh)
  void* dtl = arena.take(row * nh * e);                        // (B, nh) limited dt
  void* dtin = arena.take(row * std::max<int64_t>(r, 1) * e);  // (B, r)
  void* xs = arena.take(row * di * e);                         // (B, di) Mamba-2's x
  void* bm = arena.take(row * gds * e);                        // (B, groups, ds)
  void* cm = arena.take(row * gds * e);                        // (B, groups, ds)
  void* y = arena.take(row * di * e);                          // (B, di)
  void* yn = arena.take(row * di * e);                         // (B, di)
  quant_scratch qs;
  qs.tmp = arena.take(row * max_n * e);
  qs.aq = static_cast<int8_t*>(arena.take(row * max_k));
  qs.as = static_cast<float*>(arena.take(row * 4));
  qs.rotated = arena.take(row * max_k * e);

  const tensor_view hidden_v = view_of(hidden, act, {B, d});
  const tensor_view residual_v = view_of(residual, res_t, {B, d});
  const tensor_view hn_v = view_of(hn, act, {B, d});

  embedding_params ep;
  ep.ids = p.ids;
  ep.weight = m.embed;
  ep.out = hidden_v;
  ep.count = B;
  ep.vocab = m.vocab;
  ep.d = d;
  ep.packed = m.embed_packed;
  SSMKIT_RETURN_IF_ERROR(embedding_cpu(ep));

  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    rms_norm_params np;
    np.x = hidden_v;
    if (l > 0) np.residual = residual_v;
    np.residual_out = residual_v;
    np.weight = w.norm;
    np.out = hn_v;
    np.rows = B;
    np.d = d;
    np.eps = m.eps;
    SSMKIT_RETURN_IF_ERROR(rms_norm_cpu(np));

    const tensor_view z_v = view_of(z, act, {B, di});
    const tensor_view xin_v = view_of(xin, act, {B, conv_dim});
    const tensor_view xc_v = view_of(xc, act, {B, conv_dim});
    if (!m.mamba2) {
      const linear_output outs[2] = {col(xin_v, 0, di), col(z_v, di, di)};
      SSMKIT_RETURN_IF_ERROR(run_linear(w.in_proj, hn_v, B, outs, 2, act, qs));
    } else {
      const tensor_view dt_v = view_of(dt, act, {B, nh});
      const linear_output outs[3] = {col(z_v, 0, di), col(xin_v, di, conv_dim), col(dt_v, di + conv_dim, nh)};
      SSMKIT_RETURN_IF_ERROR(run_linear(w.in_proj, hn_v, B, outs, 3, act, qs));
    }

    causal_conv1d_update_params cp;
    cp.x = xin_v;
    cp.conv_state = p.conv_states[l];
    cp.weight = w.conv_weight;
    cp.bias = w.conv_bias;
    cp.out = xc_v;
    cp.batch = B;
    cp.state_batch = B;
    cp.dim = conv_dim;
    cp.seqlen = 1;
    cp.width = m.conv_width;
    cp.state_len = p.conv_states[l].dim(2);
    cp.silu = true;
    SSMKIT_RETURN_IF_ERROR(causal_conv1d_update_cpu(cp));

    selective_state_update_params sp;
    sp.state = p.ssm_states[l];
    sp.A = w.A;
    sp.D = w.D;
    sp.batch = B;
    sp.state_batch = B;
    sp.dstate = ds;
    const tensor_view y_v = view_of(y, act, {B, di});
    tensor_view layer_out = y_v;
    if (!m.mamba2) {
      const tensor_view dtin_v = view_of(dtin, act, {B, r});
      const tensor_view bm_v = view_of(bm, act, {B, ds});
      const tensor_view cm_v = view_of(cm, act, {B, ds});
      const linear_output xo[3] = {col(dtin_v, 0, r), col(bm_v, r, ds), col(cm_v, r + ds, ds)};
      SSMKIT_RETURN_IF_ERROR(run_linear(w.x_proj, xc_v, B, xo, 3, act, qs));
      const tensor_view dt_v = view_of(dt, act, {B, di});
      const linear_output dto[1] = {col(dt_v, 0, di)};
      SSMKIT_RETURN_IF_ERROR(run_linear(w.dt_proj, dtin_v, B, dto, 1, act, qs));
      sp.x = xc_v;
      sp.dt = dt_v;
      sp.B = bm_v;
      sp.C = cm_v;
      sp.z = z_v;
      sp.dt_bias = w.dt_bias;
      sp.dt_softplus = true;
      sp.out = y_v;
      sp.multihead = false;
      sp.nheads = di;
      sp.headdim = 1;
      sp.groups = 1;
      SSMKIT_RETURN_IF_ERROR(selective_state_update_cpu(sp));
    } else {
      split_columns_params xp;
      xp.x = xc_v;
      xp.m = B;
      xp.n = conv_dim;
      xp.num_outputs = 3;
      xp.outputs[0] = col(view_of(xs, act, {B, di}), 0, di);
      xp.outputs[1] = col(view_of(bm, act, {B, gds}), di, gds);
      xp.outputs[2] = col(view_of(cm, act, {B, gds}), di + gds, gds);
      SSMKIT_RETURN_IF_ERROR(split_columns_cpu(xp));
      tensor_view dt_v = view_of(dt, act, {B, nh});
      if (m.dt_limited) {
        dt_limit_params lp;
        lp.dt = dt_v;
        lp.bias = w.dt_bias;
        lp.out = view_of(dtl, act, {B, nh});
        lp.rows = B;
        lp.heads = nh;
        lp.lo = m.dt_lo;
        lp.hi = m.dt_hi;
        SSMKIT_RETURN_IF_ERROR(dt_limit_cpu(lp));
        dt_v = lp.out;
      } else {
        sp.dt_bias = w.dt_bias;
        sp.dt_softplus = true;
      }
      sp.x = view_of(xs, act, {B, nh, m.headdim});
      sp.dt = dt_v;
      sp.B = view_of(bm, act, {B, m.ngroups, ds});
      sp.C = view_of(cm, act, {B, m.ngroups, ds});
      sp.out = view_of(y, act, {B, nh, m.headdim});
      sp.multihead = true;
      sp.nheads = nh;
      sp.headdim = m.headdim;
      sp.groups = m.ngroups;
      SSMKIT_RETURN_IF_ERROR(selective_state_update_cpu(sp));
      gated_rms_norm_params gp;
      gp.y = y_v;
      gp.z = z_v;
      gp.weight = w.gated_norm;
      gp.out = view_of(yn, act, {B, di});
      gp.rows = B;
      gp.d = di;
      gp.groups = m.ngroups;
      gp.eps = m.eps;
      SSMKIT_RETURN_IF_ERROR(gated_rms_norm_cpu(gp));
      layer_out = gp.out;
    }
    const linear_output oo[1] = {col(hidden_v, 0, d)};
    SSMKIT_RETURN_IF_ERROR(run_linear(w.out_proj, layer_out, B, oo, 1, act, qs));
  }

  rms_norm_params fp;
  fp.x = hidden_v;
  if (m.num_layers > 0) fp.residual = residual_v;
  fp.weight = m.norm_f;
  fp.out = hn_v;
  fp.rows = B;
  fp.d = d;
  fp.eps = m.eps;
  SSMKIT_RETURN_IF_ERROR(rms_norm_cpu(fp));
  const linear_output lo[1] = {col(p.logits, 0, m.vocab)};
  SSMKIT_RETURN_IF_ERROR(run_linear(m.head, hn_v, B, lo, 1, act, qs));
  if (!p.sample.tokens.present()) return ok_status();
  sample_params sp = p.sample;
  sp.logits = p.logits;
  sp.rows = B;
  sp.vocab = m.vocab;
  return sample_cpu(sp);
}

}  // namespace ssmkit
