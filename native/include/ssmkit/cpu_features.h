// Run-time choice of the CPU's SIMD path, so that one x86-64 binary runs on any processor. Kernels
// compile their AVX2 and AVX-512 variants with per-function target attributes and pick one by simd().
// SSMKIT_SIMD=scalar|avx2|avx512|vnni caps the level (tests force each path on one machine).
#pragma once
#include <string>
#include <vector>

namespace ssmkit::cpu {

enum simd_level : int {
  SIMD_SCALAR = 0,
  SIMD_AVX2 = 1,         // AVX2 + FMA + F16C
  SIMD_AVX512 = 2,       // AVX-512 F/BW/DQ/VL
  SIMD_AVX512_VNNI = 3,  // AVX-512 plus VNNI (int8 dot products)
};

// The level in force: the best the CPU supports, capped by SSMKIT_SIMD. Read once.
simd_level simd();
const char* simd_name(simd_level level);
// Features detected on this CPU, before any cap (for backend().cpuFeatures).
std::vector<std::string> detected_features();

}  // namespace ssmkit::cpu

#if defined(__x86_64__) || defined(_M_X64)
#define SSMKIT_X86 1
#define SSMKIT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SSMKIT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define SSMKIT_TARGET_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")))
#else
#define SSMKIT_X86 0
#endif
