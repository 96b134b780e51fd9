// Writes the fake sweep run of fake_run_dir.h into DIR and renders its reports; the browser test
// (tests/pipeline/report_chromium.sh) then opens DIR/report.html in headless Chromium.
#include <cstdio>
#include <exception>

#include "pipeline/report/report.h"
#include "tests/pipeline/report/fake_run_dir.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  try {
    namespace t = llmopt::pipeline::report::testing;
    t::write_run_dir(argv[1], t::sweep_run_metrics());
    // A tiny artifact so that the artifact link and its size are rendered too.
    t::write_text(std::filesystem::path(argv[1]) / "sweep/000-bits=2-group_size=32/artifacts/model.safetensors",
                  std::string(4096, 'x'));
    llmopt::pipeline::report::write_reports(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
