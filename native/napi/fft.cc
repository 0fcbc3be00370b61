// Node-API bindings of the fft family: JS arguments -> params struct -> CPU pool or stream.
#include "common.h"

namespace ssmkit::napi {

void register_fft(Napi::Env, Napi::Object) {}

}  // namespace ssmkit::napi
