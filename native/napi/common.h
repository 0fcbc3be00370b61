// Shared pieces of the Node-API layer: reading the tensors and options that lib/ passes into the
// kernels' plain views, running a kernel on the CPU pool (async through an AsyncWorker, or on the
// calling thread) or enqueuing it on the device's stream, and turning a status into a JS error.
// JS passes each tensor as a descriptor (lib/tensor.ts): a Float64Array [dtype, device, ndim, shape[8],
// address] alone for a device tensor, or [that, its TypedArray] for a host tensor; undefined/null stands
// for an optional tensor left out.
//
// Every op call pays this layer's cost, which matters for small ops (a decode step, a GEMV at M = 1):
// a descriptor is read with a handful of Node-API calls, a sync CPU op runs its kernel in place (no task
// object, no copy of the params), and only an async op queues a worker. Before a CUDA op, an error left
// in CUDA's error slot by an earlier failed call is dropped (it was reported there), so that the op's
// own launch check does not report it; a lost context stops the op instead.
#pragma once
#include <napi.h>

#include <cstring>
#include <functional>
#include <new>
#include <utility>
#include <vector>

#include "ssmkit/device.h"
#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

#if defined(SSMKIT_WITH_CUDA)
#define SSMKIT_CUDA_FN(fn) (&fn)
#else
#define SSMKIT_CUDA_FN(fn) nullptr
#endif

namespace ssmkit::napi {

// References that keep the JS memory of an op's tensors alive until the op has finished.
using keepalive = std::vector<Napi::Reference<Napi::Value>>;

// Builds the JS error for a failed status: dtype -> TypeError, shape/value -> RangeError, the rest a
// plain Error; every one carries `code` (ERR_SSMKIT_*), which lib/errors.ts turns into SsmkitError.
Napi::Error make_error(Napi::Env env, const status& s);
const char* status_code_name(status_code code);

// Reads one tensor argument; `what` names it in errors ("selectiveScan: u"). Throws a JS error when
// the value is malformed or its memory is detached or too small.
tensor_view read_tensor(Napi::Env env, Napi::Value v, keepalive& keep, const char* what);

double get_number(Napi::Object o, const char* key, double fallback);
bool get_bool(Napi::Object o, const char* key, bool fallback);

// Finishes a call: async -> a settled Promise, sync -> undefined or a thrown error.
Napi::Value finish(Napi::Env env, const status& s, bool async);

// Runs `task` on a libuv worker thread and returns a Promise (async), or runs it here (sync).
Napi::Value run_task(Napi::Env env, bool async, std::function<status()> task, keepalive keep);

// Runs a CPU kernel on the calling thread, turning an out-of-memory exception into a status.
template <class P>
status run_here(status (*cpu)(const P&), const P& params) {
  try {
    return cpu(params);
  } catch (const std::bad_alloc&) {
    return make_status(status_code::internal, "ssmkit: out of host memory");
  }
}

// The one device of an op's tensors (-1 for the host); views that are absent do not count. The
// TypeScript layer has already checked that they agree.
int op_device(std::initializer_list<const tensor_view*> views);

// True when SSMKIT_CUDA_SYNC=1: every CUDA op waits for its kernels before returning.
bool cuda_sync_each_op();

// The same status with "<op>: " in front of its message.
status prefix_status(const char* op, const status& s);

// Runs an op on the backend its tensors live on: the CPU pool (possibly async), or the device's stream
// (enqueued here, so async and sync both return at once).
template <class T>
struct non_deduced {
  using type = T;
};

template <class P>
Napi::Value run_op(Napi::Env env, const char* op, P params, int device, bool async, keepalive keep,
                   status (*cpu)(const P&), status (*cuda)(const typename non_deduced<P>::type&, void*)) {
  if (device < 0) {
    // On the calling thread the kernel reads the params in place: no task object, no copy of the params.
    if (!async) return finish(env, run_here(cpu, params), false);
    return run_task(
        env, true, [params, cpu]() { return cpu(params); }, std::move(keep));
  }
  if (cuda == nullptr) {
    return finish(env,
                  make_status(status_code::not_compiled,
                              "%s: tensors are on cuda:%d but this binary has no CUDA kernels", op, device),
                  async);
  }
  // An error an earlier failed call left in this thread's CUDA error slot was reported there: out of the
  // slot with it, or this op's launch check would report it as its own. A lost context stops the op here.
  status s = device::clear_pending_error(device);
  void* stream = nullptr;
  if (s.ok()) s = device::stream(device, &stream);
  if (s.ok()) s = cuda(params, stream);
  // Kernel faults surface at the next synchronization; SSMKIT_CUDA_SYNC=1 waits after every op so that
  // a fault is reported on the op that caused it.
  if (s.ok() && cuda_sync_each_op()) s = device::synchronize(device);
  if (!s.ok() && std::strncmp(s.message, op, std::strlen(op)) != 0) s = prefix_status(op, s);
  return finish(env, s, async);
}

void register_backend(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);
void register_scan(Napi::Env env, Napi::Object exports);
void register_fft(Napi::Env env, Napi::Object exports);
void register_nn(Napi::Env env, Napi::Object exports);

}  // namespace ssmkit::napi
