// Fake run directories for the report tests: metrics.json, manifest.json and
// config.resolved.yaml as the pipeline writes them (schema in src/pipeline/report/run_record.h),
// with hand-picked numbers whose deltas and Pareto fronts are known.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace llmopt::pipeline::report::testing {

// A fresh empty directory under the system temp dir, unique per call; removed when the process
// exits unless the environment sets LLMOPT_KEEP_TEST_DIRS.
std::filesystem::path make_temp_dir(const std::string& tag);

void write_text(const std::filesystem::path& path, const std::string& text);
std::string read_text(const std::filesystem::path& path);

nlohmann::json stage_json(int index, const std::string& name, const std::string& type,
                          const std::string& status, double wall_s, double peak_rss_bytes,
                          nlohmann::json metrics = nlohmann::json::object(),
                          nlohmann::json artifacts = nlohmann::json::array());

nlohmann::json default_manifest();
std::string default_recipe();

// baseline evaluate (ppl 10, 4 MiB) -> quantize -> evaluate "q4" (ppl 10.5, 1.25 MiB) -> export.
nlohmann::json simple_run_metrics();
// baseline ok, quantize failed with an error, the rest skipped; run status "failed".
nlohmann::json failed_run_metrics();
// Shared baseline (ppl 10, 4 MiB, 100 tok/s) and 4 sweep points:
//   bits=2,group_size=32   ppl 14.0  0.75 MiB 180 tok/s   front
//   bits=3,group_size=32   ppl 11.0  1.00 MiB 170 tok/s   front
//   bits=4,group_size=32   ppl 10.3  1.25 MiB 160 tok/s   front
//   bits=4,group_size=128  ppl 10.5  1.30 MiB 158 tok/s   dominated by bits=4,group_size=32
// so the size front is bits=2, bits=3, bits=4/32, baseline (ascending size).
nlohmann::json sweep_run_metrics();

// Writes metrics.json, and manifest.json / config.resolved.yaml when given.
void write_run_dir(const std::filesystem::path& dir, const nlohmann::json& metrics,
                   const std::optional<nlohmann::json>& manifest = default_manifest(),
                   const std::optional<std::string>& recipe = default_recipe());

}  // namespace llmopt::pipeline::report::testing
