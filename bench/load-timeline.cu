// The pair path's loads alone (gemm.cu's gemm_pair_kernel without its arithmetic, x or reduction): 13.1 MB
// of weights in 1 KB steps, 640 blocks of kW warps, each warp a contiguous range of steps with kD of them
// in flight, weights rotated through 10 copies so that they come from DRAM. Thread 0 of every warp records
// %globaltimer at its start, when its first step's data is in hand, and at its end; prints the time a
// launch back to back, one launch's span, and quantiles of the warps' first-data times, durations and
// ends (us). bench/RESULTS.md, eighteenth session, says what it showed.
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -o /tmp/load-timeline bench/load-timeline.cu && /tmp/load-timeline
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); return 1;} } while (0)

__device__ __forceinline__ uint64_t gt() { uint64_t t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
__device__ __forceinline__ uint4 ldg_nc(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

template <int kW, int kD>
__global__ void __launch_bounds__(kW * 32) tl_kernel(const uint8_t* w, int KS, uint64_t* rec, unsigned* sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int s0 = warp * KS / kW, s1 = (warp + 1) * KS / kW, ns = s1 - s0;
  const uint8_t* wp = w + ((int64_t)blockIdx.x * KS + s0) * 1024 + 16 * lane;
  uint64_t t0 = gt(), t1 = 0;
  uint4 a[kD], b[kD];
#pragma unroll
  for (int d = 0; d < kD; ++d)
    if (d < ns) { a[d] = ldg_nc(wp + d * 1024); b[d] = ldg_nc(wp + d * 1024 + 512); }
  uint32_t acc = 0;
  for (int i0 = 0; i0 < ns; i0 += kD) {
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      const int i = i0 + d;
      if (i >= ns) break;
      const uint4 ca = a[d], cb = b[d];
      if (i + kD < ns) { a[d] = ldg_nc(wp + (i + kD) * 1024); b[d] = ldg_nc(wp + (i + kD) * 1024 + 512); }
      acc ^= ca.x ^ ca.y ^ ca.z ^ ca.w ^ cb.x ^ cb.y ^ cb.z ^ cb.w;
      if (i == 0) { acc = __shfl_xor_sync(0xffffffffu, acc, 1); t1 = gt(); }
    }
  }
  acc = __reduce_xor_sync(0xffffffffu, acc);
  const uint64_t t2 = gt();
  if (acc == 0x12345678u) *sink = acc;
  if (lane == 0) {
    uint64_t* r = rec + ((int64_t)blockIdx.x * kW + warp) * 3;
    r[0] = t0; r[1] = t1; r[2] = t2;
  }
}

template <int kW, int kD>
int run(const uint8_t* dw, int copies, int64_t bytes, int KS, int blocks) {
  uint64_t* rec; unsigned* sink;
  CK(cudaMalloc(&rec, (size_t)blocks * kW * 3 * 8));
  CK(cudaMalloc(&sink, 4));
  for (int i = 0; i < 30; ++i) tl_kernel<kW, kD><<<blocks, kW * 32>>>(dw + (i % copies) * bytes, KS, rec, sink);
  CK(cudaDeviceSynchronize());
  std::vector<uint64_t> h((size_t)blocks * kW * 3);
  CK(cudaMemcpy(h.data(), rec, h.size() * 8, cudaMemcpyDeviceToHost));
  uint64_t start = ~0ull, end = 0;
  std::vector<double> first, dur, endrel;
  for (size_t i = 0; i < h.size(); i += 3) { start = std::min(start, h[i]); end = std::max(end, h[i + 2]); }
  for (size_t i = 0; i < h.size(); i += 3) {
    first.push_back((h[i + 1] - h[i]) * 1e-3);
    dur.push_back((h[i + 2] - h[i]) * 1e-3);
    endrel.push_back((h[i + 2] - start) * 1e-3);
  }
  auto q = [](std::vector<double> v, double f) { std::sort(v.begin(), v.end()); return v[(size_t)(f * (v.size() - 1))]; };
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0));
  for (int i = 0; i < 300; ++i) tl_kernel<kW, kD><<<blocks, kW * 32>>>(dw + (i % copies) * bytes, KS, rec, sink);
  CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
  float ms; CK(cudaEventElapsedTime(&ms, e0, e1));
  printf("W%d D%d: %.2f us/call back to back; one launch: span %.2f us; warp first-data p10/p50/p90 %.2f/%.2f/%.2f us; warp duration p50/p90 %.2f/%.2f; warp end p10/p50/p90 %.2f/%.2f/%.2f\n",
         kW, kD, ms * 1e3 / 300, (end - start) * 1e-3, q(first, .1), q(first, .5), q(first, .9), q(dur, .5), q(dur, .9),
         q(endrel, .1), q(endrel, .5), q(endrel, .9));
  cudaFree(rec); cudaFree(sink);
  return 0;
}

int main() {
  const int KS = 20, blocks = 640;
  const int64_t bytes = (int64_t)blocks * KS * 1024;  // 13.1 MB
  const int copies = 10;
  uint8_t* dw;
  CK(cudaMalloc(&dw, bytes * copies));
  CK(cudaMemset(dw, 1, bytes * copies));
  run<4, 1>(dw, copies, bytes, KS, blocks);
  run<4, 2>(dw, copies, bytes, KS, blocks);
  run<4, 5>(dw, copies, bytes, KS, blocks);
  run<2, 1>(dw, copies, bytes, KS, blocks);
  run<2, 10>(dw, copies, bytes, KS, blocks);
  run<10, 1>(dw, copies, bytes, KS, blocks);
  run<10, 2>(dw, copies, bytes, KS, blocks);
  run<20, 1>(dw, copies, bytes, KS, blocks);
  return 0;
}
