// Node-API bindings of the scan family: JS arguments -> params struct -> CPU pool or stream.
#include "common.h"

namespace ssmkit::napi {

void register_scan(Napi::Env, Napi::Object) {}

}  // namespace ssmkit::napi
