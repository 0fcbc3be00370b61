// Node-API bindings of the FFT convolution family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/fft.ts has validated every argument; the shapes read here only size the params. Each op's key
// list names its arguments in the order lib/ops/run.ts passes them (common.h: op_args).
#include "common.h"
#include "ssmkit/fft_conv.h"

namespace ssmkit::napi {
namespace {

// Each op's arguments in the order lib/ops/run.ts passes them (and the order they are read below).
constexpr const char* kFftConvKeys[] = {"u", "k", "D", "pregate", "postgate", "out", "gelu", "bidirectional"};
constexpr const char* kS4dKernelKeys[] = {"logDt", "A", "C", "k"};
constexpr const char* kSsmConvKeys[] = {"u",   "logDt",     "A",        "C", "D", "initialState",
                                        "out", "lastState", "blockSize"};

// fftConv({u, k, D, pregate, postgate, out, gelu, bidirectional}, async)
Napi::Value fft_conv(const Napi::CallbackInfo& info) {
  op_args a(info, kFftConvKeys);
  fft_conv_params p;
  p.u = a.tensor("u", "fftConv: u");
  p.k = a.tensor("k", "fftConv: k");
  p.D = a.tensor("D", "fftConv: options.D");
  p.pregate = a.tensor("pregate", "fftConv: options.pregate");
  p.postgate = a.tensor("postgate", "fftConv: options.postgate");
  p.out = a.tensor("out", "fftConv: out");
  p.gelu = a.flag("gelu", false);
  p.bidirectional = a.flag("bidirectional", false);
  p.batch = p.u.dim(0);
  p.H = p.u.dim(1);
  p.L = p.u.dim(2);
  p.Lk = p.k.dim(-1);
  return run_op(a.env(), "fftConv", p, op_device({&p.u}), a.async(), a.take_keep(), &fft_conv_cpu,
                SSMKIT_CUDA_FN(fft_conv_cuda));
}

// s4dKernel({logDt, A, C, k}, async)
Napi::Value s4d_kernel(const Napi::CallbackInfo& info) {
  op_args a(info, kS4dKernelKeys);
  s4d_kernel_params p;
  p.log_dt = a.tensor("logDt", "s4dKernel: logDt");
  p.A = a.tensor("A", "s4dKernel: A");
  p.C = a.tensor("C", "s4dKernel: C");
  p.k = a.tensor("k", "s4dKernel: k");
  p.H = p.A.dim(0);
  p.N2 = p.A.dim(1);
  p.L = p.k.dim(1);
  return run_op(a.env(), "s4dKernel", p, op_device({&p.log_dt}), a.async(), a.take_keep(), &s4d_kernel_cpu,
                SSMKIT_CUDA_FN(s4d_kernel_cuda));
}

// ssmConv({u, logDt, A, C, D, initialState, out, lastState, blockSize}, async)
Napi::Value ssm_conv(const Napi::CallbackInfo& info) {
  op_args a(info, kSsmConvKeys);
  ssm_conv_params p;
  p.u = a.tensor("u", "ssmConv: u");
  p.log_dt = a.tensor("logDt", "ssmConv: logDt");
  p.A = a.tensor("A", "ssmConv: A");
  p.C = a.tensor("C", "ssmConv: C");
  p.D = a.tensor("D", "ssmConv: options.D");
  p.initial_state = a.tensor("initialState", "ssmConv: options.initialState");
  p.out = a.tensor("out", "ssmConv: out");
  p.last_state = a.tensor("lastState", "ssmConv: lastState");
  p.batch = p.u.dim(0);
  p.H = p.u.dim(1);
  p.L = p.u.dim(2);
  p.N2 = p.A.dim(1);
  p.block_size = static_cast<int64_t>(a.number("blockSize", 0));
  return run_op(a.env(), "ssmConv", p, op_device({&p.u}), a.async(), a.take_keep(), &ssm_conv_cpu,
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
  export_op(env, exports, "fftConv", fft_conv, kFftConvKeys);
  export_op(env, exports, "s4dKernel", s4d_kernel, kS4dKernelKeys);
  export_op(env, exports, "ssmConv", ssm_conv, kSsmConvKeys);
  exports.Set("fftScratchBytes", Napi::Function::New(env, fft_scratch));
}

}  // namespace ssmkit::napi
