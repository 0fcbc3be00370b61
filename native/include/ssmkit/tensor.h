// A non-owning view of one contiguous, row-major tensor as the kernels see it. Memory belongs to the
// JavaScript side (a TypedArray for CPU tensors, a device allocation for CUDA tensors); a view with a
// null data pointer is an optional argument the caller left out.
#pragma once
#include <cstdint>

#include "ssmkit/dtype.h"

namespace ssmkit {

constexpr int kMaxDims = 8;

struct tensor_view {
  void* data = nullptr;
  ssmkit_dtype dtype = SSMKIT_DTYPE_F32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0};
  int device = -1;  // -1: host memory; >= 0: CUDA device ordinal

  bool present() const { return data != nullptr; }
  int64_t dim(int i) const { return i < 0 ? shape[ndim + i] : shape[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  template <class T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

}  // namespace ssmkit
