// Node-API bindings of the scan family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/scan.ts has validated every argument; each op reads its tensors and options here, fills its
// params struct in one function, and hands it to run_op (the kernels re-check shapes).
#include "common.h"
#include "ssmkit/selective_scan.h"

namespace ssmkit::napi {
namespace {

tensor_view arg(Napi::Env env, Napi::Object a, const char* key, keepalive& keep, const char* what) {
  return read_tensor(env, a.Get(key), keep, what);
}

// A variable B/C given as (batch, dstate, seqlen) is the one-group case of (batch, groups, dstate, seqlen).
int64_t scan_groups(tensor_view& t) {
  if (t.ndim == 3) {
    t.ndim = 4;
    t.shape[3] = t.shape[2];
    t.shape[2] = t.shape[1];
    t.shape[1] = 1;
  }
  return t.ndim == 4 ? t.shape[1] : 0;
}

selective_scan_params selective_scan_args(Napi::Env env, Napi::Object a, keepalive& keep) {
  selective_scan_params p;
  p.u = arg(env, a, "u", keep, "selectiveScan: u");
  p.delta = arg(env, a, "delta", keep, "selectiveScan: delta");
  p.A = arg(env, a, "A", keep, "selectiveScan: A");
  p.B = arg(env, a, "B", keep, "selectiveScan: B");
  p.C = arg(env, a, "C", keep, "selectiveScan: C");
  p.D = arg(env, a, "D", keep, "selectiveScan: options.D");
  p.z = arg(env, a, "z", keep, "selectiveScan: options.z");
  p.delta_bias = arg(env, a, "deltaBias", keep, "selectiveScan: options.deltaBias");
  p.initial_state = arg(env, a, "initialState", keep, "selectiveScan: options.initialState");
  p.seq_idx = arg(env, a, "seqIdx", keep, "selectiveScan: options.seqIdx");
  p.out = arg(env, a, "out", keep, "selectiveScan: out");
  p.last_state = arg(env, a, "lastState", keep, "selectiveScan: lastState");
  p.batch = p.u.shape[0];
  p.dim = p.u.shape[1];
  p.seqlen = p.u.shape[2];
  p.dstate = p.A.shape[1];
  p.groups_b = scan_groups(p.B);
  p.groups_c = scan_groups(p.C);
  p.delta_softplus = get_bool(a, "deltaSoftplus", false);
  return p;
}

selective_state_update_params state_update_args(Napi::Env env, Napi::Object a, keepalive& keep) {
  selective_state_update_params p;
  p.state = arg(env, a, "state", keep, "selectiveStateUpdate: state");
  p.x = arg(env, a, "x", keep, "selectiveStateUpdate: x");
  p.dt = arg(env, a, "dt", keep, "selectiveStateUpdate: dt");
  p.A = arg(env, a, "A", keep, "selectiveStateUpdate: A");
  p.B = arg(env, a, "B", keep, "selectiveStateUpdate: B");
  p.C = arg(env, a, "C", keep, "selectiveStateUpdate: C");
  p.D = arg(env, a, "D", keep, "selectiveStateUpdate: options.D");
  p.z = arg(env, a, "z", keep, "selectiveStateUpdate: options.z");
  p.dt_bias = arg(env, a, "dtBias", keep, "selectiveStateUpdate: options.dtBias");
  p.state_batch_indices =
      arg(env, a, "stateBatchIndices", keep, "selectiveStateUpdate: options.stateBatchIndices");
  p.out = arg(env, a, "out", keep, "selectiveStateUpdate: out");
  p.multihead = p.state.ndim == 4;
  p.batch = p.x.shape[0];
  p.state_batch = p.state.shape[0];
  p.nheads = p.state.shape[1];
  p.headdim = p.multihead ? p.state.shape[2] : 1;
  p.dstate = p.multihead ? p.state.shape[3] : p.state.shape[2];
  p.groups = p.multihead ? p.B.shape[1] : 1;
  p.dt_softplus = get_bool(a, "dtSoftplus", false);
  return p;
}

ssd_scan_params ssd_scan_args(Napi::Env env, Napi::Object a, keepalive& keep) {
  ssd_scan_params p;
  p.x = arg(env, a, "x", keep, "ssdScan: x");
  p.dt = arg(env, a, "dt", keep, "ssdScan: dt");
  p.A = arg(env, a, "A", keep, "ssdScan: A");
  p.B = arg(env, a, "B", keep, "ssdScan: B");
  p.C = arg(env, a, "C", keep, "ssdScan: C");
  p.D = arg(env, a, "D", keep, "ssdScan: options.D");
  p.z = arg(env, a, "z", keep, "ssdScan: options.z");
  p.dt_bias = arg(env, a, "dtBias", keep, "ssdScan: options.dtBias");
  p.initial_states = arg(env, a, "initialStates", keep, "ssdScan: options.initialStates");
  p.seq_idx = arg(env, a, "seqIdx", keep, "ssdScan: options.seqIdx");
  p.out = arg(env, a, "out", keep, "ssdScan: out");
  p.final_states = arg(env, a, "finalStates", keep, "ssdScan: finalStates");
  p.batch = p.x.shape[0];
  p.seqlen = p.x.shape[1];
  p.nheads = p.x.shape[2];
  p.headdim = p.x.shape[3];
  p.groups = p.B.shape[2];
  p.dstate = p.B.shape[3];
  p.chunk_size = static_cast<int64_t>(get_number(a, "chunkSize", 256));
  p.d_per_channel = p.D.ndim == 2;
  p.dt_softplus = get_bool(a, "dtSoftplus", false);
  return p;
}

causal_conv1d_params causal_conv1d_args(Napi::Env env, Napi::Object a, keepalive& keep) {
  causal_conv1d_params p;
  p.x = arg(env, a, "x", keep, "causalConv1d: x");
  p.weight = arg(env, a, "weight", keep, "causalConv1d: weight");
  p.bias = arg(env, a, "bias", keep, "causalConv1d: options.bias");
  p.initial_states = arg(env, a, "initialStates", keep, "causalConv1d: options.initialStates");
  p.seq_idx = arg(env, a, "seqIdx", keep, "causalConv1d: options.seqIdx");
  p.out = arg(env, a, "out", keep, "causalConv1d: out");
  p.final_states = arg(env, a, "finalStates", keep, "causalConv1d: finalStates");
  p.batch = p.x.shape[0];
  p.dim = p.x.shape[1];
  p.seqlen = p.x.shape[2];
  p.width = p.weight.shape[1];
  p.silu = get_bool(a, "silu", false);
  return p;
}

causal_conv1d_update_params causal_conv1d_update_args(Napi::Env env, Napi::Object a, keepalive& keep) {
  causal_conv1d_update_params p;
  p.x = arg(env, a, "x", keep, "causalConv1dUpdate: x");
  p.conv_state = arg(env, a, "convState", keep, "causalConv1dUpdate: convState");
  p.weight = arg(env, a, "weight", keep, "causalConv1dUpdate: weight");
  p.bias = arg(env, a, "bias", keep, "causalConv1dUpdate: options.bias");
  p.conv_state_indices =
      arg(env, a, "convStateIndices", keep, "causalConv1dUpdate: options.convStateIndices");
  p.out = arg(env, a, "out", keep, "causalConv1dUpdate: out");
  p.batch = p.x.shape[0];
  p.dim = p.x.shape[1];
  p.seqlen = p.x.ndim == 2 ? 1 : p.x.shape[2];
  p.state_batch = p.conv_state.shape[0];
  p.state_len = p.conv_state.shape[2];
  p.width = p.weight.shape[1];
  p.silu = get_bool(a, "silu", false);
  return p;
}

// op(args, async): CPU tensors run on the pool, CUDA tensors on the device's stream.
Napi::Value selective_scan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  selective_scan_params p = selective_scan_args(env, info[0].As<Napi::Object>(), keep);
  return run_op<selective_scan_params>(env, "selectiveScan", p, op_device({&p.u}), info[1].ToBoolean(),
                                       std::move(keep), &selective_scan_fwd_cpu,
                                       SSMKIT_CUDA_FN(selective_scan_fwd_cuda));
}

Napi::Value selective_state_update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  selective_state_update_params p = state_update_args(env, info[0].As<Napi::Object>(), keep);
  return run_op<selective_state_update_params>(
      env, "selectiveStateUpdate", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep),
      &selective_state_update_cpu, SSMKIT_CUDA_FN(selective_state_update_cuda));
}

Napi::Value ssd_scan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  ssd_scan_params p = ssd_scan_args(env, info[0].As<Napi::Object>(), keep);
  return run_op<ssd_scan_params>(env, "ssdScan", p, op_device({&p.x}), info[1].ToBoolean(), std::move(keep),
                                 &ssd_scan_fwd_cpu, SSMKIT_CUDA_FN(ssd_scan_fwd_cuda));
}

Napi::Value causal_conv1d(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  causal_conv1d_params p = causal_conv1d_args(env, info[0].As<Napi::Object>(), keep);
  return run_op<causal_conv1d_params>(env, "causalConv1d", p, op_device({&p.x}), info[1].ToBoolean(),
                                      std::move(keep), &causal_conv1d_fwd_cpu,
                                      SSMKIT_CUDA_FN(causal_conv1d_fwd_cuda));
}

Napi::Value causal_conv1d_update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  keepalive keep;
  causal_conv1d_update_params p = causal_conv1d_update_args(env, info[0].As<Napi::Object>(), keep);
  return run_op<causal_conv1d_update_params>(env, "causalConv1dUpdate", p, op_device({&p.x}),
                                             info[1].ToBoolean(), std::move(keep), &causal_conv1d_update_cpu,
                                             SSMKIT_CUDA_FN(causal_conv1d_update_cuda));
}

}  // namespace

void register_scan(Napi::Env env, Napi::Object exports) {
  exports.Set("selectiveScan", Napi::Function::New(env, selective_scan));
  exports.Set("selectiveStateUpdate", Napi::Function::New(env, selective_state_update));
  exports.Set("ssdScan", Napi::Function::New(env, ssd_scan));
  exports.Set("causalConv1d", Napi::Function::New(env, causal_conv1d));
  exports.Set("causalConv1dUpdate", Napi::Function::New(env, causal_conv1d_update));
}

}  // namespace ssmkit::napi
