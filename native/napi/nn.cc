// Node-API bindings of the model building blocks (linear layers, norms, embeddings) that the model
// runner composes with the op families: JS arguments -> params struct -> CPU pool or stream (the CUDA
// kernels are in native/cuda/nn.cu). Each op's key list names its arguments in the order lib/ops/run.ts
// passes them (common.h: op_args); nested objects (linear's outputs, decodeStep's sample) and the
// once-per-model decodePlan/decodeStates are read by name.
#include "ssmkit/nn.h"

#include <memory>
#include <vector>

#include "common.h"

namespace ssmkit::napi {
namespace {

// Each op's arguments in the order lib/ops/run.ts passes them (and the order they are read below).
constexpr const char* kPackLinearKeys[] = {"w", "out"};
constexpr const char* kLinearKeys[] = {"x", "w", "bias", "m", "k", "n", "seqlen", "xTransposed", "outputs"};
constexpr const char* kSplitColumnsKeys[] = {"x", "m", "n", "seqlen", "outputs"};
constexpr const char* kRmsNormKeys[] = {"x",    "residual", "residualOut", "weight", "out",
                                        "rows", "d",        "lastOf",      "eps"};
constexpr const char* kGatedRmsNormKeys[] = {"y", "z", "weight", "out", "rows", "d", "groups", "eps"};
constexpr const char* kEmbeddingKeys[] = {"ids", "weight", "out", "count", "vocab", "d", "packed"};
constexpr const char* kTransposeSplitKeys[] = {"x", "batch", "r", "c", "outputs"};
constexpr const char* kSampleKeys[] = {"logits", "draws",       "tokens", "rows",
                                       "vocab",  "temperature", "topK",   "topP"};
constexpr const char* kDecodeStepKeys[] = {"plan", "states", "ids", "logits", "sample"};
constexpr const char* kDtLimitKeys[] = {"dt", "bias", "out", "rows", "heads", "lo", "hi"};

int64_t get_int(Napi::Object o, const char* key, int64_t fallback) {
  return static_cast<int64_t>(get_number(o, key, static_cast<double>(fallback)));
}

// packLinear({w, out}, async)
Napi::Value pack_linear(const Napi::CallbackInfo& info) {
  op_args a(info, kPackLinearKeys);
  pack_linear_params p;
  p.w = a.tensor("w", "packLinear: w");
  p.out = a.tensor("out", "packLinear: out");
  p.n = p.w.dim(0);
  p.k = p.w.dim(1);
  return run_op<pack_linear_params>(a.env(), "packLinear", p, op_device({&p.w}), a.async(), a.take_keep(),
                                    &pack_linear_cpu, SSMKIT_CUDA_FN(pack_linear_cuda));
}

// The `outputs` list of linear and splitColumns ([{out, col0, cols, transposed}], at most
// kLinearMaxOutputs) into `outs`; returns how many.
int read_outputs(op_args& a, const char* what, linear_output* outs) {
  Napi::Array list = a.value("outputs").As<Napi::Array>();
  const int count = static_cast<int>(std::min<uint32_t>(list.Length(), kLinearMaxOutputs));
  for (int i = 0; i < count; ++i) {
    op_args o(a, list.Get(static_cast<uint32_t>(i)));
    outs[i].out = o.tensor("out", what);
    outs[i].col0 = o.integer("col0", 0);
    outs[i].cols = o.integer("cols", 0);
    outs[i].transposed = o.flag("transposed", false);
  }
  return count;
}

// linear({x, w, bias, m, k, n, seqlen, xTransposed, outputs: [{out, col0, cols, transposed}]}, async)
Napi::Value linear(const Napi::CallbackInfo& info) {
  op_args a(info, kLinearKeys);
  linear_params p;
  p.x = a.tensor("x", "linear: x");
  p.w = a.tensor("w", "linear: w");
  p.bias = a.tensor("bias", "linear: bias");
  p.m = a.integer("m", 0);
  p.k = a.integer("k", 0);
  p.n = a.integer("n", 0);
  p.seqlen = a.integer("seqlen", 1);
  p.x_transposed = a.flag("xTransposed", false);
  p.num_outputs = read_outputs(a, "linear: out", p.outputs);
  return run_op<linear_params>(a.env(), "linear", p, op_device({&p.x}), a.async(), a.take_keep(), &linear_cpu,
                               SSMKIT_CUDA_FN(linear_cuda));
}

// splitColumns({x, m, n, seqlen, outputs: [{out, col0, cols, transposed}]}, async)
Napi::Value split_columns(const Napi::CallbackInfo& info) {
  op_args a(info, kSplitColumnsKeys);
  split_columns_params p;
  p.x = a.tensor("x", "splitColumns: x");
  p.m = a.integer("m", 0);
  p.n = a.integer("n", 0);
  p.seqlen = a.integer("seqlen", 1);
  p.num_outputs = read_outputs(a, "splitColumns: out", p.outputs);
  return run_op<split_columns_params>(a.env(), "splitColumns", p, op_device({&p.x}), a.async(), a.take_keep(),
                                      &split_columns_cpu, SSMKIT_CUDA_FN(split_columns_cuda));
}

// rmsNorm({x, residual, residualOut, weight, out, rows, d, lastOf, eps}, async)
Napi::Value rms_norm(const Napi::CallbackInfo& info) {
  op_args a(info, kRmsNormKeys);
  rms_norm_params p;
  p.x = a.tensor("x", "rmsNorm: x");
  p.residual = a.tensor("residual", "rmsNorm: residual");
  p.residual_out = a.tensor("residualOut", "rmsNorm: residualOut");
  p.weight = a.tensor("weight", "rmsNorm: weight");
  p.out = a.tensor("out", "rmsNorm: out");
  p.rows = a.integer("rows", 0);
  p.d = a.integer("d", 0);
  p.last_of = a.integer("lastOf", 0);
  p.eps = static_cast<float>(a.number("eps", 1e-5));
  return run_op<rms_norm_params>(a.env(), "rmsNorm", p, op_device({&p.x}), a.async(), a.take_keep(),
                                 &rms_norm_cpu, SSMKIT_CUDA_FN(rms_norm_cuda));
}

// gatedRmsNorm({y, z, weight, out, rows, d, groups, eps}, async)
Napi::Value gated_rms_norm(const Napi::CallbackInfo& info) {
  op_args a(info, kGatedRmsNormKeys);
  gated_rms_norm_params p;
  p.y = a.tensor("y", "gatedRmsNorm: y");
  p.z = a.tensor("z", "gatedRmsNorm: z");
  p.weight = a.tensor("weight", "gatedRmsNorm: weight");
  p.out = a.tensor("out", "gatedRmsNorm: out");
  p.rows = a.integer("rows", 0);
  p.d = a.integer("d", 0);
  p.groups = a.integer("groups", 1);
  p.eps = static_cast<float>(a.number("eps", 1e-5));
  return run_op<gated_rms_norm_params>(a.env(), "gatedRmsNorm", p, op_device({&p.y}), a.async(),
                                       a.take_keep(), &gated_rms_norm_cpu,
                                       SSMKIT_CUDA_FN(gated_rms_norm_cuda));
}

// embedding({ids, weight, out, count, vocab, d, packed}, async)
Napi::Value embedding(const Napi::CallbackInfo& info) {
  op_args a(info, kEmbeddingKeys);
  embedding_params p;
  p.ids = a.tensor("ids", "embedding: ids");
  p.weight = a.tensor("weight", "embedding: weight");
  p.out = a.tensor("out", "embedding: out");
  p.count = a.integer("count", 0);
  p.vocab = a.integer("vocab", 0);
  p.d = a.integer("d", 0);
  p.packed = a.flag("packed", false);
  return run_op<embedding_params>(a.env(), "embedding", p, op_device({&p.ids}), a.async(), a.take_keep(),
                                  &embedding_cpu, SSMKIT_CUDA_FN(embedding_cuda));
}

// transposeSplit({x, batch, r, c, outputs: [{out, row0, rows}]}, async)
Napi::Value transpose_split(const Napi::CallbackInfo& info) {
  op_args a(info, kTransposeSplitKeys);
  transpose_split_params p;
  p.x = a.tensor("x", "transposeSplit: x");
  p.batch = a.integer("batch", 0);
  p.r = a.integer("r", 0);
  p.c = a.integer("c", 0);
  Napi::Array outs = a.value("outputs").As<Napi::Array>();
  p.num_outputs = static_cast<int>(std::min<uint32_t>(outs.Length(), kLinearMaxOutputs));
  for (int i = 0; i < p.num_outputs; ++i) {
    op_args o(a, outs.Get(static_cast<uint32_t>(i)));
    split_output& so = p.outputs[i];
    so.out = o.tensor("out", "transposeSplit: out");
    so.row0 = o.integer("row0", 0);
    so.rows = o.integer("rows", 0);
  }
  return run_op<transpose_split_params>(a.env(), "transposeSplit", p, op_device({&p.x}), a.async(),
                                        a.take_keep(), &transpose_split_cpu,
                                        SSMKIT_CUDA_FN(transpose_split_cuda));
}

// dtLimit({dt, bias, out, rows, heads, lo, hi}, async)
Napi::Value dt_limit(const Napi::CallbackInfo& info) {
  op_args a(info, kDtLimitKeys);
  dt_limit_params p;
  p.dt = a.tensor("dt", "dtLimit: dt");
  p.bias = a.tensor("bias", "dtLimit: bias");
  p.out = a.tensor("out", "dtLimit: out");
  p.rows = a.integer("rows", 0);
  p.heads = a.integer("heads", 0);
  p.lo = static_cast<float>(a.number("lo", 0.0));
  p.hi = static_cast<float>(a.number("hi", 3.4e38));
  return run_op<dt_limit_params>(a.env(), "dtLimit", p, op_device({&p.dt}), a.async(), a.take_keep(),
                                 &dt_limit_cpu, SSMKIT_CUDA_FN(dt_limit_cuda));
}

// sample({logits, draws, tokens, rows, vocab, temperature, topK, topP}, async), or the same object nested
// in decodeStep's arguments.
sample_params read_sample(op_args& a) {
  sample_params p;
  p.logits = a.tensor("logits", "sample: logits");
  p.draws = a.tensor("draws", "sample: draws");
  p.tokens = a.tensor("tokens", "sample: tokens");
  p.rows = a.integer("rows", 0);
  p.vocab = a.integer("vocab", 0);
  p.temperature = static_cast<float>(a.number("temperature", 0.0));
  p.top_k = a.integer("topK", 0);
  p.top_p = static_cast<float>(a.number("topP", 1.0));
  return p;
}

Napi::Value sample(const Napi::CallbackInfo& info) {
  op_args a(info, kSampleKeys);
  sample_params p = read_sample(a);
  return run_op<sample_params>(a.env(), "sample", p, op_device({&p.logits}), a.async(), a.take_keep(),
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
  lw.w = read_tensor(env, o.Get("w"), &keep, what);
  lw.bias = read_tensor(env, o.Get("bias"), &keep, what);
  lw.w_scale = read_tensor(env, o.Get("wScale"), &keep, what);
  lw.act_scale = read_tensor(env, o.Get("actScale"), &keep, what);
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
    w.norm = read_tensor(env, o.Get("norm"), &keep, "decodePlan: norm");
    w.in_proj = read_linear(env, o.Get("inProj"), keep, "decodePlan: inProj");
    w.x_proj = read_linear(env, o.Get("xProj"), keep, "decodePlan: xProj");
    w.dt_proj = read_linear(env, o.Get("dtProj"), keep, "decodePlan: dtProj");
    w.out_proj = read_linear(env, o.Get("outProj"), keep, "decodePlan: outProj");
    w.conv_weight = read_tensor(env, o.Get("conv"), &keep, "decodePlan: conv");
    w.conv_bias = read_tensor(env, o.Get("convBias"), &keep, "decodePlan: convBias");
    w.dt_bias = read_tensor(env, o.Get("dtBias"), &keep, "decodePlan: dtBias");
    w.A = read_tensor(env, o.Get("A"), &keep, "decodePlan: A");
    w.D = read_tensor(env, o.Get("D"), &keep, "decodePlan: D");
    w.gated_norm = read_tensor(env, o.Get("gatedNorm"), &keep, "decodePlan: gatedNorm");
    plan->layers.push_back(w);
  }
  m.num_layers = static_cast<int>(plan->layers.size());
  m.layers = plan->layers.data();
  m.norm_f = read_tensor(env, a.Get("normF"), &keep, "decodePlan: normF");
  m.head = read_linear(env, a.Get("head"), keep, "decodePlan: head");
  m.embed = read_tensor(env, a.Get("embed"), &keep, "decodePlan: embed");
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
    st->conv.push_back(read_tensor(env, conv.Get(i), &st->keep, "decodeStates: conv"));
    st->ssm.push_back(read_tensor(env, ssm.Get(i), &st->keep, "decodeStates: ssm"));
  }
  return Napi::External<decode_states>::New(env, st.release(), [](Napi::Env, decode_states* s) { delete s; });
}

// decodeStep({plan, states, ids, logits, sample}, async)
Napi::Value decode_step(const Napi::CallbackInfo& info) {
  op_args a(info, kDecodeStepKeys);
  Napi::Env env = a.env();
  Napi::Value plan_v = a.value("plan");
  Napi::Value states_v = a.value("states");
  if (!plan_v.IsExternal() || !states_v.IsExternal()) {
    throw make_error(
        env, make_status(status_code::value, "decodeStep: plan and states must come from decodePlan"));
  }
  // An async step holds both Externals (and through them every weight and state buffer) until it finishes.
  a.hold(plan_v);
  a.hold(states_v);
  const decode_plan* plan = plan_v.As<Napi::External<decode_plan>>().Data();
  const decode_states* st = states_v.As<Napi::External<decode_states>>().Data();
  if (plan == nullptr || st == nullptr || plan->tag != kPlanTag || st->tag != kStatesTag) {
    throw make_error(env,
                     make_status(status_code::value,
                                 "decodeStep: plan and states must come from decodePlan and decodeStates"));
  }
  mamba_decode_params p;
  p.model = &plan->model;
  p.ids = a.tensor("ids", "decodeStep: ids");
  p.logits = a.tensor("logits", "decodeStep: logits");
  p.conv_states = st->conv.data();
  p.ssm_states = st->ssm.data();
  p.batch = p.ids.numel();
  Napi::Value sampling = a.value("sample");
  if (sampling.IsObject()) {
    op_args nested(a, sampling);
    p.sample = read_sample(nested);
  }
  if (static_cast<int>(st->conv.size()) != plan->model.num_layers) {
    throw make_error(env, make_status(status_code::shape,
                                      "decodeStep: states: one conv and ssm state per layer expected"));
  }
  return run_op<mamba_decode_params>(env, "decodeStep", p, op_device({&p.ids}), a.async(), a.take_keep(),
                                     &mamba_decode_step_cpu, SSMKIT_CUDA_FN(mamba_decode_step_cuda));
}

// (): { norm, quant, conv }, the CUDA decode step's folds so far (decode_folds_cuda; zeros without CUDA). A
// test hook, not part of the API.
Napi::Value decode_folds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  decode_fold_counts c;
#if defined(SSMKIT_WITH_CUDA)
  c = decode_folds_cuda();
#endif
  Napi::Object o = Napi::Object::New(env);
  o.Set("norm", Napi::Number::New(env, static_cast<double>(c.norm)));
  o.Set("quant", Napi::Number::New(env, static_cast<double>(c.quant)));
  o.Set("conv", Napi::Number::New(env, static_cast<double>(c.conv)));
  return o;
}

}  // namespace

void register_nn(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "packLinear", pack_linear, kPackLinearKeys);
  export_op(env, exports, "linear", linear, kLinearKeys);
  export_op(env, exports, "splitColumns", split_columns, kSplitColumnsKeys);
  export_op(env, exports, "rmsNorm", rms_norm, kRmsNormKeys);
  export_op(env, exports, "gatedRmsNorm", gated_rms_norm, kGatedRmsNormKeys);
  export_op(env, exports, "embedding", embedding, kEmbeddingKeys);
  export_op(env, exports, "transposeSplit", transpose_split, kTransposeSplitKeys);
  export_op(env, exports, "dtLimit", dt_limit, kDtLimitKeys);
  export_op(env, exports, "sample", sample, kSampleKeys);
  exports.Set("decodePlan", Napi::Function::New(env, decode_plan_new));
  exports.Set("decodeStates", Napi::Function::New(env, decode_states_new));
  export_op(env, exports, "decodeStep", decode_step, kDecodeStepKeys);
  exports.Set("_decodeFolds", Napi::Function::New(env, decode_folds));
}

}  // namespace ssmkit::napi
