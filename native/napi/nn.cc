// Node-API bindings of the model building blocks (linear layers, norms, embeddings) that the model
// runner composes with the op families: JS arguments -> params struct -> CPU pool or stream.
#include "common.h"

namespace ssmkit::napi {

void register_nn(Napi::Env, Napi::Object) {}

}  // namespace ssmkit::napi
