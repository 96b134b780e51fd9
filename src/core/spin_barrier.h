// A barrier for a fixed group of threads (one OpenMP team) that spins for a short, bounded time
// and then sleeps on a futex. What the fused decode step (infer/decode_step.cpp) meets between
// its phases instead of `#pragma omp barrier`.
//
// Why not OpenMP's barrier: libgomp's waiters spin GOMP_SPINCOUNT times and then sleep, one
// policy for every barrier of the process. On a 2-core machine shared with other processes, a
// team thread regularly loses its core to a neighbour for a scheduler time slice; a partner that
// keeps spinning then holds its own core while the preempted thread waits for one, and a token's
// 60 barriers each pay that (bench/RESULTS.md: 2-thread decode at 8–20 tok/s under load with
// GOMP_SPINCOUNT 30000, 157 tok/s with 0, 400–550 tok/s on a quiet machine). Sleeping soon lets
// the kernel run the preempted thread on the core the waiter left (idle balancing); spinning a
// little first keeps the common case (the partner arrives within microseconds) free of system
// calls. The spin bound is a time, not an iteration count, so it means the same on every CPU.
//
// Memory order: everything a thread wrote before wait() is visible to every thread of the group
// after its wait() returns (the arrivals are acquire-release read-modify-writes on one counter,
// the release is a sequentially consistent store of the generation).
#pragma once

#include <atomic>
#include <cstdint>

namespace llmopt {

class SpinBarrier {
 public:
  // Spin bound of a waiter before it sleeps, in nanoseconds (kDefaultSpinNs unless the
  // environment sets LLMOPT_BARRIER_SPIN_US, read once per process; used to measure the policy).
  static int64_t default_spin_ns();
  static constexpr int64_t kDefaultSpinNs = 20'000;

  explicit SpinBarrier(int64_t spin_ns = default_spin_ns()) : spin_ns_(spin_ns) {}
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;

  // Returns once `n` threads have called wait() for this round; every thread of a round passes
  // the same n. n <= 1 returns at once.
  void wait(int n);

  // Waits that ended in a futex sleep, over all threads and rounds (tests and diagnostics).
  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }

 private:
  alignas(64) std::atomic<uint32_t> arrived_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<uint32_t> sleepers_{0};
  std::atomic<uint64_t> sleeps_{0};
  int64_t spin_ns_;
};

}  // namespace llmopt
