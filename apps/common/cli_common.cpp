#include "apps/common/cli_common.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/threads.h"
#include "infer/llama_cpu.h"
#include "io/atomic_file.h"

namespace llmopt::cli {
namespace fs = std::filesystem;
using nlohmann::json;

void write_json_output(const std::string& path, const json& j) {
  const std::string text = j.dump(2) + "\n";
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    io::write_file_atomic(path, text);
  }
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.2f} {}", b, units[u]);
}

bool resolve_add_bos(bool force_bos, bool no_bos, const tok::Tokenizer& tk) {
  LLMOPT_CHECK_INPUT(!(force_bos && no_bos), "[cli] --bos and --no-bos exclude each other");
  return force_bos ? true : (no_bos ? false : tk.add_bos_default());
}

std::unique_ptr<tok::Tokenizer> load_tokenizer_for(const std::string& model, const std::string& tokenizer) {
  if (!tokenizer.empty()) return tok::load_tokenizer_file(tokenizer);
  LLMOPT_CHECK_INPUT(fs::exists(model), "[tokenize] {}: no such file or directory", model);
  if (fs::is_directory(model)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const auto p = fs::path(model) / name;
      if (fs::exists(p)) return tok::load_tokenizer_file(p.string());
    }
    throw_input("[tokenize] {}: directory has no tokenizer.json or tokenizer.model", model);
  }
  // A file: GGUF (model or vocab-only), tokenizer.json, tokenizer.model, llama2.c tokenizer.bin.
  return tok::load_tokenizer_file(model);
}

Engine resolve_engine(const std::string& engine, const std::string& device) {
  const bool cpu = device == "cpu";
  if (engine == "auto") return cpu ? Engine::Native : Engine::Torch;
  if (engine == "torch") return Engine::Torch;
  LLMOPT_CHECK_INPUT(engine == "native", "[cli] unknown --engine '{}' (valid: auto, native, torch)", engine);
  LLMOPT_CHECK_INPUT(cpu, "[cli] --engine native runs on the CPU only, not on --device {} (use --engine torch)",
                     device);
  return Engine::Native;
}

namespace {
void add_engine_options(CLI::App* cmd, std::string& device, std::string& engine) {
  cmd->add_option("--device", device, "Where the model runs: cpu (default), cuda, cuda:N (CUDA builds)");
  cmd->add_option("--engine", engine,
                  "auto (default: native on the CPU, torch elsewhere) | native (torch-free CPU engine) | torch");
}
}  // namespace

// ---------------------------------------------------------------- generate
CLI::App* add_generate_command(CLI::App& app, GenerateArgs& a) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt");
  a.so.max_new_tokens = 128;
  add_engine_options(cmd, a.device, a.engine);
  cmd->add_option("MODEL", a.model, "Model path")->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer file (llama2.c models)");
  cmd->add_option("--prompt,-p", a.prompt, "Prompt text")->required();
  cmd->add_option("-n,--n-predict", a.so.max_new_tokens,
                  "Tokens to generate; generation stops at the model's context length (prompt included), "
                  "with a warning on stderr")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temp", a.so.temperature, "Temperature (0 = greedy)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a.so.top_k, "Top-k (0 = off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a.so.top_p, "Top-p (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", a.so.seed, "Sampling seed");
  cmd->add_flag("--no-bos", a.no_bos, "Do not add BOS to the prompt");
  cmd->add_option("--json", a.json_out, "Write a JSON object (ids, text) here ('-' = stdout, instead of the text)");
  return cmd;
}

void run_generate(GenerateArgs& a, const tok::Tokenizer& tk, const GenerateFn& gen) {
  tok::EncodeOptions eo;
  eo.add_bos = !a.no_bos;
  auto ids32 = tk.encode(a.prompt, eo);
  std::vector<int64_t> ids(ids32.begin(), ids32.end());
  a.so.stop_token = tk.eos_id();
  const int64_t prompt_len = static_cast<int64_t>(ids.size());
  if (a.context_length > 0 && a.so.max_new_tokens > 0) {
    LLMOPT_CHECK_INPUT(prompt_len < a.context_length,
                       "[generate] --prompt is {} tokens: the model's context length {} leaves no room to generate",
                       prompt_len, a.context_length);
    if (prompt_len + a.so.max_new_tokens > a.context_length) {
      const int64_t room = a.context_length - prompt_len;
      log::warn("[generate] -n {}: stopping after {} tokens, at the model's context length {} ({} prompt tokens)",
                a.so.max_new_tokens, room, a.context_length, prompt_len);
      a.so.max_new_tokens = room;
    }
  }
  const bool stream = a.json_out != "-";
  std::string generated;
  if (stream) {
    std::fputs(a.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  auto out = gen(ids, a.so, [&](int64_t id) {
    if (id == a.so.stop_token) return false;
    const std::string piece = tk.decode_token(static_cast<int32_t>(id));
    generated += piece;
    if (stream) {
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (stream) std::fputs("\n", stdout);
  if (!a.json_out.empty()) {
    write_json_output(a.json_out, {{"prompt", a.prompt}, {"prompt_ids", ids}, {"ids", out}, {"text", generated}});
  }
}

void run_generate_native(GenerateArgs& a) {
  resolve_engine(a.engine, a.device);
  auto lm = infer::load_cpu_model(a.model, a.tokenizer);
  LLMOPT_CHECK_INPUT(lm.tokenizer != nullptr, "[model] {}: no tokenizer found with the model (give --tokenizer FILE)",
                     a.model);
  a.context_length = lm.model->config().max_position_embeddings;
  run_generate(a, *lm.tokenizer, [&](const std::vector<int64_t>& ids, const infer::SamplingOptions& so,
                                     const std::function<bool(int64_t)>& on_token) {
    return infer::generate(*lm.model, ids, so, on_token);
  });
}

// ---------------------------------------------------------------- bench
CLI::App* add_bench_command(CLI::App& app, BenchArgs& a) {
  auto* cmd = app.add_subcommand("bench", "Prefill and decode speed, memory");
  a.bo.prompt_tokens = 128;
  a.bo.gen_tokens = 64;
  a.bo.repetitions = 3;
  add_engine_options(cmd, a.device, a.engine);
  cmd->add_option("MODEL", a.model, "Model path")->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer file (unused for timing)");
  cmd->add_option("-p,--prompt-tokens", a.bo.prompt_tokens, "Prefill tokens (0 = skip)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--gen-tokens", a.bo.gen_tokens, "Decode tokens (0 = skip)")->check(CLI::NonNegativeNumber);
  cmd->add_option("-r,--repetitions", a.bo.repetitions, "Measured repetitions")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", a.bo.warmup, "Warm-up repetitions")->check(CLI::NonNegativeNumber);
  cmd->add_option("--json", a.json_out, "Write JSON results here ('-' = stdout)");
  return cmd;
}

void report_bench(const BenchArgs& a, const infer::BenchResult& r) {
  json j = {{"model", a.model},
            {"device", a.device},
            {"engine", r.engine},
            {"pp_tokens", a.bo.prompt_tokens},
            {"tg_tokens", a.bo.gen_tokens},
            {"repetitions", a.bo.repetitions},
            {"pp_tok_s", r.pp_tok_s},
            {"pp_tok_s_sd", r.pp_tok_s_sd},
            {"tg_tok_s", r.tg_tok_s},
            {"tg_tok_s_sd", r.tg_tok_s_sd},
            {"threads", r.threads},
            {"model_bytes", r.model_bytes},
            {"kv_cache_bytes", r.kv_cache_bytes},
            {"peak_rss_bytes", r.peak_rss_bytes}};
  if (!a.json_out.empty()) write_json_output(a.json_out, j);
  if (a.json_out != "-") {
    std::printf("engine %s  threads %lld  pp%lld %.1f ± %.1f tok/s  tg%lld %.2f ± %.2f tok/s\n", r.engine.c_str(),
                (long long)r.threads, (long long)a.bo.prompt_tokens, r.pp_tok_s, r.pp_tok_s_sd,
                (long long)a.bo.gen_tokens, r.tg_tok_s, r.tg_tok_s_sd);
    std::printf("model %s  kv cache %s  peak RSS %s (%.3f x model+kv)\n", human_bytes(r.model_bytes).c_str(),
                human_bytes(r.kv_cache_bytes).c_str(), human_bytes(r.peak_rss_bytes).c_str(),
                static_cast<double>(r.peak_rss_bytes) / static_cast<double>(r.model_bytes + r.kv_cache_bytes));
  }
}

void run_bench_native(const BenchArgs& a, bool quiet) {
  resolve_engine(a.engine, a.device);
  auto lm = infer::load_cpu_model(a.model, a.tokenizer);
  Progress progress(Progress::detect(quiet));
  progress.begin_stage("", 0, 0, "bench");
  auto r = infer::run_bench(*lm.model, a.bo, [&](const std::string& what, int64_t rep, int64_t total) {
    progress.update(rep, total, what);
  });
  progress.end_stage();
  report_bench(a, r);
}

void add_global_options(CLI::App& app, GlobalOptions& g, int argc, char** argv) {
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads, -q) may follow the subcommand
  app.set_version_flag("--version", std::string(LLMOPT_VERSION) + " (" LLMOPT_GIT_COMMIT ")");
  // --help shows every option's default (DESIGN.md); subcommands inherit this when added.
  app.option_defaults()->always_capture_default();
  app.add_option("-t,--threads", g.threads, "Threads (the default 0: LLMOPT_THREADS if set, else all cores)")
      ->check(CLI::PositiveNumber);
  app.add_flag("-q,--quiet", g.quiet, "Only warnings and errors on stderr");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-q" || a == "--quiet") g.quiet = true;
  }
  log::init(g.quiet);
}

int run_cli(CLI::App& app, int argc, char** argv, const GlobalOptions& g,
            const std::function<bool(const std::exception&)>& describe) {
  try {
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
  } catch (const std::exception& e) {
    if (!describe || !describe(e)) std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

// ---------------------------------------------------------------- process set-up
namespace {
bool want_spin() {
  return std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr &&
         std::getenv("LLMOPT_NO_REEXEC") == nullptr;
}
void set_spin_env() {
  setenv("GOMP_SPINCOUNT", "300", 1);
  setenv("LLMOPT_NO_REEXEC", "1", 1);
}
}  // namespace

void set_spin_and_reexec(char** argv) {
  if (!want_spin()) return;
  set_spin_env();
  execv("/proc/self/exe", argv);  // returns only on failure; then carry on as we are
}

void maybe_exec_native(int argc, char** argv, const char* native_name) {
  int i = 1;
  while (i < argc) {  // global options before the subcommand
    const std::string s = argv[i];
    if (s == "--threads" || s == "-t") {
      i += 2;
    } else if (s.rfind("--threads=", 0) == 0 || (s.rfind("-t", 0) == 0 && s.size() > 2) || s == "-q" ||
               s == "--quiet") {
      ++i;
    } else {
      break;
    }
  }
  if (i >= argc) return;
  const std::string cmd = argv[i];
  if (cmd != "generate" && cmd != "bench") return;
  std::string device = "cpu", engine = "auto";
  for (int j = i + 1; j < argc; ++j) {
    const std::string s = argv[j];
    if (s == "--device" && j + 1 < argc) device = argv[j + 1];
    if (s.rfind("--device=", 0) == 0) device = s.substr(9);
    if (s == "--engine" && j + 1 < argc) engine = argv[j + 1];
    if (s.rfind("--engine=", 0) == 0) engine = s.substr(9);
    if (s == "--adapter" || s.rfind("--adapter=", 0) == 0) return;  // adapters run on the torch engine
  }
  if (engine == "torch" || device != "cpu") return;
  std::error_code ec;
  const auto self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return;
  const auto native = self.parent_path() / native_name;
  if (access(native.c_str(), X_OK) != 0) return;
  if (want_spin()) set_spin_env();
  execv(native.c_str(), argv);
}

}  // namespace llmopt::cli
