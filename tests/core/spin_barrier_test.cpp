// core/spin_barrier.h: no thread leaves a round before every thread has arrived, and what each
// wrote before the barrier is what the others read after it, on the spinning path, the sleeping
// path (spin bound 0) and with more threads than cores (waiters preempted mid-round).
#include "core/spin_barrier.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace llmopt {
namespace {

// `threads` workers run `rounds` rounds. In round r worker w writes slot w = r * threads + w (a
// plain store), meets the barrier, reads every slot and checks each holds round r's value, then
// meets the barrier again before anyone overwrites a slot. The expected values are written down
// from the round number alone, not from what the barrier produced. A barrier that lets a thread
// through early shows as a slot still holding round r - 1 (or already round r + 1).
int64_t run_rounds(SpinBarrier& barrier, int threads, int rounds) {
  std::vector<int64_t> slot(static_cast<size_t>(threads), -1);
  std::atomic<int64_t> wrong{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w) {
    workers.emplace_back([&, w] {
      for (int r = 0; r < rounds; ++r) {
        slot[static_cast<size_t>(w)] = static_cast<int64_t>(r) * threads + w;
        barrier.wait(threads);
        for (int o = 0; o < threads; ++o)
          if (slot[static_cast<size_t>(o)] != static_cast<int64_t>(r) * threads + o) wrong.fetch_add(1);
        barrier.wait(threads);
      }
    });
  }
  for (auto& t : workers) t.join();
  return wrong.load();
}

TEST(SpinBarrier, SpinningPathKeepsRoundsApart) {
  SpinBarrier barrier(SpinBarrier::kDefaultSpinNs);
  EXPECT_EQ(run_rounds(barrier, 2, 20000), 0);
}

// Spin bound 0: every waiter goes to the futex at once, so the wake-up path carries the rounds.
TEST(SpinBarrier, SleepingPathKeepsRoundsApart) {
  SpinBarrier barrier(0);
  EXPECT_EQ(run_rounds(barrier, 2, 5000), 0);
  EXPECT_GT(barrier.sleeps(), 0u) << "with a zero spin bound some waits must have slept";
}

// More threads than this machine's cores: waiters are preempted inside a round and sleepers are
// woken by a thread that arrived after they went to sleep.
TEST(SpinBarrier, OversubscribedThreads) {
  const int threads = static_cast<int>(std::max(4u, 2 * std::thread::hardware_concurrency()));
  SpinBarrier spinning(2000), sleeping(0);
  EXPECT_EQ(run_rounds(spinning, threads, 2000), 0);
  EXPECT_EQ(run_rounds(sleeping, threads, 2000), 0);
}

TEST(SpinBarrier, SingleThreadReturnsAtOnce) {
  SpinBarrier barrier(0);
  for (int i = 0; i < 10; ++i) barrier.wait(1);
  barrier.wait(0);
  EXPECT_EQ(barrier.sleeps(), 0u);
}

// Inside an OpenMP team, as the decode step uses it: the team's size is whatever OpenMP gave.
// Each thread adds its id to a shared sum in phase 1; after the barrier every thread must read
// the complete sum n (n - 1) / 2, computed here from n alone.
TEST(SpinBarrier, OpenMpTeam) {
  SpinBarrier barrier;
  std::atomic<int64_t> wrong{0};
  for (int round = 0; round < 200; ++round) {
    std::atomic<int64_t> sum{0};
#pragma omp parallel num_threads(3)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      sum.fetch_add(t, std::memory_order_relaxed);
      barrier.wait(nt);
      if (sum.load(std::memory_order_relaxed) != static_cast<int64_t>(nt) * (nt - 1) / 2) wrong.fetch_add(1);
      barrier.wait(nt);
    }
  }
  EXPECT_EQ(wrong.load(), 0);
}

}  // namespace
}  // namespace llmopt
