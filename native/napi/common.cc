// Implementation of native/napi/common.h.
#include "common.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace ssmkit::napi {

const char* status_code_name(status_code code) {
  switch (code) {
    case status_code::ok: return "OK";
    case status_code::dtype: return "ERR_SSMKIT_DTYPE";
    case status_code::shape: return "ERR_SSMKIT_SHAPE";
    case status_code::value: return "ERR_SSMKIT_VALUE";
    case status_code::unsupported: return "ERR_SSMKIT_UNSUPPORTED";
    case status_code::not_compiled: return "ERR_SSMKIT_NOT_COMPILED";
    case status_code::cuda: return "ERR_SSMKIT_CUDA";
    case status_code::cuda_oom: return "ERR_SSMKIT_CUDA_OOM";
    case status_code::internal: return "ERR_SSMKIT_INTERNAL";
  }
  return "ERR_SSMKIT_INTERNAL";
}

Napi::Error make_error(Napi::Env env, const status& s) {
  Napi::Error e;
  switch (s.code) {
    case status_code::dtype: e = Napi::TypeError::New(env, s.message); break;
    case status_code::shape:
    case status_code::value: e = Napi::RangeError::New(env, s.message); break;
    default: e = Napi::Error::New(env, s.message); break;
  }
  e.Value().Set("code", Napi::String::New(env, status_code_name(s.code)));
  return e;
}

namespace {
[[noreturn]] void throw_range(Napi::Env env, const std::string& msg) {
  throw make_error(env, make_status(status_code::shape, "%s", msg.c_str()));
}
}  // namespace

namespace {

constexpr uint32_t kMetaLength = 12;  // [dtype, device, ndim, shape[0..7], address]: lib/tensor.ts

// Raw view of a TypedArray: its element type, length in elements, data pointer and ArrayBuffer, with
// one Node-API call (which fails, without an exception, when `v` is no TypedArray). Returns false then.
bool typed_array(napi_env env, napi_value v, napi_typedarray_type* type, size_t* length, void** data,
                 napi_value* buffer) {
  size_t offset = 0;
  return v != nullptr && napi_get_typedarray_info(env, v, type, length, data, buffer, &offset) == napi_ok;
}

size_t element_size(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array:
    case napi_uint8_array:
    case napi_uint8_clamped_array: return 1;
    case napi_int16_array:
    case napi_uint16_array: return 2;
    case napi_int32_array:
    case napi_uint32_array:
    case napi_float32_array: return 4;
    default: return 8;
  }
}

}  // namespace

tensor_view read_tensor(Napi::Env env, Napi::Value v, keepalive* keep, const char* what,
                        napi_value data_value) {
  tensor_view t;
  napi_valuetype vt = napi_undefined;
  napi_typeof(env, v, &vt);
  if (vt == napi_undefined || vt == napi_null) return t;
  // A device tensor passes its meta array alone; a host tensor passes [meta, data], or (positionally)
  // its meta array with the data in `data_value`.
  napi_value meta_value = v;
  napi_typedarray_type type;
  size_t length = 0;
  void* raw = nullptr;
  napi_value buffer = nullptr;
  if (!typed_array(env, meta_value, &type, &length, &raw, &buffer)) {
    // [meta, data]: elements read directly (an element past the end reads as undefined, which the
    // TypedArray checks below reject), without a call for the length.
    bool is_array = false;
    data_value = nullptr;
    if (napi_is_array(env, v, &is_array) != napi_ok || !is_array ||
        napi_get_element(env, v, 0, &meta_value) != napi_ok ||
        napi_get_element(env, v, 1, &data_value) != napi_ok ||
        !typed_array(env, meta_value, &type, &length, &raw, &buffer)) {
      throw_range(env, std::string(what) + ": internal tensor descriptor expected");
    }
  }
  if (type != napi_float64_array || length != kMetaLength) {
    throw_range(env, std::string(what) + ": internal tensor descriptor expected");
  }
  const double* meta = static_cast<const double*>(raw);
  const double dt = meta[0];
  if (!(dt >= 0 && dt <= SSMKIT_DTYPE_F64)) throw_range(env, std::string(what) + ": unknown dtype code");
  t.dtype = static_cast<ssmkit_dtype>(static_cast<int>(dt));
  t.device = static_cast<int>(meta[1]);
  const double nd = meta[2];
  if (!(nd >= 0 && nd <= kMaxDims)) throw_range(env, std::string(what) + ": more than 8 dimensions");
  t.ndim = static_cast<int>(nd);
  for (int i = 0; i < t.ndim; ++i) {
    const double d = meta[3 + i];
    if (!(d >= 0) || d > 9007199254740991.0) throw_range(env, std::string(what) + ": bad dimension");
    t.shape[i] = static_cast<int64_t>(d);
  }
  // Bytes the view covers; int4 packs two values per byte along the last dimension.
  int64_t need = 0;
  if (t.ndim == 0) {
    need = dtype_size(t.dtype);
  } else if (t.dtype == SSMKIT_DTYPE_I4) {
    int64_t rows = 1;
    for (int i = 0; i + 1 < t.ndim; ++i) rows *= t.shape[i];
    need = rows * ((t.shape[t.ndim - 1] + 1) / 2);
  } else {
    need = t.numel() * dtype_size(t.dtype);
  }
  if (t.device < 0) {
    if (data_value == nullptr || !typed_array(env, data_value, &type, &length, &raw, &buffer)) {
      throw_range(env, std::string(what) + ": host data must be a TypedArray");
    }
    if (static_cast<int64_t>(length * element_size(type)) < need) {
      // A detached buffer reads as length 0; only then is it worth a call to tell the two apart.
      bool detached = false;
      napi_is_detached_arraybuffer(env, buffer, &detached);
      if (detached) {
        throw Napi::TypeError::New(env, std::string(what) + ": its ArrayBuffer has been detached");
      }
      throw_range(env, std::string(what) + ": its TypedArray is smaller than its shape");
    }
    t.data = raw;
    if (t.data == nullptr && need > 0) throw_range(env, std::string(what) + ": no memory");
    // An empty tensor still needs a non-null pointer to count as present.
    if (t.data == nullptr) t.data = reinterpret_cast<void*>(alignof(std::max_align_t));
    if (keep != nullptr) {
      if (keep->capacity() == 0)
        keep->reserve(16);  // one allocation for an op's tensors, not one per doubling
      keep->emplace_back(Napi::Persistent(Napi::Value(env, data_value)));
    }
  } else {
    const double addr = meta[11];
    t.data = reinterpret_cast<void*>(static_cast<uintptr_t>(addr));
    if (t.data == nullptr) t.data = reinterpret_cast<void*>(alignof(std::max_align_t));
  }
  return t;
}

double get_number(Napi::Object o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

bool get_bool(Napi::Object o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

op_args::op_args(const Napi::CallbackInfo& info, const char* const* keys, size_t count)
    : env_(info.Env()), keys_(keys), count_(count) {
  napi_valuetype first = napi_undefined;
  napi_typeof(env_, info[0], &first);
  if (first == napi_boolean) {
    info_ = &info;
    async_ = info[0].As<Napi::Boolean>().Value();
  } else {
    object_ = info[0].As<Napi::Object>();
    async_ = info[1].ToBoolean();
  }
}

op_args::op_args(op_args& parent, Napi::Value nested)
    : env_(parent.env_), object_(nested.As<Napi::Object>()), async_(parent.async_), keep_(parent.keep_) {}

Napi::Value op_args::value(const char* key) {
  if (info_ == nullptr) return object_.Get(key);
  // The reads and the key list name a key with the same literal, which the compiler stores once: equal
  // pointers spare the string comparison.
  size_t i = next_;
  if (i >= count_ || (keys_[i] != key && std::strcmp(keys_[i], key) != 0)) {
    for (i = 0; i < count_ && std::strcmp(keys_[i], key) != 0; ++i) {
    }
    if (i == count_) {
      throw make_error(
          env_, make_status(status_code::internal, "ssmkit: argument %s is not in the op's key list", key));
    }
  }
  next_ = i + 1;
  return (*info_)[2 * i + 1];
}

tensor_view op_args::tensor(const char* key, const char* what) {
  Napi::Value v = value(key);
  // Positionally a host tensor's data comes in the place after its meta array.
  return read_tensor(env_, v, keep_ptr(), what, info_ == nullptr ? nullptr : napi_value((*info_)[2 * next_]));
}

double op_args::number(const char* key, double fallback) {
  Napi::Value v = value(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

bool op_args::flag(const char* key, bool fallback) {
  Napi::Value v = value(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

void op_args::hold(Napi::Value v) {
  if (async_) keep_->emplace_back(Napi::Persistent(v));
}

void export_op(Napi::Env env, Napi::Object exports, const char* name, Napi::Function::Callback fn,
               const char* const* keys, size_t count) {
  Napi::Function f = Napi::Function::New(env, fn, name);
  Napi::Array list = Napi::Array::New(env, count);
  for (size_t i = 0; i < count; ++i) list.Set(static_cast<uint32_t>(i), Napi::String::New(env, keys[i]));
  list.Freeze();
  f.Set("keys", list);
  exports.Set(name, f);
}

Napi::Value finish(Napi::Env env, const status& s, bool async) {
  if (async) {
    auto d = Napi::Promise::Deferred::New(env);
    if (s.ok()) {
      d.Resolve(env.Undefined());
    } else {
      d.Reject(make_error(env, s).Value());
    }
    return d.Promise();
  }
  if (!s.ok()) throw make_error(env, s);
  return env.Undefined();
}

namespace {

class task_worker : public Napi::AsyncWorker {
 public:
  task_worker(Napi::Env env, std::function<status()> task, keepalive keep)
      : Napi::AsyncWorker(env, "ssmkit"),
        deferred_(Napi::Promise::Deferred::New(env)),
        task_(std::move(task)),
        keep_(std::move(keep)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      status_ = task_();
    } catch (const std::bad_alloc&) {
      status_ = make_status(status_code::internal, "ssmkit: out of host memory");
    } catch (...) {
      status_ = make_status(status_code::internal, "ssmkit: unexpected native exception");
    }
  }

  void OnOK() override {
    if (status_.ok()) {
      deferred_.Resolve(Env().Undefined());
    } else {
      deferred_.Reject(make_error(Env(), status_).Value());
    }
    keep_.clear();
  }

  void OnError(const Napi::Error& e) override {
    deferred_.Reject(e.Value());
    keep_.clear();
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<status()> task_;
  keepalive keep_;
  status status_;
};

}  // namespace

Napi::Value run_task(Napi::Env env, bool async, std::function<status()> task, keepalive keep) {
  if (!async) {
    status s;
    try {
      s = task();
    } catch (const std::bad_alloc&) {
      s = make_status(status_code::internal, "ssmkit: out of host memory");
    }
    return finish(env, s, false);
  }
  auto* w = new task_worker(env, std::move(task), std::move(keep));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

bool cuda_sync_each_op() {
  static const bool on = [] {
    const char* v = std::getenv("SSMKIT_CUDA_SYNC");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

status prefix_status(const char* op, const status& s) {
  status out = s;
  // The message may be cut to fit; the op's name in front matters more than its tail.
  const int room = static_cast<int>(sizeof(out.message)) - static_cast<int>(std::strlen(op)) - 3;
  std::snprintf(out.message, sizeof(out.message), "%s: %.*s", op, room > 0 ? room : 0, s.message);
  return out;
}

int op_device(std::initializer_list<const tensor_view*> views) {
  for (const tensor_view* v : views) {
    if (v->present()) return v->device;
  }
  return -1;
}

}  // namespace ssmkit::napi
