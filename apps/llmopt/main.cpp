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
  // libgomp's threads spin-wait 300k iterations after each parallel region by default; with
  // OpenBLAS's own pthreads alternating with them (prefill) the spinning threads starve the
  // working ones (134M model, 2 cores: prefill 150 tok/s spinning vs 513 with a short spin),
  // while never spinning costs decode a wake-up per GEMV (35 vs 53 tok/s). A spin count of 30k
  // serves both. libgomp reads it once at load time, so set it and re-execute ourselves once.
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr &&
      std::getenv("LLMOPT_NO_REEXEC") == nullptr) {
    setenv("GOMP_SPINCOUNT", "30000", 1);
    setenv("LLMOPT_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);  // returns only on failure; then carry on as we are
  }
  cli::GlobalOptions g;
  CLI::App app{"llmopt: make language models smaller, faster or better adapted, and measure the cost"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads, -q) may follow the subcommand
  app.set_version_flag("--version", std::string(LLMOPT_VERSION) + " (" LLMOPT_GIT_COMMIT ")");
  app.add_option("--threads", g.threads, "Threads (default: LLMOPT_THREADS or all cores)")
      ->check(CLI::PositiveNumber);
  app.add_flag("-q,--quiet", g.quiet, "Only warnings and errors on stderr");
  // Logging is set up before parsing so that subcommand callbacks can log.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-q" || a == "--quiet") g.quiet = true;
  }
  log::init(g.quiet);
  try {
    cli::register_model_commands(app, g);
    cli::register_pipeline_commands(app, g);
    app.parse(argc, argv);
    return g.exit_code;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  } catch (const InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
