// The addon's entry point: one exports object holding the backend functions and every op family's
// functions. Each family registers itself from its own file (quant.cc, scan.cc, fft.cc, nn.cc).
#include "common.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  ssmkit::napi::register_backend(env, exports);
  ssmkit::napi::register_quant(env, exports);
  ssmkit::napi::register_scan(env, exports);
  ssmkit::napi::register_fft(env, exports);
  ssmkit::napi::register_nn(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(ssmkit, init)
