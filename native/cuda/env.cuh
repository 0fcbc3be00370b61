// Environment switches of the CUDA families' host code (benchmark and test knobs). They are read at
// every call, so one process can compare both settings.
#pragma once

#include <cstdlib>

namespace ssmkit {

// Whether switch `name` is on: unset or empty gives `fallback`, "0" turns it off, anything else on.
inline bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return !(v[0] == '0' && v[1] == '\0');
}

// Integer setting `name` (atoi), or `fallback` where it is unset or empty.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

}  // namespace ssmkit
