#include "core/threads.h"

#include <dlfcn.h>
#include <omp.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "core/error.h"

namespace llmopt {
namespace {
std::atomic<int> g_threads{0};
thread_local int t_threads = 0;  // set_threads_for_this_thread; 0: follow g_threads
}  // namespace

int default_threads() {
  if (const char* env = std::getenv("LLMOPT_THREADS"); env && *env) {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    LLMOPT_CHECK_INPUT(end && *end == '\0' && n > 0 && n <= 4096,
                       "[threads] LLMOPT_THREADS='{}': expected a positive integer", env);
    return static_cast<int>(n);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}

void set_threads(int n) {
  LLMOPT_CHECK_INPUT(n > 0, "[threads] thread count must be positive, got {}", n);
  g_threads = n;
  t_threads = 0;
  omp_set_num_threads(n);
  // libtorch's GEMMs run on OpenBLAS's own thread pool, sized by OPENBLAS_NUM_THREADS or all
  // cores, not by torch::set_num_threads: keep it at our count too (no-op without OpenBLAS).
  using SetFn = void (*)(int);
  static auto* openblas_set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (openblas_set != nullptr) openblas_set(n);
}

void set_threads_for_this_thread(int n) {
  LLMOPT_CHECK_INPUT(n > 0, "[threads] thread count must be positive, got {}", n);
  t_threads = n;
  omp_set_num_threads(n);  // OpenMP's nthreads-var is per thread
}

int threads() {
  if (t_threads > 0) return t_threads;
  const int n = g_threads.load();
  return n > 0 ? n : default_threads();
}

}  // namespace llmopt
