// Node-API bindings of the model building blocks (linear layers, norms, embeddings) that the model
// runner composes with the op families: JS arguments -> params struct -> CPU pool or stream (the CUDA
// kernels are in native/cuda/nn.cu).
#include "ssmkit/nn.h"

#include <memory>
#include <vector>

#include "common.h"

namespace ssmkit::napi {
namespace {

int64_t get_int(Napi::Object o, const char* key, int64_t fallback) {
  return static_cast<int64_t>(get_number(o, key, static_cast<double>(fallback)));
}

// packLinear({w, out}, async)
Napi::Value pack_linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  pack_linear_params p;
  p.w = read_tensor(env, a.Get("w"), keep, "packLinear: w");
  p.out = read_tensor(env, a.Get("out"), keep, "packLinear: out");
  p.n = p.w.dim(0);
  p.k = p.w.dim(1);
  return run_op<pack_linear_params>(env, "packLinear", p, op_device({&p.w}), info[1].ToBoolean(),
                                    std::move(keep), &pack_linear_cpu, SSMKIT_CUDA_FN(pack_linear_cuda));
}

// linear({x, w, bias, m, k, n, seqlen, xTransposed, outputs: [{out, col0, cols, transposed}]}, async)
Napi::Value linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  linear_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "linear: x");
  p.w = read_tensor(env, a.Get("w"), keep, "linear: w");
  p.bias = read_tensor(env, a.Get("bias"), keep, "linear: bias");
  p.m = get_int(a, "m", 0);
  p.k = get_int(a, "k", 0);
  p.n = get_int(a, "n", 0);
  p.seqlen = get_int(a, "seqlen", 1);
  p.x_transposed = get_bool(a, "xTransposed", false);
  Napi::Array outs = a.Get("outputs").As<Napi::Array>();
  p.num_outputs = static_cast<int>(std::min<uint32_t>(outs.Length(), kLinearMaxOutputs));
  for (int i = 0; i < p.num_outputs; ++i) {
    Napi::Object o = outs.Get(static_cast<uint32_t>(i)).As<Napi::Object>();
    linear_output& lo = p.outputs[i];
    lo.out = read_tensor(env, o.Get("out"), keep, "linear: out");
    lo.col0 = get_int(o, "col0", 0);
    lo.cols = get_int(o, "cols", 0);
    lo.transposed = get_bool(o, "transposed", false);
  }
  return run_op<linear_params>(env, "linear", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep),
                               &linear_cpu, SSMKIT_CUDA_FN(linear_cuda));
}

// splitColumns({x, m, n, seqlen, outputs: [{out, col0, cols, transposed}]}, async)
Napi::Value split_columns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  split_columns_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "splitColumns: x");
  p.m = get_int(a, "m", 0);
  p.n = get_int(a, "n", 0);
  p.seqlen = get_int(a, "seqlen", 1);
  Napi::Array outs = a.Get("outputs").As<Napi::Array>();
  p.num_outputs = static_cast<int>(std::min<uint32_t>(outs.Length(), kLinearMaxOutputs));
  for (int i = 0; i < p.num_outputs; ++i) {
    Napi::Object o = outs.Get(static_cast<uint32_t>(i)).As<Napi::Object>();
    linear_output& lo = p.outputs[i];
    lo.out = read_tensor(env, o.Get("out"), keep, "splitColumns: out");
    lo.col0 = get_int(o, "col0", 0);
    lo.cols = get_int(o, "cols", 0);
    lo.transposed = get_bool(o, "transposed", false);
  }
  return run_op<split_columns_params>(env, "splitColumns", p, op_device({&p.x}), info[1].ToBoolean(),
                                      std::move(keep), &split_columns_cpu,
                                      SSMKIT_CUDA_FN(split_columns_cuda));
}

// rmsNorm({x, residual, residualOut, weight, out, rows, d, lastOf, eps}, async)
Napi::Value rms_norm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  rms_norm_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "rmsNorm: x");
  p.residual = read_tensor(env, a.Get("residual"), keep, "rmsNorm: residual");
  p.residual_out = read_tensor(env, a.Get("residualOut"), keep, "rmsNorm: residualOut");
  p.weight = read_tensor(env, a.Get("weight"), keep, "rmsNorm: weight");
  p.out = read_tensor(env, a.Get("out"), keep, "rmsNorm: out");
  p.rows = get_int(a, "rows", 0);
  p.d = get_int(a, "d", 0);
  p.last_of = get_int(a, "lastOf", 0);
  p.eps = static_cast<float>(get_number(a, "eps", 1e-5));
  return run_op<rms_norm_params>(env, "rmsNorm", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep),
                                 &rms_norm_cpu, SSMKIT_CUDA_FN(rms_norm_cuda));
}

// gatedRmsNorm({y, z, weight, out, rows, d, groups, eps}, async)
Napi::Value gated_rms_norm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  gated_rms_norm_params p;
  p.y = read_tensor(env, a.Get("y"), keep, "gatedRmsNorm: y");
  p.z = read_tensor(env, a.Get("z"), keep, "gatedRmsNorm: z");
  p.weight = read_tensor(env, a.Get("weight"), keep, "gatedRmsNorm: weight");
  p.out = read_tensor(env, a.Get("out"), keep, "gatedRmsNorm: out");
  p.rows = get_int(a, "rows", 0);
  p.d = get_int(a, "d", 0);
  p.groups = get_int(a, "groups", 1);
  p.eps = static_cast<float>(get_number(a, "eps", 1e-5));
  return run_op<gated_rms_norm_params>(env, "gatedRmsNorm", p, op_device({&p.y}), info[1].ToBoolean(),
                                       std::move(keep), &gated_rms_norm_cpu,
                                       SSMKIT_CUDA_FN(gated_rms_norm_cuda));
}

// embedding({ids, weight, out, count, vocab, d, packed}, async)
Napi::Value embedding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  embedding_params p;
  p.ids = read_tensor(env, a.Get("ids"), keep, "embedding: ids");
  p.weight = read_tensor(env, a.Get("weight"), keep, "embedding: weight");
  p.out = read_tensor(env, a.Get("out"), keep, "embedding: out");
  p.count = get_int(a, "count", 0);
  p.vocab = get_int(a, "vocab", 0);
  p.d = get_int(a, "d", 0);
  p.packed = get_bool(a, "packed", false);
  return run_op<embedding_params>(env, "embedding", p, op_device({&p.ids}), info[1].ToBoolean(),
                                  std::move(keep), &embedding_cpu, SSMKIT_CUDA_FN(embedding_cuda));
}

// transposeSplit({x, batch, r, c, outputs: [{out, row0, rows}]}, async)
Napi::Value transpose_split(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  transpose_split_params p;
  p.x = read_tensor(env, a.Get("x"), keep, "transposeSplit: x");
  p.batch = get_int(a, "batch", 0);
  p.r = get_int(a, "r", 0);
  p.c = get_int(a, "c", 0);
  Napi::Array outs = a.Get("outputs").As<Napi::Array>();
  p.num_outputs = static_cast<int>(std::min<uint32_t>(outs.Length(), kLinearMaxOutputs));
  for (int i = 0; i < p.num_outputs; ++i) {
    Napi::Object o = outs.Get(static_cast<uint32_t>(i)).As<Napi::Object>();
    split_output& so = p.outputs[i];
    so.out = read_tensor(env, o.Get("out"), keep, "transposeSplit: out");
    so.row0 = get_int(o, "row0", 0);
    so.rows = get_int(o, "rows", 0);
  }
  return run_op<transpose_split_params>(env, "transposeSplit", p, op_device({&p.x}), info[1].ToBoolean(),
                                        std::move(keep), &transpose_split_cpu,
                                        SSMKIT_CUDA_FN(transpose_split_cuda));
}

// dtLimit({dt, bias, out, rows, heads, lo, hi}, async)
Napi::Value dt_limit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  dt_limit_params p;
  p.dt = read_tensor(env, a.Get("dt"), keep, "dtLimit: dt");
  p.bias = read_tensor(env, a.Get("bias"), keep, "dtLimit: bias");
  p.out = read_tensor(env, a.Get("out"), keep, "dtLimit: out");
  p.rows = get_int(a, "rows", 0);
  p.heads = get_int(a, "heads", 0);
  p.lo = static_cast<float>(get_number(a, "lo", 0.0));
  p.hi = static_cast<float>(get_number(a, "hi", 3.4e38));
  return run_op<dt_limit_params>(env, "dtLimit", p, op_device({&p.dt}), info[1].ToBoolean(), std::move(keep),
                                 &dt_limit_cpu, SSMKIT_CUDA_FN(dt_limit_cuda));
}

// sample({logits, draws, tokens, rows, vocab, temperature, topK, topP}, async)
sample_params read_sample(Napi::Env env, Napi::Object a, keepalive& keep) {
  sample_params p;
  p.logits = read_tensor(env, a.Get("logits"), keep, "sample: logits");
  p.draws = read_tensor(env, a.Get("draws"), keep, "sample: draws");
  p.tokens = read_tensor(env, a.Get("tokens"), keep, "sample: tokens");
  p.rows = get_int(a, "rows", 0);
  p.vocab = get_int(a, "vocab", 0);
  p.temperature = static_cast<float>(get_number(a, "temperature", 0.0));
  p.top_k = get_int(a, "topK", 0);
  p.top_p = static_cast<float>(get_number(a, "topP", 1.0));
  return p;
}

Napi::Value sample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  sample_params p = read_sample(env, info[0].As<Napi::Object>(), keep);
  return run_op<sample_params>(env, "sample", p, op_device({&p.logits}), info[1].ToBoolean(), std::move(keep),
                               &sample_cpu, SSMKIT_CUDA_FN(sample_cuda));
}

// ---- the fused decode step ----------------------------------------------------------------------------

// A model's weights as views, built once; JS keeps the External (and so the references that keep its
// TypedArrays alive) for as long as the model lives, and every step holds it until it finishes.
// Both start with a tag that decodeStep checks, so that a wrong External is an error, not a crash.
constexpr uint32_t kPlanTag = 0x6e6e706c;    // "nnpl"
constexpr uint32_t kStatesTag = 0x6e6e7374;  // "nnst"

struct decode_plan {
  uint32_t tag = kPlanTag;
  mamba_decode_model model;
  std::vector<mamba_layer_weights> layers;
  keepalive keep;
};

struct decode_states {
  uint32_t tag = kStatesTag;
  std::vector<tensor_view> conv;
  std::vector<tensor_view> ssm;
  keepalive keep;
};

linear_weight read_linear(Napi::Env env, Napi::Value v, keepalive& keep, const char* what) {
  linear_weight lw;
  if (!v.IsObject()) return lw;
  Napi::Object o = v.As<Napi::Object>();
  lw.kind = static_cast<linear_kind>(get_int(o, "kind", LINEAR_FLOAT));
  lw.w = read_tensor(env, o.Get("w"), keep, what);
  lw.bias = read_tensor(env, o.Get("bias"), keep, what);
  lw.w_scale = read_tensor(env, o.Get("wScale"), keep, what);
  lw.act_scale = read_tensor(env, o.Get("actScale"), keep, what);
  lw.n = get_int(o, "n", 0);
  lw.k = get_int(o, "k", 0);
  lw.group_size = get_int(o, "groupSize", 0);
  lw.rotate = get_bool(o, "rotate", false);
  return lw;
}

// decodePlan({mamba2, act, residualFp32, dModel, ..., layers: [...], normF, head, embed, embedPacked})
Napi::Value decode_plan_new(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  auto plan = std::make_unique<decode_plan>();
  mamba_decode_model& m = plan->model;
  keepalive& keep = plan->keep;
  m.mamba2 = get_bool(a, "mamba2", false);
  m.act = static_cast<ssmkit_dtype>(get_int(a, "act", SSMKIT_DTYPE_F32));
  m.residual_fp32 = get_bool(a, "residualFp32", true);
  m.d_model = get_int(a, "dModel", 0);
  m.d_inner = get_int(a, "dInner", 0);
  m.d_state = get_int(a, "dState", 0);
  m.dt_rank = get_int(a, "dtRank", 0);
  m.nheads = get_int(a, "nheads", 0);
  m.headdim = get_int(a, "headdim", 0);
  m.ngroups = get_int(a, "ngroups", 1);
  m.conv_width = get_int(a, "convWidth", 0);
  m.vocab = get_int(a, "vocab", 0);
  m.eps = static_cast<float>(get_number(a, "eps", 1e-5));
  m.dt_limited = get_bool(a, "dtLimited", false);
  m.dt_lo = static_cast<float>(get_number(a, "dtLo", 0.0));
  m.dt_hi = static_cast<float>(get_number(a, "dtHi", 3.4e38));
  Napi::Array layers = a.Get("layers").As<Napi::Array>();
  for (uint32_t i = 0; i < layers.Length(); ++i) {
    Napi::Object o = layers.Get(i).As<Napi::Object>();
    mamba_layer_weights w;
    w.norm = read_tensor(env, o.Get("norm"), keep, "decodePlan: norm");
    w.in_proj = read_linear(env, o.Get("inProj"), keep, "decodePlan: inProj");
    w.x_proj = read_linear(env, o.Get("xProj"), keep, "decodePlan: xProj");
    w.dt_proj = read_linear(env, o.Get("dtProj"), keep, "decodePlan: dtProj");
    w.out_proj = read_linear(env, o.Get("outProj"), keep, "decodePlan: outProj");
    w.conv_weight = read_tensor(env, o.Get("conv"), keep, "decodePlan: conv");
    w.conv_bias = read_tensor(env, o.Get("convBias"), keep, "decodePlan: convBias");
    w.dt_bias = read_tensor(env, o.Get("dtBias"), keep, "decodePlan: dtBias");
    w.A = read_tensor(env, o.Get("A"), keep, "decodePlan: A");
    w.D = read_tensor(env, o.Get("D"), keep, "decodePlan: D");
    w.gated_norm = read_tensor(env, o.Get("gatedNorm"), keep, "decodePlan: gatedNorm");
    plan->layers.push_back(w);
  }
  m.num_layers = static_cast<int>(plan->layers.size());
  m.layers = plan->layers.data();
  m.norm_f = read_tensor(env, a.Get("normF"), keep, "decodePlan: normF");
  m.head = read_linear(env, a.Get("head"), keep, "decodePlan: head");
  m.embed = read_tensor(env, a.Get("embed"), keep, "decodePlan: embed");
  m.embed_packed = get_bool(a, "embedPacked", false);
  return Napi::External<decode_plan>::New(env, plan.release(), [](Napi::Env, decode_plan* p) { delete p; });
}

// decodeStates(conv: tensor[], ssm: tensor[])
Napi::Value decode_states_new(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto st = std::make_unique<decode_states>();
  if (!info[0].IsArray() || !info[1].IsArray() ||
      info[0].As<Napi::Array>().Length() != info[1].As<Napi::Array>().Length()) {
    throw make_error(
        env, make_status(status_code::value, "decodeStates: expected two arrays of one tensor per layer"));
  }
  Napi::Array conv = info[0].As<Napi::Array>();
  Napi::Array ssm = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < conv.Length(); ++i) {
    st->conv.push_back(read_tensor(env, conv.Get(i), st->keep, "decodeStates: conv"));
    st->ssm.push_back(read_tensor(env, ssm.Get(i), st->keep, "decodeStates: ssm"));
  }
  return Napi::External<decode_states>::New(env, st.release(), [](Napi::Env, decode_states* s) { delete s; });
}

// decodeStep({plan, states, ids, logits}, async)
Napi::Value decode_step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object a = info[0].As<Napi::Object>();
  keepalive keep;
  Napi::Value plan_v = a.Get("plan");
  Napi::Value states_v = a.Get("states");
  if (!plan_v.IsExternal() || !states_v.IsExternal()) {
    throw make_error(
        env, make_status(status_code::value, "decodeStep: plan and states must come from decodePlan"));
  }
  // The step holds both Externals (and through them every weight and state buffer) until it finishes.
  keep.emplace_back(Napi::Persistent(plan_v));
  keep.emplace_back(Napi::Persistent(states_v));
  const decode_plan* plan = plan_v.As<Napi::External<decode_plan>>().Data();
  const decode_states* st = states_v.As<Napi::External<decode_states>>().Data();
  if (plan == nullptr || st == nullptr || plan->tag != kPlanTag || st->tag != kStatesTag) {
    throw make_error(env,
                     make_status(status_code::value,
                                 "decodeStep: plan and states must come from decodePlan and decodeStates"));
  }
  mamba_decode_params p;
  p.model = &plan->model;
  p.ids = read_tensor(env, a.Get("ids"), keep, "decodeStep: ids");
  p.logits = read_tensor(env, a.Get("logits"), keep, "decodeStep: logits");
  p.conv_states = st->conv.data();
  p.ssm_states = st->ssm.data();
  p.batch = p.ids.numel();
  Napi::Value sampling = a.Get("sample");
  if (sampling.IsObject()) p.sample = read_sample(env, sampling.As<Napi::Object>(), keep);
  if (static_cast<int>(st->conv.size()) != plan->model.num_layers) {
    throw make_error(env, make_status(status_code::shape,
                                      "decodeStep: states: one conv and ssm state per layer expected"));
  }
  return run_op<mamba_decode_params>(env, "decodeStep", p, op_device({&p.ids}), info[1].ToBoolean(),
                                     std::move(keep), &mamba_decode_step_cpu,
                                     SSMKIT_CUDA_FN(mamba_decode_step_cuda));
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  exports.Set("packLinear", Napi::Function::New(env, pack_linear));
  exports.Set("linear", Napi::Function::New(env, linear));
  exports.Set("splitColumns", Napi::Function::New(env, split_columns));
  exports.Set("rmsNorm", Napi::Function::New(env, rms_norm));
  exports.Set("gatedRmsNorm", Napi::Function::New(env, gated_rms_norm));
  exports.Set("embedding", Napi::Function::New(env, embedding));
  exports.Set("transposeSplit", Napi::Function::New(env, transpose_split));
  exports.Set("dtLimit", Napi::Function::New(env, dt_limit));
  exports.Set("sample", Napi::Function::New(env, sample));
  exports.Set("decodePlan", Napi::Function::New(env, decode_plan_new));
  exports.Set("decodeStates", Napi::Function::New(env, decode_states_new));
  exports.Set("decodeStep", Napi::Function::New(env, decode_step));
}

}  // namespace ssmkit::napi
