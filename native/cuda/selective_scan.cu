// CUDA kernels of the selective-scan family: the Mamba-1 selective scan, its one-step decode update (the
// Mamba-1 and the multi-head form), the Mamba-2 SSD scan, and the depthwise causal convolution with its
// streaming update. The params structs are the CPU kernels' (ssmkit/selective_scan.h).
//
// Variants. selectiveScan at dstate <= 32 (Mamba-1's 16) runs scan1_kernel, with a time-parallel
// two-pass form for few channels and long sequences (its design is with it below). Every other scan runs
// the generic scan_fwd_kernel, templated on the states each thread holds (kS), constant or variable B
// and C, a per-state or per-head A (kScalarA: the SSD scan) and the layout of x/u (kTimeMajor: SSD's
// (batch, seqlen, heads, headdim) against Mamba-1's (batch, dim, seqlen)). The SSD scan is the selective
// scan with dim = heads * headdim, dt and A per head, and B and C per group; its result does not depend
// on chunkSize (the CPU kernel uses it as a working-set size only). For bfloat16 at Mamba-2's shapes
// (headdim <= 64, dstate <= 128, multiples of 8; x, B, C and z 16-byte aligned) ssd_tc_kernel runs the
// chunked SSD algorithm on tensor cores instead (its design is with it below). Every other flag (softplus, z,
// D, biases, initial and last state, seqIdx) is a run-time branch outside the state loop; every float input
// may have its own dtype (float32, float16, bfloat16), read by a uniform switch in the load code. Environment
// knobs for tests and benchmarks: SSMKIT_CUDA_SCAN_{POLY,CHUNKS,LANES,TYPED} (scan1_kernel),
// SSMKIT_CUDA_SCAN_STATES (forces the generic kernel), SSMKIT_CUDA_SSD=exact|scalar|lean (the sequential SSD
// scan, the tensor-core SSD kernel's earlier form, its lean form; the default is its shared-M form on sm_90,
// which SSMKIT_CUDA_SSD=shared asks for elsewhere), SSMKIT_CUDA_SSD_SEGS=n (the time segments of its
// sequences, 1 .. 8),
// SSMKIT_CUDA_UPDATE_TILE=1|4|8 (the decode update's batch elements a thread), SSMKIT_CUDA_UPDATE_PDL=0 (the
// update launched without programmatic dependent launch).
//
// Assumptions: tensors are contiguous; lib/ops/scan.ts has checked shapes, dtypes, that seqIdx is
// non-decreasing and that state indices are distinct (their values live on the device, so the kernels
// treat an index outside [0, state batch) as padding rather than read out of bounds).
//
// Design of the generic scan: each channel's recurrence runs sequentially over time inside its threads,
// with no scan across threads. A channel's dstate states are split over `lanes` threads of kS states
// each; a block of 128 threads holds 128 / lanes channels of one batch row and one B/C group. Time goes
// in tiles of 16 steps: the block stages dt, dt*u and D*u of its channels, the B and C rows of the tile
// and a seqIdx reset mask into shared memory; each thread then runs the 16 steps with its states, and
// the block sums the lanes' partial y, adds D*u, gates with silu(z) and stores the tile. Measured on the
// H200 at the Mamba-1 bf16 shape (batch 8, dim 5120, seqlen 2048): 2.45 ms, latency-bound (126
// registers, 25% occupancy, 1.21 waves, ~20 instructions per state update, global loads not prefetched).
//
// The decode update (selective_state_update_vec_kernel, dstate % 4 == 0 and <= 128) is one row (head,
// headdim element) per group of dstate / 4 threads holding float4 pieces of the row's state, for 1, 4 or
// 8 batch elements a thread (by the work's size; SSMKIT_CUDA_UPDATE_TILE forces one) with all loads issued
// first, the tiled forms' state staged in shared memory by cp.async, launched with programmatic dependent
// launch on sm_90; other dstates take the plain loop kernel. causal_conv1d_kernel gives each thread 8 steps
// of one channel with the width-1 history, weights in registers, 16-byte loads and stores; the streaming
// update is one thread per (batch, channel).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "bits.cuh"
#include "cuda_check.cuh"
#include "env.cuh"
#include "pdl.cuh"
#include "ssmkit/selective_scan.h"

namespace ssmkit {
namespace {

constexpr float kLog2e = 1.44269504088896341f;
// softplus(x) = x above this, as in mamba_ssm and the CPU kernels.
constexpr float kSoftplusThreshold = 20.0f;

// ------------------------------------------------------------------------------------------------------
// Element access with a run-time dtype (float32, float16, bfloat16; anything else reads as bfloat16, the
// entry points having checked the dtypes).

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float softplus(float x) {
  return x > kSoftplusThreshold ? x : log1pf(expf(x));
}

__device__ __forceinline__ float load_any(const void* p, int dt, int64_t i) {
  if (dt == SSMKIT_DTYPE_F32) return static_cast<const float*>(p)[i];
  const unsigned short bits = static_cast<const unsigned short*>(p)[i];
  if (dt == SSMKIT_DTYPE_F16) return __half2float(__ushort_as_half(bits));
  return __bfloat162float(__ushort_as_bfloat16(bits));
}

__device__ __forceinline__ void store_any(void* p, int dt, int64_t i, float v) {
  if (dt == SSMKIT_DTYPE_F32) {
    static_cast<float*>(p)[i] = v;
  } else if (dt == SSMKIT_DTYPE_F16) {
    static_cast<unsigned short*>(p)[i] = __half_as_ushort(__float2half_rn(v));
  } else {
    static_cast<unsigned short*>(p)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

__device__ __forceinline__ void unpack2(unsigned w, int dt, float& lo, float& hi) {
  if (dt == SSMKIT_DTYPE_F16) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w));
    lo = f.x;
    hi = f.y;
  } else {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
  }
}

__device__ __forceinline__ unsigned pack2(float lo, float hi, int dt) {
  if (dt == SSMKIT_DTYPE_F16) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
  }
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

// v[e] = p[off + e * stride] for e < n, 0 beyond: one (16-bit types) or two (float32) 16-byte loads when
// all 8 elements are present and contiguous and the address is 16-byte aligned, scalar loads otherwise
// (row tails, rows whose byte stride is not a multiple of 16).
__device__ __forceinline__ void load8(const void* p, int dt, int64_t off, int64_t stride, int n,
                                      float (&v)[8]) {
  const int64_t es = dt == SSMKIT_DTYPE_F32 ? 4 : 2;
  const char* a = static_cast<const char*>(p) + off * es;
  if (n == 8 && stride == 1 && (reinterpret_cast<uintptr_t>(a) & 15) == 0) {
    if (dt == SSMKIT_DTYPE_F32) {
      const float4 x = reinterpret_cast<const float4*>(a)[0];
      const float4 y = reinterpret_cast<const float4*>(a)[1];
      v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w, v[4] = y.x, v[5] = y.y, v[6] = y.z, v[7] = y.w;
    } else {
      const uint4 r = *reinterpret_cast<const uint4*>(a);
      unpack2(r.x, dt, v[0], v[1]);
      unpack2(r.y, dt, v[2], v[3]);
      unpack2(r.z, dt, v[4], v[5]);
      unpack2(r.w, dt, v[6], v[7]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = e < n ? load_any(p, dt, off + e * stride) : 0.0f;
  }
}

// p[off + e * stride] = v[e] for e < n, vectorized under the same conditions as load8.
__device__ __forceinline__ void store8(void* p, int dt, int64_t off, int64_t stride, int n,
                                       const float (&v)[8]) {
  const int64_t es = dt == SSMKIT_DTYPE_F32 ? 4 : 2;
  char* a = static_cast<char*>(p) + off * es;
  if (n == 8 && stride == 1 && (reinterpret_cast<uintptr_t>(a) & 15) == 0) {
    if (dt == SSMKIT_DTYPE_F32) {
      reinterpret_cast<float4*>(a)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(a)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      *reinterpret_cast<uint4*>(a) = make_uint4(pack2(v[0], v[1], dt), pack2(v[2], v[3], dt),
                                                pack2(v[4], v[5], dt), pack2(v[6], v[7], dt));
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (e < n) store_any(p, dt, off + e * stride, v[e]);
    }
  }
}

__device__ __forceinline__ float component(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// ------------------------------------------------------------------------------------------------------
// The scan (selectiveScan and ssdScan).

constexpr int kScanThreads = 128;
// Four resident blocks per SM (16 warps, at most 128 registers a thread): enough warps per SM
// sub-partition to keep the SFU busy, and the kS = 16 kernel fits in 128 registers without spills.
constexpr int kScanMinBlocks = 4;
// Time steps staged per tile: a multiple of 8 (16-byte vectors of 16-bit types) and of 4 (float4 reads).
constexpr int kScanSteps = 16;
// Row pitch of the per-channel tiles: 20 words puts the float4 reads of 8 consecutive rows (one
// quarter-warp) on distinct banks.
constexpr int kRow = kScanSteps + 4;

// Everything the scan kernel reads, with the layouts of both ops expressed as strides.
struct scan_args {
  const void* u;  // u/x, z and out share one layout: b * x_sb + c * x_sc + t * x_st
  const void* delta;
  const void* z;
  void* out;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const float* delta_bias;
  const float* h0;         // (batch, dim, dstate)
  float* hT;               // (batch, dim, dstate)
  const int32_t* seq_idx;  // (batch, seqlen)
  int u_dt, delta_dt, z_dt, out_dt, b_dt, c_dt;
  int64_t dim, seqlen, dstate;
  int64_t x_sb, x_sc, x_st;
  int64_t dt_sb, dt_sc, dt_st, dt_div;    // channel c reads delta row c / dt_div
  int64_t a_div, a_sr, a_sn;              // A[(c / a_div) * a_sr + n * a_sn]
  int64_t d_div, bias_div;                // D[c / d_div], delta_bias[c / bias_div]
  int64_t b_sb, b_sg, b_sn, b_st, b_cpg;  // variable B: b * sb + g * sg + n * sn + t * st, g = c / cpg
  int64_t c_sb, c_sg, c_sn, c_st, c_cpg;
  int64_t seg_len;         // channels of one B/C group (blocks never straddle two)
  int64_t nseg;            // dim / seg_len
  int64_t blocks_per_seg;  // ceil(seg_len / chans)
  int lanes;               // threads per channel
  int chans;               // channels per block: kScanThreads / lanes
  bool softplus;
  bool dt_nonneg;  // clamp dt at 0 (SSD: mamba_chunk_scan_combined's default dt_limit)
};

// Shared-memory layout of the scan kernel, in floats; the host sizes the launch with the same function.
struct scan_smem {
  int brow;  // pitch of the B/C tiles: the padded dstate + 4 (16-byte aligned rows, no bank aliasing)
  int dt, dtu, du, y, rb, b, c, total;
};

__host__ __device__ inline scan_smem scan_layout(int chans, int npad, bool var_b, bool var_c) {
  scan_smem s;
  s.brow = npad + 4;
  s.dt = 0;                                       // (chans, kRow): dt, or exp(dt A) for a per-head A
  s.dtu = s.dt + chans * kRow;                    // (chans, kRow): dt * u
  s.du = s.dtu + chans * kRow;                    // (2, chans, kRow): D * u, double-buffered
  s.y = s.du + 2 * chans * kRow;                  // (kScanThreads, kRow): each thread's partial y
  s.rb = s.y + kScanThreads * kRow;               // (kScanSteps,): -inf where a new sequence starts
  s.b = s.rb + kScanSteps;                        // (kScanSteps, brow) when B is variable
  s.c = s.b + (var_b ? kScanSteps * s.brow : 0);  // (kScanSteps, brow) when C is variable
  s.total = s.c + (var_c ? kScanSteps * s.brow : 0);
  return s;
}

// kVec consecutive floats of a B/C row in shared memory, in one vector read.
template <int kVec>
__device__ __forceinline__ void load_states(const float* p, float (&v)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 x = *reinterpret_cast<const float4*>(p);
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
  } else if constexpr (kVec == 2) {
    const float2 x = *reinterpret_cast<const float2*>(p);
    v[0] = x.x, v[1] = x.y;
  } else {
    v[0] = p[0];
  }
}

__device__ __forceinline__ bool starts_sequence(const int32_t* seq, int64_t t) {
  return seq != nullptr && t > 0 && seq[t] != seq[t - 1];
}

template <int kS, bool kVarB, bool kVarC, bool kScalarA, bool kTimeMajor>
__global__ void __launch_bounds__(kScanThreads, kScanMinBlocks) scan_fwd_kernel(const scan_args a) {
  constexpr int kVec = kS < 4 ? kS : 4;  // states per shared-memory vector read
  constexpr int kQ = kS / kVec;
  constexpr int kSegs = kScanSteps / 8;  // 8-step vectors per channel and tile (Mamba-1 layout)
  extern __shared__ __align__(16) float smem[];
  const int P = a.lanes, CH = a.chans;
  const scan_smem lay = scan_layout(CH, P * kS, kVarB, kVarC);
  float* s_dt = smem + lay.dt;
  float* s_dtu = smem + lay.dtu;
  float* s_du = smem + lay.du;
  float* s_y = smem + lay.y;
  float* s_rb = smem + lay.rb;
  float* s_b = smem + lay.b;
  float* s_c = smem + lay.c;

  const int tid = threadIdx.x;
  const int64_t blk = blockIdx.x;
  const int64_t bi = blk % a.blocks_per_seg;
  const int64_t seg = (blk / a.blocks_per_seg) % a.nseg;
  const int64_t b = blk / a.blocks_per_seg / a.nseg;
  const int64_t c0 = seg * a.seg_len + bi * CH;                     // first channel of the block
  const int cn = static_cast<int>(min64(CH, a.seg_len - bi * CH));  // its valid channels
  const int64_t L = a.seqlen, N = a.dstate, dim = a.dim;
  const int32_t* seq = a.seq_idx != nullptr ? a.seq_idx + b * L : nullptr;
  const int64_t gb = kVarB ? c0 / a.b_cpg : 0;
  const int64_t gc = kVarC ? c0 / a.c_cpg : 0;

  // This thread's channel and states. Threads of channels past the end compute on zeros, store nothing.
  const int cl = tid / P, lane = tid % P;
  const bool active = cl < cn;
  const int64_t c = c0 + (active ? cl : 0);
  float h[kS], a2[kS], bk[kS], ck[kS];
  // Every state's loads out before any value is used (ld_bits): one round trip, not one a state.
  uint32_t bb[kS], cb[kS];
#pragma unroll
  for (int q = 0; q < kQ; ++q) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const int i = q * kVec + e;
      const int64_t n = kVec * (lane + static_cast<int64_t>(P) * q) + e;
      const bool ok = n < N;
      h[i] = ok && active && a.h0 != nullptr ? a.h0[(b * dim + c) * N + n] : 0.0f;
      a2[i] = !kScalarA && ok ? a.A[(c / a.a_div) * a.a_sr + n * a.a_sn] : 0.0f;
      bb[i] = !kVarB && ok ? ld_bits(a.B, a.b_dt, c * N + n) : 0u;
      cb[i] = !kVarC && ok ? ld_bits(a.C, a.c_dt, c * N + n) : 0u;
    }
  }
#pragma unroll
  for (int i = 0; i < kS; ++i) {
    a2[i] *= kLog2e;
    bk[i] = bits_value(a.b_dt, bb[i]);
    ck[i] = bits_value(a.c_dt, cb[i]);
  }

  // 8-element vectors of a tile: along time for Mamba-1 (8 steps of one channel), along channels for SSD
  // (8 channels of one step), so that consecutive threads read consecutive 16-byte pieces.
  const int nvec = kTimeMajor ? kScanSteps * (CH / 8) : CH * kSegs;
  const int64_t xstride = kTimeMajor ? a.x_sc : a.x_st;
  auto vec_of = [&](int it, int64_t t0, int& vc, int& vt, int& n) {
    if (kTimeMajor) {
      vt = it / (CH / 8);
      vc = (it % (CH / 8)) * 8;
      n = t0 + vt < L ? max(0, min(8, cn - vc)) : 0;
    } else {
      vc = it / kSegs;
      vt = (it % kSegs) * 8;
      n = vc < cn ? static_cast<int>(max64(0, min64(8, L - t0 - vt))) : 0;
    }
  };

  // Stages tile t0: dt, dt*u and D*u per element, the seqIdx mask, and the B/C rows.
  auto stage = [&](int64_t t0, int buf) {
    for (int it = tid; it < nvec; it += kScanThreads) {
      int vc, vt, n;
      vec_of(it, t0, vc, vt, n);
      const int64_t cc = c0 + vc, tt = t0 + vt;
      float u[8], d[8];
      load8(a.u, a.u_dt, b * a.x_sb + cc * a.x_sc + tt * a.x_st, xstride, n, u);
      if (!kTimeMajor && a.dt_div == 1) {
        load8(a.delta, a.delta_dt, b * a.dt_sb + cc * a.dt_sc + tt * a.dt_st, a.dt_st, n, d);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const int64_t ce = cc + (kTimeMajor ? e : 0), te = tt + (kTimeMajor ? 0 : e);
          d[e] = e < n ? load_any(a.delta, a.delta_dt, b * a.dt_sb + (ce / a.dt_div) * a.dt_sc + te * a.dt_st)
                       : 0.0f;
        }
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int lc = vc + (kTimeMajor ? e : 0), lt = vt + (kTimeMajor ? 0 : e);
        const int64_t ce = c0 + lc, te = t0 + lt;
        // Steps past the end keep the state as it is: decay 1, input 0.
        float dec = kScalarA ? 1.0f : 0.0f, dtu = 0.0f, du = 0.0f;
        if (e < n) {
          float x = d[e] + (a.delta_bias != nullptr ? a.delta_bias[ce / a.bias_div] : 0.0f);
          if (a.softplus) x = softplus(x);
          if (a.dt_nonneg) x = x < 0.0f ? 0.0f : x;  // keeps a NaN
          dtu = x * u[e];
          du = a.D != nullptr ? a.D[ce / a.d_div] * u[e] : 0.0f;
          if (kScalarA) {
            dec = starts_sequence(seq, te) ? 0.0f : ex2_approx(x * a.A[ce / a.a_div] * kLog2e);
          } else {
            dec = x;
          }
        }
        s_dt[lc * kRow + lt] = dec;
        s_dtu[lc * kRow + lt] = dtu;
        s_du[(buf * CH + lc) * kRow + lt] = du;
      }
    }
    if (!kScalarA && tid < kScanSteps) {
      s_rb[tid] = t0 + tid < L && starts_sequence(seq, t0 + tid) ? -INFINITY : 0.0f;
    }
    const int npad = P * kS, brow = lay.brow, total = kScanSteps * npad;
    if (kVarB) {
      for (int i = tid; i < total; i += kScanThreads) {
        const int n = a.b_st == 1 ? i / kScanSteps : i % npad;
        const int lt = a.b_st == 1 ? i % kScanSteps : i / npad;
        const int64_t te = t0 + lt;
        s_b[lt * brow + n] = n < N && te < L
                                 ? load_any(a.B, a.b_dt, b * a.b_sb + gb * a.b_sg + n * a.b_sn + te * a.b_st)
                                 : 0.0f;
      }
    }
    if (kVarC) {
      for (int i = tid; i < total; i += kScanThreads) {
        const int n = a.c_st == 1 ? i / kScanSteps : i % npad;
        const int lt = a.c_st == 1 ? i % kScanSteps : i / npad;
        const int64_t te = t0 + lt;
        s_c[lt * brow + n] = n < N && te < L
                                 ? load_any(a.C, a.c_dt, b * a.c_sb + gc * a.c_sg + n * a.c_sn + te * a.c_st)
                                 : 0.0f;
      }
    }
  };

  // Writes tile t0: the lanes' partial y summed, plus D*u, gated by silu(z).
  auto emit = [&](int64_t t0, int buf) {
    for (int it = tid; it < nvec; it += kScanThreads) {
      int vc, vt, n;
      vec_of(it, t0, vc, vt, n);
      if (n == 0) continue;
      const int64_t off = b * a.x_sb + (c0 + vc) * a.x_sc + (t0 + vt) * a.x_st;
      float zv[8], o[8];
      if (a.z != nullptr) load8(a.z, a.z_dt, off, xstride, n, zv);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int lc = vc + (kTimeMajor ? e : 0), lt = vt + (kTimeMajor ? 0 : e);
        float y = s_du[(buf * CH + lc) * kRow + lt];
        for (int l = 0; l < P; ++l) y += s_y[(lc * P + l) * kRow + lt];
        o[e] = a.z != nullptr ? y * silu(zv[e]) : y;
      }
      store8(a.out, a.out_dt, off, xstride, n, o);
    }
  };

  // The recurrence over one staged tile. Lanes of a channel read the same dt row (broadcast) and
  // adjacent pieces of each B/C row.
  auto run = [&]() {
    const float* dtr = s_dt + cl * kRow;
    const float* dur = s_dtu + cl * kRow;
    float* yr = s_y + tid * kRow;
#pragma unroll
    for (int t4 = 0; t4 < kScanSteps; t4 += 4) {
      const float4 dv = *reinterpret_cast<const float4*>(dtr + t4);
      const float4 uv = *reinterpret_cast<const float4*>(dur + t4);
      const float4 rv =
          kScalarA ? make_float4(0.f, 0.f, 0.f, 0.f) : *reinterpret_cast<const float4*>(s_rb + t4);
      float y[4];
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const float dt = component(dv, s), dtu = component(uv, s), rb = component(rv, s);
        const float* br = s_b + (t4 + s) * lay.brow + kVec * lane;
        const float* cr = s_c + (t4 + s) * lay.brow + kVec * lane;
        float acc = 0.0f;
#pragma unroll
        for (int q = 0; q < kQ; ++q) {
          float bv[kVec], cv[kVec];
          if constexpr (kVarB) {
            load_states<kVec>(br + kVec * P * q, bv);
          } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) bv[e] = bk[q * kVec + e];
          }
          if constexpr (kVarC) {
            load_states<kVec>(cr + kVec * P * q, cv);
          } else {
#pragma unroll
            for (int e = 0; e < kVec; ++e) cv[e] = ck[q * kVec + e];
          }
#pragma unroll
          for (int e = 0; e < kVec; ++e) {
            const int i = q * kVec + e;
            // A new sequence (rb = -inf) makes the decay 0, which drops the previous state.
            const float decay = kScalarA ? dt : ex2_approx(fmaf(dt, a2[i], rb));
            h[i] = fmaf(decay, h[i], dtu * bv[e]);
            acc = fmaf(h[i], cv[e], acc);
          }
        }
        y[s] = acc;
      }
      *reinterpret_cast<float4*>(yr + t4) = make_float4(y[0], y[1], y[2], y[3]);
    }
  };

  int buf = 0;
  for (int64_t t0 = 0; t0 < L; t0 += kScanSteps) {
    stage(t0, buf);
    if (t0 > 0) emit(t0 - kScanSteps, buf ^ 1);
    __syncthreads();
    run();
    __syncthreads();
    buf ^= 1;
  }
  if (L > 0) emit((L - 1) / kScanSteps * kScanSteps, buf ^ 1);

  if (a.hT != nullptr && active) {
#pragma unroll
    for (int q = 0; q < kQ; ++q) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const int64_t n = kVec * (lane + static_cast<int64_t>(P) * q) + e;
        if (n < N) a.hT[(b * dim + c) * N + n] = h[q * kVec + e];
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// The Mamba-1 scan (selectiveScan with dstate <= 32): scan1_kernel.
//
// Each thread holds kS states of one channel; kP threads (adjacent lanes) share a channel, so a block
// holds scan1_threads(kP, kS) / kP channels of one batch row and one B/C group. The forms: 1 x 8
// (dstate <= 8, 128 threads), 2 x 8 (8 < dstate <= 16, Mamba-1's shape, 128 threads), 4 x 8 (<= 32,
// 128 threads), and 1 x 16 (8 < dstate <= 16, 64 threads; slower, kept behind SSMKIT_CUDA_SCAN_LANES=1
// for benchmarks and tests, see below). Time goes in sub-tiles of 8 steps. Per sub-tile, lane l of a
// channel loads the raw u, delta and z of steps [8 l / kP, 8 (l + 1) / kP) straight from global memory
// with one vector load each (issued one sub-tile ahead, into registers), computes dt (bias, softplus),
// dt * u and D * u for those steps, and with kP > 1 the lanes of the channel all-gather dt and dt * u
// with shuffles: the per-(channel, step) work (one MUFU for softplus, two for silu) is done once per
// channel, not once per thread. The 8 steps then run with every operand in registers except B and C,
// which the block stages per 16-step tile in shared memory as float rows (step, state) (loaded one tile
// ahead, one barrier per tile); a thread reads its kS states of a row with kS / 4 16-byte loads (at
// kP = 1 all lanes of a warp read one address: a broadcast). With kP > 1 the partial y of the lanes are
// summed with a reduce-scatter (each lane ends with the sums of its own steps); then each lane gates and
// stores its steps with one vector store.
//
// Cost per (step, state) and thread: FFMA (dt A log2 e, plus -inf at a sequence start), MUFU.EX2, FMUL
// (dt u B), FFMA (h), FFMA (y), and kS / 4 x 2 shared loads for kS states (half a load a state): 5.5 issue
// slots and 8 cycles of the SMSP's MUFU pipe per warp instruction (16 ex2 per clock per SM). `poly` of a
// thread's states take their exp2 on the FMA pipe instead (exp2_fma: ~12 issue slots, no MUFU); the
// default is 0 (SSMKIT_CUDA_SCAN_POLY forces 1 or 2).
//
// Measurements (H200; bf16 batch 8 x dim 5120 x seqlen 2048, dstate 16, var B/C, z, D, softplus).
// - Main at b1a0dbe (2 x 8, poly 1, the 14-instruction softplus): 760 us under Nsight, 543M warp
//   instructions for 41.9M warp-(step, state) updates, i.e. 13 issue slots a state where the state loop
//   needs 5.5 (+1.5 at poly 1); issue slots 69% busy, the MUFU (XU) pipe 50%: bound by issue, with the
//   time in the per-thread, per-step work around the state loop (the dt / dt u all-gather, 16 SHFL a
//   sub-tile; the reduce-scatter of y; the per-(channel, step) softplus, silu, unpacking and D u; the
//   loop, address and staging code), paid over only 8 states a thread.
// - softplus_fast at 6 instructions (from ~14; ~8 fewer slots per (channel, step), 0.5 a state), one run
//   at 97d77b8: 2 x 8 at poly 1 740 us, at poly 0 702 us (f32 807 / 793 us, batch 1 x seqlen 16384
//   1363 / 1330 us). With fewer instructions the FMA-pipe exp2 no longer pays: poly 0 is the default.
//   That softplus lost the relative accuracy of small steps (the golden Mamba model's CUDA logits left
//   their tolerance in the merged run: 689 us there), so the series form came back (softplus_fast
//   below, now the decode update's; the scan takes softplus_poly, one MUFU with the same accuracy).
// - The 1 x 16 form (predicted 480-600 us from ~9.5 slots a state, no shuffles): 408.6M instructions
//   (9.75 a state, as counted) but 970 us at poly 0, 975 us under Nsight with 40% of issue slots busy.
//   Its 168 registers and 64-thread blocks leave 2.36 warps an SMSP (against 4.85), and those stall
//   (5.1 cycles between a warp's issues, 0.70 eligible warps a cycle): the 16 independent state chains
//   a thread do not hide the MUFU and shared-load latencies that the 2 x 8 form's extra warps do. f32
//   1458 us (2 x 8: 793), batch 1 x seqlen 16384 1788 us (1330). So 2 x 8 stays the default.
// Registers (-Xptxas -v, sm_90a; sm_80 and sm_89 alike): 2 x 8 and 4 x 8 96 (the variable-B/C forms
// spill 4-16 bytes; b1a0dbe's spilled too), 1 x 8 125-128, 1 x 16 164-168 (32 bytes with variable B only).
//
// The typed form (kDt >= 0; 2 x 8 only; the default where it applies, SSMKIT_CUDA_SCAN_TYPED=0 keeps the
// run-time form): when u, delta, out, z and variable B/C share one dtype, seqlen % 8 == 0 and the rows
// are 16-byte aligned (a.vec), the kernel is compiled for that dtype with vector loads and whole 8-step
// sub-tiles known at compile time, with the FMA-pipe exp2 count as a template argument (kTPoly: 0, or 1
// with SSMKIT_CUDA_SCAN_POLY=1: 2637 instructions and 272 MUFU a tile against 2315 and 304; measured slower,
// d16446c: bf16 633.8 us against 592.1 at poly 0, float32 696.6 against 669.1, batch 1 x seqlen 16384
// 1143.0 against 1089.5, so poly 0 stays the default and poly 1 a knob for the A/B), and with 32-step
// B/C tiles (kS1TypedTile: half the barriers and staging code a step; chunks are then whole 32-step tiles).
// The run-time form pays for its generality inside the sub-tile: the dtype switches of every load, unpack and
// store, the scalar-tail paths and their predicates, and three inlined copies of the sub-tile (one per poly
// count; ~104 KB of code, 0.36 cycles an issue waiting on instruction fetch in the profile). Counted in the
// SASS (sm_90a, bf16, variable B/C, the tile loop with z and softplus): 1224 instructions per 16-step tile
// and thread with 16-step tiles, 2331 per 32-step tile (9.1 a (state, step)), against 13 a (state, step)
// measured for the run-time form. Expected: issue -30%, so ~510-550 us at the benchmark shape if issue stays
// ~70% busy; the MUFU pipe then bounds it (20 MUFU a (channel, step): 16 ex2 of the decays, 2 for softplus, 2
// for silu; 8 cycles a warp instruction: ~405 us at 100%). Measured (H200, 21fb7d2, typed and run-time forms
// alternated in one run): bf16 613.5-621.0 us against 720.9-721.6, float32 670.4-672.4 against 787.4-792.7,
// batch 1 x seqlen 16384 1236-1241 against 1350-1357; under Nsight 597.4 us, 381.1M warp instructions (9.1 a
// (state, step), as counted), issue slots 61.7% busy, the XU (MUFU) pipe 70.4%, stalls per issue: MIO
// throttle 1.09 (the MUFU queue with the shared loads and shuffles), short scoreboard 0.88, fixed-latency
// waits 0.91, instruction fetch 0.03 (0.36 before). So the MUFU queue is now what waits: softplus takes one
// MUFU operation (softplus_poly): 19 a (channel, step), 2315 instructions a 32-step tile, expected ~3-5% less
// time; measured (5dcd8c5) 1-2% less: bf16 594.8 us (typed rows 607.7-612.2 against 711.1-716.6 for the
// run-time form), float32 653.2, batch 1 x seqlen 16384 1086.9 (with the chunk model below); under Nsight
// 592.3 us, 378.5M instructions, issue 62.0% busy, XU 67.9%, stalls per issue: MIO throttle 0.99, short
// scoreboard 0.88, fixed-latency waits 1.00 (the polynomial's 9-deep chain). Still 1.5x the MUFU bound (~385
// us) with neither issue nor the MUFU pipe saturated: each warp waits on its MUFU and shared-load results and
// on the MIO queue, with 3.9 of 5 warps a scheduler active. Tried in the SASS and not kept: one y accumulator
// a step (-29 instructions a tile, a spill in the loop), staging addresses hoisted out of the tile loop (-20
// a 16-step tile, ~40 more lines), silu with one MUFU (exp(-|z|), then 1 / (1 + t) by a quadratic seed and
// two Newton steps: +144 instructions a tile for -16 MUFU), the 4 x 4 form (48 registers for 10 blocks an SM:
// 72 bytes of spill, 12.2 instructions a (state, step)).
//
// Time-parallel variant (few channels, long sequences: batch 1). The sequence is cut into K chunks. Pass
// 1 (kLocal) runs chunks 0 .. K-2 from a zero state without C, y or outputs, and stores each chunk's end
// state and total decay exp2(A log2 e sum dt) (0 if a sequence starts inside); pass 2 is this kernel as
// usual, each chunk first folding the chunk states before it into its true initial state (K-1 FMAs a
// state at most). The chunks cost ~1.75x the exps of one pass, against 10x more threads in flight: with
// one pass MUFU-bound at ~385 us at this many (state, step)s, two passes cannot reach 600 us at batch 1
// x seqlen 16384 (~1.75 x 385 = 675 us at a full MUFU pipe); that needs fewer exps, not tuning.
constexpr int kS1Sub = 8;    // steps per sub-tile (one 16-byte vector of a 16-bit type)
constexpr int kS1Tile = 16;  // steps per staged B/C tile (one barrier per tile)
// The typed form's tile: half the barriers and staging code a step, in 10.5 KB of shared memory.
constexpr int kS1TypedTile = 32;
// Five resident blocks per SM: the 640 blocks of the batch-8 shape then run in one wave (4.85 blocks an
// SM on average, 5 on the busiest). At 128-thread blocks that caps registers at 102; the 64-thread blocks
// of the 16-state form may take up to 204 (it uses 168: 6 blocks an SM).
constexpr int kS1MinBlocks = 5;

// Threads of a block for kP threads a channel of kS states each: 64 for the one-thread 16-state form
// (64 channels a block: the same 640 blocks at batch 8 as 2 x 8 states in 128 threads), 128 otherwise.
constexpr int scan1_threads(int kP, int kS) {
  return kP == 1 && kS == 16 ? 64 : 128;
}

struct scan1_args {
  const void* u;      // (batch, dim, L)
  const void* delta;  // (batch, dim, L)
  const void* z;      // (batch, dim, L), optional
  void* out;          // (batch, dim, L)
  const float* A;     // (dim, N)
  const void* B;      // (batch, G, N, L) variable, or (dim, N) constant
  const void* C;
  const float* D;           // (dim,), optional
  const float* delta_bias;  // (dim,), optional
  const float* h0;          // (batch, dim, N), optional
  float* hT;                // (batch, dim, N), optional
  const int32_t* seq_idx;   // (batch, L), optional
  float* chunk_h;           // (K - 1, batch, dim, N): each chunk's end state from a zero start
  float* chunk_decay;       // (K - 1, batch, dim, N): each chunk's total decay
  int u_dt, delta_dt, z_dt, out_dt, b_dt, c_dt;
  int64_t batch, dim, L, N;
  int64_t cpg;        // channels per B/C group (blocks never straddle two)
  int64_t groups;     // dim / cpg
  int64_t bpg;        // blocks per group
  int64_t chunk_len;  // steps per chunk, a multiple of the kernel's tile
  int64_t nchunks;    // K
  int poly;           // states per thread (0 .. 2) whose exp2 runs on the FMA pipe
  bool softplus;
  bool vec;  // u, delta, z, out, B and C rows start 16-byte aligned (seqlen % 8 == 0): vector loads
};

// 2^x on the FMA pipe: x = i + f with i = round(x), f in [-0.5, 0.5]; 2^f by a degree-5 polynomial
// (relative error 2.2e-7, like ex2.approx), 2^i added to the exponent. x is clamped to [-126, 126], so
// -inf (a sequence start) gives 2^-126 instead of 0: a state of at most ~1e30 keeps ~1e-8 of itself.
__device__ __forceinline__ float exp2_fma(float x) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound holds round(x) in its low mantissa bits
  x = fminf(fmaxf(x, -126.0f), 126.0f);
  const float t = x + kRound;
  const float f = x - (t - kRound);
  float p = 0.001327531412243843f;
  p = fmaf(p, f, 0.009675148874521255f);
  p = fmaf(p, f, 0.05550713464617729f);
  p = fmaf(p, f, 0.2402212768793106f);
  p = fmaf(p, f, 0.6931469440460205f);
  p = fmaf(p, f, 1.0000001192092896f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

// softplus with one MUFU operation: max(x, 0) + log1p(t), t = exp(-|x|) in (0, 1], log1p(t) = t P(t)
// with P a degree-8 polynomial fitted to log1p(t) / t on [0, 1] (relative error 3e-8; in float32 with
// ex2.approx the result's relative error stays within ~5e-7 for |x| < 8, the same as the form it
// replaced, whose max relative error there was ~1e-6). t P(t) keeps the small results' relative
// accuracy (x very negative: softplus = t (1 - t / 2 + ...)), which the golden Mamba model needs (a form
// lg2(1 + exp(-|x|)) without it moved its CUDA logits out of tolerance). Above x = 20, t P(t) < 2.1e-9 is
// below half an ulp of x, so the result is x, as mamba_ssm's threshold gives. It replaced the series for
// exp(x) < 1/16 with lg2(1 + exp(x)) above in the scan (softplus_fast, which the decode update keeps): 14
// instructions and two MUFU, now 12 and one.
__device__ __forceinline__ float softplus_poly(float x) {
  const float t = ex2_approx(-fabsf(x) * kLog2e);
  float p = 0.0052342950366437435f;
  p = fmaf(p, t, -0.029512660577893257f);
  p = fmaf(p, t, 0.07823995500802994f);
  p = fmaf(p, t, -0.1366463005542755f);
  p = fmaf(p, t, 0.19106774032115936f);
  p = fmaf(p, t, -0.2484321892261505f);
  p = fmaf(p, t, 0.3331913352012634f);
  p = fmaf(p, t, -0.4999949634075165f);
  p = fmaf(p, t, 1.0f);
  return fmaf(t, p, fmaxf(x, 0.0f));
}

__device__ __forceinline__ float lg2_approx(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// softplus with two MUFU operations (the decode update's): log1p(e), e = exp(x), by its series below
// 1/16 (truncation error 1.6e-7 relative) and by lg2(1 + e) above (absolute error ~2^-22 over a result
// >= 0.06). A form without the series (max(x, 0) + lg2(1 + exp(-|x|)) ln 2, 6 instructions) was measured
// 20 us faster at the scan's benchmark shape but loses the small results' relative accuracy (2.5e-3 of a
// step of 1e-4 at x = -9.2): the golden Mamba model's CUDA logits left their tolerance.
__device__ __forceinline__ float softplus_fast(float x) {
  const float e = ex2_approx(x * kLog2e);
  float s = fmaf(e, -0.2f, 0.25f);
  s = fmaf(e, -s, 1.0f / 3.0f);
  s = fmaf(e, -s, 0.5f);
  s = fmaf(e, -s, 1.0f);
  const float small = e * s;
  const float large = lg2_approx(1.0f + e) * 0.69314718055994531f;
  const float r = e < 0.0625f ? small : large;
  return x > kSoftplusThreshold ? x : r;
}

// silu with two MUFU operations (ex2, rcp); exp(-z) = inf for z < -88 gives z * 0.
__device__ __forceinline__ float silu_fast(float z) {
  return __fdividef(z, 1.0f + ex2_approx(-z * kLog2e));
}

// E consecutive elements [off, off + E) of p as raw words: float32 one word each, 16-bit types two per
// word (element 2j in the low half of word j). Elements at or past n read 0. One vector load when vec
// and all E are there (off is then a multiple of E and the row 16-byte aligned).
template <int E>
struct raw_vec {
  uint32_t w[E];  // E words: enough for float32
};

template <int E>
__device__ __forceinline__ void load_raw(raw_vec<E>& r, const void* p, int dt, int64_t off, int n, bool vec) {
#pragma unroll
  for (int i = 0; i < E; ++i) r.w[i] = 0;
  if (dt == SSMKIT_DTYPE_F32) {
    const float* q = static_cast<const float*>(p) + off;
    if (vec && n >= E && E >= 4) {
#pragma unroll
      for (int i = 0; i < E; i += 4) {
        const uint4 v = *reinterpret_cast<const uint4*>(q + i);
        r.w[i] = v.x, r.w[i + 1] = v.y, r.w[i + 2] = v.z, r.w[i + 3] = v.w;
      }
    } else if (vec && n >= E && E == 2) {
      const uint2 v = *reinterpret_cast<const uint2*>(q);
      r.w[0] = v.x, r.w[1] = v.y;
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) r.w[i] = i < n ? __float_as_uint(q[i]) : 0u;
    }
  } else {
    const unsigned short* q = static_cast<const unsigned short*>(p) + off;
    if (vec && n >= E && E == 8) {
      const uint4 v = *reinterpret_cast<const uint4*>(q);
      r.w[0] = v.x, r.w[1] = v.y, r.w[2] = v.z, r.w[3] = v.w;
    } else if (vec && n >= E && E == 4) {
      const uint2 v = *reinterpret_cast<const uint2*>(q);
      r.w[0] = v.x, r.w[1] = v.y;
    } else if (vec && n >= E && E == 2) {
      r.w[0] = *reinterpret_cast<const uint32_t*>(q);
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const uint32_t h = i < n ? q[i] : 0u;
        r.w[i / 2] |= (i & 1) ? h << 16 : h;
      }
    }
  }
}

// The E floats of a raw vector.
template <int E>
__device__ __forceinline__ void unpack_raw(const raw_vec<E>& r, int dt, float (&v)[E]) {
  if (dt == SSMKIT_DTYPE_F32) {
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = __uint_as_float(r.w[i]);
  } else if (dt == SSMKIT_DTYPE_F16) {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      const unsigned short h = static_cast<unsigned short>((i & 1) ? r.w[i / 2] >> 16 : r.w[i / 2] & 0xffffu);
      v[i] = __half2float(__ushort_as_half(h));
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = __uint_as_float((i & 1) ? r.w[i / 2] & 0xffff0000u : r.w[i / 2] << 16);
  }
}

// p[off + i] = v[i] for i < n, one vector store when vec and all E are there.
template <int E>
__device__ __forceinline__ void store_vec(void* p, int dt, int64_t off, int n, bool vec,
                                          const float (&v)[E]) {
  if (dt == SSMKIT_DTYPE_F32) {
    float* q = static_cast<float*>(p) + off;
    if (vec && n >= E && E >= 4) {
#pragma unroll
      for (int i = 0; i < E; i += 4) {
        *reinterpret_cast<float4*>(q + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
      }
    } else if (vec && n >= E && E == 2) {
      *reinterpret_cast<float2*>(q) = make_float2(v[0], v[1]);
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) {
        if (i < n) q[i] = v[i];
      }
    }
  } else if (vec && n >= E && E >= 2) {
    uint32_t w[(E + 1) / 2];
#pragma unroll
    for (int i = 0; i < E / 2; ++i) w[i] = pack2(v[2 * i], v[2 * i + 1], dt);
    unsigned short* q = static_cast<unsigned short*>(p) + off;
    if constexpr (E == 8) {
      *reinterpret_cast<uint4*>(q) = make_uint4(w[0], w[1], w[2], w[3]);
    } else if constexpr (E == 4) {
      *reinterpret_cast<uint2*>(q) = make_uint2(w[0], w[1]);
    } else if constexpr (E == 2) {
      *reinterpret_cast<uint32_t*>(q) = w[0];
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      if (i < n) store_any(p, dt, off + i, v[i]);
    }
  }
}

template <int kP, int kS, int kT>
struct scan1_smem {
  static constexpr int kPitch = kP * kS + 4;  // floats per staged B/C row (16-byte aligned)
  float b[2][kT][kPitch];                     // (buffer, step, state)
  float c[2][kT][kPitch];
  float rb[2][kT];  // -inf where a new sequence starts, else 0
};

// The raw B/C values a thread stages per tile: (tensor, state, 4 steps) items.
template <int kP, int kS, int kT>
struct scan1_stage {
  static constexpr int kItems = 2 * kP * kS * (kT / 4);  // B and C, padded states, step quads
  static constexpr int kPerThread = (kItems + scan1_threads(kP, kS) - 1) / scan1_threads(kP, kS);
  raw_vec<4> v[kPerThread];
  int32_t seq_now, seq_prev;
};

template <int kP, int kS, bool kVarB, bool kVarC, bool kLocal, int kDt, int kTPoly>
__global__ void __launch_bounds__(scan1_threads(kP, kS), kP == 1 && kS == 8 ? 4 : kS1MinBlocks)
    scan1_kernel(const scan1_args a) {
  constexpr int kThreads = scan1_threads(kP, kS);
  // The typed form (kDt: the one dtype of u, delta, z, out and variable B/C): dtypes, 16-byte vectors and
  // whole 8-step sub-tiles known at compile time, kTPoly FMA-pipe exp2 states (see launch_scan1).
  constexpr bool kTyped = kDt >= 0;
  const int u_dt = kTyped ? kDt : a.u_dt, delta_dt = kTyped ? kDt : a.delta_dt;
  const int z_dt = kTyped ? kDt : a.z_dt, out_dt = kTyped ? kDt : a.out_dt;
  const int b_dt = kTyped && kVarB ? kDt : a.b_dt, c_dt = kTyped && kVarC ? kDt : a.c_dt;
  const bool vec = kTyped || a.vec;
  constexpr int kTile = kTyped ? kS1TypedTile : kS1Tile;
  constexpr int E = kS1Sub / kP;  // steps of a sub-tile whose per-step work this lane does
  constexpr int kCh = kThreads / kP;
  constexpr bool kUseC = !kLocal;
  // Independent partial sums of y a step (kS / 4 chains of 4 FFMA each).
  constexpr int kAcc = kS / 4;
  __shared__ __align__(16) scan1_smem<kP, kS, kTile> sm;

  const int tid = threadIdx.x;
  int64_t blk = blockIdx.x;
  const int64_t bi = blk % a.bpg;
  blk /= a.bpg;
  const int64_t g = blk % a.groups;
  blk /= a.groups;
  const int64_t b = blk % a.batch;
  const int64_t chunk = blk / a.batch;
  const int64_t L = a.L, N = a.N, dim = a.dim;
  const int64_t t_begin = chunk * a.chunk_len;
  const int64_t t_end = min64(L, t_begin + a.chunk_len);
  const int64_t c0 = g * a.cpg + bi * kCh;
  const int cn = static_cast<int>(min64(kCh, a.cpg - bi * kCh));
  const int cl = tid / kP, l = tid % kP;
  const bool active = cl < cn;
  const int64_t c = c0 + (active ? cl : 0);
  const int64_t row = (b * dim + c) * L;  // u, delta, z, out of this channel
  const int32_t* seq = a.seq_idx != nullptr ? a.seq_idx + b * L : nullptr;
  const int64_t bc_row = b * a.groups + g;  // (batch, group) of variable B/C

  // This thread's states n = kS l + i.
  float h[kS], a2[kS], bk[kS], ck[kS];
  // Every state's loads out before any value is used (ld_bits): one round trip, not one a state.
  uint32_t bb[kS], cb[kS];
#pragma unroll
  for (int i = 0; i < kS; ++i) {
    const int64_t n = kS * l + i;
    const bool ok = n < N;
    h[i] = 0.0f;
    a2[i] = ok ? a.A[c * N + n] : 0.0f;
    bb[i] = !kVarB && ok ? ld_bits(a.B, b_dt, c * N + n) : 0u;
    cb[i] = !kVarC && kUseC && ok ? ld_bits(a.C, c_dt, c * N + n) : 0u;
  }
#pragma unroll
  for (int i = 0; i < kS; ++i) {
    a2[i] *= kLog2e;
    bk[i] = bits_value(b_dt, bb[i]);
    ck[i] = bits_value(c_dt, cb[i]);
  }
  if constexpr (!kLocal) {
    // The true initial state: the given one, then each earlier chunk's decay and end state folded in.
#pragma unroll
    for (int i = 0; i < kS; ++i) {
      const int64_t n = kS * l + i;
      h[i] = a.h0 != nullptr && n < N ? a.h0[(b * dim + c) * N + n] : 0.0f;
    }
    for (int64_t j = 0; j < chunk; ++j) {
      const int64_t base = ((j * a.batch + b) * dim + c) * N;
#pragma unroll
      for (int i = 0; i < kS; ++i) {
        const int64_t n = kS * l + i;
        if (n < N) h[i] = fmaf(a.chunk_decay[base + n], h[i], a.chunk_h[base + n]);
      }
    }
  }
  const float bias = a.delta_bias != nullptr ? a.delta_bias[c] : 0.0f;
  const float dval = a.D != nullptr ? a.D[c] : 0.0f;

  // B/C tile staging: item it = (tensor, state, quad): 4 steps of one state row, loaded one tile ahead.
  scan1_stage<kP, kS, kTile> st;
  auto stage_load = [&](int64_t t0) {
#pragma unroll
    for (int k = 0; k < scan1_stage<kP, kS, kTile>::kPerThread; ++k) {
      const int it = tid + k * kThreads;
      const int q = it % (kTile / 4), n = (it / (kTile / 4)) % (kP * kS),
                which = it / (kTile / 4) / (kP * kS);
      const int64_t tq = t0 + 4 * q;
      const int cnt = static_cast<int>(max64(0, min64(4, t_end - tq)));
      // The typed form's steps end on a whole sub-tile: a quad is all there or all past the end.
      const bool want = it < scan1_stage<kP, kS, kTile>::kItems && n < N &&
                        (which == 0 ? kVarB : kVarC && kUseC) && (!kTyped || tq < t_end);
      if (want) {
        const void* p = which == 0 ? a.B : a.C;
        const int dt = which == 0 ? b_dt : c_dt;
        load_raw<4>(st.v[k], p, dt, (bc_row * N + n) * L + tq, kTyped ? 4 : cnt, vec);
      } else {
#pragma unroll
        for (int w = 0; w < 4; ++w) st.v[k].w[w] = 0;
      }
    }
    if (tid < kTile) {
      const int64_t t = t0 + tid;
      const bool ok = seq != nullptr && t > 0 && t < t_end;
      st.seq_now = ok ? seq[t] : 0;
      st.seq_prev = ok ? seq[t - 1] : 0;
    }
  };
  auto stage_store = [&](int buf) {
#pragma unroll
    for (int k = 0; k < scan1_stage<kP, kS, kTile>::kPerThread; ++k) {
      const int it = tid + k * kThreads;
      if (it >= scan1_stage<kP, kS, kTile>::kItems) continue;
      const int q = it % (kTile / 4), n = (it / (kTile / 4)) % (kP * kS),
                which = it / (kTile / 4) / (kP * kS);
      const int dt = which == 0 ? b_dt : c_dt;
      float v[4];
      unpack_raw<4>(st.v[k], dt, v);
      float(*dst)[scan1_smem<kP, kS, kTile>::kPitch] = which == 0 ? sm.b[buf] : sm.c[buf];
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[4 * q + e][n] = v[e];
    }
    if (tid < kTile) sm.rb[buf][tid] = st.seq_now != st.seq_prev ? -INFINITY : 0.0f;
  };

  // Per-channel inputs of a sub-tile: this lane's E steps, loaded one sub-tile ahead.
  raw_vec<E> ru, rd, rz;
  auto chan_load = [&](int64_t ts) {
    const int64_t t = ts + l * E;
    // The typed form loads only whole sub-tiles (launch_scan1: seqlen % 8 == 0).
    const int n = kTyped ? E : static_cast<int>(max64(0, min64(E, t_end - t)));
    load_raw<E>(ru, a.u, u_dt, row + t, n, vec);
    load_raw<E>(rd, a.delta, delta_dt, row + t, n, vec);
    if (!kLocal && a.z != nullptr) load_raw<E>(rz, a.z, z_dt, row + t, n, vec);
  };

  float sum_dt = 0.0f;  // kLocal: the chunk's sum of dt
  bool reset = false;   // kLocal: a sequence starts inside the chunk

  // One sub-tile of 8 steps at ts (rows r0 .. r0 + 7 of the staged tile in buffer buf).
  auto sub_tile = [&](int64_t ts, int buf, int r0, auto poly_tag) {
    constexpr int kPoly = decltype(poly_tag)::value;
    float uv[E], dv[E], zv[E];
    unpack_raw<E>(ru, u_dt, uv);
    unpack_raw<E>(rd, delta_dt, dv);
    if (!kLocal && a.z != nullptr) unpack_raw<E>(rz, z_dt, zv);
    const int64_t t_own = ts + l * E;
    const int n_own = kTyped ? E : static_cast<int>(max64(0, min64(E, t_end - t_own)));
    // Issue the next sub-tile's loads before this one's arithmetic.
    if (ts + kS1Sub < t_end) chan_load(ts + kS1Sub);

    float dt_own[E], dtu_own[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      float x = dv[e] + bias;
      if (a.softplus) x = softplus_poly(x);
      // Steps past the end keep the state: decay 1, input 0.
      dt_own[e] = e < n_own ? x : 0.0f;
      dtu_own[e] = e < n_own ? x * uv[e] : 0.0f;
    }
    float dt[kS1Sub], dtu[kS1Sub];
#pragma unroll
    for (int s = 0; s < kS1Sub; ++s) {
      if constexpr (kP == 1) {
        dt[s] = dt_own[s], dtu[s] = dtu_own[s];
      } else {
        dt[s] = __shfl_sync(0xffffffffu, dt_own[s % E], s / E, kP);
        dtu[s] = __shfl_sync(0xffffffffu, dtu_own[s % E], s / E, kP);
      }
    }
    const float4 rb0 = *reinterpret_cast<const float4*>(&sm.rb[buf][r0]);
    const float4 rb1 = *reinterpret_cast<const float4*>(&sm.rb[buf][r0 + 4]);
    const float rbs[8] = {rb0.x, rb0.y, rb0.z, rb0.w, rb1.x, rb1.y, rb1.z, rb1.w};

    float y[kS1Sub];
#pragma unroll
    for (int s = 0; s < kS1Sub; ++s) {
      // This thread's kS states of the step's B and C rows: kS / 4 16-byte shared loads each (at kP = 1
      // every lane of a warp reads the same address: one broadcast wavefront).
      float bv[kS], cv[kS];
#pragma unroll
      for (int q = 0; q < kS / 4; ++q) {
        if constexpr (kVarB) {
          const float4 x = *reinterpret_cast<const float4*>(&sm.b[buf][r0 + s][kS * l + 4 * q]);
          bv[4 * q] = x.x, bv[4 * q + 1] = x.y, bv[4 * q + 2] = x.z, bv[4 * q + 3] = x.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) bv[4 * q + e] = bk[4 * q + e];
        }
        if constexpr (kUseC && kVarC) {
          const float4 x = *reinterpret_cast<const float4*>(&sm.c[buf][r0 + s][kS * l + 4 * q]);
          cv[4 * q] = x.x, cv[4 * q + 1] = x.y, cv[4 * q + 2] = x.z, cv[4 * q + 3] = x.w;
        } else {
#pragma unroll
          for (int e = 0; e < 4; ++e) cv[4 * q + e] = ck[4 * q + e];
        }
      }
      // kAcc y accumulators (state i into i % kAcc): 4-deep FFMA chains a step instead of one kS-deep.
      float acc[kAcc];
#pragma unroll
      for (int j = 0; j < kAcc; ++j) acc[j] = 0.0f;
#pragma unroll
      for (int i = 0; i < kS; ++i) {
        // A new sequence (rb = -inf) makes the decay 0, which drops the previous state.
        const float x = fmaf(dt[s], a2[i], rbs[s]);
        const float decay = i < kPoly ? exp2_fma(x) : ex2_approx(x);
        h[i] = fmaf(decay, h[i], dtu[s] * bv[i]);
        if constexpr (kUseC) acc[i % kAcc] = fmaf(h[i], cv[i], acc[i % kAcc]);
      }
#pragma unroll
      for (int j = kAcc / 2; j >= 1; j /= 2) {
#pragma unroll
        for (int k = 0; k < j; ++k) acc[k] += acc[k + j];
      }
      y[s] = acc[0];
      if constexpr (kLocal) {
        sum_dt += dt[s];
        reset = reset || rbs[s] != 0.0f;
      }
    }
    if constexpr (!kLocal) {
      // Reduce-scatter of y over the channel's lanes: lane l ends with the sums of steps [E l, E l + E).
      int w = kS1Sub;
#pragma unroll
      for (int o = kP / 2; o >= 1; o >>= 1) {
        const bool hi = (l & o) != 0;
        w /= 2;
#pragma unroll
        for (int j = 0; j < kS1Sub / 2; ++j) {
          if (j < w) {
            const float send = hi ? y[j] : y[j + w];
            const float keep = hi ? y[j + w] : y[j];
            y[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
          }
        }
      }
      float o[E];
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float v = fmaf(dval, uv[e], y[e]);
        if (a.z != nullptr) v *= silu_fast(zv[e]);
        o[e] = v;
      }
      if (active) store_vec<E>(a.out, out_dt, row + t_own, n_own, vec, o);
    }
  };

  if (t_begin < t_end) {
    stage_load(t_begin);
    stage_store(0);
    chan_load(t_begin);
    __syncthreads();
  }
  int buf = 0;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += kTile) {
    const bool more = t0 + kTile < t_end;
    if (more) stage_load(t0 + kTile);
#pragma unroll
    for (int half = 0; half < kTile / kS1Sub; ++half) {
      const int64_t ts = t0 + half * kS1Sub;
      if (ts < t_end) {
        if constexpr (kTyped) {
          sub_tile(ts, buf, half * kS1Sub, std::integral_constant<int, kTPoly>{});
        } else {
          switch (a.poly) {
            case 0: sub_tile(ts, buf, half * kS1Sub, std::integral_constant<int, 0>{}); break;
            case 1: sub_tile(ts, buf, half * kS1Sub, std::integral_constant<int, 1>{}); break;
            default: sub_tile(ts, buf, half * kS1Sub, std::integral_constant<int, 2>{}); break;
          }
        }
      }
    }
    if (more) stage_store(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  if (!active) return;
  if constexpr (kLocal) {
    const int64_t base = ((chunk * a.batch + b) * dim + c) * N;
#pragma unroll
    for (int i = 0; i < kS; ++i) {
      const int64_t n = kS * l + i;
      if (n < N) {
        a.chunk_h[base + n] = h[i];
        a.chunk_decay[base + n] = reset ? 0.0f : ex2_approx(a2[i] * sum_dt);
      }
    }
  } else if (a.hT != nullptr && chunk == a.nchunks - 1) {
#pragma unroll
    for (int i = 0; i < kS; ++i) {
      const int64_t n = kS * l + i;
      if (n < N) a.hT[(b * dim + c) * N + n] = h[i];
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// The chunked SSD scan on tensor cores (bfloat16 x, B, C; headdim <= 64 and dstate <= 128, multiples of
// 8). One block of 8 warps per (batch, head) walks the sequence in chunks of 64 steps with the state S
// (headdim x dstate, float32) in the warps' mma accumulators. Warp (quarter, half) holds S rows
// 16 quarter .. + 15, columns half * dstate / 2 .. + dstate / 2 - 1. Per chunk:
//   CB = C B^T (64 x 64 over dstate), M = CB * exp(cum_i - cum_j) * dt_j on j <= i within a sequence,
//   Y = exp(cum_i) C S^T + M x (+ D x, gated by silu(z)), S = exp(cum_end) S + (x * w)^T B,
// with mma.sync m16n8k16 (bf16 in, float32 accumulate). For Y the warp takes steps 16 quarter .. + 15
// and headdim columns 32 half .. + 31; it computes CB and M in two halves of the steps j (16 registers
// each), so both warps of a pair compute the same CB rows (1/7 of the mma). The operands the kernel
// computes (S, M, x * w) are split into a bfloat16 high part and the bfloat16 rounding of the rest, two
// mma each, so that they carry ~16 bits: the result then matches the exact float32 path to ~1e-5 relative
// instead of bfloat16's 4e-3. Every output element sums the same products in the same order as with one
// warp per 16 rows (the split only moves elements between warps). Transposed fragments (x for M x, B
// for the state update) come from ldmatrix.trans, and the high and low mma of a split operand write
// different accumulators in turn (no chain of dependent mma). Per chunk a warp runs 224 mma (64 CB, 64 C S^T,
// 32 M x, 64 state update) and two barriers (one after staging, one before the next chunk's S copy).
//
// Memory. Each chunk's x, B, C and z (z in its own dtype) are copied to shared memory with cp.async, all
// of a thread's copies in flight at once, while warp 0 reads dt; D sits in shared memory for the whole
// run. So a chunk waits for one memory round trip, and the output loop only stores. S goes to the other
// warps through shared memory once a chunk, as its two bf16 parts (97 KB shared in all at dstate 128).
// A chunk starts with its copies, each a fixed offset from a row pointer of the chunk's first step (the
// copies' loops had been ~500 of a warp's ~1660 instructions a chunk, mostly 64-bit index arithmetic),
// then warp 0's loads of dt and the sequence numbers, then S's split, which so overlaps the round trip
// (it came first before), then warp 0's dt scan. Predicted -8 to -15% from the shorter path to the
// chunk's first barrier (18% of the stall samples sat there); measured (H200, the same bits, builds
// alternated in one machine session) batch 8 x 2048 687-693 us against 727-749, batch 4 381-393 against
// 398-399, batch 16 1264-1293 against 1326-1359, batch 1 x 8192 756-779 against 836-851. z's copies then
// took x's row offset too, which removed the segmented shared-M form's 12 bytes of spill: batch 8 676 us.
//
// Occupancy and instructions, measured and predicted (H200, batch 8 x 2048 x 80 heads x 64, dstate 128,
// z, D). The 4-warp form (16 S rows x all of dstate a warp, 245 registers, 2 blocks = 8 warps an SM) took
// 1268 us: 640 blocks in 2.4 waves, 2 warps a scheduler issuing every 6.2 cycles (25% of issue slots,
// tensor pipe 15%; stalls on fixed-latency dependencies, shared loads and barriers: latency-bound). The
// 8-warp split halves each warp's accumulators (S 32, Y 16, CB 16 registers; launch bounds 256 x 2 hold
// it to 128 registers), so 2 blocks = 16 warps an SM for the same shared memory: measured 1098 us, issue
// slots 38% busy, 2344 instructions a warp and chunk (384 M in all; predicted 950 us at 50% issue). Of
// those 2344, ~530 were the output loop (a dtype switch and a 64-bit offset per element, spilled
// addresses), ~500 the mask and decay of M (a branch and three scalar shared loads per element) and
// ~500 32-bit fragment loads. The lean form (kLean; SSMKIT_CUDA_SSD=lean, the default where the
// shared-M form below cannot run; SSMKIT_CUDA_SSD=scalar runs the earlier form) removes them: the stores
// resolve D and z's dtype once a chunk (branch-free loops with one row pointer a step), M is computed
// branch-free from pair loads of cum, dt and the sequence numbers, every fragment is one ldmatrix of four 8x8
// tiles (plain for C, B and S in CB and C S^T, transposed for x^T in the state update), and the loop over the
// two halves of j is not unrolled (no spills at dstate 128, against 68 bytes in the scalar form). Prediction:
// ~1500 instructions a warp and chunk, so at the same issue rate ~1098 x 1500 / 2344 = ~700 us; still
// latency-bound (4 warps a scheduler, two barriers, one memory round trip and warp 0's dt scan a chunk).
// Measured (H200, code df5a390): 804.9 us against the scalar form's 1093.6. Same bits in both forms. Every
// floating-point operation written in the kernel (the dt scan, cum, the decay factors, M, the splits into
// bfloat16 parts, S's decay, D x and the gate) is an explicitly rounded intrinsic (__fmul_rn, __fadd_rn,
// __fsub_rn, __fmaf_rn), which the code generator may neither fuse nor reorder (the helpers softplus, expf
// and silu_fast are the same calls in both), and both forms apply the same ones to the same operands in the
// same order (mma in the same order, fragments holding the same elements). With plain operators the two
// forms' final states differed in the last bit in 2 of the 7 edge cases of test/ssd.test.ts (both with
// seqIdx): in the lean form the compiler recomputed cum of even steps (sum - dt A) inside the branches that
// write w and exp(cum), as a multiplication used once and a subtraction, which the assembler may fuse into
// one fma, so w (the state update's weights) could differ by a rounding from the cum kept in shared memory;
// the scalar form's PTX used the first value. The PTX of both forms now has no unrounded multiplication that
// feeds an addition, and the dt scan's PTX is the same in both. The explicit rounding costs ~3 instructions a
// chunk in warp 0 and none elsewhere (a product that feeds a split's subtraction also feeds its conversion,
// so a fused form saves none): expected ~805 us, as measured for the lean form; measured 811.2 us (H200,
// bc27872; the scalar form 1121.3 in the same run), and the tests' bit-for-bit comparison of the two forms
// passed there.
//
// Causal skip (both forms). M is zero where j > i, so a warp whose rows are steps 16 q .. 16 q + 15 needs
// only the q + 1 blocks of 16 steps j up to its diagonal: it skips CB, M and M x beyond them (a skipped
// mma would add exact zeros, so every sum and both forms' bits are unchanged). Per warp and chunk CB
// takes 16 (q + 1) mma instead of 64 and M x 8 (q + 1) instead of 32: 188 mma on average instead of 224
// (-16%), and 20 M elements a thread instead of 32. The heavy quarters would all sit on two of the four
// schedulers with warp w on scheduler w % 4, so the second half of the warps takes the quarters in reverse
// (scheduler s runs quarters s and 3 - s: equal work). Prediction: ~13% fewer instructions a chunk,
// 811 -> 700-760 us. Registers (-Xptxas -v, sm_90a): 128, with 12 bytes of spill stores and loads at
// dstate 128 (4 at 64) in the lean form, none before the skip.
//
// Measured (H200, a200787): the skip took the scalar form from 1121 to 1085 us but left the lean form where
// it was (816.7 us; Nsight 791 us, 1807 instructions a warp and chunk, issue slots 40% busy, 0.65 eligible
// warps a scheduler; of the 8.5 cycles between a warp's issues, 2.1 wait on fixed-latency dependencies,
// 1.9 on barriers, 1.3 on shared memory and MUFU, 0.7 on global loads). The chunk's time is set by its
// slowest warp at the barriers, and the skip shortens only the light quarters: the heaviest warp of a
// block (quarter 3) kept all of its work. Hence the shared-M form, which halves the heaviest warps'
// CB and M.
//
// Shared-M form (kShareM; the default on sm_90; sm_80, whose blocks may also take its 113 KB of shared
// memory, runs it on SSMKIT_CUDA_SSD=shared only: its code spills 100 bytes there at dstate 128, not
// measured; sm_86 and sm_89 cannot run it). After the skip, the two warps of a quarter (same rows i,
// different headdim columns) still compute the same CB and M: per warp and chunk 40 CB mma and 20 M elements
// a thread on average, ~300 of the ~1800 instructions. In this form each of the pair computes CB and M for
// every other block of 16 steps j (blocks half, half + 2), writes M's two bfloat16 parts to a 16 KB swizzled
// shared array (two blocks an SM still fit at dstate 128: 115 KB each), meets its partner at a named barrier
// (64 threads) and loads all of the quarter's blocks as ldmatrix A fragments for M x. The same values in the
// same mma order: the same bits as the lean form. Per warp and chunk: CB 20 mma instead of 40, M 10 elements
// instead of 20, plus ~10 shared stores, ~5 ldmatrix and one pair barrier: ~-130 instructions (-10%). The
// pair also splits x * w of the state update (the same A fragments for both: 32 products and 16 splits a
// thread and chunk, ~190 instructions): each computes half of the steps and stores both parts (at dstate 128
// in the quarter's rows of C, which only the pair reads and which are free after its first barrier), a second
// pair barrier, and both load all of it by ldmatrix: ~-70 instructions more. Prediction: 10-15% under the
// lean form. CB is computed before C S^T so that its accumulators are dead before y's are live (in one loop:
// 28 bytes of spill). Measured (H200, a426945, the default since): 777-784 us against the lean form's 808.5
// in the same run (-3.5%; the earlier form 1086.6); Nsight 719.3 us against 791.0, 254 M instructions against
// 296 M (-14%), issue slots 35% busy, and of the 8.9 cycles between a warp's issues 2.0 now wait on shared
// memory (1.3 before: the M and x * w round trips), 2.0 on fixed-latency dependencies, 1.8 on barriers.
// Registers (-Xptxas -v): 128, no spills on sm_90a and sm_89 at dstate 64 and 128; sm_80's code spills
// 100 bytes at dstate 128 (so the lean form stays the default there). Tried and not kept: issuing the high
// part into every accumulator before the low part in the state update and M x (the two mma of an
// accumulator 8 and 4 apart instead of 2; the same bits), predicted 0-3% from the fixed-latency stalls:
// 786.6 / 779.6 us against the lean form's 805.3 in one run (d25974a), no gain over a426945 beyond the
// runs' spread, with 8 bytes of spill.
//
// Weighed and not taken: the chunks of a (batch, head) in parallel (mamba_ssm's chunk states, a state
// pass, then outputs). At this shape a chunk's state is 64 x 128 float32 = 32 KB against 8 KB of x for its
// 64 steps: chunk states at every 64 steps would move 4 x 671 MB (write, read and write in the pass,
// read), at every 256 steps 672 MB in all, 160 us at 4.2 TB/s, while the grid is already full (640
// blocks, 2 an SM, latency-bound): parallel chunks raise the blocks in flight, not what each SM gets
// done a cycle. The part they would fix, the partial last wave (640 = 132 x 4.85 blocks: 112 SMs run a
// fifth block alone, ~14% of the time), is worth less than the extra bytes. CB once per (batch, group,
// chunk) in a separate kernel: 4 MB of float32 CB, but each block would read its 16-40 KB a chunk back
// from L2 (0.4 GB in all) to save 20 of its ~190 mma a warp, in a kernel not bound by the tensor pipe.
//
// Time segments (ssd_tc_args::segs, ssd_segments). The partial last wave costs more than the estimate
// above: a block alone on an SM is still latency-bound and barely faster than one of a pair, so 640 units
// on 264 slots take ~3 unit-times, not 2.42. Where the units fill at least one wave, each (batch, head)
// sequence may be cut into segs runs of whole chunks: items unit x segs, segment s of a unit starting from
// the float32 state segment s - 1 left in a scratch copy of (batch, H, P, N) (its accumulators stored and
// read back as they are: the same bits as one block running on). Items come from a ticket counter, so every
// segment's predecessor has been taken by a block that is running or done, and a segment waits (thread 0
// spinning on the unit's flag, load-acquire) only if that block has not finished. 640 units in 2 segments
// are 1280 half-length items: 4.85 waves of half a unit-time, ~2.5 unit-times. The cost is 32 KB written
// and read a segment boundary (21 MB at this shape) and one ticket and flag a block; the segment code is
// compiled only into its own instance of the kernel (kSegs), so one segment runs the kernel as before.
// Measured (H200, builds alternated in one machine session): 725-750 us against 766-770 before segments;
// batch 4 (320 units: 4 segments) 396-410 against 488-489 (-18%); batch 1, 2 and 16 (80, 160, 1280 units)
// keep one segment (batch 16: 1322-1332 against 1336-1346). Three or four segments at batch 8 measured
// 763-767 and 777-780 us against 724-728 for two: each boundary costs a state's round trip and a chunk's
// start. Nsight at batch 8 (two segments): 16 warps an SM, 9.1 cycles between a warp's issues, 41% of issue
// slots; 18% of the stall samples sit at the barrier after each chunk's copies (the copies' round trip),
// ~13% in staging S and issuing the copies. Asking L2 for the next chunk's x, z and dt a chunk ahead did
// not move batch 8 (736-747 against 739-760 us) and gave batch 1 x 8192 -1.7%: not kept. Overlapping the
// copies with the previous chunk needs their buffers twice, which two blocks an SM leave no room for.

constexpr int kSsdQ = 64;         // steps per chunk
constexpr int kSsdP = 64;         // headdim, padded
constexpr int kSsdThreads = 256;  // 8 warps: 4 row blocks of 16 (chunk steps for Y, headdim for S) x 2 halves

struct ssd_tc_args {
  const uint16_t* x;  // (batch, L, H, P) bf16
  const void* dt;     // (batch, L, H)
  const float* A;
  const uint16_t* B;  // (batch, L, G, N) bf16
  const uint16_t* C;
  const float* D;
  const void* z;
  const float* dt_bias;
  const float* h0;  // (batch, H, P, N)
  float* hT;
  const int32_t* seq;
  uint16_t* out;  // (batch, L, H, P) bf16
  int dt_dt, z_dt;
  int64_t L, H, P, G, N;
  bool softplus, d_per_channel;
  // Time segments (see ssd_segments): segs > 1 cuts each (batch, head) sequence into segs runs of whole
  // chunks, taken in ticket order; segment s > 0 starts from the state segment s - 1 left in handoff.
  int segs;
  int64_t batch_heads;
  int* sync;       // [0] the ticket counter, [1 + unit] the segments of the unit done (zeroed by the host)
  float* handoff;  // (batch, H, P, N) float32
};

template <int kN>
struct ssd_tc_layout {
  static constexpr int kXPitch = kSsdP + 8;  // bf16 row pitches: +16 bytes puts the 8 rows a fragment
  static constexpr int kBPitch = kN + 8;     // load touches on distinct banks
  static constexpr int kX = 0;               // (Q, kXPitch) bf16: x of the chunk
  static constexpr int kB = kX + kSsdQ * kXPitch * 2;      // (Q, kBPitch) bf16: B
  static constexpr int kC = kB + kSsdQ * kBPitch * 2;      // (Q, kBPitch) bf16: C
  static constexpr int kSHi = kC + kSsdQ * kBPitch * 2;    // (P, kBPitch) bf16: S, high part
  static constexpr int kSLo = kSHi + kSsdP * kBPitch * 2;  // (P, kBPitch) bf16: S, low part
  static constexpr int kDt = kSLo + kSsdP * kBPitch * 2;   // (Q,) float: dt
  static constexpr int kCum = kDt + kSsdQ * 4;             // (Q,) float: cumulative dt * A
  static constexpr int kW = kCum + kSsdQ * 4;              // (Q,) float: dt exp(cum_end - cum)
  static constexpr int kEo = kW + kSsdQ * 4;               // (Q,) float: exp(cum)
  static constexpr int kSeg = kEo + kSsdQ * 4;             // (Q,) int: sequence starts so far
  static constexpr int kCd = kSeg + kSsdQ * 4;             // float: exp(cum_end)
  static constexpr int kDv = kCd + 16;                     // (P,) float: D of the head's channels
  static constexpr int kZ = kDv + kSsdP * 4;               // (Q, kXPitch) in z's dtype: z of the chunk
  static constexpr int kBytes = kZ + kSsdQ * kXPitch * 4;
  // The shared-M form (kShareM) adds M's two bfloat16 parts, (Q, Q) each, rows unpadded with their
  // 16-byte pieces swizzled (ssd_m_at): 16 KB, which keeps two blocks an SM on sm_90 at dstate 128
  // (2 x (98832 + 16384 + 1024 reserved) <= 228 KB); below dstate 128 16 KB more for x * w.
  static constexpr int kMHi = kBytes;
  static constexpr int kMLo = kMHi + kSsdQ * kSsdQ * 2;
  // x * w's two parts for the state update, (P, Q) each in the layout of M's: at dstate 128 in the rows of
  // C that the quarter's two warps alone read (16 rows of kBPitch >= 2 x 64 elements; free once both have
  // passed their first barrier of the chunk), otherwise after M.
  static constexpr bool kXwInC = kBPitch * 16 >= 2 * 16 * kSsdQ;
  static constexpr int kSharedBytes = kMLo + kSsdQ * kSsdQ * 2 * (kXwInC ? 1 : 3);
};

// Element (i, j) of a (Q, Q) bfloat16 plane of M: 8 pieces of 16 bytes a row, piece c of row i stored at
// c ^ (i % 8), so that the 8 rows an ldmatrix tile reads and the 8 rows a warp's fragment stores write
// fall on distinct banks.
__device__ __forceinline__ int ssd_m_at(int i, int j) {
  static_assert(kSsdQ == 64, "8 pieces of 8 elements a row");
  return i * kSsdQ + ((((j >> 3) ^ i) & 7) << 3) + (j & 7);
}

// Barrier of the two warps (64 threads) that share the rows of one quarter (named barrier 1 + quarter;
// immediate ids, so that the kernel is known to use 5 barriers, not all 16).
__device__ __forceinline__ void ssd_pair_barrier(int quarter) {
  switch (quarter) {
    case 0: asm volatile("bar.sync 1, 64;\n" ::: "memory"); break;
    case 1: asm volatile("bar.sync 2, 64;\n" ::: "memory"); break;
    case 2: asm volatile("bar.sync 3, 64;\n" ::: "memory"); break;
    default: asm volatile("bar.sync 4, 64;\n" ::: "memory"); break;
  }
}

__device__ __forceinline__ float bf16_lo(uint32_t w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(uint32_t w) {
  return __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
// v ~ hi + lo with both bfloat16: hi = bf16(v), lo = bf16(v - hi). The subtraction is an explicitly
// rounded one (__fsub_rn): the code generator may not fuse it with the multiplication that made v.
__device__ __forceinline__ void split_bf16(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = pack_bf16(a, b);
  lo = pack_bf16(__fsub_rn(a, bf16_lo(hi)), __fsub_rn(b, bf16_hi(hi)));
}

// Not volatile: the compiler may interleave independent mma (a pure function of registers).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes from global to shared memory (cp.async.cg: through L2, not L1) without a trip through registers,
// so that a thread issues all its copies of a chunk before any of them lands; full = false writes 16 zero
// bytes and reads nothing (src is then any valid address). sm_80 and later; other targets copy through
// registers.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool full) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(__cvta_generic_to_global(src)),
               "r"(full ? 16 : 0)
               : "memory");
#else
  *static_cast<uint4*>(dst) = full ? *static_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
#endif
}

// Waits for this thread's cp_async16 copies (a barrier then publishes them to the block).
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Four 8x8 bf16 tiles, transposed: lane i gives the address of row i % 8 of tile i / 8 (16-byte aligned);
// r[q] is tile q's mma B fragment when the tile is stored (k, n): {M[2 tig][g], M[2 tig + 1][g]}.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const uint16_t* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Four 8x8 bf16 tiles: lane i gives the address of row i % 8 of tile i / 8 (16-byte aligned); r[q] holds
// {T[g][2 tig], T[g][2 tig + 1]} of tile q: an mma A fragment part of a tile stored (m, k), or a B
// fragment part of a tile stored (n, k).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Two adjacent elements of z staged in shared memory, element offset i even, in z's dtype kZ.
constexpr int kSsdNoZ = -1;
template <int kZ>
__device__ __forceinline__ void ssd_z_pair(const void* sz, int i, float& z0, float& z1) {
  if constexpr (kZ == SSMKIT_DTYPE_F32) {
    const float2 v = *reinterpret_cast<const float2*>(static_cast<const float*>(sz) + i);
    z0 = v.x, z1 = v.y;
  } else if constexpr (kZ == SSMKIT_DTYPE_F16) {
    const float2 v = __half22float2(*reinterpret_cast<const __half2*>(static_cast<const uint16_t*>(sz) + i));
    z0 = v.x, z1 = v.y;
  } else {
    const uint32_t w = *reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(sz) + i);
    z0 = bf16_lo(w), z1 = bf16_hi(w);
  }
}

// An element of M: cb exp(cum_i - cum_j) dt_j, every operation explicitly rounded (the code generator
// may neither fuse nor reorder them, so both forms of the kernel compute the same bits).
__device__ __forceinline__ float ssd_m(float cb, float cum_i, float cum_j, float dt_j) {
  return __fmul_rn(__fmul_rn(cb, ex2_approx(__fmul_rn(__fsub_rn(cum_i, cum_j), kLog2e))), dt_j);
}

// kLean: the form with fewer instructions (see the design above), kShareM its shared-M variant (the
// default where it fits); otherwise the earlier form with scalar fragment loads (SSMKIT_CUDA_SSD=scalar).
// All compute the same bits. kSegs: the form for time segments (a.segs > 1); without it a block runs the
// whole sequence of unit blockIdx.x, and none of the segments' code is compiled in.
template <int kN, bool kLean, bool kShareM, bool kSegs>
__global__ void __launch_bounds__(kSsdThreads, 2) ssd_tc_kernel(const ssd_tc_args a) {
  static_assert(kLean || !kShareM, "the shared-M form is a lean form");
  using lay = ssd_tc_layout<kN>;
  constexpr int kXP = lay::kXPitch, kBP = lay::kBPitch;
  constexpr int kNH = kN / 2;         // state columns of a warp
  constexpr int kNT = kNH / 8;        // its 8-column accumulator tiles of S
  constexpr int kJT = kSsdQ / 2 / 8;  // 8-column tiles of CB over half the chunk's steps j
  constexpr int kPO = kSsdP / 2 / 8;  // 8-column tiles of Y over a warp's half of headdim
  static_assert(kN % 16 == 0 && kJT % 2 == 0 && kPO % 2 == 0, "whole mma steps and ldmatrix.x4 pairs");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* sX = reinterpret_cast<uint16_t*>(smem_raw + lay::kX);
  uint16_t* sB = reinterpret_cast<uint16_t*>(smem_raw + lay::kB);
  uint16_t* sC = reinterpret_cast<uint16_t*>(smem_raw + lay::kC);
  uint16_t* sSh = reinterpret_cast<uint16_t*>(smem_raw + lay::kSHi);
  uint16_t* sSl = reinterpret_cast<uint16_t*>(smem_raw + lay::kSLo);
  float* sDt = reinterpret_cast<float*>(smem_raw + lay::kDt);
  float* sCum = reinterpret_cast<float*>(smem_raw + lay::kCum);
  float* sW = reinterpret_cast<float*>(smem_raw + lay::kW);
  float* sEo = reinterpret_cast<float*>(smem_raw + lay::kEo);
  int* sSeg = reinterpret_cast<int*>(smem_raw + lay::kSeg);
  float* sCd = reinterpret_cast<float*>(smem_raw + lay::kCd);
  float* sDv = reinterpret_cast<float*>(smem_raw + lay::kDv);
  void* sZ = smem_raw + lay::kZ;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, tig = lane % 4;
  // Warp (quarter, half): rows r0 .. r0 + 15 (chunk steps for Y, headdim for S); half picks its headdim
  // columns pw .. pw + 31 of Y and its state columns n0 .. n0 + kN / 2 - 1 of S. The second half takes
  // the quarters in reverse, so that the two warps on each scheduler (warps w and w + 4) have quarters
  // q and 3 - q: the causal work of M x grows with the quarter (see skip below), and each pair sums to
  // the same.
  const int half = warp / 4, quarter = half == 0 ? warp % 4 : 3 - warp % 4;
  const int r0 = quarter * 16, pw = half * (kSsdP / 2), n0 = half * kNH;
  const int64_t L = a.L, H = a.H, P = a.P, G = a.G, N = a.N;
  // The block's work item: a (batch, head) unit and its segment of whole chunks. With segments the items
  // come from a ticket counter, so a segment's predecessor has always been taken by a running block.
  int64_t unit = blockIdx.x, seg = 0, t_begin = 0, t_end = L;
  if constexpr (kSegs) {
    __shared__ int s_item;
    if (tid == 0) s_item = atomicAdd(a.sync, 1);
    __syncthreads();
    const int64_t chunks = (L + kSsdQ - 1) / kSsdQ;
    unit = s_item % a.batch_heads, seg = s_item / a.batch_heads;
    t_begin = seg * chunks / a.segs * kSsdQ;
    t_end = (seg + 1) * chunks / a.segs * kSsdQ;
  }
  const int64_t b = unit / H, h = unit % H;
  const int64_t grp = h / (H / G);
  const float Ah = a.A[h];
  const float bias = a.dt_bias != nullptr ? a.dt_bias[h] : 0.0f;
  const int32_t* seq = a.seq != nullptr ? a.seq + b * L : nullptr;
  // D per headdim element, read after the first chunk's barrier.
  if (a.D != nullptr && tid < P) sDv[tid] = a.D[a.d_per_channel ? h * P + tid : h];

  // S rows r0 + g (+8), columns n0 + 8 nt + 2 tig (+1), as mma accumulator tiles: the initial state, or
  // the one the segment before left (read through L2 once it is published).
  if (kSegs && seg > 0) {
    if (tid == 0) {
      while (ld_acquire_gpu(a.sync + 1 + unit) < seg) __nanosleep(256);
    }
    __syncthreads();
  }
  float S[kNT][4];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t p = r0 + g + (r >= 2 ? 8 : 0), n = n0 + 8 * nt + 2 * tig + (r & 1);
      const int64_t at = ((b * H + h) * P + p) * N + n;
      S[nt][r] = p >= P || n >= N   ? 0.0f
                 : kSegs && seg > 0 ? __ldcg(a.handoff + at)
                 : a.h0 != nullptr  ? a.h0[at]
                                    : 0.0f;
    }
  }

  // The chunk's copies as row pointers: a thread's pieces sit at fixed (row, column) offsets from the
  // chunk's first row, rows kXRows (x and 16-bit z), kBRows (B, C) or kZRows (float32 z) apart.
  constexpr int kXPieces = kSsdP / 8, kBPieces = kN / 8;
  constexpr int kXRows = kSsdThreads / kXPieces, kBRows = kSsdThreads / kBPieces, kZRows = kSsdThreads / 16;
  static_assert(kSsdQ * kSsdP % (8 * kSsdThreads) == 0 && kSsdQ * kN % (8 * kSsdThreads) == 0,
                "every thread stages the same number of 16-byte pieces");
  const int xt = tid / kXPieces, xp = (tid % kXPieces) * 8;
  const int bt = tid / kBPieces, bc = (tid % kBPieces) * 8;
  const int64_t x_row = H * P, b_row = G * N;  // elements from one step to the next
  for (int64_t t0 = t_begin; t0 < (kSegs ? min64(t_end, L) : L); t0 += kSsdQ) {
    // Stage x, B and C of the chunk (zeros past the sequence and in the padding), 16 bytes at a time,
    // every copy in flight at once (the host has checked the 16-byte alignment of x, B and C), before
    // anything else of the chunk: the buffers are free since the last chunk's final barrier.
    const int64_t xo = ((b * L + t0) * H + h) * P;  // x's and z's first row of the chunk, in elements
    {
      const uint16_t* xs = a.x + xo;
#pragma unroll
      for (int k = 0; k < kSsdQ / kXRows; ++k) {
        const int t = xt + k * kXRows;
        const bool ok = t0 + t < L && xp < P;
        cp_async16(sX + t * kXP + xp, ok ? xs + t * x_row + xp : a.x, ok);
      }
      const int64_t bo = (b * L + t0) * G * N + grp * N;
      // Not unrolled: the copies are in flight either way, and unrolling costs registers.
#pragma unroll 1
      for (int k = 0; k < kSsdQ / kBRows; ++k) {
        const int t = bt + k * kBRows;
        const bool ok = t0 + t < L && bc < N;
        const int64_t off = ok ? bo + t * b_row + bc : 0;
        cp_async16(sB + t * kBP + bc, a.B + off, ok);
        cp_async16(sC + t * kBP + bc, a.C + off, ok);
      }
    }
    // z of the chunk, in its own dtype: pieces of 8 16-bit or 4 float32 elements.
    if (a.z != nullptr) {
      const char* zs = static_cast<const char*>(a.z);
      if (a.z_dt == SSMKIT_DTYPE_F32) {
        const int t1 = tid / 16, p0 = (tid % 16) * 4;
#pragma unroll 1
        for (int k = 0; k < kSsdQ / kZRows; ++k) {
          const int t = t1 + k * kZRows;
          const bool ok = t0 + t < L && p0 < P;
          const int64_t off = ok ? xo + t * x_row + p0 : 0;
          cp_async16(static_cast<char*>(sZ) + (t * kXP + p0) * 4, zs + off * 4, ok);
        }
      } else {
#pragma unroll
        for (int k = 0; k < kSsdQ / kXRows; ++k) {
          const int t = xt + k * kXRows;
          const bool ok = t0 + t < L && xp < P;
          const int64_t off = ok ? xo + t * x_row + xp : 0;
          cp_async16(static_cast<char*>(sZ) + (t * kXP + xp) * 2, zs + off * 2, ok);
        }
      }
    }
    // dt's bits and the sequence numbers of the chunk's steps (warp 0, two steps a lane): loaded before S is
    // split, so that their round trip overlaps it.
    uint32_t dt_bits[2] = {0, 0};
    int32_t sq[2] = {0, 0}, sq_prev[2] = {0, 0};
    if (warp == 0) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tg = t0 + 2 * lane + e;
        if (tg < L) {
          dt_bits[e] = ld_bits(a.dt, a.dt_dt, (b * L + tg) * H + h);
          if (seq != nullptr && tg > 0) sq[e] = seq[tg], sq_prev[e] = seq[tg - 1];
        }
      }
    }
    // S (as it stands before the chunk) for the other warps' Y, in two bf16 parts, while the copies and loads
    // fly.
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      uint32_t hi, lo;
      const int col = n0 + 8 * nt + 2 * tig;
      split_bf16(S[nt][0], S[nt][1], hi, lo);
      *reinterpret_cast<uint32_t*>(sSh + (r0 + g) * kBP + col) = hi;
      *reinterpret_cast<uint32_t*>(sSl + (r0 + g) * kBP + col) = lo;
      split_bf16(S[nt][2], S[nt][3], hi, lo);
      *reinterpret_cast<uint32_t*>(sSh + (r0 + g + 8) * kBP + col) = hi;
      *reinterpret_cast<uint32_t*>(sSl + (r0 + g + 8) * kBP + col) = lo;
    }
    // dt, the cumulative decay exponent and the sequence starts of the chunk: warp 0, two steps a lane, from
    // the loads above.
    if (warp == 0) {
      float d[2], av[2];
      int rs[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int64_t tg = t0 + 2 * lane + e;
        float x = 0.0f;
        rs[e] = 0;
        if (tg < L) {
          x = __fadd_rn(bits_value(a.dt_dt, dt_bits[e]), bias);
          if (a.softplus) x = softplus(x);
          x = x < 0.0f ? 0.0f : x;
          rs[e] = seq != nullptr && tg > 0 && sq[e] != sq_prev[e] ? 1 : 0;
        }
        d[e] = x;
        av[e] = __fmul_rn(x, Ah);
      }
      float sum = __fadd_rn(av[0], av[1]);
      int cnt = rs[0] + rs[1];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float ps = __shfl_up_sync(0xffffffffu, sum, o);
        const int pc = __shfl_up_sync(0xffffffffu, cnt, o);
        if (lane >= o) sum = __fadd_rn(sum, ps), cnt += pc;
      }
      const float cum0 = __fsub_rn(sum, av[1]), cum1 = sum;
      const int seg0 = cnt - rs[1], seg1 = cnt;
      const float cend = __shfl_sync(0xffffffffu, cum1, 31);
      const int send = __shfl_sync(0xffffffffu, seg1, 31);
      const float cums[2] = {cum0, cum1};
      const int segs[2] = {seg0, seg1};
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = 2 * lane + e;
        sDt[t] = d[e];
        sCum[t] = cums[e];
        sSeg[t] = segs[e];
        sW[t] = segs[e] == send ? __fmul_rn(d[e], expf(__fsub_rn(cend, cums[e]))) : 0.0f;
        sEo[t] = segs[e] == 0 ? expf(cums[e]) : 0.0f;
      }
      if (lane == 0) *sCd = send == 0 ? expf(cend) : 0.0f;
    }
    cp_async_wait_all();
    __syncthreads();

    // Y for steps r0 .. r0 + 15 and this warp's headdim columns pw .. pw + 31: C S^T over all of dstate,
    // then M x in two halves of the chunk's steps j (CB and M of a half: 16 registers).
    const int i_lo = r0 + g, i_hi = r0 + g + 8;
    float y[kPO][4];
#pragma unroll
    for (int i = 0; i < kPO; ++i) y[i][0] = y[i][1] = y[i][2] = y[i][3] = 0.0f;
    const float cum_lo = sCum[i_lo], cum_hi = sCum[i_hi];
    const int seg_lo = sSeg[i_lo], seg_hi = sSeg[i_hi];
    // The pieces both the shared-M and the lean forms run, the same operations in the same order.
    // y += C S^T for one 16-wide piece of dstate (af: C's A fragment; S's B fragments at brow, bcol): high
    // parts into every accumulator, then low parts, so that consecutive mma are independent.
    auto y_cs = [&](const uint32_t(&af)[4], int brow, int bcol) {
#pragma unroll
      for (int q = 0; q < kPO; q += 2) {
        uint32_t f[4];
        ldsm_x4(f, sSh + (pw + 8 * q + brow) * kBP + bcol);
        mma_bf16(y[q], af, f[0], f[1]);
        mma_bf16(y[q + 1], af, f[2], f[3]);
      }
#pragma unroll
      for (int q = 0; q < kPO; q += 2) {
        uint32_t f[4];
        ldsm_x4(f, sSl + (pw + 8 * q + brow) * kBP + bcol);
        mma_bf16(y[q], af, f[0], f[1]);
        mma_bf16(y[q + 1], af, f[2], f[3]);
      }
    };
    // The state from before the chunk reaches step i decayed by exp(cum_i), unless a sequence began.
    auto y_decay = [&]() {
      const float eo_lo = sEo[i_lo], eo_hi = sEo[i_hi];
#pragma unroll
      for (int q = 0; q < kPO; ++q) {
        y[q][0] = __fmul_rn(y[q][0], eo_lo), y[q][1] = __fmul_rn(y[q][1], eo_lo);
        y[q][2] = __fmul_rn(y[q][2], eo_hi), y[q][3] = __fmul_rn(y[q][3], eo_hi);
      }
    };
    // M from CB on one 8-column tile (columns j, j + 1 of this lane, j even: the pairs are 8-byte aligned):
    // branch-free, every element computed (inf where j > i) and the mask selects 0.
    auto m_tile = [&](float(&c)[4], int j) {
      const float2 cj = *reinterpret_cast<const float2*>(sCum + j);
      const float2 dj = *reinterpret_cast<const float2*>(sDt + j);
      const int2 sj = *reinterpret_cast<const int2*>(sSeg + j);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const bool hi = r >= 2, odd = (r & 1) != 0;
        const float v = ssd_m(c[r], hi ? cum_hi : cum_lo, odd ? cj.y : cj.x, odd ? dj.y : dj.x);
        const bool keep =
            j + (odd ? 1 : 0) <= (hi ? i_hi : i_lo) && (odd ? sj.y : sj.x) == (hi ? seg_hi : seg_lo);
        c[r] = keep ? v : 0.0f;
      }
    };
    // y += M x for the 16 steps j from row jr of x (mh, ml: M's high and low parts as A fragments; x's B
    // fragments of two column tiles, transposed out of x stored (j, p)).
    auto y_mx = [&](const uint32_t(&mh)[4], const uint32_t(&ml)[4], int jr) {
#pragma unroll
      for (int q = 0; q < kPO; q += 2) {
        uint32_t f[4];
        ldsm_x4_trans(f, sX + (jr + (lane & 7) + (lane & 8)) * kXP + pw + 8 * (q + (lane >> 4)));
        mma_bf16(y[q], mh, f[0], f[1]);
        mma_bf16(y[q + 1], mh, f[2], f[3]);
        mma_bf16(y[q], ml, f[0], f[1]);
        mma_bf16(y[q + 1], ml, f[2], f[3]);
      }
    };
    if constexpr (kShareM) {
      // The two warps of a quarter split its blocks of 16 steps j (0 .. quarter): this warp computes CB
      // and M for blocks half and half + 2 (those that reach its rows) and stores M's two parts in shared
      // memory, then C S^T; after the pair's barrier both run M x over all of the quarter's blocks. Every
      // element of M is the same function of the same operands as in the lean form, and y takes the same
      // mma in the same order. CB's accumulators are dead before y's are live (16 registers fewer at the
      // peak than in one loop), at the price of loading C's fragments twice.
      const int kb0 = half, kb1 = half + 2;
      const bool has0 = kb0 <= quarter, has1 = kb1 <= quarter;
      uint16_t* sMh = reinterpret_cast<uint16_t*>(smem_raw + lay::kMHi);
      uint16_t* sMl = reinterpret_cast<uint16_t*>(smem_raw + lay::kMLo);
      const int brow = (lane & 7) + 8 * (lane >> 4);
      if (has0) {
        float cb[4][4];  // 8-column tiles: block kb0's two, then block kb1's two
#pragma unroll
        for (int i = 0; i < 4; ++i) cb[i][0] = cb[i][1] = cb[i][2] = cb[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk) {
          uint32_t af[4], f[4];
          ldsm_x4(af, sC + (r0 + (lane & 15)) * kBP + 16 * kk + 8 * (lane >> 4));
          const int bcol = 16 * kk + 8 * ((lane >> 3) & 1);
          ldsm_x4(f, sB + (16 * kb0 + brow) * kBP + bcol);
          mma_bf16(cb[0], af, f[0], f[1]);
          mma_bf16(cb[1], af, f[2], f[3]);
          if (has1) {
            ldsm_x4(f, sB + (16 * kb1 + brow) * kBP + bcol);
            mma_bf16(cb[2], af, f[0], f[1]);
            mma_bf16(cb[3], af, f[2], f[3]);
          }
        }
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          if (m == 1 && !has1) continue;
          const int kb = half + 2 * m;
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            float(&c)[4] = cb[2 * m + t];
            const int j = 16 * kb + 8 * t + 2 * tig;
            m_tile(c, j);
            uint32_t h0, l0, h1, l1;
            split_bf16(c[0], c[1], h0, l0);
            split_bf16(c[2], c[3], h1, l1);
            *reinterpret_cast<uint32_t*>(sMh + ssd_m_at(i_lo, j)) = h0;
            *reinterpret_cast<uint32_t*>(sMl + ssd_m_at(i_lo, j)) = l0;
            *reinterpret_cast<uint32_t*>(sMh + ssd_m_at(i_hi, j)) = h1;
            *reinterpret_cast<uint32_t*>(sMl + ssd_m_at(i_hi, j)) = l1;
          }
        }
      }
#pragma unroll
      for (int kk = 0; kk < kN / 16; ++kk) {
        uint32_t af[4];
        ldsm_x4(af, sC + (r0 + (lane & 15)) * kBP + 16 * kk + 8 * (lane >> 4));
        y_cs(af, brow, 16 * kk + 8 * ((lane >> 3) & 1));
      }
      y_decay();
      ssd_pair_barrier(quarter);
#pragma unroll
      for (int kb = 0; kb < kSsdQ / 16; ++kb) {
        if (kb > quarter) break;
        // A fragments (rows r0 .., k = j) of M's two parts: lane l addresses row l % 16, piece 2 kb + l / 16.
        const int mrow = r0 + (lane & 15), mcol = 16 * kb + 8 * (lane >> 4);
        uint32_t mh[4], ml[4];
        ldsm_x4(mh, sMh + ssd_m_at(mrow, mcol));
        ldsm_x4(ml, sMl + ssd_m_at(mrow, mcol));
        y_mx(mh, ml, 16 * kb);
      }
    } else {
      // Lean: not unrolled (no spills at dstate 128).
#pragma unroll(kLean ? 1 : 2)
      for (int jh = 0; jh < 2; ++jh) {
        const int j0 = jh * (kSsdQ / 2);
        // Blocks of 16 steps j of this half that reach the warp's rows (j <= i): M is zero beyond them, so
        // their CB, M and M x are skipped (no half for quarters 0 and 1 at jh = 1; one block for quarter 0
        // at jh = 0 and quarter 2 at jh = 1). A skipped mma would add exact zeros: the sums are unchanged.
        const int nblk = quarter + 1 - 2 * jh;
        if (nblk <= 0) break;
        const bool full = nblk >= 2;
        static_assert(kJT == 4, "two blocks of 16 steps j a half: tiles 0-1 and 2-3, M x steps kk 0 and 1");
        float cb[kJT][4];
#pragma unroll
        for (int i = 0; i < kJT; ++i) cb[i][0] = cb[i][1] = cb[i][2] = cb[i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk) {
          if constexpr (kLean) {
            // A fragment of C (rows r0 .., k = dstate); B fragments of B (rows j) and of S (rows p), two
            // column tiles per ldmatrix: lane l addresses row l % 8 of tile l / 8.
            uint32_t af[4];
            ldsm_x4(af, sC + (r0 + (lane & 15)) * kBP + 16 * kk + 8 * (lane >> 4));
            const int brow = (lane & 7) + 8 * (lane >> 4), bcol = 16 * kk + 8 * ((lane >> 3) & 1);
#pragma unroll
            for (int jt = 0; jt < kJT; jt += 2) {
              if (jt >= 2 && !full) continue;
              uint32_t f[4];
              ldsm_x4(f, sB + (j0 + 8 * jt + brow) * kBP + bcol);
              mma_bf16(cb[jt], af, f[0], f[1]);
              mma_bf16(cb[jt + 1], af, f[2], f[3]);
            }
            if (jh == 0) y_cs(af, brow, bcol);
          } else {
            const uint16_t* cr = sC + (r0 + g) * kBP + 16 * kk + 2 * tig;
            const uint32_t af[4] = {*reinterpret_cast<const uint32_t*>(cr),
                                    *reinterpret_cast<const uint32_t*>(cr + 8 * kBP),
                                    *reinterpret_cast<const uint32_t*>(cr + 8),
                                    *reinterpret_cast<const uint32_t*>(cr + 8 * kBP + 8)};
#pragma unroll
            for (int jt = 0; jt < kJT; ++jt) {
              if (jt >= 2 && !full) continue;
              const uint16_t* br = sB + (j0 + 8 * jt + g) * kBP + 16 * kk + 2 * tig;
              mma_bf16(cb[jt], af, *reinterpret_cast<const uint32_t*>(br),
                       *reinterpret_cast<const uint32_t*>(br + 8));
            }
            if (jh == 0) {
              // High parts into every accumulator, then low parts: consecutive mma are independent.
#pragma unroll
              for (int q = 0; q < kPO; ++q) {
                const int o = (pw + 8 * q + g) * kBP + 16 * kk + 2 * tig;
                mma_bf16(y[q], af, *reinterpret_cast<const uint32_t*>(sSh + o),
                         *reinterpret_cast<const uint32_t*>(sSh + o + 8));
              }
#pragma unroll
              for (int q = 0; q < kPO; ++q) {
                const int o = (pw + 8 * q + g) * kBP + 16 * kk + 2 * tig;
                mma_bf16(y[q], af, *reinterpret_cast<const uint32_t*>(sSl + o),
                         *reinterpret_cast<const uint32_t*>(sSl + o + 8));
              }
            }
          }
        }
        if (jh == 0) y_decay();
          // M = CB * exp(cum_i - cum_j) * dt_j on j <= i in the same sequence; as A fragments (k = j).
          // Lean: branch-free, every element computed (inf where j > i) and the mask selects 0.
#pragma unroll
        for (int jt = 0; jt < kJT; ++jt) {
          if (jt >= 2 && !full) continue;
          if constexpr (kLean) {
            m_tile(cb[jt], j0 + 8 * jt + 2 * tig);
          } else {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              const int i = r >= 2 ? i_hi : i_lo, j = j0 + 8 * jt + 2 * tig + (r & 1);
              const bool keep = j <= i && sSeg[j] == (r >= 2 ? seg_hi : seg_lo);
              cb[jt][r] = keep ? ssd_m(cb[jt][r], r >= 2 ? cum_hi : cum_lo, sCum[j], sDt[j]) : 0.0f;
            }
          }
        }
#pragma unroll
        for (int kk = 0; kk < kJT / 2; ++kk) {
          if (kk >= 1 && !full) continue;
          uint32_t mh[4], ml[4];
          split_bf16(cb[2 * kk][0], cb[2 * kk][1], mh[0], ml[0]);
          split_bf16(cb[2 * kk][2], cb[2 * kk][3], mh[1], ml[1]);
          split_bf16(cb[2 * kk + 1][0], cb[2 * kk + 1][1], mh[2], ml[2]);
          split_bf16(cb[2 * kk + 1][2], cb[2 * kk + 1][3], mh[3], ml[3]);
          y_mx(mh, ml, j0 + 16 * kk);
        }
      }
    }

    // out = (Y + D x) silu(z), two adjacent headdim elements per store; z and D from shared memory. The
    // flags and z's dtype are resolved once a chunk, so that the stores run without branches on them.
    auto store_out = [&](auto has_d, auto z_kind) {
      constexpr bool kD = decltype(has_d)::value;
      constexpr int kZ = decltype(z_kind)::value;  // kSsdNoZ or z's dtype
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int i = hr ? i_hi : i_lo;
        if (t0 + i >= L) continue;
        uint16_t* orow = a.out + ((b * L + t0 + i) * H + h) * P;  // (P,) the row of step t0 + i
#pragma unroll
        for (int q = 0; q < kPO; ++q) {
          const int p = pw + 8 * q + 2 * tig;
          if (p >= P) continue;
          float o0 = y[q][2 * hr], o1 = y[q][2 * hr + 1];
          if constexpr (kD) {
            const uint32_t xv = *reinterpret_cast<const uint32_t*>(sX + i * kXP + p);
            const float2 dv = *reinterpret_cast<const float2*>(sDv + p);
            o0 = __fmaf_rn(dv.x, bf16_lo(xv), o0), o1 = __fmaf_rn(dv.y, bf16_hi(xv), o1);
          }
          if constexpr (kZ != kSsdNoZ) {
            float z0, z1;
            ssd_z_pair<kZ>(sZ, i * kXP + p, z0, z1);
            o0 = __fmul_rn(o0, silu_fast(z0)), o1 = __fmul_rn(o1, silu_fast(z1));
          }
          *reinterpret_cast<uint32_t*>(orow + p) = pack_bf16(o0, o1);
        }
      }
    };
    auto store_z = [&](auto has_d) {
      if (a.z == nullptr) {
        store_out(has_d, std::integral_constant<int, kSsdNoZ>{});
      } else if (a.z_dt == SSMKIT_DTYPE_F32) {
        store_out(has_d, std::integral_constant<int, SSMKIT_DTYPE_F32>{});
      } else if (a.z_dt == SSMKIT_DTYPE_F16) {
        store_out(has_d, std::integral_constant<int, SSMKIT_DTYPE_F16>{});
      } else {
        store_out(has_d, std::integral_constant<int, SSMKIT_DTYPE_BF16>{});
      }
    };
    if constexpr (kLean) {
      if (a.D != nullptr) {
        store_z(std::true_type{});
      } else {
        store_z(std::false_type{});
      }
    } else {
#pragma unroll
      for (int q = 0; q < kPO; ++q) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int i = hr ? i_hi : i_lo, p = pw + 8 * q + 2 * tig;
          const int64_t tg = t0 + i;
          if (tg >= L || p >= P) continue;
          const int64_t off = ((b * L + tg) * H + h) * P + p;
          float v[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float o = y[q][2 * hr + e];
            if (a.D != nullptr)
              o = __fmaf_rn(sDv[p + e], __uint_as_float(static_cast<uint32_t>(sX[i * kXP + p + e]) << 16), o);
            if (a.z != nullptr) o = __fmul_rn(o, silu_fast(load_any(sZ, a.z_dt, i * kXP + p + e)));
            v[e] = o;
          }
          *reinterpret_cast<uint32_t*>(a.out + off) = pack_bf16(v[0], v[1]);
        }
      }
    }

    // S for headdim rows r0 .. r0 + 15, this warp's columns: S = exp(cum_end) S + (x * w)^T B.
    {
      const float cd = *sCd;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        S[nt][0] = __fmul_rn(S[nt][0], cd), S[nt][1] = __fmul_rn(S[nt][1], cd);
        S[nt][2] = __fmul_rn(S[nt][2], cd), S[nt][3] = __fmul_rn(S[nt][3], cd);
      }
      // Shared-M form: each of the quarter's two warps computes x * w for half of the steps (16-step blocks
      // 2 half, 2 half + 1), stores both parts (the A fragments' layout, as M's), and after the pair's
      // barrier both load all four blocks: the same values as the lean form computes in registers.
      [[maybe_unused]] uint16_t* xw_hi = nullptr;
      [[maybe_unused]] uint16_t* xw_lo = nullptr;
      if constexpr (kShareM) {
        if constexpr (lay::kXwInC) {
          xw_hi = sC + r0 * kBP, xw_lo = xw_hi + 16 * kSsdQ;
        } else {
          xw_hi = reinterpret_cast<uint16_t*>(smem_raw + lay::kMLo + kSsdQ * kSsdQ * 2) + r0 * kSsdQ;
          xw_lo = xw_hi + kSsdP * kSsdQ;
        }
#pragma unroll
        for (int kq = 0; kq < 2; ++kq) {
          const int kk = 2 * half + kq;
          uint32_t xf[4], xh[4], xl[4];
          ldsm_x4_trans(xf, sX + (16 * kk + (lane & 7) + 8 * (lane >> 4)) * kXP + r0 + 8 * ((lane >> 3) & 1));
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int t = 16 * kk + 2 * tig + (q & 2 ? 8 : 0);
            split_bf16(__fmul_rn(bf16_lo(xf[q]), sW[t]), __fmul_rn(bf16_hi(xf[q]), sW[t + 1]), xh[q], xl[q]);
            const int at = ssd_m_at(g + (q & 1 ? 8 : 0), t);
            *reinterpret_cast<uint32_t*>(xw_hi + at) = xh[q];
            *reinterpret_cast<uint32_t*>(xw_lo + at) = xl[q];
          }
        }
        ssd_pair_barrier(quarter);
      }
#pragma unroll
      for (int kk = 0; kk < kSsdQ / 16; ++kk) {
        // A fragment (row p, k = t) of x * w, split in two parts. Lean: x's by ldmatrix, transposed out
        // of x stored (t, p) (tile q: steps 16 kk + 8 (q / 2), headdim r0 + 8 (q % 2)); otherwise
        // gathered by 16-bit loads.
        uint32_t xh[4], xl[4];
        if constexpr (kShareM) {
          const int at = ssd_m_at(lane & 15, 16 * kk + 8 * (lane >> 4));
          ldsm_x4(xh, xw_hi + at);
          ldsm_x4(xl, xw_lo + at);
        } else if constexpr (kLean) {
          uint32_t xf[4];
          ldsm_x4_trans(xf, sX + (16 * kk + (lane & 7) + 8 * (lane >> 4)) * kXP + r0 + 8 * ((lane >> 3) & 1));
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int t = 16 * kk + 2 * tig + (q & 2 ? 8 : 0);
            split_bf16(__fmul_rn(bf16_lo(xf[q]), sW[t]), __fmul_rn(bf16_hi(xf[q]), sW[t + 1]), xh[q], xl[q]);
          }
        } else {
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int p = r0 + g + (q & 1 ? 8 : 0), t = 16 * kk + 2 * tig + (q & 2 ? 8 : 0);
            const float w0 = sW[t], w1 = sW[t + 1];
            const float v0 = __fmul_rn(__uint_as_float(static_cast<uint32_t>(sX[t * kXP + p]) << 16), w0);
            const float v1 =
                __fmul_rn(__uint_as_float(static_cast<uint32_t>(sX[(t + 1) * kXP + p]) << 16), w1);
            split_bf16(v0, v1, xh[q], xl[q]);
          }
        }
#pragma unroll
        for (int nt = 0; nt < kNT; nt += 2) {
          // B fragments (k = t, column n) of two column tiles, transposed out of B stored (t, n).
          uint32_t f[4];
          ldsm_x4_trans(f, sB + (16 * kk + (lane & 7) + (lane & 8)) * kBP + n0 + 8 * (nt + (lane >> 4)));
          mma_bf16(S[nt], xh, f[0], f[1]);
          mma_bf16(S[nt + 1], xh, f[2], f[3]);
          mma_bf16(S[nt], xl, f[0], f[1]);
          mma_bf16(S[nt + 1], xl, f[2], f[3]);
        }
      }
    }
    __syncthreads();
  }

  // The state out: to the next segment (published once every thread's stores are visible), or hT.
  float* s_out = kSegs && seg + 1 < a.segs ? a.handoff : a.hT;
  if (s_out != nullptr) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int64_t p = r0 + g + (r >= 2 ? 8 : 0), n = n0 + 8 * nt + 2 * tig + (r & 1);
        if (p < P && n < N) s_out[((b * H + h) * P + p) * N + n] = S[nt][r];
      }
    }
  }
  if (kSegs && seg + 1 < a.segs) {
    __threadfence();
    __syncthreads();
    if (tid == 0) st_release_gpu(a.sync + 1 + unit, static_cast<int>(seg + 1));
  }
}

// ------------------------------------------------------------------------------------------------------
// The decode step (selectiveStateUpdate).

constexpr int kUpdateThreads = 128;
// Threads of the one-batch-element form at and above which the vector kernel takes kBT = 4 or 8 batch
// elements a thread: about one full wave of 1024 threads on each of an H200's 132 SMs (fewer threads are
// latency-bound and gain from the spread; more are bandwidth-bound and gain from the bytes in flight).
constexpr int64_t kUpdateTileThreads = int64_t{1} << 17;

struct update_args {
  float* state;  // (state_batch, H, P, N)
  const void* x;
  const void* dt;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* dt_bias;
  const int32_t* sbi;
  void* out;
  int x_dt, dt_dt, b_dt, c_dt, z_dt, out_dt;
  int64_t batch, state_batch, H, P, N, G;
  int lanes;  // threads per row, a power of two <= 32
  bool softplus;
};

// One row (b, head, headdim element) per `lanes` threads; each holds kV consecutive states at a time.
// kAPerState: Mamba-1's A (dim, dstate); otherwise one A per head.
template <int kV, bool kAPerState>
__global__ void __launch_bounds__(kUpdateThreads) selective_state_update_kernel(const update_args a) {
  const int Q = a.lanes;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * kUpdateThreads + threadIdx.x;
  const int64_t rows = a.batch * a.H * a.P;
  const int64_t row = gid / Q;
  const int lq = static_cast<int>(gid % Q);
  const bool valid = row < rows;
  const int64_t r = valid ? row : 0;
  const int64_t b = r / (a.H * a.P), h = (r / a.P) % a.H, pp = r % a.P;
  const int64_t sb = a.sbi != nullptr ? a.sbi[b] : b;
  const bool pad = sb < 0 || sb >= a.state_batch;
  const int64_t N = a.N;
  float y = 0.0f, x = 0.0f;
  if (valid && !pad) {
    x = load_any(a.x, a.x_dt, r);
    float dt = load_any(a.dt, a.dt_dt, b * a.H + h) + (a.dt_bias != nullptr ? a.dt_bias[h] : 0.0f);
    if (a.softplus) dt = softplus(dt);
    const float dtx = dt * x;
    const float head_decay = kAPerState ? 0.0f : ex2_approx(dt * a.A[h] * kLog2e);
    const int64_t g = h / (a.H / a.G);
    const int64_t bc = (b * a.G + g) * N;
    float* srow = a.state + ((sb * a.H + h) * a.P + pp) * N;
    for (int64_t n0 = static_cast<int64_t>(lq) * kV; n0 < N; n0 += static_cast<int64_t>(Q) * kV) {
      float s[kV];
      if constexpr (kV == 4) {
        const float4 v = *reinterpret_cast<const float4*>(srow + n0);
        s[0] = v.x, s[1] = v.y, s[2] = v.z, s[3] = v.w;
      } else {
        s[0] = srow[n0];
      }
#pragma unroll
      for (int e = 0; e < kV; ++e) {
        const int64_t n = n0 + e;
        const float decay = kAPerState ? ex2_approx(dt * a.A[h * N + n] * kLog2e) : head_decay;
        s[e] = fmaf(s[e], decay, dtx * load_any(a.B, a.b_dt, bc + n));
        y = fmaf(s[e], load_any(a.C, a.c_dt, bc + n), y);
      }
      if constexpr (kV == 4) {
        *reinterpret_cast<float4*>(srow + n0) = make_float4(s[0], s[1], s[2], s[3]);
      } else {
        srow[n0] = s[0];
      }
    }
  }
  // Lanes of a row are Q consecutive lanes of one warp (Q divides 32), and every thread gets here.
  for (int o = Q / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
  if (valid && lq == 0) {
    float o = 0.0f;
    if (!pad) {
      o = y + (a.D != nullptr ? a.D[h] * x : 0.0f);
      if (a.z != nullptr) o *= silu(load_any(a.z, a.z_dt, r));
    }
    store_any(a.out, a.out_dt, r, o);
  }
}

// load4_any (below) in two halves (as ld_bits): the raw words (float32: four; 16-bit: two in .x, .y), then
// the values, so that several such loads go out before any is waited for.
__device__ __forceinline__ uint4 load4_raw(const void* p, int dt, int64_t off) {
  if (dt == SSMKIT_DTYPE_F32) return *reinterpret_cast<const uint4*>(static_cast<const float*>(p) + off);
  const uint2 w = *reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(p) + off);
  return make_uint4(w.x, w.y, 0u, 0u);
}
__device__ __forceinline__ float4 raw4_value(int dt, uint4 w) {
  if (dt == SSMKIT_DTYPE_F32)
    return make_float4(__uint_as_float(w.x), __uint_as_float(w.y), __uint_as_float(w.z),
                       __uint_as_float(w.w));
  float4 v;
  unpack2(w.x, dt, v.x, v.y);
  unpack2(w.y, dt, v.z, v.w);
  return v;
}

// Four consecutive elements [off, off + 4) of a float tensor, off a multiple of 4 (16-bit: 8-byte loads).
__device__ __forceinline__ float4 load4_any(const void* p, int dt, int64_t off) {
  if (dt == SSMKIT_DTYPE_F32) return *reinterpret_cast<const float4*>(static_cast<const float*>(p) + off);
  const uint2 w = *reinterpret_cast<const uint2*>(static_cast<const unsigned short*>(p) + off);
  float4 v;
  unpack2(w.x, dt, v.x, v.y);
  unpack2(w.y, dt, v.z, v.w);
  return v;
}

// kBytes (8 or 16) from global to shared memory without a trip through registers (cp.async.ca: 8-byte
// copies are allowed there); full = false writes zeros and reads nothing. sm_80 and later; other targets
// copy through registers.
template <int kBytes>
__device__ __forceinline__ void cp_async_piece(void* dst, const void* src, bool full) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(__cvta_generic_to_global(src)),
               "n"(kBytes), "r"(full ? kBytes : 0)
               : "memory");
#else
  if constexpr (kBytes == 16) {
    *static_cast<uint4*>(dst) = full ? *static_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
  } else {
    *static_cast<uint2*>(dst) = full ? *static_cast<const uint2*>(src) : make_uint2(0, 0);
  }
#endif
}

// Batch element j's per-row scalar from v (see selective_state_update_vec_kernel): v[j], or with kSpread
// slot j / 4 of lane j % 4 of the row's lanes (lane0 the first). j is a compile-time constant once the
// caller's loop is unrolled; with kSpread every lane of the warp must take part.
template <bool kSpread, typename T, int kM>
__device__ __forceinline__ T batch_scalar(const T (&v)[kM], int j, int lane0) {
  if constexpr (kSpread) {
    return __shfl_sync(0xffffffffu, v[j / 4], lane0 + (j & 3));
  } else {
    return v[j];
  }
}

// The common shapes (dstate % 4 == 0, dstate <= 128): each row (head, headdim element) is Q = dstate / 4
// (rounded up to a power of two) adjacent lanes holding one float4 of the state each, and each thread
// serves that row for kBT batch elements (grid y = batch tiles), with every load of all of them (state, B,
// C, x, dt, z) issued before the first store: one memory round trip per thread. The row's A, dtBias and D
// are read once for the kBT batch elements. A warp's 32 float4 state pieces are 512 contiguous bytes (8
// rows of 64 bytes at dstate 16): coalesced. 32-bit row math (no 64-bit division subroutines); softplus
// and silu take two MUFU operations each (softplus_fast, silu_fast, as the scan). Each batch element's
// row sum is reduced and its output stored as soon as its state is (no sums held across the loop).
//
// A state update is streaming work: each state byte is read once and written once, so its time is the
// state's bytes over the bandwidth the SMs can keep busy, and by Little's law that is the bytes of reads
// in flight an SM over the loaded latency. Three forms, chosen by the work's size (kUpdateTileThreads):
// - Large Mamba-1 batches (>= 8, dstate > 12): kBT = 8 batch elements a thread, the scalars spread over
//   the row's first 4 lanes and read by shuffle (2 slots a thread instead of 8). The state pieces go to
//   shared memory by cp.async.cg (L2 only) with B and C, so no register waits on a load: the registers
//   bound the resident blocks, not the bytes in flight. 48 registers, no spills, 10 blocks an SM (17 KB
//   of shared memory each): 160 KB of state reads in flight an SM. The previous version of this form
//   loaded the state into registers (128 bytes a thread, 79 registers, 6 blocks an SM: 96 KB in flight)
//   and ran batch 256 at dim 5120, dstate 16 (168 MB of state read and written) in 72.5 us under Nsight,
//   2.3 TB/s with 43% of DRAM throughput and 35% achieved occupancy: bound by the bytes in flight.
//   Prediction with 160 KB (5/3 of them): 48-58 us at batch 256, the floor being DRAM (~40-45 us at
//   3.7-4.2 TB/s), 3.9 waves of 1320 blocks; batch 64 (42 MB, 1280 blocks: one wave) 12-15 us of kernel.
// - Other large batches (>= 4; the multi-head form, small dstate): kBT = 4, scalars a thread each, the
//   state staged the same way; 61-63 registers, 8 blocks an SM: 64 KB in flight an SM.
// - Small work (latency-bound: batch 1 was 80 blocks at dim 5120, on 80 of 132 SMs): kBT = 1 in 64-thread
//   blocks, one row a thread, state, B and C loaded into registers (40-44 registers): 320 blocks spread
//   over every SM. At batch 1 a call from Node is host-bound (~10 us of validation, Node-API and launch
//   against a few us of kernel).
// Registers and spills: -Xptxas -v on sm_90a (sm_80 and sm_89 alike, no spills).
//
// Launch (launch_update). At batch 256 a call from Node took 61.2 us against 56.4 us of kernel: ~4.8 us a
// call between one kernel's last wave and the next kernel's first loads (launch, block dispatch, ramp).
// The bytes in flight are not short (160 KB an SM against the ~32 KB that 4.2 TB/s needs at ~1 us of
// loaded latency), so the launch is what is left: the kernels go out with programmatic dependent launch on
// sm_90 (pdl_wait at the top, before any global access; pdl_trigger right after it), so that the next
// call's blocks are resident when this one completes. Prediction: batch 256 61.2 -> 57-59 us a call,
// batch 64 16.8 -> 15-16 us; batch 1 is host-bound and stays. Measured (H200, a200787): batch 256 58.2
// us a call (60.6 launched plainly in the same run), kernel 57.8 us under Nsight: 2.63 TB/s of DRAM (55%)
// with issue slots 63% busy, 1787 instructions a thread (223 per batch element of 4 states). So the
// instructions count too: dt's bias and softplus and the gate silu(z) are now computed where the
// scalars are held, before the shuffles (kBT / 4 = 2 of each a thread instead of 8 with kSpread: ~115
// instructions and 24 MUFU operations fewer a thread, -6%). Prediction: kernel 57.8 -> 55-57 us.
// Measured (H200, d25974a): batch 256 57.3 / 56.9 us a call (59.1 launched plainly in the same run),
// batch 64 12.9 / 13.0 us (14.7 plainly), batch 1 16.4 us on the first row and 14.6 us on the last (the
// host's share, which the batch-64 row bounds at <= 13 us once the JavaScript is warm).

// Resident blocks an SM each form is built for (registers: 64, 48, 64 at most). The 8-element form's 17 KB
// of shared memory allow 12 blocks; its registers spill at 40 (12 blocks), so 10.
constexpr int update_min_blocks(int kbt, bool spread) {
  return kbt == 1 ? 16 : spread ? 10 : 8;
}

template <bool kAPerState, int kBT, int kThreads, bool kSpread = false>
__global__ void __launch_bounds__(kThreads, update_min_blocks(kBT, kSpread))
    selective_state_update_vec_kernel(const update_args a) {
  SSMKIT_TRACE_SCOPE();
  // Launched with programmatic dependent launch (launch_update): nothing global is touched before the
  // kernel ahead has finished; the next kernel may be scheduled as soon as every block has started.
  pdl_wait();
  pdl_trigger();
  // Grid: x over the rows (head, headdim element), y over tiles of kBT batch elements. All index math but
  // the state's offset is 32-bit (the launcher checks H * P * N < 2^31).
  const int Q = a.lanes;
  const int lq = threadIdx.x % Q;
  const int HP = static_cast<int>(a.H * a.P), P = static_cast<int>(a.P), N = static_cast<int>(a.N);
  const int G = static_cast<int>(a.G), H = static_cast<int>(a.H), hpg = H / G;
  const int row = blockIdx.x * (kThreads / Q) + threadIdx.x / Q;
  const bool valid = row < HP;
  const int r = valid ? row : 0;
  const int h = P == 1 ? r : r / P;
  const int g = G == 1 ? 0 : h / hpg;
  const int n0 = lq * 4;
  const bool has_n = n0 < N;
  const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
  const float4 av = valid && has_n && kAPerState ? *reinterpret_cast<const float4*>(a.A + h * N + n0) : zero;
  const float ah = valid && !kAPerState ? a.A[h] : 0.0f;
  const float dbias = valid && a.dt_bias != nullptr ? a.dt_bias[h] : 0.0f;
  const float dd = valid && a.D != nullptr ? a.D[h] : 0.0f;
  // The per-(batch element, row) scalars: each thread holds those of its kBT batch elements, or with
  // kSpread (Q >= 4 lanes a row) lane lq < 4 of a row holds those of batch elements lq, lq + 4, ... and
  // the row's lanes read them by shuffle: kBT / 4 slots a thread instead of kBT, which leaves the
  // registers to the state. sbi: the state row, -1 where none (padding, past the batch).
  constexpr int kM = kSpread ? kBT / 4 : kBT;
  float xs[kM], dts[kM], zs[kM];
  int sbs[kM];
  // The scalars' bits first, their values after (ld_bits): all of them out before any is waited for.
  uint32_t xb[kM], db[kM], zb[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    const int j = kSpread ? lq + 4 * m : m;
    const int b = blockIdx.y * kBT + j;
    const bool in_batch = valid && (!kSpread || lq < 4) && b < a.batch;
    const int sb = !in_batch ? -1 : a.sbi != nullptr ? a.sbi[b] : b;
    const bool live = in_batch && sb >= 0 && sb < a.state_batch;
    const int64_t xr = static_cast<int64_t>(b) * HP + r;
    sbs[m] = live ? sb : -1;
    xb[m] = live ? ld_bits(a.x, a.x_dt, xr) : 0u;
    db[m] = live ? ld_bits(a.dt, a.dt_dt, static_cast<int64_t>(b) * H + h) : 0u;
    zb[m] = live && a.z != nullptr ? ld_bits(a.z, a.z_dt, xr) : 0u;
  }
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    xs[m] = bits_value(a.x_dt, xb[m]);
    dts[m] = bits_value(a.dt_dt, db[m]);
    zs[m] = bits_value(a.z_dt, zb[m]);
  }
  // dt (bias, softplus) and the gate silu(z) where the scalars are held, before any shuffle: with kSpread
  // kBT / 4 of each a thread instead of kBT (the same operations on the same values).
#pragma unroll
  for (int m = 0; m < kM; ++m) {
    float d = dts[m] + dbias;
    if (a.softplus) d = softplus_fast(d);
    dts[m] = d;
    if (a.z != nullptr) zs[m] = silu_fast(zs[m]);
  }
  const int row_lane0 = (threadIdx.x & 31) & ~(Q - 1);
  // kBT > 1: the state pieces (kBT, kThreads) of 16 bytes, then B, then C (below).
  extern __shared__ float4 update_smem[];
  float4 s1 = zero, bv = zero, cv = zero;  // kBT == 1: the row's state piece, B and C in registers
  // (state_batch, H, P, N): the row's float4 piece of state row sb is srow + sb * sstride.
  float* const srow = a.state + (static_cast<int64_t>(r) * N + n0);
  const int64_t sstride = static_cast<int64_t>(HP) * N;
#pragma unroll
  for (int j = 0; j < kBT; ++j) {
    const int sb = batch_scalar<kSpread>(sbs, j, row_lane0);
    const bool ld = sb >= 0 && has_n;
    const float* sp = srow + (ld ? sb : 0) * sstride;
    if constexpr (kBT == 1) {
      s1 = ld ? *reinterpret_cast<const float4*>(sp) : zero;
      const int64_t bc = (static_cast<int64_t>(blockIdx.y) * G + g) * N + n0;
      const uint4 z4 = make_uint4(0u, 0u, 0u, 0u);
      const uint4 braw = ld ? load4_raw(a.B, a.b_dt, bc) : z4;
      const uint4 craw = ld ? load4_raw(a.C, a.c_dt, bc) : z4;
      bv = ld ? raw4_value(a.b_dt, braw) : zero;
      cv = ld ? raw4_value(a.c_dt, craw) : zero;
    } else {
      // Into shared memory without registers: the thread reads its own pieces back after the wait.
      cp_async16(update_smem + j * kThreads + threadIdx.x, ld ? sp : a.state, ld);
    }
  }
  // kBT > 1: B and C of the tile's batch elements and of the groups the block's rows touch (g_lo ..
  // g_lo + ng - 1), staged in shared memory in their own dtypes (batch-wide values: holding them a thread
  // per batch element took 32 more registers and spilled), copied by cp.async alongside the state: all of
  // a thread's copies in flight at once (2 x kBT x ng x N / 4 pieces: several a thread at dstate 128).
  float4* const bc_smem = update_smem + (kBT > 1 ? kBT * kThreads : 0);  // (kBT, ng, N / 4) pieces each
  int g_lo = 0, ng = 1;
  if constexpr (kBT > 1) {
    const int rpb = kThreads / Q;
    const int first = blockIdx.x * rpb, last = min(first + rpb, HP) - 1;
    g_lo = G == 1 ? 0 : (P == 1 ? first : first / P) / hpg;
    ng = G == 1 ? 1 : (P == 1 ? last : last / P) / hpg - g_lo + 1;
    const int quads = N / 4, per = kBT * ng * quads;
#pragma unroll 1
    for (int i = threadIdx.x; i < 2 * per; i += kThreads) {
      const int which = i >= per, k = i - which * per;  // k = (j * ng + gl) * quads + q
      const int q = k % quads, t = k / quads, gl = t % ng, j = t / ng;
      const int b = blockIdx.y * kBT + j;
      const void* src = which == 0 ? a.B : a.C;
      const bool f32 = (which == 0 ? a.b_dt : a.c_dt) == SSMKIT_DTYPE_F32;
      const int64_t off = (static_cast<int64_t>(b) * G + g_lo + gl) * N + q * 4;
      // Past the batch: zeros (the source is then any valid address).
      const bool full = b < a.batch;
      const char* from = static_cast<const char*>(src) + (full ? off : 0) * (f32 ? 4 : 2);
      char* to = reinterpret_cast<char*>(bc_smem + which * per) + k * (f32 ? 16 : 8);
      if (f32) {
        cp_async_piece<16>(to, from, full);
      } else {
        cp_async_piece<8>(to, from, full);
      }
    }
    cp_async_wait_all();
    __syncthreads();
  }
  // One batch element at a time, its row sum reduced and its output stored before the next (no sums held
  // across the loop: the registers go to the blocks resident an SM).
#pragma unroll
  for (int j = 0; j < kBT; ++j) {
    float4 bj, cj, sj;
    if constexpr (kBT == 1) {
      bj = bv, cj = cv, sj = s1;
    } else {
      // Lanes past dstate and rows past the end read nothing (their B is 0, so their state and y stay 0).
      const int quads = N / 4, gl = valid ? g - g_lo : 0, k = (j * ng + gl) * quads + lq;
      bj = has_n ? load4_any(bc_smem, a.b_dt, static_cast<int64_t>(k) * 4) : zero;
      cj = has_n ? load4_any(bc_smem + kBT * ng * quads, a.c_dt, static_cast<int64_t>(k) * 4) : zero;
      sj = update_smem[j * kThreads + threadIdx.x];
    }
    const int sb = batch_scalar<kSpread>(sbs, j, row_lane0);
    const float d = batch_scalar<kSpread>(dts, j, row_lane0);
    const float xj = batch_scalar<kSpread>(xs, j, row_lane0);
    const float dtx = d * xj;
    const float e = d * kLog2e;
    float4 dec;
    if (kAPerState) {
      dec =
          make_float4(ex2_approx(e * av.x), ex2_approx(e * av.y), ex2_approx(e * av.z), ex2_approx(e * av.w));
    } else {
      const float hd = ex2_approx(e * ah);
      dec = make_float4(hd, hd, hd, hd);
    }
    sj.x = fmaf(sj.x, dec.x, dtx * bj.x);
    sj.y = fmaf(sj.y, dec.y, dtx * bj.y);
    sj.z = fmaf(sj.z, dec.z, dtx * bj.z);
    sj.w = fmaf(sj.w, dec.w, dtx * bj.w);
    float y = fmaf(sj.x, cj.x, fmaf(sj.y, cj.y, fmaf(sj.z, cj.z, sj.w * cj.w)));
    if (sb >= 0 && has_n) {
      *reinterpret_cast<float4*>(srow + sb * sstride) = sj;
    }
    // The lanes of a row are Q consecutive lanes of one warp (Q divides 32); every thread gets here.
    for (int o = Q / 2; o > 0; o >>= 1) y += __shfl_xor_sync(0xffffffffu, y, o);
    const float gate = batch_scalar<kSpread>(zs, j, row_lane0);  // silu(z)
    const int b = blockIdx.y * kBT + j;
    if (valid && b < a.batch && lq == 0) {
      float o = 0.0f;
      if (sb >= 0) {
        o = fmaf(dd, xj, y);
        if (a.z != nullptr) o *= gate;
      }
      store_any(a.out, a.out_dt, static_cast<int64_t>(b) * HP + row, o);
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// The causal convolution and its streaming update.

constexpr int kConvThreads = 128;

struct conv_args {
  const void* x;  // (batch, dim, L)
  const void* weight;
  const void* bias;
  const float* init;   // (batch, dim, W - 1)
  const int32_t* seq;  // (batch, L)
  void* out;
  float* fin;  // (batch, dim, W - 1)
  int x_dt, w_dt, bias_dt, out_dt;
  int64_t batch, dim, L, W;
  bool silu;
};

// History value of row `row` at time tau < 0: the initial state, or zero.
__device__ __forceinline__ float conv_history(const conv_args& a, int64_t row, int64_t tau) {
  return a.init != nullptr ? a.init[row * (a.W - 1) + (a.W - 1) + tau] : 0.0f;
}

// The last W - 1 inputs of the row's last sequence (zeros, or the initial state, before it).
__device__ void conv_final_states(const conv_args& a, int64_t row) {
  const int64_t b = row / a.dim, L = a.L, hist = a.W - 1;
  const int32_t* seq = a.seq != nullptr ? a.seq + b * L : nullptr;
  for (int64_t j = 0; j < hist; ++j) {
    const int64_t tau = L - hist + j;
    float v = 0.0f;
    if (tau >= 0) {
      if (seq == nullptr || seq[tau] == seq[L - 1]) v = load_any(a.x, a.x_dt, row * L + tau);
    } else if (seq == nullptr || seq[0] == seq[L - 1]) {
      v = conv_history(a, row, tau);
    }
    a.fin[row * hist + j] = v;
  }
}

// Each thread: 8 steps of one (batch, channel) row. kW is the filter width. silu takes two MUFU operations
// (silu_fast): with IEEE division and expf it was ~26 instructions an output against kW FMA (the kernel's
// code shrinks from 2248 to 1832 SASS instructions at kW = 4), and the kernel looks issue-bound: 210 us
// at batch 8 x dim 5120 x 2048, width 4, bf16, against 80 us of memory; 10.5M threads of ~440
// instructions are ~145 us of issue at a perfect 528 SMSPs x 1.9 GHz (the integer divisions take nvcc's
// 32-bit path). Prediction: ~440 -> ~270 instructions a thread, 210 -> 130-150 us.
template <int kW>
__global__ void __launch_bounds__(kConvThreads) causal_conv1d_kernel(const conv_args a) {
  constexpr int kHist = kW - 1;
  constexpr int kWin = kHist + 8;
  const int64_t L = a.L;
  const int64_t nseg = (L + 7) / 8;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  if (gid >= a.batch * a.dim * nseg) return;
  const int64_t row = gid / nseg, seg = gid % nseg;
  const int64_t b = row / a.dim, c = row % a.dim;
  const int64_t t0 = seg * 8;
  const int n = static_cast<int>(min64(8, L - t0));
  const int32_t* seq = a.seq != nullptr ? a.seq + b * L : nullptr;

  // win[m] = input at time t0 - kHist + m.
  float win[kWin];
  float xv[8];
  load8(a.x, a.x_dt, row * L + t0, 1, n, xv);
#pragma unroll
  for (int m = 0; m < kHist; ++m) {
    const int64_t tau = t0 - kHist + m;
    win[m] = tau >= 0 ? load_any(a.x, a.x_dt, row * L + tau) : conv_history(a, row, tau);
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) win[kHist + e] = xv[e];
  float w[kW];
#pragma unroll
  for (int k = 0; k < kW; ++k) w[k] = load_any(a.weight, a.w_dt, c * kW + k);
  const float bias = a.bias != nullptr ? load_any(a.bias, a.bias_dt, c) : 0.0f;

  float o[8];
  if (seq == nullptr) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float acc = bias;
#pragma unroll
      for (int k = 0; k < kW; ++k) acc = fmaf(w[k], win[e + k], acc);
      o[e] = a.silu ? silu_fast(acc) : acc;
    }
  } else {
    // A tap counts only within the output's own sequence; the initial state belongs to the first.
    int32_t sv[kWin];
#pragma unroll
    for (int m = 0; m < kWin; ++m) {
      const int64_t tau = t0 - kHist + m;
      sv[m] = tau < 0 ? seq[0] : seq[min64(tau, L - 1)];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float acc = bias;
#pragma unroll
      for (int k = 0; k < kW; ++k) acc = sv[e + k] == sv[kHist + e] ? fmaf(w[k], win[e + k], acc) : acc;
      o[e] = a.silu ? silu_fast(acc) : acc;
    }
  }
  store8(a.out, a.out_dt, row * L + t0, 1, n, o);
  if (a.fin != nullptr && seg == nseg - 1) conv_final_states(a, row);
}

// Any width: one thread per output element, plain loads (widths above 8 are rare).
__global__ void __launch_bounds__(kConvThreads) causal_conv1d_any_kernel(const conv_args a) {
  const int64_t L = a.L, W = a.W, hist = W - 1;
  const int64_t gid = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  if (gid >= a.batch * a.dim * L) return;
  const int64_t row = gid / L, t = gid % L;
  const int64_t b = row / a.dim, c = row % a.dim;
  const int32_t* seq = a.seq != nullptr ? a.seq + b * L : nullptr;
  float acc = a.bias != nullptr ? load_any(a.bias, a.bias_dt, c) : 0.0f;
  for (int64_t k = 0; k < W; ++k) {
    const int64_t tau = t - hist + k;
    const int32_t s = seq == nullptr ? 0 : tau < 0 ? seq[0] : seq[tau];
    if (seq != nullptr && s != seq[t]) continue;
    const float v = tau >= 0 ? load_any(a.x, a.x_dt, row * L + tau) : conv_history(a, row, tau);
    acc = fmaf(load_any(a.weight, a.w_dt, c * W + k), v, acc);
  }
  store_any(a.out, a.out_dt, row * L + t, a.silu ? silu(acc) : acc);
  if (a.fin != nullptr && t == L - 1) conv_final_states(a, row);
}

struct conv_update_args {
  const void* x;  // (batch, dim, Ln)
  float* state;   // (state_batch, dim, SL)
  const void* weight;
  const void* bias;
  const int32_t* idx;
  void* out;
  int x_dt, w_dt, bias_dt, out_dt;
  int64_t batch, state_batch, dim, Ln, W, SL;
  bool silu;
};

// One thread per (batch, channel): the Ln outputs over [state | x], then the state shifted by Ln.
constexpr int kConvUpdateFastW = 8;  // widest filter the one-token path takes

__global__ void __launch_bounds__(kConvThreads) causal_conv1d_update_kernel(const conv_update_args a) {
  SSMKIT_TRACE_SCOPE();
  // Launched by launch_after_wait: nothing is read or written before the wait but L2 prefetches of the
  // weights and (without indices) the state row, last written a token ago.
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kConvThreads + threadIdx.x;
  const int64_t b = row / a.dim, c = row % a.dim, Ln = a.Ln, SL = a.SL, W = a.W;
  if (row < a.batch * a.dim) {
    const int64_t ws = a.w_dt == SSMKIT_DTYPE_F32 ? 4 : 2;
    prefetch_l2(static_cast<const char*>(a.weight) + c * W * ws);
    if (a.idx == nullptr && b < a.state_batch) prefetch_l2(a.state + (b * a.dim + c) * SL);
  }
  pdl_wait();
  pdl_trigger();
  if (row >= a.batch * a.dim) return;
  const int64_t sb = a.idx != nullptr ? a.idx[b] : b;
  if (sb < 0 || sb >= a.state_batch) {
    for (int64_t t = 0; t < Ln; ++t) store_any(a.out, a.out_dt, row * Ln + t, 0.0f);
    return;
  }
  float* st = a.state + (sb * a.dim + c) * SL;
  if (Ln == 1 && W <= kConvUpdateFastW && W <= SL + 1) {
    // One token (decode) of a short filter: every operand's load out before any is used (ld_bits),
    // one round trip instead of one a tap; the same arithmetic in the same order as the loop below.
    uint32_t wb[kConvUpdateFastW];
    float sv[kConvUpdateFastW];
#pragma unroll
    for (int k = 0; k < kConvUpdateFastW; ++k) {
      const int64_t m = SL - (W - 1) + k;
      wb[k] = k < W ? ld_bits(a.weight, a.w_dt, c * W + k) : 0u;
      sv[k] = k < W && m < SL ? st[m] : 0.0f;
    }
    const uint32_t xb = ld_bits(a.x, a.x_dt, row);
    const uint32_t bb = a.bias != nullptr ? ld_bits(a.bias, a.bias_dt, c) : 0u;
    const float xv = bits_value(a.x_dt, xb);
    float acc = a.bias != nullptr ? bits_value(a.bias_dt, bb) : 0.0f;
#pragma unroll
    for (int k = 0; k < kConvUpdateFastW; ++k) {
      if (k < W) acc = fmaf(bits_value(a.w_dt, wb[k]), k == W - 1 ? xv : sv[k], acc);
    }
    store_any(a.out, a.out_dt, row, a.silu ? silu(acc) : acc);
    for (int64_t i = 0; i < SL; ++i) st[i] = i + 1 < SL ? st[i + 1] : xv;
    return;
  }
  const float bias = a.bias != nullptr ? load_any(a.bias, a.bias_dt, c) : 0.0f;
  // buf = [state (SL) | x (Ln)]; output t reads buf[SL - (W - 1) + t + k].
  for (int64_t t = 0; t < Ln; ++t) {
    float acc = bias;
    for (int64_t k = 0; k < W; ++k) {
      const int64_t m = SL - (W - 1) + t + k;
      const float v = m < SL ? st[m] : load_any(a.x, a.x_dt, row * Ln + m - SL);
      acc = fmaf(load_any(a.weight, a.w_dt, c * W + k), v, acc);
    }
    store_any(a.out, a.out_dt, row * Ln + t, a.silu ? silu(acc) : acc);
  }
  // Reads run ahead of writes (source index i + Ln > i), so the shift can go in place.
  for (int64_t i = 0; i < SL; ++i) {
    const int64_t m = i + Ln;
    st[i] = m < SL ? st[m] : load_any(a.x, a.x_dt, row * Ln + m - SL);
  }
}

// ------------------------------------------------------------------------------------------------------
// Host side.

bool is_float(const tensor_view& t) {
  return t.dtype == SSMKIT_DTYPE_F32 || t.dtype == SSMKIT_DTYPE_F16 || t.dtype == SSMKIT_DTYPE_BF16;
}

// Checks that guard memory safety when the entry points are called directly; lib/ops/scan.ts has
// already checked everything with friendlier messages.
status check(const char* op, const char* arg, const tensor_view& t, std::initializer_list<int64_t> shape,
             int dtype) {
  if (!t.present()) return make_status(status_code::shape, "%s: %s: missing", op, arg);
  if (dtype == -1 ? !is_float(t) : t.dtype != dtype) {
    return make_status(status_code::dtype, "%s: %s: unexpected dtype %s", op, arg, dtype_name(t.dtype));
  }
  bool ok = t.ndim == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t d : shape) ok = ok && t.shape[i++] == d;
  if (!ok) return make_status(status_code::shape, "%s: %s: unexpected shape", op, arg);
  if (t.device < 0) return make_status(status_code::value, "%s: %s: expected a CUDA tensor", op, arg);
  return ok_status();
}

status check_opt(const char* op, const char* arg, const tensor_view& t, std::initializer_list<int64_t> shape,
                 int dtype) {
  return t.present() ? check(op, arg, t, shape, dtype) : ok_status();
}

constexpr int kAnyFloat = -1;

int next_pow2(int64_t v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

status launch_blocks(const char* op, int64_t blocks, unsigned* grid) {
  if (blocks > 0x7fffffff) return make_status(status_code::unsupported, "%s: the problem is too large", op);
  *grid = static_cast<unsigned>(blocks);
  return ok_status();
}

template <int kS, bool kVarB, bool kVarC, bool kScalarA, bool kTimeMajor>
status run_scan(const char* op, const scan_args& a, int64_t blocks, size_t smem, cudaStream_t stream) {
  auto kernel = scan_fwd_kernel<kS, kVarB, kVarC, kScalarA, kTimeMajor>;
  if (smem > 48 * 1024) {
    SSMKIT_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  unsigned grid = 0;
  SSMKIT_RETURN_IF_ERROR(launch_blocks(op, blocks, &grid));
  kernel<<<grid, kScanThreads, smem, stream>>>(a);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

template <int kS, bool kScalarA, bool kTimeMajor>
status run_scan_bc(const char* op, const scan_args& a, bool var_b, bool var_c, int64_t blocks, size_t smem,
                   cudaStream_t stream) {
  if constexpr (kTimeMajor) {
    return run_scan<kS, true, true, kScalarA, kTimeMajor>(op, a, blocks, smem, stream);
  } else {
    if (var_b && var_c) return run_scan<kS, true, true, kScalarA, kTimeMajor>(op, a, blocks, smem, stream);
    if (var_b) return run_scan<kS, true, false, kScalarA, kTimeMajor>(op, a, blocks, smem, stream);
    if (var_c) return run_scan<kS, false, true, kScalarA, kTimeMajor>(op, a, blocks, smem, stream);
    return run_scan<kS, false, false, kScalarA, kTimeMajor>(op, a, blocks, smem, stream);
  }
}

// Picks the states per thread (and so the threads per channel) and launches. The cost model: the SM
// with the most blocks sets the time; a block's work is its threads' states times the cycles one
// (step, state) costs a warp at that split (more lanes per channel add shared-memory reads and the sum of
// partial y), and fewer than two warps per SM sub-partition leave latency exposed.
template <bool kScalarA, bool kTimeMajor>
status launch_scan(const char* op, scan_args a, int64_t batch, bool var_b, bool var_c, cudaStream_t stream) {
  int dev = 0, sms = 1, smem_optin = 48 * 1024;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const int kCandidates[4] = {16, 8, 4, 2};
  const double kCycles[4] = {kScalarA ? 4.0 : 10.0, kScalarA ? 4.5 : 10.0, kScalarA ? 5.5 : 10.5,
                             kScalarA ? 7.0 : 11.5};
  // SSMKIT_CUDA_SCAN_STATES=16|8|4|2 forces the split, for tests and benchmarks of each kernel variant.
  const int force = env_int("SSMKIT_CUDA_SCAN_STATES", 0);
  int best = -1;
  double best_cost = 0;
  int64_t best_blocks = 0;
  size_t best_smem = 0;
  for (int i = 0; i < 4; ++i) {
    const int ks = kCandidates[i];
    if (force != 0 && ks != force) continue;
    const int lanes = next_pow2((a.dstate + ks - 1) / ks);
    // SSD stages 8 channels per vector, so a block needs at least 8 channels.
    if (lanes > (kTimeMajor ? kScanThreads / 8 : 32)) continue;
    const int chans = kScanThreads / lanes;
    const size_t smem = scan_layout(chans, lanes * ks, var_b, var_c).total * sizeof(float);
    if (smem > static_cast<size_t>(smem_optin)) continue;
    const int64_t blocks = batch * a.nseg * ((a.seg_len + chans - 1) / chans);
    const double per_sm = static_cast<double>((blocks + sms - 1) / sms);
    const double cost = per_sm * ks * kCycles[i] * (per_sm < 2 ? 2.0 / per_sm : 1.0);
    if (best < 0 || cost < best_cost) {
      best = i, best_cost = cost, best_blocks = blocks, best_smem = smem;
    }
  }
  if (best < 0) {
    if (force != 0) {
      return make_status(status_code::value, "%s: SSMKIT_CUDA_SCAN_STATES=%d does not fit dstate %lld", op,
                         force, static_cast<long long>(a.dstate));
    }
    return make_status(status_code::unsupported, "%s: dstate %lld is more than the CUDA kernel supports (%d)",
                       op, static_cast<long long>(a.dstate), kTimeMajor ? 256 : 512);
  }
  const int ks = kCandidates[best];
  a.lanes = next_pow2((a.dstate + ks - 1) / ks);
  a.chans = kScanThreads / a.lanes;
  a.blocks_per_seg = (a.seg_len + a.chans - 1) / a.chans;
  switch (ks) {
    case 16:
      return run_scan_bc<16, kScalarA, kTimeMajor>(op, a, var_b, var_c, best_blocks, best_smem, stream);
    case 8: return run_scan_bc<8, kScalarA, kTimeMajor>(op, a, var_b, var_c, best_blocks, best_smem, stream);
    case 4: return run_scan_bc<4, kScalarA, kTimeMajor>(op, a, var_b, var_c, best_blocks, best_smem, stream);
    default: return run_scan_bc<2, kScalarA, kTimeMajor>(op, a, var_b, var_c, best_blocks, best_smem, stream);
  }
}

// Segments a (batch, head) sequence is cut into (ssd_tc_args::segs): the blocks' waves run whole units of
// equal length, so units a little over a whole number of waves leave most slots idle in the last one (640
// units on 264 slots: 2.42 waves, the third a fifth full). segs time segments a unit make units x segs
// items of 1 / segs the length; the count with the fewest item-lengths of waves wins, the smaller on a tie.
// A segment cannot run before the one ahead of it, so fewer units than slots gain nothing (segs = 1).
// SSMKIT_CUDA_SSD_SEGS forces a count (1 .. 8; at most one segment a chunk).
int ssd_segments(int64_t units, int64_t chunks, int64_t slots) {
  int segs = 1;
  if (units >= slots) {
    double best = static_cast<double>((units + slots - 1) / slots);
    for (int s = 2; s <= 4; ++s) {
      const double cost = static_cast<double>((units * s + slots - 1) / slots) / s;
      if (cost < best - 1e-9) best = cost, segs = s;
    }
  }
  const int forced = env_int("SSMKIT_CUDA_SSD_SEGS", 0);
  if (forced > 0) segs = forced < 8 ? forced : 8;
  return static_cast<int>(min64(segs, max64(1, chunks)));
}

template <int kN, bool kLean, bool kShareM = false>
status run_ssd_tc(ssd_tc_args t, unsigned grid, cudaStream_t stream) {
  constexpr int smem = kShareM ? ssd_tc_layout<kN>::kSharedBytes : ssd_tc_layout<kN>::kBytes;
  // sm_86 and sm_89 give a block at most 99 KB of shared memory (sm_80 163 KB, sm_90 227 KB); the
  // shared-M form runs only where the device allows its size (checked by the caller).
  static_assert(kShareM || smem <= 99 * 1024,
                "ssd_tc_kernel must fit every target's shared memory per block");
  // A kernel's attributes, set before its launch.
  auto prepare = [&](auto* kernel) -> status {
    if (smem > 48 * 1024) {
      SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    }
    if constexpr (kShareM) {
      // Two blocks an SM need all of the SM's shared memory for the L1/shared split.
      SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                             cudaSharedmemCarveoutMaxShared));
    }
    return ok_status();
  };
  auto* const plain = ssd_tc_kernel<kN, kLean, kShareM, false>;
  auto* const segmented = ssd_tc_kernel<kN, kLean, kShareM, true>;
  SSMKIT_RETURN_IF_ERROR(prepare(plain));
  // The slots: fewer units than SMs are fewer than slots whatever an SM holds, so the occupancy is asked
  // only where it can matter.
  int dev = 0, sms = 1, resident = 1;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (grid >= static_cast<unsigned>(sms)) {
    SSMKIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, plain, kSsdThreads, smem));
  }
  t.batch_heads = grid;
  t.segs = ssd_segments(grid, (t.L + kSsdQ - 1) / kSsdQ, static_cast<int64_t>(sms) * max64(1, resident));
  if (t.segs == 1) {
    plain<<<grid, kSsdThreads, smem, stream>>>(t);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  }
  SSMKIT_RETURN_IF_ERROR(prepare(segmented));
  SSMKIT_RETURN_IF_ERROR(launch_blocks("ssdScan", t.batch_heads * t.segs, &grid));
  const size_t flags = sizeof(int) * (1 + static_cast<size_t>(t.batch_heads));
  const size_t at = (flags + 255) / 256 * 256;
  const size_t state = sizeof(float) * static_cast<size_t>(t.batch_heads * t.P * t.N);
  void* work = nullptr;
  SSMKIT_CUDA_CHECK(cudaMallocAsync(&work, at + state, stream));
  t.sync = static_cast<int*>(work);
  t.handoff = reinterpret_cast<float*>(static_cast<char*>(work) + at);
  cudaError_t err = cudaMemsetAsync(work, 0, flags, stream);
  if (err == cudaSuccess) {
    segmented<<<grid, kSsdThreads, smem, stream>>>(t);
    err = cudaGetLastError();
  }
  cudaFreeAsync(work, stream);
  SSMKIT_CUDA_CHECK(err);
  return ok_status();
}

const int32_t* seq_ptr(const tensor_view& t) {
  return t.present() ? t.ptr<const int32_t>() : nullptr;
}

// Launches the kernel, or with resident != nullptr stores how many of its blocks an SM holds at once.
template <int kP, int kS, bool kVarB, bool kVarC, bool kLocal, int kDt, int kTPoly>
status run_scan1(const char* op, const scan1_args& a, int64_t blocks, cudaStream_t stream, int* resident) {
  if (resident != nullptr) {
    SSMKIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        resident, scan1_kernel<kP, kS, kVarB, kVarC, kLocal, kDt, kTPoly>, scan1_threads(kP, kS), 0));
    return ok_status();
  }
  unsigned grid = 0;
  SSMKIT_RETURN_IF_ERROR(launch_blocks(op, blocks, &grid));
  scan1_kernel<kP, kS, kVarB, kVarC, kLocal, kDt, kTPoly><<<grid, scan1_threads(kP, kS), 0, stream>>>(a);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

template <int kP, int kS, int kDt = -1, int kTPoly = 0>
status run_scan1_bc(const char* op, const scan1_args& a, bool var_b, bool var_c, bool local, int64_t blocks,
                    cudaStream_t stream, int* resident) {
  // The local pass reads no C.
  if (local) {
    return var_b ? run_scan1<kP, kS, true, false, true, kDt, kTPoly>(op, a, blocks, stream, resident)
                 : run_scan1<kP, kS, false, false, true, kDt, kTPoly>(op, a, blocks, stream, resident);
  }
  if (var_b && var_c)
    return run_scan1<kP, kS, true, true, false, kDt, kTPoly>(op, a, blocks, stream, resident);
  if (var_b) return run_scan1<kP, kS, true, false, false, kDt, kTPoly>(op, a, blocks, stream, resident);
  if (var_c) return run_scan1<kP, kS, false, true, false, kDt, kTPoly>(op, a, blocks, stream, resident);
  return run_scan1<kP, kS, false, false, false, kDt, kTPoly>(op, a, blocks, stream, resident);
}

// The forms (threads a channel x states a thread): 1 x 8 (dstate <= 8), 2 x 8 (<= 16), 1 x 16 (<= 16,
// forced by SSMKIT_CUDA_SCAN_LANES=1), 4 x 8 (<= 32).
status run_scan1_p(const char* op, int lanes, int states, int typed_dt, const scan1_args& a, bool var_b,
                   bool var_c, bool local, int64_t blocks, cudaStream_t stream, int* resident = nullptr) {
  // The typed form: its dtype and FMA-pipe exp2 count as template arguments.
  auto typed = [&](auto dt) {
    constexpr int kDt = decltype(dt)::value;
    return a.poly == 1 ? run_scan1_bc<2, 8, kDt, 1>(op, a, var_b, var_c, local, blocks, stream, resident)
                       : run_scan1_bc<2, 8, kDt, 0>(op, a, var_b, var_c, local, blocks, stream, resident);
  };
  if (typed_dt == SSMKIT_DTYPE_BF16) return typed(std::integral_constant<int, SSMKIT_DTYPE_BF16>{});
  if (typed_dt == SSMKIT_DTYPE_F16) return typed(std::integral_constant<int, SSMKIT_DTYPE_F16>{});
  if (typed_dt == SSMKIT_DTYPE_F32) return typed(std::integral_constant<int, SSMKIT_DTYPE_F32>{});
  if (lanes == 1 && states == 16)
    return run_scan1_bc<1, 16>(op, a, var_b, var_c, local, blocks, stream, resident);
  if (lanes == 1) return run_scan1_bc<1, 8>(op, a, var_b, var_c, local, blocks, stream, resident);
  if (lanes == 2) return run_scan1_bc<2, 8>(op, a, var_b, var_c, local, blocks, stream, resident);
  return run_scan1_bc<4, 8>(op, a, var_b, var_c, local, blocks, stream, resident);
}

// Chunks for the time-parallel variant. The cost model: a launch takes (blocks on the busiest SM, rounded
// up to whole waves of `resident` blocks: a wave's last blocks run nearly as long as a full wave) x
// (steps per block, plus 4 a chunk state that the last chunk folds in); the local pass costs 0.8 of a
// full pass per step (no C, y or output). One chunk unless splitting time pays for the local pass.
// Measured (H200, bf16 batch 1 x dim 5120 x seqlen 16384, typed form): 8 chunks 1110.7 us, 12 1086.2, 16
// 1083.5, 4 1249.8, 1 1777.3; the previous model (blocks not rounded to waves, no fold cost) chose 57
// chunks of 288 steps: 1236-1241 us.
int64_t scan1_chunks(int64_t blocks_per_chunk, int64_t L, int sms, int64_t resident, int64_t tile) {
  int64_t best_k = 1;
  double best = 0;
  for (int64_t k = 1; k <= 64; ++k) {
    const int64_t len = ((L + k - 1) / k + tile - 1) / tile * tile;
    if (k > 1 && len < 256) break;
    const int64_t kr = (L + len - 1) / len;
    if (kr != k) continue;
    auto busiest = [&](int64_t chunks) {
      const int64_t wave = sms * resident;
      return static_cast<double>((blocks_per_chunk * chunks + wave - 1) / wave * resident);
    };
    const double cost = busiest(k) * static_cast<double>(len + 4 * (k - 1)) +
                        (k > 1 ? 0.8 * busiest(k - 1) * static_cast<double>(len) : 0.0);
    if (k == 1 || cost < best) best = cost, best_k = k;
  }
  return best_k;
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// selectiveScan at dstate <= 32 on scan1_kernel; SSMKIT_CUDA_SCAN_CHUNKS forces the number of time
// chunks and SSMKIT_CUDA_SCAN_POLY the states a thread takes through the FMA-pipe exp2 (tests, benches).
status launch_scan1(const char* op, const selective_scan_params& p, cudaStream_t stream) {
  const int64_t Bt = p.batch, Dm = p.dim, L = p.seqlen, N = p.dstate;
  const bool var_b = p.groups_b > 0, var_c = p.groups_c > 0;
  scan1_args a{};
  a.u = p.u.data, a.delta = p.delta.data, a.z = p.z.data, a.out = p.out.data;
  a.A = p.A.ptr<const float>(), a.B = p.B.data, a.C = p.C.data;
  a.D = p.D.ptr<const float>(), a.delta_bias = p.delta_bias.ptr<const float>();
  a.h0 = p.initial_state.ptr<const float>(), a.hT = p.last_state.ptr<float>();
  a.seq_idx = seq_ptr(p.seq_idx);
  a.u_dt = p.u.dtype, a.delta_dt = p.delta.dtype, a.z_dt = p.z.present() ? p.z.dtype : SSMKIT_DTYPE_F32;
  a.out_dt = p.out.dtype, a.b_dt = p.B.dtype, a.c_dt = p.C.dtype;
  a.batch = Bt, a.dim = Dm, a.L = L, a.N = N;
  a.groups = var_b ? p.groups_b : var_c ? p.groups_c : 1;
  a.cpg = Dm / a.groups;
  a.softplus = p.delta_softplus;
  a.vec = L % 8 == 0 && aligned16(a.u) && aligned16(a.delta) && aligned16(a.out) && aligned16(a.z) &&
          (!var_b || aligned16(a.B)) && (!var_c || aligned16(a.C));
  // SSMKIT_CUDA_SCAN_LANES=1 forces the 1 x 16 form at 8 < dstate <= 16 (benchmarks, tests).
  const bool one_lane = env_int("SSMKIT_CUDA_SCAN_LANES", 0) == 1;
  const int lanes = N <= 8 ? 1 : N <= 16 ? (one_lane ? 1 : 2) : 4;
  const int states = N > 8 && N <= 16 && one_lane ? 16 : 8;
  const int threads = scan1_threads(lanes, states);
  a.bpg = (a.cpg + threads / lanes - 1) / (threads / lanes);
  a.poly = env_int("SSMKIT_CUDA_SCAN_POLY", 0);
  if (a.poly < 0 || a.poly > 2) {
    return make_status(status_code::value, "%s: SSMKIT_CUDA_SCAN_POLY must be 0, 1 or 2", op);
  }
  const int64_t per_chunk = Bt * a.groups * a.bpg;
  // The typed form of the two-thread 8-state kernel wherever it applies (SSMKIT_CUDA_SCAN_TYPED=0 keeps
  // the run-time form): one dtype for u, delta, out, z and variable B/C, 16-byte vectors (so seqlen % 8
  // == 0, whole sub-tiles) and poly 0 or 1.
  const int u_dt = p.u.dtype;
  const bool one_dtype = p.delta.dtype == u_dt && p.out.dtype == u_dt &&
                         (!p.z.present() || p.z.dtype == u_dt) && (!var_b || p.B.dtype == u_dt) &&
                         (!var_c || p.C.dtype == u_dt) &&
                         (u_dt == SSMKIT_DTYPE_F32 || u_dt == SSMKIT_DTYPE_F16 || u_dt == SSMKIT_DTYPE_BF16);
  const bool typed = env_int("SSMKIT_CUDA_SCAN_TYPED", 1) != 0 && lanes == 2 && states == 8 && one_dtype &&
                     a.vec && a.poly <= 1;
  const int typed_dt = typed ? u_dt : -1;

  int dev = 0, sms = 1;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  // Chunks are whole tiles of the kernel that runs; its blocks an SM holds set the waves.
  const int64_t tile = typed ? kS1TypedTile : kS1Tile;
  int resident = 1;
  SSMKIT_RETURN_IF_ERROR(
      run_scan1_p(op, lanes, states, typed_dt, a, var_b, var_c, false, 0, stream, &resident));
  int64_t k = L > 0 ? scan1_chunks(per_chunk, L, sms, max64(1, resident), tile) : 1;
  const int forced = env_int("SSMKIT_CUDA_SCAN_CHUNKS", 0);
  if (forced > 0) k = forced;
  k = max64(1, min64(k, (L + tile - 1) / tile));
  a.chunk_len = ((L + k - 1) / k + tile - 1) / tile * tile;
  if (a.chunk_len == 0) a.chunk_len = tile;
  a.nchunks = max64(1, (L + a.chunk_len - 1) / a.chunk_len);

  void* work = nullptr;
  if (a.nchunks > 1) {
    const size_t bytes = 2 * sizeof(float) * static_cast<size_t>((a.nchunks - 1) * Bt * Dm * N);
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&work, bytes, stream));
    a.chunk_h = static_cast<float*>(work);
    a.chunk_decay = a.chunk_h + (a.nchunks - 1) * Bt * Dm * N;
    const status s =
        run_scan1_p(op, lanes, states, typed_dt, a, var_b, var_c, true, per_chunk * (a.nchunks - 1), stream);
    if (!s.ok()) {
      cudaFreeAsync(work, stream);
      return s;
    }
  }
  const status s =
      run_scan1_p(op, lanes, states, typed_dt, a, var_b, var_c, false, per_chunk * a.nchunks, stream);
  if (work != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(work, stream));
  return s;
}

}  // namespace

status selective_scan_fwd_cuda(const selective_scan_params& p, void* stream) {
  const char* op = "selectiveScan";
  const int64_t Bt = p.batch, Dm = p.dim, L = p.seqlen, N = p.dstate;
  SSMKIT_RETURN_IF_ERROR(check(op, "u", p.u, {Bt, Dm, L}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "delta", p.delta, {Bt, Dm, L}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, Dm, L}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "A", p.A, {Dm, N}, SSMKIT_DTYPE_F32));
  const bool var_b = p.groups_b > 0, var_c = p.groups_c > 0;
  if ((var_b && Dm % p.groups_b != 0) || (var_c && Dm % p.groups_c != 0) ||
      (var_b && var_c && p.groups_b != p.groups_c)) {
    return make_status(status_code::shape, "%s: B, C: groups must agree and divide dim", op);
  }
  SSMKIT_RETURN_IF_ERROR(var_b ? check(op, "B", p.B, {Bt, p.groups_b, N, L}, kAnyFloat)
                               : check(op, "B", p.B, {Dm, N}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(var_c ? check(op, "C", p.C, {Bt, p.groups_c, N, L}, kAnyFloat)
                               : check(op, "C", p.C, {Dm, N}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.z", p.z, {Bt, Dm, L}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.D", p.D, {Dm}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.deltaBias", p.delta_bias, {Dm}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(
      check_opt(op, "options.initialState", p.initial_state, {Bt, Dm, N}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "lastState", p.last_state, {Bt, Dm, N}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.seqIdx", p.seq_idx, {Bt, L}, SSMKIT_DTYPE_I32));
  if (Bt == 0 || Dm == 0) return ok_status();
  if (N == 0) return make_status(status_code::shape, "%s: A: expected dstate >= 1", op);
  // dstate <= 32 (Mamba-1's 16): scan1_kernel; SSMKIT_CUDA_SCAN_STATES forces the generic kernel.
  if (N <= 32 && std::getenv("SSMKIT_CUDA_SCAN_STATES") == nullptr) {
    return launch_scan1(op, p, static_cast<cudaStream_t>(stream));
  }

  scan_args a{};
  a.u = p.u.data, a.delta = p.delta.data, a.z = p.z.data, a.out = p.out.data;
  a.A = p.A.ptr<const float>(), a.B = p.B.data, a.C = p.C.data;
  a.D = p.D.ptr<const float>(), a.delta_bias = p.delta_bias.ptr<const float>();
  a.h0 = p.initial_state.ptr<const float>(), a.hT = p.last_state.ptr<float>();
  a.seq_idx = seq_ptr(p.seq_idx);
  a.u_dt = p.u.dtype, a.delta_dt = p.delta.dtype, a.z_dt = p.z.present() ? p.z.dtype : SSMKIT_DTYPE_F32;
  a.out_dt = p.out.dtype, a.b_dt = p.B.dtype, a.c_dt = p.C.dtype;
  a.dim = Dm, a.seqlen = L, a.dstate = N;
  a.x_sb = Dm * L, a.x_sc = L, a.x_st = 1;
  a.dt_sb = Dm * L, a.dt_sc = L, a.dt_st = 1, a.dt_div = 1;
  a.a_div = 1, a.a_sr = N, a.a_sn = 1;
  a.d_div = 1, a.bias_div = 1;
  if (var_b) a.b_sb = p.groups_b * N * L, a.b_sg = N * L, a.b_sn = L, a.b_st = 1, a.b_cpg = Dm / p.groups_b;
  if (var_c) a.c_sb = p.groups_c * N * L, a.c_sg = N * L, a.c_sn = L, a.c_st = 1, a.c_cpg = Dm / p.groups_c;
  a.seg_len = var_b ? a.b_cpg : var_c ? a.c_cpg : Dm;
  a.nseg = Dm / a.seg_len;
  a.softplus = p.delta_softplus;
  return launch_scan<false, false>(op, a, Bt, var_b, var_c, static_cast<cudaStream_t>(stream));
}

status ssd_scan_fwd_cuda(const ssd_scan_params& p, void* stream) {
  const char* op = "ssdScan";
  const int64_t Bt = p.batch, L = p.seqlen, H = p.nheads, P = p.headdim, G = p.groups, N = p.dstate;
  SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, L, H, P}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, L, H, P}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "dt", p.dt, {Bt, L, H}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "A", p.A, {H}, SSMKIT_DTYPE_F32));
  if (G <= 0 || H % G != 0) return make_status(status_code::shape, "%s: B: groups must divide nheads", op);
  SSMKIT_RETURN_IF_ERROR(check(op, "B", p.B, {Bt, L, G, N}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "C", p.C, {Bt, L, G, N}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.z", p.z, {Bt, L, H, P}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(p.d_per_channel ? check_opt(op, "options.D", p.D, {H, P}, SSMKIT_DTYPE_F32)
                                         : check_opt(op, "options.D", p.D, {H}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.dtBias", p.dt_bias, {H}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(
      check_opt(op, "options.initialStates", p.initial_states, {Bt, H, P, N}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "finalStates", p.final_states, {Bt, H, P, N}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.seqIdx", p.seq_idx, {Bt, L}, SSMKIT_DTYPE_I32));
  if (Bt == 0 || H == 0 || P == 0) return ok_status();
  if (N == 0) return make_status(status_code::shape, "%s: B: expected dstate >= 1", op);

  cudaStream_t st = static_cast<cudaStream_t>(stream);
  // The tensor-core kernel for bfloat16 at Mamba-2's shapes, in its shared-M form where the device allows
  // its shared memory, otherwise in its lean form; SSMKIT_CUDA_SSD=exact forces the sequential kernel
  // (tests and benchmarks compare the two), SSMKIT_CUDA_SSD=lean the lean form and SSMKIT_CUDA_SSD=scalar
  // the earlier form with scalar fragment loads (tests compare both with the default bit for bit).
  const char* mode = std::getenv("SSMKIT_CUDA_SSD");
  const bool exact = mode != nullptr && std::strcmp(mode, "exact") == 0;
  const bool lean = mode == nullptr || std::strcmp(mode, "scalar") != 0;
  const bool share = lean && (mode == nullptr || std::strcmp(mode, "lean") != 0);
  const bool share_forced = mode != nullptr && std::strcmp(mode, "shared") == 0;
  const bool bf16 = p.x.dtype == SSMKIT_DTYPE_BF16 && p.B.dtype == SSMKIT_DTYPE_BF16 &&
                    p.C.dtype == SSMKIT_DTYPE_BF16 && p.out.dtype == SSMKIT_DTYPE_BF16;
  // The tensor-core kernel copies x, B, C and z in 16-byte pieces and stores out in 4-byte pairs.
  const bool aligned = ((reinterpret_cast<uintptr_t>(p.x.data) | reinterpret_cast<uintptr_t>(p.B.data) |
                         reinterpret_cast<uintptr_t>(p.C.data) | reinterpret_cast<uintptr_t>(p.z.data)) &
                        15) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.out.data) & 3) == 0;
  if (!exact && bf16 && aligned && P % 8 == 0 && P <= kSsdP && N % 8 == 0 && N <= 128) {
    ssd_tc_args t{};
    t.x = p.x.ptr<const uint16_t>(), t.dt = p.dt.data, t.A = p.A.ptr<const float>();
    t.B = p.B.ptr<const uint16_t>(), t.C = p.C.ptr<const uint16_t>(), t.D = p.D.ptr<const float>();
    t.z = p.z.data, t.dt_bias = p.dt_bias.ptr<const float>(), t.h0 = p.initial_states.ptr<const float>();
    t.hT = p.final_states.ptr<float>(), t.seq = seq_ptr(p.seq_idx), t.out = p.out.ptr<uint16_t>();
    t.dt_dt = p.dt.dtype, t.z_dt = p.z.present() ? p.z.dtype : SSMKIT_DTYPE_F32;
    t.L = L, t.H = H, t.P = P, t.G = G, t.N = N;
    t.softplus = p.dt_softplus, t.d_per_channel = p.d_per_channel;
    unsigned grid = 0;
    SSMKIT_RETURN_IF_ERROR(launch_blocks(op, Bt * H, &grid));
    if (share) {
      // The shared-M form on sm_90 and later, or where SSMKIT_CUDA_SSD=shared asks for it, if the device
      // gives a block its shared memory (sm_80 and sm_90, not sm_86/89). sm_80's code of it spills 100
      // bytes at dstate 128 and has not been measured: the lean form is the default there.
      int dev = 0, optin = 0, major = 0;
      SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
      SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
      SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
      if (major < 9 && !share_forced) optin = 0;
      if (N <= 64 && optin >= ssd_tc_layout<64>::kSharedBytes) return run_ssd_tc<64, true, true>(t, grid, st);
      if (N > 64 && optin >= ssd_tc_layout<128>::kSharedBytes)
        return run_ssd_tc<128, true, true>(t, grid, st);
    }
    if (lean) return N <= 64 ? run_ssd_tc<64, true>(t, grid, st) : run_ssd_tc<128, true>(t, grid, st);
    return N <= 64 ? run_ssd_tc<64, false>(t, grid, st) : run_ssd_tc<128, false>(t, grid, st);
  }

  const int64_t Dm = H * P;
  scan_args a{};
  a.u = p.x.data, a.delta = p.dt.data, a.z = p.z.data, a.out = p.out.data;
  a.A = p.A.ptr<const float>(), a.B = p.B.data, a.C = p.C.data;
  a.D = p.D.ptr<const float>(), a.delta_bias = p.dt_bias.ptr<const float>();
  a.h0 = p.initial_states.ptr<const float>(), a.hT = p.final_states.ptr<float>();
  a.seq_idx = seq_ptr(p.seq_idx);
  a.u_dt = p.x.dtype, a.delta_dt = p.dt.dtype, a.z_dt = p.z.present() ? p.z.dtype : SSMKIT_DTYPE_F32;
  a.out_dt = p.out.dtype, a.b_dt = p.B.dtype, a.c_dt = p.C.dtype;
  a.dim = Dm, a.seqlen = L, a.dstate = N;
  a.x_sb = L * Dm, a.x_sc = 1, a.x_st = Dm;
  a.dt_sb = L * H, a.dt_sc = 1, a.dt_st = H, a.dt_div = P;
  a.a_div = P, a.a_sr = 1, a.a_sn = 0;
  a.d_div = p.d_per_channel ? 1 : P, a.bias_div = P;
  a.b_sb = L * G * N, a.b_sg = N, a.b_sn = 1, a.b_st = G * N, a.b_cpg = Dm / G;
  a.c_sb = L * G * N, a.c_sg = N, a.c_sn = 1, a.c_st = G * N, a.c_cpg = Dm / G;
  a.seg_len = Dm / G;
  a.nseg = G;
  a.softplus = p.dt_softplus;
  a.dt_nonneg = true;
  return launch_scan<true, true>(op, a, Bt, true, true, st);
}

// Launches a decode-update kernel with programmatic dependent launch where the code that runs was built
// for sm_90 or later (its pdl_wait() keeps it from reading or writing anything before the kernel ahead of
// it on the stream has finished; older code has no wait and launches plainly): the launch and the blocks'
// start overlap that kernel's tail. At batch 256 (3.9 waves of ~15 us blocks) the next call's blocks take
// the slots the last wave frees and start the moment it completes.
template <class Kernel>
status launch_update(Kernel* kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                     const update_args& a) {
  bool pdl = false;
  SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &pdl));
  // SSMKIT_CUDA_UPDATE_PDL=0 launches plainly (benchmarks compare the two).
  pdl = pdl && env_int("SSMKIT_CUDA_UPDATE_PDL", 1) != 0;
  return launch_pdl(kernel, grid, dim3(static_cast<unsigned>(threads)), smem, stream, pdl, a);
}

status selective_state_update_cuda(const selective_state_update_params& p, void* stream) {
  const char* op = "selectiveStateUpdate";
  const int64_t Bt = p.batch, H = p.nheads, P = p.headdim, N = p.dstate, G = p.groups, SB = p.state_batch;
  if (!p.multihead) {
    if (P != 1 || G != 1) return make_status(status_code::shape, "%s: x: the Mamba-1 form has no heads", op);
    SSMKIT_RETURN_IF_ERROR(check(op, "state", p.state, {SB, H, N}, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, H}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "dt", p.dt, {Bt, H}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "A", p.A, {H, N}, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check(op, "B", p.B, {Bt, N}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "C", p.C, {Bt, N}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, H}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.z", p.z, {Bt, H}, kAnyFloat));
  } else {
    if (G <= 0 || H % G != 0) return make_status(status_code::shape, "%s: B: groups must divide nheads", op);
    SSMKIT_RETURN_IF_ERROR(check(op, "state", p.state, {SB, H, P, N}, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, H, P}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "dt", p.dt, {Bt, H}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "A", p.A, {H}, SSMKIT_DTYPE_F32));
    SSMKIT_RETURN_IF_ERROR(check(op, "B", p.B, {Bt, G, N}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "C", p.C, {Bt, G, N}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, H, P}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.z", p.z, {Bt, H, P}, kAnyFloat));
  }
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.D", p.D, {H}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.dtBias", p.dt_bias, {H}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(
      check_opt(op, "options.stateBatchIndices", p.state_batch_indices, {Bt}, SSMKIT_DTYPE_I32));
  if (!p.state_batch_indices.present() && SB != Bt) {
    return make_status(status_code::shape, "%s: state: expected batch %lld, got %lld", op,
                       static_cast<long long>(Bt), static_cast<long long>(SB));
  }
  if (Bt == 0 || H == 0 || P == 0) return ok_status();
  if (N == 0) return make_status(status_code::shape, "%s: state: expected dstate >= 1", op);

  update_args a{};
  a.state = p.state.ptr<float>(), a.x = p.x.data, a.dt = p.dt.data, a.A = p.A.ptr<const float>();
  a.B = p.B.data, a.C = p.C.data, a.D = p.D.ptr<const float>(), a.z = p.z.data;
  a.dt_bias = p.dt_bias.ptr<const float>(), a.sbi = seq_ptr(p.state_batch_indices), a.out = p.out.data;
  a.x_dt = p.x.dtype, a.dt_dt = p.dt.dtype, a.b_dt = p.B.dtype, a.c_dt = p.C.dtype;
  a.z_dt = p.z.present() ? p.z.dtype : SSMKIT_DTYPE_F32, a.out_dt = p.out.dtype;
  a.batch = Bt, a.state_batch = SB, a.H = H, a.P = P, a.N = N, a.G = p.multihead ? G : 1;
  a.softplus = p.dt_softplus;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  // float4 pieces of the state when rows are 16-byte aligned (dstate % 4 == 0, allocations 256-aligned).
  const bool vec = N % 4 == 0;
  const int64_t pieces = vec ? N / 4 : N;
  a.lanes = next_pow2(pieces < 32 ? pieces : 32);
  unsigned grid = 0;
  // The vector kernel also reads A in float4 and B, C in 4-element pieces.
  const bool aligned = aligned16(a.state) && aligned16(a.A) && aligned16(a.B) && aligned16(a.C);
  // 32-bit index math inside the vector kernel; batch on grid y.
  const bool small = H * P * N < (int64_t{1} << 31) && Bt <= 65535 && SB < (int64_t{1} << 31);
  if (vec && aligned && N <= 128 && small) {
    // Batch elements a thread: 1 for small work, 4 for large, 8 (scalars spread over a row's lanes) for
    // large Mamba-1 work with at least 4 lanes a row (dstate > 12). SSMKIT_CUDA_UPDATE_TILE=1|4|8 forces
    // one (tests and benchmarks of each form; 8 falls back to 4 where it does not apply).
    const bool large = Bt * H * P * a.lanes >= kUpdateTileThreads;
    const bool spread_ok = !p.multihead && a.lanes >= 4;
    const int forced = env_int("SSMKIT_CUDA_UPDATE_TILE", 0);
    int tile = forced == 1 || forced == 4 || forced == 8 ? forced
               : large && Bt >= 8 && spread_ok           ? 8
               : large && Bt >= 4                        ? 4
                                                         : 1;
    if (tile == 8 && !spread_ok) tile = 4;
    const int threads = tile > 1 ? 128 : 64;
    const int64_t rows_per_block = threads / a.lanes;
    const dim3 g2(static_cast<unsigned>((H * P + rows_per_block - 1) / rows_per_block),
                  static_cast<unsigned>((Bt + tile - 1) / tile));
    // The tiled forms stage the state (16 bytes a thread and batch element: 8 or 16 KB) and B and C of
    // their batch elements for the groups a block's rows span: at most (rows - 1) / (rows a group) + 2 of
    // them, and (rows + 1) * dstate <= 4 * 128 + 128, so at most 20 KB of B and C at 4 elements (28 KB in
    // all), under the default 48 KB (the 8-element form is Mamba-1's: one group, at most 24 KB in all).
    const int64_t groups_spanned = min64(a.G, (rows_per_block - 1) / (H / a.G * P) + 2);
    const size_t smem =
        tile > 1 ? static_cast<size_t>(tile * threads * 4 + 2 * tile * groups_spanned * N) * sizeof(float)
                 : 0;
    if (tile == 8) {
      return launch_update(selective_state_update_vec_kernel<true, 8, 128, true>, g2, 128, smem, s, a);
    }
    if (tile == 4 && p.multihead) {
      return launch_update(selective_state_update_vec_kernel<false, 4, 128>, g2, 128, smem, s, a);
    }
    if (tile == 4) return launch_update(selective_state_update_vec_kernel<true, 4, 128>, g2, 128, smem, s, a);
    if (p.multihead) return launch_update(selective_state_update_vec_kernel<false, 1, 64>, g2, 64, 0, s, a);
    return launch_update(selective_state_update_vec_kernel<true, 1, 64>, g2, 64, 0, s, a);
  }
  SSMKIT_RETURN_IF_ERROR(
      launch_blocks(op, (Bt * H * P * a.lanes + kUpdateThreads - 1) / kUpdateThreads, &grid));
  if (vec && !p.multihead) selective_state_update_kernel<4, true><<<grid, kUpdateThreads, 0, s>>>(a);
  if (vec && p.multihead) selective_state_update_kernel<4, false><<<grid, kUpdateThreads, 0, s>>>(a);
  if (!vec && !p.multihead) selective_state_update_kernel<1, true><<<grid, kUpdateThreads, 0, s>>>(a);
  if (!vec && p.multihead) selective_state_update_kernel<1, false><<<grid, kUpdateThreads, 0, s>>>(a);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status causal_conv1d_fwd_cuda(const causal_conv1d_params& p, void* stream) {
  const char* op = "causalConv1d";
  const int64_t Bt = p.batch, Dm = p.dim, L = p.seqlen, K = p.width;
  SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, Dm, L}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, Dm, L}, kAnyFloat));
  if (K < 1) return make_status(status_code::shape, "%s: weight: expected width >= 1", op);
  SSMKIT_RETURN_IF_ERROR(check(op, "weight", p.weight, {Dm, K}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.bias", p.bias, {Dm}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(
      check_opt(op, "options.initialStates", p.initial_states, {Bt, Dm, K - 1}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "finalStates", p.final_states, {Bt, Dm, K - 1}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.seqIdx", p.seq_idx, {Bt, L}, SSMKIT_DTYPE_I32));
  if (Bt == 0 || Dm == 0 || L == 0) return ok_status();

  conv_args a{};
  a.x = p.x.data, a.weight = p.weight.data, a.bias = p.bias.data;
  a.init = p.initial_states.ptr<const float>(), a.seq = seq_ptr(p.seq_idx);
  a.out = p.out.data, a.fin = p.final_states.ptr<float>();
  a.x_dt = p.x.dtype, a.w_dt = p.weight.dtype, a.bias_dt = p.bias.present() ? p.bias.dtype : SSMKIT_DTYPE_F32;
  a.out_dt = p.out.dtype;
  a.batch = Bt, a.dim = Dm, a.L = L, a.W = K, a.silu = p.silu;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  unsigned grid = 0;
  if (K > 8) {
    SSMKIT_RETURN_IF_ERROR(launch_blocks(op, (Bt * Dm * L + kConvThreads - 1) / kConvThreads, &grid));
    causal_conv1d_any_kernel<<<grid, kConvThreads, 0, s>>>(a);
  } else {
    SSMKIT_RETURN_IF_ERROR(
        launch_blocks(op, (Bt * Dm * ((L + 7) / 8) + kConvThreads - 1) / kConvThreads, &grid));
    switch (K) {
      case 1: causal_conv1d_kernel<1><<<grid, kConvThreads, 0, s>>>(a); break;
      case 2: causal_conv1d_kernel<2><<<grid, kConvThreads, 0, s>>>(a); break;
      case 3: causal_conv1d_kernel<3><<<grid, kConvThreads, 0, s>>>(a); break;
      case 4: causal_conv1d_kernel<4><<<grid, kConvThreads, 0, s>>>(a); break;
      case 5: causal_conv1d_kernel<5><<<grid, kConvThreads, 0, s>>>(a); break;
      case 6: causal_conv1d_kernel<6><<<grid, kConvThreads, 0, s>>>(a); break;
      case 7: causal_conv1d_kernel<7><<<grid, kConvThreads, 0, s>>>(a); break;
      default: causal_conv1d_kernel<8><<<grid, kConvThreads, 0, s>>>(a); break;
    }
  }
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status causal_conv1d_update_cuda(const causal_conv1d_update_params& p, void* stream) {
  const char* op = "causalConv1dUpdate";
  const int64_t Bt = p.batch, Dm = p.dim, Ln = p.seqlen, K = p.width, SL = p.state_len, SB = p.state_batch;
  if (p.x.ndim == 2) {
    SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, Dm}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, Dm}, kAnyFloat));
    if (Ln != 1) return make_status(status_code::shape, "%s: x: unexpected shape", op);
  } else {
    SSMKIT_RETURN_IF_ERROR(check(op, "x", p.x, {Bt, Dm, Ln}, kAnyFloat));
    SSMKIT_RETURN_IF_ERROR(check(op, "out", p.out, {Bt, Dm, Ln}, kAnyFloat));
  }
  if (K < 1) return make_status(status_code::shape, "%s: weight: expected width >= 1", op);
  SSMKIT_RETURN_IF_ERROR(check(op, "weight", p.weight, {Dm, K}, kAnyFloat));
  if (SL < K - 1) return make_status(status_code::shape, "%s: convState: expected stateLen >= width - 1", op);
  SSMKIT_RETURN_IF_ERROR(check(op, "convState", p.conv_state, {SB, Dm, SL}, SSMKIT_DTYPE_F32));
  SSMKIT_RETURN_IF_ERROR(check_opt(op, "options.bias", p.bias, {Dm}, kAnyFloat));
  SSMKIT_RETURN_IF_ERROR(
      check_opt(op, "options.convStateIndices", p.conv_state_indices, {Bt}, SSMKIT_DTYPE_I32));
  if (!p.conv_state_indices.present() && SB != Bt) {
    return make_status(status_code::shape, "%s: convState: expected batch %lld, got %lld", op,
                       static_cast<long long>(Bt), static_cast<long long>(SB));
  }
  if (Bt == 0 || Dm == 0 || Ln == 0) return ok_status();

  conv_update_args a{};
  a.x = p.x.data, a.state = p.conv_state.ptr<float>(), a.weight = p.weight.data, a.bias = p.bias.data;
  a.idx = seq_ptr(p.conv_state_indices), a.out = p.out.data;
  a.x_dt = p.x.dtype, a.w_dt = p.weight.dtype, a.bias_dt = p.bias.present() ? p.bias.dtype : SSMKIT_DTYPE_F32;
  a.out_dt = p.out.dtype;
  a.batch = Bt, a.state_batch = SB, a.dim = Dm, a.Ln = Ln, a.W = K, a.SL = SL, a.silu = p.silu;
  unsigned grid = 0;
  SSMKIT_RETURN_IF_ERROR(launch_blocks(op, (Bt * Dm + kConvThreads - 1) / kConvThreads, &grid));
  return launch_after_wait(causal_conv1d_update_kernel, dim3(grid), dim3(kConvThreads), 0,
                           static_cast<cudaStream_t>(stream), a);
}

}  // namespace ssmkit
