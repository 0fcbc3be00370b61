// The CUDA device runtime as the Node-API layer sees it: discovery, per-device streams, stream-ordered
// allocation and copies. native/cuda/runtime.cu implements it; in a build without CUDA,
// native/cpu/no_cuda.cc answers every call with status_code::not_compiled.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ssmkit/status.h"

namespace ssmkit::device {

struct device_info {
  char name[256];
  int major;
  int minor;
  int multiprocessors;
  size_t total_memory;
};

// True when this binary was built with the CUDA backend.
bool compiled();
// How many devices a driver reports; on failure, why none can be used.
status count(int* n);
status info(int device, device_info* out);
// The device's one stream (created on first use); all ops and copies for the device go through it.
status stream(int device, void** out);
status alloc(int device, size_t bytes, void** out);
status release(int device, void* ptr);
// Host <-> device copies ordered on the device's stream; they return when the copy has finished.
status copy_to_device(int device, void* dst, const void* src, size_t bytes);
status copy_to_host(int device, void* dst, const void* src, size_t bytes);
// A device -> host copy in two halves, for callers that must not wait on the calling thread: begin
// enqueues the copy on the device's stream now, into pinned staging memory (so it returns at once and the
// copy holds its place in the stream's order), or returns *out = nullptr where bytes exceed
// kHostCopyStagedMax (the caller then copies with copy_to_host); finish waits for that copy alone (not
// for work enqueued after begin), moves the bytes to dst and releases the staging. Every begin that
// returns a copy must be finished once.
struct host_copy;
constexpr size_t kHostCopyStagedMax = size_t{1} << 20;
status copy_to_host_begin(int device, const void* src, size_t bytes, host_copy** out);
status copy_to_host_finish(host_copy* copy, void* dst);
// Enqueued device -> device copy; returns at once.
status copy_on_device(int device, void* dst, const void* src, size_t bytes);
// Enqueued: count 32-bit words at dst set to bits (a kernel's argument, so nothing waits for the device or
// for a host buffer); returns at once.
status fill32(int device, void* dst, uint32_t bits, int64_t count);
status synchronize(int device);
// Waits for the device's stream, then hands the allocation pool's unused memory back to the driver.
status trim(int device);
status memory_info(int device, size_t* free_bytes, size_t* total_bytes);
// Element-wise dtype conversion on the device (float32 <-> float16/bfloat16/float64), enqueued.
status cast(int device, const void* src, int src_dtype, void* dst, int dst_dtype, int64_t n);
// Called before every op: takes out of the calling thread's CUDA error slot an error that an earlier
// failed call left there (it was reported on that call), so that this op's launch check does not report
// it as its own. An error that left the context lost is returned instead: no op can run after it.
status clear_pending_error(int device);

// A test hook, not part of the API (native/napi/backend.cc's _debugFault): an "op" that fails on purpose.
enum class debug_fault_kind : int {
  launch = 0,            // a launch with an invalid configuration (2048 threads a block): a non-sticky error
  unchecked_launch = 1,  // the same, its error left in the error slot unreported (what a failed call that
                         // nobody checked leaves behind); the op itself returns ok
  trap = 2,             // a kernel that executes a trap: a sticky fault, reported at the next synchronization
  illegal_address = 3,  // a kernel that stores to an address no allocation covers: a sticky fault
};
struct debug_fault_params {
  debug_fault_kind kind = debug_fault_kind::launch;
};
status debug_fault_cuda(const debug_fault_params& p, void* stream);

}  // namespace ssmkit::device
