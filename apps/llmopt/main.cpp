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
  // while never spinning cost decode a wake-up per GEMV (35 vs 53 tok/s) before the decode step
  // met at its own spin-then-sleep barriers (core/spin_barrier.h). A short spin (300) now serves
  // both: on the loaded 2-core VM LoRA training ran 2.1-2.4x faster than with 30k (81/79/156 vs
  // 191/166/334 tok/s, alternating) and 2-thread q4_0 decode was unchanged (258/207/173 vs
  // 234/183/233 tok/s; bench/RESULTS.md 2026-11-30 15:45). libgomp reads it once at load time, so
  // set it and re-execute ourselves once.
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
