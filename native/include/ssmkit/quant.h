// Parameters of the quantization family (quantize, dequantize, hadamard, the int8/int4 GEMMs and
// packWeights), one struct per op, filled once by native/napi/quant.cc and read by the CPU kernels
// (native/cpu/quant.cc, native/cpu/gemm.cc) and, where they exist, the CUDA kernels (native/cuda/quant.cu).
//
// Conventions shared by every op here:
// - A tensor is seen as `lines` rows of its last dimension (`len` values each). int4 rows are packed two
//   values per byte, low nibble first, ceil(len / 2) bytes per row (SPEC.md).
// - Quantization is symmetric: q = clamp(rint(x / scale), lo, hi) with round half to even, [-127, 127]
//   for 8 bits and [-8, 7] for 4 bits; a computed scale is amax / 127 (8 bits) or amax / 7 (4 bits), and
//   1 where amax is 0.
// - The GEMMs compute out = x @ w^T with w (N, K) row-major, or w repacked by pack_weights_cpu into the
//   layout below. Integer products accumulate exactly in int32.
//
// Packed weight layout (what pack_weights writes and the GEMM kernels read). Columns (output channels n)
// are cut into groups of 64 (four panels of 16; the last group may hold fewer panels, and the last panel
// is padded with zero weights). Inside a group, K advances in steps and each step stores, for each panel,
// 16 columns x 4 bytes (one 64-byte vector):
// - 8 bits: a step is 4 values of k; byte r of column c holds w[n][k0 + r] + 128 (unsigned). K is padded
//   to a multiple of 4 with zero weights.
// - 4 bits: a step is 8 values of k; byte r of column c holds (w[n][k0 + r] + 8) in its low nibble and
//   (w[n][k0 + 4 + r] + 8) in its high nibble. K is padded to a multiple of 8 with zero weights.
// Storing the weights unsigned makes them the u8 operand of VNNI's vpdpbusd (u8 x s8), with the
// activations as the signed operand broadcast from memory; the offset comes back out as
// 128 * sum(a) (or 8 * sum(a)) per row, which is exact in int32.
#pragma once
#include <cstdint>

#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

namespace ssmkit {

// How many scales a quantized tensor has.
enum quant_granularity : int32_t {
  QUANT_TENSOR = 0,   // one scale; scale shape ()
  QUANT_TOKEN = 1,    // one per row of the last dimension; scale shape x.shape[:-1]
  QUANT_CHANNEL = 2,  // one per index of dimension 0 (a weight's output channel); scale shape (x.shape[0],)
  QUANT_GROUP = 3,    // one per group_size values along the last dimension; (..., len / group_size)
};

// Fast Walsh-Hadamard transform over the last dimension, times `scale`. n = m * 2^k with m in {1, 12, 20,
// 28, 40} (40 before 20 where both fit): out = (H_m kron H_{2^k}) x, element i * 2^k + p, H_{2^k} in
// Sylvester order and H_m the matrices of Dao-AILab's fast-hadamard-transform (see native/cpu/quant.cc).
struct hadamard_params {
  tensor_view x;    // (rows, n) float32 | float16 | bfloat16
  tensor_view out;  // (rows, n) x's dtype
  int64_t rows = 0;
  int64_t n = 0;
  float scale = 1.0f;
};

// n = m * 2^k as hadamard uses it (m = 1 for a power of two); false for any other length.
bool hadamard_factor(int64_t n, int* m, int64_t* pow2);
// H_m as m x m floats (+1 / -1), row-major, for m in {12, 20, 28, 40}; nullptr otherwise.
const float* hadamard_signs(int m);

status hadamard_cpu(const hadamard_params& p);
status hadamard_cuda(const hadamard_params& p, void* stream);

struct quantize_params {
  tensor_view x;      // (lines, len) float32 | float16 | bfloat16
  tensor_view q;      // (lines, len) int8 (bits 8) or int4 (bits 4)
  tensor_view scale;  // float32 (group: float32 | float16 | bfloat16); written unless static_scale
  int64_t lines = 0;
  int64_t len = 0;
  int64_t lines_per_channel = 1;  // QUANT_CHANNEL: the rows of one index of dimension 0
  int64_t group_size = 0;         // QUANT_GROUP: divides len
  int32_t bits = 8;
  quant_granularity granularity = QUANT_TENSOR;
  bool static_scale = false;  // scale is given (calibrated) and only read
  bool hadamard = false;      // rotate each row by hadamard(x, 1 / sqrt(len)) before quantizing
};

status quantize_cpu(const quantize_params& p);
status quantize_cuda(const quantize_params& p, void* stream);
// quantize_cuda's rows with hadamard where len = 40 * p (p = 64, 128, 256: the Mamba widths) and one
// scale a row (dynamic token scales, or static scales): hadamard's H_40 kernel with the quantizer in its
// epilogue, rotated by rot_scale. *launched is false, with nothing enqueued, where it does not apply
// (SSMKIT_CUDA_QUANT_H40=0: never).
status quantize_h40_cuda(const quantize_params& p, float rot_scale, void* stream, bool* launched);

struct dequantize_params {
  tensor_view q;      // (lines, len) int8 | int4
  tensor_view scale;  // float32 | float16 | bfloat16, shaped as quantize_params::scale
  tensor_view out;    // (lines, len) float32 | float16 | bfloat16
  int64_t lines = 0;
  int64_t len = 0;
  int64_t lines_per_channel = 1;
  int64_t group_size = 0;
  quant_granularity granularity = QUANT_TENSOR;
};

status dequantize_cpu(const dequantize_params& p);
status dequantize_cuda(const dequantize_params& p, void* stream);

// Bytes of a packed weight of (n, k) with `bits` 8 or 4.
int64_t packed_weight_bytes(int64_t n, int64_t k, int32_t bits);

struct pack_weights_params {
  tensor_view w;    // (n, k) int8 (bits 8) or int4 (bits 4)
  tensor_view out;  // (packed_weight_bytes(n, k, bits),) uint8
  int64_t n = 0;
  int64_t k = 0;
  int32_t bits = 8;
};

status pack_weights_cpu(const pack_weights_params& p);
status pack_weights_cuda(const pack_weights_params& p, void* stream);

// out = ((a @ w^T) * a_scale) * w_scale + bias, the product exact in int32.
struct gemm_w8a8_params {
  tensor_view a;        // (m, k) int8
  tensor_view w;        // (n, k) int8, or (packed_weight_bytes(n, k, 8),) uint8 when w_packed
  tensor_view a_scale;  // (1) or (m) float
  tensor_view w_scale;  // (1) or (n) float
  tensor_view bias;     // (n) float, optional
  tensor_view out;      // (m, n) float32 | float16 | bfloat16
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  bool w_packed = false;
  bool pdl = false;  // as gemm_w4a16_params::pdl
  // CUDA, one row, where gemm_w8a8_norm_folds says so (the decode step's norm and activation quantizer
  // folded into the projection after it): a is not read (it still gives the alignment); the product's
  // int8 input is quantize's 8-bit result, with the static scale a_scale (one value) or without a_scale
  // the row's per-token scale, of rms_norm's output for x = norm_x (16-bit), residual = norm_res
  // (optional), weight = norm_w, eps = norm_eps, rounded to norm_x's dtype; the sum norm_x + norm_res
  // goes to norm_res_out, which must not overlap norm_x or norm_res (every block reads them).
  tensor_view norm_x, norm_res, norm_res_out, norm_w;
  float norm_eps = 0.0f;
  // CUDA, one row, where gemm_w8a8_quant_folds says so (the decode step's activation quantizer folded into
  // x_proj): a is not read (it still gives the alignment); the product's int8 input is quantize's 8-bit
  // result of quant_x (16-bit), with the static scale a_scale (one value) or without a_scale the row's
  // per-token scale. Not with norm_x.
  tensor_view quant_x;
};

status gemm_w8a8_cpu(const gemm_w8a8_params& p);
status gemm_w8a8_cuda(const gemm_w8a8_params& p, void* stream);
// Whether gemm_w8a8_cuda can fold the norm and quantizer of p's norm_* fields into its product (one row,
// 16-bit norm_x, a kernel that reads the whole row in every block: the pair path).
bool gemm_w8a8_norm_folds(const gemm_w8a8_params& p);
// Whether gemm_w8a8_cuda can fold the quantizer of p's quant_x into its product (one row, 16-bit quant_x,
// the GEMV path, whose blocks each read the whole row).
bool gemm_w8a8_quant_folds(const gemm_w8a8_params& p);

// out = sum over groups g of (a @ w^T)_g * w_scale[:, g], times a_scale, plus bias; each group's
// product exact in int32. Per-channel weights are one group of k.
struct gemm_w4a8_params {
  tensor_view a;        // (m, k) int8
  tensor_view w;        // (n, k) int4, or (packed_weight_bytes(n, k, 4),) uint8 when w_packed
  tensor_view a_scale;  // (1) or (m) float
  tensor_view w_scale;  // (1), (n) or (n, k / group_size) float
  tensor_view bias;     // (n) float, optional
  tensor_view out;      // (m, n) float32 | float16 | bfloat16
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t group_size = 0;  // a multiple of 8 that divides k, or k
  bool w_packed = false;
  bool pdl = false;  // as gemm_w4a16_params::pdl
  // As gemm_w8a8_params' (gemm_w4a8_norm_folds, gemm_w4a8_quant_folds).
  tensor_view norm_x, norm_res, norm_res_out, norm_w;
  float norm_eps = 0.0f;
  tensor_view quant_x;
};

status gemm_w4a8_cpu(const gemm_w4a8_params& p);
status gemm_w4a8_cuda(const gemm_w4a8_params& p, void* stream);
bool gemm_w4a8_norm_folds(const gemm_w4a8_params& p);
bool gemm_w4a8_quant_folds(const gemm_w4a8_params& p);

// out = x @ (w * scales[:, group])^T + bias, in float32 arithmetic.
struct gemm_w4a16_params {
  tensor_view x;       // (m, k) float32 | float16 | bfloat16
  tensor_view w;       // (n, k) int4, or (packed_weight_bytes(n, k, 4),) uint8 when w_packed
  tensor_view scales;  // (n, k / group_size) float
  tensor_view bias;    // (n) float, optional
  tensor_view out;     // (m, n) float32 | float16 | bfloat16
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t group_size = 0;  // a multiple of 8 that divides k, or k
  bool w_packed = false;
  // CUDA on sm_90: launched with programmatic dependent launch, so that it may start (and read its
  // weights) while the kernel before it on the stream still runs; it reads x and writes out only after
  // that kernel has completed. The CPU ignores it.
  bool pdl = false;
  // CUDA, one row of 16-bit x, where gemm_w4a16_norm_folds says so (the decode step's norm folded into
  // the projection after it): x is not read; the product's input is rms_norm's output for x = norm_x,
  // residual = norm_res (optional), weight = norm_w, eps = norm_eps, in x's dtype, and the sum
  // norm_x + norm_res goes to norm_res_out, which must not overlap norm_x or norm_res (every block reads
  // them). x still gives the dtype and the alignment.
  tensor_view norm_x, norm_res, norm_res_out, norm_w;
  float norm_eps = 0.0f;
  // CUDA, one row of 16-bit x, where gemm_w4a16_conv_folds says so (the decode step's causal conv
  // folded into in_proj): out's columns [conv_col0, conv_col0 + dim) are also causal_conv1d_update's x
  // for one token with silu and conv_weight (dim, width), conv_bias (dim, optional): conv_out (1, dim)
  // gets its output and conv_state (1, dim, state_len) float32 is updated in place, as that op would.
  tensor_view conv_state, conv_weight, conv_bias, conv_out;
  int64_t conv_col0 = 0;
};

status gemm_w4a16_cpu(const gemm_w4a16_params& p);
status gemm_w4a16_cuda(const gemm_w4a16_params& p, void* stream);
// Whether gemm_w4a16_cuda can fold the norm of p's norm_* fields into its product (one row, 16-bit x,
// a kernel that reads the whole row in every block: the ring path on sm_90).
bool gemm_w4a16_norm_folds(const gemm_w4a16_params& p);
// Whether gemm_w4a16_cuda can fold the conv update of p's conv_* fields into its epilogue (one row of
// 16-bit x, width <= 4, width - 1 <= state_len <= 4, the ring path on sm_90).
bool gemm_w4a16_conv_folds(const gemm_w4a16_params& p);

}  // namespace ssmkit
