// The CUDA entry points of a build without CUDA: every call answers "not compiled with CUDA", so the
// addon exports the same functions whichever way it was built.
#include "ssmkit/device.h"

namespace ssmkit::device {
namespace {
status not_compiled() {
  return make_status(status_code::not_compiled,
                     "ssmkit: this binary was built without CUDA (build it with `npm run build:cuda` "
                     "where nvcc is installed, or install a CUDA prebuilt)");
}
}  // namespace

bool compiled() {
  return false;
}
status count(int* n) {
  *n = 0;
  return not_compiled();
}
status info(int, device_info*) {
  return not_compiled();
}
status stream(int, void**) {
  return not_compiled();
}
status alloc(int, size_t, void**) {
  return not_compiled();
}
status release(int, void*) {
  return not_compiled();
}
status copy_to_device(int, void*, const void*, size_t) {
  return not_compiled();
}
status copy_to_host(int, void*, const void*, size_t) {
  return not_compiled();
}
status copy_to_host_begin(int, const void*, size_t, host_copy** out) {
  *out = nullptr;
  return not_compiled();
}
status copy_to_host_finish(host_copy*, void*) {
  return not_compiled();
}
status copy_on_device(int, void*, const void*, size_t) {
  return not_compiled();
}
status fill32(int, void*, uint32_t, int64_t) {
  return not_compiled();
}
status trim(int) {
  return not_compiled();
}
status synchronize(int) {
  return not_compiled();
}
status memory_info(int, size_t*, size_t*) {
  return not_compiled();
}
status cast(int, const void*, int, void*, int, int64_t) {
  return not_compiled();
}
status clear_pending_error(int) {
  return not_compiled();
}

}  // namespace ssmkit::device
