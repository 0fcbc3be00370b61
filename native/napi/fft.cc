// Node-API bindings of the FFT convolution family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/fft.ts has validated every argument; the shapes read here only size the params.
#include "common.h"
#include "ssmkit/fft_conv.h"

namespace ssmkit::napi {
namespace {

// fftConv({u, k, D, pregate, postgate, out, gelu, bidirectional}, async)
Napi::Value fft_conv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  fft_conv_params p;
  p.u = read_tensor(env, a.Get("u"), keep, "fftConv: u");
  p.k = read_tensor(env, a.Get("k"), keep, "fftConv: k");
  p.D = read_tensor(env, a.Get("D"), keep, "fftConv: options.D");
  p.pregate = read_tensor(env, a.Get("pregate"), keep, "fftConv: options.pregate");
  p.postgate = read_tensor(env, a.Get("postgate"), keep, "fftConv: options.postgate");
  p.out = read_tensor(env, a.Get("out"), keep, "fftConv: out");
  p.gelu = get_bool(a, "gelu", false);
  p.bidirectional = get_bool(a, "bidirectional", false);
  p.batch = p.u.dim(0);
  p.H = p.u.dim(1);
  p.L = p.u.dim(2);
  p.Lk = p.k.dim(-1);
  return run_op(env, "fftConv", p, op_device({&p.u}), info[1].ToBoolean(), std::move(keep), &fft_conv_cpu,
                SSMKIT_CUDA_FN(fft_conv_cuda));
}

// s4dKernel({logDt, A, C, k}, async)
Napi::Value s4d_kernel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  s4d_kernel_params p;
  p.log_dt = read_tensor(env, a.Get("logDt"), keep, "s4dKernel: logDt");
  p.A = read_tensor(env, a.Get("A"), keep, "s4dKernel: A");
  p.C = read_tensor(env, a.Get("C"), keep, "s4dKernel: C");
  p.k = read_tensor(env, a.Get("k"), keep, "s4dKernel: k");
  p.H = p.A.dim(0);
  p.N2 = p.A.dim(1);
  p.L = p.k.dim(1);
  return run_op(env, "s4dKernel", p, op_device({&p.log_dt}), info[1].ToBoolean(), std::move(keep),
                &s4d_kernel_cpu, SSMKIT_CUDA_FN(s4d_kernel_cuda));
}

// ssmConv({u, logDt, A, C, D, initialState, out, lastState, blockSize}, async)
Napi::Value ssm_conv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  ssm_conv_params p;
  p.u = read_tensor(env, a.Get("u"), keep, "ssmConv: u");
  p.log_dt = read_tensor(env, a.Get("logDt"), keep, "ssmConv: logDt");
  p.A = read_tensor(env, a.Get("A"), keep, "ssmConv: A");
  p.C = read_tensor(env, a.Get("C"), keep, "ssmConv: C");
  p.D = read_tensor(env, a.Get("D"), keep, "ssmConv: options.D");
  p.initial_state = read_tensor(env, a.Get("initialState"), keep, "ssmConv: options.initialState");
  p.out = read_tensor(env, a.Get("out"), keep, "ssmConv: out");
  p.last_state = read_tensor(env, a.Get("lastState"), keep, "ssmConv: lastState");
  p.batch = p.u.dim(0);
  p.H = p.u.dim(1);
  p.L = p.u.dim(2);
  p.N2 = p.A.dim(1);
  p.block_size = static_cast<int64_t>(get_number(a, "blockSize", 0));
  return run_op(env, "ssmConv", p, op_device({&p.u}), info[1].ToBoolean(), std::move(keep), &ssm_conv_cpu,
                SSMKIT_CUDA_FN(ssm_conv_cuda));
}

// fftScratchBytes() -> [now, peak]: the family's CPU scratch memory (a diagnostic for tests and benches).
Napi::Value fft_scratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array r = Napi::Array::New(env, 2);
  r.Set(0u, Napi::Number::New(env, static_cast<double>(fft_scratch_bytes())));
  r.Set(1u, Napi::Number::New(env, static_cast<double>(fft_scratch_peak_bytes())));
  return r;
}

}  // namespace

void register_fft(Napi::Env env, Napi::Object exports) {
  exports.Set("fftConv", Napi::Function::New(env, fft_conv));
  exports.Set("s4dKernel", Napi::Function::New(env, s4d_kernel));
  exports.Set("ssmConv", Napi::Function::New(env, ssm_conv));
  exports.Set("fftScratchBytes", Napi::Function::New(env, fft_scratch));
}

}  // namespace ssmkit::napi
