// CUDA kernels of the quantization family: hadamard, and quantize of rotated rows of 40 p values with one
// scale a row (the GEMMs and the other quantizers are in gemm.cu).
//
// hadamard: one block per row (a grid-stride loop over rows), n = m * 2^k with m in {1, 12, 20, 28, 40},
// computed with the same float32 operations in the same order as native/cpu/quant.cc, so results match
// the CPU backend bit for bit: the Sylvester butterflies of each chunk of p = 2^k values with stages
// h = 1, 2, 4, ... in that order, then H_m across the m chunks (H_40 in its block form [[A, A], [B, -B]]:
// a butterfly across the two halves, then A on the sums and B on the differences), then times scale.
//
// Fast path (p >= 8, 16-byte aligned x and out): each thread holds 8 consecutive values of one chunk from
// one 16-byte load (two for float32); stages h = 1, 2, 4 run in its registers, h = 8 ... 128 through warp
// shuffles (lane bit b is position bit 3 + b; the lower element of a pair computes mine + other, the upper
// other - mine, as one fma with a +-1 sign), and only the stages h >= 256 go through shared memory with
// 32-bit shifts and masks. For m = 1 and p <= 256 the row never touches shared memory: registers straight
// back to global memory. For m > 1 the transformed chunks go to shared memory (float32, n values) and the
// mix runs with H_m as a template argument (sign bits are compile-time constants, so each term is one
// FADD or FSUB): thread t takes position q = t mod p and half t / p of the output rows (for H_40 the
// half is also which of the sums and differences it forms), reads its m column values with stride p
// (conflict-free), and writes its outputs straight to global memory (coalesced along q).
// Fallback (p < 8 or unaligned): scalar loads into shared memory and every stage there, same mix.
//
// H_40 with 64 <= p <= 256 (n = 2560, 5120, 10240: the Mamba widths) has its own kernel, described
// above it: the H_40 butterfly moves into registers before shared memory, each output position pair is
// one thread's (8-byte shared loads, 4-byte global stores, immediate offsets: p is a template argument).
// Its quantizing form is quantize's for such rows with one scale a row (quantize_h40_cuda): the quantized
// model's rotated out_proj input.
// Up to 16 rows (a decode step's one) its blocks are 4p threads instead of p: the one row's block of four
// warps spent 7.5 us after its wait in the W4A16 decode step (H200 per-block trace), the step's longest
// launch after in_proj; with sixteen warps the step went from 2.28 to 2.14 ms a token.
//
// Cost at the benchmark shape (bf16, 16384 rows of 5120 = 40 * 128, 84 M values): 336 MB moved (82 us
// for a device copy). The transform's float32 operations are fixed by the CPU's order: 7 butterfly
// stages, the H_40 butterfly, 19 adds per output (the compiler shares equal prefixes of rows: 329 adds
// per 20 outputs remain, 16.45 a value) and the scale: 25.5 per value, measured. The general kernel
// issued 50.8 instructions per value (133 M warp instructions, 187 us on the H200: one 2-byte store, one
// conversion and two shared loads per value, 4 shuffles, address arithmetic, 64 registers for 320
// threads: 3 blocks an SM). The H_40 kernel with 8-value slots (SASS per thread and row, 40 values: 2.5
// items of 16 values at 250 instructions: 128 float32 operations, 64 shuffles, 16 unpacks, 6 loads and
// stores, ~36 of address and loop; plus ~775 for the mix: 658 adds, 40 multiplies, 20 shared loads, 20
// packs, 20 stores) issued 35 per value, 91.9 M warp instructions, 64 registers at 128 threads (8
// blocks an SM): 123.5 us on the H200 (1.51x the copy), issue slots 73% busy, DRAM 52% of peak:
// issue-bound first (92 us of issue at full rate), the rest latency, each block waiting on its own
// loads in phase 1. Staging each block's next row with cp.async (a resident grid) was measured slower,
// 129 us: the stage's shared memory cut the blocks to 7 an SM and the even row shares left a tail.
// 16-value slots (this code): stage h = 8 moves into registers, so a value takes 3 shuffles instead of
// 4 (p = 128), and the loop and address code of phase 1 is spent on 32 values instead of 16. Counted
// in the PTX of the bf16 p = 128 kernel (which matched the SASS above within 1%, shuffle moves aside):
// phase 1 went from 19 + 2.5 x 252 = 649 to 463 + 0.25 x 446 = 575 instructions per thread and row
// (first pass, then the second on one warp of four), the mix unchanged at ~750: 33.1 per value instead
// of 35.0 (-5.4%, ~87 M warp instructions). Expected: 117 ... 121 us (if the time follows issue, 5%
// off; the latency part also shrinks: two passes of four loads per thread instead of three of two).
// Shared memory traffic (MIO) per warp and row: 120 shuffles and 40 store wavefronts, was 160 and 40.
// Still 64 registers (8 blocks an SM at p = 128), no spills but 4 bytes for float32 at p = 128 on sm_90a.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda_check.cuh"
#include "env.cuh"
#include "pdl.cuh"
#include "quant_math.cuh"
#include "ssmkit/quant.h"

namespace ssmkit {
namespace {

// Rows up to 32768 floats (128 KiB) in one block's shared memory (sm_80 and sm_90; sm_89 stops at 99 KiB
// and is checked at launch).
constexpr int64_t kMaxSharedRow = 32768;
constexpr int kMaxThreads = 512;
constexpr unsigned kFull = 0xffffffffu;

// H_m sign bits: bit j of rows[i] set means H_m[i][j] = -1 (the tables of native/cpu/quant.cc; checked
// against hadamard_signs() before the first launch).
template <int M>
struct had_rows;
template <>
struct had_rows<12> {
  static constexpr uint64_t rows[12] = {
      0x2ull,   0xaabull, 0x3c8ull, 0x96eull, 0xf20ull, 0x5baull,
      0xc8cull, 0x6e6ull, 0x23cull, 0xb96ull, 0x8f0ull, 0xe5aull,
  };
};
template <>
struct had_rows<20> {
  static constexpr uint64_t rows[20] = {
      0x933deull, 0x2e3bdull, 0x5477bull, 0xa0ef7ull, 0x499efull, 0x637c1ull, 0xc6ba2ull,
      0x8d764ull, 0x1aee8ull, 0x359f0ull, 0xfa53ull,  0x174a7ull, 0x26d4eull, 0x45e9cull,
      0x83d39ull, 0xf7a6dull, 0xef4faull, 0xdedd5ull, 0xbdf8bull, 0x7bf36ull,
  };
};
template <>
struct had_rows<28> {
  static constexpr uint64_t rows[28] = {
      0xcd69e7eull, 0x9ad7c7dull, 0x37ab8fbull, 0x6d571f7ull, 0xd8ae3efull, 0xb3587dfull, 0x66b4f3full,
      0xb467f43ull, 0x6acbe87ull, 0xd593d8eull, 0xab27b9cull, 0x564f7b8ull, 0xac9aff0ull, 0x5b31fe1ull,
      0x87fb325ull, 0xff66caull,  0x1decd95ull, 0x39ddb2aull, 0x71bf654ull, 0xe17eca9ull, 0xc2fd9d2ull,
      0xfcf1299ull, 0xfbe2532ull, 0xf7c4ae4ull, 0xef8d549ull, 0xdf1ea13ull, 0xbe3d4a6ull, 0x7e7a94cull,
  };
};
template <>
struct had_rows<40> {
  static constexpr uint64_t rows[40] = {
      0xffffeffffeull, 0x615e4615e4ull, 0xc2bc8c2bc8ull, 0x8579285792ull, 0xaf260af26ull,  0x15e4c15e4cull,
      0x2bc982bc98ull, 0x5793057930ull, 0xaf260af260ull, 0x5e4c25e4c2ull, 0xbc984bc984ull, 0x7930a7930aull,
      0xf2614f2614ull, 0xe4c2ae4c2aull, 0xc9856c9856ull, 0x930ae930aeull, 0x2615e2615eull, 0x4c2bc4c2bcull,
      0x9857898578ull, 0x30af230af2ull, 0x1ffffeull,     0x9ea1b615e4ull, 0x3d437c2bc8ull, 0x7a86d85792ull,
      0xf50d90af26ull, 0xea1b315e4cull, 0xd43672bc98ull, 0xa86cf57930ull, 0x50d9faf260ull, 0xa1b3d5e4c2ull,
      0x4367bbc984ull, 0x86cf57930aull, 0xd9ebf2614ull,  0x1b3d5e4c2aull, 0x367a9c9856ull, 0x6cf51930aeull,
      0xd9ea12615eull, 0xb3d434c2bcull, 0x67a8798578ull, 0xcf50d30af2ull,
  };
};

template <int M>
constexpr bool had_neg(int i, int j) {
  return ((had_rows<M>::rows[i] >> j) & 1u) != 0;
}

template <class F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

struct had_args {
  const void* x;
  void* out;
  int64_t rows;
  int n;      // row length, <= kMaxSharedRow
  int log_p;  // p = 2^log_p values per chunk, n = m * p
  int nv;     // fast path: n / 8 slots of 8 values
  float scale;
};

// 8 consecutive values at element offset off (a multiple of 8; the base is 16-byte aligned).
template <ssmkit_dtype T>
__device__ __forceinline__ void load8(const void* x, int64_t off, float v[8]) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(x) + off);
    const float4 a = p[0], b = p[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + off);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (T == SSMKIT_DTYPE_BF16) {
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      } else {
        __half2 h;
        memcpy(&h, &w[i], 4);
        const float2 f = __half22float2(h);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
      }
    }
  }
}

template <ssmkit_dtype T>
__device__ __forceinline__ void store8(void* out, int64_t off, const float v[8]) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    float4* p = reinterpret_cast<float4*>(static_cast<float*>(out) + off);
    p[0] = make_float4(v[0], v[1], v[2], v[3]);
    p[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (T == SSMKIT_DTYPE_BF16) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
        memcpy(&w[i], &h, 4);
      } else {
        const __half2 h = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
        memcpy(&w[i], &h, 4);
      }
    }
    *reinterpret_cast<uint4*>(static_cast<uint16_t*>(out) + off) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

template <ssmkit_dtype T>
__device__ __forceinline__ void store1(void* out, int64_t i, float v) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    static_cast<float*>(out)[i] = v;
  } else if constexpr (T == SSMKIT_DTYPE_BF16) {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<__half*>(out)[i] = __float2half_rn(v);
  }
}

// Output rows [kBase, kBase + kRows) of H_kM (columns kCol0 ... kCol0 + kCols - 1 of its sign table)
// applied to v (kCols values), for position q: out[row0 + i * p + q] = scale * sum_j H[i][kCol0 + j] v[j],
// summed left to right as the CPU does.
template <ssmkit_dtype T, int kM, int kBase, int kRows, int kCols>
__device__ __forceinline__ void mix_rows(const float* v, void* out, int64_t row0, int p, int q, float scale) {
  static_for<kRows>([&](auto ii) {
    constexpr int i = kBase + decltype(ii)::value;
    constexpr bool kNeg0 = had_neg<kM>(i, 0);
    float acc = kNeg0 ? -v[0] : v[0];
    static_for<kCols - 1>([&](auto jj) {
      constexpr int j = decltype(jj)::value + 1;
      constexpr bool kNeg = had_neg<kM>(i, j);
      if constexpr (kNeg) {
        acc -= v[j];
      } else {
        acc += v[j];
      }
    });
    store1<T>(out, row0 + static_cast<int64_t>(i * p + q), acc * scale);
  });
}

// Stages h = 1, 2, ..., N / 2 of N consecutive values in registers, in the CPU's order.
template <int N>
__device__ __forceinline__ void fwht_regs(float (&v)[N]) {
#pragma unroll
  for (int h = 1; h < N; h <<= 1) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      if (!(j & h)) {
        const float lo = v[j], hi = v[j + h];
        v[j] = lo + hi;
        v[j + h] = lo - hi;
      }
    }
  }
}

template <ssmkit_dtype T, int kM, bool kFast>
__global__ void __launch_bounds__(kMaxThreads, 2) hadamard_kernel(had_args a) {
  SSMKIT_TRACE_SCOPE();
  // Launched by launch_after_wait: nothing global is touched before the kernel ahead has finished.
  pdl_wait();
  pdl_trigger();
  extern __shared__ float4 smem4[];
  float* buf = reinterpret_cast<float*>(smem4);  // (n) = (m, p) in float32
  const int n = a.n;
  const int log_p = a.log_p;
  const int p = 1 << log_p;
  const int tid = threadIdx.x;
  // m = 1 with every stage in registers and shuffles: no shared memory at all.
  const bool direct = kFast && kM == 1 && log_p <= 8;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t row0 = r * n;
    int done = 0;  // stages h < 2^done are done
    if constexpr (kFast) {
      const int reg_log = log_p < 8 ? log_p : 8;
      for (int base = 0; base < a.nv; base += blockDim.x) {
        // blockDim.x is a multiple of 32, so slot vi's lane is vi mod 32, and a chunk's p / 8 slots are
        // consecutive lanes of one warp when p <= 256. Every lane runs the shuffles; idle ones carry zeros
        // and are never the partner of a busy one (nv is a multiple of p / 8).
        const int vi = base + tid;
        const bool busy = vi < a.nv;
        float v[8];
        if (busy) {
          load8<T>(a.x, row0 + 8 * static_cast<int64_t>(vi), v);
        } else {
#pragma unroll
          for (int j = 0; j < 8; ++j) v[j] = 0.0f;
        }
        fwht_regs(v);
        for (int lg = 3; lg < reg_log; ++lg) {
          const int lm = 1 << (lg - 3);
          const float sgn = (tid & lm) ? -1.0f : 1.0f;  // lower: mine + other; upper: other - mine
#pragma unroll
          for (int j = 0; j < 8; ++j) v[j] = fmaf(sgn, v[j], __shfl_xor_sync(kFull, v[j], lm));
        }
        if (busy) {
          if (direct) {
#pragma unroll
            for (int j = 0; j < 8; ++j) v[j] *= a.scale;
            store8<T>(a.out, row0 + 8 * static_cast<int64_t>(vi), v);
          } else {
            float4* d = reinterpret_cast<float4*>(buf + 8 * vi);
            d[0] = make_float4(v[0], v[1], v[2], v[3]);
            d[1] = make_float4(v[4], v[5], v[6], v[7]);
          }
        }
      }
      done = reg_log;
      if (direct) continue;
    } else {
      for (int i = tid; i < n; i += blockDim.x) buf[i] = load_f32<T>(a.x, row0 + i);
    }
    __syncthreads();
    // The remaining stages in shared memory: butterfly i of n / 2 is in chunk c = i / (p / 2), pair
    // kk = i mod (p / 2), elements j and j + h with j = c * p + (kk / h) * 2h + kk mod h.
    for (int lg = done; lg < log_p; ++lg) {
      const int h = 1 << lg;
      for (int i = tid; i < n / 2; i += blockDim.x) {
        const int c = i >> (log_p - 1);
        const int kk = i & (p / 2 - 1);
        const int j = (c << log_p) + ((kk >> lg) << (lg + 1)) + (kk & (h - 1));
        const float lo = buf[j], hi = buf[j + h];
        buf[j] = lo + hi;
        buf[j + h] = lo - hi;
      }
      __syncthreads();
    }
    if constexpr (kM == 1) {
      if constexpr (kFast) {
        for (int vi = tid; vi < a.nv; vi += blockDim.x) {
          const float4* s = reinterpret_cast<const float4*>(buf + 8 * vi);
          const float4 x0 = s[0], x1 = s[1];
          float v[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
          for (int j = 0; j < 8; ++j) v[j] *= a.scale;
          store8<T>(a.out, row0 + 8 * static_cast<int64_t>(vi), v);
        }
      } else {
        for (int i = tid; i < n; i += blockDim.x) store1<T>(a.out, row0 + i, buf[i] * a.scale);
      }
    } else {
      constexpr int kH = kM / 2;
      for (int t = tid; t < 2 * p; t += blockDim.x) {
        const int q = t & (p - 1);
        const int part = t >> log_p;
        if constexpr (kM == 40) {
          // Part 0: sums of chunks j and j + 20, rows 0..19 (A); part 1: differences, rows 20..39 (B).
          const float sgn = part ? -1.0f : 1.0f;
          float v[kH];
#pragma unroll
          for (int j = 0; j < kH; ++j) v[j] = fmaf(sgn, buf[(j + kH) * p + q], buf[j * p + q]);
          if (part == 0) {
            mix_rows<T, kM, 0, kH, kH>(v, a.out, row0, p, q, a.scale);
          } else {
            mix_rows<T, kM, kH, kH, kH>(v, a.out, row0, p, q, a.scale);
          }
        } else {
          float v[kM];
#pragma unroll
          for (int j = 0; j < kM; ++j) v[j] = buf[j * p + q];
          if (part == 0) {
            mix_rows<T, kM, 0, kH, kM>(v, a.out, row0, p, q, a.scale);
          } else {
            mix_rows<T, kM, kH, kH, kM>(v, a.out, row0, p, q, a.scale);
          }
        }
      }
    }
    __syncthreads();  // buf is rewritten by the next row
  }
}

// The H_40 path for 64 <= p <= 256 (p = 2^kLogP a template argument, so every shared-memory and global
// offset below is an immediate), 16-byte aligned x and out. One row per block pass, p threads.
// Phase 1: item (c, k), c < 20 a chunk pair (c, c + 20) and k < p / 16 a slot of 16 positions, loads the
// 16 values of both chunks (four 16-byte loads), runs stages h = 1, 2, 4, 8 in registers and
// h = 16 ... p / 2 through shuffles (slot k is lane bits, p / 16 <= 16), then the H_40 butterfly across
// the two chunks in registers, and stores the sums (chunk c) and differences (chunk c + 20) to shared
// memory. A chunk's p floats are kept as four quadrants of p / 4: bit 2 of the position q (the halves,
// p / 2 apart) and the parity of its 8-position slot q >> 3 (odd slots p / 4 further on); in a
// quadrant, q is at 4 (q >> 4) + (q & 3), rotated by 16 words (mod p / 4) for the odd slots. An item's
// eight float4 stores then cover, for 8 consecutive slots k, 128 consecutive bytes (modulo the
// rotation): conflict-free for p >= 128 (p = 64 puts two chunks in a quarter-warp: 2-way). 1.25 p
// items over p threads in two passes: the second runs on the first p / 4 threads, whole warps for
// p >= 128; for p = 64 lanes 16 ... 31 of warp 0 shuffle along on a first-pass item (chunk pairs are
// 4 lanes, so no busy lane takes a value from them) and store nothing.
// Phase 2: thread t of part (sums: rows 0..19 of H_40, differences: rows 20..39) takes the adjacent
// positions q, q + 1 (lane l of warp w: q = 64 w + 8 (j >> 1) + 4 (l >> 4) + 2 (j & 1), j = l & 15),
// reads its 20 value pairs with 8-byte loads (each half-warp reads 16 words of even slots and 16 of odd
// slots, which the rotation puts on the other 16 banks: conflict-free) and writes each output row's pair
// as one 4-byte (8-byte for float32) store; a warp's stores of one row cover 64 consecutive positions.
constexpr int64_t kMax40Blocks = 8192;  // more rows loop inside the blocks

template <ssmkit_dtype T>
__device__ __forceinline__ void store2(void* out, int64_t off, float a, float b) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    *reinterpret_cast<float2*>(static_cast<float*>(out) + off) = make_float2(a, b);
  } else {
    uint32_t w;
    if constexpr (T == SSMKIT_DTYPE_BF16) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
      memcpy(&w, &h, 4);
    } else {
      const __half2 h = __floats2half2_rn(a, b);
      memcpy(&w, &h, 4);
    }
    *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(out) + off) = w;
  }
}

// Rows [kBase, kBase + kRows) of H_40 on the pairs y (columns 0..19: the sums for rows below 20, the
// differences above), each row's pair handed to sink(row, a, b) times scale.
template <int kBase, int kRows, class Sink>
__device__ __forceinline__ void mix40_pair(const float2* y, float scale, Sink&& sink) {
  static_for<kRows>([&](auto ii) {
    constexpr int i = kBase + decltype(ii)::value;
    constexpr bool kNeg0 = had_neg<40>(i, 0);
    float a = kNeg0 ? -y[0].x : y[0].x;
    float b = kNeg0 ? -y[0].y : y[0].y;
    static_for<19>([&](auto jj) {
      constexpr int j = decltype(jj)::value + 1;
      if constexpr (had_neg<40>(i, j)) {
        a -= y[j].x;
        b -= y[j].y;
      } else {
        a += y[j].x;
        b += y[j].y;
      }
    });
    sink(ii, a * scale, b * scale);
  });
}

// quantize's rotated rows (hadamard40_kernel's quantizing form): q int8 (pairs of bytes) or int4 (a
// byte a pair), one scale a row: computed from the row's amax (dynamic, token scales) and stored, or
// read (static: token, channel or tensor scales).
struct had_quant {
  void* q;
  void* scale;
  ssmkit_dtype scale_dt;
  int bits;
  bool dynamic;
  int64_t per_scale;  // rows a static scale covers (1: token; lines_per_channel; all rows: tensor)
};

// kGroups (1, 2 or 4) row groups of p threads: with more than one, phase 1 runs in one pass and phase 2
// splits each part's 20 rows of H_40 over the groups (20 / kGroups a thread), for a few rows (the decode
// step's one) where one block of p threads would run both phases on four warps, each a long chain. The
// same operations on each value in the same order either way, so the same bits.
//
// With kQuant, each thread keeps its rows' pairs in registers instead of storing them, and the row is
// quantized as quant_rows_kernel (gemm.cu) quantizes a rotated row: the same float32 values (the same
// operations in the CPU's order, times the same scale), the block's amax, the scale as stored, rint of the
// quotient. So q and the scales are the CPU's bits.
// (At one row group the 20 pairs a thread holds need 128 registers: half the blocks an SM.)
template <ssmkit_dtype T, int kLogP, int kGroups, bool kQuant>
__global__ void __launch_bounds__((1 << kLogP) * kGroups,
                                  (kQuant && kGroups == 1 ? 512 : 1024) / ((1 << kLogP) * kGroups))
    hadamard40_kernel(had_args a, had_quant hq) {
  SSMKIT_TRACE_SCOPE();
  pdl_wait();  // as hadamard_kernel
  pdl_trigger();
  constexpr int kP = 1 << kLogP;
  constexpr int kThreads = kP * kGroups;
  static_assert(kGroups == 1 || kGroups == 2 || kGroups == 4, "20 rows of a part split evenly");
  constexpr int kGroupRows = 20 / kGroups;
  constexpr int kHalf = kP / 2;
  constexpr int kQuarter = kP / 4;  // one (bit 2, slot parity) quadrant of a chunk
  constexpr int kSlots = kP / 16;   // 16-value slots of a chunk
  constexpr int kItems = 20 * kSlots;
  constexpr int kPasses = (kItems + kThreads - 1) / kThreads;  // 2 for one group, 1 for more
  static_assert(kLogP >= 6 && kLogP <= 8, "p / 2 must be a multiple of 32 and p / 16 at most a warp");
  static_assert(kPasses <= 2 && (kItems - kP) % kSlots == 0, "at most two passes, whole chunk pairs in each");
  extern __shared__ float4 smem4[];
  float* buf = reinterpret_cast<float*>(smem4);  // (40, p) in float32, each chunk in the order above
  const int tid = threadIdx.x;
  // Phase 1: the slot is the same for each of the thread's items (p is a multiple of p / 16).
  const int k = tid & (kSlots - 1);
  float sgn[kLogP - 4];  // lower element of a pair: mine + other; upper: other - mine
#pragma unroll
  for (int s = 0; s < kLogP - 4; ++s) sgn[s] = (k >> s) & 1 ? -1.0f : 1.0f;
  const int w_even = 4 * k;                                      // slot 2 k: positions 16 k ... 16 k + 7
  const int w_odd = kQuarter + ((4 * k + 16) & (kQuarter - 1));  // slot 2 k + 1: 16 k + 8 ... 16 k + 15
  // Phase 2: group g = tid / p takes rows [20 part + g kGroupRows, + kGroupRows).
  const int group = tid / kP;
  const int part = (tid % kP) / kHalf;
  const int t = tid % kHalf;
  const int lane = t & 31, j = lane & 15;
  const int q = 64 * (t >> 5) + 8 * (j >> 1) + 4 * (lane >> 4) + 2 * (j & 1);
  const int odd = (j >> 1) & 1;  // parity of the 8-position slot q / 8
  const int word = kHalf * (lane >> 4) + odd * kQuarter +
                   ((16 * (t >> 5) + 4 * (j >> 2) + 16 * odd) & (kQuarter - 1)) + 2 * (j & 1);
  const float2* src = reinterpret_cast<const float2*>(buf + part * 20 * kP + word);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t row0 = r * (40 * kP);
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
      // A pass runs on the warps holding one of its items (all lanes of such a warp shuffle; lanes past
      // the items, only for p = 64, redo an item of the same slot and store nothing).
      if ((tid & ~31) + pass * kThreads >= kItems) break;
      const bool busy = pass * kThreads + tid < kItems;
      const int s = busy ? pass * kThreads + tid : kGroups == 1 ? tid : tid % kItems;
      const int c = s / kSlots;
      float u[16], v[16];
      load8<T>(a.x, row0 + c * kP + 16 * k, u);
      load8<T>(a.x, row0 + c * kP + 16 * k + 8, u + 8);
      load8<T>(a.x, row0 + (c + 20) * kP + 16 * k, v);
      load8<T>(a.x, row0 + (c + 20) * kP + 16 * k + 8, v + 8);
      fwht_regs(u);
      fwht_regs(v);
#pragma unroll
      for (int st = 0; st < kLogP - 4; ++st) {
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          u[e] = fmaf(sgn[st], u[e], __shfl_xor_sync(kFull, u[e], 1 << st));
          v[e] = fmaf(sgn[st], v[e], __shfl_xor_sync(kFull, v[e], 1 << st));
        }
      }
      if (busy) {
        float* d = buf + c * kP;
#pragma unroll
        for (int g = 0; g < 4; ++g) {
          // Values 4 g ... 4 g + 3: bit 2 of the position is g & 1, the slot parity g >> 1.
          const int w = (g >> 1 ? w_odd : w_even) + (g & 1) * kHalf;
          const int e = 4 * g;
          reinterpret_cast<float4*>(d + w)[0] =
              make_float4(u[e] + v[e], u[e + 1] + v[e + 1], u[e + 2] + v[e + 2], u[e + 3] + v[e + 3]);
          reinterpret_cast<float4*>(d + 20 * kP + w)[0] =
              make_float4(u[e] - v[e], u[e + 1] - v[e + 1], u[e + 2] - v[e + 2], u[e + 3] - v[e + 3]);
        }
      }
    }
    __syncthreads();
    float2 y[20];
#pragma unroll
    for (int c = 0; c < 20; ++c) y[c] = src[c * kHalf];
    float2 o[kQuant ? kGroupRows : 1];  // kQuant: the thread's rows' pairs
    static_for<2 * kGroups>([&](auto sel) {
      constexpr int kSel = decltype(sel)::value;
      if (part * kGroups + group == kSel) {
        constexpr int kBase = 20 * (kSel / kGroups) + kGroupRows * (kSel % kGroups);
        mix40_pair<kBase, kGroupRows>(y, a.scale, [&](auto ii, float u0, float u1) {
          constexpr int i = decltype(ii)::value;
          if constexpr (kQuant) {
            o[i] = make_float2(u0, u1);
          } else {
            store2<T>(a.out, row0 + q + (kBase + i) * kP, u0, u1);
          }
        });
      }
    });
    if constexpr (kQuant) {
      float s;
      if (hq.dynamic) {
        __shared__ float red[kThreads / 32];
        float m = 0.0f;
#pragma unroll
        for (int i = 0; i < kGroupRows; ++i) m = fmaxf(m, fmaxf(fabsf(o[i].x), fabsf(o[i].y)));
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(kFull, m, off));
        if ((tid & 31) == 0) red[tid >> 5] = m;
        __syncthreads();
        m = 0.0f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, red[w]);
        s = scale_as_stored(m, hq.bits, hq.scale_dt);
        if (tid == 0) store_float(hq.scale, hq.scale_dt, r, s);
      } else {
        s = load_float(hq.scale, hq.scale_dt, r / hq.per_scale);
      }
      const int first = 20 * part + kGroupRows * group;  // the thread's first row of H_40
#pragma unroll
      for (int i = 0; i < kGroupRows; ++i) {
        const int lo = quant_one(o[i].x, s, hq.bits);
        const int hi = quant_one(o[i].y, s, hq.bits);
        const int64_t at = row0 + q + static_cast<int64_t>(first + i) * kP;  // even
        if (hq.bits == 8) {
          const uint16_t pair = static_cast<uint16_t>((lo & 255) | ((hi & 255) << 8));
          *reinterpret_cast<uint16_t*>(static_cast<int8_t*>(hq.q) + at) = pair;
        } else {
          static_cast<uint8_t*>(hq.q)[at / 2] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
        }
      }
    }
    __syncthreads();  // buf (and red) are rewritten by the next row
  }
}

template <ssmkit_dtype T, int kLogP, int kGroups, bool kQuant>
status launch_hadamard40_groups(const had_args& a, const had_quant& hq, cudaStream_t stream) {
  constexpr int kP = 1 << kLogP;
  constexpr int smem = 40 * kP * static_cast<int>(sizeof(float));
  auto* kernel = hadamard40_kernel<T, kLogP, kGroups, kQuant>;
  if (smem > 48 * 1024)
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const unsigned blocks = static_cast<unsigned>(a.rows < kMax40Blocks ? a.rows : kMax40Blocks);
  return launch_after_wait(kernel, dim3(blocks), dim3(kP * kGroups), smem, stream, a, hq);
}

// Up to kWide40Rows rows (a decode step's): blocks of four row groups (SSMKIT_CUDA_HADAMARD_WIDE=0: of one,
// for comparison; part of the decode step's graph fingerprint). More rows fill the GPU with blocks of p.
constexpr int64_t kWide40Rows = 16;

template <ssmkit_dtype T, int kLogP, bool kQuant = false>
status launch_hadamard40(const had_args& a, cudaStream_t stream, const had_quant& hq = had_quant{}) {
  if (a.rows <= kWide40Rows && env_flag("SSMKIT_CUDA_HADAMARD_WIDE", true))
    return launch_hadamard40_groups<T, kLogP, 4, kQuant>(a, hq, stream);
  return launch_hadamard40_groups<T, kLogP, 1, kQuant>(a, hq, stream);
}

template <int M>
bool table_matches() {
  const float* h = hadamard_signs(M);
  if (h == nullptr) return false;
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < M; ++j) {
      if ((h[i * M + j] < 0.0f) != had_neg<M>(i, j)) return false;
    }
  }
  if (M == 40) {
    // The block form [[A, A], [B, -B]] the kernel relies on.
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j < M / 2; ++j) {
        if (h[i * M + M / 2 + j] != (i < M / 2 ? h[i * M + j] : -h[i * M + j])) return false;
      }
    }
  }
  return true;
}

template <ssmkit_dtype T, int kM, bool kFast>
status launch_hadamard(const had_args& a, int threads, size_t smem, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(
        hadamard_kernel<T, kM, kFast>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const int64_t max_blocks = int64_t{1} << 20;  // rows beyond this loop inside the blocks
  const unsigned blocks = static_cast<unsigned>(a.rows < max_blocks ? a.rows : max_blocks);
  return launch_after_wait(hadamard_kernel<T, kM, kFast>, dim3(blocks), dim3(static_cast<unsigned>(threads)),
                           smem, stream, a);
}

template <ssmkit_dtype T, bool kFast>
status launch_hadamard_m(int m, const had_args& a, int threads, size_t smem, cudaStream_t stream) {
  switch (m) {
    case 12: return launch_hadamard<T, 12, kFast>(a, threads, smem, stream);
    case 20: return launch_hadamard<T, 20, kFast>(a, threads, smem, stream);
    case 28: return launch_hadamard<T, 28, kFast>(a, threads, smem, stream);
    case 40: return launch_hadamard<T, 40, kFast>(a, threads, smem, stream);
    default: return launch_hadamard<T, 1, kFast>(a, threads, smem, stream);
  }
}

}  // namespace

status hadamard_cuda(const hadamard_params& p, void* stream) {
  int m = 1;
  int64_t pow2 = 1;
  if (!hadamard_factor(p.n, &m, &pow2)) {
    return make_status(status_code::value,
                       "hadamard: x: expected a last dimension of 2^k or 12, 20, 28, 40 times 2^k, got %lld",
                       static_cast<long long>(p.n));
  }
  if (p.n > kMaxSharedRow) {
    return make_status(status_code::unsupported,
                       "hadamard: x: rows longer than %lld are not supported on CUDA",
                       static_cast<long long>(kMaxSharedRow));
  }
  if (p.rows == 0) return ok_status();
  static const bool tables_ok =
      table_matches<12>() && table_matches<20>() && table_matches<28>() && table_matches<40>();
  if (!tables_ok)
    return make_status(status_code::internal, "hadamard: CUDA H_m tables differ from the CPU's");

  had_args a{};
  a.x = p.x.data;
  a.out = p.out.data;
  a.rows = p.rows;
  a.n = static_cast<int>(p.n);
  a.log_p = 0;
  while ((int64_t{1} << a.log_p) < pow2) ++a.log_p;
  a.scale = p.scale;
  const bool aligned =
      reinterpret_cast<uintptr_t>(p.x.data) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out.data) % 16 == 0;
  const bool fast = a.log_p >= 3 && aligned;
  int threads;
  if (fast) {
    a.nv = a.n / 8;
    // nv = m * 2^j: halve while above the cap (an even split of the slots), then round up to warps.
    threads = a.nv;
    while (threads > kMaxThreads && threads % 2 == 0) threads /= 2;
  } else {
    a.nv = 0;
    threads = static_cast<int>(std::max<int64_t>(p.n / 2, 2 * pow2));
  }
  threads = std::min(kMaxThreads, (threads + 31) / 32 * 32);
  const bool direct = fast && m == 1 && a.log_p <= 8;
  const size_t smem = direct ? 0 : static_cast<size_t>(p.n) * sizeof(float);
  if (smem > 48 * 1024) {
    int dev = 0, optin = 0;
    SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (smem > static_cast<size_t>(optin)) {
      return make_status(status_code::unsupported,
                         "hadamard: x: rows longer than %d are not supported on this GPU", optin / 4);
    }
  }
  const auto s = static_cast<cudaStream_t>(stream);
  if (fast && m == 40 && a.log_p >= 6 && a.log_p <= 8) {
    return SSMKIT_FLOAT_SWITCH(p.x.dtype, "hadamard", [&] {
      switch (a.log_p) {
        case 6: return launch_hadamard40<kDType, 6>(a, s);
        case 7: return launch_hadamard40<kDType, 7>(a, s);
        default: return launch_hadamard40<kDType, 8>(a, s);
      }
    });
  }
  return SSMKIT_FLOAT_SWITCH(p.x.dtype, "hadamard", [&] {
    return fast ? launch_hadamard_m<kDType, true>(m, a, threads, smem, s)
                : launch_hadamard_m<kDType, false>(m, a, threads, smem, s);
  });
}

status quantize_h40_cuda(const quantize_params& p, float rot_scale, void* stream, bool* launched) {
  *launched = false;
  int m = 1;
  int64_t pow2 = 1;
  if (!p.hadamard || p.lines <= 0 || !hadamard_factor(p.len, &m, &pow2) || m != 40 || pow2 < 64 ||
      pow2 > 256 || (p.bits != 8 && p.bits != 4) || p.granularity == QUANT_GROUP ||
      (!p.static_scale && p.granularity != QUANT_TOKEN) || !env_flag("SSMKIT_CUDA_QUANT_H40", true))
    return ok_status();
  // The kernel's 16-byte loads of x and, for 8 bits, 2-byte stores of q pairs (rows of 40 p values keep
  // every row start as aligned as the base).
  if (reinterpret_cast<uintptr_t>(p.x.data) % 16 != 0 ||
      (p.bits == 8 && reinterpret_cast<uintptr_t>(p.q.data) % 2 != 0))
    return ok_status();
  static const bool tables_ok = table_matches<40>();
  if (!tables_ok)
    return make_status(status_code::internal, "quantize: CUDA's H_40 table differs from the CPU's");
  had_args a{};
  a.x = p.x.data;
  a.rows = p.lines;
  a.n = static_cast<int>(p.len);
  a.log_p = pow2 == 64 ? 6 : pow2 == 128 ? 7 : 8;
  a.scale = rot_scale;
  had_quant hq{};
  hq.q = p.q.data;
  hq.scale = p.scale.data;
  hq.scale_dt = p.scale.dtype;
  hq.bits = p.bits;
  hq.dynamic = !p.static_scale;
  hq.per_scale = p.granularity == QUANT_TENSOR    ? p.lines
                 : p.granularity == QUANT_CHANNEL ? std::max<int64_t>(1, p.lines_per_channel)
                                                  : 1;
  const auto s = static_cast<cudaStream_t>(stream);
  SSMKIT_RETURN_IF_ERROR(SSMKIT_FLOAT_SWITCH(p.x.dtype, "quantize", [&] {
    switch (a.log_p) {
      case 6: return launch_hadamard40<kDType, 6, true>(a, s, hq);
      case 7: return launch_hadamard40<kDType, 7, true>(a, s, hq);
      default: return launch_hadamard40<kDType, 8, true>(a, s, hq);
    }
  }));
  *launched = true;
  return ok_status();
}

}  // namespace ssmkit
