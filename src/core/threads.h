// Thread count policy: all cores by default; LLMOPT_THREADS or --threads N override.
#pragma once

namespace llmopt {

// Threads to use when the user did not say: LLMOPT_THREADS if set, else hardware concurrency.
int default_threads();
// Sets the thread count for OpenMP (our kernels) and for the BLAS library when it is OpenBLAS
// (found at run time; its own default is every core), and records it; torch layers also call
// torch::set_num_threads with it.
void set_threads(int n);
// Sets the thread count of the calling thread only (OpenMP's per-thread setting and the value
// threads() returns on this thread), without touching process-wide state: what concurrent workers
// (parallel sweep points) call, so that they do not race on it.
void set_threads_for_this_thread(int n);
// The calling thread's count if it set one, else the count last set by set_threads
// (default_threads() before any call).
int threads();

}  // namespace llmopt
