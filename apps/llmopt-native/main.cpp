// llmopt-native: `generate` and `bench` on the torch-free CPU engine (src/infer), in a process
// that never loads libtorch. `llmopt generate|bench` execs it when the run is on the CPU (see
// apps/common/cli_common.h); it can also be run directly. Same options, output and exit codes
// (0 ok, 1 failure while running, 2 bad input) as llmopt.
#include <CLI/CLI.hpp>

#include "apps/common/cli_common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"

int main(int argc, char** argv) {
  using namespace llmopt;
  cli::set_spin_and_reexec(argv);
  cli::GlobalOptions g;
  CLI::App app{"llmopt-native: generate and bench on llmopt's torch-free CPU engine"};
  cli::add_global_options(app, g, argc, argv);
  static cli::GenerateArgs gen;
  static cli::BenchArgs bench;
  auto threads = [&] { set_threads(g.threads > 0 ? g.threads : default_threads()); };
  cli::add_generate_command(app, gen)->callback([&] {
    threads();
    cli::run_generate_native(gen);
  });
  cli::add_bench_command(app, bench)->callback([&] {
    threads();
    cli::run_bench_native(bench, g.quiet);
  });
  return cli::run_cli(app, argc, argv, g);
}
