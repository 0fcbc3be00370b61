// The cost of a kernel boundary in a chain of small dependent kernels, the decode step's shape: 256
// kernels captured in a CUDA graph, each reading one float a thread that the kernel before it wrote, in
// three forms: plain stream order; programmatic dependent launch with griddepcontrol.wait first; and PDL
// with a counter the producer's blocks bump (the consumer spins on it, then waits for the producer's
// completion only at its end, so that completion stays transitive). Prints microseconds a kernel.
//   nvcc -O2 -gencode arch=compute_90a,code=sm_90a -o /tmp/pdl-chain bench/pdl-chain.cu && /tmp/pdl-chain
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

__device__ __forceinline__ void trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void gwait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// mode 0: plain; 1: PDL wait first; 2: flag spin first, wait at the end.
__global__ void step(const float* in, float* out, int n, int* cnt_prev, int* cnt_self, int* done_self, int prev_blocks,
                     int mode) {
  if (mode != 0) trigger();
  if (mode == 1) gwait();
  if (mode == 2 && cnt_prev != nullptr) {
    if (threadIdx.x == 0) {
      while (ld_acquire(cnt_prev) < prev_blocks) __nanosleep(20);
    }
    __syncthreads();
  }
  // A small dependent read and write: one float a thread.
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = 0.f;
  if (i < n) v = __ldcg(in + i);
  __shared__ float red[32];
  v = v * 0.5f + 1.0f;
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  if (i < n) out[i] = v + red[0];
  if (mode == 2) {
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(cnt_self, 1);  // publishes this block's output (after the fence)
      // The last block of this kernel resets the producer's counter (every block has passed its spin).
      if (cnt_prev != nullptr && atomicAdd(done_self, 1) == gridDim.x - 1) {
        *cnt_prev = 0;
        *done_self = 0;
      }
    }
    gwait();  // the producer complete before this grid completes: completion stays transitive
  }
}

int main() {
  const int L = 256;
  int dev = 0;
  CK(cudaSetDevice(dev));
  float *bufs[2];
  const int maxn = 1024 * 256;
  CK(cudaMalloc(&bufs[0], maxn * 4));
  CK(cudaMalloc(&bufs[1], maxn * 4));
  CK(cudaMemset(bufs[0], 0, maxn * 4));
  CK(cudaMemset(bufs[1], 0, maxn * 4));
  int *cnt, *done;
  CK(cudaMalloc(&cnt, (L + 1) * 4));
  CK(cudaMalloc(&done, (L + 1) * 4));
  CK(cudaMemset(cnt, 0, (L + 1) * 4));
  CK(cudaMemset(done, 0, (L + 1) * 4));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int grids[] = {1, 60, 160, 400, 528};
  const int threads[] = {128, 256};
  for (int T : threads) {
    for (int G : grids) {
      for (int mode = 0; mode < 3; ++mode) {
        cudaGraph_t g;
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        for (int l = 0; l < L; ++l) {
          cudaLaunchConfig_t cfg = {};
          cfg.gridDim = dim3(G);
          cfg.blockDim = dim3(T);
          cfg.stream = s;
          cudaLaunchAttribute at[1];
          at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
          at[0].val.programmaticStreamSerializationAllowed = 1;
          cfg.attrs = at;
          cfg.numAttrs = mode != 0 && l > 0 ? 1 : 0;
          int* prev = l > 0 && mode == 2 ? cnt + (l - 1) : nullptr;
          CK(cudaLaunchKernelEx(&cfg, step, (const float*)bufs[l % 2], bufs[(l + 1) % 2], G * T, prev, cnt + l,
                                done + l, G, mode));
        }
        CK(cudaStreamEndCapture(s, &g));
        cudaGraphExec_t ge;
        CK(cudaGraphInstantiate(&ge, g, 0));
        // The last kernel's counter has no consumer to reset it: a memset after each replay does.
        for (int w = 0; w < 3; ++w) {
          CK(cudaGraphLaunch(ge, s));
          CK(cudaMemsetAsync(cnt + L - 1, 0, 4, s));
        }
        CK(cudaStreamSynchronize(s));
        cudaEvent_t a, b;
        CK(cudaEventCreate(&a));
        CK(cudaEventCreate(&b));
        const int R = 20;
        float best = 1e30f;
        for (int r = 0; r < R; ++r) {
          CK(cudaEventRecord(a, s));
          CK(cudaGraphLaunch(ge, s));
          CK(cudaEventRecord(b, s));
          CK(cudaMemsetAsync(cnt + L - 1, 0, 4, s));
          CK(cudaStreamSynchronize(s));
          float ms;
          CK(cudaEventElapsedTime(&ms, a, b));
          if (ms < best) best = ms;
        }
        // Check: counters all zero but the last (reset above).
        std::vector<int> h(L);
        CK(cudaMemcpy(h.data(), cnt, L * 4, cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int l = 0; l < L - 1; ++l) bad += h[l] != 0;
        printf("threads %d grid %4d mode %d (%s): %.3f us a kernel (best of %d, %d kernels)%s\n", T, G, mode,
               mode == 0 ? "plain" : mode == 1 ? "pdl wait" : "pdl flag", best * 1000.f / L, R, L,
               bad ? " COUNTERS NOT RESET" : "");
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
      }
    }
  }
  return 0;
}
