// CUDA kernels of the FFT convolution family: fftConv (FlashConv's fused FFT convolution), s4dKernel
// (the S4D Vandermonde kernel) and ssmConv (the S4D convolution by state passing between blocks).
//
// Variants. fftConv picks its path by the FFT length n = nextpow2(L + Lk - 1) (m = n / 2 complex
// points): a direct convolution when n <= 32; one fused kernel per row for m = 32..8192 (float32 rows of
// m = 1024 in their own 32 x 32 kernel, a row a warp; bfloat16 rows of m = 1024 and 4096 on the tensor
// cores with float16 operands: fft_conv_tc_kernel, a row a warp, and fft_conv_tcr_kernel, a row a block
// of four such warps and a radix-4 step); for m = 16384 (bfloat16 rows: fft_conv_tcr_kernel with sixteen
// warps and a radix-16 step, where a block may hold its 154 KB of shared memory) the same transforms run as
// two 8192-point halves (even and odd frequencies) in one block, for any L (on parts with less than 137 KB of
// shared memory a block, sm_86 and sm_89, m = 16384 takes the radix-16 passes instead); on sm_90, m = 2^15
// and 2^16 in clusters of eight blocks (fft_conv_cluster_kernel: a filter and its batch rows a cluster,
// the 8-point step of the transforms between the blocks' shared memories); a four-step FFT with one trip
// through device scratch each way for m = 2^15..2^20 (rows up to 1M samples) elsewhere and beyond; radix-16
// passes through scratch beyond that. Every path takes float32, float16 and bfloat16 activations and applies
// pregate, D, gelu (erf form) and postgate; bidirectional filters and D (the convolution with D at lag 0) are
// folded into the filter's spectrum. ssmConv convolves blocks of blockSize samples (clamped to 32..16384; any
// block size gives the same result) with the fused kernel and carries the S4D state between blocks on the GPU
// (block-local end states, a scan over blocks, the entering state's share of each output), so any
// length runs with scratch linear in L. s4dKernel sums its modes in double.
//
// Assumptions: contiguous tensors from cudaMallocAsync (256-byte aligned bases); pairs of elements are
// loaded as one 4- or 8-byte access only when L (and the block length) is even, since rows then start
// on even elements; rows of up to 2^29 samples; one call per stream at a time (scratch is allocated
// and freed in stream order).
//
// Design of the fused kernel. A real row x of n samples is packed as m complex values
// z = x[2i] + i x[2i+1]; a complex FFT of z, the real split, the product with the filter's spectrum
// and the re-packing into one complex spectrum, and the inverse complex FFT give y = x * k packed the
// same way. The filter's spectrum (H x (m + 1) complex, scaled) is made once per call by a separate
// kernel with the same FFT and read from L2 by every batch row. Each thread holds 16 complex values in
// registers; an m-point FFT is 2 to 4 radix-2..16 passes (Stockham order, decimation in time, the last
// pass radix 8), each pass an in-register DFT of its groups, with the passes exchanging data through
// shared memory (one row of m float2 per FFT row, padded where lanes would share banks). In the last
// forward pass each thread holds the two groups of frequencies f and m - f, so the real split, the
// product and the inverse's last pass happen in registers without another exchange; at m = 4096 the
// last pass has radix 16 instead (one group a thread, three passes of 16 instead of four of 8) and a
// thread trades half its values with the lane that holds the mirror group (lane ^ 16) by shuffles. u, the
// gates and y are read and written once, in their dtype, u and the pregate by predicated loads (no branch per
// element, so a group's loads are in flight together). Everything is float32. The fused and split
// kernels take their roots of unity from two small shared-memory tables filled once a block (W_N^e =
// coarse[e >> 6] fine[e & 63], N = 2m, entries rounded from double); the paths through scratch use
// sincospif of exact fractions. Either way the error stays near float32 rounding for every dtype.
//
// Expected bound: float32 issue. Per row of L = 4096 (m = 4096): two 4096-point FFTs at ~3.5
// instructions per complex value per radix-2 stage (12 stages) plus twiddles and the split, ~0.4 M
// lane instructions; 6144 rows is ~2.4 G lane instructions, ~75 us at 128 lanes x 132 SMs x 1.98 GHz,
// against ~24 us for the 100 MB that bfloat16 u and y move. Tensor-core DFTs (FlashFFTConv) would cut
// the arithmetic only at bf16/tf32 precision, which the float32 tolerance does not allow.
// Measured (H200, 8 x 768 x 1024 bf16) with 32 values a thread: 201 us, 231 registers, 8 warps an SM,
// issue slots 17.5% busy, 82% of cycles with no eligible warp: latency-bound, ~8x the issue estimate.
// With 16 values a thread at a 128-register cap (113-128 registers, a few dozen bytes of spill) and 16
// warps an SM, same 3 passes: 89.5 us (2.25x). So every length holds 16 values now, and the model for
// the rest is that 2.25x, times the shared-memory round trips a row (2 per exchange). m = 4096 and 8192
// take a 4th pass (radix 8, 8, 8 | 8 and 16, 8, 8 | 8; 256 and 512 threads a row, 8 round trips a row
// instead of 6): predicted 773 / 2.25 x 8 / 6 = ~460 us (400-500) at 8 x 768 x 4096. m = 16384 ran two
// 8192-point halves of 32 values (3 passes) in 256 threads, and its filter the spilling-free but
// 8-warp 16384-point kernel; both now run halves of 16 values in 512 threads (4 passes, 16 warps):
// predicted ~750 us (650-850) at 2 x 768 x 16384, from 1273. The aims (112 and 135 us) need about 4x
// more: 32 warps an SM (8 values a thread) or fewer exchanges (a radix-16 last pass with the split
// spread over a warp's shuffles). The filter kernel runs one row a block.
// Roots and loads: at m = 1024 a thread took 17 sincospif a row (~30 dependent instructions each,
// ~15% of its ~3000) and loaded u behind two branches per element (the row's end, the pair's
// alignment), each load followed at once by its conversion, so the loads could be paid one latency
// after another; 128 registers with 44-64 bytes of spill. With table roots (two shared loads and a
// complex product, ~10 instructions) and predicated scalar loads: 107 registers and no spill at
// m = 1024, 123 and none at 4096, the split kernel 128 and none (loads in two halves of a group).
// The exchanges of rows that sit side by side in a block (m <= 2048) wait only for their own row: a
// named barrier per row of 2 or 4 warps (m = 1024, 2048) instead of the block's 8, the warp's own
// barrier for rows of up to 32 threads (m <= 512); the roots alone predict ~10% at m = 1024, the
// loads up to a third more, the row barriers 5-15%.
// Predicted 89 -> 55-75 us at 8 x 768 x 1024 (the low end if the branchy loads were serialized),
// 388 -> 300-350 us at 8 x 768 x 4096, 991 -> 850-950 us at 2 x 768 x 16384 (one block an SM, its
// barriers unchanged); the four-step columns share the loads and take their twiddles W_m^(j2 f1) as
// three roots a group instead of eight (~20 sincospif a thread fewer in each column kernel): 2248 ->
// 1900-2200 us at 1 x 768 x 65536. The issue floor at 8 x 768 x 1024 is ~25 us (~2100 instructions a
// thread, mostly the DFTs' float32 arithmetic; 12288 warps at 4 x 132 x 1.98 G warp instructions a
// second): the 45 us aim needs ~55% of issue.
// The four-step path moves 16 bytes per complex value through scratch each way (805 MB at
// 1 x 768 x 65536, ~195 us at 4.1 TB/s) but measured 3888 us: its column and row kernels were
// latency-bound at 8 warps an SM like the fused one. They hold 16 values now (512-thread column blocks,
// 128-512 thread row blocks, 16 warps an SM); the columns take 3 passes instead of 2, the rows of 128
// points 2 as before: predicted ~2000-2400 us.
// The filters' spectra run in their own kernel before the conv kernel, and on the H200 8 x 768 x 1024
// took 68.2 us a call against 58.75 us for the conv kernel alone: ~9.5 us is the filters' kernel (one
// wave of 768 blocks of 2 warps, ~12 warps an SM, so about one row's latency chain, the forward half
// of a conv block's ~9.5 us lifetime, plus its DRAM loads of k) and the gap between the two launches,
// while the conv kernel could already load and transform its rows. So on sm_90 the fused and split
// conv kernels are launched with programmatic dependent launch: the filters' kernels allow the next
// grid at their start, the conv blocks start once every filter block runs and wait for the spectra
// only before the product (griddepcontrol.wait). Overlap comes at the price of registers: beside the
// filter blocks (~30 K registers an SM at m = 1024) one conv block fits instead of two until they end.
// Predicted: 68 -> 60-64 us at 8 x 768 x 1024 (the filters' wave under the conv's forward passes);
// at m = 4096 the filters take ~3 waves and only the last one overlaps: 312 -> 300-308 us; m = 16384's
// split filter kernel is ~1/4 of the conv's work in ~6 waves, one of which overlaps: 754 -> 725-745 us;
// the four-step and multi-pass paths are unchanged.
// Measured with Nsight (H200, bf16): the split conv kernel at 2 x 768 x 16384 took 567 us at 13.8
// cycles between a warp's issues, 4.4 of them waiting for instruction fetch (its code held two inlined
// copies of the 8192-point forward and inverse transforms, one per half; the filters' split kernel,
// with half as much code, waited 0.5); the fused conv kernel at 8 x 768 x 1024 took 60.0 us at 52% of
// issue slots with 16 warps an SM (2 blocks of 109 registers). Two changes: (1) the split kernel's
// halves share one copy of the transforms' code, the differences (loads, product, stores) outside
// the passes, and its grid walks (row, half) work items so that nothing but the loop counter lives
// from one half to the next (a loop over the halves inside a row's iteration spilled 376 bytes;
// this way 126 registers, no spill); predicted instruction-fetch waits down to ~0.5-1 cycle, 13.8 ->
// ~10-10.5 cycles an issue, 567 -> 410-430 us. Measured 430 us at 10.7 cycles an issue (the same
// 161 M instructions), the whole call 764 -> 623 us (float32: 634 us). (2) m = 1024 at 3 blocks an SM
// under an 80-register cap (12 bytes of spill): predicted issue 52% -> 62-68%, 60 -> 46-50 us;
// measured 54.9 us (24 warps an SM, 8.95 cycles an issue instead of 6.65: the extra warps mostly
// wait, 1.4% more instructions from the spill), the whole call 67.8 -> 64.5 us. The same cap at
// m = 4096 (92 bytes of spill) measured 317 -> 329 us, so it stays at m = 1024.
// The m = 1024 tensor-core filters' kernel is the exception: it is itself launched after its own wait
// and allows the conv kernel only after it (fft_conv_tc_filter_kernel).
// The filters' loads: filter_value read each sample behind branches (the row's end, D, the
// bidirectional tail), 64-bit index arithmetic, one load after another; at m = 16384 the split filter
// kernel loaded z[j] and z[j + mh] for both halves, 4 such reads per packed value and half, and
// Nsight put 4.4 of its 13.6 cycles an issue on long-scoreboard waits, 54 M instructions (4388 a
// thread a row, against ~3300 a half-transform in the conv kernel). Now the loads are predicated like
// u's (part of a group's loads in flight together), the direction is a template argument, D is added
// to z[0] by the thread that holds it (filter_add_d), and the upper half z[j + mh], zero for every
// one-directional filter (Lk <= m), is not read. Predicted ~2900 instructions a thread a row: 188 ->
// 110-130 us at 2 x 768 x 16384; measured (15dc49b, D still tested per element) 125.6 us, 37.1 M
// instructions (3020 a thread a row), 12.9 cycles an issue. Every filter kernel is held at 128
// registers (blocks of 64 threads took 182-219 with predicated loads: 5 blocks an SM where 768 rows
// need 6); the one-directional ones do not spill except m = 256 (36 bytes); the two-directional ones
// spill 12-16 bytes, 128-136 at m = 64 and 256, 112 in the split kernel.
// m = 4096 with a radix-16 last pass (mirror lanes): a row's transform was 4 passes of radix 8 (3
// exchanges each way, 8 shared-memory round trips a row with pass 1's loads and stores), now 3 of
// radix 16 (6 round trips), the same 12 butterfly stages; one twiddled pass fewer each way (16 complex
// products and 2 roots) against 32 shuffles of values in the product, which stays at 8 mirror products
// and 16 spectrum loads a thread; the lanes of groups 0 and c / 2 take their mirrors by selects, so the
// warp runs one path. Predicted 313 -> 255-285 us at 8 x 768 x 4096 with time following the round
// trips; measured 306.8 us (15dc49b): the conv kernel 267.5 us at 127 registers, 3041 instructions a
// thread a row, 53.8% of issue slots, 7.19 cycles an issue of which barrier 1.31, not selected 1.38,
// long scoreboard 0.97. The kernel is now close to issue-bound at 16 warps: the round-trip model no
// longer holds there, instructions do. The filter kernel (22.2 us at 4 passes) takes the same 3 passes
// (spectrum_mirror_lanes): predicted ~17 us, measured 18.3 (66f9579).
// Row order and prefetch: the conv kernels took rows batch-major, so at m = 16384 (spectra of 100 MB,
// twice the L2) each batch row read its filter's spectrum from DRAM; the rows of one filter now run
// next to each other (filter_major, for the one-row blocks of m >= 4096: at m = 1024 the extra index
// arithmetic cost 32 bytes of spill under the 80-register cap). Predicted 430 -> 390-410 us for the
// split conv kernel, measured 424.5 (15dc49b: 10.18 cycles an issue instead of 10.7). Its 16 warps an
// SM run in step (one block), so every load of u and of the spectrum waits the full latency; now the
// split kernel and the one-row fused kernels (m = 4096, 8192) run one wave of blocks that walk the
// rows, and each block asks L2 for its next row's u, gates and spectrum while it works on the current
// one (prefetch_row): predicted 424 -> 370-400 us for the split kernel (long-scoreboard waits, ~3 of
// its 10.2 cycles an issue, about halved), 267 -> 250-260 us at m = 4096 (0.97 cycles of 7.19).
// Measured (66f9579, Nsight): split 402.9 us (9.71 cycles an issue, 39.6% of issue slots), m = 4096
// 243.2 us (6.29 cycles an issue). The calls (bench, bf16): 8 x 768 x 1024 64.4 -> 61.4 us (filter
// kernel 10.5 -> 6.3 us), 8 x 768 x 4096 312.8 -> 284.6, 2 x 768 x 16384 620.7 -> 525.7,
// 1 x 768 x 65536 2008 -> 1916; float32 63.6 / 291.0 / 514.1 / 1795 (16384: 499.2 at 15dc49b, before
// the prefetch: its 64 KB rows of u may crowd the L2, not yet measured apart). A second run of the same
// kernels (449c017, bench --quick): bf16 61.5 / 284.0 / 532.0, float32 63.0 / 328.2 (runs 321-358) /
// 514.8 us: the float32 row at 4096 moved 291 -> 328 between the two runs, within this short bench's
// spread there.
// m = 1024 as 32 x 32 (fft_conv_wide_kernel; the default for float32, SSMKIT_CUDA_FFT_WIDE=1 for every
// dtype, =0 for none): a row a warp, each lane one 32-point group in registers, two passes of radix 32
// instead of three (16, 8, 8), so one exchange through shared memory each way instead of two, one
// twiddled pass each way instead of two, the warp's own barrier instead of a named one per row, and
// the product by mirror lanes (lane l and l ^ 16) as at m = 4096. Pass 1's output sits in a layout
// padded every 32 values (padded32_row): its writes (lanes 33 values apart) and the last pass's reads
// (consecutive) are free of bank conflicts, where the 16-value plan's shared loads ran at 2.5
// wavefronts a request. Count (Nsight, 16-value plan): 5300 warp instructions a row, 60% of them
// float32 arithmetic. The radix-2 butterflies are the same 5120 a transform either way; what goes is a
// twiddled pass (1024 complex products and ~900 root products, ~8 K lane instructions a transform,
// less ~1.5 K for the 20 general products inside each DFT-32) and an exchange (~2.5 K): ~20 K lane
// instructions a row, ~650 warp instructions, 12%. Predicted: the conv kernel 54.9 -> 46-50 us at the
// same issue rate, the call 62 -> 53-57 us at 8 x 768 x 1024 (short of the 45 us aim, which needs the
// arithmetic itself cut: the DFTs' float32 adds and products are ~2/3 of the issue slots). Measured
// (beca98c, H200, bf16, four unrolled 32-point transforms a row in the generic fused kernel): correct,
// 13.7% fewer instructions (28.3 M against 32.7 M) as predicted, but slower: the conv kernel 57.0 ->
// 74.7 us at 16 warps an SM (128 registers) and 79.9 us at 12 (168), the call 63.8 -> 70.5 and 74.3
// us (float32: 60.2 -> 65.4 and 64.7), at 9.6 and 7.75 cycles an issue of which 3.5 waiting for
// instruction fetch (~74 KB of code a row against ~43 KB). So the inverse runs the forward code on
// conj(Zy) (F^H x = conj(F conj(x))) and the row is one rolled loop of four steps of one DFT-32:
// predicted fetch waits 3.5 -> ~0.5 cycles, 74.7 -> 50-55 us. Measured (85a82b4, the A/B of the bench
// in one process, medians of 3): float32 60.2 -> 51.8 us a call at 12 warps an SM (168 registers, no
// spill; 54.4 at 16 warps and 128 registers, 54.3 with two rounds of the unrolled pair); bfloat16
// 62.8 -> 70.4 (63.8 at 16 warps): the conv kernel (Nsight, bf16) 56.5 -> 73.3 us (62.3 at 16 warps),
// 27.0 M instructions against 32.7 M but 7.2 cycles an issue at 12 warps (8.45 at 16), the fetch
// waits down only to 2.3-2.5 cycles, long-scoreboard 1.3-2.0. So the 32 x 32 kernel (four steps, 3
// blocks an SM) is the default for float32 only; the 16-bit dtypes keep the 16-value plan, and why
// they lose by ~10 us where float32 gains 8 (the kernels differ only in their loads and stores) is
// not yet measured apart. With that default (7dc0f99, bench --quick, 1212 tests passed): float32
// 54.0 us a call (runs 53.4..58.4; A/B 59.9 -> 51.9), bfloat16 65.1 (64.1..66.3; unchanged kernel, A/B
// 63.2 against 73.5 with the 32 x 32 one). A fence every 16 values inside the device-memory groups,
// first written for every kernel, changed the other kernels' code too (fewer loads in flight: an A/B on
// the H200 against the previous kernels, alternating, read bf16 67.0 / 66.9 against 64.5 / 64.0 us at
// 1024 and 2019 / 2018 against 1881 / 1872 at 65536); it is now the wide kernel's alone (gather and
// scatter's kEvery), and every other kernel's SASS is again that of the previous kernels (compared with
// cuobjdump).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_check.cuh"
#include "env.cuh"
#include "pdl.cuh"
#include "ssmkit/fft_conv.h"

namespace ssmkit {
namespace {

namespace cg = cooperative_groups;

// ---------------------------------------------------------------------------------------------------
// Complex arithmetic on float2 (x = re, y = im) and the compile-time roots of unity W_32^k.

__device__ __forceinline__ float2 c_add(float2 a, float2 b) {
  return make_float2(a.x + b.x, a.y + b.y);
}
__device__ __forceinline__ float2 c_sub(float2 a, float2 b) {
  return make_float2(a.x - b.x, a.y - b.y);
}
__device__ __forceinline__ float2 c_mul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
__device__ __forceinline__ float2 c_conj(float2 a) {
  return make_float2(a.x, -a.y);
}
__device__ __forceinline__ float2 c_mul_i(float2 a) {
  return make_float2(-a.y, a.x);
}
__device__ __forceinline__ float2 c_mul_neg_i(float2 a) {
  return make_float2(a.y, -a.x);
}

// cos(2 pi k / 64) for k in [0, 16].
__host__ __device__ constexpr float cos64_quadrant(int k) {
  return k == 0    ? 1.0f
         : k == 1  ? 9.951847267e-01f
         : k == 2  ? 9.807852804e-01f
         : k == 3  ? 9.569403357e-01f
         : k == 4  ? 9.238795325e-01f
         : k == 5  ? 8.819212643e-01f
         : k == 6  ? 8.314696123e-01f
         : k == 7  ? 7.730104534e-01f
         : k == 8  ? 7.071067812e-01f
         : k == 9  ? 6.343932842e-01f
         : k == 10 ? 5.555702330e-01f
         : k == 11 ? 4.713967368e-01f
         : k == 12 ? 3.826834324e-01f
         : k == 13 ? 2.902846773e-01f
         : k == 14 ? 1.950903220e-01f
         : k == 15 ? 9.801714033e-02f
                   : 0.0f;
}
// cos(2 pi k / 64) for any k.
__host__ __device__ constexpr float cos64(int k) {
  return (k & 63) <= 16   ? cos64_quadrant(k & 63)
         : (k & 63) <= 32 ? -cos64_quadrant(32 - (k & 63))
         : (k & 63) <= 48 ? -cos64_quadrant((k & 63) - 32)
                          : cos64_quadrant(64 - (k & 63));
}

// a * W_kN^e with W = exp(-2 pi i / kN), kN in {32, 64}, or a * conj(W_kN^e) for the inverse. e is a
// compile-time constant after unrolling, so the branches fold and the trivial roots cost no
// multiplications.
template <int kN, bool kInv>
__device__ __forceinline__ float2 mul_root(float2 a, int e) {
  static_assert(kN == 16 || kN == 32 || kN == 64, "roots of unity of order 16, 32 or 64");
  e = (e * (64 / kN)) & 63;
  e = kInv ? (64 - e) & 63 : e;
  constexpr float kHalfSqrt2 = 7.071067812e-01f;
  if (e == 0) return a;
  if (e == 16) return c_mul_neg_i(a);
  if (e == 32) return make_float2(-a.x, -a.y);
  if (e == 48) return c_mul_i(a);
  if (e == 8) return make_float2(kHalfSqrt2 * (a.x + a.y), kHalfSqrt2 * (a.y - a.x));
  if (e == 24) return make_float2(kHalfSqrt2 * (a.y - a.x), -kHalfSqrt2 * (a.x + a.y));
  if (e == 40) return make_float2(-kHalfSqrt2 * (a.x + a.y), kHalfSqrt2 * (a.x - a.y));
  if (e == 56) return make_float2(kHalfSqrt2 * (a.x - a.y), kHalfSqrt2 * (a.x + a.y));
  return c_mul(a, make_float2(cos64(e), -cos64(e - 16)));
}

template <bool kInv>
__device__ __forceinline__ float2 mul_w32(float2 a, int e) {
  return mul_root<32, kInv>(a, e);
}

// W_n^q = exp(-2 pi i q / n) for a power of two n (conjugated for the inverse). The fraction 2q/n is
// exact in float32 while q < 2^24; past that it is formed in double. The forward and inverse roots
// are computed from arguments of opposite sign on purpose: with the same argument the compiler would
// keep the forward pass's twiddles alive across the product for the inverse, which costs registers.
template <bool kInv>
__device__ __forceinline__ float2 root_of_unity(int q, int n) {
  float s, c;
  if (q < (1 << 24)) {
    const float x = static_cast<float>(q) * (2.0f / static_cast<float>(n));
    sincospif(kInv ? x : -x, &s, &c);
  } else {
    const double x = 2.0 * static_cast<double>(q) / static_cast<double>(n);
    double sd, cd;
    sincospi(kInv ? x : -x, &sd, &cd);
    s = static_cast<float>(sd);
    c = static_cast<float>(cd);
  }
  return make_float2(c, s);
}

// Roots of unity from sincospif: the kernels that run one pass or one step a launch.
struct sincos_roots {
  template <bool kInv>
  __device__ __forceinline__ float2 get(int q, int n) const {
    return root_of_unity<kInv>(q, n);
  }
};

// Roots W_n^q (conjugated for the inverse) for powers of two n that divide N = 2^kLogN, from two tables
// in shared memory filled once a block: fine[j] = W_N^j (j < 64) and coarse[i] = W_N^(64 i), so that
// W_N^e = coarse[e >> 6] fine[e & 63]. A root costs two shared loads and a complex product (~10
// instructions, ~40 cycles) instead of sincospif's ~30 instructions of dependent polynomial and
// quadrant arithmetic; the entries are rounded from double, so a root is within ~1.5 float32
// roundings of exact, as sincospif's. q * (N / n) is formed in unsigned 32-bit arithmetic: it wraps
// modulo 2^32, a multiple of N, so any q >= 0 gives W_n^(q mod n).
template <int kLogN>
struct table_roots {
  static constexpr int kN = 1 << kLogN;
  static constexpr int kFineBits = kLogN < 6 ? kLogN : 6;
  static constexpr int kFine = 1 << kFineBits;
  static constexpr int kCoarse = kN >> kFineBits;
  static constexpr size_t kBytes = static_cast<size_t>(kFine + kCoarse) * sizeof(float2);
  const float2* fine;    // (kFine,) shared
  const float2* coarse;  // (kCoarse,) shared
  // n is a compile-time constant at every call once inlined, so N / n folds to a shift.
  template <bool kInv>
  __device__ __forceinline__ float2 get(int q, int n) const {
    const unsigned e = (static_cast<unsigned>(q) * static_cast<unsigned>(kN / n)) & (kN - 1u);
    const float2 a = coarse[e >> kFineBits];
    const float2 b = fine[e & (kFine - 1u)];
    return kInv ? make_float2(a.x * b.x - a.y * b.y, -(a.x * b.y + a.y * b.x)) : c_mul(a, b);
  }
  // Fills the tables at `at` ((kFine + kCoarse,) float2 of shared memory, 8-byte aligned) with all the
  // block's threads and waits for them; every thread of the block must call it.
  static __device__ __forceinline__ table_roots fill(float2* at) {
    for (int i = static_cast<int>(threadIdx.x); i < kFine + kCoarse; i += static_cast<int>(blockDim.x)) {
      const int e = i < kFine ? i : (i - kFine) << kFineBits;
      double s, c;
      sincospi(-2.0 * static_cast<double>(e) / static_cast<double>(kN), &s, &c);
      at[i] = make_float2(static_cast<float>(c), static_cast<float>(s));
    }
    __syncthreads();
    return table_roots{at, at + kFine};
  }
};

__host__ __device__ constexpr int bit_reverse(int i, int r) {
  int out = 0;
  for (int b = 1; b < r; b <<= 1) {
    out = (out << 1) | (i & 1);
    i >>= 1;
  }
  return out;
}

// In-register DFT of kR points (natural order in and out): radix-2 decimation in time, fully unrolled.
template <int kR, bool kInv>
__device__ __forceinline__ void dft(float2* a) {
  float2 b[kR];
#pragma unroll
  for (int i = 0; i < kR; ++i) b[bit_reverse(i, kR)] = a[i];
#pragma unroll
  for (int half = 1; half < kR; half *= 2) {
#pragma unroll
    for (int base = 0; base < kR; base += 2 * half) {
#pragma unroll
      for (int j = 0; j < half; ++j) {
        const float2 t = mul_w32<kInv>(b[base + j + half], j * (32 / (2 * half)));
        b[base + j + half] = c_sub(b[base + j], t);
        b[base + j] = c_add(b[base + j], t);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kR; ++i) a[i] = b[i];
}

// x[s] *= W_n^(s q) for s < kR (conjugated for the inverse). Powers s = 4a + b are W^(4aq) W^(bq): two
// exact roots, W^(4aq) by a running product and W^(bq) from three kept powers, so at most ~kR / 4 + 2
// float32 roundings separate a twiddle from its exact value while only six complex values stay live.
template <int kR, bool kInv, class Roots>
__device__ __forceinline__ void twiddle(float2* x, int q, int n, const Roots& roots) {
  const float2 w1 = roots.template get<kInv>(q, n);
  if constexpr (kR == 2) {
    x[1] = c_mul(x[1], w1);
  } else {
    const float2 w2 = c_mul(w1, w1);
    const float2 w3 = c_mul(w2, w1);
    x[1] = c_mul(x[1], w1);
    x[2] = c_mul(x[2], w2);
    x[3] = c_mul(x[3], w3);
    if constexpr (kR > 4) {
      const float2 w4 = roots.template get<kInv>(4 * q, n);
      float2 wa = w4;
#pragma unroll
      for (int a = 4; a < kR; a += 4) {
        x[a] = c_mul(x[a], wa);
        x[a + 1] = c_mul(x[a + 1], c_mul(wa, w1));
        x[a + 2] = c_mul(x[a + 2], c_mul(wa, w2));
        x[a + 3] = c_mul(x[a + 3], c_mul(wa, w3));
        if (a + 4 < kR) wa = c_mul(wa, w4);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The FFT passes. An m-point transform is passes i = 1..P of radix r_i (the last radix 16); R_i is the
// product of r_1..r_i. After pass i the data holds, for each offset o < m / R_i, the R_i-point DFT of
// x[o + (m / R_i) j], frequency q at position o * R_i + q. Pass i combines, for each group (o, q) with
// q < R_(i-1), the r_i inputs at positions (o + (m / R_i) s) * R_(i-1) + q = g + s * m / r_i (g is the
// group's index o * R_(i-1) + q), twiddled by W_(R_i)^(s q), into the outputs at o * R_i + q + R_(i-1) t.
// Pass 1 reads natural order; the last pass writes frequency q + (m / 16) t at position q + (m / 16) t.
// Every thread holds kE values: kE / r_i groups per pass.

// Complex values per thread: 32 (the multi-pass kernels and fused lengths up to 8192), 64 for the fused
// 16384; the last pass has radix kE / 2 and holds a group and its mirror.
constexpr int kE = 32;
constexpr int kLastRadix = kE / 2;

// A group's elements sit at positions base + s * stride (s < kR): on the input side base = g and
// stride = m / kR; on the output side base = (g - q) kR + q and stride = R_(i-1). Positions within a
// row fit in 32 bits (m <= 2^30). Accessors take (base, s, stride), so that a padded shared-memory
// layout can turn them into one address per group plus constant offsets.
template <int kR, bool kOut>
__device__ __forceinline__ void group_span(int g, int rprev, int m, int& base, int& stride) {
  if (kOut) {
    const int q = g % rprev;
    base = (g - q) * kR + q;
    stride = rprev;
  } else {
    base = g;
    stride = m / kR;
  }
}

// Keeps the compiler from hoisting the loads that follow above this point, so that the global loads of
// all 32 values (and their gates, and the filter's spectrum) are not all in flight at once. It
// synchronizes only the lanes active here: lanes past the end of a grid-stride loop have left, and
// thread 0 runs its own branch of the product.
__device__ __forceinline__ void load_fence() {
  __syncwarp(__activemask());
}

// Programmatic dependent launch (sm_90, pdl.cuh): the filters' kernel lets the conv kernel that follows
// it in the stream start as soon as every filter block is running, and the conv kernel loads its rows and
// runs the forward transform before it waits for the filters' spectra. Code compiled for an older
// architecture has neither instruction, and the conv kernel is then launched without the attribute.

// Loads the kE inputs (kOut = false) or outputs (kOut = true) of a thread's groups; group(e) is the
// index g of its e-th group. kFenced: one group's loads at a time (for loads from device memory), and
// with kEvery > 0, kEvery at a time within a group (the 32-value groups of fft_conv_wide_kernel).
template <int kR, bool kOut, bool kFenced = false, int kEvery = 0, int kN, class Group, class Load>
__device__ __forceinline__ void gather(float2 (&v)[kN], Group group, int rprev, int m, Load load) {
#pragma unroll
  for (int e = 0; e < kN / kR; ++e) {
    if (kFenced && e > 0) load_fence();
    int base, stride;
    group_span<kR, kOut>(group(e), rprev, m, base, stride);
#pragma unroll
    for (int s = 0; s < kR; ++s) {
      if (kFenced && kEvery > 0 && s > 0 && s % (kEvery > 0 ? kEvery : 1) == 0) load_fence();
      v[e * kR + s] = load(base, s, stride);
    }
  }
}

template <int kR, bool kOut, bool kFenced = false, int kEvery = 0, int kN, class Group, class Store>
__device__ __forceinline__ void scatter(const float2 (&v)[kN], Group group, int rprev, int m, Store store) {
#pragma unroll
  for (int e = 0; e < kN / kR; ++e) {
    if (kFenced && e > 0) load_fence();
    int base, stride;
    group_span<kR, kOut>(group(e), rprev, m, base, stride);
#pragma unroll
    for (int s = 0; s < kR; ++s) {
      if (kFenced && kEvery > 0 && s > 0 && s % (kEvery > 0 ? kEvery : 1) == 0) load_fence();
      store(base, s, stride, v[e * kR + s]);
    }
  }
}

// A row of (m,) float2 in device memory.
struct flat_row {
  float2* p;
  __device__ __forceinline__ float2 operator()(int base, int s, int stride) const {
    return p[base + s * stride];
  }
  __device__ __forceinline__ void operator()(int base, int s, int stride, float2 x) const {
    p[base + s * stride] = x;
  }
};

__device__ __forceinline__ int padded(int pos) {
  return pos + (pos >> 4);
}

// Shared memory with one pad every 16 values: what pass 1 writes with lanes r_1 apart (and the inverse
// reads back), so that those lanes fall in different banks. With a stride that is a multiple of 16, or
// bases that are (`aligned`), the address is one padded base plus constant offsets.
struct padded_row {
  float2* p;
  bool aligned;
  __device__ __forceinline__ int at(int base, int s, int stride) const {
    if (stride % 16 == 0) return padded(base) + s * (stride + stride / 16);
    if (aligned) return padded(base) + padded(s * stride);
    return padded(base + s * stride);
  }
  __device__ __forceinline__ float2 operator()(int base, int s, int stride) const {
    return p[at(base, s, stride)];
  }
  __device__ __forceinline__ void operator()(int base, int s, int stride, float2 x) const {
    p[at(base, s, stride)] = x;
  }
};

// Shared memory with one pad every 32 values, for two passes of radix 32 with one group a lane: pass 1
// writes group g at positions 32 g + s (lanes 33 values apart: distinct bank pairs in each half-warp),
// the last pass reads group g at g + 32 s (consecutive lanes, consecutive values). Pass 1's bases are
// multiples of 32 and its offsets below 32, the last pass's strides multiples of 32, so either way the
// address is one padded base plus constant offsets.
struct padded32_row {
  float2* p;
  static __device__ __forceinline__ int pad(int pos) { return pos + (pos >> 5); }
  __device__ __forceinline__ int at(int base, int s, int stride) const {
    if (stride % 32 == 0) return pad(base) + s * (stride + stride / 32);
    return pad(base) + pad(s * stride);  // base % 32 == 0 (pass 1's output side)
  }
  __device__ __forceinline__ float2 operator()(int base, int s, int stride) const {
    return p[at(base, s, stride)];
  }
  __device__ __forceinline__ void operator()(int base, int s, int stride, float2 x) const {
    p[at(base, s, stride)] = x;
  }
};

// The arithmetic of one pass on a thread's groups: forward = twiddle then DFT; inverse = the adjoint
// (conjugate DFT, then conjugate twiddle), so running the inverse passes in reverse order undoes the
// forward ones up to the factor m.
template <int kR, bool kInv, int kN, class Group, class Roots = sincos_roots>
__device__ __forceinline__ void butterflies(float2 (&v)[kN], Group group, int rprev,
                                            const Roots& roots = {}) {
#pragma unroll
  for (int e = 0; e < kN / kR; ++e) {
    const int q = group(e) % rprev;
    if (!kInv) {
      if (rprev > 1) twiddle<kR, false>(&v[e * kR], q, rprev * kR, roots);
      dft<kR, false>(&v[e * kR]);
    } else {
      dft<kR, true>(&v[e * kR]);
      if (rprev > 1) twiddle<kR, true>(&v[e * kR], q, rprev * kR, roots);
    }
  }
}

// The real split, the product with the filter and the re-packing, on one mirror pair: za = Z[f] and
// zb = Z[m - f] of the packed signal (indices mod m), w = W_(2m)^f, ka = S[f] and kb = S[m - f] of the
// filter's scaled spectrum. Leaves za = Zy[f] and zb = Zy[m - f], whose inverse m-point DFT is y packed.
__device__ __forceinline__ void mirror_product(float2& za, float2& zb, float2 w, float2 ka, float2 kb) {
  const float2 zbc = c_conj(zb);
  const float2 even = c_add(za, zbc);              // 2 E[f]: the spectrum of x[2i]
  const float2 odd = c_mul_neg_i(c_sub(za, zbc));  // 2 O[f]: the spectrum of x[2i + 1]
  const float2 wodd = c_mul(w, odd);
  const float2 ya = c_mul(c_add(even, wodd), ka);          // Y[f]
  const float2 yb = c_mul(c_sub(even, wodd), c_conj(kb));  // Y[f + m]
  const float2 sum = c_add(ya, yb);
  const float2 dif = c_mul_i(c_mul(c_conj(w), c_sub(ya, yb)));
  za = c_add(sum, dif);
  zb = c_conj(c_sub(sum, dif));
}

// The spectrum of a packed real filter on one mirror pair: X[f] and conj(X[m - f]) times `scale`.
__device__ __forceinline__ void mirror_spectrum(float2 za, float2 zb, float2 w, float scale, float2& xa,
                                                float2& xbc) {
  const float2 zbc = c_conj(zb);
  const float2 even = c_add(za, zbc);
  const float2 odd = c_mul_neg_i(c_sub(za, zbc));
  const float2 wodd = c_mul(w, odd);
  const float2 a = c_add(even, wodd);
  const float2 b = c_sub(even, wodd);
  xa = make_float2(a.x * scale, a.y * scale);
  xbc = make_float2(b.x * scale, -b.y * scale);
}

// The last pass's two groups for thread t of an m-point transform of last radix kLast (c = m / kLast
// groups, t < c / 2): q and c - q, or 0 and c / 2 for thread 0, so that frequency f and m - f sit in
// one thread.
struct last_groups {
  int q1, q2;
  __device__ __forceinline__ int operator()(int e) const { return e == 0 ? q1 : q2; }
};
template <int kLast>
__device__ __forceinline__ last_groups make_last_groups(int t, int m) {
  const int c = m / kLast;
  return last_groups{t, t == 0 ? c / 2 : c - t};
}

// The conv's work in the last pass (radix K): v[0..K) = Z[q1 + c k], v[K..2K) = Z[q2 + c k] in, Zy
// out (c = m / K). spectrum: (m + 1,) the row's filter. Frequency q1 + c k pairs with q2 + c (K-1-k);
// thread 0's groups 0 and c / 2 pair within themselves (k with K - k, and k with K - 1 - k).
template <int K, class Spectrum, class Roots = sincos_roots>
__device__ __forceinline__ void product_last_pass(float2 (&v)[2 * K], int64_t t, int64_t m, Spectrum spectrum,
                                                  const Roots& roots = {}) {
  const int64_t c = m / K;
  if (t != 0) {
    const float2 base = roots.template get<false>(static_cast<int>(t), static_cast<int>(2 * m));
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k % 4 == 0 && k > 0) load_fence();
      const int64_t f = t + c * k;
      mirror_product(v[k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), spectrum(f), spectrum(m - f));
    }
  } else {
    // Thread 0 (lane 0 of its warp) takes this branch; its fences only order its own loads.
    {
      float2 za = v[0], zb = v[0];
      mirror_product(za, zb, make_float2(1.0f, 0.0f), spectrum(0), spectrum(m));
      v[0] = za;
    }
    {
      float2 za = v[K / 2], zb = v[K / 2];
      mirror_product(za, zb, make_float2(0.0f, -1.0f), spectrum(m / 2), spectrum(m / 2));
      v[K / 2] = za;
    }
#pragma unroll
    for (int k = 1; k < K / 2; ++k) {
      if (k % 4 == 0) load_fence();
      mirror_product(v[k], v[K - k], mul_root<2 * K, false>(make_float2(1.0f, 0.0f), k), spectrum(c * k),
                     spectrum(m - c * k));
    }
    load_fence();
    const float2 base = roots.template get<false>(static_cast<int>(c / 2), static_cast<int>(2 * m));
#pragma unroll
    for (int k = 0; k < K / 2; ++k) {
      if (k % 4 == 0 && k > 0) load_fence();
      const int64_t f = c / 2 + c * k;
      mirror_product(v[K + k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), spectrum(f),
                     spectrum(m - f));
    }
  }
}

// The conv's work in a last pass of radix K with one group a thread (mirror lanes, plan_last_groups):
// v[k] = Z[g + c k] in, Zy out (c = m / K). The mirror of g + c k is (c - g) + c (K - 1 - k), value
// K - 1 - k of lane ^ 16: each lane takes its partner's v[K/2..K) by shuffles, runs the full
// mirror_product for its k < K/2 (spectrum loads and products as in product_last_pass: K/2 a
// thread), keeps Zy[g + c k] and hands Zy of the partner's v[K - 1 - k] back. The two lanes of p = 0
// (lanes 0 and 16 of the row's first warp) hold groups 0 and c / 2, which mirror onto themselves:
// they take the mirror from their own values instead (group 0: k with K - k, and k = 0 with itself at
// f = 0 and m; group c / 2: k with K - 1 - k) by selects, so the warp runs one path; group 0's
// f = m / 2 (k = K / 2, its own mirror) is one more product on lane 0. Every lane runs the shuffles.
template <int K, class Spectrum, class Roots>
__device__ __forceinline__ void product_mirror_lanes(float2 (&v)[K], int g, int64_t m, Spectrum spectrum,
                                                     const Roots& roots) {
  const int64_t c = m / K;
  const bool zero = g == 0;
  const bool half = g == c / 2;
  const float2 base = roots.template get<false>(g, static_cast<int>(2 * m));
  float2 back[K / 2];
#pragma unroll
  for (int k = 0; k < K / 2; ++k) {
    if (k % 4 == 0 && k > 0) load_fence();
    const float2 theirs = make_float2(__shfl_xor_sync(0xffffffffu, v[K - 1 - k].x, 16),
                                      __shfl_xor_sync(0xffffffffu, v[K - 1 - k].y, 16));
    const int64_t f = g + c * k;
    float2 za = v[k];
    float2 zb = zero ? v[(K - k) % K] : half ? v[K - 1 - k] : theirs;
    mirror_product(za, zb, mul_root<2 * K, false>(base, k), spectrum(f), spectrum(m - f));
    v[k] = za;
    back[k] = zb;
  }
  if (zero) {
    float2 za = v[K / 2], zb = v[K / 2];
    mirror_product(za, zb, make_float2(0.0f, -1.0f), spectrum(m / 2), spectrum(m / 2));
    v[K / 2] = za;
  }
  // v[i] for i >= K / 2: Zy of pair k = K - 1 - i, from the partner (zb of its step k) or, on the
  // lanes of p = 0, from this lane's own steps.
#pragma unroll
  for (int i = K / 2; i < K; ++i) {
    const int k = K - 1 - i;
    const float2 theirs =
        make_float2(__shfl_xor_sync(0xffffffffu, back[k].x, 16), __shfl_xor_sync(0xffffffffu, back[k].y, 16));
    if (i > K / 2) {
      v[i] = zero ? back[K - i] : half ? back[k] : theirs;
    } else {
      v[i] = zero ? v[i] : half ? back[k] : theirs;
    }
  }
}

// The same for the odd frequencies of a split transform (below): v[0..K) = Z'[t + c k] and
// v[K..2K) = Z'[c - 1 - t + c k], where Z'[k] = Z[2k + 1] of the full m2 = 2m point transform; local
// frequency k pairs with m - 1 - k, the full 2k + 1 with m2 - 2k - 1. spectrum: (m2 + 1,).
template <int K, class Roots = sincos_roots>
__device__ __forceinline__ void product_last_pass_odd(float2 (&v)[2 * K], int64_t t, int64_t m,
                                                      const float2* spectrum, const Roots& roots = {}) {
  const int64_t c = m / K;
  const int64_t m2 = 2 * m;
  const float2 base = roots.template get<false>(static_cast<int>(2 * t + 1), static_cast<int>(2 * m2));
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (k % 4 == 0 && k > 0) load_fence();
    const int64_t f = 2 * (t + c * k) + 1;
    mirror_product(v[k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), spectrum[f], spectrum[m2 - f]);
  }
}

// The filter's work in the last pass (radix K): store(f, S[f]) for all f in [0, m] from Z of the packed
// filter.
template <int K, class Store, class Roots = sincos_roots>
__device__ __forceinline__ void spectrum_last_pass(const float2 (&v)[2 * K], int64_t t, int64_t m,
                                                   float scale, Store spectrum, const Roots& roots = {}) {
  const int64_t c = m / K;
  float2 xa, xbc;
  if (t != 0) {
    const float2 base = roots.template get<false>(static_cast<int>(t), static_cast<int>(2 * m));
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t f = t + c * k;
      mirror_spectrum(v[k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), scale, xa, xbc);
      spectrum(f, xa);
      spectrum(m - f, xbc);
    }
  } else {
    mirror_spectrum(v[0], v[0], make_float2(1.0f, 0.0f), scale, xa, xbc);
    spectrum(0, xa);
    spectrum(m, xbc);
    mirror_spectrum(v[K / 2], v[K / 2], make_float2(0.0f, -1.0f), scale, xa, xbc);
    spectrum(m / 2, xa);
#pragma unroll
    for (int k = 1; k < K / 2; ++k) {
      mirror_spectrum(v[k], v[K - k], mul_root<2 * K, false>(make_float2(1.0f, 0.0f), k), scale, xa, xbc);
      spectrum(c * k, xa);
      spectrum(m - c * k, xbc);
    }
    const float2 base = roots.template get<false>(static_cast<int>(c / 2), static_cast<int>(2 * m));
#pragma unroll
    for (int k = 0; k < K / 2; ++k) {
      const int64_t f = c / 2 + c * k;
      mirror_spectrum(v[K + k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), scale, xa, xbc);
      spectrum(f, xa);
      spectrum(m - f, xbc);
    }
  }
}

// The filter's work in a last pass of radix K with one group a thread (mirror lanes, as
// product_mirror_lanes): store(f, S[f]) for all f in [0, m]. Each lane takes its partner's
// v[K/2..K), the mirrors of its own v[0..K/2), and writes both spectra of those K/2 pairs, so the two
// lanes write the 2K frequencies of their groups once each; the lanes of groups 0 and c / 2 take the
// mirrors from their own values, and lane 0 writes f = m / 2 besides. Every lane runs the shuffles.
template <int K, class Store, class Roots>
__device__ __forceinline__ void spectrum_mirror_lanes(const float2 (&v)[K], int g, int64_t m, float scale,
                                                      Store spectrum, const Roots& roots) {
  const int64_t c = m / K;
  const bool zero = g == 0;
  const bool half = g == c / 2;
  const float2 base = roots.template get<false>(g, static_cast<int>(2 * m));
  float2 xa, xbc;
#pragma unroll
  for (int k = 0; k < K / 2; ++k) {
    const float2 theirs = make_float2(__shfl_xor_sync(0xffffffffu, v[K - 1 - k].x, 16),
                                      __shfl_xor_sync(0xffffffffu, v[K - 1 - k].y, 16));
    const int64_t f = g + c * k;
    const float2 zb = zero ? v[(K - k) % K] : half ? v[K - 1 - k] : theirs;
    mirror_spectrum(v[k], zb, mul_root<2 * K, false>(base, k), scale, xa, xbc);
    spectrum(f, xa);
    spectrum(m - f, xbc);
  }
  if (zero) {
    mirror_spectrum(v[K / 2], v[K / 2], make_float2(0.0f, -1.0f), scale, xa, xbc);
    spectrum(m / 2, xa);
  }
}

// The same for the odd frequencies of a split transform (as product_last_pass_odd): v[0..K) =
// Z'[t + c k] and v[K..2K) = Z'[c - 1 - t + c k], Z'[k] = Z[2k + 1] of the m2 = 2m point transform;
// writes S[f] and S[m2 - f] for the odd f. spectrum: (m2 + 1,).
template <int K, class Roots = sincos_roots>
__device__ __forceinline__ void spectrum_last_pass_odd(const float2 (&v)[2 * K], int64_t t, int64_t m,
                                                       float scale, float2* spectrum,
                                                       const Roots& roots = {}) {
  const int64_t c = m / K;
  const int64_t m2 = 2 * m;
  const float2 base = roots.template get<false>(static_cast<int>(2 * t + 1), static_cast<int>(2 * m2));
  float2 xa, xbc;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t f = 2 * (t + c * k) + 1;
    mirror_spectrum(v[k], v[2 * K - 1 - k], mul_root<2 * K, false>(base, k), scale, xa, xbc);
    spectrum[f] = xa;
    spectrum[m2 - f] = xbc;
  }
}

// ---------------------------------------------------------------------------------------------------
// Element access: activations in their dtype, converted by the hardware's cvt instructions.

template <ssmkit_dtype T>
__device__ __forceinline__ float to_float(uint16_t bits) {
  if constexpr (T == SSMKIT_DTYPE_F16) {
    return __half2float(__ushort_as_half(bits));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(bits));
  }
}
template <ssmkit_dtype T>
__device__ __forceinline__ uint16_t from_float(float v) {
  if constexpr (T == SSMKIT_DTYPE_F16) {
    return __half_as_ushort(__float2half_rn(v));
  } else {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

// Elements i and i + 1 of p (the second only when `both`, else 0). `vec`: i is even and the row's
// elements are pair-aligned, so the pair is one 4- or 8-byte load.
template <ssmkit_dtype T>
__device__ __forceinline__ float2 load_pair(const void* p, int64_t i, bool both, bool vec) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    const float* f = static_cast<const float*>(p);
    if (both && vec) return *reinterpret_cast<const float2*>(f + i);
    return make_float2(f[i], both ? f[i + 1] : 0.0f);
  } else {
    const uint16_t* h = static_cast<const uint16_t*>(p);
    if (both && vec) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(h + i);
      return make_float2(to_float<T>(static_cast<uint16_t>(w & 0xffffu)),
                         to_float<T>(static_cast<uint16_t>(w >> 16)));
    }
    return make_float2(to_float<T>(h[i]), both ? to_float<T>(h[i + 1]) : 0.0f);
  }
}

template <ssmkit_dtype T>
__device__ __forceinline__ void store_pair(void* p, int64_t i, float2 v, bool both, bool vec) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    float* f = static_cast<float*>(p);
    if (both && vec) {
      *reinterpret_cast<float2*>(f + i) = v;
    } else {
      f[i] = v.x;
      if (both) f[i + 1] = v.y;
    }
  } else {
    uint16_t* h = static_cast<uint16_t*>(p);
    if (both && vec) {
      *reinterpret_cast<uint32_t*>(h + i) =
          static_cast<uint32_t>(from_float<T>(v.x)) | (static_cast<uint32_t>(from_float<T>(v.y)) << 16);
    } else {
      h[i] = from_float<T>(v.x);
      if (both) h[i + 1] = from_float<T>(v.y);
    }
  }
}

__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// One convolution call as the kernels see it. A row is a segment of seg_len samples of one (batch, H)
// sequence (the whole sequence for fftConv; a block for ssmConv).
struct conv_args {
  const void* u;           // (batch, H, L)
  const void* pregate;     // (batch, H, L) u's dtype, or null
  const void* postgate;    // (batch, H, L) u's dtype, or null
  const float* extra;      // (batch, H, L) float32 added before the activation (ssmConv's state), or null
  void* out;               // (batch, H, L) u's dtype
  const float2* spectrum;  // (H, m + 1) the filters' scaled spectra
  const float4* coef;      // (H, m) the tensor-core kernel's product coefficients (fft_conv_tc_filter_kernel)
  const float* cmax;       // (H,) their bound: max over f of |Re a| + |Im a| + |Re b| + |Im b|
  int64_t rows;            // rows of this launch
  int64_t row0;            // the global index of its first row (batch * H * segments in all)
  int64_t H;
  int64_t L;
  int64_t seg_len;
  int64_t segments;
  int64_t m;  // complex FFT length: n / 2
  // rows / H where fft_conv_tc_kernel takes the launch's rows filter-major (row0 = 0 and rows a multiple of
  // H; set by its launch), else 0: a launch constant, so that the kernel never holds it in a register.
  uint32_t per_h;
  bool gelu;
  bool vec;  // rows and segments start at even elements: pairs load at once
};

// Where row r of a conv call lives.
struct conv_row {
  int64_t base;  // element offset of the segment's first sample in u, out, the gates and extra
  int64_t len;   // samples in the segment (0 for the padding rows of a block)
  int64_t h;
  __device__ __forceinline__ conv_row() : base(0), len(0), h(0) {}
  __device__ __forceinline__ conv_row(const conv_args& a, int64_t r) {
    if (r < a.rows) {
      const int64_t bh = (a.row0 + r) / a.segments;
      const int64_t start = ((a.row0 + r) % a.segments) * a.seg_len;
      base = bh * a.L + start;
      len = a.L - start < a.seg_len ? a.L - start : a.seg_len;
      h = bh % a.H;
    } else {
      base = 0;
      len = 0;
      h = 0;
    }
  }
};

// Row r of a launch in an order that puts the rows of one filter next to each other, (h, batch,
// segment) instead of (batch, h, segment), so that the rows reading a spectrum run at about the same
// time and all but the first find it in L2 (at m = 16384 the spectra of 768 filters are 100 MB, twice
// the L2, and batch-major rows read each from DRAM once per batch row). For launches of whole sets
// of rows (row0 = 0, rows a multiple of H: the fused and split kernels); otherwise the identity.
__device__ __forceinline__ int64_t filter_major(const conv_args& a, int64_t r) {
  const int64_t per_h = a.rows / a.H;  // batch * segments
  if (a.row0 != 0 || r >= a.rows || per_h * a.H != a.rows) return r;
  const int64_t h = r / per_h;
  const int64_t rest = r - h * per_h;
  const int64_t b = rest / a.segments;
  return (b * a.H + h) * a.segments + (rest - b * a.segments);
}

// Element i of a row as float, or 0 where !ok, as one predicated load: no branch, so that a group's
// loads are all in flight before the first one is used (behind a branch per element their latencies
// could add up), and the addresses stay one base plus constant offsets. The inputs are read-only
// while a kernel runs, so the loads need no ordering against its stores.
template <ssmkit_dtype T>
__device__ __forceinline__ float load_or_zero(const void* row, int i, bool ok) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    float x;
    asm("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %2, 0;\n\tmov.b32 %0, 0f00000000;\n\t"
        "@p ld.global.f32 %0, [%1];\n\t}"
        : "=f"(x)
        : "l"(static_cast<const float*>(row) + i), "r"(static_cast<int>(ok)));
    return x;
  } else {
    unsigned short x;
    asm("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %2, 0;\n\tmov.b16 %0, 0;\n\t@p ld.global.u16 %0, [%1];\n\t}"
        : "=h"(x)
        : "l"(static_cast<const uint16_t*>(row) + i), "r"(static_cast<int>(ok)));
    return to_float<T>(x);
  }
}

// Asks L2 for bytes [p, p + bytes) of device memory, one 128-byte line a thread of the `threads` that
// share the range (this one is `first` of them), in turn: a hint with no result and no ordering, so it is
// safe on data that is read later by this or other blocks, and before pdl_wait().
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes, int64_t first, int64_t threads) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = first * 128; off < bytes; off += threads * 128)
    asm volatile("prefetch.global.L2 [%0];" : : "l"(c + off));
}

// The same, shared by the block's threads.
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t bytes) {
  prefetch_l2(p, bytes, static_cast<int64_t>(threadIdx.x), static_cast<int64_t>(blockDim.x));
}

// Element `base` of a tensor of T.
template <ssmkit_dtype T>
__device__ __forceinline__ const void* element_at(const void* p, int64_t base) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
    return static_cast<const float*>(p) + base;
  } else {
    return static_cast<const uint16_t*>(p) + base;
  }
}

// A row's inputs, gates and spectrum into L2 (prefetch_l2 by the block's threads), for a row the
// block takes next.
template <ssmkit_dtype T>
__device__ __forceinline__ void prefetch_row(const conv_args& a, const conv_row& row) {
  constexpr int64_t es = T == SSMKIT_DTYPE_F32 ? 4 : 2;
  prefetch_l2(element_at<T>(a.u, row.base), row.len * es);
  if (a.pregate != nullptr) prefetch_l2(element_at<T>(a.pregate, row.base), row.len * es);
  if (a.postgate != nullptr) prefetch_l2(element_at<T>(a.postgate, row.base), row.len * es);
  prefetch_l2(a.spectrum + row.h * (a.m + 1), (a.m + 1) * static_cast<int64_t>(sizeof(float2)));
}

// z[j] = v[2j] + i v[2j + 1] of the row, v = u * pregate, zero past the end. Offsets within a row fit
// in 32 bits (2j < 2m <= 2^30). Two scalar loads per pair (the second hits the sectors the first
// brought to L1): fewer instructions than a paired load with a branch on the row's alignment.
template <ssmkit_dtype T>
__device__ __forceinline__ float2 load_packed(const conv_args& a, const conv_row& row, int64_t j) {
  const int i = static_cast<int>(2 * j);
  const int len = static_cast<int>(row.len);
  const bool first = i < len;
  const bool second = i + 1 < len;
  const void* u = element_at<T>(a.u, row.base);
  float2 v = make_float2(load_or_zero<T>(u, i, first), load_or_zero<T>(u, i + 1, second));
  if (a.pregate != nullptr) {
    const void* g = element_at<T>(a.pregate, row.base);
    v = make_float2(v.x * load_or_zero<T>(g, i, first), v.y * load_or_zero<T>(g, i + 1, second));
  }
  return v;
}

// Writes y[2j] and y[2j + 1] of the row from zy[j], after extra, gelu and postgate.
template <ssmkit_dtype T>
__device__ __forceinline__ void store_packed(const conv_args& a, const conv_row& row, int64_t j, float2 y) {
  const int64_t i = 2 * j;
  if (i >= row.len) return;
  const bool both = i + 1 < row.len;
  if (a.extra != nullptr) {
    y.x += a.extra[row.base + i];
    if (both) y.y += a.extra[row.base + i + 1];
  }
  if (a.gelu) y = make_float2(gelu_erf(y.x), gelu_erf(y.y));
  if (a.postgate != nullptr) {
    const float2 g = load_pair<T>(a.postgate, row.base + i, both, a.vec);
    y = make_float2(y.x * g.x, y.y * g.y);
  }
  store_pair<T>(a.out, row.base + i, y, both, a.vec);
}

// The real filter g of n samples whose spectrum a conv multiplies by: k at lags 0..Lk-1, D added at lag
// 0, and for bidirectional filters k[h, 1, j] at lag -j (position n - j, j >= 1; lag 0 adds to g[0]).
struct filter_args {
  const float* k;    // (H, Lk) or (H, 2, Lk)
  const float* D;    // (H,) or null
  float2* spectrum;  // (H, m + 1)
  int64_t rows;      // filters of this launch
  int64_t h0;        // the first one's index
  int64_t Lk;
  int64_t m;
  bool bidirectional;
};

// z[j] = g[2j] + i g[2j + 1] of filter r of the launch (0 past its rows) by predicated loads, as
// load_packed: no branch per element, so that a group's loads are in flight together, and offsets in
// 32 bits (n <= 2^30). kBidir: the anti-causal filter's samples near the end of the row (positions
// n - Lk < i < n) and at lag 0; without it the row is zero from Lk on (Lk <= m for every call, so the
// upper half of z is zero and the split kernel skips it). Without D: the caller adds it to z[0]
// (filter_add_d; a test per element cost the kernels up to 112 bytes of spill at 128 registers).
template <bool kBidir>
__device__ __forceinline__ float2 load_filter_packed(const filter_args& a, int64_t r, int64_t j) {
  const bool live = r < a.rows;
  const int64_t h = a.h0 + (live ? r : 0);
  const float* row = a.k + h * (kBidir ? 2 * a.Lk : a.Lk);
  const int i = static_cast<int>(2 * j);
  const int lk = static_cast<int>(a.Lk);
  float x = load_or_zero<SSMKIT_DTYPE_F32>(row, i, live && i < lk);
  float y = load_or_zero<SSMKIT_DTYPE_F32>(row, i + 1, live && i + 1 < lk);
  if constexpr (kBidir) {
    const int n = static_cast<int>(2 * a.m);
    const float* back = row + lk;  // k[h, 1, lag]: lag 0 at position 0, lag n - i at position i
    x += load_or_zero<SSMKIT_DTYPE_F32>(back, i == 0 ? 0 : n - i, live && (i == 0 || i > n - lk));
    y += load_or_zero<SSMKIT_DTYPE_F32>(back, n - i - 1, live && i + 1 > n - lk);
  }
  return make_float2(x, y);
}

// D[h] of filter r of the launch added to z[0] (v: thread 0's first value after fused_load, which
// holds j = 0 in both halves of the split kernels, where z[0] enters with the root W^0 = 1).
__device__ __forceinline__ void filter_add_d(const filter_args& a, int64_t r, int t, float2& v0) {
  if (t == 0 && a.D != nullptr && r < a.rows) v0.x += a.D[a.h0 + r];
}

// The same with D, and the filter's direction known only at run time (the paths through scratch).
__device__ __forceinline__ float2 load_filter_packed(const filter_args& a, int64_t r, int64_t j) {
  float2 z = a.bidirectional ? load_filter_packed<true>(a, r, j) : load_filter_packed<false>(a, r, j);
  if (j == 0) filter_add_d(a, r, 0, z);
  return z;
}

// ---------------------------------------------------------------------------------------------------
// The fused kernel: one row per FFT, rows of a block side by side in shared memory.

// Passes of an m = 2^log_m point transform whose last pass has last_bits bits and whose leading passes
// at most lead_bits each: the leading passes share the rest as evenly as possible, the earlier ones
// taking the larger shares.
__host__ __device__ constexpr int leading_passes(int log_m, int last_bits, int lead_bits) {
  return (log_m - last_bits + lead_bits - 1) / lead_bits;
}
// Bits of pass i (1-based).
__host__ __device__ constexpr int pass_bits(int log_m, int last_bits, int lead_bits, int i) {
  return i == leading_passes(log_m, last_bits, lead_bits) + 1
             ? last_bits
             : (log_m - last_bits) / leading_passes(log_m, last_bits, lead_bits) +
                   ((i - 1) < (log_m - last_bits) % leading_passes(log_m, last_bits, lead_bits) ? 1 : 0);
}
__host__ __device__ constexpr int bits_before(int log_m, int last_bits, int lead_bits, int i) {
  return i <= 1 ? 0
                : bits_before(log_m, last_bits, lead_bits, i - 1) +
                      pass_bits(log_m, last_bits, lead_bits, i - 1);
}

// Whether every leading pass's radix is at most e.
__host__ __device__ constexpr bool leading_passes_fit(int log_m, int last_bits, int lead_bits, int e) {
  for (int i = 1; i <= leading_passes(log_m, last_bits, lead_bits); ++i) {
    if ((1 << pass_bits(log_m, last_bits, lead_bits, i)) > e) return false;
  }
  return true;
}

// kValues: complex values a thread holds (every kernel takes 16, see below; 32 needs up to 231
// registers, 8 warps an SM); kBlock: threads a block when a row needs fewer (rows side by side); kMin: the
// launch bound's blocks an SM (0: the default below). kMirrorLanes: the last pass has radix kValues, one
// group a thread, and the thread holding group q trades values with the one holding its mirror c - q,
// lane ^ 16 of its warp (product_mirror_lanes), so the leading passes may have radix kValues too.
template <int kLogM, int kValues = 32, int kBlock = 128, int kMin = 0, bool kMirrorLanes = false>
struct fused_plan {
  static constexpr int kM = 1 << kLogM;
  // 64 values a thread (256 threads of 255 registers for m = 16384) spills more than 32 values at a
  // 128-register cap, so no size holds more than 32.
  static constexpr int kE = kValues;
  static constexpr bool kLanes = kMirrorLanes;
  static constexpr int kLast = kLanes ? kE : kE / 2;  // the last pass's radix
  static constexpr int kLastBits = kE == 32 ? (kLanes ? 5 : 4) : (kLanes ? 4 : 3);
  static constexpr int kLeadBits = kE == 32 ? 5 : 4;  // a leading pass's radix is at most kE
  // 2 or 3 for m in [32, 16384] at 32 values; 2..4 for m in [32, 8192] at 16 values.
  static constexpr int kPasses = leading_passes(kLogM, kLastBits, kLeadBits) + 1;
  static constexpr int kThreadsPerRow = kM / kE;
  static constexpr int kRows = kThreadsPerRow >= kBlock ? 1 : kBlock / kThreadsPerRow;
  static constexpr int kThreads = kRows * kThreadsPerRow;
  // Registers: 32 values, two groups' DFT temporaries and twiddles, and the row's addresses need
  // ~120-230 registers, so 32 values take up to 255 (8 warps an SM). 16 values fit under a
  // 128-register cap (a few dozen bytes of spill at most): by default as many blocks as make 512
  // threads (16 warps an SM: two blocks of 256 threads, or one of 512).
  static constexpr int kMinBlocks = kMin > 0 ? kMin : kE == 16 ? 512 / kThreads : kThreads <= 128 ? 2 : 1;
  static constexpr int kRowStride =
      kM + kM / 16;  // float2; one pad every 16 spreads strided groups over banks
  static constexpr size_t kSmem = static_cast<size_t>(kRows) * kRowStride * sizeof(float2);
  template <int i>
  static constexpr int radix() {
    return 1 << pass_bits(kLogM, kLastBits, kLeadBits, i);
  }
  template <int i>
  static constexpr int rprev() {
    return 1 << bits_before(kLogM, kLastBits, kLeadBits, i);
  }
  static_assert(kE == 16 || kE == 32, "16 or 32 values a thread");
  static_assert(kLogM >= 5 && kLogM <= 14, "fused FFT lengths are 32..16384");
  static_assert(kPasses >= 2 && kPasses <= 4, "the fused kernel runs 2 to 4 passes");
  static_assert(bits_before(kLogM, kLastBits, kLeadBits, kPasses) + kLastBits == kLogM,
                "passes cover the transform");
  static_assert(kLast == 1 << kLastBits && kThreads <= 512, "one mirror pair of groups a thread");
  static_assert(kE == 32 || kThreads * kMinBlocks <= 768, "16 values: at least 80 registers");
  static_assert(leading_passes_fit(kLogM, kLastBits, kLeadBits, kE), "passes fit a thread's values");
  // Mirror lanes: whole warps a row (pairs of lanes l, l ^ 16), and pass P - 1's output in the plain
  // layout, which the last pass reads with consecutive groups on consecutive lanes.
  static_assert(!kLanes || (kThreadsPerRow % 32 == 0 && kRows == 1 && kPasses >= 3), "mirror lanes");
};

template <int kLogM>
using conv_plan = fused_plan<kLogM, 16, 256, kLogM == 10 ? 3 : 0, kLogM == 12>;
// The filter kernel: one row a block where a row has >= 64 threads, so that H rows give H blocks. The
// launch bound holds every size at 128 registers (blocks of 64 threads took 182-219 with the
// predicated loads of load_filter_packed, 5 blocks an SM where 768 rows need 6).
template <int kLogM>
using filter_plan = std::conditional_t<(kLogM <= 11), fused_plan<kLogM, 16, 64, (kLogM <= 10 ? 8 : 4)>,
                                       fused_plan<kLogM, 16, 64, 0, kLogM == 12>>;

struct thread_groups {
  int t, nt;
  __device__ __forceinline__ int operator()(int e) const { return t + nt * e; }
};

// Shared-memory layouts between passes: pass 1's output lives in the padded layout (its lanes write
// r_1 apart); a later pass's output, written and then read with consecutive lanes on consecutive
// positions, in the plain one. fn receives the layout of pass i's output.
template <class Plan, int i, class Fn>
__device__ __forceinline__ void with_layout(float2* buf, Fn&& fn) {
  if constexpr (i == 1) {
    fn(padded_row{buf, Plan::template radix<1>() % 16 == 0});
  } else {
    fn(flat_row{buf});
  }
}

// The barrier between a row's exchanges through shared memory. block_sync: the whole block (one row a
// block, or rows whose threads interleave). row_sync: only the row's threads, when rows of a block
// sit side by side: a named barrier per row of whole warps (2..8 warps wait for each other instead of
// the block's 8 or 16), the warp's own barrier for rows of up to 32 threads (rows never straddle a
// warp). Rows never touch each other's shared memory, and the roots' tables are written once before
// the first row.
struct block_sync {
  __device__ __forceinline__ void operator()() const { __syncthreads(); }
};
template <int kThreadsPerRow, int kRows>
struct row_sync {
  static_assert(kThreadsPerRow % 32 == 0 || 32 % kThreadsPerRow == 0, "rows of whole warps or within one");
  int id;  // 1 + the row's index in its block; barrier 0 is __syncthreads'
  __device__ __forceinline__ void operator()() const {
    if constexpr (kRows == 1) {
      __syncthreads();
    } else if constexpr (kThreadsPerRow <= 32) {
      __syncwarp();
    } else {
      static_assert(kRows <= 15, "named barriers 1..15");
      asm volatile("bar.sync %0, %1;" : : "r"(id), "n"(kThreadsPerRow) : "memory");
    }
  }
};
template <class Plan>
using plan_sync = row_sync<Plan::kThreadsPerRow, Plan::kRows>;

// Forward passes i..P-1 after pass 1, each reading pass i-1's output from `buf` and writing its own in
// place (a barrier between the reads and the writes).
template <class Plan, int i, class Roots, class Sync>
__device__ __forceinline__ void forward_middle(float2 (&v)[Plan::kE], float2* buf, thread_groups groups,
                                               const Roots& roots, Sync sync) {
  if constexpr (i < Plan::kPasses) {
    constexpr int r = Plan::template radix<i>();
    constexpr int p = Plan::template rprev<i>();
    with_layout<Plan, i - 1>(buf, [&](auto in) { gather<r, false>(v, groups, p, Plan::kM, in); });
    butterflies<r, false>(v, groups, p, roots);
    sync();
    with_layout<Plan, i>(buf, [&](auto out) { scatter<r, true>(v, groups, p, Plan::kM, out); });
    sync();
    forward_middle<Plan, i + 1>(v, buf, groups, roots, sync);
  }
}

// Inverse passes i down to 2, each reading pass i's layout and writing pass i-1's, in place.
template <class Plan, int i, class Roots, class Sync>
__device__ __forceinline__ void inverse_middle(float2 (&v)[Plan::kE], float2* buf, thread_groups groups,
                                               const Roots& roots, Sync sync) {
  if constexpr (i >= 2) {
    constexpr int r = Plan::template radix<i>();
    constexpr int p = Plan::template rprev<i>();
    sync();
    with_layout<Plan, i>(buf, [&](auto in) { gather<r, true>(v, groups, p, Plan::kM, in); });
    butterflies<r, true>(v, groups, p, roots);
    sync();
    with_layout<Plan, i - 1>(buf, [&](auto out) { scatter<r, false>(v, groups, p, Plan::kM, out); });
    inverse_middle<Plan, i - 1>(v, buf, groups, roots, sync);
  }
}

// The last pass's groups of thread t: the mirror pairs (f, m - f) of a full transform, or for the odd
// half of a split one (odd_pairs) the pairs (k, m - 1 - k). Mirror lanes (full transforms only): one
// group a thread, the c = m / kLast groups as pairs p = 16 warp + (lane & 15) < c / 2, lane < 16 holding
// group p and lane ^ 16 its mirror c - p (c / 2 for p = 0, whose lanes pair their own values). Lanes
// 0..15 and 16..31 then read consecutive groups (ascending, descending) in the last pass.
template <class Plan>
__device__ __forceinline__ last_groups plan_last_groups(int t, bool odd_pairs) {
  if constexpr (Plan::kLanes) {
    constexpr int c = Plan::kM / Plan::kLast;
    const int lane = t & 31;
    const int p = ((t >> 5) << 4) | (lane & 15);
    const int g = lane < 16 ? p : (p == 0 ? c / 2 : c - p);
    return last_groups{g, g};
  } else {
    const last_groups mirror = make_last_groups<Plan::kLast>(t, Plan::kM);
    return last_groups{t, odd_pairs ? Plan::kM / Plan::kLast - 1 - t : mirror.q2};
  }
}

// Forward pass 1's loads: the kE inputs of a thread's groups through `load` (one group's loads at a time).
template <class Plan, class Load>
__device__ __forceinline__ void fused_load(float2 (&v)[Plan::kE], int t, Load load) {
  const thread_groups groups{t, Plan::kThreadsPerRow};
  gather<Plan::template radix<1>(), false, true>(v, groups, 1, Plan::kM, load);
}

// The forward transform of pass 1's inputs in registers (fused_load): passes 1..P-1 through `buf`,
// the last pass into registers.
template <class Plan, class Roots, class Sync>
__device__ __forceinline__ void fused_forward_loaded(float2 (&v)[Plan::kE], float2* buf, int t,
                                                     const Roots& roots, Sync sync, bool odd_pairs) {
  constexpr int m = Plan::kM;
  constexpr int P = Plan::kPasses;
  const thread_groups groups{t, Plan::kThreadsPerRow};
  constexpr int r1 = Plan::template radix<1>();
  butterflies<r1, false>(v, groups, 1);
  with_layout<Plan, 1>(buf, [&](auto out) { scatter<r1, true>(v, groups, 1, m, out); });
  sync();
  forward_middle<Plan, 2>(v, buf, groups, roots, sync);
  constexpr int plast = Plan::template rprev<P>();
  const last_groups last = plan_last_groups<Plan>(t, odd_pairs);
  with_layout<Plan, P - 1>(buf, [&](auto in) { gather<Plan::kLast, false>(v, last, plast, m, in); });
  butterflies<Plan::kLast, false>(v, last, plast, roots);
}

// Forward passes 1..P-1 (pass 1 reads through `load`), the last forward pass into registers.
template <class Plan, class Load, class Roots = sincos_roots, class Sync = block_sync>
__device__ __forceinline__ void fused_forward(float2 (&v)[Plan::kE], float2* buf, int t, Load load,
                                              const Roots& roots = {}, Sync sync = {},
                                              bool odd_pairs = false) {
  fused_load<Plan>(v, t, load);
  fused_forward_loaded<Plan>(v, buf, t, roots, sync, odd_pairs);
}

// The inverse passes from the last one's outputs in registers, up to pass 1's outputs in registers
// (fused_store writes them).
template <class Plan, class Roots, class Sync>
__device__ __forceinline__ void fused_inverse_unstored(float2 (&v)[Plan::kE], float2* buf, int t,
                                                       const Roots& roots, Sync sync, bool odd_pairs) {
  constexpr int m = Plan::kM;
  constexpr int P = Plan::kPasses;
  const thread_groups groups{t, Plan::kThreadsPerRow};
  constexpr int r1 = Plan::template radix<1>();
  constexpr int plast = Plan::template rprev<P>();
  const last_groups last = plan_last_groups<Plan>(t, odd_pairs);
  butterflies<Plan::kLast, true>(v, last, plast, roots);
  // Each thread writes back the positions it read in the last forward pass: no barrier needed before.
  with_layout<Plan, P - 1>(buf, [&](auto out) { scatter<Plan::kLast, false>(v, last, plast, m, out); });
  inverse_middle<Plan, P - 1>(v, buf, groups, roots, sync);
  sync();
  with_layout<Plan, 1>(buf, [&](auto in) { gather<r1, true>(v, groups, 1, m, in); });
  butterflies<r1, true>(v, groups, 1);
}

// Pass 1's outputs of the inverse through `store` (one group's stores at a time).
template <class Plan, class Store>
__device__ __forceinline__ void fused_store(const float2 (&v)[Plan::kE], int t, Store store) {
  const thread_groups groups{t, Plan::kThreadsPerRow};
  scatter<Plan::template radix<1>(), false, true>(v, groups, 1, Plan::kM, store);
}

// The inverse passes from the last one's outputs in registers; pass 1 writes through `store`.
template <class Plan, class Store, class Roots = sincos_roots, class Sync = block_sync>
__device__ __forceinline__ void fused_inverse(float2 (&v)[Plan::kE], float2* buf, int t, Store store,
                                              const Roots& roots = {}, Sync sync = {},
                                              bool odd_pairs = false) {
  fused_inverse_unstored<Plan>(v, buf, t, roots, sync, odd_pairs);
  fused_store<Plan>(v, t, store);
}

// The roots of the fused conv and filter kernels: every n they take divides 2m (the product's W_2m).
template <int kLogM>
using fused_roots = table_roots<kLogM + 1>;
template <int kLogM>
constexpr size_t conv_smem = conv_plan<kLogM>::kSmem + fused_roots<kLogM>::kBytes;

template <ssmkit_dtype T, int kLogM>
__global__ void __launch_bounds__(conv_plan<kLogM>::kThreads, conv_plan<kLogM>::kMinBlocks)
    fft_conv_fused_kernel(const conv_args a) {
  using Plan = conv_plan<kLogM>;
  extern __shared__ __align__(16) float2 smem[];  // rows (kRows, kRowStride), then the roots' tables
  const int local_row = static_cast<int>(threadIdx.x) / Plan::kThreadsPerRow;
  const int t = static_cast<int>(threadIdx.x) % Plan::kThreadsPerRow;
  float2* buf = smem + local_row * Plan::kRowStride;
  const auto roots = fused_roots<kLogM>::fill(smem + Plan::kRows * Plan::kRowStride);
  const plan_sync<Plan> sync{1 + local_row};
  const int64_t blocks = (a.rows + Plan::kRows - 1) / Plan::kRows;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    // Rows side by side (m <= 2048) keep the launch order: their spectra fit the L2, and the order's
    // arithmetic cost the 80-register m = 1024 kernel 32 bytes more of spill.
    const int64_t r = b * Plan::kRows + local_row;
    if constexpr (Plan::kRows == 1) {
      // One row a block (m >= 4096), launched as one wave of blocks that walk the rows: the block's next
      // row into L2 while this one runs. Here, before pdl_wait, its spectrum may not be written yet;
      // L2 holds the lines all SMs write, so such a prefetch is wasted at worst, never stale.
      if (b + gridDim.x < blocks) prefetch_row<T>(a, conv_row(a, filter_major(a, b + gridDim.x)));
    }
    const conv_row row(a, Plan::kRows == 1 ? filter_major(a, r) : r);
    float2 v[Plan::kE];
    fused_forward<Plan>(
        v, buf, t, [&](int base, int s, int st) { return load_packed<T>(a, row, base + s * st); }, roots,
        sync);
    // What the preceding grid may write (the spectra; ssmConv's extra) is read only after this wait; u
    // and the pregate, read above, are the call's inputs, written before that grid began.
    pdl_wait();
    const float2* filter = a.spectrum + row.h * (Plan::kM + 1);
    if constexpr (Plan::kLanes) {
      const int g = plan_last_groups<Plan>(t, false).q1;
      product_mirror_lanes<Plan::kLast>(
          v, g, Plan::kM, [filter](int64_t f) { return filter[f]; }, roots);
    } else {
      product_last_pass<Plan::kLast>(
          v, t, Plan::kM, [filter](int64_t f) { return filter[f]; }, roots);
    }
    fused_inverse<Plan>(
        v, buf, t, [&](int base, int s, int st, float2 y) { store_packed<T>(a, row, base + s * st, y); },
        roots, sync);
    sync();  // the next row reuses buf
  }
  // A block never finishes before the grid it depends on (grid <= blocks, so every block has waited
  // above; this keeps it so for any grid).
  pdl_wait();
}

// m = 1024 as 32 x 32 (fft_conv_wide_kernel): a row a warp, each lane one 32-point group in registers,
// two passes of radix 32 with one exchange through shared memory (padded32_row) and the warp's own
// barrier. Lane l holds group g(l) in both passes (the mirror-lanes order: g = l for l < 16, 16 for
// l = 16, 48 - l above), so the forward transform leaves Z[g + 32 k] in v[k] and the product pairs
// the lanes l and l ^ 16 (product_mirror_lanes). The inverse runs the same code as the forward one on
// conj(Zy) (F^H x = conj(F conj(x)), the DFT matrix being symmetric): its input Zy[g + 32 s] is in the
// order the first pass reads, and its output y[g + 32 k] is stored from v[k]. The row is one rolled
// loop of four steps of one DFT-32 each (the exchange and twiddles before steps 1 and 3, the product
// after step 1), so the code holds one DFT-32 instead of four: unrolled, the kernel waited on
// instruction fetch. 4 rows a block, 3 blocks an SM (168 registers, 12 warps).
struct wide_plan {
  static constexpr int kM = 1024;
  static constexpr int kRows = 4;
  static constexpr int kThreads = 32 * kRows;
  static constexpr int kMinBlocks = 3;
  static constexpr int kRowStride = kM + kM / 32;  // float2, padded32_row
  static constexpr size_t kSmem = static_cast<size_t>(kRows) * kRowStride * sizeof(float2);
};
constexpr size_t kWideSmem = wide_plan::kSmem + fused_roots<10>::kBytes;

// The product of the forward transform Z[g + 32 k] (v[k]) with the row's spectrum, conjugated for the
// inverse that follows.
template <class Roots>
__device__ __forceinline__ void wide_product(float2 (&v)[32], int g, const conv_args& a, const conv_row& row,
                                             const Roots& roots) {
  constexpr int m = 1024;
  // The spectra are the preceding grid's output (programmatic dependent launch): read after this.
  pdl_wait();
  const float2* filter = a.spectrum + row.h * (m + 1);
  product_mirror_lanes<32>(
      v, g, m, [filter](int64_t f) { return filter[f]; }, roots);
#pragma unroll
  for (int k = 0; k < 32; ++k) v[k] = c_conj(v[k]);
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(wide_plan::kThreads, wide_plan::kMinBlocks)
    fft_conv_wide_kernel(const conv_args a) {
  using Plan = wide_plan;
  constexpr int m = Plan::kM;
  constexpr int c = m / 32;                       // groups of a pass
  extern __shared__ __align__(16) float2 smem[];  // rows (kRows, kRowStride), then the roots' tables
  const int local_row = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const padded32_row buf{smem + local_row * Plan::kRowStride};
  const auto roots = fused_roots<10>::fill(smem + Plan::kRows * Plan::kRowStride);
  const int p = lane & 15;
  const int g = lane < 16 ? p : (p == 0 ? c / 2 : c - p);
  const last_groups group{g, g};
  const int64_t blocks = (a.rows + Plan::kRows - 1) / Plan::kRows;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const conv_row row(a, b * Plan::kRows + local_row);
    float2 v[32];
    gather<32, false, true, 16>(
        v, group, 1, m, [&](int base, int s, int st) { return load_packed<T>(a, row, base + s * st); });
#pragma unroll 1
    for (int step = 0; step < 4; ++step) {
      if (step % 2 == 1) {
        // Pass 2: pass 1's output x'[32 g + s] out through buf and positions g + 32 s back in, twiddled by
        // W_m^(g s); the warp's barriers order the other lanes' reads of buf (the previous row) before
        // these writes, and these writes before the reads.
        __syncwarp();
        scatter<32, true>(v, group, 1, m, buf);
        __syncwarp();
        gather<32, false>(v, group, 32, m, buf);
        twiddle<32, false>(v, g, m, roots);
      }
      dft<32, false>(v);
      if (step == 1) wide_product(v, g, a, row, roots);
    }
#pragma unroll
    for (int k = 0; k < 32; ++k) v[k] = c_conj(v[k]);
    scatter<32, false, true, 16>(v, group, 1, m, [&](int base, int s, int st, float2 y) {
      store_packed<T>(a, row, base + s * st, y);
    });
  }
  pdl_wait();
}

// m = 1024 on tensor cores (fft_conv_tc_kernel; bfloat16 rows, the default for them on sm_80 and later,
// SSMKIT_CUDA_FFT_TC=0 for the float32 transforms). A row a warp. The 1024-point DFTs are two steps of
// 32-point DFTs written as matrix products with the DFT matrix F (F[a][b] = W_32^(ab), symmetric) on
// mma.sync m16n8k16 (float16 operands, float32 accumulators), each complex product four real ones:
//   forward  C1 = F X (X[r][q] = z[32 r + q]), T1 = W_m^(pq) C1[p][q], Z[p + 32 s] = (T1 F)[p][s];
//   inverse  D = conj(F) Zy^T (Zy[p][s] = Zy[p + 32 s]), D' = W_m^(-ap) D[a][p],
//            y_z[a + 32 b] = (D' conj(F))[a][b].
// An accumulator tile (rows g, g + 8; columns 2t, 2t + 1 of lane 4g + t) is, converted to float16
// pairs, the A operand of the next product (the same positions) or its B operand transposed (columns as
// k), so the products chain in registers. The warp's shared buffer (32 x 34 float2) carries the row's
// input in (coalesced 16-byte loads), Z for the product (each value's mirror Z[m - f] is another lane's)
// and y out (16-byte stores). The product is the real split, the filter and the re-packing of
// mirror_product written as one linear map, Zy[f] = alpha Z[f] + beta conj(Z[m - f]); its coefficients
// come straight from the filters by fft_conv_tc_filter_kernel, in the lanes' register order, with their
// bound cmax.
// Each float16 operand is scaled by a power of two: the row's input so that its largest value sits in
// [128, 256), Zy by the bound cmax max|Z| (so Zy is packed as it is made, without its own maximum), which
// keeps every operand inside float16's range for any bfloat16 input; the scales come off in float32 at
// the store. Rows of L <= 1024 have z = 0 for r >= 16 and need y only for b < 16: the first product
// takes one k step and the last one two column tiles instead of four. Forward step 2 and inverse step 1
// run in two halves of their accumulators: 128 registers, 4 blocks of 4 warps an SM.
// Error: ~1e-3 of the row's RMS (eight float16 roundings of 2^-11 each), about one bfloat16 rounding
// (measured at 8 x 768 x 1024 and 8 x 768 x 4096: relative L2 error 1.2e-3 against the CPU backend where
// the float32 transforms give 4e-5, 83% of the outputs equal to theirs, the others one bfloat16 rounding
// apart; a float64 model of these steps on the tests' rows: worst error 0.42 of the bfloat16 tolerance);
// float32 and float16 rows keep the float32 transforms (float16's tolerance is 1e-3).
// Cost (H200, 8 x 768 x 1024): 192 mma a row (~7 us of tensor issue for the call), ~2500 warp
// instructions a row in all, against ~5300 for the 16-value float32 plan. Measured, the first form (a row's
// loads and stores one pair at a time, the spectra read by f in the product, 168 registers, 12 warps an SM)
// was slower than the float32 plan: 79.3 against 61.0 us a call, 3830 instructions a row, 27% of its
// stalls waiting for instruction fetch (12.8 K instructions of code, the stores unrolled 48 times). Then
// 74.3 (coefficients in register order: the product's scattered loads and roots gone), 57.5 (loads and
// stores through the warp's buffer in rolled loops), 56.4 (32-bit row arithmetic, the next row's inputs
// prefetched into L1) and 49.7 us (two halves, 128 registers, 16 warps an SM; 16-byte loads and stores;
// the roots from 64 sincospif a block), against 61.0 for the float32 plan in the same run. Nsight (base
// clocks, caches flushed): conv kernel 49.8 us, 2530 instructions a row, issue slots 44% busy, stalls
// spread over fixed latencies (19%), shared loads (18%) and global loads (18%).
namespace tc {
constexpr int kP = 32;  // m = kP * kP
constexpr int kM = kP * kP;
constexpr int kRows = 4;  // rows (warps) a block
constexpr int kThreads = 32 * kRows;
constexpr int kMinBlocks = 4;
// float2 a row of the warp's buffer (32 x kPitch): its writes and reads in fragment order avoid bank
// conflicts.
constexpr int kPitch = 34;
constexpr int kFrags = 4 * 3;  // A fragments of F: tiles (mt, kt) x (re, im, -im)
// The twiddles W_m^(pq) of a lane's 32 accumulator values (register (mt * 4 + nt) * 4 + e: p = 16 mt + g
// + 8 (e >> 1), q = 8 nt + 2t + (e & 1)), lane-major: the inverse's W_m^(ap) are the same values.
constexpr size_t kTwBytes = static_cast<size_t>(32) * 32 * sizeof(float2);
constexpr size_t kFragBytes = static_cast<size_t>(kFrags) * 32 * sizeof(uint4);
constexpr size_t kBufBytes = static_cast<size_t>(kP) * kPitch * sizeof(float2);
constexpr size_t kSmem = kTwBytes + kFragBytes + kRows * kBufBytes;
}  // namespace tc

// Two floats as one float16 pair: lo in the low half (the lower k or column index of a fragment).
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// c += a b on the tensor cores: A 16 x 16 and B 16 x 8 float16, C 16 x 8 float32.
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  const uint32_t r[4] = {a.x, a.y, a.z, a.w};
  mma_f16(c, r, b0, b1);
}
__device__ __forceinline__ uint32_t reg_of(const uint4& a, int j) {
  return j == 0 ? a.x : j == 1 ? a.y : j == 2 ? a.z : a.w;
}

// The largest of v over the warp.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// 2^e with e such that mx 2^e lies in [128, 256) (1 for mx = 0; non-finite mx gives a finite scale,
// and its non-finite values stay so).
__device__ __forceinline__ float pow2_scale(float mx) {
  if (!(mx > 0.0f)) return 1.0f;
  const int e = (__float_as_int(mx) >> 23) & 0xff;  // mx's biased exponent (0 for subnormals)
  int s = 127 + 7 - (e - 127);
  s = s < 1 ? 1 : (s > 254 ? 254 : s);
  return __int_as_float(s << 23);
}

// The pair (v[2j], v[2j + 1]) of a row, v = u * pregate, zero past its end: one 4-byte load a tensor
// where the pairs are aligned (a.vec: every row and segment starts at an even element and has even
// length), else load_packed.
template <ssmkit_dtype T>
__device__ __forceinline__ float2 load_packed_tc(const conv_args& a, const conv_row& row, int j) {
  if constexpr (T != SSMKIT_DTYPE_F32) {
    if (a.vec) {
      const bool ok = 2 * j < row.len;
      auto pair = [&](const void* p) {
        uint32_t w;
        asm("{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %2, 0;\n\tmov.b32 %0, 0;\n\t@q ld.global.b32 %0, [%1];\n\t}"
            : "=r"(w)
            : "l"(static_cast<const uint16_t*>(p) + row.base + 2 * j), "r"(static_cast<int>(ok)));
        return make_float2(to_float<T>(static_cast<uint16_t>(w & 0xffffu)),
                           to_float<T>(static_cast<uint16_t>(w >> 16)));
      };
      float2 v = pair(a.u);
      if (a.pregate != nullptr) {
        const float2 gv = pair(a.pregate);
        v = make_float2(v.x * gv.x, v.y * gv.y);
      }
      return v;
    }
  }
  return load_packed<T>(a, row, j);
}

// conv_row(a, filter_major(a, r)) in 32-bit arithmetic (the launch has row0 + rows < 2^31), with the
// quotient per_h = rows / H (0 where filter_major is the identity) from the caller: a launch constant in
// fft_conv_tc_kernel (conv_args::per_h), hoisted out of the row loop in fft_conv_tcr_kernel.
__device__ __forceinline__ void tc_row(const conv_args& a, uint32_t per_h, uint32_t r, int64_t& base,
                                       int& len, int64_t& h) {
  const uint32_t rows = static_cast<uint32_t>(a.rows), H = static_cast<uint32_t>(a.H);
  const uint32_t segs = static_cast<uint32_t>(a.segments);
  if (r >= rows) {
    base = 0, len = 0, h = 0;
    return;
  }
  if (per_h != 0) {  // filter_major
    const uint32_t hh = r / per_h, rest = r - hh * per_h;
    const uint32_t b = segs == 1 ? rest : rest / segs;
    r = (b * H + hh) * segs + (rest - b * segs);
  }
  const uint32_t g = static_cast<uint32_t>(a.row0) + r;
  const uint32_t bh = segs == 1 ? g : g / segs;
  const int64_t start = static_cast<int64_t>(g - bh * segs) * a.seg_len;
  base = static_cast<int64_t>(bh) * a.L + start;
  len = static_cast<int>(a.L - start < a.seg_len ? a.L - start : a.seg_len);
  h = bh % H;
}

// (a, b) as a float16 pair hi and the pair lo of what rounding left (a - hi, b - hi exactly in float32):
// hi + lo holds the pair to ~2^-22 of its size.
__device__ __forceinline__ void split_half2(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = pack_half2(a, b);
  float ha, hb;
  asm("{\n\t.reg .f16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
      : "=f"(ha), "=f"(hb)
      : "r"(hi));
  lo = pack_half2(a - ha, b - hb);
}

// c += (a_hi + a_lo)(b_hi + b_lo) without the lo x lo term, the smaller products first (~2^-22 of the
// product's size: float32's accuracy from float16 operands, at three products instead of one).
template <class A>  // uint4 or uint32_t[4], as mma_f16
__device__ __forceinline__ void mma_split(float (&c)[4], const A& ah, const A& al, uint32_t bh0, uint32_t bh1,
                                          uint32_t bl0, uint32_t bl1) {
  mma_f16(c, al, bh0, bh1);
  mma_f16(c, ah, bl0, bl1);
  mma_f16(c, ah, bh0, bh1);
}

// F's A fragments (tc namespace), from root[k] = W_32^k (k < 32): tile (mt, kt) holds rows 16 mt + g
// (+ 8) and columns 16 kt + 2t (+ 1, + 8, + 9); kLo: what the float16 fragments left of each entry.
template <bool kLo>
__device__ __forceinline__ void tc_make_frags(uint4* frag, const float2* root) {
  using namespace tc;
  for (int i = static_cast<int>(threadIdx.x); i < kFrags * 32; i += static_cast<int>(blockDim.x)) {
    const int l = i & 31, comp = (i >> 5) % 3, tile = (i >> 5) / 3;
    const int mt = tile >> 1, kt = tile & 1, gg = l >> 2, tt = l & 3;
    uint32_t r[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int row = 16 * mt + gg + 8 * (j & 1);
      const int col = 16 * kt + 2 * tt + 8 * (j >> 1);
      float v[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float2 w = root[(row * (col + h)) & (kP - 1)];  // W_32^(row col)
        v[h] = comp == 0 ? w.x : (comp == 1 ? w.y : -w.y);
      }
      if constexpr (kLo) {
        uint32_t hi;
        split_half2(v[0], v[1], hi, r[j]);
      } else {
        r[j] = pack_half2(v[0], v[1]);
      }
    }
    frag[i] = make_uint4(r[0], r[1], r[2], r[3]);
  }
}

// The tables of the tensor-core kernels, made by all the block's threads: tw, the twiddles W_1024^(pq) of
// each lane's 32 accumulator values, and frag, F's A fragments (tc namespace), through root (64 float2
// of shared memory, free again when this returns).
__device__ __forceinline__ void tc_make_tables(float2* tw, uint4* frag, float2* root) {
  using namespace tc;
  // Roots from 64 sincospif a block: W_m^e = W_m^(32 (e >> 5)) W_m^(e & 31) (one float32 product from
  // two correctly rounded roots; the float16 operands round far more), and F from W_32^k = W_m^(32 k).
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, n = static_cast<int>(blockDim.x);
  if (tid < 32) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      float sn, cs;
      sincospif(static_cast<float>(k == 0 ? 32 * lane : lane) * (2.0f / kM), &sn, &cs);
      root[32 * k + lane] = make_float2(cs, -sn);
    }
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < 32 * 32; i += n) {
    const int reg = i >> 5, l = i & 31, e = reg & 3;
    const int p = 16 * (reg >> 4) + (l >> 2) + 8 * (e >> 1), q = 8 * ((reg >> 2) & 3) + 2 * (l & 3) + (e & 1);
    const int pq = p * q;  // < m
    tw[i] = c_mul(root[pq >> 5], root[32 + (pq & 31)]);
  }
  tc_make_frags<false>(frag, root);
  __syncthreads();  // the tables are read by every warp, and root is free again
}

// F's A fragment of tile (mt, kt), component comp (re, im, -im), for this lane.
__device__ __forceinline__ uint4 tc_frag(const uint4* frag, int mt, int kt, int comp, int lane) {
  return frag[((mt * 2 + kt) * 3 + comp) * 32 + lane];
}

// Half mf of the product of a warp's 32 x 32 data A (float16 A fragments ar, ai: tiles (mt, kq), in
// kParts parts: 1, or 2 for split_half2's hi and lo, whose products are mma_split's with F's own parts frag
// and lo) with F, or conj(F) for kConj, as the B operand (F symmetric: B tile (kq, 2 mf + hh) is regs hh and
// 2 + hh of A tile (mf, kq)): cr, ci[mt][hh] = columns 8 (2 mf + hh) .. + 7. Re = Ar Fr -+ Ai Fi, Im = Ar
// (+-Fi) + Ai Fr, each accumulation in the order the callers were measured with.
template <bool kConj, int kParts = 1>
__device__ __forceinline__ void tc_times_f(const uint32_t (&ar)[kParts][2][2][4],
                                           const uint32_t (&ai)[kParts][2][2][4], const uint4* frag,
                                           const uint4* lo, int lane, int mf, float (&cr)[2][2][4],
                                           float (&ci)[2][2][4]) {
  static_assert(kParts == 1 || kParts == 2, "one float16 part, or hi and lo");
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int e = 0; e < 4; ++e) cr[mt][hh][e] = ci[mt][hh][e] = 0.0f;
    }
  }
#pragma unroll
  for (int kq = 0; kq < 2; ++kq) {
    uint4 f[3][kParts];  // F's (re, im, -im) fragments of tile (mf, kq), each in its parts
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      f[c][0] = tc_frag(frag, mf, kq, c, lane);
      if constexpr (kParts == 2) f[c][1] = tc_frag(lo, mf, kq, c, lane);
    }
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        // acc += a (tile (mt, kq)) times component c of F.
        auto mm = [&](float(&acc)[4], const uint32_t(&a)[kParts][2][2][4], int c) {
          if constexpr (kParts == 1) {
            mma_f16(acc, a[0][mt][kq], reg_of(f[c][0], hh), reg_of(f[c][0], 2 + hh));
          } else {
            mma_split(acc, a[0][mt][kq], a[1][mt][kq], reg_of(f[c][0], hh), reg_of(f[c][0], 2 + hh),
                      reg_of(f[c][1], hh), reg_of(f[c][1], 2 + hh));
          }
        };
        mm(cr[mt][hh], ar, 0);
        if constexpr (kConj) {
          mm(cr[mt][hh], ai, 1);
          mm(ci[mt][hh], ai, 0);
          mm(ci[mt][hh], ar, 2);
        } else {
          mm(cr[mt][hh], ai, 2);
          mm(ci[mt][hh], ar, 1);
          mm(ci[mt][hh], ai, 0);
        }
      }
    }
  }
}

// A pair of floats as kParts float16 parts: the rounded pair, or (kParts = 2) split_half2's hi and lo.
template <int kParts>
__device__ __forceinline__ void pack_parts(float a, float b, uint32_t& hi, uint32_t& lo) {
  if constexpr (kParts == 1) {
    hi = pack_half2(a, b);
  } else {
    split_half2(a, b, hi, lo);
  }
}

// (cr, ci)[nt] += F's tile (mt, kt) times the B operand b, or conj(F) for kConj: b(part, im, nt, h) is
// register h of the B fragment (k = 16 kt + 2t (+1, +8, +9), n = 8 nt + g) of the real (im = 0) or
// imaginary part, float16 part `part` of kParts (F's lo parts in lo). Re = Fr Br -+ Fi Bi, Im = Fr Bi +- Fi
// Br, each accumulation in the order the callers were measured with.
template <bool kConj, int kParts, class B>
__device__ __forceinline__ void tc_f_times(float (&cr)[4][4], float (&ci)[4][4], const uint4* frag,
                                           const uint4* lo, int mt, int kt, int lane, B b) {
  uint4 f[3][kParts];  // F's (re, im, -im) fragments of tile (mt, kt), each in its parts
#pragma unroll
  for (int c = 0; c < 3; ++c) f[c][0] = tc_frag(frag, mt, kt, c, lane);
  if constexpr (kParts == 2) {
#pragma unroll
    for (int c = 0; c < 3; ++c) f[c][1] = tc_frag(lo, mt, kt, c, lane);
  }
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    auto mm = [&](float(&acc)[4], int c, int im) {  // acc += component c of F times b's part im
      if constexpr (kParts == 1) {
        mma_f16(acc, f[c][0], b(0, im, nt, 0), b(0, im, nt, 1));
      } else {
        mma_split(acc, f[c][0], f[c][1], b(0, im, nt, 0), b(0, im, nt, 1), b(1, im, nt, 0), b(1, im, nt, 1));
      }
    };
    mm(cr[nt], 0, 0);
    mm(cr[nt], kConj ? 1 : 2, 1);
    mm(ci[nt], 0, 1);
    mm(ci[nt], kConj ? 2 : 1, 0);
  }
}

// A warp's 32 x 32 input x[32 r + q] = xb[r kPitch + q] times s1 (0 where !present(32 r + q)) as the B
// operand of forward step 1, in kParts float16 parts: k = r = 16 kt + 2t (+1, +8, +9), n = q = 8 nt + g.
template <int kParts, class Present>
__device__ __forceinline__ void tc_load_x(const float2* xb, int lane, float s1, Present present,
                                          uint32_t (&xr)[kParts][2][4][2], uint32_t (&xi)[kParts][2][4][2]) {
  using namespace tc;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float2 v[2];
#pragma unroll
        for (int d = 0; d < 2; ++d) {
          const int r = 16 * kt + 2 * t + d + 8 * h;
          v[d] = present(kP * r + 8 * nt + g) ? xb[r * kPitch + 8 * nt + g] : make_float2(0.0f, 0.0f);
        }
        pack_parts<kParts>(v[0].x * s1, v[1].x * s1, xr[0][kt][nt][h], xr[kParts - 1][kt][nt][h]);
        pack_parts<kParts>(v[0].y * s1, v[1].y * s1, xi[0][kt][nt][h], xi[kParts - 1][kt][nt][h]);
      }
    }
  }
}

// Row tile mt of an accumulator (cr, ci)[nt] times the twiddles W_m^(pq) (kConj: W_m^(-pq)) into the A
// fragments of the next product in kParts parts: reg 2 (nt & 1) + (e >> 1) of tile (mt, nt >> 1).
template <bool kConj, int kParts>
__device__ __forceinline__ void tc_twiddle_to_a(const float (&cr)[4][4], const float (&ci)[4][4],
                                                const float2* tw, int mt, int lane,
                                                uint32_t (&ar)[kParts][2][2][4],
                                                uint32_t (&ai)[kParts][2][2][4]) {
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    float vr[4], vi[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 w = tw[((mt * 4 + nt) * 4 + e) * 32 + lane];
      if constexpr (kConj) {
        vr[e] = cr[nt][e] * w.x + ci[nt][e] * w.y;
        vi[e] = ci[nt][e] * w.x - cr[nt][e] * w.y;
      } else {
        vr[e] = cr[nt][e] * w.x - ci[nt][e] * w.y;
        vi[e] = cr[nt][e] * w.y + ci[nt][e] * w.x;
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int j = 2 * (nt & 1) + h;
      pack_parts<kParts>(vr[2 * h], vr[2 * h + 1], ar[0][mt][nt >> 1][j], ar[kParts - 1][mt][nt >> 1][j]);
      pack_parts<kParts>(vi[2 * h], vi[2 * h + 1], ai[0][mt][nt >> 1][j], ai[kParts - 1][mt][nt >> 1][j]);
    }
  }
}

// One row tile mt of step 1, whole: its accumulators zeroed, tc_f_times over the first kts column tiles
// (b(kt, part, im, n, h): register h of the B operand's tile kt), then tc_twiddle_to_a into (ar, ai). The
// split forward transform's and the inverse's step 1 (tc_forward keeps both tiles' accumulators at once).
template <bool kConj, int kParts, class B>
__device__ __forceinline__ void tc_step1_tile(const uint4* frag, const uint4* lo, const float2* tw, int mt,
                                              int kts, int lane, B b, uint32_t (&ar)[kParts][2][2][4],
                                              uint32_t (&ai)[kParts][2][2][4]) {
  float cr[4][4], ci[4][4];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) cr[nt][e] = ci[nt][e] = 0.0f;
  }
#pragma unroll
  for (int kt = 0; kt < 2; ++kt) {
    if (kt >= kts) break;
    tc_f_times<kConj, kParts>(cr, ci, frag, lo, mt, kt, lane,
                              [&](int part, int im, int n, int h) { return b(kt, part, im, n, h); });
  }
  tc_twiddle_to_a<kConj, kParts>(cr, ci, tw, mt, lane, ar, ai);
}

// Forward step 2: Z[p + 32 s] = (T1 F)[p][s], tiles (mt, ns): s = 8 ns + 2t (+1), in two halves of ns
// (mf = ns >> 1) stored to the warp's buffer (position s kPitch + p) as they are made. F as the B
// operand: F symmetric, so (kq, ns) is reg (ns & 1) and 2 + (ns & 1) of A tile (ns >> 1, kq). Returns the
// largest component of Z.
template <int kParts>
__device__ __forceinline__ float tc_forward_step2(const uint32_t (&ar)[kParts][2][2][4],
                                                  const uint32_t (&ai)[kParts][2][2][4], const uint4* frag,
                                                  const uint4* lo, float2* xb, int lane) {
  using namespace tc;
  const int g = lane >> 2, t = lane & 3;
  float mz = 0.0f;
#pragma unroll
  for (int mf = 0; mf < 2; ++mf) {
    float zr[2][2][4], zi[2][2][4];  // (mt, hh): ns = 2 mf + hh
    tc_times_f<false, kParts>(ar, ai, frag, lo, lane, mf, zr, zi);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int p = 16 * mt + g + 8 * (e >> 1), s = 8 * (2 * mf + hh) + 2 * t + (e & 1);
          xb[s * kPitch + p] = make_float2(zr[mt][hh][e], zi[mt][hh][e]);
          mz = fmaxf(mz, fmaxf(fabsf(zr[mt][hh][e]), fabsf(zi[mt][hh][e])));
        }
      }
    }
  }
  return mz;
}

// A warp's 1024-point forward transform on the tensor cores: x[j1] = xb[(j1 >> 5) kPitch + (j1 & 31)]
// times s1 (0 where !present(j1); j1 < 512 unless full) in, Y[p + 32 s] out at xb[s kPitch + p].
// between() runs after step 1, before Y overwrites the inputs. Returns the largest component of Y.
template <class Present, class Between>
__device__ __forceinline__ float tc_forward(float2* xb, const uint4* frag, const float2* tw, int lane,
                                            float s1, bool full, Present present, Between between) {
  using namespace tc;
  auto F = [&](int mt, int kt, int comp) { return tc_frag(frag, mt, kt, comp, lane); };
  // Forward step 1: X as the B operand, k = r = 16 kt + 2t (+1, +8, +9), n = q = 8 nt + g.
  uint32_t xr[1][2][4][2], xi[1][2][4][2];
  tc_load_x<1>(xb, lane, s1, present, xr, xi);
  // C1[p][q], tiles (mt, nt): p = 16 mt + g (+8), q = 8 nt + 2t (+1).
  uint32_t ar[1][2][2][4], ai[1][2][2][4];  // T1 as the A operand of step 2: (mt, kq)
  {
    float cr[2][4][4], ci[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) cr[mt][nt][e] = ci[mt][nt][e] = 0.0f;
      }
    }
#pragma unroll
    for (int kt = 0; kt < 2; ++kt) {
      if (kt == 1 && !full) break;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        // tc_f_times's products written out: through it, ptxas laid out fft_conv_tcr_kernel's code
        // differently (16 more mma instructions), unmeasured.
        const uint4 fr = F(mt, kt, 0), fi = F(mt, kt, 1), fn = F(mt, kt, 2);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          mma_f16(cr[mt][nt], fr, xr[0][kt][nt][0], xr[0][kt][nt][1]);
          mma_f16(cr[mt][nt], fn, xi[0][kt][nt][0], xi[0][kt][nt][1]);
          mma_f16(ci[mt][nt], fr, xi[0][kt][nt][0], xi[0][kt][nt][1]);
          mma_f16(ci[mt][nt], fi, xr[0][kt][nt][0], xr[0][kt][nt][1]);
        }
      }
    }
    // T1 = W_m^(pq) C1, into A fragments.
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) tc_twiddle_to_a<false, 1>(cr[mt], ci[mt], tw, mt, lane, ar, ai);
  }
  between();
  __syncwarp();  // every lane's reads of the inputs in xb are done
  const float mz = tc_forward_step2<1>(ar, ai, frag, nullptr, xb, lane);
  __syncwarp();
  return mz;
}

// A warp's 1024-point inverse transform on the tensor cores: Zy as the B operand of inverse step 1 (yr,
// yi: k = s = 16 ks + 2t (+1, +8, +9), n = p = 8 np + g) in, y_z[a + 32 b] times unscale out at xb[b
// kPitch + a] (b < 16 unless full), once every lane's reads of xb are done.
__device__ __forceinline__ void tc_inverse(const uint32_t (&yr)[2][4][2], const uint32_t (&yi)[2][4][2],
                                           float2* xb, const uint4* frag, const float2* tw, int lane,
                                           float unscale, bool full) {
  using namespace tc;
  const int g = lane >> 2, t = lane & 3;
  // Inverse step 1: D[a][p] = sum_s conj(F)[a][s] Zy[p + 32 s], tiles (ma, np): a = 16 ma + g (+8),
  // p = 8 np + 2t (+1). conj(F) = Fr - i Fi: Dr = Fr Yr + Fi Yi, Di = Fr Yi - Fi Yr.
  // D' = W_m^(-ap) D as the A operand of inverse step 2: (ma, kp).
  uint32_t dr16[1][2][2][4], di16[1][2][2][4];
#pragma unroll
  for (int ma = 0; ma < 2; ++ma) {
    tc_step1_tile<true, 1>(
        frag, nullptr, tw, ma, 2, lane,
        [&](int ks, int, int im, int np, int h) { return (im ? yi : yr)[ks][np][h]; }, dr16, di16);
  }
  // Inverse step 2: y_z[a + 32 b] = (D' conj(F))[a][b], tiles (ma, nb): b = 8 nb + 2t (+1); only
  // b < 16 (i < 512) unless the row is longer than 1024. Er = D'r Fr + D'i Fi, Ei = D'i Fr - D'r Fi.
  __syncwarp();  // every lane's reads of xb are done
#pragma unroll
  for (int mf = 0; mf < 2; ++mf) {
    if (mf == 1 && !full) break;
    float er[2][2][4], ei[2][2][4];  // (ma, hh): nb = 2 mf + hh
    tc_times_f<true>(dr16, di16, frag, nullptr, lane, mf, er, ei);
#pragma unroll
    for (int ma = 0; ma < 2; ++ma) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          // y_z[a + 32 b] at position b kPitch + a.
          const int at = (8 * (2 * mf + hh) + 2 * t + (e & 1)) * kPitch + 16 * ma + g + 8 * (e >> 1);
          xb[at] = make_float2(er[ma][hh][e] * unscale, ei[ma][hh][e] * unscale);
        }
      }
    }
  }
  __syncwarp();
}

// tc_forward's transform at float32's accuracy (fft_conv_tc_filter_kernel): every operand, F included
// (its float16 remainders in lo), as a hi and a lo float16 part, every product as mma_split; step 2 is
// tc_times_f's. Step 1 runs a row tile at a time (tc_forward's order, both tiles' accumulators at once,
// would hold 32 more registers in a kernel at ~240).
// x[j1] = xb[(j1 >> 5) kPitch + (j1 & 31)] times s1 in (j1 < 512 unless full), Y[p + 32 s] out at
// xb[s kPitch + p].
__device__ __forceinline__ void tc_forward_split(float2* xb, const uint4* frag, const uint4* lo,
                                                 const float2* tw, int lane, float s1, bool full) {
  using namespace tc;
  // Step 1: X as the B operand (k = r = 16 kt + 2t (+1, +8, +9), n = q = 8 nt + g), F as A.
  uint32_t xr[2][2][4][2], xi[2][2][4][2];  // [hi, lo][kt][nt][h]
  tc_load_x<2>(
      xb, lane, s1, [&](int j1) { return full || j1 < kM / 2; }, xr, xi);
  uint32_t ar[2][2][2][4], ai[2][2][2][4];  // T1 as the A operand of step 2: [hi, lo][mt][kq]
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {  // T1 = W_m^(pq) C1 (float32), split into A fragments
    tc_step1_tile<false, 2>(
        frag, lo, tw, mt, full ? 2 : 1, lane,
        [&](int kt, int part, int im, int nt, int h) { return (im ? xi : xr)[part][kt][nt][h]; }, ar, ai);
  }
  __syncwarp();                                     // every lane's reads of the inputs in xb are done
  tc_forward_step2<2>(ar, ai, frag, lo, xb, lane);  // step 2, as tc_forward's
  __syncwarp();
}

// The product's coefficients of every filter for fft_conv_tc_kernel, straight from the filters (no
// spectra): a filter a warp, its packed z (load_filter_packed, D at lag 0) through tc_forward_split, then
// coef[h][reg][lane] = (alpha, beta) of f = p + 32 s, p = 16 mt + g + 8 (e >> 1), s = 8 ns + 2t + (e & 1),
// reg = (mt * 4 + ns) * 4 + e, lane = 4g + t (the conv kernel's register order), from the spectrum S of
// mirror_spectrum: alpha = 2 (S[f] + conj(S[m - f]) - sn d), beta = 2i cs d, d = S[f] - conj(S[m - f]),
// W_2m^f = cs - i sn; and cmax[h], the largest |Re alpha| + |Im alpha| + |Re beta| + |Im beta| of the
// filter (a component of Zy is at most cmax times the largest component of Z). Blocks of up to kMaxWarps
// warps, as many as spread the filters over the SMs in one wave: the tables are made once a block.
// It replaced the float32 filter kernel and a coefficient kernel reading its spectra (one launch and the
// spectra's round trip less). Measured (H200, 8 x 768 x 1024, Nsight with real clocks): 10.1 us against 6.5 +
// 6.8 us for the two; the call 50.4 us against 51.8 (bench --quick, means of five runs alternated with the
// previous build), the outputs as before (83.1% of them bit for bit the float32 path's). Its first form
// stored each loaded pair before the next load (32 round trips a lane: 11.8 us); two warps a filter (each one
// row tile of the transform, 193 registers, 384 blocks in 1.45 waves) took 13.4 us; the tables are ~1/4 of a
// block's instructions, hence blocks as large as the one wave allows. Its output loop (a third of its warp
// samples) then formed alpha and beta from even and wodd directly instead of S[f] and S[m - f] first: ~10
// fewer instructions a value, 10.0 us against 10.3 (Nsight, two runs each), the outputs' bit-equality
// unchanged.
// It is launched by launch_after_wait: its tables are made while the kernel ahead on the stream still
// runs (the previous call's conv kernel lets it be scheduled at its blocks' last rows), the first
// filter's lines only pulled toward L2 before the wait, the filters read after it; it lets the conv
// kernel be scheduled only after its own wait, since the conv kernel reads its rows before its wait.
// Predicted: the tables' ~1 us and the launch gap off a call of back-to-back calls. Measured (H200,
// 25 calls between two synchronizations, median of five, alternated five times with the plain launch):
// 8 x 768 x 1024 43.9-45.8 us against 47.0-48.0 (bench/fft-gpu.mjs 44.1-46.6 against 47.3-48.0),
// 1 x 768 x 1024 20.8-21.9 against 23.8-24.0; the kernels alone (Nsight, caches flushed, no overlap)
// 10.0-10.1 / 38.0-38.2 us against 9.8 / 37.2-37.6. With the tables off the path, blocks of 2, 3, 4 or 8
// warps instead of 6 measured the same (43.9-45.6 us at 8 x 768 x 1024), so the block size stays.
namespace tcf {
constexpr int kMaxWarps = 8;
constexpr size_t kLoBytes = tc::kFragBytes;
constexpr size_t kRootBytes = 128 * sizeof(float2);  // W_32^k, then W_2048^p and W_64^s
constexpr size_t kTables = tc::kTwBytes + tc::kFragBytes + kLoBytes + kRootBytes;
constexpr size_t smem(int warps) {
  return kTables + static_cast<size_t>(warps) * tc::kBufBytes;
}
}  // namespace tcf

template <bool kBidir>
__global__ void __launch_bounds__(32 * tcf::kMaxWarps)
    fft_conv_tc_filter_kernel(const filter_args f, float4* coef, float* cmax) {
  using namespace tc;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  float2* tw = reinterpret_cast<float2*>(tc_smem);
  uint4* frag = reinterpret_cast<uint4*>(tc_smem + kTwBytes);
  uint4* lo = reinterpret_cast<uint4*>(tc_smem + kTwBytes + kFragBytes);
  float2* root = reinterpret_cast<float2*>(tc_smem + kTwBytes + kFragBytes + tcf::kLoBytes);
  float2* r2 = root + 64;  // W_2048^p (p < 32), then W_64^s (s < 32)
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  const int g = lane >> 2, t = lane & 3;
  float2* xb = reinterpret_cast<float2*>(tc_smem + tcf::smem(warp));
  // z[j] for j < 512 (Lk <= m: the rest is zero), or all 1024 for a bidirectional filter, in rounds of
  // 16 pairs a lane whose loads are all in flight before their values are stored; the first filter's
  // first round is issued before the tables are made.
  constexpr int kRounds = kBidir ? 2 : 1;
  float2 v[16];
  float d0 = 0.0f;  // D at lag 0 (lane 0's j = 0)
  auto load_round = [&](int64_t r, int round) {
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = load_filter_packed<kBidir>(f, r, lane + 32 * (16 * round + i));
    if (round == 0) d0 = lane == 0 && f.D != nullptr && r < f.rows ? f.D[f.h0 + r] : 0.0f;
  };
  int64_t r = static_cast<int64_t>(blockIdx.x) * warps + warp;
  // Launched by launch_after_wait: the tables are made (shared memory only) while the kernel ahead may
  // still run, the first filter's lines only pulled toward L2 (a hint; stores meet in L2); the filters
  // are read after the wait. The conv kernel after this one reads its rows before its own wait, so it
  // may be scheduled only once every block here has waited (everything before this kernel is then done).
  if (r < f.rows) {
    const int64_t len = kBidir ? 2 * f.Lk : f.Lk;
    prefetch_l2(f.k + (f.h0 + r) * len, len * static_cast<int64_t>(sizeof(float)), lane, 32);
  }
  for (int k = static_cast<int>(threadIdx.x); k < 64; k += static_cast<int>(blockDim.x)) {
    float sn, cs;
    sincospif(static_cast<float>(k < 32 ? k : 32 * (k - 32)) * (1.0f / kM), &sn, &cs);
    r2[k] = make_float2(cs, -sn);
  }
  tc_make_tables(tw, frag, root);  // root[k] = W_32^k stays (k < 32)
  tc_make_frags<true>(lo, root);
  pdl_wait();
  pdl_trigger();
  load_round(r, 0);
  __syncthreads();
  const float to_s = 1.0f / (8.0f * kM);  // S = K / (2n), as the float32 filter kernels
  for (bool first = true; r < f.rows; r += static_cast<int64_t>(gridDim.x) * warps, first = false) {
    float mx = 0.0f;
#pragma unroll
    for (int round = 0; round < kRounds; ++round) {
      if (round > 0 || !first) load_round(r, round);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        float2 z = v[i];
        if (round == 0 && i == 0) z.x += d0;
        xb[(16 * round + i) * kPitch + lane] = z;  // j = lane + 32 (16 round + i)
        mx = fmaxf(mx, fmaxf(fabsf(z.x), fabsf(z.y)));
      }
    }
    __syncwarp();
    const float s1 = pow2_scale(warp_max(mx));
    tc_forward_split(xb, frag, lo, tw, lane, s1, kBidir);
    // With mirror_spectrum's even = Z[f] + conj(Z[m - f]) and wodd = w (-i) (Z[f] - conj(Z[m - f])),
    // S[f] = sc (even + wodd) and conj(S[m - f]) = sc (even - wodd), so alpha = 4 sc (even - sn wodd) and
    // beta = 4 sc cs i wodd: the same coefficients in fewer roundings (4 sc is a power of two) and ~10
    // fewer instructions a value than forming S[f] and S[m - f] first.
    const float s4 = 4.0f * to_s / s1;  // exact: powers of two
    float4* out = coef + (f.h0 + r) * kM + lane;
    float cm = 0.0f;
#pragma unroll 4
    for (int reg = 0; reg < 32; ++reg) {
      const int e = reg & 3;
      const int p = 16 * (reg >> 4) + g + 8 * (e >> 1), s = 8 * ((reg >> 2) & 3) + 2 * t + (e & 1);
      const int fm = (kM - (p + kP * s)) & (kM - 1);
      const float2 w = c_mul(r2[p], r2[32 + s]);  // W_2m^f = W_2048^p W_64^s = cs - i sn
      const float2 za = xb[s * kPitch + p], zb = xb[(fm >> 5) * kPitch + (fm & 31)];  // Z[f], Z[m - f]
      const float2 even = make_float2(za.x + zb.x, za.y - zb.y);
      const float2 wodd = c_mul(w, make_float2(za.y + zb.y, zb.x - za.x));
      const float ssn = -s4 * w.y, scs = s4 * w.x;
      const float4 c = make_float4(fmaf(-ssn, wodd.x, s4 * even.x), fmaf(-ssn, wodd.y, s4 * even.y),
                                   -scs * wodd.y, scs * wodd.x);
      out[reg * 32] = c;
      cm = fmaxf(cm, fabsf(c.x) + fabsf(c.y) + fabsf(c.z) + fabsf(c.w));
    }
    cm = warp_max(cm);
    if (lane == 0) cmax[f.h0 + r] = cm;
    __syncwarp();  // every lane's reads of xb are done before the next filter's stores to it
  }
}

// 8 samples (16 bytes) of a row of u at element 8 q, times the pregate's where there is one.
template <ssmkit_dtype T>
__device__ __forceinline__ void tc_load8(const uint16_t* urow, const uint16_t* grow, int q, float (&v)[8]) {
  const uint4 w = *reinterpret_cast<const uint4*>(urow + 8 * q);
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = to_float<T>(static_cast<uint16_t>(ws[k >> 1] >> (16 * (k & 1))));
  if (grow != nullptr) {
    const uint4 gw = *reinterpret_cast<const uint4*>(grow + 8 * q);
    const uint32_t gs[4] = {gw.x, gw.y, gw.z, gw.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] *= to_float<T>(static_cast<uint16_t>(gs[k >> 1] >> (16 * (k & 1))));
  }
}

// y's 8 samples (16 bytes) at element 8 q of a row, after extra, gelu and postgate (prow: the row's
// postgate or null).
template <ssmkit_dtype T>
__device__ __forceinline__ void tc_store8(const conv_args& a, const conv_row& row, const uint16_t* prow,
                                          int q, float (&v)[8]) {
  if (a.extra != nullptr) {
    const float4 e0 = *reinterpret_cast<const float4*>(a.extra + row.base + 8 * q);
    const float4 e1 = *reinterpret_cast<const float4*>(a.extra + row.base + 8 * q + 4);
    const float ex[8] = {e0.x, e0.y, e0.z, e0.w, e1.x, e1.y, e1.z, e1.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] += ex[k];
  }
  if (a.gelu) {
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = gelu_erf(v[k]);
  }
  if (prow != nullptr) {
    const uint4 gw = *reinterpret_cast<const uint4*>(prow + 8 * q);
    const uint32_t gs[4] = {gw.x, gw.y, gw.z, gw.w};
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] *= to_float<T>(static_cast<uint16_t>(gs[k >> 1] >> (16 * (k & 1))));
  }
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = static_cast<uint32_t>(from_float<T>(v[2 * k])) |
           (static_cast<uint32_t>(from_float<T>(v[2 * k + 1])) << 16);
  *reinterpret_cast<uint4*>(static_cast<uint16_t*>(a.out) + row.base + 8 * q) =
      make_uint4(w[0], w[1], w[2], w[3]);
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(tc::kThreads, tc::kMinBlocks) fft_conv_tc_kernel(const conv_args a) {
  using namespace tc;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  float2* tw = reinterpret_cast<float2*>(tc_smem);             // (32 registers, 32 lanes)
  uint4* frag = reinterpret_cast<uint4*>(tc_smem + kTwBytes);  // (kFrags, 32)
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int g = lane >> 2, t = lane & 3;
  float2* xb = reinterpret_cast<float2*>(tc_smem + kTwBytes + kFragBytes + warp * kBufBytes);
  tc_make_tables(tw, frag, reinterpret_cast<float2*>(tc_smem + kTwBytes + kFragBytes));

  // A row's coefficients (16 KB) into L1, where the product reads them: at the row's start once the
  // preceding grid is known to be done (every row but a warp's first), else right after that wait.
  auto prefetch_coef = [&](int64_t h) {
    const float4* c = a.coef + h * kM;
#pragma unroll
    for (int k = 0; k < 4; ++k) asm volatile("prefetch.global.L1 [%0];" : : "l"(c + (lane + 32 * k) * 8));
  };
  // The loop carries bg alone: whether the preceding grid was waited for is bg != blockIdx.x, and per_h
  // and groups come from the launch's constants (held in registers, they were spilled, and their reloads
  // missed L1: ~9% of the warps' stall samples, Nsight).
  const uint32_t groups = static_cast<uint32_t>((a.rows + kRows - 1) / kRows);
  for (uint32_t bg = blockIdx.x; bg < groups; bg += gridDim.x) {
    // At its last rows the block lets the next kernel be scheduled (a launch_after_wait kernel, such as
    // the next call's filters, makes its tables meanwhile and reads nothing before this grid is done).
    if (bg + gridDim.x >= groups) pdl_trigger();
    conv_row row;
    {
      int len = 0;
      tc_row(a, a.per_h, bg * kRows + warp, row.base, len, row.h);
      row.len = len;
    }
    const bool full = row.len > kM;  // z past j = 512 and y past i = 512
    if (bg != blockIdx.x) prefetch_coef(row.h);
    if (bg + gridDim.x < groups) {
      // The warp's next row (its inputs and gates) into L1 while this one runs.
      int64_t nbase = 0, nh = 0;
      int nlen = 0;
      tc_row(a, a.per_h, (bg + gridDim.x) * kRows + warp, nbase, nlen, nh);
      const int64_t line = static_cast<int64_t>(lane) * 64;  // 128 bytes of 16-bit elements
      if (line < nlen) {
        for (int64_t o = line; o < nlen; o += 32 * 64) {
          asm volatile("prefetch.global.L1 [%0];" : : "l"(static_cast<const uint16_t*>(a.u) + nbase + o));
          if (a.pregate != nullptr)
            asm volatile("prefetch.global.L1 [%0];"
                         :
                         : "l"(static_cast<const uint16_t*>(a.pregate) + nbase + o));
          if (a.postgate != nullptr)
            asm volatile("prefetch.global.L1 [%0];"
                         :
                         : "l"(static_cast<const uint16_t*>(a.postgate) + nbase + o));
        }
      }
    }

    // The row's pairs z[j] = (v[2j], v[2j + 1]) through the warp's buffer (position r kPitch + q for j =
    // 32 r + q): coalesced loads in rolled loops (whole 16-byte vectors where the row starts 16-byte
    // aligned, then pairs), then each lane takes its fragments' values.
    const int pairs = static_cast<int>((row.len + 1) / 2);  // z[j] = 0 from here on (pairs <= m)
    __syncwarp();                                           // the previous row's reads of xb are done
    float mx = 0.0f;
    const int vecs = a.vec && (row.base & 7) == 0 ? static_cast<int>(row.len >> 3) : 0;
    const uint16_t* urow = static_cast<const uint16_t*>(a.u) + row.base;
    const uint16_t* grow =
        a.pregate != nullptr ? static_cast<const uint16_t*>(a.pregate) + row.base : nullptr;
#pragma unroll 2
    for (int q = lane; q < vecs; q += 32) {
      float v[8];
      tc_load8<T>(urow, grow, q, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) mx = fmaxf(mx, fabsf(v[k]));
      float4* dst = reinterpret_cast<float4*>(xb + (q >> 3) * kPitch + 4 * (q & 7));  // pairs 4q .. 4q + 3
      dst[0] = make_float4(v[0], v[1], v[2], v[3]);
      dst[1] = make_float4(v[4], v[5], v[6], v[7]);
    }
    for (int j = 4 * vecs + lane; j < pairs; j += 32) {
      const float2 v = load_packed_tc<T>(a, row, j);
      xb[(j >> 5) * kPitch + (j & 31)] = v;
      mx = fmaxf(mx, fmaxf(fabsf(v.x), fabsf(v.y)));
    }
    __syncwarp();
    const float s1 = pow2_scale(warp_max(mx));
    // Z[p + 32 s] into xb at s kPitch + p. The coefficients are the preceding grid's output
    // (programmatic dependent launch): read after its wait.
    const float mz = warp_max(tc_forward(
        xb, frag, tw, lane, s1, full, [&](int j1) { return j1 < pairs; },
        [&] {
          if (bg == blockIdx.x) {
            pdl_wait();
            prefetch_coef(row.h);
          }
        }));
    // Zy[f] = alpha Z[f] + beta conj(Z[m - f]), the coefficients in this lane's register order, scaled
    // by s2 from the bound cmax max|Z| and packed at once as the B operand of inverse step 1: k = s = 16
    // ks + 2t (+1, +8, +9), n = p = 8 np + g, i.e. the pairs (e >> 1) == (np & 1) of tiles (np >> 1,
    // 2 ks) and (np >> 1, 2 ks + 1). The mirror of (p, s) is (32 - p, 31 - s) at buffer position
    // lane_base minus a constant, except for p = 0 (lanes g = 0, registers mt = 0, e < 2): (0, 32 - s),
    // two positions on, and f = 0 itself.
    const float4* coef = a.coef + row.h * kM + lane;
    const float s2 = pow2_scale(mz * a.cmax[row.h]);
    const int lane_base = (kP - 1) * kPitch + kP - 2 * kPitch * t - g;
    uint32_t yr[2][4][2], yi[2][4][2];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int mt = np >> 1, ns = 2 * ks + h;
          float vr[2], vi[2];
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const int e = 2 * (np & 1) + k;
            const int p = 16 * mt + g + 8 * (e >> 1), s = 8 * ns + 2 * t + (e & 1);
            int at = lane_base - (8 * ns + (e & 1)) * kPitch - 16 * mt - 8 * (e >> 1);
            if (mt == 0 && e < 2 && g == 0) at = ns == 0 && e == 0 && t == 0 ? 0 : at + 2;
            const float2 za = xb[s * kPitch + p];
            const float2 zb = xb[at];
            const float4 c = coef[((mt * 4 + ns) * 4 + e) * 32];
            vr[k] = (c.x * za.x - c.y * za.y + c.z * zb.x + c.w * zb.y) * s2;
            vi[k] = (c.x * za.y + c.y * za.x + c.w * zb.x - c.z * zb.y) * s2;
          }
          yr[ks][np][h] = pack_half2(vr[0], vr[1]);
          yi[ks][np][h] = pack_half2(vi[0], vi[1]);
        }
      }
    }
    tc_inverse(yr, yi, xb, frag, tw, lane, 1.0f / (s1 * s2), full);
    // The outputs, coalesced, in rolled loops (after extra, gelu and postgate).
    const uint16_t* prow =
        a.postgate != nullptr ? static_cast<const uint16_t*>(a.postgate) + row.base : nullptr;
#pragma unroll 2
    for (int q = lane; q < vecs; q += 32) {
      const float4* src = reinterpret_cast<const float4*>(xb + (q >> 3) * kPitch + 4 * (q & 7));
      const float4 y0 = src[0], y1 = src[1];
      float v[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
      tc_store8<T>(a, row, prow, q, v);
    }
    for (int j = 4 * vecs + lane; j < pairs; j += 32)
      store_packed<T>(a, row, j, xb[(j >> 5) * kPitch + (j & 31)]);
  }
  pdl_wait();  // never finish before the grid this one depends on
}

// m = 4096 and 16384 on tensor cores (fft_conv_tcr_kernel<T, kR>, kR = 4 and 16; bfloat16 rows, the default,
// SSMKIT_CUDA_FFT_TC=0 for the float32 transforms): a row a block of kR warps. With j = kR j1 + j2 and
// f = k1 + 1024 k2, the m-point DFT is kR 1024-point DFTs of the subsequences z[kR j1 + j2], one a warp
// (the two tensor-core steps of fft_conv_tc_kernel), then a radix-kR step across them:
//   Z[k1 + 1024 k2] = sum_j2 W_kR^(j2 k2) W_m^(j2 k1) Y_j2[k1],
// and the inverse the other way round: Y'_j2[k1] = W_m^(-j2 k1) sum_k2 W_kR^(-j2 k2) Zy[k1 + 1024 k2],
// then the warps' 1024-point inverses give y_z[kR j1 + j2]. The radix-kR steps (dft), the product and their
// roots run in float32 on the block's threads, a task a pair of columns (k1, 1024 - k1) whose 2 kR values
// hold each other's mirrors Z[m - f] ((0, 512) for k1 = 0: 512 tasks), through the block's buffer of kR
// 1024-value regions; the spectra are read as the float32 kernels read them, the product as the linear
// map of fft_conv_tc_filter_kernel with its coefficients formed in place (product_half). One input scale
// for the row (its largest value in [128, 256)), one inverse scale a warp (its Y' in [128, 256)).
// Per row 192 kR mma (m = 4096 as a 64 x 64 two-step form would take 1536 instead of 768).
// Measured (H200, bench --quick, alternated with SSMKIT_CUDA_FFT_TC=0), 8 x 768 x 4096: the first form
// (mirror_product's full formula a value, sincospif roots, pairs loaded and stored one at a time) 247.7 /
// 246.7 us against 277.4 / 285.2, 20.3 K warp instructions a row (Nsight), half of them in the radix-4
// and product step; with product_half, __sincosf roots and 16-byte loads and stores 201.1 / 212.0 against
// 303.5 / 285.1 us, 15.0 K instructions a row, issue slots 55% busy (base clocks: conv kernel 234 us).
// 2 x 768 x 16384 (kR = 16, 512 threads, 154 KB of shared memory, one block an SM): 473.7 / 439.3 against
// 565.0 / 562.5 us (Nsight: 76 K instructions a row, 45% in the radix-16 step, 2 K of spill traffic, 15% of
// stalls at barriers: 513 tasks on 512 threads left one thread two); with the 512 tasks 422.5 / 437.5
// against 566.3 / 527.7 us (conv kernel 381 -> 355 us). The radix step's ~60 float32 instructions a value
// (twiddles, butterflies, product) are now most of a row's work.
// The product then took each mirror pair's second half from its first's terms (product_pair: one root and
// ~28 instructions a pair instead of two roots and ~36; the spectra loaded once a pair): conv kernel 2 x 768
// x 16384 292 -> 252 us and 8 x 768 x 4096 181 -> 173 us (Nsight), the calls 399 -> 360 and 207 -> 196 us;
// the radix-16 form's spill went from 88 to 48 bytes of stack. Then each row's spectrum pulled into L2 at the
// row's start (its reads had stalled on DRAM: 15% of the samples at 16384, 10% at 4096) and, at kR = 4, a
// task's spectrum values loaded before its radix step: conv kernels 250 -> 241 us and 174 -> 168 us.
// The plan of a row of m = 1024 kR points, a block of kR warps (kR = 4: m = 4096; kR = 16: m = 16384).
template <int kR>
struct tcr_plan {
  static constexpr int kM = 1024 * kR;
  static constexpr int kThreads = 32 * kR;  // a warp a subsequence
  static constexpr int kMinBlocks = kR == 4 ? 4 : 1;
  // float2 a subsequence: +8 puts the regions on other banks
  static constexpr int kRegion = tc::kP * tc::kPitch + 8;
  static constexpr size_t kSmem = tc::kTwBytes + tc::kFragBytes + kR * kRegion * sizeof(float2) + 8;
};

// Position of pair j of the row (z[j], then y_z[j]) in the block's buffer: region j % kR, element e = j / kR
// at (e >> 5) kPitch + (e & 31), the layout fft_conv_tc_kernel gives a row in its warp's buffer.
template <int kR>
__device__ __forceinline__ int tcr_pos(int j) {
  const int e = j / kR;
  return (j & (kR - 1)) * tcr_plan<kR>::kRegion + (e >> 5) * tc::kPitch + (e & 31);
}

// Half of one output of mirror_product, Zy[f] / 2 from za = Z[f], zb = Z[m - f], w = W_2m^f, ka = S[f],
// kb = S[m - f], as fft_conv_tc_filter_kernel's linear map: alpha / 2 = ka + conj(kb) + Im(w) d, beta / 2 =
// i Re(w) d, d = ka - conj(kb) (18 instructions where mirror_product's form takes ~35).
__device__ __forceinline__ float2 product_half(float2 za, float2 zb, float2 w, float2 ka, float2 kb) {
  const float2 kbc = c_conj(kb);
  const float2 d = c_sub(ka, kbc);
  const float2 al = make_float2(ka.x + kbc.x + w.y * d.x, ka.y + kbc.y + w.y * d.y);
  const float2 be = make_float2(-w.x * d.y, w.x * d.x);
  return c_add(c_mul(al, za), c_mul(be, c_conj(zb)));
}

// product_half for both frequencies of a mirror pair (f, m - f): za = Z[f] becomes Zy[f] / 2 and zb = Z[m -
// f] becomes Zy[m - f] / 2, from ka = S[f], kb = S[m - f] and w = W_2m^f. The second's root is W_2m^(m - f) =
// -conj(w), so its terms follow from the first's: alpha' / 2 = conj(s - Im(w) d) and beta' / 2 = -conj(beta /
// 2), s = ka + conj(kb), d = ka - conj(kb): ~28 instructions and one root a pair instead of ~36 and two.
// Zy[f] has product_half's bits (the same operations); Zy[m - f] differs from product_half's with its own
// root by that root's rounding.
__device__ __forceinline__ void product_pair(float2& za, float2& zb, float2 w, float2 ka, float2 kb) {
  const float2 kbc = c_conj(kb);
  const float2 d = c_sub(ka, kbc);
  const float2 sum = c_add(ka, kbc);
  const float2 al = make_float2(fmaf(w.y, d.x, sum.x), fmaf(w.y, d.y, sum.y));
  const float2 al2 = make_float2(fmaf(-w.y, d.x, sum.x), -fmaf(-w.y, d.y, sum.y));
  const float2 be = make_float2(-w.x * d.y, w.x * d.x);
  const float2 be2 = make_float2(-be.x, be.y);
  const float2 a = za, b = zb;
  za = c_add(c_mul(al, a), c_mul(be, c_conj(b)));
  zb = c_add(c_mul(al2, b), c_mul(be2, c_conj(a)));
}

template <ssmkit_dtype T, int kR>
__global__ void __launch_bounds__(tcr_plan<kR>::kThreads, tcr_plan<kR>::kMinBlocks)
    fft_conv_tcr_kernel(const conv_args a) {
  using namespace tc;
  using Plan = tcr_plan<kR>;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  float2* tw = reinterpret_cast<float2*>(tc_smem);                           // (32 registers, 32 lanes)
  uint4* frag = reinterpret_cast<uint4*>(tc_smem + kTwBytes);                // (kFrags, 32)
  float2* buf = reinterpret_cast<float2*>(tc_smem + kTwBytes + kFragBytes);  // (kR, kRegion)
  unsigned* smax = reinterpret_cast<unsigned*>(buf + kR * Plan::kRegion);    // the row's input maximum
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  float2* xb = buf + warp * Plan::kRegion;  // this warp's subsequence
  tc_make_tables(tw, frag, buf);

  bool waited = false;
  const uint32_t per_h = static_cast<uint32_t>(a.rows / a.H);
  const uint32_t major = a.row0 == 0 && static_cast<int64_t>(per_h) * a.H == a.rows ? per_h : 0;
  const uint32_t rows = static_cast<uint32_t>(a.rows);
  for (uint32_t rr = blockIdx.x; rr < rows; rr += gridDim.x) {
    conv_row row;
    {
      int len = 0;
      tc_row(a, major, rr, row.base, len, row.h);
      row.len = len;
    }
    const int pairs = static_cast<int>((row.len + 1) / 2);  // <= m
    const bool full = pairs > Plan::kM / 2;                 // subsequence values past j1 = 512
    if (rr + gridDim.x < rows) {
      // The next row's inputs and gates into L2 while this one runs.
      int64_t nbase = 0, nh = 0;
      int nlen = 0;
      tc_row(a, major, rr + gridDim.x, nbase, nlen, nh);
      for (int64_t o = static_cast<int64_t>(tid) * 64; o < nlen; o += Plan::kThreads * 64) {
        asm volatile("prefetch.global.L2 [%0];" : : "l"(static_cast<const uint16_t*>(a.u) + nbase + o));
        if (a.pregate != nullptr)
          asm volatile("prefetch.global.L2 [%0];"
                       :
                       : "l"(static_cast<const uint16_t*>(a.pregate) + nbase + o));
        if (a.postgate != nullptr)
          asm volatile("prefetch.global.L2 [%0];"
                       :
                       : "l"(static_cast<const uint16_t*>(a.postgate) + nbase + o));
      }
    }
    // This row's spectrum into L2 for the radix step (its first reads stalled on DRAM: 15% of the warps'
    // samples at m = 16384). A hint: L2 is where the filter kernel's stores meet, so it may go out before
    // the wait.
    prefetch_l2(a.spectrum + row.h * (Plan::kM + 1), (Plan::kM + 1) * static_cast<int64_t>(sizeof(float2)));
    if (tid == 0) smax[0] = 0u;
    __syncthreads();  // the previous row's reads of buf and smax are done
    float mx = 0.0f;
    // Whole 16-byte vectors (8 samples: pairs 4q .. 4q + 3) where the row starts 16-byte aligned, then
    // pairs.
    const int vecs = a.vec && (row.base & 7) == 0 ? static_cast<int>(row.len >> 3) : 0;
    const uint16_t* urow = static_cast<const uint16_t*>(a.u) + row.base;
    const uint16_t* grow =
        a.pregate != nullptr ? static_cast<const uint16_t*>(a.pregate) + row.base : nullptr;
    for (int q = tid; q < vecs; q += Plan::kThreads) {
      float v[8];
      tc_load8<T>(urow, grow, q, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        buf[tcr_pos<kR>(4 * q + k)] = make_float2(v[2 * k], v[2 * k + 1]);
        mx = fmaxf(mx, fmaxf(fabsf(v[2 * k]), fabsf(v[2 * k + 1])));
      }
    }
    for (int j = 4 * vecs + tid; j < pairs; j += Plan::kThreads) {
      const float2 v = load_packed_tc<T>(a, row, j);
      buf[tcr_pos<kR>(j)] = v;
      mx = fmaxf(mx, fmaxf(fabsf(v.x), fabsf(v.y)));
    }
    mx = warp_max(mx);
    if (lane == 0) atomicMax(smax, __float_as_uint(mx));
    __syncthreads();
    const float s1 = pow2_scale(__uint_as_float(smax[0]));
    // This warp's subsequence x[j1] = z[kR j1 + warp]: Y_warp[p + 32 s] into xb at s kPitch + p, times s1.
    tc_forward(
        xb, frag, tw, lane, s1, full, [&](int j1) { return kR * j1 + warp < pairs; }, [] {});
    // The spectra are the preceding grid's output (programmatic dependent launch): read after this.
    if (!waited) {
      pdl_wait();
      waited = true;
    }
    __syncthreads();
    // The radix-kR step, the product and the inverse radix-kR step, a task a column pair (k1, 1024 - k1)
    // for 0 < k1 < 512, and (0, 512) for k1 = 0 (two columns that are each their own mirror): 512 tasks,
    // the same number for every thread.
    {
      const float2* spec = a.spectrum + row.h * (Plan::kM + 1);
      for (int k1 = tid; k1 < 512; k1 += Plan::kThreads) {
        const int kk[2] = {k1, k1 == 0 ? 512 : 1024 - k1};
        // The task's spectrum values S[k1 + 1024 k2] and S[m - k1 - 1024 k2], loaded before its radix step
        // where the registers allow (kR = 4; at kR = 16 they would spill): their latency then overlaps it.
        float2 sa[kR == 4 ? kR : 1], sb[kR == 4 ? kR : 1];
        if constexpr (kR == 4) {
#pragma unroll
          for (int k2 = 0; k2 < kR; ++k2) {
            sa[k2] = spec[k1 + 1024 * k2];
            sb[k2] = spec[Plan::kM - k1 - 1024 * k2];
          }
        }
        auto spec_a = [&](int k2) {
          if constexpr (kR == 4) {
            return sa[k2];
          } else {
            return spec[k1 + 1024 * k2];
          }
        };
        auto spec_b = [&](int k2) {
          if constexpr (kR == 4) {
            return sb[k2];
          } else {
            return spec[Plan::kM - k1 - 1024 * k2];
          }
        };
        // Roots by the special-function unit (absolute error ~2^-21 for these arguments, in [0, pi]: far
        // below the float16 operands' rounding). W_2m^k of the second column only where it is 512 (the
        // product's other roots follow from the first's, product_pair).
        auto root_2m = [](int k) {
          float sn, cs;
          __sincosf(static_cast<float>(k) * (3.14159265358979f / (1024.0f * kR)), &sn, &cs);
          return make_float2(cs, -sn);  // W_2m^k
        };
        float2 z[2][kR];
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          float sn, cs;
          __sincosf(static_cast<float>(kk[s]) * (3.14159265358979f / (512.0f * kR)), &sn, &cs);
          const float2 w1 = make_float2(cs, -sn);  // W_m^k
          const int at = (kk[s] >> 5) * kPitch + (kk[s] & 31);
          float2 wp = make_float2(1.0f, 0.0f);  // W_m^(j2 k)
#pragma unroll
          for (int j2 = 0; j2 < kR; ++j2) {
            z[s][j2] = c_mul(buf[j2 * Plan::kRegion + at], wp);
            wp = c_mul(wp, w1);
          }
          dft<kR, false>(z[s]);  // Z[k + 1024 k2] in z[s][k2]
        }
        // The product on mirror pairs, in place: (0, k2) and (1, kR - 1 - k2); for k1 = 0, (k2, kR - k2)
        // within column 0 and (k2, kR - 1 - k2) within column 512.
        if (k1 == 0) {
#pragma unroll
          for (int k2 = 0; k2 <= kR / 2; ++k2) {
            const float2 w = mul_root<64, false>(make_float2(1.0f, 0.0f), (32 / kR) * k2);
            if (k2 == 0 || k2 == kR / 2) {  // their own mirrors
              z[0][k2] = product_half(z[0][k2], z[0][k2], w, spec_a(k2), spec_b(k2));
            } else {
              product_pair(z[0][k2], z[0][kR - k2], w, spec_a(k2), spec_b(k2));
            }
          }
#pragma unroll
          for (int k2 = 0; k2 < kR / 2; ++k2) {
            const int f = 512 + 1024 * k2;
            product_pair(z[1][k2], z[1][kR - 1 - k2], mul_root<64, false>(root_2m(512), (32 / kR) * k2),
                         spec[f], spec[Plan::kM - f]);
          }
        } else {
#pragma unroll
          for (int k2 = 0; k2 < kR; ++k2) {
            // f = k1 + 1024 k2; its mirror m - f is column 1024 - k1's value kR - 1 - k2
            product_pair(z[0][k2], z[1][kR - 1 - k2], mul_root<64, false>(root_2m(k1), (32 / kR) * k2),
                         spec_a(k2), spec_b(k2));
          }
        }
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          dft<kR, true>(z[s]);  // sum_k2 W_kR^(-j2 k2) Zy[k + 1024 k2] in z[s][j2]
          float sn, cs;
          __sincosf(static_cast<float>(kk[s]) * (3.14159265358979f / (512.0f * kR)), &sn, &cs);
          const float2 w1 = make_float2(cs, sn);  // W_m^-k
          const int at = (kk[s] >> 5) * kPitch + (kk[s] & 31);
          float2 wp = make_float2(1.0f, 0.0f);
#pragma unroll
          for (int j2 = 0; j2 < kR; ++j2) {
            buf[j2 * Plan::kRegion + at] = c_mul(z[s][j2], wp);
            wp = c_mul(wp, w1);
          }
        }
      }
    }
    __syncthreads();
    // This warp's inverse: Y'[p + 32 s] (in xb at s kPitch + p), scaled into [128, 256), as the B
    // operand of inverse step 1.
    float my = 0.0f;
#pragma unroll 4
    for (int i = lane; i < kP * kP; i += 32) {
      const float2 v = xb[(i >> 5) * kPitch + (i & 31)];
      my = fmaxf(my, fmaxf(fabsf(v.x), fabsf(v.y)));
    }
    const float s2 = pow2_scale(warp_max(my));
    uint32_t yr[2][4][2], yi[2][4][2];
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
#pragma unroll
      for (int np = 0; np < 4; ++np) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int mt = np >> 1, ns = 2 * ks + h;
          float2 v[2];
#pragma unroll
          for (int k = 0; k < 2; ++k) {
            const int e = 2 * (np & 1) + k;
            const int p = 16 * mt + g + 8 * (e >> 1), s = 8 * ns + 2 * t + (e & 1);
            v[k] = xb[s * kPitch + p];
          }
          yr[ks][np][h] = pack_half2(v[0].x * s2, v[1].x * s2);
          yi[ks][np][h] = pack_half2(v[0].y * s2, v[1].y * s2);
        }
      }
    }
    tc_inverse(yr, yi, xb, frag, tw, lane, 2.0f / (s1 * s2), full);  // product_half's 1/2 too
    __syncthreads();
    const uint16_t* prow =
        a.postgate != nullptr ? static_cast<const uint16_t*>(a.postgate) + row.base : nullptr;
    for (int q = tid; q < vecs; q += Plan::kThreads) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 y = buf[tcr_pos<kR>(4 * q + k)];
        v[2 * k] = y.x, v[2 * k + 1] = y.y;
      }
      tc_store8<T>(a, row, prow, q, v);
    }
    for (int j = 4 * vecs + tid; j < pairs; j += Plan::kThreads)
      store_packed<T>(a, row, j, buf[tcr_pos<kR>(j)]);
  }
  pdl_wait();  // never finish before the grid this one depends on
}

// The filters' spectra S (H, m + 1) for fft_conv_tcr_kernel<kR> (m = 1024 kR) on tensor cores, at
// float32's accuracy: a filter a block, its subsequences z[kR j1 + j2] through tc_forward_split (kR / kWarps
// of them a warp: the split transform takes ~230 registers), the radix-kR step in float32 on column pairs
// (k1, 1024 - k1) as the conv kernel's, then mirror_spectrum on each mirror pair, S in natural order as
// the float32 filter kernels write it. Blocks of 8 warps at up to 255 registers (the split transform's
// ~180), two subsequences a warp and two column pairs a thread; one block an SM (160 KB of shared memory).
// Measured (H200, 2 x 768 x 16384, Nsight with real clocks): 108.4 us against 118.1 for
// filter_spectrum_split_kernel; the call 415.4 us against 426.9 (bench --quick, means of five runs
// alternated with the previous build), the outputs as before (81.9% bit for bit the float32 path's). The
// kR = 4 form (m = 4096, four warps, 255 registers) took 27.5 us against 18.4 and the call 216 / 210
// against 204 / 201 us, so m = 4096 keeps the float32 filter kernel.
template <int kR>
struct tcrf_plan {
  static_assert(kR == 16, "taken for m = 16384 only");
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr size_t kSmem =
      tc::kTwBytes + 2 * tc::kFragBytes + kR * tcr_plan<kR>::kRegion * sizeof(float2) + 16;
};

template <int kR, bool kBidir>
__global__ void __launch_bounds__(tcrf_plan<kR>::kThreads, 1)
    fft_conv_tcr_filter_kernel(const filter_args f) {
  pdl_trigger();
  using namespace tc;
  using Plan = tcr_plan<kR>;
  using P = tcrf_plan<kR>;
  constexpr int m = Plan::kM;
  extern __shared__ __align__(16) unsigned char tc_smem[];
  float2* tw = reinterpret_cast<float2*>(tc_smem);
  uint4* frag = reinterpret_cast<uint4*>(tc_smem + kTwBytes);
  uint4* lo = reinterpret_cast<uint4*>(tc_smem + kTwBytes + kFragBytes);
  float2* buf = reinterpret_cast<float2*>(tc_smem + kTwBytes + 2 * kFragBytes);  // (kR, kRegion)
  unsigned* smax = reinterpret_cast<unsigned*>(buf + kR * Plan::kRegion);        // the filter's maximum
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  tc_make_tables(tw, frag, buf);  // W_32^k in buf[k] (k < 32) until the first filter's stores
  tc_make_frags<true>(lo, buf);
  const float to_s = 1.0f / (8.0f * m);  // S = K / (2n), as the float32 filter kernels
  // z[j] for j < m / 2 (Lk <= m: the rest is zero), or all m for a bidirectional filter, in rounds of 16
  // pairs a thread whose loads are all in flight before their values are stored.
  constexpr int kPairs = kBidir ? m : m / 2;
  static_assert(kPairs % (16 * P::kThreads) == 0, "whole rounds");
  for (int64_t r = blockIdx.x; r < f.rows; r += gridDim.x) {
    if (r + gridDim.x < f.rows) {  // the next filter into L2 while this one runs
      const int64_t lk = kBidir ? 2 * f.Lk : f.Lk;
      prefetch_l2(f.k + (f.h0 + r + gridDim.x) * lk, lk * static_cast<int64_t>(sizeof(float)));
    }
    const float d0 = tid == 0 && f.D != nullptr ? f.D[f.h0 + r] : 0.0f;  // D at lag 0
    __syncthreads();  // the previous filter's (or the tables') reads of buf and smax are done
    if (tid == 0) smax[0] = 0u;
    __syncthreads();
    float mx = 0.0f;
    for (int j0 = 0; j0 < kPairs; j0 += 16 * P::kThreads) {
      float2 v[16];
#pragma unroll
      for (int i = 0; i < 16; ++i) v[i] = load_filter_packed<kBidir>(f, r, j0 + tid + P::kThreads * i);
#pragma unroll
      for (int i = 0; i < 16; ++i) {
        const int j = j0 + tid + P::kThreads * i;
        float2 z = v[i];
        if (j == 0) z.x += d0;
        buf[tcr_pos<kR>(j)] = z;
        mx = fmaxf(mx, fmaxf(fabsf(z.x), fabsf(z.y)));
      }
    }
    mx = warp_max(mx);
    if (lane == 0) atomicMax(smax, __float_as_uint(mx));
    __syncthreads();
    const float s1 = pow2_scale(__uint_as_float(smax[0]));
    for (int q = warp; q < kR; q += P::kWarps) {
      tc_forward_split(buf + q * Plan::kRegion, frag, lo, tw, lane, s1, kBidir);  // Y_q[p + 32 s]
    }
    __syncthreads();
    // The radix-kR step on a column pair (k1, 1024 - k1), or (0, 512) for k1 = 0, then the spectrum of
    // each mirror pair: (k1 + 1024 k2, its mirror in column 1024 - k1 at kR - 1 - k2); within column 0,
    // (k2, kR - k2); within column 512, (k2, kR - 1 - k2).
    float2* out = f.spectrum + (f.h0 + r) * (m + 1);
    const float scale = to_s / s1;  // exact: powers of two
    for (int k1 = tid; k1 < 512; k1 += P::kThreads) {
      const int kk[2] = {k1, k1 == 0 ? 512 : 1024 - k1};
      // W_2m^k of column k (mirror_spectrum's roots): the second column's is needed only where it is 512.
      auto root_2m = [](int k) {
        float sn, cs;
        sincospif(static_cast<float>(k) * (1.0f / m), &sn, &cs);
        return make_float2(cs, -sn);
      };
      float2 z[2][kR];
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        float sn, cs;
        sincospif(static_cast<float>(kk[s]) * (2.0f / m), &sn, &cs);
        const float2 w1 = make_float2(cs, -sn);  // W_m^k
        const int at = (kk[s] >> 5) * kPitch + (kk[s] & 31);
        float2 wp = make_float2(1.0f, 0.0f);  // W_m^(j2 k)
#pragma unroll
        for (int j2 = 0; j2 < kR; ++j2) {
          z[s][j2] = c_mul(buf[j2 * Plan::kRegion + at], wp);
          wp = c_mul(wp, w1);
        }
        dft<kR, false>(z[s]);  // Z[k + 1024 k2] in z[s][k2]
      }
      float2 xa, xbc;
      if (k1 == 0) {
        const float2 r0 = root_2m(0), r512 = root_2m(512);
#pragma unroll
        for (int k2 = 0; k2 <= kR / 2; ++k2) {
          const int k2m = (kR - k2) & (kR - 1);
          mirror_spectrum(z[0][k2], z[0][k2m], mul_root<64, false>(r0, (32 / kR) * k2), scale, xa, xbc);
          out[1024 * k2] = xa;
          if (k2 == 0) {
            out[m] = xbc;
          } else if (k2m != k2) {
            out[m - 1024 * k2] = xbc;
          }
        }
#pragma unroll
        for (int k2 = 0; k2 < kR / 2; ++k2) {
          const int f0 = 512 + 1024 * k2;
          mirror_spectrum(z[1][k2], z[1][kR - 1 - k2], mul_root<64, false>(r512, (32 / kR) * k2), scale, xa,
                          xbc);
          out[f0] = xa;
          out[m - f0] = xbc;
        }
      } else {
        const float2 rk = root_2m(k1);
#pragma unroll
        for (int k2 = 0; k2 < kR; ++k2) {
          const int f0 = k1 + 1024 * k2;
          mirror_spectrum(z[0][k2], z[1][kR - 1 - k2], mul_root<64, false>(rk, (32 / kR) * k2), scale, xa,
                          xbc);
          out[f0] = xa;
          out[m - f0] = xbc;
        }
      }
    }
  }
}

// m = 16384 as two 8192-point halves in one block (a 16384-point kernel would need 1024 threads of 64
// registers at 16 values, or spill at 32): with mh = m / 2, the even frequencies Z[2k] are the
// mh-point DFT of z[j] + z[j + mh], the odd ones Z[2k + 1] that of (z[j] - z[j + mh]) W_m^j (j < mh);
// each half pairs with itself for the product, and zy[j] = e[j] + W_m^-j o[j], zy[j + mh] =
// e[j] - W_m^-j o[j] with e, o the halves' inverse DFTs, e kept in shared memory by the thread that
// owns j in both halves. Rows of L <= m (any full-length filter) have z = 0 past mh: those loads are
// predicated off and those stores skipped, without touching memory. The halves take the 16-value plan
// (512 threads at 128 registers: 16 warps an SM; the 137 KB of shared memory allow one block an SM).
constexpr int kMaxFusedLogM = 14;  // the fused lengths: m = 32..16384
using split_plan = conv_plan<kMaxFusedLogM - 1>;
// Its roots: the halves' twiddles, W_m^j of the odd half's inputs and W_(2m) of its product.
using split_roots = table_roots<kMaxFusedLogM + 1>;
constexpr size_t kSplitSmem =
    (split_plan::kRowStride + split_plan::kM) * sizeof(float2) + split_roots::kBytes;

template <ssmkit_dtype T>
__global__ void __launch_bounds__(split_plan::kThreadsPerRow, split_plan::kMinBlocks)
    fft_conv_split_kernel(const conv_args a) {
  using Plan = split_plan;
  static_assert(Plan::kRows == 1 && Plan::kThreads == Plan::kThreadsPerRow, "one row a block");
  constexpr int mh = Plan::kM;  // the halves' length
  constexpr int m = 2 * mh;
  constexpr int r1 = Plan::template radix<1>();
  extern __shared__ __align__(16) float2 smem[];
  float2* buf = smem;                     // (mh + mh / 16,) the halves' transforms
  float2* acc = smem + Plan::kRowStride;  // (mh,) zy of the even half
  const auto roots = split_roots::fill(acc + mh);
  const int t = static_cast<int>(threadIdx.x);
  // One half of row r's work: the even frequencies' transform into acc, or the odd ones' and the
  // output.
  auto half_pass = [&](const conv_row& row, const float2* filter, bool odd) {
    float2 v[Plan::kE];
    if (!odd) {
      fused_load<Plan>(v, t, [&](int base, int s, int st) {
        // Half a group's loads at a time: all 64 in flight spill (~240 bytes a thread).
        if (s % 8 == 0 && s > 0) load_fence();
        const int j = base + s * st;
        return c_add(load_packed<T>(a, row, j), load_packed<T>(a, row, j + mh));
      });
    } else {
      // Input positions of pass 1 are base + s m / (2 r1): W_m^j = W_m^base W_(2 r1)^s.
      fused_load<Plan>(v, t, [&](int base, int s, int st) {
        if (s % 8 == 0 && s > 0) load_fence();
        const int j = base + s * st;
        const float2 w = mul_root<2 * r1, false>(roots.get<false>(base, m), s);
        return c_mul(c_sub(load_packed<T>(a, row, j), load_packed<T>(a, row, j + mh)), w);
      });
    }
    fused_forward_loaded<Plan>(v, buf, t, roots, block_sync{}, odd);
    if (!odd) {
      pdl_wait();  // as in the fused kernel: the spectra are read only from here on
      product_last_pass<Plan::kLast>(
          v, t, mh, [filter](int64_t f) { return filter[2 * f]; }, roots);
    } else {
      product_last_pass_odd<Plan::kLast>(v, t, mh, filter, roots);
    }
    fused_inverse_unstored<Plan>(v, buf, t, roots, block_sync{}, odd);
    if (!odd) {
      fused_store<Plan>(v, t, [acc](int base, int s, int st, float2 y) { acc[base + s * st] = y; });
    } else {
      fused_store<Plan>(v, t, [&](int base, int s, int st, float2 y) {
        const int j = base + s * st;
        const float2 wy = c_mul(y, mul_root<2 * r1, true>(roots.get<true>(base, m), s));
        const float2 e = acc[j];
        store_packed<T>(a, row, j, c_add(e, wy));
        store_packed<T>(a, row, j + mh, c_sub(e, wy));
      });
    }
    __syncthreads();  // buf is read to the end before the next half writes it
  };
  // Both halves run one copy of the transforms' code: two inlined copies of the 8192-point forward
  // and inverse transforms outgrew the instruction cache (4.4 of the 13.8 cycles between a warp's
  // issues waited for instruction fetch; the filters' kernel, with half the code, 0.5). Work item
  // w = 2 r + half, so that nothing but the loop counter lives from one half to the next (a loop over
  // the halves within a row's iteration spilled 376 bytes at the 128-register cap).
  for (int64_t w = 2 * static_cast<int64_t>(blockIdx.x); w < 2 * a.rows;
       w += (w & 1) != 0 ? 2 * static_cast<int64_t>(gridDim.x) - 1 : 1) {
    const conv_row row(a, filter_major(a, w >> 1));
    if ((w & 1) != 0) {
      // The block's next row into L2 while this row's odd half runs (the spectra are complete, the even
      // half having waited for them), so that its loads wait for L2 instead of DRAM with the block's
      // 16 warps in step.
      const int64_t next = (w >> 1) + gridDim.x;
      if (next < a.rows) prefetch_row<T>(a, conv_row(a, filter_major(a, next)));
    }
    half_pass(row, a.spectrum + row.h * (m + 1), (w & 1) != 0);
  }
  pdl_wait();  // never finish before the grid this one depends on
}

template <int kLogM>
constexpr size_t filter_smem = filter_plan<kLogM>::kSmem + fused_roots<kLogM>::kBytes;

template <int kLogM, bool kBidir>
__global__ void __launch_bounds__(filter_plan<kLogM>::kThreads, filter_plan<kLogM>::kMinBlocks)
    filter_spectrum_fused_kernel(const filter_args a) {
  pdl_trigger();
  using Plan = filter_plan<kLogM>;
  extern __shared__ __align__(16) float2 smem[];  // rows (kRows, kRowStride), then the roots' tables
  const int local_row = static_cast<int>(threadIdx.x) / Plan::kThreadsPerRow;
  const int t = static_cast<int>(threadIdx.x) % Plan::kThreadsPerRow;
  float2* buf = smem + local_row * Plan::kRowStride;
  const auto roots = fused_roots<kLogM>::fill(smem + Plan::kRows * Plan::kRowStride);
  const plan_sync<Plan> sync{1 + local_row};
  const float scale = 1.0f / (8.0f * Plan::kM);  // S = K / (2n): the packing's 1/2 and the inverse's 1/n
  const int64_t blocks = (a.rows + Plan::kRows - 1) / Plan::kRows;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t r = b * Plan::kRows + local_row;
    float2 v[Plan::kE];
    fused_load<Plan>(v, t, [&](int b, int s, int st) {
      if (kBidir && s % 4 == 0 && s > 0) load_fence();  // the two-directional loads spilled otherwise
      return load_filter_packed<kBidir>(a, r, b + s * st);
    });
    filter_add_d(a, r, t, v[0]);
    fused_forward_loaded<Plan>(v, buf, t, roots, sync, false);
    float2* out = a.spectrum + (a.h0 + (r < a.rows ? r : 0)) * (Plan::kM + 1);  // (m + 1,)
    if constexpr (Plan::kLanes) {
      // One row a block (r is the block's): every lane reaches the shuffles.
      const int g = plan_last_groups<Plan>(t, false).q1;
      if (r < a.rows)
        spectrum_mirror_lanes<Plan::kLast>(
            v, g, Plan::kM, scale, [out](int64_t f, float2 x) { out[f] = x; }, roots);
    } else if (r < a.rows) {
      spectrum_last_pass<Plan::kLast>(
          v, t, Plan::kM, scale, [out](int64_t f, float2 x) { out[f] = x; }, roots);
    }
    sync();
  }
}

// The filters' spectra for m = 16384 in two halves, as the split conv kernel: S[2k] from the mh-point
// DFT of z[j] + z[j + mh], S[2k + 1] from that of (z[j] - z[j + mh]) W_m^j. One filter a block.
constexpr size_t kSplitFilterSmem = split_plan::kRowStride * sizeof(float2) + split_roots::kBytes;

template <bool kBidir>
__global__ void __launch_bounds__(split_plan::kThreadsPerRow, split_plan::kMinBlocks)
    filter_spectrum_split_kernel(const filter_args a) {
  pdl_trigger();
  using Plan = split_plan;
  constexpr int mh = Plan::kM;
  constexpr int m = 2 * mh;
  constexpr int r1 = Plan::template radix<1>();
  extern __shared__ __align__(16) float2 smem[];
  float2* buf = smem;  // (mh + mh / 16,), then the roots' tables
  const auto roots = split_roots::fill(smem + Plan::kRowStride);
  const int t = static_cast<int>(threadIdx.x);
  const float scale = 1.0f / (8.0f * m);  // S = K / (2n), as in the fused filter kernel
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    float2* out = a.spectrum + (a.h0 + r) * (m + 1);  // (m + 1,)
    float2 v[Plan::kE];
    fused_load<Plan>(v, t, [&](int base, int s, int st) {
      // Part of a group's loads at a time, as the conv kernel (all in flight spilled at 128 registers).
      if (s % (kBidir ? 4 : 8) == 0 && s > 0) load_fence();
      const int j = base + s * st;
      const float2 lo = load_filter_packed<kBidir>(a, r, j);
      return kBidir ? c_add(lo, load_filter_packed<kBidir>(a, r, j + mh)) : lo;
    });
    filter_add_d(a, r, t, v[0]);
    fused_forward_loaded<Plan>(v, buf, t, roots, block_sync{}, false);
    spectrum_last_pass<Plan::kLast>(
        v, t, mh, scale, [out](int64_t f, float2 x) { out[2 * f] = x; }, roots);
    __syncthreads();  // buf is read to the end before the odd half writes it
    fused_load<Plan>(v, t, [&](int base, int s, int st) {
      if (s % (kBidir ? 4 : 8) == 0 && s > 0) load_fence();
      const int j = base + s * st;
      const float2 w = mul_root<2 * r1, false>(roots.get<false>(base, m), s);
      const float2 lo = load_filter_packed<kBidir>(a, r, j);
      return c_mul(kBidir ? c_sub(lo, load_filter_packed<kBidir>(a, r, j + mh)) : lo, w);
    });
    filter_add_d(a, r, t, v[0]);  // z[0] - z[mh] enters the odd half with W^0 = 1
    fused_forward_loaded<Plan>(v, buf, t, roots, block_sync{}, true);
    spectrum_last_pass_odd<Plan::kLast>(v, t, mh, scale, out, roots);
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------------------
// The four-step path for m = m1 m2 in 2^15..2^20 (rows of up to 1M samples with a full-length filter),
// with one trip through device scratch (rows, m1, m2) float2 each way. Write j = m2 j1 + j2 and
// f = f1 + m1 f2: the columns step takes, for each j2, the m1-point DFT over j1 and its twiddle
// W_m^(j2 f1), stored at [f1][j2]; the rows step takes, for each f1, the m2-point DFT over j2, which is
// Z[f1 + m1 f2], multiplies by the filter's spectrum with rows f1 and m1 - f1 in one block (their
// frequencies mirror each other: m - f = (m1 - f1) + m1 (m2 - 1 - f2); rows 0 and m1 / 2 mirror
// within themselves), and transforms back; the inverse columns step undoes the first and writes y.
// The filter's spectrum is kept transposed, S[f] at [f1][f2], with S[m] last, so that rows read it
// contiguously.

constexpr int kColLogM = 8;  // m1 = 256: 16 threads a column, 32 columns a block on a warp's lanes

// Both steps hold 16 values a thread at a 128-register cap (16 warps an SM, as the fused kernel).
struct four_step_cols {
  using Plan = fused_plan<kColLogM, 16>;
  static constexpr int kCols = 32;  // consecutive j2 on the 32 lanes of a warp: coalesced rows of u and y
  static constexpr int kThreads = kCols * Plan::kThreadsPerRow;  // 512
  static_assert(kThreads == 512, "one block of 512 threads at 128 registers an SM");
  static constexpr int kStride =
      Plan::kRowStride + 1;  // odd: the 32 columns at one position hit distinct banks
  static constexpr size_t kSmem = static_cast<size_t>(kCols) * kStride * sizeof(float2);
};

// The transposed spectrum of a four-step filter: S[f] of (m + 1,) at f1 * m2 + f2, S[m] at m.
struct transposed_spectrum {
  const float2* p;
  int64_t m, m1, m2;
  __device__ __forceinline__ float2 operator()(int64_t f) const {
    return f == m ? p[m] : p[(f % m1) * m2 + f / m1];
  }
};

// The columns' twiddles W_m^(j2 f1) (conjugated for the inverse) on a thread's last-pass groups, whose
// outputs are f1 = g + p s (g < p = m1 / kLast): W_m^(j2 g) times W_(m / p)^(j2 s), three roots a group
// instead of one an output (sincospif is ~30 instructions; the twiddle's products ~4 roundings).
template <bool kInv>
__device__ __forceinline__ void column_twiddles(float2 (&v)[four_step_cols::Plan::kE], last_groups last,
                                                int j2, int m) {
  using Plan = four_step_cols::Plan;
  constexpr int p = Plan::template rprev<Plan::kPasses>();
  static_assert(p * Plan::kLast == Plan::kM && Plan::kE == 2 * Plan::kLast, "two last-pass groups a thread");
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const float2 wg = root_of_unity<kInv>(j2 * last(e), m);
#pragma unroll
    for (int s = 0; s < Plan::kLast; ++s) v[e * Plan::kLast + s] = c_mul(v[e * Plan::kLast + s], wg);
    twiddle<Plan::kLast, kInv>(&v[e * Plan::kLast], j2, m / p, sincos_roots{});
  }
}

// Columns step, forward: column (r, j2) of rows * m2 columns; load(row_of(r), j) gives z[j] of row r.
template <class RowOf, class Load>
__device__ __forceinline__ void four_step_columns_forward(float2* scratch, int64_t rows, int64_t m2,
                                                          RowOf row_of, Load load) {
  using C = four_step_cols;
  using Plan = C::Plan;
  constexpr int m1 = Plan::kM;
  extern __shared__ __align__(16) float2 smem[];
  const int col = static_cast<int>(threadIdx.x) % C::kCols;
  const int t = static_cast<int>(threadIdx.x) / C::kCols;
  float2* buf = smem + col * C::kStride;
  const int64_t blocks = rows * m2 / C::kCols;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t c = b * C::kCols + col;
    const int64_t r = c / m2;
    const int j2 = static_cast<int>(c % m2);
    const auto ctx = row_of(r);
    float2 v[Plan::kE];
    fused_forward<Plan>(v, buf, t,
                        [&](int base, int s, int st) { return load(ctx, (base + s * st) * m2 + j2); });
    const last_groups last = make_last_groups<Plan::kLast>(t, m1);
    const int m = static_cast<int>(m1 * m2);
    float2* out = scratch + r * m1 * m2 + j2;
    column_twiddles<false>(v, last, j2, m);
    scatter<Plan::kLast, true>(
        v, last, Plan::template rprev<Plan::kPasses>(), m1,
        [&](int base, int s, int st, float2 x) { out[static_cast<int64_t>(base + s * st) * m2] = x; });
    __syncthreads();
  }
}

// Columns step, inverse: store(row_of(r), j, zy) receives zy[j] of row r.
template <class RowOf, class Store>
__device__ __forceinline__ void four_step_columns_inverse(const float2* scratch, int64_t rows, int64_t m2,
                                                          RowOf row_of, Store store) {
  using C = four_step_cols;
  using Plan = C::Plan;
  constexpr int m1 = Plan::kM;
  extern __shared__ __align__(16) float2 smem[];
  const int col = static_cast<int>(threadIdx.x) % C::kCols;
  const int t = static_cast<int>(threadIdx.x) / C::kCols;
  float2* buf = smem + col * C::kStride;
  const int64_t blocks = rows * m2 / C::kCols;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t c = b * C::kCols + col;
    const int64_t r = c / m2;
    const int j2 = static_cast<int>(c % m2);
    const int m = static_cast<int>(m1 * m2);
    const float2* in = scratch + r * m1 * m2 + j2;
    const last_groups last = make_last_groups<Plan::kLast>(t, m1);
    float2 v[Plan::kE];
    gather<Plan::kLast, true, true>(
        v, last, Plan::template rprev<Plan::kPasses>(), m1,
        [&](int base, int s, int st) { return in[static_cast<int64_t>(base + s * st) * m2]; });
    column_twiddles<true>(v, last, j2, m);
    const auto ctx = row_of(r);
    fused_inverse<Plan>(v, buf, t,
                        [&](int base, int s, int st, float2 y) { store(ctx, (base + s * st) * m2 + j2, y); });
    __syncthreads();
  }
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(four_step_cols::kThreads, 1)
    four_step_conv_columns_kernel(const conv_args a, float2* scratch, int64_t m2) {
  four_step_columns_forward(
      scratch, a.rows, m2, [&](int64_t r) { return conv_row(a, r); },
      [&](const conv_row& row, int64_t j) { return load_packed<T>(a, row, j); });
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(four_step_cols::kThreads, 1)
    four_step_conv_columns_inverse_kernel(const conv_args a, const float2* scratch, int64_t m2) {
  four_step_columns_inverse(
      scratch, a.rows, m2, [&](int64_t r) { return conv_row(a, r); },
      [&](const conv_row& row, int64_t j, float2 y) { store_packed<T>(a, row, j, y); });
}

__global__ void __launch_bounds__(four_step_cols::kThreads, 1)
    four_step_filter_columns_kernel(const filter_args f, float2* scratch, int64_t m2) {
  four_step_columns_forward(
      scratch, f.rows, m2, [](int64_t r) { return r; },
      [&](int64_t r, int64_t j) { return load_filter_packed(f, r, j); });
}

// Rows step: pairs of rows (f1, m1 - f1), or (0, m1 / 2), kPairs of them a block; local row 2i holds the
// first of pair i. kConv: multiply by the spectrum and transform back, in place; else write the
// filter's spectrum (transposed) from the rows' transforms.
template <int kLogM2>
struct four_step_rows {
  using Plan = fused_plan<kLogM2, 16>;
  static constexpr int kPairs = Plan::kThreadsPerRow >= 64 ? 1 : 64 / Plan::kThreadsPerRow;
  static constexpr int kThreads = 2 * kPairs * Plan::kThreadsPerRow;  // 128..512
  static constexpr int kMinBlocks = 512 / kThreads;                   // 128 registers, 16 warps an SM
  static constexpr size_t kSmem = static_cast<size_t>(2 * kPairs) * Plan::kRowStride * sizeof(float2);
  static_assert(kThreads <= 512 && kThreads * kMinBlocks == 512, "128 registers a thread");
};

template <int kLogM2, bool kConv>
__global__ void __launch_bounds__(four_step_rows<kLogM2>::kThreads, four_step_rows<kLogM2>::kMinBlocks)
    four_step_rows_kernel(float2* scratch, int64_t rows, const float2* spectrum, float2* spectrum_out,
                          int64_t row0, int64_t H, int64_t segments, float scale) {
  using R = four_step_rows<kLogM2>;
  using Plan = typename R::Plan;
  constexpr int m2 = Plan::kM;
  constexpr int m1 = four_step_cols::Plan::kM;
  constexpr int64_t m = static_cast<int64_t>(m1) * m2;
  extern __shared__ __align__(16) float2 smem[];
  const int local_row = static_cast<int>(threadIdx.x) / Plan::kThreadsPerRow;
  const int t = static_cast<int>(threadIdx.x) % Plan::kThreadsPerRow;
  const int pair = local_row / 2;
  const bool second = local_row % 2 == 1;
  float2* buf = smem + local_row * Plan::kRowStride;
  float2* first_buf = smem + 2 * pair * Plan::kRowStride;
  float2* second_buf = first_buf + Plan::kRowStride;
  const int64_t pairs_per_row = m1 / 2;
  const int64_t blocks = (rows * pairs_per_row + R::kPairs - 1) / R::kPairs;
  const last_groups last = make_last_groups<Plan::kLast>(t, m2);
  constexpr int plast = Plan::template rprev<Plan::kPasses>();
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t gp = b * R::kPairs + pair;
    const bool active = gp < rows * pairs_per_row;
    const int64_t r = active ? gp / pairs_per_row : 0;
    const int pi = static_cast<int>(gp % pairs_per_row);
    const int f1a = pi == 0 ? 0 : pi;
    const int f1b = pi == 0 ? m1 / 2 : m1 - pi;
    const int f1 = second ? f1b : f1a;
    float2* row = scratch + (r * m1 + f1) * m2;
    float2 v[Plan::kE];
    fused_forward<Plan>(v, buf, t, [&](int base, int s, int st) {
      return active ? row[base + s * st] : make_float2(0.0f, 0.0f);
    });
    // To natural order in the plain layout; the last pass may have read the padded one, which other
    // threads may still be reading.
    const flat_row natural{buf};
    __syncthreads();
    scatter<Plan::kLast, true>(v, last, plast, m2, natural);
    __syncthreads();
    // Each mirror pair once: for pi > 0 the first row's threads take f2 < m2 / 2 of the first row and
    // the second row's threads the rest, each with its partner m2 - 1 - f2 in the other row; rows 0
    // and m1 / 2 pair within themselves (f2 with -f2, and f2 with m2 - 1 - f2).
    const int64_t h = ((row0 + r) / segments) % H;
    const transposed_spectrum spec{spectrum + h * (m + 1), m, m1, m2};
    float2* out = spectrum_out == nullptr ? nullptr : spectrum_out + (row0 + r) * (m + 1);
    auto pair_at = [&](float2* pa, int fa, float2* pb, int fb, int64_t f, bool self) {
      const float2 w = root_of_unity<false>(static_cast<int>(f % (2 * m)), static_cast<int>(2 * m));
      if (kConv) {
        float2 za = pa[fa], zb = pb[fb];
        mirror_product(za, zb, w, spec(f), spec(m - f));
        pa[fa] = za;
        if (!self) pb[fb] = zb;
      } else {
        float2 xa, xbc;
        mirror_spectrum(pa[fa], pb[fb], w, scale, xa, xbc);
        out[(f % m1) * m2 + f / m1] = xa;
        const int64_t g = m - f;
        if (g == m) {
          out[m] = xbc;
        } else if (!self) {
          out[(g % m1) * m2 + g / m1] = xbc;
        }
      }
    };
    if (active) {
      if (pi != 0) {
        for (int i = t; i < m2 / 2; i += Plan::kThreadsPerRow) {
          const int f2 = second ? m2 / 2 + i : i;
          pair_at(first_buf, f2, second_buf, m2 - 1 - f2, f1a + static_cast<int64_t>(m1) * f2, false);
        }
      } else if (!second) {
        for (int f2 = t; f2 <= m2 / 2; f2 += Plan::kThreadsPerRow) {
          pair_at(first_buf, f2, first_buf, (m2 - f2) % m2, static_cast<int64_t>(m1) * f2,
                  f2 == 0 || f2 == m2 / 2);
        }
      } else {
        for (int f2 = t; f2 < m2 / 2; f2 += Plan::kThreadsPerRow) {
          pair_at(second_buf, f2, second_buf, m2 - 1 - f2, m1 / 2 + static_cast<int64_t>(m1) * f2, false);
        }
      }
    }
    __syncthreads();
    if (kConv) {
      gather<Plan::kLast, true>(v, last, plast, m2, natural);
      __syncthreads();  // the inverse's first writes may use the padded layout
      fused_inverse<Plan>(v, buf, t, [&](int base, int s, int st, float2 x) {
        if (active) row[base + s * st] = x;
      });
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------------------
// The cluster path for m = 2^15 and 2^16 (rows of up to 64K samples with a full-length filter) on sm_90:
// one filter and all its batch rows in a cluster of eight blocks, with nothing but u, k and y in device
// memory. Write j = c + 8 jl (block c of the cluster holds the M = m / 8 points jl of its residue
// class) and f = f2 + M f1: block c takes the M-point DFT of its points (the fused kernel's passes, 16
// values a thread), and for each f2 the eight blocks' results, twiddled by W_m^(c f2), make the 8-point
// DFT over c whose outputs are Z[f2 + M f1]. Thread t of block c takes p = c T + t (T threads a block, so
// the M / 2 values of p cover the cluster) and the columns f2 = p and M - p (0 and M / 2 for p = 0),
// reading them from the eight blocks' shared memory (distributed shared memory): frequency f2 + M f1
// then mirrors onto (M - f2) + M (7 - f1), so every mirror pair of the real split sits in one thread.
// The filter's spectrum is made the same way once per filter and kept in shared memory at the
// frequencies each thread holds; its batch rows then run the forward transform, the product and the
// inverse (the 8-point inverse DFT, conjugate twiddles and stores into block c's shared memory, then
// block c's inverse M-point passes). Two row buffers a block: the forward transform's outputs (read by
// the cluster) and the inverse's inputs (written by the cluster), so a row takes two cluster barriers.
// Against the four-step path (five launches, two trips of 16 bytes a value through device scratch each
// way and the spectra through device memory) this moves ~1.5 MB a row between the cluster's blocks
// (filter, u and y at 512 KB each at m = 65536). Each block reading its own points has a stride of 16
// samples: Nsight (H200, 1 x 768 x 65536 bf16, 1750 us) put 14% of the stall samples on the filter's loads
// and ~10% on u's, where a warp's load touches 32 sectors for 128 bytes. So at m = 32768 the cluster stages
// each row (a block reads its share in 16-byte vectors and hands each of the eight points of a run to the
// block that transforms it), one more cluster barrier a row; at m = 65536 the same staging cost 144 bytes
// of spill at the 128-register cap and measured slower (1801-1820 us against 1754-1773), so there each
// block loads its points. Measured (H200, medians of 5 batches of 5 calls, the same process): 1 x 768 x
// 65536 bfloat16 1754-1773 us against the four-step path's 1868-1872, float32 1834-1835 against 1822-1823;
// 2 x 768 x 32768 bfloat16 1270 against 1490-1495, float32 1314-1318 against 1445-1453. Where it ends: one
// block of 16 warps an SM at m = 65536, latency-bound between the barriers of the passes and the cluster,
// as the four-step kernels are (the cluster barriers' own waits are ~2.5% of the samples); at m = 32768
// two blocks of 8 warps an SM overlap each other's barriers. Sixteen blocks a cluster at m = 65536 (two
// blocks an SM, two threads a mirror pair of columns) measured slower: 1901-1909 us, 14 clusters at once.
// float32 rows of m = 65536 take this path too (within 1% of the four-step path's time) for its memory:
// the four-step path allocates up to 512 MiB of scratch and the spectra (400 MB at H = 768).
constexpr int kClusterBlocks = 8;

template <int kLogM>
struct cluster_plan {
  static constexpr int kM = 1 << kLogM;
  static constexpr int kLocal = kM / kClusterBlocks;  // M: a block's points
  using Plan = fused_plan<kLogM - 3, 16, kLocal / 16>;
  static constexpr int kThreads = Plan::kThreadsPerRow;
  using Roots = table_roots<kLogM + 1>;  // W_2m: the product's roots; the twiddles' W_m and the passes' too
  static constexpr size_t kBuf = static_cast<size_t>(Plan::kRowStride) * sizeof(float2);
  // The filter's spectrum at a thread's 16 frequencies, (16, kThreads), and S[m] for p = 0.
  static constexpr size_t kSpectrum = static_cast<size_t>(16 * kThreads + 1) * sizeof(float2);
  static constexpr size_t kSmem = 2 * kBuf + kSpectrum + Roots::kBytes;
  static_assert(Plan::kRows == 1 && Plan::kE == 16 && 2 * kThreads * kClusterBlocks == kLocal,
                "a thread a mirror pair of columns");
};

// The mirror pairs of a thread's 16 values v[0..8) = Z[f2a + M f1], v[8..16) = Z[f2b + M f1]:
// fn(ia, ib, f, self) for Z[f] at v[ia] and Z[m - f] at v[ib]. self: f = 0 (with f = m) or m / 2, ia == ib.
template <class Fn>
__device__ __forceinline__ void cluster_pairs(int p, int M, Fn&& fn) {
  if (p != 0) {
#pragma unroll
    for (int f1 = 0; f1 < 8; ++f1) fn(f1, 15 - f1, p + M * f1, false);
  } else {
    fn(0, 0, 0, true);
    fn(4, 4, 4 * M, true);
#pragma unroll
    for (int f1 = 1; f1 < 4; ++f1) fn(f1, 8 - f1, M * f1, false);
#pragma unroll
    for (int f1 = 0; f1 < 4; ++f1) fn(8 + f1, 15 - f1, M / 2 + M * f1, false);
  }
}

// 16 consecutive elements of T at p (16-byte aligned) as float.
template <ssmkit_dtype T>
__device__ __forceinline__ void load16(const void* p, float (&x)[16]) {
  if constexpr (T == SSMKIT_DTYPE_F32) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 w = static_cast<const float4*>(p)[i];
      x[4 * i] = w.x;
      x[4 * i + 1] = w.y;
      x[4 * i + 2] = w.z;
      x[4 * i + 3] = w.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4 w = static_cast<const uint4*>(p)[i];
      const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        x[8 * i + 2 * j] = to_float<T>(static_cast<uint16_t>(u[j] & 0xffffu));
        x[8 * i + 2 * j + 1] = to_float<T>(static_cast<uint16_t>(u[j] >> 16));
      }
    }
  }
}

template <ssmkit_dtype T, int kLogM, bool kBidir>
__global__ void __launch_bounds__(cluster_plan<kLogM>::kThreads, cluster_plan<kLogM>::Plan::kMinBlocks)
    fft_conv_cluster_kernel(const conv_args a, const filter_args fa, int64_t batch) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using CP = cluster_plan<kLogM>;
  using Plan = typename CP::Plan;
  constexpr int M = CP::kLocal;
  constexpr int m = CP::kM;
  constexpr int NT = CP::kThreads;
  constexpr int plast = Plan::template rprev<Plan::kPasses>();
  // Rows staged through the cluster at m = 32768 (two blocks an SM); at 65536 each block loads its points.
  constexpr bool kStage = kLogM == 15;
  extern __shared__ __align__(16) float2 smem[];
  float2* const fwd = smem;                     // staged inputs, then the forward transform's outputs
  float2* const inv = smem + Plan::kRowStride;  // the filter's transform, then the inverse's inputs
  float2* const spec = inv + Plan::kRowStride;  // (16, NT) + 1
  const auto roots = CP::Roots::fill(spec + 16 * NT + 1);
  cg::cluster_group cluster = cg::this_cluster();
  const int c = static_cast<int>(cluster.block_rank());
  const int t = static_cast<int>(threadIdx.x);
  const int p = c * NT + t;
  const int f2a = p;
  const int f2b = p == 0 ? M / 2 : M - p;
  const last_groups last = make_last_groups<Plan::kLast>(t, M);
  // As the fused filter kernel: the packing's 1/2 and the inverse's 1/n.
  const float scale = 1.0f / (8.0f * m);
  // Whole 16-byte vectors of u, the pregate and k: rows that start on 16-byte boundaries.
  constexpr int64_t es = T == SSMKIT_DTYPE_F32 ? 4 : 2;
  const bool uvec = (a.L * es) % 16 == 0 &&
                    ((reinterpret_cast<uintptr_t>(a.u) | reinterpret_cast<uintptr_t>(a.pregate)) & 15u) == 0;
  const bool kvec = !kBidir && fa.Lk % 4 == 0 && (reinterpret_cast<uintptr_t>(fa.k) & 15u) == 0;
  // Stages the packed values z[8 q + r] of this block's share of q (a 16-sample run of the row each) into
  // block r's `dst` at q, so that each block then reads its points j = c + 8 jl from its own shared memory:
  // the row is read from device memory in whole 16-byte vectors where it can be (load8(q, z) gives the
  // eight).
  auto stage = [&](float2* dst, auto load8) {
    constexpr int kShare = M / kClusterBlocks;
    for (int i = t; i < kShare; i += NT) {
      const int q = c * kShare + i;
      float2 z[8];
      load8(q, z);
#pragma unroll
      for (int r = 0; r < kClusterBlocks; ++r) cluster.map_shared_rank(dst, r)[q] = z[r];
    }
  };
  // Z at the thread's 16 frequencies from the cluster's forward outputs in `src`.
  auto cross_forward = [&](float2(&v)[16], float2* src) {
#pragma unroll
    for (int q = 0; q < kClusterBlocks; ++q) {
      const float2* r = cluster.map_shared_rank(src, q);
      v[q] = r[f2a];
      v[8 + q] = r[f2b];
    }
#pragma unroll
    for (int q = 1; q < kClusterBlocks; ++q) {
      v[q] = c_mul(v[q], roots.template get<false>(q * f2a, m));
      v[8 + q] = c_mul(v[8 + q], roots.template get<false>(q * f2b, m));
    }
    dft<8, false>(v);
    dft<8, false>(v + 8);
  };
  // The M-point forward passes of the points in `v`, through `buf`, into `buf` in natural order.
  auto local_passes = [&](float2(&v)[16], float2* buf) {
    fused_forward_loaded<Plan>(v, buf, t, roots, block_sync{}, false);
    __syncthreads();
    scatter<Plan::kLast, true>(v, last, plast, M, flat_row{buf});
  };
  // The same for the staged points in `src` (read into registers first).
  auto local_forward = [&](float2(&v)[16], const float2* src, float2* buf) {
    fused_load<Plan>(v, t, [&](int base, int s, int st) { return src[base + s * st]; });
    __syncthreads();  // `buf` may be `src`
    local_passes(v, buf);
  };
  const int64_t clusters = gridDim.x / kClusterBlocks;
  for (int64_t h = blockIdx.x / kClusterBlocks; h < a.H; h += clusters) {
    float2 v[16];
    // The filter: staged in `fwd` (every block is done reading it: the last row's second barrier), its
    // transform in `inv` (every block is done with its last inverse: the staging barrier). At m = 65536
    // each block loads its points and transforms them in `inv` at once: no block writes another's `inv`
    // before the first row's forward barrier, and every block reads them only after the next barrier.
    if constexpr (kStage) {
      stage(fwd, [&](int q, float2(&z)[8]) {
        const int i0 = 16 * q;
        if (kvec && i0 + 16 <= fa.Lk) {
          float x[16];
          load16<SSMKIT_DTYPE_F32>(fa.k + h * fa.Lk + i0, x);
#pragma unroll
          for (int r = 0; r < 8; ++r) z[r] = make_float2(x[2 * r], x[2 * r + 1]);
        } else {
#pragma unroll
          for (int r = 0; r < 8; ++r) z[r] = load_filter_packed<kBidir>(fa, h, 8 * q + r);
        }
        if (q == 0) filter_add_d(fa, h, 0, z[0]);
      });
      cluster.sync();
      local_forward(v, fwd, inv);
    } else {
      fused_load<Plan>(v, t, [&](int base, int s, int st) {
        if (kBidir && s % 4 == 0 && s > 0) load_fence();  // the two-directional loads spilled otherwise
        return load_filter_packed<kBidir>(fa, h, c + kClusterBlocks * (base + s * st));
      });
      if (c == 0) filter_add_d(fa, h, t, v[0]);
      local_passes(v, inv);
    }
    cluster.sync();
    cross_forward(v, inv);
    cluster_pairs(p, M, [&](int ia, int ib, int f, bool self) {
      float2 xa, xbc;
      if (self) {
        mirror_spectrum(v[ia], v[ia], f == 0 ? make_float2(1.0f, 0.0f) : make_float2(0.0f, -1.0f), scale, xa,
                        xbc);
        spec[ia * NT + t] = xa;
        if (f == 0) spec[16 * NT] = xbc;  // S[m]
      } else {
        mirror_spectrum(v[ia], v[ib], roots.template get<false>(f, 2 * m), scale, xa, xbc);
        spec[ia * NT + t] = xa;
        spec[ib * NT + t] = xbc;
      }
    });
    for (int64_t b = 0; b < batch; ++b) {
      const conv_row row(a, b * a.H + h);
      // Staged in `fwd` (m = 32768; at 65536 each block loads its points): every block is done reading the
      // filter's staged values (the filter's second barrier) or the last row's forward outputs (its second
      // barrier).
      if constexpr (kStage) {
        stage(fwd, [&](int q, float2(&z)[8]) {
          const int i0 = 16 * q;
          if (uvec && i0 + 16 <= row.len) {
            float x[16];
            load16<T>(element_at<T>(a.u, row.base + i0), x);
            if (a.pregate != nullptr) {
              float g[16];
              load16<T>(element_at<T>(a.pregate, row.base + i0), g);
#pragma unroll
              for (int e = 0; e < 16; ++e) x[e] *= g[e];
            }
#pragma unroll
            for (int r = 0; r < 8; ++r) z[r] = make_float2(x[2 * r], x[2 * r + 1]);
          } else {
#pragma unroll
            for (int r = 0; r < 8; ++r) z[r] = load_packed<T>(a, row, 8 * q + r);
          }
        });
        cluster.sync();
        local_forward(v, fwd, fwd);
      } else {
        fused_load<Plan>(v, t, [&](int base, int s, int st) {
          return load_packed<T>(a, row, c + kClusterBlocks * (base + s * st));
        });
        local_passes(v, fwd);
      }
      // Every block's outputs written; every block done with the filter's transform and its last inverse.
      cluster.sync();
      cross_forward(v, fwd);
      cluster_pairs(p, M, [&](int ia, int ib, int f, bool self) {
        if (self) {
          float2 za = v[ia], zb = v[ia];
          mirror_product(za, zb, f == 0 ? make_float2(1.0f, 0.0f) : make_float2(0.0f, -1.0f),
                         spec[ia * NT + t], f == 0 ? spec[16 * NT] : spec[ia * NT + t]);
          v[ia] = za;
        } else {
          mirror_product(v[ia], v[ib], roots.template get<false>(f, 2 * m), spec[ia * NT + t],
                         spec[ib * NT + t]);
        }
      });
      dft<8, true>(v);
      dft<8, true>(v + 8);
#pragma unroll
      for (int q = 0; q < kClusterBlocks; ++q) {
        float2* r = cluster.map_shared_rank(inv, q);
        r[f2a] = q == 0 ? v[q] : c_mul(v[q], roots.template get<true>(q * f2a, m));
        r[f2b] = q == 0 ? v[8 + q] : c_mul(v[8 + q], roots.template get<true>(q * f2b, m));
      }
      // Every block's inverse inputs written; every block done reading this row's forward outputs.
      cluster.sync();
      gather<Plan::kLast, true>(v, last, plast, M, flat_row{inv});
      __syncthreads();  // the inverse's first writes may use the padded layout
      fused_inverse<Plan>(
          v, inv, t,
          [&](int base, int s, int st, float2 y) {
            store_packed<T>(a, row, c + kClusterBlocks * (base + s * st), y);
          },
          roots, block_sync{}, false);
    }
  }
#endif
}

// ---------------------------------------------------------------------------------------------------
// The multi-pass path for m > 16384: each pass is one launch over all rows, reading and writing
// device scratch (rows, m) float2 with the same groups and arithmetic as the fused kernel. Pass 1 is
// radix 16, the next pass takes the remainder (radix 2..16), the rest are radix 16.

struct pass_args {
  const float2* src;  // (rows, m)
  float2* dst;        // (rows, m)
  int64_t rows;
  int64_t m;
  int64_t rprev;  // product of the earlier passes' radices
};

template <int kR, bool kInv>
__global__ void __launch_bounds__(256) fft_pass_kernel(const pass_args a) {
  const int64_t nt = a.m / kE;
  const int64_t total = a.rows * nt;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = id / nt;
    const thread_groups groups{static_cast<int>(id % nt), static_cast<int>(nt)};
    const float2* src = a.src + row * a.m;
    float2* dst = a.dst + row * a.m;
    float2 v[kE];
    gather<kR, kInv>(v, groups, a.rprev, a.m, flat_row{const_cast<float2*>(src)});
    butterflies<kR, kInv>(v, groups, a.rprev);
    scatter<kR, !kInv>(v, groups, a.rprev, a.m, flat_row{dst});
  }
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(256) fft_conv_first_pass_kernel(const conv_args a, float2* dst) {
  const int64_t nt = a.m / kE;
  const int64_t total = a.rows * nt;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = id / nt;
    const conv_row row(a, r);
    const thread_groups groups{static_cast<int>(id % nt), static_cast<int>(nt)};
    float2* out = dst + r * a.m;
    float2 v[kE];
    gather<kLastRadix, false>(v, groups, 1, a.m,
                              [&](int b, int s, int st) { return load_packed<T>(a, row, b + s * st); });
    butterflies<kLastRadix, false>(v, groups, 1);
    scatter<kLastRadix, true>(v, groups, 1, a.m, flat_row{out});
  }
}

template <ssmkit_dtype T>
__global__ void __launch_bounds__(256) fft_conv_last_pass_kernel(const conv_args a, const float2* src) {
  const int64_t nt = a.m / kE;
  const int64_t total = a.rows * nt;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = id / nt;
    const conv_row row(a, r);
    const thread_groups groups{static_cast<int>(id % nt), static_cast<int>(nt)};
    const float2* in = src + r * a.m;
    float2 v[kE];
    gather<kLastRadix, true>(v, groups, 1, a.m, flat_row{const_cast<float2*>(in)});
    butterflies<kLastRadix, true>(v, groups, 1);
    scatter<kLastRadix, false>(
        v, groups, 1, a.m, [&](int b, int s, int st, float2 y) { store_packed<T>(a, row, b + s * st, y); });
  }
}

// The middle of the transform in one launch: the last forward pass, the product, the first inverse
// pass, in place on `data` (each thread reads and writes only its own two groups).
__global__ void __launch_bounds__(256)
    fft_conv_product_kernel(float2* data, const float2* spectrum, int64_t rows, int64_t row0, int64_t m,
                            int64_t H, int64_t segments) {
  const int64_t nt = m / kE;
  const int64_t total = rows * nt;
  const int64_t plast = m / kLastRadix;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = id / nt;
    const int64_t t = id % nt;
    float2* row = data + r * m;
    const last_groups last = make_last_groups<kLastRadix>(static_cast<int>(t), static_cast<int>(m));
    float2 v[kE];
    gather<kLastRadix, false>(v, last, plast, m, flat_row{row});
    butterflies<kLastRadix, false>(v, last, plast);
    const float2* filter = spectrum + (((row0 + r) / segments) % H) * (m + 1);
    product_last_pass<kLastRadix>(v, t, m, [filter](int64_t f) { return filter[f]; });
    butterflies<kLastRadix, true>(v, last, plast);
    scatter<kLastRadix, false>(v, last, plast, m, flat_row{row});
  }
}

__global__ void __launch_bounds__(256) filter_first_pass_kernel(const filter_args a, float2* dst) {
  const int64_t nt = a.m / kE;
  const int64_t total = a.rows * nt;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = id / nt;
    const thread_groups groups{static_cast<int>(id % nt), static_cast<int>(nt)};
    float2* out = dst + r * a.m;
    float2 v[kE];
    gather<kLastRadix, false>(v, groups, 1, a.m,
                              [&](int b, int s, int st) { return load_filter_packed(a, r, b + s * st); });
    butterflies<kLastRadix, false>(v, groups, 1);
    scatter<kLastRadix, true>(v, groups, 1, a.m, flat_row{out});
  }
}

__global__ void __launch_bounds__(256) filter_spectrum_last_kernel(const filter_args a, const float2* src) {
  const int64_t nt = a.m / kE;
  const int64_t total = a.rows * nt;
  const int64_t plast = a.m / kLastRadix;
  const float scale = static_cast<float>(1.0 / (8.0 * static_cast<double>(a.m)));
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = id / nt;
    const int64_t t = id % nt;
    const float2* row = src + r * a.m;
    const last_groups last = make_last_groups<kLastRadix>(static_cast<int>(t), static_cast<int>(a.m));
    float2 v[kE];
    gather<kLastRadix, false>(v, last, plast, a.m, flat_row{const_cast<float2*>(row)});
    butterflies<kLastRadix, false>(v, last, plast);
    float2* out = a.spectrum + (a.h0 + r) * (a.m + 1);
    spectrum_last_pass<kLastRadix>(v, t, a.m, scale, [out](int64_t f, float2 x) { out[f] = x; });
  }
}

// ---------------------------------------------------------------------------------------------------
// Direct convolution for tiny problems (n <= 32): one thread per output sample.

template <ssmkit_dtype T>
__global__ void __launch_bounds__(256) fft_conv_direct_kernel(const conv_args a, const filter_args f) {
  const int64_t total = a.rows * a.L;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = id % a.L;
    const int64_t base = id - t;
    const int64_t h = (id / a.L) % a.H;
    const float* kf = f.k + h * (f.bidirectional ? 2 * f.Lk : f.Lk);
    auto v = [&](int64_t s) {
      float x = load_pair<T>(a.u, base + s, false, false).x;
      if (a.pregate != nullptr) x *= load_pair<T>(a.pregate, base + s, false, false).x;
      return x;
    };
    float y = f.D != nullptr ? f.D[h] * v(t) : 0.0f;
    for (int64_t j = 0; j < f.Lk && j <= t; ++j) y += kf[j] * v(t - j);
    if (f.bidirectional) {
      for (int64_t j = 0; j < f.Lk && t + j < a.L; ++j) y += kf[f.Lk + j] * v(t + j);
    }
    if (a.extra != nullptr) y += a.extra[id];
    if (a.gelu) y = gelu_erf(y);
    if (a.postgate != nullptr) y *= load_pair<T>(a.postgate, id, false, false).x;
    store_pair<T>(a.out, id, make_float2(y, 0.0f), false, false);
  }
}

// ---------------------------------------------------------------------------------------------------
// S4D: the kernel, and ssmConv's state passing. Modes are complex: A, C (H, N2, 2); dt = exp(logDt).

struct s4d_mode {
  double lre, lim;  // lambda = exp(dt A)
  double dre, dim;  // dt A
  double bre, bim;  // B = (lambda - 1) / A
  double cre, cim;  // C
};

__device__ __forceinline__ s4d_mode make_mode(const float* log_dt, const float* A, const float* C, int64_t h,
                                              int64_t N2, int64_t n) {
  s4d_mode md;
  const double dt = exp(static_cast<double>(log_dt[h]));
  const double are = A[(h * N2 + n) * 2], aim = A[(h * N2 + n) * 2 + 1];
  md.cre = C[(h * N2 + n) * 2];
  md.cim = C[(h * N2 + n) * 2 + 1];
  md.dre = dt * are;
  md.dim = dt * aim;
  double s, c;
  sincos(md.dim, &s, &c);
  const double e = exp(md.dre);
  md.lre = e * c;
  md.lim = e * s;
  const double nre = md.lre - 1.0, nim = md.lim;
  const double den = are * are + aim * aim;
  md.bre = (nre * are + nim * aim) / den;
  md.bim = (nim * are - nre * aim) / den;
  return md;
}

// exp(dt A l) for a whole number l, from the exact exponent.
__device__ __forceinline__ void mode_power(const s4d_mode& md, double l, double& re, double& im) {
  double s, c;
  sincos(md.dim * l, &s, &c);
  const double e = exp(md.dre * l);
  re = e * c;
  im = e * s;
}

constexpr int kChunk = 32;  // consecutive samples per thread: one exact power, then a recurrence

// k[h, l] = 2 Re sum_n C_n B_n lambda_n^l, in double; one thread per (h, 32 consecutive l).
__global__ void __launch_bounds__(128) s4d_kernel_kernel(const float* log_dt, const float* A, const float* C,
                                                         float* k, int64_t H, int64_t N2, int64_t L) {
  const int64_t chunks = (L + kChunk - 1) / kChunk;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < H * chunks;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t h = id / chunks;
    const int64_t l0 = (id % chunks) * kChunk;
    double acc[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) acc[j] = 0.0;
    for (int64_t n = 0; n < N2; ++n) {
      const s4d_mode md = make_mode(log_dt, A, C, h, N2, n);
      const double cbre = md.cre * md.bre - md.cim * md.bim, cbim = md.cre * md.bim + md.cim * md.bre;
      double pre, pim;
      mode_power(md, static_cast<double>(l0), pre, pim);
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        acc[j] += cbre * pre - cbim * pim;
        const double nre = pre * md.lre - pim * md.lim;
        pim = pre * md.lim + pim * md.lre;
        pre = nre;
      }
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (l0 + j < L) k[h * L + l0 + j] = static_cast<float>(2.0 * acc[j]);
    }
  }
}

// ssmConv, step 1: the state each block would end with from a zero start, by Horner's rule
// (s = s lambda + B u_t, stable as |lambda| <= 1). One thread per (row, block, mode).
// states: (batch * H, segments, N2) complex.
template <ssmkit_dtype T>
__global__ void __launch_bounds__(128)
    ssm_block_state_kernel(const void* u, const float* log_dt, const float* A, const float* C, float2* states,
                           int64_t rows, int64_t H, int64_t L, int64_t N2, int64_t seg_len,
                           int64_t segments) {
  const int64_t total = rows * segments * N2;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = id % N2;
    const int64_t seg = (id / N2) % segments;
    const int64_t bh = id / (N2 * segments);
    const s4d_mode md = make_mode(log_dt, A, C, bh % H, N2, n);
    const int64_t start = seg * seg_len;
    const int64_t end = L < start + seg_len ? L : start + seg_len;
    // In double: with long memory (|lambda| near 1) thousands of float32 roundings would add up.
    double sre = 0.0, sim = 0.0;
    for (int64_t i = start; i < end; ++i) {
      const double x = load_pair<T>(u, bh * L + i, false, false).x;
      const double nre = sre * md.lre - sim * md.lim + md.bre * x;
      sim = sre * md.lim + sim * md.lre + md.bim * x;
      sre = nre;
    }
    states[id] = make_float2(static_cast<float>(sre), static_cast<float>(sim));
  }
}

// ssmConv, step 2: the scan over blocks, in double. Replaces each block's end state by the state that
// enters it, and writes the final state. One thread per (row, mode).
__global__ void __launch_bounds__(128)
    ssm_state_scan_kernel(const float* log_dt, const float* A, const float* C, float2* states,
                          const float* initial_state, float* last_state, int64_t rows, int64_t H, int64_t L,
                          int64_t N2, int64_t seg_len, int64_t segments) {
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < rows * N2;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = id % N2;
    const int64_t bh = id / N2;
    const s4d_mode md = make_mode(log_dt, A, C, bh % H, N2, n);
    double xre = 0.0, xim = 0.0;
    if (initial_state != nullptr) {
      xre = initial_state[id * 2];
      xim = initial_state[id * 2 + 1];
    }
    for (int64_t seg = 0; seg < segments; ++seg) {
      float2& slot = states[(bh * segments + seg) * N2 + n];
      const float2 local = slot;
      slot = make_float2(static_cast<float>(xre), static_cast<float>(xim));
      const int64_t len = L - seg * seg_len < seg_len ? L - seg * seg_len : seg_len;
      double pre, pim;
      mode_power(md, static_cast<double>(len), pre, pim);
      const double nre = xre * pre - xim * pim + local.x;
      xim = xre * pim + xim * pre + local.y;
      xre = nre;
    }
    if (last_state != nullptr) {
      last_state[id * 2] = static_cast<float>(xre);
      last_state[id * 2 + 1] = static_cast<float>(xim);
    }
  }
}

// ssmConv, step 3: the entering state's part of each output, 2 Re sum_n C_n lambda_n^(tau + 1) x_n at
// position tau of its block, into extra (batch * H, L) float32. One thread per 32 consecutive samples
// of a block.
__global__ void __launch_bounds__(128)
    ssm_state_output_kernel(const float* log_dt, const float* A, const float* C, const float2* states,
                            float* extra, int64_t rows, int64_t H, int64_t L, int64_t N2, int64_t seg_len,
                            int64_t segments) {
  const int64_t chunks = (seg_len + kChunk - 1) / kChunk;
  const int64_t total = rows * segments * chunks;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t tau0 = (id % chunks) * kChunk;
    const int64_t seg = (id / chunks) % segments;
    const int64_t bh = id / (chunks * segments);
    const int64_t start = seg * seg_len;
    const int64_t len = L - start < seg_len ? L - start : seg_len;
    if (tau0 >= len) continue;
    // In double: 64 modes of a long-memory S4D cancel to an output far smaller than their terms, and a
    // float32 running product and sum left 2.4e-5 errors at [1, 8, 4096], N/2 64 (H200); fp64 is a
    // small cost on this kernel (N2 x 32 FMAs a thread).
    double acc[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) acc[j] = 0.0;
    for (int64_t n = 0; n < N2; ++n) {
      const s4d_mode md = make_mode(log_dt, A, C, bh % H, N2, n);
      const float2 x = states[(bh * segments + seg) * N2 + n];
      // c x lambda^(tau0 + 1), then one factor lambda per sample
      double pre, pim;
      mode_power(md, static_cast<double>(tau0 + 1), pre, pim);
      const double cxre = md.cre * x.x - md.cim * x.y, cxim = md.cre * x.y + md.cim * x.x;
      double wre = cxre * pre - cxim * pim, wim = cxre * pim + cxim * pre;
      const double lre = md.lre, lim = md.lim;
#pragma unroll
      for (int j = 0; j < kChunk; ++j) {
        acc[j] += wre;
        const double nre = wre * lre - wim * lim;
        wim = wre * lim + wim * lre;
        wre = nre;
      }
    }
#pragma unroll
    for (int j = 0; j < kChunk; ++j) {
      if (tau0 + j < len) extra[bh * L + start + tau0 + j] = static_cast<float>(2.0 * acc[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Host side.

int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}
int log2_exact(int64_t x) {
  int l = 0;
  while ((int64_t{1} << l) < x) ++l;
  return l;
}

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU, within the grid limit.
unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = int64_t{1} << 20;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Stream-ordered scratch that frees itself.
class scratch {
 public:
  explicit scratch(cudaStream_t s) : stream_(s) {}
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  status alloc(size_t bytes) {
    const cudaError_t e = cudaMallocAsync(&ptr_, bytes == 0 ? 1 : bytes, stream_);
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      cudaGetLastError();
      return make_status(e == cudaErrorMemoryAllocation ? status_code::cuda_oom : status_code::cuda,
                         "fftConv: could not allocate %zu bytes of device scratch: %s", bytes,
                         cudaGetErrorString(e));
    }
    return ok_status();
  }
  template <class P>
  P* as() const {
    return static_cast<P*>(ptr_);
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

template <class Kernel>
status set_smem(Kernel* kernel, size_t bytes) {
  if (bytes > 48 * 1024) {
    SSMKIT_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
  return ok_status();
}

template <int kLogM, bool kBidir>
status launch_filter_fused(const filter_args& f, cudaStream_t stream) {
  if constexpr (kLogM == kMaxFusedLogM) {
    SSMKIT_RETURN_IF_ERROR(set_smem(filter_spectrum_split_kernel<kBidir>, kSplitFilterSmem));
    filter_spectrum_split_kernel<kBidir>
        <<<grid_for(f.rows, 1), split_plan::kThreadsPerRow, kSplitFilterSmem, stream>>>(f);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  } else {
    using Plan = filter_plan<kLogM>;
    SSMKIT_RETURN_IF_ERROR(set_smem(filter_spectrum_fused_kernel<kLogM, kBidir>, filter_smem<kLogM>));
    const int64_t blocks = (f.rows + Plan::kRows - 1) / Plan::kRows;
    filter_spectrum_fused_kernel<kLogM, kBidir>
        <<<grid_for(blocks, 1), Plan::kThreads, filter_smem<kLogM>, stream>>>(f);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    return ok_status();
  }
}

// Launches a conv kernel that waits for the filters' kernel before it (pdl_wait) with programmatic
// dependent launch where its code has that wait (pdl_capable; these builds carry machine code only, so on
// an H200 the sm_90a code runs), so that its blocks load and transform their rows while the filters'
// kernel finishes.
template <class Kernel>
status launch_after_filters(Kernel* kernel, int64_t blocks, int threads, size_t smem, const conv_args& a,
                            cudaStream_t stream) {
  bool pdl = false;
  SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &pdl));
  return launch_pdl(kernel, dim3(grid_for(blocks, 1)), dim3(static_cast<unsigned>(threads)), smem, stream,
                    pdl, a);
}

// Whether m = 1024 takes the 32 x 32 kernel (fft_conv_wide_kernel): SSMKIT_CUDA_FFT_WIDE=0 for no dtype (the
// 16-value plan), any other value for every dtype; unset, float32 only, where it measured faster. Read at
// every call, so that one process can compare both.
bool fft_wide_wanted(ssmkit_dtype dtype) {
  return env_flag("SSMKIT_CUDA_FFT_WIDE", dtype == SSMKIT_DTYPE_F32);
}

// Whether bfloat16 rows of m = 1024, 4096 and 16384 take the tensor-core kernels (fft_conv_tc_kernel,
// fft_conv_tcr_kernel): the default, SSMKIT_CUDA_FFT_TC=0 for the float32 transforms (read at every call, so
// that one process can compare both); their row arithmetic is 32-bit (tc_row).
bool fft_tc_wanted(const conv_args& a) {
  return env_flag("SSMKIT_CUDA_FFT_TC", true) && a.row0 + a.rows < (int64_t{1} << 31);
}

// m = 16384 takes the split kernel (two 8192-point halves), the shorter lengths the fused kernel.
template <ssmkit_dtype T, int kLogM>
status launch_conv_fused(const conv_args& a, cudaStream_t stream) {
  if constexpr (kLogM == 10 && T == SSMKIT_DTYPE_BF16) {
    if (a.coef != nullptr) {  // the tensor-core kernel, its coefficients made (filters_then_convolve)
      // As many blocks as run at once (kMinBlocks an SM), each taking groups of rows grid-stride, so
      // that the tables are made once a block.
      int dev = 0, sms = 0;
      SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
      SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
      const int64_t groups = (a.rows + tc::kRows - 1) / tc::kRows;
      const int64_t wave = static_cast<int64_t>(sms > 0 ? sms : 1) * tc::kMinBlocks;
      SSMKIT_RETURN_IF_ERROR(set_smem(fft_conv_tc_kernel<T>, tc::kSmem));
      conv_args b = a;
      const int64_t per_h = a.rows / a.H;
      b.per_h = a.row0 == 0 && per_h * a.H == a.rows ? static_cast<uint32_t>(per_h) : 0u;
      return launch_after_filters(fft_conv_tc_kernel<T>, groups < wave ? groups : wave, tc::kThreads,
                                  tc::kSmem, b, stream);
    }
  }
  if constexpr ((kLogM == 12 || kLogM == 14) && T == SSMKIT_DTYPE_BF16) {
    constexpr int kR = 1 << (kLogM - 10);
    using P = tcr_plan<kR>;
    int dev = 0, sms = 0, smem = 0;
    SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    // The block's buffer (m = 16384: 154 KB).
    if (fft_tc_wanted(a) && static_cast<size_t>(smem) >= P::kSmem) {
      // A row a block; as many blocks as run at once, each taking rows grid-stride.
      const int64_t wave = static_cast<int64_t>(sms > 0 ? sms : 1) * P::kMinBlocks;
      SSMKIT_RETURN_IF_ERROR(set_smem(fft_conv_tcr_kernel<T, kR>, P::kSmem));
      return launch_after_filters(fft_conv_tcr_kernel<T, kR>, a.rows < wave ? a.rows : wave, P::kThreads,
                                  P::kSmem, a, stream);
    }
  }
  if constexpr (kLogM == 10) {
    if (fft_wide_wanted(T)) {
      const int64_t blocks = (a.rows + wide_plan::kRows - 1) / wide_plan::kRows;
      SSMKIT_RETURN_IF_ERROR(set_smem(fft_conv_wide_kernel<T>, kWideSmem));
      return launch_after_filters(fft_conv_wide_kernel<T>, blocks, wide_plan::kThreads, kWideSmem, a, stream);
    }
  }
  if constexpr (kLogM == kMaxFusedLogM) {
    SSMKIT_RETURN_IF_ERROR(set_smem(fft_conv_split_kernel<T>, kSplitSmem));
    // One block an SM (137 KB of shared memory), each taking rows grid-stride and fetching its next
    // row ahead into L2.
    int dev = 0, sms = 0;
    SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t blocks = a.rows < sms ? a.rows : (sms > 0 ? sms : 1);
    return launch_after_filters(fft_conv_split_kernel<T>, blocks, split_plan::kThreadsPerRow, kSplitSmem, a,
                                stream);
  } else {
    using Plan = conv_plan<kLogM>;
    int64_t blocks = (a.rows + Plan::kRows - 1) / Plan::kRows;
    if constexpr (Plan::kRows == 1) {
      // As many blocks as run at once (kMinBlocks an SM, by registers), each taking rows grid-stride
      // and fetching its next one ahead.
      int dev = 0, sms = 0;
      SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
      SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
      const int64_t wave = static_cast<int64_t>(sms > 0 ? sms : 1) * Plan::kMinBlocks;
      blocks = blocks < wave ? blocks : wave;
    }
    SSMKIT_RETURN_IF_ERROR(set_smem(fft_conv_fused_kernel<T, kLogM>, conv_smem<kLogM>));
    return launch_after_filters(fft_conv_fused_kernel<T, kLogM>, blocks, Plan::kThreads, conv_smem<kLogM>, a,
                                stream);
  }
}

// Calls fn(std::integral_constant<int, log_m>) for the fused lengths, log_m in [5, 14].
template <class Fn>
status with_log_m(int log_m, Fn&& fn) {
  switch (log_m) {
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    case 9: return fn(std::integral_constant<int, 9>{});
    case 10: return fn(std::integral_constant<int, 10>{});
    case 11: return fn(std::integral_constant<int, 11>{});
    case 12: return fn(std::integral_constant<int, 12>{});
    case 13: return fn(std::integral_constant<int, 13>{});
    case 14: return fn(std::integral_constant<int, 14>{});
    default: return make_status(status_code::internal, "fftConv: no fused kernel for m = 2^%d", log_m);
  }
}

constexpr int kMaxFourStepLogM = kColLogM + 12;  // rows of up to 4096 points: 512 threads of 128 registers

// Calls fn(std::integral_constant<int, log_m2>) for the four-step rows, log_m2 in [7, 12].
template <class Fn>
status with_row_log_m(int log_m2, Fn&& fn) {
  switch (log_m2) {
    case 7: return fn(std::integral_constant<int, 7>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    case 9: return fn(std::integral_constant<int, 9>{});
    case 10: return fn(std::integral_constant<int, 10>{});
    case 11: return fn(std::integral_constant<int, 11>{});
    case 12: return fn(std::integral_constant<int, 12>{});
    default: return make_status(status_code::internal, "fftConv: no four-step rows of 2^%d points", log_m2);
  }
}

template <int kLogM2, bool kConv>
status launch_four_step_rows(float2* scratch, int64_t rows, const float2* spectrum, float2* spectrum_out,
                             int64_t row0, int64_t H, int64_t segments, float scale, cudaStream_t stream) {
  using R = four_step_rows<kLogM2>;
  SSMKIT_RETURN_IF_ERROR(set_smem(four_step_rows_kernel<kLogM2, kConv>, R::kSmem));
  const int64_t blocks = (rows * (four_step_cols::Plan::kM / 2) + R::kPairs - 1) / R::kPairs;
  four_step_rows_kernel<kLogM2, kConv><<<grid_for(blocks, 1), R::kThreads, R::kSmem, stream>>>(
      scratch, rows, spectrum, spectrum_out, row0, H, segments, scale);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}
// Complex values in one multi-pass scratch buffer (512 MiB); longer problems go in chunks of rows.
constexpr int64_t kMultipassValues = int64_t{1} << 26;

// The radices of the multi-pass path for m = 2^log_m >= 2^14: 16, the remainder, 16, ..., 16.
int multipass_radices(int log_m, int* radix) {
  int count = 0;
  const int rest = log_m - 8;  // bits between the first and the last pass
  radix[count++] = 16;
  if (rest % 4 != 0) radix[count++] = 1 << (rest % 4);
  for (int i = 0; i < rest / 4; ++i) radix[count++] = 16;
  radix[count++] = 16;
  return count;
}

template <bool kInv>
status launch_pass(int radix, const pass_args& p, cudaStream_t stream) {
  const unsigned grid = grid_for(p.rows * (p.m / kE), 256);
  switch (radix) {
    case 2: fft_pass_kernel<2, kInv><<<grid, 256, 0, stream>>>(p); break;
    case 4: fft_pass_kernel<4, kInv><<<grid, 256, 0, stream>>>(p); break;
    case 8: fft_pass_kernel<8, kInv><<<grid, 256, 0, stream>>>(p); break;
    case 16: fft_pass_kernel<16, kInv><<<grid, 256, 0, stream>>>(p); break;
    default: return make_status(status_code::internal, "fftConv: no pass of radix %d", radix);
  }
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

// The forward passes between the first and the last of the multi-pass path; returns the buffer that
// holds the result in *cur (buffers 0 and 1 of `bufs`).
status multipass_middle(const int* radix, int passes, int64_t rows, int64_t m, float2* const* bufs, int* cur,
                        bool inverse, cudaStream_t stream) {
  int64_t rprev[32];
  rprev[0] = 1;
  for (int i = 1; i < passes; ++i) rprev[i] = rprev[i - 1] * radix[i - 1];
  for (int step = 1; step < passes - 1; ++step) {
    const int i = inverse ? passes - 1 - step : step;
    const pass_args p{bufs[*cur], bufs[1 - *cur], rows, m, rprev[i]};
    SSMKIT_RETURN_IF_ERROR(inverse ? launch_pass<true>(radix[i], p, stream)
                                   : launch_pass<false>(radix[i], p, stream));
    *cur = 1 - *cur;
  }
  return ok_status();
}

// Whether the fused kernels of m = 2^log_m fit the device's shared memory: m = 16384 takes 137 KB a
// block, more than the 99 KB of sm_86 / sm_89 parts, which run that size by the multi-pass path.
status fused_fits(int log_m, bool* fits) {
  *fits = log_m < kMaxFusedLogM;
  if (log_m == kMaxFusedLogM) {
    int dev = 0, bytes = 0;
    SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    static_assert(kSplitSmem >= kSplitFilterSmem, "the split filter kernel needs no more");
    *fits = static_cast<size_t>(bytes) >= kSplitSmem;
  }
  return ok_status();
}

// The filters' spectra into f.spectrum (H, m + 1), for any m >= 32: natural order for the fused and
// the multi-pass paths, transposed for the four-step path (the one convolve() takes for this m).
status filter_spectra(filter_args f, int64_t H, cudaStream_t stream) {
  const int log_m = log2_exact(f.m);
  bool fused = false;
  SSMKIT_RETURN_IF_ERROR(fused_fits(log_m, &fused));
  if (fused) {
    f.rows = H;
    f.h0 = 0;
    return with_log_m(log_m, [&](auto lm) {
      return f.bidirectional ? launch_filter_fused<decltype(lm)::value, true>(f, stream)
                             : launch_filter_fused<decltype(lm)::value, false>(f, stream);
    });
  }
  if (log_m > kMaxFusedLogM && log_m <= kMaxFourStepLogM) {
    using C = four_step_cols;
    const int64_t m2 = f.m >> kColLogM;
    const int64_t chunk_rows = H < kMultipassValues / f.m ? H : kMultipassValues / f.m;
    scratch buf(stream);
    SSMKIT_RETURN_IF_ERROR(buf.alloc(static_cast<size_t>(chunk_rows * f.m) * sizeof(float2)));
    SSMKIT_RETURN_IF_ERROR(set_smem(four_step_filter_columns_kernel, C::kSmem));
    const float scale = static_cast<float>(1.0 / (8.0 * static_cast<double>(f.m)));
    for (int64_t h0 = 0; h0 < H; h0 += chunk_rows) {
      f.h0 = h0;
      f.rows = H - h0 < chunk_rows ? H - h0 : chunk_rows;
      four_step_filter_columns_kernel<<<grid_for(f.rows * m2 / C::kCols, 1), C::kThreads, C::kSmem, stream>>>(
          f, buf.as<float2>(), m2);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      SSMKIT_RETURN_IF_ERROR(with_row_log_m(log_m - kColLogM, [&](auto lm) {
        return launch_four_step_rows<decltype(lm)::value, false>(buf.as<float2>(), f.rows, f.spectrum,
                                                                 f.spectrum, h0, H, 1, scale, stream);
      }));
    }
    return ok_status();
  }
  int radix[32];
  const int passes = multipass_radices(log_m, radix);
  const int64_t chunk = kMultipassValues / f.m > 0 ? kMultipassValues / f.m : 1;
  const int64_t chunk_rows = H < chunk ? H : chunk;
  scratch buf(stream);
  SSMKIT_RETURN_IF_ERROR(buf.alloc(2 * static_cast<size_t>(chunk_rows * f.m) * sizeof(float2)));
  float2* bufs[2] = {buf.as<float2>(), buf.as<float2>() + chunk_rows * f.m};
  for (int64_t h0 = 0; h0 < H; h0 += chunk_rows) {
    f.h0 = h0;
    f.rows = H - h0 < chunk_rows ? H - h0 : chunk_rows;
    const unsigned grid = grid_for(f.rows * (f.m / kE), 256);
    filter_first_pass_kernel<<<grid, 256, 0, stream>>>(f, bufs[0]);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    int cur = 0;
    SSMKIT_RETURN_IF_ERROR(multipass_middle(radix, passes, f.rows, f.m, bufs, &cur, false, stream));
    filter_spectrum_last_kernel<<<grid, 256, 0, stream>>>(f, bufs[cur]);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
  }
  return ok_status();
}

// y for every row of `a` (a.m set, a.spectrum filled by filter_spectra): fused, four-step or multi-pass.
template <ssmkit_dtype T>
status convolve(conv_args a, cudaStream_t stream) {
  const int log_m = log2_exact(a.m);
  bool fused = false;
  SSMKIT_RETURN_IF_ERROR(fused_fits(log_m, &fused));
  if (fused) {
    a.row0 = 0;
    return with_log_m(log_m, [&](auto lm) { return launch_conv_fused<T, decltype(lm)::value>(a, stream); });
  }
  const int64_t total_rows = a.rows;
  if (log_m > kMaxFusedLogM && log_m <= kMaxFourStepLogM) {
    using C = four_step_cols;
    const int64_t m2 = a.m >> kColLogM;
    const int64_t chunk_rows = total_rows < kMultipassValues / a.m ? total_rows : kMultipassValues / a.m;
    scratch buf(stream);
    SSMKIT_RETURN_IF_ERROR(buf.alloc(static_cast<size_t>(chunk_rows * a.m) * sizeof(float2)));
    SSMKIT_RETURN_IF_ERROR(set_smem(four_step_conv_columns_kernel<T>, C::kSmem));
    SSMKIT_RETURN_IF_ERROR(set_smem(four_step_conv_columns_inverse_kernel<T>, C::kSmem));
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
      a.row0 = row0;
      a.rows = total_rows - row0 < chunk_rows ? total_rows - row0 : chunk_rows;
      const unsigned grid = grid_for(a.rows * m2 / C::kCols, 1);
      four_step_conv_columns_kernel<T><<<grid, C::kThreads, C::kSmem, stream>>>(a, buf.as<float2>(), m2);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      SSMKIT_RETURN_IF_ERROR(with_row_log_m(log_m - kColLogM, [&](auto lm) {
        return launch_four_step_rows<decltype(lm)::value, true>(buf.as<float2>(), a.rows, a.spectrum, nullptr,
                                                                row0, a.H, a.segments, 1.0f, stream);
      }));
      four_step_conv_columns_inverse_kernel<T>
          <<<grid, C::kThreads, C::kSmem, stream>>>(a, buf.as<float2>(), m2);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
    }
    return ok_status();
  }
  int radix[32];
  const int passes = multipass_radices(log_m, radix);
  const int64_t chunk = kMultipassValues / a.m > 0 ? kMultipassValues / a.m : 1;
  const int64_t chunk_rows = total_rows < chunk ? total_rows : chunk;
  scratch buf(stream);
  SSMKIT_RETURN_IF_ERROR(buf.alloc(2 * static_cast<size_t>(chunk_rows * a.m) * sizeof(float2)));
  float2* bufs[2] = {buf.as<float2>(), buf.as<float2>() + chunk_rows * a.m};
  for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
    a.row0 = row0;
    a.rows = total_rows - row0 < chunk_rows ? total_rows - row0 : chunk_rows;
    const unsigned grid = grid_for(a.rows * (a.m / kE), 256);
    fft_conv_first_pass_kernel<T><<<grid, 256, 0, stream>>>(a, bufs[0]);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    int cur = 0;
    SSMKIT_RETURN_IF_ERROR(multipass_middle(radix, passes, a.rows, a.m, bufs, &cur, false, stream));
    fft_conv_product_kernel<<<grid, 256, 0, stream>>>(bufs[cur], a.spectrum, a.rows, a.row0, a.m, a.H,
                                                      a.segments);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    SSMKIT_RETURN_IF_ERROR(multipass_middle(radix, passes, a.rows, a.m, bufs, &cur, true, stream));
    fft_conv_last_pass_kernel<T><<<grid, 256, 0, stream>>>(a, bufs[cur]);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
  }
  return ok_status();
}

// The spectra of H filters for the tensor-core conv kernels of m = 1024 kR (fft_conv_tcr_filter_kernel),
// where the part's shared memory holds its block (made: whether it ran).
template <int kR>
status launch_tcr_filters(filter_args f, int64_t H, cudaStream_t stream, bool* made) {
  using P = tcrf_plan<kR>;
  int dev = 0, sms = 0, smem = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  *made = static_cast<size_t>(smem) >= P::kSmem;
  if (!*made) return ok_status();
  f.rows = H;
  f.h0 = 0;
  auto* kernel =
      f.bidirectional ? fft_conv_tcr_filter_kernel<kR, true> : fft_conv_tcr_filter_kernel<kR, false>;
  SSMKIT_RETURN_IF_ERROR(set_smem(kernel, P::kSmem));
  // One block an SM (its shared memory), each taking filters grid-stride and fetching its next one
  // ahead into L2.
  const int64_t wave = sms > 0 ? sms : 1;
  kernel<<<grid_for(H < wave ? H : wave, 1), P::kThreads, P::kSmem, stream>>>(f);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

// Whether rows of m = 2^15 and 2^16 take the cluster kernel (fft_conv_cluster_kernel) where the device
// runs it: the default, SSMKIT_CUDA_FFT_CLUSTER=0 for the four-step path (read at every call, so that one
// process can compare both).
bool fft_cluster_wanted() {
  return env_flag("SSMKIT_CUDA_FFT_CLUSTER", true);
}

// The cluster kernel for every row of `a` (one segment a row, row0 = 0) with its filters f, where its code
// is sm_90's and the device holds its clusters (ran: whether it was launched). As many clusters as run at
// once, each taking filters cluster-stride.
template <ssmkit_dtype T, int kLogM, bool kBidir>
status launch_conv_cluster(const conv_args& a, const filter_args& f, int64_t batch, cudaStream_t stream,
                           bool* ran) {
  using CP = cluster_plan<kLogM>;
  auto* kernel = fft_conv_cluster_kernel<T, kLogM, kBidir>;
  *ran = false;
  bool sm90 = false;
  SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &sm90));
  int dev = 0, smem = 0;
  SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
  SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (!sm90 || static_cast<size_t>(smem) < CP::kSmem) return ok_status();
  SSMKIT_RETURN_IF_ERROR(set_smem(kernel, CP::kSmem));
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = kClusterBlocks;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(kClusterBlocks * (a.H < 1024 ? a.H : 1024)));
  cfg.blockDim = dim3(CP::kThreads);
  cfg.dynamicSmemBytes = CP::kSmem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  SSMKIT_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg));
  if (clusters < 1) return ok_status();
  const int64_t n = a.H < clusters ? a.H : clusters;
  cfg.gridDim = dim3(static_cast<unsigned>(kClusterBlocks * n));
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a, f, batch));
  *ran = true;
  return ok_status();
}

// The filters of f (H of them, each row of `a` reading filter h), then y for every row of `a`: bfloat16
// rows of m = 1024 on tensor cores (fft_tc_wanted) take their product's coefficients straight from the
// filters (fft_conv_tc_filter_kernel, chained to the conv kernel by programmatic dependent launch);
// every other row the spectra (filter_spectra), then convolve.
template <ssmkit_dtype T>
status filters_then_convolve(conv_args a, filter_args f, int64_t H, cudaStream_t stream) {
  if constexpr (T == SSMKIT_DTYPE_BF16) {
    if (a.m == tc::kM && fft_tc_wanted(a)) {
      scratch coef(stream);  // freed in stream order after the conv kernel
      SSMKIT_RETURN_IF_ERROR(coef.alloc(static_cast<size_t>(H * tc::kM) * sizeof(float4) +
                                        static_cast<size_t>(H) * sizeof(float)));
      float* cmax = reinterpret_cast<float*>(coef.as<float4>() + H * tc::kM);
      f.rows = H;
      f.h0 = 0;
      auto* kernel = f.bidirectional ? fft_conv_tc_filter_kernel<true> : fft_conv_tc_filter_kernel<false>;
      // A filter a warp, the blocks as few as put every SM's filters in one block (the tables' cost).
      int dev = 0, sms = 0;
      SSMKIT_CUDA_CHECK(cudaGetDevice(&dev));
      SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
      const int64_t per_sm = (H + (sms > 0 ? sms : 1) - 1) / (sms > 0 ? sms : 1);
      const int warps = static_cast<int>(per_sm < tcf::kMaxWarps ? per_sm : tcf::kMaxWarps);
      SSMKIT_RETURN_IF_ERROR(set_smem(kernel, tcf::smem(tcf::kMaxWarps)));
      SSMKIT_RETURN_IF_ERROR(launch_after_wait(kernel, dim3(grid_for((H + warps - 1) / warps, 1)),
                                               dim3(static_cast<unsigned>(32 * warps)), tcf::smem(warps),
                                               stream, f, coef.as<float4>(), cmax));
      a.coef = coef.as<const float4>();
      a.cmax = cmax;
      return convolve<T>(a, stream);
    }
  }
  if ((a.m == 32768 || a.m == 65536) && a.segments == 1 && a.row0 == 0 && a.rows % H == 0 &&
      fft_cluster_wanted()) {
    bool ran = false;
    f.rows = H;
    f.h0 = 0;
    const int64_t batch = a.rows / H;
    auto* launch =
        a.m == 32768
            ? (f.bidirectional ? launch_conv_cluster<T, 15, true> : launch_conv_cluster<T, 15, false>)
            : (f.bidirectional ? launch_conv_cluster<T, 16, true> : launch_conv_cluster<T, 16, false>);
    SSMKIT_RETURN_IF_ERROR(launch(a, f, batch, stream, &ran));
    if (ran) return ok_status();
  }
  scratch spectrum(stream);
  SSMKIT_RETURN_IF_ERROR(spectrum.alloc(static_cast<size_t>(H * (f.m + 1)) * sizeof(float2)));
  f.spectrum = spectrum.as<float2>();
  a.spectrum = f.spectrum;
  bool made = false;
  if constexpr (T == SSMKIT_DTYPE_BF16) {
    // m = 16384 only: at 4096 the tensor-core filter kernel measured slower than the float32 one.
    if (a.m == 16384 && fft_tc_wanted(a)) SSMKIT_RETURN_IF_ERROR(launch_tcr_filters<16>(f, H, stream, &made));
  }
  if (!made) SSMKIT_RETURN_IF_ERROR(filter_spectra(f, H, stream));
  return convolve<T>(a, stream);
}

status check_f32(const tensor_view& t, const char* op, const char* name) {
  if (t.present() && t.dtype != SSMKIT_DTYPE_F32) {
    return make_status(status_code::dtype, "%s: %s must be float32, got %s", op, name, dtype_name(t.dtype));
  }
  return ok_status();
}

status check_like(const tensor_view& t, const tensor_view& u, const char* op, const char* name) {
  if (t.present() && t.dtype != u.dtype) {
    return make_status(status_code::dtype, "%s: %s must have u's dtype %s, got %s", op, name,
                       dtype_name(u.dtype), dtype_name(t.dtype));
  }
  return ok_status();
}

}  // namespace

status fft_conv_cuda(const fft_conv_params& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  SSMKIT_CUDA_CHECK(cudaSetDevice(p.u.device));  // the stream's device
  SSMKIT_RETURN_IF_ERROR(check_f32(p.k, "fftConv", "k"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.D, "fftConv", "D"));
  SSMKIT_RETURN_IF_ERROR(check_like(p.pregate, p.u, "fftConv", "pregate"));
  SSMKIT_RETURN_IF_ERROR(check_like(p.postgate, p.u, "fftConv", "postgate"));
  SSMKIT_RETURN_IF_ERROR(check_like(p.out, p.u, "fftConv", "out"));
  if (p.Lk < 1 || p.Lk > p.L) {
    return make_status(status_code::shape, "fftConv: k: filter length must be in [1, L = %lld], got %lld",
                       static_cast<long long>(p.L), static_cast<long long>(p.Lk));
  }
  const int64_t rows = p.batch * p.H;
  if (rows == 0 || p.L == 0) return ok_status();
  conv_args a{};
  a.u = p.u.data;
  a.pregate = p.pregate.data;
  a.postgate = p.postgate.data;
  a.extra = nullptr;
  a.out = p.out.data;
  a.rows = rows;
  a.row0 = 0;
  a.H = p.H;
  a.L = p.L;
  a.seg_len = p.L;
  a.segments = 1;
  a.gelu = p.gelu;
  a.vec = p.L % 2 == 0;
  filter_args f{};
  f.k = p.k.ptr<const float>();
  f.D = p.D.present() ? p.D.ptr<const float>() : nullptr;
  f.Lk = p.Lk;
  f.bidirectional = p.bidirectional;
  const int64_t n = next_pow2(p.L + p.Lk - 1);
  return SSMKIT_FLOAT_SWITCH(p.u.dtype, "fftConv", [&] {
    if (n <= 32) {
      fft_conv_direct_kernel<kDType><<<grid_for(rows * p.L, 256), 256, 0, stream>>>(a, f);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      return ok_status();
    }
    a.m = n / 2;
    f.m = n / 2;
    return filters_then_convolve<kDType>(a, f, p.H, stream);
  });
}

status s4d_kernel_cuda(const s4d_kernel_params& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  SSMKIT_CUDA_CHECK(cudaSetDevice(p.log_dt.device));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.log_dt, "s4dKernel", "logDt"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.A, "s4dKernel", "A"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.C, "s4dKernel", "C"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.k, "s4dKernel", "k"));
  if (p.H == 0 || p.L == 0) return ok_status();
  const int64_t work = p.H * ((p.L + kChunk - 1) / kChunk);
  s4d_kernel_kernel<<<grid_for(work, 128), 128, 0, stream>>>(p.log_dt.ptr<const float>(),
                                                             p.A.ptr<const float>(), p.C.ptr<const float>(),
                                                             p.k.ptr<float>(), p.H, p.N2, p.L);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status ssm_conv_cuda(const ssm_conv_params& p, void* stream_ptr) {
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  SSMKIT_CUDA_CHECK(cudaSetDevice(p.u.device));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.log_dt, "ssmConv", "logDt"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.A, "ssmConv", "A"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.C, "ssmConv", "C"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.D, "ssmConv", "D"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.initial_state, "ssmConv", "initialState"));
  SSMKIT_RETURN_IF_ERROR(check_f32(p.last_state, "ssmConv", "lastState"));
  SSMKIT_RETURN_IF_ERROR(check_like(p.out, p.u, "ssmConv", "out"));
  const int64_t rows = p.batch * p.H;
  if (rows == 0) return ok_status();
  if (p.L == 0) {
    // No samples: the state passes through unchanged.
    if (p.last_state.present()) {
      const size_t bytes = static_cast<size_t>(rows * p.N2 * 2) * sizeof(float);
      if (p.initial_state.present()) {
        SSMKIT_CUDA_CHECK(cudaMemcpyAsync(p.last_state.data, p.initial_state.data, bytes,
                                          cudaMemcpyDeviceToDevice, stream));
      } else {
        SSMKIT_CUDA_CHECK(cudaMemsetAsync(p.last_state.data, 0, bytes, stream));
      }
    }
    return ok_status();
  }
  // Any block length gives the same result; the fused kernel takes blocks of 32..16384 samples.
  int64_t seg_len = p.block_size > 0 ? p.block_size : 2048;
  if (seg_len > p.L) seg_len = p.L;
  if (seg_len < 32) seg_len = 32;
  if (seg_len > 16384) seg_len = 16384;
  const int64_t segments = (p.L + seg_len - 1) / seg_len;
  const int64_t m = next_pow2(2 * seg_len - 1) / 2;
  const bool carry = segments > 1 || p.initial_state.present() || p.last_state.present();
  const bool state_output = segments > 1 || p.initial_state.present();

  scratch kernel(stream), states(stream), extra(stream);
  SSMKIT_RETURN_IF_ERROR(kernel.alloc(static_cast<size_t>(p.H * seg_len) * sizeof(float)));
  const float* log_dt = p.log_dt.ptr<const float>();
  const float* A = p.A.ptr<const float>();
  const float* C = p.C.ptr<const float>();
  s4d_kernel_kernel<<<grid_for(p.H * ((seg_len + kChunk - 1) / kChunk), 128), 128, 0, stream>>>(
      log_dt, A, C, kernel.as<float>(), p.H, p.N2, seg_len);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  filter_args f{};
  f.k = kernel.as<const float>();
  f.D = p.D.present() ? p.D.ptr<const float>() : nullptr;
  f.Lk = seg_len;
  f.m = m;
  f.bidirectional = false;

  return SSMKIT_FLOAT_SWITCH(p.u.dtype, "ssmConv", [&] {
    if (carry && p.N2 > 0) {
      SSMKIT_RETURN_IF_ERROR(states.alloc(static_cast<size_t>(rows * segments * p.N2) * sizeof(float2)));
      ssm_block_state_kernel<kDType><<<grid_for(rows * segments * p.N2, 128), 128, 0, stream>>>(
          p.u.data, log_dt, A, C, states.as<float2>(), rows, p.H, p.L, p.N2, seg_len, segments);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      ssm_state_scan_kernel<<<grid_for(rows * p.N2, 128), 128, 0, stream>>>(
          log_dt, A, C, states.as<float2>(),
          p.initial_state.present() ? p.initial_state.ptr<const float>() : nullptr,
          p.last_state.present() ? p.last_state.ptr<float>() : nullptr, rows, p.H, p.L, p.N2, seg_len,
          segments);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
      if (state_output) {
        SSMKIT_RETURN_IF_ERROR(extra.alloc(static_cast<size_t>(rows * p.L) * sizeof(float)));
        const int64_t chunks = (seg_len + kChunk - 1) / kChunk;
        ssm_state_output_kernel<<<grid_for(rows * segments * chunks, 128), 128, 0, stream>>>(
            log_dt, A, C, states.as<const float2>(), extra.as<float>(), rows, p.H, p.L, p.N2, seg_len,
            segments);
        SSMKIT_CUDA_CHECK(cudaGetLastError());
      }
    } else if (p.last_state.present()) {
      SSMKIT_CUDA_CHECK(cudaMemsetAsync(p.last_state.data, 0,
                                        static_cast<size_t>(rows * p.N2 * 2) * sizeof(float), stream));
    }
    conv_args a{};
    a.u = p.u.data;
    a.pregate = nullptr;
    a.postgate = nullptr;
    a.extra = state_output && p.N2 > 0 ? extra.as<const float>() : nullptr;
    a.out = p.out.data;
    a.rows = rows * segments;
    a.row0 = 0;
    a.H = p.H;
    a.L = p.L;
    a.seg_len = seg_len;
    a.segments = segments;
    a.m = m;
    a.gelu = false;
    a.vec = p.L % 2 == 0 && seg_len % 2 == 0;
    return filters_then_convolve<kDType>(a, f, p.H, stream);
  });
}

}  // namespace ssmkit
