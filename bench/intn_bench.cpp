// Int-N and NF4 GEMV (kernels/intn.h, kernels/nf4.h) next to ggml Q4_0/Q8_0 (kernels/gemv.h) on
// the 134M synth shape's FFN projection (2048 x 768) and a 768 x 768 one: weight GB/s (bytes as
// stored, scales and zeros included) and GFLOP/s, one decode row (m = 1) and m = 8; BM_DecodeRows:
// the native engine's decode rows (kernels/gemv_intn.h) on the FFN shape.
//
//   build/bench/intn_bench --benchmark_counters_tabular=true --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/gemv.h"
#include "kernels/gemv_intn.h"
#include "kernels/intn.h"
#include "kernels/nf4.h"
#include "kernels/quant_formats.h"

namespace {
using namespace llmopt;

std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& e : v) e = d(rng);
  return v;
}

void report(benchmark::State& st, double weight_bytes, int64_t n, int64_t k, int64_t m) {
  st.counters["GB/s"] = benchmark::Counter(weight_bytes, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * k * m, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["bpw"] = 8.0 * weight_bytes / static_cast<double>(n * k);
}

// Args: n, k, m, bits, group (-1 row), sym.
void BM_IntN(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1), m = st.range(2);
  const auto w = random_values(n * k, 1);
  const auto s = kernels::intn_quantize(w.data(), n, k, static_cast<int>(st.range(3)), st.range(4), st.range(5) != 0);
  const auto x = random_values(m * k, 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  const auto v = s.view();
  for (auto _ : st) {
    kernels::intn_gemv(v, x.data(), nullptr, y.data(), m);
    benchmark::DoNotOptimize(y.data());
  }
  report(st, static_cast<double>(s.codes.size() + 2 * s.scales.size() + s.zeros.size()), n, k, m);
}

// Args: n, k, m, double_quant.
void BM_NF4(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1), m = st.range(2);
  const auto w = random_values(n * k, 1);
  const auto s = kernels::nf4_quantize(w.data(), n, k, st.range(3) != 0);
  const auto x = random_values(m * k, 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  const auto v = s.view();
  for (auto _ : st) {
    kernels::nf4_gemv(v, x.data(), nullptr, y.data(), m);
    benchmark::DoNotOptimize(y.data());
  }
  report(st, v.bits_per_weight() * static_cast<double>(n * k) / 8.0, n, k, m);
}

// The native engine's decode rows (kernels/gemv_intn.h), one thread, m = 1. Args: n, k, bits,
// group, sym (bits 0: NF4, group 1: double quant).
void BM_DecodeRows(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1);
  const int bits = static_cast<int>(st.range(2));
  const auto w = random_values(n * k, 1);
  const auto x = random_values(k, 2);
  std::vector<float> y(static_cast<size_t>(n));
  if (bits == 0) {
    const auto s = kernels::nf4_quantize(w.data(), n, k, st.range(3) != 0);
    const auto v = s.view();
    for (auto _ : st) {
      kernels::nf4_gemv_rows(v, x.data(), nullptr, y.data(), 0, n);
      benchmark::DoNotOptimize(y.data());
    }
    report(st, v.bits_per_weight() * static_cast<double>(n * k) / 8.0, n, k, 1);
    return;
  }
  const auto s = kernels::intn_quantize(w.data(), n, k, bits, st.range(3), st.range(4) != 0);
  const auto v = s.view();
  for (auto _ : st) {
    kernels::intn_gemv_rows(v, x.data(), nullptr, y.data(), 0, n);
    benchmark::DoNotOptimize(y.data());
  }
  report(st, static_cast<double>(s.codes.size() + 2 * s.scales.size() + s.zeros.size()), n, k, 1);
}

// Args: n, k, m, dtype (as int).
void BM_Ggml(benchmark::State& st) {
  const int64_t n = st.range(0), k = st.range(1), m = st.range(2);
  const auto t = static_cast<DType>(st.range(3));
  const auto w = random_values(n * k, 1);
  std::vector<uint8_t> blocks(static_cast<size_t>(dtype_bytes_for(t, n * k)));
  kernels::quantize_row_ref(t, w.data(), blocks.data(), n * k);
  const auto x = random_values(m * k, 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (auto _ : st) {
    kernels::gemv_batch(t, blocks.data(), x.data(), nullptr, y.data(), m, n, k);
    benchmark::DoNotOptimize(y.data());
  }
  report(st, static_cast<double>(blocks.size()), n, k, m);
}

void shapes(benchmark::internal::Benchmark* b, std::vector<std::vector<int64_t>> extra) {
  for (auto nk : std::vector<std::pair<int64_t, int64_t>>{{2048, 768}, {768, 768}})
    for (int64_t m : {1, 8})
      for (const auto& e : extra) {
        std::vector<int64_t> args = {nk.first, nk.second, m};
        args.insert(args.end(), e.begin(), e.end());
        b->Args(args);
      }
}

BENCHMARK(BM_IntN)->Apply([](auto* b) { shapes(b, {{4, 128, 1}, {4, 128, 0}, {8, -1, 1}, {3, 64, 0}, {2, 32, 0}}); });
BENCHMARK(BM_NF4)->Apply([](auto* b) { shapes(b, {{0}, {1}}); });
BENCHMARK(BM_DecodeRows)->Apply([](auto* b) {
  for (const auto& a : std::vector<std::vector<int64_t>>{
           {4, 128, 1}, {4, 128, 0}, {4, 32, 1}, {8, -1, 1}, {3, 64, 0}, {0, 0}, {0, 1}}) {
    std::vector<int64_t> args = {2048, 768};
    args.insert(args.end(), a.begin(), a.end());
    if (args.size() < 5) args.push_back(0);
    b->Args(args);
  }
});
BENCHMARK(BM_Ggml)->Apply([](auto* b) {
  shapes(b, {{static_cast<int64_t>(DType::Q4_0)}, {static_cast<int64_t>(DType::Q8_0)}});
});

}  // namespace
