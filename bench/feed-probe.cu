// How a one-row gemv's weights reach the SMs: the bf16 gemv's shape (52.4 MB, in_proj of Mamba-2.8B, 528
// blocks of 256 threads, 4 a SM, each a contiguous range of 128-byte rows) read four ways, each consumed
// by a xor so that only the feeding differs:
//   0 ldg:    each thread's 16-byte loads (__ldcs), a warp's load 4 whole rows, 4 a thread in flight and
//             4 more issued before those are used (nn.cu's gemv);
//   1 cp16:   cp.async.cg of 16 bytes a thread into its own ring of 3 groups of 4 (no barrier);
//   2 cp16h:  the same with the L2::128B prefetch qualifier;
//   3 bulk:   one cp.async.bulk of 16 KiB a step into 3 stages a block, an mbarrier a stage, a block
//             barrier before thread 0 refills a stage.
// Prints each variant's time a launch back to back (events; the weights rotate through 4 copies so that
// they come from DRAM) and its xor against the host's. PROBE_QUICK=1 runs two launches a variant, for
// `ncu --metrics gpu__time_duration.sum,lts__t_sector_hit_rate.pct,lts__t_requests_srcunit_tex.sum,
// dram__throughput.avg.pct_of_peak_sustained_elapsed`. bench/RESULTS.md, twentieth session, says what it
// showed.
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/feed-probe bench/feed-probe.cu && /tmp/feed-probe
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe.cuh"

constexpr int kThreads = 256;
constexpr int kGroupRows = 128;  // rows of 128 bytes a step: 16 KiB a block
constexpr int kStages = 3;
constexpr int64_t kRowBytes = 128;

__device__ __forceinline__ uint32_t fold(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

template <int kMode>
__global__ void __launch_bounds__(kThreads, 4) feed_kernel(const char* w, int64_t rows, uint32_t* out) {
  extern __shared__ __align__(128) char ring[];
  __shared__ uint64_t bars[kStages];
  const int64_t r0 = blockIdx.x * rows / gridDim.x, r1 = (blockIdx.x + 1) * rows / gridDim.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = lane % 8, sub = warp * 4 + lane / 8;  // piece of a row, row of a 32-row step
  uint32_t acc = 0;
  if constexpr (kMode == 0) {
    uint4 wv[4], wn[4];
    for (int u = 0; u < 4; ++u) {
      const int64_t r = r0 + u * 32 + sub;
      wv[u] = r < r1 ? __ldcs(reinterpret_cast<const uint4*>(w + r * kRowBytes + j * 16)) : make_uint4(0, 0, 0, 0);
    }
    for (int64_t base = r0; base < r1; base += kGroupRows) {
      for (int u = 0; u < 4; ++u) {
        const int64_t r = base + kGroupRows + u * 32 + sub;
        wn[u] = r < r1 ? __ldcs(reinterpret_cast<const uint4*>(w + r * kRowBytes + j * 16)) : make_uint4(0, 0, 0, 0);
      }
      for (int u = 0; u < 4; ++u) acc ^= fold(wv[u]);
      for (int u = 0; u < 4; ++u) wv[u] = wn[u];
    }
  } else if constexpr (kMode == 1 || kMode == 2) {
    int64_t next = r0;
    int issued = 0;
    auto issue = [&]() {
      char* dst = ring + (issued % kStages) * (kGroupRows * kRowBytes) + threadIdx.x * 16;
      for (int u = 0; u < 4; ++u) {
        const int64_t r = next + u * 32 + sub;
        const bool ok = r < r1;
        const char* src = ok ? w + r * kRowBytes + j * 16 : w;
        if constexpr (kMode == 1) {
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(saddr(dst + u * kThreads * 16)), "l"(src),
                       "r"(ok ? 16 : 0)
                       : "memory");
        } else {
          asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" ::"r"(saddr(dst + u * kThreads * 16)),
                       "l"(src), "r"(ok ? 16 : 0)
                       : "memory");
        }
      }
      asm volatile("cp.async.commit_group;" ::: "memory");
      next += kGroupRows;
      ++issued;
    };
    for (int s = 0; s < kStages - 1; ++s) issue();
    for (int64_t base = r0, used = 0; base < r1; base += kGroupRows, ++used) {
      issue();
      asm volatile("cp.async.wait_group %0;" ::"n"(kStages - 1) : "memory");
      const char* src = ring + (used % kStages) * (kGroupRows * kRowBytes) + threadIdx.x * 16;
      for (int u = 0; u < 4; ++u) acc ^= fold(*reinterpret_cast<const uint4*>(src + u * kThreads * 16));
    }
  } else {
    int64_t next = r0;
    int issued = 0;
    auto issue = [&]() {  // thread 0
      if (next >= r1) return;
      const int64_t n = r1 - next < kGroupRows ? r1 - next : kGroupRows;
      const int s = issued % kStages;
      const uint32_t bytes = static_cast<uint32_t>(n * kRowBytes);
      bar_expect(bars + s, bytes);
      bulk_copy(ring + s * kGroupRows * kRowBytes, w + next * kRowBytes, bytes, bars + s);
      next += n;
      ++issued;
    };
    if (threadIdx.x == 0) {
      for (int s = 0; s < kStages; ++s)
        bar_init(bars + s);
      bar_init_fence();
      for (int s = 0; s < kStages; ++s) issue();
    }
    __syncthreads();
    for (int64_t base = r0, used = 0; base < r1; base += kGroupRows, ++used) {
      const int s = static_cast<int>(used % kStages);
      const uint32_t parity = static_cast<uint32_t>(used / kStages) & 1u;
      bar_wait(bars + s, parity);
      const char* src = ring + s * kGroupRows * kRowBytes + sub * kRowBytes + j * 16;
      uint4 v[4];
      for (int u = 0; u < 4; ++u) {
        v[u] = base + u * 32 + sub < r1 ? *reinterpret_cast<const uint4*>(src + u * 32 * kRowBytes)
                                        : make_uint4(0, 0, 0, 0);
      }
      __syncthreads();
      if (threadIdx.x == 0) issue();
      for (int u = 0; u < 4; ++u) acc ^= fold(v[u]);
    }
  }
  // A block's xor: every byte of its range once, whichever thread read it.
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) atomicXor(out + blockIdx.x, acc);
}

int main() {
  const bool quick = std::getenv("PROBE_QUICK") != nullptr;
  const int64_t rows = 409600;  // 52.4 MB of 128-byte rows
  const int blocks = 528, copies = 4;
  const size_t bytes = rows * kRowBytes;
  std::vector<uint32_t> host(bytes / 4);
  uint32_t s = 12345;
  for (auto& v : host) v = s = s * 1664525u + 1013904223u;
  std::vector<uint32_t> want(blocks, 0);
  for (int b = 0; b < blocks; ++b) {
    const int64_t a0 = b * rows / blocks, a1 = (b + 1) * rows / blocks;
    for (int64_t i = a0 * 32; i < a1 * 32; ++i) want[b] ^= host[i];
  }
  char* w = nullptr;
  uint32_t* out = nullptr;
  CK(cudaMalloc(&w, bytes * copies));
  CK(cudaMalloc(&out, blocks * sizeof(uint32_t)));
  for (int c = 0; c < copies; ++c) CK(cudaMemcpy(w + c * bytes, host.data(), bytes, cudaMemcpyHostToDevice));
  const size_t smem = kStages * kGroupRows * kRowBytes;
  const char* names[4] = {"ldg", "cp16", "cp16h", "bulk"};
  void (*kernels[4])(const char*, int64_t, uint32_t*) = {feed_kernel<0>, feed_kernel<1>, feed_kernel<2>,
                                                         feed_kernel<3>};
  for (int v = 0; v < 4; ++v) {
    const size_t sm = v == 0 ? 0 : smem;
    CK(cudaFuncSetAttribute(kernels[v], cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(sm)));
    float us = 0;
    int bad = 0;
    auto launch = [&](int r) { kernels[v]<<<blocks, kThreads, sm>>>(w + (r % copies) * bytes, rows, out); };
    if (check_and_time(launch, out, want, quick ? 2 : 40, &us, &bad) != 0) return 1;
    printf("%-6s %7.2f us a launch (%.2f TB/s), %d blocks' xor wrong\n", names[v], us, bytes / (1e-6 * us) / 1e12, bad);
  }
  return 0;
}
