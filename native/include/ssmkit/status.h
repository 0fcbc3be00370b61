// The status every kernel entry point returns instead of throwing: a code that native/napi maps to a
// JavaScript error class (dtype -> TypeError, shape/value -> RangeError, the rest -> SsmkitError with a
// stable code) and a message that names the op and the argument.
#pragma once
#include <cstdarg>
#include <cstdio>

namespace ssmkit {

enum class status_code : int {
  ok = 0,
  dtype = 1,         // TypeError
  shape = 2,         // RangeError, ERR_SSMKIT_SHAPE
  value = 3,         // RangeError, ERR_SSMKIT_VALUE
  unsupported = 4,   // SsmkitError ERR_SSMKIT_UNSUPPORTED
  not_compiled = 5,  // SsmkitError ERR_SSMKIT_NOT_COMPILED (a CUDA entry point in a CPU-only build)
  cuda = 6,          // SsmkitError ERR_SSMKIT_CUDA
  cuda_oom = 7,      // SsmkitError ERR_SSMKIT_CUDA_OOM
  internal = 8,      // SsmkitError ERR_SSMKIT_INTERNAL
};

struct status {
  status_code code = status_code::ok;
  char message[320] = {0};
  bool ok() const { return code == status_code::ok; }
};

inline status ok_status() {
  return status{};
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
inline status
make_status(status_code code, const char* fmt, ...) {
  status s;
  s.code = code;
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(s.message, sizeof(s.message), fmt, args);
  va_end(args);
  return s;
}

}  // namespace ssmkit

#define SSMKIT_RETURN_IF_ERROR(expr)       \
  do {                                     \
    ::ssmkit::status ssmkit_s_ = (expr);   \
    if (!ssmkit_s_.ok()) return ssmkit_s_; \
  } while (0)
