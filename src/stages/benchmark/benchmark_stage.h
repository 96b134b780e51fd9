// `benchmark`: prefill and decode speed of the pipeline's current model over a grid of devices ×
// thread counts × batch sizes × context (prompt) lengths, with time to first token, per-token decode
// latency percentiles (p50/p90/p99), peak memory and model bytes. Every grid point runs the loop
// of `llmopt bench` (infer::run_bench) on the engine `llmopt bench` would pick, so the figures are
// the same measurement. Leaves the model unchanged.
//
// Devices: "cpu" runs the engine `llmopt bench` picks on the CPU (auto: native when it can);
// "cuda" / "cuda:N" runs the torch engine with the model moved to that device for the stage (and
// back afterwards), as `llmopt bench --device cuda` does (model/device.h: CUDA builds only). A
// device this build or machine cannot reach is an InputError (exit 2) at validation, before
// anything runs, unless `unavailable_devices: skip`: then it is left out and recorded as
// skipped (text metric `skipped@<device>` with the reason; the report's table says "skipped").
//
// Metrics: per grid point `<figure>@t<T>_b<B>_c<C>` on the CPU and `<figure>@<device>_t<T>_b<B>_c<C>`
// on other devices (pp_tok_s, tg_tok_s, ttft_s, latency_p50_s, latency_p90_s, latency_p99_s,
// peak_rss_bytes, kv_cache_bytes), plus model_bytes, grid_points, engine (and `engine@<device>`
// for devices after the first) and the first point's figures without suffix (pp_tok_s, ...). The
// whole grid is also written to artifacts/benchmark.json (one record per point, with its device,
// and the skipped devices).
#pragma once
#include <string>
#include <vector>

#include "stages/options.h"
#include "stages/stage.h"

namespace llmopt::stages {

struct BenchmarkOptions {
  std::vector<std::string> devices = {"cpu"};
  std::string unavailable_devices = "error";
  std::vector<int64_t> threads = {};       // empty = the run's thread count
  std::vector<int64_t> batch_sizes = {1};
  std::vector<int64_t> context_lengths = {64};
  int64_t gen_tokens = 32;
  int64_t repetitions = 3;
  int64_t warmup = 1;
  std::string engine = "auto";

  static void describe(Schema<BenchmarkOptions>& s) {
    s.field("devices", &BenchmarkOptions::devices,
            "Devices to measure: cpu, cuda, cuda:N (CUDA: the torch engine, in CUDA builds with a visible GPU)");
    s.field("unavailable_devices", &BenchmarkOptions::unavailable_devices,
            "A device this build or machine lacks (cuda without CUDA): error (exit 2 before the run) or skip "
            "(recorded as skipped in the metrics and the report)")
        .choices({"error", "skip"});
    s.field("threads", &BenchmarkOptions::threads, "Thread counts to measure (empty = the run's --threads)");
    s.field("batch_sizes", &BenchmarkOptions::batch_sizes,
            "Sequences per step (each with its own KV cache, run one after the other: the CPU engines have "
            "no batched kernels); tok/s count all sequences' tokens");
    s.field("context_lengths", &BenchmarkOptions::context_lengths,
            "Prompt lengths prefilled (tokens; at most the model's context); time to first token = the prefill");
    s.field("gen_tokens", &BenchmarkOptions::gen_tokens, "Tokens decoded per sequence (per-token latencies)")
        .range(1, 1 << 20);
    s.field("repetitions", &BenchmarkOptions::repetitions, "Measured repetitions per grid point (mean reported)")
        .range(1, 1000);
    s.field("warmup", &BenchmarkOptions::warmup, "Unmeasured repetitions first").range(0, 100);
    s.field("engine", &BenchmarkOptions::engine,
            "auto (native on the CPU when every projection is dense, ggml blocks, int-N or NF4 and no prompt "
            "adapter is attached; torch otherwise), native, torch")
        .choices({"auto", "native", "torch"});
  }
};

class BenchmarkStage : public Stage {
 public:
  using Options = BenchmarkOptions;
  static constexpr const char* kType = "benchmark";
  static constexpr const char* kDoc =
      "Prefill/decode tok/s over devices x threads x batch sizes x context lengths, time to first token, latency "
      "percentiles, peak memory";

  explicit BenchmarkStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }

 private:
  Options o_;
};

}  // namespace llmopt::stages
