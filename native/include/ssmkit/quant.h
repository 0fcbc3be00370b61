// Parameters of the quantization family (quantize, dequantize, hadamard, the int8/int4 GEMMs and
// packWeights), one struct per op, filled once by native/napi/quant.cc and read by both
// native/cpu/quant.cc and native/cuda/quant.cu.
#pragma once
#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

namespace ssmkit {

// Fast Walsh-Hadamard transform (Sylvester order) over the last dimension, times `scale`.
struct hadamard_params {
  tensor_view x;    // (rows, n) float32 | float16 | bfloat16
  tensor_view out;  // (rows, n) x's dtype
  int64_t rows = 0;
  int64_t n = 0;
  float scale = 1.0f;
};

status hadamard_cpu(const hadamard_params& p);
status hadamard_cuda(const hadamard_params& p, void* stream);

}  // namespace ssmkit
