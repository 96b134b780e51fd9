#include "core/spin_barrier.h"

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "core/error.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace llmopt {
namespace {

static_assert(std::atomic<uint32_t>::is_always_lock_free && sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "the futex word is the atomic's own storage");

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Sleeps while *word == expected (returns at once when it already differs; spurious returns are
// fine, the caller loops).
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
  (void)word, (void)expected;
  std::this_thread::yield();
#endif
}

void futex_wake_all(std::atomic<uint32_t>* word) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}

}  // namespace

int64_t SpinBarrier::default_spin_ns() {
  static const int64_t ns = [] {
    const char* env = std::getenv("LLMOPT_BARRIER_SPIN_US");
    if (env == nullptr || *env == '\0') return kDefaultSpinNs;
    char* end = nullptr;
    const long us = std::strtol(env, &end, 10);
    LLMOPT_CHECK_INPUT(end && *end == '\0' && us >= 0 && us <= 10'000'000,
                       "[threads] LLMOPT_BARRIER_SPIN_US='{}': expected microseconds, 0 to 10000000", env);
    return static_cast<int64_t>(us) * 1000;
  }();
  return ns;
}

void SpinBarrier::wait(int n) {
  if (n <= 1) return;
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<uint32_t>(n)) {
    // Last to arrive: reset for the next round before anyone can see the new generation.
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_seq_cst);
    // Pairs with the sleeper's increment then re-check (both sequentially consistent): either it
    // sees the new generation and does not sleep, or this load sees it and wakes it.
    if (sleepers_.load(std::memory_order_seq_cst) != 0) futex_wake_all(&generation_);
    return;
  }
  // Spin: check the generation every pause, the clock every 64 pauses (a vDSO call, ~20 ns).
  if (spin_ns_ > 0) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (generation_.load(std::memory_order_acquire) != gen) return;
        cpu_relax();
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
  }
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  bool slept = false;
  while (generation_.load(std::memory_order_seq_cst) == gen) {
    futex_wait(&generation_, gen);
    slept = true;
  }
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
  if (slept) sleeps_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace llmopt
