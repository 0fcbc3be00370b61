// The group path's feed alone (gemm.cu, gemm_group_kernel): 128 blocks, one a 64-column group of packed
// int4 weights at 8192 x 8192 (256 KB a block, 64 steps of 4 KB), warp w of W taking the steps w, w + W, ...
// through S slots of its own, each filled by one bulk copy and refilled as soon as the warp has read it
// (also with C consecutive steps a copy and a slot); then the same walk through plain 16-byte loads, D steps
// in flight in registers, as the baseline a feed can reach. Each step is consumed by a xor (and, with PROBE_WORK=N, N clock cycles of waiting a step, to stand in
// for the arithmetic), so that only W and S differ between the rows. Prints each (W, S)'s time a launch
// back to back (events; the weights rotate through 4 copies so that they come from DRAM) and its blocks'
// xor against the host's. PROBE_QUICK=1 runs two launches a row, for `ncu --metrics
// gpu__time_duration.sum`. The kernel measured 16.9-18.5 us at 2 to 8 rows with (16, 2) and slower with
// (16, 3) and (14, 4) (bench/RESULTS.md, twenty-first session); this probe times the feed of each choice
// without rebuilding the addon.
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/gfp bench/group-feed-probe.cu && /tmp/gfp
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe.cuh"

constexpr int kStepBytes = 4096;

__device__ __forceinline__ uint32_t fold(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Warp w of W takes chunks w, w + W, ... of C consecutive steps (one bulk copy of C x 4 KB each) through S
// slots of its own.
template <int W, int S, int C>
__global__ void __launch_bounds__(32 * W, 1) group_feed(const char* w, int steps, long long work, uint32_t* out) {
  constexpr int kChunk = C * kStepBytes;
  extern __shared__ __align__(128) char slots_all[];
  __shared__ uint64_t bars_all[W * S];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  char* slots = slots_all + warp * S * kChunk;
  uint64_t* bars = bars_all + warp * S;
  const char* grp = w + static_cast<int64_t>(blockIdx.x) * steps * kStepBytes;
  const int chunks = steps / C;
  auto request = [&](int r) {
    const int s = warp + W * r;
    if (s >= chunks) return;
    const int k = r % S;
    bar_expect(bars + k, kChunk);
    bulk_copy(slots + k * kChunk, grp + static_cast<int64_t>(s) * kChunk, kChunk, bars + k);
  };
  if (lane == 0) {
    for (int k = 0; k < S; ++k) bar_init(bars + k);
    bar_init_fence();
    for (int r = 0; r < S; ++r) request(r);
  }
  __syncwarp();
  uint32_t acc = 0;
  for (int r = 0, s = warp; s < chunks; ++r, s += W) {
    const int k = r % S;
    const uint32_t parity = static_cast<uint32_t>(r / S) & 1u;
    bar_wait(bars + k, parity);
    uint4 v[8 * C];
#pragma unroll
    for (int i = 0; i < 8 * C; ++i) v[i] = *reinterpret_cast<const uint4*>(slots + k * kChunk + (i * 32 + lane) * 16);
    __syncwarp();
    if (lane == 0) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      request(r + S);
    }
    if (work > 0) {
      const long long t0 = clock64();
      while (clock64() - t0 < work * C) {
      }
    }
#pragma unroll
    for (int i = 0; i < 8 * C; ++i) acc ^= fold(v[i]);
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) atomicXor(out + blockIdx.x, acc);
}

// The same walk through plain loads: warp w of W takes steps w, w + W, ..., each lane 8 x 16 bytes of a
// step, D steps in flight in registers (requested D steps ahead of their use).
template <int W, int D>
__global__ void __launch_bounds__(32 * W, 1) loads_feed(const char* w, int steps, long long work, uint32_t* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const char* grp = w + static_cast<int64_t>(blockIdx.x) * steps * kStepBytes;
  uint4 v[D][8];
  auto load = [&](uint4 (&dst)[8], int s) {
    if (s >= steps) return;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      dst[i] = __ldcs(reinterpret_cast<const uint4*>(grp + static_cast<int64_t>(s) * kStepBytes + (i * 32 + lane) * 16));
    }
  };
#pragma unroll
  for (int d = 0; d < D; ++d) load(v[d], warp + W * d);
  uint32_t acc = 0;
  for (int s = warp; s < steps; s += W * D) {
#pragma unroll
    for (int d = 0; d < D; ++d) {
      if (s + W * d >= steps) break;
      if (work > 0) {
        const long long t0 = clock64();
        while (clock64() - t0 < work) {
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) acc ^= fold(v[d][i]);
      load(v[d], s + W * (d + D));
    }
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) atomicXor(out + blockIdx.x, acc);
}

struct config {
  int warps, slots, chunk;  // chunk 0: plain loads, `slots` steps in flight a warp
  void (*kernel)(const char*, int, long long, uint32_t*);
};

int main() {
  const bool quick = std::getenv("PROBE_QUICK") != nullptr;
  const long long work = std::getenv("PROBE_WORK") != nullptr ? std::atoll(std::getenv("PROBE_WORK")) : 0;
  const int blocks = 128, steps = 64, copies = 4;
  const size_t bytes = static_cast<size_t>(blocks) * steps * kStepBytes;  // 33.5 MB
  std::vector<uint32_t> host(bytes / 4);
  uint32_t s = 12345;
  for (auto& v : host) v = s = s * 1664525u + 1013904223u;
  std::vector<uint32_t> want(blocks, 0);
  const size_t per_block = bytes / 4 / blocks;
  for (int b = 0; b < blocks; ++b) {
    for (size_t i = b * per_block; i < (b + 1) * per_block; ++i) want[b] ^= host[i];
  }
  char* w = nullptr;
  uint32_t* out = nullptr;
  CK(cudaMalloc(&w, bytes * copies));
  CK(cudaMalloc(&out, blocks * sizeof(uint32_t)));
  for (int c = 0; c < copies; ++c) CK(cudaMemcpy(w + c * bytes, host.data(), bytes, cudaMemcpyHostToDevice));
  const config configs[] = {
      {16, 1, 1, group_feed<16, 1, 1>}, {16, 2, 1, group_feed<16, 2, 1>}, {16, 3, 1, group_feed<16, 3, 1>},
      {8, 2, 1, group_feed<8, 2, 1>},   {8, 4, 1, group_feed<8, 4, 1>},   {8, 6, 1, group_feed<8, 6, 1>},
      {4, 8, 1, group_feed<4, 8, 1>},   {8, 2, 2, group_feed<8, 2, 2>},   {8, 3, 2, group_feed<8, 3, 2>},
      {4, 2, 4, group_feed<4, 2, 4>},   {4, 3, 4, group_feed<4, 3, 4>},   {2, 2, 8, group_feed<2, 2, 8>},
      {16, 1, 0, loads_feed<16, 1>},    {16, 2, 0, loads_feed<16, 2>},    {32, 1, 0, loads_feed<32, 1>},
      {32, 2, 0, loads_feed<32, 2>},    {8, 2, 0, loads_feed<8, 2>},      {8, 4, 0, loads_feed<8, 4>}};
  printf("group feed, 128 blocks x 256 KB (33.5 MB), %lld cycles of work a step\n", work);
  for (const config& c : configs) {
    const int smem = c.chunk == 0 ? 0 : c.warps * c.slots * c.chunk * kStepBytes;
    CK(cudaFuncSetAttribute(c.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    float us = 0;
    int bad = 0;
    auto launch = [&](int r) { c.kernel<<<blocks, 32 * c.warps, smem>>>(w + (r % copies) * bytes, steps, work, out); };
    if (check_and_time(launch, out, want, quick ? 2 : 40, &us, &bad) != 0) return 1;
    const int flight = (c.chunk == 0 ? c.slots : c.slots * c.chunk) * c.warps * kStepBytes / 1024;
    printf("%-5s %2d warps x %d %s of %d steps (%3d KB in flight): %7.2f us a launch (%.2f TB/s), %d blocks' xor wrong\n",
           c.chunk == 0 ? "loads" : "bulk", c.warps, c.slots, c.chunk == 0 ? "ahead" : "slots", c.chunk == 0 ? 1 : c.chunk,
           flight, us, bytes / (1e-6 * us) / 1e12, bad);
  }
  return 0;
}
