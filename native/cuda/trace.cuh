// A per-block timeline of the decode step's kernels, compiled only into timing builds (-DSSMKIT_TRACE, e.g.
// `npx cmake-js compile --out build-trace --CDCMAKE_CUDA_FLAGS=-DSSMKIT_TRACE`; in other builds
// SSMKIT_TRACE_SCOPE() is empty and the kernels are unchanged). Thread 0 of each block of a kernel that
// opens a scope records its start, the return of its pdl_wait() and its end (%globaltimer, ns) with the
// launch (%gridid; a graph node keeps its own at every replay), the scope's source line and the SM, into a
// ring of kTraceCap records a translation unit; every synchronize() writes the rings to
// $SSMKIT_TRACE.<unit>.bin (when that variable is set): the record count (8 bytes), then records of four
// 64-bit words, gridid << 32 | line << 16 | smid, start, wait (0: no wait), end. bench/trace.py turns them
// into the step's timeline. Each record costs its block one atomic and a 32-byte store at its end.
#pragma once

#ifdef SSMKIT_TRACE
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ssmkit {
namespace trace {

constexpr unsigned long long kTraceCap = 1ull << 20;
static __device__ unsigned long long g_n;
struct alignas(32) record {
  unsigned long long w0, start, wait, end;
};
static __device__ record g_rec[kTraceCap];

__device__ __forceinline__ unsigned long long now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ bool leader() {
  return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}
static __device__ __noinline__ unsigned long long& wait_slot() {
  __shared__ unsigned long long s;
  return s;
}
__device__ __forceinline__ void waited() {
  if (leader()) wait_slot() = now();
}

struct scope {
  unsigned long long w0, start;
  __device__ explicit scope(unsigned line) {
    if (leader()) {
      unsigned sm;
      unsigned long long grid;
      asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
      asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
      w0 = (grid << 32) | (1ull * (line & 0xffff) << 16) | (sm & 0xff);
      start = now();
      wait_slot() = 0;
    }
  }
  __device__ ~scope() {
    if (leader()) {
      const unsigned long long i = atomicAdd(&g_n, 1ull) % kTraceCap;
      g_rec[i] = record{w0, start, wait_slot(), now()};
    }
  }
};

// This unit's ring to $SSMKIT_TRACE.<unit>.bin: the count, then the records.
static void dump() {
  const char* base = std::getenv("SSMKIT_TRACE");
  if (base == nullptr || *base == '\0') return;
  unsigned long long n = 0;
  if (cudaMemcpyFromSymbol(&n, g_n, sizeof n) != cudaSuccess || n == 0) return;
  const unsigned long long k = n < kTraceCap ? n : kTraceCap;
  record* h = static_cast<record*>(std::malloc(k * sizeof(record)));
  if (h == nullptr) return;
  if (cudaMemcpyFromSymbol(h, g_rec, k * sizeof(record)) == cudaSuccess) {
    const char* unit = std::strrchr(__BASE_FILE__, '/');
    char path[1024];
    std::snprintf(path, sizeof path, "%s.%s.bin", base, unit != nullptr ? unit + 1 : __BASE_FILE__);
    if (FILE* f = std::fopen(path, "wb")) {
      std::fwrite(&n, sizeof n, 1, f);
      std::fwrite(h, sizeof(record), k, f);
      std::fclose(f);
    }
  }
  std::free(h);
}

void register_dump(void (*fn)());
static const bool g_registered = (register_dump(&dump), true);

}  // namespace trace
}  // namespace ssmkit

#define SSMKIT_TRACE_SCOPE() ::ssmkit::trace::scope ssmkit_trace_scope_(__LINE__)
#else
#define SSMKIT_TRACE_SCOPE() \
  do {                       \
  } while (0)
#endif
