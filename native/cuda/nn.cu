// CUDA kernels of the model building blocks (ssmkit/nn.h), computing what native/cpu/nn.cc computes:
// pack_linear, linear, split_columns, rms_norm, gated_rms_norm, embedding, transpose_split, dt_limit,
// sample, and the fused decode step.
//
// Assumptions: tensors are contiguous and on the stream's device; lib/ops/nn.ts has checked shapes and
// dtypes, and the entry points check again every size they touch, by the CPU's own checks
// (ssmkit/nn_check.h: one check_<op> per op), then the device placement and their kernels' own limits.
// Values that live on the device (token ids) cannot be checked before the launch: an id out of range
// reads nothing and yields a NaN row.
//
// linear reads the packed panels pack_linear writes (32 output columns each; float32 (K, 32) rows, or
// bfloat16 (K/2, 32, 2) k-pair rows, 128 bytes either way). Variants:
// - gemv (M <= 64, in chunks of at most 16 rows): bound by weight bytes. The panels' rows laid end to end (T
//   = panels x R) are cut into G equal contiguous ranges (+-1 row), one per block, G the blocks that are
//   resident at once (the launch bounds' blocks per SM x the SMs: one wave, every SM streaming to the end; a
//   grid of equal (panel, split) units ran 1.2-1.6 waves, its last wave on a third of the SMs), but never a
//   range shorter than one full pipeline (4 block steps, 16 KiB) unless whole panels are (x_proj of
//   Mamba-2.8B: 120 blocks of 128 rows; dt_proj: 160 blocks of one panel), and whole panels a block where a
//   divisor of the panel count lies within 1/8 below G (the head: 524 blocks of 3 panels, no split-K); past
//   one wave (larger batches, whose staged x must fit 16 KiB), whole waves. A block walks its range segment
//   by segment (the part in one panel: in_proj of Mamba-2.8B, 776 rows a block, 2-3 blocks a panel; out_proj
//   388, 7-8 a panel); 8 warps stream a segment with 16-byte loads (8 threads per 128-byte row, 32 rows per
//   block step, 4 steps in flight: 16 KiB per block), its x staged in shared memory as float32 (4 loads a
//   thread in flight; a block of whole panels stages x once), each thread holding 4 columns x up to 16 rows
//   of float32 sums, and the next segment's first weights are loaded while the segment finishes. The block
//   reduces its partials through shuffles and shared memory in a fixed order; a panel held by one block is
//   finalized by it, else every block stores its segment's partial in its own slot (block + panel) and the
//   last to finish (an atomic counter, reset after use) sums them in block order, so the result is
//   deterministic. A launch may start while the previous kernel drains (programmatic dependent launch,
//   sm_90): it prefetches its first weights and waits (griddepcontrol.wait) before it reads anything an
//   earlier kernel writes. Bound: weight bytes / bandwidth (in_proj of Mamba-2.8B, 52.7 MB: 12.5 us at 4.2
//   TB/s, ~16 us at the 3.3 TB/s the head's blocks sustain).
// - gemm_mma (M > 64, bfloat16 x and panels): 128x128x32 tiles, 8 warps of 64x32, mma.sync m16n8k16 with
//   float32 accumulation, A by ldmatrix from padded rows, B straight from the k-pair words (a word is a
//   B fragment register), 3-stage cp.async pipeline (x in the scan layout or with K % 8 != 0 is loaded
//   through registers instead). Bound: tensor-core rate.
// - gemm_simt (M > 64, every other dtype pair: float32 math exact as the CPU's): 64x64x16 FFMA tiles.
// Every epilogue adds the bias and writes each column to the outputs (dtype, column range, token- or
// channel-major layout) that take it.
//
// The row ops (rms_norm, gated_rms_norm) run one block per row with the row in shared memory and the
// sum of squares in float64 (as the CPU), so that both backends round the same value; rms_norm's passes
// issue 8 loads a thread before using the first (one memory latency per 2048 elements, not one per 256); the
// element ops (split_columns, embedding, dt_limit, transpose_split with 32x32 tiles) are grid-stride loops.
// sample runs one block per row: argmax in one pass of 16-byte loads, 4 a thread in flight (50280
// logits: 13 loads a thread, ~2 memory latencies, where a scalar max pass and a second pass for the
// first index of the max cost ~29 us a token), or probabilities from the softmax and radix selections
// over the logits' order-preserving bits (count for top-k, mass for top-p and the draw), ties (equal
// logits) in index order.
//
// The decode step enqueues the whole step on the stream, on scratch it owns. Fused (the default, float
// layers, batch <= 64): the small ops ride in the gemv epilogues, so a Mamba layer is 4 launches: in_proj
// with the conv's streaming update of its x columns (Mamba-2: of xBC, split into x | B | C, and dt's limit),
// x_proj, dt_proj with the state update of its channels (Mamba-2: the scan family's multi-head update and the
// gated norm instead), and out_proj. With a float32 residual (the models' default), out_proj's epilogue adds
// each output to the residual in place, and the next in_proj (the head after the last layer) applies the
// RMSNorm in its prologue. The row's sum of squares is paid once: the block that finalizes a panel of
// out_proj (exactly one per panel) stores the float64 sum of squares of its 32 new residual values per row in
// that (row, panel)'s slot, and each block of the next kernel adds a row's 80 slots (d_model 2560) in a fixed
// order, one L2 round trip while its first weights are in flight; at batch 1 every warp adds them itself once
// its first x loads have gone out, so that this round trip overlaps the staging's own instead of preceding it
// (a block-wide sum and barrier). Every block, graph or not, gets the same rstd bit for bit; it may differ
// from the CPU's (whose sum runs in element order) in the last bit. Summing the whole row in every block
// instead cost ~9 us in in_proj (640 blocks, several generations a SM each paying it) and ~12 us in the head
// (1572 blocks) as measured. With a residual in the activation dtype (which rounds the sum), out_proj's last
// block still applies the next norm as that tail. Composed (quantized layers, larger batches, or
// SSMKIT_CUDA_DECODE_FUSED=0): the op-by-op path's kernels in the CPU step's order, the scan family's conv
// and state updates and the quantization family's GEMMs included, what the runner's op-by-op path computes on
// CUDA, but for three shortcuts: at batch 1 a layer's outputs are carved side by side, so in_proj and x_proj
// write them in place with no split after them (Mamba-2's x, B and C are views of the conv output); a float
// dt_proj (the quantized modes keep it so) takes the state update in its epilogue, as in the fused step.
// Either sequence runs uncaptured on the first call of a (model, states, batch), on buffers it keeps,
// so that whatever the families grow on first use exists, and is captured on the second into a CUDA graph
// (which then allocates nothing) and replayed from then on (ids and logits staged through the graph's own
// buffers); its kernels launch with programmatic dependent launch on sm_90, so each one's blocks start and
// prefetch their weights while the previous kernel drains. Bound for batch-1 decode of Mamba-2.8B in
// bfloat16: 5.5 GB of weights, 1.31 ms at 4.2 TB/s; the four launches a layer add their ramp and tail
// latencies (~3-4 us each where PDL does not hide them). Measured per layer (Nsight, serialized, 5fc0cf9,
// equal units in 1.2-1.6 waves): in_proj 29.5 us (24.0 without the prologue), x_proj 6.7, dt_proj 8.3,
// out_proj 15.4 (~60 us), head 81 us. Expected with one wave of equal ranges: in_proj ~17 us (52.7 MB at ~3.3
// TB/s plus ~1.5 us of ramp; the prologue's ~5.5 us was its round trip in series with the staging's, paid
// again by the 112 units of the second wave: now once a block and overlapped, <1 us), out_proj ~10 us (26.3
// MB: 8 us, ramp, and the panels' finish), x_proj unchanged (the same 120 blocks), dt_proj ~7 us (the same
// 160 blocks; the state update's states, A, D and dt bias pulled into L2 while the weights stream, so its
// finalizing warp's 3 dependent round trips wait on L2 instead of DRAM, ~0.4 us less each; all 16 states in
// one round trip would spill at 64 registers; in_proj's conv update is prefetched likewise), the head ~77 us
// (524 blocks of 3 whole panels, x staged once a block, instead of 1572 units in 3 waves): ~41 us a layer,
// ~2.7 ms a token in the graph (3.35).
// Since: dt_proj's state update runs over the whole block (eight lanes a column, two states a lane at
// d_state 16, every load in one round trip, y added in state order through shuffles: ssu_group_finalize),
// its instances at three blocks a SM (80 registers, no spill at MR = 1): the bf16 step 3.29 -> 3.18 ms a
// token on the H200; the W4A16 step unchanged (2.31 / 2.32).
// Since: at one row (MR = 1) x's staging indexes without the 64-bit division and remainder by the segment's
// length that each element paid twice (a software routine of ~20 instructions each, on the path after the
// wait): the bf16 step 3.06 -> 2.86 ms a token on the H200, the W4A16 step 2.02 -> 1.98.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "bits.cuh"
#include "cuda_check.cuh"
#include "env.cuh"
#include "pdl.cuh"
#include "rms.cuh"
#include "ssmkit/nn.h"
#include "ssmkit/nn_check.h"
#include "ssmkit/quant.h"
#include "ssmkit/selective_scan.h"

namespace ssmkit {

namespace {

using nn_check::need_numel;
using nn_check::packed_numel;

constexpr int kPanel = kLinearPanel;
constexpr int64_t kPanelRowBytes = 128;  // one float32 k row or one bfloat16 k-pair row of a panel

// ---- device helpers ----------------------------------------------------------------------------------

// Rounds as the CPU's f32_to_bf16 / f32_to_f16 do (to nearest even; NaN kept quiet), bit for bit.
__device__ __forceinline__ void st_any(void* p, int dt, int64_t i, float v) {
  if (dt == SSMKIT_DTYPE_F32) {
    static_cast<float*>(p)[i] = v;
  } else if (dt == SSMKIT_DTYPE_F16) {
    static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
  } else {
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
  }
}

__device__ __forceinline__ float bf16_lo(uint32_t w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(uint32_t w) {
  return __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order; every thread gets it.
// `scratch` holds 33 doubles; the call synchronizes the block (twice), so it may be reused right after.
__device__ double block_sum(double v, double* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double s = lane < warps ? scratch[lane] : 0.0;
    s = warp_sum(s);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  const double total = scratch[32];
  __syncthreads();
  return total;
}

// ---- host helpers ------------------------------------------------------------------------------------

// What kernels need to know about the current device, read once per device.
struct device_props {
  int sms = 0;
  int major = 0;
  int smem_optin = 0;
};

status current_props(device_props* out) {
  static std::mutex mu;
  static device_props cache[64];
  static bool known[64] = {};
  int dev = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return make_status(status_code::value, "cuda: device %d out of range", dev);
  std::lock_guard<std::mutex> lock(mu);
  if (!known[dev]) {
    device_props p;
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&p.sms, cudaDevAttrMultiProcessorCount, dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&p.major, cudaDevAttrComputeCapabilityMajor, dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&p.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    cache[dev] = p;
    known[dev] = true;
  }
  *out = cache[dev];
  return ok_status();
}

// How one of our kernels is enqueued: the stream, and whether it may overlap the kernel before it
// (programmatic dependent launch: the kernel waits in pdl_wait() before touching that kernel's data).
struct launch_ctx {
  cudaStream_t stream = nullptr;
  bool pdl = false;
};

status grid_size(const char* op, int64_t blocks, unsigned* out) {
  if (blocks > 0x7fffffffLL) return make_status(status_code::unsupported, "%s: the problem is too large", op);
  *out = static_cast<unsigned>(blocks < 1 ? 1 : blocks);
  return ok_status();
}

template <typename... KArgs, typename... Args>
status launch(const launch_ctx& ctx, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
              Args&&... args) {
  return launch_pdl(kernel, grid, block, smem, ctx.stream, ctx.pdl, std::forward<Args>(args)...);
}

// Scratch of the standalone ops (linear's split-K partials and counters) on one stream: grown when a call
// needs more, the old block freed in stream order. Counters are zeroed when allocated and every kernel
// that uses one resets it, so they read zero at the start of every launch.
struct stream_workspace {
  cudaStream_t stream = nullptr;
  void* data = nullptr;
  size_t bytes = 0;
  int* counters = nullptr;
  size_t counter_count = 0;
};

status get_workspace(cudaStream_t s, size_t bytes, size_t counters, void** data, int** ctr) {
  static std::mutex mu;
  static stream_workspace ws[64];
  std::lock_guard<std::mutex> lock(mu);
  stream_workspace* w = nullptr;
  for (auto& e : ws) {
    if (e.stream == s) {
      w = &e;
      break;
    }
  }
  if (w == nullptr) {
    for (auto& e : ws) {
      if (e.stream == nullptr) {
        e.stream = s;
        w = &e;
        break;
      }
    }
  }
  if (w == nullptr) return make_status(status_code::internal, "cuda: too many streams");
  if (bytes > w->bytes) {
    if (w->data != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(w->data, s));
    w->data = nullptr;
    w->bytes = 0;
    const size_t want = std::max<size_t>(bytes, 1 << 20);
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&w->data, want, s));
    w->bytes = want;
  }
  if (counters > w->counter_count) {
    if (w->counters != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(w->counters, s));
    w->counters = nullptr;
    w->counter_count = 0;
    const size_t want = std::max<size_t>(counters, 4096);
    SSMKIT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&w->counters), want * sizeof(int), s));
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(w->counters, 0, want * sizeof(int), s));
    w->counter_count = want;
  }
  *data = w->data;
  *ctr = w->counters;
  return ok_status();
}

// ---- pack_linear -------------------------------------------------------------------------------------

// One thread per panel element: out (panels, Kx, 32) f32, or (panels, Kx / 2, 32, 2) bf16 pairs.
__global__ void pack_linear_kernel(const void* __restrict__ w, int w_dt, void* __restrict__ out, int out_dt,
                                   int64_t n, int64_t k, int64_t kx, int64_t total) {
  const bool bf16 = out_dt == SSMKIT_DTYPE_BF16;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pn = i / (kx * kPanel), rem = i % (kx * kPanel);
    int64_t kk, c;
    if (bf16) {
      const int64_t word = rem / 2;
      kk = (word / kPanel) * 2 + (rem % 2);
      c = word % kPanel;
    } else {
      kk = rem / kPanel;
      c = rem % kPanel;
    }
    const int64_t col = pn * kPanel + c;
    if (col >= n || kk >= k) {
      st_any(out, out_dt, i, 0.0f);
    } else if (w_dt == out_dt) {
      // Same format: copy the bits (bfloat16 stays exact).
      if (bf16) {
        static_cast<uint16_t*>(out)[i] = static_cast<const uint16_t*>(w)[col * k + kk];
      } else {
        static_cast<float*>(out)[i] = static_cast<const float*>(w)[col * k + kk];
      }
    } else {
      st_any(out, out_dt, i, ld_value(w, w_dt, col * k + kk));
    }
  }
}

// ---- linear: outputs -------------------------------------------------------------------------------

// Where each column of a linear layer (or a column split) goes; kernel argument by value.
struct out_map {
  void* data[kLinearMaxOutputs];
  int64_t col0[kLinearMaxOutputs];
  int64_t cols[kLinearMaxOutputs];
  int dtype[kLinearMaxOutputs];
  bool transposed[kLinearMaxOutputs];
  int count;
  int64_t seqlen;  // the last dimension of transposed outputs
};

out_map make_out_map(const linear_output* outs, int count, int64_t seqlen) {
  out_map m{};
  m.count = count;
  m.seqlen = seqlen < 1 ? 1 : seqlen;
  for (int i = 0; i < count; ++i) {
    m.data[i] = outs[i].out.data;
    m.col0[i] = outs[i].col0;
    m.cols[i] = outs[i].cols;
    m.dtype[i] = outs[i].out.dtype;
    m.transposed[i] = outs[i].transposed;
  }
  return m;
}

// Writes v, element (row, col) of the full (M, N) result, to every output whose column range holds col:
// out (M, cols), or (M / seqlen, cols, seqlen) when transposed.
__device__ __forceinline__ void store_col(const out_map& om, int64_t row, int64_t col, float v) {
#pragma unroll
  for (int o = 0; o < kLinearMaxOutputs; ++o) {
    if (o >= om.count) break;
    const int64_t c = col - om.col0[o];
    if (c < 0 || c >= om.cols[o]) continue;
    const int64_t idx = om.transposed[o] ? ((row / om.seqlen) * om.cols[o] + c) * om.seqlen + row % om.seqlen
                                         : row * om.cols[o] + c;
    st_any(om.data[o], om.dtype[o], idx, v);
  }
}

// Index of x element (row, k) of a linear input: (M, K), or (batch, K, seqlen) when transposed.
__device__ __forceinline__ int64_t x_index(bool transposed, int64_t seqlen, int64_t K, int64_t row,
                                           int64_t k) {
  return transposed ? ((row / seqlen) * K + k) * seqlen + row % seqlen : row * K + k;
}

// ---- rows shared by the norms and the decode step's epilogues ----------------------------------------

constexpr int kRowThreads = 256;

struct rms_args {
  const void* x;    // (rows, d)
  const void* res;  // (rows, d), optional
  void* res_out;    // (rows, d), optional; may alias res
  const void* w;    // (d,)
  void* out;        // (rows, d) or (rows / last_of, d)
  int x_dt, res_dt, res_out_dt, w_dt, out_dt;
  int64_t rows, d, last_of;
  float eps;
};

// Loads a row pass keeps in flight per thread: a thread's elements of one pass are i0, i0 + stride, ...
// (kRowBatch of them), all issued before the first is used, so a pass waits one memory latency, not
// kRowBatch of them. Past d: 0.
constexpr int kRowBatch = 8;

template <bool kL2>
__device__ __forceinline__ void ld_batch(const void* p, int dt, int64_t base, int64_t i0, int64_t stride,
                                         int64_t d, float (&v)[kRowBatch]) {
  if (dt == SSMKIT_DTYPE_F32) {
    const float* f = static_cast<const float*>(p) + base;
#pragma unroll
    for (int j = 0; j < kRowBatch; ++j) {
      const int64_t i = i0 + j * stride;
      v[j] = i < d ? (kL2 ? __ldcg(f + i) : f[i]) : 0.0f;
    }
    return;
  }
  const unsigned short* h = static_cast<const unsigned short*>(p) + base;
  uint16_t bits[kRowBatch];
#pragma unroll
  for (int j = 0; j < kRowBatch; ++j) {
    const int64_t i = i0 + j * stride;
    bits[j] = i < d ? (kL2 ? __ldcg(h + i) : h[i]) : 0;
  }
#pragma unroll
  for (int j = 0; j < kRowBatch; ++j) {
    v[j] = dt == SSMKIT_DTYPE_F16 ? __half2float(__ushort_as_half(bits[j]))
                                  : __uint_as_float(static_cast<uint32_t>(bits[j]) << 16);
  }
}

// Output row r of rms_norm by a whole block of kRowThreads threads: the same partition of the row and
// the same reduction wherever it runs, so the standalone kernel and the decode step's fused tail agree
// bit for bit. row: (d,) shared floats; the call ends with a barrier.
template <bool kL2>
__device__ void rms_row(const rms_args& a, int64_t r, float* row, double* red) {
  const int64_t d = a.d;
  const int64_t src = a.last_of > 0 ? (r + 1) * a.last_of - 1 : r;
  const int64_t nt = blockDim.x;
  double ss = 0.0;
  for (int64_t i0 = threadIdx.x; i0 < d; i0 += kRowBatch * nt) {
    float v[kRowBatch];
    ld_batch<kL2>(a.x, a.x_dt, src * d, i0, nt, d, v);
    if (a.res != nullptr) {
      float rv[kRowBatch];
      ld_batch<false>(a.res, a.res_dt, src * d, i0, nt, d, rv);
#pragma unroll
      for (int j = 0; j < kRowBatch; ++j) v[j] += rv[j];
    }
#pragma unroll
    for (int j = 0; j < kRowBatch; ++j) {
      const int64_t i = i0 + j * nt;
      if (i >= d) continue;
      row[i] = v[j];
      ss += static_cast<double>(v[j]) * v[j];
      if (a.res_out != nullptr) st_any(a.res_out, a.res_out_dt, src * d + i, v[j]);
    }
  }
  ss = block_sum(ss, red);
  const float rstd = rms_rstd(ss, d, a.eps);
  for (int64_t i0 = threadIdx.x; i0 < d; i0 += kRowBatch * nt) {
    float w[kRowBatch];
    ld_batch<false>(a.w, a.w_dt, 0, i0, nt, d, w);
#pragma unroll
    for (int j = 0; j < kRowBatch; ++j) {
      const int64_t i = i0 + j * nt;
      if (i < d) st_any(a.out, a.out_dt, r * d + i, row[i] * rstd * w[j]);
    }
  }
  __syncthreads();
}

__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

struct split_map {
  void* data[kLinearMaxOutputs];
  int64_t row0[kLinearMaxOutputs];
  int64_t rows[kLinearMaxOutputs];
  int dtype[kLinearMaxOutputs];
  int count;
};

// x (batch, r, c) -> out_o (batch, c, rows_o): writes x[b][rr][cc] to every output holding row rr.
__device__ __forceinline__ void store_split(const split_map& sm, int64_t b, int64_t c, int64_t rr, int64_t cc,
                                            float v) {
#pragma unroll
  for (int o = 0; o < kLinearMaxOutputs; ++o) {
    if (o >= sm.count) break;
    const int64_t j = rr - sm.row0[o];
    if (j < 0 || j >= sm.rows[o]) continue;
    st_any(sm.data[o], sm.dtype[o], (b * c + cc) * sm.rows[o] + j, v);
  }
}

// softplus as the reference computes it: linear above 20 where exp would only add rounding.
__device__ __forceinline__ float softplus_ref(float v) {
  return v <= 20.0f ? log1pf(expf(v)) : v;
}

// ---- the decode step's epilogues of gemv ---------------------------------------------------------------

// in_proj: the causal conv's streaming update of columns [c0, c0 + dim) (Mamba's x, Mamba-2's xBC) as
// causal_conv1d_update computes it for one token with silu, on the projection rounded to the
// activation dtype (what the op-by-op path stores and the conv reads); and Mamba-2's limited dt.
struct conv_epi {
  int64_t c0, dim;
  const void* weight;  // (dim, width)
  const void* bias;    // (dim,), optional
  float* state;        // (rows, dim, state_len) float32
  int64_t width, state_len;
  split_map out;  // channel ranges -> (rows, channels of the range): xc, or Mamba-2's x | B | C
  int w_dt, bias_dt;
  int act;
  bool dt_limited;  // columns [dt0, dt0 + heads): clamp(softplus(dt + dt_bias), lo, hi) -> dt_out
  int64_t dt0, heads;
  const float* dt_bias;
  float lo, hi;
  void* dt_out;  // (rows, heads)
};

// dt_proj (Mamba-1): column c is channel c's dt; the state update of (row, channel) as the scan family's
// selective_state_update computes it, after the projection is rounded to the activation dtype.
struct ssu_epi {
  const void* x;         // (rows, dim) the conv's output
  const void* z;         // (rows, dim), optional gate
  const void* B;         // (rows, N)
  const void* C;         // (rows, N)
  const float* A;        // (dim, N)
  const float* D;        // (dim,), optional
  const float* dt_bias;  // (dim,), optional
  float* state;          // (rows, dim, N)
  void* out;             // (rows, dim)
  int x_dt, z_dt, b_dt, c_dt, out_dt;
  int64_t dim, N;
  int act;
  // The update spread over the block (ssu_group_finalize; N = 8 or 16, panels not split over blocks):
  // the default, SSMKIT_CUDA_SSU_BLOCK=0 keeps a thread a column (ssu_finalize).
  bool block;
};

// After the last panel of the whole call: rms_norm of the rows just written (the next layer's norm,
// or the final one), by the block that finished last.
struct norm_tail {
  int* done;  // finished panels; zero between launches
  rms_args norm;
};

// out_proj when the residual is float32: the projection, rounded to the activation dtype as the
// op-by-op path stores it, added to the residual in place (residual[row][col] += out), the sum that the
// next norm reads. Each element is finalized by exactly one thread, so the update needs no ordering.
// The block that finalizes a panel also stores the float64 sum of squares of the panel's 32 new
// residual values of each row (a fixed shuffle order) in that (row, panel)'s own slot: the next
// kernel's norm prologue adds the row's slots in panel order instead of reading the whole row again.
struct res_epi {
  float* residual;  // (rows, n) float32
  double* ssq;      // (rows, panels) float64
  int act;
};

enum gemv_epilogue : int { EPI_STORE = 0, EPI_CONV = 1, EPI_SSU = 2, EPI_RES = 3 };

__device__ void conv_finalize(const conv_epi& e, const out_map& om, int64_t row, int64_t col, float v) {
  const int64_t ch = col - e.c0;
  if (ch >= 0 && ch < e.dim) {
    const float x = round_to(e.act, v);
    float* st = e.state + (row * e.dim + ch) * e.state_len;
    const int64_t W = e.width, SL = e.state_len;
    float acc = e.bias != nullptr ? ld_value(e.bias, e.bias_dt, ch) : 0.0f;
    if (W == 4) {
      // The common width: the weights' loads go out together (not one round trip a tap).
      float wv[4];
      ld_values<4>(e.weight, e.w_dt, ch * 4, wv);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t m = SL - 3 + k;
        acc = fmaf(wv[k], m < SL ? st[m] : x, acc);
      }
    } else {
      for (int64_t k = 0; k < W; ++k) {
        const int64_t m = SL - (W - 1) + k;
        acc = fmaf(ld_value(e.weight, e.w_dt, ch * W + k), m < SL ? st[m] : x, acc);
      }
    }
    // Reads run ahead of writes, so the shift goes in place.
    for (int64_t i = 0; i < SL; ++i) st[i] = i + 1 < SL ? st[i + 1] : x;
    store_split(e.out, row, 1, ch, 0, silu(acc));
    return;
  }
  const int64_t h = col - e.dt0;
  if (e.dt_limited && h >= 0 && h < e.heads) {
    float dt = round_to(e.act, v);
    if (e.dt_bias != nullptr) dt += e.dt_bias[h];
    dt = softplus_ref(dt);
    dt = dt < e.lo ? e.lo : dt;
    dt = e.hi < dt ? e.hi : dt;
    st_any(e.dt_out, e.act, row * e.heads + h, dt);
    return;
  }
  store_col(om, row, col, v);
}

// States a chunk of the update loads before it computes (two float4 of state and of A, and the chunk's
// B and C through ld_values): the chunk's loads go out together instead of one state vector's round trip
// after another's store, or one B or C element's after another's use.
constexpr int kSsuChunk = 8;

// The update's loads cannot move above the state stores (the compiler cannot prove they do not alias),
// so each one that the code issues late is a memory latency on the finalizing warp's chain: x, z, D
// and dt_bias are read first, then the states in chunks of kSsuChunk (Mamba's d_state 16: 2 round trips
// for the states instead of 4, and none for z and D after the loop instead of 2). The arithmetic and its
// order are those of selective_state_update, unchanged.
__device__ void ssu_finalize(const ssu_epi& e, int64_t row, int64_t c, float v) {
  if (c >= e.dim) return;
  constexpr float kLog2e = 1.44269504088896341f;
  // x, z, D and dt_bias go out together; their values are taken after (ld_bits).
  const uint32_t xb = ld_bits<false>(e.x, e.x_dt, row * e.dim + c);
  const uint32_t zb = e.z != nullptr ? ld_bits<false>(e.z, e.z_dt, row * e.dim + c) : 0u;
  const float dv = e.D != nullptr ? e.D[c] : 0.0f;
  const float db = e.dt_bias != nullptr ? e.dt_bias[c] : 0.0f;
  const float x = bits_value(e.x_dt, xb);
  const float zv = bits_value(e.z_dt, zb);
  float dt = round_to(e.act, v) + db;
  dt = dt > 20.0f ? dt : log1pf(expf(dt));
  const float dtx = dt * x;
  float* st = e.state + (row * e.dim + c) * e.N;
  const float* A = e.A + c * e.N;
  float y = 0.0f;
  int64_t n = 0;
  if (e.N % 4 == 0) {
    // Rows of 4k floats: 16-byte aligned (the allocations are), one vector per 4 states.
    for (; n + kSsuChunk <= e.N; n += kSsuChunk) {
      float sr[kSsuChunk], ar[kSsuChunk], bv[kSsuChunk], cv[kSsuChunk];
      ld_values<kSsuChunk>(e.B, e.b_dt, row * e.N + n, bv);
      ld_values<kSsuChunk>(e.C, e.c_dt, row * e.N + n, cv);
#pragma unroll
      for (int h = 0; h < kSsuChunk; h += 4) {
        const float4 sv = *reinterpret_cast<const float4*>(st + n + h);
        const float4 av = *reinterpret_cast<const float4*>(A + n + h);
        sr[h] = sv.x;
        sr[h + 1] = sv.y;
        sr[h + 2] = sv.z;
        sr[h + 3] = sv.w;
        ar[h] = av.x;
        ar[h + 1] = av.y;
        ar[h + 2] = av.z;
        ar[h + 3] = av.w;
      }
#pragma unroll
      for (int q = 0; q < kSsuChunk; ++q) {
        sr[q] = fmaf(sr[q], ex2_approx(dt * ar[q] * kLog2e), dtx * bv[q]);
        y = fmaf(sr[q], cv[q], y);
      }
#pragma unroll
      for (int h = 0; h < kSsuChunk; h += 4) {
        *reinterpret_cast<float4*>(st + n + h) = make_float4(sr[h], sr[h + 1], sr[h + 2], sr[h + 3]);
      }
    }
    for (; n < e.N; n += 4) {
      const float4 sv = *reinterpret_cast<const float4*>(st + n);
      const float4 av = *reinterpret_cast<const float4*>(A + n);
      float sr[4] = {sv.x, sv.y, sv.z, sv.w};
      const float ar[4] = {av.x, av.y, av.z, av.w};
      float bv[4], cv[4];
      ld_values<4>(e.B, e.b_dt, row * e.N + n, bv);
      ld_values<4>(e.C, e.c_dt, row * e.N + n, cv);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        sr[q] = fmaf(sr[q], ex2_approx(dt * ar[q] * kLog2e), dtx * bv[q]);
        y = fmaf(sr[q], cv[q], y);
      }
      *reinterpret_cast<float4*>(st + n) = make_float4(sr[0], sr[1], sr[2], sr[3]);
    }
  }
  for (; n < e.N; ++n) {
    const float s = fmaf(st[n], ex2_approx(dt * A[n] * kLog2e), dtx * ld_value(e.B, e.b_dt, row * e.N + n));
    st[n] = s;
    y = fmaf(s, ld_value(e.C, e.c_dt, row * e.N + n), y);
  }
  float o = y + (e.D != nullptr ? dv * x : 0.0f);
  if (e.z != nullptr) o *= silu(zv);
  st_any(e.out, e.out_dt, row * e.dim + c, o);
}

// Lanes a column in the block-wide state update (ssu_group_finalize): eight lanes of one warp.
constexpr int kSsuLanes = 8;

// ssu_finalize spread over kSsuLanes lanes a column: lane l updates states l S .. l S + S - 1 (N = 8 S, S = 1
// or 2), every load of the update (x, z, D, dt bias, the states, A, B and C) out in one round trip where the
// column's thread walks N / kSsuChunk dependent chunks after its first loads. y is then added up in
// state order by every lane of the group from its neighbours' values (shuffles), so the operations and
// their order are ssu_finalize's: the same bits. Every lane of the warp calls it (the shuffles); ok
// false where the column does not exist (no loads, no stores).
template <int S>
__device__ __forceinline__ void ssu_group_finalize(const ssu_epi& e, int64_t row, int64_t c, float v, bool ok,
                                                   int l) {
  static_assert(S == 1 || S == 2, "d_state 8 or 16");
  constexpr float kLog2e = 1.44269504088896341f;
  const int64_t n0 = static_cast<int64_t>(l) * S;
  uint32_t xb = 0u, zb = 0u, bb[S], cb[S];
  float dv = 0.0f, db = 0.0f, sr[S], ar[S];
#pragma unroll
  for (int q = 0; q < S; ++q) {
    bb[q] = cb[q] = 0u;
    sr[q] = ar[q] = 0.0f;
  }
  float* st = e.state + (row * e.dim + c) * e.N + n0;
  if (ok) {
    xb = ld_bits<false>(e.x, e.x_dt, row * e.dim + c);
    if (e.z != nullptr) zb = ld_bits<false>(e.z, e.z_dt, row * e.dim + c);
    if (e.D != nullptr) dv = e.D[c];
    if (e.dt_bias != nullptr) db = e.dt_bias[c];
    const float* A = e.A + c * e.N + n0;
    // S floats at a multiple of S floats from a 16-byte aligned row: one vector each.
    if constexpr (S == 2) {
      const float2 sv = *reinterpret_cast<const float2*>(st);
      const float2 av = *reinterpret_cast<const float2*>(A);
      sr[0] = sv.x, sr[1] = sv.y;
      ar[0] = av.x, ar[1] = av.y;
    } else {
      sr[0] = st[0];
      ar[0] = A[0];
    }
#pragma unroll
    for (int q = 0; q < S; ++q) {
      bb[q] = ld_bits<false>(e.B, e.b_dt, row * e.N + n0 + q);
      cb[q] = ld_bits<false>(e.C, e.c_dt, row * e.N + n0 + q);
    }
  }
  const float x = bits_value(e.x_dt, xb);
  const float zv = bits_value(e.z_dt, zb);
  float dt = round_to(e.act, v) + db;
  dt = dt > 20.0f ? dt : log1pf(expf(dt));
  const float dtx = dt * x;
  float cv[S];
#pragma unroll
  for (int q = 0; q < S; ++q) {
    sr[q] = fmaf(sr[q], ex2_approx(dt * ar[q] * kLog2e), dtx * bits_value(e.b_dt, bb[q]));
    cv[q] = bits_value(e.c_dt, cb[q]);
  }
  if (ok) {
    if constexpr (S == 2) {
      *reinterpret_cast<float2*>(st) = make_float2(sr[0], sr[1]);
    } else {
      st[0] = sr[0];
    }
  }
  float y = 0.0f;
#pragma unroll
  for (int src = 0; src < kSsuLanes; ++src) {
#pragma unroll
    for (int q = 0; q < S; ++q) {
      y = fmaf(__shfl_sync(0xffffffffu, sr[q], src, kSsuLanes),
               __shfl_sync(0xffffffffu, cv[q], src, kSsuLanes), y);
    }
  }
  if (ok && l == 0) {
    float o = y + (e.D != nullptr ? dv * x : 0.0f);
    if (e.z != nullptr) o *= silu(zv);
    st_any(e.out, e.out_dt, row * e.dim + c, o);
  }
}

// ---- linear: gemv (M <= 64) ---------------------------------------------------------------------------

constexpr int kGemvThreads = 256;   // 8 warps
constexpr int kGemvStep = 32;       // panel rows per block step: 4 per warp, 8 threads per row
constexpr int kGemvUnroll = 4;      // block steps in flight: 4 x 16 bytes per thread
constexpr int kGemvMaxRows = 16;    // x rows per launch chunk
constexpr int kGemvXBatch = 4;      // x loads a thread has in flight while staging (8 spill at MR = 1)
constexpr int kGemvXFloats = 4096;  // shared-memory budget for the staged x (16 KiB)
constexpr int64_t kGemvMaxM = 64;   // above this, the GEMM kernels

struct gemv_args {
  const void* x;  // (M, K), or (batch, K, seqlen) when x_transposed
  const char* w;  // (panels, R, 128 bytes)
  const float* bias;
  float* partial;  // (chunks, blocks + panels, kGemvMaxRows * 32) split-K partials, slot block + panel
  int* counters;   // (chunks, panels)
  int64_t m, k, n, seqlen;
  int64_t panels;
  int64_t rows;     // R: panel rows (K for float32, Kx / 2 for bfloat16)
  int64_t total;    // panels * R: the rows of the call laid end to end
  int64_t blocks;   // G: blocks of a chunk (gridDim.x)
  int64_t seg_max;  // rows of the longest segment (the staged x's width)
  int x_dtype;
  bool x_transposed;
  out_map out;
  int epi;  // gemv_epilogue
  conv_epi conv;
  ssu_epi ssu;
  res_epi res;
  bool has_tail;
  norm_tail tail;
  // The norm prologue: x is rms_norm(pre.x rows) rather than read from x (pre.x (M, K), pre.d == K,
  // pre.out_dt the dtype the normalized x is rounded to, as rms_norm would store it), the rows' sums of
  // squares the previous out_proj left per panel in pre_ssq.
  bool has_pre;
  rms_args pre;
  const double* pre_ssq;  // (M, pre_panels) float64
  int64_t pre_panels;
  bool trigger_late;  // the next kernel may start only after the wait (pdl_trigger_late)
};

// Block b of a chunk's G blocks streams the rows [b T / G, (b + 1) T / G) of the T = panels x R panel
// rows laid end to end, panel after panel: ranges that differ by at most one row, each one or more
// segments (the part of the range in one panel). Callers keep T (G + 1) below 2^62.
__host__ __device__ __forceinline__ int64_t gemv_range_start(int64_t b, int64_t total, int64_t blocks) {
  return b * total / blocks;
}
// The block whose range holds flattened row x (0 <= x < T, G <= T): the largest b with b T / G <= x,
// i.e. b < (x + 1) G / T.
__host__ __device__ __forceinline__ int64_t gemv_block_of(int64_t x, int64_t total, int64_t blocks) {
  return ((x + 1) * blocks + total - 1) / total - 1;
}

// Element (row, col) of the result, bias added, to where the epilogue sends it. Returns the new
// residual value (EPI_RES), else 0.
template <int kEpi>
__device__ __forceinline__ float gemv_finalize(const gemv_args& a, int64_t row, int64_t col, float s) {
  const float v = s + (a.bias != nullptr ? a.bias[col] : 0.0f);
  if constexpr (kEpi == EPI_CONV) {
    conv_finalize(a.conv, a.out, row, col, v);
  } else if constexpr (kEpi == EPI_SSU) {
    ssu_finalize(a.ssu, row, col, v);
  } else if constexpr (kEpi == EPI_RES) {
    float* r = a.res.residual + row * a.n + col;
    const float nv = round_to(a.res.act, v) + *r;
    *r = nv;
    return nv;
  } else {
    store_col(a.out, row, col, v);
  }
  return 0.0f;
}

// EPI_RES: the sum of squares of one row's 32 finalized columns of a panel into its slot. Called by a
// whole warp whose lanes hold the panel's columns 0..31 of row mm (v: 0 past n).
template <int kEpi>
__device__ __forceinline__ void gemv_panel_ssq(const gemv_args& a, int64_t panel, int64_t m0, int mm, int mr,
                                               float v) {
  if constexpr (kEpi == EPI_RES) {
    const double sq = warp_sum(static_cast<double>(v) * v);
    if (threadIdx.x % 32 == 0 && mm < mr && a.res.ssq != nullptr)
      a.res.ssq[(m0 + mm) * a.panels + panel] = sq;
  }
}

// Blocks per SM a gemv asks the register allocator for: four (64 KiB of weights in flight per SM) while
// the row sums fit beside the weight registers, fewer as they grow (MR x 4 floats per thread). The plan
// sizes its grid to this many blocks per SM: the launch bounds make them resident together as far as
// registers go, and their shared memory (at most 16 KiB of x and 8 x MR x 32 floats, or the norm tail's
// row of at most 40 KiB) fits sm_90's 228 KiB; where it does not, the grid runs in more than one wave.
template <int MR>
constexpr int gemv_min_blocks() {
  return MR == 1 ? 4 : MR <= 4 ? 3 : MR == 8 ? 2 : 1;
}
// The state update's instances (dt_proj: a few blocks a SM at most, the panel count) ask for at most three,
// so that the block-wide update's loads fit beside the rest without spilling at MR = 1.
template <int MR, int kEpi>
constexpr int gemv_launch_blocks() {
  return kEpi == EPI_SSU && gemv_min_blocks<MR>() > 3 ? 3 : gemv_min_blocks<MR>();
}

// The epilogue's inputs of element (row, col) that come from DRAM (the state update's states, A row, D
// and dt bias; the conv's state and weights, last touched a token ago) pulled into L2 while the weights
// stream: the finalizing warp's dependent loads then wait on L2, not DRAM (dt_proj: 3 of them). Every
// block of a panel asks (which of them finalizes is known only at the end); a hint, no data moves.
template <int kEpi>
__device__ __forceinline__ void gemv_prefetch_epilogue(const gemv_args& a, int64_t row, int64_t col) {
  if constexpr (kEpi == EPI_SSU) {
    const ssu_epi& e = a.ssu;
    if (col >= e.dim || e.N < 1) return;
    const float* st = e.state + (row * e.dim + col) * e.N;
    const float* A = e.A + col * e.N;
    prefetch_l2(st);
    prefetch_l2(st + e.N - 1);
    prefetch_l2(A);
    prefetch_l2(A + e.N - 1);
    if (e.D != nullptr) prefetch_l2(e.D + col);
    if (e.dt_bias != nullptr) prefetch_l2(e.dt_bias + col);
  } else if constexpr (kEpi == EPI_CONV) {
    const conv_epi& e = a.conv;
    const int64_t ch = col - e.c0;
    if (ch < 0 || ch >= e.dim || e.state_len < 1 || e.width < 1) return;
    const float* st = e.state + (row * e.dim + ch) * e.state_len;
    prefetch_l2(st);
    prefetch_l2(st + e.state_len - 1);
    const int64_t wsz = e.w_dt == SSMKIT_DTYPE_F32 ? 4 : 2;
    const char* w = static_cast<const char*>(e.weight) + ch * e.width * wsz;
    prefetch_l2(w);
    prefetch_l2(w + (e.width - 1) * wsz);
  }
}

// The first block step group (kGemvUnroll steps) of rows [r0, r1) of a panel: zeros past r1.
__device__ __forceinline__ void gemv_first_loads(const char* wp, int64_t r0, int64_t r1, int sub,
                                                 uint4 (&wv)[kGemvUnroll]) {
#pragma unroll
  for (int u = 0; u < kGemvUnroll; ++u) {
    const int64_t row = r0 + u * kGemvStep + sub;
    wv[u] =
        row < r1 ? __ldcs(reinterpret_cast<const uint4*>(wp + row * kPanelRowBytes)) : make_uint4(0, 0, 0, 0);
  }
}

// The G blocks of a chunk of MR rows, each streaming its range segment by segment; see the file
// comment. kEpi: gemv_epilogue; kTail: the norm tail; kNorm: the norm prologue.
template <int MR, bool kBF16, int kEpi, bool kTail, bool kNorm>
__global__ void __launch_bounds__(kGemvThreads, (gemv_launch_blocks<MR, kEpi>()))
    gemv_kernel(const __grid_constant__ gemv_args a) {
  SSMKIT_TRACE_SCOPE();
  extern __shared__ float smem[];  // xs (MR, seg_max * kPerRow) float32, then red (8, MR, 32)
  __shared__ bool s_last;
  constexpr int kPerRow = kBF16 ? 2 : 1;  // k values per panel row
  const int64_t blk = blockIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t m0 = chunk * MR;
  const int mr = static_cast<int>(a.m - m0 < MR ? a.m - m0 : MR);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = lane % 8;               // 16-byte piece of a row: columns 4j .. 4j + 3
  const int sub = warp * 4 + lane / 8;  // which row of each block step
  // This block's range [pos, hi). Only pos lives across a segment's finish (whose epilogues want the
  // registers); the segment [r0, r1) of panel pos / R is derived from it.
  int64_t pos = gemv_range_start(blk, a.total, a.blocks);
  const int64_t hi = gemv_range_start(blk + 1, a.total, a.blocks);

  if (!a.trigger_late) pdl_trigger();
  // The weights are constant: the first loads go out before waiting on the previous kernel.
  uint4 wv[kGemvUnroll];
  {
    const int64_t panel = pos / a.rows;
    const int64_t r0 = pos - panel * a.rows;
    gemv_first_loads(a.w + panel * a.rows * kPanelRowBytes + j * 16, r0,
                     r0 + (hi - pos) < a.rows ? r0 + (hi - pos) : a.rows, sub, wv);
  }
  pdl_wait();
  if (a.trigger_late) pdl_trigger();

  float* xs = smem;
  float* red = smem + MR * a.seg_max * kPerRow;  // (8, MR, 32)
  __shared__ float s_rstd[MR];
  // One row (MR = 1) of at most kPreEarly x 32 panel slots, bfloat16 panels (the float32 instances would
  // spill with it): every warp loads the row's slots itself and sums them after the first segment's first x
  // loads have gone out, so the slots' round trip and the first x loads' overlap (the block-wide path below
  // waits for one, then the other). The same order as the block-wide path, so the same rstd bit for bit.
  constexpr int kPreEarly = 3;  // d_model <= 3072 (kPreEarly x 32 x 32)
  bool pre_early = false;
  double pre_v[kPreEarly];
  float rstd0 = 0.0f;  // MR = 1: the row's rstd once known
  if constexpr (kNorm && MR == 1 && kBF16) {
    pre_early = a.pre_panels <= kPreEarly * 32;
    if (pre_early) {
      const double* slots = a.pre_ssq + m0 * a.pre_panels;
#pragma unroll
      for (int u = 0; u < kPreEarly; ++u) {
        const int64_t q = lane + u * 32;
        pre_v[u] = q < a.pre_panels ? __ldcg(slots + q) : 0.0;
      }
    }
  }
  if (kNorm && !pre_early) {
    // Warp w adds up rows w, w + 8, ... from their per-panel slots (pre_panels doubles a row, one L2
    // round trip): lane l takes slots l, l + 32, ... in order, then a fixed shuffle tree, so every
    // block, graph or not, gets the same rstd bit for bit; its first weights are in flight meanwhile.
    for (int mm = warp; mm < mr; mm += kGemvThreads / 32) {
      const double* slots = a.pre_ssq + (m0 + mm) * a.pre_panels;
      double ss = 0.0;
#pragma unroll 4
      for (int64_t q = lane; q < a.pre_panels; q += 32) ss += __ldcg(slots + q);
      ss = warp_sum(ss);
      if (lane == 0) s_rstd[mm] = rms_rstd(ss, a.k, a.pre.eps);
    }
    __syncthreads();
    rstd0 = s_rstd[0];
  }
  int finished = 0;           // panels this block finalized (the norm tail's count)
  bool staged_whole = false;  // xs holds the whole K (a whole panel's rows): later whole panels reuse it
  for (;;) {
    const int64_t panel = pos / a.rows;
    const int64_t r0 = pos - panel * a.rows;
    const int64_t r1 = r0 + (hi - pos) < a.rows ? r0 + (hi - pos) : a.rows;
    const char* wp = a.w + panel * a.rows * kPanelRowBytes + j * 16;
    if constexpr (kEpi == EPI_SSU || kEpi == EPI_CONV) {
      if (threadIdx.x < MR * kPanel) {
        const int mm = threadIdx.x / kPanel;
        const int64_t col = panel * kPanel + threadIdx.x % kPanel;
        if (mm < mr && col < a.n) gemv_prefetch_epilogue<kEpi>(a, m0 + mm, col);
      }
    }
    // x rows m0.., k in [r0 * kPerRow, r1 * kPerRow) -> xs as float32; zero past K and past the last
    // row. With the prologue, x[row][k] = pre.x[row][k] * rstd * pre.w[k] rounded to pre.out_dt, what
    // rms_row would store. kGemvXBatch loads a thread in flight. The previous segment's readers of xs
    // have passed the barrier after its reduction.
    const int64_t klen = (r1 - r0) * kPerRow;
    const int64_t kbase = r0 * kPerRow;
    const int64_t xtotal = staged_whole && r0 == 0 && r1 == a.rows ? 0 : MR * klen;
    int64_t xfirst = threadIdx.x;
    if constexpr (kNorm && MR == 1 && kBF16) {
      if (pre_early) {
        // A first batch of x loads (kPreBatch: the slots hold registers meanwhile), then the slots' sum
        // (all lanes of every warp), then the batch.
        constexpr int kPreBatch = 2;
        uint32_t xb[kPreBatch], wb[kPreBatch];
#pragma unroll
        for (int q = 0; q < kPreBatch; ++q) {
          const int64_t i = xfirst + q * kGemvThreads;
          const int64_t kk = kbase + i;
          const bool ok = i < xtotal && kk < a.k;
          xb[q] = ok ? ld_bits<true>(a.pre.x, a.pre.x_dt, m0 * a.k + kk) : 0u;
          wb[q] = ok ? ld_bits<false>(a.pre.w, a.pre.w_dt, kk) : 0u;
        }
        float xv[kPreBatch], nw[kPreBatch];
#pragma unroll
        for (int q = 0; q < kPreBatch; ++q) {
          xv[q] = bits_value(a.pre.x_dt, xb[q]);  // zero bits: 0.0f in every dtype
          nw[q] = bits_value(a.pre.w_dt, wb[q]);
        }
        double ss = 0.0;
#pragma unroll
        for (int u = 0; u < kPreEarly; ++u) ss += pre_v[u];
        ss = warp_sum(ss);
        rstd0 = rms_rstd(ss, a.k, a.pre.eps);
#pragma unroll
        for (int q = 0; q < kPreBatch; ++q) {
          const int64_t i = xfirst + q * kGemvThreads;
          if (i < xtotal) xs[i] = kbase + i < a.k ? round_to(a.pre.out_dt, xv[q] * rstd0 * nw[q]) : 0.0f;
        }
        xfirst += kPreBatch * kGemvThreads;
        pre_early = false;
      }
    }
    // Element i of the segment's staged x: its row mm and k index kk (one row: no division), and whether it
    // is there.
    auto x_elem = [&](int64_t i, int& mm, int64_t& kk) {
      mm = MR == 1 ? 0 : static_cast<int>(i / klen);
      kk = kbase + (MR == 1 ? i : i % klen);
      return i < xtotal && mm < mr && kk < a.k;
    };
    for (int64_t i0 = xfirst; i0 < xtotal; i0 += kGemvXBatch * kGemvThreads) {
      // The batch's loads first (bits), then their values: one round trip a batch.
      uint32_t xb[kGemvXBatch], wb[kGemvXBatch];
#pragma unroll
      for (int q = 0; q < kGemvXBatch; ++q) {
        int mm;
        int64_t kk;
        const bool ok = x_elem(i0 + q * kGemvThreads, mm, kk);
        xb[q] = 0u;
        wb[q] = 0u;
        if (ok) {
          if constexpr (kNorm) {
            xb[q] = ld_bits<true>(a.pre.x, a.pre.x_dt, (m0 + mm) * a.k + kk);
            wb[q] = ld_bits<false>(a.pre.w, a.pre.w_dt, kk);
          } else {
            xb[q] = ld_bits<false>(a.x, a.x_dtype, x_index(a.x_transposed, a.seqlen, a.k, m0 + mm, kk));
          }
        }
      }
      float v[kGemvXBatch];
#pragma unroll
      for (int q = 0; q < kGemvXBatch; ++q) {
        int mm;
        int64_t kk;
        v[q] = 0.0f;
        if (x_elem(i0 + q * kGemvThreads, mm, kk)) {
          if constexpr (kNorm) {
            v[q] = round_to(a.pre.out_dt, bits_value(a.pre.x_dt, xb[q]) * (MR == 1 ? rstd0 : s_rstd[mm]) *
                                              bits_value(a.pre.w_dt, wb[q]));
          } else {
            v[q] = bits_value(a.x_dtype, xb[q]);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kGemvXBatch; ++q) {
        const int64_t i = i0 + q * kGemvThreads;
        if (i < xtotal) xs[i] = v[q];
      }
    }
    // Also orders the previous segment's readers of red before this one's reduction writes it.
    __syncthreads();
    staged_whole = r0 == 0 && r1 == a.rows;

    float acc[MR][4];
#pragma unroll
    for (int mm = 0; mm < MR; ++mm) {
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[mm][c] = 0.0f;
    }
    for (int64_t base = r0; base < r1; base += kGemvUnroll * kGemvStep) {
      const int64_t next = base + kGemvUnroll * kGemvStep;
      uint4 wn[kGemvUnroll];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int64_t row = next + u * kGemvStep + sub;
        wn[u] = row < r1 ? __ldcs(reinterpret_cast<const uint4*>(wp + row * kPanelRowBytes))
                         : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int64_t row = base + u * kGemvStep + sub;
        if (row >= r1) continue;
        const float* xr = xs + (row - r0) * kPerRow;
        const uint32_t wq[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
        if constexpr (kBF16) {
#pragma unroll
          for (int mm = 0; mm < MR; ++mm) {
            const float2 xv = *reinterpret_cast<const float2*>(xr + mm * klen);
#pragma unroll
            for (int c = 0; c < 4; ++c) {
              acc[mm][c] = fmaf(xv.x, bf16_lo(wq[c]), acc[mm][c]);
              acc[mm][c] = fmaf(xv.y, bf16_hi(wq[c]), acc[mm][c]);
            }
          }
        } else {
#pragma unroll
          for (int mm = 0; mm < MR; ++mm) {
            const float xv = xr[mm * klen];
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[mm][c] = fmaf(xv, __uint_as_float(wq[c]), acc[mm][c]);
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) wv[u] = wn[u];
    }

    // Lanes j, j + 8, j + 16, j + 24 hold the same columns: fold them, then the 8 warps in order.
#pragma unroll
    for (int mm = 0; mm < MR; ++mm) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        float v = acc[mm][c];
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
        if (lane < 8) red[(warp * MR + mm) * kPanel + 4 * j + c] = v;
      }
    }
    // The next segment (the next panel's first rows) starts loading while this one finishes, except
    // before the state update, whose registers those loads would take (dt_proj's blocks hold whole
    // panels: no next segment).
    constexpr bool kLoadsOverFinish = kEpi != EPI_SSU;
    const int64_t sp = panel;
    pos += r1 - r0;
    const bool more = pos < hi;
    if (kLoadsOverFinish && more) {
      gemv_first_loads(a.w + (sp + 1) * a.rows * kPanelRowBytes + j * 16, 0,
                       hi - pos < a.rows ? hi - pos : a.rows, sub, wv);
    }
    __syncthreads();

    // The blocks whose ranges share panel sp: first .. last (one: no split-K); this one is blk.
    const int64_t first = gemv_block_of(sp * a.rows, a.total, a.blocks);
    const int nseg = static_cast<int>(gemv_block_of(sp * a.rows + a.rows - 1, a.total, a.blocks) - first + 1);
    // The panel's partials, slots first + sp .. last + sp (allocated whenever a panel is split).
    float* part = nseg > 1
                      ? a.partial + (chunk * (a.blocks + a.panels) + first + sp) * (kGemvMaxRows * kPanel)
                      : nullptr;
    bool grouped = false;  // the block-wide state update (whole panels only)
    if constexpr (kEpi == EPI_SSU) grouped = nseg == 1 && a.ssu.block;
    if (grouped) {
      // kGemvThreads / kSsuLanes columns a pass, a group of lanes each; the passes are uniform over the
      // block, so every lane of a warp reaches the group's shuffles.
      for (int t0 = 0; t0 < MR * kPanel; t0 += kGemvThreads / kSsuLanes) {
        const int t = t0 + static_cast<int>(threadIdx.x) / kSsuLanes;
        const int mm = t / kPanel;
        const int64_t col = sp * kPanel + t % kPanel;
        const bool ok = t < MR * kPanel && mm < mr && col < a.n && col < a.ssu.dim;
        float s = 0.0f;
        if (t < MR * kPanel) {
#pragma unroll
          for (int w8 = 0; w8 < kGemvThreads / 32; ++w8) s += red[w8 * MR * kPanel + t];
        }
        const float v = s + (ok && a.bias != nullptr ? a.bias[col] : 0.0f);  // gemv_finalize's sum
        const int l = static_cast<int>(threadIdx.x) % kSsuLanes;
        if (a.ssu.N == 8) {
          ssu_group_finalize<1>(a.ssu, m0 + mm, col, v, ok, l);
        } else {
          ssu_group_finalize<2>(a.ssu, m0 + mm, col, v, ok, l);
        }
      }
    }
    for (int t = threadIdx.x; !grouped && t < MR * kPanel; t += kGemvThreads) {
      float s = 0.0f;
#pragma unroll
      for (int w8 = 0; w8 < kGemvThreads / 32; ++w8) s += red[w8 * MR * kPanel + t];
      if (nseg == 1) {
        const int mm = t / kPanel;
        const int64_t col = sp * kPanel + t % kPanel;
        float v = 0.0f;
        if (mm < mr && col < a.n) v = gemv_finalize<kEpi>(a, m0 + mm, col, s);
        gemv_panel_ssq<kEpi>(a, sp, m0, mm, mr, v);
      } else {
        part[(blk - first) * (kGemvMaxRows * kPanel) + t] = s;
      }
    }
    if (nseg == 1) {
      ++finished;
    } else {
      // Split-K: the last segment of panel sp to finish sums the partials, in block order. The partials
      // are published by one acq_rel counter bump a block (a fence in every thread cost ~2% of the step).
      __syncthreads();
      if (threadIdx.x == 0) s_last = atomic_add_acq_rel(a.counters + chunk * a.panels + sp, 1) == nseg - 1;
      __syncthreads();
      if (s_last) {
        ++finished;
        // Every thread takes part: group g of the threads sums segments g, g + kGroups, ..., then the
        // groups add up in order (a fixed order, so the result does not depend on the run).
        constexpr int kItems = MR * kPanel;
        constexpr int kGroups = kItems >= kGemvThreads ? 1 : kGemvThreads / kItems;
        for (int t = threadIdx.x; t < kItems * kGroups; t += kGemvThreads) {
          const int item = t % kItems, g = t / kItems;
          float s = 0.0f;
#pragma unroll 4
          for (int q = g; q < nseg; q += kGroups) s += __ldcg(part + q * (kGemvMaxRows * kPanel) + item);
          red[t] = s;  // (kGroups, kItems)
        }
        __syncthreads();
        for (int t = threadIdx.x; t < kItems; t += kGemvThreads) {
          float s = 0.0f;
#pragma unroll
          for (int g = 0; g < kGroups; ++g) s += red[g * kItems + t];
          const int mm = t / kPanel;
          const int64_t col = sp * kPanel + t % kPanel;
          float v = 0.0f;
          if (mm < mr && col < a.n) v = gemv_finalize<kEpi>(a, m0 + mm, col, s);
          gemv_panel_ssq<kEpi>(a, sp, m0, mm, mr, v);
        }
        if (threadIdx.x == 0) a.counters[chunk * a.panels + sp] = 0;
      }
    }
    if (!more) break;
    if (!kLoadsOverFinish) {
      gemv_first_loads(a.w + (sp + 1) * a.rows * kPanelRowBytes + j * 16, 0,
                       hi - pos < a.rows ? hi - pos : a.rows, sub, wv);
    }
  }
  if constexpr (kTail) {
    // The block that completes the last panel of the call normalizes every row (see norm_tail).
    __syncthreads();
    if (threadIdx.x == 0) {
      const int prev = finished > 0 ? atomic_add_acq_rel(a.tail.done, finished) : -1;
      s_last = finished > 0 && prev + finished == static_cast<int>(a.panels * gridDim.y);
    }
    __syncthreads();
    if (!s_last) return;
    __shared__ double norm_red[33];
    const int64_t out_rows =
        a.tail.norm.last_of > 0 ? a.tail.norm.rows / a.tail.norm.last_of : a.tail.norm.rows;
    for (int64_t r = 0; r < out_rows; ++r) rms_row<true>(a.tail.norm, r, smem, norm_red);
    if (threadIdx.x == 0) *a.tail.done = 0;
  }
}

// The split of one gemv call: G blocks per chunk of rows over the T = panels x R panel rows.
struct gemv_plan {
  int mr = 1;
  int64_t chunks = 1;
  int64_t rows = 0;  // R
  int64_t panels = 0;
  int64_t total = 0;    // T
  int64_t blocks = 1;   // G
  int64_t seg_max = 0;  // rows of the longest segment
  size_t smem = 0;
  size_t partial_floats = 0;
  size_t counters = 0;
};

// Blocks per SM a gemv runs (SSMKIT_CUDA_GEMV_UNITS, 1..64: the bench's knob; 0 when unset: the
// kernel's resident blocks, gemv_min_blocks).
int gemv_units_per_sm() {
  const int u = env_int("SSMKIT_CUDA_GEMV_UNITS", 0);
  return u >= 1 && u <= 64 ? u : 0;
}

// Whether a split-K grid is rounded down to a multiple of the panel count (SSMKIT_CUDA_GEMV_ALIGN, on
// unless 0): see plan_gemv.
bool gemv_align_panels() {
  return env_flag("SSMKIT_CUDA_GEMV_ALIGN", true);
}

int gemv_resident_blocks(int mr) {
  switch (mr) {
    case 1: return gemv_min_blocks<1>();
    case 2: return gemv_min_blocks<2>();
    case 4: return gemv_min_blocks<4>();
    case 8: return gemv_min_blocks<8>();
    default: return gemv_min_blocks<16>();
  }
}

// A block streams at least one full pipeline (kGemvUnroll steps, 16 KiB) unless whole panels are
// shorter: a shorter range pays a block's fixed latencies (x staging, the partial's store, atomic and
// read back) for fewer bytes than one round trip could carry, so a small matrix (x_proj, dt_proj of
// Mamba-2.8B) runs fewer, fuller blocks.
constexpr int64_t kGemvMinRows = static_cast<int64_t>(kGemvUnroll) * kGemvStep;

gemv_plan plan_gemv(int64_t m, int64_t k, int64_t n, bool bf16, int sms) {
  gemv_plan g;
  g.mr = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
  g.chunks = (m + g.mr - 1) / g.mr;
  const int64_t kx = bf16 ? (k + 1) / 2 * 2 : k;
  g.rows = std::max<int64_t>(bf16 ? kx / 2 : k, 1);
  g.panels = std::max<int64_t>((n + kPanel - 1) / kPanel, 1);
  g.total = g.panels * g.rows;
  const int per_row = bf16 ? 2 : 1;
  // One wave: as many blocks as are resident at once, every one with the same number of rows (+-1), so
  // that every SM streams until the end of the call (a grid of equal units in 1.2 to 1.6 waves leaves
  // most SMs idle through its last wave).
  const int knob = gemv_units_per_sm();
  const int64_t per_sm = knob > 0 ? knob : gemv_resident_blocks(g.mr);
  const int64_t slots = std::max<int64_t>(1, (per_sm * std::max(sms, 1) + g.chunks - 1) / g.chunks);
  int64_t blocks = std::min(slots, std::max(g.panels, (g.total + kGemvMinRows - 1) / kGemvMinRows));
  // Ranges that meet the panels' boundaries, where such a grid lies within 1/8 below: a divisor of the
  // panel count (whole panels a block, no split-K: the head of Mamba-2.8B, 1572 panels on 528 slots, 524
  // blocks of 3 panels), or, unless SSMKIT_CUDA_GEMV_ALIGN=0, a multiple of it (a whole fraction of a panel
  // a block: every range in one panel, one segment, x staged once, one reduction and one split-K bump, where
  // a range across a boundary pays each twice and its block ends last; out_proj of Mamba-2.8B, 80 panels on
  // 528 slots: 480 blocks, 6 a panel; measured on the H200, Nsight 18.8-19.7 -> 15.0-15.4 us, the bf16
  // decode step -0.13 to -0.15 ms a token).
  int64_t aligned = 0;
  if (blocks < g.panels) {
    const int64_t per = (g.panels + blocks - 1) / blocks;
    if (g.panels % per == 0) aligned = g.panels / per;
  } else if (gemv_align_panels()) {
    aligned = blocks / g.panels * g.panels;
  }
  if (aligned * 8 >= blocks * 7) blocks = aligned;
  // x (mr, segment rows * per_row) float32 must fit the shared-memory budget.
  const int64_t max_rows = std::max<int64_t>(kGemvStep, kGemvXFloats / g.mr / per_row);
  // Past one wave, whole waves (batch 3: in_proj's 800 blocks on 396 slots would leave 8 for a third).
  if (std::min(g.rows, (g.total + blocks - 1) / blocks) > max_rows) {
    blocks = std::max(blocks, (g.total + max_rows - 1) / max_rows);
    blocks = (blocks + slots - 1) / slots * slots;
  }
  blocks = std::max<int64_t>(1, std::min(blocks, g.total));
  g.blocks = blocks;
  g.seg_max = std::min(g.rows, (g.total + blocks - 1) / blocks);
  g.smem = static_cast<size_t>(g.mr) * g.seg_max * per_row * sizeof(float) +
           static_cast<size_t>(kGemvThreads / 32) * g.mr * kPanel * sizeof(float);
  // Whole panels a block (G divides the panel count) need no partials.
  const bool split = !(blocks <= g.panels && g.panels % blocks == 0);
  g.partial_floats = split ? static_cast<size_t>(g.chunks * (blocks + g.panels)) * kGemvMaxRows * kPanel : 0;
  g.counters = split ? static_cast<size_t>(g.chunks * g.panels) : 0;
  return g;
}

template <bool kBF16, int kEpi, bool kTail, bool kNorm>
status launch_gemv_t(const launch_ctx& ctx, const gemv_args& a, const gemv_plan& g) {
  // The range arithmetic multiplies T by at most G + 1.
  if (a.blocks < 1 || a.total < a.blocks || a.total > (int64_t{1} << 62) / (a.blocks + 1))
    return make_status(status_code::unsupported, "linear: the problem is too large for gemv");
  unsigned gx = 0;
  SSMKIT_RETURN_IF_ERROR(grid_size("linear", a.blocks, &gx));
  if (g.chunks > 65535) return make_status(status_code::unsupported, "linear: too many rows for gemv");
  const dim3 grid(gx, static_cast<unsigned>(g.chunks));
  gemv_args b = a;
  b.trigger_late = pdl_trigger_late();
  switch (g.mr) {
    case 1:
      return launch(ctx, gemv_kernel<1, kBF16, kEpi, kTail, kNorm>, grid, dim3(kGemvThreads), g.smem, b);
    case 2:
      return launch(ctx, gemv_kernel<2, kBF16, kEpi, kTail, kNorm>, grid, dim3(kGemvThreads), g.smem, b);
    case 4:
      return launch(ctx, gemv_kernel<4, kBF16, kEpi, kTail, kNorm>, grid, dim3(kGemvThreads), g.smem, b);
    case 8:
      return launch(ctx, gemv_kernel<8, kBF16, kEpi, kTail, kNorm>, grid, dim3(kGemvThreads), g.smem, b);
    default:
      return launch(ctx, gemv_kernel<16, kBF16, kEpi, kTail, kNorm>, grid, dim3(kGemvThreads), g.smem, b);
  }
}

// ---- linear: gemm_mma (M > 64, bfloat16 x and panels) ------------------------------------------------

constexpr int kMmaBM = 128;
constexpr int kMmaBN = 128;  // 4 panels
constexpr int kMmaBK = 32;   // 16 k-pair rows
constexpr int kMmaStages = 3;
constexpr int kMmaThreads = 256;
constexpr int kMmaAPitch = kMmaBK + 8;  // bf16 per A row: 80 bytes, so 8 rows of an ldmatrix hit 32 banks
constexpr int kMmaBPitch = kMmaBN + 8;  // words per B k-pair row: 4 lanes' rows land 8 banks apart
constexpr int kMmaAStage = kMmaBM * kMmaAPitch * 2;        // bytes
constexpr int kMmaBStage = (kMmaBK / 2) * kMmaBPitch * 4;  // bytes
constexpr int kMmaSmem = kMmaStages * (kMmaAStage + kMmaBStage);

struct gemm_args {
  const void* x;
  const char* w;
  const float* bias;
  int64_t m, k, n, kx, seqlen, panels;
  int x_dtype;
  bool x_transposed;
  bool a_async;  // x (M, K) row-major with K % 8 == 0: 16-byte cp.async of A
  out_map out;
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// B tile kt (16 k-pair rows of 4 panels) into stage smem by cp.async: 512 pieces of 16 bytes.
__device__ __forceinline__ void mma_load_b(const gemm_args& a, uint32_t* bs, int64_t bn, int64_t kt) {
  const int64_t kp_rows = a.kx / 2;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int c = threadIdx.x + i * kMmaThreads;
    const int pi = c / 128, within = c % 128, kpl = within / 8, piece = within % 8;
    const int64_t pn = bn * 4 + pi;
    const int64_t kp = kt * (kMmaBK / 2) + kpl;
    const bool valid = pn < a.panels && kp < kp_rows;
    const char* src = valid ? a.w + (pn * kp_rows + kp) * kPanelRowBytes + piece * 16 : a.w;
    cp_async16(bs + kpl * kMmaBPitch + pi * kPanel + piece * 4, src, valid);
  }
}

// A tile kt (128 rows x 32 k) of a row-major x with K % 8 == 0 by cp.async: 512 pieces of 8 bf16.
__device__ __forceinline__ void mma_load_a_async(const gemm_args& a, uint16_t* as, int64_t bm, int64_t kt) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int c = threadIdx.x + i * kMmaThreads;
    const int row = c / 4, piece = c % 4;
    const int64_t gm = bm * kMmaBM + row;
    const int64_t k = kt * kMmaBK + piece * 8;
    const bool valid = gm < a.m && k < a.k;
    const void* src = valid ? static_cast<const uint16_t*>(a.x) + gm * a.k + k : a.x;
    cp_async16(as + row * kMmaAPitch + piece * 8, src, valid);
  }
}

// A tile kt through registers (x in the scan layout, or K % 8 != 0): each thread 16 consecutive k of one
// row; in the scan layout consecutive threads take consecutive rows, which are contiguous there.
__device__ __forceinline__ void mma_fetch_a(const gemm_args& a, int64_t bm, int64_t kt, uint32_t (&r)[8]) {
  const int row = a.x_transposed ? threadIdx.x % kMmaBM : threadIdx.x / 2;
  const int kg = a.x_transposed ? threadIdx.x / kMmaBM : threadIdx.x % 2;
  const int64_t gm = bm * kMmaBM + row;
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    uint32_t pair = 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t k = kt * kMmaBK + kg * 16 + 2 * e + h;
      uint32_t v = 0;
      if (gm < a.m && k < a.k) {
        const int64_t idx =
            a.x_transposed ? ((gm / a.seqlen) * a.k + k) * a.seqlen + gm % a.seqlen : gm * a.k + k;
        v = x[idx];
      }
      pair |= v << (16 * h);
    }
    r[e] = pair;
  }
}

template <bool kTransposed>
__device__ __forceinline__ void mma_put_a(uint16_t* as, const uint32_t (&r)[8]) {
  const int row = kTransposed ? threadIdx.x % kMmaBM : threadIdx.x / 2;
  const int kg = kTransposed ? threadIdx.x / kMmaBM : threadIdx.x % 2;
  uint4* dst = reinterpret_cast<uint4*>(as + row * kMmaAPitch + kg * 16);
  dst[0] = make_uint4(r[0], r[1], r[2], r[3]);
  dst[1] = make_uint4(r[4], r[5], r[6], r[7]);
}

__global__ void __launch_bounds__(kMmaThreads) gemm_mma_kernel(const __grid_constant__ gemm_args a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  uint16_t* as_base = reinterpret_cast<uint16_t*>(smem_raw);
  uint32_t* bs_base = reinterpret_cast<uint32_t*>(smem_raw + kMmaStages * kMmaAStage);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 4, wn = warp % 4;
  const int g = lane / 4, t4 = lane % 4;
  const int64_t ntiles = (a.n + kMmaBN - 1) / kMmaBN;
  const int64_t mtiles = (a.m + kMmaBM - 1) / kMmaBM;
  const int64_t kt_count = (a.kx + kMmaBK - 1) / kMmaBK;
  pdl_trigger();
  pdl_wait();
  for (int64_t tile = blockIdx.x; tile < ntiles * mtiles; tile += gridDim.x) {
    // n fastest: consecutive blocks share the same rows of x and stream different panels.
    const int64_t bn = tile % ntiles, bm = tile / ntiles;
    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;
    uint32_t areg[8];
    // Prologue: stages 0 .. kMmaStages - 2.
#pragma unroll
    for (int s = 0; s < kMmaStages - 1; ++s) {
      if (s < kt_count) {
        uint16_t* as = as_base + s * (kMmaAStage / 2);
        mma_load_b(a, bs_base + s * (kMmaBStage / 4), bn, s);
        if (a.a_async) {
          mma_load_a_async(a, as, bm, s);
        } else {
          mma_fetch_a(a, bm, s, areg);
          if (a.x_transposed) {
            mma_put_a<true>(as, areg);
          } else {
            mma_put_a<false>(as, areg);
          }
        }
      }
      cp_async_commit();
    }
    for (int64_t kt = 0; kt < kt_count; ++kt) {
      cp_async_wait<kMmaStages - 2>();
      __syncthreads();
      const int64_t nt = kt + kMmaStages - 1;
      const int ns = static_cast<int>(nt % kMmaStages);
      const bool fetch = nt < kt_count;
      if (fetch) {
        mma_load_b(a, bs_base + ns * (kMmaBStage / 4), bn, nt);
        if (a.a_async) {
          mma_load_a_async(a, as_base + ns * (kMmaAStage / 2), bm, nt);
        } else {
          mma_fetch_a(a, bm, nt, areg);
        }
      }
      cp_async_commit();
      const int cs = static_cast<int>(kt % kMmaStages);
      const uint16_t* as = as_base + cs * (kMmaAStage / 2);
      const uint32_t* bs = bs_base + cs * (kMmaBStage / 4);
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        uint32_t af[4][4];
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
          ldmatrix_x4(af[mi],
                      as + (wm * 64 + mi * 16 + (lane % 16)) * kMmaAPitch + ks * 16 + (lane / 16) * 8);
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int col = wn * 32 + ni * 8 + g;
          const uint32_t b0 = bs[(ks * 8 + t4) * kMmaBPitch + col];
          const uint32_t b1 = bs[(ks * 8 + 4 + t4) * kMmaBPitch + col];
#pragma unroll
          for (int mi = 0; mi < 4; ++mi) mma_bf16(acc[mi][ni], af[mi], b0, b1);
        }
      }
      if (fetch && !a.a_async) {
        uint16_t* as_next = as_base + ns * (kMmaAStage / 2);
        if (a.x_transposed) {
          mma_put_a<true>(as_next, areg);
        } else {
          mma_put_a<false>(as_next, areg);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t row = bm * kMmaBM + wm * 64 + mi * 16 + g + (e / 2) * 8;
          const int64_t col = bn * kMmaBN + wn * 32 + ni * 8 + 2 * t4 + (e % 2);
          if (row < a.m && col < a.n)
            store_col(a.out, row, col, acc[mi][ni][e] + (a.bias != nullptr ? a.bias[col] : 0.0f));
        }
      }
    }
  }
}

// ---- linear: gemm_simt (M > 64, float32 math for every other dtype pair) -----------------------------

constexpr int kSimtBM = 64;
constexpr int kSimtBN = 64;  // 2 panels
constexpr int kSimtBK = 16;
constexpr int kSimtThreads = 256;

template <bool kBF16>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_kernel(const __grid_constant__ gemm_args a) {
  __shared__ __align__(16) float as[kSimtBK][kSimtBM + 4];
  __shared__ __align__(16) float bs[kSimtBK][kSimtBN + 4];
  const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
  const int64_t ntiles = (a.n + kSimtBN - 1) / kSimtBN;
  const int64_t mtiles = (a.m + kSimtBM - 1) / kSimtBM;
  const int64_t kp_rows = a.kx / 2;
  pdl_trigger();
  pdl_wait();
  for (int64_t tile = blockIdx.x; tile < ntiles * mtiles; tile += gridDim.x) {
    const int64_t bn = tile % ntiles, bm = tile / ntiles;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < a.k; k0 += kSimtBK) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int i = threadIdx.x + q * kSimtThreads;
        // The scan layout is contiguous along rows, the token-major one along k.
        const int ml = a.x_transposed ? i % kSimtBM : i / kSimtBK;
        const int kl = a.x_transposed ? i / kSimtBM : i % kSimtBK;
        const int64_t gm = bm * kSimtBM + ml, k = k0 + kl;
        as[kl][ml] = (gm < a.m && k < a.k)
                         ? ld_value(a.x, a.x_dtype, x_index(a.x_transposed, a.seqlen, a.k, gm, k))
                         : 0.0f;
        const int cl = i % kSimtBN, kb = i / kSimtBN;
        const int64_t pn = bn * 2 + cl / kPanel, kk = k0 + kb;
        float wv = 0.0f;
        if (pn < a.panels && kk < a.k) {
          if constexpr (kBF16) {
            const uint16_t* w16 = reinterpret_cast<const uint16_t*>(a.w);
            wv = __uint_as_float(
                static_cast<uint32_t>(w16[((pn * kp_rows + kk / 2) * kPanel + cl % kPanel) * 2 + (kk & 1)])
                << 16);
          } else {
            wv = reinterpret_cast<const float*>(a.w)[(pn * a.k + kk) * kPanel + cl % kPanel];
          }
        }
        bs[kb][cl] = wv;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSimtBK; ++kk) {
        const float4 av = *reinterpret_cast<const float4*>(&as[kk][tm * 4]);
        const float4 bv = *reinterpret_cast<const float4*>(&bs[kk][tn * 4]);
        const float ar[4] = {av.x, av.y, av.z, av.w};
        const float br[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int c = 0; c < 4; ++c) acc[r][c] = fmaf(ar[r], br[c], acc[r][c]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t row = bm * kSimtBM + tm * 4 + r, col = bn * kSimtBN + tn * 4 + c;
        if (row < a.m && col < a.n)
          store_col(a.out, row, col, acc[r][c] + (a.bias != nullptr ? a.bias[col] : 0.0f));
      }
    }
  }
}

// K = 0: every output element is the bias (or zero).
__global__ void linear_bias_kernel(const __grid_constant__ out_map om, const float* bias, int64_t m,
                                   int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i % n;
    store_col(om, i / n, col, bias != nullptr ? bias[col] : 0.0f);
  }
}

unsigned stride_grid(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535LL * 16)));
}

// Scratch a linear call needs for its split-K partials, in floats and counters.
struct linear_scratch {
  float* partial = nullptr;
  int* counters = nullptr;
};

bool linear_uses_gemv(const linear_params& p) {
  return p.m <= kGemvMaxM;
}

gemv_plan linear_gemv_plan(const linear_params& p, int sms) {
  return plan_gemv(p.m, p.k, p.n, p.w.dtype == SSMKIT_DTYPE_BF16, sms);
}

// The gemv arguments of linear params (checked, m <= kGemvMaxM, k > 0) under plan g.
gemv_args make_gemv_args(const linear_params& p, const gemv_plan& g, const linear_scratch& scr) {
  gemv_args a{};
  a.x = p.x.data;
  a.w = static_cast<const char*>(p.w.data);
  a.bias = p.bias.present() ? p.bias.ptr<const float>() : nullptr;
  a.partial = scr.partial;
  a.counters = scr.counters;
  a.m = p.m;
  a.k = p.k;
  a.n = p.n;
  a.seqlen = p.x_transposed ? p.seqlen : 1;
  a.panels = g.panels;
  a.rows = g.rows;
  a.total = g.total;
  a.blocks = g.blocks;
  a.seg_max = g.seg_max;
  a.x_dtype = p.x.dtype;
  a.x_transposed = p.x_transposed;
  a.out = make_out_map(p.outputs, p.num_outputs, p.seqlen);
  a.epi = EPI_STORE;
  a.has_tail = false;
  a.has_pre = false;
  return a;
}

// The instances the step uses: conv epilogue with or without the norm prologue, the state update, the
// residual update, and plain stores with the norm tail, the norm prologue (the head) or neither.
status launch_gemv(const launch_ctx& ctx, const gemv_args& a, gemv_plan g, bool bf16) {
  if (a.has_pre && a.has_tail)
    return make_status(status_code::internal, "linear: a gemv with both a norm prologue and a norm tail");
  if (a.has_pre && (a.epi == EPI_SSU || a.epi == EPI_RES || a.x_transposed || a.pre.d != a.k ||
                    a.pre.rows != a.m || a.pre_ssq == nullptr || a.pre_panels != (a.k + kPanel - 1) / kPanel))
    return make_status(status_code::internal, "linear: a norm prologue that does not fit its gemv");
  if (a.epi == EPI_RES && a.res.ssq != nullptr && a.panels != (a.n + kPanel - 1) / kPanel)
    return make_status(status_code::internal, "linear: residual sums of squares that do not fit the gemv");
  if (a.has_tail && a.epi != EPI_STORE)
    return make_status(status_code::internal, "linear: a norm tail after an epilogue other than stores");
  if (a.epi == EPI_CONV) {
    if (a.has_pre) {
      return bf16 ? launch_gemv_t<true, EPI_CONV, false, true>(ctx, a, g)
                  : launch_gemv_t<false, EPI_CONV, false, true>(ctx, a, g);
    }
    return bf16 ? launch_gemv_t<true, EPI_CONV, false, false>(ctx, a, g)
                : launch_gemv_t<false, EPI_CONV, false, false>(ctx, a, g);
  }
  if (a.epi == EPI_SSU) {
    return bf16 ? launch_gemv_t<true, EPI_SSU, false, false>(ctx, a, g)
                : launch_gemv_t<false, EPI_SSU, false, false>(ctx, a, g);
  }
  if (a.epi == EPI_RES) {
    return bf16 ? launch_gemv_t<true, EPI_RES, false, false>(ctx, a, g)
                : launch_gemv_t<false, EPI_RES, false, false>(ctx, a, g);
  }
  if (a.has_tail) {
    return bf16 ? launch_gemv_t<true, EPI_STORE, true, false>(ctx, a, g)
                : launch_gemv_t<false, EPI_STORE, true, false>(ctx, a, g);
  }
  if (a.has_pre) {
    return bf16 ? launch_gemv_t<true, EPI_STORE, false, true>(ctx, a, g)
                : launch_gemv_t<false, EPI_STORE, false, true>(ctx, a, g);
  }
  return bf16 ? launch_gemv_t<true, EPI_STORE, false, false>(ctx, a, g)
              : launch_gemv_t<false, EPI_STORE, false, false>(ctx, a, g);
}

// Enqueues linear on checked params; scratch as sized by linear_gemv_plan (gemv only).
status linear_enqueue(const launch_ctx& ctx, const linear_params& p, const linear_scratch& scr, int sms) {
  if (p.m == 0 || p.n == 0) return ok_status();
  const out_map om = make_out_map(p.outputs, p.num_outputs, p.seqlen);
  const float* bias = p.bias.present() ? p.bias.ptr<const float>() : nullptr;
  if (p.k == 0) {
    return launch(ctx, linear_bias_kernel, dim3(stride_grid(p.m * p.n, 256)), dim3(256), 0, om, bias, p.m,
                  p.n);
  }
  const bool bf16 = p.w.dtype == SSMKIT_DTYPE_BF16;
  const int64_t kx = bf16 ? (p.k + 1) / 2 * 2 : p.k;
  const int64_t panels = (p.n + kPanel - 1) / kPanel;
  if (linear_uses_gemv(p)) {
    const gemv_plan g = linear_gemv_plan(p, sms);
    return launch_gemv(ctx, make_gemv_args(p, g, scr), g, bf16);
  }
  gemm_args a{};
  a.x = p.x.data;
  a.w = static_cast<const char*>(p.w.data);
  a.bias = bias;
  a.m = p.m;
  a.k = p.k;
  a.n = p.n;
  a.kx = kx;
  a.seqlen = p.x_transposed ? p.seqlen : 1;
  a.panels = panels;
  a.x_dtype = p.x.dtype;
  a.x_transposed = p.x_transposed;
  a.out = om;
  if (bf16 && p.x.dtype == SSMKIT_DTYPE_BF16) {
    a.a_async = !p.x_transposed && p.k % 8 == 0;
    const int64_t tiles = ((p.m + kMmaBM - 1) / kMmaBM) * ((p.n + kMmaBN - 1) / kMmaBN);
    unsigned grid = 0;
    SSMKIT_RETURN_IF_ERROR(grid_size("linear", tiles, &grid));
    SSMKIT_CUDA_CHECK(
        cudaFuncSetAttribute(gemm_mma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMmaSmem));
    return launch(ctx, gemm_mma_kernel, dim3(grid), dim3(kMmaThreads), kMmaSmem, a);
  }
  const int64_t tiles = ((p.m + kSimtBM - 1) / kSimtBM) * ((p.n + kSimtBN - 1) / kSimtBN);
  unsigned grid = 0;
  SSMKIT_RETURN_IF_ERROR(grid_size("linear", tiles, &grid));
  if (bf16) return launch(ctx, gemm_simt_kernel<true>, dim3(grid), dim3(kSimtThreads), 0, a);
  return launch(ctx, gemm_simt_kernel<false>, dim3(grid), dim3(kSimtThreads), 0, a);
}

// ---- split_columns -----------------------------------------------------------------------------------

__global__ void split_columns_kernel(const void* __restrict__ x, int x_dt, int64_t m, int64_t n,
                                     const __grid_constant__ out_map om) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m * n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_col(om, i / n, i % n, ld_value(x, x_dt, i));
  }
}

// ---- rms_norm, gated_rms_norm: one block per row -----------------------------------------------------

__global__ void __launch_bounds__(kRowThreads) rms_norm_kernel(const __grid_constant__ rms_args a) {
  SSMKIT_TRACE_SCOPE();
  extern __shared__ float row[];  // (d,) x + residual in float32
  __shared__ double red[33];
  pdl_trigger();
  // The weight, read after the sums, starts toward L2 during the wait (one line a thread per 128 bytes).
  const int64_t w_bytes = a.d * (a.w_dt == SSMKIT_DTYPE_F32 ? 4 : 2);
  for (int64_t off = threadIdx.x * int64_t{128}; blockIdx.x == 0 && off < w_bytes;
       off += blockDim.x * int64_t{128})
    prefetch_l2(static_cast<const char*>(a.w) + off);
  pdl_wait();
  const int64_t out_rows = a.last_of > 0 ? a.rows / a.last_of : a.rows;
  for (int64_t r = blockIdx.x; r < out_rows; r += gridDim.x) rms_row<false>(a, r, row, red);
}

struct gated_args {
  const void* y;  // (rows, d)
  const void* z;  // (rows, d), optional
  const void* w;  // (d,)
  void* out;      // (rows, d)
  int y_dt, z_dt, w_dt, out_dt;
  int64_t rows, d, groups;
  float eps;
};

__global__ void __launch_bounds__(kRowThreads) gated_rms_norm_kernel(const __grid_constant__ gated_args a) {
  SSMKIT_TRACE_SCOPE();
  extern __shared__ float row[];  // (d,) y * silu(z) in float32
  __shared__ double red[33];
  pdl_trigger();
  pdl_wait();
  const int64_t d = a.d, gs = a.d / a.groups;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
      float v = ld_value(a.y, a.y_dt, r * d + i);
      if (a.z != nullptr) {
        const float z = ld_value(a.z, a.z_dt, r * d + i);
        v *= silu(z);
      }
      row[i] = v;
    }
    __syncthreads();
    if (a.groups >= warps) {
      // Many groups: one warp each.
      for (int64_t g = warp; g < a.groups; g += warps) {
        double ss = 0.0;
        for (int64_t i = g * gs + lane; i < (g + 1) * gs; i += 32) ss += static_cast<double>(row[i]) * row[i];
        ss = warp_sum(ss);
        const float rstd = 1.0f / sqrtf(static_cast<float>(ss / static_cast<double>(gs)) + a.eps);
        for (int64_t i = g * gs + lane; i < (g + 1) * gs; i += 32)
          st_any(a.out, a.out_dt, r * d + i, row[i] * rstd * ld_value(a.w, a.w_dt, i));
      }
    } else {
      for (int64_t g = 0; g < a.groups; ++g) {
        double ss = 0.0;
        for (int64_t i = g * gs + threadIdx.x; i < (g + 1) * gs; i += blockDim.x)
          ss += static_cast<double>(row[i]) * row[i];
        ss = block_sum(ss, red);
        const float rstd = 1.0f / sqrtf(static_cast<float>(ss / static_cast<double>(gs)) + a.eps);
        for (int64_t i = g * gs + threadIdx.x; i < (g + 1) * gs; i += blockDim.x)
          st_any(a.out, a.out_dt, r * d + i, row[i] * rstd * ld_value(a.w, a.w_dt, i));
      }
    }
    __syncthreads();
  }
}

// Opts a row kernel into d floats of dynamic shared memory (past 48 KiB where the device allows it).
status row_smem(const char* op, const void* kernel, int64_t d, size_t* smem) {
  device_props props;
  SSMKIT_RETURN_IF_ERROR(current_props(&props));
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(d, 1)) * sizeof(float);
  // Leave room for the kernel's static shared memory (the reduction scratch).
  if (bytes + 1024 > static_cast<size_t>(props.smem_optin)) {
    return make_status(status_code::unsupported, "%s: rows of %lld values are too long for this device", op,
                       static_cast<long long>(d));
  }
  if (bytes > 48 * 1024) {
    SSMKIT_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
  *smem = bytes;
  return ok_status();
}

// ---- embedding, transpose_split, dt_limit -------------------------------------------------------------

struct embedding_args {
  const int32_t* ids;  // (count,)
  const void* w;       // (vocab, d), or packed panels
  void* out;           // (count, d)
  int w_dt, out_dt;
  int64_t count, vocab, d;
  bool packed;
};

__global__ void embedding_kernel(const __grid_constant__ embedding_args a) {
  SSMKIT_TRACE_SCOPE();
  pdl_trigger();
  pdl_wait();
  const int64_t d = a.d, dx = (d + 1) / 2 * 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.count * d;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / d, j = i % d;
    const int64_t v = a.ids[t];
    if (v < 0 || v >= a.vocab) {
      st_any(a.out, a.out_dt, i, __int_as_float(0x7fc00000));
      continue;
    }
    // packed: token v is column v % 32 of panel v / 32 (float32 (d, 32), bfloat16 pairs (dx / 2, 32, 2))
    int64_t src;
    if (!a.packed) {
      src = v * d + j;
    } else if (a.w_dt == SSMKIT_DTYPE_BF16) {
      src = (v / kPanel) * dx * kPanel + ((j >> 1) * kPanel + v % kPanel) * 2 + (j & 1);
    } else {
      src = ((v / kPanel) * d + j) * kPanel + v % kPanel;
    }
    st_any(a.out, a.out_dt, i, ld_value(a.w, a.w_dt, src));
  }
}

constexpr int kTile = 32;

// 32 x 32 tiles through shared memory: reads along c and writes along r are both coalesced.
__global__ void __launch_bounds__(kTile * 8)
    transpose_split_kernel(const void* __restrict__ x, int x_dt, int64_t batch, int64_t r, int64_t c,
                           const __grid_constant__ split_map sm) {
  __shared__ float tile[kTile][kTile + 1];
  pdl_trigger();
  pdl_wait();
  const int64_t tr_n = (r + kTile - 1) / kTile, tc_n = (c + kTile - 1) / kTile;
  for (int64_t t = blockIdx.x; t < batch * tr_n * tc_n; t += gridDim.x) {
    const int64_t b = t / (tr_n * tc_n), tr = (t / tc_n) % tr_n, tc = t % tc_n;
    for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
      const int64_t rr = tr * kTile + i, cc = tc * kTile + threadIdx.x;
      if (rr < r && cc < c) tile[i][threadIdx.x] = ld_value(x, x_dt, (b * r + rr) * c + cc);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
      const int64_t cc = tc * kTile + i, rr = tr * kTile + threadIdx.x;
      if (rr < r && cc < c) store_split(sm, b, c, rr, cc, tile[threadIdx.x][i]);
    }
    __syncthreads();
  }
}

// c = 1: a plain split of the columns of (batch, r).
__global__ void split_rows_kernel(const void* __restrict__ x, int x_dt, int64_t batch, int64_t r,
                                  const __grid_constant__ split_map sm) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < batch * r;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_split(sm, i / r, 1, i % r, 0, ld_value(x, x_dt, i));
  }
}

__global__ void dt_limit_kernel(const void* __restrict__ dt, int dt_dt, const float* __restrict__ bias,
                                void* __restrict__ out, int out_dt, int64_t total, int64_t heads, float lo,
                                float hi) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = ld_value(dt, dt_dt, i);
    if (bias != nullptr) v += bias[i % heads];
    v = softplus_ref(v);
    // std::min(std::max(v, lo), hi), NaN kept as the CPU keeps it.
    v = v < lo ? lo : v;
    v = hi < v ? hi : v;
    st_any(out, out_dt, i, v);
  }
}

// ---- sample: one block per row ---------------------------------------------------------------------

constexpr int kSampleThreads = 1024;

struct sample_args {
  const float* logits;  // (rows, vocab)
  const double* draws;  // (rows,), read only when sampling
  int32_t* tokens;      // (rows,)
  int64_t rows, vocab, top_k;
  float temperature, top_p;
};

// The candidates a selection runs over: key > thr, or key == thr at index <= tie (off: every token).
struct sample_filter {
  uint32_t thr;
  int64_t tie;
  bool on;
};

__device__ __forceinline__ bool passes(const sample_filter& f, uint32_t key, int64_t i) {
  return !f.on || key > f.thr || (key == f.thr && i <= f.tie);
}

struct sample_shared {
  double hist[256];
  double scan[33];
  double red[33];
  float fmax[32];
  long long imax[32];
  unsigned long long pick;
  unsigned long long pick_max;
  int digit;
  double consumed;
  bool last;
};

// One row as the selections see it: probabilities exp((l - max) / T) (0 below e^-87 and for NaN, as the
// CPU's exp_nonpositive), ordered by their logits; thread t walks the contiguous chunk [c0, c1).
struct sample_row {
  const float* l;
  float mx, inv_t;
  int64_t c0, c1;
};

// A token's place in the descending order of probability: its logit's bits mapped to an unsigned key
// that orders as the logits do (NaN lowest, -0 as +0). Keys of the float probabilities would not do: two
// logits closer than the probabilities' resolution (an ulp of p near 1 is 6e-8) round to one float p,
// or to swapped ones within expf's error, and the walk would take them in index order instead of the
// order of exp((l - max) / T), which is strictly that of the logits.
__device__ __forceinline__ uint32_t logit_key(float l) {
  if (l != l) return 0u;
  const uint32_t b = l == 0.0f ? 0u : __float_as_uint(l);
  return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float row_prob(const sample_row& s, int64_t i) {
  const float x = (s.l[i] - s.mx) * s.inv_t;
  return x > -87.0f ? expf(x) : 0.0f;
}

// Exclusive prefix sum over the block in thread order; *total gets the sum.
__device__ double block_exclusive_scan(double v, double* sc, double* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  double inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double n = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += n;
  }
  if (lane == 31) sc[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    const double w = lane < warps ? sc[lane] : 0.0;
    double wi = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double n = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += n;
    }
    if (lane < warps) sc[lane] = wi - w;
    if (lane == 31) sc[32] = wi;
  }
  __syncthreads();
  const double ex = sc[warp] + inc - v;
  *total = sc[32];
  __syncthreads();
  return ex;
}

__device__ __forceinline__ bool reaches(double cum, double target, bool strict) {
  return strict ? cum > target : cum >= target;
}

// Walking the candidates (passing fa and fb) in the CPU's order, largest probability first and ties by
// index, finds the first token at which the running count (or mass) reaches `target` (>=, or > when
// strict); past the candidates' total, the last one. Returns it as a filter: the candidates up to and
// including it. Radix selection over the keys, 8 bits a pass, then the ties in index order.
__device__ sample_filter select_prefix(const sample_row& s, const sample_filter& fa, const sample_filter& fb,
                                       double target, bool by_mass, bool strict, sample_shared& sh) {
  uint32_t prefix = 0, mask = 0;
  bool last = false;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sh.hist[i] = 0.0;
    __syncthreads();
    // Float64 adds to shared memory are compare-and-swap loops (ATOMS.CAST.SPIN.64), and the keys' top
    // byte takes only a few values: 1024 threads adding to a few bins at nearly every element serialized
    // each pass (~55 us of the ~765 us a top-p draw took at 50280 logits). So each thread keeps kSlots
    // running (digit, sum) pairs (a new digit evicts one to its bin), and at the end the lanes of a warp
    // with equal digits add their pairs by shuffles and one of them adds the sum to the bin.
    constexpr int kSlots = 4;
    int sd[kSlots];
    double sv[kSlots];
#pragma unroll
    for (int q = 0; q < kSlots; ++q) {
      sd[q] = -1;
      sv[q] = 0.0;
    }
    int victim = 0;
    for (int64_t i = s.c0; i < s.c1; ++i) {
      const float p = row_prob(s, i);
      const uint32_t key = logit_key(s.l[i]);
      if (!passes(fa, key, i) || !passes(fb, key, i) || (key & mask) != prefix) continue;
      const int d = static_cast<int>((key >> shift) & 0xffu);
      const double v = by_mass ? static_cast<double>(p) : 1.0;
      bool hit = false;
#pragma unroll
      for (int q = 0; q < kSlots; ++q) {
        if (sd[q] == d) {
          sv[q] += v;
          hit = true;
        }
      }
      if (!hit) {
#pragma unroll
        for (int q = 0; q < kSlots; ++q) {
          if (q != victim) continue;
          if (sd[q] >= 0) atomicAdd(&sh.hist[sd[q]], sv[q]);
          sd[q] = d;
          sv[q] = v;
        }
        victim = (victim + 1) % kSlots;
      }
    }
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int q = 0; q < kSlots; ++q) {
      const unsigned peers = __match_any_sync(0xffffffffu, sd[q]);
      double sum = 0.0;
      for (int src = 0; src < 32; ++src) {
        const double x = __shfl_sync(0xffffffffu, sv[q], src);
        if ((peers >> src) & 1u) sum += x;
      }
      if (sd[q] >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sh.hist[sd[q]], sum);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      // Lane l holds bins 255 - 8l .. 248 - 8l, largest digit first.
      double v[8];
      double sum = 0.0;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        v[e] = sh.hist[255 - 8 * lane - e];
        sum += v[e];
      }
      double inc = sum;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double n = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += n;
      }
      const double before = inc - sum;
      const unsigned hit = __ballot_sync(0xffffffffu, !last && sum > 0.0 && reaches(inc, target, strict));
      const unsigned nonempty = __ballot_sync(0xffffffffu, sum > 0.0);
      if (hit != 0) {
        if (lane == __ffs(hit) - 1) {
          double cum = before;
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            if (v[e] <= 0.0) continue;
            if (reaches(cum + v[e], target, strict)) {
              sh.digit = 255 - 8 * lane - e;
              sh.consumed = cum;
              break;
            }
            cum += v[e];
          }
          sh.last = false;
        }
      } else {
        // Past the total (or already taking the last): the smallest digit present.
        const int hi_lane = nonempty != 0 ? 31 - __clz(nonempty) : 0;
        if (lane == hi_lane) {
          int dg = 255 - 8 * lane;
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            if (v[e] > 0.0) dg = 255 - 8 * lane - e;
          }
          sh.digit = dg;
          sh.consumed = 0.0;
          sh.last = true;
        }
      }
    }
    __syncthreads();
    const int digit = sh.digit;
    last = sh.last;
    if (!last) target -= sh.consumed;
    prefix |= static_cast<uint32_t>(digit) << shift;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // The ties (key == prefix) in index order.
  double mine = 0.0;
  for (int64_t i = s.c0; i < s.c1; ++i) {
    const float p = row_prob(s, i);
    const uint32_t key = logit_key(s.l[i]);
    if (key == prefix && passes(fa, key, i) && passes(fb, key, i))
      mine += by_mass ? static_cast<double>(p) : 1.0;
  }
  if (threadIdx.x == 0) {
    sh.pick = ~0ull;
    sh.pick_max = 0ull;
  }
  double total = 0.0;
  const double before = block_exclusive_scan(mine, sh.scan, &total);
  if (mine > 0.0) {
    double cum = before;
    int64_t last_tie = -1;
    for (int64_t i = s.c0; i < s.c1; ++i) {
      const float p = row_prob(s, i);
      const uint32_t key = logit_key(s.l[i]);
      if (key != prefix || !passes(fa, key, i) || !passes(fb, key, i)) continue;
      last_tie = i;
      cum += by_mass ? static_cast<double>(p) : 1.0;
      if (!last && reaches(cum, target, strict)) {
        atomicMin(&sh.pick, static_cast<unsigned long long>(i));
        break;
      }
    }
    if (last_tie >= 0) atomicMax(&sh.pick_max, static_cast<unsigned long long>(last_tie));
  }
  __syncthreads();
  sample_filter f;
  f.thr = prefix;
  f.tie = sh.pick != ~0ull ? static_cast<int64_t>(sh.pick) : static_cast<int64_t>(sh.pick_max);
  f.on = true;
  __syncthreads();
  return f;
}

// The mass of the candidates passing fa and fb.
__device__ double filtered_mass(const sample_row& s, const sample_filter& fa, const sample_filter& fb,
                                double* red) {
  double m = 0.0;
  for (int64_t i = s.c0; i < s.c1; ++i) {
    const float p = row_prob(s, i);
    const uint32_t key = logit_key(s.l[i]);
    if (passes(fa, key, i) && passes(fb, key, i)) m += static_cast<double>(p);
  }
  return block_sum(m, red);
}

// The argmax order: larger value first, then smaller index; NaN never taken. A total order on the
// non-NaN (value, index) pairs, so the winner does not depend on the order pairs are offered in.
__device__ __forceinline__ void arg_take(float v, int64_t i, float& bv, int64_t& bi) {
  if (v > bv || (v == bv && i < bi)) {
    bv = v;
    bi = i;
  }
}

constexpr int kArgBatch = 4;  // 16-byte loads a thread has in flight in the argmax pass

// The max over row l's non-NaN logits (-inf when none) and its first index (V when none): one pass,
// 16-byte loads when the row is 16-byte aligned (kArgBatch in flight: 16 elements a thread), the
// block's pairs folded through shuffles and shared memory; every thread gets the result.
__device__ void row_argmax(const float* l, int64_t V, sample_shared& sh, float* mx_out, int64_t* best_out) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t nt = blockDim.x;
  const float kNaN = __int_as_float(0x7fc00000);
  float bv = -INFINITY;
  int64_t bi = V;
  int64_t tail0 = 0;
  if ((reinterpret_cast<uintptr_t>(l) & 15) == 0) {
    const int64_t nv = V / 4;
    const float4* l4 = reinterpret_cast<const float4*>(l);
    for (int64_t q0 = threadIdx.x; q0 < nv; q0 += kArgBatch * nt) {
      float4 v[kArgBatch];
#pragma unroll
      for (int j = 0; j < kArgBatch; ++j) {
        const int64_t q = q0 + j * nt;
        v[j] = q < nv ? l4[q] : make_float4(kNaN, kNaN, kNaN, kNaN);
      }
#pragma unroll
      for (int j = 0; j < kArgBatch; ++j) {
        const int64_t i = (q0 + j * nt) * 4;
        arg_take(v[j].x, i, bv, bi);
        arg_take(v[j].y, i + 1, bv, bi);
        arg_take(v[j].z, i + 2, bv, bi);
        arg_take(v[j].w, i + 3, bv, bi);
      }
    }
    tail0 = nv * 4;
  }
  for (int64_t i = tail0 + threadIdx.x; i < V; i += nt) arg_take(l[i], i, bv, bi);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const long long oi = __shfl_xor_sync(0xffffffffu, static_cast<long long>(bi), o);
    arg_take(ov, oi, bv, bi);
  }
  if (lane == 0) {
    sh.fmax[warp] = bv;
    sh.imax[warp] = bi;
  }
  __syncthreads();
  bv = -INFINITY;
  bi = V;
  for (int w = 0; w < static_cast<int>(nt / 32); ++w) arg_take(sh.fmax[w], sh.imax[w], bv, bi);
  __syncthreads();
  *mx_out = bv;
  *best_out = bi;
}

__global__ void __launch_bounds__(kSampleThreads) sample_kernel(const __grid_constant__ sample_args a) {
  SSMKIT_TRACE_SCOPE();
  __shared__ sample_shared sh;
  pdl_trigger();
  pdl_wait();
  const int64_t V = a.vocab;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* l = a.logits + r * V;
    // The max over non-NaN logits and its first index (the CPU's argmax; 0 when every logit is NaN).
    float mx;
    int64_t best;
    row_argmax(l, V, sh, &mx, &best);
    if (best >= V) best = 0;
    if (a.temperature <= 0.0f || !(mx > -INFINITY) || mx == INFINITY) {
      if (threadIdx.x == 0) a.tokens[r] = static_cast<int32_t>(best);
      continue;
    }
    const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
    sample_row s;
    s.l = l;
    s.mx = mx;
    s.inv_t = 1.0f / a.temperature;
    s.c0 = threadIdx.x * chunk < V ? threadIdx.x * chunk : V;
    s.c1 = s.c0 + chunk < V ? s.c0 + chunk : V;
    const double draw = a.draws[r];
    const int64_t top_k = a.top_k > 0 && a.top_k < V ? a.top_k : V;
    const bool nucleus = a.top_p > 0.0f && a.top_p < 1.0f;
    const sample_filter all = {0u, 0, false};
    int64_t picked = best;
    if (top_k == V && !nucleus) {
      // No filter: the cumulative mass in index order.
      double mine = 0.0;
      int64_t last_pos = -1;
      for (int64_t i = s.c0; i < s.c1; ++i) {
        const float p = row_prob(s, i);
        mine += p;
        if (p > 0.0f) last_pos = i;
      }
      double total = 0.0;
      const double before = block_exclusive_scan(mine, sh.scan, &total);
      if (threadIdx.x == 0) {
        sh.pick = ~0ull;
        sh.pick_max = 0ull;
      }
      __syncthreads();
      const double u = draw * total;
      if (mine > 0.0 && before + mine > u) {
        double cum = before;
        for (int64_t i = s.c0; i < s.c1; ++i) {
          const float p = row_prob(s, i);
          if (p <= 0.0f) continue;
          cum += p;
          if (cum > u) {
            atomicMin(&sh.pick, static_cast<unsigned long long>(i));
            break;
          }
        }
      }
      if (last_pos >= 0) atomicMax(&sh.pick_max, static_cast<unsigned long long>(last_pos));
      __syncthreads();
      picked = sh.pick != ~0ull ? static_cast<int64_t>(sh.pick) : static_cast<int64_t>(sh.pick_max);
    } else {
      sample_filter fk = all;
      double kept;
      if (top_k < V) {
        fk = select_prefix(s, all, all, static_cast<double>(top_k), false, false, sh);
        kept = filtered_mass(s, fk, all, sh.red);
      } else {
        kept = filtered_mass(s, all, all, sh.red);
      }
      sample_filter fp = all;
      if (nucleus) {
        fp = select_prefix(s, fk, all, static_cast<double>(a.top_p) * kept, true, false, sh);
        kept = filtered_mass(s, fk, fp, sh.red);
      }
      const sample_filter e = select_prefix(s, fk, fp, draw * kept, true, true, sh);
      picked = e.tie;
    }
    if (threadIdx.x == 0) a.tokens[r] = static_cast<int32_t>(picked);
    __syncthreads();
  }
}

// ---- enqueue functions of the ops (checked params) ---------------------------------------------------

status split_columns_enqueue(const launch_ctx& ctx, const split_columns_params& p) {
  if (p.m == 0 || p.n == 0) return ok_status();
  const out_map om = make_out_map(p.outputs, p.num_outputs, p.seqlen);
  return launch(ctx, split_columns_kernel, dim3(stride_grid(p.m * p.n, 256)), dim3(256), 0, p.x.data,
                static_cast<int>(p.x.dtype), p.m, p.n, om);
}

status rms_norm_enqueue(const launch_ctx& ctx, const rms_norm_params& p) {
  const int64_t out_rows = p.last_of > 0 ? p.rows / p.last_of : p.rows;
  if (out_rows == 0) return ok_status();
  rms_args a{};
  a.x = p.x.data;
  a.res = p.residual.data;
  a.res_out = p.residual_out.data;
  a.w = p.weight.data;
  a.out = p.out.data;
  a.x_dt = p.x.dtype;
  a.res_dt = p.residual.dtype;
  a.res_out_dt = p.residual_out.dtype;
  a.w_dt = p.weight.dtype;
  a.out_dt = p.out.dtype;
  a.rows = p.rows;
  a.d = p.d;
  a.last_of = p.last_of;
  a.eps = p.eps;
  size_t smem = 0;
  SSMKIT_RETURN_IF_ERROR(row_smem("rmsNorm", reinterpret_cast<const void*>(rms_norm_kernel), p.d, &smem));
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(out_rows, 65535LL * 16));
  return launch(ctx, rms_norm_kernel, dim3(grid), dim3(kRowThreads), smem, a);
}

status gated_rms_norm_enqueue(const launch_ctx& ctx, const gated_rms_norm_params& p) {
  if (p.rows == 0) return ok_status();
  gated_args a{};
  a.y = p.y.data;
  a.z = p.z.data;
  a.w = p.weight.data;
  a.out = p.out.data;
  a.y_dt = p.y.dtype;
  a.z_dt = p.z.dtype;
  a.w_dt = p.weight.dtype;
  a.out_dt = p.out.dtype;
  a.rows = p.rows;
  a.d = p.d;
  a.groups = p.groups;
  a.eps = p.eps;
  size_t smem = 0;
  SSMKIT_RETURN_IF_ERROR(
      row_smem("gatedRmsNorm", reinterpret_cast<const void*>(gated_rms_norm_kernel), p.d, &smem));
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(p.rows, 65535LL * 16));
  return launch(ctx, gated_rms_norm_kernel, dim3(grid), dim3(kRowThreads), smem, a);
}

status embedding_enqueue(const launch_ctx& ctx, const embedding_params& p) {
  if (p.count == 0 || p.d == 0) return ok_status();
  embedding_args a{};
  a.ids = p.ids.ptr<const int32_t>();
  a.w = p.weight.data;
  a.out = p.out.data;
  a.w_dt = p.weight.dtype;
  a.out_dt = p.out.dtype;
  a.count = p.count;
  a.vocab = p.vocab;
  a.d = p.d;
  a.packed = p.packed;
  return launch(ctx, embedding_kernel, dim3(stride_grid(p.count * p.d, 256)), dim3(256), 0, a);
}

status transpose_split_enqueue(const launch_ctx& ctx, const transpose_split_params& p) {
  if (p.batch == 0 || p.r == 0 || p.c == 0) return ok_status();
  split_map sm{};
  sm.count = p.num_outputs;
  for (int i = 0; i < p.num_outputs; ++i) {
    sm.data[i] = p.outputs[i].out.data;
    sm.row0[i] = p.outputs[i].row0;
    sm.rows[i] = p.outputs[i].rows;
    sm.dtype[i] = p.outputs[i].out.dtype;
  }
  if (p.c == 1) {
    return launch(ctx, split_rows_kernel, dim3(stride_grid(p.batch * p.r, 256)), dim3(256), 0, p.x.data,
                  static_cast<int>(p.x.dtype), p.batch, p.r, sm);
  }
  const int64_t tiles = p.batch * ((p.r + kTile - 1) / kTile) * ((p.c + kTile - 1) / kTile);
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(tiles, 65535LL * 16));
  return launch(ctx, transpose_split_kernel, dim3(grid), dim3(kTile, 8), 0, p.x.data,
                static_cast<int>(p.x.dtype), p.batch, p.r, p.c, sm);
}

status dt_limit_enqueue(const launch_ctx& ctx, const dt_limit_params& p) {
  const int64_t total = p.rows * p.heads;
  if (total == 0) return ok_status();
  return launch(ctx, dt_limit_kernel, dim3(stride_grid(total, 256)), dim3(256), 0, p.dt.data,
                static_cast<int>(p.dt.dtype), p.bias.present() ? p.bias.ptr<const float>() : nullptr,
                p.out.data, static_cast<int>(p.out.dtype), total, p.heads, p.lo, p.hi);
}

status sample_enqueue(const launch_ctx& ctx, const float* logits, const double* draws, int32_t* tokens,
                      const sample_params& p) {
  if (p.rows == 0) return ok_status();
  sample_args a{};
  a.logits = logits;
  a.draws = draws;
  a.tokens = tokens;
  a.rows = p.rows;
  a.vocab = p.vocab;
  a.top_k = p.top_k;
  a.temperature = p.temperature;
  a.top_p = p.top_p;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(p.rows, 65535LL * 16));
  return launch(ctx, sample_kernel, dim3(grid), dim3(kSampleThreads), 0, a);
}

// ---- the fused decode step ---------------------------------------------------------------------------

// A view of device (or, device -1, host) memory; the families' entry points check the device field.
tensor_view view_of(void* data, ssmkit_dtype dtype, std::initializer_list<int64_t> dims, int device) {
  tensor_view v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.ndim = static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) v.shape[i++] = d;
  return v;
}

linear_output col(const tensor_view& out, int64_t col0, int64_t cols) {
  linear_output o;
  o.out = out;
  o.col0 = col0;
  o.cols = cols;
  return o;
}

// ---- quantized weights of the decode step in the plain layout -------------------------------------------

// The quantization family's GEMMs take pack_weights' layout (ssmkit/quant.h) by unpacking it into a
// temporary on every call; a captured decode step unpacks each quantized layer once, into buffers it
// owns, and hands the GEMMs the plain (n, k) int8 / int4 weights.

// Byte r of k step `step` of column col in pack_weights' layout: groups of 64 columns (4 panels of 16;
// the last group may hold fewer panels), each a run of steps of panels x 16 columns x 4 bytes.
__device__ __forceinline__ int64_t packed_weight_offset(int64_t steps, int64_t panels, int64_t col,
                                                        int64_t step, int r) {
  const int64_t grp = col / 64, panel = col / 16;
  const int64_t grp_panels = panels - grp * 4 < 4 ? panels - grp * 4 : 4;
  return grp * 4 * steps * 64 + (step * grp_panels + (panel - grp * 4)) * 64 + (col % 16) * 4 + r;
}

// One thread per byte of the plain layout (n, row_bytes): int8 stored +128 in the packed bytes; int4 as
// (w + 8), k0 + r in the low and k0 + 4 + r in the high nibble of byte r of an 8-value step.
__global__ void unpack_weights_kernel(const uint8_t* __restrict__ packed, uint8_t* __restrict__ plain,
                                      int64_t n, int64_t k, int bits) {
  const int64_t row_bytes = bits == 8 ? k : (k + 1) / 2;
  const int64_t panels = (n + 15) / 16;
  const int64_t steps = bits == 8 ? (k + 3) / 4 : (k + 7) / 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n * row_bytes;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i / row_bytes, b = i % row_bytes;
    if (bits == 8) {
      plain[i] = packed[packed_weight_offset(steps, panels, col, b / 4, static_cast<int>(b % 4))] ^ 0x80;
      continue;
    }
    uint8_t out = 0;
    for (int h = 0; h < 2; ++h) {
      const int64_t kk = 2 * b + h;
      if (kk >= k) break;
      const int within = static_cast<int>(kk % 8);
      const uint8_t byte = packed[packed_weight_offset(steps, panels, col, kk / 8, within % 4)];
      const int nib = within < 4 ? (byte & 15) : (byte >> 4);
      out |= static_cast<uint8_t>(((nib - 8) & 15) << (4 * h));
    }
    plain[i] = out;
  }
}

// The plain copies of a step's quantized layers, by the layer they stand for.
struct plain_weights {
  std::vector<std::pair<const linear_weight*, tensor_view>> views;
  void* data = nullptr;
};

const tensor_view* plain_of(const plain_weights* pw, const linear_weight& lw) {
  if (pw == nullptr) return nullptr;
  for (const auto& e : pw->views) {
    if (e.first == &lw) return &e.second;
  }
  return nullptr;
}

// Unpacks every quantized layer of the model into one stream-ordered allocation (pw->data).
status unpack_quantized(const mamba_decode_model& m, cudaStream_t s, plain_weights* pw) {
  std::vector<const linear_weight*> todo;
  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    for (const linear_weight* lw : {&w.in_proj, &w.x_proj, &w.dt_proj, &w.out_proj})
      if (lw->kind != LINEAR_FLOAT && lw->w.present()) todo.push_back(lw);
  }
  if (m.head.kind != LINEAR_FLOAT && m.head.w.present()) todo.push_back(&m.head);
  if (todo.empty()) return ok_status();
  size_t total = 0;
  for (const linear_weight* lw : todo) {
    const int bits = lw->kind == LINEAR_W8A8 ? 8 : 4;
    if (lw->n < 0 || lw->k < 0 || lw->w.numel() != packed_weight_bytes(lw->n, lw->k, bits))
      return make_status(status_code::shape,
                         "decodeStep: plan: a quantized layer's packed weight does not fit it");
    total += static_cast<size_t>(lw->n * (bits == 8 ? lw->k : (lw->k + 1) / 2) + 255) / 256 * 256;
  }
  SSMKIT_CUDA_CHECK(cudaMallocAsync(&pw->data, std::max<size_t>(total, 1), s));
  size_t off = 0;
  launch_ctx ctx;
  ctx.stream = s;
  for (const linear_weight* lw : todo) {
    const int bits = lw->kind == LINEAR_W8A8 ? 8 : 4;
    const int64_t bytes = lw->n * (bits == 8 ? lw->k : (lw->k + 1) / 2);
    uint8_t* dst = static_cast<uint8_t*>(pw->data) + off;
    off += static_cast<size_t>(bytes + 255) / 256 * 256;
    if (bytes > 0) {
      SSMKIT_RETURN_IF_ERROR(launch(ctx, unpack_weights_kernel, dim3(stride_grid(bytes, 256)), dim3(256), 0,
                                    static_cast<const uint8_t*>(lw->w.data), dst, lw->n, lw->k, bits));
    }
    const tensor_view v =
        view_of(dst, bits == 8 ? SSMKIT_DTYPE_I8 : SSMKIT_DTYPE_I4, {lw->n, lw->k}, lw->w.device);
    pw->views.emplace_back(lw, v);
  }
  return ok_status();
}

// Device buffers of one decode step, carved from one allocation (the CPU's scratch, plus the staging of
// the ids and logits a captured graph reads and writes, and the linear layers' split-K scratch).
struct decode_buffers {
  // residual and residual2: the composed step's layers alternate between them (a layer reads one and
  // writes the other, so that a folded norm's blocks never read what one of them writes).
  void *hidden, *residual, *residual2, *hn, *z, *xin, *xc, *dt, *dtl, *dtin, *xs, *bm, *cm, *y, *yn;
  void *qtmp, *rotated;
  int8_t* aq;
  float* as;
  int32_t* ids;    // (batch,) staged ids
  float* logits;   // (batch, vocab) staged logits
  double* draws;   // (batch,) staged draws
  float* partial;  // gemv split-K partials
  int* counters;   // gemv split-K counters, then the norm tail's (zero between launches)
  int* done;
  double* ssq;  // (batch, d_model panels) the residual's sums of squares per panel (out_proj -> norm)
  size_t counter_count;
  const plain_weights* plain;  // quantized layers unpacked once (captured steps), or nullptr
};

struct decode_sizes {
  int64_t max_k = 0, max_n = 0;
  size_t partial_floats = 0, counters = 0;
};

// The widest linear and the largest split-K scratch of any linear in the step.
decode_sizes size_decode(const mamba_decode_model& m, int64_t B, int sms) {
  decode_sizes z;
  z.max_k = m.d_model;
  auto visit = [&](const linear_weight& lw) {
    z.max_k = std::max(z.max_k, lw.k);
    z.max_n = std::max(z.max_n, lw.n);
    if (lw.kind == LINEAR_FLOAT && B <= kGemvMaxM) {
      const gemv_plan g = plan_gemv(B, lw.k, lw.n, lw.w.dtype == SSMKIT_DTYPE_BF16, sms);
      z.partial_floats = std::max(z.partial_floats, g.partial_floats);
      z.counters = std::max(z.counters, g.counters);
    }
  };
  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    visit(w.in_proj);
    visit(w.out_proj);
    if (!m.mamba2) {
      visit(w.x_proj);
      visit(w.dt_proj);
    }
  }
  visit(m.head);
  return z;
}

// Carves the buffers from `base` (nullptr: only measures); returns the bytes used.
size_t carve_decode(const mamba_decode_model& m, int64_t B, const decode_sizes& z, char* base,
                    decode_buffers* out) {
  size_t used = 0;
  auto take = [&](size_t bytes) -> void* {
    void* p = base != nullptr ? base + used : nullptr;
    used += (bytes + 255) / 256 * 256;
    return p;
  };
  const int64_t d = m.d_model, di = m.d_inner, gds = m.ngroups * m.d_state;
  const int64_t conv_dim = m.mamba2 ? di + 2 * gds : di;
  const size_t e = static_cast<size_t>(dtype_size(m.act));
  const size_t row = static_cast<size_t>(B);
  // At batch 1 the outputs of one linear layer (in_proj's, Mamba's x_proj's) are carved side by side in
  // its column order, where every piece but the last keeps 16-byte alignment: the layer then writes them
  // as one row, with no split after it (decode_linear).
  auto take_row = [&](std::initializer_list<std::pair<void**, size_t>> parts) {
    bool joint = row == 1;
    size_t total = 0, i = 0;
    for (const auto& pt : parts) {
      if (++i < parts.size() && pt.second % 16 != 0) joint = false;
      total += pt.second;
    }
    char* p = joint ? static_cast<char*>(take(total)) : nullptr;
    for (const auto& pt : parts) {
      *pt.first = joint ? p : take(pt.second);
      if (p != nullptr) p += pt.second;
    }
  };
  decode_buffers b{};
  b.hidden = take(row * d * e);
  b.residual = take(row * d * 4);
  b.residual2 = take(row * d * 4);
  b.hn = take(row * d * e);
  const size_t dt_bytes = row * std::max(di, m.nheads) * e;
  if (m.mamba2) {
    take_row({{&b.z, row * di * e}, {&b.xin, row * conv_dim * e}, {&b.dt, dt_bytes}});
  } else {
    take_row({{&b.xin, row * conv_dim * e}, {&b.z, row * di * e}});
    b.dt = take(dt_bytes);
  }
  b.xc = take(row * conv_dim * e);
  b.dtl = take(row * std::max<int64_t>(m.nheads, 1) * e);
  if (m.mamba2) {
    b.dtin = take(row * std::max<int64_t>(m.dt_rank, 1) * e);
    b.bm = take(row * std::max<int64_t>(gds, 1) * e);
    b.cm = take(row * std::max<int64_t>(gds, 1) * e);
  } else {
    take_row({{&b.dtin, row * std::max<int64_t>(m.dt_rank, 1) * e},
              {&b.bm, row * std::max<int64_t>(gds, 1) * e},
              {&b.cm, row * std::max<int64_t>(gds, 1) * e}});
  }
  b.xs = take(row * di * e);
  b.y = take(row * di * e);
  b.yn = take(row * di * e);
  b.qtmp = take(row * std::max<int64_t>(z.max_n, 1) * e);
  b.rotated = take(row * z.max_k * e);
  b.aq = static_cast<int8_t*>(take(row * z.max_k));
  b.as = static_cast<float*>(take(row * 4));
  b.ids = static_cast<int32_t*>(take(row * 4));
  b.logits = static_cast<float*>(take(row * std::max<int64_t>(m.vocab, 1) * 4));
  b.draws = static_cast<double*>(take(row * 8));
  b.ssq = static_cast<double*>(take(row * static_cast<size_t>((d + kPanel - 1) / kPanel) * 8));
  b.partial = static_cast<float*>(take(std::max<size_t>(z.partial_floats, 1) * 4));
  b.counters = static_cast<int*>(take((z.counters + 1) * 4));
  b.done = b.counters + z.counters;
  b.counter_count = z.counters + 1;
  if (out != nullptr) *out = b;
  return used;
}

struct quant_ptrs {
  void* tmp;
  void* rotated;
  int8_t* aq;
  float* as;
};

// A float linear layer of the step as the linear op's params writing `outs`, checked as that op checks.
status float_linear(const linear_weight& lw, const tensor_view& x, int64_t batch, const linear_output* outs,
                    int n_outs, linear_params* p) {
  p->x = x;
  p->w = lw.w;
  p->bias = lw.bias;
  p->m = batch;
  p->k = lw.k;
  p->n = lw.n;
  p->num_outputs = n_outs;
  for (int i = 0; i < n_outs; ++i) p->outputs[i] = outs[i];
  return nn_check::check_linear(*p);
}

// decode_folds_cuda's counts.
std::atomic<int64_t> folds_norm{0}, folds_quant{0}, folds_conv{0};

// out[i] = columns [col0_i, col0_i + cols_i) of x @ W^T + b, for x (batch, k): the CPU's run_linear.
// With `norm`, x is that norm's output: the norm runs first, or (batch 1 where the GEMM can, unless
// SSMKIT_CUDA_DECODE_FOLD_NORM=0) folds into the GEMM, whose blocks each normalize the row (W8A8 and
// W4A8: and quantize it). Without a norm, W8A8's and W4A8's activation quantizer folds the same way
// into the GEMV (batch 1, unrotated x, unless SSMKIT_CUDA_DECODE_FOLD_QUANT=0). With
// `conv` (in_proj's causal conv, x = columns [conv_col0, ...) of the output), the same GEMM may also
// finish the conv's update in its epilogue (unless SSMKIT_CUDA_DECODE_FOLD_CONV=0): *conv_folded says
// whether it did, else the caller runs the conv.
status decode_linear(const launch_ctx& ctx, const linear_weight& lw, const tensor_view& x, int64_t batch,
                     const linear_output* outs, int n_outs, ssmkit_dtype act, const quant_ptrs& qs,
                     const decode_buffers& buf, int sms, const rms_norm_params* norm = nullptr,
                     const causal_conv1d_update_params* conv = nullptr, int64_t conv_col0 = 0,
                     bool* conv_folded = nullptr) {
  const int dev = x.device;
  const bool quantized = lw.kind == LINEAR_W8A8 || lw.kind == LINEAR_W4A8;
  const bool may_fold =
      norm != nullptr && !lw.rotate && batch == 1 && env_flag("SSMKIT_CUDA_DECODE_FOLD_NORM", true);
  bool fold = may_fold && lw.kind == LINEAR_W4A16;
  // W8A8 and W4A8 run the norm (or fold it with the quantizer into the GEMM) below.
  if (norm != nullptr && !fold && !quantized) SSMKIT_RETURN_IF_ERROR(rms_norm_enqueue(ctx, *norm));
  if (lw.kind == LINEAR_FLOAT) {
    linear_params p;
    SSMKIT_RETURN_IF_ERROR(float_linear(lw, x, batch, outs, n_outs, &p));
    linear_scratch scr;
    scr.partial = buf.partial;
    scr.counters = buf.counters;
    return linear_enqueue(ctx, p, scr, sms);
  }
  if (lw.kind != LINEAR_W4A16 && lw.kind != LINEAR_W8A8 && lw.kind != LINEAR_W4A8)
    return make_status(status_code::value, "decodeStep: unknown linear kind %d", static_cast<int>(lw.kind));
  cudaStream_t stream = ctx.stream;
  const tensor_view* plain = plain_of(buf.plain, lw);
  const tensor_view wq = plain != nullptr ? *plain : lw.w;
  const bool packed = plain == nullptr;
  // Outputs of one dtype that cover the columns in order, side by side in memory, are written in place
  // with no split kernel after the GEMM: one output of all columns, or (batch 1, where rows are single)
  // several, as carve_decode lays out in_proj's and x_proj's.
  const ssmkit_dtype od = outs[0].out.dtype;
  const char* base = static_cast<const char*>(outs[0].out.data);
  bool direct = n_outs == 1 || batch == 1;
  int64_t col = 0;
  for (int i = 0; i < n_outs && direct; ++i) {
    const linear_output& o = outs[i];
    direct = !o.transposed && o.col0 == col && o.out.dtype == od && o.out.numel() == batch * o.cols &&
             o.out.data == base + col * dtype_size(od);
    col += o.cols;
  }
  direct = direct && col == lw.n;
  const tensor_view out =
      direct ? view_of(outs[0].out.data, od, {batch, lw.n}, dev) : view_of(qs.tmp, act, {batch, lw.n}, dev);
  // The GEMM's input: x (rotated for W4A16), or x quantized to int8 with its scale.
  tensor_view xin = x;
  quantize_params q;
  // W8A8 and W4A8 at one row with the norm in front (unless SSMKIT_CUDA_DECODE_FOLD_NORM=0): the norm
  // and the quantizer folded into the GEMM where it can (gemm_w8a8_norm_folds, gemm_w4a8_norm_folds).
  gemm_w8a8_params g8;
  gemm_w4a8_params g4;
  bool qfold = false;
  if (quantized) {
    const tensor_view as =
        lw.act_scale.present() ? lw.act_scale : view_of(qs.as, SSMKIT_DTYPE_F32, {batch}, dev);
    auto fill = [&](auto& g) {
      g.a = view_of(qs.aq, SSMKIT_DTYPE_I8, {batch, lw.k}, dev);
      g.w = wq;
      g.a_scale = as;
      g.w_scale = lw.w_scale;
      g.bias = lw.bias;
      g.out = out;
      g.m = batch;
      g.n = lw.n;
      g.k = lw.k;
      g.w_packed = packed;
      g.pdl = ctx.pdl;
    };
    if (lw.kind == LINEAR_W8A8) {
      fill(g8);
    } else {
      fill(g4);
      g4.group_size = lw.group_size;
    }
    // The norm and the quantizer folded into in_proj (may_fold), or with no norm in front (x_proj) the
    // quantizer alone into the GEMV, unless SSMKIT_CUDA_DECODE_FOLD_QUANT=0 (gemm_w8a8_quant_folds,
    // gemm_w4a8_quant_folds). The folded quantizer computes the row's per-token scale itself where there is
    // no static one.
    const bool quant_fold =
        norm == nullptr && !lw.rotate && batch == 1 && env_flag("SSMKIT_CUDA_DECODE_FOLD_QUANT", true);
    auto try_fold = [&](auto& g, auto folds) {
      if (norm != nullptr) {
        g.norm_x = norm->x;
        g.norm_res = norm->residual;
        g.norm_res_out = norm->residual_out;
        g.norm_w = norm->weight;
        g.norm_eps = norm->eps;
      } else {
        g.quant_x = x;
      }
      if (!lw.act_scale.present()) g.a_scale = tensor_view{};
      if (folds(g)) return true;
      g.norm_x = g.norm_res = g.norm_res_out = g.norm_w = g.quant_x = tensor_view{};
      g.a_scale = as;
      return false;
    };
    if (may_fold || quant_fold)
      qfold = lw.kind == LINEAR_W8A8 ? try_fold(g8, may_fold ? gemm_w8a8_norm_folds : gemm_w8a8_quant_folds)
                                     : try_fold(g4, may_fold ? gemm_w4a8_norm_folds : gemm_w4a8_quant_folds);
    if (qfold) (norm != nullptr ? folds_norm : folds_quant).fetch_add(1, std::memory_order_relaxed);
    if (norm != nullptr && !qfold) SSMKIT_RETURN_IF_ERROR(rms_norm_enqueue(ctx, *norm));
  }
  if (lw.kind == LINEAR_W4A16) {
    if (lw.rotate) {
      hadamard_params h;
      h.x = x;
      h.out = view_of(qs.rotated, x.dtype, {batch, lw.k}, dev);
      h.rows = batch;
      h.n = lw.k;
      h.scale = 1.0f / std::sqrt(static_cast<float>(lw.k));
      SSMKIT_RETURN_IF_ERROR(hadamard_cuda(h, stream));
      xin = h.out;
    }
  } else if (!qfold) {
    q.x = x;
    q.q = view_of(qs.aq, SSMKIT_DTYPE_I8, {batch, lw.k}, dev);
    q.lines = batch;
    q.len = lw.k;
    q.bits = 8;
    q.hadamard = lw.rotate;
    if (lw.act_scale.present()) {
      q.scale = lw.act_scale;
      q.granularity = QUANT_TENSOR;
      q.static_scale = true;
    } else {
      q.scale = view_of(qs.as, SSMKIT_DTYPE_F32, {batch}, dev);
      q.granularity = QUANT_TOKEN;
    }
    SSMKIT_RETURN_IF_ERROR(quantize_cuda(q, stream));
  }
  if (lw.kind == LINEAR_W4A16) {
    gemm_w4a16_params g;
    g.x = xin;
    g.w = wq;
    g.scales = lw.w_scale;
    g.bias = lw.bias;
    g.out = out;
    g.m = batch;
    g.n = lw.n;
    g.k = lw.k;
    g.group_size = lw.group_size;
    g.w_packed = packed;
    g.pdl = ctx.pdl;
    if (fold) {
      g.norm_x = norm->x;
      g.norm_res = norm->residual;
      g.norm_res_out = norm->residual_out;
      g.norm_w = norm->weight;
      g.norm_eps = norm->eps;
      if (gemm_w4a16_norm_folds(g)) {
        folds_norm.fetch_add(1, std::memory_order_relaxed);
      } else {
        g.norm_x = g.norm_res = g.norm_res_out = g.norm_w = tensor_view{};
        SSMKIT_RETURN_IF_ERROR(rms_norm_enqueue(ctx, *norm));
      }
    }
    if (conv != nullptr && batch == 1 && env_flag("SSMKIT_CUDA_DECODE_FOLD_CONV", true)) {
      g.conv_state = conv->conv_state;
      g.conv_weight = conv->weight;
      g.conv_bias = conv->bias;
      g.conv_out = conv->out;
      g.conv_col0 = conv_col0;
      if (!gemm_w4a16_conv_folds(g)) g.conv_state = g.conv_weight = g.conv_bias = g.conv_out = tensor_view{};
      *conv_folded = g.conv_state.present();
      if (*conv_folded) folds_conv.fetch_add(1, std::memory_order_relaxed);
    }
    SSMKIT_RETURN_IF_ERROR(gemm_w4a16_cuda(g, stream));
  } else if (lw.kind == LINEAR_W8A8) {
    SSMKIT_RETURN_IF_ERROR(gemm_w8a8_cuda(g8, stream));
  } else {
    SSMKIT_RETURN_IF_ERROR(gemm_w4a8_cuda(g4, stream));
  }
  if (direct) return ok_status();
  split_columns_params sp;
  sp.x = out;
  sp.m = batch;
  sp.n = lw.n;
  sp.num_outputs = n_outs;
  for (int i = 0; i < n_outs; ++i) sp.outputs[i] = outs[i];
  SSMKIT_RETURN_IF_ERROR(nn_check::check_split_columns(sp));
  return split_columns_enqueue(ctx, sp);
}

// Checks a decode call as the CPU step does (nn_check::check_decode), then that every tensor but the
// sampler's draws lives on the ids' device (the picks too: the step never waits for itself), before
// anything is enqueued.
status check_decode_cuda(const mamba_decode_params& p) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_decode(p));
  const char* op = "decodeStep";
  const mamba_decode_model& mm = *p.model;
  const int dev = p.ids.device;
  auto on_dev = [&](const tensor_view& t, const char* what) -> status {
    if (t.present() && t.device != dev)
      return make_status(status_code::value, "%s: %s: expected a tensor on cuda:%d", op, what, dev);
    return ok_status();
  };
  auto linear_on_dev = [&](const linear_weight& lw) -> status {
    for (const tensor_view* t : {&lw.w, &lw.bias, &lw.w_scale, &lw.act_scale})
      SSMKIT_RETURN_IF_ERROR(on_dev(*t, "plan"));
    return ok_status();
  };
  if (dev < 0) return make_status(status_code::value, "%s: ids: expected a device tensor", op);
  SSMKIT_RETURN_IF_ERROR(on_dev(p.logits, "logits"));
  SSMKIT_RETURN_IF_ERROR(on_dev(p.sample.tokens, "tokens"));
  for (int l = 0; l < mm.num_layers; ++l) {
    const mamba_layer_weights& w = mm.layers[l];
    SSMKIT_RETURN_IF_ERROR(on_dev(p.conv_states[l], "states"));
    SSMKIT_RETURN_IF_ERROR(on_dev(p.ssm_states[l], "states"));
    for (const tensor_view* t :
         {&w.norm, &w.conv_weight, &w.conv_bias, &w.dt_bias, &w.A, &w.D, &w.gated_norm})
      SSMKIT_RETURN_IF_ERROR(on_dev(*t, "plan"));
    for (const linear_weight* lw : {&w.in_proj, &w.x_proj, &w.dt_proj, &w.out_proj})
      SSMKIT_RETURN_IF_ERROR(linear_on_dev(*lw));
  }
  SSMKIT_RETURN_IF_ERROR(on_dev(mm.norm_f, "plan"));
  SSMKIT_RETURN_IF_ERROR(on_dev(mm.embed, "plan"));
  return linear_on_dev(mm.head);
}

// A float linear layer of the step as gemv arguments writing `outs`, checked like linear.
status decode_gemv(const linear_weight& lw, const tensor_view& x, int64_t batch, const linear_output* outs,
                   int n_outs, const decode_buffers& buf, int sms, gemv_args* a, gemv_plan* g) {
  linear_params p;
  SSMKIT_RETURN_IF_ERROR(float_linear(lw, x, batch, outs, n_outs, &p));
  if (p.k < 1 || p.m > kGemvMaxM)
    return make_status(status_code::internal, "decodeStep: a layer the fused step cannot run");
  *g = linear_gemv_plan(p, sms);
  linear_scratch scr;
  scr.partial = buf.partial;
  scr.counters = buf.counters;
  *a = make_gemv_args(p, *g, scr);
  return ok_status();
}

// Mamba's dt_proj (a float linear layer) with the state update in its epilogue: y (buf.y) and layer l's
// state advanced one token from dtin and the conv output, B, C and z in buf; one launch for two.
status enqueue_dt_update(const launch_ctx& ctx, const mamba_decode_params& p, int l,
                         const tensor_view& dtin_v, const decode_buffers& buf, int sms) {
  const mamba_decode_model& m = *p.model;
  const mamba_layer_weights& w = m.layers[l];
  const int64_t B = p.batch, di = m.d_inner, ds = m.d_state;
  const ssmkit_dtype act = m.act;
  const tensor_view y_v = view_of(buf.y, act, {B, di}, p.ids.device);
  gemv_args a;
  gemv_plan g;
  const linear_output dto[1] = {col(y_v, 0, di)};
  SSMKIT_RETURN_IF_ERROR(decode_gemv(w.dt_proj, dtin_v, B, dto, 1, buf, sms, &a, &g));
  if (w.dt_proj.n != di || w.A.numel() != di * ds || (w.D.present() && w.D.numel() != di) ||
      (w.dt_bias.present() && w.dt_bias.numel() != di) || p.ssm_states[l].numel() != B * di * ds)
    return make_status(status_code::shape, "decodeStep: plan: layer %d's state update does not fit the model",
                       l);
  ssu_epi se{};
  se.x = buf.xc;
  se.x_dt = act;
  se.z = buf.z;
  se.z_dt = act;
  se.B = buf.bm;
  se.b_dt = act;
  se.C = buf.cm;
  se.c_dt = act;
  se.A = w.A.ptr<const float>();
  se.D = w.D.ptr<const float>();
  se.dt_bias = w.dt_bias.ptr<const float>();
  se.state = p.ssm_states[l].ptr<float>();
  se.out = buf.y;
  se.out_dt = act;
  se.dim = di;
  se.N = ds;
  se.act = act;
  se.block = (ds == 8 || ds == 16) && env_flag("SSMKIT_CUDA_SSU_BLOCK", true);
  a.epi = EPI_SSU;
  a.ssu = se;
  return launch_gemv(ctx, a, g, w.dt_proj.w.dtype == SSMKIT_DTYPE_BF16);
}

// Enqueues one step, ids (B,) -> logits (B, vocab), in the CPU step's order.
status decode_enqueue_composed(const launch_ctx& ctx, const mamba_decode_params& p, const decode_buffers& buf,
                               const int32_t* ids, float* logits, int sms) {
  const mamba_decode_model& m = *p.model;
  const int dev = p.ids.device;  // every buffer of the step is on the ids' device
  const int64_t B = p.batch, d = m.d_model, di = m.d_inner, ds = m.d_state;
  const int64_t gds = m.ngroups * ds;
  const int64_t conv_dim = m.mamba2 ? di + 2 * gds : di;
  const int64_t nh = m.nheads, r = m.dt_rank;
  const ssmkit_dtype act = m.act;
  const ssmkit_dtype res_t = m.residual_fp32 ? SSMKIT_DTYPE_F32 : act;
  void* stream = ctx.stream;
  quant_ptrs qs{buf.qtmp, buf.rotated, buf.aq, buf.as};

  const tensor_view hidden_v = view_of(buf.hidden, act, {B, d}, dev);
  // Layer l reads the residual of layer l - 1 from one buffer and writes its own to the other.
  const tensor_view residuals[2] = {view_of(buf.residual, res_t, {B, d}, dev),
                                    view_of(buf.residual2, res_t, {B, d}, dev)};
  const tensor_view hn_v = view_of(buf.hn, act, {B, d}, dev);

  embedding_params ep;
  ep.ids = view_of(const_cast<int32_t*>(ids), SSMKIT_DTYPE_I32, {B}, dev);
  ep.weight = m.embed;
  ep.out = hidden_v;
  ep.count = B;
  ep.vocab = m.vocab;
  ep.d = d;
  ep.packed = m.embed_packed;
  SSMKIT_RETURN_IF_ERROR(embedding_enqueue(ctx, ep));

  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    // The norm in front of in_proj: run by decode_linear, or folded into in_proj.
    rms_norm_params np;
    np.x = hidden_v;
    if (l > 0) np.residual = residuals[(l + 1) & 1];
    np.residual_out = residuals[l & 1];
    np.weight = w.norm;
    np.out = hn_v;
    np.rows = B;
    np.d = d;
    np.eps = m.eps;

    const tensor_view z_v = view_of(buf.z, act, {B, di}, dev);
    const tensor_view xin_v = view_of(buf.xin, act, {B, conv_dim}, dev);
    const tensor_view xc_v = view_of(buf.xc, act, {B, conv_dim}, dev);
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
    // in_proj, and the conv's update: folded into in_proj's epilogue (W4A16 at batch 1 where the GEMM can,
    // unless SSMKIT_CUDA_DECODE_FOLD_CONV=0), or its own kernel.
    bool conv_folded = false;
    if (!m.mamba2) {
      const linear_output outs[2] = {col(xin_v, 0, di), col(z_v, di, di)};
      SSMKIT_RETURN_IF_ERROR(
          decode_linear(ctx, w.in_proj, hn_v, B, outs, 2, act, qs, buf, sms, &np, &cp, 0, &conv_folded));
    } else {
      const tensor_view dt_v = view_of(buf.dt, act, {B, nh}, dev);
      const linear_output outs[3] = {col(z_v, 0, di), col(xin_v, di, conv_dim), col(dt_v, di + conv_dim, nh)};
      SSMKIT_RETURN_IF_ERROR(
          decode_linear(ctx, w.in_proj, hn_v, B, outs, 3, act, qs, buf, sms, &np, &cp, di, &conv_folded));
    }
    if (!conv_folded) SSMKIT_RETURN_IF_ERROR(causal_conv1d_update_cuda(cp, stream));

    selective_state_update_params sp;
    sp.state = p.ssm_states[l];
    sp.A = w.A;
    sp.D = w.D;
    sp.batch = B;
    sp.state_batch = B;
    sp.dstate = ds;
    const tensor_view y_v = view_of(buf.y, act, {B, di}, dev);
    tensor_view layer_out = y_v;
    if (!m.mamba2) {
      const tensor_view dtin_v = view_of(buf.dtin, act, {B, r}, dev);
      const tensor_view bm_v = view_of(buf.bm, act, {B, ds}, dev);
      const tensor_view cm_v = view_of(buf.cm, act, {B, ds}, dev);
      const linear_output xo[3] = {col(dtin_v, 0, r), col(bm_v, r, ds), col(cm_v, r + ds, ds)};
      SSMKIT_RETURN_IF_ERROR(decode_linear(ctx, w.x_proj, xc_v, B, xo, 3, act, qs, buf, sms));
      if (w.dt_proj.kind == LINEAR_FLOAT && B <= kGemvMaxM) {
        // A float dt_proj (the quantized modes keep it so) takes the state update in its epilogue.
        SSMKIT_RETURN_IF_ERROR(enqueue_dt_update(ctx, p, l, dtin_v, buf, sms));
      } else {
        const tensor_view dt_v = view_of(buf.dt, act, {B, di}, dev);
        const linear_output dto[1] = {col(dt_v, 0, di)};
        SSMKIT_RETURN_IF_ERROR(decode_linear(ctx, w.dt_proj, dtin_v, B, dto, 1, act, qs, buf, sms));
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
        SSMKIT_RETURN_IF_ERROR(selective_state_update_cuda(sp, stream));
      }
    } else {
      // x, B and C: at batch 1 the conv output's pieces in place (16-byte aligned), else split.
      const int64_t e = dtype_size(act);
      char* xc0 = static_cast<char*>(buf.xc);
      const bool in_place = B == 1 && (di * e) % 16 == 0 && (gds * e) % 16 == 0;
      const tensor_view xs_v = view_of(in_place ? xc0 : buf.xs, act, {B, nh, m.headdim}, dev);
      const tensor_view bm_v = view_of(in_place ? xc0 + di * e : buf.bm, act, {B, m.ngroups, ds}, dev);
      const tensor_view cm_v =
          view_of(in_place ? xc0 + (di + gds) * e : buf.cm, act, {B, m.ngroups, ds}, dev);
      if (!in_place) {
        split_columns_params xp;
        xp.x = xc_v;
        xp.m = B;
        xp.n = conv_dim;
        xp.num_outputs = 3;
        xp.outputs[0] = col(view_of(buf.xs, act, {B, di}, dev), 0, di);
        xp.outputs[1] = col(view_of(buf.bm, act, {B, gds}, dev), di, gds);
        xp.outputs[2] = col(view_of(buf.cm, act, {B, gds}, dev), di + gds, gds);
        SSMKIT_RETURN_IF_ERROR(split_columns_enqueue(ctx, xp));
      }
      tensor_view dt_v = view_of(buf.dt, act, {B, nh}, dev);
      if (m.dt_limited) {
        dt_limit_params lp;
        lp.dt = dt_v;
        lp.bias = w.dt_bias;
        lp.out = view_of(buf.dtl, act, {B, nh}, dev);
        lp.rows = B;
        lp.heads = nh;
        lp.lo = m.dt_lo;
        lp.hi = m.dt_hi;
        SSMKIT_RETURN_IF_ERROR(dt_limit_enqueue(ctx, lp));
        dt_v = lp.out;
      } else {
        sp.dt_bias = w.dt_bias;
        sp.dt_softplus = true;
      }
      sp.x = xs_v;
      sp.dt = dt_v;
      sp.B = bm_v;
      sp.C = cm_v;
      sp.out = view_of(buf.y, act, {B, nh, m.headdim}, dev);
      sp.multihead = true;
      sp.nheads = nh;
      sp.headdim = m.headdim;
      sp.groups = m.ngroups;
      SSMKIT_RETURN_IF_ERROR(selective_state_update_cuda(sp, stream));
      gated_rms_norm_params gp;
      gp.y = y_v;
      gp.z = z_v;
      gp.weight = w.gated_norm;
      gp.out = view_of(buf.yn, act, {B, di}, dev);
      gp.rows = B;
      gp.d = di;
      gp.groups = m.ngroups;
      gp.eps = m.eps;
      if (gp.groups < 1 || gp.d % gp.groups != 0)
        return make_status(status_code::value, "decodeStep: plan: n_groups must divide d_inner");
      SSMKIT_RETURN_IF_ERROR(gated_rms_norm_enqueue(ctx, gp));
      layer_out = gp.out;
    }
    const linear_output oo[1] = {col(hidden_v, 0, d)};
    SSMKIT_RETURN_IF_ERROR(decode_linear(ctx, w.out_proj, layer_out, B, oo, 1, act, qs, buf, sms));
  }

  rms_norm_params fp;
  fp.x = hidden_v;
  if (m.num_layers > 0) fp.residual = residuals[(m.num_layers + 1) & 1];
  fp.weight = m.norm_f;
  fp.out = hn_v;
  fp.rows = B;
  fp.d = d;
  fp.eps = m.eps;
  SSMKIT_RETURN_IF_ERROR(rms_norm_enqueue(ctx, fp));
  const linear_output lo[1] = {col(view_of(logits, SSMKIT_DTYPE_F32, {B, m.vocab}, dev), 0, m.vocab)};
  return decode_linear(ctx, m.head, hn_v, B, lo, 1, act, qs, buf, sms);
}

// Whether the fused sequence can run this model and batch: float linear layers, one gemv chunk of rows
// per call at most 64 rows, and a d_model row that fits the norm tail's shared memory.
bool decode_can_fuse(const mamba_decode_model& m, int64_t B) {
  if (B < 1 || B > kGemvMaxM || m.num_layers < 1) return false;
  if (m.d_model * static_cast<int64_t>(sizeof(float)) > 40 * 1024) return false;
  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    if (w.in_proj.kind != LINEAR_FLOAT || w.out_proj.kind != LINEAR_FLOAT) return false;
    if (!m.mamba2 && (w.x_proj.kind != LINEAR_FLOAT || w.dt_proj.kind != LINEAR_FLOAT)) return false;
  }
  return m.head.kind == LINEAR_FLOAT;
}

rms_args make_rms(const tensor_view& x, const tensor_view& res, const tensor_view& res_out,
                  const tensor_view& w, const tensor_view& out, int64_t rows, int64_t d, float eps) {
  rms_args r{};
  r.x = x.data;
  r.res = res.data;
  r.res_out = res_out.data;
  r.w = w.data;
  r.out = out.data;
  r.x_dt = x.dtype;
  r.res_dt = res.dtype;
  r.res_out_dt = res_out.dtype;
  r.w_dt = w.dtype;
  r.out_dt = out.dtype;
  r.rows = rows;
  r.d = d;
  r.eps = eps;
  return r;
}

// The step with the small kernels folded into the linear layers' epilogues: per layer, in_proj with
// the conv update (and Mamba-2's split and dt limit), x_proj, dt_proj with the state update (Mamba),
// or the scan family's state update and the gated norm (Mamba-2), and out_proj with the next norm in
// its tail; 4 launches per layer instead of 7 to 9. The same math as decode_enqueue_composed.
status decode_enqueue_fused(const launch_ctx& ctx, const mamba_decode_params& p, const decode_buffers& buf,
                            const int32_t* ids, float* logits, int sms) {
  const mamba_decode_model& m = *p.model;
  const int dev = p.ids.device;  // every buffer of the step is on the ids' device
  const int64_t B = p.batch, d = m.d_model, di = m.d_inner, ds = m.d_state;
  const int64_t gds = m.ngroups * ds;
  const int64_t conv_dim = m.mamba2 ? di + 2 * gds : di;
  const int64_t nh = m.nheads, r = m.dt_rank;
  const ssmkit_dtype act = m.act;
  const ssmkit_dtype res_t = m.residual_fp32 ? SSMKIT_DTYPE_F32 : act;
  void* stream = ctx.stream;

  const tensor_view hidden_v = view_of(buf.hidden, act, {B, d}, dev);
  const tensor_view residual_v = view_of(buf.residual, res_t, {B, d}, dev);
  const tensor_view hn_v = view_of(buf.hn, act, {B, d}, dev);
  const tensor_view none;
  // A float32 residual holds the sum the next norm reads exactly: out_proj adds into it in its epilogue
  // and the next in_proj (or the head) normalizes it in its prologue, so no block runs the norm alone
  // between the layers. Otherwise out_proj's last block normalizes the rows (the norm tail).
  const bool prenorm = res_t == SSMKIT_DTYPE_F32;

  embedding_params ep;
  ep.ids = view_of(const_cast<int32_t*>(ids), SSMKIT_DTYPE_I32, {B}, dev);
  ep.weight = m.embed;
  ep.out = hidden_v;
  ep.count = B;
  ep.vocab = m.vocab;
  ep.d = d;
  ep.packed = m.embed_packed;
  SSMKIT_RETURN_IF_ERROR(embedding_enqueue(ctx, ep));
  {
    rms_norm_params np;
    np.x = hidden_v;
    np.residual_out = residual_v;
    np.weight = m.layers[0].norm;
    np.out = hn_v;
    np.rows = B;
    np.d = d;
    np.eps = m.eps;
    SSMKIT_RETURN_IF_ERROR(rms_norm_enqueue(ctx, np));
  }

  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    const tensor_view& conv_state = p.conv_states[l];
    const tensor_view z_v = view_of(buf.z, act, {B, di}, dev);
    const tensor_view xc_v = view_of(buf.xc, act, {B, conv_dim}, dev);
    const tensor_view y_v = view_of(buf.y, act, {B, di}, dev);
    if (w.conv_weight.numel() != conv_dim * m.conv_width ||
        (w.conv_bias.present() && w.conv_bias.numel() != conv_dim))
      return make_status(status_code::shape,
                         "decodeStep: plan: layer %d's conv weight does not fit the model", l);

    // in_proj, the conv's update in its epilogue.
    gemv_args a{};
    gemv_plan g;
    conv_epi ce{};
    ce.weight = w.conv_weight.data;
    ce.w_dt = w.conv_weight.dtype;
    ce.bias = w.conv_bias.data;
    ce.bias_dt = w.conv_bias.dtype;
    ce.state = conv_state.ptr<float>();
    ce.width = m.conv_width;
    ce.state_len = conv_state.dim(2);
    ce.act = act;
    ce.dim = conv_dim;
    if (!m.mamba2) {
      const linear_output outs[1] = {col(z_v, di, di)};
      SSMKIT_RETURN_IF_ERROR(decode_gemv(w.in_proj, hn_v, B, outs, 1, buf, sms, &a, &g));
      ce.c0 = 0;
      ce.out.count = 1;
      ce.out.data[0] = buf.xc;
      ce.out.row0[0] = 0;
      ce.out.rows[0] = di;
      ce.out.dtype[0] = act;
    } else {
      const tensor_view dt_v = view_of(buf.dt, act, {B, nh}, dev);
      const linear_output outs[2] = {col(z_v, 0, di), col(dt_v, di + conv_dim, nh)};
      // A limited dt leaves through the epilogue instead of the second output.
      SSMKIT_RETURN_IF_ERROR(decode_gemv(w.in_proj, hn_v, B, outs, m.dt_limited ? 1 : 2, buf, sms, &a, &g));
      ce.c0 = di;
      ce.out.count = 3;
      void* parts[3] = {buf.xs, buf.bm, buf.cm};
      const int64_t r0[3] = {0, di, di + gds}, rows[3] = {di, gds, gds};
      for (int i = 0; i < 3; ++i) {
        ce.out.data[i] = parts[i];
        ce.out.row0[i] = r0[i];
        ce.out.rows[i] = rows[i];
        ce.out.dtype[i] = act;
      }
      if (m.dt_limited) {
        if (w.dt_bias.present() && w.dt_bias.numel() != nh)
          return make_status(status_code::shape,
                             "decodeStep: plan: layer %d's dt bias does not fit the model", l);
        ce.dt_limited = true;
        ce.dt0 = di + conv_dim;
        ce.heads = nh;
        ce.dt_bias = w.dt_bias.ptr<const float>();
        ce.lo = m.dt_lo;
        ce.hi = m.dt_hi;
        ce.dt_out = buf.dtl;
      }
    }
    if (w.in_proj.n < ce.c0 + conv_dim)
      return make_status(status_code::shape, "decodeStep: plan: layer %d's in_proj does not fit the model",
                         l);
    a.epi = EPI_CONV;
    a.conv = ce;
    if (prenorm && l > 0) {
      SSMKIT_RETURN_IF_ERROR(need_numel("decodeStep", "plan", w.norm, d));
      a.has_pre = true;
      a.pre = make_rms(residual_v, none, none, w.norm, hn_v, B, d, m.eps);
      a.pre_ssq = buf.ssq;
      a.pre_panels = (d + kPanel - 1) / kPanel;
    }
    SSMKIT_RETURN_IF_ERROR(launch_gemv(ctx, a, g, w.in_proj.w.dtype == SSMKIT_DTYPE_BF16));

    tensor_view layer_out = y_v;
    if (!m.mamba2) {
      const tensor_view dtin_v = view_of(buf.dtin, act, {B, r}, dev);
      const tensor_view bm_v = view_of(buf.bm, act, {B, ds}, dev);
      const tensor_view cm_v = view_of(buf.cm, act, {B, ds}, dev);
      const linear_output xo[3] = {col(dtin_v, 0, r), col(bm_v, r, ds), col(cm_v, r + ds, ds)};
      SSMKIT_RETURN_IF_ERROR(decode_gemv(w.x_proj, xc_v, B, xo, 3, buf, sms, &a, &g));
      SSMKIT_RETURN_IF_ERROR(launch_gemv(ctx, a, g, w.x_proj.w.dtype == SSMKIT_DTYPE_BF16));

      SSMKIT_RETURN_IF_ERROR(enqueue_dt_update(ctx, p, l, dtin_v, buf, sms));
    } else {
      selective_state_update_params sp;
      sp.state = p.ssm_states[l];
      sp.A = w.A;
      sp.D = w.D;
      sp.batch = B;
      sp.state_batch = B;
      sp.dstate = ds;
      tensor_view dt_v = view_of(buf.dt, act, {B, nh}, dev);
      if (m.dt_limited) {
        dt_v = view_of(buf.dtl, act, {B, nh}, dev);
      } else {
        sp.dt_bias = w.dt_bias;
        sp.dt_softplus = true;
      }
      sp.x = view_of(buf.xs, act, {B, nh, m.headdim}, dev);
      sp.dt = dt_v;
      sp.B = view_of(buf.bm, act, {B, m.ngroups, ds}, dev);
      sp.C = view_of(buf.cm, act, {B, m.ngroups, ds}, dev);
      sp.out = view_of(buf.y, act, {B, nh, m.headdim}, dev);
      sp.multihead = true;
      sp.nheads = nh;
      sp.headdim = m.headdim;
      sp.groups = m.ngroups;
      SSMKIT_RETURN_IF_ERROR(selective_state_update_cuda(sp, stream));
      gated_rms_norm_params gp;
      gp.y = y_v;
      gp.z = z_v;
      gp.weight = w.gated_norm;
      gp.out = view_of(buf.yn, act, {B, di}, dev);
      gp.rows = B;
      gp.d = di;
      gp.groups = m.ngroups;
      gp.eps = m.eps;
      if (gp.groups < 1 || gp.d % gp.groups != 0)
        return make_status(status_code::value, "decodeStep: plan: n_groups must divide d_inner");
      SSMKIT_RETURN_IF_ERROR(gated_rms_norm_enqueue(ctx, gp));
      layer_out = gp.out;
    }

    // out_proj: added to the residual (prenorm), or the next norm (this layer's residual added) in its
    // tail.
    const linear_output oo[1] = {col(hidden_v, 0, d)};
    SSMKIT_RETURN_IF_ERROR(decode_gemv(w.out_proj, layer_out, B, oo, 1, buf, sms, &a, &g));
    if (prenorm) {
      a.epi = EPI_RES;
      a.res.residual = static_cast<float*>(buf.residual);
      a.res.ssq = buf.ssq;
      a.res.act = act;
      SSMKIT_RETURN_IF_ERROR(launch_gemv(ctx, a, g, w.out_proj.w.dtype == SSMKIT_DTYPE_BF16));
      continue;
    }
    const bool last = l + 1 == m.num_layers;
    const tensor_view& next_w = last ? m.norm_f : m.layers[l + 1].norm;
    SSMKIT_RETURN_IF_ERROR(need_numel("decodeStep", "plan", next_w, d));
    a.has_tail = true;
    a.tail.done = buf.done;
    a.tail.norm = make_rms(hidden_v, residual_v, last ? none : residual_v, next_w, hn_v, B, d, m.eps);
    g.smem = std::max(g.smem, static_cast<size_t>(d) * sizeof(float));
    SSMKIT_RETURN_IF_ERROR(launch_gemv(ctx, a, g, w.out_proj.w.dtype == SSMKIT_DTYPE_BF16));
  }

  quant_ptrs qs{buf.qtmp, buf.rotated, buf.aq, buf.as};
  const linear_output lo[1] = {col(view_of(logits, SSMKIT_DTYPE_F32, {B, m.vocab}, dev), 0, m.vocab)};
  if (prenorm) {
    // The head with the final norm in its prologue.
    SSMKIT_RETURN_IF_ERROR(need_numel("decodeStep", "plan", m.norm_f, d));
    gemv_args a{};
    gemv_plan g;
    SSMKIT_RETURN_IF_ERROR(decode_gemv(m.head, hn_v, B, lo, 1, buf, sms, &a, &g));
    a.has_pre = true;
    a.pre = make_rms(residual_v, none, none, m.norm_f, hn_v, B, d, m.eps);
    a.pre_ssq = buf.ssq;
    a.pre_panels = (d + kPanel - 1) / kPanel;
    return launch_gemv(ctx, a, g, m.head.w.dtype == SSMKIT_DTYPE_BF16);
  }
  return decode_linear(ctx, m.head, hn_v, B, lo, 1, act, qs, buf, sms);
}

status decode_enqueue(const launch_ctx& ctx, const mamba_decode_params& p, const decode_buffers& buf,
                      const int32_t* ids, float* logits, int sms, bool fused) {
  if (fused && decode_can_fuse(*p.model, p.batch)) return decode_enqueue_fused(ctx, p, buf, ids, logits, sms);
  return decode_enqueue_composed(ctx, p, buf, ids, logits, sms);
}

// What a captured step depends on: every pointer, shape and scalar it was built from. Two calls with the
// same fingerprint enqueue the same work.
void fingerprint_view(std::vector<uint64_t>& f, const tensor_view& t) {
  f.push_back(reinterpret_cast<uint64_t>(t.data));
  f.push_back(static_cast<uint64_t>(t.dtype) << 32 | static_cast<uint32_t>(t.ndim));
  for (int i = 0; i < t.ndim && i < kMaxDims; ++i) f.push_back(static_cast<uint64_t>(t.shape[i]));
}

void fingerprint_linear(std::vector<uint64_t>& f, const linear_weight& lw) {
  f.push_back(static_cast<uint64_t>(lw.kind));
  fingerprint_view(f, lw.w);
  fingerprint_view(f, lw.bias);
  fingerprint_view(f, lw.w_scale);
  fingerprint_view(f, lw.act_scale);
  f.push_back(static_cast<uint64_t>(lw.n));
  f.push_back(static_cast<uint64_t>(lw.k));
  f.push_back(static_cast<uint64_t>(lw.group_size));
  f.push_back(lw.rotate ? 1 : 0);
}

uint64_t float_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

std::vector<uint64_t> decode_fingerprint(const mamba_decode_params& p, cudaStream_t stream, bool pdl,
                                         bool fused) {
  const mamba_decode_model& m = *p.model;
  std::vector<uint64_t> f;
  f.reserve(64 + static_cast<size_t>(m.num_layers) * 160);
  f.push_back(reinterpret_cast<uint64_t>(stream));
  f.push_back(pdl ? 1 : 0);
  f.push_back(fused ? 1 : 0);
  f.push_back(env_flag("SSMKIT_CUDA_DECODE_FOLD_NORM", true) ? 1 : 0);   // decode_linear's switch
  f.push_back(env_flag("SSMKIT_CUDA_DECODE_FOLD_QUANT", true) ? 1 : 0);  // decode_linear's switch
  f.push_back(env_flag("SSMKIT_CUDA_SSU_BLOCK", true) ? 1 : 0);          // enqueue_dt_update's switch
  f.push_back(static_cast<uint64_t>(gemv_units_per_sm()));
  f.push_back(gemv_align_panels() ? 1 : 0);                             // plan_gemv's switch
  f.push_back(env_flag("SSMKIT_CUDA_HADAMARD_WIDE", true) ? 1 : 0);     // the quantized layers' rotation
  f.push_back(env_flag("SSMKIT_CUDA_QUANT_H40", true) ? 1 : 0);         // and its quantizer
  f.push_back(pdl_trigger_late() ? 1 : 0);                              // the gemvs' and ring GEMMs' launches
  f.push_back(env_flag("SSMKIT_CUDA_DECODE_FOLD_CONV", true) ? 1 : 0);  // decode_linear's switch
  f.push_back(static_cast<uint64_t>(p.batch));
  f.push_back(m.mamba2 ? 1 : 0);
  f.push_back(static_cast<uint64_t>(m.act));
  f.push_back(m.residual_fp32 ? 1 : 0);
  for (int64_t v :
       {m.d_model, m.d_inner, m.d_state, m.dt_rank, m.nheads, m.headdim, m.ngroups, m.conv_width, m.vocab})
    f.push_back(static_cast<uint64_t>(v));
  f.push_back(float_bits(m.eps));
  f.push_back(m.dt_limited ? 1 : 0);
  f.push_back(float_bits(m.dt_lo));
  f.push_back(float_bits(m.dt_hi));
  f.push_back(static_cast<uint64_t>(m.num_layers));
  for (int l = 0; l < m.num_layers; ++l) {
    const mamba_layer_weights& w = m.layers[l];
    fingerprint_view(f, w.norm);
    fingerprint_linear(f, w.in_proj);
    fingerprint_linear(f, w.x_proj);
    fingerprint_linear(f, w.dt_proj);
    fingerprint_linear(f, w.out_proj);
    fingerprint_view(f, w.conv_weight);
    fingerprint_view(f, w.conv_bias);
    fingerprint_view(f, w.dt_bias);
    fingerprint_view(f, w.A);
    fingerprint_view(f, w.D);
    fingerprint_view(f, w.gated_norm);
    fingerprint_view(f, p.conv_states[l]);
    fingerprint_view(f, p.ssm_states[l]);
  }
  fingerprint_view(f, m.norm_f);
  fingerprint_linear(f, m.head);
  fingerprint_view(f, m.embed);
  f.push_back(m.embed_packed ? 1 : 0);
  return f;
}

// A step that is captured on its second call: its graph, and the scratch it reads and writes (owned;
// freed on eviction). The first call runs the same sequence uncaptured on the same buffers, so that
// whatever the families' entry points grow on first use (the GEMMs' split-K workspace) exists before
// the capture, which then allocates nothing.
struct decode_graph {
  std::vector<uint64_t> key;
  cudaStream_t stream = nullptr;
  cudaGraphExec_t exec = nullptr;
  void* scratch = nullptr;
  decode_buffers buf{};
  plain_weights plain;
  uint64_t used = 0;
  bool warm = false;    // the uncaptured first call has been enqueued
  bool failed = false;  // the capture failed: later calls run uncaptured on scratch of their own
};

constexpr size_t kMaxDecodeGraphs = 4;

struct graph_cache {
  std::mutex mu;
  std::vector<std::unique_ptr<decode_graph>> graphs;
  uint64_t clock = 0;
};

graph_cache& decode_graphs() {
  static graph_cache* c = new graph_cache();  // never destroyed: the process may exit with graphs alive
  return *c;
}

status free_graph(decode_graph& g) {
  // The graph may still be running on its stream.
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(g.stream));
  if (g.exec != nullptr) SSMKIT_CUDA_CHECK(cudaGraphExecDestroy(g.exec));
  g.exec = nullptr;
  if (g.scratch != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(g.scratch, g.stream));
  g.scratch = nullptr;
  if (g.plain.data != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(g.plain.data, g.stream));
  g.plain.data = nullptr;
  g.plain.views.clear();
  return ok_status();
}

// Captures the step into g.exec (scratch already carved); false in *ok when the stream cannot capture it
// (the caller then runs the step uncaptured).
status capture_decode(const mamba_decode_params& p, decode_graph& g, bool pdl, bool fused, int sms,
                      bool* captured) {
  *captured = false;
  cudaStream_t s = g.stream;
  SSMKIT_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  launch_ctx ctx;
  ctx.stream = s;
  ctx.pdl = pdl;
  const status st = decode_enqueue(ctx, p, g.buf, g.buf.ids, g.buf.logits, sms, fused);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  if (!st.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    // A status from the checks is the caller's error; a CUDA failure inside the capture is not.
    if (st.code != status_code::cuda) return st;
    return ok_status();
  }
  if (end != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    return ok_status();
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (inst != cudaSuccess || exec == nullptr) {
    cudaGetLastError();
    return ok_status();
  }
  g.exec = exec;
  *captured = true;
  return ok_status();
}

// Captures a warm entry; on failure the entry keeps no buffers and is marked failed.
status capture_entry(const mamba_decode_params& p, decode_graph& g, bool pdl, bool fused, int sms) {
  bool captured = false;
  status st = capture_decode(p, g, pdl, fused, sms, &captured);
  if (st.ok() && !captured && pdl) st = capture_decode(p, g, false, fused, sms, &captured);
  if (!st.ok() || !captured) {
    g.failed = true;
    const status freed = free_graph(g);
    return st.ok() ? freed : st;
  }
  return ok_status();
}

// The step's cache entry for this call: on the first call an entry without a graph (*out set, exec
// null: run uncaptured on its buffers), from the second on its graph (captured then); nullptr when the
// step cannot be captured.
status find_graph(const mamba_decode_params& p, cudaStream_t stream, bool pdl, bool fused, int sms,
                  decode_graph** out) {
  *out = nullptr;
  graph_cache& cache = decode_graphs();
  std::vector<uint64_t> key = decode_fingerprint(p, stream, pdl, fused);
  std::lock_guard<std::mutex> lock(cache.mu);
  for (auto& g : cache.graphs) {
    if (g->key == key) {
      g->used = ++cache.clock;
      if (g->failed) return ok_status();
      if (g->exec == nullptr) {
        if (!g->warm) {
          // The first call has not got as far as enqueueing its step: run this one uncaptured.
          *out = g.get();
          return ok_status();
        }
        SSMKIT_RETURN_IF_ERROR(capture_entry(p, *g, pdl, fused, sms));
        if (g->failed) return ok_status();
      }
      *out = g.get();
      return ok_status();
    }
  }
  if (cache.graphs.size() >= kMaxDecodeGraphs) {
    auto oldest = std::min_element(cache.graphs.begin(), cache.graphs.end(),
                                   [](const auto& a, const auto& b) { return a->used < b->used; });
    SSMKIT_RETURN_IF_ERROR(free_graph(**oldest));
    cache.graphs.erase(oldest);
  }
  auto g = std::make_unique<decode_graph>();
  g->key = std::move(key);
  g->stream = stream;
  g->used = ++cache.clock;
  const decode_sizes z = size_decode(*p.model, p.batch, sms);
  const size_t bytes = carve_decode(*p.model, p.batch, z, nullptr, nullptr);
  SSMKIT_CUDA_CHECK(cudaMallocAsync(&g->scratch, bytes, stream));
  carve_decode(*p.model, p.batch, z, static_cast<char*>(g->scratch), &g->buf);
  SSMKIT_CUDA_CHECK(cudaMemsetAsync(g->buf.counters, 0, g->buf.counter_count * sizeof(int), stream));
  {
    const status st = unpack_quantized(*p.model, stream, &g->plain);
    if (!st.ok()) {
      const status freed = free_graph(*g);
      (void)freed;
      return st;
    }
  }
  g->buf.plain = &g->plain;
  // An entry whose capture fails stays (failed, without buffers) so that later calls go straight to the
  // uncaptured path.
  *out = g.get();
  cache.graphs.push_back(std::move(g));
  return ok_status();
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------------

status pack_linear_cuda(const pack_linear_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_pack_linear(p));
  const int64_t n = p.n, k = p.k;
  const bool bf16 = p.out.dtype == SSMKIT_DTYPE_BF16;
  const int64_t kx = bf16 ? (k + 1) / 2 * 2 : k;
  const int64_t total = packed_numel(n, k, bf16);
  if (total == 0) return ok_status();
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return launch(ctx, pack_linear_kernel, dim3(stride_grid(total, 256)), dim3(256), 0, p.w.data,
                static_cast<int>(p.w.dtype), p.out.data, static_cast<int>(p.out.dtype), n, k, kx, total);
}

status linear_cuda(const linear_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_linear(p));
  if (p.m == 0 || p.n == 0) return ok_status();
  device_props props;
  SSMKIT_RETURN_IF_ERROR(current_props(&props));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  linear_scratch scr;
  if (p.k > 0 && linear_uses_gemv(p)) {
    const gemv_plan g = linear_gemv_plan(p, props.sms);
    if (g.partial_floats > 0) {
      void* data = nullptr;
      SSMKIT_RETURN_IF_ERROR(
          get_workspace(ctx.stream, g.partial_floats * sizeof(float), g.counters, &data, &scr.counters));
      scr.partial = static_cast<float*>(data);
    }
  }
  return linear_enqueue(ctx, p, scr, props.sms);
}

status split_columns_cuda(const split_columns_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_split_columns(p));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return split_columns_enqueue(ctx, p);
}

status rms_norm_cuda(const rms_norm_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_rms_norm(p));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return rms_norm_enqueue(ctx, p);
}

status gated_rms_norm_cuda(const gated_rms_norm_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_gated_rms_norm(p));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return gated_rms_norm_enqueue(ctx, p);
}

status embedding_cuda(const embedding_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_embedding(p));
  if (p.ids.device < 0) {
    // Ids on the host can be checked before the launch, as the CPU does.
    SSMKIT_RETURN_IF_ERROR(nn_check::check_embedding_ids(p));
    return make_status(status_code::value, "embedding: ids: expected a tensor on the weights' device");
  }
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return embedding_enqueue(ctx, p);
}

status transpose_split_cuda(const transpose_split_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_transpose_split(p));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return transpose_split_enqueue(ctx, p);
}

status dt_limit_cuda(const dt_limit_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_dt_limit(p));
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return dt_limit_enqueue(ctx, p);
}

status sample_cuda(const sample_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(nn_check::check_sample(p));
  if (p.logits.device < 0 || p.tokens.device < 0 || (p.temperature > 0.0f && p.draws.device < 0))
    return make_status(status_code::value, "sample: logits, draws and tokens must be on the device");
  launch_ctx ctx;
  ctx.stream = static_cast<cudaStream_t>(stream);
  return sample_enqueue(ctx, p.logits.ptr<const float>(),
                        p.temperature > 0.0f ? p.draws.ptr<const double>() : nullptr, p.tokens.ptr<int32_t>(),
                        p);
}

decode_fold_counts decode_folds_cuda() {
  decode_fold_counts c;
  c.norm = folds_norm.load(std::memory_order_relaxed);
  c.quant = folds_quant.load(std::memory_order_relaxed);
  c.conv = folds_conv.load(std::memory_order_relaxed);
  return c;
}

status mamba_decode_step_cuda(const mamba_decode_params& p, void* stream) {
  SSMKIT_RETURN_IF_ERROR(check_decode_cuda(p));
  const mamba_decode_model& m = *p.model;
  const int64_t B = p.batch;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  device_props props;
  SSMKIT_RETURN_IF_ERROR(current_props(&props));
  const bool pdl = props.major >= 9 && env_flag("SSMKIT_CUDA_PDL", true);
  const bool use_graph = env_flag("SSMKIT_CUDA_GRAPH", true);
  const bool fused = env_flag("SSMKIT_CUDA_DECODE_FUSED", true);
  decode_graph* g = nullptr;
  if (use_graph && B > 0) SSMKIT_RETURN_IF_ERROR(find_graph(p, s, pdl, fused, props.sms, &g));
  decode_buffers buf{};
  void* scratch = nullptr;
  if (g != nullptr && g->exec == nullptr) {
    // The entry's first call: the step uncaptured on the entry's buffers (and its unpacked weights).
    buf = g->buf;
    launch_ctx ctx;
    ctx.stream = s;
    ctx.pdl = pdl;
    SSMKIT_RETURN_IF_ERROR(
        decode_enqueue(ctx, p, buf, p.ids.ptr<const int32_t>(), p.logits.ptr<float>(), props.sms, fused));
    std::lock_guard<std::mutex> lock(decode_graphs().mu);
    g->warm = true;
  } else if (g != nullptr) {
    buf = g->buf;
    SSMKIT_CUDA_CHECK(
        cudaMemcpyAsync(buf.ids, p.ids.data, static_cast<size_t>(B) * 4, cudaMemcpyDeviceToDevice, s));
    SSMKIT_CUDA_CHECK(cudaGraphLaunch(g->exec, s));
    SSMKIT_CUDA_CHECK(cudaMemcpyAsync(p.logits.data, buf.logits, static_cast<size_t>(B * m.vocab) * 4,
                                      cudaMemcpyDeviceToDevice, s));
  } else {
    const decode_sizes z = size_decode(m, B, props.sms);
    const size_t bytes = carve_decode(m, B, z, nullptr, nullptr);
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&scratch, bytes, s));
    carve_decode(m, B, z, static_cast<char*>(scratch), &buf);
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(buf.counters, 0, buf.counter_count * sizeof(int), s));
    launch_ctx ctx;
    ctx.stream = s;
    ctx.pdl = pdl;
    const status st =
        decode_enqueue(ctx, p, buf, p.ids.ptr<const int32_t>(), p.logits.ptr<float>(), props.sms, fused);
    if (!st.ok()) {
      cudaFreeAsync(scratch, s);
      return st;
    }
  }
  status st = ok_status();
  if (p.sample.tokens.present() && B > 0) {
    sample_params sp = p.sample;
    sp.rows = B;
    sp.vocab = m.vocab;
    const double* draws = nullptr;
    if (sp.temperature > 0.0f) {
      if (sp.draws.device < 0) {
        // From pageable host memory the copy is staged before the call returns.
        const cudaError_t e =
            cudaMemcpyAsync(buf.draws, sp.draws.data, static_cast<size_t>(B) * 8, cudaMemcpyHostToDevice, s);
        if (e != cudaSuccess)
          st = make_status(status_code::cuda, "decodeStep: draws: %s", cudaGetErrorString(e));
        draws = buf.draws;
      } else {
        draws = sp.draws.ptr<const double>();
      }
    }
    launch_ctx ctx;
    ctx.stream = s;
    if (st.ok()) st = sample_enqueue(ctx, p.logits.ptr<const float>(), draws, sp.tokens.ptr<int32_t>(), sp);
  }
  if (scratch != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(scratch, s));
  return st;
}

}  // namespace ssmkit
