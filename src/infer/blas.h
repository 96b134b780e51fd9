// Single-precision GEMM for the torch-free CPU engine, through the system's OpenBLAS loaded at run
// time (dlopen RTLD_LOCAL: libopenblas.so.0, else any CBLAS libblas.so.3). Loading it locally
// keeps its symbols from interposing on the BLAS that libtorch binds to (PyPI's libtorch carries
// MKL), and in a process that already has OpenBLAS (Debian's libtorch) returns that same copy
// instead of a second thread pool. Its thread count follows llmopt::threads().
#pragma once
#include <cstdint>

namespace llmopt::infer {

// C[M×N] = alpha · A[M×K] · op(B) + beta · C, row-major with leading dimensions lda, ldb, ldc;
// op(B) = Bᵀ with B stored [N×K] when trans_b, else B [K×N]. Throws RunError naming the libraries
// it looked for when no CBLAS library can be loaded.
void sgemm(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace llmopt::infer
