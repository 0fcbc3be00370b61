// CPU kernels of the quantization family. hadamard: the in-register radix-2 Walsh-Hadamard butterfly
// over each row in float32, rows spread over the thread pool.
#include "ssmkit/quant.h"

#include <vector>

#include "ssmkit/parallel.h"

namespace ssmkit {
namespace {

template <ssmkit_dtype T>
status hadamard_rows(const hadamard_params& p) {
  const int64_t n = p.n;
  cpu::parallel_for(p.rows, 1, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(n));  // (n,) one row in float32
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t i = 0; i < n; ++i) row[i] = load_f32<T>(p.x.data, r * n + i);
      for (int64_t h = 1; h < n; h <<= 1) {
        for (int64_t i = 0; i < n; i += 2 * h) {
          for (int64_t j = i; j < i + h; ++j) {
            const float a = row[j];
            const float b = row[j + h];
            row[j] = a + b;
            row[j + h] = a - b;
          }
        }
      }
      for (int64_t i = 0; i < n; ++i) store_f32<T>(p.out.data, r * n + i, row[i] * p.scale);
    }
  });
  return ok_status();
}

}  // namespace

status hadamard_cpu(const hadamard_params& p) {
  if (p.n <= 0 || (p.n & (p.n - 1)) != 0) {
    return make_status(status_code::value, "hadamard: x: last dimension must be a power of two, got %lld",
                       static_cast<long long>(p.n));
  }
  return SSMKIT_FLOAT_SWITCH(p.x.dtype, "hadamard", [&] { return hadamard_rows<kDType>(p); });
}

}  // namespace ssmkit
