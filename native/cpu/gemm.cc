// CPU kernels of the quantized GEMMs (W8A8, W4A8, W4A16) and packWeights, which repacks (n, k) weights
// into the layout of native/include/ssmkit/quant.h once, so that every later call streams them.
//
// Work is cut into tasks of one 64-column group of the packed weight times a block of rows; a thread takes
// consecutive tasks, so a group's weights stay in its L2 while it walks the rows. Inside a task the
// micro-kernels hold a tile of MR rows x 64 columns in registers:
// - VNNI (avx512vnni level): vpdpbusd, u8 weights x s8 activations broadcast from memory, 6 x 64 tiles.
//   4-bit weights are unpacked to bytes a block of 512 values of k at a time (32 KiB, in L1) and shared by
//   every row tile of the task; below a dozen rows a 5 x 64 kernel splits the nibbles in registers instead.
// - AVX2 (also the avx512 level, which has no int8 dot product): pmaddwd on zero-extended weights (W8A8)
//   and pmaddubsw + pmaddwd (W4A8, whose 4-bit products cannot saturate); 2 x 16 tiles.
// - scalar: the same arithmetic in plain loops.
// Integer results are exact and identical on every path; the float epilogue is one fused multiply-add
// per element in the same order everywhere, so the three paths agree bit for bit.
//
// W4A16 turns a block of 128 values of k x 64 columns of weights into float32 (times their group scale)
// in L1, then runs a float32 micro-kernel (AVX-512: 6 x 64, AVX2: 6 x 16) over the rows: 32 vfmadd231ps
// per row and step of 8 values of k. With one row (decode) the weights are read once, from memory, and
// nothing is worth staging. The kernel is then bound either by the stream (two cores read 85-140 GB/s
// here: 1.8-3 ns per 256-byte step per core) or by the two pipes that run every multiply-add
// instruction (vpdpbusd, vdpbf16ps, vfmadd, and in part vpermw: 2 per cycle); the count of those per
// step decides which:
// - float16 / bfloat16 x, VNNI level, up to 16 rows: x is cut once per call into three int8 pieces per
//   block of 128 values (x = u1 t1 + u2 t2 + u3 t3 with powers of two u, see x_pieces_avx512), and the
//   packed bytes, already unsigned w + 8, go straight into vpdpbusd: 24 per row and step, 12 cycles at
//   two per cycle (2.9 ns at 4.1 GHz, 88 GB/s of weights per core), measured 3.1 ns per step in the
//   kernel (hot weights), against 32 + 16 vpermw (7.3 ns) for the bfloat16 kernel below. Each x is held
//   to within 2^-21 of its block's largest |x| (exactly where its exponent is within 10 of the
//   largest's). The rows take turns per block, whose 4 KiB of weights then stay in L1. Per call and
//   group around it: the group's scales, transposed (gather_scales_avx512: 6% of a hot call at
//   K = 5120, 0.16 us per group of 64 x 40 float16 scales), x's pieces (1.3 us at K = 5120, 6%, on the
//   thread that takes slot 0 while the other one wakes), the store. One row, hot, one thread: 64-67 GB/s
//   for the whole call (512 x 5120); two threads stream the cold weights at 85-90 GB/s, so the decode
//   is bound by memory with a third of each core to spare, provided enough of the stream is in flight
//   (kPiecePrefetch) and neither thread waits for the other (for_each_group_run, and the pool's
//   polling in parallel.cc).
// - with AVX512-BF16, up to 4 rows the pieces cannot carry (an infinity, a NaN, a bfloat16 block below
//   2^-106): vdpbf16ps on nibbles mapped to bfloat16 by vpermw, exact products (see gemv_group_bf16);
//   float16 x needs a high and a low bfloat16 half.
// - AVX-512 otherwise (one row): each nibble mapped to its value in registers (vpermps through a
//   16-entry table), the group scale applied once per group and column.
//
// Weights that are not packed are packed per call into a thread-local buffer (packWeights avoids that).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"
#include "ssmkit/quant.h"

#if SSMKIT_X86
// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_* operands) as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

namespace ssmkit {
namespace {

constexpr int64_t kGroupCols = 64;     // columns per packed group: four 16-column panels
constexpr int kMaxRows = 6;            // the tallest micro-kernel tile
constexpr int64_t kKBlock = 128;       // W4A16: values of k dequantized at once (32 KiB of float32 in L1)
constexpr int64_t kGemvRows = 4;       // W4A16: rows the decode kernel takes (more go through float32 tiles)
constexpr int64_t kGemvPrefetch = 16;  // W4A16 decode: steps (of up to 256 bytes) prefetched ahead, 4 KiB
constexpr int64_t kPiecePrefetch =
    32;  // ... in the pieces kernel, 8 KiB: two cores stream 85-90 GB/s, 45 per
         // core, and 4 KiB ahead is under 100 ns of it (measured: 10% slower)

// Geometry of a packed weight (see quant.h).
struct layout {
  int64_t n, k;
  int32_t bits;
  int64_t kstep;   // values of k per step: 4 (8 bits) or 8 (4 bits)
  int64_t steps;   // ceil(k / kstep)
  int64_t groups;  // ceil(n / 64)
  layout(int64_t n_, int64_t k_, int32_t bits_)
      : n(n_),
        k(k_),
        bits(bits_),
        kstep(bits_ == 4 ? 8 : 4),
        steps((k_ + kstep - 1) / kstep),
        groups((n_ + kGroupCols - 1) / kGroupCols) {}
  int panels(int64_t g) const {
    return static_cast<int>(std::min<int64_t>(4, (n - g * kGroupCols + 15) / 16));
  }
  int64_t group_offset(int64_t g) const { return g * steps * 256; }
  int64_t step_bytes(int64_t g) const { return panels(g) * 64; }
  int64_t cols(int64_t g) const { return std::min<int64_t>(kGroupCols, n - g * kGroupCols); }
  int64_t bytes() const { return steps * 64 * ((n + 15) / 16); }
};

// A buffer that grows and is reused by its thread (no allocation per call once warm).
template <class T>
T* grow(std::vector<T>& v, int64_t n) {
  if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  return v.data();
}

// Column groups of a decode-sized call, shared by the calling thread and the pool's helpers: each takes a
// run of groups from one counter, half of what is left divided by the threads, down to one group, so that
// a helper that wakes late leaves no idle core at the end (the chunks of parallel_for are an eighth of the
// work each with two threads: up to 20 us alone at N = 10240) and the counter is touched a few dozen
// times per call. Each thread first calls start(slot) (slot 0 on exactly one of them, which may prepare
// what the others wait for: the work posted first, the helpers wake while it runs) and takes no groups
// where it returns false. body(g0, g1) takes groups [g0, g1), consecutive ones in a run (their weights
// follow each other in memory).
template <class S, class F>
void for_each_group_run(int64_t groups, const S& start, const F& body) {
  const int64_t threads = std::min<int64_t>(cpu::get_num_threads(), groups);
  if (threads <= 1) {
    if (start(0)) body(0, groups);
    return;
  }
  std::atomic<int64_t> next{0};
  cpu::parallel_for(threads, 1, [&](int64_t slot, int64_t) {
    if (!start(slot)) return;
    int64_t g0 = next.load(std::memory_order_relaxed);
    for (;;) {
      if (g0 >= groups) return;
      const int64_t take = std::max<int64_t>(1, (groups - g0) / (2 * threads));
      if (next.compare_exchange_weak(g0, g0 + take, std::memory_order_relaxed)) {
        body(g0, g0 + take);
        g0 = next.load(std::memory_order_relaxed);
      }
    }
  });
}

float read_float(const tensor_view& t, int64_t i) {
  switch (t.dtype) {
    case SSMKIT_DTYPE_F16: return load_f32<SSMKIT_DTYPE_F16>(t.data, i);
    case SSMKIT_DTYPE_BF16: return load_f32<SSMKIT_DTYPE_BF16>(t.data, i);
    default: return load_f32<SSMKIT_DTYPE_F32>(t.data, i);
  }
}

// A scale tensor of 1 or `count` values (per row or per column).
float scale_at(const tensor_view& t, int64_t i) {
  return t.numel() == 1 ? read_float(t, 0) : read_float(t, i);
}

// ---------------------------------------------------------------------------------------------------
// Packing.

// Byte r of the 8 nibbles n0..n7 of x (k0..k0+7, low first) becomes n_r | n_{r+4} << 4, each offset by
// 8: two swaps of nibble pairs, then the xor that maps two's complement to unsigned.
inline uint32_t shuffle_nibbles(uint32_t x) {
  uint32_t t = (x ^ (x >> 8)) & 0x0000ff00u;
  x ^= t ^ (t << 8);
  t = (x ^ (x >> 4)) & 0x00f000f0u;
  x ^= t ^ (t << 4);
  return x ^ 0x88888888u;
}

inline int nibble(const uint8_t* row, int64_t kk) {
  return (row[kk >> 1] >> ((kk & 1) * 4)) & 0x0f;
}

// Column n's packed bytes for steps [s0, s1): d is the column's first byte, steps sb bytes apart.
// w: (n, k) int8 row-major, or int4 rows of ceil(k / 2) bytes.
void pack_column(const void* w, const layout& L, int64_t n, uint8_t* d, int64_t sb, int64_t s0, int64_t s1) {
  if (n >= L.n) {
    for (int64_t s = s0; s < s1; ++s) std::memset(d + s * sb, L.bits == 4 ? 0x88 : 0x80, 4);
    return;
  }
  if (L.bits == 8) {
    const int8_t* row = static_cast<const int8_t*>(w) + n * L.k;
    for (int64_t s = s0; s < s1; ++s) {
      if (4 * s + 4 <= L.k) {
        uint32_t v;
        std::memcpy(&v, row + 4 * s, 4);
        v ^= 0x80808080u;
        std::memcpy(d + s * sb, &v, 4);
      } else {
        for (int r = 0; r < 4; ++r) {
          d[s * sb + r] = 4 * s + r < L.k ? static_cast<uint8_t>(row[4 * s + r] ^ 0x80) : 0x80;
        }
      }
    }
    return;
  }
  const uint8_t* row = static_cast<const uint8_t*>(w) + n * ((L.k + 1) / 2);
  for (int64_t s = s0; s < s1; ++s) {
    if (8 * s + 8 <= L.k) {
      uint32_t v;
      std::memcpy(&v, row + 4 * s, 4);
      v = shuffle_nibbles(v);
      std::memcpy(d + s * sb, &v, 4);
    } else {
      for (int r = 0; r < 4; ++r) {
        const int64_t k0 = 8 * s + r, k1 = 8 * s + 4 + r;
        const int lo = k0 < L.k ? nibble(row, k0) : 0;
        const int hi = k1 < L.k ? nibble(row, k1) : 0;
        d[s * sb + r] = static_cast<uint8_t>(((lo ^ 8) & 0x0f) | (((hi ^ 8) & 0x0f) << 4));
      }
    }
  }
}

#if SSMKIT_X86
// The whole steps of a 16-column panel (rows n0.. of w), one 32-bit gather per step: the 4 bytes of each
// row that a step takes, then the same transform as pack_column, lane by lane. Returns the steps done.
SSMKIT_TARGET_AVX512 int64_t pack_panel_avx512(const void* w, const layout& L, int64_t n0, uint8_t* d,
                                               int64_t sb) {
  const int64_t rb = L.bits == 8 ? L.k : (L.k + 1) / 2;  // bytes per row of w
  const int64_t full = L.bits == 8 ? L.k / 4 : L.k / 8;
  if (16 * rb + 4 * full > INT32_MAX) return 0;
  const int64_t rows = std::min<int64_t>(16, L.n - n0);
  const __mmask16 m = rows >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << rows) - 1);
  const __m512i offs =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int>(rb)));
  const char* base = static_cast<const char*>(w) + n0 * rb;
  for (int64_t s = 0; s < full; ++s) {
    // Rows past n gather nothing (0), which the transform turns into zero weights.
    __m512i v = _mm512_mask_i32gather_epi32(
        _mm512_setzero_si512(), m, _mm512_add_epi32(offs, _mm512_set1_epi32(static_cast<int>(4 * s))), base,
        1);
    if (L.bits == 8) {
      v = _mm512_xor_si512(v, _mm512_set1_epi32(static_cast<int>(0x80808080u)));
    } else {
      __m512i t =
          _mm512_and_si512(_mm512_xor_si512(v, _mm512_srli_epi32(v, 8)), _mm512_set1_epi32(0x0000ff00));
      v = _mm512_xor_si512(v, _mm512_xor_si512(t, _mm512_slli_epi32(t, 8)));
      t = _mm512_and_si512(_mm512_xor_si512(v, _mm512_srli_epi32(v, 4)), _mm512_set1_epi32(0x00f000f0));
      v = _mm512_xor_si512(v, _mm512_xor_si512(t, _mm512_slli_epi32(t, 4)));
      v = _mm512_xor_si512(v, _mm512_set1_epi32(static_cast<int>(0x88888888u)));
    }
    _mm512_storeu_si512(d + s * sb, v);
  }
  return full;
}
#endif

// w: (n, k) int8 row-major, or int4 rows of ceil(k / 2) bytes.
void pack(const void* w, const layout& L, uint8_t* out) {
#if SSMKIT_X86
  const bool avx512 = cpu::simd() >= cpu::SIMD_AVX512;
#endif
  cpu::parallel_for(L.groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int np = L.panels(g);
      const int64_t sb = L.step_bytes(g);
      for (int j = 0; j < np; ++j) {
        const int64_t n0 = g * kGroupCols + j * 16;
        uint8_t* d = out + L.group_offset(g) + j * 64;
        int64_t done = 0;
#if SSMKIT_X86
        if (avx512) done = pack_panel_avx512(w, L, n0, d, sb);
#endif
        for (int c = 0; c < 16; ++c) pack_column(w, L, n0 + c, d + c * 4, sb, done, L.steps);
      }
    }
  });
}

// The packed weight a GEMM reads: the caller's, or its own packed into a thread-local buffer.
const uint8_t* packed_weights(const tensor_view& w, bool w_packed, const layout& L) {
  if (w_packed) return static_cast<const uint8_t*>(w.data);
  thread_local std::vector<uint8_t> buf;
  uint8_t* out = grow(buf, L.bytes());
  pack(w.data, L, out);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Integer micro-kernels: c[i][col] (+)= sum over `steps` steps of the packed weights (u8, or u4 nibbles)
// times a[i][...] (s8), for i < mr rows (stride lda) and np panels. c is (kMaxRows, 64) int32.

using int_tile_fn = void (*)(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb,
                             int64_t steps, int np, int32_t* c, bool accumulate);

void w8_tile_scalar(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                    int32_t* c, bool accumulate) {
  for (int i = 0; i < mr; ++i) {
    for (int col = 0; col < np * 16; ++col) {
      int32_t acc = accumulate ? c[i * 64 + col] : 0;
      for (int64_t s = 0; s < steps; ++s) {
        const uint8_t* bw = b + s * sb + col * 4;
        const int8_t* av = a + i * lda + 4 * s;
        for (int r = 0; r < 4; ++r) acc += static_cast<int32_t>(bw[r]) * av[r];
      }
      c[i * 64 + col] = acc;
    }
  }
}

void w4_tile_scalar(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                    int32_t* c, bool accumulate) {
  for (int i = 0; i < mr; ++i) {
    for (int col = 0; col < np * 16; ++col) {
      int32_t acc = accumulate ? c[i * 64 + col] : 0;
      for (int64_t s = 0; s < steps; ++s) {
        const uint8_t* bw = b + s * sb + col * 4;
        const int8_t* av = a + i * lda + 8 * s;
        for (int r = 0; r < 4; ++r) acc += (bw[r] & 0x0f) * av[r] + (bw[r] >> 4) * av[4 + r];
      }
      c[i * 64 + col] = acc;
    }
  }
}

#if SSMKIT_X86

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <int MR, int NB>
SSMKIT_TARGET_VNNI void w8_tile_vnni_t(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb,
                                       int64_t steps, int32_t* c, bool accumulate) {
  __m512i acc[MR][NB];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      acc[i][j] = accumulate ? _mm512_loadu_si512(c + i * 64 + j * 16) : _mm512_setzero_si512();
    }
  }
  for (int64_t s = 0; s < steps; ++s) {
    __m512i bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm512_loadu_si512(b + j * 64);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_set1_epi32(load_i32(a + i * lda + 4 * s));
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], bv[j], av);
    }
    b += sb;
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) _mm512_storeu_si512(c + i * 64 + j * 16, acc[i][j]);
  }
}

template <int MR, int NB>
SSMKIT_TARGET_VNNI void w4_tile_vnni_t(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb,
                                       int64_t steps, int32_t* c, bool accumulate) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  __m512i acc[MR][NB];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      acc[i][j] = accumulate ? _mm512_loadu_si512(c + i * 64 + j * 16) : _mm512_setzero_si512();
    }
  }
  for (int64_t s = 0; s < steps; ++s) {
    __m512i lo[NB], hi[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      const __m512i v = _mm512_loadu_si512(b + j * 64);
      lo[j] = _mm512_and_si512(v, mask);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m512i a0 = _mm512_set1_epi32(load_i32(a + i * lda + 8 * s));
      const __m512i a1 = _mm512_set1_epi32(load_i32(a + i * lda + 8 * s + 4));
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) {
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], lo[j], a0);
        acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], hi[j], a1);
      }
    }
    b += sb;
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) _mm512_storeu_si512(c + i * 64 + j * 16, acc[i][j]);
  }
}

// Expands a (rows, panels) choice into the template instance.
template <template <int, int> class K, int MR>
struct by_panels {
  static void run(int np, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps,
                  int32_t* c, bool accumulate) {
    switch (np) {
      case 1: K<MR, 1>::run(a, lda, b, sb, steps, c, accumulate); break;
      case 2: K<MR, 2>::run(a, lda, b, sb, steps, c, accumulate); break;
      case 3: K<MR, 3>::run(a, lda, b, sb, steps, c, accumulate); break;
      default: K<MR, 4>::run(a, lda, b, sb, steps, c, accumulate); break;
    }
  }
};

template <int MR, int NB>
struct w8_vnni {
  static void run(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int32_t* c,
                  bool accumulate) {
    w8_tile_vnni_t<MR, NB>(a, lda, b, sb, steps, c, accumulate);
  }
};

template <int MR, int NB>
struct w4_vnni {
  static void run(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int32_t* c,
                  bool accumulate) {
    w4_tile_vnni_t<MR, NB>(a, lda, b, sb, steps, c, accumulate);
  }
};

void w8_tile_vnni(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                  int32_t* c, bool accumulate) {
  switch (mr) {
    case 1: by_panels<w8_vnni, 1>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 2: by_panels<w8_vnni, 2>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 3: by_panels<w8_vnni, 3>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 4: by_panels<w8_vnni, 4>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 5: by_panels<w8_vnni, 5>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    default: by_panels<w8_vnni, 6>::run(np, a, lda, b, sb, steps, c, accumulate); break;
  }
}

void w4_tile_vnni(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                  int32_t* c, bool accumulate) {
  switch (mr) {
    case 1: by_panels<w4_vnni, 1>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 2: by_panels<w4_vnni, 2>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 3: by_panels<w4_vnni, 3>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    case 4: by_panels<w4_vnni, 4>::run(np, a, lda, b, sb, steps, c, accumulate); break;
    default: by_panels<w4_vnni, 5>::run(np, a, lda, b, sb, steps, c, accumulate); break;
  }
}

// Four-bit weights as the 8-bit kernels read them: each packed step (8 values of k, nibbles) becomes two
// 8-bit steps of unsigned bytes (w + 8), the low nibbles (k0..k3) first. out: (2 * steps, np * 64).
SSMKIT_TARGET_AVX512 void unpack4_avx512(const uint8_t* b, int64_t sb, int64_t steps, int np, uint8_t* out) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  const int64_t ob = np * 64;
  for (int64_t s = 0; s < steps; ++s) {
    for (int j = 0; j < np; ++j) {
      const __m512i v = _mm512_loadu_si512(b + s * sb + j * 64);
      _mm512_storeu_si512(out + 2 * s * ob + j * 64, _mm512_and_si512(v, mask));
      _mm512_storeu_si512(out + (2 * s + 1) * ob + j * 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), mask));
    }
  }
}

// AVX2, W8A8: each step's 16 x 4 weight bytes of a panel become four vectors of 4 columns x 4 values of
// k in 16 bits; pmaddwd with the row's four activations (also widened) leaves two partial sums per
// column, added pairwise at the end.
template <int MR>
SSMKIT_TARGET_AVX2 void w8_panel_avx2(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb,
                                      int64_t steps, int32_t* c, bool accumulate) {
  __m256i acc[MR][4];
  for (int i = 0; i < MR; ++i) {
    for (int q = 0; q < 4; ++q) acc[i][q] = _mm256_setzero_si256();
  }
  for (int64_t s = 0; s < steps; ++s) {
    __m256i bw[4];
    for (int q = 0; q < 4; ++q)
      bw[q] = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + q * 16)));
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_cvtepi8_epi16(_mm_set1_epi32(load_i32(a + i * lda + 4 * s)));
      for (int q = 0; q < 4; ++q) acc[i][q] = _mm256_add_epi32(acc[i][q], _mm256_madd_epi16(bw[q], av));
    }
    b += sb;
  }
  for (int i = 0; i < MR; ++i) {
    __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][0], acc[i][1]), 0xd8);
    __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[i][2], acc[i][3]), 0xd8);
    if (accumulate) {
      lo = _mm256_add_epi32(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 64)));
      hi = _mm256_add_epi32(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 64 + 8)));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * 64), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * 64 + 8), hi);
  }
}

// AVX2, W4A8: nibbles (0..15) times s8 through pmaddubsw cannot saturate (8 products <= 7680), so
// pmaddubsw + pmaddwd(1) sums the 8 products of a step per column exactly.
template <int MR>
SSMKIT_TARGET_AVX2 void w4_panel_avx2(const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb,
                                      int64_t steps, int32_t* c, bool accumulate) {
  const __m256i mask = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2];
  for (int i = 0; i < MR; ++i) {
    for (int h = 0; h < 2; ++h) {
      acc[i][h] = accumulate ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 64 + h * 8))
                             : _mm256_setzero_si256();
    }
  }
  for (int64_t s = 0; s < steps; ++s) {
    __m256i lo[2], hi[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + h * 32));
      lo[h] = _mm256_and_si256(v, mask);
      hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i a0 = _mm256_set1_epi32(load_i32(a + i * lda + 8 * s));
      const __m256i a1 = _mm256_set1_epi32(load_i32(a + i * lda + 8 * s + 4));
      for (int h = 0; h < 2; ++h) {
        const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], a0), _mm256_maddubs_epi16(hi[h], a1));
        acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(p, ones));
      }
    }
    b += sb;
  }
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * 64), acc[i][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + i * 64 + 8), acc[i][1]);
  }
}

void w8_tile_avx2(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                  int32_t* c, bool accumulate) {
  for (int i = 0; i < mr; i += 2) {
    for (int j = 0; j < np; ++j) {
      if (mr - i >= 2) {
        w8_panel_avx2<2>(a + i * lda, lda, b + j * 64, sb, steps, c + i * 64 + j * 16, accumulate);
      } else {
        w8_panel_avx2<1>(a + i * lda, lda, b + j * 64, sb, steps, c + i * 64 + j * 16, accumulate);
      }
    }
  }
}

void w4_tile_avx2(int mr, const int8_t* a, int64_t lda, const uint8_t* b, int64_t sb, int64_t steps, int np,
                  int32_t* c, bool accumulate) {
  for (int i = 0; i < mr; i += 2) {
    for (int j = 0; j < np; ++j) {
      if (mr - i >= 2) {
        w4_panel_avx2<2>(a + i * lda, lda, b + j * 64, sb, steps, c + i * 64 + j * 16, accumulate);
      } else {
        w4_panel_avx2<1>(a + i * lda, lda, b + j * 64, sb, steps, c + i * 64 + j * 16, accumulate);
      }
    }
  }
}

#endif  // SSMKIT_X86

// ---------------------------------------------------------------------------------------------------
// Float epilogues over a tile's rows: out[m][n] for `cols` columns, in out's dtype.

// Stores float32 values v[0..cols) as dtype dt at element offset i0 of dst.
void store_row_scalar(ssmkit_dtype dt, const float* v, int64_t cols, void* dst, int64_t i0) {
  for (int64_t i = 0; i < cols; ++i) {
    switch (dt) {
      case SSMKIT_DTYPE_F16: store_f32<SSMKIT_DTYPE_F16>(dst, i0 + i, v[i]); break;
      case SSMKIT_DTYPE_BF16: store_f32<SSMKIT_DTYPE_BF16>(dst, i0 + i, v[i]); break;
      default: store_f32<SSMKIT_DTYPE_F32>(dst, i0 + i, v[i]); break;
    }
  }
}

#if SSMKIT_X86
SSMKIT_TARGET_AVX512 inline __m256i bf16_from_f32x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                           _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))),
      16);
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(
      _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

SSMKIT_TARGET_AVX512 inline void store16(ssmkit_dtype dt, __m512 v, __mmask16 k, void* dst, int64_t i0) {
  if (dt == SSMKIT_DTYPE_F16) {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + i0, k,
                             _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else if (dt == SSMKIT_DTYPE_BF16) {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(dst) + i0, k, bf16_from_f32x16(v));
  } else {
    _mm512_mask_storeu_ps(static_cast<float*>(dst) + i0, k, v);
  }
}

SSMKIT_TARGET_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

SSMKIT_TARGET_AVX512 void store_row_avx512(ssmkit_dtype dt, const float* v, int64_t cols, void* dst,
                                           int64_t i0) {
  for (int64_t col = 0; col < cols; col += 16) {
    const __mmask16 k = tail_mask(cols - col);
    store16(dt, _mm512_maskz_loadu_ps(k, v + col), k, dst, i0 + col);
  }
}

// Round to nearest even, NaN kept quiet: f32_to_bf16 on 8 lanes.
SSMKIT_TARGET_AVX2 inline __m128i bf16_from_f32x8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                                           _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)))),
      16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}

SSMKIT_TARGET_AVX2 void store_row_avx2(ssmkit_dtype dt, const float* v, int64_t cols, void* dst, int64_t i0) {
  int64_t col = 0;
  for (; col + 8 <= cols; col += 8) {
    const __m256 x = _mm256_loadu_ps(v + col);
    if (dt == SSMKIT_DTYPE_F16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i0 + col),
                       _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
    } else if (dt == SSMKIT_DTYPE_BF16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i0 + col),
                       bf16_from_f32x8(x));
    } else {
      _mm256_storeu_ps(static_cast<float*>(dst) + i0 + col, x);
    }
  }
  store_row_scalar(dt, v + col, cols - col, dst, i0 + col);
}
#endif

// Stores a row of float32 values in dtype dt, vectorized where the CPU allows (the same rounding).
void store_row(ssmkit_dtype dt, const float* v, int64_t cols, void* dst, int64_t i0) {
  static const auto fn = [] {
#if SSMKIT_X86
    if (cpu::simd() >= cpu::SIMD_AVX512) return store_row_avx512;
    if (cpu::simd() >= cpu::SIMD_AVX2) return store_row_avx2;
#endif
    return store_row_scalar;
  }();
  fn(dt, v, cols, dst, i0);
}

// The per-level pieces of the integer GEMMs' epilogues.
struct int_epilogue {
  // out[m0 + i][n0 + col] = fma((float)(c[i][col] - comp[i]) * as[i], ws[col], bias[col]).
  void (*finish)(int mr, int64_t cols, const int32_t* c, const int32_t* comp, const float* as,
                 const float* ws, const float* bias, const tensor_view& out, int64_t m0, int64_t n0,
                 int64_t ldo);
  // cf[i][col] = fma((float)(c[i][col] - comp[i]), ws[col], cf[i][col]).
  void (*accumulate)(int mr, const int32_t* c, const int32_t* comp, const float* ws, float* cf);
  // out[m0 + i][n0 + col] = fma(cf[i][col], as[i], bias[col]) (bias may be null: + 0).
  void (*finish_float)(int mr, int64_t cols, const float* cf, const float* as, const float* bias,
                       const tensor_view& out, int64_t m0, int64_t n0, int64_t ldo);
};

void finish_scalar(int mr, int64_t cols, const int32_t* c, const int32_t* comp, const float* as,
                   const float* ws, const float* bias, const tensor_view& out, int64_t m0, int64_t n0,
                   int64_t ldo) {
  float row[kGroupCols];
  for (int i = 0; i < mr; ++i) {
    for (int64_t col = 0; col < cols; ++col) {
      row[col] = std::fma(static_cast<float>(c[i * 64 + col] - comp[i]) * as[i], ws[col], bias[col]);
    }
    store_row(out.dtype, row, cols, out.data, (m0 + i) * ldo + n0);
  }
}

void accumulate_scalar(int mr, const int32_t* c, const int32_t* comp, const float* ws, float* cf) {
  for (int i = 0; i < mr; ++i) {
    for (int col = 0; col < 64; ++col) {
      cf[i * 64 + col] = std::fma(static_cast<float>(c[i * 64 + col] - comp[i]), ws[col], cf[i * 64 + col]);
    }
  }
}

void finish_float_scalar(int mr, int64_t cols, const float* cf, const float* as, const float* bias,
                         const tensor_view& out, int64_t m0, int64_t n0, int64_t ldo) {
  float row[kGroupCols];
  for (int i = 0; i < mr; ++i) {
    for (int64_t col = 0; col < cols; ++col) row[col] = std::fma(cf[i * 64 + col], as[i], bias[col]);
    store_row(out.dtype, row, cols, out.data, (m0 + i) * ldo + n0);
  }
}

#if SSMKIT_X86
SSMKIT_TARGET_AVX2 void finish_avx2(int mr, int64_t cols, const int32_t* c, const int32_t* comp,
                                    const float* as, const float* ws, const float* bias,
                                    const tensor_view& out, int64_t m0, int64_t n0, int64_t ldo) {
  alignas(32) float row[kGroupCols];
  for (int i = 0; i < mr; ++i) {
    const __m256i cm = _mm256_set1_epi32(comp[i]);
    const __m256 av = _mm256_set1_ps(as[i]);
    for (int col = 0; col < 64; col += 8) {
      const __m256i ci =
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 64 + col)), cm);
      const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(ci), av);
      _mm256_store_ps(row + col, _mm256_fmadd_ps(v, _mm256_loadu_ps(ws + col), _mm256_loadu_ps(bias + col)));
    }
    store_row(out.dtype, row, cols, out.data, (m0 + i) * ldo + n0);
  }
}

SSMKIT_TARGET_AVX2 void accumulate_avx2(int mr, const int32_t* c, const int32_t* comp, const float* ws,
                                        float* cf) {
  for (int i = 0; i < mr; ++i) {
    const __m256i cm = _mm256_set1_epi32(comp[i]);
    for (int col = 0; col < 64; col += 8) {
      const __m256i ci =
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + i * 64 + col)), cm);
      float* d = cf + i * 64 + col;
      _mm256_storeu_ps(
          d, _mm256_fmadd_ps(_mm256_cvtepi32_ps(ci), _mm256_loadu_ps(ws + col), _mm256_loadu_ps(d)));
    }
  }
}

SSMKIT_TARGET_AVX2 void finish_float_avx2(int mr, int64_t cols, const float* cf, const float* as,
                                          const float* bias, const tensor_view& out, int64_t m0, int64_t n0,
                                          int64_t ldo) {
  alignas(32) float row[kGroupCols];
  for (int i = 0; i < mr; ++i) {
    const __m256 av = _mm256_set1_ps(as[i]);
    for (int col = 0; col < 64; col += 8) {
      _mm256_store_ps(row + col,
                      _mm256_fmadd_ps(_mm256_loadu_ps(cf + i * 64 + col), av, _mm256_loadu_ps(bias + col)));
    }
    store_row(out.dtype, row, cols, out.data, (m0 + i) * ldo + n0);
  }
}

SSMKIT_TARGET_AVX512 void finish_avx512(int mr, int64_t cols, const int32_t* c, const int32_t* comp,
                                        const float* as, const float* ws, const float* bias,
                                        const tensor_view& out, int64_t m0, int64_t n0, int64_t ldo) {
  for (int i = 0; i < mr; ++i) {
    const __m512i cm = _mm512_set1_epi32(comp[i]);
    const __m512 av = _mm512_set1_ps(as[i]);
    for (int64_t col = 0; col < cols; col += 16) {
      const __m512i ci = _mm512_sub_epi32(_mm512_loadu_si512(c + i * 64 + col), cm);
      const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(ci), av);
      store16(out.dtype, _mm512_fmadd_ps(v, _mm512_loadu_ps(ws + col), _mm512_loadu_ps(bias + col)),
              tail_mask(cols - col), out.data, (m0 + i) * ldo + n0 + col);
    }
  }
}

SSMKIT_TARGET_AVX512 void accumulate_avx512(int mr, const int32_t* c, const int32_t* comp, const float* ws,
                                            float* cf) {
  for (int i = 0; i < mr; ++i) {
    const __m512i cm = _mm512_set1_epi32(comp[i]);
    for (int col = 0; col < 64; col += 16) {
      const __m512i ci = _mm512_sub_epi32(_mm512_loadu_si512(c + i * 64 + col), cm);
      float* d = cf + i * 64 + col;
      _mm512_storeu_ps(
          d, _mm512_fmadd_ps(_mm512_cvtepi32_ps(ci), _mm512_loadu_ps(ws + col), _mm512_loadu_ps(d)));
    }
  }
}

SSMKIT_TARGET_AVX512 void finish_float_avx512(int mr, int64_t cols, const float* cf, const float* as,
                                              const float* bias, const tensor_view& out, int64_t m0,
                                              int64_t n0, int64_t ldo) {
  for (int i = 0; i < mr; ++i) {
    const __m512 av = _mm512_set1_ps(as[i]);
    for (int64_t col = 0; col < cols; col += 16) {
      store16(out.dtype, _mm512_fmadd_ps(_mm512_loadu_ps(cf + i * 64 + col), av, _mm512_loadu_ps(bias + col)),
              tail_mask(cols - col), out.data, (m0 + i) * ldo + n0 + col);
    }
  }
}
#endif

struct int_kernels {
  int_tile_fn w8;
  int_tile_fn w4;
  int w8_rows;  // tile height of w8
  int w4_rows;
  int_epilogue epi;
  // Unpacks 4-bit steps for w8, or null where w4 is the faster way for any number of rows.
  void (*unpack4)(const uint8_t* b, int64_t sb, int64_t steps, int np, uint8_t* out);
};

const int_kernels& int_level() {
  static const int_kernels k = [] {
#if SSMKIT_X86
    const cpu::simd_level level = cpu::simd();
    if (level >= cpu::SIMD_AVX512_VNNI) {
      return int_kernels{w8_tile_vnni,
                         w4_tile_vnni,
                         6,
                         5,
                         int_epilogue{finish_avx512, accumulate_avx512, finish_float_avx512},
                         unpack4_avx512};
    }
    if (level >= cpu::SIMD_AVX2) {
      return int_kernels{
          w8_tile_avx2, w4_tile_avx2, 6, 6, int_epilogue{finish_avx2, accumulate_avx2, finish_float_avx2},
          nullptr};
    }
#endif
    return int_kernels{w8_tile_scalar,
                       w4_tile_scalar,
                       4,
                       4,
                       int_epilogue{finish_scalar, accumulate_scalar, finish_float_scalar},
                       nullptr};
  }();
  return k;
}

// ---------------------------------------------------------------------------------------------------
// The integer GEMM driver shared by W8A8 and W4A8.

struct int_gemm_args {
  const int8_t* a;  // (m, lda) int8, k values then zero padding up to steps * kstep
  int64_t lda;
  const int32_t* comp;  // (m, kgroups) offset * sum of the row's activations in each k-group
  const uint8_t* w;     // packed
  layout L;
  const tensor_view* a_scale;
  const tensor_view* w_scale;  // (1), (n) or (n, kgroups)
  const tensor_view* bias;
  const tensor_view* out;
  int64_t m;
  int64_t kgroups;      // 1 for per-channel weights
  int64_t group_steps;  // steps per k-group
};

// Steps of 4-bit weights unpacked at once for the 8-bit kernel: 512 values of k x 64 columns, 32 KiB of
// bytes, which stay in L1 while every row tile of the block reads them.
constexpr int64_t kUnpackSteps = 64;

void int_gemm(const int_gemm_args& g) {
  const int_kernels& kk = int_level();
  const bool four = g.L.bits == 4;
  // With a dozen rows or more, 4-bit weights are unpacked once per block of k and shared by all row tiles
  // of the task: the nibble split then costs a few percent instead of a third of the dot products.
  const bool unpack = four && kk.unpack4 != nullptr && g.m >= 2 * kk.w8_rows;
  const int mr_max = four && !unpack ? kk.w4_rows : kk.w8_rows;
  const int_tile_fn tile = four && !unpack ? kk.w4 : kk.w8;
  const int64_t block_rows = mr_max * 8;
  const int64_t mblocks = (g.m + block_rows - 1) / block_rows;
  const int64_t tasks = g.L.groups * mblocks;
  const int64_t n = g.L.n;
  // Steps per unpacked block: whole k-groups split evenly (k-groups are steps * 8 values long).
  int64_t ublock = std::min(kUnpackSteps, g.group_steps);
  while (g.kgroups > 1 && g.group_steps % ublock != 0) --ublock;
  cpu::parallel_for(tasks, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<int32_t> c_buf;
    thread_local std::vector<float> cf_buf, wsg_buf;
    thread_local std::vector<uint8_t> u_buf;
    int32_t* c_all = grow(c_buf, block_rows * 64);  // (block_rows, 64) int32 sums of the current k-group
    float* cf_all = grow(cf_buf, block_rows * 64);  // (block_rows, 64) float sums over k-groups
    uint8_t* ub = unpack ? grow(u_buf, 2 * ublock * 256) : nullptr;
    alignas(64) float ws[kGroupCols], bias[kGroupCols], as[kMaxRows];
    int32_t comp[kMaxRows];
    int64_t loaded_group = -1;
    float* wsg = nullptr;  // (kgroups, 64) the group's weight scales, transposed
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t gi = t / mblocks;
      const int64_t mb = t % mblocks;
      const int64_t n0 = gi * kGroupCols;
      const int64_t cols = g.L.cols(gi);
      const int np = g.L.panels(gi);
      const int64_t sb = g.L.step_bytes(gi);
      const uint8_t* b = g.w + g.L.group_offset(gi);
      if (gi != loaded_group) {
        loaded_group = gi;
        for (int64_t col = 0; col < kGroupCols; ++col) {
          bias[col] = col < cols && g.bias->present() ? read_float(*g.bias, n0 + col) : 0.0f;
          ws[col] = col < cols && g.kgroups == 1 ? scale_at(*g.w_scale, n0 + col) : 0.0f;
        }
        if (g.kgroups > 1) {
          wsg = grow(wsg_buf, g.kgroups * kGroupCols);
          for (int64_t col = 0; col < kGroupCols; ++col) {
            for (int64_t q = 0; q < g.kgroups; ++q) {
              wsg[q * kGroupCols + col] =
                  col < cols ? read_float(*g.w_scale, (n0 + col) * g.kgroups + q) : 0.0f;
            }
          }
        }
      }
      const int64_t m_begin = mb * block_rows, m_end = std::min(g.m, m_begin + block_rows);
      if (g.kgroups > 1) std::memset(cf_all, 0, sizeof(float) * block_rows * 64);
      for (int64_t q = 0; q < g.kgroups; ++q) {
        const int64_t q0 = q * g.group_steps, q1 = std::min(g.L.steps, q0 + g.group_steps);
        // The integer sums of k-group q for every row of the block, block by block of k when unpacking.
        // (At least one pass, so that an empty k still writes zero sums.)
        for (int64_t s0 = q0, ns = 0; s0 < q1 || s0 == q0; s0 += std::max<int64_t>(ns, 1)) {
          ns = unpack ? std::min(ublock, q1 - s0) : q1 - s0;
          const uint8_t* bk = b + s0 * sb;
          int64_t bsb = sb, bsteps = ns;
          if (unpack) {
            kk.unpack4(bk, sb, ns, np, ub);
            bk = ub;
            bsb = np * 64;
            bsteps = 2 * ns;
          }
          for (int64_t m0 = m_begin; m0 < m_end; m0 += mr_max) {
            const int mr = static_cast<int>(std::min<int64_t>(mr_max, m_end - m0));
            tile(mr, g.a + m0 * g.lda + s0 * g.L.kstep, g.lda, bk, bsb, bsteps, np,
                 c_all + (m0 - m_begin) * 64, s0 > q0);
          }
        }
        for (int64_t m0 = m_begin; m0 < m_end; m0 += mr_max) {
          const int mr = static_cast<int>(std::min<int64_t>(mr_max, m_end - m0));
          for (int i = 0; i < mr; ++i) comp[i] = g.comp[(m0 + i) * g.kgroups + q];
          int32_t* c = c_all + (m0 - m_begin) * 64;
          if (g.kgroups == 1) {
            for (int i = 0; i < mr; ++i) as[i] = scale_at(*g.a_scale, m0 + i);
            kk.epi.finish(mr, cols, c, comp, as, ws, bias, *g.out, m0, n0, n);
          } else {
            kk.epi.accumulate(mr, c, comp, wsg + q * kGroupCols, cf_all + (m0 - m_begin) * 64);
          }
        }
      }
      if (g.kgroups > 1) {
        for (int64_t m0 = m_begin; m0 < m_end; m0 += mr_max) {
          const int mr = static_cast<int>(std::min<int64_t>(mr_max, m_end - m0));
          for (int i = 0; i < mr; ++i) as[i] = scale_at(*g.a_scale, m0 + i);
          kk.epi.finish_float(mr, cols, cf_all + (m0 - m_begin) * 64, as, bias, *g.out, m0, n0, n);
        }
      }
    }
  });
}

// Activations as the micro-kernels read them: rows of whole steps (zero-padded when k is not a multiple
// of the step), and offset * the sum of each row's activations in each k-group (the correction for the
// unsigned weights).
struct int_activations {
  const int8_t* a;
  int64_t lda;
  const int32_t* comp;
};

int_activations prepare_activations(const tensor_view& av, int64_t m, int64_t k, const layout& L,
                                    int64_t kgroups, int64_t group_size, int32_t offset) {
  thread_local std::vector<int8_t> padded;
  thread_local std::vector<int32_t> sums;
  const int8_t* a = static_cast<const int8_t*>(av.data);
  const int64_t kp = L.steps * L.kstep;
  int_activations r{a, k, grow(sums, m * kgroups)};
  int8_t* pad = kp != k ? grow(padded, m * kp) : nullptr;
  if (pad != nullptr) {
    r.a = pad;
    r.lda = kp;
  }
  int32_t* comp = grow(sums, m * kgroups);
  cpu::parallel_for(m, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const int8_t* row = a + i * k;
      if (pad != nullptr) {
        std::memcpy(pad + i * kp, row, static_cast<size_t>(k));
        std::memset(pad + i * kp + k, 0, static_cast<size_t>(kp - k));
      }
      for (int64_t q = 0; q < kgroups; ++q) {
        const int64_t e = std::min(k, (q + 1) * group_size);
        int32_t s = 0;
        for (int64_t j = q * group_size; j < e; ++j) s += row[j];
        comp[i * kgroups + q] = offset * s;
      }
    }
  });
  return r;
}

// ---------------------------------------------------------------------------------------------------
// W4A16 kernels.

// Dequantizes `steps` steps (8 values of k each) of one packed group into bf (steps * 8, 64) float32:
// bf[k][col] = (nibble - 8) * scale[k-group of k][col]. `sc` is (steps, 64): the scales of each step.
using dequant_fn = void (*)(const uint8_t* b, int64_t sb, int64_t steps, int np, const float* const* sc,
                            float* bf);
// cf[i][col] (+)= sum over kc values of x[i][k] * bf[k][col], i < mr, for 16 * np columns.
using f32_tile_fn = void (*)(int mr, const float* x, int64_t ldx, const float* bf, int64_t kc, int np,
                             bool accumulate, float* cf);

void dequant_scalar(const uint8_t* b, int64_t sb, int64_t steps, int np, const float* const* sc, float* bf) {
  for (int64_t s = 0; s < steps; ++s) {
    for (int j = 0; j < np; ++j) {
      for (int c = 0; c < 16; ++c) {
        const uint8_t* w = b + s * sb + j * 64 + c * 4;
        const float scale = sc[s][j * 16 + c];
        for (int r = 0; r < 4; ++r) {
          bf[(s * 8 + r) * 64 + j * 16 + c] = static_cast<float>((w[r] & 0x0f) - 8) * scale;
          bf[(s * 8 + 4 + r) * 64 + j * 16 + c] = static_cast<float>((w[r] >> 4) - 8) * scale;
        }
      }
    }
  }
}

void f32_tile_scalar(int mr, const float* x, int64_t ldx, const float* bf, int64_t kc, int np,
                     bool accumulate, float* cf) {
  for (int i = 0; i < mr; ++i) {
    for (int col = 0; col < np * 16; ++col) {
      float acc = accumulate ? cf[i * 64 + col] : 0.0f;
      for (int64_t k = 0; k < kc; ++k) acc += x[i * ldx + k] * bf[k * 64 + col];
      cf[i * 64 + col] = acc;
    }
  }
}

#if SSMKIT_X86
SSMKIT_TARGET_AVX2 void dequant_avx2(const uint8_t* b, int64_t sb, int64_t steps, int np,
                                     const float* const* sc, float* bf) {
  const __m256i mask = _mm256_set1_epi32(0x0f);
  const __m256 eight = _mm256_set1_ps(8.0f);
  for (int64_t s = 0; s < steps; ++s) {
    for (int j = 0; j < np; ++j) {
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + s * sb + j * 64 + h * 32));
        const __m256 scale = _mm256_loadu_ps(sc[s] + j * 16 + h * 8);
        for (int r = 0; r < 8; ++r) {
          const int shift = (r & 3) * 8 + (r >> 2) * 4;
          const __m256 w =
              _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, shift), mask)), eight);
          _mm256_storeu_ps(bf + (s * 8 + r) * 64 + j * 16 + h * 8, _mm256_mul_ps(w, scale));
        }
      }
    }
  }
}

template <int MR>
SSMKIT_TARGET_AVX2 void f32_panel_avx2(const float* x, int64_t ldx, const float* bf, int64_t kc,
                                       bool accumulate, float* cf) {
  __m256 acc[MR][2];
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = accumulate ? _mm256_loadu_ps(cf + i * 64) : _mm256_setzero_ps();
    acc[i][1] = accumulate ? _mm256_loadu_ps(cf + i * 64 + 8) : _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(bf + k * 64);
    const __m256 b1 = _mm256_loadu_ps(bf + k * 64 + 8);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_broadcast_ss(x + i * ldx + k);
      acc[i][0] = _mm256_fmadd_ps(xv, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(xv, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    _mm256_storeu_ps(cf + i * 64, acc[i][0]);
    _mm256_storeu_ps(cf + i * 64 + 8, acc[i][1]);
  }
}

void f32_tile_avx2(int mr, const float* x, int64_t ldx, const float* bf, int64_t kc, int np, bool accumulate,
                   float* cf) {
  for (int j = 0; j < np; ++j) {
    const float* b = bf + j * 16;
    float* c = cf + j * 16;
    switch (mr) {
      case 1: f32_panel_avx2<1>(x, ldx, b, kc, accumulate, c); break;
      case 2: f32_panel_avx2<2>(x, ldx, b, kc, accumulate, c); break;
      case 3: f32_panel_avx2<3>(x, ldx, b, kc, accumulate, c); break;
      case 4: f32_panel_avx2<4>(x, ldx, b, kc, accumulate, c); break;
      case 5: f32_panel_avx2<5>(x, ldx, b, kc, accumulate, c); break;
      default: f32_panel_avx2<6>(x, ldx, b, kc, accumulate, c); break;
    }
  }
}

SSMKIT_TARGET_AVX512 void dequant_avx512(const uint8_t* b, int64_t sb, int64_t steps, int np,
                                         const float* const* sc, float* bf) {
  const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t s = 0; s < steps; ++s) {
    for (int j = 0; j < np; ++j) {
      const __m512i v = _mm512_loadu_si512(b + s * sb + j * 64);
      const __m512 scale = _mm512_loadu_ps(sc[s] + j * 16);
      float* d = bf + s * 8 * 64 + j * 16;
      // vpermps reads only the low 4 bits of each index: the nibble in place.
      _mm512_storeu_ps(d + 0 * 64, _mm512_mul_ps(_mm512_permutexvar_ps(v, table), scale));
      _mm512_storeu_ps(d + 1 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), table), scale));
      _mm512_storeu_ps(d + 2 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), table), scale));
      _mm512_storeu_ps(d + 3 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), table), scale));
      _mm512_storeu_ps(d + 4 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table), scale));
      _mm512_storeu_ps(d + 5 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 12), table), scale));
      _mm512_storeu_ps(d + 6 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), table), scale));
      _mm512_storeu_ps(d + 7 * 64,
                       _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 28), table), scale));
    }
  }
}

template <int MR, int NB>
SSMKIT_TARGET_AVX512 void f32_tile_avx512_t(const float* x, int64_t ldx, const float* bf, int64_t kc,
                                            bool accumulate, float* cf) {
  __m512 acc[MR][NB];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j)
      acc[i][j] = accumulate ? _mm512_loadu_ps(cf + i * 64 + j * 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    __m512 bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = _mm512_loadu_ps(bf + k * 64 + j * 16);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_set1_ps(x[i * ldx + k]);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_fmadd_ps(xv, bv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) _mm512_storeu_ps(cf + i * 64 + j * 16, acc[i][j]);
  }
}

template <int MR>
void f32_rows_avx512(int np, const float* x, int64_t ldx, const float* bf, int64_t kc, bool accumulate,
                     float* cf) {
  switch (np) {
    case 1: f32_tile_avx512_t<MR, 1>(x, ldx, bf, kc, accumulate, cf); break;
    case 2: f32_tile_avx512_t<MR, 2>(x, ldx, bf, kc, accumulate, cf); break;
    case 3: f32_tile_avx512_t<MR, 3>(x, ldx, bf, kc, accumulate, cf); break;
    default: f32_tile_avx512_t<MR, 4>(x, ldx, bf, kc, accumulate, cf); break;
  }
}

void f32_tile_avx512(int mr, const float* x, int64_t ldx, const float* bf, int64_t kc, int np,
                     bool accumulate, float* cf) {
  switch (mr) {
    case 1: f32_rows_avx512<1>(np, x, ldx, bf, kc, accumulate, cf); break;
    case 2: f32_rows_avx512<2>(np, x, ldx, bf, kc, accumulate, cf); break;
    case 3: f32_rows_avx512<3>(np, x, ldx, bf, kc, accumulate, cf); break;
    case 4: f32_rows_avx512<4>(np, x, ldx, bf, kc, accumulate, cf); break;
    case 5: f32_rows_avx512<5>(np, x, ldx, bf, kc, accumulate, cf); break;
    default: f32_rows_avx512<6>(np, x, ldx, bf, kc, accumulate, cf); break;
  }
}

// One row (decode): out[col] = sum over k-groups q of scale[q][col] * sum_{k in q} x[k] * (nibble - 8),
// straight from the packed nibbles. x is zero-padded to whole steps. Returns the 64 sums in acc_out.
SSMKIT_TARGET_AVX512 void gemv_group_avx512(const float* x, const uint8_t* b, int64_t sb, int64_t steps,
                                            int64_t group_steps, int np, const float* sc /* (kgroups, 64) */,
                                            float* acc_out) {
  const __m512 table = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  __m512 out[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t s0 = 0, q = 0; s0 < steps; s0 += group_steps, ++q) {
    const int64_t s1 = std::min(steps, s0 + group_steps);
    // Four partial sums per panel keep enough fused multiply-adds in flight.
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) acc[j][u] = _mm512_setzero_ps();
    }
    for (int64_t s = s0; s < s1; ++s) {
      const float* xs = x + s * 8;
      const __m512 x0 = _mm512_set1_ps(xs[0]), x1 = _mm512_set1_ps(xs[1]), x2 = _mm512_set1_ps(xs[2]),
                   x3 = _mm512_set1_ps(xs[3]), x4 = _mm512_set1_ps(xs[4]), x5 = _mm512_set1_ps(xs[5]),
                   x6 = _mm512_set1_ps(xs[6]), x7 = _mm512_set1_ps(xs[7]);
      const uint8_t* bs = b + s * sb;
      // The weights are read once: ask for them kGemvPrefetch steps ahead (the loop is too long for the
      // out-of-order window to keep enough cache misses in flight on its own).
      for (int j = 0; j < np; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(bs + kGemvPrefetch * sb + j * 64), _MM_HINT_T0);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        if (j >= np) break;
        const __m512i v = _mm512_loadu_si512(bs + j * 64);
        acc[j][0] = _mm512_fmadd_ps(_mm512_permutexvar_ps(v, table), x0, acc[j][0]);
        acc[j][1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 8), table), x1, acc[j][1]);
        acc[j][2] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), table), x2, acc[j][2]);
        acc[j][3] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 24), table), x3, acc[j][3]);
        acc[j][0] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table), x4, acc[j][0]);
        acc[j][1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 12), table), x5, acc[j][1]);
        acc[j][2] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), table), x6, acc[j][2]);
        acc[j][3] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 28), table), x7, acc[j][3]);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m512 sum =
          _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
      out[j] = _mm512_fmadd_ps(sum, _mm512_loadu_ps(sc + q * 64 + j * 16), out[j]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) _mm512_storeu_ps(acc_out + j * 16, out[j]);
}

// 16 float16 or bfloat16 values as float32.
SSMKIT_TARGET_AVX512 inline __m512 widen_halves(__m256i h, bool f16) {
  return f16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Scales of one 64-column group (cols of them present), transposed: sc[q][col] = scales[n0 + col][q] as
// float32 for q < kgroups, zero for col >= cols. 16-bit scales go eight values of q at a time through
// plain loads and permutes (below), the rest four at a time through gathers, which cost by the lane: one
// 8-lane 64-bit gather takes four values of q for 8 columns (a column's row of scales is contiguous), and
// one vpermt2w per two values of q puts 16 columns side by side, a quarter of the lanes that one 32-bit
// gather per value and 16 columns would take. Loads and gather lanes of absent columns are masked off,
// and none reads past a column's row, so the last group of the tensor takes the same path.
SSMKIT_TARGET_AVX512 void gather_scales_avx512(const tensor_view& scales, int64_t n0, int64_t cols,
                                               int64_t kgroups, float* sc) {
  const int esize = dtype_size(scales.dtype);
  const char* base = static_cast<const char*>(scales.data) + n0 * kgroups * esize;
  const bool f16 = scales.dtype == SSMKIT_DTYPE_F16;
  // Word t of a pair of gathers (lanes 0..7: columns 0..7, lanes 8..15 of the second: 8..15, four values
  // of q per lane) for t = 16 * i + c: value i (of two) of column c.
  alignas(64) static const uint16_t kPairs[2][32] = {
      {0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60,
       1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61},
      {2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 42, 46, 50, 54, 58, 62,
       3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63}};
  const __m512i pair01 = _mm512_load_si512(kPairs[0]), pair23 = _mm512_load_si512(kPairs[1]);
  // Eight values of q of 16 columns without a gather: four columns' 16 bytes to a vector, so that in a
  // pair of vectors value v of column r (of 8) is word 8 r + v; word 8 v + r of rows_lo takes v < 4, of
  // rows_hi v >= 4 (columns side by side); then word 16 i + c of cols_01 (cols_23) takes value i (2 + i)
  // of column c from two such results (columns 0..7, then 8..15).
  alignas(64) static const uint16_t kRows[2][32] = {
      {0, 8,  16, 24, 32, 40, 48, 56, 1, 9,  17, 25, 33, 41, 49, 57,
       2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59},
      {4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
       6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63}};
  alignas(64) static const uint16_t kCols[2][32] = {
      {0, 1, 2,  3,  4,  5,  6,  7,  32, 33, 34, 35, 36, 37, 38, 39,
       8, 9, 10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47},
      {16, 17, 18, 19, 20, 21, 22, 23, 48, 49, 50, 51, 52, 53, 54, 55,
       24, 25, 26, 27, 28, 29, 30, 31, 56, 57, 58, 59, 60, 61, 62, 63}};
  const __m512i rows_lo = _mm512_load_si512(kRows[0]), rows_hi = _mm512_load_si512(kRows[1]);
  const __m512i cols_01 = _mm512_load_si512(kCols[0]), cols_23 = _mm512_load_si512(kCols[1]);
  for (int j = 0; j < 4; ++j) {
    const int64_t present = std::min<int64_t>(16, cols - 16 * j);
    if (present <= 0) {
      for (int64_t q = 0; q < kgroups; ++q)
        _mm512_storeu_ps(sc + q * kGroupCols + j * 16, _mm512_setzero_ps());
      continue;
    }
    const __mmask16 m =
        present >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << present) - 1);
    const char* pb = base + 16 * j * kgroups * esize;
    float* out = sc + j * 16;
    // idx: element offsets (in units of esize) of each column's row.
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(static_cast<int>(kgroups)));
    if (!f16 && scales.dtype != SSMKIT_DTYPE_BF16) {
      for (int64_t q = 0; q < kgroups; ++q) {
        const __m512i at = _mm512_add_epi32(idx, _mm512_set1_epi32(static_cast<int>(q)));
        _mm512_storeu_ps(out + q * kGroupCols, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, at, pb, 4));
      }
      continue;
    }
    if (kgroups == 1) {  // the columns' scales are contiguous
      _mm512_storeu_ps(out, widen_halves(_mm256_maskz_loadu_epi16(m, pb), f16));
      continue;
    }
    const __m256i idx_lo = _mm512_castsi512_si256(idx), idx_hi = _mm512_extracti64x4_epi64(idx, 1);
    const __mmask8 m_lo = static_cast<__mmask8>(m & 0xff), m_hi = static_cast<__mmask8>(m >> 8);
    int64_t q = 0;
    // Eight values of q at a time: 16 loads, 12 inserts and 8 vpermt2w instead of four gathers (3% of a
    // hot decode at K = 5120, measured).
    for (; q + 8 <= kgroups; q += 8) {
      __m512i z[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        __m512i v = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const int c = 4 * i + r;
          const __m128i row = _mm_maskz_loadu_epi16(static_cast<__mmask8>(c < present ? 0xff : 0),
                                                    pb + (c * kgroups + q) * 2);
          v = r == 0 ? _mm512_castsi128_si512(row) : _mm512_inserti32x4(v, row, r);
        }
        z[i] = v;
      }
      const __m512i a = _mm512_permutex2var_epi16(z[0], rows_lo, z[1]);
      const __m512i bq = _mm512_permutex2var_epi16(z[0], rows_hi, z[1]);
      const __m512i c8 = _mm512_permutex2var_epi16(z[2], rows_lo, z[3]);
      const __m512i d = _mm512_permutex2var_epi16(z[2], rows_hi, z[3]);
      const __m512i o[4] = {
          _mm512_permutex2var_epi16(a, cols_01, c8), _mm512_permutex2var_epi16(a, cols_23, c8),
          _mm512_permutex2var_epi16(bq, cols_01, d), _mm512_permutex2var_epi16(bq, cols_23, d)};
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        _mm512_storeu_ps(out + (q + 2 * i) * kGroupCols, widen_halves(_mm512_castsi512_si256(o[i]), f16));
        _mm512_storeu_ps(out + (q + 2 * i + 1) * kGroupCols,
                         widen_halves(_mm512_extracti64x4_epi64(o[i], 1), f16));
      }
    }
    for (; q + 4 <= kgroups; q += 4) {
      const __m256i dq = _mm256_set1_epi32(static_cast<int>(q));
      const __m512i g0 =
          _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), m_lo, _mm256_add_epi32(idx_lo, dq), pb, 2);
      const __m512i g1 =
          _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), m_hi, _mm256_add_epi32(idx_hi, dq), pb, 2);
      const __m512i v01 = _mm512_permutex2var_epi16(g0, pair01, g1);
      const __m512i v23 = _mm512_permutex2var_epi16(g0, pair23, g1);
      _mm512_storeu_ps(out + q * kGroupCols, widen_halves(_mm512_castsi512_si256(v01), f16));
      _mm512_storeu_ps(out + (q + 1) * kGroupCols, widen_halves(_mm512_extracti64x4_epi64(v01, 1), f16));
      _mm512_storeu_ps(out + (q + 2) * kGroupCols, widen_halves(_mm512_castsi512_si256(v23), f16));
      _mm512_storeu_ps(out + (q + 3) * kGroupCols, widen_halves(_mm512_extracti64x4_epi64(v23, 1), f16));
    }
    // The last values of q: a 32-bit gather of (q, q + 1), or of (q - 1, q) at the end of the row.
    for (; q < kgroups; ++q) {
      const bool last = q + 1 == kgroups;
      const __m512i at = _mm512_add_epi32(idx, _mm512_set1_epi32(static_cast<int>(last ? q - 1 : q)));
      __m512i d = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, pb, 2);
      if (last) d = _mm512_srli_epi32(d, 16);
      _mm512_storeu_ps(out + q * kGroupCols, widen_halves(_mm512_cvtepi32_epi16(d), f16));
    }
  }
}

#define SSMKIT_TARGET_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")))

// One row from float16 / bfloat16 x with AVX512-BF16 dot products: each 32-bit lane of a weight vector
// holds two nibbles mapped to bfloat16 by vpermw (w - 8 is exact in bfloat16), and x is split into
// x = hi + lo with both halves exact in bfloat16 (x has at most 11 significant bits), so vdpbf16ps
// adds exact products in float32. Lane pairs follow the packed bytes: dword c of a step holds
// (k0 | k4, k1 | k5, k2 | k6, k3 | k7), so the 16-bit words of v, v >> 4, v >> 8 and v >> 12 give the
// pairs (k0, k2), (k4, k6), (k1, k3), (k5, k7). xh / xl: (steps, 4) bfloat16 pairs in that order.
// MR rows at once (batched decode) share each weight vector; row r's pairs are at xh + r * xstride. Per
// step the NP panels' vectors are loaded once and mapped pair type by pair type, and ACC partial sums per
// row and panel keep enough dot products in flight within the 32 registers; LO: x has low halves
// (float16 x). acc_out holds (MR, 64) float32 sums.
template <int MR, int NP, bool LO>
SSMKIT_TARGET_BF16 void gemv_group_bf16_t(const uint32_t* xh, const uint32_t* xl, int64_t xstride,
                                          const uint8_t* b, int64_t sb, int64_t steps, int64_t group_steps,
                                          const float* sc, float* acc_out) {
  constexpr int ACC = MR == 1 ? 4 : (MR == 2 ? 2 : 1);
  alignas(64) static const uint16_t kTable[32] = {
      0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80, 0x0000, 0x3f80, 0x4000,
      0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0, 0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040,
      0xc000, 0xbf80, 0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
  const __m512i table = _mm512_load_si512(kTable);
  for (int i = 0; i < MR * 64; i += 16) _mm512_storeu_ps(acc_out + i, _mm512_setzero_ps());
  for (int64_t s0 = 0, q = 0; s0 < steps; s0 += group_steps, ++q) {
    const int64_t s1 = std::min(steps, s0 + group_steps);
    __m512 acc[MR][NP][ACC];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
#pragma GCC unroll 4
        for (int u = 0; u < ACC; ++u) acc[r][j][u] = _mm512_setzero_ps();
      }
    }
    for (int64_t s = s0; s < s1; ++s) {
      const uint8_t* bs = b + s * sb;
      // The weights are read once: ask for them kGemvPrefetch steps ahead (the loop is too long for the
      // out-of-order window to keep enough cache misses in flight on its own).
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(bs + kGemvPrefetch * sb + j * 64), _MM_HINT_T0);
      }
      __m512i v[NP];
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) v[j] = _mm512_loadu_si512(bs + j * 64);
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        __m512bh w[NP];
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) {
          w[j] = (__m512bh)_mm512_permutexvar_epi16(u == 0 ? v[j] : _mm512_srli_epi32(v[j], 4 * u), table);
        }
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          const __m512bh hb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xh[r * xstride + s * 4 + u]));
#pragma GCC unroll 4
          for (int j = 0; j < NP; ++j) acc[r][j][u % ACC] = _mm512_dpbf16_ps(acc[r][j][u % ACC], w[j], hb);
          if (LO) {
            const __m512bh lb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xl[r * xstride + s * 4 + u]));
#pragma GCC unroll 4
            for (int j = 0; j < NP; ++j) acc[r][j][u % ACC] = _mm512_dpbf16_ps(acc[r][j][u % ACC], w[j], lb);
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        __m512 sum = acc[r][j][0];
#pragma GCC unroll 4
        for (int u = 1; u < ACC; ++u) sum = _mm512_add_ps(sum, acc[r][j][u]);
        float* o = acc_out + r * 64 + j * 16;
        _mm512_storeu_ps(o, _mm512_fmadd_ps(sum, _mm512_loadu_ps(sc + q * 64 + j * 16), _mm512_loadu_ps(o)));
      }
    }
  }
}

template <int MR, int NP>
void gemv_bf16_lo(const uint32_t* xh, const uint32_t* xl, int64_t xstride, const uint8_t* b, int64_t sb,
                  int64_t steps, int64_t group_steps, const float* sc, float* acc_out) {
  if (xl != nullptr) {
    gemv_group_bf16_t<MR, NP, true>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out);
  } else {
    gemv_group_bf16_t<MR, NP, false>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out);
  }
}

template <int MR>
void gemv_bf16_np(int np, const uint32_t* xh, const uint32_t* xl, int64_t xstride, const uint8_t* b,
                  int64_t sb, int64_t steps, int64_t group_steps, const float* sc, float* acc_out) {
  switch (np) {
    case 1: gemv_bf16_lo<MR, 1>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    case 2: gemv_bf16_lo<MR, 2>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    case 3: gemv_bf16_lo<MR, 3>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    default: gemv_bf16_lo<MR, 4>(xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
  }
}

void gemv_group_bf16(int mr, const uint32_t* xh, const uint32_t* xl, int64_t xstride, const uint8_t* b,
                     int64_t sb, int64_t steps, int64_t group_steps, int np, const float* sc,
                     float* acc_out) {
  switch (mr) {
    case 1: gemv_bf16_np<1>(np, xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    case 2: gemv_bf16_np<2>(np, xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    case 3: gemv_bf16_np<3>(np, xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
    default: gemv_bf16_np<4>(np, xh, xl, xstride, b, sb, steps, group_steps, sc, acc_out); break;
  }
}

// x (k values of dtype float16 or bfloat16) as the bfloat16 pairs gemv_group_bf16 reads, zero-padded
// to whole steps: hi = bf16(x) rounded to nearest even, lo = x - hi (exact: x has at most 11 significant
// bits; all zero for bfloat16 x). 16 values (two steps) per iteration: a permute puts each step's values
// in pair order (k0, k2, k4, k6, k1, k3, k5, k7), then each 32-bit lane packs two of them.
SSMKIT_TARGET_AVX512 void bf16_pairs_avx512(const tensor_view& xv, int64_t k, int64_t steps, uint32_t* xh,
                                            uint32_t* xl) {
  const __m512i order = _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  const uint16_t* src = static_cast<const uint16_t*>(xv.data);
  for (int64_t k0 = 0; k0 < steps * 8; k0 += 16) {
    const int64_t left = k - k0;
    const __mmask16 m =
        left >= 16 ? static_cast<__mmask16>(0xffff)
                   : (left <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << left) - 1));
    const __m256i h16 = _mm256_maskz_loadu_epi16(m, src + k0);
    const __m512 x = xv.dtype == SSMKIT_DTYPE_F16
                         ? _mm512_cvtph_ps(h16)
                         : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h16), 16));
    const __m512 xo = _mm512_permutexvar_ps(order, x);
    // Round to nearest even in the integer domain (the inputs are finite or are passed through).
    const __m512i u = _mm512_castps_si512(xo);
    const __m512i hi_bits = _mm512_and_si512(
        _mm512_add_epi32(u,
                         _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)))),
        _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    // lo is exact in bfloat16 (its low 16 bits are zero); 0 where x is infinite or NaN.
    const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_abs_ps(xo), _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
    const __m512i lo_bits =
        _mm512_castps_si512(_mm512_maskz_sub_ps(finite, xo, _mm512_castsi512_ps(hi_bits)));
    // The top halves, 16 bits each, consecutive: lanes 2i and 2i + 1 form pair i (low half first).
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xh + k0 / 2),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(hi_bits, 16)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(xl + k0 / 2),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(lo_bits, 16)));
  }
}

// One row of float16 or bfloat16 x as integer dot products (VNNI). Each block of up to kPieceSteps steps
// (inside one scale group) writes x = u1 * t1 + u2 * t2 + u3 * t3 with int8 pieces t1, t2, t3 and powers of
// two u1 = 2^(E - 6), u2 = u1 / 128, u3 = u2 / 128, where 2^E <= max |x| of the block < 2^(E + 1): t1 and t2
// are truncations (their remainders are exact in float32), t3 the rounded rest, so that every value is
// held to within u3 / 2 <= 2^-21 max |x| (u3 where t3 saturates at 127), exactly wherever its exponent
// is within 10 of the block's largest. The packed bytes are the unsigned operand of vpdpbusd (w + 8) as
// they stand, so per step and panel one mask and one shift give the two nibble vectors and six dot
// products (64 multiply-adds each) cover three pieces, against eight vdpbf16ps for the bfloat16 halves
// of float16 x (plus four vpermw, which share a pipe with them): 24 instructions of the two multiply
// pipes per 256 bytes of weights instead of 32 (float16) or 16 + 16 vpermw (bfloat16). Per
// block, sum (w + 8) t - 8 sum t is exact in int32 (|t| <= 128, 128 values of k), and the pieces meet in
// float32 with the group scale.
struct x_block {
  int64_t s0, s1;  // steps [s0, s1), inside scale group q
  int64_t q;
  float u2, u3;           // the units of pieces 2 and 3 (piece 1's is 128 * u2)
  int32_t corr12, corr3;  // 8 * (128 * sum t1 + sum t2) and 8 * sum t3: the offset of the unsigned weights
};

constexpr int64_t kPieceSteps = 16;  // steps per x block: 128 values of k keep the int32 sums exact
constexpr int64_t kPieceRows = 16;   // rows taken by the pieces kernel, in turns (24 vpdpbusd per row and
                                     // step, against 32 vfmadd231ps for the float32 tiles)

SSMKIT_TARGET_AVX512 inline float float_of_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// x (k float16 or bfloat16 values) as three int8 pieces, t: (3, lda) with lda >= steps * 8 (zero-padded
// to whole steps), and its blocks in step order, appended to `blocks`. Returns false where x holds an
// infinity or a NaN (which the pieces cannot carry) or a block whose largest |x| is below 2^-106 (whose units
// would not be normal float32 numbers; only bfloat16 reaches there): the caller takes the bfloat16 kernel
// then.
SSMKIT_TARGET_AVX512 bool x_pieces_avx512(const uint16_t* x, bool bf16, int64_t k, int64_t steps,
                                          int64_t group_steps, int8_t* t, int64_t lda,
                                          std::vector<x_block>& blocks) {
  const __m512 inf = _mm512_set1_ps(INFINITY);
  for (int64_t g0 = 0, q = 0; g0 < steps; g0 += group_steps, ++q) {
    const int64_t g1 = std::min(steps, g0 + group_steps);
    for (int64_t b0 = g0; b0 < g1; b0 += kPieceSteps) {
      const int64_t b1 = std::min(g1, b0 + kPieceSteps);
      const int64_t k0 = b0 * 8, kend = b1 * 8, kx = std::min(k, kend);
      const int nv = static_cast<int>((kend - k0 + 15) / 16);
      __m512 xv[kPieceSteps / 2];
      __m512 amax = _mm512_setzero_ps();
      for (int i = 0; i < nv; ++i) {
        const int64_t left = kx - (k0 + 16 * i);
        const __mmask16 m =
            left >= 16 ? static_cast<__mmask16>(0xffff)
                       : (left <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << left) - 1));
        const __m256i h = _mm256_maskz_loadu_epi16(m, x + k0 + 16 * i);
        xv[i] =
            bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)) : _mm512_cvtph_ps(h);
        const __m512 ax = _mm512_abs_ps(xv[i]);
        if (_mm512_cmp_ps_mask(ax, inf, _CMP_LT_OQ) != static_cast<__mmask16>(0xffff)) return false;
        amax = _mm512_max_ps(amax, ax);
      }
      const float mx = _mm512_reduce_max_ps(amax);
      x_block blk{b0, b1, q, 0.0f, 0.0f, 0, 0};
      // e, the biased exponent of the largest |x|, is at least 103 for float16 (whose values are all
      // normal float32 numbers) and at most 254, so that 2^(6 - E) and the units below are normal.
      uint32_t bits;
      std::memcpy(&bits, &mx, 4);
      const int e = mx == 0.0f ? 127 : static_cast<int>(bits >> 23);
      if (e < 21) return false;
      const __m512 inv_u1 = _mm512_set1_ps(float_of_bits(static_cast<uint32_t>(260 - e) << 23));  // 2^(6 - E)
      const __m512 radix = _mm512_set1_ps(128.0f);
      __m512i sum1 = _mm512_setzero_si512(), sum2 = _mm512_setzero_si512(), sum3 = _mm512_setzero_si512();
      for (int i = 0; i < nv; ++i) {
        const __m512 y1 = _mm512_mul_ps(xv[i], inv_u1);  // |y1| < 128
        const __m512i t1 = _mm512_cvttps_epi32(y1);
        const __m512 y2 = _mm512_mul_ps(_mm512_sub_ps(y1, _mm512_cvtepi32_ps(t1)), radix);
        const __m512i t2 = _mm512_cvttps_epi32(y2);
        const __m512 y3 = _mm512_mul_ps(_mm512_sub_ps(y2, _mm512_cvtepi32_ps(t2)), radix);
        const __m512i t3 = _mm512_cvtps_epi32(y3);  // nearest even; 128 saturates to 127 below
        sum1 = _mm512_add_epi32(sum1, t1);
        sum2 = _mm512_add_epi32(sum2, t2);
        const __m128i p3 = _mm512_cvtsepi32_epi8(t3);
        sum3 = _mm512_add_epi32(sum3, _mm512_cvtepi8_epi32(p3));
        const int64_t room = kend - (k0 + 16 * i);
        const __mmask16 ms =
            room >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << room) - 1);
        _mm_mask_storeu_epi8(t + k0 + 16 * i, ms, _mm512_cvtsepi32_epi8(t1));
        _mm_mask_storeu_epi8(t + lda + k0 + 16 * i, ms, _mm512_cvtsepi32_epi8(t2));
        _mm_mask_storeu_epi8(t + 2 * lda + k0 + 16 * i, ms, p3);
      }
      if (mx != 0.0f) {
        blk.u2 = float_of_bits(static_cast<uint32_t>(e - 13) << 23);  // 2^(E - 13)
        blk.u3 = float_of_bits(static_cast<uint32_t>(e - 20) << 23);  // 2^(E - 20)
      }
      blk.corr12 = 8 * (128 * _mm512_reduce_add_epi32(sum1) + _mm512_reduce_add_epi32(sum2));
      blk.corr3 = 8 * _mm512_reduce_add_epi32(sum3);
      blocks.push_back(blk);
    }
  }
  return true;
}

// The sums of one column group for mr rows from the pieces of x_pieces_avx512 (row r's pieces at
// t + r * rstride, (3, lda); its blocks at blocks + r * nblocks), each block's integer sums scaled by its
// units and then by the group's scales (sc: (kgroups, 64)). Block by block, the rows take turns, so that
// a block's weights (4 KiB) come from memory once and from L1 for the other rows. acc_out: (mr, 64).
template <int NP>
SSMKIT_TARGET_VNNI void gemv_group_pieces_t(int mr, const int8_t* t, int64_t rstride, int64_t lda,
                                            const x_block* blocks, int64_t nblocks, const uint8_t* b,
                                            int64_t sb, const float* sc, float* acc_out) {
  const __m512i mask = _mm512_set1_epi8(0x0f);
  for (int i = 0; i < mr * 64; i += 16) _mm512_storeu_ps(acc_out + i, _mm512_setzero_ps());
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    for (int r = 0; r < mr; ++r) {
      const x_block& blk = blocks[r * nblocks + bi];
      const int8_t* tr = t + r * rstride;
      __m512i acc[NP][3];
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
#pragma GCC unroll 3
        for (int p = 0; p < 3; ++p) acc[j][p] = _mm512_setzero_si512();
      }
      for (int64_t s = blk.s0; s < blk.s1; ++s) {
        const uint8_t* bs = b + s * sb;
        // The weights are read once: ask for them kPiecePrefetch steps ahead (the loop is too long for the
        // out-of-order window to keep enough cache misses in flight on its own).
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) {
          _mm_prefetch(reinterpret_cast<const char*>(bs + kPiecePrefetch * sb + j * 64), _MM_HINT_T0);
        }
        __m512i xl[3], xh[3];
#pragma GCC unroll 3
        for (int p = 0; p < 3; ++p) {
          xl[p] = _mm512_set1_epi32(load_i32(tr + p * lda + 8 * s));
          xh[p] = _mm512_set1_epi32(load_i32(tr + p * lda + 8 * s + 4));
        }
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) {
          const __m512i v = _mm512_loadu_si512(bs + j * 64);
          const __m512i lo = _mm512_and_si512(v, mask);
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
#pragma GCC unroll 3
          for (int p = 0; p < 3; ++p) {
            acc[j][p] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc[j][p], lo, xl[p]), hi, xh[p]);
          }
        }
      }
      const __m512i corr12 = _mm512_set1_epi32(blk.corr12), corr3 = _mm512_set1_epi32(blk.corr3);
      const __m512 u2 = _mm512_set1_ps(blk.u2), u3 = _mm512_set1_ps(blk.u3);
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        // 128 * sum1 + sum2 < 2^26 in magnitude: exact in int32.
        const __m512i c12 =
            _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(acc[j][0], 7), acc[j][1]), corr12);
        const __m512i c3 = _mm512_sub_epi32(acc[j][2], corr3);
        const __m512 f =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(c12), u2, _mm512_mul_ps(_mm512_cvtepi32_ps(c3), u3));
        float* o = acc_out + r * 64 + j * 16;
        _mm512_storeu_ps(o,
                         _mm512_fmadd_ps(f, _mm512_loadu_ps(sc + blk.q * 64 + j * 16), _mm512_loadu_ps(o)));
      }
    }
  }
}

void gemv_group_pieces(int np, int mr, const int8_t* t, int64_t rstride, int64_t lda, const x_block* blocks,
                       int64_t nblocks, const uint8_t* b, int64_t sb, const float* sc, float* acc_out) {
  switch (np) {
    case 1: gemv_group_pieces_t<1>(mr, t, rstride, lda, blocks, nblocks, b, sb, sc, acc_out); break;
    case 2: gemv_group_pieces_t<2>(mr, t, rstride, lda, blocks, nblocks, b, sb, sc, acc_out); break;
    case 3: gemv_group_pieces_t<3>(mr, t, rstride, lda, blocks, nblocks, b, sb, sc, acc_out); break;
    default: gemv_group_pieces_t<4>(mr, t, rstride, lda, blocks, nblocks, b, sb, sc, acc_out); break;
  }
}
#endif

struct w4a16_kernels {
  dequant_fn dequant;
  f32_tile_fn tile;
  bool avx512;  // the one-row kernel from packed nibbles and the gathered scales exist
  bool bf16;    // ... and its AVX512-BF16 variant (the vnni level, on CPUs with avx512bf16)
  bool pieces;  // ... and the integer one for float16 / bfloat16 x (the vnni level)
};

const w4a16_kernels& w4a16_level() {
  static const w4a16_kernels k = [] {
#if SSMKIT_X86
    const cpu::simd_level level = cpu::simd();
    if (level >= cpu::SIMD_AVX512) {
      __builtin_cpu_init();
      const bool bf16 = level >= cpu::SIMD_AVX512_VNNI && __builtin_cpu_supports("avx512bf16");
      return w4a16_kernels{dequant_avx512, f32_tile_avx512, true, bf16, level >= cpu::SIMD_AVX512_VNNI};
    }
    if (level >= cpu::SIMD_AVX2) return w4a16_kernels{dequant_avx2, f32_tile_avx2, false, false, false};
#endif
    return w4a16_kernels{dequant_scalar, f32_tile_scalar, false, false, false};
  }();
  return k;
}

// out[m0 + i][n0 + col] = cf[i][col] + bias[col] in out's dtype.
void store_rows(int mr, int64_t cols, const float* cf, const float* bias, const tensor_view& out, int64_t m0,
                int64_t n0, int64_t ldo) {
  float row[kGroupCols];
  for (int i = 0; i < mr; ++i) {
    for (int64_t col = 0; col < cols; ++col) row[col] = cf[i * 64 + col] + bias[col];
    store_row(out.dtype, row, cols, out.data, (m0 + i) * ldo + n0);
  }
}

// Rows of x as float32: x itself, or a conversion of rows [r0, r1) into a thread-local buffer, with the
// row length padded to `ld` (zeros) when ld > k.
// One row of n float16 / bfloat16 / float32 values as float32.
void row_to_f32_scalar(ssmkit_dtype dt, const void* src, int64_t n, float* dst) {
  for (int64_t j = 0; j < n; ++j) {
    switch (dt) {
      case SSMKIT_DTYPE_F16: dst[j] = load_f32<SSMKIT_DTYPE_F16>(src, j); break;
      case SSMKIT_DTYPE_BF16: dst[j] = load_f32<SSMKIT_DTYPE_BF16>(src, j); break;
      default: dst[j] = load_f32<SSMKIT_DTYPE_F32>(src, j); break;
    }
  }
}

#if SSMKIT_X86
SSMKIT_TARGET_AVX2 void row_to_f32_avx2(ssmkit_dtype dt, const void* src, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t j = 0;
  if (dt == SSMKIT_DTYPE_F16) {
    for (; j + 8 <= n; j += 8) {
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j))));
    }
  } else if (dt == SSMKIT_DTYPE_BF16) {
    for (; j + 8 <= n; j += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + j)));
      _mm256_storeu_ps(dst + j, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
  }
  row_to_f32_scalar(dt, static_cast<const char*>(src) + j * dtype_size(dt), n - j, dst + j);
}
#endif

// Rows of x as float32: x itself, or a conversion of rows [r0, r1) into a thread-local buffer, with the
// row length padded to `ld` (zeros) when ld > k.
const float* float_rows(const tensor_view& x, int64_t r0, int64_t r1, int64_t k, int64_t ld) {
  if (x.dtype == SSMKIT_DTYPE_F32 && ld == k) return static_cast<const float*>(x.data) + r0 * k;
  thread_local std::vector<float> buf;
  float* out = grow(buf, (r1 - r0) * ld);
  auto convert = row_to_f32_scalar;
#if SSMKIT_X86
  if (cpu::simd() >= cpu::SIMD_AVX2) convert = row_to_f32_avx2;
#endif
  const int esize = dtype_size(x.dtype);
  cpu::parallel_for(
      r1 - r0, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          convert(x.dtype, static_cast<const char*>(x.data) + (r0 + i) * k * esize, k, out + i * ld);
          for (int64_t j = k; j < ld; ++j) out[i * ld + j] = 0.0f;
        }
      });
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Entry points.

int64_t packed_weight_bytes(int64_t n, int64_t k, int32_t bits) {
  return layout(n, k, bits).bytes();
}

status pack_weights_cpu(const pack_weights_params& p) {
  if (p.bits != 8 && p.bits != 4) {
    return make_status(status_code::value, "packWeights: options.bits: expected 8 or 4, got %d", p.bits);
  }
  const layout L(p.n, p.k, p.bits);
  if (p.out.numel() != L.bytes()) {
    return make_status(status_code::internal, "packWeights: out: expected %lld bytes, got %lld",
                       static_cast<long long>(L.bytes()), static_cast<long long>(p.out.numel()));
  }
  pack(p.w.data, L, static_cast<uint8_t*>(p.out.data));
  return ok_status();
}

namespace {

status check_packed(const char* op, const tensor_view& w, bool packed, const layout& L) {
  if (packed && w.numel() != L.bytes()) {
    return make_status(status_code::internal, "%s: w: packed weight of %lld bytes, expected %lld", op,
                       static_cast<long long>(w.numel()), static_cast<long long>(L.bytes()));
  }
  return ok_status();
}

// Row blocks of the activations handled per pass: bounds the thread-local copies of padded or converted
// rows, at the cost of streaming the weights once per block (1024 int8 rows of K = 5120 are 5 MiB; 256
// float32 rows of K = 2560 are 2.5 MiB and stay in the L3).
constexpr int64_t kRowBlock = 1024;
constexpr int64_t kFloatRowBlock = 256;

}  // namespace

status gemm_w8a8_cpu(const gemm_w8a8_params& p) {
  const layout L(p.n, p.k, 8);
  SSMKIT_RETURN_IF_ERROR(check_packed("gemmW8A8", p.w, p.w_packed, L));
  if (p.m == 0 || p.n == 0) return ok_status();
  const uint8_t* w = packed_weights(p.w, p.w_packed, L);
  for (int64_t r0 = 0; r0 < p.m; r0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, p.m - r0);
    tensor_view a = p.a;
    a.data = static_cast<int8_t*>(p.a.data) + r0 * p.k;
    const int_activations act = prepare_activations(a, rows, p.k, L, 1, std::max<int64_t>(p.k, 1), 128);
    tensor_view as = p.a_scale, out = p.out;
    if (as.numel() != 1) as.data = static_cast<char*>(as.data) + r0 * dtype_size(as.dtype);
    out.data = static_cast<char*>(out.data) + r0 * p.n * dtype_size(out.dtype);
    int_gemm_args g{act.a, act.lda, act.comp, w, L, &as, &p.w_scale, &p.bias, &out, rows, 1, L.steps};
    int_gemm(g);
  }
  return ok_status();
}

status gemm_w4a8_cpu(const gemm_w4a8_params& p) {
  const layout L(p.n, p.k, 4);
  SSMKIT_RETURN_IF_ERROR(check_packed("gemmW4A8", p.w, p.w_packed, L));
  const int64_t gs = p.group_size <= 0 ? p.k : p.group_size;
  if (gs != p.k && (gs % 8 != 0 || p.k % gs != 0)) {
    return make_status(
        status_code::value,
        "gemmW4A8: options.groupSize: expected a multiple of 8 that divides %lld, or %lld; got %lld",
        static_cast<long long>(p.k), static_cast<long long>(p.k), static_cast<long long>(gs));
  }
  if (p.m == 0 || p.n == 0) return ok_status();
  const int64_t kgroups = gs == p.k ? 1 : p.k / gs;
  const uint8_t* w = packed_weights(p.w, p.w_packed, L);
  for (int64_t r0 = 0; r0 < p.m; r0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, p.m - r0);
    tensor_view a = p.a;
    a.data = static_cast<int8_t*>(p.a.data) + r0 * p.k;
    const int_activations act = prepare_activations(a, rows, p.k, L, kgroups, std::max<int64_t>(gs, 1), 8);
    tensor_view as = p.a_scale, out = p.out;
    if (as.numel() != 1) as.data = static_cast<char*>(as.data) + r0 * dtype_size(as.dtype);
    out.data = static_cast<char*>(out.data) + r0 * p.n * dtype_size(out.dtype);
    int_gemm_args g{act.a,      act.lda, act.comp, w,    L,       &as,
                    &p.w_scale, &p.bias, &out,     rows, kgroups, kgroups == 1 ? L.steps : gs / 8};
    int_gemm(g);
  }
  return ok_status();
}

status gemm_w4a16_cpu(const gemm_w4a16_params& p) {
  const layout L(p.n, p.k, 4);
  SSMKIT_RETURN_IF_ERROR(check_packed("gemmW4A16", p.w, p.w_packed, L));
  const int64_t gs = p.group_size <= 0 ? p.k : p.group_size;
  if (gs != p.k && (gs % 8 != 0 || p.k % gs != 0)) {
    return make_status(
        status_code::value,
        "gemmW4A16: options.groupSize: expected a multiple of 8 that divides %lld, or %lld; got %lld",
        static_cast<long long>(p.k), static_cast<long long>(p.k), static_cast<long long>(gs));
  }
  if (p.m == 0 || p.n == 0) return ok_status();
  const int64_t kgroups = gs == p.k ? 1 : p.k / gs;
  const int64_t group_steps = kgroups == 1 ? L.steps : gs / 8;
  const uint8_t* w = packed_weights(p.w, p.w_packed, L);
  const w4a16_kernels& kk = w4a16_level();

  // The group's scales, transposed to (kgroups, 64) float32, and its bias.
  auto load_group = [&](int64_t gi, float* sc, float* bias) {
    const int64_t n0 = gi * kGroupCols, cols = L.cols(gi);
    int64_t b0 = 0;
#if SSMKIT_X86
    if (p.bias.present() && cpu::simd() >= cpu::SIMD_AVX2) {
      row_to_f32_avx2(p.bias.dtype, static_cast<const char*>(p.bias.data) + n0 * dtype_size(p.bias.dtype),
                      cols, bias);
      b0 = cols;
    }
#endif
    for (int64_t col = b0; col < kGroupCols; ++col) {
      bias[col] = col < cols && p.bias.present() ? read_float(p.bias, n0 + col) : 0.0f;
    }
#if SSMKIT_X86
    if (kk.avx512) {
      gather_scales_avx512(p.scales, n0, cols, kgroups, sc);
      return;
    }
#endif
    for (int64_t col = 0; col < kGroupCols; ++col) {
      for (int64_t q = 0; q < kgroups; ++q) {
        sc[q * kGroupCols + col] = col < cols ? read_float(p.scales, (n0 + col) * kgroups + q) : 0.0f;
      }
    }
  };

#if SSMKIT_X86
  // Up to kPieceRows rows of float16 / bfloat16 x (decode, batched decode): integer dot products against
  // x in three int8 pieces.
  if (kk.pieces && p.m <= kPieceRows && p.x.dtype != SSMKIT_DTYPE_F32) {
    thread_local std::vector<int8_t> piece_buf;
    thread_local std::vector<x_block> block_buf;
    const int64_t lda = L.steps * 8;
    int8_t* t = grow(piece_buf, p.m * 3 * lda);
    std::vector<x_block>& blocks = block_buf;
    blocks.clear();
    const int mr = static_cast<int>(p.m);
    // 0 while slot 0 cuts x into pieces, then 1, or 2 where the pieces cannot carry x.
    std::atomic<int> pieces{0};
    auto start = [&](int64_t slot) {
      if (slot == 0) {
        bool ok = true;
        for (int64_t r = 0; r < p.m && ok; ++r) {
          ok = x_pieces_avx512(static_cast<const uint16_t*>(p.x.data) + r * p.k,
                               p.x.dtype == SSMKIT_DTYPE_BF16, p.k, L.steps, group_steps, t + r * 3 * lda,
                               lda, blocks);
        }
        pieces.store(ok ? 1 : 2, std::memory_order_release);
        return ok;
      }
      // Yielding: where the threads outnumber the free cores, slot 0 may need this one.
      int state;
      while ((state = pieces.load(std::memory_order_acquire)) == 0) std::this_thread::yield();
      return state == 1;
    };
    for_each_group_run(L.groups, start, [&](int64_t g0, int64_t g1) {
      const int64_t nblocks = static_cast<int64_t>(blocks.size()) / p.m;
      thread_local std::vector<float> sc_buf;
      float* sc = grow(sc_buf, kgroups * kGroupCols);
      alignas(64) float bias[kGroupCols], acc[kPieceRows * kGroupCols];
      for (int64_t gi = g0; gi < g1; ++gi) {
        load_group(gi, sc, bias);
        gemv_group_pieces(L.panels(gi), mr, t, 3 * lda, lda, blocks.data(), nblocks, w + L.group_offset(gi),
                          L.step_bytes(gi), sc, acc);
        store_rows(mr, L.cols(gi), acc, bias, p.out, 0, gi * kGroupCols, p.n);
      }
    });
    if (pieces.load(std::memory_order_relaxed) == 1) return ok_status();
  }
  // A few rows (decode, batched decode) read the weights once and straight from their nibbles; float32 x
  // has 24 significant bits, more than two bfloat16 halves hold, and takes the float32 kernel (one row).
  const bool bf16 = kk.bf16 && p.x.dtype != SSMKIT_DTYPE_F32 && p.m <= kGemvRows;
  if (bf16 || (p.m == 1 && kk.avx512)) {
    const int64_t xstride = 4 * (L.steps + 1);  // two steps per 16 values: room for one more than padding
    const float* x = bf16 ? nullptr : float_rows(p.x, 0, 1, p.k, L.steps * 8);
    thread_local std::vector<uint32_t> pairs;
    uint32_t* xh = nullptr;
    uint32_t* xl = nullptr;
    if (bf16) {
      xh = grow(pairs, 2 * p.m * xstride);
      xl = xh + p.m * xstride;
      for (int64_t r = 0; r < p.m; ++r) {
        tensor_view row = p.x;
        row.data = static_cast<char*>(p.x.data) + r * p.k * 2;
        bf16_pairs_avx512(row, p.k, L.steps, xh + r * xstride, xl + r * xstride);
      }
      if (p.x.dtype == SSMKIT_DTYPE_BF16) xl = nullptr;
    }
    const int mr = static_cast<int>(p.m);
    for_each_group_run(
        L.groups, [](int64_t) { return true; },
        [&](int64_t g0, int64_t g1) {
          thread_local std::vector<float> sc_buf;
          float* sc = grow(sc_buf, kgroups * kGroupCols);
          alignas(64) float bias[kGroupCols], acc[kGemvRows * kGroupCols];
          for (int64_t gi = g0; gi < g1; ++gi) {
            load_group(gi, sc, bias);
            const uint8_t* b = w + L.group_offset(gi);
            if (bf16) {
              gemv_group_bf16(mr, xh, xl, xstride, b, L.step_bytes(gi), L.steps, group_steps, L.panels(gi),
                              sc, acc);
            } else {
              gemv_group_avx512(x, b, L.step_bytes(gi), L.steps, group_steps, L.panels(gi), sc, acc);
            }
            store_rows(mr, L.cols(gi), acc, bias, p.out, 0, gi * kGroupCols, p.n);
          }
        });
    return ok_status();
  }
#endif

  const int mr_max = kMaxRows;
  const int64_t block_rows = mr_max * 16;
  const int64_t kblock_steps = kKBlock / 8;
  for (int64_t r0 = 0; r0 < p.m; r0 += kFloatRowBlock) {
    const int64_t rows = std::min(kFloatRowBlock, p.m - r0);
    const float* x = float_rows(p.x, r0, r0 + rows, p.k, p.k);
    const int64_t mblocks = (rows + block_rows - 1) / block_rows;
    cpu::parallel_for(L.groups * mblocks, 1, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> sc_buf, bf_buf, cf_buf;
      float* sc = grow(sc_buf, kgroups * kGroupCols);
      float* bf = grow(bf_buf, kKBlock * kGroupCols);
      float* cf = grow(cf_buf, block_rows * kGroupCols);
      alignas(64) float bias[kGroupCols];
      const float* step_scales[kKBlock / 8];
      int64_t loaded_group = -1;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t gi = t / mblocks, mb = t % mblocks;
        if (gi != loaded_group) {
          load_group(gi, sc, bias);
          loaded_group = gi;
        }
        const int np = L.panels(gi);
        const int64_t sb = L.step_bytes(gi);
        const uint8_t* b = w + L.group_offset(gi);
        const int64_t m_begin = mb * block_rows, m_end = std::min(rows, m_begin + block_rows);
        for (int64_t s0 = 0; s0 < L.steps; s0 += kblock_steps) {
          const int64_t ns = std::min(kblock_steps, L.steps - s0);
          for (int64_t s = 0; s < ns; ++s) step_scales[s] = sc + ((s0 + s) / group_steps) * kGroupCols;
          kk.dequant(b + s0 * sb, sb, ns, np, step_scales, bf);
          const int64_t kc = std::min(ns * 8, p.k - s0 * 8);
          for (int64_t m0 = m_begin; m0 < m_end; m0 += mr_max) {
            const int mr = static_cast<int>(std::min<int64_t>(mr_max, m_end - m0));
            kk.tile(mr, x + m0 * p.k + s0 * 8, p.k, bf, kc, np, s0 > 0, cf + (m0 - m_begin) * kGroupCols);
          }
        }
        for (int64_t m0 = m_begin; m0 < m_end; m0 += mr_max) {
          const int mr = static_cast<int>(std::min<int64_t>(mr_max, m_end - m0));
          store_rows(mr, L.cols(gi), cf + (m0 - m_begin) * kGroupCols, bias, p.out, r0 + m0, gi * kGroupCols,
                     p.n);
        }
      }
    });
  }
  return ok_status();
}

}  // namespace ssmkit
