#include "tests/pipeline/report/fake_run_dir.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace llmopt::pipeline::report::testing {
namespace {

using nlohmann::json;
constexpr double kMiB = 1024.0 * 1024.0;

json eval_metrics(double perplexity, double model_bytes, double tg_tok_s, bool vs_baseline) {
  json metrics = {{"perplexity", perplexity},
                  {"nll_mean", std::log(perplexity)},
                  {"tokens", 4096},
                  {"model_bytes", model_bytes},
                  {"pp_tok_s", tg_tok_s * 8},
                  {"tg_tok_s", tg_tok_s},
                  {"peak_rss_bytes", model_bytes + 20 * kMiB}};
  if (vs_baseline) {
    // KLD grows with the perplexity gap; values only need to be plausible and distinct.
    metrics["kld_mean"] = (perplexity - 10.0) * 0.01;
    metrics["kld_p99"] = (perplexity - 10.0) * 0.12;
    metrics["top1_agreement"] = 1.0 - (perplexity - 10.0) * 0.02;
  }
  return metrics;
}

json sweep_point(int number, int bits, int group_size, double perplexity, double model_bytes,
                 double tg_tok_s) {
  const std::string name = "bits=" + std::to_string(bits) + ",group_size=" + std::to_string(group_size);
  char dir[96];
  std::snprintf(dir, sizeof dir, "sweep/%03d-bits=%d-group_size=%d", number, bits, group_size);
  return {{"name", name},
          {"dir", dir},
          {"overrides", {{"pipeline.1.bits", bits}, {"pipeline.1.group_size", group_size}}},
          {"status", "ok"},
          {"stages",
           json::array({stage_json(1, "quantize", "quantize", "ok", 2.5 + bits, 180 * kMiB,
                                   {{"model_bytes", model_bytes}}, {"artifacts/model.safetensors"}),
                        stage_json(2, "evaluate", "evaluate", "ok", 4.0, 60 * kMiB,
                                   eval_metrics(perplexity, model_bytes, tg_tok_s, true))})}};
}

}  // namespace

std::filesystem::path make_temp_dir(const std::string& tag) {
  // Removed at exit unless LLMOPT_KEEP_TEST_DIRS is set (to look at the rendered reports).
  static std::vector<std::filesystem::path> created;
  static const bool cleanup_registered = [] {
    std::atexit([] {
      if (std::getenv("LLMOPT_KEEP_TEST_DIRS")) return;
      std::error_code ec;
      for (const auto& dir : created) std::filesystem::remove_all(dir, ec);
    });
    return true;
  }();
  (void)cleanup_registered;
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("llmopt-report-" + tag + "-" + std::to_string(getpid()) + "-" +
                    std::to_string(counter++));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  created.push_back(dir);
  return dir;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json stage_json(int index, const std::string& name, const std::string& type,
                const std::string& status, double wall_s, double peak_rss_bytes, json metrics,
                json artifacts) {
  return {{"index", index},       {"name", name},
          {"type", type},         {"status", status},
          {"wall_s", wall_s},     {"peak_rss_bytes", peak_rss_bytes},
          {"metrics", metrics},   {"artifacts", artifacts}};
}

json default_manifest() {
  return {{"llmopt_version", "0.1.0"},
          {"git_commit", "4a6cc49"},
          {"build_type", "Release"},
          {"seed", 0},
          {"threads", 2},
          {"cpu_model", "Test CPU @ 2.0GHz"},
          {"start_time", "2026-11-26T10:00:00Z"},
          {"end_time", "2026-11-26T10:01:30Z"},
          {"inputs",
           json::array({{{"path", "../shared/models/stories260K/stories260K.bin"},
                         {"sha256", "0123456789abcdef"},
                         {"size", 1185376}}})}};
}

std::string default_recipe() {
  return "seed: 0\n"
         "model: {path: ../shared/models/stories260K/stories260K.bin}\n"
         "pipeline:\n"
         "  - {type: evaluate, name: baseline, metrics: [perplexity, speed, memory]}\n"
         "  - {type: quantize, method: gptq, bits: 4, group_size: 32}\n"
         "  - {type: evaluate, name: q4, metrics: [perplexity, kld, speed, memory]}\n"
         "  - {type: export, formats: [gguf]}\n";
}

json simple_run_metrics() {
  return {{"run", {{"name", "gptq-q4"}, {"dir", "runs/gptq-q4"}, {"status", "ok"}}},
          {"stages",
           json::array({stage_json(0, "baseline", "evaluate", "ok", 3.2, 64 * kMiB,
                                   eval_metrics(10.0, 4 * kMiB, 100, false)),
                        stage_json(1, "quantize", "quantize", "ok", 12.5, 200 * kMiB,
                                   {{"model_bytes", 1.25 * kMiB}}),
                        stage_json(2, "q4", "evaluate", "ok", 3.0, 40 * kMiB,
                                   eval_metrics(10.5, 1.25 * kMiB, 160, true)),
                        stage_json(3, "export", "export", "ok", 0.4, 30 * kMiB, json::object(),
                                   {"artifacts/model.gguf"})})}};
}

json failed_run_metrics() {
  return {{"run", {{"name", "gptq-broken"}, {"dir", "runs/gptq-broken"}, {"status", "failed"}}},
          {"stages",
           json::array({stage_json(0, "baseline", "evaluate", "ok", 3.2, 64 * kMiB,
                                   eval_metrics(10.0, 4 * kMiB, 100, false)),
                        [] {
                          json stage = stage_json(1, "quantize", "quantize", "failed", 0.7,
                                                  90 * kMiB);
                          stage["error"] =
                              "[gptq] layer 3: Hessian is not positive definite (damp 0.01)";
                          return stage;
                        }(),
                        stage_json(2, "q4", "evaluate", "skipped", 0, 0),
                        stage_json(3, "export", "export", "skipped", 0, 0)})}};
}

json sweep_run_metrics() {
  return {{"run", {{"name", "gptq-sweep"}, {"dir", "runs/gptq-sweep"}, {"status", "ok"}}},
          {"stages", json::array({stage_json(0, "baseline", "evaluate", "ok", 3.2, 64 * kMiB,
                                             eval_metrics(10.0, 4 * kMiB, 100, false))})},
          {"sweep", json::array({sweep_point(0, 2, 32, 14.0, 0.75 * kMiB, 180),
                                 sweep_point(1, 3, 32, 11.0, 1.0 * kMiB, 170),
                                 sweep_point(2, 4, 32, 10.3, 1.25 * kMiB, 160),
                                 sweep_point(3, 4, 128, 10.5, 1.3 * kMiB, 158)})}};
}

void write_run_dir(const std::filesystem::path& dir, const json& metrics,
                   const std::optional<json>& manifest, const std::optional<std::string>& recipe) {
  std::filesystem::create_directories(dir / "artifacts");
  write_text(dir / "metrics.json", metrics.dump(2));
  if (manifest) write_text(dir / "manifest.json", manifest->dump(2));
  if (recipe) write_text(dir / "config.resolved.yaml", *recipe);
  write_text(dir / "events.jsonl", "{\"event\":\"run_start\"}\n");
}

}  // namespace llmopt::pipeline::report::testing
