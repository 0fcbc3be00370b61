// Parameters of the model building blocks that the model runner composes with the op families: the
// float linear layer over pre-packed weight panels, the column and transposing splits between
// (tokens, channels) and (channels, tokens) layouts, RMSNorm with the float32 residual, Mamba-2's gated
// group RMSNorm, the embedding lookup, dt's softplus with limits, the token sampler, and the fused
// decode step (a whole model, one token per sequence, in one call). One struct per op, filled once by
// native/napi/nn.cc and read by native/cpu/nn.cc and native/cuda/nn.cu.
#pragma once
#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

namespace ssmkit {

// Output columns per packed weight panel: two AVX-512 registers of float32, four of AVX2.
constexpr int kLinearPanel = 32;
// A linear layer writes at most this many outputs, each a range of its columns (in_proj's z | x | B |
// C | dt split, for one).
constexpr int kLinearMaxOutputs = 6;

// W (N, K) -> panels: panel p holds columns 32p..32p+31 of W^T, zero-padded past N, so that a kernel
// reads each panel front to back once per row block. float32: (ceil(N / 32), K, 32); bfloat16 in pairs
// of k, (ceil(N / 32), Kx / 2, 32, 2) with Kx = K rounded up to even (see native/cpu/nn.cc).
struct pack_linear_params {
  tensor_view w;    // (N, K) float32 | float16 | bfloat16
  tensor_view out;  // (ceil(N / 32), Kx, 32) float32 | bfloat16
  int64_t n = 0;
  int64_t k = 0;
};

// One output of a linear layer: columns [col0, col0 + cols) of x @ W^T + bias.
struct linear_output {
  tensor_view out;  // (M, cols), or (batch, cols, seqlen) when transposed; float32 | float16 | bfloat16
  int64_t col0 = 0;
  int64_t cols = 0;
  bool transposed = false;
};

// out = x @ W^T + bias, with M = batch * seqlen rows; x may come in the scan layout (batch, K, seqlen)
// and each output may leave in it, so the scan ops need no separate transposes.
struct linear_params {
  tensor_view x;     // (M, K), or (batch, K, seqlen) when x_transposed; float32 | float16 | bfloat16
  tensor_view w;     // (ceil(N / 32), Kx, 32) from pack_linear; float32 | bfloat16
  tensor_view bias;  // (N,) float32, optional
  int64_t m = 0;
  int64_t k = 0;
  int64_t n = 0;
  int64_t seqlen = 1;  // the last dimension of the transposed layouts
  bool x_transposed = false;
  int num_outputs = 0;
  linear_output outputs[kLinearMaxOutputs];
};

// Columns of x (M, N) into outputs as linear writes them (the epilogue of a GEMM that cannot split its
// own output, such as the quantized ones).
struct split_columns_params {
  tensor_view x;  // (M, N) float32 | float16 | bfloat16
  int64_t m = 0;
  int64_t n = 0;
  int64_t seqlen = 1;  // the last dimension of transposed outputs
  int num_outputs = 0;
  linear_output outputs[kLinearMaxOutputs];
};

// residual_out = x + residual (float32 math); out = residual_out / rms(residual_out) * weight. With
// last_of > 0 only the last row of every last_of rows is normalized (the final norm before the LM head
// when only the next token's logits are wanted), and residual_out must be absent.
struct rms_norm_params {
  tensor_view x;             // (rows, d) float32 | float16 | bfloat16
  tensor_view residual;      // (rows, d) float, optional
  tensor_view residual_out;  // (rows, d) float, optional; may be the residual itself (updated in place)
  tensor_view weight;        // (d,) float32 | bfloat16
  tensor_view out;           // (rows, d), or (rows / last_of, d)
  int64_t rows = 0;
  int64_t d = 0;
  int64_t last_of = 0;
  float eps = 1e-5f;
};

// Mamba-2's gated RMSNorm (norm_before_gate = false): g = y * silu(z); each of the `groups` groups of
// d / groups channels is normalized on its own; out = g / rms_group(g) * weight.
struct gated_rms_norm_params {
  tensor_view y;       // (rows, d) float32 | float16 | bfloat16
  tensor_view z;       // (rows, d) float, optional (plain group RMSNorm without it)
  tensor_view weight;  // (d,) float32 | bfloat16
  tensor_view out;     // (rows, d)
  int64_t rows = 0;
  int64_t d = 0;
  int64_t groups = 1;
  float eps = 1e-5f;
};

// out[i] = row ids[i] of the embedding table, which may be the packed LM-head panels of a tied model.
struct embedding_params {
  tensor_view ids;     // (count,) int32
  tensor_view weight;  // (vocab, d), or packed (ceil(vocab / 32), d, 32); float32 | bfloat16
  tensor_view out;     // (count, d) float32 | float16 | bfloat16
  int64_t count = 0;
  int64_t vocab = 0;
  int64_t d = 0;
  bool packed = false;
};

// One output of a transposing split: rows [row0, row0 + rows) of each batch of x, transposed.
struct split_output {
  tensor_view out;  // (batch, c, rows)
  int64_t row0 = 0;
  int64_t rows = 0;
};

// x (batch, r, c) -> outputs (batch, c, rows_i): conv1d's (batch, channels, seqlen) back into the SSD
// scan's (batch, seqlen, channels) split into x | B | C (with c = 1 it is a plain split of the columns).
struct transpose_split_params {
  tensor_view x;  // (batch, r, c) float32 | float16 | bfloat16
  int64_t batch = 0;
  int64_t r = 0;
  int64_t c = 0;
  int num_outputs = 0;
  split_output outputs[kLinearMaxOutputs];
};

// out = clamp(softplus(dt + bias), lo, hi): Mamba-2's dt with a finite time_step_limit, which the scan
// ops take already transformed.
struct dt_limit_params {
  tensor_view dt;    // (rows, heads) float32 | float16 | bfloat16
  tensor_view bias;  // (heads,) float32, optional
  tensor_view out;   // (rows, heads) dt's dtype
  int64_t rows = 0;
  int64_t heads = 0;
  float lo = 0.0f;
  float hi = 0.0f;
};

// The next token of each row of logits: the argmax at temperature 0 (the first on ties), else a draw
// from softmax(logits / temperature) restricted to the top_k largest (0: all) and then to the smallest
// set of them holding top_p of their mass (1: all), using the caller's uniform draw for the row.
struct sample_params {
  tensor_view logits;  // (rows, vocab) float32
  tensor_view draws;   // (rows,) float64 in [0, 1); read only when sampling
  tensor_view tokens;  // (rows,) int32
  int64_t rows = 0;
  int64_t vocab = 0;
  float temperature = 0.0f;
  int64_t top_k = 0;
  float top_p = 1.0f;
};

// ---- the fused decode step ---------------------------------------------------------------------------

// How a linear layer of the decode step holds its weight.
enum linear_kind : int32_t {
  LINEAR_FLOAT = 0,  // packed float32 | bfloat16 panels (pack_linear)
  LINEAR_W8A8 = 1,   // int8 weights (pack_weights, 8 bits), int8 activations
  LINEAR_W4A8 = 2,   // int4 weights (pack_weights, 4 bits), int8 activations
  LINEAR_W4A16 = 3,  // int4 weights, float activations
};

struct linear_weight {
  linear_kind kind = LINEAR_FLOAT;
  tensor_view w;          // panels (ceil(n / 32), k, 32), or the packed int8/int4 bytes
  tensor_view bias;       // (n,) float32, optional
  tensor_view w_scale;    // quantized: (n,) float32 (w8a8) or (n, k / group_size) float (int4)
  tensor_view act_scale;  // w8a8 / w4a8: () float32 static input scale, optional (per token without)
  int64_t n = 0;
  int64_t k = 0;
  int64_t group_size = 0;
  bool rotate = false;  // quantized: Hadamard-rotate the input (out_proj)
};

// One layer of a Mamba (mamba2 = false) or Mamba-2 model.
struct mamba_layer_weights {
  tensor_view norm;  // (d_model,) float32
  linear_weight in_proj;
  linear_weight x_proj;     // Mamba: (dt_rank + 2 d_state, d_inner)
  linear_weight dt_proj;    // Mamba: (d_inner, dt_rank), no bias (dt_bias goes to the state update)
  linear_weight out_proj;   // (d_model, d_inner)
  tensor_view conv_weight;  // (conv_dim, conv_width) float32
  tensor_view conv_bias;    // (conv_dim,) float32, optional
  tensor_view dt_bias;      // Mamba (d_inner,) / Mamba-2 (nheads,) float32
  tensor_view A;            // Mamba (d_inner, d_state) / Mamba-2 (nheads,) float32
  tensor_view D;            // Mamba (d_inner,) / Mamba-2 (nheads,) float32
  tensor_view gated_norm;   // Mamba-2 (d_inner,) float32
};

// A whole model as the decode step runs it: one token per sequence through every layer.
struct mamba_decode_model {
  bool mamba2 = false;
  ssmkit_dtype act = SSMKIT_DTYPE_F32;  // the activations between ops
  bool residual_fp32 = true;
  int64_t d_model = 0;
  int64_t d_inner = 0;
  int64_t d_state = 0;
  int64_t dt_rank = 0;
  int64_t nheads = 0;
  int64_t headdim = 0;
  int64_t ngroups = 1;
  int64_t conv_width = 0;
  int64_t vocab = 0;
  float eps = 1e-5f;
  bool dt_limited = false;  // Mamba-2: clamp softplus(dt + bias) to [dt_lo, dt_hi]
  float dt_lo = 0.0f;
  float dt_hi = 0.0f;
  int num_layers = 0;
  const mamba_layer_weights* layers = nullptr;  // (num_layers,)
  tensor_view norm_f;                           // (d_model,) float32
  linear_weight head;                           // float panels (vocab, d_model)
  tensor_view embed;                            // (vocab, d_model), or the head's panels when embed_packed
  bool embed_packed = false;
};

// One decode step: ids (batch,) through the model, the states updated in place, logits written.
struct mamba_decode_params {
  const mamba_decode_model* model = nullptr;
  tensor_view ids;                           // (batch,) int32
  const tensor_view* conv_states = nullptr;  // per layer (batch, conv_dim, conv_width - 1) float32
  const tensor_view* ssm_states = nullptr;   // per layer Mamba (batch, d_inner, d_state), Mamba-2
                                             // (batch, nheads, headdim, d_state) float32
  tensor_view logits;                        // (batch, vocab) float32
  int64_t batch = 0;
  // With sample.tokens present, the step also picks each sequence's next token from its logits.
  sample_params sample;
};

status pack_linear_cpu(const pack_linear_params& p);
status linear_cpu(const linear_params& p);
status split_columns_cpu(const split_columns_params& p);
status rms_norm_cpu(const rms_norm_params& p);
status gated_rms_norm_cpu(const gated_rms_norm_params& p);
status embedding_cpu(const embedding_params& p);
status transpose_split_cpu(const transpose_split_params& p);
status dt_limit_cpu(const dt_limit_params& p);
status sample_cpu(const sample_params& p);
status mamba_decode_step_cpu(const mamba_decode_params& p);

status pack_linear_cuda(const pack_linear_params& p, void* stream);
status linear_cuda(const linear_params& p, void* stream);
status split_columns_cuda(const split_columns_params& p, void* stream);
status rms_norm_cuda(const rms_norm_params& p, void* stream);
status gated_rms_norm_cuda(const gated_rms_norm_params& p, void* stream);
status embedding_cuda(const embedding_params& p, void* stream);
status transpose_split_cuda(const transpose_split_params& p, void* stream);
status dt_limit_cuda(const dt_limit_params& p, void* stream);
status sample_cuda(const sample_params& p, void* stream);
status mamba_decode_step_cuda(const mamba_decode_params& p, void* stream);

// How many projections the CUDA decode step has enqueued with each fold since the process started (the
// addon's test hook `_decodeFolds`): norm, the norm in front of in_proj (with its quantizer for W8A8 and
// W4A8); quant, x_proj's activation quantizer; conv, the conv update after in_proj (W4A16).
struct decode_fold_counts {
  int64_t norm = 0;
  int64_t quant = 0;
  int64_t conv = 0;
};
decode_fold_counts decode_folds_cuda();

}  // namespace ssmkit
