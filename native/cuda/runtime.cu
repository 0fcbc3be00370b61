// The CUDA device runtime behind ssmkit/device.h: one non-blocking stream per device, created on first
// use; stream-ordered allocation (cudaMallocAsync) so that freeing a tensor never waits for the device;
// copies ordered on that stream. Every CUDA call goes through SSMKIT_CUDA_CHECK, which records the
// file and line of a failure in the status and takes the error out of the thread's last-error slot.
// clear_pending_error runs before every op; the debug_fault kernels serve the fault tests only.
// get_stream also makes the device current, so that the calls after it need no cudaSetDevice of their
// own (an op allocates its outputs and frees them: each call's host time counts for small ops).
#include <cuda_runtime.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cuda_check.cuh"
#include "ssmkit/device.h"
#include "ssmkit/dtype.h"

#ifdef SSMKIT_TRACE
#include <vector>
namespace ssmkit::trace {
static std::vector<void (*)()>& dumps() {
  static std::vector<void (*)()> v;
  return v;
}
void register_dump(void (*fn)()) {
  dumps().push_back(fn);
}
void dump_all() {
  for (auto fn : dumps()) fn();
}
}  // namespace ssmkit::trace
#endif

namespace ssmkit::device {
namespace {

constexpr int kMaxDevices = 64;
std::mutex g_mu;
cudaStream_t g_streams[kMaxDevices] = {};

status get_stream(int dev, cudaStream_t* out) {
  if (dev < 0 || dev >= kMaxDevices) return make_status(status_code::value, "cuda: no device %d", dev);
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_streams[dev] == nullptr) {
    SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
    SSMKIT_CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[dev], cudaStreamNonBlocking));
    // Keep freed memory in the stream-ordered pool across synchronizations: otherwise every
    // synchronize hands it back and the next allocations map it again. trim() releases it on demand.
    cudaMemPool_t pool = nullptr;
    SSMKIT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t keep = UINT64_MAX;
    SSMKIT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
  *out = g_streams[dev];
  // Kernels launch on the calling thread's current device: make it the stream's.
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  return ok_status();
}

// Element-wise dtype conversion; 16-bit formats travel as their bit patterns.
__global__ void cast_any_kernel(const void* __restrict__ src, int src_dt, void* __restrict__ dst, int dst_dt,
                                int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double v;
    switch (src_dt) {
      case SSMKIT_DTYPE_F32: v = static_cast<const float*>(src)[i]; break;
      case SSMKIT_DTYPE_F16: v = f16_to_f32(static_cast<const uint16_t*>(src)[i]); break;
      case SSMKIT_DTYPE_BF16: v = bf16_to_f32(static_cast<const uint16_t*>(src)[i]); break;
      default: v = static_cast<const double*>(src)[i]; break;
    }
    switch (dst_dt) {
      case SSMKIT_DTYPE_F32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
      case SSMKIT_DTYPE_F16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(static_cast<float>(v)); break;
      case SSMKIT_DTYPE_BF16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(static_cast<float>(v)); break;
      default: static_cast<double*>(dst)[i] = v; break;
    }
  }
}

// The fault tests' kernels. `target` is an address no allocation covers, passed in so that the compiler
// cannot see the store is invalid.
__global__ void fill32_kernel(uint32_t* __restrict__ dst, uint32_t bits, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = bits;
}

__global__ void debug_noop_kernel() {}
__global__ void debug_trap_kernel() {
  __trap();
}
__global__ void debug_store_kernel(float* target) {
  *target = 1.0f;
}

}  // namespace

bool compiled() {
  return true;
}

status count(int* n) {
  *n = 0;
  const cudaError_t e = cudaGetDeviceCount(n);
  if (e != cudaSuccess) {
    *n = 0;
    return make_status(status_code::cuda, "cuda: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
  }
  return ok_status();
}

status info(int dev, device_info* out) {
  cudaDeviceProp p{};
  SSMKIT_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  std::snprintf(out->name, sizeof(out->name), "%s", p.name);
  out->major = p.major;
  out->minor = p.minor;
  out->multiprocessors = p.multiProcessorCount;
  out->total_memory = p.totalGlobalMem;
  return ok_status();
}

status stream(int dev, void** out) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  *out = s;
  return ok_status();
}

status alloc(int dev, size_t bytes, void** out) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  const cudaError_t e = cudaMallocAsync(out, bytes, s);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free allocation error so later calls work
    return make_status(status_code::cuda_oom, "cuda: out of device memory allocating %zu bytes on cuda:%d",
                       bytes, dev);
  }
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cuda_detail::failed(e, "cudaMallocAsync", __FILE__, __LINE__);
  }
  return ok_status();
}

status release(int dev, void* ptr) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaFreeAsync(ptr, s));
  return ok_status();
}

status copy_to_device(int dev, void* dst, const void* src, size_t bytes) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  return ok_status();
}

status copy_to_host(int dev, void* dst, const void* src, size_t bytes) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  return ok_status();
}

// Staged copies: pinned buffers of at most kHostCopyStagedMax bytes and their events, kept for reuse up to
// kStagedKept of each (at most 8 MiB of pinned memory held between copies); the rest are freed at finish.
struct host_copy {
  size_t bytes = 0;
  void* pinned = nullptr;
  size_t capacity = 0;
  cudaEvent_t done = nullptr;
};

namespace {
constexpr size_t kStagedKept = 8;
std::mutex g_staged_mu;
std::vector<std::pair<void*, size_t>> g_pinned;  // (buffer, capacity)
std::vector<cudaEvent_t> g_events;

void staged_release(host_copy* c) {
  {
    std::lock_guard<std::mutex> lock(g_staged_mu);
    if (c->pinned != nullptr && g_pinned.size() < kStagedKept) {
      g_pinned.emplace_back(c->pinned, c->capacity);
      c->pinned = nullptr;
    }
    if (c->done != nullptr && g_events.size() < kStagedKept) {
      g_events.push_back(c->done);
      c->done = nullptr;
    }
  }
  if (c->pinned != nullptr) cudaFreeHost(c->pinned);
  if (c->done != nullptr) cudaEventDestroy(c->done);
  delete c;
}
}  // namespace

status copy_to_host_begin(int dev, const void* src, size_t bytes, host_copy** out) {
  *out = nullptr;
  if (bytes > kHostCopyStagedMax) return ok_status();
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  // Released (back to the pools) on every early return below.
  std::unique_ptr<host_copy, void (*)(host_copy*)> c(new host_copy, staged_release);
  c->bytes = bytes;
  {
    std::lock_guard<std::mutex> lock(g_staged_mu);
    for (size_t i = 0; i < g_pinned.size(); ++i) {
      if (g_pinned[i].second >= bytes) {
        c->pinned = g_pinned[i].first, c->capacity = g_pinned[i].second;
        g_pinned.erase(g_pinned.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
    if (!g_events.empty()) {
      c->done = g_events.back();
      g_events.pop_back();
    }
  }
  // Into locals first: a failed call leaves nothing for the release to pool.
  if (c->pinned == nullptr) {
    const size_t capacity = bytes < 4096 ? 4096 : bytes;
    void* pinned = nullptr;
    SSMKIT_CUDA_CHECK(cudaMallocHost(&pinned, capacity));
    c->pinned = pinned, c->capacity = capacity;
  }
  if (c->done == nullptr) {
    cudaEvent_t done = nullptr;
    SSMKIT_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    c->done = done;
  }
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(c->pinned, src, bytes, cudaMemcpyDeviceToHost, s));
  const cudaError_t rec = cudaEventRecord(c->done, s);
  if (rec != cudaSuccess) {
    cudaGetLastError();
    // The copy is enqueued: the release may pool or free its buffer only once the copy is done. Where the
    // stream cannot say so (a broken context), the buffer is left alone.
    if (cudaStreamSynchronize(s) != cudaSuccess) {
      cudaGetLastError();
      c->pinned = nullptr;
    }
    return cuda_detail::failed(rec, "cudaEventRecord", __FILE__, __LINE__);
  }
  *out = c.release();
  return ok_status();
}

status copy_to_host_finish(host_copy* c, void* dst) {
  const cudaError_t e = cudaEventSynchronize(c->done);
  status st = ok_status();
  if (e != cudaSuccess) {
    cudaGetLastError();
    st = cuda_detail::failed(e, "cudaEventSynchronize", __FILE__, __LINE__);
  } else if (c->bytes > 0) {
    std::memcpy(dst, c->pinned, c->bytes);
  }
  staged_release(c);
  return st;
}

status copy_on_device(int dev, void* dst, const void* src, size_t bytes) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
  return ok_status();
}

status fill32(int dev, void* dst, uint32_t bits, int64_t count) {
  if (count <= 0) return ok_status();
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  const int threads = 256;
  const int64_t blocks = (count + threads - 1) / threads;
  fill32_kernel<<<static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16), threads, 0, s>>>(
      static_cast<uint32_t*>(dst), bits, count);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status synchronize(int dev) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
#ifdef SSMKIT_TRACE
  trace::dump_all();
#endif
  return ok_status();
}

status trim(int dev) {
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  SSMKIT_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaMemPool_t pool = nullptr;
  SSMKIT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  SSMKIT_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
  return ok_status();
}

status memory_info(int dev, size_t* free_bytes, size_t* total_bytes) {
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  SSMKIT_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
  return ok_status();
}

status cast(int dev, const void* src, int src_dtype, void* dst, int dst_dtype, int64_t n) {
  if (n == 0) return ok_status();
  cudaStream_t s = nullptr;
  SSMKIT_RETURN_IF_ERROR(get_stream(dev, &s));
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  cast_any_kernel<<<static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16), threads, 0, s>>>(
      src, src_dtype, dst, dst_dtype, n);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status clear_pending_error(int dev) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess || !cuda_detail::context_lost(e)) return ok_status();
  return make_status(
      status_code::cuda,
      "cuda:%d cannot run work after an earlier fault: %s (%s); the CUDA context is lost until "
      "the process exits",
      dev, cudaGetErrorString(e), cudaGetErrorName(e));
}

status debug_fault_cuda(const debug_fault_params& p, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (p.kind) {
    case debug_fault_kind::launch:
      // cudaLaunchKernel returns the error and also leaves it in the error slot, as a failed
      // cudaGraphLaunch does.
      SSMKIT_CUDA_CHECK(cudaLaunchKernel(reinterpret_cast<const void*>(&debug_noop_kernel), dim3(1),
                                         dim3(2048), nullptr, 0, s));
      return ok_status();
    case debug_fault_kind::unchecked_launch: debug_noop_kernel<<<1, 2048, 0, s>>>(); return ok_status();
    case debug_fault_kind::trap:
      debug_trap_kernel<<<1, 1, 0, s>>>();
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      return ok_status();
    case debug_fault_kind::illegal_address:
      debug_store_kernel<<<1, 1, 0, s>>>(reinterpret_cast<float*>(uintptr_t{16}));
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      return ok_status();
  }
  return make_status(status_code::value, "_debugFault: unknown kind %d", static_cast<int>(p.kind));
}

}  // namespace ssmkit::device
