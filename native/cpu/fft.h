// The real FFT behind the FFT convolution family, made for convolution rather than for spectra: a
// real signal of n = 2^k samples is packed as m = n/2 complex values (even samples real, odd samples
// imaginary, stored as two float arrays), transformed by an in-place decimation-in-frequency FFT
// (radix-4 passes, one radix-2 pass when the stage count is odd) and left in the transform's own
// order, which the inverse (decimation in time) reads back without any bit-reversal pass. The
// real-signal split and the product with a filter's spectrum are fused into one pass over that order.
//
// The last log2(w) stages of a vector plan run on w x w tiles transposed in registers, so the spectrum
// order is bit-reversed with the two low log2(w)-bit fields swapped. Above position w*w the partner of
// frequency k (frequency m - k) is the mirror position within the octave, so the pair pass runs on
// contiguous and reversed vectors; the w*w positions below go through per-plan pair lists (gathered).
// Plans and twiddles are built once per size and kept (twiddles in double, rounded to float). Every
// kernel also takes a range of its work so that one long transform can be spread over the pool.
//
// Besides the transform this header holds the small vector toolkit the family's kernels share: GCC /
// clang vector types of W floats, always inlined so that each SIMD level's entry point (compiled with
// its SSMKIT_TARGET_* attribute) turns them into AVX-512, AVX2 or baseline (SSE2 / NEON) code.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

// Vector types wider than the baseline ABI only ever live inside always-inlined code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace ssmkit::cpu::fft {

// One transform length. Read-only once built; shared by every thread.
struct plan {
  int log2n = 0;
  int64_t n = 0;                     // real samples
  int64_t m = 0;                     // complex values, n / 2
  int width = 0;                     // vector width the kernels use; 0: the scalar kernels (small m)
  int64_t head = 0;                  // positions below head pair up through `partner`
  const float* pair_re = nullptr;    // (m,) Re W_n^freq(P): the real-split twiddle at position P
  const float* pair_im = nullptr;    // (m,)
  const int32_t* partner = nullptr;  // (head,) position of frequency m - freq(P)
  const int64_t* freq = nullptr;     // (head,) frequency held at position P
  // The head's pairs (P, partner) other than position 0, padded to a multiple of the width by repeating
  // the last one, with the real-split twiddle of P: what the vector kernels gather from.
  int64_t head_pairs = 0;
  const int32_t* head_k = nullptr;  // (head_pairs,)
  const int32_t* head_m = nullptr;  // (head_pairs,)
  const float* head_wr = nullptr;   // (head_pairs,)
  const float* head_wi = nullptr;   // (head_pairs,)
};

// ceil(log2(x)) for x >= 1.
int log2_ceil(int64_t x);

// Longest transform: 2^kMaxLog2n real samples.
constexpr int kMaxLog2n = 30;

// The plan for n = 2^log2n real samples, 1 <= log2n <= kMaxLog2n, with every twiddle table its kernels
// read; built on first use (thread-safe), so that the transforms themselves never allocate.
const plan& get_plan(int log2n);

// Complex FFT in place on m values (re, im): natural order in, plan order out (unnormalized).
void forward(const plan& p, float* re, float* im);
// The inverse: plan order in, natural order out, unnormalized (a forward/inverse round trip scales by m).
void inverse(const plan& p, float* re, float* im);
// After forward() of a packed real filter: its spectrum times `scale`, in the form convolve() takes
// (the 1/m of the unnormalized inverse folded in).
void filter_spectrum(const plan& p, float* re, float* im, float scale);
// After forward() of a packed real signal: multiplies its spectrum by a filter_spectrum() and leaves
// what inverse() turns into the packed circular convolution (no further scaling needed).
void convolve(const plan& p, float* re, float* im, const float* hre, const float* him);
// x (n floats) -> re, im (m each): even samples to re, odd samples to im; and back (the first `count`
// samples, possibly a few more: x must hold n).
void pack(const plan& p, const float* x, float* re, float* im);
void unpack(const plan& p, const float* re, const float* im, float* x, int64_t count);

// The same, each pass spread over the thread pool: for long rows when there are fewer rows than
// threads. Same results, bit for bit.
void forward_parallel(const plan& p, float* re, float* im);
void inverse_parallel(const plan& p, float* re, float* im);
void convolve_parallel(const plan& p, float* re, float* im, const float* hre, const float* him);
void pack_parallel(const plan& p, const float* x, float* re, float* im);
void unpack_parallel(const plan& p, const float* re, const float* im, float* x, int64_t count);

// A grow-only, 64-byte aligned float buffer, meant to be thread_local: the family's only scratch
// memory. Every buffer's size counts in scratch_bytes(), so tests can check that it does not grow with
// the sequence length.
class scratch {
 public:
  scratch() = default;
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch();
  // At least n floats; the contents are not kept when it grows.
  float* get(int64_t n);
  // Frees the memory (for one-off large sizes that should not stay held).
  void release();

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};
// Bytes held by all scratch buffers of the family, now and at most so far.
int64_t scratch_bytes();
int64_t scratch_peak_bytes();

// ---- vector toolkit (header-only, always inlined into the SIMD levels' entry points) ----

#define SSMKIT_INLINE inline __attribute__((always_inline))

template <int W>
struct vec_type {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t itype __attribute__((vector_size(W * sizeof(int32_t))));
};
template <int W>
using vf = typename vec_type<W>::type;
template <int W>
using vi = typename vec_type<W>::itype;

template <int W>
SSMKIT_INLINE vf<W> vload(const float* p) {
  vf<W> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
SSMKIT_INLINE void vstore(float* p, const vf<W>& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
template <int W>
SSMKIT_INLINE vf<W> vsplat(float x) {
  return vf<W>{} + x;
}

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define SSMKIT_SHUFFLE(W, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SSMKIT_SHUFFLE(W, a, b, ...) __builtin_shuffle(a, b, (::ssmkit::cpu::fft::vi<W>){__VA_ARGS__})
#endif

namespace detail {
template <int W, int... I>
SSMKIT_INLINE vf<W> reverse(const vf<W>& a, std::integer_sequence<int, I...>) {
  return SSMKIT_SHUFFLE(W, a, a, (W - 1 - I)...);
}
template <int W, int... I>
SSMKIT_INLINE vf<W> zip_lo(const vf<W>& a, const vf<W>& b, std::integer_sequence<int, I...>) {
  return SSMKIT_SHUFFLE(W, a, b, ((I & 1) ? W + I / 2 : I / 2)...);
}
template <int W, int... I>
SSMKIT_INLINE vf<W> zip_hi(const vf<W>& a, const vf<W>& b, std::integer_sequence<int, I...>) {
  return SSMKIT_SHUFFLE(W, a, b, ((I & 1) ? W + W / 2 + I / 2 : W / 2 + I / 2)...);
}
template <int W, int... I>
SSMKIT_INLINE vf<W> evens(const vf<W>& a, const vf<W>& b, std::integer_sequence<int, I...>) {
  return SSMKIT_SHUFFLE(W, a, b, (2 * I)...);
}
template <int W, int... I>
SSMKIT_INLINE vf<W> odds(const vf<W>& a, const vf<W>& b, std::integer_sequence<int, I...>) {
  return SSMKIT_SHUFFLE(W, a, b, (2 * I + 1)...);
}
}  // namespace detail

// Lanes in reverse order.
template <int W>
SSMKIT_INLINE vf<W> vreverse(const vf<W>& a) {
  return detail::reverse<W>(a, std::make_integer_sequence<int, W>{});
}
// a0 b0 a1 b1 ... (first halves) and the same of the second halves.
template <int W>
SSMKIT_INLINE vf<W> vzip_lo(const vf<W>& a, const vf<W>& b) {
  return detail::zip_lo<W>(a, b, std::make_integer_sequence<int, W>{});
}
template <int W>
SSMKIT_INLINE vf<W> vzip_hi(const vf<W>& a, const vf<W>& b) {
  return detail::zip_hi<W>(a, b, std::make_integer_sequence<int, W>{});
}
// Even and odd elements of the 2W values a ++ b.
template <int W>
SSMKIT_INLINE vf<W> vevens(const vf<W>& a, const vf<W>& b) {
  return detail::evens<W>(a, b, std::make_integer_sequence<int, W>{});
}
template <int W>
SSMKIT_INLINE vf<W> vodds(const vf<W>& a, const vf<W>& b) {
  return detail::odds<W>(a, b, std::make_integer_sequence<int, W>{});
}

}  // namespace ssmkit::cpu::fft
