// How much of a decode GEMM's weights each SM should have in flight: a block an SM reads its share of
// the weights (a contiguous run of bytes, as the stream path's plain rows) through the bulk copy engine
// into a ring of `slots` stages of `chunk` bytes, refilling a stage as soon as the block's consumer warps
// have xor-ed it; one producer warp issues the copies in order. slots * chunk >= the share requests all of
// it at the start (the stream path's feeding). Weights rotate through four copies so that they come from
// DRAM. Prints, a variant, the time a launch back to back (events) and the blocks' xor against the host's;
// PROBE_QUICK=1 runs two launches a variant, for
// `ncu --clock-control none --metrics gpu__time_duration.sum --csv /tmp/burst-probe`.
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/burst-probe bench/burst-probe.cu && /tmp/burst-probe
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe.cuh"

constexpr int kConsumers = 8;  // consumer warps; warp kConsumers is the producer
constexpr int kMaxSlots = 64;

__global__ void __launch_bounds__(32 * (kConsumers + 1), 1)
    burst_kernel(const char* w, int64_t bytes, int chunk, int slots, uint32_t* out) {
  extern __shared__ __align__(128) char ring[];
  __shared__ uint64_t full[kMaxSlots], empty[kMaxSlots];
  const int64_t b0 = (blockIdx.x * (bytes / 16) / gridDim.x) * 16;
  const int64_t b1 = ((blockIdx.x + 1) * (bytes / 16) / gridDim.x) * 16;
  const int chunks = static_cast<int>((b1 - b0 + chunk - 1) / chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x < slots) {
    bar_init(full + threadIdx.x, 1);
    bar_init(empty + threadIdx.x, kConsumers);
  }
  bar_init_fence();
  __syncthreads();
  uint32_t acc = 0;
  if (warp == kConsumers) {
    if (lane == 0) {
      for (int j = 0; j < chunks; ++j) {
        const int s = j % slots;
        if (j >= slots) bar_wait(empty + s, static_cast<uint32_t>(j / slots - 1) & 1u);
        const int64_t at = b0 + static_cast<int64_t>(j) * chunk;
        const uint32_t n = static_cast<uint32_t>(b1 - at < chunk ? b1 - at : chunk);
        bar_expect(full + s, n);
        bulk_copy(ring + static_cast<size_t>(s) * chunk, w + at, n, full + s);
      }
    }
  } else {
    for (int j = 0; j < chunks; ++j) {
      const int s = j % slots;
      bar_wait(full + s, static_cast<uint32_t>(j / slots) & 1u);
      const int64_t at = b0 + static_cast<int64_t>(j) * chunk;
      const int n = static_cast<int>(b1 - at < chunk ? b1 - at : chunk);
      const uint4* src = reinterpret_cast<const uint4*>(ring + static_cast<size_t>(s) * chunk);
      for (int v = warp * 32 + lane; v < n / 16; v += 32 * kConsumers) {
        const uint4 a = src[v];
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
      }
      __syncwarp();
      if (lane == 0) bar_arrive(empty + s);
    }
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0 && acc != 0) atomicXor(out + blockIdx.x, acc);
}

int main() {
  const bool quick = std::getenv("PROBE_QUICK") != nullptr;
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int copies = 4;
  const int64_t sizes[2] = {2560LL * 10240, 2560LL * 10240 / 2};  // int8 and int4 weights of 2560 x 10240
  struct variant {
    int chunk, slots;
  };
  const variant vs[] = {{16384, 64}, {4096, 2}, {4096, 4}, {4096, 8}, {8192, 2}, {8192, 4}, {8192, 8},
                        {16384, 2},  {16384, 4}, {16384, 8}, {32768, 2}, {32768, 4}, {16384, 64}};
  const int64_t maxb = sizes[0];
  std::vector<uint32_t> host(maxb / 4);
  uint32_t s = 12345;
  for (auto& v : host) v = s = s * 1664525u + 1013904223u;
  char* w = nullptr;
  uint32_t* out = nullptr;
  CK(cudaMalloc(&w, maxb * copies));
  CK(cudaMalloc(&out, sms * sizeof(uint32_t)));
  for (int c = 0; c < copies; ++c) CK(cudaMemcpy(w + c * maxb, host.data(), maxb, cudaMemcpyHostToDevice));
  CK(cudaFuncSetAttribute(burst_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
  for (const int64_t bytes : sizes) {
    std::vector<uint32_t> want(sms, 0);
    for (int b = 0; b < sms; ++b) {
      const int64_t a0 = (b * (bytes / 16) / sms) * 16, a1 = ((b + 1) * (bytes / 16) / sms) * 16;
      for (int64_t i = a0 / 4; i < a1 / 4; ++i) want[b] ^= host[i];
    }
    const int64_t share = (bytes / 16 / sms + 1) * 16;
    for (const variant& v : vs) {
      int slots = v.slots;
      if (static_cast<int64_t>(slots) * v.chunk >= share) slots = static_cast<int>((share + v.chunk - 1) / v.chunk);
      const size_t smem = static_cast<size_t>(slots) * v.chunk;
      if (smem > 220 * 1024 || slots > kMaxSlots) continue;
      float us = 0;
      int bad = 0;
      auto launch = [&](int r) {
        burst_kernel<<<sms, 32 * (kConsumers + 1), smem>>>(w + (r % copies) * maxb, bytes, v.chunk, slots, out);
      };
      if (check_and_time(launch, out, want, quick ? 2 : 40, &us, &bad) != 0) return 1;
      printf("%5.1f MB chunk %5d slots %2d (%6.1f KB a SM in flight%s): %6.2f us a launch (%.2f TB/s), %d wrong\n",
             bytes / 1e6, v.chunk, slots, smem / 1024.0, static_cast<int64_t>(smem) >= share ? ", all" : "", us,
             bytes / (1e-6 * us) / 1e12, bad);
    }
  }
  return 0;
}
