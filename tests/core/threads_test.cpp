// Thread-count policy (core/threads.h): a per-thread count for concurrent workers.
#include "core/threads.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <thread>
#include <vector>

namespace llmopt {
namespace {

// Parallel sweep points each set their own count: every worker must see its own value (and
// OpenMP's), not the last one another worker wrote.
TEST(Threads, PerThreadCountDoesNotLeakAcrossThreads) {
  set_threads(3);
  std::vector<int> seen(4, 0), seen_omp(4, 0);
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([w, &seen, &seen_omp] {
      set_threads_for_this_thread(w + 1);
      for (int i = 0; i < 1000; ++i) std::this_thread::yield();
      seen[w] = threads();
      seen_omp[w] = omp_get_max_threads();
    });
  }
  for (auto& t : workers) t.join();
  for (int w = 0; w < 4; ++w) {
    EXPECT_EQ(seen[w], w + 1) << "worker " << w;
    EXPECT_EQ(seen_omp[w], w + 1) << "worker " << w;
  }
  EXPECT_EQ(threads(), 3);  // the process-wide count is untouched
  set_threads_for_this_thread(5);
  EXPECT_EQ(threads(), 5);
  set_threads(2);  // a process-wide set also resets this thread's own count
  EXPECT_EQ(threads(), 2);
}

}  // namespace
}  // namespace llmopt
