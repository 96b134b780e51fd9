// Model-level subcommands: info, tokenize, generate, eval, bench, synth, convert.
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "apps/llmopt/commands.h"
#include "apps/llmopt/model_io.h"
#include "model/lora_adapter.h"
#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/threads.h"
#include "eval/harness.h"
#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "infer/generate.h"
#include "infer/llama_cpu.h"
#include "io/architecture.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/mapped_file.h"
#include "model/generate.h"
#include "model/loader.h"
#include "model/synth.h"
#include "model/torch_engine.h"
#include "core/progress.h"
#include "apps/llmopt/cmd_onnx.h"

namespace llmopt::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- info
void register_info(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("info", "Architecture, parameter count, per-tensor dtype/format and bytes");
  static std::string model, tokenizer, json_out;
  cmd->add_option("MODEL", model, "Model path (HF dir, .gguf, llama2.c .bin)")->required();
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  cmd->add_option("--json", json_out, "Write JSON here ('-' = stdout)");
  cmd->callback([&g] {
    apply_threads(g);
    io::LoadOptions lo;
    lo.tokenizer_path = tokenizer;
    lo.check_finite = true;
    io::Checkpoint ck = io::load_checkpoint(model, lo);
    const auto& c = ck.config;
    json tensors = json::array();
    json by_dtype = json::object();
    int64_t linear_bytes = 0, linear_weights = 0;  // projection weights (io::arch), as stored
    for (const auto& t : ck.tensors) {
      const auto named = io::arch::parse_hf_name(t.name);
      if (named && !named->bias && io::arch::describe(named->role).linear) {
        linear_bytes += t.nbytes;
        linear_weights += t.numel();
      }
      tensors.push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape},
                         {"params", t.numel()}, {"bytes", t.nbytes}});
      auto& e = by_dtype[std::string(dtype_name(t.dtype))];
      if (e.is_null()) e = {{"tensors", 0}, {"bytes", int64_t{0}}};
      e["tensors"] = e["tensors"].get<int>() + 1;
      e["bytes"] = e["bytes"].get<int64_t>() + t.nbytes;
    }
    json j = {{"path", model},
              {"format", std::string(io::model_format_name(ck.format))},
              {"architecture", c.architecture},
              {"config",
               {{"hidden_size", c.hidden_size},
                {"intermediate_size", c.intermediate_size},
                {"num_hidden_layers", c.num_hidden_layers},
                {"num_attention_heads", c.num_attention_heads},
                {"num_key_value_heads", c.num_key_value_heads},
                {"head_dim", c.head_dim},
                {"vocab_size", c.vocab_size},
                {"max_position_embeddings", c.max_position_embeddings},
                {"rms_norm_eps", c.rms_norm_eps},
                {"rope_theta", c.rope_theta},
                {"rope_scaling", c.rope_scaling.type},
                {"tie_word_embeddings", c.tie_word_embeddings},
                {"attention_bias", c.attention_bias}}},
              {"params", ck.total_params()},
              {"bytes", ck.total_bytes()},
              {"linear_bits_per_weight", linear_weights > 0 ? 8.0 * linear_bytes / linear_weights : 0.0},
              {"dtypes", by_dtype},
              {"tokenizer", ck.tokenizer.path},
              {"tensors", tensors},
              {"metadata", ck.metadata}};
    if (!json_out.empty()) {
      write_json_output(json_out, j);
      if (json_out == "-") return;
    }
    std::printf("model:        %s (%s)\n", model.c_str(), std::string(io::model_format_name(ck.format)).c_str());
    std::printf("architecture: %s\n", c.architecture.c_str());
    std::printf("shape:        dim %lld, layers %lld, heads %lld (kv %lld, head_dim %lld), ffn %lld, vocab %lld\n",
                (long long)c.hidden_size, (long long)c.num_hidden_layers, (long long)c.num_attention_heads,
                (long long)c.num_key_value_heads, (long long)c.head_dim, (long long)c.intermediate_size,
                (long long)c.vocab_size);
    std::printf("rope:         theta %g%s; rms_norm_eps %g; tied embeddings: %s\n", c.rope_theta,
                c.rope_scaling.type == "none" ? "" : (", scaling " + c.rope_scaling.type).c_str(), c.rms_norm_eps,
                c.tie_word_embeddings ? "yes" : "no");
    std::printf("params:       %lld (%.2f M)\n", (long long)ck.total_params(), ck.total_params() / 1e6);
    std::printf("bytes:        %lld (%s)\n", (long long)ck.total_bytes(), human_bytes(ck.total_bytes()).c_str());
    for (auto& [k, v] : by_dtype.items())
      std::printf("  %-6s %4d tensors  %s\n", k.c_str(), v["tensors"].get<int>(),
                  human_bytes(v["bytes"].get<double>()).c_str());
    std::printf("tokenizer:    %s\n", ck.tokenizer.path.empty() ? "(none)" : ck.tokenizer.path.c_str());
    std::printf("tensors:\n");
    for (const auto& t : ck.tensors) {
      std::string shape;
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.shape[i]);
      std::printf("  %-48s %-5s %-16s %s\n", t.name.c_str(), std::string(dtype_name(t.dtype)).c_str(), shape.c_str(),
                  human_bytes(static_cast<double>(t.nbytes)).c_str());
    }
  });
}

// ---------------------------------------------------------------- tokenize
void register_tokenize(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("tokenize", "Token ids (and pieces) of a text");
  static std::string model, tokenizer, text, file;
  static std::string json_out;
  static bool no_bos = false, bos = false, parse_special = false;
  cmd->add_option("MODEL", model, "Model or tokenizer file")->required();
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (overrides the model's)");
  auto* t = cmd->add_option("--text", text, "Text to tokenize");
  auto* f = cmd->add_option("--file", file, "File to tokenize");
  t->excludes(f);
  cmd->add_flag("--no-bos", no_bos, "Do not add BOS");
  cmd->add_flag("--bos", bos, "Add BOS even if the tokenizer does not by default");
  cmd->add_flag("--parse-special", parse_special, "Match special tokens written in the text");
  cmd->add_option("--json", json_out, "Write JSON with ids and pieces here ('-' = stdout, instead of the ids)");
  cmd->callback([&g] {
    apply_threads(g);
    LLMOPT_CHECK_INPUT(!text.empty() || !file.empty(), "[tokenize] give --text or --file");
    auto tk = load_tokenizer_for(model, tokenizer);
    const std::string input = file.empty() ? text : io::read_text_file(file, "tokenize");
    tok::EncodeOptions eo;
    eo.add_bos = resolve_add_bos(bos, no_bos, *tk);
    eo.parse_special = parse_special;
    auto ids = tk->encode(input, eo);
    if (!json_out.empty()) {
      json pieces = json::array();
      for (int32_t id : ids) pieces.push_back(tk->token_piece(id));
      write_json_output(json_out, {{"ids", ids}, {"pieces", pieces}, {"count", ids.size()}});
    }
    if (json_out != "-") {
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      std::cout << line << "\n";
    }
  });
}

// ---------------------------------------------------------------- generate
// Options and output are shared with llmopt-native (apps/common); this binary runs the torch
// engine (--engine torch, --device cuda) and the native one when llmopt-native is not installed.
void register_generate(CLI::App& app, GlobalOptions& g) {
  static GenerateArgs a;
  static std::string adapter;
  auto* cmd = add_generate_command(app, a);
  add_adapter_option(cmd, adapter);
  cmd->callback([&g] {
    apply_threads(g);
    check_adapter_engine(adapter, a.engine);
    if (adapter.empty() && resolve_engine(a.engine, a.device) == Engine::Native && native_engine_reads(a.model, a.engine))
      return run_generate_native(a);
    auto lm = load_for_inference(a.model, a.tokenizer, true, a.device, adapter);
    LLMOPT_CHECK_INPUT(lm.tokenizer != nullptr, "[generate] {}: no tokenizer found (give --tokenizer)", a.model);
    a.context_length = lm.model->config().max_position_embeddings;
    run_generate(a, *lm.tokenizer,
                 [&](const std::vector<int64_t>& ids, const infer::SamplingOptions& so,
                     const std::function<bool(int64_t)>& on_token) {
                   return infer::generate(model::TorchEngine(lm.model), ids, so, on_token);
                 });
  });
}

// ---------------------------------------------------------------- eval
void register_eval(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("eval", "Perplexity (and KL divergence against a baseline); task scores (--tasks)");
  static std::string model, tokenizer, data, protocol = "llamacpp", baseline, json_out;
  static int64_t ctx = 512, stride = 0, limit = 0;
  static bool bos = false, no_bos = false;
  static std::string tasks, tasks_dir, log_samples;
  static int num_fewshot = -1;
  static int64_t batch_size = 16;
  static uint64_t fewshot_seed = 1234;
  static std::string device = "cpu", engine = "auto", adapter;
  static std::string split = "all", trained_on;
  static double held_out = 0;
  static uint64_t split_seed = 1;
  add_device_option(cmd, device);
  add_adapter_option(cmd, adapter);
  cmd->add_option("--engine", engine,
                  "auto (native on the CPU, torch elsewhere) | native (torch-free CPU engine) | torch");
  cmd->add_option("MODEL", model, "Model path (not needed for --tasks list)");
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  cmd->add_option("--data", data, "Text file for perplexity (the default measurement; optional with --tasks)");
  cmd->add_option("--tasks", tasks,
                  "Comma-separated tasks (names of configs/tasks/*.yaml or paths to task YAML files): "
                  "accuracy etc. as lm-evaluation-harness; 'list' prints the known tasks");
  cmd->add_option("--tasks-dir", tasks_dir, "Directory of task YAML files (default: configs/tasks)");
  cmd->add_option("--num-fewshot", num_fewshot, "Few-shot examples per prompt (default: each task's num_fewshot)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--fewshot-seed", fewshot_seed, "Seed of the few-shot example draw")->capture_default_str();
  cmd->add_option("--batch-size", batch_size, "Task requests scored per batch (scores do not depend on it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--split", split,
                  "Task documents scored: all | train | held-out (held-out/train: --held-out N of them drawn with "
                  "--split-seed, or the task's own train_data split; as `llmopt data instruct`)")
      ->capture_default_str();
  cmd->add_option("--held-out", held_out, "--split: documents held out (a count, or a fraction below 1)");
  cmd->add_option("--split-seed", split_seed, "--split: seed of the held-out draw")->capture_default_str();
  cmd->add_option("--trained-on", trained_on,
                  "Instruction jsonl the model was tuned on: a scored document whose prompt is in it is an error");
  cmd->add_option("--log-samples", log_samples, "Write DIR/<task>.jsonl: prompt, choices, scores, prediction per sample");
  cmd->add_option("--ctx,-c", ctx, "Context length")->check(CLI::PositiveNumber);
  cmd->add_option("--protocol", protocol, "llamacpp | windows | sliding");
  cmd->add_option("--stride", stride, "Stride for --protocol sliding (default ctx/2)");
  cmd->add_option("--baseline", baseline, "Baseline model: adds kld_mean, kld_p99, top1_agreement, delta_p_rms");
  cmd->add_option("--limit", limit, "Evaluate at most N chunks/windows (perplexity) or the first N samples of each task");
  cmd->add_flag("--bos", bos,
                "Use BOS (text and llamacpp chunks) even if the tokenizer does not add one by default; with "
                "--tasks, BOS first in every context (lm-eval's add_bos_token; default: no BOS, as lm-eval)");
  cmd->add_flag("--no-bos", no_bos, "Never use BOS (llamacpp chunks then keep their first token)");
  cmd->add_option("--json", json_out, "Write JSON results here ('-' = stdout)");
  cmd->callback([&g] {
    apply_threads(g);
    if (tasks == "list") {
      const std::string dir = eval::find_tasks_dir(tasks_dir);
      for (const auto& name : eval::list_tasks(dir)) std::printf("%s\n", name.c_str());
      return;
    }
    LLMOPT_CHECK_INPUT(!model.empty(), "[eval] MODEL is required");
    LLMOPT_CHECK_INPUT(!data.empty() || !tasks.empty(), "[eval] give --data (perplexity) or --tasks");
    // Task files are checked before the model is loaded (bad input fails fast).
    std::vector<eval::TaskSpec> specs;
    if (!tasks.empty()) {
      const std::string dir = eval::find_tasks_dir(tasks_dir);
      const std::string shared = eval::find_shared_dir(dir);
      std::stringstream ss(tasks);
      std::string name;
      while (std::getline(ss, name, ','))
        if (!name.empty()) specs.push_back(eval::resolve_task(name, dir, shared));
      LLMOPT_CHECK_INPUT(!specs.empty(), "[eval] --tasks '{}' names no task", tasks);
      if (!log_samples.empty()) {
        std::error_code ec;
        fs::create_directories(log_samples, ec);
        LLMOPT_CHECK_INPUT(!ec && fs::is_directory(log_samples), "[eval] --log-samples: cannot create directory '{}'",
                           log_samples);
      }
    }
    eval::PerplexityOptions po;
    po.protocol = eval::parse_protocol(protocol);
    po.ctx = ctx;
    po.stride = stride;
    po.max_chunks = limit;
    // The one inference interface: the native engine on the CPU (auto), torch for --device cuda.
    std::unique_ptr<infer::Engine> eng, base_eng;
    std::shared_ptr<tok::Tokenizer> tk;
    check_adapter_engine(adapter, engine);
    if (adapter.empty() && resolve_engine(engine, device) == Engine::Native && native_engine_reads(model, engine) &&
        (baseline.empty() || native_engine_reads(baseline, engine))) {
      // f32 activations: `eval` reports what the evaluate stage reports for the same model (int8
      // activations are bench/generate's speed path).
      auto lm = infer::load_cpu_model(model, tokenizer);
      lm.model->set_int8_activations(false);
      eng = std::move(lm.model);
      tk = std::move(lm.tokenizer);
      if (!baseline.empty()) {
        auto base = infer::load_cpu_model(baseline, tokenizer).model;
        base->set_int8_activations(false);
        base_eng = std::move(base);
      }
    } else {
      auto lm = load_for_inference(model, tokenizer, true, device, adapter);
      eng = std::make_unique<model::TorchEngine>(lm.model);
      tk = lm.tokenizer;
      if (!baseline.empty())
        base_eng = std::make_unique<model::TorchEngine>(load_for_inference(baseline, tokenizer, true, device).model);
    }
    LLMOPT_CHECK_INPUT(tk != nullptr, "[eval] {}: no tokenizer found (give --tokenizer)", model);
    // Before any window is evaluated (a window of ctx tokens allocates ctx x ctx attention scores).
    const int64_t model_ctx = eng->config().max_position_embeddings;
    LLMOPT_CHECK_INPUT(data.empty() || model_ctx <= 0 || ctx <= model_ctx,
                       "[eval] --ctx {} exceeds the context length of {}: {} (max_position_embeddings)", ctx, model,
                       model_ctx);
    LLMOPT_CHECK_INPUT(!(bos && no_bos), "[eval] --bos and --no-bos exclude each other");
    json tasks_json = json::object();
    if (!specs.empty()) {
      eval::TaskRunOptions to;
      to.num_fewshot = num_fewshot;
      to.limit = limit;
      to.seed = fewshot_seed;
      to.batch_size = batch_size;
      to.add_bos = bos;
      to.log_samples_dir = log_samples;
      to.split.part = eval::parse_split_part(split, "--split");
      to.split.held_out = held_out;
      to.split.seed = split_seed;
      to.trained_on = trained_on;
      Progress progress(Progress::detect(g.quiet));
      for (const auto& spec : specs) {
        progress.begin_stage("", 0, 0, spec.name);
        const auto r = eval::run_task(*eng, *tk, spec, to, [&](int64_t d, int64_t t) { progress.update(d, t, "req"); });
        progress.end_stage();
        tasks_json[r.name] = eval::task_result_json(r);
        if (json_out != "-") std::printf("%s\n", eval::task_result_line(r).c_str());
      }
      if (data.empty()) {
        json j = {{"model", model}, {"engine", eng->name()}, {"threads", threads()}, {"batch_size", batch_size},
                  {"bos", bos}, {"fewshot_seed", fewshot_seed}, {"tasks", tasks_json}};
        if (!json_out.empty()) write_json_output(json_out, j);
        return;
      }
    }
    const std::string text = io::read_text_file(data, "eval");
    std::optional<bool> force_bos;
    if (bos || no_bos) force_bos = bos;
    // BOS as llama-perplexity uses it (src/eval: the rule the evaluate stage applies too).
    const std::vector<int64_t> ids = eval::tokenize_for_perplexity(*tk, text, po, force_bos);
    LLMOPT_CHECK_INPUT(po.protocol != eval::PerplexityProtocol::LlamaCpp || static_cast<int64_t>(ids.size()) >= ctx,
                       "[eval] --ctx {} exceeds the length of {}: {} tokens (the llamacpp protocol needs at least "
                       "one chunk of ctx tokens)",
                       ctx, data, ids.size());
    Progress progress(Progress::detect(g.quiet));
    progress.begin_stage("", 0, 0, "eval");
    auto r = eval::evaluate_perplexity(*eng, ids, po, base_eng.get(),
                                       [&](int64_t d, int64_t t) { progress.update(d, t, "chunks"); });
    progress.end_stage();
    json j = {{"model", model},
              {"data", data},
              {"perplexity", r.perplexity},
              {"nll_mean", r.nll_mean},
              {"nll_sd", r.nll_sd},
              {"text_tokens", ids.size()},
              {"seconds", r.seconds},
              {"threads", threads()}};
    j.update(eval::protocol_json(po, r, *eng));  // protocol, ctx, bos, chunks, tokens, engine
    if (!tasks_json.empty()) j["tasks"] = tasks_json;
    if (r.has_baseline) {
      j["baseline"] = baseline;
      j["baseline_perplexity"] = r.baseline_perplexity;
      j["kld_mean"] = r.kld_mean;
      j["kld_median"] = r.kld_median;
      j["kld_p99"] = r.kld_p99;
      j["kld_max"] = r.kld_max;
      j["top1_agreement"] = r.top1_agreement;
      j["delta_p_rms"] = r.delta_p_rms;
    }
    if (!json_out.empty()) write_json_output(json_out, j);
    if (json_out != "-") {
      std::printf("perplexity %.4f  nll_mean %.5f  tokens %lld  chunks %lld  (%s, ctx %lld, %s, engine %s)\n",
                  r.perplexity, r.nll_mean, (long long)r.tokens, (long long)r.chunks, protocol.c_str(),
                  (long long)ctx, po.bos_id >= 0 ? "bos" : "no bos", eng->name().c_str());
      if (r.has_baseline)
        std::printf("baseline ppl %.4f  kld_mean %.6f  kld_p99 %.6f  top1_agreement %.4f  delta_p_rms %.5f\n",
                    r.baseline_perplexity, r.kld_mean, r.kld_p99, r.top1_agreement, r.delta_p_rms);
    }
  });
}

// ---------------------------------------------------------------- bench
void register_bench(CLI::App& app, GlobalOptions& g) {
  static BenchArgs a;
  static std::string adapter;
  auto* cmd = add_bench_command(app, a);
  add_adapter_option(cmd, adapter);
  cmd->callback([&g] {
    apply_threads(g);
    check_adapter_engine(adapter, a.engine);
    if (adapter.empty() && resolve_engine(a.engine, a.device) == Engine::Native && native_engine_reads(a.model, a.engine))
      return run_bench_native(a, g.quiet);
    auto lm = load_for_inference(a.model, a.tokenizer, /*need_tokenizer=*/false, a.device, adapter);
    Progress progress(Progress::detect(g.quiet));
    progress.begin_stage("", 0, 0, "bench");
    auto r = infer::run_bench(model::TorchEngine(lm.model), a.bo, [&](const std::string& what, int64_t rep, int64_t total) {
      progress.update(rep, total, what);
    });
    progress.end_stage();
    report_bench(a, r);
  });
}

// ---------------------------------------------------------------- synth
void register_synth(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("synth", "Random-weight model of a given shape, written as a HF directory");
  static std::string out, tokenizer, preset, dtype = "f32";
  static ModelConfig c;
  static uint64_t seed = 0;
  static bool tied = false;
  cmd->add_option("OUT", out, "Output directory")->required();
  cmd->add_option("--preset", preset, "tiny | small | bench134m");
  cmd->add_option("--dim", c.hidden_size, "Hidden size");
  cmd->add_option("--layers", c.num_hidden_layers, "Layers");
  cmd->add_option("--heads", c.num_attention_heads, "Attention heads");
  cmd->add_option("--kv-heads", c.num_key_value_heads, "Key/value heads (default = heads)");
  cmd->add_option("--ffn", c.intermediate_size, "FFN hidden size");
  cmd->add_option("--vocab", c.vocab_size, "Vocabulary size (default: the tokenizer's)");
  cmd->add_option("--ctx", c.max_position_embeddings, "Max positions");
  cmd->add_flag("--tied", tied, "Tie the output head to the embedding");
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer to ship with the model (any supported tokenizer file)");
  cmd->add_option("--seed", seed, "Weight seed");
  cmd->add_option("--dtype", dtype, "f32 | f16 | bf16");
  cmd->callback([&g] {
    apply_threads(g);
    ModelConfig cfg = synth_config(preset, c);
    cfg.tie_word_embeddings = tied;
    std::shared_ptr<tok::Tokenizer> tk;
    if (!tokenizer.empty()) {
      tk = tok::load_tokenizer_file(tokenizer);
      if (cfg.vocab_size == 0) cfg.vocab_size = tk->vocab_size();
      LLMOPT_CHECK_INPUT(cfg.vocab_size >= tk->vocab_size(), "[synth] --vocab {} is smaller than the tokenizer's {}",
                         cfg.vocab_size, tk->vocab_size());
    }
    LLMOPT_CHECK_INPUT(cfg.vocab_size > 0, "[synth] give --vocab or --tokenizer");
    cfg.validate("synth options");
    if (!tk) {
      // A model that other tools and `convert --to gguf` accept needs a tokenizer: without one,
      // ship the byte-fallback vocabulary (every text encodes byte by byte).
      LLMOPT_CHECK_INPUT(cfg.vocab_size >= tok::kByteVocabSize,
                         "[synth] --vocab {}: without --tokenizer the model gets a byte-fallback tokenizer, "
                         "which needs --vocab at least {} (or give --tokenizer)",
                         cfg.vocab_size, tok::kByteVocabSize);
      tk = tok::make_tokenizer(tok::byte_fallback_vocab(static_cast<int32_t>(cfg.vocab_size)), "byte-fallback");
      log::info("[synth] no --tokenizer: writing a byte-fallback tokenizer of {} tokens", cfg.vocab_size);
    }
    auto m = model::synth_model(cfg, seed);
    save_model(*m, tk.get(), tokenizer, "hf", parse_float_type(dtype), out);
    int64_t params = 0;
    for (const auto& p : m->parameters()) params += p.numel();
    log::info("[synth] wrote {} ({} params in {} tensors)", out, params, m->parameters().size());
  });
}

// ---------------------------------------------------------------- convert
// `convert ADAPTER_DIR OUT.gguf --to gguf-lora --base MODEL`: a PEFT adapter as llama.cpp's --lora
// reads it (convert_lora_to_gguf.py's counterpart), checked against the base it applies to.
static void convert_adapter_to_gguf(const std::string& adapter, const std::string& base, const std::string& tokenizer,
                                    const std::string& out, const std::string& type) {
  LLMOPT_CHECK_INPUT(!base.empty(), "[convert] --to gguf-lora needs --base MODEL (the model the adapter applies to)");
  LLMOPT_CHECK_INPUT(type == "f32" || type == "f16", "[convert] --to gguf-lora writes f32 or f16, not --type {}", type);
  auto lm = load_for_inference(base, tokenizer, /*need_tokenizer=*/false, "cpu", adapter);
  model::save_gguf_lora_adapter(*lm.model, out, model::gguf_lora_architecture(base), parse_float_type(type));
  log::info("[convert] wrote {} (llama.cpp: --lora {})", out, out);
}

void register_convert(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("convert", "Convert between HF, GGUF and llama2.c at f32/f16/bf16");
  static std::string model, tokenizer, to, type = "f32", out, base;
  cmd->add_option("MODEL", model, "Model path (with --to gguf-lora: the PEFT adapter directory)")->required();
  cmd->add_option("OUT", out, "Output path (directory for hf)")->required();
  cmd->add_option("--to", to, "hf | gguf | llama2c | gguf-lora (a PEFT adapter for llama.cpp's --lora)")->required();
  cmd->add_option("--type", type, "f32 | f16 | bf16 (| q8_0 with --to llama2c: v2 int8 groups of 32)");
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  cmd->add_option("--base", base, "--to gguf-lora: the base model the adapter was trained on (its GGUF's "
                  "architecture is matched; other formats give llmopt's GGUF export layout)");
  cmd->callback([&g] {
    apply_threads(g);
    if (to == "gguf-lora") {
      convert_adapter_to_gguf(model, base, tokenizer, out, type);
      return;
    }
    DType t = DType::F32;
    if (type == "q8_0") {
      LLMOPT_CHECK_INPUT(to == "llama2c", "[convert] --type q8_0 is for --to llama2c (v2 int8); for a q8_0 {} use "
                         "`llmopt quantize MODEL OUT --format q8_0`", to);
      t = DType::Q8_0;
    } else {
      t = parse_float_type(type);
    }
    if (to == "onnx") {
      convert_to_onnx(model, tokenizer, type, out);
      return;
    }
    auto lm = load_for_inference(model, tokenizer, /*need_tokenizer=*/false);
    save_model(*lm.model, lm.tokenizer.get(), lm.tokenizer_path, to, t, out);
    log::info("[convert] wrote {}", out);
  });
  add_onnx_convert_options(cmd);
}


// ---------------------------------------------------------------- logits
// Dumps next-token logits for a prompt (peer checks against transformers / llama.cpp).
void register_logits(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("logits", "Next-token logits of every prompt position as JSON");
  static std::string model, tokenizer, text, ids_csv, json_out = "-";
  static bool bos = false, no_bos = false, full = false;
  static int64_t top = 10;
  static std::string device = "cpu", adapter;
  add_device_option(cmd, device);
  add_adapter_option(cmd, adapter);
  cmd->add_option("MODEL", model, "Model path")->required();
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  auto* t = cmd->add_option("--text", text, "Prompt text");
  auto* i = cmd->add_option("--ids", ids_csv, "Comma-separated token ids instead of text");
  t->excludes(i);
  cmd->add_flag("--bos", bos, "Prepend BOS even if the tokenizer does not by default");
  cmd->add_flag("--no-bos", no_bos, "Never prepend BOS");
  cmd->add_flag("--full", full, "Write every logit (vocab floats per position), not only the top ones");
  cmd->add_option("--top", top, "Top-k logits per position to write");
  cmd->add_option("--json", json_out, "Output file ('-' = stdout, the default)");
  cmd->callback([&g] {
    apply_threads(g);
    auto lm = load_for_inference(model, tokenizer, ids_csv.empty(), device, adapter);
    std::vector<int64_t> ids;
    if (!ids_csv.empty()) {
      std::stringstream ss(ids_csv);
      std::string item;
      while (std::getline(ss, item, ',')) {
        try {
          ids.push_back(std::stoll(item));
        } catch (const std::exception&) {
          throw_input("[logits] --ids: '{}' is not an integer", item);
        }
      }
    } else {
      LLMOPT_CHECK_INPUT(!text.empty(), "[logits] give --text or --ids");
      tok::EncodeOptions eo;
      eo.add_bos = resolve_add_bos(bos, no_bos, *lm.tokenizer);
      auto v = lm.tokenizer->encode(text, eo);
      ids.assign(v.begin(), v.end());
    }
    LLMOPT_CHECK_INPUT(!ids.empty(), "[logits] no tokens");
    for (int64_t id : ids)
      LLMOPT_CHECK_INPUT(id >= 0 && id < lm.model->config().vocab_size, "[logits] token id {} out of range (vocab {})",
                         id, lm.model->config().vocab_size);
    torch::NoGradGuard ng;
    auto logits = lm.model->forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0].to(torch::kCPU).contiguous();
    json positions = json::array();
    for (int64_t p = 0; p < logits.size(0); ++p) {
      auto row = logits[p];
      auto tk = row.topk(std::min<int64_t>(top, row.size(0)));
      json e = {{"position", p},
                {"top_ids", std::vector<int64_t>(std::get<1>(tk).data_ptr<int64_t>(),
                                                 std::get<1>(tk).data_ptr<int64_t>() + std::get<1>(tk).numel())},
                {"top_logits", std::vector<float>(std::get<0>(tk).data_ptr<float>(),
                                                  std::get<0>(tk).data_ptr<float>() + std::get<0>(tk).numel())},
                {"logsumexp", torch::logsumexp(row, 0).item<double>()}};
      if (full) e["logits"] = std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel());
      positions.push_back(std::move(e));
    }
    json j = {{"model", model}, {"ids", ids}, {"vocab_size", lm.model->config().vocab_size}, {"positions", positions}};
    write_json_output(json_out, j);
  });
}

}  // namespace

void register_model_commands(CLI::App& app, GlobalOptions& g) {
  register_info(app, g);
  register_tokenize(app, g);
  register_generate(app, g);
  register_eval(app, g);
  register_bench(app, g);
  register_synth(app, g);
  register_convert(app, g);
  register_logits(app, g);
}

}  // namespace llmopt::cli
