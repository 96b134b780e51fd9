#include "pipeline/report/report.h"

#include <filesystem>

#include "pipeline/report/atomic_write.h"
#include "pipeline/report/html_report.h"
#include "pipeline/report/markdown_report.h"
#include "pipeline/report/run_record.h"

namespace llmopt::pipeline::report {

void write_reports(const std::string& run_dir) {
  const RunRecord run = load_run(run_dir);
  // Render both before writing either, so a rendering bug cannot leave a half-updated pair.
  const std::string markdown = render_markdown(run);
  const std::string html = render_html(run);
  const std::filesystem::path dir(run_dir);
  write_file_atomically((dir / "report.md").string(), markdown);
  write_file_atomically((dir / "report.html").string(), html);
}

}  // namespace llmopt::pipeline::report
