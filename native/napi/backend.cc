// Node-API functions for what the loader and Tensor need besides the ops: build and CPU facts, the
// thread count, the CUDA runtime (device discovery, allocation, copies, synchronize, cast), and large
// host buffers.
//
// `hostAlloc(bytes)` gives lib/tensor.ts the storage of a large CPU tensor (an op's output, a host copy
// of a device tensor): fresh zero pages from mmap, wrapped as an external ArrayBuffer. V8's own
// ArrayBuffers of that size cost the JS thread time that grows with their size: the allocation may
// start a collection, and the collection frees dead buffers on the JS thread (unmapping 1 GB of touched
// pages takes 45-80 ms). Here the allocation is one mmap call, zero-filled by the kernel on first touch
// (on the worker that writes it), and the finalizer hands the region to a releaser thread that unmaps
// it off the JS thread, a slice at a time. Where external buffers are not allowed it returns undefined (lib/
// then uses V8).
//
// `_debugFault({ kind, device }, async)` is a test hook, not part of the API (lib/ does not export it;
// test/fault.test.ts calls it): an op that fails on purpose on a CUDA device, run through run_op like
// every op, so that the tests can check how a kernel error is reported. Kinds: 'launch' (an invalid
// launch configuration: a non-sticky error, returned by the launch), 'unchecked-launch' (the same error
// left in CUDA's error slot while the op returns ok), 'trap' and 'illegal-address' (kernels that fault:
// sticky errors that lose the context, reported at the next synchronization).
#include <sys/mman.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "common.h"
#include "ssmkit/cpu_features.h"
#include "ssmkit/parallel.h"

namespace ssmkit::napi {
namespace {

int device_arg(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int32Value();
}

void* address_arg(const Napi::CallbackInfo& info, size_t i) {
  bool lossless = false;
  return reinterpret_cast<void*>(static_cast<uintptr_t>(info[i].As<Napi::BigInt>().Uint64Value(&lossless)));
}

void throw_if(Napi::Env env, const status& s) {
  if (!s.ok()) throw make_error(env, s);
}

Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("cuda", Napi::Boolean::New(env, device::compiled()));
  o.Set("simd", Napi::String::New(env, cpu::simd_name(cpu::simd())));
  Napi::Array features = Napi::Array::New(env);
  uint32_t i = 0;
  for (const std::string& f : cpu::detected_features()) features.Set(i++, f);
  o.Set("cpuFeatures", features);
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return o;
}

Napi::Value set_num_threads(const Napi::CallbackInfo& info) {
  cpu::set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value get_num_threads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::get_num_threads());
}

// Returns {count} or {count: 0, error} with the driver's reason.
Napi::Value device_count(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  status s = device::count(&n);
  Napi::Object o = Napi::Object::New(env);
  o.Set("count", Napi::Number::New(env, n));
  if (!s.ok()) o.Set("error", Napi::String::New(env, s.message));
  return o;
}

Napi::Value device_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  device::device_info d{};
  throw_if(env, device::info(device_arg(info, 0), &d));
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", Napi::String::New(env, d.name));
  o.Set("computeCapability", Napi::String::New(env, std::to_string(d.major) + "." + std::to_string(d.minor)));
  o.Set("multiprocessors", Napi::Number::New(env, d.multiprocessors));
  o.Set("totalMemory", Napi::Number::New(env, static_cast<double>(d.total_memory)));
  return o;
}

Napi::Value device_alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* p = nullptr;
  const double bytes = info[1].As<Napi::Number>().DoubleValue();
  throw_if(env, device::alloc(device_arg(info, 0), static_cast<size_t>(bytes), &p));
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)));
}

Napi::Value device_free(const Napi::CallbackInfo& info) {
  throw_if(info.Env(), device::release(device_arg(info, 0), address_arg(info, 1)));
  return info.Env().Undefined();
}

// (device, dstAddress, srcTypedArray, async)
Napi::Value copy_to_device(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int dev = device_arg(info, 0);
  void* dst = address_arg(info, 1);
  Napi::TypedArray src = info[2].As<Napi::TypedArray>();
  const void* p = static_cast<const char*>(src.ArrayBuffer().Data()) + src.ByteOffset();
  const size_t n = src.ByteLength();
  keepalive keep;
  keep.emplace_back(Napi::Persistent(info[2]));
  return run_task(
      env, info[3].ToBoolean(), [=]() { return device::copy_to_device(dev, dst, p, n); }, std::move(keep));
}

// (device, dstTypedArray, srcAddress, async). An async copy of up to kHostCopyStagedMax bytes is enqueued
// here, on the calling thread, and only waited for on the thread pool: it reads the tensor as the work
// enqueued before the call left it, a later dispose cannot free the memory under it, and its Promise does
// not wait for work enqueued after it (a decode loop enqueues the next step, then awaits this token).
Napi::Value copy_to_host(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int dev = device_arg(info, 0);
  Napi::TypedArray dst = info[1].As<Napi::TypedArray>();
  void* p = static_cast<char*>(dst.ArrayBuffer().Data()) + dst.ByteOffset();
  const size_t n = dst.ByteLength();
  const void* src = address_arg(info, 2);
  const bool async = info[3].ToBoolean();
  keepalive keep;
  keep.emplace_back(Napi::Persistent(info[1]));
  if (async) {
    device::host_copy* staged = nullptr;
    const status begun = device::copy_to_host_begin(dev, src, n, &staged);
    if (!begun.ok()) return finish(env, begun, true);
    if (staged != nullptr) {
      return run_task(
          env, true, [=]() { return device::copy_to_host_finish(staged, p); }, std::move(keep));
    }
  }
  return run_task(
      env, async, [=]() { return device::copy_to_host(dev, p, src, n); }, std::move(keep));
}

// (device, dstAddress, srcAddress, bytes)
Napi::Value copy_on_device(const Napi::CallbackInfo& info) {
  const size_t n = static_cast<size_t>(info[3].As<Napi::Number>().DoubleValue());
  throw_if(info.Env(),
           device::copy_on_device(device_arg(info, 0), address_arg(info, 1), address_arg(info, 2), n));
  return info.Env().Undefined();
}

// (device, dstAddress, bits, count): count 32-bit words set to bits, enqueued.
Napi::Value fill32(const Napi::CallbackInfo& info) {
  const uint32_t bits = info[2].As<Napi::Number>().Uint32Value();
  const int64_t n = info[3].As<Napi::Number>().Int64Value();
  throw_if(info.Env(), device::fill32(device_arg(info, 0), address_arg(info, 1), bits, n));
  return info.Env().Undefined();
}

// (device, async)
Napi::Value device_synchronize(const Napi::CallbackInfo& info) {
  const int dev = device_arg(info, 0);
  return run_task(info.Env(), info[1].ToBoolean(), [=]() { return device::synchronize(dev); }, {});
}

// (device): synchronize, then give the pool's unused memory back to the driver.
Napi::Value device_trim(const Napi::CallbackInfo& info) {
  throw_if(info.Env(), device::trim(device_arg(info, 0)));
  return info.Env().Undefined();
}

Napi::Value device_memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t free_bytes = 0, total = 0;
  throw_if(env, device::memory_info(device_arg(info, 0), &free_bytes, &total));
  Napi::Object o = Napi::Object::New(env);
  o.Set("free", Napi::Number::New(env, static_cast<double>(free_bytes)));
  o.Set("total", Napi::Number::New(env, static_cast<double>(total)));
  return o;
}

// (device, srcAddress, srcDtype, dstAddress, dstDtype, n)
Napi::Value device_cast(const Napi::CallbackInfo& info) {
  throw_if(info.Env(),
           device::cast(device_arg(info, 0), address_arg(info, 1), info[2].As<Napi::Number>().Int32Value(),
                        address_arg(info, 3), info[4].As<Napi::Number>().Int32Value(),
                        static_cast<int64_t>(info[5].As<Napi::Number>().DoubleValue())));
  return info.Env().Undefined();
}

// Unmaps released host buffers on its own thread, so that the JS thread never pays for freeing pages.
class host_releaser {
 public:
  static host_releaser& get() {
    static host_releaser* r = new host_releaser();  // never destroyed: the thread may outlive exit handlers
    return *r;
  }
  void release(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.emplace_back(p, bytes);
    }
    cv_.notify_one();
  }

 private:
  host_releaser() {
    std::thread([this] { loop(); }).detach();
  }
  void loop() {
    for (;;) {
      std::pair<void*, size_t> r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        r = queue_.front();
        queue_.pop_front();
      }
      // In slices: unmapping holds the process's memory-map lock, which an mmap or a page fault on the
      // JS thread then waits for; a 32 MiB slice holds it for about a millisecond.
      constexpr size_t kSlice = size_t{32} << 20;
      char* p = static_cast<char*>(r.first);
      for (size_t off = 0; off < r.second; off += kSlice) {
        munmap(p + off, std::min(kSlice, r.second - off));
        std::this_thread::yield();
      }
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<void*, size_t>> queue_;
};

// (bytes) -> an ArrayBuffer over fresh zero pages, or undefined (see the file's opening paragraph).
Napi::Value host_alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double want = info[0].As<Napi::Number>().DoubleValue();
  if (!(want >= 1) || want > 9007199254740991.0) return env.Undefined();
  const size_t bytes = static_cast<size_t>(want);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return env.Undefined();
  napi_value buffer = nullptr;
  const napi_status st = napi_create_external_arraybuffer(
      env, p, bytes,
      [](napi_env, void* data, void* hint) {
        host_releaser::get().release(data, reinterpret_cast<size_t>(hint));
      },
      reinterpret_cast<void*>(bytes), &buffer);
  if (st != napi_ok) {
    munmap(p, bytes);
    // A pending exception (an allocation V8 refused) is not ours to throw: lib/ falls back to V8.
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value ignored;
      napi_get_and_clear_last_exception(env, &ignored);
    }
    return env.Undefined();
  }
  return Napi::Value(env, buffer);
}

status debug_fault_cpu(const device::debug_fault_params&) {
  return make_status(status_code::unsupported, "_debugFault: runs on a CUDA device only");
}

// ({ kind, device }, async): see the file's opening paragraph.
Napi::Value debug_fault(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  const std::string kind = a.Get("kind").ToString().Utf8Value();
  device::debug_fault_params p;
  if (kind == "launch") {
    p.kind = device::debug_fault_kind::launch;
  } else if (kind == "unchecked-launch") {
    p.kind = device::debug_fault_kind::unchecked_launch;
  } else if (kind == "trap") {
    p.kind = device::debug_fault_kind::trap;
  } else if (kind == "illegal-address") {
    p.kind = device::debug_fault_kind::illegal_address;
  } else {
    throw make_error(env,
                     make_status(status_code::value, "_debugFault: kind: unknown kind '%s'", kind.c_str()));
  }
  const int dev = static_cast<int>(get_number(a, "device", 0));
  return run_op<device::debug_fault_params>(env, "_debugFault", p, dev, info[1].ToBoolean(), {},
                                            &debug_fault_cpu, SSMKIT_CUDA_FN(device::debug_fault_cuda));
}

}  // namespace

void register_backend(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, build_info));
  exports.Set("setNumThreads", Napi::Function::New(env, set_num_threads));
  exports.Set("getNumThreads", Napi::Function::New(env, get_num_threads));
  exports.Set("deviceCount", Napi::Function::New(env, device_count));
  exports.Set("deviceInfo", Napi::Function::New(env, device_info));
  exports.Set("deviceAlloc", Napi::Function::New(env, device_alloc));
  exports.Set("deviceFree", Napi::Function::New(env, device_free));
  exports.Set("copyToDevice", Napi::Function::New(env, copy_to_device));
  exports.Set("copyToHost", Napi::Function::New(env, copy_to_host));
  exports.Set("copyOnDevice", Napi::Function::New(env, copy_on_device));
  exports.Set("fill32", Napi::Function::New(env, fill32));
  exports.Set("deviceSynchronize", Napi::Function::New(env, device_synchronize));
  exports.Set("deviceMemory", Napi::Function::New(env, device_memory));
  exports.Set("deviceTrim", Napi::Function::New(env, device_trim));
  exports.Set("deviceCast", Napi::Function::New(env, device_cast));
  exports.Set("hostAlloc", Napi::Function::New(env, host_alloc));
  exports.Set("_debugFault", Napi::Function::New(env, debug_fault));
}

}  // namespace ssmkit::napi
