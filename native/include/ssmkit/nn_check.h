// Argument checks of the model building blocks, one check_<op> per op of ssmkit/nn.h, called first by
// both the CPU (native/cpu/nn.cc) and the CUDA (native/cuda/nn.cu) entry point: they check what they are
// given against the sizes they will touch, so that a malformed call from native code (past the
// TypeScript checks) gets a status instead of reading out of bounds. What only one backend needs stays
// there after the shared check: the CUDA side's device placement and its kernels' own limits.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "ssmkit/nn.h"

namespace ssmkit::nn_check {

inline bool is_float(ssmkit_dtype t) {
  return t == SSMKIT_DTYPE_F32 || t == SSMKIT_DTYPE_F16 || t == SSMKIT_DTYPE_BF16;
}

inline status need_float(const char* op, const char* arg, const tensor_view& t, bool optional = false) {
  if (!t.present()) {
    if (optional) return ok_status();
    return make_status(status_code::value, "%s: %s: expected a tensor", op, arg);
  }
  if (!is_float(t.dtype))
    return make_status(status_code::dtype, "%s: %s: unsupported dtype %s", op, arg, dtype_name(t.dtype));
  return ok_status();
}

inline status need_numel(const char* op, const char* arg, const tensor_view& t, int64_t n,
                         bool optional = false) {
  if (!t.present() && optional) return ok_status();
  if (!t.present() || t.numel() != n) {
    return make_status(status_code::shape, "%s: %s: expected %lld elements, got %lld", op, arg,
                       static_cast<long long>(n), static_cast<long long>(t.present() ? t.numel() : 0));
  }
  return ok_status();
}

inline status need_dims(const char* op, std::initializer_list<int64_t> dims) {
  for (int64_t d : dims) {
    if (d < 0) return make_status(status_code::value, "%s: negative size", op);
  }
  return ok_status();
}

// Elements of the packed panels of an (n, k) weight: (ceil(n / 32), k, 32) float32, or bfloat16 with k
// rounded up to even (its k-pair rows).
inline int64_t packed_numel(int64_t n, int64_t k, bool bf16) {
  const int64_t kx = bf16 ? (k + 1) / 2 * 2 : k;
  return (n + kLinearPanel - 1) / kLinearPanel * kx * kLinearPanel;
}

// The outputs of linear / splitColumns: each a column range within n, sized (m, cols).
inline status check_outputs(const char* op, const linear_output* outs, int count, int64_t m, int64_t n,
                            int64_t seqlen) {
  if (count < 1 || count > kLinearMaxOutputs)
    return make_status(status_code::value, "%s: outputs: expected 1..%d", op, kLinearMaxOutputs);
  for (int i = 0; i < count; ++i) {
    const linear_output& o = outs[i];
    SSMKIT_RETURN_IF_ERROR(need_float(op, "out", o.out));
    if (o.col0 < 0 || o.cols < 0 || o.col0 + o.cols > n)
      return make_status(status_code::value, "%s: out: columns outside 0..%lld", op,
                         static_cast<long long>(n));
    if (o.transposed && (seqlen < 1 || m % seqlen != 0))
      return make_status(status_code::shape, "%s: seqlen: expected a divisor of %lld", op,
                         static_cast<long long>(m));
    SSMKIT_RETURN_IF_ERROR(need_numel(op, "out", o.out, m * o.cols));
  }
  return ok_status();
}

// ---- one check per op ------------------------------------------------------------------------------

inline status check_pack_linear(const pack_linear_params& p) {
  if (!is_float(p.w.dtype))
    return make_status(status_code::dtype, "packLinear: w: unsupported dtype %s", dtype_name(p.w.dtype));
  if (p.out.dtype != SSMKIT_DTYPE_F32 && p.out.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "packLinear: out: unsupported dtype %s", dtype_name(p.out.dtype));
  }
  SSMKIT_RETURN_IF_ERROR(need_dims("packLinear", {p.n, p.k}));
  SSMKIT_RETURN_IF_ERROR(need_numel("packLinear", "w", p.w, p.n * p.k));
  return need_numel("packLinear", "out", p.out, packed_numel(p.n, p.k, p.out.dtype == SSMKIT_DTYPE_BF16));
}

inline status check_linear(const linear_params& p) {
  if (p.w.dtype != SSMKIT_DTYPE_F32 && p.w.dtype != SSMKIT_DTYPE_BF16) {
    return make_status(status_code::dtype, "linear: w: unsupported packed dtype %s", dtype_name(p.w.dtype));
  }
  SSMKIT_RETURN_IF_ERROR(need_dims("linear", {p.m, p.n, p.k}));
  SSMKIT_RETURN_IF_ERROR(need_float("linear", "x", p.x));
  SSMKIT_RETURN_IF_ERROR(need_numel("linear", "x", p.x, p.m * p.k));
  SSMKIT_RETURN_IF_ERROR(
      need_numel("linear", "w", p.w, packed_numel(p.n, p.k, p.w.dtype == SSMKIT_DTYPE_BF16)));
  if (p.bias.present() && p.bias.dtype != SSMKIT_DTYPE_F32)
    return make_status(status_code::dtype, "linear: bias: expected float32");
  SSMKIT_RETURN_IF_ERROR(need_numel("linear", "bias", p.bias, p.n, true));
  if (p.x_transposed && (p.seqlen < 1 || p.m % p.seqlen != 0))
    return make_status(status_code::shape, "linear: seqlen: expected a divisor of M");
  return check_outputs("linear", p.outputs, p.num_outputs, p.m, p.n, p.seqlen);
}

inline status check_split_columns(const split_columns_params& p) {
  SSMKIT_RETURN_IF_ERROR(need_dims("splitColumns", {p.m, p.n}));
  SSMKIT_RETURN_IF_ERROR(need_float("splitColumns", "x", p.x));
  SSMKIT_RETURN_IF_ERROR(need_numel("splitColumns", "x", p.x, p.m * p.n));
  return check_outputs("splitColumns", p.outputs, p.num_outputs, p.m, p.n, p.seqlen);
}

inline status check_rms_norm(const rms_norm_params& p) {
  const char* op = "rmsNorm";
  const int64_t d = p.d;
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.rows, d, p.last_of}));
  if (p.last_of > 0 && (p.rows % p.last_of != 0 || p.residual_out.present())) {
    return make_status(status_code::shape, "%s: lastOf: expected a divisor of the rows and no residualOut",
                       op);
  }
  const int64_t out_rows = p.last_of > 0 ? p.rows / p.last_of : p.rows;
  SSMKIT_RETURN_IF_ERROR(need_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "weight", p.weight));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "residual", p.residual, true));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "residualOut", p.residual_out, true));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "x", p.x, p.rows * d));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "weight", p.weight, d));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "out", p.out, out_rows * d));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "residual", p.residual, p.rows * d, true));
  return need_numel(op, "residualOut", p.residual_out, p.rows * d, true);
}

inline status check_gated_rms_norm(const gated_rms_norm_params& p) {
  const char* op = "gatedRmsNorm";
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.rows, p.d}));
  if (p.groups < 1 || p.d % p.groups != 0)
    return make_status(status_code::value, "%s: groups: expected a divisor of d", op);
  SSMKIT_RETURN_IF_ERROR(need_float(op, "y", p.y));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "z", p.z, true));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "weight", p.weight));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "y", p.y, p.rows * p.d));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "z", p.z, p.rows * p.d, true));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "weight", p.weight, p.d));
  return need_numel(op, "out", p.out, p.rows * p.d);
}

// The ids' values are not checked here: check_embedding_ids reads them where they are on the host.
inline status check_embedding(const embedding_params& p) {
  const char* op = "embedding";
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.count, p.vocab, p.d}));
  if (p.ids.dtype != SSMKIT_DTYPE_I32) return make_status(status_code::dtype, "%s: ids: expected int32", op);
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "ids", p.ids, p.count));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "weight", p.weight));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "out", p.out, p.count * p.d));
  if (!p.packed) return need_numel(op, "weight", p.weight, p.vocab * p.d);
  if (p.weight.dtype != SSMKIT_DTYPE_F32 && p.weight.dtype != SSMKIT_DTYPE_BF16)
    return make_status(status_code::dtype, "%s: weight: unsupported packed dtype", op);
  return need_numel(op, "weight", p.weight, packed_numel(p.vocab, p.d, p.weight.dtype == SSMKIT_DTYPE_BF16));
}

// Every id in 0..vocab - 1; ids (count,) int32 in host memory, after check_embedding.
inline status check_embedding_ids(const embedding_params& p) {
  const int32_t* ids = p.ids.ptr<const int32_t>();
  for (int64_t i = 0; i < p.count; ++i) {
    if (ids[i] < 0 || ids[i] >= p.vocab) {
      return make_status(status_code::value,
                         "embedding: ids: expected token ids in 0..%lld, got %d at index %lld",
                         static_cast<long long>(p.vocab - 1), ids[i], static_cast<long long>(i));
    }
  }
  return ok_status();
}

inline status check_transpose_split(const transpose_split_params& p) {
  const char* op = "transposeSplit";
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.batch, p.r, p.c}));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "x", p.x));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "x", p.x, p.batch * p.r * p.c));
  if (p.num_outputs < 1 || p.num_outputs > kLinearMaxOutputs)
    return make_status(status_code::value, "%s: outputs: expected 1..%d", op, kLinearMaxOutputs);
  for (int i = 0; i < p.num_outputs; ++i) {
    const split_output& o = p.outputs[i];
    if (o.row0 < 0 || o.rows < 0 || o.row0 + o.rows > p.r)
      return make_status(status_code::value, "%s: out: rows outside 0..%lld", op,
                         static_cast<long long>(p.r));
    SSMKIT_RETURN_IF_ERROR(need_float(op, "out", o.out));
    SSMKIT_RETURN_IF_ERROR(need_numel(op, "out", o.out, p.batch * p.c * o.rows));
  }
  return ok_status();
}

inline status check_dt_limit(const dt_limit_params& p) {
  const char* op = "dtLimit";
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.rows, p.heads}));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "dt", p.dt));
  SSMKIT_RETURN_IF_ERROR(need_float(op, "out", p.out));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "dt", p.dt, p.rows * p.heads));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "out", p.out, p.rows * p.heads));
  if (p.bias.present() && p.bias.dtype != SSMKIT_DTYPE_F32)
    return make_status(status_code::dtype, "%s: bias: expected float32", op);
  return need_numel(op, "bias", p.bias, p.heads, true);
}

// A vocabulary past int32 is refused: the tokens are int32 ids on either backend.
inline status check_sample(const sample_params& p) {
  const char* op = "sample";
  SSMKIT_RETURN_IF_ERROR(need_dims(op, {p.rows, p.vocab}));
  if (p.vocab < 1)
    return make_status(status_code::value, "%s: logits: expected a vocabulary of at least 1", op);
  if (p.vocab > INT32_MAX)
    return make_status(status_code::unsupported, "%s: logits: vocabulary too large", op);
  if (p.logits.dtype != SSMKIT_DTYPE_F32)
    return make_status(status_code::dtype, "%s: logits: expected float32", op);
  if (p.tokens.dtype != SSMKIT_DTYPE_I32)
    return make_status(status_code::dtype, "%s: tokens: expected int32", op);
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "logits", p.logits, p.rows * p.vocab));
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "tokens", p.tokens, p.rows));
  if (p.temperature > 0.0f) {
    if (p.draws.dtype != SSMKIT_DTYPE_F64)
      return make_status(status_code::dtype, "%s: draws: expected float64", op);
    SSMKIT_RETURN_IF_ERROR(need_numel(op, "draws", p.draws, p.rows));
  }
  return ok_status();
}

// The step's own tensors against the model, and the sampler's (when asked for) before any state is
// touched: a bad sampler argument fails the call with the states as they were.
inline status check_decode(const mamba_decode_params& p) {
  const char* op = "decodeStep";
  if (p.model == nullptr) return make_status(status_code::value, "%s: plan: expected a model", op);
  const mamba_decode_model& mm = *p.model;
  if (p.ids.dtype != SSMKIT_DTYPE_I32) return make_status(status_code::dtype, "%s: ids: expected int32", op);
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "ids", p.ids, p.batch));
  if (p.logits.dtype != SSMKIT_DTYPE_F32)
    return make_status(status_code::dtype, "%s: logits: expected float32", op);
  SSMKIT_RETURN_IF_ERROR(need_numel(op, "logits", p.logits, p.batch * mm.vocab));
  if (!is_float(mm.act)) return make_status(status_code::dtype, "%s: plan: unsupported activation dtype", op);
  const int64_t cd = mm.mamba2 ? mm.d_inner + 2 * mm.ngroups * mm.d_state : mm.d_inner;
  const int64_t ssm = mm.mamba2 ? mm.nheads * mm.headdim * mm.d_state : mm.d_inner * mm.d_state;
  for (int l = 0; l < mm.num_layers; ++l) {
    const tensor_view& c = p.conv_states[l];
    if (c.dtype != SSMKIT_DTYPE_F32 || c.ndim != 3 || c.shape[0] != p.batch || c.shape[1] != cd ||
        c.shape[2] < mm.conv_width - 1) {
      return make_status(status_code::shape, "%s: states: layer %d's conv state does not fit the model", op,
                         l);
    }
    if (p.ssm_states[l].dtype != SSMKIT_DTYPE_F32)
      return make_status(status_code::dtype, "%s: states: expected float32", op);
    SSMKIT_RETURN_IF_ERROR(need_numel(op, "states", p.ssm_states[l], p.batch * ssm));
  }
  if (!p.sample.tokens.present()) return ok_status();
  sample_params sp = p.sample;
  sp.logits = p.logits;
  sp.rows = p.batch;
  sp.vocab = mm.vocab;
  return check_sample(sp);
}

}  // namespace ssmkit::nn_check
