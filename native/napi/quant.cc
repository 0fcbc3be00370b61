// Node-API bindings of the quantization family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/quant.ts has validated every argument; here each op's params struct is filled in one function.
#include "ssmkit/quant.h"

#include "common.h"

namespace ssmkit::napi {
namespace {

int64_t get_int(Napi::Object o, const char* key, int64_t fallback) {
  return static_cast<int64_t>(get_number(o, key, static_cast<double>(fallback)));
}

// The rows of a tensor's last dimension: (lines, len).
void rows_of(const tensor_view& t, int64_t* lines, int64_t* len) {
  *len = t.ndim == 0 ? 1 : t.dim(-1);
  *lines = *len == 0 ? 0 : t.numel() / *len;
}

// hadamard({x, out, scale}, async)
Napi::Value hadamard(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  hadamard_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "hadamard: x");
  p.out = read_tensor(env, a.Get("out"), keep, "hadamard: out");
  rows_of(p.x, &p.rows, &p.n);
  p.scale = static_cast<float>(get_number(a, "scale", 1.0));
  return run_op(env, "hadamard", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep), &hadamard_cpu,
                SSMKIT_CUDA_FN(hadamard_cuda));
}

// quantize({x, q, scale, bits, granularity, groupSize, static, hadamard}, async)
Napi::Value quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  quantize_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "quantize: x");
  p.q = read_tensor(env, a.Get("q"), keep, "quantize: q");
  p.scale = read_tensor(env, a.Get("scale"), keep, "quantize: scale");
  rows_of(p.x, &p.lines, &p.len);
  p.bits = static_cast<int32_t>(get_int(a, "bits", 8));
  p.granularity = static_cast<quant_granularity>(get_int(a, "granularity", QUANT_TENSOR));
  p.group_size = get_int(a, "groupSize", 0);
  p.lines_per_channel = p.x.ndim >= 2 && p.x.shape[0] > 0 ? p.lines / p.x.shape[0] : 1;
  p.static_scale = get_bool(a, "static", false);
  p.hadamard = get_bool(a, "hadamard", false);
  return run_op(env, "quantize", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep), &quantize_cpu,
                SSMKIT_CUDA_FN(quantize_cuda));
}

// dequantize({q, scale, out, granularity, groupSize}, async)
Napi::Value dequantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  dequantize_params p;
  p.q = read_tensor(env, a.Get("q"), keep, "dequantize: q");
  p.scale = read_tensor(env, a.Get("scale"), keep, "dequantize: scale");
  p.out = read_tensor(env, a.Get("out"), keep, "dequantize: out");
  rows_of(p.q, &p.lines, &p.len);
  p.granularity = static_cast<quant_granularity>(get_int(a, "granularity", QUANT_TENSOR));
  p.group_size = get_int(a, "groupSize", 0);
  p.lines_per_channel = p.q.ndim >= 2 && p.q.shape[0] > 0 ? p.lines / p.q.shape[0] : 1;
  return run_op(env, "dequantize", p, op_device({&p.q}), info[1].ToBoolean(), std::move(keep),
                &dequantize_cpu, SSMKIT_CUDA_FN(dequantize_cuda));
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
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  pack_weights_params p;
  p.w = read_tensor(env, a.Get("w"), keep, "packWeights: w");
  p.out = read_tensor(env, a.Get("out"), keep, "packWeights: out");
  p.n = get_int(a, "n", 0);
  p.k = get_int(a, "k", 0);
  p.bits = static_cast<int32_t>(get_int(a, "bits", 8));
  return run_op(env, "packWeights", p, op_device({&p.w}), info[1].ToBoolean(), std::move(keep),
                &pack_weights_cpu, SSMKIT_CUDA_FN(pack_weights_cuda));
}

// gemmW8A8({a, w, aScale, wScale, bias, out, m, n, k, packed}, async)
Napi::Value gemm_w8a8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  gemm_w8a8_params p;
  p.a = read_tensor(env, a.Get("a"), keep, "gemmW8A8: a");
  p.w = read_tensor(env, a.Get("w"), keep, "gemmW8A8: w");
  p.a_scale = read_tensor(env, a.Get("aScale"), keep, "gemmW8A8: aScale");
  p.w_scale = read_tensor(env, a.Get("wScale"), keep, "gemmW8A8: wScale");
  p.bias = read_tensor(env, a.Get("bias"), keep, "gemmW8A8: bias");
  p.out = read_tensor(env, a.Get("out"), keep, "gemmW8A8: out");
  p.m = get_int(a, "m", 0);
  p.n = get_int(a, "n", 0);
  p.k = get_int(a, "k", 0);
  p.w_packed = get_bool(a, "packed", false);
  return run_op(env, "gemmW8A8", p, op_device({&p.a}), info[1].ToBoolean(), std::move(keep), &gemm_w8a8_cpu,
                SSMKIT_CUDA_FN(gemm_w8a8_cuda));
}

// gemmW4A8({a, w, aScale, wScale, bias, out, m, n, k, groupSize, packed}, async)
Napi::Value gemm_w4a8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  gemm_w4a8_params p;
  p.a = read_tensor(env, a.Get("a"), keep, "gemmW4A8: a");
  p.w = read_tensor(env, a.Get("w"), keep, "gemmW4A8: w");
  p.a_scale = read_tensor(env, a.Get("aScale"), keep, "gemmW4A8: aScale");
  p.w_scale = read_tensor(env, a.Get("wScale"), keep, "gemmW4A8: wScale");
  p.bias = read_tensor(env, a.Get("bias"), keep, "gemmW4A8: bias");
  p.out = read_tensor(env, a.Get("out"), keep, "gemmW4A8: out");
  p.m = get_int(a, "m", 0);
  p.n = get_int(a, "n", 0);
  p.k = get_int(a, "k", 0);
  p.group_size = get_int(a, "groupSize", 0);
  p.w_packed = get_bool(a, "packed", false);
  return run_op(env, "gemmW4A8", p, op_device({&p.a}), info[1].ToBoolean(), std::move(keep), &gemm_w4a8_cpu,
                SSMKIT_CUDA_FN(gemm_w4a8_cuda));
}

// gemmW4A16({x, w, scales, bias, out, m, n, k, groupSize, packed}, async)
Napi::Value gemm_w4a16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  gemm_w4a16_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "gemmW4A16: x");
  p.w = read_tensor(env, a.Get("w"), keep, "gemmW4A16: w");
  p.scales = read_tensor(env, a.Get("scales"), keep, "gemmW4A16: scales");
  p.bias = read_tensor(env, a.Get("bias"), keep, "gemmW4A16: bias");
  p.out = read_tensor(env, a.Get("out"), keep, "gemmW4A16: out");
  p.m = get_int(a, "m", 0);
  p.n = get_int(a, "n", 0);
  p.k = get_int(a, "k", 0);
  p.group_size = get_int(a, "groupSize", 0);
  p.w_packed = get_bool(a, "packed", false);
  return run_op(env, "gemmW4A16", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep), &gemm_w4a16_cpu,
                SSMKIT_CUDA_FN(gemm_w4a16_cuda));
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  exports.Set("hadamard", Napi::Function::New(env, hadamard));
  exports.Set("quantize", Napi::Function::New(env, quantize));
  exports.Set("dequantize", Napi::Function::New(env, dequantize));
  exports.Set("packedWeightBytes", Napi::Function::New(env, packed_bytes));
  exports.Set("packWeights", Napi::Function::New(env, pack_weights));
  exports.Set("gemmW8A8", Napi::Function::New(env, gemm_w8a8));
  exports.Set("gemmW4A8", Napi::Function::New(env, gemm_w4a8));
  exports.Set("gemmW4A16", Napi::Function::New(env, gemm_w4a16));
}

}  // namespace ssmkit::napi
