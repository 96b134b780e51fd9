#include "infer/blas.h"

#include <dlfcn.h>

#include <mutex>

#include "core/error.h"
#include "core/threads.h"

namespace llmopt::infer {
namespace {

// The CBLAS ABI (cblas.h): enum values and the sgemm signature.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);
using SetThreads = void (*)(int);

struct Blas {
  CblasSgemm gemm = nullptr;
  SetThreads set_threads = nullptr;
  int threads = -1;
  std::mutex mu;
};

Blas& blas() {
  static Blas* b = [] {
    auto* r = new Blas;
    for (const char* name : {"libopenblas.so.0", "libblas.so.3"}) {
      void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) continue;
      r->gemm = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
      if (r->gemm == nullptr) continue;
      r->set_threads = reinterpret_cast<SetThreads>(dlsym(h, "openblas_set_num_threads"));
      return r;
    }
    throw_run("[infer] no CBLAS library could be loaded (looked for libopenblas.so.0, libblas.so.3): install "
              "Debian's libopenblas0-pthread");
  }();
  return *b;
}

}  // namespace

void sgemm(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  Blas& b = blas();
  if (b.set_threads != nullptr) {
    std::lock_guard<std::mutex> lock(b.mu);
    if (b.threads != threads()) b.set_threads(b.threads = threads());
  }
  b.gemm(kRowMajor, kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(M), static_cast<int>(N),
         static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta, C,
         static_cast<int>(ldc));
}

}  // namespace llmopt::infer
