// The CPU thread pool behind ssmkit::cpu::parallel_for. Workers are started lazily up to the thread
// count in force and never stopped (idle ones sleep on a condition variable), so set_num_threads is safe
// while ops are running: it only changes how later calls split their work.
//
// An idle worker, and a caller waiting for its helpers, first spin for up to SSMKIT_CPU_SPIN_US
// microseconds (default 100; 0: sleep at once) before they sleep: a decode step runs a few hundred short
// parallel_for calls back to back, and a sleeping thread takes tens of microseconds to wake (futex and
// scheduler), often longer than the call's work.
#include "ssmkit/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ssmkit::cpu {
namespace {

// SSMKIT_CPU_SPIN_US, read once: a whole number of microseconds up to a second, else the default.
std::chrono::microseconds spin_time() {
  static const std::chrono::microseconds t = [] {
    const char* v = std::getenv("SSMKIT_CPU_SPIN_US");
    if (v == nullptr || *v == '\0') return std::chrono::microseconds{100};
    char* end = nullptr;
    const long us = std::strtol(v, &end, 10);
    if (*end != '\0' || us < 0 || us > 1000000) return std::chrono::microseconds{100};
    return std::chrono::microseconds{us};
  }();
  return t;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until ready() or spin_time() has passed (the clock read every 64 rounds); returns ready().
template <class Ready>
bool spin_until(Ready&& ready) {
  if (spin_time().count() == 0) return ready();
  const auto end = std::chrono::steady_clock::now() + spin_time();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
  }
}

struct job {
  const std::function<void(int64_t, int64_t)>* fn;
  int64_t n;
  int64_t chunk;
  int64_t chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;

  // Takes chunks until none are left; returns after finishing the last one it took.
  void work() {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks) return;
      const int64_t begin = c * chunk;
      const int64_t end = std::min(n, begin + chunk);
      (*fn)(begin, end);
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(mu);
        cv.notify_all();
      }
    }
  }
};

class pool {
 public:
  static pool& get() {
    // Leaked on purpose: worker threads must outlive static destruction at process exit.
    static pool* instance = new pool();
    return *instance;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }

  void set_threads(int n) { threads_.store(std::max(1, n), std::memory_order_relaxed); }

  void run(const std::shared_ptr<job>& j, int helpers) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < helpers) {
        workers_.emplace_back([this] { loop(); });
        workers_.back().detach();
      }
      for (int i = 0; i < helpers; ++i) queue_.push_back(j);
      queued_.fetch_add(helpers, std::memory_order_release);
    }
    cv_.notify_all();
    j->work();
    const auto finished = [&] { return j->done.load(std::memory_order_acquire) == j->chunks; };
    if (spin_until(finished)) return;
    std::unique_lock<std::mutex> lock(j->mu);
    j->cv.wait(lock, finished);
  }

 private:
  pool() {
    const unsigned hw = std::thread::hardware_concurrency();
    threads_.store(hw == 0 ? 1 : static_cast<int>(hw));
  }

  void loop() {
    for (;;) {
      spin_until([&] { return queued_.load(std::memory_order_acquire) > 0; });
      std::shared_ptr<job> j;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        j = std::move(queue_.front());
        queue_.pop_front();
        queued_.fetch_sub(1, std::memory_order_relaxed);
      }
      j->work();
    }
  }

  std::atomic<int> threads_{1};
  std::atomic<int> queued_{0};  // queue_.size(), read without the lock by spinning workers
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<job>> queue_;
  std::vector<std::thread> workers_;
};

}  // namespace

void set_num_threads(int n) {
  pool::get().set_threads(n);
}

int get_num_threads() {
  return pool::get().threads();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int threads = get_num_threads();
  // A few chunks per thread so that uneven rows still balance; never below the grain.
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(threads) * 4);
  if (threads <= 1 || chunks <= 1) {
    fn(0, n);
    return;
  }
  auto j = std::make_shared<job>();
  j->fn = &fn;
  j->n = n;
  j->chunk = (n + chunks - 1) / chunks;
  j->chunks = (n + j->chunk - 1) / j->chunk;
  const int helpers = static_cast<int>(std::min<int64_t>(threads - 1, j->chunks - 1));
  pool::get().run(j, helpers);
}

}  // namespace ssmkit::cpu
