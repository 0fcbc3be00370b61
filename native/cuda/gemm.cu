// CUDA kernels of the quantization family's GEMMs and quantizers: gemmW8A8, gemmW4A8, gemmW4A16,
// quantize, dequantize and packWeights (hadamard's kernel is in quant.cu, and with it quantize's rotated
// rows of 40 p values with one scale a row).
//
// GEMMs (out = x @ w^T with w (n, k), K contiguous, int8 or int4 two per byte, low nibble first, or
// w in pack_weights' layout) have ten paths, chosen per call:
// - pair (one row of W4A16 with 16-bit x, plain or packed weights; W8A8 plain rows up to 16 and packed
//   at one row; W4A8 up to 16 rows, plain or packed, k <= 131071; k a multiple of 128 and groups of a
//   multiple of 128, W4A16's scales in x's dtype; x small enough to
//   stage; at least a block for every other SM; not in a PDL chain, whose decode step keeps the ring and
//   GEMV kernels it was measured with): a block of 32 columns and all of k,
//   its warps splitting k and adding their sums in shared memory (design and measurements at the
//   kernel). SSMKIT_CUDA_PAIR=0 leaves these calls to the paths below.
// - stream (sm_90; plain W8A8 rows 8 to 16, whole 128-k steps, at most three a warp, a block's rows within
//   its shared memory): a block an SM requests all of its columns' rows at once through the bulk copy
//   engine (design and measurements at the kernel). SSMKIT_CUDA_STREAM=0 leaves them to the pair path.
// - group (sm_90; W4A16 rows 1 to 16 with 16-bit x, plain or packed weights, whole 128-k steps and groups
//   of whole steps, where the 64-column groups fill one wave: at least three in four SMs, at most one an
//   SM; taken before the pair path): a block a group and all of k, each warp keeping its next steps in
//   flight through the bulk copy engine (design and measurements at the kernel). SSMKIT_CUDA_GROUP=0
//   leaves them to the pair path and the ring.
// - ring (sm_90; m <= 16 for W4A16 with 16-bit x and packed or whole-chunk plain int4 rows, 2 <= m <= 16
//   for packed W8A8; groups of a multiple of 128; at least a block an SM): tensor cores fed by per-warp
//   cp.async rings, k split over a cluster reduced through distributed shared memory (design and
//   measurements at the kernel). SSMKIT_CUDA_RING=0 leaves these calls to the paths below.
// - gemv (m <= 4, or m <= 16 for packed W8A8 (exact int32 sums); 16-bit x for W4A16; no groups or groups of a
//   multiple of 32 for int4; packed weights, and plain rows of whole 16-byte chunks: k % 16 == 0 for
//   int8, % 32 for int4): CUDA cores, no mma, bound by the weight bytes. One block per 64-column group and
//   k range, 16 threads across the group's 16 column quads and 8 (one row) or 16 (more rows) along k;
//   each thread keeps 4 (one row) or 2 chunks of 4 x 16-byte loads in flight (256 or 128 bytes), issued
//   before x is staged: blocks of 128 threads, 4 an SM at <= 128 registers (32 KiB a block, 128 KiB an
//   SM) for one row, 256 threads, 2 an SM for more. x is staged in shared memory (float32 for W4A16, int8
//   for dp4a) by one round of 16-byte loads where its rows allow; int4 -> float32 by one byte permute into
//   the mantissa of 128.0f and one exact subtraction, then one float32 fma per weight and row; int8
//   weights in dp4a (exact int32). k is split by bytes per SM, not by waves (gemv_splits: the SM with the
//   most blocks sets the time; blocks of at least 8 chunks), and reduced in a fixed order.
//   W4A16 bf16 m = 1, 2560 x 10240, g128 (13.5 MB, 3.2 us at 4.2 TB/s): measured 16.6 us with 480
//   blocks of 256 threads on 396 slots (3 an SM at 80 registers: 1.2 waves), Nsight 15.8 us: 5.66 M warp
//   instructions (1474 a warp, ~7 a weight, 0.45 issued a cycle per scheduler): a thread's fixed work
//   (staging with two integer divisions per load, a 64-bit division per chunk for its group, the lane
//   sums, the partials) was as large as its 1.7 chunks of arithmetic (3.4 instructions a weight). Now
//   the same 480 blocks (3 splits of 27 chunks) are 128 threads, one wave of at most 4 an SM, each thread
//   with all of its 3-4 chunks in flight from the start; staging at one row has no division, the group
//   is a 32-bit division. Expected ~3.6 instructions a weight, ~3 M warp instructions, 7-9 us; measured
//   (Nsight) 13.7 us: 4.9 M warp instructions (2555 a warp, 6.0 a weight: the fixed work and the
//   per-chunk address, scale and loop work are still ~2.6 a weight beside the arithmetic), 128
//   registers, 3.4 warps and 0.44 issued instructions a cycle per scheduler, DRAM 21% of peak: still
//   issue- and latency-bound; the next step is fewer instructions a weight (tensor cores: ~1.75). W8A8 m = 1
//   (26.2 MB, 6.2 us): 14.1 us before, now 4 splits of 40 chunks (640 blocks of 128 threads), expected
//   ~9-10, measured 14.3 (the bench's device time, host-bound in that run: an upper bound); out_proj
//   5120 -> 2560 (6.6 MB, 1.6 us): 10.8 before, expected ~6, measured 11.9 (upper bound). At four rows the
//   fmas make W4A16 issue-bound: ~6.4 instructions per weight, about 10 us at 2560 x 10240 (24.5 measured).
//   W8A8 m = 16 at 2560 x 10240: 64 dp4a and 4 shared loads per 16 weight bytes, 3.6 M warp instructions (3.4
//   us) under 6.2 us of bytes; measured 37.9 us. Plain int8 rows take it up to m = 4 (16 bytes of each of a
//   thread's 4 rows, as plain int4); at m = 16 they measured 41.5 us here against 28.8 us on the skinny path,
//   which keeps them.
// - decode (m <= 64 where the gemv path does not take it; 16-bit x for W4A16; no groups or groups of a
//   multiple of 128 for int4): tensor cores, bound by the weight bytes. It reads packed weights as they are
//   (a GEMV that unpacked them first would move the weight bytes three times), and plain int4 weights whose
//   rows are whole 16-byte chunks (k % 32 == 0) with the same mma sequence, so that packed and plain int4
//   weights give the same bits. Each warp owns a 64-column group (8 n8 tiles) and streams it with 16-byte
//   loads, 8 KiB in flight per warp and 3 blocks of 4 warps per SM (2 with groups), 64 to 96 KiB per SM; x is
//   read straight from global memory (L1 serves the block's four warps); a unit (128 k of int4) lies in one
//   group, and its group scales are loaded once, at its start, and applied once, at its end (16 loads and
//   32 fmas a lane per unit, where they were per 32-k round); k is split until the grid fills the SMs, with
//   the deterministic reduction below. Expected on the H200 (4.2 TB/s): W4A16 m = 16, 8192 x 8192 moves
//   34.6 MB, 8.2 us, with its int4 decode (about 8 register ops per 8 weights) and mma work about 2 us
//   each, overlapped. Measured on the H200: 43.9 us (m = 1, before the gemv path) and 104.8 us (m = 16),
//   at up to 232 registers, 1 to 2 blocks of 4 warps per SM; of that, the last block of each of the 32
//   column tiles summed 8 splits x 32 outputs a thread four loads at a time, then loaded the output's bias
//   (~96 dependent L2 round trips, 15-50 us), now 8 rounds of 32 loads (sum_splits, 1-4 us); with the
//   scales once per unit, expected 30-50 us, the rest the main loop's latency at 8 warps per SM (its 243
//   to 252 registers with groups allow 2 blocks of 4 warps). SSMKIT_CUDA_GEMV=0 sends m <= 4 (16 for
//   W8A8) here instead of the gemv path, for comparison. Layout and fragment mapping at the kernel.
// - skinny (m <= 64, plain int8 weights of W8A8 that the gemv path does not take, and the int4 shapes the
//   decode path does not take): bound by the weight bytes. Blocks of 8 warps own 128 output columns and a
//   range of k; each warp owns 16 columns (two n8 tiles) and streams their weights straight
//   from global memory into registers as the B operand of mma.sync, 16 bytes per lane and four k-steps in
//   flight (a lane holds 4 x 2 x 16 bytes of weights and 2 x 4 accumulators). int8 weights go to the
//   int8 m16n8k32 mma; for W4A16, int4 become exact f16/bf16 integers by a magic-number trick and go to
//   m16n8k16. The activations of up to 16 rows (one m16 tile; rows past m are zeros; more rows take
//   more m slices of the grid) sit in shared memory, permuted when staged so that each lane's A fragment
//   is one 16-byte load. K is split across blocks until there are about four blocks per SM; the partial
//   sums go to a workspace and the last block of each column tile adds them in split order
//   (deterministic) and runs the epilogue.
// - tiled (m > 64): bound by the tensor cores. 128 x 256 block tiles of 8 warps (64 x 64 each, 64
//   accumulators per thread; with per-group scales 128 x 128 and 64 x 32), k-steps of 64 through a
//   4-stage cp.async pipeline, fragments read with plain 16/8-byte shared loads instead of ldmatrix (the
//   k order inside an mma is free as long as A and B agree, so each lane takes 16 consecutive k of one
//   row), int4 decoded in registers, and the dequant (a_scale[m] * w_scale[n] + bias, cast to out's
//   dtype) fused into the epilogue from registers.
// - wgmma (sm_90 devices, W8A8 and W4A8 without groups, m > 64, k % 16 == 0 (int8) or % 32 (int4)): the
//   tiled path on Hopper's asynchronous warpgroup MMA, warp-specialized and persistent. 128 x 256 block
//   tiles, k-tiles of 128 bytes through 4 shared-memory stages in the 128-byte swizzle that wgmma reads
//   (m64n256k32 s8 x s8 -> s32, both operands from shared memory), handed over by mbarriers; one block of
//   three warpgroups an SM walks the tiles in the grouped raster: a producer warpgroup (the copy engine
//   for A and int8 B from host-encoded tensor maps, zero-filling every tail; for W4A8 its 128 threads
//   load the int4 weights, widen them in registers and store them swizzled, so that W4A8 reads half
//   the weight bytes of W8A8 and needs no widened copy) and two consumer warpgroups of 64 x 256 (128
//   int32 accumulators a thread, one wgmma group kept in flight) that run the tiled path's epilogue
//   while the producer loads the next tile. The kernel this replaced (all 256 threads issuing cp.async,
//   a block barrier per k-tile, W4A8 widened to int8 by a separate pass first) measured 266 us at 2048 x
//   2560 x 10240 and 2082 us at 8192^3; W4A8 294.5 us.
//   Expected on the H200: 2048 x 2560 x 10240 is 107 GOP, 54 us at the 1979 TOPS dense peak; 640 tiles
//   on 132 SMs are 5 rounds of 20 k-tiles of 1024 tensor-core clocks (58 us at peak). A block needs 48
//   KiB from L2 per k-tile, 48 B/clock/SM at peak (about 11 TB/s over 132 SMs), so L2 was expected to
//   bound it near 60-70% of peak: 95-120 us; 8192^3 850-1000 us; W4A8 (32 KiB a k-tile) 80-100 us.
//   First measured (H200): 188 us, 1293 us at 8192^3 (850 TOPS), W4A8 268 us. Nsight (201 us): L2 22%
//   busy, tensor pipe 26%, 380k cycles for 5 tiles an SM, 76k a tile against 20k of wgmmas: the time
//   went to the epilogue, not to loads. Each thread loaded 128 column scales and biases from global
//   memory behind dtype branches, most of them L2 round trips in series (20-30k cycles a tile, the
//   tensor cores idle meanwhile). Now each consumer thread loads its share of the tile's factors (2
//   column scales, 2 biases, a row scale) before the k-loop, stages them in shared memory after it (one
//   named barrier a warpgroup, two buffers by tile parity), and the epilogue reads them from there, its
//   stores specialized on the output dtype (expected 85-110 us). The W4A8 producer had copied its next
//   k-tile's registers into the current ones, which waited for the loads every k-tile; it now
//   alternates two register buffers. Measured (H200): 102.0 us (1053 TOPS; float32 out 95.3 us;
//   torch._int_mm 181 us with int32 out), 8192^3 821 us (1339 TOPS; torch._int_mm 1227 us), W4A8 184.7
//   us and 1708 us at 8192^3: still slower than W8A8 (about 3500 cycles a k-tile against 1900). Its
//   producer keeps only the next k-tile's loads in flight while it widens one (64 of its 88 registers),
//   so each k-tile likely waits most of a load latency from L2 or memory (not profiled).
//   The ring producer (the default; SSMKIT_CUDA_W4A8_RING=0 keeps the register producer above) takes the
//   load latency off the widening:
//   the copy engine brings each k-tile's int4 box (256 rows x 64 bytes, 16 KiB, unswizzled) into a ring
//   of 4 raw stages up to 3 k-tiles ahead, and the 128 producer threads widen from there into the
//   swizzled int8 stage (3 of them, to make room: 213.6 KiB in all). Counted a k-tile: 32 KiB from L2
//   (A 16 + int4 16, against 48 for W8A8); a producer thread 8 shared loads of 16 bytes, 8 widenings of
//   about 40 integer instructions and 16 shared stores (about 370 instructions, one warp a scheduler);
//   shared-memory traffic 160 KiB (copies 32, widening 16 + 32, wgmma 16 + 2 x 32) against W8A8's 128
//   KiB, 1280 clocks at 128 B/clock against the wgmmas' 1024. So it should no longer wait for memory
//   but be bound by shared-memory bandwidth next to the tensor pipe: expected 105-125 us at 2048 x 2560
//   x 10240 (W8A8's 1790 cycles a k-tile up to 1.25 times that), from 184.7; faster than W8A8 only
//   where W8A8 waits for its weight bytes, since wgmma reads B from shared memory as int8 either way.
//   Measured (H200, f0a329f): 144.8 us at 2048 x 2560 x 10240 and 1208 us at 8192^3, against 184.5 and
//   1723 us for the register producer and 104.2 / 882.2 us for W8A8 in the same session: faster than
//   before, slower than predicted, still slower than W8A8 (not profiled).
//   Clusters of two blocks along m sharing each weight panel by multicast (each block loading its A and
//   half of the panel, 32 KiB from L2 per block and k-tile instead of 48) measured slower: 152.9 us at
//   2048 x 2560 x 10240 and 1296 us at 8192^3 (the two blocks wait for each other every k-tile), and are
//   not kept. SSMKIT_CUDA_WGMMA=0 takes the mma.sync
//   tiled path.
//   W4A8 now takes the product transposed by default (gemm_w4s_kernel; SSMKIT_CUDA_W4A8_SWAP=0 keeps the
//   kernels above): the weights are wgmma's A operand, read as int4 from shared memory and widened in the
//   consumers' registers, and x is the B operand. Shared-memory traffic a k-tile of the same volume: 112
//   KiB (copies 40, int4 reads 8, x reads by the wgmmas 64) against the ring's 160 and W8A8's 128.
//   Predicted faster than W8A8 if shared memory bound both; measured (H200) 101.4-102.9 us at 2048 x 2560 x
//   10240 and 844-846 us at 8192^3, against 118.4-118.8 and 1060 for the ring and 86.8-87.1 / 733-779 for
//   W8A8 in the same session: so shared-memory bandwidth was part of the ring's cost, and is not what
//   holds W8A8. That form widened each k-tile's fragments only after the warpgroup's previous wgmmas had
//   finished (a wgmma reads its A registers until it completes); widening the next k-tile's into a second
//   set of registers while they ran took it to 94.1-94.8 us and 758-828 us at 8192^3. Now each warpgroup
//   keeps one k-tile's wgmmas in flight behind the next, as the kernel above does, the fragment sets kept
//   alive until the wait that covers them (SSMKIT_CUDA_W4S_MODE=1 waits for all of them each k-tile), and
//   16-bit outputs leave by stmatrix into a swizzled staging of half a warpgroup's slab and a bulk tensor
//   store that drains while the kernel goes on (SSMKIT_CUDA_W4S_BULK=0 stores them from the threads):
//   84.0-85.0 us at 2048 x 2560 x 10240 against 79.4-87.4 for W8A8 (faster in three paired runs of one
//   machine session, slower in the two of another: at parity, not clearly ahead). Without any epilogue the
//   kernel took 70-72 us there, and without widening (wrong sums, a timing probe) 88 against 89-90: what
//   is left is the epilogue, during which both warpgroups leave the tensor pipe idle. Its weights are now
//   widened to 16 w (s8 x s8, sums shifted right by 4 in the epilogue) instead of w + 8, which needed each
//   x row's sum from a kernel of its own (4.5 us under Nsight) and its staging and subtraction in the
//   epilogue: 143.2 k cycles (81.1 us) against 148.1 k (83.6 + 4.5 us) and W8A8's 147.2 k (84.5 us), one
//   Nsight launch each in one machine session; k <= 131071 (16 x 8 x 128 k in int32), longer rows take
//   the kernels above. At locked base clocks, five rounds alternating the two kernels: 139.8-141.1 k
//   cycles against W8A8's 144.8-145.9 k (0.960-0.969 in every round): faster, no longer at parity.
// - simt (everything else: float32 x for W4A16, k not a multiple of 16 (int8) or 32 (int4), group
//   sizes the fast paths do not take): 64 x 64 tiles, 4 x 4 outputs per thread in float32 / int32, with
//   element-wise, bounds-checked loads. Correct for every shape SPEC allows; not fast.
// Integer products accumulate exactly in int32 on every path, and the epilogue rounds as the CPU kernels
// do (fma(acc * a_scale, w_scale, bias)), so ungrouped W8A8 and W4A8 match the CPU bit for bit. With
// groups, W4A8 sums each group (tiled, simt), k-step (skinny), 128-value unit (decode) or chunk (gemv)
// in int32 and scales it in float32; W4A16 multiplies the exact integer weights by x with float32
// accumulation and scales each k-step's (unit's, chunk's) partial sums by the group scale in float32
// (every group is a whole number of them). Paths sum in different orders, so W4A16 and grouped W4A8 differ
// between paths in the last bits (ungrouped W8A8 and W4A8 do not: their sums are exact); packed and plain
// int4 weights take the same path wherever the plain rows allow it (k % 32 == 0). Packed weights that the
// gemv and decode paths do not take (m > 64, float32 x, other group sizes) are unpacked into the plain layout
// in a stream-ordered temporary (allocated and freed on the stream), then take the plain paths.
//
// Stream capture: every GEMM entry point may be captured into a CUDA graph and the graph launched any
// number of times. Nothing is allocated during capture that the graph does not free: the split-k
// workspace is grown only outside capture (a capture that needs a larger one allocates, zeroes and frees
// its own inside the graph), the tile counters are back at zero after every launch, and the unpacked
// temporary of a packed weight is allocated and freed inside the graph. A graph keeps the workspace's
// address, so outgrown workspaces are never freed. Results do not depend on capture: the same shapes
// take the same paths and splits.
//
// Quantizers work one row (the last dimension) per block; with options.hadamard the row is rotated in
// shared memory in float32 with the same operations in the same order as the CPU kernels, so q and
// scale match the CPU backend bit for bit. Scales per tensor or channel take an amax pass (atomicMax on
// the bit patterns, which order like the non-negative floats they are) into the float32 scale tensor
// itself, a pass that turns amax into the scale, then the quantizing pass.
//
// Assumptions: tensors are contiguous and come from cudaMallocAsync (256-byte aligned bases); the fast
// paths check every row stride they load 16 or 8 bytes at a time; all work of one device is ordered on
// its one stream (the split-k workspace and counters are per device).
#include <cuda.h>  // CUtensorMap and its enums only: the encoder is reached through the runtime
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <utility>

#include "bits.cuh"
#include "cuda_check.cuh"
#include "env.cuh"
#include "pdl.cuh"
#include "quant_math.cuh"
#include "rms.cuh"
#include "ssmkit/quant.h"

namespace ssmkit {
namespace {

constexpr int kMaxDevices = 64;

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// f(0) ... f(N - 1) with compile-time indices: register arrays indexed inside stay in registers even
// where the compiler would not unroll a loop (it keeps some epilogue loops rolled and moves the
// accumulators to local memory).
template <class F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, class F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// ---------------------------------------------------------------------------------------------------
// Device helpers.

// Two consecutive outputs; i must be even and the buffer's base aligned (every dtype's pair is then
// 4- or 8-byte aligned).
__device__ __forceinline__ void store_float2(void* p, ssmkit_dtype dt, int64_t i, float v0, float v1) {
  if (dt == SSMKIT_DTYPE_F16) {
    *reinterpret_cast<__half2*>(static_cast<__half*>(p) + i) = __floats2half2_rn(v0, v1);
  } else if (dt == SSMKIT_DTYPE_BF16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p) + i) = __floats2bfloat162_rn(v0, v1);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(p) + i) = make_float2(v0, v1);
  }
}

// Sign-extends the 4-bit two's complement value in the low nibble of each byte of x (the high nibbles
// are zero): v ^ 8 is the value + 8 in 0..15; adding 120 keeps every byte below 256, and flipping bit 7
// subtracts 128, which leaves value + 8 - 8 in two's complement.
__device__ __forceinline__ uint32_t nibbles_to_s8(uint32_t x) {
  return ((x ^ 0x08080808u) + 0x78787878u) ^ 0x80808080u;
}

// The eight int4 of a word (byte j holds k = 2j in its low nibble, 2j + 1 in its high one) as two words
// of int8: even k (0, 2, 4, 6) and odd k (1, 3, 5, 7).
__device__ __forceinline__ void int4_to_s8_even_odd(uint32_t w, uint32_t& even, uint32_t& odd) {
  even = nibbles_to_s8(w & 0x0f0f0f0fu);
  odd = nibbles_to_s8((w >> 4) & 0x0f0f0f0fu);
}

// The eight int4 of a word as four pairs of exact 16-bit floats, (k0, k4), (k1, k5), (k2, k6), (k3, k7),
// low half first: a nibble v placed in the mantissa of 1024 (f16) or 128 (bf16) with bit 3 flipped is
// base + value + 8, and one fused multiply-add removes base + 8.
template <ssmkit_dtype kX>
__device__ __forceinline__ void int4_to_16bit_pairs(uint32_t w, uint32_t (&p)[4]) {
  constexpr uint32_t kMagic = kX == SSMKIT_DTYPE_F16 ? 0x64086408u : 0x43084308u;  // 1024 + 8, 128 + 8
  constexpr uint32_t kOne = kX == SSMKIT_DTYPE_F16 ? 0x3c003c00u : 0x3f803f80u;    // 1.0
  constexpr uint32_t kNegBase =
      kX == SSMKIT_DTYPE_F16 ? 0xe408e408u : 0xc308c308u;  // -(1024 + 8), -(128 + 8)
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t h = ((w >> (4 * i)) & 0x000f000fu) ^ kMagic;
    if constexpr (kX == SSMKIT_DTYPE_F16) {
      asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(h), "r"(kOne), "r"(kNegBase));
    } else {
      asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(h), "r"(kOne), "r"(kNegBase));
    }
  }
}

// d += a * b, int8 x int8 -> int32, m16n8k32 (A row-major 16 x 32, B column-major 32 x 8).
__device__ __forceinline__ void mma_s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += a * b, f16 or bf16 -> float32, m16n8k16.
template <ssmkit_dtype kX>
__device__ __forceinline__ void mma_16bit(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  if constexpr (kX == SSMKIT_DTYPE_F16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Word i (0..3) of a 16-byte vector.
__device__ __forceinline__ uint32_t word_at(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Element e of eight 16-bit values of dtype kX, as float.
template <ssmkit_dtype kX>
__device__ __forceinline__ float half8_at(const uint4& q, int e) {
  const uint32_t w = word_at(q, e >> 1);
  if constexpr (kX == SSMKIT_DTYPE_F16)
    return __half2float(__ushort_as_half(static_cast<unsigned short>((e & 1) ? w >> 16 : w)));
  return __uint_as_float((e & 1) ? w & 0xffff0000u : w << 16);
}

// A 16-byte global load that skips L1: weights are read once.
__device__ __forceinline__ uint4 ldg_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// 16-byte asynchronous copy to shared memory; when !pred nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;");
}

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending));
}

// ---------------------------------------------------------------------------------------------------
// GEMM arguments shared by every path.

enum gemm_kind : int {
  KIND_W8A8 = 0,   // a int8, w int8
  KIND_W4A8 = 1,   // a int8, w int4
  KIND_W4A16 = 2,  // x float, w int4
};

struct gemm_args {
  const void* a;        // (m, k) int8, or x (m, k) float32 | float16 | bfloat16
  const uint8_t* w;     // (n, w_row_bytes): int8, or int4 two per byte
  const void* a_scale;  // (1) or (m), or null
  const void* w_scale;  // (1) or (n) when groups == 1, else (n, groups)
  const void* bias;     // (n), or null
  void* out;            // (m, n)
  int64_t m, n, k;
  int64_t w_row_bytes;  // k for int8, (k + 1) / 2 for int4
  int64_t group_size;   // k when there is one group
  int64_t groups;       // k / group_size
  ssmkit_dtype a_scale_dt, w_scale_dt, bias_dt, out_dt;
  bool a_scale_per_row, w_scale_per_col;
  bool pdl;           // the ring and GEMV paths' launch: programmatic dependent launch (the params' pdl)
  bool trigger_late;  // with pdl: the next kernel may launch only after this one's wait (gemm_w4a16_cuda)
  // The ring path with one row of 16-bit x, when pre_x is set: x is not read but made by rms_norm from
  // pre_x + pre_res (pre_res optional) and pre_w, and the sum goes to pre_res_out (gemm_w4a16_params'
  // norm_* fields). pre_x has x's dtype (the kernel's kX).
  const void* pre_x;
  const void* pre_res;
  void* pre_res_out;
  const void* pre_w;
  ssmkit_dtype pre_res_dt, pre_res_out_dt, pre_w_dt;
  float pre_eps;
  // The pair path with one row of int8 x (W8A8, W4A8) also folds in the quantizer (pair_prenorm_quant):
  // pre_x of dtype pre_x_dt (16-bit), a_scale a static scale or null (the row's per-token scale).
  ssmkit_dtype pre_x_dt;
  // The ring path with one row, when conv_state is set (gemm_w4a16_params' conv_* fields): output
  // columns [conv_col0, conv_col0 + conv_dim) are also causal_conv1d_update's x for one token (silu),
  // finished in the epilogue: conv_out (conv_dim) gets the conv's output and conv_state (conv_dim, conv_sl)
  // float32 is shifted in place. conv_width <= kConvFoldMax, conv_width - 1 <= conv_sl <= kConvFoldMax.
  float* conv_state;
  const void* conv_w;  // (conv_dim, conv_width)
  const void* conv_b;  // (conv_dim), or null
  void* conv_out;
  ssmkit_dtype conv_w_dt, conv_b_dt, conv_out_dt;
  int64_t conv_col0, conv_dim;
  int conv_width, conv_sl;
};
constexpr int kConvFoldMax = 4;

// The output value from an accumulated one, as the CPU kernels round it: one group (the raw product v)
// gives fma(v * a_scale, w_scale, bias); groups (v = sum of fma(product_g, scale_g, .)) give
// fma(v, a_scale, bias).
template <bool kGrouped>
__device__ __forceinline__ float finish(float v, float as, float ws, float b) {
  if (kGrouped) return __fmaf_rn(v, as, b);
  return __fmaf_rn(__fmul_rn(v, as), ws, b);
}
__device__ __forceinline__ float row_scale(const gemm_args& g, int64_t row) {
  return g.a_scale != nullptr ? load_float(g.a_scale, g.a_scale_dt, g.a_scale_per_row ? row : 0) : 1.0f;
}
__device__ __forceinline__ float col_scale(const gemm_args& g, int64_t col) {
  return load_float(g.w_scale, g.w_scale_dt, g.w_scale_per_col ? col : 0);
}
__device__ __forceinline__ float col_bias(const gemm_args& g, int64_t col) {
  return g.bias != nullptr ? load_float(g.bias, g.bias_dt, col) : 0.0f;
}
// The three operands' loads all go out before any is converted (ld_bits): one round trip, not three.
template <bool kGrouped>
__device__ __forceinline__ float finish_value(const gemm_args& g, float v, int64_t row, int64_t col) {
  const bool has_as = g.a_scale != nullptr, has_b = g.bias != nullptr;
  const uint32_t ab = has_as ? ld_bits(g.a_scale, g.a_scale_dt, g.a_scale_per_row ? row : 0) : 0u;
  const uint32_t wb = kGrouped ? 0u : ld_bits(g.w_scale, g.w_scale_dt, g.w_scale_per_col ? col : 0);
  const uint32_t bb = has_b ? ld_bits(g.bias, g.bias_dt, col) : 0u;
  const float as = has_as ? bits_value(g.a_scale_dt, ab) : 1.0f;
  const float ws = kGrouped ? 1.0f : bits_value(g.w_scale_dt, wb);
  const float b = has_b ? bits_value(g.bias_dt, bb) : 0.0f;
  return finish<kGrouped>(v, as, ws, b);
}

// The scale of column col (< n) in group gi.
__device__ __forceinline__ float group_scale(const gemm_args& g, int64_t col, int64_t gi) {
  return load_float(g.w_scale, g.w_scale_dt, col * g.groups + gi);
}

template <int kKind>
struct kind_traits;
// Weights: bytes per 16 values of k in one row; a lane's 16-byte chunk of weights covers kChunkK values.
template <>
struct kind_traits<KIND_W8A8> {
  static constexpr int kChunkK = 16;
  static constexpr int kXBytes = 1;
  static constexpr bool kIntAcc = true;
};
template <>
struct kind_traits<KIND_W4A8> {
  static constexpr int kChunkK = 32;
  static constexpr int kXBytes = 1;
  static constexpr bool kIntAcc = true;
};
template <>
struct kind_traits<KIND_W4A16> {
  static constexpr int kChunkK = 32;
  static constexpr int kXBytes = 2;
  static constexpr bool kIntAcc = false;
};

// ---------------------------------------------------------------------------------------------------
// Skinny path (m <= 64).
//
// Grid: (column tiles of 128, k splits, m slices of 16). Block: 8 warps; warp w owns columns
// [n0 + 16 w, n0 + 16 w + 16) as two n8 tiles and every k-step of the block's k range. A k-step is what
// one warp-wide load covers: 8 rows (lane / 4) x 4 lanes (lane % 4) x 16 bytes = 64 bytes of each of 8
// weight rows, 64 values of k for int8 and 128 for int4. Lane t's 16 bytes are k values
// [k0 + t * kChunkK, k0 + (t + 1) * kChunkK) of its row; inside the mma, a lane's k slots are mapped to
// those values, and the activations are staged in shared memory permuted the same way:
// - W8A8: 4 words of 4 k; mma i (i = 0, 1) takes words 2i, 2i + 1 as b0, b1, and the same words of x.
// - W4A8: 4 words of 8 k; mma j takes word j's even k as b0 and odd k as b1; x is staged as blocks of
//   8 bytes (x0 x2 x4 x6 | x1 x3 x5 x7), so a lane's 32 bytes are its four (even, odd) pairs.
// - W4A16: 4 words of 8 k; mma 2j takes pairs (k0, k4), (k1, k5) of word j and mma 2j + 1 (k2, k6),
//   (k3, k7); x is staged as blocks of 8 values (x0 x4 x1 x5 x2 x6 x3 x7).

constexpr int kSkinnyWarps = 8;
constexpr int kSkinnyThreads = kSkinnyWarps * 32;
constexpr int kSkinnyTiles = 2;  // n8 tiles per warp
constexpr int kSkinnyBlockN = kSkinnyWarps * kSkinnyTiles * 8;
constexpr int kSkinnyDepth = 4;            // k-steps of weights in flight per warp
constexpr int kSkinnyRows = 16;            // rows of one m slice
constexpr int kSkinnyMaxM = 64;            // larger m takes the tiled path
constexpr int kSkinnyMaxSmem = 48 * 1024;  // staged activations per block

template <int kKind>
struct skinny_layout {
  static constexpr int kStepK = 4 * kind_traits<kKind>::kChunkK;  // 64 or 128
  static constexpr int kXBytes = kind_traits<kKind>::kXBytes;
  // Row stride of the staged activations: 64 mod 128 bytes for W8A8 (a quarter-warp reads 64 bytes of
  // each of two rows), 16 mod 128 for the others (their lanes read 32 bytes apart, and the next row must
  // land on the other 16-byte bank groups).
  static int64_t row_stride(int64_t k_range) {
    const int64_t bytes = (k_range * kXBytes + 127) / 128 * 128;
    return bytes + (kKind == KIND_W8A8 ? 64 : 16);
  }
};

// Position in a staged row of 16-byte unit u. W4A16 lanes read units 4t + j of a 16-unit step; flipping
// bit 1 in the second half of each 16 units puts the four lanes of a quarter-warp on distinct bank groups.
template <int kKind>
__device__ __forceinline__ int64_t skinny_unit(int64_t u) {
  if constexpr (kKind == KIND_W4A16) return u ^ (((u >> 3) & 1) << 1);
  return u;
}

// The last block of a split-k tile: adds the partials (split, m, n) of its `count` outputs in split order
// (0 + p0 + p1 + ..., so that the result does not depend on the run) and writes the finished values;
// where(i, row, col) places output i (false: nothing there). The block runs alone at the end of the
// kernel, so each thread keeps kOuts x kSplits partial loads in flight, with the epilogue's scales and
// bias where kEarlyEpilogue, instead of one: 8 splits of 4096 outputs (m = 16, 256 columns, 128 threads) take
// 8 dependent L2 round trips a thread where the loop over one output's splits (unrolled by 4) and its bias
// took 96.
template <bool kGrouped, int kThreads, int kOuts, int kSplits, bool kEarlyEpilogue, typename acc_t,
          class Where>
__device__ __forceinline__ void sum_splits(const gemm_args& g, const acc_t* part, int splits, int count,
                                           Where&& where) {
  const int64_t plane = g.m * g.n;
  for (int i0 = threadIdx.x; i0 < count; i0 += kOuts * kThreads) {
    int64_t row[kOuts], col[kOuts];
    bool ok[kOuts];
    acc_t sum[kOuts];
    float as[kOuts], ws[kOuts], bias[kOuts];  // the epilogue's operands, loaded with the partials
#pragma unroll
    for (int o = 0; o < kOuts; ++o) {
      row[o] = 0;
      col[o] = 0;
      ok[o] = i0 + o * kThreads < count && where(i0 + o * kThreads, row[o], col[o]);
      sum[o] = 0;
      as[o] = 0.0f;
      ws[o] = 1.0f;
      bias[o] = 0.0f;
      if constexpr (kEarlyEpilogue) {
        as[o] = ok[o] ? row_scale(g, row[o]) : 0.0f;
        ws[o] = ok[o] && !kGrouped ? col_scale(g, col[o]) : 1.0f;
        bias[o] = ok[o] ? col_bias(g, col[o]) : 0.0f;
      }
    }
    for (int sp0 = 0; sp0 < splits; sp0 += kSplits) {
      acc_t v[kOuts][kSplits];
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
#pragma unroll
        for (int s = 0; s < kSplits; ++s) {
          v[o][s] =
              ok[o] && sp0 + s < splits ? __ldcg(&part[(sp0 + s) * plane + row[o] * g.n + col[o]]) : acc_t(0);
        }
      }
#pragma unroll
      for (int o = 0; o < kOuts; ++o) {
#pragma unroll
        for (int s = 0; s < kSplits; ++s) {
          if (sp0 + s < splits) sum[o] += v[o][s];
        }
      }
    }
#pragma unroll
    for (int o = 0; o < kOuts; ++o) {
      if (ok[o]) {
        const float v = kEarlyEpilogue
                            ? finish<kGrouped>(static_cast<float>(sum[o]), as[o], ws[o], bias[o])
                            : finish_value<kGrouped>(g, static_cast<float>(sum[o]), row[o], col[o]);
        store_float(g.out, g.out_dt, row[o] * g.n + col[o], v);
      }
    }
  }
}

// Split k, after a block has stored its partial sums (split, m, n): the last block of the column tile
// to arrive (the tile's counter, reset for the next launch) adds every split's partials in split order,
// so that the result does not depend on the run, and writes the finished outputs of its rows.
// kEarlyEpilogue: see sum_splits (the skinny kernel's spilled 8 bytes with it on sm_80, at 128 registers).
template <bool kGrouped, int kBlockN, int kThreads, bool kEarlyEpilogue, typename acc_t>
__device__ void finish_splits(const gemm_args& g, const acc_t* part, int* counters, int splits, int rows,
                              int64_t m0, int64_t n_block) {
  __threadfence();
  __syncthreads();
  __shared__ bool last_block;
  int* counter = counters + static_cast<int64_t>(blockIdx.z) * gridDim.x + blockIdx.x;
  if (threadIdx.x == 0) {
    const int arrived = atomicAdd(counter, 1);
    last_block = arrived == splits - 1;
    if (last_block) *counter = 0;  // every split has arrived: ready for the next launch
  }
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  sum_splits<kGrouped, kThreads, 4, 8, kEarlyEpilogue>(g, part, splits, rows * kBlockN,
                                                       [&](int i, int64_t& row, int64_t& col) {
                                                         const int r = i / kBlockN;
                                                         row = m0 + r;
                                                         col = n_block + (i - r * kBlockN);
                                                         return col < g.n;
                                                       });
}

template <int kKind, ssmkit_dtype kX, bool kGrouped>
__global__ void __launch_bounds__(kSkinnyThreads, 2)
    gemm_skinny_kernel(gemm_args g, int64_t k_range, int splits, int64_t x_stride, void* partials,
                       int* counters) {
  using layout = skinny_layout<kKind>;
  constexpr int kStepK = layout::kStepK;
  constexpr bool kIntAcc = kind_traits<kKind>::kIntAcc && !kGrouped;
  using acc_t = typename std::conditional<kIntAcc, int, float>::type;
  using tmp_t = typename std::conditional<kind_traits<kKind>::kIntAcc, int, float>::type;
  extern __shared__ __align__(16) uint8_t smem_x[];  // (rows, x_stride) bytes

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int gq = lane >> 2;  // row of the A fragment, column of the B fragment
  const int tq = lane & 3;
  const int split = blockIdx.y;
  const int64_t n_block = static_cast<int64_t>(blockIdx.x) * kSkinnyBlockN;
  const int64_t n_warp = n_block + warp * (kSkinnyTiles * 8);
  const int64_t m0 = static_cast<int64_t>(blockIdx.z) * kSkinnyRows;
  const int rows = static_cast<int>(min64(kSkinnyRows, g.m - m0));
  const int64_t kb = split * k_range;
  const int64_t ke = min64(g.k, kb + k_range);
  const int nsteps = static_cast<int>((ke - kb + kStepK - 1) / kStepK);
  const int64_t wb0 = kKind == KIND_W8A8 ? kb : kb / 2;  // byte of k = kb in a weight row

  // Weight chunk of k-step s, tile j for this lane: zero past n or past the end of the row.
  auto load_w = [&](int s, int j) -> uint4 {
    const int64_t row = n_warp + j * 8 + gq;
    const int64_t byte = wb0 + static_cast<int64_t>(s) * 64 + tq * 16;
    if (s < nsteps && row < g.n && byte < g.w_row_bytes)
      return ldg_stream16(g.w + row * g.w_row_bytes + byte);
    return make_uint4(0, 0, 0, 0);
  };

  uint4 wbuf[kSkinnyDepth][kSkinnyTiles];
#pragma unroll
  for (int d = 0; d < kSkinnyDepth; ++d) {
#pragma unroll
    for (int j = 0; j < kSkinnyTiles; ++j) wbuf[d][j] = load_w(d, j);
  }

  // Stage x rows [m0, m0 + rows), k in [kb, kb + k_range), in blocks of 8 values (zeros past ke).
  {
    const int64_t blocks_per_row = k_range / 8;
    for (int64_t i = threadIdx.x; i < rows * blocks_per_row; i += kSkinnyThreads) {
      const int64_t r = i / blocks_per_row;
      const int64_t b = i - r * blocks_per_row;
      const int64_t k0 = kb + b * 8;
      if constexpr (kKind == KIND_W4A16) {
        uint4 v = make_uint4(0, 0, 0, 0);
        if (k0 < ke)
          v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(g.a) + (m0 + r) * g.k + k0);
        // (x0 x1)(x2 x3)(x4 x5)(x6 x7) -> (x0 x4)(x1 x5)(x2 x6)(x3 x7)
        const uint4 p = make_uint4(__byte_perm(v.x, v.z, 0x5410), __byte_perm(v.x, v.z, 0x7632),
                                   __byte_perm(v.y, v.w, 0x5410), __byte_perm(v.y, v.w, 0x7632));
        *reinterpret_cast<uint4*>(smem_x + r * x_stride + skinny_unit<kKind>(b) * 16) = p;
      } else {
        uint2 v = make_uint2(0, 0);
        if (k0 < ke)
          v = *reinterpret_cast<const uint2*>(static_cast<const int8_t*>(g.a) + (m0 + r) * g.k + k0);
        if constexpr (kKind == KIND_W4A8) {
          v = make_uint2(__byte_perm(v.x, v.y, 0x6420), __byte_perm(v.x, v.y, 0x7531));
        }
        *reinterpret_cast<uint2*>(smem_x + r * x_stride + b * 8) = v;
      }
    }
  }
  __syncthreads();

  acc_t acc[kSkinnyTiles][4];
#pragma unroll
  for (int j = 0; j < kSkinnyTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0;
  }
  const bool row_lo = gq < rows;
  const bool row_hi = gq + 8 < rows;
  const uint8_t* x_lo = smem_x + gq * x_stride;
  const uint8_t* x_hi = smem_x + (gq + 8) * x_stride;

  for (int s0 = 0; s0 < nsteps; s0 += kSkinnyDepth) {
#pragma unroll
    for (int d = 0; d < kSkinnyDepth; ++d) {
      const int s = s0 + d;
      if (s < nsteps) {
        tmp_t tmp[kSkinnyTiles][4];
#pragma unroll
        for (int j = 0; j < kSkinnyTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) tmp[j][e] = 0;
        }
        if constexpr (kKind == KIND_W8A8) {
          const int64_t off = static_cast<int64_t>(s) * 64 + tq * 16;
          const uint4 lo = row_lo ? *reinterpret_cast<const uint4*>(x_lo + off) : make_uint4(0, 0, 0, 0);
          const uint4 hi = row_hi ? *reinterpret_cast<const uint4*>(x_hi + off) : make_uint4(0, 0, 0, 0);
#pragma unroll
          for (int j = 0; j < kSkinnyTiles; ++j) {
            const uint4 w = wbuf[d][j];
            mma_s8(tmp[j], lo.x, hi.x, lo.y, hi.y, w.x, w.y);
            mma_s8(tmp[j], lo.z, hi.z, lo.w, hi.w, w.z, w.w);
          }
        } else if constexpr (kKind == KIND_W4A8) {
          const int64_t off = static_cast<int64_t>(s) * 128 + tq * 32;
          uint4 lo[2], hi[2];
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            lo[h] = row_lo ? *reinterpret_cast<const uint4*>(x_lo + off + h * 16) : make_uint4(0, 0, 0, 0);
            hi[h] = row_hi ? *reinterpret_cast<const uint4*>(x_hi + off + h * 16) : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int j = 0; j < kSkinnyTiles; ++j) {
            const uint32_t wv[4] = {wbuf[d][j].x, wbuf[d][j].y, wbuf[d][j].z, wbuf[d][j].w};
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              uint32_t be, bo;
              int4_to_s8_even_odd(wv[q], be, bo);
              const uint4& l = lo[q >> 1];
              const uint4& u = hi[q >> 1];
              if ((q & 1) == 0) {
                mma_s8(tmp[j], l.x, u.x, l.y, u.y, be, bo);
              } else {
                mma_s8(tmp[j], l.z, u.z, l.w, u.w, be, bo);
              }
            }
          }
        } else {
          const int64_t unit0 = static_cast<int64_t>(s) * 16 + tq * 4;
          uint4 lo[4], hi[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const int64_t off = skinny_unit<kKind>(unit0 + q) * 16;
            lo[q] = row_lo ? *reinterpret_cast<const uint4*>(x_lo + off) : make_uint4(0, 0, 0, 0);
            hi[q] = row_hi ? *reinterpret_cast<const uint4*>(x_hi + off) : make_uint4(0, 0, 0, 0);
          }
#pragma unroll
          for (int j = 0; j < kSkinnyTiles; ++j) {
            const uint32_t wv[4] = {wbuf[d][j].x, wbuf[d][j].y, wbuf[d][j].z, wbuf[d][j].w};
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              uint32_t p[4];
              int4_to_16bit_pairs<kX>(wv[q], p);
              mma_16bit<kX>(tmp[j], lo[q].x, hi[q].x, lo[q].y, hi[q].y, p[0], p[1]);
              mma_16bit<kX>(tmp[j], lo[q].z, hi[q].z, lo[q].w, hi[q].w, p[2], p[3]);
            }
          }
        }
        // Fold this step into the accumulators; with groups, times the step's group scale (every
        // group is a whole number of steps).
        if constexpr (kGrouped) {
          const int64_t gi = (kb + static_cast<int64_t>(s) * kStepK) / g.group_size;
#pragma unroll
          for (int j = 0; j < kSkinnyTiles; ++j) {
            const int64_t c0 = n_warp + j * 8 + tq * 2;
            const float s0 = c0 < g.n ? group_scale(g, c0, gi) : 0.0f;
            const float s1 = c0 + 1 < g.n ? group_scale(g, c0 + 1, gi) : 0.0f;
            acc[j][0] = __fmaf_rn(static_cast<float>(tmp[j][0]), s0, acc[j][0]);
            acc[j][1] = __fmaf_rn(static_cast<float>(tmp[j][1]), s1, acc[j][1]);
            acc[j][2] = __fmaf_rn(static_cast<float>(tmp[j][2]), s0, acc[j][2]);
            acc[j][3] = __fmaf_rn(static_cast<float>(tmp[j][3]), s1, acc[j][3]);
          }
        } else {
#pragma unroll
          for (int j = 0; j < kSkinnyTiles; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[j][e] += tmp[j][e];
          }
        }
#pragma unroll
        for (int j = 0; j < kSkinnyTiles; ++j) wbuf[d][j] = load_w(s + kSkinnyDepth, j);
      }
    }
  }

  if (splits == 1) {
    static_for<kSkinnyTiles>([&](auto j) {
      static_for<4>([&](auto e) {
        const int r = gq + (e >> 1) * 8;
        const int64_t col = n_warp + j * 8 + tq * 2 + (e & 1);
        if (r < rows && col < g.n) {
          const float v = finish_value<kGrouped>(g, static_cast<float>(acc[j][e]), m0 + r, col);
          store_float(g.out, g.out_dt, (m0 + r) * g.n + col, v);
        }
      });
    });
    return;
  }

  // Split k: partials (split, m, n), 4 bytes each (int32 or float32 as acc_t).
  acc_t* part = static_cast<acc_t*>(partials);
  static_for<kSkinnyTiles>([&](auto j) {
    static_for<4>([&](auto e) {
      const int r = gq + (e >> 1) * 8;
      const int64_t col = n_warp + j * 8 + tq * 2 + (e & 1);
      if (r < rows && col < g.n) part[(split * g.m + m0 + r) * g.n + col] = acc[j][e];
    });
  });
  finish_splits<kGrouped, kSkinnyBlockN, kSkinnyThreads, false>(g, part, counters, splits, rows, m0, n_block);
}

// ---------------------------------------------------------------------------------------------------
// Decode path (m <= 64): the GEMV on packed weights as they are, and on plain int4 weights.
//
// The packed layout stores, per 64-column group and k-step, 4 panels x 16 columns x 4 bytes; a 16-byte
// vector is 4 columns x one k-step. The mma B fragment gives each lane one column, so the 4 words of a
// vector go to 4 different n8 tiles: lane (gq, tq) loads the vector of column quad gq % 4 of panel
// 2 pp + gq / 4 (pp = panel pair 0, 1), and word i of it is column gq of tile 4 pp + i (packed_tile_col).
// A warp owns one 64-column group (8 tiles) and walks k in rounds of 32 values; in a round, lane tq
// holds the k-steps that give it its mma k slots:
// - W8A8 (steps of 4 k; a unit is one round): steps 8u + tq (slots 4tq..4tq+3, b0) and 8u + 4 + tq
//   (slots 16 + 4tq.., b1); the bytes hold w + 128, so b = word ^ 0x80808080; a0..a3 are the same k of
//   x, rows gq and gq + 8.
// - int4 (steps of 8 k; a unit is four rounds, 128 k): round j of unit u gives lane tq step
//   16u + 4tq + j, so that a lane's four rounds of one column are 16 consecutive bytes of a plain row:
//   plain weights load those (one vector per tile), packed ones one vector per round and panel pair.
//   W4A8: the step's k0..k3 are b0 and k4..k7 b1 (int8 m16n8k32); x's 8 bytes at the step are a0/a2.
//   W4A16 (m16n8k16): the pairs (k0, k2), (k4, k6) feed one mma and (k1, k3), (k5, k7) the other, each
//   weight an exact 16-bit float (int4_word_to_pairs); x's 8 values are permuted to the same pairs with
//   byte permutes.
// x is read straight from global memory; rows past m and k past the end read as zeros (the weights
// there are zero padding or never stored). K is split across blocks in whole units as on the skinny
// path, with the same deterministic reduction.

constexpr int kPackedWarps = 4;
constexpr int kPackedThreads = kPackedWarps * 32;
constexpr int kPackedBlockN = kPackedWarps * 64;

template <int kKind, bool kGrouped>
struct packed_traits {
  static constexpr int kStepK = kKind == KIND_W8A8 ? 4 : 8;  // k values of one packed step
  // W8A8: a unit is one round (32 k), 4 vectors per lane; int4: a unit is four rounds (128 k), 8
  // vectors per lane (four rounds of packed steps, or 16 bytes of each of 8 plain rows).
  static constexpr int kUnitK = kKind == KIND_W8A8 ? 32 : 128;
  static constexpr int kLoads = kKind == KIND_W8A8 ? 4 : 8;
  // Units in flight: 64 registers of weights, 8 KiB per warp.
  static constexpr int kDepth = kKind == KIND_W8A8 ? 4 : 2;
  // Blocks per SM by registers: 3 at up to 168 registers a thread, 2 with groups (their sums and
  // scales take about 60 more).
  static constexpr int kBlocksPerSm = kGrouped ? 2 : 3;
};

// The 4 bytes of row `row` of an int8 x at k0..k0 + 3, zeros past k or past the valid rows.
__device__ __forceinline__ uint32_t load_x8_word(const int8_t* x, int64_t k, int64_t row, bool valid,
                                                 int64_t k0) {
  if (!valid || k0 >= k) return 0;
  const int64_t off = row * k + k0;
  if (k0 + 4 <= k && (off & 3) == 0) return __ldg(reinterpret_cast<const uint32_t*>(x + off));
  uint32_t v = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (k0 + i < k) v |= static_cast<uint32_t>(static_cast<uint8_t>(x[off + i])) << (8 * i);
  }
  return v;
}

// The 8 16-bit values of row `row` of x at k0..k0 + 7 (two per word, low half first), zeros past k or
// past the valid rows.
__device__ __forceinline__ uint4 load_x16_8(const uint16_t* x, int64_t k, int64_t row, bool valid,
                                            int64_t k0) {
  if (!valid || k0 >= k) return make_uint4(0, 0, 0, 0);
  const int64_t off = row * k + k0;
  if (k0 + 8 <= k && (off & 7) == 0) return __ldg(reinterpret_cast<const uint4*>(x + off));
  uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if (k0 + i < k) w[i >> 1] |= static_cast<uint32_t>(x[off + i]) << (16 * (i & 1));
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Eight int4 weights k0..k7 of one column as the pairs (k0, k2), (k4, k6), (k1, k3), (k5, k7) of exact
// 16-bit floats, low half first, from a packed word (byte r: w[k0 + r] + 8 low, w[k0 + 4 + r] + 8 high)
// or a plain one (byte j: w[k0 + 2j] low, w[k0 + 2j + 1] high, two's complement). A nibble u placed in
// the mantissa of 1024 (f16) or 128 (bf16) is base + u; plain nibbles get bit 3 flipped on the way
// (v ^ 8 = v + 8); one exact fma removes base + 8.
template <ssmkit_dtype kX, bool kPlain>
__device__ __forceinline__ void int4_word_to_pairs(uint32_t w, uint32_t (&p)[4]) {
  constexpr uint32_t kBase = kX == SSMKIT_DTYPE_F16 ? 0x64006400u : 0x43004300u;  // 1024, 128
  constexpr uint32_t kFlip = kPlain ? 0x00080008u : 0u;
  constexpr uint32_t kOne = kX == SSMKIT_DTYPE_F16 ? 0x3c003c00u : 0x3f803f80u;
  constexpr uint32_t kNegBase = kX == SSMKIT_DTYPE_F16 ? 0xe408e408u : 0xc308c308u;  // -(base + 8)
  uint32_t h[4];
  if constexpr (kPlain) {
    const uint32_t lo = __byte_perm(w, 0, 0x4140);  // bytes 0, 1 (k0 k1, k2 k3) -> bytes 0, 2
    const uint32_t hi = __byte_perm(w, 0, 0x4342);  // bytes 2, 3 (k4 k5, k6 k7) -> bytes 0, 2
    h[0] = lo & 0x000f000fu;
    h[1] = hi & 0x000f000fu;
    h[2] = (lo >> 4) & 0x000f000fu;
    h[3] = (hi >> 4) & 0x000f000fu;
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = (w >> (4 * i)) & 0x000f000fu;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t v = h[i] ^ (kBase | kFlip);
    if constexpr (kX == SSMKIT_DTYPE_F16) {
      asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(v), "r"(kOne), "r"(kNegBase));
    } else {
      asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(v), "r"(kOne), "r"(kNegBase));
    }
  }
}

// d = (a & b) | c (kOr) or (a & b) ^ c, one LOP3 (the compiler emits two when b and c are both
// immediates).
template <bool kOr>
__device__ __forceinline__ uint32_t and_or_xor(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  if constexpr (kOr) {
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  } else {
    asm("lop3.b32 %0, %1, %2, %3, 0x6a;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  }
  return d;
}

// int4_word_to_pairs with the mask and the magic number in one LOP3 a pair: the same values.
template <ssmkit_dtype kX, bool kPlain>
__device__ __forceinline__ void int4_word_to_pairs_lop3(uint32_t w, uint32_t (&p)[4]) {
  constexpr uint32_t kBase = kX == SSMKIT_DTYPE_F16 ? 0x64006400u : 0x43004300u;
  constexpr uint32_t kOne = kX == SSMKIT_DTYPE_F16 ? 0x3c003c00u : 0x3f803f80u;
  constexpr uint32_t kNegBase = kX == SSMKIT_DTYPE_F16 ? 0xe408e408u : 0xc308c308u;
  uint32_t src[4];
  if constexpr (kPlain) {
    const uint32_t lo = __byte_perm(w, 0, 0x4140);
    const uint32_t hi = __byte_perm(w, 0, 0x4342);
    src[0] = lo;
    src[1] = hi;
    src[2] = lo >> 4;
    src[3] = hi >> 4;
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) src[i] = w >> (4 * i);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    // Packed nibbles are u = w + 8: OR the base in; plain ones are two's complement: XOR flips bit 3.
    const uint32_t v = kPlain ? and_or_xor<false>(src[i], 0x000f000fu, kBase | 0x00080008u)
                              : and_or_xor<true>(src[i], 0x000f000fu, kBase);
    if constexpr (kX == SSMKIT_DTYPE_F16) {
      asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(v), "r"(kOne), "r"(kNegBase));
    } else {
      asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(p[i]) : "r"(v), "r"(kOne), "r"(kNegBase));
    }
  }
}

// The same eight weights as int8: k0..k3 (b0) and k4..k7 (b1).
template <bool kPlain>
__device__ __forceinline__ void int4_word_to_s8(uint32_t w, uint32_t& b0, uint32_t& b1) {
  if constexpr (kPlain) {
    const uint32_t lo = __byte_perm(w, 0, 0x4140);
    const uint32_t hi = __byte_perm(w, 0, 0x4342);
    b0 = nibbles_to_s8((lo & 0x000f000fu) | ((lo << 4) & 0x0f000f00u));
    b1 = nibbles_to_s8((hi & 0x000f000fu) | ((hi << 4) & 0x0f000f00u));
  } else {
    // u = w + 8 in 0..15: u + 120 stays below 256 and flipping bit 7 subtracts 128.
    b0 = ((w & 0x0f0f0f0fu) + 0x78787878u) ^ 0x80808080u;
    b1 = (((w >> 4) & 0x0f0f0f0fu) + 0x78787878u) ^ 0x80808080u;
  }
}

// Column of element j (0..7) of tile t (0..7) in a warp's 64-column group.
__device__ __forceinline__ int packed_tile_col(int t, int j) {
  return 16 * (2 * (t >> 2) + (j >> 2)) + 4 * (j & 3) + (t & 3);
}

template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain>
__global__ void __launch_bounds__(kPackedThreads, (packed_traits<kKind, kGrouped>::kBlocksPerSm))
    gemm_packed_kernel(gemm_args g, int64_t k_range, int splits, int64_t steps, int64_t panels,
                       void* partials, int* counters) {
  using P = packed_traits<kKind, kGrouped>;
  constexpr bool kIntAcc = kind_traits<kKind>::kIntAcc && !kGrouped;
  using acc_t = typename std::conditional<kIntAcc, int, float>::type;
  using tmp_t = typename std::conditional<kind_traits<kKind>::kIntAcc, int, float>::type;
  constexpr int kTiles = 8;
  static_assert(!kPlain || kKind != KIND_W8A8, "plain int8 weights take the skinny path");
  static_assert(!kGrouped || kKind != KIND_W8A8, "W8A8 has one scale per column");

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int gq = lane >> 2;
  const int tq = lane & 3;
  const int split = blockIdx.y;
  const int64_t n_block = static_cast<int64_t>(blockIdx.x) * kPackedBlockN;
  const int64_t grp = n_block / 64 + warp;
  const int64_t n_warp = grp * 64;
  const int64_t m0 = static_cast<int64_t>(blockIdx.z) * kSkinnyRows;
  const int rows = static_cast<int>(min64(kSkinnyRows, g.m - m0));
  const int64_t kb = split * k_range;  // a multiple of kUnitK
  const int64_t ke = min64(g.k, kb + k_range);
  const int nunits = static_cast<int>((ke - kb + P::kUnitK - 1) / P::kUnitK);
  const int64_t step0 = kb / P::kStepK;

  // Packed: this lane's vectors are column quad gq % 4 of panel 2 pp + gq / 4 of the group (absent
  // panels read zeros). Plain: 16 bytes of the row of column packed_tile_col(t, gq) of each tile t.
  const int64_t grp_panels = n_warp < g.n ? min64(4, panels - grp * 4) : 0;
  const uint8_t* wgrp = g.w + grp * 4 * steps * 64 + (gq & 3) * 16;
  auto load_unit = [&](int u, uint4(&v)[P::kLoads]) {
#pragma unroll
    for (int l = 0; l < P::kLoads; ++l) {
      bool ok = u < nunits;
      const uint8_t* src = nullptr;
      if constexpr (kPlain) {
        const int64_t row = n_warp + packed_tile_col(l, gq);
        const int64_t byte = kb / 2 + static_cast<int64_t>(u) * 64 + tq * 16;
        ok = ok && row < g.n && byte < g.w_row_bytes;
        src = g.w + row * g.w_row_bytes + byte;
      } else {
        // W8A8: l = 2 h + pp, step 8 u + 4 h + tq; int4: l = 2 j + pp, step 16 u + 4 tq + j.
        const int pp = l % 2;
        const int64_t panel = 2 * pp + (gq >> 2);
        const int64_t step = kKind == KIND_W8A8 ? step0 + static_cast<int64_t>(u) * 8 + (l / 2) * 4 + tq
                                                : step0 + static_cast<int64_t>(u) * 16 + tq * 4 + l / 2;
        ok = ok && panel < grp_panels && step < steps;
        src = wgrp + (step * grp_panels + panel) * 64;
      }
      v[l] = ok ? ldg_stream16(src) : make_uint4(0, 0, 0, 0);
    }
  };

  uint4 wbuf[P::kDepth][P::kLoads];
#pragma unroll
  for (int d = 0; d < P::kDepth; ++d) load_unit(d, wbuf[d]);

  acc_t acc[kTiles][4];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[t][e] = 0;
  }
  const bool row_lo = gq < rows;
  const bool row_hi = gq + 8 < rows;
  const int64_t r_lo = m0 + gq;
  const int64_t r_hi = m0 + gq + 8;

  // One round: 32 values of k, lane tq's 8 (int4) or 2 x 4 (W8A8) of them starting at kx, summed into
  // dst; w(t) is the word of tile t.
  auto round = [&](int64_t kx, auto&& w, auto& dst) {
    if constexpr (kKind == KIND_W8A8) {
      const int8_t* x = static_cast<const int8_t*>(g.a);
      const uint32_t a0 = load_x8_word(x, g.k, r_lo, row_lo, kx);
      const uint32_t a1 = load_x8_word(x, g.k, r_hi, row_hi, kx);
      const uint32_t a2 = load_x8_word(x, g.k, r_lo, row_lo, kx + 16);
      const uint32_t a3 = load_x8_word(x, g.k, r_hi, row_hi, kx + 16);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        uint32_t b0, b1;
        w(t, b0, b1);
        mma_s8(dst[t], a0, a1, a2, a3, b0 ^ 0x80808080u, b1 ^ 0x80808080u);
      }
    } else if constexpr (kKind == KIND_W4A8) {
      const int8_t* x = static_cast<const int8_t*>(g.a);
      const uint32_t a0 = load_x8_word(x, g.k, r_lo, row_lo, kx);
      const uint32_t a1 = load_x8_word(x, g.k, r_hi, row_hi, kx);
      const uint32_t a2 = load_x8_word(x, g.k, r_lo, row_lo, kx + 4);
      const uint32_t a3 = load_x8_word(x, g.k, r_hi, row_hi, kx + 4);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        uint32_t b0, b1;
        int4_word_to_s8<kPlain>(w(t), b0, b1);
        mma_s8(dst[t], a0, a1, a2, a3, b0, b1);
      }
    } else {
      const uint16_t* x = static_cast<const uint16_t*>(g.a);
      const uint4 lo = load_x16_8(x, g.k, r_lo, row_lo, kx);
      const uint4 hi = load_x16_8(x, g.k, r_hi, row_hi, kx);
      // (x0, x2), (x4, x6), (x1, x3), (x5, x7) of rows gq and gq + 8
      const uint32_t l02 = __byte_perm(lo.x, lo.y, 0x5410), l46 = __byte_perm(lo.z, lo.w, 0x5410);
      const uint32_t l13 = __byte_perm(lo.x, lo.y, 0x7632), l57 = __byte_perm(lo.z, lo.w, 0x7632);
      const uint32_t h02 = __byte_perm(hi.x, hi.y, 0x5410), h46 = __byte_perm(hi.z, hi.w, 0x5410);
      const uint32_t h13 = __byte_perm(hi.x, hi.y, 0x7632), h57 = __byte_perm(hi.z, hi.w, 0x7632);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        uint32_t p[4];  // (k0, k2), (k4, k6), (k1, k3), (k5, k7)
        int4_word_to_pairs<kX, kPlain>(w(t), p);
        mma_16bit<kX>(dst[t], l02, h02, l46, h46, p[0], p[1]);
        mma_16bit<kX>(dst[t], l13, h13, l57, h57, p[2], p[3]);
      }
    }
  };

  for (int u0 = 0; u0 < nunits; u0 += P::kDepth) {
#pragma unroll
    for (int d = 0; d < P::kDepth; ++d) {
      const int u = u0 + d;
      if (u < nunits) {
        const int64_t ku = kb + static_cast<int64_t>(u) * P::kUnitK;  // first k of the unit
        const uint4* v = wbuf[d];
        if constexpr (kKind == KIND_W8A8) {
          // Tile t = 4 pp + i: word i of the vectors of panel pair pp at steps 8u + tq (b0), 8u + 4 + tq
          // (b1).
          round(
              ku + 4 * tq,
              [&](int t, uint32_t& b0, uint32_t& b1) {
                const uint4 lo = v[t >> 2];
                const uint4 hi = v[2 + (t >> 2)];
                const int i = t & 3;
                b0 = word_at(lo, i);
                b1 = word_at(hi, i);
              },
              acc);
        } else {
          // Round j takes lane tq's step 16u + 4tq + j: packed, word t % 4 of vector 2j + t / 4; plain,
          // word j of tile t's 16 bytes.
          auto rounds = [&](auto& dst) {
            static_for<4>([&](auto j) {
              round(
                  ku + 32 * tq + 8 * j,
                  [&](int t) -> uint32_t {
                    const uint4 q = kPlain ? v[t] : v[2 * j + (t >> 2)];
                    const int i = kPlain ? static_cast<int>(j) : (t & 3);
                    return word_at(q, i);
                  },
                  dst);
            });
          };
          if constexpr (kGrouped) {
            // The unit lies in one group (group_size is a multiple of it): its four rounds sum into tmp,
            // scaled into acc once (the scales' loads are issued first, under the unit's mma work).
            const int64_t gi = ku / g.group_size;
            float sc[kTiles][2];
#pragma unroll
            for (int t = 0; t < kTiles; ++t) {
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                const int64_t col = n_warp + packed_tile_col(t, 2 * tq + h);
                sc[t][h] = col < g.n ? group_scale(g, col, gi) : 0.0f;
              }
            }
            tmp_t tmp[kTiles][4] = {};
            rounds(tmp);
#pragma unroll
            for (int t = 0; t < kTiles; ++t) {
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                acc[t][h] = __fmaf_rn(static_cast<float>(tmp[t][h]), sc[t][h], acc[t][h]);
                acc[t][h + 2] = __fmaf_rn(static_cast<float>(tmp[t][h + 2]), sc[t][h], acc[t][h + 2]);
              }
            }
          } else {
            rounds(acc);
          }
        }
        load_unit(u + P::kDepth, wbuf[d]);
      }
    }
  }

  if (splits == 1) {
    static_for<kTiles>([&](auto t) {
      static_for<4>([&](auto e) {
        const int r = gq + (e >> 1) * 8;
        const int64_t col = n_warp + packed_tile_col(t, 2 * tq + (e & 1));
        if (r < rows && col < g.n) {
          const float v = finish_value<kGrouped>(g, static_cast<float>(acc[t][e]), m0 + r, col);
          store_float(g.out, g.out_dt, (m0 + r) * g.n + col, v);
        }
      });
    });
    return;
  }

  // Split k: partials (split, m, n), 4 bytes each (int32 or float32 as acc_t).
  acc_t* part = static_cast<acc_t*>(partials);
  static_for<kTiles>([&](auto t) {
    static_for<4>([&](auto e) {
      const int r = gq + (e >> 1) * 8;
      const int64_t col = n_warp + packed_tile_col(t, 2 * tq + (e & 1));
      if (r < rows && col < g.n) part[(split * g.m + m0 + r) * g.n + col] = acc[t][e];
    });
  });
  finish_splits<kGrouped, kPackedBlockN, kPackedThreads, true>(g, part, counters, splits, rows, m0, n_block);
}

// ---------------------------------------------------------------------------------------------------
// GEMV path (m <= 4; m <= 16 for W8A8): CUDA cores, no mma.
//
// Block: 128 (one row) or 256 threads own one 64-column group and a k range. Thread (q = t % 16, c =
// t / 16) owns columns 4q..4q + 3 of the group and the chunks c, c + lanes, ... of the range (lanes: 8 or
// 16); a chunk is what 4 vectors of 16 bytes hold for 4 columns: 32 k of int4 (packed: 4 steps x 4
// columns; plain: 16 bytes of each of the 4 rows) or 16 k of int8 (packed: 4 steps; plain: 16 bytes of
// each row). Packed and plain weights give a thread the same values in the same order, so they give the
// same bits. Four (one row) or two chunks (256 or 128 bytes) are in flight per thread, 32 KiB per block;
// the first are requested before x is staged, with the group scales of the thread's first chunk (both
// before the wait on the kernel ahead in the decode step), and each later chunk's (packed) before its
// arithmetic.
// - W4A16: a nibble u = w + 8 (packed as stored, plain ^ 8) becomes the float 128 + u with one byte
//   permute into the mantissa of 128.0f, and w = (128 + u) - 136 exactly with one add; then one float32
//   fma per row against x, staged in shared memory as float32 [chunk][k][row] (16 bytes of padding per
//   chunk: the two chunks one warp reads land on different banks). (Multiplying x by the biased 128 + u
//   and taking 136 times the chunk's sum of x off once would save the add, but an infinite x would then
//   give NaN where the weight is nonzero, and the biased sums lose ~5 bits.)
// - W8A8, W4A8: int8 weights (packed bytes ^ 0x80, plain bytes as they are; int4 sign-extended by the byte
// trick of
//   int4_word_to_s8) against int8 x in dp4a, exact int32; x staged as int8 rows.
// Each chunk's sums are one group's (groups are whole chunks): with groups they are scaled into the
// float32 totals at the end of the chunk, without they are the totals. The block's 16 partial totals of
// a column are added in lane order through shared memory; split k uses the deterministic workspace
// reduction of the other decode paths.

constexpr int kGemvMaxM = 4;
// W8A8's int32 sums of 16 rows fit 128 registers (2 blocks per SM); W4A8's int4 unpacking on top of
// them spilled 96 bytes, so W4A8 keeps the tensor-core decode path above 4 rows.
constexpr int kGemvMaxMW8A8 = 16;
constexpr int kGemvMaxXBytes = 24 * 1024;  // staged x per block (4 blocks per SM fit easily)

template <int kKind, int kM>
struct gemv_traits {
  static constexpr int kChunkK = kKind == KIND_W8A8 ? 16 : 32;
  static constexpr int kStepK = kKind == KIND_W8A8 ? 4 : 8;
  static constexpr bool kFloatX = kKind == KIND_W4A16;
  // Staged x bytes per chunk: float32 [k][row] plus 16 bytes of padding, or kM int8 rows.
  static constexpr int kXChunkBytes = kFloatX ? kChunkK * kM * 4 + 16 : kChunkK * kM;
  static constexpr int kMaxChunks = kGemvMaxXBytes / kXChunkBytes;
  // One row: blocks of 128 threads (8 along k), four chunks (256 bytes) in flight per thread, 4 blocks
  // per SM at <= 128 registers (64 of them the weights in flight): the blocks of one wave hold all their
  // weights in flight at once, and a thread's fixed work (staging, lane sums, partials) is spread over
  // 3-4 chunks instead of 1-2. More rows: 256 threads (16 along k), two chunks in flight, 2 blocks per SM
  // (16 sums and 16 totals more at four rows, 64 int32 totals for W8A8's 16).
  static constexpr int kThreads = kM == 1 ? 128 : 256;
  static constexpr int kLanes = kThreads / 16;    // threads along k of one column quad
  static constexpr int kDepth = kM == 1 ? 4 : 2;  // chunks in flight per thread
  static constexpr int kBlocksPerSm = kM == 1 ? 4 : 2;
  // The block's sums (lane, column, row) reuse the staged x: 64 KiB at 16 rows, above the default limit.
  static constexpr int kRedBytes = kLanes * 64 * kM * 4;
};

// The block's max of v (every thread's), through red (a float a warp); every thread gets it.
__device__ __forceinline__ float block_max(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // red may still be read from a previous call
  if ((threadIdx.x & 31) == 0) red[warp] = v;
  __syncthreads();
  float m = 0.0f;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) m = fmaxf(m, red[i]);
  return m;
}

// Eight values quantized to 8 bits with scale s (quant_one), as the bytes of a little-endian pair of words.
__device__ __forceinline__ uint2 quant8_bytes(const float (&v)[8], float s) {
  uint32_t b[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) b[e] = static_cast<uint32_t>(quant_one(v[e], s, 8)) & 255u;
  return make_uint2(b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24, b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24);
}

// g for an epilogue whose activation scale is a folded quantizer's per-token scale, one float32 at s (the
// block's shared memory).
__device__ __forceinline__ gemm_args with_fold_scale(const gemm_args& g, const float* s) {
  gemm_args ge = g;
  ge.a_scale = s;
  ge.a_scale_dt = SSMKIT_DTYPE_F32;
  ge.a_scale_per_row = false;
  return ge;
}

// The GEMV's folded activation quantizer (g.pre_x set, g.pre_w null: one row of int8 x, W8A8 or W4A8; the
// decode step's quantizer in front of x_proj): the block's staged int8 row, values [kb, kb + len) (zeros
// from ke), is quantize's 8-bit result of the 16-bit row pre_x (dtype kH) with the static scale a_scale (one
// value) or, without a_scale, the row's per-token scale: scale_as_stored of the whole row's amax, which
// every block takes from the whole row (the max, so in any order the same value). k, kb, ke and len are
// multiples of 8. Returns the scale; the staged row is complete after the block's next barrier.
template <ssmkit_dtype kH>
__device__ __forceinline__ float gemv_quant_x(const gemm_args& g, int64_t kb, int64_t ke, int len,
                                              int8_t* xs) {
  constexpr int kLoads = 4;  // 16-byte loads in flight a thread
  __shared__ float red[32];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const uint4* x = static_cast<const uint4*>(g.pre_x);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  float s;
  if (g.a_scale != nullptr) {
    s = load_float(g.a_scale, g.a_scale_dt, 0);
  } else {
    const int vecs = static_cast<int>(g.k / 8);
    float m = 0.0f;
    for (int i0 = tid; i0 < vecs; i0 += kLoads * nt) {
      uint4 v[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) v[u] = i0 + u * nt < vecs ? __ldg(x + i0 + u * nt) : zero;
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
#pragma unroll
        for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(half8_at<kH>(v[u], e)));
      }
    }
    s = scale_as_stored(block_max(m, red), 8, SSMKIT_DTYPE_F32);
  }
  // The block's values, read again (the whole row's loads above left them in L1).
  for (int i = tid; i < len / 8; i += nt) {
    const int64_t kk = kb + 8 * static_cast<int64_t>(i);
    const uint4 v = kk < ke ? __ldg(x + kk / 8) : zero;
    float f[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) f[e] = half8_at<kH>(v, e);
    reinterpret_cast<uint2*>(xs)[i] = quant8_bytes(f, s);
  }
  return s;
}

// kQuantX: the folded activation quantizer (gemv_quant_x), an instance of its own.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kM, bool kQuantX = false>
__global__ void __launch_bounds__((gemv_traits<kKind, kM>::kThreads), (gemv_traits<kKind, kM>::kBlocksPerSm))
    gemm_gemv_kernel(gemm_args g, int64_t k_range, int splits, int64_t steps, int64_t panels,
                     int chunks_per_group, void* partials, int* counters) {
  SSMKIT_TRACE_SCOPE();
  using T = gemv_traits<kKind, kM>;
  constexpr int kChunkK = T::kChunkK;
  constexpr bool kIntAcc = kind_traits<kKind>::kIntAcc && !kGrouped;
  using acc_t = typename std::conditional<kIntAcc, int, float>::type;
  using sum_t = typename std::conditional<kind_traits<kKind>::kIntAcc, int, float>::type;
  extern __shared__ __align__(16) uint8_t smem[];

  const int q = threadIdx.x % 16;
  const int c = threadIdx.x / 16;
  const int64_t grp = blockIdx.x;
  const int64_t n_grp = grp * 64;
  const int split = blockIdx.y;
  const int64_t kb = split * k_range;  // a multiple of kChunkK
  const int64_t ke = min64(g.k, kb + k_range);
  const int nchunks = static_cast<int>((ke - kb + kChunkK - 1) / kChunkK);
  const int rows = static_cast<int>(g.m);  // <= kM
  const int len = nchunks * kChunkK;       // staged k, zeros past ke

  // Packed: vector of step s for this quad (absent panels read zeros); plain: 16 bytes of row 4q + l.
  const int64_t grp_panels = min64(4, panels - grp * 4);
  const bool quad_ok = kPlain || q / 4 < grp_panels;
  const int64_t step0 = kb / T::kStepK;
  auto load_chunk = [&](int ch, uint4(&v)[4]) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      bool ok = ch < nchunks;
      const uint8_t* src;
      if constexpr (kPlain) {
        const int64_t row = n_grp + 4 * q + l;
        const int64_t byte = (kKind == KIND_W8A8 ? kb : kb / 2) + static_cast<int64_t>(ch) * 16;
        ok = ok && row < g.n && byte < g.w_row_bytes;
        src = g.w + row * g.w_row_bytes + byte;
      } else {
        const int64_t s = step0 + static_cast<int64_t>(ch) * 4 + l;
        ok = ok && quad_ok && s < steps;
        src = g.w + grp * 4 * steps * 64 + (s * grp_panels + q / 4) * 64 + (q % 4) * 16;
      }
      v[l] = ok ? ldg_stream16(src) : make_uint4(0, 0, 0, 0);
    }
  };
  // Launched with programmatic dependent launch only when the weights are constant (g.pdl, the decode
  // step): their first loads go out before the wait on the kernel ahead, everything else after it.
  // With g.trigger_late the kernel after it may start only once this one's wait has returned.
  if (!g.trigger_late) pdl_trigger();
  uint4 wbuf[T::kDepth][4];
#pragma unroll
  for (int d = 0; d < T::kDepth; ++d) load_chunk(c + d * T::kLanes, wbuf[d]);
  // Group scales: the first chunk of the range, and each column's row of scales. The scales of the
  // thread's first chunk (constants, like the weights) go out before the wait too: where a thread has
  // one chunk (x_proj of Mamba-2.8B), their round trip from DRAM was the one after x's staging.
  const int chunk0 = static_cast<int>(kb / kChunkK);
  int64_t scale_row[4];
  bool col_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t col = n_grp + 4 * q + i;
    col_ok[i] = col < g.n;
    scale_row[i] = col * g.groups;
  }
  // 32-bit: the launch keeps the chunk count below 2^31 and passes the chunks of a group.
  auto group_of = [&](int ch) {
    return static_cast<int>(static_cast<unsigned>(chunk0 + ch) / static_cast<unsigned>(chunks_per_group));
  };
  uint32_t sb_first[4] = {0u, 0u, 0u, 0u};
  if constexpr (kGrouped) {
    if (c < nchunks) {
      const int gi = group_of(c);
#pragma unroll
      for (int i = 0; i < 4; ++i)
        sb_first[i] = col_ok[i] ? ld_bits(g.w_scale, g.w_scale_dt, scale_row[i] + gi) : 0u;
    }
  }
  pdl_wait();
  if (g.trigger_late) pdl_trigger();

  // Stage x rows [0, kM) (zeros past m and past ke), coalesced along k, four loads in flight per
  // thread (two for plain rows); the first weights are already on their way. Rows of whole 16-byte
  // vectors (k a multiple of a vector, an aligned base) take 16-byte loads: one round of loads for a
  // range of up to 256 vectors (2048 k of 16-bit x at one row) instead of one per 1024 values.
  using stage_t = typename std::conditional<T::kFloatX, float, int8_t>::type;
  constexpr int kStageLoads = kPlain ? 2 : 4;  // with the plain rows' addresses live, 4 spilled
  constexpr int kXBytes = T::kFloatX ? 2 : 1;
  constexpr int kVec = 16 / kXBytes;  // x values of one 16-byte load
  static_assert(!kQuantX || (kind_traits<kKind>::kIntAcc && kM == 1), "the fold takes one row of int8 x");
  __shared__ float quant_scale;
  if constexpr (kQuantX) {
    const float qs = g.pre_x_dt == SSMKIT_DTYPE_F16
                         ? gemv_quant_x<SSMKIT_DTYPE_F16>(g, kb, ke, len, reinterpret_cast<int8_t*>(smem))
                         : gemv_quant_x<SSMKIT_DTYPE_BF16>(g, kb, ke, len, reinterpret_cast<int8_t*>(smem));
    if (threadIdx.x == 0) quant_scale = qs;
  }
  const bool x_vectors = !kQuantX && reinterpret_cast<uintptr_t>(g.a) % 16 == 0 && g.k % kVec == 0;
  // kb, ke and len are then multiples of kVec too: a vector lies wholly inside k or wholly past it.
  const int row_vecs = len / kVec;
  for (int i0 = threadIdx.x; x_vectors && i0 < kM * row_vecs; i0 += kStageLoads * T::kThreads) {
    uint4 xv[kStageLoads];
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = i0 + u * T::kThreads;
      const int r = kM == 1 ? 0 : i / row_vecs;  // one row: i < row_vecs where it is used
      const int kl = (i - r * row_vecs) * kVec;
      xv[u] = make_uint4(0, 0, 0, 0);
      if (i < kM * row_vecs && r < rows && kb + kl < ke) {
        xv[u] = __ldg(
            reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(g.a) + (r * g.k + kb + kl) * kXBytes));
      }
    }
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = i0 + u * T::kThreads;
      const int r = kM == 1 ? 0 : i / row_vecs;  // one row: i < row_vecs where it is used
      const int kl = (i - r * row_vecs) * kVec;
      if (i < kM * row_vecs) {
        if constexpr (T::kFloatX) {
          float f[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) f[e] = half8_at<kX>(xv[u], e);
          // kl is a multiple of 8 inside a chunk of 32: the 8 values stay in one chunk.
          float* dst = reinterpret_cast<float*>(smem) + (kl / kChunkK) * (T::kXChunkBytes / 4) +
                       (kl % kChunkK) * kM + r;
          if constexpr (kM == 1) {
            // 16-byte aligned: chunks are 144 bytes apart and kl % 32 is 0, 8, 16 or 24 floats.
            reinterpret_cast<float4*>(dst)[0] = make_float4(f[0], f[1], f[2], f[3]);
            reinterpret_cast<float4*>(dst)[1] = make_float4(f[4], f[5], f[6], f[7]);
          } else {
#pragma unroll
            for (int e = 0; e < 8; ++e) dst[e * kM] = f[e];
          }
        } else {
          // len and kl are multiples of 16: an aligned 16-byte store.
          *reinterpret_cast<uint4*>(smem + r * len + kl) = xv[u];
        }
      }
    }
  }
  for (int i0 = threadIdx.x; !kQuantX && !x_vectors && i0 < kM * len; i0 += kStageLoads * T::kThreads) {
    stage_t xv[kStageLoads];
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = i0 + u * T::kThreads;
      const int r = kM == 1 ? 0 : i / len;  // one row: i < len where it is used
      const int kl = i - r * len;
      xv[u] = 0;
      if (i < kM * len && r < rows && kb + kl < ke) {
        if constexpr (T::kFloatX) {
          xv[u] = load_float(g.a, kX, r * g.k + kb + kl);
        } else {
          xv[u] = static_cast<const int8_t*>(g.a)[r * g.k + kb + kl];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      const int i = i0 + u * T::kThreads;
      const int r = kM == 1 ? 0 : i / len;  // one row: i < len where it is used
      const int kl = i - r * len;
      if (i < kM * len) {
        if constexpr (T::kFloatX) {
          reinterpret_cast<float*>(smem)[(kl / kChunkK) * (T::kXChunkBytes / 4) + (kl % kChunkK) * kM + r] =
              xv[u];
        } else {
          reinterpret_cast<int8_t*>(smem)[r * len + kl] = xv[u];
        }
      }
    }
  }
  __syncthreads();

  // word_at(v[j], i): packed, column i at step j; plain, k 8j..8j + 7 of column j.

  acc_t tot[4][kM];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int r = 0; r < kM; ++r) tot[i][r] = 0;
  }

  // One chunk of 4 columns into sums s (the totals themselves without groups).
  auto chunk = [&](int ch, const uint4(&v)[4], sum_t(&s)[4][kM]) {
    if constexpr (kKind == KIND_W4A16) {
      const float* xc = reinterpret_cast<const float*>(smem + static_cast<int64_t>(ch) * T::kXChunkBytes);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float xv[8 * kM];  // k 8j..8j + 7, rows 0..kM - 1
#pragma unroll
        for (int h = 0; h < 2 * kM; ++h) {
          const float4 f = *reinterpret_cast<const float4*>(xc + 8 * j * kM + 4 * h);
          xv[4 * h] = f.x;
          xv[4 * h + 1] = f.y;
          xv[4 * h + 2] = f.z;
          xv[4 * h + 3] = f.w;
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          // Packed: byte b holds k b (low) and b + 4 (high); plain: k 2b (low) and 2b + 1 (high).
          const uint32_t w = kPlain ? word_at(v[i], j) ^ 0x88888888u : word_at(v[j], i);
          const uint32_t lo = w & 0x0f0f0f0fu;
          const uint32_t hi = (w >> 4) & 0x0f0f0f0fu;
#pragma unroll
          for (int kk = 0; kk < 8; ++kk) {
            const uint32_t src = kPlain ? ((kk & 1) ? hi : lo) : (kk < 4 ? lo : hi);
            const int b = kPlain ? kk / 2 : kk % 4;
            // 0x43 in byte 3, u in byte 2: 128 + u
            const float f = __uint_as_float(__byte_perm(src, 0x43000000u, 0x7044u | (b << 8))) - 136.0f;
#pragma unroll
            for (int r = 0; r < kM; ++r) s[i][r] = __fmaf_rn(f, xv[kk * kM + r], s[i][r]);
          }
        }
      }
    } else {
      const int8_t* xs = reinterpret_cast<const int8_t*>(smem);
#pragma unroll
      for (int r = 0; r < kM; ++r) {
        uint32_t xw[kChunkK / 4];
#pragma unroll
        for (int h = 0; h < kChunkK / 16; ++h) {
          const uint4 t = *reinterpret_cast<const uint4*>(xs + r * len + ch * kChunkK + 16 * h);
          xw[4 * h] = t.x;
          xw[4 * h + 1] = t.y;
          xw[4 * h + 2] = t.z;
          xw[4 * h + 3] = t.w;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if constexpr (kKind == KIND_W8A8) {
              s[i][r] = __dp4a(static_cast<int>(kPlain ? word_at(v[i], j) : word_at(v[j], i) ^ 0x80808080u),
                               static_cast<int>(xw[j]), s[i][r]);
            } else {
              const uint32_t w = kPlain ? word_at(v[i], j) ^ 0x88888888u : word_at(v[j], i);
              // u = w + 8 in 0..15: u + 120 stays below 256 and flipping bit 7 subtracts 128.
              const uint32_t b0 = ((w & 0x0f0f0f0fu) + 0x78787878u) ^ 0x80808080u;
              const uint32_t b1 = (((w >> 4) & 0x0f0f0f0fu) + 0x78787878u) ^ 0x80808080u;
              // Packed: b0 k 0..3, b1 k 4..7; plain: b0 the even k, b1 the odd ones.
              const uint32_t x0 = kPlain ? __byte_perm(xw[2 * j], xw[2 * j + 1], 0x6420) : xw[2 * j];
              const uint32_t x1 = kPlain ? __byte_perm(xw[2 * j], xw[2 * j + 1], 0x7531) : xw[2 * j + 1];
              s[i][r] = __dp4a(static_cast<int>(b0), static_cast<int>(x0), s[i][r]);
              s[i][r] = __dp4a(static_cast<int>(b1), static_cast<int>(x1), s[i][r]);
            }
          }
        }
      }
    }
  };

  auto fold = [&](int ch, const uint4(&v)[4]) {
    if constexpr (kGrouped) {
      sum_t s[4][kM];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int r = 0; r < kM; ++r) s[i][r] = 0;
      }
      // Packed: the scales first, so that their loads overlap the chunk's arithmetic; plain rows load
      // them after it (ahead, with the rows' addresses live, 8 registers spilled at the 80 of 3 blocks).
      const int gi = group_of(ch);
      // The scales' bits, converted after the chunk (ld_bits): the four loads wait only there. The
      // thread's first chunk has its bits from before the wait.
      uint32_t sb[4];
      auto load_scales = [&] {
        const bool first = ch == c;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          sb[i] = first ? sb_first[i] : col_ok[i] ? ld_bits(g.w_scale, g.w_scale_dt, scale_row[i] + gi) : 0u;
      };
      if constexpr (!kPlain) load_scales();
      chunk(ch, v, s);
      if constexpr (kPlain) load_scales();
      float sc[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) sc[i] = bits_value(g.w_scale_dt, sb[i]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int r = 0; r < kM; ++r) tot[i][r] = __fmaf_rn(static_cast<float>(s[i][r]), sc[i], tot[i][r]);
      }
    } else {
      chunk(ch, v, tot);
    }
  };

  for (int ch0 = c; ch0 < nchunks; ch0 += T::kDepth * T::kLanes) {
#pragma unroll
    for (int d = 0; d < T::kDepth; ++d) {
      const int ch = ch0 + d * T::kLanes;
      if (ch < nchunks) {
        fold(ch, wbuf[d]);
        load_chunk(ch + T::kDepth * T::kLanes, wbuf[d]);
      }
    }
  }

  // The 16 lanes' totals of each column, added in lane order: red (lane, column, row).
  __syncthreads();  // staged x is no longer read
  acc_t* red = reinterpret_cast<acc_t*>(smem);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int r = 0; r < kM; ++r) red[(c * 64 + 4 * q + i) * kM + r] = tot[i][r];
  }
  __syncthreads();
  // Output o = (column in the group) * kM + row: 64 kM of them, one or four per thread.
  constexpr int kOuts = (64 * kM + T::kThreads - 1) / T::kThreads;
  auto out_of = [&](int u, int& r, int64_t& col) -> bool {
    const int o = threadIdx.x + u * T::kThreads;
    r = o % kM;
    col = n_grp + o / kM;
    return o < 64 * kM && r < rows && col < g.n;
  };
  acc_t sum[kOuts];
#pragma unroll
  for (int u = 0; u < kOuts; ++u) {
    int r;
    int64_t col;
    sum[u] = 0;
    if (out_of(u, r, col)) {
      const int cl = static_cast<int>(col - n_grp);
      sum[u] = red[cl * kM + r];
      for (int l = 1; l < T::kLanes; ++l) sum[u] += red[(l * 64 + cl) * kM + r];
    }
  }
  // The epilogue, with g or (the folded quantizer's per-token scale) a copy whose a_scale is the block's.
  auto epilogue = [&](const gemm_args& ge) {
    if (splits == 1) {
#pragma unroll
      for (int u = 0; u < kOuts; ++u) {
        int r;
        int64_t col;
        if (out_of(u, r, col)) {
          store_float(g.out, g.out_dt, r * g.n + col,
                      finish_value<kGrouped>(ge, static_cast<float>(sum[u]), r, col));
        }
      }
      return;
    }

    // Split k: partials (split, m, n), 4 bytes each (int32 or float32 as acc_t).
    acc_t* part = static_cast<acc_t*>(partials);
#pragma unroll
    for (int u = 0; u < kOuts; ++u) {
      int r;
      int64_t col;
      if (out_of(u, r, col)) part[(split * g.m + r) * g.n + col] = sum[u];
    }
    __syncthreads();
    __shared__ bool last_block;
    int* counter = counters + blockIdx.x;
    if (threadIdx.x == 0) {
      const int arrived = atomic_add_acq_rel(counter, 1);  // publishes the block's partials (see there)
      last_block = arrived == splits - 1;
      if (last_block) *counter = 0;  // every split has arrived: ready for the next launch
    }
    __syncthreads();
    if (!last_block) return;
    // 16 rows: the epilogue's operands after the sums (loaded with them, W8A8's spilled 240 bytes at the 128
    // registers of 2 blocks per SM).
    sum_splits<kGrouped, T::kThreads, kOuts, 8, kM != 16>(ge, part, splits, 64 * kM,
                                                          [&](int o, int64_t& row, int64_t& col) {
                                                            row = o % kM;
                                                            col = n_grp + o / kM;
                                                            return row < rows && col < g.n;
                                                          });
  };
  if constexpr (kQuantX) {
    if (g.a_scale == nullptr) {
      epilogue(with_fold_scale(g, &quant_scale));
      return;
    }
  }
  epilogue(g);
}

// ---------------------------------------------------------------------------------------------------
// Ring path (sm_90, m <= 16: W4A16 with 16-bit x, packed weights or plain rows of whole 32-k chunks, no
// groups or groups of a multiple of 128; W8A8 with packed weights, m >= 2): tensor cores with the weights
// as the A operand, fed through a ring of shared-memory stages that each warp fills with cp.async, and k
// split over a thread-block cluster that adds its partial sums through distributed shared memory.
//
// A warp owns one 64-column group (four m16 tiles of columns) and the block's k range (blocks: four
// warps, four adjacent groups, one k range). A stage is one unit of 16 packed k-steps of the warp's group
// (128 k of int4, 64 of int8): 16 step rows of 64 column words (4 KiB, copied as the contiguous 256-byte
// rows, each padded to 72 words); plain int4, the 64 bytes of each of the 64 rows (padded to 20 words).
// Every lane copies 8 pieces of 16 bytes a stage, two stages in flight a warp; the warp waits only for
// its own copies (cp.async.wait_group, then __syncwarp), never for the block. The weights' first stages
// and the group scales are requested before the kernel waits on the one before it (programmatic
// dependent launch, when the caller asks for it: the decode step).
// mma row gq of tile t is column 16t + 2gq and row gq + 8 is column 16t + 2gq + 1, so that one 8-byte
// shared load (packed; conflict-free with the padding) gives both of a lane's words of a step.
// - W4A16: lane (gq, tq) takes step 4q + tq of the unit for q = 0..3. A word is 8 k of one column;
//   int4_word_to_pairs_lop3 makes it the pairs (k0, k2), (k4, k6) for one m16n8k16 (k slots 2tq..,
//   2tq + 8..) and (k1, k3), (k5, k7) for another (a shift, one LOP3 and one HFMA2 a pair); x's 8 values
//   of a step and row are staged permuted into the same pairs (16 bytes; step rows padded by two
//   units: conflict-free).
// - W8A8: lane tq takes steps 8h + tq (k slots 4tq..) and 8h + 4 + tq (16 + 4tq..) of one m16n8k32 for
//   h = 0, 1; a word is 4 k of one column (bytes w + 128: ^ 0x80808080); x is staged as the 4 bytes of a
//   step and row (24 words a step: conflict-free), and the sums are exact int32.
// x (up to 8 rows an n8 tile, two tiles above 8 rows) is staged once a block. Packed and plain int4
// weights give a lane the same fragments, so the same bits. With groups, a unit's sums go into tmp and
// are scaled into the totals once (the unit's 8 column scales a lane from shared memory, staged with x).
// The k splits of a column tile (up to 16, enough for about kBlocksPerSm blocks an SM) are one cluster:
// after a cluster barrier each block finishes a slice of the tile's columns from every block's sums, in
// split order (the same bits every run), with no partials in global memory, no fence and no counter.
// Measured (H200, Nsight, weights from DRAM): the main loop is 530 instructions a unit and warp (W4A16,
// one n8 tile); W4A16 M = 1 at 2560 x 10240 12.2 us (CUDA-core GEMV 13.7), M = 4 12.8 (23.8), M = 16 at
// 8192^2 35.2 (decode kernel 66.6), 5120 x 2560 10.4 (10.6); W8A8 M = 4 15.0 (16.7), M = 16 16.6 (37.1).
// The same kernel with a global split (partials, fence, counter, last block) measured 19-24 us at M = 1:
// that tail was the larger part. What remains is latency: about 10 cycles a warp instruction at 3-4
// warps a scheduler, the weights' first round trip and the cluster's reduction.

constexpr int kRingWarps = 4;
constexpr int kRingThreads = kRingWarps * 32;
constexpr int kRingBlockN = kRingWarps * 64;
constexpr int kRingUnitSteps = 16;
constexpr int kRingStepWords = 72;                   // packed: one step row of 64 words, 8 of padding
constexpr int kRingColWords = 20;                    // plain: one column's 16 words, 4 of padding
constexpr int kRingStageWords = 64 * kRingColWords;  // >= kRingUnitSteps * kRingStepWords (1152)
static_assert(kRingUnitSteps * kRingStepWords <= kRingStageWords, "stage size");

template <int kKind, int kNT>
struct ring_traits {
  static constexpr bool kInt8 = kKind == KIND_W8A8;
  static constexpr int kStepK = kInt8 ? 4 : 8;
  static constexpr int kUnitK = kRingUnitSteps * kStepK;
  static constexpr int kRows = 8 * kNT;  // x rows of the m slice
  // Staged x a step: W4A16 kRows + 2 units of 16 bytes; W8A8 kRows words, 24 at two tiles.
  static constexpr int kXStepBytes = kInt8 ? (kNT == 1 ? 8 : 24) * 4 : (kRows + 2) * 16;
  static constexpr int kDepth = 2;  // stages in flight a warp
  // Blocks an SM (registers: <= 128 a thread at four); the units of a block's k range are capped so
  // that their shared memory fits as many.
  static constexpr int kBlocksPerSm = kNT == 1 ? 4 : 3;
  static constexpr int kMaxUnits = kNT == 1 ? 4 : 6;
  static constexpr int kRingBytes = kRingWarps * kDepth * kRingStageWords * 4;
  static int smem_bytes(int units, bool grouped) {
    return units * kRingUnitSteps * kXStepBytes + kRingBytes + (grouped ? kRingWarps * units * 64 * 4 : 0);
  }
};

// The folded norm (g.pre_x set; k % 8 == 0; pre_x of dtype kX; kRes: 0 no residual, 1 a float32 one, 2
// one of dtype kX; 16-byte aligned rows): x's eight values k0.. (zeros where !item) as 16-bit values of
// kX, low half first, computed as rms_norm computes them (the sum x + residual in float32, its squares
// added in float64, out = sum * rstd * w rounded once); w holds the eight norm weights. Every block reads
// the whole row (all of a thread's loads issued before the first is used) and adds its squares in the
// same order, so every block has the same rstd; block (0, 0, 0) stores the sums to pre_res_out. Called
// by all threads of the block after the wait.
template <ssmkit_dtype kX, int kRes>
__device__ __forceinline__ uint4 ring_prenorm(const gemm_args& g, int64_t k0, bool item,
                                              const float (&w)[8]) {
  constexpr int kBatch = 3;  // chunks of 8 a thread loads at once: d <= 3072 in one round trip
  __shared__ double red[kRingWarps];
  struct raw {
    uint4 x, r0, r1;
  };
  const uint4 zero = make_uint4(0, 0, 0, 0);
  auto load = [&](int64_t c, bool ok, raw& o) {
    o.x = ok ? reinterpret_cast<const uint4*>(g.pre_x)[c] : zero;
    if constexpr (kRes == 1) {
      o.r0 = ok ? reinterpret_cast<const uint4*>(g.pre_res)[2 * c] : zero;
      o.r1 = ok ? reinterpret_cast<const uint4*>(g.pre_res)[2 * c + 1] : zero;
    } else if constexpr (kRes == 2) {
      o.r0 = ok ? reinterpret_cast<const uint4*>(g.pre_res)[c] : zero;
    }
  };
  auto sums = [&](const raw& o, float(&v)[8]) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = half8_at<kX>(o.x, e);
      if constexpr (kRes == 1) {
        v[e] += __uint_as_float(word_at(e < 4 ? o.r0 : o.r1, e & 3));
      } else if constexpr (kRes == 2) {
        v[e] += half8_at<kX>(o.r0, e);
      }
    }
  };
  const int64_t chunks = g.k / 8;
  raw mine;
  load(k0 / 8, item, mine);
  const bool writer = blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
  double ss = 0.0;
  for (int64_t c0 = threadIdx.x; c0 < chunks; c0 += kBatch * kRingThreads) {
    raw o[kBatch];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) load(c0 + j * kRingThreads, c0 + j * kRingThreads < chunks, o[j]);
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int64_t c = c0 + j * kRingThreads;
      if (c >= chunks) continue;
      float v[8];
      sums(o[j], v);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        ss += static_cast<double>(v[e]) * v[e];
        if (writer) store_float(g.pre_res_out, g.pre_res_out_dt, 8 * c + e, v[e]);
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  double tot = 0.0;
#pragma unroll
  for (int q = 0; q < kRingWarps; ++q) tot += red[q];
  const float rstd = rms_rstd(tot, g.k, g.pre_eps);
  float v[8];
  sums(mine, v);
  uint32_t h[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const float o = v[e] * rstd * w[e];
    if constexpr (kX == SSMKIT_DTYPE_F16) {
      h[e] = __half_as_ushort(__float2half_rn(o));
    } else {
      h[e] = __bfloat16_as_ushort(__float2bfloat16_rn(o));
    }
    if (!item) h[e] = 0;
  }
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// The folded conv's update of channel ch (g.conv_state set): x is the projection's value v rounded to
// the output dtype (what the op-by-op path stores and causal_conv1d_update reads), then that op's
// arithmetic in its order: the bias, one fmaf a tap (the state's entries SL - (W - 1) .., x last), silu;
// the state shifted by one. ring_conv_load issues the channel's loads (the epilogue does it before the
// cluster's reduction, so that they land during it); ring_conv_finish uses them.
struct ring_conv_ops {
  uint32_t wb[kConvFoldMax];
  float sv[kConvFoldMax];
  uint32_t bb;
};

__device__ __forceinline__ void ring_conv_load(const gemm_args& g, int64_t ch, ring_conv_ops& o) {
  const int W = g.conv_width, SL = g.conv_sl;
  const float* st = g.conv_state + ch * SL;
#pragma unroll
  for (int k = 0; k < kConvFoldMax; ++k) {
    o.wb[k] = k < W ? ld_bits(g.conv_w, g.conv_w_dt, ch * W + k) : 0u;
    o.sv[k] = k < SL ? st[k] : 0.0f;
  }
  o.bb = g.conv_b != nullptr ? ld_bits(g.conv_b, g.conv_b_dt, ch) : 0u;
}

__device__ __forceinline__ void ring_conv_finish(const gemm_args& g, int64_t ch, float v,
                                                 const ring_conv_ops& o) {
  const int W = g.conv_width, SL = g.conv_sl;
  const float x = round_to(g.out_dt, v);
  float acc = g.conv_b != nullptr ? bits_value(g.conv_b_dt, o.bb) : 0.0f;
#pragma unroll
  for (int k = 0; k < kConvFoldMax; ++k) {
    const int m =
        SL - (W - 1) + k;  // < SL for k < W - 1; selected, not indexed (the array stays in registers)
    float tap = x;
#pragma unroll
    for (int j = 0; j < kConvFoldMax; ++j) tap = k < W - 1 && m == j ? o.sv[j] : tap;
    if (k < W) acc = fmaf(bits_value(g.conv_w_dt, o.wb[k]), tap, acc);
  }
  store_float(g.conv_out, g.conv_out_dt, ch, silu(acc));
  float* st = g.conv_state + ch * SL;
#pragma unroll
  for (int i = 0; i < kConvFoldMax; ++i) {
    if (i < SL) st[i] = i + 1 < SL ? o.sv[i + 1 < kConvFoldMax ? i + 1 : i] : x;
  }
}

// kConv: the folded conv (g.conv_state), its own kernel, so that the others keep their registers.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kNT, bool kConv>
__global__ void __launch_bounds__(kRingThreads, (ring_traits<kKind, kNT>::kBlocksPerSm))
    gemm_ring_kernel(gemm_args g, int64_t k_range, int splits, int64_t steps, int64_t panels) {
  SSMKIT_TRACE_SCOPE();
  using R = ring_traits<kKind, kNT>;
  using acc_t = typename std::conditional<R::kInt8, int, float>::type;
  static_assert(!R::kInt8 || (!kPlain && !kGrouped), "W8A8 takes packed weights and one scale a column");
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int gq = lane >> 2;
  const int tq = lane & 3;
  const int split = blockIdx.y;  // the block's rank in its cluster of `splits`
  const int64_t n_block = static_cast<int64_t>(blockIdx.x) * kRingBlockN;
  const int64_t grp = n_block / 64 + warp;
  const int64_t n_warp = grp * 64;
  const int64_t m0 = static_cast<int64_t>(blockIdx.z) * R::kRows;
  const int rows = static_cast<int>(min64(R::kRows, g.m - m0));
  const int64_t kb = split * k_range;  // a multiple of kUnitK
  const int64_t ke = min64(g.k, kb + k_range);
  const int nunits = static_cast<int>((ke - kb + R::kUnitK - 1) / R::kUnitK);
  const int units_max = static_cast<int>(k_range / R::kUnitK);

  uint8_t* xs = smem;  // (step, kXStepBytes)
  uint32_t* ring = reinterpret_cast<uint32_t*>(smem + units_max * kRingUnitSteps * R::kXStepBytes) +
                   warp * R::kDepth * kRingStageWords;
  float* scl = reinterpret_cast<float*>(smem + units_max * kRingUnitSteps * R::kXStepBytes + R::kRingBytes) +
               warp * units_max * 64;

  // Unit u of the range into ring slot u % kDepth (zeros past the range, past k and past the group's
  // panels); one commit group a unit, empty past the range. Lane l's piece i: packed, step 2i + l / 16
  // of the unit, 16 bytes l % 16 of its row; plain, column 8i + l / 4, 32-k piece l % 4.
  const int64_t grp_panels = n_warp < g.n ? min64(4, panels - grp * 4) : 0;
  const uint8_t* src0;   // piece 0 of unit 0
  int64_t piece_stride;  // bytes from piece i to i + 1
  int64_t unit_stride;   // bytes from unit u to u + 1
  bool lane_ok;          // the lane's pieces exist at all
  int64_t left0;         // packed: steps from the lane's first to the end; plain: columns
  uint32_t* dst0 = ring + (kPlain ? (lane >> 2) * kRingColWords + (lane & 3) * 4
                                  : (lane >> 4) * kRingStepWords + (lane & 15) * 4);
  constexpr int kDstStride = kPlain ? 8 * kRingColWords : 2 * kRingStepWords;  // words from piece i to i + 1
  if constexpr (kPlain) {
    const int64_t col = n_warp + (lane >> 2);
    src0 = g.w + col * g.w_row_bytes + kb / 2 + (lane & 3) * 16;
    piece_stride = 8 * g.w_row_bytes;
    unit_stride = R::kUnitK / 2;
    lane_ok = true;
    left0 = g.n - col;  // piece i's column exists while 8i < left0
  } else {
    const int64_t step = kb / R::kStepK + (lane >> 4);
    src0 = g.w + grp * 4 * steps * 64 + step * grp_panels * 64 + (lane & 15) * 16;
    piece_stride = 2 * grp_panels * 64;
    unit_stride = kRingUnitSteps * grp_panels * 64;
    lane_ok = (lane & 15) < grp_panels * 4;
    left0 = steps - step;  // piece i's step of unit u exists while 16u + 2i < left0
  }
  auto load_unit = [&](int u) {
    uint32_t* dst = dst0 + (u % R::kDepth) * kRingStageWords;
    const uint8_t* src = src0 + u * unit_stride;
    const bool unit_ok = u < nunits && lane_ok;
    if constexpr (kPlain) {
      // The unit's bytes of a row: whole 16-byte pieces (k % 32 == 0), all of them inside the row or none.
      const bool in_row =
          kb / 2 + static_cast<int64_t>(u) * (R::kUnitK / 2) + (lane & 3) * 16 < g.w_row_bytes;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const bool ok = unit_ok && in_row && 8 * i < left0;
        cp_async16(dst + i * kDstStride, ok ? src + i * piece_stride : g.w, ok);
      }
    } else {
      const int64_t left = left0 - static_cast<int64_t>(u) * kRingUnitSteps;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const bool ok = unit_ok && 2 * i < left;
        cp_async16(dst + i * kDstStride, ok ? src + i * piece_stride : g.w, ok);
      }
    }
    cp_async_commit();
  };
  // The weights and scales are constant: they go out before waiting on the kernel before this one. The
  // next kernel may launch now, or only after the wait (trigger_late).
  if (!g.trigger_late) pdl_trigger();
#pragma unroll
  for (int u = 0; u < R::kDepth; ++u) load_unit(u);

  // x rows m0.. of the range's steps (item i: row i / kXSteps, step i % kXSteps; zeros past m and k)
  // and, with groups, each lane's two columns' scales of every unit: every load issued before the
  // first store, so that their round trips overlap each other and the weights'.
  constexpr int kXSteps = R::kMaxUnits * kRingUnitSteps;
  constexpr int kXItems = (R::kRows * kXSteps + kRingThreads - 1) / kRingThreads;
  using xv_t = typename std::conditional<R::kInt8, uint32_t, uint4>::type;
  const int xsteps = units_max * kRingUnitSteps;
  constexpr int kScales = kGrouped ? 2 * R::kMaxUnits : 1;
  uint32_t sv[kScales];  // bits (ld_bits): all of them out before any is converted, at the store below
  if constexpr (kGrouped) {
    // Unit u of the range lies in group (kb / kUnitK + u) / (group_size / kUnitK): one division for
    // unit 0, then a count (a division a unit cost ~20 instructions each, before the wait).
    const int unit0 = static_cast<int>(kb / R::kUnitK);
    const int units_per_group = static_cast<int>(g.group_size / R::kUnitK);
    int grp_u = unit0 / units_per_group;          // unit u's group
    int grp_r = unit0 - grp_u * units_per_group;  // and its place in it
#pragma unroll
    for (int j = 0; j < kScales; ++j) {
      const int u = j >> 1;
      const int64_t col = n_warp + lane + 32 * (j & 1);
      sv[j] = u < nunits && col < g.n ? ld_bits(g.w_scale, g.w_scale_dt, col * g.groups + grp_u) : 0u;
      if ((j & 1) && ++grp_r == units_per_group) {
        grp_r = 0;
        ++grp_u;
      }
    }
  }
  // The folded norm (one row): the thread's item is row 0, step threadIdx.x; its norm weights are
  // constant and go out before the wait too.
  static_assert(kXSteps <= kRingThreads, "the folded norm's row 0 is one item a thread");
  const bool pre = !R::kInt8 && g.pre_x != nullptr;
  const bool pre_item = static_cast<int>(threadIdx.x) < xsteps;
  float pre_w[8];
  if constexpr (!R::kInt8) {
    if (pre) {
      // One 16-byte load (x's dtype) or two (float32) of the weights k0..k0 + 7 (gemm_w4a16_norm_folds).
      const int64_t c = (kb + 8 * threadIdx.x) / 8;
      const bool ok = pre_item && 8 * c < g.k;
      const uint4 zero = make_uint4(0, 0, 0, 0);
      if (g.pre_w_dt == SSMKIT_DTYPE_F32) {
        const uint4 lo = ok ? reinterpret_cast<const uint4*>(g.pre_w)[2 * c] : zero;
        const uint4 hi = ok ? reinterpret_cast<const uint4*>(g.pre_w)[2 * c + 1] : zero;
        const uint32_t u[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int e = 0; e < 8; ++e) pre_w[e] = __uint_as_float(u[e]);
      } else {
        const uint4 q = ok ? reinterpret_cast<const uint4*>(g.pre_w)[c] : zero;
#pragma unroll
        for (int e = 0; e < 8; ++e) pre_w[e] = half8_at<kX>(q, e);
      }
    }
  }
  // The folded conv: the epilogue's channels' weights and states (the state last written a token ago)
  // start toward L2 now. Block rank q of the cluster finishes columns [q cw, (q + 1) cw) of the tile.
  static_assert(!kConv || (!R::kInt8 && kNT == 1), "the folded conv takes one row");
  if constexpr (kConv) {
    const int cw = (kRingBlockN + splits - 1) / splits;
    for (int i = threadIdx.x; i < cw; i += kRingThreads) {
      const int64_t ch = n_block + split * cw + i - g.conv_col0;
      if (split * cw + i < kRingBlockN && ch >= 0 && ch < g.conv_dim) {
        prefetch_l2(static_cast<const char*>(g.conv_w) +
                    ch * g.conv_width * (g.conv_w_dt == SSMKIT_DTYPE_F32 ? 4 : 2));
        prefetch_l2(g.conv_state + ch * g.conv_sl);
      }
    }
  }
  pdl_wait();  // x is the kernel before's output, and out may still be read by it
  if (g.trigger_late) pdl_trigger();
  xv_t xv[kXItems];
  if constexpr (!R::kInt8) {
    if (pre) {
      const int64_t k0 = kb + 8 * threadIdx.x;
      const bool mine = pre_item && k0 < g.k;
      if (g.pre_res == nullptr) {
        xv[0] = ring_prenorm<kX, 0>(g, k0, mine, pre_w);
      } else if (g.pre_res_dt == SSMKIT_DTYPE_F32) {
        xv[0] = ring_prenorm<kX, 1>(g, k0, mine, pre_w);
      } else {
        xv[0] = ring_prenorm<kX, 2>(g, k0, mine, pre_w);
      }
#pragma unroll
      for (int j = 1; j < kXItems; ++j) xv[j] = make_uint4(0, 0, 0, 0);
    }
  }
  if (!pre) {
#pragma unroll
    for (int j = 0; j < kXItems; ++j) {
      const int i = threadIdx.x + j * kRingThreads;
      const int r = i / kXSteps, s = i % kXSteps;
      if constexpr (R::kInt8) {
        xv[j] =
            load_x8_word(static_cast<const int8_t*>(g.a), g.k, m0 + r, r < rows && s < xsteps, kb + 4 * s);
      } else {
        xv[j] =
            load_x16_8(static_cast<const uint16_t*>(g.a), g.k, m0 + r, r < rows && s < xsteps, kb + 8 * s);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kXItems; ++j) {
    const int i = threadIdx.x + j * kRingThreads;
    const int r = i / kXSteps, s = i % kXSteps;
    if (r < R::kRows && s < xsteps) {
      if constexpr (R::kInt8) {
        reinterpret_cast<uint32_t*>(xs + s * R::kXStepBytes)[r] = xv[j];
      } else {
        const uint4 v = xv[j];
        reinterpret_cast<uint4*>(xs + s * R::kXStepBytes)[r] =
            make_uint4(__byte_perm(v.x, v.y, 0x5410), __byte_perm(v.z, v.w, 0x5410),
                       __byte_perm(v.x, v.y, 0x7632), __byte_perm(v.z, v.w, 0x7632));
      }
    }
  }
  if constexpr (kGrouped) {
#pragma unroll
    for (int j = 0; j < kScales; ++j) {
      if ((j >> 1) < nunits) scl[(j >> 1) * 64 + lane + 32 * (j & 1)] = bits_value(g.w_scale_dt, sv[j]);
    }
  }
  __syncthreads();

  acc_t acc[4][kNT][4] = {};
  // Both of a lane's words of step sl of tile t: columns 16t + 2gq and 16t + 2gq + 1.
  auto words = [&](const uint32_t* st, int sl, int t, uint32_t& wa, uint32_t& wb) {
    if constexpr (kPlain) {
      wa = st[(16 * t + 2 * gq) * kRingColWords + sl];
      wb = st[(16 * t + 2 * gq + 1) * kRingColWords + sl];
    } else {
      const uint2 w2 = *reinterpret_cast<const uint2*>(st + sl * kRingStepWords + 16 * t + 2 * gq);
      wa = w2.x;
      wb = w2.y;
    }
  };
  // The unit in slot st summed into dst.
  auto unit = [&](const uint32_t* st, int u, acc_t(&dst)[4][kNT][4]) {
    const uint8_t* xu = xs + u * kRingUnitSteps * R::kXStepBytes;
    if constexpr (R::kInt8) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int s0 = 8 * h + tq, s1 = s0 + 4;
        uint32_t b0[kNT], b1[kNT];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          b0[nt] = reinterpret_cast<const uint32_t*>(xu + s0 * R::kXStepBytes)[gq + 8 * nt];
          b1[nt] = reinterpret_cast<const uint32_t*>(xu + s1 * R::kXStepBytes)[gq + 8 * nt];
        }
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          uint32_t a0, a1, a2, a3;
          words(st, s0, t, a0, a1);
          words(st, s1, t, a2, a3);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            mma_s8(dst[t][nt], a0 ^ 0x80808080u, a1 ^ 0x80808080u, a2 ^ 0x80808080u, a3 ^ 0x80808080u, b0[nt],
                   b1[nt]);
          }
        }
      }
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int sl = 4 * q + tq;  // this lane's step of the unit
        uint4 xv[kNT];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
          xv[nt] = reinterpret_cast<const uint4*>(xu + sl * R::kXStepBytes)[gq + 8 * nt];
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          uint32_t wa, wb;
          words(st, sl, t, wa, wb);
          uint32_t pa[4], pb[4];
          int4_word_to_pairs_lop3<kX, kPlain>(wa, pa);
          int4_word_to_pairs_lop3<kX, kPlain>(wb, pb);
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            mma_16bit<kX>(dst[t][nt], pa[0], pb[0], pa[1], pb[1], xv[nt].x, xv[nt].y);
            mma_16bit<kX>(dst[t][nt], pa[2], pb[2], pa[3], pb[3], xv[nt].z, xv[nt].w);
          }
        }
      }
    }
  };

  for (int u = 0; u < nunits; ++u) {
    cp_async_wait<R::kDepth - 1>();
    __syncwarp();
    const uint32_t* st = ring + (u % R::kDepth) * kRingStageWords;
    if constexpr (kGrouped) {
      acc_t tmp[4][kNT][4] = {};
      unit(st, u, tmp);
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        const float2 sc = *reinterpret_cast<const float2*>(scl + u * 64 + 16 * t + 2 * gq);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          acc[t][nt][0] = __fmaf_rn(tmp[t][nt][0], sc.x, acc[t][nt][0]);
          acc[t][nt][1] = __fmaf_rn(tmp[t][nt][1], sc.x, acc[t][nt][1]);
          acc[t][nt][2] = __fmaf_rn(tmp[t][nt][2], sc.y, acc[t][nt][2]);
          acc[t][nt][3] = __fmaf_rn(tmp[t][nt][3], sc.y, acc[t][nt][3]);
        }
      }
    } else {
      unit(st, u, acc);
    }
    __syncwarp();  // every lane is done with the slot before it is refilled
    load_unit(u + R::kDepth);
  }
  cp_async_wait<0>();

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The folded conv: the operands of the thread's first epilogue column (one row: column split * cw +
  // threadIdx.x of the tile, as in the loop below) go out now and land during the reduction.
  ring_conv_ops cops{};
  int64_t cch = -1;
  if constexpr (kConv) {
    const int cw = (kRingBlockN + splits - 1) / splits;
    const int c = split * cw + static_cast<int>(threadIdx.x);
    const int64_t ch = n_block + c - g.conv_col0;
    if (static_cast<int>(threadIdx.x) < cw && c < kRingBlockN && n_block + c < g.n && ch >= 0 &&
        ch < g.conv_dim) {
      cch = ch;
      ring_conv_load(g, ch, cops);
    }
  }
  // The splits of a column tile are one cluster: each block leaves its sums (row, column of the tile) in
  // its own shared memory, and after the cluster barrier block rank q finishes columns [q cw, (q + 1) cw)
  // by reading every block's sums through distributed shared memory, in split order (the same bits
  // every run).
  __syncthreads();  // every warp is done with the ring and x: the sums take their place
  acc_t* red = reinterpret_cast<acc_t*>(smem);
  constexpr int kRedStride = kRingBlockN + 4;
  // Element e of tile t, n8 tile nt: column 16t + 2gq + (e >> 1) of the warp, row 8nt + 2tq + (e & 1).
  static_for<4>([&](auto t) {
    static_for<kNT>([&](auto nt) {
      static_for<4>([&](auto e) {
        red[(8 * nt + 2 * tq + (e & 1)) * kRedStride + warp * 64 + 16 * t + 2 * gq + (e >> 1)] =
            acc[t][nt][e];
      });
    });
  });
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
  const int cw = (kRingBlockN + splits - 1) / splits;
  const int c0 = static_cast<int>(rank) * cw;
  const int c1 = min(kRingBlockN, c0 + cw);
  const uint32_t red_local = static_cast<uint32_t>(__cvta_generic_to_shared(red));
  for (int i = threadIdx.x; i < rows * cw; i += kRingThreads) {
    const int r = i / cw;
    const int c = c0 + (i - r * cw);
    const int64_t col = n_block + c;
    if (c >= c1 || col >= g.n) continue;
    const uint32_t off = red_local + static_cast<uint32_t>((r * kRedStride + c) * 4);
    acc_t v[16];
#pragma unroll
    for (int q = 0; q < 16; ++q) {
      v[q] = 0;
      if (q < splits) {
        uint32_t remote;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(off), "r"(q));
        if constexpr (R::kInt8) {
          asm volatile("ld.shared::cluster.s32 %0, [%1];" : "=r"(v[q]) : "r"(remote));
        } else {
          asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v[q]) : "r"(remote));
        }
      }
    }
    acc_t sum = 0;
#pragma unroll
    for (int q = 0; q < 16; ++q) {
      if (q < splits) sum += v[q];
    }
    const float o = finish_value<kGrouped>(g, static_cast<float>(sum), m0 + r, col);
    store_float(g.out, g.out_dt, (m0 + r) * g.n + col, o);
    if constexpr (kConv) {
      const int64_t ch = col - g.conv_col0;
      if (ch >= 0 && ch < g.conv_dim) {
        if (ch != cch) ring_conv_load(g, ch, cops);  // a later column of the thread (splits < 2)
        ring_conv_finish(g, ch, o, cops);
      }
    }
  }
  // No block leaves while another may still read its sums. The arrival needs no release: every remote
  // load above has returned (its value is in a stored sum), and the output's stores need not be waited
  // for (a release arrival waits for them: MEMBAR.ALL.GPU).
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
#else
  __trap();  // launched on sm_90 only (ring_usable)
#endif
}

// ---------------------------------------------------------------------------------------------------
// Tiled path (m > 64).
//
// Block tile 128 x 256 (128 x 128 with groups), k-steps of 64 through kStages shared-memory stages filled
// by cp.async. Warps 2 (m) x 4 (n) with 64 x 64 warp tiles (64 x 32 with groups). Per k-step and warp, lane
// (g, t) reads for each of its m16 tiles rows g and g + 8 at k [16 t, 16 t + 16), and for each n8 tile row g
// of the weights at the same k: the same mapping of lane k slots to k values as the skinny path (W8A8: words
// 0-1 / 2-3 of 16 bytes; W4A8: the two 8-k words of an 8-byte int4 chunk against even/odd bytes of x picked
// with byte permutes; W4A16: the two 8-k words against (x0 x4)(x1 x5)(x2 x6)(x3 x7) of 16 bytes of x).

// 128 x 256 block tiles (8 warps of 64 x 64) move 24 KiB of operands per 2M multiply-adds, about 12 bytes
// per clock per SM from L2 at the tensor cores' rate; 128 x 128 tiles would need twice that. Groups need
// a second accumulator set, so there the warps take 64 x 32 and the block 128 x 128.
template <int kKind, bool kGrouped>
struct tile_traits {
  static constexpr int kBM = 128;
  static constexpr int kBN = kGrouped ? 128 : 256;
  static constexpr int kBK = 64;
  static constexpr int kStages = 4;
  static constexpr int kWarpsM = 2;
  static constexpr int kWarpsN = 4;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kMTiles = kBM / kWarpsM / 16;  // 4 m16 tiles per warp
  static constexpr int kNTiles = kBN / kWarpsN / 8;   // 8 or 4 n8 tiles per warp
  static constexpr int kXBytes = kind_traits<kKind>::kXBytes;
  static constexpr int kARow = kBK * kXBytes;                       // 64 or 128 bytes
  static constexpr int kBRow = kKind == KIND_W8A8 ? kBK : kBK / 2;  // 64 or 32 bytes
  static constexpr int kAStage = kBM * kARow;
  static constexpr int kBStage = kBN * kBRow;
  static constexpr int kStage = kAStage + kBStage;
  static constexpr int kSmem = kStages * kStage;
};

// 16-byte chunk c of row r of an A stage: 128-byte rows (W4A16) flip bit 0 on odd rows, so that the two
// rows a quarter-warp reads use different bank groups; 64-byte rows need nothing.
// The (m, n) tile of linear tile index pid, the raster grouped by 8 tiles along m so that the tiles
// running together share weight tiles.
__device__ __forceinline__ int2 grouped_tile(int pid, int tiles_m, int tiles_n) {
  constexpr int kGroupM = 8;
  const int per_group = kGroupM * tiles_n;
  const int first_m = (pid / per_group) * kGroupM;
  const int group_rows = min(tiles_m - first_m, kGroupM);
  return make_int2(first_m + (pid % per_group) % group_rows, (pid % per_group) / group_rows);
}

template <int kKind>
__device__ __forceinline__ int tile_a_chunk(int r, int c) {
  if constexpr (kKind == KIND_W4A16) return c ^ (r & 1);
  return c;
}

template <int kKind, ssmkit_dtype kX, bool kGrouped>
__global__ void __launch_bounds__(tile_traits<kKind, kGrouped>::kThreads)
    gemm_tiled_kernel(gemm_args g, int tiles_m, int tiles_n) {
  using T = tile_traits<kKind, kGrouped>;
  constexpr bool kIntAcc = kind_traits<kKind>::kIntAcc && !kGrouped;
  using acc_t = typename std::conditional<kIntAcc, int, float>::type;
  using tmp_t = typename std::conditional<kind_traits<kKind>::kIntAcc, int, float>::type;
  extern __shared__ __align__(16) uint8_t smem[];

  const int2 tile = grouped_tile(blockIdx.x, tiles_m, tiles_n);
  const int tile_m = tile.x, tile_n = tile.y;
  const int64_t m0 = static_cast<int64_t>(tile_m) * T::kBM;
  const int64_t n0 = static_cast<int64_t>(tile_n) * T::kBN;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wm = warp / T::kWarpsN;
  const int wn = warp % T::kWarpsN;
  const int gq = lane >> 2;
  const int tq = lane & 3;
  const int64_t a_row_bytes = g.k * T::kXBytes;
  const int num_kt = static_cast<int>((g.k + T::kBK - 1) / T::kBK);

  auto load_stage = [&](int slot, int kt) {
    uint8_t* sa = smem + slot * T::kStage;
    uint8_t* sb = sa + T::kAStage;
    constexpr int kAChunks = T::kAStage / 16;
    constexpr int kAChunksPerRow = T::kARow / 16;
#pragma unroll
    for (int i = tid; i < kAChunks; i += T::kThreads) {
      const int r = i / kAChunksPerRow;
      const int c = i % kAChunksPerRow;
      const int64_t byte = static_cast<int64_t>(kt) * T::kARow + c * 16;
      const bool ok = m0 + r < g.m && byte < a_row_bytes;
      const uint8_t* src = static_cast<const uint8_t*>(g.a) + (ok ? (m0 + r) * a_row_bytes + byte : 0);
      cp_async16(sa + r * T::kARow + tile_a_chunk<kKind>(r, c) * 16, src, ok);
    }
    constexpr int kBChunks = T::kBStage / 16;
    constexpr int kBChunksPerRow = T::kBRow / 16;
#pragma unroll
    for (int i = tid; i < kBChunks; i += T::kThreads) {
      const int r = i / kBChunksPerRow;
      const int c = i % kBChunksPerRow;
      const int64_t byte = static_cast<int64_t>(kt) * T::kBRow + c * 16;
      const bool ok = n0 + r < g.n && byte < g.w_row_bytes;
      const uint8_t* src = g.w + (ok ? (n0 + r) * g.w_row_bytes + byte : 0);
      cp_async16(sb + r * T::kBRow + c * 16, src, ok);
    }
  };

  // W4A8 with groups sums each group in int32 (tmp) and scales it in at the group's end; W4A16 with
  // groups scales each k-step's partial sums in at once (see below) and needs no second set.
  constexpr bool kGroupTmp = kGrouped && kKind == KIND_W4A8;
  acc_t acc[T::kMTiles][T::kNTiles][4];
  tmp_t tmp[kGroupTmp ? T::kMTiles : 1][kGroupTmp ? T::kNTiles : 1][4];
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
    for (int nj = 0; nj < T::kNTiles; ++nj) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][nj][e] = 0;
    }
  }
  if constexpr (kGroupTmp) {
#pragma unroll
    for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
      for (int nj = 0; nj < T::kNTiles; ++nj) {
#pragma unroll
        for (int e = 0; e < 4; ++e) tmp[mi][nj][e] = 0;
      }
    }
  }

#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (s < num_kt) load_stage(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < num_kt; ++kt) {
    cp_async_wait<T::kStages - 2>();
    __syncthreads();
    {
      const int pf = kt + T::kStages - 1;
      if (pf < num_kt) load_stage(pf % T::kStages, pf);
      cp_async_commit();
    }
    const uint8_t* sa = smem + (kt % T::kStages) * T::kStage;
    const uint8_t* sb = sa + T::kAStage;
    const int a_row0 = wm * (T::kMTiles * 16) + gq;
    const int b_row0 = wn * (T::kNTiles * 8) + gq;
    auto dst = [&](int mi, int nj) -> auto& {
      if constexpr (kGroupTmp) {
        return tmp[mi][nj];
      } else {
        return acc[mi][nj];
      }
    };

    if constexpr (kKind == KIND_W8A8) {
      uint4 alo[T::kMTiles], ahi[T::kMTiles];
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
        const int r = a_row0 + mi * 16;
        alo[mi] = *reinterpret_cast<const uint4*>(sa + r * T::kARow + tq * 16);
        ahi[mi] = *reinterpret_cast<const uint4*>(sa + (r + 8) * T::kARow + tq * 16);
      }
#pragma unroll
      for (int nj = 0; nj < T::kNTiles; ++nj) {
        const uint4 b = *reinterpret_cast<const uint4*>(sb + (b_row0 + nj * 8) * T::kBRow + tq * 16);
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          mma_s8(dst(mi, nj), alo[mi].x, ahi[mi].x, alo[mi].y, ahi[mi].y, b.x, b.y);
          mma_s8(dst(mi, nj), alo[mi].z, ahi[mi].z, alo[mi].w, ahi[mi].w, b.z, b.w);
        }
      }
    } else if constexpr (kKind == KIND_W4A8) {
      // Per m16 tile: the (even, odd) words of x for the chunk's two 8-k words, rows g and g + 8.
      uint32_t ae[T::kMTiles][2][2], ao[T::kMTiles][2][2];  // [mi][word][row half]
#pragma unroll
      for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = a_row0 + mi * 16 + h * 8;
          const uint4 v = *reinterpret_cast<const uint4*>(sa + r * T::kARow + tq * 16);
          ae[mi][0][h] = __byte_perm(v.x, v.y, 0x6420);
          ao[mi][0][h] = __byte_perm(v.x, v.y, 0x7531);
          ae[mi][1][h] = __byte_perm(v.z, v.w, 0x6420);
          ao[mi][1][h] = __byte_perm(v.z, v.w, 0x7531);
        }
      }
#pragma unroll
      for (int nj = 0; nj < T::kNTiles; ++nj) {
        const uint2 b = *reinterpret_cast<const uint2*>(sb + (b_row0 + nj * 8) * T::kBRow + tq * 8);
        uint32_t be0, bo0, be1, bo1;
        int4_to_s8_even_odd(b.x, be0, bo0);
        int4_to_s8_even_odd(b.y, be1, bo1);
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
          mma_s8(dst(mi, nj), ae[mi][0][0], ae[mi][0][1], ao[mi][0][0], ao[mi][0][1], be0, bo0);
          mma_s8(dst(mi, nj), ae[mi][1][0], ae[mi][1][1], ao[mi][1][0], ao[mi][1][1], be1, bo1);
        }
      }
    } else if constexpr (kGrouped) {
      // W4A16 with groups: each (m16, n8) tile's two mma of one 8-k word sum into four temporaries
      // that are scaled into acc right away (every group is a whole number of k-steps), so no second
      // accumulator set is needed.
      const int64_t gi = static_cast<int64_t>(kt) * T::kBK / g.group_size;
      float sc[T::kNTiles][2];
#pragma unroll
      for (int nj = 0; nj < T::kNTiles; ++nj) {
        const int64_t c0 = n0 + wn * (T::kNTiles * 8) + nj * 8 + tq * 2;
        sc[nj][0] = c0 < g.n ? group_scale(g, c0, gi) : 0.0f;
        sc[nj][1] = c0 + 1 < g.n ? group_scale(g, c0 + 1, gi) : 0.0f;
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t af[T::kMTiles][2][4];  // [mi][row half][(x0 x4) (x1 x5) (x2 x6) (x3 x7)]
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int r = a_row0 + mi * 16 + rh * 8;
            const uint4 v =
                *reinterpret_cast<const uint4*>(sa + r * T::kARow + tile_a_chunk<kKind>(r, tq * 2 + h) * 16);
            af[mi][rh][0] = __byte_perm(v.x, v.z, 0x5410);
            af[mi][rh][1] = __byte_perm(v.x, v.z, 0x7632);
            af[mi][rh][2] = __byte_perm(v.y, v.w, 0x5410);
            af[mi][rh][3] = __byte_perm(v.y, v.w, 0x7632);
          }
        }
#pragma unroll
        for (int nj = 0; nj < T::kNTiles; ++nj) {
          const uint32_t w =
              *reinterpret_cast<const uint32_t*>(sb + (b_row0 + nj * 8) * T::kBRow + tq * 8 + h * 4);
          uint32_t p[4];
          int4_to_16bit_pairs<kX>(w, p);
#pragma unroll
          for (int mi = 0; mi < T::kMTiles; ++mi) {
            float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mma_16bit<kX>(t, af[mi][0][0], af[mi][1][0], af[mi][0][1], af[mi][1][1], p[0], p[1]);
            mma_16bit<kX>(t, af[mi][0][2], af[mi][1][2], af[mi][0][3], af[mi][1][3], p[2], p[3]);
            acc[mi][nj][0] = __fmaf_rn(t[0], sc[nj][0], acc[mi][nj][0]);
            acc[mi][nj][1] = __fmaf_rn(t[1], sc[nj][1], acc[mi][nj][1]);
            acc[mi][nj][2] = __fmaf_rn(t[2], sc[nj][0], acc[mi][nj][2]);
            acc[mi][nj][3] = __fmaf_rn(t[3], sc[nj][1], acc[mi][nj][3]);
          }
        }
      }
    } else {
      // W4A16, one 8-k word of the weight chunk at a time to bound the live fragments.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t af[T::kMTiles][2][4];  // [mi][row half][(x0 x4) (x1 x5) (x2 x6) (x3 x7)]
#pragma unroll
        for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int r = a_row0 + mi * 16 + rh * 8;
            const uint4 v =
                *reinterpret_cast<const uint4*>(sa + r * T::kARow + tile_a_chunk<kKind>(r, tq * 2 + h) * 16);
            af[mi][rh][0] = __byte_perm(v.x, v.z, 0x5410);
            af[mi][rh][1] = __byte_perm(v.x, v.z, 0x7632);
            af[mi][rh][2] = __byte_perm(v.y, v.w, 0x5410);
            af[mi][rh][3] = __byte_perm(v.y, v.w, 0x7632);
          }
        }
#pragma unroll
        for (int nj = 0; nj < T::kNTiles; ++nj) {
          const uint32_t w =
              *reinterpret_cast<const uint32_t*>(sb + (b_row0 + nj * 8) * T::kBRow + tq * 8 + h * 4);
          uint32_t p[4];
          int4_to_16bit_pairs<kX>(w, p);
#pragma unroll
          for (int mi = 0; mi < T::kMTiles; ++mi) {
            mma_16bit<kX>(dst(mi, nj), af[mi][0][0], af[mi][1][0], af[mi][0][1], af[mi][1][1], p[0], p[1]);
            mma_16bit<kX>(dst(mi, nj), af[mi][0][2], af[mi][1][2], af[mi][0][3], af[mi][1][3], p[2], p[3]);
          }
        }
      }
    }

    if constexpr (kGroupTmp) {
      // k is a whole number of groups and every group a whole number of k-steps.
      const int64_t k_end = static_cast<int64_t>(kt + 1) * T::kBK;
      if (k_end % g.group_size == 0) {
        const int64_t gi = k_end / g.group_size - 1;
#pragma unroll
        for (int nj = 0; nj < T::kNTiles; ++nj) {
          const int64_t c0 = n0 + wn * (T::kNTiles * 8) + nj * 8 + tq * 2;
          const float s0 = c0 < g.n ? group_scale(g, c0, gi) : 0.0f;
          const float s1 = c0 + 1 < g.n ? group_scale(g, c0 + 1, gi) : 0.0f;
#pragma unroll
          for (int mi = 0; mi < T::kMTiles; ++mi) {
            acc[mi][nj][0] = __fmaf_rn(static_cast<float>(tmp[mi][nj][0]), s0, acc[mi][nj][0]);
            acc[mi][nj][1] = __fmaf_rn(static_cast<float>(tmp[mi][nj][1]), s1, acc[mi][nj][1]);
            acc[mi][nj][2] = __fmaf_rn(static_cast<float>(tmp[mi][nj][2]), s0, acc[mi][nj][2]);
            acc[mi][nj][3] = __fmaf_rn(static_cast<float>(tmp[mi][nj][3]), s1, acc[mi][nj][3]);
#pragma unroll
            for (int e = 0; e < 4; ++e) tmp[mi][nj][e] = 0;
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue from registers: the scales and bias of this thread's rows and columns once, then each
  // pair of outputs (a 4- or 8-byte store when n is even, so that pairs stay aligned).
  const bool pairs = (g.n & 1) == 0;
  const int64_t row0 = m0 + wm * (T::kMTiles * 16) + gq;
  const int64_t col0 = n0 + wn * (T::kNTiles * 8) + tq * 2;
  float ws[T::kNTiles][2], bs[T::kNTiles][2];
#pragma unroll
  for (int nj = 0; nj < T::kNTiles; ++nj) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int64_t col = col0 + nj * 8 + c;
      ws[nj][c] = !kGrouped && col < g.n ? col_scale(g, col) : 1.0f;
      bs[nj][c] = col < g.n ? col_bias(g, col) : 0.0f;
    }
  }
#pragma unroll
  for (int mi = 0; mi < T::kMTiles; ++mi) {
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      const int64_t row = row0 + mi * 16 + rh * 8;
      if (row >= g.m) continue;
      const float as = row_scale(g, row);
#pragma unroll
      for (int nj = 0; nj < T::kNTiles; ++nj) {
        const int64_t col = col0 + nj * 8;
        if (col >= g.n) continue;
        const float v0 = finish<kGrouped>(static_cast<float>(acc[mi][nj][rh * 2]), as, ws[nj][0], bs[nj][0]);
        const float v1 =
            finish<kGrouped>(static_cast<float>(acc[mi][nj][rh * 2 + 1]), as, ws[nj][1], bs[nj][1]);
        if (col + 1 < g.n && pairs) {
          store_float2(g.out, g.out_dt, row * g.n + col, v0, v1);
        } else {
          store_float(g.out, g.out_dt, row * g.n + col, v0);
          if (col + 1 < g.n) store_float(g.out, g.out_dt, row * g.n + col + 1, v1);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// wgmma path (sm_90a, W8A8 and W4A8 without groups, m > 64).
//
// Block tile 128 x 256, k-tiles of 128 int8 (one 128-byte row per m or n index), 4 shared-memory stages
// (48 KiB a stage: A 16 KiB, B 32 KiB) filled by the tensor memory accelerator (cp.async.bulk.tensor,
// one 2-D box of A and one of B per stage, from tensor maps encoded on the host), which writes the
// 128-byte swizzle that wgmma's descriptors name: 16-byte chunk c of row r sits at r * 128 + ((c ^ (r mod
// 8)) * 16), each 8-row atom 1024 bytes (the stage bases are 1024-aligned); a k32 step inside the
// 128-byte row advances the descriptor's start address by 32 bytes. Rows past m or n and bytes past k are
// zero-filled by the copy engine (the box is counted whole in the transaction bytes).
// Warp-specialized and persistent: three warpgroups, one block an SM, each block walks tiles blockIdx.x,
// + gridDim.x, ... in the grouped raster (8 tiles along m share a weight panel). Warpgroup 0 is the
// producer (W8A8: one thread issues the copies, 40 registers after setmaxnreg; W4A8: one thread copies
// A, and all 128 load int4 B with 16-byte loads, widen it and store it in the swizzle, then fence the
// async proxy and arrive, 88 registers; with the ring (wgmma_layout<true>), thread 0 also keeps the copy
// engine 3 k-tiles ahead on the int4 boxes, raw_full / raw_empty hand the raw stages over, and the 128
// threads read their 8 chunks from the raw stage instead of global memory, widen them and release it
// with one arrival each after the proxy fence that also publishes their int8 stores); warpgroups 1 and 2 are
// the consumers, each owning 64 rows x 256 columns: per k-tile four wgmma m64n256k32 (s8 x s8 -> s32; W4A8:
// s8 x u8, the producers having widened each int4 w to the byte w + 8, and the consumers remove 8 times each
// row's sum of x, which row_sum_s8_kernel makes before the launch) from shared memory, 128 int32
// accumulators a thread (232 or 208 registers). Stages hand over through mbarriers: full[s] (the producer's
// arrive with the expected bytes, which the copy engine completes; W4A8 adds the 128 widening threads'
// arrivals) and empty[s] (one arrive per consumer warp once the wgmmas that read the stage have
// finished: wait_group 1 after issuing k-tile kt releases kt - 1, so one group stays in flight). The
// producer runs up to four stages ahead, across tile boundaries, so the next tile's loads overlap the
// epilogue. The epilogue takes the tile's scales and bias from shared memory, where each consumer
// warpgroup staged them; a tile wholly inside the output (rows 16-byte aligned) passes through each
// warp's staging rows in shared memory and leaves as 16-byte stores, an edge tile is stored straight from
// the accumulators' fragment layout as the tiled path does (per n8 tile: rows g and g + 8 of the warp's
// 16, columns 2 t and 2 t + 1).
struct wgmma_traits {
  static constexpr int kBM = 128;
  static constexpr int kBN = 256;
  static constexpr int kBK = 128;
  static constexpr int kStages = 4;
  static constexpr int kConsumers = 2;                     // warpgroups of 64 rows
  static constexpr int kThreads = 128 * (1 + kConsumers);  // producer warpgroup first
  static constexpr int kAStage = kBM * kBK;
  static constexpr int kBStage = kBN * kBK;
  static constexpr int kStage = kAStage + kBStage;
  static constexpr int kBarriers = kStages * kStage;  // offset of full[kStages], empty[kStages]
  // The epilogue's float32 factors, per consumer warpgroup and tile parity: the tile's 256 column
  // scales, 256 biases and the warpgroup's 64 row scales.
  static constexpr int kEpiFloats = 2 * kBN + 64;
  static constexpr int kEpi = kBarriers + 2 * kStages * 8;
  // + room to align the base to 1024 bytes
  static constexpr int kSmem = kEpi + kConsumers * 2 * kEpiFloats * 4 + 1024;
  // Registers a thread after setmaxnreg (multiples of 8; the block's 384 x 168 in all): the W8A8
  // producer only issues copies; the W4A8 one holds two k-tiles of int4 loads (64 registers).
  static constexpr int kProducerRegs8 = 40;
  static constexpr int kConsumerRegs8 = 232;
  static constexpr int kProducerRegs4 = 88;
  static constexpr int kConsumerRegs4 = 208;
  static_assert(kProducerRegs8 * 128 + kConsumerRegs8 * 128 * kConsumers <= 168 * kThreads);
  static_assert(kProducerRegs4 * 128 + kConsumerRegs4 * 128 * kConsumers <= 168 * kThreads);
};

// The shared-memory layout of the wgmma kernel. kRing (W4A8 through the raw ring, the default): 3 int8 stages
// and after them a ring of 4 raw int4 stages (256 rows x 64 bytes, 16 KiB each, unswizzled) that the copy
// engine fills up to 3 k-tiles ahead of the widening; otherwise 4 int8 stages. Then the barriers (full,
// empty of the int8 stages; raw_full, raw_empty of the ring) and the epilogue's factors.
template <bool kRing>
struct wgmma_layout {
  using T = wgmma_traits;
  static constexpr int kStages = kRing ? 3 : T::kStages;
  static constexpr int kRawStages = kRing ? 4 : 0;
  static constexpr int kRawStage = T::kBN * T::kBK / 2;
  static constexpr int kRaw = kStages * T::kStage;  // 1024-aligned
  static constexpr int kBarriers = kRaw + kRawStages * kRawStage;
  static constexpr int kEpi = kBarriers + 2 * (kStages + kRawStages) * 8;
  // Each consumer warp's staging of its output rows (8 rows of 64 bytes at an 80-byte pitch, so that
  // the eight rows of one fragment write start in distinct banks).
  static constexpr int kOutPitch = 80;
  static constexpr int kOutWarp = 8 * kOutPitch;
  static constexpr int kOut = kEpi + T::kConsumers * 2 * T::kEpiFloats * 4;
  static constexpr int kSmem = kOut + T::kConsumers * 4 * kOutWarp + 1024;
  static_assert(kRaw % 1024 == 0 && kRawStage % 1024 == 0 && kOut % 16 == 0);
  static_assert(kSmem <= 227 * 1024);
};

// The wgmma kernel's device helpers, compiled only where its body is (sm_90a device code).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// A shared-memory matrix descriptor for a K-major operand in the 128-byte swizzle: start address,
// leading offset unused (1), stride 1024 bytes between 8-row atoms, swizzle mode 1 (bits 62-63).
__device__ __forceinline__ uint64_t wgmma_desc(const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Shared memory written through the generic proxy (cp.async) and read next by wgmma (the async proxy).
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving reads or writes of a wgmma's register operand (an accumulator, an A
// fragment) across a wgmma still in flight.
template <class Reg>
__device__ __forceinline__ void fence_operand(Reg& r) {
  static_assert(sizeof(Reg) == 4);
  asm volatile("" : "+r"(r)::"memory");
}

// The 128 int32 accumulators of an m64n256 wgmma: their place in the instruction (operands 0 .. 127) and
// their operand list.
#define SSMKIT_WGMMA_D128                                                                                  \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "  \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "   \
  "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "   \
  "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, "   \
  "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, " \
  "%102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, " \
  "%119, %120, %121, %122, %123, %124, %125, %126, %127}, "
#define SSMKIT_WGMMA_D128_OUT(d)                                                                            \
  "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),           \
      "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), \
      "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]),            \
      "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]),            \
      "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]),            \
      "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]),            \
      "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]),            \
      "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]),            \
      "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63]), "+r"(d[64]),            \
      "+r"(d[65]), "+r"(d[66]), "+r"(d[67]), "+r"(d[68]), "+r"(d[69]), "+r"(d[70]), "+r"(d[71]),            \
      "+r"(d[72]), "+r"(d[73]), "+r"(d[74]), "+r"(d[75]), "+r"(d[76]), "+r"(d[77]), "+r"(d[78]),            \
      "+r"(d[79]), "+r"(d[80]), "+r"(d[81]), "+r"(d[82]), "+r"(d[83]), "+r"(d[84]), "+r"(d[85]),            \
      "+r"(d[86]), "+r"(d[87]), "+r"(d[88]), "+r"(d[89]), "+r"(d[90]), "+r"(d[91]), "+r"(d[92]),            \
      "+r"(d[93]), "+r"(d[94]), "+r"(d[95]), "+r"(d[96]), "+r"(d[97]), "+r"(d[98]), "+r"(d[99]),            \
      "+r"(d[100]), "+r"(d[101]), "+r"(d[102]), "+r"(d[103]), "+r"(d[104]), "+r"(d[105]), "+r"(d[106]),     \
      "+r"(d[107]), "+r"(d[108]), "+r"(d[109]), "+r"(d[110]), "+r"(d[111]), "+r"(d[112]), "+r"(d[113]),     \
      "+r"(d[114]), "+r"(d[115]), "+r"(d[116]), "+r"(d[117]), "+r"(d[118]), "+r"(d[119]), "+r"(d[120]),     \
      "+r"(d[121]), "+r"(d[122]), "+r"(d[123]), "+r"(d[124]), "+r"(d[125]), "+r"(d[126]), "+r"(d[127])

// d += a (64 x 32, shared memory) * b (256 x 32, shared memory)^T in int32: one wgmma of the warpgroup.
// kU8: b's bytes are unsigned (the int4 weights' w + 8, see int4x32_to_u8).
#define SSMKIT_WGMMA_M64N256K32(btype)                                              \
  asm volatile(                                                                     \
      "{\n"                                                                         \
      ".reg .pred p;\n"                                                             \
      "setp.ne.b32 p, %130, 0;\n"                                                   \
      "wgmma.mma_async.sync.aligned.m64n256k32.s32.s8." btype " " SSMKIT_WGMMA_D128 \
      "%128, %129, p;\n"                                                            \
      "}\n"                                                                         \
      : SSMKIT_WGMMA_D128_OUT(d)                                                    \
      : "l"(desc_a), "l"(desc_b), "n"(1))
template <bool kU8 = false>
__device__ __forceinline__ void wgmma_s8_m64n256k32(int (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (kU8) {
    SSMKIT_WGMMA_M64N256K32("u8");
  } else {
    SSMKIT_WGMMA_M64N256K32("s8");
  }
#else
  (void)d, (void)desc_a, (void)desc_b;
  __trap();
#endif
}
#undef SSMKIT_WGMMA_M64N256K32

// 16 bytes of int4 (32 values, low nibble first) as 32 bytes of w + 8 (0 .. 15, unsigned) in order: values
// 0-15 in lo, 16-31 in hi: five instructions a word, where widening to signed int8 took eleven; the wgmma
// kernel takes its products as s8 x u8 and removes 8 times each row's sum of x.
__device__ __forceinline__ void int4x32_to_u8(const uint4& v, uint4& lo, uint4& hi) {
  const uint32_t in[4] = {v.x, v.y, v.z, v.w};
  uint32_t out[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // Bytes: values 0, 2, 4, 6 and 1, 3, 5, 7, each nibble ^ 8.
    const uint32_t even = and_or_xor<false>(in[j], 0x0f0f0f0fu, 0x08080808u);
    const uint32_t odd = and_or_xor<false>(in[j] >> 4, 0x0f0f0f0fu, 0x08080808u);
    out[2 * j] = __byte_perm(even, odd, 0x5140);
    out[2 * j + 1] = __byte_perm(even, odd, 0x7362);
  }
  lo = make_uint4(out[0], out[1], out[2], out[3]);
  hi = make_uint4(out[4], out[5], out[6], out[7]);
}

// mbarrier and bulk-tensor-copy helpers (sm_90; the wgmma kernel is their only user).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}
// Makes the initialized barriers visible to the copy engine (the async proxy) and the other threads.
__device__ __forceinline__ void mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}
// This thread's arrival, and `bytes` more that the barrier's phase waits for (the copies' completion).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
#endif
}
// Waits until the phase of the given parity has completed (a fresh barrier is in phase 0, so waiting
// for parity 1 returns at once).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (done == 0);
#endif
}
// A 2-D box of the tensor map at (inner, outer) into shared memory, completing on bar.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int inner, int outer,
                                            uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], "
      "[%2];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(inner), "r"(outer)
      : "memory");
#endif
}
// A 2-D box of shared memory (the tensor map's box and swizzle) into the tensor map's tensor at (inner,
// outer), by the copy engine, in this thread's current bulk group; the engine clips what lies outside.
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, const void* src, int inner, int outer) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(smem_addr(src)), "r"(inner), "r"(outer)
               : "memory");
#endif
}
// Closes this thread's current bulk group.
__device__ __forceinline__ void bulk_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
// Waits until every bulk group this thread committed has read its shared memory.
__device__ __forceinline__ void bulk_wait_read() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
// `bytes` (a multiple of 16, both addresses 16-byte aligned) from global memory into shared memory by
// the bulk copy engine, completing on bar.
__device__ __forceinline__ void bulk_load_1d(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
#endif
}

#endif  // defined(__CUDA_ARCH_FEAT_SM90_ALL)

// store_float2 and store_float for an output dtype known at compile time.
template <ssmkit_dtype kOut>
__device__ __forceinline__ void store_pair_as(void* p, int64_t i, float v0, float v1) {
  if constexpr (kOut == SSMKIT_DTYPE_F16) {
    *reinterpret_cast<__half2*>(static_cast<__half*>(p) + i) = __floats2half2_rn(v0, v1);
  } else if constexpr (kOut == SSMKIT_DTYPE_BF16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p) + i) = __floats2bfloat162_rn(v0, v1);
  } else {
    *reinterpret_cast<float2*>(static_cast<float*>(p) + i) = make_float2(v0, v1);
  }
}
// Two 16-bit outputs of dtype kOut (not float32) as one word, v0 in the low half.
template <ssmkit_dtype kOut>
__device__ __forceinline__ uint32_t pack_pair_as(float v0, float v1) {
  static_assert(kOut != SSMKIT_DTYPE_F32);
  if constexpr (kOut == SSMKIT_DTYPE_F16) {
    const __half2 h = __floats2half2_rn(v0, v1);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v0, v1);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}
template <ssmkit_dtype kOut>
__device__ __forceinline__ void store_one_as(void* p, int64_t i, float v) {
  if constexpr (kOut == SSMKIT_DTYPE_F16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else if constexpr (kOut == SSMKIT_DTYPE_BF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// A wgmma kernel's tile store: staged_store(tag) or tile_store(tag) as `staged` says, tag g's output dtype
// as an integral_constant.
template <class Staged, class Tile>
__device__ __forceinline__ void store_by_out_dtype(const gemm_args& g, bool staged, Staged&& staged_store,
                                                   Tile&& tile_store) {
  auto store = [&](auto tag) {
    if (staged) {
      staged_store(tag);
    } else {
      tile_store(tag);
    }
  };
  if (g.out_dt == SSMKIT_DTYPE_BF16) {
    store(std::integral_constant<ssmkit_dtype, SSMKIT_DTYPE_BF16>{});
  } else if (g.out_dt == SSMKIT_DTYPE_F16) {
    store(std::integral_constant<ssmkit_dtype, SSMKIT_DTYPE_F16>{});
  } else {
    store(std::integral_constant<ssmkit_dtype, SSMKIT_DTYPE_F32>{});
  }
}

template <ssmkit_dtype kX, bool kInt4, bool kRing>
__global__ void __launch_bounds__(wgmma_traits::kThreads, 1)
    gemm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_w,
                      gemm_args g, int tiles_m, int tiles_n, const int* __restrict__ xsum) {
  using T = wgmma_traits;
  using L = wgmma_layout<kRing>;
  static_assert(!kRing || kInt4);
  // Built for a target without wgmma, the kernel traps; the host launches it only on sm_90 devices, whose
  // code in the release build is sm_90a.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  // The swizzle atoms must sit at 1024-byte boundaries of the shared address space.
  const uint32_t raw_addr = smem_addr(smem_raw);
  uint8_t* smem = smem_raw + ((1024 - (raw_addr & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBarriers);  // (kStages)
  uint64_t* empty = full + L::kStages;                                // (kStages)
  uint64_t* raw_full = empty + L::kStages;                            // (kRawStages)
  uint64_t* raw_empty = raw_full + L::kRawStages;                     // (kRawStages)

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wg = warp >> 2;
  const int num_kt = static_cast<int>((g.k + T::kBK - 1) / T::kBK);
  // Units of work: the output tiles in the grouped raster, every gridDim.x-th one for this block.
  const int units = tiles_m * tiles_n;
  const int first_unit = static_cast<int>(blockIdx.x);
  const int unit_stride = static_cast<int>(gridDim.x);
  auto tile_of = [&](int u) { return grouped_tile(u, tiles_m, tiles_n); };

  if (tid == 0) {
    for (int s = 0; s < L::kStages; ++s) {
      // W4A8: the producer's arrival with A's bytes, and one from each thread that widened B.
      mbar_init(full + s, kInt4 ? 1 + 128 : 1);
      // Each consumer warp.
      mbar_init(empty + s, T::kConsumers * 4);
    }
    for (int r = 0; r < L::kRawStages; ++r) {
      mbar_init(raw_full + r, 1);     // the issuing thread's arrival with the box's bytes
      mbar_init(raw_empty + r, 128);  // each producer thread, once it has read the stage
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    if constexpr (kRing) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs4) : "memory");
      // Thread 0 keeps the copy engine up to kRawStages - 1 k-tiles ahead: each k-tile's int4 box (256
      // rows x 64 bytes, rows past n and bytes past k read as zeros) into raw stage it % kRawStages. Every
      // producer thread then reads its 8 chunks of 16 bytes (rows p * 32 + tid / 4, chunk tid % 4: the
      // warp's 32 loads are 512 consecutive bytes), widens them, stores them in the int8 stage's swizzle
      // as the register form does, and releases the raw stage after the int8 stage's proxy fence.
      const int row_in = tid >> 2;  // + 32 p
      const int chunk = tid & 3;    // int4 chunk of the row: int8 chunks 2 chunk, 2 chunk + 1
      uint8_t* raw = smem + L::kRaw;
      int ua = first_unit, kta = 0;  // the next k-tile thread 0 issues
      uint32_t ia = 0;               // its index over the block's k-tiles
      auto issue = [&] {
        const int r = static_cast<int>(ia % L::kRawStages);
        mbar_wait(raw_empty + r, ((ia / L::kRawStages) & 1) ^ 1);
        mbar_arrive_expect_tx(raw_full + r, L::kRawStage);
        tma_load_2d(raw + r * L::kRawStage, &map_w, kta * (T::kBK / 2), tile_of(ua).y * T::kBN, raw_full + r);
        if (++kta == num_kt) kta = 0, ua += unit_stride;
        ++ia;
      };
      if (tid == 0) {
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_w)) : "memory");
        for (int j = 0; j < L::kRawStages - 1 && ua < units; ++j) issue();
      }
      uint32_t it = 0;
      for (int u = first_unit; u < units; u += unit_stride) {
        const int64_t m_tile = tile_of(u).x;
        for (int kt = 0; kt < num_kt; ++kt, ++it) {
          // Thread 0 reuses the raw stage read one step ago, once every producer warp has read it.
          if (tid == 0 && ua < units) issue();
          const int r = static_cast<int>(it % L::kRawStages);
          mbar_wait(raw_full + r, (it / L::kRawStages) & 1);
          const uint8_t* rs = raw + r * L::kRawStage;
          uint4 v[8];
#pragma unroll
          for (int p = 0; p < 8; ++p) {
            v[p] = *reinterpret_cast<const uint4*>(rs + (p * 32 + row_in) * (T::kBK / 2) + chunk * 16);
          }
          const int s = static_cast<int>(it % L::kStages);
          mbar_wait(empty + s, ((it / L::kStages) & 1) ^ 1);
          uint8_t* sa = smem + s * T::kStage;
          if (tid == 0) {
            mbar_arrive_expect_tx(full + s, T::kAStage);
            tma_load_2d(sa, &map_a, kt * T::kBK, static_cast<int>(m_tile) * T::kBM, full + s);
          }
          uint8_t* sb = sa + T::kAStage;
#pragma unroll
          for (int p = 0; p < 8; ++p) {
            const int rr = p * 32 + row_in;
            uint4 lo, hi;
            int4x32_to_u8(v[p], lo, hi);
            *reinterpret_cast<uint4*>(sb + rr * 128 + (((2 * chunk) ^ (rr & 7)) << 4)) = lo;
            *reinterpret_cast<uint4*>(sb + rr * 128 + (((2 * chunk + 1) ^ (rr & 7)) << 4)) = hi;
          }
          // The stores are read next by wgmma (the async proxy); the same fence puts this thread's reads
          // of the raw stage before the copy engine's refill of it (one fence a k-tile, not two).
          fence_proxy_async_shared();
          mbar_arrive(full + s);
          mbar_arrive(raw_empty + r);
        }
      }
    } else if constexpr (kInt4) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs4) : "memory");
      // Every producer thread widens int4 weights into the B stage: 16 bytes (32 k) of a row a load, 4
      // threads a row (its 64 bytes of the k-tile), 32 rows a pass, 8 passes; the loads of the next
      // k-tile are in flight while this one is widened and stored.
      const int row_in = tid >> 2;  // + 32 p
      const int chunk = tid & 3;    // int4 chunk of the row: int8 chunks 2 chunk, 2 chunk + 1
      auto load = [&](uint4(&v)[8], int u, int kt) {
        const int64_t n0 = static_cast<int64_t>(tile_of(u).y) * T::kBN;
        const int64_t byte = static_cast<int64_t>(kt) * (T::kBK / 2) + chunk * 16;
#pragma unroll
        for (int p = 0; p < 8; ++p) {
          const int64_t row = n0 + p * 32 + row_in;
          v[p] = row < g.n && byte < g.w_row_bytes ? ldg_stream16(g.w + row * g.w_row_bytes + byte)
                                                   : make_uint4(0, 0, 0, 0);
        }
      };
      if (tid == 0)
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
      // Two register buffers in turn (no copies between them, which would wait for the loads): a step
      // loads the next k-tile into one while it widens and stores the other.
      uint4 buf0[8], buf1[8];
      int u = first_unit, kt = 0;
      uint32_t it = 0;
      if (u < units) load(buf0, u, 0);
      auto step = [&](uint4(&cur)[8], uint4(&nxt)[8]) {
        int u2 = u, kt2 = kt + 1;
        if (kt2 == num_kt) kt2 = 0, u2 += unit_stride;
        if (u2 < units) load(nxt, u2, kt2);
        const int s = static_cast<int>(it % L::kStages);
        mbar_wait(empty + s, ((it / L::kStages) & 1) ^ 1);
        uint8_t* sa = smem + s * T::kStage;
        if (tid == 0) {
          mbar_arrive_expect_tx(full + s, T::kAStage);
          tma_load_2d(sa, &map_a, kt * T::kBK, tile_of(u).x * T::kBM, full + s);
        }
        uint8_t* sb = sa + T::kAStage;
#pragma unroll
        for (int p = 0; p < 8; ++p) {
          const int r = p * 32 + row_in;
          uint4 lo, hi;
          int4x32_to_u8(cur[p], lo, hi);
          *reinterpret_cast<uint4*>(sb + r * 128 + (((2 * chunk) ^ (r & 7)) << 4)) = lo;
          *reinterpret_cast<uint4*>(sb + r * 128 + (((2 * chunk + 1) ^ (r & 7)) << 4)) = hi;
        }
        // The stores are read next by wgmma (the async proxy).
        fence_proxy_async_shared();
        mbar_arrive(full + s);
        u = u2, kt = kt2, ++it;
        return u < units;
      };
      while (u < units) {
        if (!step(buf0, buf1)) break;
        if (!step(buf1, buf0)) break;
      }
    } else {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs8) : "memory");
      if (tid == 0) {
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_a)) : "memory");
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_w)) : "memory");
        uint32_t it = 0;  // k-tiles issued so far, over every tile of this block
        for (int u = first_unit; u < units; u += unit_stride) {
          const int2 tile = tile_of(u);
          for (int kt = 0; kt < num_kt; ++kt, ++it) {
            const int s = static_cast<int>(it % L::kStages);
            uint8_t* sa = smem + s * T::kStage;
            mbar_wait(empty + s, ((it / L::kStages) & 1) ^ 1);
            mbar_arrive_expect_tx(full + s, T::kStage);
            tma_load_2d(sa, &map_a, kt * T::kBK, tile.x * T::kBM, full + s);
            tma_load_2d(sa + T::kAStage, &map_w, kt * T::kBK, tile.y * T::kBN, full + s);
          }
        }
      }
    }
  } else {
    if constexpr (kInt4) {
      asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs4) : "memory");
    } else {
      asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs8) : "memory");
    }
    const int cw = wg - 1;  // consumer warpgroup: rows [64 cw, 64 cw + 64) of the tile
    const int gq = lane >> 2;
    const int tq = lane & 3;
    const bool pairs = (g.n & 1) == 0;
    uint32_t it = 0;  // k-tiles consumed so far, over every tile of this block
    // The stage a k-tile was read from is free again.
    auto release = [&](uint32_t stage) {
      if (lane == 0) mbar_arrive(empty + stage);
    };
    const int ct = tid - 128 * wg;  // thread of the warpgroup
    uint32_t parity = 0;            // of the tiles this block has walked
    for (int u = first_unit; u < units; u += unit_stride, parity ^= 1) {
      const int2 tile = tile_of(u);
      const int64_t m0 = static_cast<int64_t>(tile.x) * T::kBM;
      const int64_t n0 = static_cast<int64_t>(tile.y) * T::kBN;
      // The epilogue's factors, loaded now and staged in shared memory after the k-loop, so that their
      // latency hides behind the tile's wgmmas (column ct and ct + 128, row 64 cw + ct of the tile).
      float epi_ws[2], epi_b[2], epi_as = 1.0f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t col = n0 + ct + h * 128;
        epi_ws[h] = col < g.n ? col_scale(g, col) : 1.0f;
        epi_b[h] = col < g.n ? col_bias(g, col) : 0.0f;
      }
      if (ct < 64 && m0 + cw * 64 + ct < g.m) epi_as = row_scale(g, m0 + cw * 64 + ct);
      int acc[128];
#pragma unroll
      for (int i = 0; i < 128; ++i) acc[i] = 0;
      // kInt4: the weights are w + 8 (int4x32_to_u8), so the products carry 8 times each row's sum of x
      // (xsum, made by row_sum_s8_kernel before the launch), which the tile removes before its epilogue:
      // rows gq and gq + 8 of the warp's 16.
      int x0 = 0, x1 = 0;
      if constexpr (kInt4) {
        const int64_t r0 = m0 + cw * 64 + (warp & 3) * 16 + gq;
        x0 = r0 < g.m ? xsum[r0] : 0;
        x1 = r0 + 8 < g.m ? xsum[r0 + 8] : 0;
      }
      for (int kt = 0; kt < num_kt; ++kt, ++it) {
        const int s = static_cast<int>(it % L::kStages);
        mbar_wait(full + s, (it / L::kStages) & 1);
        const uint8_t* sa = smem + s * T::kStage;
        const uint64_t da = wgmma_desc(sa + cw * 64 * 128);
        const uint64_t db = wgmma_desc(sa + T::kAStage);
#pragma unroll
        for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < T::kBK / 32; ++ks) {
          // 32 bytes of k further along the swizzled rows: 2 in the descriptor's 16-byte units.
          wgmma_s8_m64n256k32<kInt4>(acc, da + 2 * ks, db + 2 * ks);
        }
        wgmma_commit();
        wgmma_wait<1>();
#pragma unroll
        for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
        // The wgmmas of the previous k-tile have finished reading its stage.
        if (kt > 0) release((it - 1) % L::kStages);
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
      release((it - 1) % L::kStages);
      if constexpr (kInt4) {
#pragma unroll
        for (int nj = 0; nj < T::kBN / 8; ++nj) {
          acc[nj * 4] -= 8 * x0;
          acc[nj * 4 + 1] -= 8 * x0;
          acc[nj * 4 + 2] -= 8 * x1;
          acc[nj * 4 + 3] -= 8 * x1;
        }
      }

      float* epi = reinterpret_cast<float*>(smem + L::kEpi) + (cw * 2 + parity) * T::kEpiFloats;
      epi[ct] = epi_ws[0];
      epi[ct + 128] = epi_ws[1];
      epi[T::kBN + ct] = epi_b[0];
      epi[T::kBN + ct + 128] = epi_b[1];
      if (ct < 64) epi[2 * T::kBN + ct] = epi_as;
      // The warpgroup's four warps (named barrier 1 + cw). This tile parity's factors are next written
      // two tiles on, after the next tile's barrier, which every warp passes after this epilogue.
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");

      // Epilogue from registers, as the tiled path's (per n8 tile: rows g and g + 8 of the warp's 16,
      // columns 2 t and 2 t + 1): each pair of outputs a 4- or 8-byte store when n is even.
      const int64_t row0 = m0 + cw * 64 + (warp & 3) * 16 + gq;
      const int64_t col0 = n0 + tq * 2;
      const float as[2] = {epi[2 * T::kBN + (warp & 3) * 16 + gq],
                           epi[2 * T::kBN + (warp & 3) * 16 + gq + 8]};
      auto store_tile = [&](auto out_dt) {
        constexpr ssmkit_dtype kOut = decltype(out_dt)::value;
#pragma unroll
        for (int nj = 0; nj < T::kBN / 8; ++nj) {
          const int64_t col = col0 + nj * 8;
          if (col >= g.n) continue;
          const bool has1 = col + 1 < g.n;
          const int c = nj * 8 + tq * 2;
          const float ws0 = epi[c], ws1 = epi[c + 1];
          const float b0 = epi[T::kBN + c], b1 = epi[T::kBN + c + 1];
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            const int64_t row = row0 + rh * 8;
            if (row >= g.m) continue;
            const float v0 = finish<false>(static_cast<float>(acc[nj * 4 + rh * 2]), as[rh], ws0, b0);
            const float v1 = finish<false>(static_cast<float>(acc[nj * 4 + rh * 2 + 1]), as[rh], ws1, b1);
            if (has1 && pairs) {
              store_pair_as<kOut>(g.out, row * g.n + col, v0, v1);
            } else {
              store_one_as<kOut>(g.out, row * g.n + col, v0);
              if (has1) store_one_as<kOut>(g.out, row * g.n + col + 1, v1);
            }
          }
        }
      };
      // A tile wholly inside the output whose rows start 16-byte aligned: each warp passes its fragment
      // through its own staging rows, 64 bytes of 8 rows at a time, so that the output leaves as 16-byte
      // stores of whole 64-byte row pieces, with the column factors read two at a time and no bounds
      // tests. The fragment's own stores (4 bytes a lane, 16-byte pieces of 8 rows, two 64-bit index
      // computations and tests a pair) kept the warps in the epilogue while the tensor pipe idled.
      auto store_staged = [&](auto out_dt) {
        constexpr ssmkit_dtype kOut = decltype(out_dt)::value;
        using out_t = std::conditional_t<kOut == SSMKIT_DTYPE_F32, float, uint16_t>;
        constexpr int kVec = 16 / static_cast<int>(sizeof(out_t));          // outputs a 16-byte piece
        constexpr int kRound = 64 / (8 * static_cast<int>(sizeof(out_t)));  // 8-column tiles a round
        uint8_t* st = smem + L::kOut + (warp - 4) * L::kOutWarp;            // consumer warps are 4 .. 11
        const int lr = lane >> 2, lc = lane & 3;  // the row and 16-byte piece a lane stores
        out_t* q0 = static_cast<out_t*>(g.out) + (m0 + cw * 64 + (warp & 3) * 16 + lr) * g.n + n0 + lc * kVec;
        out_t* q1 = q0 + 8 * g.n;
#pragma unroll
        for (int nj0 = 0; nj0 < T::kBN / 8; nj0 += kRound) {
          float2 ws[kRound], b[kRound];
#pragma unroll
          for (int j = 0; j < kRound; ++j) {
            ws[j] = *reinterpret_cast<const float2*>(epi + (nj0 + j) * 8 + tq * 2);
            b[j] = *reinterpret_cast<const float2*>(epi + T::kBN + (nj0 + j) * 8 + tq * 2);
          }
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
#pragma unroll
            for (int j = 0; j < kRound; ++j) {
              const int a = (nj0 + j) * 4 + rh * 2;
              const float v0 = finish<false>(static_cast<float>(acc[a]), as[rh], ws[j].x, b[j].x);
              const float v1 = finish<false>(static_cast<float>(acc[a + 1]), as[rh], ws[j].y, b[j].y);
              store_pair_as<kOut>(st + gq * L::kOutPitch, j * 8 + tq * 2, v0, v1);
            }
            __syncwarp();
            const uint4 v = *reinterpret_cast<const uint4*>(st + lr * L::kOutPitch + lc * 16);
            *reinterpret_cast<uint4*>((rh == 0 ? q0 : q1) + nj0 * 8) = v;
            __syncwarp();
          }
        }
      };
      const int out_size = g.out_dt == SSMKIT_DTYPE_F32 ? 4 : 2;
      const bool staged = pairs && m0 + T::kBM <= g.m && n0 + T::kBN <= g.n && (g.n * out_size) % 16 == 0 &&
                          (reinterpret_cast<uintptr_t>(g.out) & 15) == 0;
      store_by_out_dtype(g, staged, store_staged, store_tile);
    }
  }
#else
  (void)map_a, (void)map_w, (void)g, (void)tiles_m, (void)tiles_n, (void)xsum;
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------
// W4A8 on the wgmma path with the weights as the register operand (sm_90a; the default for W4A8 there,
// SSMKIT_CUDA_W4A8_SWAP=0 takes the producer-widened kernel above).
//
// Why: the kernel above moves a k-tile's weights through shared memory three times (the copy engine's
// int4 box, the producers' widened int8 stores, the wgmmas' reads of them), 160 KiB of shared-memory
// traffic a 128 x 256 x 128 k-tile against 128 KiB for W8A8's, while one 128-byte-a-clock shared memory
// feeds the wgmmas' operand reads too. Here the product is taken transposed, out^T = w x^T: the weights are
// wgmma's A operand, which may come from registers, and x is its B operand. Block tile 256 rows of x by
// 128 rows of w (one 64-row slab of w a consumer warpgroup, as one m64n256k32 a k32 step), k-tiles of 128;
// each k-tile's x box (256 rows x 128 bytes, 128-byte swizzle) and int4 box (128 rows x 64 bytes, 64-byte
// swizzle: the eight rows a warp reads at one chunk fall in distinct banks) arrive by one copy-engine
// transaction in one of 4 stages of 40 KiB; each consumer thread reads its two rows' 64 bytes (four 16-byte
// loads a row, a quad reading the same chunk), picks its bytes of the A fragment (row g and g + 8 of its
// warp's 16, k 4t .. 4t + 3 and 16 + 4t .. 19 + 4t of each k32 step) and widens them to 16 w as s8 in
// registers (each nibble in the high half of its byte: two LOP3 and a shift for eight values); the wgmmas
// are s8 x s8, their sums exact multiples of 16, and the epilogue shifts them right by 4: no x row sums
// and no second kernel (the kernel above takes w + 8 and removes 8 times each x row's sum). The sums'
// magnitude is at most 16 x 8 x 128 k, as W8A8's, so k <= 131071. Shared-memory traffic a k-tile: 40 KiB of
// copies, 8 KiB of int4 reads and 64 KiB of x reads by the wgmmas: 112 KiB. The accumulators hold out^T:
// 16-bit outputs are stored transposed by stmatrix into a staging of half the warpgroup's 256 x 64 slab in
// the 128-byte swizzle, which one bulk tensor store writes out (the copy engine clips the edges) while the
// warps go on; float32 outputs, and 16-bit ones whose rows are not 16-byte aligned, pass each warp's 16
// columns by a round of rows through its staging rows and leave as 16-byte pieces of rows (edge tiles from
// the registers).
struct w4s_traits {
  static constexpr int kBM = 256;  // rows of x (wgmma's n)
  static constexpr int kBN = 128;  // rows of w (two warpgroups of 64, wgmma's m)
  static constexpr int kBK = 128;
  static constexpr int kStages = 4;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kXStage = kBM * kBK;      // 32 KiB, 128-byte swizzle
  static constexpr int kWStage = kBN * kBK / 2;  // 8 KiB, 64-byte swizzle
  static constexpr int kStage = kXStage + kWStage;
  static constexpr int kBarriers = kStages * kStage;
  // The epilogue's factors, per consumer warpgroup and tile parity: x's 256 row scales, the warpgroup's 64
  // column scales and biases.
  static constexpr int kEpiWords = kBM + 2 * 64;
  static constexpr int kEpi = kBarriers + 2 * kStages * 8;
  // Each consumer warp's staging: a round of rows of its 16 columns, 32 rows of 32 bytes at a 48-byte pitch
  // for 16-bit outputs, 16 rows of 64 bytes at an 80-byte pitch for float32, so that a store instruction's
  // lanes hit distinct banks.
  static constexpr int kRoundRows16 = 32;
  static constexpr int kRoundRows32 = 16;
  static constexpr int kOutWarp = kRoundRows16 * 48;
  static_assert(kRoundRows32 * 80 <= kOutWarp);
  static constexpr int kOut = kEpi + kConsumers * 2 * kEpiWords * 4;
  // The bulk store's staging of 16-bit outputs: half a tile a warpgroup (128 rows of x by its 64 columns,
  // 128 bytes a row in the 128-byte swizzle), 1024-aligned.
  static constexpr int kHalfRows = kBM / 2;
  static constexpr int kBulkOut = (kOut + kConsumers * 4 * kOutWarp + 1023) / 1024 * 1024;
  static constexpr int kBulkWarpgroup = kHalfRows * 128;
  static constexpr int kSmem = kBulkOut + kConsumers * kBulkWarpgroup + 1024;
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static_assert(kStage % 1024 == 0 && kOut % 16 == 0 && kSmem <= 227 * 1024);
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 168 * kThreads);
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d += a (64 x 32 s8, this thread's A fragment in registers) * b (256 x 32 s8, shared memory)^T in int32.
__device__ __forceinline__ void wgmma_s8_rs_m64n256k32(int (&d)[128], const uint32_t (&a)[4],
                                                       uint64_t desc_b) {
  asm volatile("wgmma.mma_async.sync.aligned.m64n256k32.s32.s8.s8 " SSMKIT_WGMMA_D128
               "{%128, %129, %130, %131}, %132, 1;\n"
               : SSMKIT_WGMMA_D128_OUT(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

// A thread's A fragment of one k32 step from 16-byte chunk c of its rows' int4 (r0: row g, r1: row g + 8):
// bytes 2t, 2t + 1 (k 4t .. 4t + 3) and 8 + 2t, 9 + 2t (k 16 + 4t .. 19 + 4t) of each, widened to 16 w as
// s8 (the nibble in the byte's high half, its sign bit the byte's) in k order: a[0] row g low k, a[1] row
// g + 8 low k, a[2] row g high k, a[3] row g + 8 high k.
__device__ __forceinline__ void int4_chunk_to_a_s8x16(const uint4& r0, const uint4& r1, int t,
                                                      uint32_t (&a)[4]) {
  const uint32_t sel = (t & 1) ? 0x7632u : 0x5410u;
  const bool hi_word = t >= 2;
  const uint32_t w0 = __byte_perm(hi_word ? r0.y : r0.x, hi_word ? r0.w : r0.z, sel);
  const uint32_t w1 = __byte_perm(hi_word ? r1.y : r1.x, hi_word ? r1.w : r1.z, sel);
  // Bytes of w0: k (4t, 4t + 1), (4t + 2, 4t + 3), (16 + 4t, ..), (18 + 4t, ..), low nibble first.
  const uint32_t e0 = (w0 << 4) & 0xf0f0f0f0u;
  const uint32_t o0 = w0 & 0xf0f0f0f0u;
  const uint32_t e1 = (w1 << 4) & 0xf0f0f0f0u;
  const uint32_t o1 = w1 & 0xf0f0f0f0u;
  a[0] = __byte_perm(e0, o0, 0x5140);
  a[1] = __byte_perm(e1, o1, 0x5140);
  a[2] = __byte_perm(e0, o0, 0x7362);
  a[3] = __byte_perm(e1, o1, 0x7362);
}

// Stores four 8 x 8 matrices of 16-bit values transposed: register i of each lane holds its fragment of
// matrix i (row lane / 4, columns 2 (lane % 4) and + 1, the lower column in the low half), and lanes 8 i ..
// 8 i + 7 give the addresses of the 16-byte rows of matrix i in memory, each of which is one column of the
// fragment.
__device__ __forceinline__ void stmatrix_x4_trans(void* p, const uint32_t (&r)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem_addr(p)),
               "r"(r[0]), "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
}
#endif  // defined(__CUDA_ARCH_FEAT_SM90_ALL)
#undef SSMKIT_WGMMA_D128
#undef SSMKIT_WGMMA_D128_OUT

template <ssmkit_dtype kX, int kMode>
__global__ void __launch_bounds__(w4s_traits::kThreads, 1)
    gemm_w4s_kernel(const __grid_constant__ CUtensorMap map_x, const __grid_constant__ CUtensorMap map_w,
                    const __grid_constant__ CUtensorMap map_out, gemm_args g, int tiles_m, int tiles_n,
                    bool bulk) {
  using T = w4s_traits;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = smem_addr(smem_raw);
  uint8_t* smem = smem_raw + ((1024 - (raw_addr & 1023)) & 1023);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + T::kBarriers);
  uint64_t* empty = full + T::kStages;

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wg = warp >> 2;
  const int num_kt = static_cast<int>((g.k + T::kBK - 1) / T::kBK);
  const int units = tiles_m * tiles_n;
  const int first_unit = static_cast<int>(blockIdx.x);
  const int unit_stride = static_cast<int>(gridDim.x);
  auto tile_of = [&](int u) { return grouped_tile(u, tiles_m, tiles_n); };

  if (tid == 0) {
    for (int s = 0; s < T::kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, T::kConsumers * 4);
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(T::kProducerRegs) : "memory");
    if (tid == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_x)) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map_w)) : "memory");
      uint32_t it = 0;
      for (int u = first_unit; u < units; u += unit_stride) {
        const int2 tile = tile_of(u);
        for (int kt = 0; kt < num_kt; ++kt, ++it) {
          const int s = static_cast<int>(it % T::kStages);
          uint8_t* st = smem + s * T::kStage;
          mbar_wait(empty + s, ((it / T::kStages) & 1) ^ 1);
          mbar_arrive_expect_tx(full + s, T::kStage);
          tma_load_2d(st, &map_x, kt * T::kBK, tile.x * T::kBM, full + s);
          tma_load_2d(st + T::kXStage, &map_w, kt * (T::kBK / 2), tile.y * T::kBN, full + s);
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(T::kConsumerRegs) : "memory");
    const int cw = wg - 1;  // consumer warpgroup: rows [64 cw, 64 cw + 64) of the tile's w
    const int gq = lane >> 2;
    const int tq = lane & 3;
    const int ct = tid - 128 * wg;
    // This thread's two rows of w in the tile, and their 16-byte chunks' offsets in the 64-byte swizzle.
    const int wr0 = cw * 64 + (warp & 3) * 16 + gq, wr1 = wr0 + 8;
    uint8_t* const bulk_out = smem + T::kBulkOut + cw * T::kBulkWarpgroup;
    uint32_t it = 0;
    uint32_t parity = 0;
    // Two k-tiles' A fragments, used in turn.
    uint32_t a0[4][4] = {}, a1[4][4] = {};
    for (int u = first_unit; u < units; u += unit_stride, parity ^= 1) {
      const int2 tile = tile_of(u);
      const int64_t m0 = static_cast<int64_t>(tile.x) * T::kBM;
      const int64_t n0 = static_cast<int64_t>(tile.y) * T::kBN;
      // The epilogue's factors, loaded now and staged after the k-loop: x rows ct and ct + 128, and the
      // warpgroup's column ct (ct < 64).
      float epi_as[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + ct + h * 128;
        epi_as[h] = row < g.m ? row_scale(g, row) : 1.0f;
      }
      float epi_ws = 1.0f, epi_b = 0.0f;
      if (ct < 64 && n0 + cw * 64 + ct < g.n) {
        epi_ws = col_scale(g, n0 + cw * 64 + ct);
        epi_b = col_bias(g, n0 + cw * 64 + ct);
      }
      int acc[128];
#pragma unroll
      for (int i = 0; i < 128; ++i) acc[i] = 0;
      // A k-tile's A fragments: wait for its stage (k-tile `it`), read its int4 and widen it.
      auto fragments = [&](uint32_t(&af)[4][4]) {
        const int s = static_cast<int>(it % T::kStages);
        mbar_wait(full + s, (it / T::kStages) & 1);
        const uint8_t* sw = smem + s * T::kStage + T::kXStage;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const uint4 r0 = *reinterpret_cast<const uint4*>(sw + wr0 * 64 + ((c ^ ((wr0 >> 1) & 3)) << 4));
          const uint4 r1 = *reinterpret_cast<const uint4*>(sw + wr1 * 64 + ((c ^ ((wr1 >> 1) & 3)) << 4));
          int4_chunk_to_a_s8x16(r0, r1, tq, af[c]);
        }
      };
      // A wgmma reads its A registers until it has finished: a fragment set is kept alive (and so its
      // registers unused by anything else) up to the wait that covers its wgmmas.
      auto keep = [&](uint32_t(&af)[4][4]) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
#pragma unroll
          for (int i = 0; i < 4; ++i) fence_operand(af[c][i]);
        }
#pragma unroll
        for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
      };
      // k-tile `it`'s four wgmmas on fragments af.
      auto issue = [&](uint32_t(&af)[4][4]) {
        const uint64_t db = wgmma_desc(smem + static_cast<int>(it % T::kStages) * T::kStage);
#pragma unroll
        for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) wgmma_s8_rs_m64n256k32(acc, af[ks], db + 2 * ks);
        wgmma_commit();
        ++it;
      };
      // Mode 2: k-tile kt's wgmmas go in behind kt - 1's; once those have finished, kt - 1's stage is
      // released and nxt, which they read, takes k-tile kt + 1's fragments while kt's run. Mode 1: nxt takes
      // them while kt's wgmmas run alone, all of which are then waited for; the stage is free at once.
      auto k_tile = [&](int kt, uint32_t(&af)[4][4], uint32_t(&nxt)[4][4]) {
        issue(af);
        if (kMode == 2) {
          wgmma_wait<1>();
          keep(nxt);
          if (kt > 0 && lane == 0) mbar_arrive(empty + (it - 2) % T::kStages);
          if (kt + 1 < num_kt) fragments(nxt);
        } else {
          if (kt + 1 < num_kt) fragments(nxt);
          wgmma_wait<0>();
          keep(af);
          if (lane == 0) mbar_arrive(empty + (it - 1) % T::kStages);
        }
      };
      fragments(a0);
      for (int kt = 0; kt < num_kt; kt += 2) {
        k_tile(kt, a0, a1);
        if (kt + 1 < num_kt) k_tile(kt + 1, a1, a0);
      }
      if (kMode == 2) {
        wgmma_wait<0>();
        keep(a0);
        keep(a1);
        if (lane == 0) mbar_arrive(empty + (it - 1) % T::kStages);
      }

      float* epi = reinterpret_cast<float*>(smem + T::kEpi) + (cw * 2 + parity) * T::kEpiWords;
      epi[ct] = epi_as[0];
      epi[ct + 128] = epi_as[1];
      if (ct < 64) {
        epi[T::kBM + ct] = epi_ws;
        epi[T::kBM + 64 + ct] = epi_b;
      }
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");

      // Accumulator (nj, rh, e): w row (warp & 3) * 16 + gq + 8 rh of the warpgroup's 64 (an output
      // column), x row 8 nj + 2 tq + e of the tile's 256 (an output row).
      const int wl = (warp & 3) * 16 + gq;  // + 8 rh
      const float ws[2] = {epi[T::kBM + wl], epi[T::kBM + wl + 8]};
      const float bs[2] = {epi[T::kBM + 64 + wl], epi[T::kBM + 64 + wl + 8]};
      // x rows 8 nj + 2 tq and + 1: their scales, one 8-byte load.
      auto row_factors = [&](int nj) { return *reinterpret_cast<const float2*>(epi + nj * 8 + tq * 2); };
      // The sums are 16 times the products' (the weights widened to 16 w): exact, so the shift is too.
      auto value = [&](int nj, int rh, int e, const float2& as) {
        return finish<false>(static_cast<float>(acc[nj * 4 + rh * 2 + e] >> 4), e ? as.y : as.x, ws[rh],
                             bs[rh]);
      };
      // Four 8 x 8 matrices of 16-bit outputs, n8 steps nj and nj + 1 by row halves rh: the accumulators of
      // one step and row half, paired over e, are an 8 x 8 matrix of (output column, output row), which
      // stmatrix .trans stores as 8 output rows of 16 bytes; lane L gives the address of row L % 8 of
      // matrix L / 8 (step nj + L / 16, row half L / 8 % 2), at row_addr(x row of the step's 8, rh).
      auto stm_pair = [&](auto out_dt, int nj, auto row_addr) {
        constexpr ssmkit_dtype kOut = decltype(out_dt)::value;
        uint32_t r[4];
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const float2 as = row_factors(nj + jj);
#pragma unroll
          for (int rh = 0; rh < 2; ++rh) {
            r[jj * 2 + rh] = pack_pair_as<kOut>(value(nj + jj, rh, 0, as), value(nj + jj, rh, 1, as));
          }
        }
        stmatrix_x4_trans(row_addr((nj + (lane >> 4)) * 8 + (lane & 7), (lane >> 3) & 1), r);
      };
      const int64_t col0 = n0 + cw * 64 + wl;
      auto store_tile = [&](auto out_dt) {
        constexpr ssmkit_dtype kOut = decltype(out_dt)::value;
#pragma unroll
        for (int nj = 0; nj < T::kBM / 8; ++nj) {
          const float2 as = row_factors(nj);
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t row = m0 + nj * 8 + tq * 2 + e;
            if (row >= g.m) continue;
#pragma unroll
            for (int rh = 0; rh < 2; ++rh) {
              const int64_t col = col0 + rh * 8;
              if (col < g.n) store_one_as<kOut>(g.out, row * g.n + col, value(nj, rh, e, as));
            }
          }
        }
      };
      // A tile wholly inside the output with 16-byte aligned rows: a round of rows at a time through the
      // warp's staging rows (16-bit outputs by stmatrix), then 16-byte pieces of the warp's 16 columns.
      auto store_staged = [&](auto out_dt) {
        constexpr ssmkit_dtype kOut = decltype(out_dt)::value;
        using out_t = std::conditional_t<kOut == SSMKIT_DTYPE_F32, float, uint16_t>;
        constexpr int kSize = static_cast<int>(sizeof(out_t));
        constexpr int kPitch = kSize == 4 ? 80 : 48;
        constexpr int kPieces = 16 * kSize / 16;                                // 16-byte pieces a row
        constexpr int kRound = kSize == 4 ? T::kRoundRows32 : T::kRoundRows16;  // rows a round
        constexpr int kPerLane = kRound * kPieces / 32;                         // pieces a lane a round
        uint8_t* st = smem + T::kOut + (warp - 4) * T::kOutWarp;
        out_t* base = static_cast<out_t*>(g.out) + m0 * g.n + n0 + cw * 64 + (warp & 3) * 16;
#pragma unroll
        for (int r0 = 0; r0 < T::kBM; r0 += kRound) {
          if constexpr (kOut != SSMKIT_DTYPE_F32) {
#pragma unroll
            for (int q = 0; q < kRound / 16; ++q) {
              stm_pair(out_dt, r0 / 8 + 2 * q,
                       [&](int row, int rh) { return st + (row - r0) * kPitch + rh * 16; });
            }
          } else {
#pragma unroll
            for (int j = 0; j < kRound / 8; ++j) {
              const int nj = r0 / 8 + j;
              const float2 as = row_factors(nj);
#pragma unroll
              for (int e = 0; e < 2; ++e) {
#pragma unroll
                for (int rh = 0; rh < 2; ++rh) {
                  store_one_as<kOut>(st + (j * 8 + tq * 2 + e) * kPitch, gq + rh * 8, value(nj, rh, e, as));
                }
              }
            }
          }
          __syncwarp();
#pragma unroll
          for (int p = 0; p < kPerLane; ++p) {
            const int piece = lane + 32 * p;
            const int row = piece / kPieces, pc = piece % kPieces;
            const uint4 v = *reinterpret_cast<const uint4*>(st + row * kPitch + pc * 16);
            *reinterpret_cast<uint4*>(base + (r0 + row) * g.n + pc * (16 / kSize)) = v;
          }
          __syncwarp();
        }
      };
      // 16-bit outputs through the copy engine (map_out; any tile, the engine clips the edges): each half
      // of the warpgroup's 256 x 64 slab into its staging (the 128-byte swizzle: output row r's 16-byte
      // piece c at r * 128 + (c ^ r % 8) * 16), then one bulk store of it, which drains while the next
      // half and the next tile go on; the staging is written again once the previous store has read it.
      auto store_bulk = [&](auto out_dt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          if (ct == 0) bulk_wait_read();
          asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
#pragma unroll
          for (int q = 0; q < T::kHalfRows / 16; ++q) {
            stm_pair(out_dt, h * (T::kHalfRows / 8) + 2 * q, [&](int row, int rh) {
              const int r = row - h * T::kHalfRows;
              return bulk_out + r * 128 + (((2 * (warp & 3) + rh) ^ (r & 7)) << 4);
            });
          }
          fence_proxy_async_shared();
          asm volatile("bar.sync %0, 128;\n" ::"r"(1 + cw) : "memory");
          if (ct == 0) {
            tma_store_2d(&map_out, bulk_out, static_cast<int>(n0) + cw * 64,
                         static_cast<int>(m0) + h * T::kHalfRows);
            bulk_commit();
          }
        }
      };
      const int out_size = g.out_dt == SSMKIT_DTYPE_F32 ? 4 : 2;
      const bool staged = m0 + T::kBM <= g.m && n0 + T::kBN <= g.n && (g.n * out_size) % 16 == 0 &&
                          (reinterpret_cast<uintptr_t>(g.out) & 15) == 0;
      if (bulk && g.out_dt == SSMKIT_DTYPE_BF16) {
        store_bulk(std::integral_constant<ssmkit_dtype, SSMKIT_DTYPE_BF16>{});
      } else if (bulk && g.out_dt == SSMKIT_DTYPE_F16) {
        store_bulk(std::integral_constant<ssmkit_dtype, SSMKIT_DTYPE_F16>{});
      } else {
        store_by_out_dtype(g, staged, store_staged, store_tile);
      }
    }
    // The shared memory must outlive the last bulk stores' reads of it.
    if (bulk && ct == 0) bulk_wait_read();
  }
#else
  (void)map_x, (void)map_w, (void)map_out, (void)g, (void)tiles_m, (void)tiles_n, (void)bulk;
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------
// SIMT path: any shape, any alignment, any group size.
//
// 64 x 64 output tiles, 256 threads of 4 x 4 outputs each, k in slices of 32 staged in shared memory
// (transposed, padded to 65 against bank conflicts) with bounds-checked element loads. Integer kinds sum
// int32 per group and fold each group into float32 at its last k; W4A16 sums float32 the same way.

constexpr int kSimtTile = 64;
constexpr int kSimtK = 32;
constexpr int kSimtThreads = 256;

template <int kKind, ssmkit_dtype kX, bool kGrouped>
__global__ void __launch_bounds__(kSimtThreads, 2) gemm_simt_kernel(gemm_args g, int64_t tiles_n) {
  constexpr bool kIntVals = kind_traits<kKind>::kIntAcc;
  using val_t = typename std::conditional<kIntVals, int, float>::type;
  using acc_t = typename std::conditional<kIntVals && !kGrouped, int, float>::type;
  __shared__ val_t xs[kSimtK][kSimtTile + 1];
  __shared__ val_t ws[kSimtK][kSimtTile + 1];

  const int64_t tile = blockIdx.x;
  const int64_t m0 = (tile / tiles_n) * kSimtTile;
  const int64_t n0 = (tile % tiles_n) * kSimtTile;
  const int tx = threadIdx.x % 16;  // columns 4 tx .. 4 tx + 3
  const int ty = threadIdx.x / 16;  // rows 4 ty .. 4 ty + 3

  val_t part[4][4];
  acc_t acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      part[i][j] = 0;
      acc[i][j] = 0;
    }
  }
  int64_t next_fold = g.group_size;  // k at which the current group ends

  for (int64_t k0 = 0; k0 < g.k; k0 += kSimtK) {
    for (int i = threadIdx.x; i < kSimtTile * kSimtK; i += kSimtThreads) {
      const int r = i / kSimtK;
      const int kk = i % kSimtK;
      const int64_t k = k0 + kk;
      val_t xv = 0;
      val_t wv = 0;
      if (k < g.k) {
        if (m0 + r < g.m) {
          if constexpr (kIntVals) {
            xv = static_cast<const int8_t*>(g.a)[(m0 + r) * g.k + k];
          } else {
            xv = load_f32<kX>(g.a, (m0 + r) * g.k + k);
          }
        }
        if (n0 + r < g.n) {
          int wi;
          if constexpr (kKind == KIND_W8A8) {
            wi = static_cast<int8_t>(g.w[(n0 + r) * g.w_row_bytes + k]);
          } else {
            const int byte = g.w[(n0 + r) * g.w_row_bytes + (k >> 1)];
            wi = ((((k & 1) ? byte >> 4 : byte) & 15) ^ 8) - 8;
          }
          wv = static_cast<val_t>(wi);
        }
      }
      xs[kk][r] = xv;
      ws[kk][r] = wv;
    }
    __syncthreads();
    const int kn = static_cast<int>(min64(kSimtK, g.k - k0));
    for (int kk = 0; kk < kn; ++kk) {
      val_t xa[4], wb[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) xa[i] = xs[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) wb[j] = ws[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) part[i][j] += xa[i] * wb[j];
      }
      if (kGrouped && k0 + kk + 1 == next_fold) {
        const int64_t gi = next_fold / g.group_size - 1;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t col = n0 + tx * 4 + j;
          const float sc = col < g.n ? group_scale(g, col, gi) : 0.0f;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            acc[i][j] = __fmaf_rn(static_cast<float>(part[i][j]), sc, acc[i][j]);
            part[i][j] = 0;
          }
        }
        next_fold += g.group_size;
      }
    }
    __syncthreads();
  }

  static_for<4>([&](auto i) {
    const int64_t row = m0 + ty * 4 + i;
    static_for<4>([&](auto j) {
      const int64_t col = n0 + tx * 4 + j;
      if (row < g.m && col < g.n) {
        const float v = kGrouped ? static_cast<float>(acc[i][j]) : static_cast<float>(part[i][j]);
        store_float(g.out, g.out_dt, row * g.n + col, finish_value<kGrouped>(g, v, row, col));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Packed weights -> plain layout.
//
// pack_weights' layout: columns in groups of 64 (panels of 16; the last group may hold fewer panels),
// K in steps of 4 (int8) or 8 (int4) values; each step stores, for each panel of the group, 16 columns x
// 4 bytes. int8 bytes hold w + 128; int4 byte r of a column holds w[k0 + r] + 8 (low nibble) and
// w[k0 + 4 + r] + 8 (high nibble).

__device__ __forceinline__ int64_t packed_offset(int64_t n, int64_t steps, int64_t panels, int64_t col,
                                                 int64_t step, int r) {
  const int64_t grp = col / 64;
  const int64_t panel = col / 16;
  const int64_t grp_panels = min64(4, panels - grp * 4);
  return grp * 4 * steps * 64 + (step * grp_panels + (panel - grp * 4)) * 64 + (col % 16) * 4 + r;
}

// One thread per byte of the plain layout (n, row_bytes).
__global__ void unpack_weights_kernel(const uint8_t* __restrict__ packed, uint8_t* __restrict__ plain,
                                      int64_t n, int64_t k, int bits) {
  const int64_t row_bytes = bits == 8 ? k : (k + 1) / 2;
  const int64_t total = n * row_bytes;
  const int64_t panels = (n + 15) / 16;
  const int64_t steps = bits == 8 ? (k + 3) / 4 : (k + 7) / 8;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i / row_bytes;
    const int64_t b = i - col * row_bytes;
    if (bits == 8) {
      plain[i] = packed[packed_offset(n, steps, panels, col, b / 4, static_cast<int>(b % 4))] ^ 0x80;
    } else {
      uint8_t out = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t kk = 2 * b + h;
        if (kk >= k) break;
        const int64_t step = kk / 8;
        const int within = static_cast<int>(kk % 8);
        const uint8_t byte = packed[packed_offset(n, steps, panels, col, step, within % 4)];
        const int nib = within < 4 ? (byte & 15) : (byte >> 4);
        out |= static_cast<uint8_t>(((nib - 8) & 15) << (4 * h));
      }
      plain[i] = out;
    }
  }
}

// One thread per byte of the packed layout.
__global__ void pack_weights_kernel(const uint8_t* __restrict__ w, uint8_t* __restrict__ packed, int64_t n,
                                    int64_t k, int bits) {
  const int64_t row_bytes = bits == 8 ? k : (k + 1) / 2;
  const int64_t panels = (n + 15) / 16;
  const int64_t steps = bits == 8 ? (k + 3) / 4 : (k + 7) / 8;
  const int64_t total = steps * panels * 64;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // Invert packed_offset: group, then (step, panel in group), then column in panel and byte.
    const int64_t grp_bytes = 4 * steps * 64;
    const int64_t grp = i / grp_bytes;
    const int64_t rem = i - grp * grp_bytes;
    const int64_t grp_panels = min64(4, panels - grp * 4);
    const int64_t vec = rem / 64;
    const int within = static_cast<int>(rem % 64);
    const int64_t step = vec / grp_panels;
    const int64_t panel = grp * 4 + vec % grp_panels;
    const int64_t col = panel * 16 + within / 4;
    const int r = within % 4;
    auto value = [&](int64_t kk) -> int {  // w[col][kk], 0 past the edges
      if (col >= n || kk >= k) return 0;
      if (bits == 8) return static_cast<int8_t>(w[col * row_bytes + kk]);
      const int byte = w[col * row_bytes + kk / 2];
      return ((((kk & 1) ? byte >> 4 : byte) & 15) ^ 8) - 8;
    };
    if (bits == 8) {
      packed[i] = static_cast<uint8_t>(value(step * 4 + r) + 128);
    } else {
      packed[i] = static_cast<uint8_t>((value(step * 8 + r) + 8) | ((value(step * 8 + 4 + r) + 8) << 4));
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The pair path's step on one set of 32 columns, shared with the group path. Lane (gq, tq) holds columns
// 4 gq .. 4 gq + 3 as rows gq and gq + 8 of two m16 tiles (tl = 0, 1) and x's rows 8 mt + gq as the B
// operand; its sums of (tl, mt) are the mma's accumulator fragment.

// k-step i (0..3) of the lane's four int4 columns (plain: word i of cur[c]; packed: word c of cur[i]) as
// the pairs of two m16 tiles, times x's 8 values of the same k-step (xi[mt], staged as the pairs (k0, k2),
// (k4, k6), (k1, k3), (k5, k7)), into sums.
template <ssmkit_dtype kX, bool kPlain, int kMT>
__device__ __forceinline__ void w4_kstep_mma(float (&sums)[2][kMT][4], const uint4 (&cur)[4], int i,
                                             const uint4 (&xi)[kMT]) {
#pragma unroll
  for (int tl = 0; tl < 2; ++tl) {
    uint32_t pa[4], pb[4];  // columns 2 tl and 2 tl + 1 of the lane
    int4_word_to_pairs_lop3<kX, kPlain>(kPlain ? word_at(cur[2 * tl], i) : word_at(cur[i], 2 * tl), pa);
    int4_word_to_pairs_lop3<kX, kPlain>(kPlain ? word_at(cur[2 * tl + 1], i) : word_at(cur[i], 2 * tl + 1),
                                        pb);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      mma_16bit<kX>(sums[tl][mt], pa[0], pb[0], pa[1], pb[1], xi[mt].x, xi[mt].y);
      mma_16bit<kX>(sums[tl][mt], pa[2], pb[2], pa[3], pb[3], xi[mt].z, xi[mt].w);
    }
  }
}

// acc += a step's own sums times its group scales: sb[c], the 16-bit scale (x's dtype) of the lane's column
// c; accumulator rows gq (e < 2) are column 2 tl, rows gq + 8 column 2 tl + 1.
template <ssmkit_dtype kX, int kMT>
__device__ __forceinline__ void add_group_scaled(float (&acc)[2][kMT][4], const float (&step)[2][kMT][4],
                                                 const uint32_t (&sb)[4]) {
#pragma unroll
  for (int tl = 0; tl < 2; ++tl) {
    const float sa = bits_value(kX, sb[2 * tl]), sc = bits_value(kX, sb[2 * tl + 1]);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      acc[tl][mt][0] = fmaf(step[tl][mt][0], sa, acc[tl][mt][0]);
      acc[tl][mt][1] = fmaf(step[tl][mt][1], sa, acc[tl][mt][1]);
      acc[tl][mt][2] = fmaf(step[tl][mt][2], sc, acc[tl][mt][2]);
      acc[tl][mt][3] = fmaf(step[tl][mt][3], sc, acc[tl][mt][3]);
    }
  }
}

// A lane's sums of one set into shared memory: value (tl kMT + mt) 4 + e at dst[32 value], dst being the
// lane's first.
template <int kMT, class Acc>
__device__ __forceinline__ void store_set_sums(Acc* dst, const Acc (&acc)[2][kMT][4]) {
#pragma unroll
  for (int tl = 0; tl < 2; ++tl) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[((tl * kMT + mt) * 4 + e) * 32] = acc[tl][mt][e];
    }
  }
}

// The outputs of a block of kSets sets of 32 columns from g.m = m rows (store_set_sums, set s of warp w:
// value j = s 2 kMT 4 + (tl kMT + mt) 4 + e of lane l at red[(w kSets 2 kMT 4 + j) 32 + l]), the warps'
// sums added in warp order: row 8 mt + 2 (l % 4) + e % 2, column 32 kSets blockIdx.x + 32 s + 4 (l / 4) +
// 2 tl + e / 2, through finish_value.
template <int kMT, int kSets, bool kGrouped, class Acc>
__device__ __forceinline__ void finish_set_sums(const gemm_args& g, int m, const Acc* red, int warps) {
  constexpr int kVals = kSets * 2 * kMT * 4;
  for (int idx = static_cast<int>(threadIdx.x); idx < kVals * 32; idx += static_cast<int>(blockDim.x)) {
    const int j = idx >> 5, l = idx & 31;
    const int set = kSets == 1 ? 0 : j / (2 * kMT * 4);  // one set: j < 2 kMT 4
    const int tl = j / (kMT * 4) - 2 * set, mt = (j >> 2) % kMT, e = j & 3;
    const int64_t row = 8 * mt + 2 * (l & 3) + (e & 1);
    const int64_t col =
        static_cast<int64_t>(blockIdx.x) * (32 * kSets) + 32 * set + 4 * (l >> 2) + 2 * tl + (e >> 1);
    if (row >= m || col >= g.n) continue;
    Acc v = 0;
    for (int w = 0; w < warps; ++w) v += red[(w * kVals + j) * 32 + l];
    store_float(g.out, g.out_dt, row * g.n + col, finish_value<kGrouped>(g, static_cast<float>(v), row, col));
  }
}

// ---------------------------------------------------------------------------------------------------
// Pair path (m <= 16, k % 128 == 0, 16-byte aligned bases; in a PDL chain W4A8 and the folded norm and
// quantizer only): W8A8, W4A8, and W4A16 with 16-bit x, plain or packed weights. A block owns 32 columns (one
// panel pair of the packed layout) and all of k; its warps split the 128-k steps in contiguous ranges and add
// their sums in shared memory in warp order (no partials in global memory, no counter, no cluster). x is
// staged once a block in shared memory, after the first step's weights are requested; every warp keeps its
// next step's weights in flight while it multiplies the current one. Lane (gq, tq) holds the block's columns
// 4 gq .. 4 gq + 3 as rows gq and gq + 8 of two m16 tiles of the weights (the A operand: tile 0 columns 4 gq,
// 4 gq + 1, tile 1 columns 4 gq + 2, 4 gq + 3) and x's rows as the B operand (m = 8 mt + column of the n8
// tile), so that one 16-byte vector of the packed layout (four columns at one k-step) feeds four tile rows.
// - W4A16 (m16n8k16): a step of lane tq is k 32 tq .. 32 tq + 31 of each column: plain, 16 bytes of the
//   column's row; packed, the vectors of k-steps 4 tq .. 4 tq + 3. int4_word_to_pairs_lop3 makes each
//   word the pairs (k0, k2), (k4, k6) for one mma and (k1, k3), (k5, k7) for another, for both layouts
//   (so that plain and packed weights give the same bits); x is staged in the same pairs. With groups
//   (multiples of 128), each step's sums are scaled by the column's group scale into the totals.
// - W8A8 (m16n8k32, exact int32 sums): a step's mma j takes k-slots 4 tq.. and 16 + 4 tq.. from plain
//   bytes 64 (j / 2) + 16 tq + 8 (j % 2) (+ 4), or from the packed k-steps 8 j + tq and 8 j + 4 + tq
//   (bytes w + 128); x is staged so that lane tq's 8 words of a step are contiguous.
// - W4A8 (m16n8k32, exact int32 sums): the weights' vectors as W4A16's; mma j takes word j of each column
//   (k 32 tq + 8 j .. + 7), each nibble widened into its byte's high half (16 w as s8, packed nibbles
//   w + 8 flipped first): the low nibbles in k-slots 4 tq.., the high ones in 16 + 4 tq.., x staged in the
//   same order (plain: even k, then odd; packed: k 0..3, then 4..7). The sums, 16 times the products',
//   are shifted back by 4 before the warps' sums are added. With groups (multiples of 128), a warp keeps
//   the int32 sums of its current group and adds them, shifted back and times the column's group scale
//   (any float dtype), into float32 totals at the group's last step or its range's. Measured (H200,
//   bench/quant-gpu.mjs --decode, device time, 2560 x 10240): 1 row plain 10.5 us (the GEMV 14.4), packed 9.9
//   (9.6); 16 rows plain 13.1 (the decode kernel 46.0), packed 11.9 (45.1); with groups of 128, 1 row plain
//   10.5 (the GEMV 14.2), packed 10.6 (11.6); 16 rows plain 12.2 (the decode kernel 41.3), packed 12.9
//   (40.5). The model runner's W4A8 step takes this path for in_proj and out_proj (Mamba-2.8B shape: 4.19
//   against 4.43 ms a token, when the step launched them outside its PDL chain; in the chain since f95c57e).
// Measured (H200, Nsight, caches flushed; SSMKIT_CUDA_PAIR=0 for the kernels before it, same build): one
// row at 2560 x 10240, W4A16 packed 10.0-10.3 us (ring 11.6-12.2), plain 9.9 (ring 13.0-13.2); W8A8
// packed 11.2-12.0 (GEMV 13.1-13.2), plain 10.9 (GEMV 16.7-17.7), plain 16 rows 15.8-16.1 (skinny 30.5);
// W4A16 packed 1 x 5120 x 2560 8.5-8.7 (ring 9.1). At four and 16 packed rows the ring was as fast or
// faster (W4A16 4 x 2560 x 10240 12.7-13.1 against 12.0; W8A8 16 rows 19.5 against 14.4), so it keeps
// them. A pure read of the same 13.4 MB measured 5.5 us back to back: what is left is latency (a warp's
// steps one round trip apart). Keeping more steps in flight a warp measured slower at every depth tried
// (2 to 5, in a standalone probe), and so did 16-column blocks for packed weights (their 4-byte loads).
constexpr int kPairCols = 32;
constexpr int kPairStepK = 128;
constexpr int kPairMaxWarps = 16;

// The pair path's folded norm and quantizer (g.pre_x set; one row of int8 x, W8A8 or W4A8; the decode
// step's norm in front of in_proj with in_proj's activation quantizer): x is made in every block as
// rms_norm then quantize make it op by op. The sum pre_x + pre_res (float32; pre_res optional, float32 or
// pre_x's dtype kH), its squares added in float64 in a fixed order (every block gets the same rstd), out =
// sum * rstd * pre_w rounded to kH; then 8-bit q = quant_one(out, s) with s the static a_scale (one value)
// or, without a_scale, the row's per-token scale (scale_as_stored of its amax, float32). A thread holds
// the chunks of 8 values tid + j blockDim (j < kPairFoldChunks: k <= 8 kPairFoldChunks blockDim, which
// int8_norm_folds checks), all of its loads issued at once; block 0 stores the sums to pre_res_out. Writes q
// to nat (k bytes, shared) and returns s; all threads of the block call it, and nat is complete when it
// returns.
constexpr int kPairFoldChunks = 3;

template <ssmkit_dtype kH>
__device__ __forceinline__ float pair_prenorm_quant(const gemm_args& g, int8_t* nat) {
  constexpr int kC = kPairFoldChunks;
  __shared__ double red_d[kPairMaxWarps];
  __shared__ float red_f[kPairMaxWarps];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x), warps = nt >> 5;
  const int chunks = static_cast<int>(g.k / 8);
  const bool res32 = g.pre_res != nullptr && g.pre_res_dt == SSMKIT_DTYPE_F32;
  const bool res16 = g.pre_res != nullptr && !res32;
  const bool w32 = g.pre_w_dt == SSMKIT_DTYPE_F32;
  const uint32_t s_bits = g.a_scale != nullptr ? ld_bits(g.a_scale, g.a_scale_dt, 0) : 0u;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint4 xr[kC], r0[kC], r1[kC], w0[kC], w1[kC];
#pragma unroll
  for (int j = 0; j < kC; ++j) {
    const int c = tid + j * nt;
    const bool ok = c < chunks;
    xr[j] = ok ? reinterpret_cast<const uint4*>(g.pre_x)[c] : zero;
    r0[j] = ok && res32   ? reinterpret_cast<const uint4*>(g.pre_res)[2 * c]
            : ok && res16 ? reinterpret_cast<const uint4*>(g.pre_res)[c]
                          : zero;
    r1[j] = ok && res32 ? reinterpret_cast<const uint4*>(g.pre_res)[2 * c + 1] : zero;
    w0[j] = ok ? reinterpret_cast<const uint4*>(g.pre_w)[w32 ? 2 * c : c] : zero;
    w1[j] = ok && w32 ? reinterpret_cast<const uint4*>(g.pre_w)[2 * c + 1] : zero;
  }
  // The sums (absent chunks are zeros, whose squares add nothing), in the same order in every block.
  float v[kC][8];
  double ss = 0.0;
#pragma unroll
  for (int j = 0; j < kC; ++j) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[j][e] = half8_at<kH>(xr[j], e);
      if (res32) {
        v[j][e] += __uint_as_float(word_at(e < 4 ? r0[j] : r1[j], e & 3));
      } else if (res16) {
        v[j][e] += half8_at<kH>(r0[j], e);
      }
      ss += static_cast<double>(v[j][e]) * v[j][e];
    }
  }
  if (blockIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < kC; ++j) {
      const int c = tid + j * nt;
      if (c >= chunks) continue;
#pragma unroll
      for (int e = 0; e < 8; ++e) store_float(g.pre_res_out, g.pre_res_out_dt, 8 * c + e, v[j][e]);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((tid & 31) == 0) red_d[tid >> 5] = ss;
  __syncthreads();
  double tot = 0.0;
  for (int q = 0; q < warps; ++q) tot += red_d[q];
  const float rstd = rms_rstd(tot, g.k, g.pre_eps);
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < kC; ++j) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float w = w32 ? __uint_as_float(word_at(e < 4 ? w0[j] : w1[j], e & 3)) : half8_at<kH>(w0[j], e);
      const float o = v[j][e] * rstd * w;
      v[j][e] = kH == SSMKIT_DTYPE_F16 ? __half2float(__float2half_rn(o))
                                       : __bfloat162float(__float2bfloat16_rn(o));
      m = fmaxf(m, fabsf(v[j][e]));
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((tid & 31) == 0) red_f[tid >> 5] = m;
  __syncthreads();
  float amax = 0.0f;
  for (int q = 0; q < warps; ++q) amax = fmaxf(amax, red_f[q]);
  const float s =
      g.a_scale != nullptr ? bits_value(g.a_scale_dt, s_bits) : scale_as_stored(amax, 8, SSMKIT_DTYPE_F32);
#pragma unroll
  for (int j = 0; j < kC; ++j) {
    const int c = tid + j * nt;
    if (c >= chunks) continue;
    reinterpret_cast<uint2*>(nat)[c] = quant8_bytes(v[j], s);
  }
  __syncthreads();
  return s;
}

// kFold: the folded norm and quantizer (g.pre_x set; int8 x, one row), an instance of its own so that the
// other instances keep their code and registers.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kMT, bool kFold>
__global__ void __launch_bounds__(32 * kPairMaxWarps) gemm_pair_kernel(const gemm_args g) {
  constexpr bool kInt8 = kKind == KIND_W8A8;
  constexpr bool kW4A8 = kKind == KIND_W4A8;
  constexpr bool kIntX = kInt8 || kW4A8;  // int8 x, exact int32 sums
  static_assert(!(kInt8 && kGrouped), "the pair path takes W8A8 without groups");
  constexpr int kVecs = kInt8 ? 8 : 4;  // 16-byte weight vectors a lane and step
  extern __shared__ __align__(16) uint4 pair_smem[];
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  const int gq = lane >> 2, tq = lane & 3;
  // 32-bit offsets: pair_takes keeps m k within kPairMaxXBytes, so every offset from a base fits.
  const int steps = static_cast<int>(g.k / kPairStepK);
  const int s0 = warp * steps / warps, s1 = (warp + 1) * steps / warps;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kPairCols + 4 * gq;  // the lane's columns col0 + c
  // Packed: the lane's vector of k-step ks sits at wbase + ks * kstep_stride (absent panels of the last
  // group are never read); plain: column c's row at wrow[c].
  const uint8_t* wbase = nullptr;
  int kstep_stride = 0;
  bool present = true;
  const uint8_t* wrow[4] = {};
  if constexpr (kPlain) {
#pragma unroll
    for (int c = 0; c < 4; ++c) wrow[c] = g.w + min64(col0 + c, g.n - 1) * g.w_row_bytes;
  } else {
    const int64_t panels = (g.n + 15) / 16, ksteps = g.k / (kInt8 ? 4 : 8);
    const int64_t grp = blockIdx.x / 2;
    const int64_t grp_panels = min64(4, panels - grp * 4);
    const int64_t panel = 2 * (blockIdx.x % 2) + gq / 4;
    present = panel < grp_panels;
    wbase = g.w + grp * 4 * ksteps * 64 + panel * 64 + 16 * (gq % 4);
    kstep_stride = static_cast<int>(grp_panels) * 64;
  }
  auto load = [&](int s, uint4(&v)[kVecs]) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if constexpr (kPlain) {
        // int4: column i's 32 k; int8: column i / 2's bytes 64 (i % 2) .. + 16 of the lane.
        v[i] = kInt8 ? ldg_stream16(wrow[i / 2] + (kPairStepK * s + 64 * (i % 2) + 16 * tq))
                     : ldg_stream16(wrow[i] + (64 * s + 16 * tq));
      } else {
        // int4: k-step 16 s + 4 tq + i; int8: k-steps 32 s + 8 (i / 2) + tq (+ 4 for odd i).
        const int ks = kInt8 ? 32 * s + 8 * (i / 2) + 4 * (i % 2) + tq : 16 * s + 4 * tq + i;
        v[i] = present ? ldg_stream16(wbase + ks * kstep_stride) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // Group scales (W4A16: 16-bit, x's dtype; W4A8: their bits in g.w_scale_dt) are requested with the
  // weights, volatile so that they are not sunk to their use.
  const unsigned short* srow[4] = {};
  const unsigned* srow32[4] = {};
  if constexpr (kGrouped) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t first = min64(col0 + c, g.n - 1) * g.groups;
      srow[c] = static_cast<const unsigned short*>(g.w_scale) + first;
      if constexpr (kW4A8) srow32[c] = static_cast<const unsigned*>(g.w_scale) + first;
    }
  }
  const int steps_per_group = static_cast<int>(g.group_size / kPairStepK);
  auto load_scales = [&](int s, uint32_t(&sb)[4]) {
    if constexpr (kGrouped) {
      const int gi = s / steps_per_group;
      if (kW4A8 && g.w_scale_dt == SSMKIT_DTYPE_F32) {
#pragma unroll
        for (int c = 0; c < 4; ++c)
          asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(sb[c]) : "l"(srow32[c] + gi));
      } else {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          unsigned short v;
          asm volatile("ld.global.nc.u16 %0, [%1];" : "=h"(v) : "l"(srow[c] + gi));
          sb[c] = v;
        }
      }
    }
  };
  uint4 next[kVecs];
  uint32_t next_sb[4] = {};
  if (s0 < s1) {
    load(s0, next);
    load_scales(s0, next_sb);
  }
  // Launched in a PDL chain (g.pdl): the weights above are constant; x is the kernel before's output, and
  // out may still be read by it. The next kernel is scheduled once every block has waited (the decode
  // step's late trigger). Without the attribute both return at once.
  pdl_wait();
  pdl_trigger();
  // x into shared memory: W4A16 as the weights' pairs, uint4 (row, 8-k group); W8A8 as words (row, step,
  // 32 words), lane tq's 8 words of a step at 8 tq; W4A8 as words in place, for plain weights each pair of
  // them (8 k) as its even k, then its odd k (the order in which a plain weight word widens, see below;
  // a packed word holds k 0..3 in its low nibbles and 4..7 in its high ones, x's own order).
  const int m = static_cast<int>(g.m), k = static_cast<int>(g.k);
  // x's int8 row: g.a, or with the folded norm and quantizer (one row) made here into shared memory after
  // the staged x (k bytes: pair_fold_bytes).
  const uint4* xg = static_cast<const uint4*>(g.a);
  static_assert(!kFold || (kIntX && kMT == 1), "the fold takes one row of int8 x");
  __shared__ float fold_scale;
  if constexpr (kFold) {
    int8_t* nat = reinterpret_cast<int8_t*>(pair_smem) + k;
    const float fs = g.pre_x_dt == SSMKIT_DTYPE_F16 ? pair_prenorm_quant<SSMKIT_DTYPE_F16>(g, nat)
                                                    : pair_prenorm_quant<SSMKIT_DTYPE_BF16>(g, nat);
    if (threadIdx.x == 0) fold_scale = fs;
    xg = reinterpret_cast<const uint4*>(nat);
  }
  if constexpr (kW4A8) {
    uint4* xs = pair_smem;
    for (int q = static_cast<int>(threadIdx.x); q < m * k / 16; q += static_cast<int>(blockDim.x)) {
      const uint4 v = xg[q];
      xs[q] = kPlain ? make_uint4(__byte_perm(v.x, v.y, 0x6420), __byte_perm(v.x, v.y, 0x7531),
                                  __byte_perm(v.z, v.w, 0x6420), __byte_perm(v.z, v.w, 0x7531))
                     : v;
    }
  } else if constexpr (kInt8) {
    uint32_t* xs = reinterpret_cast<uint32_t*>(pair_smem);
    for (int q = static_cast<int>(threadIdx.x); q < m * k / 16; q += static_cast<int>(blockDim.x)) {
      const uint4 v = xg[q];
      const uint32_t w4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int wd = 4 * q + i;  // the word's index in x
        const int r = static_cast<int>(wd & 31);
        // plain: r = 16 h + 4 t + i' -> 8 t + 4 h + i'; packed: r = 8 j + 4 h + t -> 8 t + 2 j + h.
        const int pos = kPlain ? 8 * ((r >> 2) & 3) + 4 * (r >> 4) + (r & 3)
                               : 8 * (r & 3) + 2 * (r >> 3) + ((r >> 2) & 1);
        xs[(wd & ~31) + pos] = w4[i];
      }
    }
  } else {
    for (int q = static_cast<int>(threadIdx.x); q < m * k / 8; q += static_cast<int>(blockDim.x)) {
      const uint4 v = xg[q];
      pair_smem[q] = make_uint4(__byte_perm(v.x, v.y, 0x5410), __byte_perm(v.z, v.w, 0x5410),
                                __byte_perm(v.x, v.y, 0x7632), __byte_perm(v.z, v.w, 0x7632));
    }
  }
  __syncthreads();
  // Exact int32 totals for W8A8 and W4A8 without groups; float32 ones for W4A16, and for W4A8 with groups
  // (gacc: the int32 sums of the warp's current group, 16 times the products').
  using Acc = std::conditional_t<kIntX && !kGrouped, int, float>;
  Acc acc[2][kMT][4] = {};
  int gacc[2][kMT][4] = {};
  for (int s = s0; s < s1; ++s) {
    uint4 cur[kVecs];
    uint32_t sb[4];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) cur[i] = next[i];
#pragma unroll
    for (int c = 0; c < 4; ++c) sb[c] = next_sb[c];
    if (s + 1 < s1) {
      load(s + 1, next);
      load_scales(s + 1, next_sb);
    }
    if constexpr (kIntX) {
      uint32_t xw[kMT][8];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        const int row = 8 * mt + gq;
        uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
        if (row < m) {
          const uint4* p = reinterpret_cast<const uint4*>(reinterpret_cast<const uint32_t*>(pair_smem) +
                                                          row * (k / 4) + 32 * s + 8 * tq);
          x0 = p[0];
          x1 = p[1];
        }
        xw[mt][0] = x0.x;
        xw[mt][1] = x0.y;
        xw[mt][2] = x0.z;
        xw[mt][3] = x0.w;
        xw[mt][4] = x1.x;
        xw[mt][5] = x1.y;
        xw[mt][6] = x1.z;
        xw[mt][7] = x1.w;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if constexpr (kW4A8) {
          // Mma j takes k 32 tq + 8 j .. + 7 of each column (one word: plain, column c's vector; packed,
          // k-step j's vector, its nibbles w + 8): each nibble widened into its byte's high half is 16 w
          // as s8, the low nibbles in k-slots 4 tq.. and the high ones in 16 + 4 tq.. (plain: the even k,
          // then the odd; packed: k 0..3, then 4..7), as x's words are staged. The sums are 16 times the
          // products': exact, and shifted back before the warps' sums are added.
#pragma unroll
          for (int tl = 0; tl < 2; ++tl) {
            const uint32_t wa = kPlain ? word_at(cur[2 * tl], j) : word_at(cur[j], 2 * tl) ^ 0x88888888u;
            const uint32_t wb =
                kPlain ? word_at(cur[2 * tl + 1], j) : word_at(cur[j], 2 * tl + 1) ^ 0x88888888u;
            const uint32_t a0 = (wa << 4) & 0xf0f0f0f0u, a1 = (wb << 4) & 0xf0f0f0f0u;
            const uint32_t a2 = wa & 0xf0f0f0f0u, a3 = wb & 0xf0f0f0f0u;
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              if constexpr (kGrouped) {
                mma_s8(gacc[tl][mt], a0, a1, a2, a3, xw[mt][2 * j], xw[mt][2 * j + 1]);
              } else {
                mma_s8(acc[tl][mt], a0, a1, a2, a3, xw[mt][2 * j], xw[mt][2 * j + 1]);
              }
            }
          }
        } else {
#pragma unroll
          for (int tl = 0; tl < 2; ++tl) {
            // Column c's words of mma j: a0-like (k-slots 4 tq..) and a2-like (16 + 4 tq..).
            auto word = [&](int c, int half) -> uint32_t {
              if constexpr (kPlain) return word_at(cur[2 * c + j / 2], 2 * (j % 2) + half);
              return word_at(cur[2 * j + half], c) ^ 0x80808080u;
            };
            const uint32_t a0 = word(2 * tl, 0), a1 = word(2 * tl + 1, 0), a2 = word(2 * tl, 1),
                           a3 = word(2 * tl + 1, 1);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt)
              mma_s8(acc[tl][mt], a0, a1, a2, a3, xw[mt][2 * j], xw[mt][2 * j + 1]);
          }
        }
      }
      // W4A8 with groups: the group's sums (exact, so the shift is too) times its scales into the totals
      // at its last step, or at the last of the warp's range (a group split between warps is added by each).
      if constexpr (kW4A8 && kGrouped) {
        if ((s + 1) % steps_per_group == 0 || s + 1 == s1) {
#pragma unroll
          for (int tl = 0; tl < 2; ++tl) {
            const float sa = bits_value(g.w_scale_dt, sb[2 * tl]),
                        sc = bits_value(g.w_scale_dt, sb[2 * tl + 1]);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                acc[tl][mt][e] =
                    fmaf(static_cast<float>(gacc[tl][mt][e] >> 4), e < 2 ? sa : sc, acc[tl][mt][e]);
                gacc[tl][mt][e] = 0;
              }
            }
          }
        }
      }
    } else {
      float tmp[2][kMT][4];
#pragma unroll
      for (int tl = 0; tl < 2; ++tl) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) tmp[tl][mt][e] = 0.0f;
        }
      }
      // The step's products into sums: the totals without groups, the step's own sums with them.
      auto multiply = [&](float(&sums)[2][kMT][4]) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint4 xq[kMT];
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const int row = 8 * mt + gq;
            xq[mt] = row < m ? pair_smem[row * (k / 8) + 16 * s + 4 * tq + i] : make_uint4(0, 0, 0, 0);
          }
          w4_kstep_mma<kX, kPlain, kMT>(sums, cur, i, xq);
        }
      };
      if constexpr (kGrouped) {
        multiply(tmp);
      } else {
        multiply(acc);
      }
      if constexpr (kGrouped) add_group_scaled<kX, kMT>(acc, tmp, sb);  // scales in x's dtype: pair_takes
    }
  }
  if constexpr (kW4A8 && !kGrouped) {
#pragma unroll
    for (int tl = 0; tl < 2; ++tl) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[tl][mt][e] >>= 4;
      }
    }
  }
  // The warps' sums, added in warp order: value j = (tl kMT + mt) 4 + e of every lane.
  __syncthreads();  // every warp is done with x
  constexpr int kVals = 2 * kMT * 4;
  Acc* red = reinterpret_cast<Acc*>(pair_smem);
  store_set_sums<kMT>(red + warp * kVals * 32 + lane, acc);
  __syncthreads();
  if constexpr (kFold) {
    if (g.a_scale == nullptr) {  // the folded quantizer's per-token scale
      finish_set_sums<kMT, 1, kGrouped>(with_fold_scale(g, &fold_scale), m, red, warps);
      return;
    }
  }
  finish_set_sums<kMT, 1, kGrouped>(g, m, red, warps);  // kPairCols columns a block
}

// ---------------------------------------------------------------------------------------------------
// Stream path (sm_90; plain W8A8 rows, 8 <= m <= 16, k % 128 == 0 with at most 3 128-k steps a warp, 16-byte
// aligned bases, outside a PDL chain): a block an SM. Block b owns the columns [c0, c1) (whole quads,
// spread evenly), which in the plain layout are one contiguous run of weight rows, and requests all of
// it at its start through the bulk copy engine into shared memory: a copy a column (rows kStreamPad bytes
// apart, so that the eight lanes of a quarter warp read eight bank groups), one mbarrier a set of 32
// columns. Every byte of the block's share is then in flight at once, where the pair path keeps a
// warp's next step in flight. Each warp owns a contiguous range of the 128-k steps, holds x's words of
// those steps in registers (read from global memory while the weights are in flight) and runs the sets
// in order as they land; a lane holds columns gq + 8 q (q = 0..3) of a set as rows gq and gq + 8 of two
// m16 tiles (the A operand of m16n8k32). Sums in int32, added across warps in shared memory (exact and
// associative, so every order and every path gives the same bits), then the pair path's epilogue.
constexpr int kStreamSetCols = 32;
constexpr int kStreamMaxSets = 4;
constexpr int kStreamMaxWarps = 16;  // 512 threads, up to 128 registers a thread
constexpr int kStreamMaxSteps = 3;   // 128-k steps a warp (x's words in registers)
constexpr int kStreamPad = 16;
// Rows from which it takes plain W8A8 (H200, Nsight, 2560 x 10240, against the pair path: 1 row 11.7-12.1
// against 10.8 us, 4 rows 12.0-12.9 against 11.6-12.0, 8 rows 12.0-12.2 against 12.5-12.6, 9 rows 13.0-13.1
// against 13.8-13.9, 16 rows 13.2-13.6 against 15.3-16.0).
constexpr int kStreamMinM = 8;
// The kernel's static shared memory (the host sizes the dynamic part beside it): a barrier a set, the
// sets' sums (value j of lane l at (set kVals + j) 32 + l) and the epilogue's factors.
template <int kMT>
struct stream_shared {
  static constexpr int kVals = 2 * kMT * 4;
  uint64_t bars[kStreamMaxSets];
  int red[kStreamMaxSets * kVals * 32];
  float ws[kStreamMaxSets * kStreamSetCols];    // w_scale a column
  float bias[kStreamMaxSets * kStreamSetCols];  // bias a column (0 without)
  float as[16];                                 // a_scale a row
};

template <int kMT>
__global__ void __launch_bounds__(32 * kStreamMaxWarps) gemm_stream_kernel(const gemm_args g) {
  // Built for a target without the bulk copy engine, the kernel traps; the host launches it only on
  // sm_90 devices (stream_takes), whose code in the release build is sm_90a.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kVals = stream_shared<kMT>::kVals;
  extern __shared__ __align__(128) unsigned char stream_smem[];
  __shared__ stream_shared<kMT> sh;
  uint64_t* bars = sh.bars;
  int* red = sh.red;
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  const int gq = lane >> 2, tq = lane & 3;
  const int k = static_cast<int>(g.k), m = static_cast<int>(g.m);
  const int64_t quads = (g.n + 3) / 4;
  const int64_t c0 = 4 * (static_cast<int64_t>(blockIdx.x) * quads / gridDim.x);
  const int64_t c1 = min64(g.n, 4 * (static_cast<int64_t>(blockIdx.x + 1) * quads / gridDim.x));
  const int ncols = static_cast<int>(c1 - c0);
  const int sets = (ncols + kStreamSetCols - 1) / kStreamSetCols;
  const int pitch = k + kStreamPad;  // stream_takes: every offset below fits in 32 bits
  if (static_cast<int>(threadIdx.x) < sets) mbar_init(bars + threadIdx.x, 1);
  for (int i = static_cast<int>(threadIdx.x); i < sets * kVals * 32; i += static_cast<int>(blockDim.x))
    red[i] = 0;
  mbar_init_fence();
  __syncthreads();
  if (warp == 0) {
    if (lane < sets) {
      const int cols = min(kStreamSetCols, ncols - kStreamSetCols * lane);
      mbar_arrive_expect_tx(bars + lane, static_cast<uint32_t>(cols * k));
    }
    __syncwarp();
    for (int c = lane; c < ncols; c += 32)
      bulk_load_1d(stream_smem + c * pitch, g.w + (c0 + c) * g.w_row_bytes, k, bars + c / kStreamSetCols);
  }
  // The epilogue's factors, read while the weights are in flight (a block may have fewer threads than
  // columns).
  for (int i = static_cast<int>(threadIdx.x); i < ncols; i += static_cast<int>(blockDim.x)) {
    sh.ws[i] = col_scale(g, c0 + i);
    sh.bias[i] = col_bias(g, c0 + i);
  }
  for (int i = static_cast<int>(threadIdx.x); i < m; i += static_cast<int>(blockDim.x))
    sh.as[i] = row_scale(g, i);
  // x's words of the warp's steps: for mma j of a step, k-slots 4 tq.. and 16 + 4 tq.. are bytes 64 (j / 2)
  // + 16 tq + 8 (j % 2) (+ 4) of the step, for the weights and x alike.
  const int steps = k / kPairStepK;
  const int s0 = warp * steps / warps, ns = (warp + 1) * steps / warps - s0;
  uint4 xr[kStreamMaxSteps][kMT][2];
#pragma unroll
  for (int i = 0; i < kStreamMaxSteps; ++i) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int row = 8 * mt + gq;
      const unsigned char* xp =
          static_cast<const unsigned char*>(g.a) + row * k + kPairStepK * (s0 + i) + 16 * tq;
      const bool ok = i < ns && row < m;
      xr[i][mt][0] = ok ? ldg_stream16(xp) : make_uint4(0, 0, 0, 0);
      xr[i][mt][1] = ok ? ldg_stream16(xp + 64) : make_uint4(0, 0, 0, 0);
    }
  }
  for (int set = 0; set < sets; ++set) {
    // The lane's column slots q: local column 32 set + gq + 8 q (clamped: absent columns read the last
    // one's row, their sums are never stored).
    const unsigned char* wq[4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
      wq[q] =
          stream_smem + min(kStreamSetCols * set + gq + 8 * q, ncols - 1) * pitch + kPairStepK * s0 + 16 * tq;
    int acc[2][kMT][4] = {};
    mbar_wait(bars + set, 0);
#pragma unroll
    for (int i = 0; i < kStreamMaxSteps; ++i) {
      if (i >= ns) break;
      uint4 w[4][2];  // column slot q: bytes 128 s + 16 tq (h = 0) and + 64 (h = 1)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        w[q][0] = *reinterpret_cast<const uint4*>(wq[q] + kPairStepK * i);
        w[q][1] = *reinterpret_cast<const uint4*>(wq[q] + kPairStepK * i + 64);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int tl = 0; tl < 2; ++tl) {
          const int h = j / 2, o = 2 * (j % 2);
          const uint32_t a0 = word_at(w[2 * tl][h], o), a1 = word_at(w[2 * tl + 1][h], o),
                         a2 = word_at(w[2 * tl][h], o + 1), a3 = word_at(w[2 * tl + 1][h], o + 1);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
            mma_s8(acc[tl][mt], a0, a1, a2, a3, word_at(xr[i][mt][h], o), word_at(xr[i][mt][h], o + 1));
        }
      }
    }
    // The set's sums: value j = (tl kMT + mt) 4 + e of every lane.
#pragma unroll
    for (int tl = 0; tl < 2; ++tl) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          atomicAdd(red + (set * kVals + (tl * kMT + mt) * 4 + e) * 32 + lane, acc[tl][mt][e]);
      }
    }
  }
  __syncthreads();
  for (int idx = static_cast<int>(threadIdx.x); idx < sets * kVals * 32;
       idx += static_cast<int>(blockDim.x)) {
    const int st = idx / (kVals * 32), j = (idx >> 5) % kVals, l = idx & 31;
    const int tl = j / (kMT * 4), mt = (j >> 2) % kMT, e = j & 3;
    const int64_t row = 8 * mt + 2 * (l & 3) + (e & 1);
    const int lc = kStreamSetCols * st + (l >> 2) + 16 * tl + 8 * (e >> 1);
    if (row >= m || lc >= ncols) continue;
    const float v = finish<false>(static_cast<float>(red[idx]), sh.as[row], sh.ws[lc], sh.bias[lc]);
    store_float(g.out, g.out_dt, row * g.n + c0 + lc, v);
  }
#else
  (void)g;
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------
// Group path (sm_90; W4A16 with 16-bit x, plain or packed weights, 1 to 16 rows, k % 128 == 0, groups of
// whole 128-k steps, 16-byte aligned bases, outside a PDL chain), where the 64-column groups of the
// packed layout fill one wave of the SMs (group_takes). A block owns one group and all of k; warp w takes
// the 128-k steps w, w + W, ... (W = group_warps). The packed layout keeps a group's step contiguous (4 KB),
// so each warp keeps its next kGroupSlots steps in flight by the bulk copy engine in slots of its own,
// each with a barrier, and refills a slot as soon as it has read it. Plain weights (a column's step is 64
// bytes, one row apart from the next column's) are loaded into registers at the step instead. x's 16
// bytes a (row, k-step) and the step's group scales are requested a step ahead. A step is the pair path's
// step on both sets of 32 columns (the same lane order, conversion and mma), so plain and packed weights
// give the same bits; the warps' sums are added in warp order in shared memory, then the pair path's
// epilogue.
// Measured (H200, Nsight, packed, groups of 128, against the ring in an earlier run): 8192 x 8192 at 2,
// 4, 8 and 16 rows 16.9-18.5 / 21.4-21.6 us against 22.3-23.6 / 34.1-37.8; 16 x 2560 x 8192 11.1-11.7
// against 16.3-17.4; 16 x 16384 x 8192 34.6-34.9 against 98.7-99.1 (the decode kernel). Before x was
// requested a step ahead (16 warps at two m16 tiles too): 25.0-25.9 us at 16 rows, the same at 2 to 8. A
// first form with stages shared by all warps (a producer warp, full and empty barriers a stage) measured
// the same as that. At 192 KB of slots: with x and the arithmetic removed (timing builds) the feed alone
// took 15.5 us at 8192 x 8192; one row 19.0-19.5 against the pair path's 19.0-19.7; 160 groups (2560 x
// 10240) in two waves 15.7 / 20.9 us at 4 / 16 rows against the ring's 12.4 / 16.2. At 128 KB, one row of
// 8192 x 8192 16.8-17.3 us against the pair path's 19.2-19.9 in the same run: the group path takes one row
// since. Tried and not kept: the weights converted as 16 + u without the subtraction (the bias -24 x added
// by mma of a constant A) and the scales staged in shared memory once a block, 16% fewer SASS instructions
// a step (746 -> 626), measured 0-1.3 us slower at 2 to 16 rows (one row 17.7-19.3 against this form's
// 16.8-17.3 in an earlier run): the step's instructions are not what bounds the kernel (bench/RESULTS.md).
// One slot a warp (64 KB a block at one m16 tile of rows, 32 KB at two) against two and four (128 KB):
// 1 / 2-8 / 16 rows of 8192 x 8192 15.8-16.0 / 15.9-16.9 / 19.2-19.5 us against 16.2-17.8 / 17.5-18.4 /
// 21.4-21.9, 16 x 16384 x 8192 32.3-33.2 against 34.7-35.0: the less each SM asks for at once, the sooner
// its first bytes land (at 32 KB an SM, 4.2 MB in flight is about what 4.2 TB/s needs over a microsecond
// of latency). Tried and not kept: the refill issued after the step's arithmetic instead of before it
// (0.5-2 us slower, 3.7 at k = 16384), and both sets' words read first with their mma chains interleaved
// k-step by k-step (1-2.5 us slower; 5 at k = 16384).
constexpr int kGroupCols = 64;
constexpr int kGroupStepBytes = 16 * 256;  // a packed step of a whole group: 16 k-steps of 4 panels
// Warps a block: 16 for one m16 tile of rows (128 registers a thread), 8 for two (x's next step takes 64
// registers), each with one slot: its next step in flight while it works on the one in hand (64 and
// 32 KB a block).
constexpr int group_warps(int mt) {
  return mt == 1 ? 16 : 8;
}
constexpr int kGroupSlots = 1;
// A block's dynamic shared memory: the warps' slots (packed weights), and the warps' sums at the end
// (store_set_sums of both sets) in the same bytes.
constexpr int group_smem_bytes(int mt, bool plain) {
  const int red = group_warps(mt) * 2 * 2 * mt * 4 * 32 * 4;
  const int slots = plain ? 0 : group_warps(mt) * kGroupSlots * kGroupStepBytes;
  return red > slots ? red : slots;
}

template <ssmkit_dtype kX, bool kGrouped, bool kPlain, int kMT>
__global__ void __launch_bounds__(32 * group_warps(kMT), 1) gemm_group_kernel(const gemm_args g) {
  // Built for a target without the bulk copy engine, the kernel traps; the host launches it only on sm_90
  // devices (group_takes), whose code in the release build is sm_90a.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int W = group_warps(kMT), kSlots = kGroupSlots;
  extern __shared__ __align__(128) unsigned char group_smem[];
  __shared__ uint64_t bars[W * kSlots];
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int gq = lane >> 2, tq = lane & 3;
  const int k = static_cast<int>(g.k), m = static_cast<int>(g.m);
  const int steps = k / kPairStepK;
  const int64_t col_base = static_cast<int64_t>(blockIdx.x) * kGroupCols;
  // Packed: the panels of this group that exist, the bytes of one k-step (8 k) and of one step.
  const int grp_panels = static_cast<int>(min64(4, (g.n + 15) / 16 - 4 * static_cast<int64_t>(blockIdx.x)));
  const int kstep_bytes = grp_panels * 64;
  const uint8_t* wgrp = g.w + static_cast<int64_t>(blockIdx.x) * 4 * (k / 8) * 64;
  uint64_t* bar = bars + warp * kSlots;
  unsigned char* slots = group_smem + warp * kSlots * kGroupStepBytes;
  // Step s of the warp's r-th turn into slot r % kSlots.
  auto request = [&](int r) {
    const int s = warp + W * r;
    if (s >= steps) return;
    const uint32_t bytes = static_cast<uint32_t>(16 * kstep_bytes);
    mbar_arrive_expect_tx(bar + r % kSlots, bytes);
    bulk_load_1d(slots + (r % kSlots) * kGroupStepBytes, wgrp + static_cast<int64_t>(s) * bytes, bytes,
                 bar + r % kSlots);
  };
  if constexpr (!kPlain) {
    if (lane == 0) {
      for (int i = 0; i < kSlots; ++i) mbar_init(bar + i, 1);
      mbar_init_fence();
      for (int r = 0; r < kSlots; ++r) request(r);
    }
    __syncwarp();
  }
  // x's rows 8 mt + gq (absent rows read as zeros) and the group scales of the lane's columns
  // 32 set + 4 gq + c.
  const uint16_t* xrow[kMT];
  bool xok[kMT];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    const int row = 8 * mt + gq;
    xok[mt] = row < m;
    xrow[mt] = static_cast<const uint16_t*>(g.a) + static_cast<int64_t>(min(row, m - 1)) * k;
  }
  const unsigned short* srow[2][4] = {};
  const uint8_t* wrow[2][4] = {};  // plain: the lane's columns' rows
#pragma unroll
  for (int set = 0; set < 2; ++set) {
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t col = min64(col_base + 32 * set + 4 * gq + c, g.n - 1);
      if constexpr (kGrouped) srow[set][c] = static_cast<const unsigned short*>(g.w_scale) + col * g.groups;
      if constexpr (kPlain) wrow[set][c] = g.w + col * g.w_row_bytes + 16 * tq;
    }
  }
  const int steps_per_group = static_cast<int>(g.group_size / kPairStepK);
  // x's 16 bytes of k-step 16 s + 4 tq + i of each row, and the step's group scales: requested a step
  // ahead of their use.
  uint4 xn[4][kMT];
  uint32_t sbn[2][4] = {};
  auto load_x = [&](int s) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        xn[i][mt] = xok[mt] ? __ldg(reinterpret_cast<const uint4*>(xrow[mt] + 8 * (16 * s + 4 * tq + i)))
                            : make_uint4(0, 0, 0, 0);
    }
    if constexpr (kGrouped) {
      const int gi = s / steps_per_group;
#pragma unroll
      for (int set = 0; set < 2; ++set) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          unsigned short v;
          asm volatile("ld.global.nc.u16 %0, [%1];" : "=h"(v) : "l"(srow[set][c] + gi));
          sbn[set][c] = v;
        }
      }
    }
  };
  if (warp < steps) load_x(warp);
  constexpr int kVals = 2 * 2 * kMT * 4;  // a lane's sums: (set, tl, mt, e)
  float acc[2][2][kMT][4] = {};
  for (int r = 0, s = warp; s < steps; ++r, s += W) {
    // The step's 8 values of x a (row, k-step) as the pairs (k0, k2), (k4, k6), (k1, k3), (k5, k7).
    uint4 xq[4][kMT];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 v = xn[i][mt];
        xq[i][mt] = make_uint4(__byte_perm(v.x, v.y, 0x5410), __byte_perm(v.z, v.w, 0x5410),
                               __byte_perm(v.x, v.y, 0x7632), __byte_perm(v.z, v.w, 0x7632));
      }
    }
    uint32_t sb[2][4];
#pragma unroll
    for (int set = 0; set < 2; ++set) {
#pragma unroll
      for (int c = 0; c < 4; ++c) sb[set][c] = sbn[set][c];
    }
    if (s + W < steps) load_x(s + W);
    if constexpr (!kPlain) mbar_wait(bar + r % kSlots, static_cast<uint32_t>((r / kSlots) & 1));
#pragma unroll
    for (int set = 0; set < 2; ++set) {
      // plain: column 32 set + 4 gq + c, k-steps 4 tq .. 4 tq + 3 of the step (16 bytes of its row);
      // packed: k-step 4 tq + i of the slot, columns 4 gq .. 4 gq + 3 (absent panels read as zeros).
      uint4 cur[4];
      if constexpr (kPlain) {
#pragma unroll
        for (int c = 0; c < 4; ++c) cur[c] = ldg_stream16(wrow[set][c] + 64 * s);
      } else {
        const unsigned char* st = slots + (r % kSlots) * kGroupStepBytes;
        const int panel = 2 * set + gq / 4;
#pragma unroll
        for (int i = 0; i < 4; ++i)
          cur[i] = panel < grp_panels ? *reinterpret_cast<const uint4*>(st + (4 * tq + i) * kstep_bytes +
                                                                        64 * panel + 16 * (gq % 4))
                                      : make_uint4(0, 0, 0, 0);
        if (set == 1) {
          // The slot's bytes are in registers: every lane's reads are done before its refill.
          __syncwarp();
          if (lane == 0) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            request(r + kSlots);
          }
        }
      }
      float tmp[2][kMT][4] = {};
      float(&sums)[2][kMT][4] = kGrouped ? tmp : acc[set];
#pragma unroll
      for (int i = 0; i < 4; ++i) w4_kstep_mma<kX, kPlain, kMT>(sums, cur, i, xq[i]);
      if constexpr (kGrouped) add_group_scaled<kX, kMT>(acc[set], tmp, sb[set]);
    }
  }
  // The warps' sums, added in warp order: value j = ((set 2 + tl) kMT + mt) 4 + e of every lane. Every
  // copy has landed (each was waited for), so the slots' memory is free.
  __syncthreads();
  float* red = reinterpret_cast<float*>(group_smem);
#pragma unroll
  for (int set = 0; set < 2; ++set)
    store_set_sums<kMT>(red + (warp * kVals + set * 2 * kMT * 4) * 32 + lane, acc[set]);
  __syncthreads();
  finish_set_sums<kMT, 2, kGrouped>(g, m, red, W);  // kGroupCols columns a block
#else
  (void)g;
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------------
// Host side: device properties, the split-k workspace, launch helpers.

// Whether device dev has compute capability 9.0 (the build's sm_90a code runs there), asked once a device.
bool sm90a_device(int dev) {
  if (dev < 0 || dev >= kMaxDevices) return false;
  static std::atomic<int> known[kMaxDevices];  // 0 unknown, 1 no, 2 yes
  int state = known[dev].load(std::memory_order_acquire);
  if (state == 0) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    state = major == 9 && minor == 0 ? 2 : 1;
    known[dev].store(state, std::memory_order_release);
  }
  return state == 2;
}

struct device_limits {
  int sms = 0;
  int smem_optin = 0;
};

std::mutex g_mu;
device_limits g_limits[kMaxDevices];

// The tile counters and the partial sums live in separate buffers: a call with few tiles must never
// write partials over the counters of a call with more (they stay zero only if nothing else writes them).
struct split_workspace {
  void* counters = nullptr;
  size_t counter_bytes = 0;
  void* partials = nullptr;
  size_t partial_bytes = 0;
};
split_workspace g_workspace[kMaxDevices];

status limits_of(int dev, device_limits* out) {
  if (dev < 0 || dev >= kMaxDevices) return make_status(status_code::value, "cuda: no device %d", dev);
  std::lock_guard<std::mutex> lock(g_mu);
  device_limits& l = g_limits[dev];
  if (l.sms == 0) {
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    SSMKIT_CUDA_CHECK(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev));
  }
  *out = l;
  return ok_status();
}

// The split-k workspace of one launch: `counter_bytes` of tile counters that are zero on entry (the last
// block of each tile resets its counter after use) and `partial_bytes` of partial sums. Normally the
// device's two buffers, each grown on the stream (so that kernels still using the old one finish first)
// and never freed, the outgrown ones included: a graph captured earlier keeps the addresses it was given.
// While the stream is capturing they are never grown: a growth would become a graph allocation that the
// graph never frees, and such a graph cannot be launched a second time. A capture that needs more gets
// its own buffer, allocated, zeroed and freed inside the graph (release() after the launch), which every
// replay of the graph allocates afresh from the graph's pool.
struct launch_workspace {
  int* counters = nullptr;
  void* partials = nullptr;
  void* owned = nullptr;  // freed on the stream by release()
  cudaStream_t stream = nullptr;
  launch_workspace() = default;
  launch_workspace(const launch_workspace&) = delete;
  launch_workspace& operator=(const launch_workspace&) = delete;
  ~launch_workspace() {
    if (owned != nullptr) cudaFreeAsync(owned, stream);  // an early return's path; release() reports
  }
  status release() {
    void* p = owned;
    owned = nullptr;
    if (p != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(p, stream));
    return ok_status();
  }
};

status workspace(int dev, cudaStream_t stream, size_t counter_bytes, size_t partial_bytes,
                 launch_workspace* out) {
  out->stream = stream;
  counter_bytes = (counter_bytes + 255) / 256 * 256;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SSMKIT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  std::lock_guard<std::mutex> lock(g_mu);
  split_workspace& w = g_workspace[dev];
  const bool fits = w.counter_bytes >= counter_bytes && w.partial_bytes >= partial_bytes;
  if (!fits && capture != cudaStreamCaptureStatusNone) {
    void* p = nullptr;
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&p, counter_bytes + partial_bytes, stream));
    out->owned = p;
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(p, 0, counter_bytes, stream));
    out->counters = static_cast<int*>(p);
    out->partials = static_cast<uint8_t*>(p) + counter_bytes;
    return ok_status();
  }
  if (w.counter_bytes < counter_bytes) {
    const size_t grown = std::max(counter_bytes, 2 * w.counter_bytes);
    void* p = nullptr;
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&p, grown, stream));
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(p, 0, grown, stream));
    w.counters = p;
    w.counter_bytes = grown;
  }
  if (w.partial_bytes < partial_bytes) {
    const size_t grown = std::max(partial_bytes, 2 * w.partial_bytes);
    void* p = nullptr;
    SSMKIT_CUDA_CHECK(cudaMallocAsync(&p, grown, stream));
    w.partials = p;
    w.partial_bytes = grown;
  }
  out->counters = static_cast<int*>(w.counters);
  out->partials = w.partials;
  return ok_status();
}

// Raises a kernel's dynamic shared memory limit to `bytes` (the most any launch from the call site asks
// for) once per device, where the kernel's static shared memory and `bytes` together pass the 48 KB that a
// block gets without opt-in (without the attribute such a launch fails).
template <class Kernel>
status allow_smem(Kernel* kernel, int dev, int bytes, std::atomic<uint64_t>& done) {
  const uint64_t bit = uint64_t{1} << dev;
  if ((done.load(std::memory_order_acquire) & bit) != 0) return ok_status();
  cudaFuncAttributes fa{};
  SSMKIT_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  if (static_cast<size_t>(bytes) + fa.sharedSizeBytes > 48 * 1024)
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.fetch_or(bit, std::memory_order_acq_rel);
  return ok_status();
}

unsigned grid_1d(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, min64(blocks, 1 << 20)));
}

template <int kKind, ssmkit_dtype kX, bool kGrouped>
status launch_skinny(const gemm_args& g, int dev, cudaStream_t stream) {
  using layout = skinny_layout<kKind>;
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  const int64_t tiles_n = (g.n + kSkinnyBlockN - 1) / kSkinnyBlockN;
  const int64_t slices = (g.m + kSkinnyRows - 1) / kSkinnyRows;
  const int64_t max_steps = (g.k + layout::kStepK - 1) / layout::kStepK;
  // Enough blocks for about four per SM, and a k range whose staged rows fit the shared memory budget.
  const int64_t max_range =
      std::max<int64_t>(layout::kStepK, ((kSkinnyMaxSmem / kSkinnyRows - 256) / layout::kXBytes) /
                                            layout::kStepK * layout::kStepK);
  int64_t splits = (4 * static_cast<int64_t>(lim.sms) + tiles_n * slices - 1) / (tiles_n * slices);
  splits = std::max<int64_t>(splits, (g.k + max_range - 1) / max_range);
  splits = min64(std::max<int64_t>(splits, 1), max_steps);
  const int64_t k_range = (max_steps + splits - 1) / splits * layout::kStepK;
  splits = (g.k + k_range - 1) / k_range;
  const int64_t x_stride = layout::row_stride(k_range);
  const int64_t smem = min64(kSkinnyRows, g.m) * x_stride;

  void* partials = nullptr;
  int* counters = nullptr;
  launch_workspace ws;
  if (splits > 1) {
    SSMKIT_RETURN_IF_ERROR(workspace(dev, stream, static_cast<size_t>(tiles_n * slices) * 4,
                                     static_cast<size_t>(splits * g.m * g.n) * 4, &ws));
    counters = ws.counters;
    partials = ws.partials;
  }
  auto* kernel = gemm_skinny_kernel<kKind, kX, kGrouped>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(
      allow_smem(kernel, dev, static_cast<int>(layout::row_stride(max_range) * kSkinnyRows), smem_done));
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(splits),
                  static_cast<unsigned>(slices));
  kernel<<<grid, kSkinnyThreads, static_cast<size_t>(smem), stream>>>(g, k_range, static_cast<int>(splits),
                                                                      x_stride, partials, counters);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ws.release();
}

// Packed decode path: blocks of 4 warps own 256 columns (four 64-column groups) and a k range of whole
// units; k is split into as many ranges as keep the grid within one wave of kBlocksPerSm blocks per SM
// (each warp keeps 8 KiB of weights in flight: 64 to 96 KiB per SM). The split depends on the shape and the
// SM count only, so packed and plain int4 weights take the same one.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain>
status launch_packed(const gemm_args& g, int dev, cudaStream_t stream) {
  constexpr int64_t kBlocksPerSm = packed_traits<kKind, kGrouped>::kBlocksPerSm;
  constexpr int64_t kUnitK = packed_traits<kKind, kGrouped>::kUnitK;
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  const int64_t tiles_n = (g.n + kPackedBlockN - 1) / kPackedBlockN;
  const int64_t slices = (g.m + kSkinnyRows - 1) / kSkinnyRows;
  const int64_t units = (g.k + kUnitK - 1) / kUnitK;
  if (tiles_n > INT32_MAX || slices > 65535) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  // At most one wave of resident blocks: a second, partial wave would run its few blocks alone.
  int64_t splits = kBlocksPerSm * lim.sms / (tiles_n * slices);
  splits = std::max<int64_t>(1, min64(min64(splits, units), 65535));
  const int64_t k_range = (units + splits - 1) / splits * kUnitK;
  splits = (g.k + k_range - 1) / k_range;
  const int64_t steps = kKind == KIND_W8A8 ? (g.k + 3) / 4 : (g.k + 7) / 8;
  const int64_t panels = (g.n + 15) / 16;

  void* partials = nullptr;
  int* counters = nullptr;
  launch_workspace ws;
  if (splits > 1) {
    SSMKIT_RETURN_IF_ERROR(workspace(dev, stream, static_cast<size_t>(tiles_n * slices) * 4,
                                     static_cast<size_t>(splits * g.m * g.n) * 4, &ws));
    counters = ws.counters;
    partials = ws.partials;
  }
  const dim3 grid(static_cast<unsigned>(tiles_n), static_cast<unsigned>(splits),
                  static_cast<unsigned>(slices));
  gemm_packed_kernel<kKind, kX, kGrouped, kPlain><<<grid, kPackedThreads, 0, stream>>>(
      g, k_range, static_cast<int>(splits), steps, panels, partials, counters);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ws.release();
}

// Ring path: four groups a block; k split in whole units over a cluster of up to kRingMaxSplits blocks
// (16: non-portable, Hopper allows it), as many as keep the grid within one wave of kBlocksPerSm blocks
// an SM, at least as many as keep a block's range within kMaxUnits (its staged x). Callers check
// ring_fits.
constexpr int64_t kRingMaxSplits = 16;

template <int kKind, int kNT>
bool ring_fits(const gemm_args& g) {
  using R = ring_traits<kKind, kNT>;
  return (g.k + R::kUnitK - 1) / R::kUnitK <= kRingMaxSplits * R::kMaxUnits;
}

template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kNT, bool kConv = false>
status launch_ring(const gemm_args& g, int dev, cudaStream_t stream) {
  using R = ring_traits<kKind, kNT>;
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  const int64_t tiles_n = (g.n + kRingBlockN - 1) / kRingBlockN;
  const int64_t slices = (g.m + R::kRows - 1) / R::kRows;
  const int64_t units = (g.k + R::kUnitK - 1) / R::kUnitK;
  if (tiles_n > INT32_MAX || slices > 65535) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  // At most one wave of resident blocks: a second, partial wave would run its few clusters alone.
  int64_t splits = R::kBlocksPerSm * lim.sms / (tiles_n * slices);
  splits = std::max<int64_t>(splits, (units + R::kMaxUnits - 1) / R::kMaxUnits);
  splits = std::max<int64_t>(1, min64(min64(splits, units), kRingMaxSplits));
  const int64_t per = (units + splits - 1) / splits;
  splits = (units + per - 1) / per;
  if (per > R::kMaxUnits) {
    return make_status(status_code::unsupported, "gemm: k = %lld is too large for the ring path",
                       static_cast<long long>(g.k));
  }
  const int64_t k_range = per * R::kUnitK;
  const int64_t steps = (g.k + R::kStepK - 1) / R::kStepK;
  const int64_t panels = (g.n + 15) / 16;
  // The sums of the cluster reduction reuse the staged x and the ring.
  const int smem = std::max(R::smem_bytes(static_cast<int>(per), kGrouped), R::kRows * (kRingBlockN + 4) * 4);
  auto* kernel = gemm_ring_kernel<kKind, kX, kGrouped, kPlain, kNT, kConv>;
  static std::atomic<uint64_t> attrs_done{0};
  const uint64_t bit = uint64_t{1} << dev;
  if ((attrs_done.load(std::memory_order_acquire) & bit) == 0) {
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           R::smem_bytes(R::kMaxUnits, true)));
    SSMKIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    attrs_done.fetch_or(bit, std::memory_order_acq_rel);
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim =
      dim3(static_cast<unsigned>(tiles_n), static_cast<unsigned>(splits), static_cast<unsigned>(slices));
  cfg.blockDim = dim3(kRingThreads, 1, 1);
  cfg.dynamicSmemBytes = static_cast<size_t>(smem);
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.y = static_cast<unsigned>(splits);
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = g.pdl ? 2 : 1;
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, g, k_range, static_cast<int>(splits), steps, panels));
  return ok_status();
}

// The k split of the GEMV: blocks of `per` chunks (1 KiB of weights each for 64 columns) over the SMs,
// balanced by bytes rather than by waves. The SM with the most blocks, nb = ceil(blocks / SMs), sets the
// time: by bandwidth nb x (per + kGemvBlockCost) chunk times (the fixed work of a block, staging x, the
// lane sums, the partials, is about a quarter of a microsecond at an SM's 32 KiB/us share of the
// bandwidth), and by latency ceil(nb / blocks per SM) x ceil(per / in_flight) dependent rounds of weight
// loads (in_flight: the chunks a block keeps in flight, 32 for both shapes of block), each about
// kGemvRoundCost chunk times. Of the splits up to 64 that the staged x budget allows and that leave at
// least 8 chunks a block where k has them, the one with the smallest larger term, then the smallest
// bandwidth term, then the fewest. At 2560 x 10240, one row (160 groups, 80 chunks, 132 SMs, 4 blocks an
// SM) that is 3 splits, 480 blocks of 27 chunks, at most 4 an SM, one wave: 140 chunk times against 144
// for 2 splits and 97 for a perfect share. The split depends on the shape and the SM count only, so
// packed and plain int4 weights take the same one.
constexpr int64_t kGemvBlockCost = 8;
constexpr int64_t kGemvRoundCost = 40;

int64_t gemv_splits(int64_t groups, int64_t chunks, int64_t max_chunks, int64_t blocks_per_sm,
                    int64_t in_flight, int sms) {
  int64_t best = 0, best_cost = 0, best_bw = 0;
  for (int64_t s = 1; s <= min64(chunks, 64); ++s) {
    const int64_t per = (chunks + s - 1) / s;
    // Smaller blocks idle their threads and lengthen the last block's sum over the splits.
    if (per > max_chunks || per < min64(8, chunks)) continue;
    const int64_t used = (chunks + per - 1) / per;
    if (used != s) continue;  // the same blocks as a smaller split
    const int64_t nb = (groups * used + sms - 1) / sms;
    const int64_t bw = nb * (per + kGemvBlockCost);
    const int64_t lat =
        (nb + blocks_per_sm - 1) / blocks_per_sm * ((per + in_flight - 1) / in_flight) * kGemvRoundCost;
    const int64_t cost = std::max(bw, lat);
    if (best == 0 || cost < best_cost || (cost == best_cost && bw < best_bw)) {
      best = s;
      best_cost = cost;
      best_bw = bw;
    }
  }
  // k too long for 64 splits within the budget: the fewest that fit.
  if (best == 0) best = (chunks + max_chunks - 1) / max_chunks;
  return std::max<int64_t>(best, 1);
}

// GEMV path: one block per 64-column group and k range, split as gemv_splits says.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kM, bool kQuantX = false>
status launch_gemv(const gemm_args& g, int dev, cudaStream_t stream) {
  using T = gemv_traits<kKind, kM>;
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  const int64_t groups = (g.n + 63) / 64;
  const int64_t chunks = (g.k + T::kChunkK - 1) / T::kChunkK;
  int64_t splits =
      gemv_splits(groups, chunks, T::kMaxChunks, T::kBlocksPerSm, T::kDepth * T::kLanes, lim.sms);
  const int64_t per = (chunks + splits - 1) / splits;
  splits = (chunks + per - 1) / per;
  if (groups > INT32_MAX || splits > 65535 || chunks > INT32_MAX) {
    return make_status(status_code::unsupported, "gemm: n x k = %lld x %lld is too large",
                       static_cast<long long>(g.n), static_cast<long long>(g.k));
  }
  const int64_t k_range = per * T::kChunkK;
  const int64_t steps = (g.k + T::kStepK - 1) / T::kStepK;
  const int64_t panels = (g.n + 15) / 16;
  const int64_t smem = std::max<int64_t>(per * T::kXChunkBytes, T::kRedBytes);
  if (smem > lim.smem_optin) {
    return make_status(status_code::unsupported, "gemm: the gemv kernel needs %lld bytes of shared memory",
                       static_cast<long long>(smem));
  }
  auto* kernel = gemm_gemv_kernel<kKind, kX, kGrouped, kPlain, kM, kQuantX>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(
      kernel, dev, static_cast<int>(std::max<int64_t>(T::kMaxChunks * T::kXChunkBytes, T::kRedBytes)),
      smem_done));

  void* partials = nullptr;
  int* counters = nullptr;
  launch_workspace ws;
  if (splits > 1) {
    SSMKIT_RETURN_IF_ERROR(workspace(dev, stream, static_cast<size_t>(groups) * 4,
                                     static_cast<size_t>(splits * g.m * g.n) * 4, &ws));
    counters = ws.counters;
    partials = ws.partials;
  }
  const dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(splits));
  // Groups are whole chunks on this path (one group: a count no chunk index reaches).
  const int chunks_per_group = static_cast<int>(min64(g.group_size / T::kChunkK, INT32_MAX));
  bool pdl = false;
  if (g.pdl) SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &pdl));
  SSMKIT_RETURN_IF_ERROR(launch_pdl(kernel, grid, dim3(T::kThreads), static_cast<size_t>(smem), stream, pdl,
                                    g, k_range, static_cast<int>(splits), steps, panels,
                                    std::max(chunks_per_group, 1), partials, counters));
  return ws.release();
}

template <int kKind, ssmkit_dtype kX, bool kGrouped>
status launch_tiled(const gemm_args& g, int dev, cudaStream_t stream) {
  using T = tile_traits<kKind, kGrouped>;
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  if (lim.smem_optin < T::kSmem) {
    return make_status(status_code::unsupported,
                       "gemm: the tiled kernel needs %d bytes of shared memory, the device has %d", T::kSmem,
                       lim.smem_optin);
  }
  const int64_t tiles_m = (g.m + T::kBM - 1) / T::kBM;
  const int64_t tiles_n = (g.n + T::kBN - 1) / T::kBN;
  if (tiles_m * tiles_n > INT32_MAX) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  auto* kernel = gemm_tiled_kernel<kKind, kX, kGrouped>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, T::kSmem, smem_done));
  kernel<<<static_cast<unsigned>(tiles_m * tiles_n), T::kThreads, T::kSmem, stream>>>(
      g, static_cast<int>(tiles_m), static_cast<int>(tiles_n));
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

// Whether the wgmma path runs on device dev: compute capability 9.0 (the build's sm_90a code), unless
// SSMKIT_CUDA_WGMMA=0 asks for the mma.sync tiled path (for comparison).
bool wgmma_usable(int dev) {
  static const bool allowed = env_flag("SSMKIT_CUDA_WGMMA", true);
  return allowed && sm90a_device(dev);
}

// The driver's cuTensorMapEncodeTiled, reached through the runtime (the driver library is not linked);
// null where the driver lacks it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// A 2-D tensor map of `rows` rows of `inner` elements of `type`, `pitch` bytes apart, in boxes of box_rows x
// box_inner elements with the given swizzle; false where the driver refuses it. Boxes past the edges read
// zeros (loads) or are clipped (stores).
bool tensor_map_2d(CUtensorMap* map, CUtensorMapDataType type, const void* base, int64_t rows, int64_t inner,
                   int64_t pitch, uint32_t box_inner, uint32_t box_rows, CUtensorMapSwizzle swizzle,
                   CUtensorMapL2promotion promotion) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(pitch)};
  const cuuint32_t box[2] = {box_inner, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, type, 2, const_cast<void*>(base), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, promotion,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The tensor map of a (rows, row_bytes) int8 matrix read in boxes of box_rows x 128 bytes in the 128-byte
// swizzle; false where the driver refuses it. Boxes past the matrix's edges read zeros.
bool int8_tensor_map(CUtensorMap* map, const void* base, int64_t rows, int64_t row_bytes, int64_t used_bytes,
                     int box_rows) {
  return tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, base, rows, used_bytes, row_bytes, 128,
                       static_cast<uint32_t>(box_rows), CU_TENSOR_MAP_SWIZZLE_128B,
                       CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// The tensor map of plain int4 weights (rows, row_bytes) read in boxes of 256 rows x 64 bytes (one
// k-tile), unswizzled; false where the driver refuses it. Bytes past used_bytes and rows past rows read
// zeros.
bool int4_tensor_map(CUtensorMap* map, const void* base, int64_t rows, int64_t row_bytes,
                     int64_t used_bytes) {
  return row_bytes % 16 == 0 && tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, base, rows, used_bytes,
                                              row_bytes, wgmma_traits::kBK / 2, wgmma_traits::kBN,
                                              CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// The tensor map of gemm_w4s_kernel's 16-bit output (rows x cols): boxes of half a tile's rows by 64 columns
// in the 128-byte swizzle; false where the driver refuses it (the base or the row pitch not 16-byte aligned).
bool out16_tensor_map(CUtensorMap* map, void* base, int64_t rows, int64_t cols) {
  return (cols * 2) % 16 == 0 && reinterpret_cast<uintptr_t>(base) % 16 == 0 &&
         tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, base, rows, cols, cols * 2, 64,
                       w4s_traits::kHalfRows, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE);
}

// The tensor map of plain int4 weights for gemm_w4s_kernel: boxes of 128 rows x 64 bytes (one k-tile) in the
// 64-byte swizzle; false where the driver refuses it.
bool int4_swizzled_tensor_map(CUtensorMap* map, const void* base, int64_t rows, int64_t row_bytes,
                              int64_t used_bytes) {
  return row_bytes % 16 == 0 && tensor_map_2d(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, base, rows, used_bytes,
                                              row_bytes, w4s_traits::kBK / 2, w4s_traits::kBN,
                                              CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
}

// Whether W4A8 on the wgmma path takes the weights as the register operand (gemm_w4s_kernel, the default;
// SSMKIT_CUDA_W4A8_SWAP=0 takes gemm_wgmma_kernel).
bool w4a8_swap_wanted() {
  static const bool wanted = env_flag("SSMKIT_CUDA_W4A8_SWAP", true);
  return wanted;
}

// gemm_w4s_kernel's k-loop (SSMKIT_CUDA_W4S_MODE): 2 (the default) keeps one k-tile's wgmmas in flight
// behind the next; 1 widens the next k-tile's fragments while the wgmmas run and waits for them all.
int w4s_mode() {
  static const int mode = env_int("SSMKIT_CUDA_W4S_MODE", 2);
  return mode;
}

// Whether gemm_w4s_kernel stores 16-bit outputs through the copy engine where the output's tensor map can
// be had (the default; SSMKIT_CUDA_W4S_BULK=0 stores them from the threads).
bool w4s_bulk_wanted() {
  static const bool wanted = env_flag("SSMKIT_CUDA_W4S_BULK", true);
  return wanted;
}

// Whether W4A8 on the wgmma path brings its int4 weights through the copy engine's raw ring
// (the default; SSMKIT_CUDA_W4A8_RING=0 takes the register producer).
bool w4a8_ring_wanted() {
  static const bool wanted = env_flag("SSMKIT_CUDA_W4A8_RING", true);
  return wanted;
}

// Whether the wgmma kernel takes g: the copy engine's coordinates are int32 and its dimensions below 2^32,
// its global addresses and row strides multiples of 16 bytes (k % 16 == 0 and the bases; the caller checks).
bool wgmma_shape_ok(const gemm_args& g) {
  constexpr int64_t kLimit = INT32_MAX - 1024;
  return g.m <= kLimit && g.n <= kLimit && g.k <= kLimit;
}

// Each row's sum of int8 x (m, k), k % 16 == 0 and 16-byte aligned rows: a warp a row.
__global__ void __launch_bounds__(256)
    row_sum_s8_kernel(const int8_t* __restrict__ a, int64_t m, int64_t k, int* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (row >= m) return;
  const int8_t* p = a + row * k;
  int sum = 0;
  for (int64_t i = 16 * lane; i < k; i += 512) {
    const uint4 v = ldg_stream16(p + i);
    sum = __dp4a(static_cast<int>(v.x), 0x01010101, sum);
    sum = __dp4a(static_cast<int>(v.y), 0x01010101, sum);
    sum = __dp4a(static_cast<int>(v.z), 0x01010101, sum);
    sum = __dp4a(static_cast<int>(v.w), 0x01010101, sum);
  }
  sum = __reduce_add_sync(0xffffffffu, sum);
  if (lane == 0) out[row] = sum;
}

// Each row's sum of int8 x into the workspace (*ws, which the caller releases after its launch): the W4A8
// kernels that widen int4 w by the producer (gemm_wgmma_kernel) take their products against w + 8 and
// remove 8 times these.
status launch_row_sums(const gemm_args& g, int dev, cudaStream_t stream, launch_workspace* ws,
                       const int** xsum) {
  SSMKIT_RETURN_IF_ERROR(workspace(dev, stream, 0, static_cast<size_t>(g.m) * 4, ws));
  row_sum_s8_kernel<<<static_cast<unsigned>((g.m + 7) / 8), 256, 0, stream>>>(
      static_cast<const int8_t*>(g.a), g.m, g.k, static_cast<int*>(ws->partials));
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  *xsum = static_cast<const int*>(ws->partials);
  return ok_status();
}

// Launches the wgmma kernel (kInt4: plain int4 weights, widened by the producer; kRing: int4 weights
// through the raw ring); *launched is false (and nothing is queued) where the tensor maps or the shared
// memory cannot be had, so that the caller takes another path.
template <ssmkit_dtype kX, bool kInt4, bool kRing = false>
status launch_wgmma(const gemm_args& g, int dev, cudaStream_t stream, bool* launched) {
  using T = wgmma_traits;
  using L = wgmma_layout<kRing>;
  *launched = false;
  const int64_t tiles_m = (g.m + T::kBM - 1) / T::kBM;
  const int64_t tiles_n = (g.n + T::kBN - 1) / T::kBN;
  const int64_t units = tiles_m * tiles_n;
  if (tiles_m * tiles_n > INT32_MAX / 2) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  CUtensorMap map_a, map_w;
  std::memset(&map_w, 0, sizeof(map_w));
  if (!int8_tensor_map(&map_a, g.a, g.m, g.k, g.k, T::kBM) ||
      (!kInt4 && !int8_tensor_map(&map_w, g.w, g.n, g.w_row_bytes, g.k, T::kBN)) ||
      (kRing && !int4_tensor_map(&map_w, g.w, g.n, g.w_row_bytes, g.k / 2))) {
    return ok_status();
  }
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  if (L::kSmem > lim.smem_optin) return ok_status();
  auto* kernel = gemm_wgmma_kernel<kX, kInt4, kRing>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, L::kSmem, smem_done));
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(T::kThreads);
  cfg.dynamicSmemBytes = L::kSmem;
  cfg.stream = stream;
  // Persistent: one block an SM (its shared memory allows no second), each walking every grid-th unit.
  cfg.gridDim = dim3(static_cast<unsigned>(min64(units, lim.sms)));
  // kInt4: x's row sums first (the products are taken against w + 8).
  launch_workspace ws;
  const int* xsum = nullptr;
  if (kInt4) SSMKIT_RETURN_IF_ERROR(launch_row_sums(g, dev, stream, &ws, &xsum));
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, map_a, map_w, g, static_cast<int>(tiles_m),
                                       static_cast<int>(tiles_n), xsum));
  *launched = true;
  return ws.release();
}

// The longest k of the W4A8 kernels that widen int4 to 16 w (gemm_w4s_kernel, the pair path): their int32
// sums of 16 w x stay exact (16 x 8 x 128 x 131071 < 2^31).
constexpr int64_t kW4x16MaxK = 131071;

// Launches gemm_w4s_kernel (W4A8, plain int4 weights); *launched as launch_wgmma's.
template <ssmkit_dtype kX>
status launch_w4s(const gemm_args& g, int dev, cudaStream_t stream, bool* launched) {
  using T = w4s_traits;
  *launched = false;
  // Its int32 sums are 16 times the products' (the weights widened to 16 w): at most 16 x 8 x 128 k.
  if (g.k > kW4x16MaxK) return ok_status();
  const int64_t tiles_m = (g.m + T::kBM - 1) / T::kBM;
  const int64_t tiles_n = (g.n + T::kBN - 1) / T::kBN;
  const int64_t units = tiles_m * tiles_n;
  if (units > INT32_MAX / 2) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  CUtensorMap map_x, map_w;
  if (!int8_tensor_map(&map_x, g.a, g.m, g.k, g.k, T::kBM) ||
      !int4_swizzled_tensor_map(&map_w, g.w, g.n, g.w_row_bytes, g.k / 2)) {
    return ok_status();
  }
  device_limits lim;
  SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
  if (T::kSmem > lim.smem_optin) return ok_status();
  // 16-bit outputs leave through the copy engine where their tensor map can be had.
  CUtensorMap map_out;
  std::memset(&map_out, 0, sizeof(map_out));
  const bool bulk =
      g.out_dt != SSMKIT_DTYPE_F32 && w4s_bulk_wanted() && out16_tensor_map(&map_out, g.out, g.m, g.n);
  auto* kernel = w4s_mode() == 1 ? gemm_w4s_kernel<kX, 1> : gemm_w4s_kernel<kX, 2>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, T::kSmem, smem_done));
  cudaLaunchConfig_t cfg = {};
  cfg.blockDim = dim3(T::kThreads);
  cfg.dynamicSmemBytes = T::kSmem;
  cfg.stream = stream;
  cfg.gridDim = dim3(static_cast<unsigned>(min64(units, lim.sms)));
  SSMKIT_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, map_x, map_w, map_out, g, static_cast<int>(tiles_m),
                                       static_cast<int>(tiles_n), bulk));
  *launched = true;
  return ok_status();
}

template <int kKind, ssmkit_dtype kX, bool kGrouped>
status launch_simt(const gemm_args& g, cudaStream_t stream) {
  const int64_t tiles_m = (g.m + kSimtTile - 1) / kSimtTile;
  const int64_t tiles_n = (g.n + kSimtTile - 1) / kSimtTile;
  if (tiles_m * tiles_n > INT32_MAX) {
    return make_status(status_code::unsupported, "gemm: m x n = %lld x %lld is too large",
                       static_cast<long long>(g.m), static_cast<long long>(g.n));
  }
  gemm_simt_kernel<kKind, kX, kGrouped>
      <<<static_cast<unsigned>(tiles_m * tiles_n), kSimtThreads, 0, stream>>>(g, tiles_n);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

// Pair path: the x rows staged a block (bytes) at most, so that two blocks fit an SM.
constexpr int64_t kPairMaxXBytes = 96 * 1024;

// Whether the pair path may take its rows (SSMKIT_CUDA_PAIR=0 leaves them to the ring, GEMV and skinny
// kernels, for comparison).
bool pair_allowed() {
  static const bool allowed = env_flag("SSMKIT_CUDA_PAIR", true);
  return allowed;
}

// The bytes of x the pair kernel stages in shared memory: 16-bit x for W4A16, int8 for W8A8 and W4A8.
template <int kKind>
int64_t pair_x_bytes(const gemm_args& g) {
  return g.m * g.k * (kKind == KIND_W4A16 ? 2 : 1);
}

// Shared memory of the folded norm and quantizer beyond the staged x (gemm_pair_kernel): the int8 row.
int64_t pair_fold_bytes(const gemm_args& g) {
  return g.pre_x != nullptr ? g.k : 0;
}

// Warps of a pair block: about five 128-k steps a warp (the probe's best at k = 2560 and 5120), at most
// kPairMaxWarps.
int pair_warps(int64_t k) {
  return static_cast<int>(std::min<int64_t>(kPairMaxWarps, std::max<int64_t>(1, (k / kPairStepK + 4) / 5)));
}

// Whether the pair path takes g (W8A8 without groups, W4A8, or W4A16 with 16-bit x): the rows below, whole
// 128-k steps (and groups of whole steps, W4A16's scales in x's dtype), x small enough to stage, W4A16
// outside a PDL chain and its folds (the decode step keeps the ring and group kernels it was measured with),
// not the GEMV's folded quantizer, and at least a block for every other SM (the x_proj shape, 5120 -> 192,
// keeps the GEMV's wider split).
template <int kKind, ssmkit_dtype kX, bool kGrouped>
bool pair_takes(const gemm_args& g, bool packed, bool bases16, int dev) {
  // The folded norm and quantizer: int8 x, one row, at most kPairFoldChunks chunks of 8 values a thread.
  const bool fold_ok = kKind != KIND_W4A16 && g.m == 1 && g.k <= 8 * kPairFoldChunks * 32 * pair_warps(g.k);
  // In a PDL chain: int8 x (W8A8, W4A8; SSMKIT_CUDA_PAIR_PDL=0 leaves W8A8's rows without the fold to the
  // GEMV, for comparison: the W8A8 step's out_proj measured 10.4-10.6 us here against 11.8-12.1 there), not
  // W4A16 (the step keeps the ring and group kernels it was measured with).
  static const bool pdl_w8a8 = env_flag("SSMKIT_CUDA_PAIR_PDL", true);
  const bool pdl_ok = kKind == KIND_W4A8 || g.pre_x != nullptr || (kKind == KIND_W8A8 && pdl_w8a8);
  // The folded quantizer alone (pre_x without pre_w) is the GEMV's.
  const bool quant_x = g.pre_x != nullptr && g.pre_w == nullptr;
  if (!bases16 || (g.pdl && !pdl_ok) || (g.pre_x != nullptr && !fold_ok) || quant_x ||
      g.conv_state != nullptr || !pair_allowed())
    return false;
  // Where it measured faster (H200, Nsight): W4A16 at one row (at four rows the ring was as fast or
  // faster on packed weights, whose bits plain weights must give); W8A8 on plain rows up to 16, and on
  // packed ones at one row (more packed rows: the ring). W4A8 (no other path of its rows is as fast) up to
  // 16 rows, plain and packed, groups or none, k <= 131071 (its sums of 16 w x in int32).
  const int64_t max_m = kKind == KIND_W4A16 || (kKind == KIND_W8A8 && packed) ? 1 : 16;
  if (g.m < 1 || g.m > max_m || g.k <= 0 || g.k % kPairStepK != 0) return false;
  if (kKind == KIND_W4A8 && g.k > kW4x16MaxK) return false;
  if (kGrouped && (g.group_size % kPairStepK != 0 || (kKind == KIND_W4A16 && g.w_scale_dt != kX)))
    return false;
  if (pair_x_bytes<kKind>(g) + pair_fold_bytes(g) > kPairMaxXBytes) return false;
  device_limits lim;
  if (!limits_of(dev, &lim).ok()) return false;
  const int64_t blocks = (g.n + kPairCols - 1) / kPairCols;
  return 2 * blocks >= lim.sms && blocks <= INT32_MAX;
}

template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain, int kMT, bool kFold = false>
status launch_pair_mt(const gemm_args& g, int dev, cudaStream_t stream) {
  const int warps = pair_warps(g.k);
  const int64_t x_bytes = pair_x_bytes<kKind>(g) + pair_fold_bytes(g);
  const int64_t red_bytes = static_cast<int64_t>(warps) * 2 * kMT * 4 * 32 * 4;
  const int smem = static_cast<int>(std::max(x_bytes, red_bytes));
  auto* kernel = gemm_pair_kernel<kKind, kX, kGrouped, kPlain, kMT, kFold>;
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, static_cast<int>(kPairMaxXBytes), smem_done));
  bool pdl = false;
  if (g.pdl) SSMKIT_RETURN_IF_ERROR(pdl_capable(kernel, &pdl));
  return launch_pdl(kernel, dim3(static_cast<unsigned>((g.n + kPairCols - 1) / kPairCols)), dim3(32 * warps),
                    static_cast<size_t>(smem), stream, pdl, g);
}

// Two m16 tiles of rows only where pair_takes lets more than 8 rows through: plain W8A8, and W4A8.
template <int kKind, ssmkit_dtype kX, bool kGrouped, bool kPlain>
status launch_pair(const gemm_args& g, int dev, cudaStream_t stream) {
  if constexpr (kKind != KIND_W4A16) {
    if (g.pre_x != nullptr) return launch_pair_mt<kKind, kX, kGrouped, kPlain, 1, true>(g, dev, stream);
  }
  if (g.m <= 8) return launch_pair_mt<kKind, kX, kGrouped, kPlain, 1>(g, dev, stream);
  if constexpr ((kKind == KIND_W8A8 && kPlain) || kKind == KIND_W4A8)
    return launch_pair_mt<kKind, kX, kGrouped, kPlain, 2>(g, dev, stream);
  return make_status(status_code::internal,
                     "gemm: the pair path takes more than 8 rows of plain W8A8 and W4A8 only");
}

// Stream path: whether it may take its rows (SSMKIT_CUDA_STREAM=0 leaves them to the pair path, for
// comparison).
bool stream_allowed() {
  static const bool allowed = env_flag("SSMKIT_CUDA_STREAM", true);
  return allowed;
}

// The stream path's launch for g: a block an SM (fewer where there are fewer quads of columns), a warp
// for every one to three 128-k steps, and the widest block's padded rows in shared memory.
struct stream_plan {
  int grid = 0;
  int warps = 0;
  int smem = 0;
  int smem_optin = 0;  // the device's shared memory a block (limits_of)
};

// Whether the stream path takes g (plain W8A8, the caller checks the kind and layout) and its plan:
// kStreamMinM to 16 rows, whole 128-k steps (at most kStreamMaxSteps a warp), 16-byte aligned bases, an sm_90
// device, outside a PDL chain and its folds, at most kStreamMaxSets sets a block and its padded rows within
// the device's shared memory a block (beside the kernel's static barriers and sums).
bool stream_takes(const gemm_args& g, bool bases16, int dev, stream_plan* plan) {
  if (!bases16 || g.pdl || g.pre_x != nullptr || g.conv_state != nullptr || !stream_allowed()) return false;
  if (g.m < kStreamMinM || g.m > 16 || g.k <= 0 || g.k % kPairStepK != 0 || g.n < 1) return false;
  const int64_t steps = g.k / kPairStepK;
  if (steps > int64_t{kStreamMaxWarps} * kStreamMaxSteps || !sm90a_device(dev)) return false;
  device_limits lim;
  if (!limits_of(dev, &lim).ok()) return false;
  const int64_t quads = (g.n + 3) / 4;
  const int64_t grid = std::min<int64_t>(lim.sms, quads);
  const int64_t cols = 4 * ((quads + grid - 1) / grid);
  if ((cols + kStreamSetCols - 1) / kStreamSetCols > kStreamMaxSets) return false;
  const int64_t bytes = cols * (g.k + kStreamPad);
  const int64_t static_bytes = g.m <= 8 ? sizeof(stream_shared<1>) : sizeof(stream_shared<2>);
  if (bytes + static_bytes > static_cast<int64_t>(lim.smem_optin) - 1024) return false;
  plan->grid = static_cast<int>(grid);
  plan->warps = static_cast<int>(std::min<int64_t>(steps, kStreamMaxWarps));
  plan->smem = static_cast<int>(bytes);
  plan->smem_optin = lim.smem_optin;
  return true;
}

template <int kMT>
status launch_stream_mt(const gemm_args& g, const stream_plan& plan, int dev, cudaStream_t stream) {
  auto* kernel = gemm_stream_kernel<kMT>;
  static std::atomic<uint64_t> smem_done{0};
  constexpr int kStatic = sizeof(stream_shared<kMT>);
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, plan.smem_optin - 1024 - kStatic, smem_done));
  kernel<<<static_cast<unsigned>(plan.grid), 32 * plan.warps, plan.smem, stream>>>(g);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status launch_stream(const gemm_args& g, const stream_plan& plan, int dev, cudaStream_t stream) {
  if (g.m <= 8) return launch_stream_mt<1>(g, plan, dev, stream);
  return launch_stream_mt<2>(g, plan, dev, stream);
}

// Group path: whether it may take its rows (SSMKIT_CUDA_GROUP, read at every call: 0 leaves them to the
// ring and the pair path, for comparison; 2 lets it take shapes outside one wave, for measurement; unset or
// 1, the rows and shapes below).
int group_mode() {
  return env_int("SSMKIT_CUDA_GROUP", 1);
}

// Whether the group path takes g (W4A16 with 16-bit x; the caller checks the kind): 1 to 16 rows, whole
// 128-k steps and groups of whole steps with their scales in x's dtype,
// 16-byte aligned bases, an sm_90 device, outside a PDL chain and its folds, and a 64-column group for at
// least three in four SMs and at most one an SM (any number with SSMKIT_CUDA_GROUP=2).
template <ssmkit_dtype kX, bool kGrouped>
bool group_takes(const gemm_args& g, bool bases16, int dev) {
  const int mode = group_mode();
  if (mode == 0 || !bases16 || g.pdl || g.pre_x != nullptr || g.conv_state != nullptr) return false;
  if (g.m < 1 || g.m > 16 || g.k <= 0 || g.k % kPairStepK != 0 || g.n < 1) return false;
  if (kGrouped && (g.group_size % kPairStepK != 0 || g.w_scale_dt != kX)) return false;
  if (g.k > INT32_MAX / 16 || !sm90a_device(dev)) return false;
  device_limits lim;
  if (!limits_of(dev, &lim).ok()) return false;
  const int64_t blocks = (g.n + kGroupCols - 1) / kGroupCols;
  if (mode != 2 && (4 * blocks < 3 * static_cast<int64_t>(lim.sms) || blocks > lim.sms)) return false;
  if (blocks > INT32_MAX) return false;
  // The largest launch's shared memory beside the kernel's static barriers.
  return std::max(group_smem_bytes(1, false), group_smem_bytes(2, false)) + 1024 <= lim.smem_optin;
}

template <ssmkit_dtype kX, bool kGrouped, bool kPlain, int kMT>
status launch_group_mt(const gemm_args& g, int dev, cudaStream_t stream) {
  auto* kernel = gemm_group_kernel<kX, kGrouped, kPlain, kMT>;
  constexpr int kSmem = group_smem_bytes(kMT, kPlain);
  static std::atomic<uint64_t> smem_done{0};
  SSMKIT_RETURN_IF_ERROR(allow_smem(kernel, dev, kSmem, smem_done));
  kernel<<<static_cast<unsigned>((g.n + kGroupCols - 1) / kGroupCols), 32 * group_warps(kMT), kSmem,
           stream>>>(g);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

template <ssmkit_dtype kX, bool kGrouped, bool kPlain>
status launch_group(const gemm_args& g, int dev, cudaStream_t stream) {
  if (g.m <= 8) return launch_group_mt<kX, kGrouped, kPlain, 1>(g, dev, stream);
  return launch_group_mt<kX, kGrouped, kPlain, 2>(g, dev, stream);
}

// Whether m <= 4 (16 for W8A8) takes the CUDA-core GEMV, unless SSMKIT_CUDA_GEMV=0 asks for the
// tensor-core decode path instead (for comparison).
bool gemv_allowed() {
  static const bool allowed = env_flag("SSMKIT_CUDA_GEMV", true);
  return allowed;
}

// Whether m <= 4 (16 for W8A8) takes the CUDA-core GEMV (run_gemm_w, where no path before it takes g): packed
// weights (w16: a 16-byte aligned base), and plain rows of whole chunks. Plain int8 rows of W8A8 take it up
// to m = 4 only: at m = 16 the skinny kernel reads them faster (H200: 28.8 against 41.5 us at 16 x 2560 x
// 10240).
template <int kKind, bool kGrouped>
bool gemv_takes(const gemm_args& g, bool packed, bool w16) {
  constexpr int kMaxM = kKind == KIND_W8A8 ? kGemvMaxMW8A8 : kGemvMaxM;
  using V = gemv_traits<kKind, 1>;
  return w16 && g.k > 0 && g.m <= kMaxM && gemv_allowed() && (!kGrouped || g.group_size % V::kChunkK == 0) &&
         (packed || (g.k % V::kChunkK == 0 && g.m <= kGemvMaxM)) &&
         (g.k + V::kChunkK - 1) / V::kChunkK / gemv_traits<kKind, kMaxM>::kMaxChunks < 65535;
}

// Whether W4A16 and packed W8A8 at m <= 16 take the ring path: on sm_90 devices (its clusters), unless
// SSMKIT_CUDA_RING=0 keeps the CUDA-core GEMV and the decode kernel (for comparison).
bool ring_usable(int dev) {
  static const bool allowed = env_flag("SSMKIT_CUDA_RING", true);
  return allowed && sm90a_device(dev);
}

// Whether the ring path takes g (W4A16, or W8A8 without groups), the cheap conditions first. It needs at
// least a block an SM (at most kRingMaxSplits blocks a column tile): on fewer columns the GEMV and decode
// kernels spread wider (H200, 1 x 5120 x 192: 8.0 us against 7.1); W8A8's one row is faster on the dp4a
// GEMV (13.2 against 14.6 us at 2560 x 10240).
template <int kKind, bool kGrouped>
bool ring_takes(const gemm_args& g, bool packed, bool bases16, int dev) {
  if (!bases16 || g.k <= 0 || g.m > 16 || (kKind == KIND_W8A8 && g.m == 1)) return false;
  if (kGrouped && g.group_size % ring_traits<kKind, 1>::kUnitK != 0) return false;
  if (!packed && !(kKind == KIND_W4A16 && g.k % 32 == 0)) return false;
  if (!(g.m <= 8 ? ring_fits<kKind, 1>(g) : ring_fits<kKind, 2>(g)) || !ring_usable(dev)) return false;
  device_limits lim;
  if (!limits_of(dev, &lim).ok()) return false;
  return (g.n + kRingBlockN - 1) / kRingBlockN * kRingMaxSplits >= lim.sms;
}

// Picks the path for one kind and x dtype (see the top of this file).
template <int kKind, ssmkit_dtype kX, bool kGrouped>
status run_gemm(const gemm_args& g, int dev, cudaStream_t stream) {
  // The vector paths need rows of whole 16-byte chunks: k % 16 (int8 weights) or % 32 (int4), and
  // 16-bit x for W4A16 (float32 x would lose bits in the tensor cores).
  if constexpr (kind_traits<kKind>::kIntAcc || kX != SSMKIT_DTYPE_F32) {
    const bool aligned = g.k > 0 && g.k % (kKind == KIND_W8A8 ? 16 : 32) == 0;
    const int64_t skinny_splits_max = 65535;
    if (aligned && g.m <= kSkinnyMaxM && (!kGrouped || g.group_size % skinny_layout<kKind>::kStepK == 0) &&
        g.k / 1024 < skinny_splits_max) {
      return launch_skinny<kKind, kX, kGrouped>(g, dev, stream);
    }
    device_limits lim;
    SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
    using T = tile_traits<kKind, kGrouped>;
    if constexpr ((kKind == KIND_W8A8 || kKind == KIND_W4A8) && !kGrouped) {
      const bool bases16 =
          reinterpret_cast<uintptr_t>(g.a) % 16 == 0 && reinterpret_cast<uintptr_t>(g.w) % 16 == 0;
      if (aligned && bases16 && wgmma_shape_ok(g) && wgmma_traits::kSmem <= lim.smem_optin &&
          wgmma_usable(dev)) {
        bool launched = false;
        if constexpr (kKind == KIND_W4A8) {
          if (w4a8_swap_wanted()) {
            SSMKIT_RETURN_IF_ERROR(launch_w4s<kX>(g, dev, stream, &launched));
            if (launched) return ok_status();
          }
          if (w4a8_ring_wanted()) {
            SSMKIT_RETURN_IF_ERROR((launch_wgmma<kX, true, true>(g, dev, stream, &launched)));
            if (launched) return ok_status();
          }
        }
        SSMKIT_RETURN_IF_ERROR((launch_wgmma<kX, kKind == KIND_W4A8>(g, dev, stream, &launched)));
        if (launched) return ok_status();
      }
    }
    if (aligned && (!kGrouped || g.group_size % T::kBK == 0) && T::kSmem <= lim.smem_optin) {
      return launch_tiled<kKind, kX, kGrouped>(g, dev, stream);
    }
  }
  return launch_simt<kKind, kX, kGrouped>(g, stream);
}

// Fills the scale and output fields shared by the three ops; `what` names the op in errors.
status fill_common(gemm_args& g, const char* what, const tensor_view& a_scale, const tensor_view& w_scale,
                   const tensor_view& bias, const tensor_view& out, int64_t m, int64_t n, int64_t k,
                   int64_t group_size) {
  auto is_float = [](ssmkit_dtype t) {
    return t == SSMKIT_DTYPE_F32 || t == SSMKIT_DTYPE_F16 || t == SSMKIT_DTYPE_BF16;
  };
  if (!is_float(out.dtype)) {
    return make_status(status_code::dtype, "%s: out: unsupported dtype %s", what, dtype_name(out.dtype));
  }
  for (const tensor_view* t : {&a_scale, &w_scale, &bias}) {
    if (t->present() && !is_float(t->dtype)) {
      return make_status(status_code::dtype, "%s: scale or bias: unsupported dtype %s", what,
                         dtype_name(t->dtype));
    }
  }
  if (!w_scale.present()) return make_status(status_code::value, "%s: the weight scale is missing", what);
  g.m = m;
  g.n = n;
  g.k = k;
  g.group_size = group_size > 0 && group_size < k ? group_size : k;
  g.groups = g.group_size > 0 && g.group_size < k ? k / g.group_size : 1;
  if (g.groups > 1 && (k % g.group_size != 0 || w_scale.numel() != n * g.groups)) {
    return make_status(status_code::value,
                       "%s: groupSize %lld does not divide k = %lld into the scales' %lld", what,
                       static_cast<long long>(group_size), static_cast<long long>(k),
                       static_cast<long long>(w_scale.numel()));
  }
  g.a_scale = a_scale.present() ? a_scale.data : nullptr;
  g.a_scale_dt = a_scale.dtype;
  g.a_scale_per_row = a_scale.present() && a_scale.numel() > 1;
  g.w_scale = w_scale.data;
  g.w_scale_dt = w_scale.dtype;
  g.w_scale_per_col = w_scale.numel() > 1;
  g.bias = bias.present() ? bias.data : nullptr;
  g.bias_dt = bias.dtype;
  g.out = out.data;
  g.out_dt = out.dtype;
  return ok_status();
}

// Unpacks a packed weight into a stream-ordered temporary when needed; *plain is what the GEMM reads.
// The caller frees *tmp (on the stream) after the GEMM is enqueued.
status plain_weights(const tensor_view& w, bool packed, int64_t n, int64_t k, int bits, cudaStream_t stream,
                     const uint8_t** plain, void** tmp) {
  *tmp = nullptr;
  *plain = static_cast<const uint8_t*>(w.data);
  if (!packed) return ok_status();
  const int64_t row_bytes = bits == 8 ? k : (k + 1) / 2;
  const int64_t bytes = n * row_bytes;
  if (bytes == 0) return ok_status();
  SSMKIT_CUDA_CHECK(cudaMallocAsync(tmp, static_cast<size_t>(bytes), stream));
  unpack_weights_kernel<<<grid_1d(bytes, 256), 256, 0, stream>>>(static_cast<const uint8_t*>(w.data),
                                                                 static_cast<uint8_t*>(*tmp), n, k, bits);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    cudaFreeAsync(*tmp, stream);
    *tmp = nullptr;
    SSMKIT_CUDA_CHECK(e);
  }
  *plain = static_cast<const uint8_t*>(*tmp);
  return ok_status();
}

// Runs `body` with the weights in the plain layout, then frees the temporary (also on failure).
template <class Body>
status with_plain_weights(const tensor_view& w, bool packed, int64_t n, int64_t k, int bits,
                          cudaStream_t stream, gemm_args& g, Body&& body) {
  void* tmp = nullptr;
  SSMKIT_RETURN_IF_ERROR(plain_weights(w, packed, n, k, bits, stream, &g.w, &tmp));
  g.w_row_bytes = bits == 8 ? k : (k + 1) / 2;
  const status s = body();
  if (tmp != nullptr) SSMKIT_CUDA_CHECK(cudaFreeAsync(tmp, stream));
  return s;
}

// Runs one GEMM on w as given. The gemv path (m <= 4, 16-bit x for W4A16, no groups or groups of whole
// chunks) and the decode path (m <= 64, groups of whole units) take packed weights as they are, and plain
// weights whose rows are whole 16-byte chunks (gemv: k % 16 == 0 for int8, % 32 for int4; decode: int4, k %
// 32 == 0), so that packed and plain weights give the same bits; the rest goes through the plain layout
// (unpacking packed weights first).
template <int kKind, ssmkit_dtype kX, bool kGrouped>
status run_gemm_w(gemm_args& g, const tensor_view& w, bool packed, int dev, cudaStream_t stream) {
  constexpr int kBits = kKind == KIND_W8A8 ? 8 : 4;
  constexpr bool kTensorCores = kind_traits<kKind>::kIntAcc || kX != SSMKIT_DTYPE_F32;
  if constexpr (kTensorCores) {
    constexpr int64_t kUnitK = packed_traits<kKind, kGrouped>::kUnitK;
    // 16-byte loads of weights and x check the offsets inside the tensors; the bases are checked here.
    const bool bases16 =
        reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(g.a) % 16 == 0;
    // Plain W8A8 rows 8 to 16 with whole 128-k steps on sm_90: the stream path (stream_takes).
    if constexpr (kKind == KIND_W8A8 && !kGrouped) {
      stream_plan plan;
      if (!packed && stream_takes(g, bases16, dev, &plan)) {
        g.w = static_cast<const uint8_t*>(w.data);
        g.w_row_bytes = g.k;
        return launch_stream(g, plan, dev, stream);
      }
    }
    // W4A16 rows 1 to 16 with whole 128-k steps where the 64-column groups fill one wave: the group path
    // (group_takes), plain and packed weights alike.
    if constexpr (kKind == KIND_W4A16 && kX != SSMKIT_DTYPE_F32) {
      if (group_takes<kX, kGrouped>(g, bases16, dev)) {
        g.w = static_cast<const uint8_t*>(w.data);
        g.w_row_bytes = packed ? 0 : g.k / 2;
        if (packed) return launch_group<kX, kGrouped, false>(g, dev, stream);
        return launch_group<kX, kGrouped, true>(g, dev, stream);
      }
    }
    // One row of W4A16 or packed W8A8, or plain W8A8 and W4A8 (groups or none) up to 16 rows, with whole
    // 128-k steps: the pair path (pair_takes), plain and packed weights alike.
    if constexpr (!(kKind == KIND_W8A8 && kGrouped)) {
      if (pair_takes<kKind, kX, kGrouped>(g, packed, bases16, dev)) {
        g.w = static_cast<const uint8_t*>(w.data);
        g.w_row_bytes = packed ? 0 : kKind == KIND_W8A8 ? g.k : g.k / 2;
        if (packed) return launch_pair<kKind, kX, kGrouped, false>(g, dev, stream);
        return launch_pair<kKind, kX, kGrouped, true>(g, dev, stream);
      }
    }
    // W4A16 and packed W8A8 at m <= 16: the ring path (W4A16: packed weights and plain rows of whole
    // 32-k chunks).
    if constexpr (kKind != KIND_W4A8 && !(kKind == KIND_W8A8 && kGrouped)) {
      if (ring_takes<kKind, kGrouped>(g, packed, bases16, dev)) {
        g.w = static_cast<const uint8_t*>(w.data);
        g.w_row_bytes = packed ? 0 : g.k / 2;
        auto launch = [&](auto plain) {
          constexpr bool kPl = decltype(plain)::value;
          if constexpr (kKind == KIND_W4A16) {
            if (g.conv_state != nullptr)
              return launch_ring<kKind, kX, kGrouped, kPl, 1, true>(g, dev, stream);
          }
          if (g.m <= 8) return launch_ring<kKind, kX, kGrouped, kPl, 1>(g, dev, stream);
          return launch_ring<kKind, kX, kGrouped, kPl, 2>(g, dev, stream);
        };
        if constexpr (kKind == KIND_W4A16) {
          if (!packed) return launch(std::true_type{});
        }
        return launch(std::false_type{});
      }
    }
    // The GEMV's folded quantizer (pre_x without pre_w: int8 x, one row).
    const bool quant_x = g.pre_x != nullptr && g.pre_w == nullptr;
    if ((g.pre_x != nullptr && !quant_x) || g.conv_state != nullptr) {
      return make_status(status_code::unsupported,
                         "gemmW4A16: the folded norm or conv needs the ring path (one row, sm_90)");
    }
    // m <= 4 (16 for W8A8): the CUDA-core GEMV, for packed weights and plain rows of whole chunks.
    constexpr int kMaxM = kKind == KIND_W8A8 ? kGemvMaxMW8A8 : kGemvMaxM;
    if (gemv_takes<kKind, kGrouped>(g, packed, reinterpret_cast<uintptr_t>(w.data) % 16 == 0)) {
      g.w = static_cast<const uint8_t*>(w.data);
      g.w_row_bytes = packed ? 0 : kKind == KIND_W8A8 ? g.k : g.k / 2;
      auto launch = [&](auto plain) {
        constexpr bool kPl = decltype(plain)::value;
        if constexpr (kKind != KIND_W4A16) {
          if (quant_x) return launch_gemv<kKind, kX, kGrouped, kPl, 1, true>(g, dev, stream);
        }
        if (g.m == 1) return launch_gemv<kKind, kX, kGrouped, kPl, 1>(g, dev, stream);
        if (kMaxM == kGemvMaxM || g.m <= kGemvMaxM)
          return launch_gemv<kKind, kX, kGrouped, kPl, kGemvMaxM>(g, dev, stream);
        return launch_gemv<kKind, kX, kGrouped, kPl, kMaxM>(g, dev, stream);
      };
      if (!packed) return launch(std::true_type{});
      return launch(std::false_type{});
    }
    if (quant_x)
      return make_status(status_code::unsupported,
                         "gemm: the folded quantizer needs the GEMV path (one row)");
    if (bases16 && g.k > 0 && g.m <= kSkinnyMaxM && (!kGrouped || g.group_size % kUnitK == 0)) {
      if (packed) {
        g.w = static_cast<const uint8_t*>(w.data);
        g.w_row_bytes = 0;  // not a plain layout
        return launch_packed<kKind, kX, kGrouped, false>(g, dev, stream);
      }
      if constexpr (kKind != KIND_W8A8) {
        if (g.k % 32 == 0) {
          g.w = static_cast<const uint8_t*>(w.data);
          g.w_row_bytes = g.k / 2;
          return launch_packed<kKind, kX, kGrouped, true>(g, dev, stream);
        }
      }
    }
  }
  return with_plain_weights(w, packed, g.n, g.k, kBits, stream, g,
                            [&] { return run_gemm<kKind, kX, kGrouped>(g, dev, stream); });
}

// ---------------------------------------------------------------------------------------------------
// Quantizers.

constexpr int kQuantThreads = 256;
constexpr int kQuantMaxBlocks = 1 << 16;
constexpr int kQuantBatch = 8;       // loads a thread keeps in flight on the general paths
constexpr int kQuantHeldPairs = 16;  // pairs of values a thread holds: rows of one scale up to 8192 values

struct quant_args {
  const void* x;  // (lines, len)
  void* q;        // (lines, len) int8, or (lines, (len + 1) / 2) int4
  void* scale;
  int64_t lines, len, lines_per_channel, group_size, groups;
  ssmkit_dtype scale_dt;
  int bits;
  int granularity;
  bool dynamic;         // scales computed here (else read from `scale`)
  bool channel_scales;  // tensor/channel scales precomputed into `scale` (float32)
  float rot_scale;      // 1 / sqrt(len) for the rotation
  int had_m;            // 0: no rotation; else the rotation's m (1, 12, 20, 28, 40)
  int64_t had_pow2;
  uint64_t had_signs[40];  // row i of H_m: bit j set where the entry is -1
};

// Values x[base + i0 + j * stride] (j < kN) of a row of len > 0 values as float32, 0 past the row. Every
// load is issued before any value is converted (indices past the row read its last value), so one
// thread's kN loads cost one round trip, not kN: a decode row is one block, so its loads are its latency.
template <ssmkit_dtype T, int kN>
__device__ __forceinline__ void load_row_batch(const void* x, int64_t base, int64_t i0, int64_t stride,
                                               int64_t len, float (&v)[kN]) {
  using raw_t = std::conditional_t<T == SSMKIT_DTYPE_F32, uint32_t, uint16_t>;
  raw_t raw[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j) raw[j] = static_cast<const raw_t*>(x)[base + min64(i0 + j * stride, len - 1)];
#pragma unroll
  for (int j = 0; j < kN; ++j) {
    float f;
    if constexpr (T == SSMKIT_DTYPE_F32) {
      f = __uint_as_float(raw[j]);
    } else if constexpr (T == SSMKIT_DTYPE_F16) {
      f = f16_to_f32(raw[j]);
    } else {
      f = bf16_to_f32(raw[j]);
    }
    v[j] = i0 + j * stride < len ? f : 0.0f;
  }
}

// Rotates row r into buf (len floats) as the CPU does: Sylvester transform of each chunk of had_pow2,
// then H_m across chunks (in place: each thread owns whole columns q), then times rot_scale.
template <ssmkit_dtype T, int kM>
__device__ void rotate_row(const quant_args& a, int64_t r, float* buf) {
  // Rows fit in shared memory, so 32-bit indices; had_pow2 is a power of two, so shifts and masks.
  const int n = static_cast<int>(a.len);
  const int p = static_cast<int>(a.had_pow2);
  const int log_p = __ffs(p) - 1;
  for (int i0 = threadIdx.x; i0 < n; i0 += kQuantBatch * blockDim.x) {
    float t[kQuantBatch];
    load_row_batch<T>(a.x, r * a.len, i0, blockDim.x, n, t);
#pragma unroll
    for (int j = 0; j < kQuantBatch; ++j) {
      const int i = i0 + j * blockDim.x;
      if (i < n) buf[i] = t[j];
    }
  }
  __syncthreads();
  for (int log_h = 0; log_h < log_p; ++log_h) {
    const int h = 1 << log_h;
    // A stage's butterflies touch disjoint pairs: a thread reads kQuantBatch of them, then writes them.
    for (int i0 = threadIdx.x; i0 < n / 2; i0 += kQuantBatch * blockDim.x) {
      int at[kQuantBatch];
      float u[kQuantBatch], v[kQuantBatch];
#pragma unroll
      for (int t = 0; t < kQuantBatch; ++t) {
        // Butterfly i: chunk i / (p / 2), then pair (kk / h, kk % h) inside it.
        const int i = i0 + t * blockDim.x;
        const int c = i >> (log_p - 1);
        const int kk = i & (p / 2 - 1);
        at[t] = i < n / 2 ? (c << log_p) + ((kk >> log_h) << (log_h + 1)) + (kk & (h - 1)) : -1;
        u[t] = at[t] >= 0 ? buf[at[t]] : 0.0f;
        v[t] = at[t] >= 0 ? buf[at[t] + h] : 0.0f;
      }
#pragma unroll
      for (int t = 0; t < kQuantBatch; ++t) {
        if (at[t] < 0) continue;
        buf[at[t]] = u[t] + v[t];
        buf[at[t] + h] = u[t] - v[t];
      }
    }
    __syncthreads();
  }
  if constexpr (kM == 40) {
    // H_40 = [[A, A], [B, -B]] (two 20 x 20 blocks), as the CPU computes it: a butterfly across the two
    // halves, then A on the sums and B on the differences.
    const int split = static_cast<int>(blockDim.x) >= 4 * p   ? 4
                      : static_cast<int>(blockDim.x) >= 2 * p ? 2
                                                              : 1;
    if (split > 1) {
      // Where the block has 2 or 4 threads a column, each takes 20 or 10 of H_40's rows: one half's
      // values in registers, the same operations in the same order for each row. Every column is read
      // before any is written (the rows are rewritten in place).
      const int q = threadIdx.x % p;
      const int g = threadIdx.x / p;
      const int per_half = split / 2;
      const int half = g / per_half;
      const bool active = g < split;
      float v[kM / 2];
      if (active) {
#pragma unroll
        for (int j = 0; j < kM / 2; ++j) {
          const float x0 = buf[j * p + q];
          const float x1 = buf[(j + kM / 2) * p + q];
          v[j] = half == 0 ? x0 + x1 : x0 - x1;
        }
      }
      __syncthreads();
      if (active) {
        const int rows = kM / 2 / per_half;
        const int i0 = half * (kM / 2) + (g % per_half) * rows;
#pragma unroll 1
        for (int i = i0; i < i0 + rows; ++i) {
          const uint64_t s = a.had_signs[i];
          float acc = (s & 1) ? -v[0] : v[0];
#pragma unroll
          for (int j = 1; j < kM / 2; ++j) acc = ((s >> j) & 1) ? acc - v[j] : acc + v[j];
          buf[i * p + q] = acc;
        }
      }
    }
    for (int q = threadIdx.x; split == 1 && q < p; q += blockDim.x) {
      float v[kM];
#pragma unroll
      for (int j = 0; j < kM / 2; ++j) {
        const float x0 = buf[j * p + q];
        const float x1 = buf[(j + kM / 2) * p + q];
        v[j] = x0 + x1;
        v[j + kM / 2] = x0 - x1;
      }
      // Rows 0..19 take the sums, rows 20..39 the differences (compile-time halves keep v in registers).
      static_for<2>([&](auto half) {
        constexpr int kBase = half * (kM / 2);
#pragma unroll 1
        for (int i = kBase; i < kBase + kM / 2; ++i) {
          const uint64_t s = a.had_signs[i];
          float acc = (s & 1) ? -v[kBase] : v[kBase];
#pragma unroll
          for (int j = 1; j < kM / 2; ++j) acc = ((s >> j) & 1) ? acc - v[kBase + j] : acc + v[kBase + j];
          buf[i * p + q] = acc;
        }
      });
    }
    __syncthreads();
  } else if constexpr (kM > 1) {
    for (int q = threadIdx.x; q < p; q += blockDim.x) {
      float v[kM];
#pragma unroll
      for (int j = 0; j < kM; ++j) v[j] = buf[j * p + q];
#pragma unroll 1
      for (int i = 0; i < kM; ++i) {
        const uint64_t s = a.had_signs[i];
        float acc = (s & 1) ? -v[0] : v[0];
#pragma unroll
        for (int j = 1; j < kM; ++j) acc = ((s >> j) & 1) ? acc - v[j] : acc + v[j];
        buf[i * p + q] = acc;
      }
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = buf[i] * a.rot_scale;
  __syncthreads();
}

// amax of each row (rotated when asked) into the float32 scale of its channel (lines_per_channel rows;
// all rows for a tensor scale), as bit patterns through atomicMax. The scale was zeroed first.
template <ssmkit_dtype T, int kM>
__global__ void __launch_bounds__(kQuantThreads, 1) quant_amax_kernel(quant_args a) {
  extern __shared__ float row[];  // (len) when rotating
  __shared__ float red[kQuantThreads / 32];
  for (int64_t r = blockIdx.x; r < a.lines; r += gridDim.x) {
    float m = 0.0f;
    if (a.had_m > 0) {
      rotate_row<T, kM>(a, r, row);
      for (int64_t i = threadIdx.x; i < a.len; i += blockDim.x) m = fmaxf(m, fabsf(row[i]));
    } else {
      for (int64_t i = threadIdx.x; i < a.len; i += blockDim.x)
        m = fmaxf(m, fabsf(load_f32<T>(a.x, r * a.len + i)));
    }
    m = block_max(m, red);
    if (threadIdx.x == 0 && m > 0.0f) {
      atomicMax(static_cast<unsigned*>(a.scale) + r / a.lines_per_channel, __float_as_uint(m));
    }
    __syncthreads();  // row is rewritten by the next row's rotation
  }
}

// Scales of an empty quantization: 1 in the scale's dtype.
__global__ void fill_one_kernel(void* scale, ssmkit_dtype dt, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_float(scale, dt, i, 1.0f);
  }
}

// amax (bit patterns) -> scale, in place in the float32 scale tensor.
__global__ void quant_scale_from_amax_kernel(float* scale, int64_t count, int bits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    scale[i] = scale_as_stored(scale[i], bits, SSMKIT_DTYPE_F32);
  }
}

// Quantizes row r of one scale (token, channel or tensor; len <= 2 * kQuantHeldPairs * blockDim.x) from
// registers: each thread loads its pairs at once (values 2b and 2b + 1 of pair b), so the row costs one
// round of loads. The results are quant_rows_kernel's general path's, bit for bit: the scale computed
// here is the value as stored, which is what that path reads back.
template <ssmkit_dtype T>
__device__ void quant_row_held(const quant_args& a, int64_t r, const float* rotated, float* red) {
  // v[e][j] is value 2 (threadIdx.x + j blockDim.x) + e: two batches of stride 2 blockDim.x.
  float v[2][kQuantHeldPairs];
  const int64_t stride = 2 * static_cast<int64_t>(blockDim.x);
  if (rotated != nullptr) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int j = 0; j < kQuantHeldPairs; ++j) {
        const int64_t i = 2 * static_cast<int64_t>(threadIdx.x) + e + j * stride;
        const float f = rotated[min64(i, a.len - 1)];
        v[e][j] = i < a.len ? f : 0.0f;
      }
    }
  } else {
    load_row_batch<T>(a.x, r * a.len, 2 * static_cast<int64_t>(threadIdx.x), stride, a.len, v[0]);
    load_row_batch<T>(a.x, r * a.len, 2 * static_cast<int64_t>(threadIdx.x) + 1, stride, a.len, v[1]);
  }
  float s;
  if (a.dynamic && a.granularity == QUANT_TOKEN) {
    float m = 0.0f;
#pragma unroll
    for (int j = 0; j < kQuantHeldPairs; ++j) m = fmaxf(m, fmaxf(fabsf(v[0][j]), fabsf(v[1][j])));
    s = scale_as_stored(block_max(m, red), a.bits, a.scale_dt);
    if (threadIdx.x == 0) store_float(a.scale, a.scale_dt, r, s);
  } else {
    const int64_t si = a.granularity == QUANT_TOKEN     ? r
                       : a.granularity == QUANT_CHANNEL ? r / a.lines_per_channel
                                                        : 0;
    s = load_float(a.scale, a.scale_dt, si);
  }
#pragma unroll
  for (int j = 0; j < kQuantHeldPairs; ++j) {
    const int64_t b = threadIdx.x + static_cast<int64_t>(j) * blockDim.x;
    const int64_t i = 2 * b;
    if (i >= a.len) break;
    const int lo = quant_one(v[0][j], s, a.bits);
    const int hi = i + 1 < a.len ? quant_one(v[1][j], s, a.bits) : 0;
    if (a.bits == 8) {
      int8_t* q = static_cast<int8_t*>(a.q) + r * a.len;
      q[i] = static_cast<int8_t>(lo);
      if (i + 1 < a.len) q[i + 1] = static_cast<int8_t>(hi);
    } else {
      static_cast<uint8_t*>(a.q)[r * ((a.len + 1) / 2) + b] =
          static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
    }
  }
}

// Quantizes each row: dynamic token and group scales are computed and written first, then every value
// is divided by its scale as stored (read back from the scale tensor, as the CPU kernels do). Rows of
// one scale that fit in registers take quant_row_held.
template <ssmkit_dtype T, int kM>
__global__ void __launch_bounds__(kQuantThreads, 1) quant_rows_kernel(quant_args a) {
  extern __shared__ float row[];  // (len) when rotating
  __shared__ float red[kQuantThreads / 32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const bool held = a.granularity != QUANT_GROUP && a.len > 0 &&
                    a.len <= 2 * kQuantHeldPairs * static_cast<int64_t>(blockDim.x);
  for (int64_t r = blockIdx.x; r < a.lines; r += gridDim.x) {
    if (a.had_m > 0) rotate_row<T, kM>(a, r, row);
    if (held) {
      quant_row_held<T>(a, r, a.had_m > 0 ? row : nullptr, red);
      __syncthreads();  // row (and red) are reused by the next row
      continue;
    }
    auto value = [&](int64_t i) -> float { return a.had_m > 0 ? row[i] : load_f32<T>(a.x, r * a.len + i); };

    if (a.dynamic && a.granularity == QUANT_TOKEN) {
      float m = 0.0f;
      for (int64_t i = threadIdx.x; i < a.len; i += blockDim.x) m = fmaxf(m, fabsf(value(i)));
      m = block_max(m, red);
      if (threadIdx.x == 0) store_float(a.scale, a.scale_dt, r, scale_as_stored(m, a.bits, a.scale_dt));
    } else if (a.dynamic && a.granularity == QUANT_GROUP) {
      for (int64_t gi = warp; gi < a.groups; gi += warps) {
        float m = 0.0f;
        for (int64_t i = lane; i < a.group_size; i += 32) m = fmaxf(m, fabsf(value(gi * a.group_size + i)));
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (lane == 0)
          store_float(a.scale, a.scale_dt, r * a.groups + gi, scale_as_stored(m, a.bits, a.scale_dt));
      }
    }
    __syncthreads();  // the row's scales are written before they are read back

    auto scale_index = [&](int64_t i) -> int64_t {
      switch (a.granularity) {
        case QUANT_TOKEN: return r;
        case QUANT_CHANNEL: return r / a.lines_per_channel;
        case QUANT_GROUP: return r * a.groups + i / a.group_size;
        default: return 0;
      }
    };
    if (a.bits == 8) {
      int8_t* q = static_cast<int8_t*>(a.q) + r * a.len;
      for (int64_t i = threadIdx.x; i < a.len; i += blockDim.x) {
        q[i] = static_cast<int8_t>(quant_one(value(i), load_float(a.scale, a.scale_dt, scale_index(i)), 8));
      }
    } else {
      const int64_t row_bytes = (a.len + 1) / 2;
      uint8_t* q = static_cast<uint8_t*>(a.q) + r * row_bytes;
      for (int64_t b = threadIdx.x; b < row_bytes; b += blockDim.x) {
        const int64_t i = 2 * b;
        const int lo = quant_one(value(i), load_float(a.scale, a.scale_dt, scale_index(i)), 4);
        const int hi = i + 1 < a.len
                           ? quant_one(value(i + 1), load_float(a.scale, a.scale_dt, scale_index(i + 1)), 4)
                           : 0;
        q[b] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      }
    }
    __syncthreads();  // row (and red) are reused by the next row
  }
}

template <ssmkit_dtype T>
__global__ void dequant_kernel(const void* __restrict__ qv, bool int4, const void* __restrict__ scale,
                               ssmkit_dtype scale_dt, void* __restrict__ out, int64_t lines, int64_t len,
                               int granularity, int64_t lines_per_channel, int64_t group_size) {
  const int64_t total = lines * len;
  const int64_t groups = granularity == QUANT_GROUP ? len / group_size : 1;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / len;
    const int64_t c = i - r * len;
    int q;
    if (int4) {
      const int byte = static_cast<const uint8_t*>(qv)[r * ((len + 1) / 2) + c / 2];
      q = ((((c & 1) ? byte >> 4 : byte) & 15) ^ 8) - 8;
    } else {
      q = static_cast<const int8_t*>(qv)[i];
    }
    int64_t si = 0;
    switch (granularity) {
      case QUANT_TOKEN: si = r; break;
      case QUANT_CHANNEL: si = r / lines_per_channel; break;
      case QUANT_GROUP: si = r * groups + c / group_size; break;
      default: break;
    }
    store_f32<T>(out, i, static_cast<float>(q) * load_float(scale, scale_dt, si));
  }
}

template <ssmkit_dtype T, int kM>
status launch_quantize(const quant_args& a, int dev, cudaStream_t stream) {
  const size_t smem = a.had_m > 0 ? static_cast<size_t>(a.len) * sizeof(float) : 0;
  if (smem > 0) {
    device_limits lim;
    SSMKIT_RETURN_IF_ERROR(limits_of(dev, &lim));
    // The kernels' own static shared memory (a few words) comes out of the same limit.
    const int usable = lim.smem_optin - 1024;
    if (smem > static_cast<size_t>(usable)) {
      return make_status(status_code::unsupported,
                         "quantize: options.hadamard: rows longer than %d values are not supported on CUDA",
                         usable / 4);
    }
    // Raised once to the device's limit, which covers every later row length.
    static std::atomic<uint64_t> done_amax{0}, done_rows{0};
    SSMKIT_RETURN_IF_ERROR(allow_smem(quant_amax_kernel<T, kM>, dev, usable, done_amax));
    SSMKIT_RETURN_IF_ERROR(allow_smem(quant_rows_kernel<T, kM>, dev, usable, done_rows));
  }
  const unsigned blocks = static_cast<unsigned>(min64(a.lines, kQuantMaxBlocks));
  if (a.channel_scales) {
    const int64_t count = a.granularity == QUANT_CHANNEL ? a.lines / a.lines_per_channel : 1;
    SSMKIT_CUDA_CHECK(cudaMemsetAsync(a.scale, 0, static_cast<size_t>(count) * sizeof(float), stream));
    quant_amax_kernel<T, kM><<<blocks, kQuantThreads, smem, stream>>>(a);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
    quant_scale_from_amax_kernel<<<grid_1d(count, 256), 256, 0, stream>>>(static_cast<float*>(a.scale), count,
                                                                          a.bits);
    SSMKIT_CUDA_CHECK(cudaGetLastError());
  }
  quant_rows_kernel<T, kM><<<blocks, kQuantThreads, smem, stream>>>(a);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

template <ssmkit_dtype T>
status launch_quantize_m(const quant_args& a, int dev, cudaStream_t stream) {
  switch (a.had_m) {
    case 12: return launch_quantize<T, 12>(a, dev, stream);
    case 20: return launch_quantize<T, 20>(a, dev, stream);
    case 28: return launch_quantize<T, 28>(a, dev, stream);
    case 40: return launch_quantize<T, 40>(a, dev, stream);
    default: return launch_quantize<T, 1>(a, dev, stream);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Entry points.

namespace {

// g's fields of p's folded norm (checked by int8_norm_folds or gemm_w4a16_norm_folds).
template <class P>
void set_norm_fold(gemm_args& g, const P& p) {
  g.pre_x = p.norm_x.data;
  g.pre_x_dt = p.norm_x.dtype;
  g.pre_res = p.norm_res.present() ? p.norm_res.data : nullptr;
  g.pre_res_dt = p.norm_res.dtype;
  g.pre_res_out = p.norm_res_out.data;
  g.pre_res_out_dt = p.norm_res_out.dtype;
  g.pre_w = p.norm_w.data;
  g.pre_w_dt = p.norm_w.dtype;
  g.pre_eps = p.norm_eps;
}

// Whether the pair path can fold p's norm and quantizer into its product (gemm_w8a8_norm_folds and
// gemm_w4a8_norm_folds): one row; norm_x 16-bit, norm_w float32 or norm_x's dtype, norm_res (optional)
// float32 or norm_x's dtype, all of k values in 16-byte aligned rows; norm_res_out of k floats; a_scale
// absent (per-token) or one value; and the pair path taking the product as it stands.
template <int kKind, class P>
bool int8_norm_folds(const P& p, const char* what, int64_t group_size) {
  const tensor_view& x = p.norm_x;
  if (p.m != 1 || p.k % 8 != 0 || !x.present() ||
      (x.dtype != SSMKIT_DTYPE_F16 && x.dtype != SSMKIT_DTYPE_BF16))
    return false;
  const auto a16 = [](const tensor_view& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; };
  const auto f32_or_x = [&](const tensor_view& t) {
    return t.numel() == p.k && a16(t) && (t.dtype == SSMKIT_DTYPE_F32 || t.dtype == x.dtype);
  };
  if (x.numel() != p.k || !a16(x) || !p.norm_w.present() || !f32_or_x(p.norm_w)) return false;
  if (p.norm_res.present() && !f32_or_x(p.norm_res)) return false;
  const tensor_view& ro = p.norm_res_out;
  if (!ro.present() || ro.numel() != p.k ||
      (ro.dtype != SSMKIT_DTYPE_F32 && ro.dtype != SSMKIT_DTYPE_F16 && ro.dtype != SSMKIT_DTYPE_BF16))
    return false;
  if (p.a_scale.present() && p.a_scale.numel() != 1) return false;
  gemm_args g{};
  if (!fill_common(g, what, p.a_scale, p.w_scale, p.bias, p.out, p.m, p.n, p.k, group_size).ok())
    return false;
  set_norm_fold(g, p);
  const bool bases16 = a16(p.w) && a16(p.a);
  return g.groups > 1 ? pair_takes<kKind, SSMKIT_DTYPE_I8, true>(g, p.w_packed, bases16, p.a.device)
                      : pair_takes<kKind, SSMKIT_DTYPE_I8, false>(g, p.w_packed, bases16, p.a.device);
}

// Whether the GEMV can fold p's activation quantizer into its product (gemm_w8a8_quant_folds and
// gemm_w4a8_quant_folds): one row; quant_x 16-bit, k values in a 16-byte aligned row (k % 8 == 0); no norm
// fold; a_scale absent (per-token) or one value; the pair path not taking the product without the fold (the
// GEMV's row is then where it would go anyway); and the GEMV taking it (no path before it takes one row with
// the fold).
template <int kKind, class P>
bool int8_quant_folds(const P& p, const char* what, int64_t group_size) {
  const tensor_view& x = p.quant_x;
  const auto a16 = [](const tensor_view& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; };
  if (p.m != 1 || p.k % 8 != 0 || !x.present() || p.norm_x.present() || x.numel() != p.k || !a16(x) ||
      (x.dtype != SSMKIT_DTYPE_F16 && x.dtype != SSMKIT_DTYPE_BF16))
    return false;
  if (p.a_scale.present() && p.a_scale.numel() != 1) return false;
  gemm_args g{};
  if (!fill_common(g, what, p.a_scale, p.w_scale, p.bias, p.out, p.m, p.n, p.k, group_size).ok())
    return false;
  g.pdl = p.pdl;
  // Where the pair path would take the product as it stands, it keeps it (it is the faster one there).
  const bool bases16 = a16(p.w) && a16(p.a);
  if (g.groups > 1 ? pair_takes<kKind, SSMKIT_DTYPE_I8, true>(g, p.w_packed, bases16, p.a.device)
                   : pair_takes<kKind, SSMKIT_DTYPE_I8, false>(g, p.w_packed, bases16, p.a.device))
    return false;
  g.pre_x = x.data;
  return g.groups > 1 ? gemv_takes<kKind, true>(g, p.w_packed, a16(p.w))
                      : gemv_takes<kKind, false>(g, p.w_packed, a16(p.w));
}

// g's folded norm and quantizer (p.norm_x) or quantizer alone (p.quant_x), where p asks for one; an
// unsupported status where the fold does not fit the call (int8_norm_folds, int8_quant_folds).
template <int kKind, class P>
status set_int8_folds(gemm_args& g, const P& p, const char* what, int64_t group_size) {
  if (p.norm_x.present()) {
    if (!int8_norm_folds<kKind>(p, what, group_size))
      return make_status(status_code::unsupported, "%s: the folded norm does not fit this call", what);
    set_norm_fold(g, p);
  }
  if (p.quant_x.present()) {
    if (!int8_quant_folds<kKind>(p, what, group_size))
      return make_status(status_code::unsupported, "%s: the folded quantizer does not fit this call", what);
    g.pre_x = p.quant_x.data;
    g.pre_x_dt = p.quant_x.dtype;
  }
  return ok_status();
}

}  // namespace

bool gemm_w8a8_norm_folds(const gemm_w8a8_params& p) {
  return int8_norm_folds<KIND_W8A8>(p, "gemmW8A8", 0);
}

bool gemm_w4a8_norm_folds(const gemm_w4a8_params& p) {
  return int8_norm_folds<KIND_W4A8>(p, "gemmW4A8", p.group_size);
}

bool gemm_w8a8_quant_folds(const gemm_w8a8_params& p) {
  return int8_quant_folds<KIND_W8A8>(p, "gemmW8A8", 0);
}

bool gemm_w4a8_quant_folds(const gemm_w4a8_params& p) {
  return int8_quant_folds<KIND_W4A8>(p, "gemmW4A8", p.group_size);
}

status gemm_w8a8_cuda(const gemm_w8a8_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.a.dtype != SSMKIT_DTYPE_I8) {
    return make_status(status_code::dtype, "gemmW8A8: a: unsupported dtype %s", dtype_name(p.a.dtype));
  }
  gemm_args g{};
  SSMKIT_RETURN_IF_ERROR(fill_common(g, "gemmW8A8", p.a_scale, p.w_scale, p.bias, p.out, p.m, p.n, p.k, 0));
  g.pdl = p.pdl;
  if (p.m == 0 || p.n == 0) return ok_status();
  g.a = p.a.data;
  SSMKIT_RETURN_IF_ERROR(set_int8_folds<KIND_W8A8>(g, p, "gemmW8A8", 0));
  const int dev = p.a.device;
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  return run_gemm_w<KIND_W8A8, SSMKIT_DTYPE_I8, false>(g, p.w, p.w_packed, dev, stream);
}

status gemm_w4a8_cuda(const gemm_w4a8_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.a.dtype != SSMKIT_DTYPE_I8) {
    return make_status(status_code::dtype, "gemmW4A8: a: unsupported dtype %s", dtype_name(p.a.dtype));
  }
  gemm_args g{};
  SSMKIT_RETURN_IF_ERROR(
      fill_common(g, "gemmW4A8", p.a_scale, p.w_scale, p.bias, p.out, p.m, p.n, p.k, p.group_size));
  g.pdl = p.pdl;
  if (p.m == 0 || p.n == 0) return ok_status();
  g.a = p.a.data;
  SSMKIT_RETURN_IF_ERROR(set_int8_folds<KIND_W4A8>(g, p, "gemmW4A8", p.group_size));
  const int dev = p.a.device;
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  return g.groups > 1 ? run_gemm_w<KIND_W4A8, SSMKIT_DTYPE_I8, true>(g, p.w, p.w_packed, dev, stream)
                      : run_gemm_w<KIND_W4A8, SSMKIT_DTYPE_I8, false>(g, p.w, p.w_packed, dev, stream);
}

// Whether p's product takes the ring path, which the folds need.
static bool ring_takes_w4a16(const gemm_w4a16_params& p) {
  gemm_args g{};
  if (!fill_common(g, "gemmW4A16", tensor_view{}, p.scales, p.bias, p.out, p.m, p.n, p.k, p.group_size).ok())
    return false;
  const bool bases16 =
      reinterpret_cast<uintptr_t>(p.w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(p.x.data) % 16 == 0;
  return g.groups > 1 ? ring_takes<KIND_W4A16, true>(g, p.w_packed, bases16, p.x.device)
                      : ring_takes<KIND_W4A16, false>(g, p.w_packed, bases16, p.x.device);
}

bool gemm_w4a16_norm_folds(const gemm_w4a16_params& p) {
  if (p.m != 1 || (p.x.dtype != SSMKIT_DTYPE_F16 && p.x.dtype != SSMKIT_DTYPE_BF16)) return false;
  if (!p.norm_x.present() || !p.norm_w.present() || !p.norm_res_out.present() || p.norm_x.numel() != p.k ||
      p.norm_w.numel() != p.k || p.norm_res_out.numel() != p.k ||
      (p.norm_res.present() && p.norm_res.numel() != p.k))
    return false;
  // ring_prenorm's 16-byte chunks of x (of x's dtype) and of the residual (float32 or x's dtype).
  const auto a16 = [](const tensor_view& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; };
  if (p.k % 8 != 0 || p.norm_x.dtype != p.x.dtype || !a16(p.norm_x) || !a16(p.norm_w) ||
      (p.norm_w.dtype != SSMKIT_DTYPE_F32 && p.norm_w.dtype != p.x.dtype))
    return false;
  if (p.norm_res.present() &&
      (!a16(p.norm_res) || (p.norm_res.dtype != SSMKIT_DTYPE_F32 && p.norm_res.dtype != p.x.dtype)))
    return false;
  return ring_takes_w4a16(p);
}

bool gemm_w4a16_conv_folds(const gemm_w4a16_params& p) {
  if (p.m != 1 || (p.x.dtype != SSMKIT_DTYPE_F16 && p.x.dtype != SSMKIT_DTYPE_BF16)) return false;
  const tensor_view& st = p.conv_state;
  if (!st.present() || st.dtype != SSMKIT_DTYPE_F32 || st.ndim != 3 || st.dim(0) != 1) return false;
  const int64_t dim = st.dim(1), sl = st.dim(2);
  const tensor_view& w = p.conv_weight;
  if (!w.present() || w.ndim != 2 || w.dim(0) != dim || w.dim(1) < 1 || w.dim(1) > kConvFoldMax ||
      sl < w.dim(1) - 1 || sl > kConvFoldMax || (w.dtype != SSMKIT_DTYPE_F32 && w.dtype != p.x.dtype))
    return false;
  if (p.conv_bias.present() && (p.conv_bias.numel() != dim ||
                                (p.conv_bias.dtype != SSMKIT_DTYPE_F32 && p.conv_bias.dtype != p.x.dtype)))
    return false;
  if (!p.conv_out.present() || p.conv_out.numel() != dim || p.conv_col0 < 0 || p.conv_col0 + dim > p.n)
    return false;
  return ring_takes_w4a16(p);
}

status gemm_w4a16_cuda(const gemm_w4a16_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  gemm_args g{};
  SSMKIT_RETURN_IF_ERROR(
      fill_common(g, "gemmW4A16", tensor_view{}, p.scales, p.bias, p.out, p.m, p.n, p.k, p.group_size));
  g.pdl = p.pdl;
  // In a PDL chain the GEMV and ring kernels let the next kernel launch only once their own wait has
  // returned (pdl_trigger_late says why). W8A8 and W4A8 keep the early trigger: their steps have not been
  // measured with the late one.
  g.trigger_late = p.pdl && pdl_trigger_late();
  if (p.m == 0 || p.n == 0) return ok_status();
  g.a = p.x.data;
  if (p.norm_x.present()) {
    if (!gemm_w4a16_norm_folds(p))
      return make_status(status_code::unsupported, "gemmW4A16: the folded norm does not fit this call");
    set_norm_fold(g, p);
  }
  if (p.conv_state.present()) {
    if (!gemm_w4a16_conv_folds(p))
      return make_status(status_code::unsupported, "gemmW4A16: the folded conv does not fit this call");
    g.conv_state = p.conv_state.ptr<float>();
    g.conv_w = p.conv_weight.data;
    g.conv_w_dt = p.conv_weight.dtype;
    g.conv_b = p.conv_bias.present() ? p.conv_bias.data : nullptr;
    g.conv_b_dt = p.conv_bias.dtype;
    g.conv_out = p.conv_out.data;
    g.conv_out_dt = p.conv_out.dtype;
    g.conv_col0 = p.conv_col0;
    g.conv_dim = p.conv_state.dim(1);
    g.conv_width = static_cast<int>(p.conv_weight.dim(1));
    g.conv_sl = static_cast<int>(p.conv_state.dim(2));
  }
  const int dev = p.x.device;
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  const bool grouped = g.groups > 1;
  switch (p.x.dtype) {
    case SSMKIT_DTYPE_F32:
      return grouped ? run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_F32, true>(g, p.w, p.w_packed, dev, stream)
                     : run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_F32, false>(g, p.w, p.w_packed, dev, stream);
    case SSMKIT_DTYPE_F16:
      return grouped ? run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_F16, true>(g, p.w, p.w_packed, dev, stream)
                     : run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_F16, false>(g, p.w, p.w_packed, dev, stream);
    case SSMKIT_DTYPE_BF16:
      return grouped ? run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_BF16, true>(g, p.w, p.w_packed, dev, stream)
                     : run_gemm_w<KIND_W4A16, SSMKIT_DTYPE_BF16, false>(g, p.w, p.w_packed, dev, stream);
    default:
      return make_status(status_code::dtype, "gemmW4A16: x: unsupported dtype %s", dtype_name(p.x.dtype));
  }
}

status pack_weights_cuda(const pack_weights_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.bits != 8 && p.bits != 4) {
    return make_status(status_code::value, "packWeights: options.bits: expected 8 or 4, got %d", p.bits);
  }
  const int64_t total = packed_weight_bytes(p.n, p.k, p.bits);
  if (total == 0) return ok_status();
  SSMKIT_CUDA_CHECK(cudaSetDevice(p.w.device));
  pack_weights_kernel<<<grid_1d(total, 256), 256, 0, stream>>>(
      static_cast<const uint8_t*>(p.w.data), static_cast<uint8_t*>(p.out.data), p.n, p.k, p.bits);
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

status quantize_cuda(const quantize_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.bits != 8 && p.bits != 4) {
    return make_status(status_code::value, "quantize: options.bits: expected 8 or 4, got %d", p.bits);
  }
  quant_args a{};
  a.had_m = 0;
  if (p.hadamard) {
    int m = 1;
    int64_t pow2 = 1;
    if (!hadamard_factor(p.len, &m, &pow2)) {
      return make_status(status_code::value,
                         "quantize: x: expected a last dimension of 2^k or 12, 20, 28, 40 times 2^k for "
                         "options.hadamard, got %lld",
                         static_cast<long long>(p.len));
    }
    a.had_m = m;
    a.had_pow2 = pow2;
    if (m > 1) {
      const float* signs = hadamard_signs(m);
      if (m == 40) {
        // The kernel uses H_40's two-block form [[A, A], [B, -B]], as native/cpu/quant.cc does.
        for (int i = 0; i < 40; ++i) {
          for (int j = 0; j < 20; ++j) {
            if (signs[i * 40 + 20 + j] != (i < 20 ? signs[i * 40 + j] : -signs[i * 40 + j])) {
              return make_status(status_code::internal,
                                 "quantize: H_40 is not of the form [[A, A], [B, -B]]");
            }
          }
        }
      }
      for (int i = 0; i < m; ++i) {
        uint64_t bits = 0;
        for (int j = 0; j < m; ++j) {
          if (signs[i * m + j] < 0.0f) bits |= uint64_t{1} << j;
        }
        a.had_signs[i] = bits;
      }
    }
  }
  if (p.granularity == QUANT_GROUP && (p.group_size <= 0 || p.len % p.group_size != 0)) {
    return make_status(status_code::value,
                       "quantize: options.groupSize: expected a divisor of %lld, got %lld",
                       static_cast<long long>(p.len), static_cast<long long>(p.group_size));
  }
  if (p.lines == 0 || p.len == 0) {
    // Nothing to quantize: every computed scale covers only zeros, so it is 1 (as on the CPU).
    const int64_t count = p.scale.numel();
    if (!p.static_scale && count > 0) {
      SSMKIT_CUDA_CHECK(cudaSetDevice(p.x.device));
      fill_one_kernel<<<grid_1d(count, 256), 256, 0, stream>>>(p.scale.data, p.scale.dtype, count);
      SSMKIT_CUDA_CHECK(cudaGetLastError());
    }
    return ok_status();
  }
  a.x = p.x.data;
  a.q = p.q.data;
  a.scale = p.scale.data;
  a.scale_dt = p.scale.dtype;
  a.lines = p.lines;
  a.len = p.len;
  a.lines_per_channel = p.granularity == QUANT_TENSOR ? p.lines : std::max<int64_t>(1, p.lines_per_channel);
  a.group_size = p.granularity == QUANT_GROUP ? p.group_size : p.len;
  a.groups = p.len / a.group_size;
  a.bits = p.bits;
  a.granularity = p.granularity;
  a.dynamic = !p.static_scale;
  a.channel_scales = !p.static_scale && (p.granularity == QUANT_TENSOR || p.granularity == QUANT_CHANNEL);
  if (a.channel_scales && p.scale.dtype != SSMKIT_DTYPE_F32) {
    return make_status(status_code::dtype, "quantize: scale: expected float32 for a %s scale, got %s",
                       p.granularity == QUANT_TENSOR ? "tensor" : "channel", dtype_name(p.scale.dtype));
  }
  a.rot_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.len)));
  const int dev = p.x.device;
  SSMKIT_CUDA_CHECK(cudaSetDevice(dev));
  if (a.had_m == 40) {
    // Rows of 40 p values with one scale each: the rotation's own wide kernel, quantizing in its epilogue.
    bool launched = false;
    SSMKIT_RETURN_IF_ERROR(quantize_h40_cuda(p, a.rot_scale, stream, &launched));
    if (launched) return ok_status();
  }
  switch (p.x.dtype) {
    case SSMKIT_DTYPE_F32: return launch_quantize_m<SSMKIT_DTYPE_F32>(a, dev, stream);
    case SSMKIT_DTYPE_F16: return launch_quantize_m<SSMKIT_DTYPE_F16>(a, dev, stream);
    case SSMKIT_DTYPE_BF16: return launch_quantize_m<SSMKIT_DTYPE_BF16>(a, dev, stream);
    default:
      return make_status(status_code::dtype, "quantize: x: unsupported dtype %s", dtype_name(p.x.dtype));
  }
}

status dequantize_cuda(const dequantize_params& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  if (p.q.dtype != SSMKIT_DTYPE_I8 && p.q.dtype != SSMKIT_DTYPE_I4) {
    return make_status(status_code::dtype, "dequantize: q: unsupported dtype %s", dtype_name(p.q.dtype));
  }
  if (p.granularity == QUANT_GROUP && (p.group_size <= 0 || p.len % p.group_size != 0)) {
    return make_status(status_code::value,
                       "dequantize: options.groupSize: expected a divisor of %lld, got %lld",
                       static_cast<long long>(p.len), static_cast<long long>(p.group_size));
  }
  if (p.lines == 0 || p.len == 0) return ok_status();
  SSMKIT_CUDA_CHECK(cudaSetDevice(p.q.device));
  const int64_t total = p.lines * p.len;
  const bool int4 = p.q.dtype == SSMKIT_DTYPE_I4;
  const int64_t lpc = std::max<int64_t>(1, p.lines_per_channel);
  switch (p.out.dtype) {
    case SSMKIT_DTYPE_F32:
      dequant_kernel<SSMKIT_DTYPE_F32>
          <<<grid_1d(total, 256), 256, 0, stream>>>(p.q.data, int4, p.scale.data, p.scale.dtype, p.out.data,
                                                    p.lines, p.len, p.granularity, lpc, p.group_size);
      break;
    case SSMKIT_DTYPE_F16:
      dequant_kernel<SSMKIT_DTYPE_F16>
          <<<grid_1d(total, 256), 256, 0, stream>>>(p.q.data, int4, p.scale.data, p.scale.dtype, p.out.data,
                                                    p.lines, p.len, p.granularity, lpc, p.group_size);
      break;
    case SSMKIT_DTYPE_BF16:
      dequant_kernel<SSMKIT_DTYPE_BF16>
          <<<grid_1d(total, 256), 256, 0, stream>>>(p.q.data, int4, p.scale.data, p.scale.dtype, p.out.data,
                                                    p.lines, p.len, p.granularity, lpc, p.group_size);
      break;
    default:
      return make_status(status_code::dtype, "dequantize: out: unsupported dtype %s",
                         dtype_name(p.out.dtype));
  }
  SSMKIT_CUDA_CHECK(cudaGetLastError());
  return ok_status();
}

}  // namespace ssmkit
