// Node-API bindings of the quantization family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/quant.ts has validated every argument; here each op's params struct is filled in one function.
// Each op's key list names its arguments in the order lib/ops/run.ts passes them (common.h: op_args).
#include "ssmkit/quant.h"

#include "common.h"

namespace ssmkit::napi {
namespace {

// Each op's arguments in the order lib/ops/run.ts passes them (and the order they are read below).
constexpr const char* kHadamardKeys[] = {"x", "out", "scale"};
constexpr const char* kQuantizeKeys[] = {"x",           "q",         "scale",  "bits",
                                         "granularity", "groupSize", "static", "hadamard"};
constexpr const char* kDequantizeKeys[] = {"q", "scale", "out", "granularity", "groupSize"};
constexpr const char* kPackWeightsKeys[] = {"w", "out", "n", "k", "bits"};
constexpr const char* kGemmW8A8Keys[] = {"a",   "w", "aScale", "wScale", "bias",
                                         "out", "m", "n",      "k",      "packed"};
constexpr const char* kGemmW4A8Keys[] = {"a", "w", "aScale", "wScale",    "bias",  "out",
                                         "m", "n", "k",      "groupSize", "packed"};
constexpr const char* kGemmW4A16Keys[] = {"x", "w", "scales", "bias",      "out",
                                          "m", "n", "k",      "groupSize", "packed"};

// The rows of a tensor's last dimension: (lines, len).
void rows_of(const tensor_view& t, int64_t* lines, int64_t* len) {
  *len = t.ndim == 0 ? 1 : t.dim(-1);
  *lines = *len == 0 ? 0 : t.numel() / *len;
}

// hadamard({x, out, scale}, async)
Napi::Value hadamard(const Napi::CallbackInfo& info) {
  op_args a(info, kHadamardKeys);
  hadamard_params p;
  p.x = a.tensor("x", "hadamard: x");
  p.out = a.tensor("out", "hadamard: out");
  rows_of(p.x, &p.rows, &p.n);
  p.scale = static_cast<float>(a.number("scale", 1.0));
  return run_op(a.env(), "hadamard", p, op_device({&p.x}), a.async(), a.take_keep(), &hadamard_cpu,
                SSMKIT_CUDA_FN(hadamard_cuda));
}

// quantize({x, q, scale, bits, granularity, groupSize, static, hadamard}, async)
Napi::Value quantize(const Napi::CallbackInfo& info) {
  op_args a(info, kQuantizeKeys);
  quantize_params p;
  p.x = a.tensor("x", "quantize: x");
  p.q = a.tensor("q", "quantize: q");
  p.scale = a.tensor("scale", "quantize: scale");
  rows_of(p.x, &p.lines, &p.len);
  p.bits = static_cast<int32_t>(a.integer("bits", 8));
  p.granularity = static_cast<quant_granularity>(a.integer("granularity", QUANT_TENSOR));
  p.group_size = a.integer("groupSize", 0);
  p.lines_per_channel = p.x.ndim >= 2 && p.x.shape[0] > 0 ? p.lines / p.x.shape[0] : 1;
  p.static_scale = a.flag("static", false);
  p.hadamard = a.flag("hadamard", false);
  return run_op(a.env(), "quantize", p, op_device({&p.x}), a.async(), a.take_keep(), &quantize_cpu,
                SSMKIT_CUDA_FN(quantize_cuda));
}

// dequantize({q, scale, out, granularity, groupSize}, async)
Napi::Value dequantize(const Napi::CallbackInfo& info) {
  op_args a(info, kDequantizeKeys);
  dequantize_params p;
  p.q = a.tensor("q", "dequantize: q");
  p.scale = a.tensor("scale", "dequantize: scale");
  p.out = a.tensor("out", "dequantize: out");
  rows_of(p.q, &p.lines, &p.len);
  p.granularity = static_cast<quant_granularity>(a.integer("granularity", QUANT_TENSOR));
  p.group_size = a.integer("groupSize", 0);
  p.lines_per_channel = p.q.ndim >= 2 && p.q.shape[0] > 0 ? p.lines / p.q.shape[0] : 1;
  return run_op(a.env(), "dequantize", p, op_device({&p.q}), a.async(), a.take_keep(), &dequantize_cpu,
                SSMKIT_CUDA_FN(dequantize_cuda));
}

// packedWeightBytes(n, k, bits) -> number
Napi::Value packed_bytes(const Napi::CallbackInfo& info) {
  const int64_t n = static_cast<int64_t>(info[0].As<Napi::Number>().DoubleValue());
  const int64_t k = static_cast<int64_t>(info[1].As<Napi::Number>().DoubleValue());
  const int32_t bits = info[2].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(), static_cast<double>(packed_weight_bytes(n, k, bits)));
}

// packWeights({w, out, n, k, bits}, async)
Napi::Value pack_weights(const Napi::CallbackInfo& info) {
  op_args a(info, kPackWeightsKeys);
  pack_weights_params p;
  p.w = a.tensor("w", "packWeights: w");
  p.out = a.tensor("out", "packWeights: out");
  p.n = a.integer("n", 0);
  p.k = a.integer("k", 0);
  p.bits = static_cast<int32_t>(a.integer("bits", 8));
  return run_op(a.env(), "packWeights", p, op_device({&p.w}), a.async(), a.take_keep(), &pack_weights_cpu,
                SSMKIT_CUDA_FN(pack_weights_cuda));
}

// gemmW8A8({a, w, aScale, wScale, bias, out, m, n, k, packed}, async)
Napi::Value gemm_w8a8(const Napi::CallbackInfo& info) {
  op_args a(info, kGemmW8A8Keys);
  gemm_w8a8_params p;
  p.a = a.tensor("a", "gemmW8A8: a");
  p.w = a.tensor("w", "gemmW8A8: w");
  p.a_scale = a.tensor("aScale", "gemmW8A8: aScale");
  p.w_scale = a.tensor("wScale", "gemmW8A8: wScale");
  p.bias = a.tensor("bias", "gemmW8A8: bias");
  p.out = a.tensor("out", "gemmW8A8: out");
  p.m = a.integer("m", 0);
  p.n = a.integer("n", 0);
  p.k = a.integer("k", 0);
  p.w_packed = a.flag("packed", false);
  return run_op(a.env(), "gemmW8A8", p, op_device({&p.a}), a.async(), a.take_keep(), &gemm_w8a8_cpu,
                SSMKIT_CUDA_FN(gemm_w8a8_cuda));
}

// gemmW4A8({a, w, aScale, wScale, bias, out, m, n, k, groupSize, packed}, async)
Napi::Value gemm_w4a8(const Napi::CallbackInfo& info) {
  op_args a(info, kGemmW4A8Keys);
  gemm_w4a8_params p;
  p.a = a.tensor("a", "gemmW4A8: a");
  p.w = a.tensor("w", "gemmW4A8: w");
  p.a_scale = a.tensor("aScale", "gemmW4A8: aScale");
  p.w_scale = a.tensor("wScale", "gemmW4A8: wScale");
  p.bias = a.tensor("bias", "gemmW4A8: bias");
  p.out = a.tensor("out", "gemmW4A8: out");
  p.m = a.integer("m", 0);
  p.n = a.integer("n", 0);
  p.k = a.integer("k", 0);
  p.group_size = a.integer("groupSize", 0);
  p.w_packed = a.flag("packed", false);
  return run_op(a.env(), "gemmW4A8", p, op_device({&p.a}), a.async(), a.take_keep(), &gemm_w4a8_cpu,
                SSMKIT_CUDA_FN(gemm_w4a8_cuda));
}

// gemmW4A16({x, w, scales, bias, out, m, n, k, groupSize, packed}, async)
Napi::Value gemm_w4a16(const Napi::CallbackInfo& info) {
  op_args a(info, kGemmW4A16Keys);
  gemm_w4a16_params p;
  p.x = a.tensor("x", "gemmW4A16: x");
  p.w = a.tensor("w", "gemmW4A16: w");
  p.scales = a.tensor("scales", "gemmW4A16: scales");
  p.bias = a.tensor("bias", "gemmW4A16: bias");
  p.out = a.tensor("out", "gemmW4A16: out");
  p.m = a.integer("m", 0);
  p.n = a.integer("n", 0);
  p.k = a.integer("k", 0);
  p.group_size = a.integer("groupSize", 0);
  p.w_packed = a.flag("packed", false);
  return run_op(a.env(), "gemmW4A16", p, op_device({&p.x}), a.async(), a.take_keep(), &gemm_w4a16_cpu,
                SSMKIT_CUDA_FN(gemm_w4a16_cuda));
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "hadamard", hadamard, kHadamardKeys);
  export_op(env, exports, "quantize", quantize, kQuantizeKeys);
  export_op(env, exports, "dequantize", dequantize, kDequantizeKeys);
  exports.Set("packedWeightBytes", Napi::Function::New(env, packed_bytes));
  export_op(env, exports, "packWeights", pack_weights, kPackWeightsKeys);
  export_op(env, exports, "gemmW8A8", gemm_w8a8, kGemmW8A8Keys);
  export_op(env, exports, "gemmW4A8", gemm_w4a8, kGemmW4A8Keys);
  export_op(env, exports, "gemmW4A16", gemm_w4a16, kGemmW4A16Keys);
}

}  // namespace ssmkit::napi
