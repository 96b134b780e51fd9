// llmopt command-line entry point: parses arguments, calls the library, maps exceptions to exit
// codes (0 ok, 1 failure while running, 2 bad input: usage, config, unreadable or malformed file).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "apps/llmopt/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/threads.h"

namespace llmopt::cli {
void apply_threads(const GlobalOptions& g) {
  const int n = g.threads > 0 ? g.threads : default_threads();
  set_threads(n);
  torch::set_num_threads(n);
}
}  // namespace llmopt::cli

int main(int argc, char** argv) {
  using namespace llmopt;
  // generate/bench on the CPU run in llmopt-native, a process without libtorch (cli_common.h).
  cli::maybe_exec_native(argc, argv, "llmopt-native");
  // libgomp's threads spin-wait 300k iterations after each parallel region by default; with
  // OpenBLAS's own pthreads alternating with them (prefill) the spinning threads starve the
  // working ones (134M model, 2 cores: prefill 150 tok/s spinning vs 513 with a short spin),
  // while never spinning costs decode a wake-up per GEMV (35 vs 53 tok/s). A spin count of 30k
  // serves both. libgomp reads it once at load time, so set it and re-execute ourselves once.
  cli::set_spin_and_reexec(argv);
  cli::GlobalOptions g;
  CLI::App app{"llmopt: make language models smaller, faster or better adapted, and measure the cost"};
  cli::add_global_options(app, g, argc, argv);
  cli::register_model_commands(app, g);
  cli::register_quantize_command(app, g);
  cli::register_finetune_command(app, g);
  cli::register_data_command(app, g);
  cli::register_pipeline_commands(app, g);
  return cli::run_cli(app, argc, argv, g, [](const std::exception& e) {
    if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
      std::fprintf(stderr, "error: %s\n", c10->what_without_backtrace());
      return true;
    }
    return false;
  });
}
