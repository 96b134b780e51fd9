// Run reports: report.md and report.html in a run directory, and the `llmopt compare` table.
// Torch-free: everything is read back from the files the pipeline wrote.
#pragma once
#include <string>
#include <vector>

namespace llmopt::pipeline::report {

// Reads DIR/metrics.json (required), DIR/manifest.json and DIR/config.resolved.yaml (optional)
// and writes DIR/report.md and DIR/report.html, each atomically (temporary file in DIR, then
// rename). Throws InputError when metrics.json is missing or malformed, RunError when a report
// cannot be written.
void write_reports(const std::string& run_dir);

// GitHub-Markdown table comparing runs side by side: one row per run (its last evaluation) or,
// for a sweep run, one row per sweep point; deltas are relative to the first row.
// Throws InputError when `run_dirs` is empty or a directory has no readable metrics.json.
std::string compare_table(const std::vector<std::string>& run_dirs);

}  // namespace llmopt::pipeline::report
