// Node-API bindings of the scan family: JS arguments -> params struct -> CPU pool or stream.
// lib/ops/scan.ts has validated every argument; each op reads its tensors and options here, fills its
// params struct in one function, and hands it to run_op (the kernels re-check shapes). Each op's key
// list names its arguments in the order lib/ops/run.ts passes them positionally (common.h: op_args).
#include "common.h"
#include "ssmkit/selective_scan.h"

namespace ssmkit::napi {
namespace {

// Each op's arguments in the order lib/ops/run.ts passes them (and the order they are read below).
constexpr const char* kSelectiveScanKeys[] = {
    "u",         "delta",        "A", "B", "C", "D", "z", "deltaBias", "initialState", "seqIdx", "out",
    "lastState", "deltaSoftplus"};
constexpr const char* kSelectiveStateUpdateKeys[] = {
    "state", "x", "dt", "A", "B", "C", "D", "z", "dtBias", "stateBatchIndices", "out", "dtSoftplus"};
constexpr const char* kSsdScanKeys[] = {
    "x",      "dt",  "A",           "B",         "C",         "D", "z", "dtBias", "initialStates",
    "seqIdx", "out", "finalStates", "chunkSize", "dtSoftplus"};
constexpr const char* kCausalConv1dKeys[] = {"x",      "weight", "bias",        "initialStates",
                                             "seqIdx", "out",    "finalStates", "silu"};
constexpr const char* kCausalConv1dUpdateKeys[] = {"x",   "convState", "weight", "bias", "convStateIndices",
                                                   "out", "silu"};

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

selective_scan_params selective_scan_args(op_args& a) {
  selective_scan_params p;
  p.u = a.tensor("u", "selectiveScan: u");
  p.delta = a.tensor("delta", "selectiveScan: delta");
  p.A = a.tensor("A", "selectiveScan: A");
  p.B = a.tensor("B", "selectiveScan: B");
  p.C = a.tensor("C", "selectiveScan: C");
  p.D = a.tensor("D", "selectiveScan: options.D");
  p.z = a.tensor("z", "selectiveScan: options.z");
  p.delta_bias = a.tensor("deltaBias", "selectiveScan: options.deltaBias");
  p.initial_state = a.tensor("initialState", "selectiveScan: options.initialState");
  p.seq_idx = a.tensor("seqIdx", "selectiveScan: options.seqIdx");
  p.out = a.tensor("out", "selectiveScan: out");
  p.last_state = a.tensor("lastState", "selectiveScan: lastState");
  p.batch = p.u.shape[0];
  p.dim = p.u.shape[1];
  p.seqlen = p.u.shape[2];
  p.dstate = p.A.shape[1];
  p.groups_b = scan_groups(p.B);
  p.groups_c = scan_groups(p.C);
  p.delta_softplus = a.flag("deltaSoftplus", false);
  return p;
}

selective_state_update_params state_update_args(op_args& a) {
  selective_state_update_params p;
  p.state = a.tensor("state", "selectiveStateUpdate: state");
  p.x = a.tensor("x", "selectiveStateUpdate: x");
  p.dt = a.tensor("dt", "selectiveStateUpdate: dt");
  p.A = a.tensor("A", "selectiveStateUpdate: A");
  p.B = a.tensor("B", "selectiveStateUpdate: B");
  p.C = a.tensor("C", "selectiveStateUpdate: C");
  p.D = a.tensor("D", "selectiveStateUpdate: options.D");
  p.z = a.tensor("z", "selectiveStateUpdate: options.z");
  p.dt_bias = a.tensor("dtBias", "selectiveStateUpdate: options.dtBias");
  p.state_batch_indices = a.tensor("stateBatchIndices", "selectiveStateUpdate: options.stateBatchIndices");
  p.out = a.tensor("out", "selectiveStateUpdate: out");
  p.multihead = p.state.ndim == 4;
  p.batch = p.x.shape[0];
  p.state_batch = p.state.shape[0];
  p.nheads = p.state.shape[1];
  p.headdim = p.multihead ? p.state.shape[2] : 1;
  p.dstate = p.multihead ? p.state.shape[3] : p.state.shape[2];
  p.groups = p.multihead ? p.B.shape[1] : 1;
  p.dt_softplus = a.flag("dtSoftplus", false);
  return p;
}

ssd_scan_params ssd_scan_args(op_args& a) {
  ssd_scan_params p;
  p.x = a.tensor("x", "ssdScan: x");
  p.dt = a.tensor("dt", "ssdScan: dt");
  p.A = a.tensor("A", "ssdScan: A");
  p.B = a.tensor("B", "ssdScan: B");
  p.C = a.tensor("C", "ssdScan: C");
  p.D = a.tensor("D", "ssdScan: options.D");
  p.z = a.tensor("z", "ssdScan: options.z");
  p.dt_bias = a.tensor("dtBias", "ssdScan: options.dtBias");
  p.initial_states = a.tensor("initialStates", "ssdScan: options.initialStates");
  p.seq_idx = a.tensor("seqIdx", "ssdScan: options.seqIdx");
  p.out = a.tensor("out", "ssdScan: out");
  p.final_states = a.tensor("finalStates", "ssdScan: finalStates");
  p.batch = p.x.shape[0];
  p.seqlen = p.x.shape[1];
  p.nheads = p.x.shape[2];
  p.headdim = p.x.shape[3];
  p.groups = p.B.shape[2];
  p.dstate = p.B.shape[3];
  p.chunk_size = static_cast<int64_t>(a.number("chunkSize", 256));
  p.d_per_channel = p.D.ndim == 2;
  p.dt_softplus = a.flag("dtSoftplus", false);
  return p;
}

causal_conv1d_params causal_conv1d_args(op_args& a) {
  causal_conv1d_params p;
  p.x = a.tensor("x", "causalConv1d: x");
  p.weight = a.tensor("weight", "causalConv1d: weight");
  p.bias = a.tensor("bias", "causalConv1d: options.bias");
  p.initial_states = a.tensor("initialStates", "causalConv1d: options.initialStates");
  p.seq_idx = a.tensor("seqIdx", "causalConv1d: options.seqIdx");
  p.out = a.tensor("out", "causalConv1d: out");
  p.final_states = a.tensor("finalStates", "causalConv1d: finalStates");
  p.batch = p.x.shape[0];
  p.dim = p.x.shape[1];
  p.seqlen = p.x.shape[2];
  p.width = p.weight.shape[1];
  p.silu = a.flag("silu", false);
  return p;
}

causal_conv1d_update_params causal_conv1d_update_args(op_args& a) {
  causal_conv1d_update_params p;
  p.x = a.tensor("x", "causalConv1dUpdate: x");
  p.conv_state = a.tensor("convState", "causalConv1dUpdate: convState");
  p.weight = a.tensor("weight", "causalConv1dUpdate: weight");
  p.bias = a.tensor("bias", "causalConv1dUpdate: options.bias");
  p.conv_state_indices = a.tensor("convStateIndices", "causalConv1dUpdate: options.convStateIndices");
  p.out = a.tensor("out", "causalConv1dUpdate: out");
  p.batch = p.x.shape[0];
  p.dim = p.x.shape[1];
  p.seqlen = p.x.ndim == 2 ? 1 : p.x.shape[2];
  p.state_batch = p.conv_state.shape[0];
  p.state_len = p.conv_state.shape[2];
  p.width = p.weight.shape[1];
  p.silu = a.flag("silu", false);
  return p;
}

// op(async, ...values) or op(args, async): CPU tensors run on the pool, CUDA tensors on the device's stream.
Napi::Value selective_scan(const Napi::CallbackInfo& info) {
  op_args a(info, kSelectiveScanKeys);
  selective_scan_params p = selective_scan_args(a);
  return run_op<selective_scan_params>(a.env(), "selectiveScan", p, op_device({&p.u}), a.async(),
                                       a.take_keep(), &selective_scan_fwd_cpu,
                                       SSMKIT_CUDA_FN(selective_scan_fwd_cuda));
}

Napi::Value selective_state_update(const Napi::CallbackInfo& info) {
  op_args a(info, kSelectiveStateUpdateKeys);
  selective_state_update_params p = state_update_args(a);
  return run_op<selective_state_update_params>(a.env(), "selectiveStateUpdate", p, op_device({&p.x}),
                                               a.async(), a.take_keep(), &selective_state_update_cpu,
                                               SSMKIT_CUDA_FN(selective_state_update_cuda));
}

Napi::Value ssd_scan(const Napi::CallbackInfo& info) {
  op_args a(info, kSsdScanKeys);
  ssd_scan_params p = ssd_scan_args(a);
  return run_op<ssd_scan_params>(a.env(), "ssdScan", p, op_device({&p.x}), a.async(), a.take_keep(),
                                 &ssd_scan_fwd_cpu, SSMKIT_CUDA_FN(ssd_scan_fwd_cuda));
}

Napi::Value causal_conv1d(const Napi::CallbackInfo& info) {
  op_args a(info, kCausalConv1dKeys);
  causal_conv1d_params p = causal_conv1d_args(a);
  return run_op<causal_conv1d_params>(a.env(), "causalConv1d", p, op_device({&p.x}), a.async(), a.take_keep(),
                                      &causal_conv1d_fwd_cpu, SSMKIT_CUDA_FN(causal_conv1d_fwd_cuda));
}

Napi::Value causal_conv1d_update(const Napi::CallbackInfo& info) {
  op_args a(info, kCausalConv1dUpdateKeys);
  causal_conv1d_update_params p = causal_conv1d_update_args(a);
  return run_op<causal_conv1d_update_params>(a.env(), "causalConv1dUpdate", p, op_device({&p.x}), a.async(),
                                             a.take_keep(), &causal_conv1d_update_cpu,
                                             SSMKIT_CUDA_FN(causal_conv1d_update_cuda));
}

}  // namespace

void register_scan(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "selectiveScan", selective_scan, kSelectiveScanKeys);
  export_op(env, exports, "selectiveStateUpdate", selective_state_update, kSelectiveStateUpdateKeys);
  export_op(env, exports, "ssdScan", ssd_scan, kSsdScanKeys);
  export_op(env, exports, "causalConv1d", causal_conv1d, kCausalConv1dKeys);
  export_op(env, exports, "causalConv1dUpdate", causal_conv1d_update, kCausalConv1dUpdateKeys);
}

}  // namespace ssmkit::napi
