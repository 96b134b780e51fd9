// Quantized-weight kernels with int8 activations (kernels/gemm_quant.h) next to the f32-activation
// GEMV (kernels/gemv.h): weight GB/s and GOP/s (2 ops per weight and activation row) per kernel.
//
//   build/bench/gemm_quant_bench --benchmark_counters_tabular=true
//
// Shapes are those of the 134M benchmark model (dim 768, FFN 2048). GEMV "cold" cases rotate over
// copies of W totalling 256 MB (decode streams every weight from DRAM); GEMM cases use m = 128
// activation rows (prefill(128)) on one copy. best_* counters use the fastest iteration (the
// machine is shared); the others the mean.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"
#include "kernels/gemm_quant.h"
#include "kernels/gemv.h"
#include "kernels/quant_formats.h"
#include "kernels/repack.h"

namespace {
using llmopt::DType;
namespace k = llmopt::kernels;

constexpr DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K};

// Random codes with finite f16 steps (every byte random, then the step fields overwritten).
std::vector<uint8_t> make_weights(DType t, int64_t count) {
  std::vector<uint8_t> w(static_cast<size_t>(llmopt::dtype_bytes_for(t, count)));
  std::mt19937 rng(1);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  const uint16_t h = llmopt::f32_to_f16(0.01f);
  const int64_t bb = llmopt::dtype_block_bytes(t), blocks = count / llmopt::dtype_block_elems(t);
  for (int64_t i = 0; i < blocks; ++i) {
    uint8_t* p = w.data() + i * bb;
    if (t == DType::Q4_K) {
      std::memcpy(p, &h, 2), std::memcpy(p + 2, &h, 2);
    } else if (t == DType::Q6_K) {
      std::memcpy(p + bb - 2, &h, 2);
    } else {
      std::memcpy(p, &h, 2);
    }
  }
  return w;
}

class Fastest {
 public:
  void start() { t0_ = std::chrono::steady_clock::now(); }
  void stop() { best_ = std::min(best_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count()); }
  double s() const { return best_; }

 private:
  std::chrono::steady_clock::time_point t0_;
  double best_ = 1e30;
};

void counters(benchmark::State& state, double bytes, double ops, const Fastest& f) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GOP/s"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["best_GB/s"] = bytes * 1e-9 / f.s();
  state.counters["best_GOP/s"] = ops * 1e-9 / f.s();
}

// Args: type index, path (0: f32 activations, kernels::gemv; 1: int8, gemv_act_q8; 2: int8 on
// the row-interleaved form, gemv_repacked, Q4_0/Q4_K), n, k, threads.
void BM_QuantGemv(benchmark::State& state) {
  const DType t = kTypes[state.range(0)];
  const bool int8 = state.range(1) != 0, repacked = state.range(1) == 2;
  const int64_t n = state.range(2), kk = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  const int64_t bytes = repacked ? k::repacked_bytes(t, n, kk) : llmopt::dtype_bytes_for(t, n * kk);
  const int64_t copies = std::max<int64_t>(1, (int64_t{256} << 20) / bytes);
  auto w = make_weights(t, n * kk * copies);
  if (repacked) {
    const auto blocks = w;
    w.resize(static_cast<size_t>(bytes * copies));
    for (int64_t c = 0; c < copies; ++c)
      k::repack_rows(t, blocks.data() + c * llmopt::dtype_bytes_for(t, n * kk), w.data() + c * bytes, n, kk);
  }
  std::vector<float> x(kk), y(n);
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  for (auto& v : x) v = dist(rng);
  Fastest f;
  int64_t c = 0;
  for (auto _ : state) {
    f.start();
    const uint8_t* wc = w.data() + c * bytes;
    if (repacked)
      k::gemv_repacked(t, wc, x.data(), nullptr, y.data(), n, kk, threads);
    else if (int8)
      k::gemv_act_q8(t, wc, x.data(), nullptr, y.data(), n, kk, threads);
    else
      k::gemv(t, wc, x.data(), nullptr, y.data(), n, kk, threads);
    benchmark::DoNotOptimize(y.data());
    f.stop();
    c = (c + 1) % copies;
  }
  counters(state, static_cast<double>(bytes), 2.0 * n * kk, f);
  state.SetLabel(std::string(llmopt::dtype_name(t)) + (repacked ? " int8-act repacked" : int8 ? " int8-act" : " f32-act"));
}

// Args: type index, path (0: gemv_batch in groups of 8 rows, f32 activations; 1: gemm_quant),
// m, n, k, threads.
void BM_QuantGemm(benchmark::State& state) {
  const DType t = kTypes[state.range(0)];
  const bool int8 = state.range(1) != 0;
  const int64_t m = state.range(2), n = state.range(3), kk = state.range(4);
  const int threads = static_cast<int>(state.range(5));
  const auto w = make_weights(t, n * kk);
  std::vector<float> x(m * kk), y(m * n);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  for (auto& v : x) v = dist(rng);
  Fastest f;
  for (auto _ : state) {
    f.start();
    if (int8) {
      k::gemm_quant(t, w.data(), x.data(), nullptr, y.data(), m, n, kk, threads);
    } else {
      for (int64_t r = 0; r < m; r += k::kMaxGemvBatch)
        k::gemv_batch(t, w.data(), x.data() + r * kk, nullptr, y.data() + r * n,
                      std::min<int64_t>(k::kMaxGemvBatch, m - r), n, kk, threads);
    }
    benchmark::DoNotOptimize(y.data());
    f.stop();
  }
  counters(state, static_cast<double>(w.size()), 2.0 * m * n * kk, f);
  state.SetLabel(std::string(llmopt::dtype_name(t)) + (int8 ? " gemm_quant" : " gemv_batch x8"));
}

void GemvArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "int8", "n", "k", "thr"});
  for (int t = 0; t < 4; ++t)
    for (int path : {0, 1, 2}) {
      if (path == 2 && kTypes[t] != DType::Q4_0 && kTypes[t] != DType::Q4_K) continue;
      for (int thr : {1, 2}) b->Args({t, path, 2048, 768, thr}), b->Args({t, path, 768, 2048, thr});
    }
}

void GemmArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"type", "int8", "m", "n", "k", "thr"});
  for (int t = 0; t < 4; ++t)
    for (int thr : {1, 2}) {
      b->Args({t, 1, 128, 2048, 768, thr});
      b->Args({t, 1, 128, 768, 2048, thr});
    }
  for (int t = 0; t < 2; ++t) b->Args({t, 0, 128, 2048, 768, 1});
}

BENCHMARK(BM_QuantGemv)->Apply(GemvArgs)->UseRealTime();
BENCHMARK(BM_QuantGemm)->Apply(GemmArgs)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
