// Argument checks shared by the CPU (native/cpu/nn.cc) and CUDA (native/cuda/nn.cu) entry points of the
// model building blocks: they check what they are given against the sizes they will touch, so that a
// malformed call from native code (past the TypeScript checks) gets a status instead of reading out of
// bounds.
#pragma once
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

}  // namespace ssmkit::nn_check
