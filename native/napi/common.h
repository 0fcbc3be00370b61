// Shared pieces of the Node-API layer: reading the arguments that lib/ passes into the kernels' plain
// views, running a kernel on the CPU pool (async through an AsyncWorker, or on the calling thread) or
// enqueuing it on the device's stream, and turning a status into a JS error.
// JS passes each tensor as a descriptor (lib/tensor.ts): a Float64Array [dtype, device, ndim, shape[8],
// address] alone for a device tensor, or [that, its TypedArray] for a host tensor; undefined/null stands
// for an optional tensor left out.
//
// Every op call pays this layer's cost, which matters for small ops (a decode step, a GEMV at M = 1).
// An op's arguments come positionally, op(async, v0, d0, v1, d1, ...), in the order of the key list the
// native function carries as its `keys` property (lib/ops/run.ts builds that call; di is a host
// tensor's TypedArray, passed beside its meta array vi): the values arrive with the call, where reading
// them by name from an object costs one property lookup through V8's API each (about 55 ns here on a
// 2-core EPYC, 12 of them for selectiveStateUpdate; caching the key strings does not help, as the lookup
// itself, not the key, is the cost: 85 ns a key with the keys kept in an array), and unpacking a host
// tensor's [meta, data] pair costs three more calls (about 80 ns).
// The object form op({key: v, ...}, async) still works (tests, and nested objects such as linear's
// outputs, are read by name). A descriptor is read with a handful of Node-API calls; a host tensor gets a
// reference that keeps its memory alive only for an async call (a sync CPU op runs its kernel in place
// before returning, with no task object and no copy of the params, and a CUDA op reads no host memory
// after its enqueue); only an async op queues a worker. Before a CUDA op, an error left in CUDA's error
// slot by an earlier failed call is dropped (it was reported there), so that the op's own launch check
// does not report it; a lost context stops the op instead.
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

// Reads one tensor argument; `what` names it in errors ("selectiveScan: u"). `v` is a descriptor, or a
// host tensor's meta array with its TypedArray in `data_value`. A host tensor's TypedArray gets a
// reference in `keep` unless `keep` is null. Throws a JS error when the value is malformed or its memory
// is detached or too small.
tensor_view read_tensor(Napi::Env env, Napi::Value v, keepalive* keep, const char* what,
                        napi_value data_value = nullptr);

double get_number(Napi::Object o, const char* key, double fallback);
bool get_bool(Napi::Object o, const char* key, bool fallback);

// The most keys an op has (ssdScan has 14).
constexpr size_t kMaxOpArgs = 16;

// An op call's arguments, read by key: positionally from op(async, v0, d0, v1, d1, ...) by the key's
// place i in the op's key list (vi at 1 + 2i; di, after a host tensor's meta array vi, its TypedArray,
// else undefined), or by name from op({...}, async) or from a nested object. Reads in key-list order
// find each place with one comparison (any order is right, only slower). Holds the references that keep
// an async call's host tensors alive; neither copied nor moved, as nested readers point at its keepalive.
class op_args {
 public:
  template <size_t N>
  op_args(const Napi::CallbackInfo& info, const char* const (&keys)[N]) : op_args(info, keys, N) {
    static_assert(N <= kMaxOpArgs, "more op arguments than kMaxOpArgs");
  }
  // A nested object of `parent`'s call (linear's outputs), read by name.
  op_args(op_args& parent, Napi::Value nested);
  op_args(const op_args&) = delete;
  op_args& operator=(const op_args&) = delete;

  Napi::Env env() const { return env_; }
  bool async() const { return async_; }
  Napi::Value value(const char* key);
  tensor_view tensor(const char* key, const char* what);
  tensor_view tensor_of(Napi::Value v, const char* what) { return read_tensor(env_, v, keep_ptr(), what); }
  double number(const char* key, double fallback);
  int64_t integer(const char* key, int64_t fallback) {
    return static_cast<int64_t>(number(key, static_cast<double>(fallback)));
  }
  bool flag(const char* key, bool fallback);
  // Keeps `v` alive until an async call finishes (a sync call needs nothing).
  void hold(Napi::Value v);
  // The references for run_op (empty for a sync call).
  keepalive take_keep() { return std::move(*keep_); }

 private:
  op_args(const Napi::CallbackInfo& info, const char* const* keys, size_t count);
  keepalive* keep_ptr() { return async_ ? keep_ : nullptr; }

  Napi::Env env_;
  const Napi::CallbackInfo* info_ = nullptr;  // positional: info[0] is async, info[1 + 2i] keys_[i]
  const char* const* keys_ = nullptr;
  size_t count_ = 0;
  size_t next_ = 0;      // the place the next read is expected at
  Napi::Object object_;  // by name: the arguments object
  bool async_ = false;
  keepalive own_;
  keepalive* keep_ = &own_;
};

// Exports an op function under `name` with its key list as the function's `keys` property (frozen).
void export_op(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn,
               const char* const* keys, size_t count);
template <size_t N>
void export_op(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn,
               const char* const (&keys)[N]) {
  export_op(env, exports, name, fn, keys, N);
}

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
