#include "stages/benchmark/benchmark_stage.h"

#include <fmt/format.h>

#include <filesystem>

#include "core/memory.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "io/atomic_file.h"
#include "model/torch_engine.h"

namespace llmopt::stages {

void BenchmarkStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[benchmark] no model to benchmark");
  LLMOPT_CHECK_INPUT(!o_.batch_sizes.empty(), "[benchmark] batch_sizes is empty (e.g. batch_sizes: [1, 4])");
  LLMOPT_CHECK_INPUT(!o_.context_lengths.empty(), "[benchmark] context_lengths is empty (e.g. context_lengths: [64, 256])");
  for (int64_t b : o_.batch_sizes)
    LLMOPT_CHECK_INPUT(b >= 1 && b <= 4096, "[benchmark] batch_sizes: {} is out of range [1, 4096]", b);
  for (int64_t t : o_.threads) LLMOPT_CHECK_INPUT(t >= 1 && t <= 1024, "[benchmark] threads: {} is out of range [1, 1024]", t);
  const int64_t max_ctx = state.model->config().max_position_embeddings;
  for (int64_t c : o_.context_lengths) {
    LLMOPT_CHECK_INPUT(c >= 1 && (max_ctx <= 0 || c <= max_ctx),
                       "[benchmark] context_lengths: {} is out of range [1, {}] (the model's max_position_embeddings)", c,
                       max_ctx);
  }
  LLMOPT_CHECK_INPUT(max_ctx <= 0 || o_.gen_tokens + 1 <= max_ctx,
                     "[benchmark] gen_tokens {} does not fit the model's context {}", o_.gen_tokens, max_ctx);
}

StageResult BenchmarkStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  StageResult result;
  auto engine = model::make_engine(state.model, o_.engine);
  const int previous_threads = threads();
  const std::vector<int64_t> thread_counts =
      o_.threads.empty() ? std::vector<int64_t>{previous_threads} : o_.threads;
  nlohmann::json grid = nlohmann::json::array();
  const int64_t total = static_cast<int64_t>(thread_counts.size() * o_.batch_sizes.size() * o_.context_lengths.size());
  int64_t done = 0;
  for (int64_t t : thread_counts) {
    set_threads(static_cast<int>(t));
    for (int64_t b : o_.batch_sizes) {
      for (int64_t c : o_.context_lengths) {
        const std::string suffix = fmt::format("@t{}_b{}_c{}", t, b, c);
        if (ctx.note) ctx.note(suffix.substr(1));
        ctx.report(done, total, "pt");
        infer::BenchOptions bo;
        bo.prompt_tokens = c;
        bo.gen_tokens = o_.gen_tokens;
        bo.repetitions = o_.repetitions;
        bo.warmup = o_.warmup;
        bo.batch = b;
        bo.seed = ctx.seed;
        // The loop of `llmopt bench` (infer::run_bench_loop): the same timers for every figure.
        const infer::BenchResult r = infer::run_bench(*engine, bo);
        const nlohmann::json point = {
            {"threads", t},
            {"batch", b},
            {"context", c},
            {"gen_tokens", o_.gen_tokens},
            {"pp_tok_s", r.pp_tok_s},
            {"pp_tok_s_sd", r.pp_tok_s_sd},
            {"tg_tok_s", r.tg_tok_s},
            {"tg_tok_s_sd", r.tg_tok_s_sd},
            {"ttft_s", r.ttft_s},
            {"latency_p50_s", infer::percentile(r.decode_step_s, 50)},
            {"latency_p90_s", infer::percentile(r.decode_step_s, 90)},
            {"latency_p99_s", infer::percentile(r.decode_step_s, 99)},
            {"latency_samples", r.decode_step_s.size()},
            {"peak_rss_bytes", r.peak_rss_bytes},
            {"kv_cache_bytes", r.kv_cache_bytes}};
        for (const char* k : {"pp_tok_s", "tg_tok_s", "ttft_s", "latency_p50_s", "latency_p90_s", "latency_p99_s",
                              "peak_rss_bytes", "kv_cache_bytes"}) {
          result.metrics[k + suffix] = point[k];
          if (grid.empty()) result.metrics[k] = point[k];  // the first grid point, unsuffixed
        }
        grid.push_back(point);
        ++done;
      }
    }
  }
  set_threads(previous_threads);
  result.metrics["engine"] = engine->name();
  result.metrics["model_bytes"] = state.model->storage_bytes();
  result.metrics["grid_points"] = static_cast<int64_t>(grid.size());
  const std::string rel = "artifacts/benchmark.json";
  io::AtomicFile f((std::filesystem::path(ctx.artifacts_dir) / "benchmark.json").string());
  f.write(nlohmann::json({{"engine", engine->name()}, {"model_bytes", state.model->storage_bytes()}, {"grid", grid}})
              .dump(2) +
          "\n");
  f.commit();
  result.artifacts.push_back(rel);
  return result;
}

}  // namespace llmopt::stages
