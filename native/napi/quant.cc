// Node-API bindings of the quantization family: JS arguments -> params struct -> CPU pool or stream.
#include "ssmkit/quant.h"

#include "common.h"

namespace ssmkit::napi {
namespace {

// hadamard({x, out, scale}, async)
Napi::Value hadamard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  hadamard_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "hadamard: x");
  p.out = read_tensor(env, a.Get("out"), keep, "hadamard: out");
  p.n = p.x.ndim == 0 ? 1 : p.x.dim(-1);
  p.rows = p.n == 0 ? 0 : p.x.numel() / p.n;
  p.scale = static_cast<float>(get_number(a, "scale", 1.0));
  return run_op(env, "hadamard", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep), &hadamard_cpu,
                SSMKIT_CUDA_FN(hadamard_cuda));
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  exports.Set("hadamard", Napi::Function::New(env, hadamard));
}

}  // namespace ssmkit::napi
