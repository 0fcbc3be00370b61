// CPU kernels of the model building blocks. The linear layer is a blocked GEMM over weight panels
// packed once at load ((ceil(N / 32), K, 32), float32 or bfloat16 widened on the fly): x is packed into
// blocks of MR rows laid out (K, MR) so a tile broadcasts one x value against a whole panel row; tiles
// of MR x 32 outputs accumulate in registers over all of K. Variants: AVX-512 (MR = 12, the panel as
// two zmm), AVX2 (MR = 6, the panel as two 16-column halves) and portable C++ (MR = 4), chosen by
// cpu::simd() at run time. Decode (M = batch <= MR) is the same code with one row block, bound by the
// weight bytes it streams; row blocks and panels are spread over the thread pool. The norms, the
// embedding lookup, the transposing split and dt's limits are row loops in float32.
#include "ssmkit/nn.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

#if SSMKIT_X86
#include <immintrin.h>
#endif

namespace ssmkit {
namespace {

constexpr int kPanel = kLinearPanel;
// Row blocks that share one pass over a weight panel, so the panel is read from memory once per
// kRowBlocksPerPanel * MR rows and from cache otherwise.
constexpr int64_t kRowBlocksPerPanel = 8;

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

bool is_float(ssmkit_dtype t) {
  return t == SSMKIT_DTYPE_F32 || t == SSMKIT_DTYPE_F16 || t == SSMKIT_DTYPE_BF16;
}

// ---- linear: tiles -------------------------------------------------------------------------------

// acc (MR, 32) = xp (K, MR) ^T @ panel (K, 32), for one row block and one weight panel.
using tile_fn = void (*)(const float* xp, const void* panel, int64_t k, float* acc);

template <int MR, bool kBF16>
void tile_scalar(const float* xp, const void* panel, int64_t k, float* acc) {
  float sum[MR][kPanel] = {};
  for (int64_t kk = 0; kk < k; ++kk) {
    float w[kPanel];
    if constexpr (kBF16) {
      const uint16_t* wp = static_cast<const uint16_t*>(panel) + kk * kPanel;
      for (int j = 0; j < kPanel; ++j) w[j] = bf16_to_f32(wp[j]);
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

template <bool kBF16>
SSMKIT_TARGET_AVX512 inline __m512 load16_avx512(const void* panel, int64_t i) {
  if constexpr (kBF16) {
    const __m256i h =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(panel) + i));
    // The all-ones masked forms: the unmasked ones trip GCC 12's -Wmaybe-uninitialized on their
    // undefined pass-through operand, and compile to the same instructions.
    const __mmask16 all = 0xffff;
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, h), 16));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(panel) + i);
  }
}

// MR rows x 32 columns in 2 * MR zmm accumulators (24 at MR = 12, leaving room for the two panel
// registers and the broadcast). Below 5 rows there are too few independent FMA chains to hide the FMA
// latency, so even and odd k accumulate separately.
template <int MR, bool kBF16>
SSMKIT_TARGET_AVX512 void tile_avx512(const float* xp, const void* panel, int64_t k, float* acc) {
  constexpr bool kSplit = MR <= 4;
  __m512 a0[MR], a1[MR], b0[kSplit ? MR : 1], b1[kSplit ? MR : 1];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    a0[r] = _mm512_setzero_ps();
    a1[r] = _mm512_setzero_ps();
  }
  if constexpr (kSplit) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      b0[r] = _mm512_setzero_ps();
      b1[r] = _mm512_setzero_ps();
    }
  }
  int64_t kk = 0;
  if constexpr (kSplit) {
    for (; kk + 2 <= k; kk += 2) {
      const __m512 w0 = load16_avx512<kBF16>(panel, kk * kPanel);
      const __m512 w1 = load16_avx512<kBF16>(panel, kk * kPanel + 16);
      const __m512 v0 = load16_avx512<kBF16>(panel, kk * kPanel + 32);
      const __m512 v1 = load16_avx512<kBF16>(panel, kk * kPanel + 48);
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
  for (; kk < k; ++kk) {
    const __m512 w0 = load16_avx512<kBF16>(panel, kk * kPanel);
    const __m512 w1 = load16_avx512<kBF16>(panel, kk * kPanel + 16);
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

template <bool kBF16>
SSMKIT_TARGET_AVX2 inline __m256 load8_avx2(const void* panel, int64_t i) {
  if constexpr (kBF16) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(panel) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(panel) + i);
  }
}

// 16 ymm registers: MR rows x 16 columns (2 * MR accumulators, 12 at MR = 6) per pass, two passes per
// panel.
template <int MR, bool kBF16>
SSMKIT_TARGET_AVX2 void tile_avx2(const float* xp, const void* panel, int64_t k, float* acc) {
  for (int half = 0; half < 2; ++half) {
    const int64_t off = half * 16;
    __m256 a0[MR], a1[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      a0[r] = _mm256_setzero_ps();
      a1[r] = _mm256_setzero_ps();
    }
    for (int64_t kk = 0; kk < k; ++kk) {
      const __m256 w0 = load8_avx2<kBF16>(panel, kk * kPanel + off);
      const __m256 w1 = load8_avx2<kBF16>(panel, kk * kPanel + off + 8);
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m256 x0 = _mm256_broadcast_ss(xp + kk * MR + r);
        a0[r] = _mm256_fmadd_ps(x0, w0, a0[r]);
        a1[r] = _mm256_fmadd_ps(x0, w1, a1[r]);
      }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(acc + r * kPanel + off, a0[r]);
      _mm256_storeu_ps(acc + r * kPanel + off + 8, a1[r]);
    }
  }
}

#endif  // SSMKIT_X86

// The tile functions of one SIMD path for 1..kMaxMR rows, float32 and bfloat16 panels.
constexpr int kMaxMR = 12;
struct linear_path {
  int mr = 4;
  tile_fn f32[kMaxMR + 1] = {};
  tile_fn bf16[kMaxMR + 1] = {};
};

template <template <int, bool> class Tile, int... R>
void fill_path(linear_path& p, std::integer_sequence<int, R...>) {
  ((p.f32[R + 1] = &Tile<R + 1, false>::run), ...);
  ((p.bf16[R + 1] = &Tile<R + 1, true>::run), ...);
}

template <int MR, bool kBF16>
struct scalar_tile {
  static void run(const float* xp, const void* panel, int64_t k, float* acc) {
    tile_scalar<MR, kBF16>(xp, panel, k, acc);
  }
};
#if SSMKIT_X86
template <int MR, bool kBF16>
struct avx512_tile {
  static void run(const float* xp, const void* panel, int64_t k, float* acc) {
    tile_avx512<MR, kBF16>(xp, panel, k, acc);
  }
};
template <int MR, bool kBF16>
struct avx2_tile {
  static void run(const float* xp, const void* panel, int64_t k, float* acc) {
    tile_avx2<MR, kBF16>(xp, panel, k, acc);
  }
};
#endif

const linear_path& select_path() {
  static const linear_path path = [] {
    linear_path p;
#if SSMKIT_X86
    if (cpu::simd() >= cpu::SIMD_AVX512) {
      p.mr = 12;
      fill_path<avx512_tile>(p, std::make_integer_sequence<int, 12>{});
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

// x -> float32 row blocks: block b (rows m0 = b * mr .. m0 + rows - 1) at xp + m0 * K as (K, rows).
template <ssmkit_dtype T>
void pack_x(const linear_params& p, int mr, float* xp) {
  const int64_t m = p.m, k = p.k, len = p.seqlen;
  const int64_t blocks = (m + mr - 1) / mr;
  cpu::parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t m0 = b * mr;
      const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
      float* dst = xp + m0 * k;  // (K, rows)
      if (!p.x_transposed) {
        for (int r = 0; r < rows; ++r) {
          const int64_t src = (m0 + r) * k;
          for (int64_t kk = 0; kk < k; ++kk) dst[kk * rows + r] = load_f32<T>(p.x.data, src + kk);
        }
      } else {
        // x (batch, K, seqlen): consecutive rows are consecutive tokens, so the inner loop reads
        // consecutive addresses within one batch.
        for (int64_t kk = 0; kk < k; ++kk) {
          for (int r = 0; r < rows; ++r) {
            const int64_t row = m0 + r;
            const int64_t bb = row / len, l = row % len;
            dst[kk * rows + r] = load_f32<T>(p.x.data, (bb * k + kk) * len + l);
          }
        }
      }
    }
  });
}

// Adds the bias to acc (rows, 32) for columns c0.. and writes each column to the output that takes it.
void store_tile(const linear_params& p, int64_t m0, int rows, int64_t c0, const float* acc) {
  const int64_t c1 = std::min<int64_t>(c0 + kPanel, p.n);
  const float* bias = p.bias.present() ? p.bias.ptr<const float>() : nullptr;
  for (int o = 0; o < p.num_outputs; ++o) {
    const linear_output& out = p.outputs[o];
    const int64_t lo = std::max(c0, out.col0), hi = std::min(c1, out.col0 + out.cols);
    if (lo >= hi) continue;
    for (int r = 0; r < rows; ++r) {
      const int64_t row = m0 + r;
      const float* a = acc + r * kPanel - c0;
      if (!out.transposed) {
        const int64_t base = row * out.cols - out.col0;
        if (out.out.dtype == SSMKIT_DTYPE_F32) {
          float* dst = out.out.ptr<float>() + base;
          for (int64_t c = lo; c < hi; ++c) dst[c] = a[c] + (bias ? bias[c] : 0.0f);
        } else {
          for (int64_t c = lo; c < hi; ++c) store_any(out.out, base + c, a[c] + (bias ? bias[c] : 0.0f));
        }
      } else {
        // out (batch, cols, seqlen)
        const int64_t bb = row / p.seqlen, l = row % p.seqlen;
        for (int64_t c = lo; c < hi; ++c) {
          store_any(out.out, (bb * out.cols + (c - out.col0)) * p.seqlen + l, a[c] + (bias ? bias[c] : 0.0f));
        }
      }
    }
  }
}

status linear_run(const linear_params& p) {
  const linear_path& path = select_path();
  const int mr = path.mr;
  const bool bf16 = p.w.dtype == SSMKIT_DTYPE_BF16;
  const int64_t m = p.m, k = p.k, n = p.n;
  // (M * K) float32, the row blocks of x; grows once to the largest call on this thread.
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(m * k)) scratch.resize(static_cast<size_t>(m * k));
  float* xp = scratch.data();
  SSMKIT_RETURN_IF_ERROR(SSMKIT_FLOAT_SWITCH(p.x.dtype, "linear", [&] {
    pack_x<kDType>(p, mr, xp);
    return ok_status();
  }));
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const int64_t blocks = (m + mr - 1) / mr;
  const int64_t groups = (blocks + kRowBlocksPerPanel - 1) / kRowBlocksPerPanel;
  const size_t panel_bytes = static_cast<size_t>(k) * kPanel * (bf16 ? 2 : 4);
  const char* w = static_cast<const char*>(p.w.data);
  cpu::parallel_for(groups * panels, 1, [&](int64_t i0, int64_t i1) {
    alignas(64) float acc[kMaxMR * kPanel];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t g = i / panels, pn = i % panels;
      const void* panel = w + pn * panel_bytes;
      const int64_t bend = std::min(blocks, (g + 1) * kRowBlocksPerPanel);
      for (int64_t b = g * kRowBlocksPerPanel; b < bend; ++b) {
        const int64_t m0 = b * mr;
        const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
        (bf16 ? path.bf16 : path.f32)[rows](xp + m0 * k, panel, k, acc);
        store_tile(p, m0, rows, pn * kPanel, acc);
      }
    }
  });
  return ok_status();
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------------

status pack_linear_cpu(const pack_linear_params& p) {
  if (!is_float(p.w.dtype))
    return make_status(status_code::dtype, "packLinear: w: unsupported dtype %s", dtype_name(p.w.dtype));
  if (p.out.dtype != SSMKIT_DTYPE_F32 && p.out.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "packLinear: out: unsupported dtype %s", dtype_name(p.out.dtype));
  }
  const int64_t n = p.n, k = p.k;
  const int64_t panels = (n + kPanel - 1) / kPanel;
  cpu::parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t pn = p0; pn < p1; ++pn) {
      for (int j = 0; j < kPanel; ++j) {
        const int64_t col = pn * kPanel + j;
        for (int64_t kk = 0; kk < k; ++kk) {
          const int64_t dst = (pn * k + kk) * kPanel + j;
          if (col >= n) {
            store_any(p.out, dst, 0.0f);
          } else if (p.w.dtype == p.out.dtype) {
            // Same format: copy the bits (bfloat16 stays exact).
            if (p.out.dtype == SSMKIT_DTYPE_BF16) {
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
  if (p.w.dtype != SSMKIT_DTYPE_F32 && p.w.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "linear: w: unsupported packed dtype %s", dtype_name(p.w.dtype));
  }
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
  const int64_t d = p.d;
  const int64_t out_rows = p.last_of > 0 ? p.rows / p.last_of : p.rows;
  cpu::parallel_for(out_rows, 4, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> row;  // (d,) the residual sum of one row
    if (row.size() < static_cast<size_t>(d)) row.resize(static_cast<size_t>(d));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t src = p.last_of > 0 ? (r + 1) * p.last_of - 1 : r;
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) {
        float v = load_any(p.x, src * d + i);
        if (p.residual.present()) v += load_any(p.residual, src * d + i);
        row[i] = v;
        ss += static_cast<double>(v) * v;
      }
      if (p.residual_out.present()) {
        for (int64_t i = 0; i < d; ++i) store_any(p.residual_out, src * d + i, row[i]);
      }
      const float rstd = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(d)) + p.eps);
      for (int64_t i = 0; i < d; ++i) store_any(p.out, r * d + i, row[i] * rstd * load_any(p.weight, i));
    }
  });
  return ok_status();
}

status gated_rms_norm_cpu(const gated_rms_norm_params& p) {
  const int64_t d = p.d, gs = p.d / p.groups;
  cpu::parallel_for(p.rows, 4, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> row;  // (d,) the gated values of one row
    if (row.size() < static_cast<size_t>(d)) row.resize(static_cast<size_t>(d));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < d; ++i) {
        float v = load_any(p.y, r * d + i);
        if (p.z.present()) {
          const float z = load_any(p.z, r * d + i);
          v *= z / (1.0f + std::exp(-z));
        }
        row[i] = v;
      }
      for (int64_t g = 0; g < p.groups; ++g) {
        double ss = 0;
        for (int64_t i = g * gs; i < (g + 1) * gs; ++i) ss += static_cast<double>(row[i]) * row[i];
        const float rstd = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(gs)) + p.eps);
        for (int64_t i = g * gs; i < (g + 1) * gs; ++i)
          store_any(p.out, r * d + i, row[i] * rstd * load_any(p.weight, i));
      }
    }
  });
  return ok_status();
}

status embedding_cpu(const embedding_params& p) {
  const int32_t* ids = p.ids.ptr<const int32_t>();
  for (int64_t i = 0; i < p.count; ++i) {
    if (ids[i] < 0 || ids[i] >= p.vocab) {
      return make_status(status_code::value,
                         "embedding: ids: expected token ids in 0..%lld, got %d at index %lld",
                         static_cast<long long>(p.vocab - 1), ids[i], static_cast<long long>(i));
    }
  }
  const int64_t d = p.d;
  cpu::parallel_for(p.count, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t v = ids[i];
      for (int64_t j = 0; j < d; ++j) {
        // packed: (vocab / 32, d, 32), token v is column v % 32 of panel v / 32
        const int64_t src = p.packed ? ((v / kPanel) * d + j) * kPanel + v % kPanel : v * d + j;
        store_any(p.out, i * d + j, load_any(p.weight, src));
      }
    }
  });
  return ok_status();
}

status transpose_split_cpu(const transpose_split_params& p) {
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

}  // namespace ssmkit
