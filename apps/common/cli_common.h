// Command-line pieces shared by `llmopt` and `llmopt-native` (the torch-free binary that runs
// `generate` and `bench` on the CPU engine, src/infer). Nothing here includes torch.
//
// `llmopt generate|bench` on the CPU execs `llmopt-native` from its own directory when it is
// there (see maybe_exec_native), so that decoding runs in a process without libtorch: its code
// and operator registries alone keep ~155 MiB resident. Both binaries declare these commands
// with the functions below, so their options, checks and output are the same.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "infer/generate.h"
#include "infer/sampling.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::cli {

struct GlobalOptions {
  int threads = 0;  // 0 = default (LLMOPT_THREADS or all cores)
  bool quiet = false;
  int exit_code = 0;
};

// Writes pretty JSON to `path` atomically ('-' = stdout).
void write_json_output(const std::string& path, const nlohmann::json& j);
std::string human_bytes(double b);
// --bos / --no-bos / the tokenizer's own default, in that order of precedence.
bool resolve_add_bos(bool force_bos, bool no_bos, const tok::Tokenizer& tk);
// A model file's tokenizer, or a tokenizer file given directly as MODEL, or --tokenizer.
std::unique_ptr<tok::Tokenizer> load_tokenizer_for(const std::string& model, const std::string& tokenizer);

// Which engine runs generate/bench: "auto" (native on the CPU, torch elsewhere), "native", "torch".
enum class Engine { Native, Torch };
// InputError (exit 2) for an unknown name, or native asked for a device other than the CPU.
Engine resolve_engine(const std::string& engine, const std::string& device);

struct GenerateArgs {
  std::string model, tokenizer, prompt, device = "cpu", engine = "auto";
  std::string json_out;  // --json OUT ('-' = stdout instead of the streamed text)
  infer::SamplingOptions so;
  bool no_bos = false;
  // The model's context length (max_position_embeddings), set by the caller once the model is
  // loaded: prompt + generated tokens stop there. 0 = no limit known.
  int64_t context_length = 0;
};
CLI::App* add_generate_command(CLI::App& app, GenerateArgs& a);
// Encodes the prompt, streams (or collects) the pieces `gen` produces, prints text or JSON.
using GenerateFn = std::function<std::vector<int64_t>(const std::vector<int64_t>& prompt,
                                                      const infer::SamplingOptions& so,
                                                      const std::function<bool(int64_t)>& on_token)>;
void run_generate(GenerateArgs& a, const tok::Tokenizer& tk, const GenerateFn& gen);
void run_generate_native(GenerateArgs& a);

struct BenchArgs {
  std::string model, tokenizer, json_out, device = "cpu", engine = "auto";
  infer::BenchOptions bo;
};
CLI::App* add_bench_command(CLI::App& app, BenchArgs& a);
void report_bench(const BenchArgs& a, const infer::BenchResult& r);
void run_bench_native(const BenchArgs& a, bool quiet);

// Called first in main(): when argv asks for generate/bench on the native engine (no --engine
// torch, no --device other than cpu) and `native_name` sits next to this executable, replaces
// the process with it (same arguments); returns otherwise, and when the exec fails.
void maybe_exec_native(int argc, char** argv, const char* native_name);

// The global options of both binaries (--version, --threads, -q) on `app`, and logging set up
// (before parsing, so that subcommand callbacks can log).
void add_global_options(CLI::App& app, GlobalOptions& g, int argc, char** argv);

// Parses argv and runs the chosen subcommand, mapping exceptions to exit codes (DESIGN.md): help
// and version 0, usage errors and InputError 2, any other exception 1 (printed by `describe`
// when it returns true for it, e.g. torch's errors without their backtrace). Returns the code.
int run_cli(CLI::App& app, int argc, char** argv, const GlobalOptions& g,
            const std::function<bool(const std::exception&)>& describe = {});

// libgomp's spin count: see main.cpp. Sets GOMP_SPINCOUNT and re-executes once unless the user
// chose an OpenMP wait policy; returns when no re-exec happened.
void set_spin_and_reexec(char** argv);

}  // namespace llmopt::cli
