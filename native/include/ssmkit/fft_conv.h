// Parameters of the FFT convolution family (H3's FlashConv: fftConv, s4dKernel, ssmConv), one struct
// per op, filled once by native/napi/fft.cc and read by native/cpu/fft_conv.cc and native/cuda/fft_conv.cu.
#pragma once
#include "ssmkit/status.h"
#include "ssmkit/tensor.h"

namespace ssmkit {

// out = postgate * act(causal_conv(v, k) + D v), v = pregate * u; act = gelu (erf form) when asked.
// Bidirectional filters add sum_{s >= t} k[h, 1, s - t] v_s (H3's fftconv_ref with k_rev).
struct fft_conv_params {
  tensor_view u;         // (batch, H, L) float32 | float16 | bfloat16
  tensor_view k;         // (H, Lk), or (H, 2, Lk) when bidirectional; float32
  tensor_view D;         // (H,) float32; optional
  tensor_view pregate;   // (batch, H, L) u's dtype; optional
  tensor_view postgate;  // (batch, H, L) u's dtype; optional
  tensor_view out;       // (batch, H, L) u's dtype
  int64_t batch = 0;
  int64_t H = 0;
  int64_t L = 0;
  int64_t Lk = 0;
  bool gelu = false;
  bool bidirectional = false;
};

status fft_conv_cpu(const fft_conv_params& p);
status fft_conv_cuda(const fft_conv_params& p, void* stream);

// k[h, l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(dt A_n l), dt = exp(logDt[h]) (S4D, ZOH).
struct s4d_kernel_params {
  tensor_view log_dt;  // (H,) float32
  tensor_view A;       // (H, N2, 2) float32, complex as (re, im)
  tensor_view C;       // (H, N2, 2) float32
  tensor_view k;       // (H, L) float32
  int64_t H = 0;
  int64_t N2 = 0;
  int64_t L = 0;
};

status s4d_kernel_cpu(const s4d_kernel_params& p);
status s4d_kernel_cuda(const s4d_kernel_params& p, void* stream);

// The diagonal SSM of s4d_kernel applied to u by state passing: blocks of block_size samples are
// convolved by FFT with the block-length kernel, and the state x (x_t = exp(dt A) x_{t-1} + B u_t,
// B = (exp(dt A) - 1) / A, y_t = 2 Re sum_n C_n x_t[n]) carries the past from block to block.
struct ssm_conv_params {
  tensor_view u;              // (batch, H, L) float32 | float16 | bfloat16
  tensor_view log_dt;         // (H,) float32
  tensor_view A;              // (H, N2, 2) float32
  tensor_view C;              // (H, N2, 2) float32
  tensor_view D;              // (H,) float32; optional
  tensor_view initial_state;  // (batch, H, N2, 2) float32; optional (zeros)
  tensor_view out;            // (batch, H, L) u's dtype
  tensor_view last_state;     // (batch, H, N2, 2) float32; optional (written when present)
  int64_t batch = 0;
  int64_t H = 0;
  int64_t L = 0;
  int64_t N2 = 0;
  int64_t block_size = 0;  // 0: the kernel's choice
};

status ssm_conv_cpu(const ssm_conv_params& p);
status ssm_conv_cuda(const ssm_conv_params& p, void* stream);

// Bytes of scratch memory the family's CPU kernels hold now and at most so far (all threads): what a
// caller checks to see that ssmConv's memory does not grow with the sequence length.
int64_t fft_scratch_bytes();
int64_t fft_scratch_peak_bytes();

}  // namespace ssmkit
