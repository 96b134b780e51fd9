#include "stages/benchmark/benchmark_stage.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/threads.h"
#include "infer/generate.h"
#include "io/atomic_file.h"
#include "model/device.h"
#include "model/torch_engine.h"

namespace llmopt::stages {
namespace {

// The devices that run and those skipped as unavailable (with why). InputError for a malformed
// or repeated name, native asked off the CPU, and an unavailable device unless
// unavailable_devices: skip.
struct DevicePlan {
  std::vector<std::string> run;
  std::vector<std::pair<std::string, std::string>> skipped;
};

bool well_formed_device(const std::string& d) {
  if (d == "cpu" || d == "cuda") return true;
  return d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() <= 8 &&
         d.find_first_not_of("0123456789", 5) == std::string::npos;
}

DevicePlan plan_devices(const BenchmarkOptions& o) {
  LLMOPT_CHECK_INPUT(!o.devices.empty(), "[benchmark] devices is empty (e.g. devices: [cpu] or devices: [cpu, cuda])");
  DevicePlan plan;
  std::vector<std::string> seen;
  for (const std::string& d : o.devices) {
    LLMOPT_CHECK_INPUT(well_formed_device(d), "[benchmark] devices: unknown device '{}' (valid: cpu, cuda, cuda:N)", d);
    LLMOPT_CHECK_INPUT(std::find(seen.begin(), seen.end(), d) == seen.end(), "[benchmark] devices: '{}' is listed twice",
                       d);
    seen.push_back(d);
    if (d == "cpu") {
      plan.run.push_back(d);
      continue;
    }
    LLMOPT_CHECK_INPUT(o.engine != "native",
                       "[benchmark] devices: '{}' runs on the torch engine, but engine is native (the native engine "
                       "runs on the CPU only; use engine: auto or torch)",
                       d);
    std::string why;
    try {
      (void)model::parse_device(d);  // the check `llmopt bench --device` makes: build, then visible GPUs
    } catch (const InputError& e) {
      why = e.what();
      if (why.rfind("[device] ", 0) == 0) why = why.substr(9);
    }
    if (why.empty()) {
      plan.run.push_back(d);
    } else {
      LLMOPT_CHECK_INPUT(o.unavailable_devices == "skip",
                         "[benchmark] devices: '{}' is not available: CUDA is not available in this build/machine "
                         "({}). Remove it from devices, or set unavailable_devices: skip to record it as skipped",
                         d, why);
      plan.skipped.emplace_back(d, why);
    }
  }
  return plan;
}

// Moves the model to `dev` for the guard's lifetime (the pipeline's model lives on the CPU).
class ModelOnDevice {
 public:
  ModelOnDevice(model::LlamaModel& m, torch::Device dev) : m_(m), home_(m.device()) {
    if (dev != home_) {
      m_.to(dev);
      moved_ = true;
    }
  }
  ~ModelOnDevice() {
    if (moved_) m_.to(home_);
  }
  ModelOnDevice(const ModelOnDevice&) = delete;
  ModelOnDevice& operator=(const ModelOnDevice&) = delete;

 private:
  model::LlamaModel& m_;
  torch::Device home_;
  bool moved_ = false;
};

}  // namespace

void BenchmarkStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[benchmark] no model to benchmark");
  (void)plan_devices(o_);
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
  const DevicePlan plan = plan_devices(o_);
  const int previous_threads = threads();
  const std::vector<int64_t> thread_counts =
      o_.threads.empty() ? std::vector<int64_t>{previous_threads} : o_.threads;
  nlohmann::json grid = nlohmann::json::array();
  nlohmann::json engines = nlohmann::json::object();
  const int64_t total = static_cast<int64_t>(plan.run.size() * thread_counts.size() * o_.batch_sizes.size() *
                                             o_.context_lengths.size());
  int64_t done = 0;
  for (const std::string& device : plan.run) {
    // CPU: the engine `llmopt bench` picks (auto: native when it can). Elsewhere: the torch engine
    // on the model moved there for this device's points (and back after).
    ModelOnDevice on_device(*state.model, model::parse_device(device));
    auto engine = model::make_engine(state.model, device == "cpu" ? o_.engine : std::string("torch"));
    engines[device] = engine->name();
    if (engines.size() == 1)
      result.metrics["engine"] = engine->name();
    else
      result.metrics["engine@" + device] = engine->name();
    const std::string prefix = device == "cpu" ? "" : device + "_";
    for (int64_t t : thread_counts) {
      set_threads(static_cast<int>(t));
      for (int64_t b : o_.batch_sizes) {
        for (int64_t c : o_.context_lengths) {
          const std::string suffix = fmt::format("@{}t{}_b{}_c{}", prefix, t, b, c);
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
              {"device", device},
              {"engine", engine->name()},
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
  }
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& [device, why] : plan.skipped) {
    log::warn("[benchmark] devices: '{}' skipped (unavailable_devices: skip): {}", device, why);
    result.metrics["skipped@" + device] = why;
    skipped.push_back({{"device", device}, {"reason", why}});
  }
  result.metrics["model_bytes"] = state.model->storage_bytes();
  result.metrics["grid_points"] = static_cast<int64_t>(grid.size());
  const std::string rel = "artifacts/benchmark.json";
  io::AtomicFile f((std::filesystem::path(ctx.artifacts_dir) / "benchmark.json").string());
  // "engine": the first measured device's (as before devices existed); "engines": every device's.
  nlohmann::json doc = {{"engine", plan.run.empty() ? nlohmann::json() : engines[plan.run.front()]},
                        {"engines", engines},
                        {"model_bytes", state.model->storage_bytes()},
                        {"grid", grid},
                        {"skipped", skipped}};
  f.write(doc.dump(2) + "\n");
  f.commit();
  result.artifacts.push_back(rel);
  return result;
}

}  // namespace llmopt::stages
