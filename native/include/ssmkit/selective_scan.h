// Parameters of the selective-scan family (selectiveScan, selectiveStateUpdate, ssdScan, causalConv1d,
// causalConv1dUpdate), one struct per op, filled once by native/napi/scan.cc and read by
// native/cpu/selective_scan.cc and native/cuda/selective_scan.cu. Views are contiguous and row-major;
// an absent optional tensor is a view with a null data pointer. Float inputs may be float32, float16
// or bfloat16 independently of each other; the math runs in float32; states are float32.
#pragma once
#include <cstdint>

#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

namespace ssmkit {

// Mamba-1 selective scan: h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = <h_t, C_t> + D u_t,
// out = y * silu(z), with dt = softplus(delta + deltaBias) when asked.
struct selective_scan_params {
  tensor_view u;              // (batch, dim, seqlen)
  tensor_view delta;          // (batch, dim, seqlen)
  tensor_view A;              // (dim, dstate) float32
  tensor_view B;              // (dim, dstate) constant, or (batch, groups_b, dstate, seqlen) variable
  tensor_view C;              // (dim, dstate) constant, or (batch, groups_c, dstate, seqlen) variable
  tensor_view D;              // (dim,) float32, optional
  tensor_view z;              // (batch, dim, seqlen), optional
  tensor_view delta_bias;     // (dim,) float32, optional
  tensor_view initial_state;  // (batch, dim, dstate) float32, optional
  tensor_view seq_idx;        // (batch, seqlen) int32, optional, non-decreasing
  tensor_view out;            // (batch, dim, seqlen) u's dtype
  tensor_view last_state;     // (batch, dim, dstate) float32, optional
  int64_t batch = 0;
  int64_t dim = 0;
  int64_t seqlen = 0;
  int64_t dstate = 0;
  int64_t groups_b = 0;  // 0: B is constant
  int64_t groups_c = 0;  // 0: C is constant
  bool delta_softplus = false;
};

// One decode step of the scan, state updated in place. Mamba-1 form (multihead = false): state
// (state_batch, dim, dstate), x/dt/z (batch, dim), A (dim, dstate), B/C (batch, dstate), D/dt_bias
// (dim,). Multi-head form: state (state_batch, nheads, headdim, dstate), x/z (batch, nheads, headdim),
// dt (batch, nheads), A/D/dt_bias (nheads,), B/C (batch, groups, dstate).
struct selective_state_update_params {
  tensor_view state;                // float32, updated in place
  tensor_view x;                    // see above
  tensor_view dt;                   // see above
  tensor_view A;                    // float32
  tensor_view B;                    // see above
  tensor_view C;                    // see above
  tensor_view D;                    // float32, optional
  tensor_view z;                    // optional
  tensor_view dt_bias;              // float32, optional
  tensor_view state_batch_indices;  // (batch,) int32, optional; a negative index is padding
  tensor_view out;                  // x's shape and dtype
  bool multihead = false;
  int64_t batch = 0;
  int64_t state_batch = 0;
  int64_t nheads = 0;   // Mamba-1 form: dim
  int64_t headdim = 0;  // Mamba-1 form: 1
  int64_t dstate = 0;
  int64_t groups = 1;  // Mamba-1 form: 1
  bool dt_softplus = false;
};

// Mamba-2 SSD scan: the same recurrence with a scalar A per head. chunk_size is the reference's chunk
// length, kept for its API: the CPU kernel evaluates the recurrence in its own time blocks, so the result
// does not depend on it.
struct ssd_scan_params {
  tensor_view x;               // (batch, seqlen, nheads, headdim)
  tensor_view dt;              // (batch, seqlen, nheads)
  tensor_view A;               // (nheads,) float32
  tensor_view B;               // (batch, seqlen, groups, dstate)
  tensor_view C;               // (batch, seqlen, groups, dstate)
  tensor_view D;               // (nheads,) or (nheads, headdim) float32, optional
  tensor_view z;               // (batch, seqlen, nheads, headdim), optional
  tensor_view dt_bias;         // (nheads,) float32, optional
  tensor_view initial_states;  // (batch, nheads, headdim, dstate) float32, optional
  tensor_view seq_idx;         // (batch, seqlen) int32, optional, non-decreasing
  tensor_view out;             // (batch, seqlen, nheads, headdim) x's dtype
  tensor_view final_states;    // (batch, nheads, headdim, dstate) float32, optional
  int64_t batch = 0;
  int64_t seqlen = 0;
  int64_t nheads = 0;
  int64_t headdim = 0;
  int64_t groups = 0;
  int64_t dstate = 0;
  int64_t chunk_size = 256;
  bool d_per_channel = false;  // D is (nheads, headdim)
  bool dt_softplus = false;
};

// Depthwise causal convolution: out_t = act(bias + sum_k weight[k] x_{t - width + 1 + k}).
struct causal_conv1d_params {
  tensor_view x;               // (batch, dim, seqlen)
  tensor_view weight;          // (dim, width)
  tensor_view bias;            // (dim,), optional
  tensor_view initial_states;  // (batch, dim, width - 1) float32, optional
  tensor_view seq_idx;         // (batch, seqlen) int32, optional, non-decreasing
  tensor_view out;             // (batch, dim, seqlen) x's dtype
  tensor_view final_states;    // (batch, dim, width - 1) float32, optional
  int64_t batch = 0;
  int64_t dim = 0;
  int64_t seqlen = 0;
  int64_t width = 0;
  bool silu = false;
};

// Streaming form: convolves `seqlen` new steps after the state's last width - 1 entries, then shifts
// them into the state.
struct causal_conv1d_update_params {
  tensor_view x;                   // (batch, dim, seqlen) or (batch, dim)
  tensor_view conv_state;          // (state_batch, dim, state_len) float32, updated in place
  tensor_view weight;              // (dim, width)
  tensor_view bias;                // (dim,), optional
  tensor_view conv_state_indices;  // (batch,) int32, optional; a negative index is padding
  tensor_view out;                 // x's shape and dtype
  int64_t batch = 0;
  int64_t state_batch = 0;
  int64_t dim = 0;
  int64_t seqlen = 0;
  int64_t width = 0;
  int64_t state_len = 0;
  bool silu = false;
};

status selective_scan_fwd_cpu(const selective_scan_params& p);
status selective_scan_fwd_cuda(const selective_scan_params& p, void* stream);
status selective_state_update_cpu(const selective_state_update_params& p);
status selective_state_update_cuda(const selective_state_update_params& p, void* stream);
status ssd_scan_fwd_cpu(const ssd_scan_params& p);
status ssd_scan_fwd_cuda(const ssd_scan_params& p, void* stream);
status causal_conv1d_fwd_cpu(const causal_conv1d_params& p);
status causal_conv1d_fwd_cuda(const causal_conv1d_params& p, void* stream);
status causal_conv1d_update_cpu(const causal_conv1d_update_params& p);
status causal_conv1d_update_cuda(const causal_conv1d_update_params& p, void* stream);

}  // namespace ssmkit
