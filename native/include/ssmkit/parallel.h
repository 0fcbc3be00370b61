// The CPU backend's one thread pool. parallel_for may be called from several threads at once (each
// async op runs on its own libuv worker); the calling thread works on its own share too, so a pool of
// n threads plus the caller never oversubscribes more than one core per concurrent op.
#pragma once
#include <cstdint>
#include <functional>

namespace ssmkit::cpu {

void set_num_threads(int n);
int get_num_threads();

// Calls fn(begin, end) over disjoint ranges covering [0, n), each at least `grain` long (except the
// last), spread over the pool. Returns when every range is done.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace ssmkit::cpu
