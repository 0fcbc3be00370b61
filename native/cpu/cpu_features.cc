// Detects the CPU's SIMD features once (CPUID plus the OS's register-state support, through GCC's
// __builtin_cpu_supports) and applies the SSMKIT_SIMD cap.
#include "ssmkit/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace ssmkit::cpu {
namespace {

simd_level detect() {
#if SSMKIT_X86
  __builtin_cpu_init();
  const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  if (vnni) return SIMD_AVX512_VNNI;
  if (avx512) return SIMD_AVX512;
  if (avx2) return SIMD_AVX2;
#endif
  return SIMD_SCALAR;
}

simd_level cap_from_env() {
  const char* v = std::getenv("SSMKIT_SIMD");
  if (v == nullptr || *v == '\0') return SIMD_AVX512_VNNI;
  if (std::strcmp(v, "scalar") == 0) return SIMD_SCALAR;
  if (std::strcmp(v, "avx2") == 0) return SIMD_AVX2;
  if (std::strcmp(v, "avx512") == 0) return SIMD_AVX512;
  return SIMD_AVX512_VNNI;
}

}  // namespace

simd_level simd() {
  static const simd_level level = [] {
    const simd_level hw = detect();
    const simd_level cap = cap_from_env();
    return hw < cap ? hw : cap;
  }();
  return level;
}

const char* simd_name(simd_level level) {
  switch (level) {
    case SIMD_SCALAR: return "scalar";
    case SIMD_AVX2: return "avx2";
    case SIMD_AVX512: return "avx512";
    case SIMD_AVX512_VNNI: return "avx512vnni";
  }
  return "scalar";
}

std::vector<std::string> detected_features() {
  std::vector<std::string> out;
#if SSMKIT_X86
  __builtin_cpu_init();
  static const char* const names[] = {"sse4.2",   "avx",        "avx2",      "fma",
                                      "f16c",     "avx512f",    "avx512bw",  "avx512dq",
                                      "avx512vl", "avx512vnni", "avx512bf16"};
  if (__builtin_cpu_supports("sse4.2")) out.emplace_back(names[0]);
  if (__builtin_cpu_supports("avx")) out.emplace_back(names[1]);
  if (__builtin_cpu_supports("avx2")) out.emplace_back(names[2]);
  if (__builtin_cpu_supports("fma")) out.emplace_back(names[3]);
  if (__builtin_cpu_supports("f16c")) out.emplace_back(names[4]);
  if (__builtin_cpu_supports("avx512f")) out.emplace_back(names[5]);
  if (__builtin_cpu_supports("avx512bw")) out.emplace_back(names[6]);
  if (__builtin_cpu_supports("avx512dq")) out.emplace_back(names[7]);
  if (__builtin_cpu_supports("avx512vl")) out.emplace_back(names[8]);
  if (__builtin_cpu_supports("avx512vnni")) out.emplace_back(names[9]);
  if (__builtin_cpu_supports("avx512bf16")) out.emplace_back(names[10]);
#endif
  return out;
}

}  // namespace ssmkit::cpu
