#include "stages/evaluate/evaluate_stage.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/memory.h"
#include "eval/harness.h"
#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "infer/generate.h"
#include "model/torch_engine.h"

namespace llmopt::stages {

bool EvaluateStage::wants(const std::string& metric) const {
  return std::find(o_.metrics.begin(), o_.metrics.end(), metric) != o_.metrics.end();
}

// The task files named by the `tasks` option, parsed (InputError for an unknown task or a bad file).
static std::vector<eval::TaskSpec> resolve_tasks(const std::vector<std::string>& names) {
  const std::string dir = eval::find_tasks_dir();
  const std::string shared = eval::find_shared_dir(dir);
  std::vector<eval::TaskSpec> specs;
  for (const auto& n : names) specs.push_back(eval::resolve_task(n, dir, shared));
  return specs;
}

std::vector<std::string> EvaluateStage::input_files(const DataOptions& data) const {
  std::vector<std::string> files;
  if ((wants("perplexity") || wants("kld")) && !data.eval.path.empty()) files.push_back(data.eval.path);
  if (wants("tasks")) {
    for (const auto& spec : resolve_tasks(o_.tasks)) {
      files.push_back(spec.file);
      files.push_back(spec.data);
      if (!spec.fewshot_data.empty()) files.push_back(spec.fewshot_data);
      if (!spec.train_data.empty() && o_.task_split == "train") files.push_back(spec.train_data);
    }
  }
  return files;
}

void EvaluateStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[evaluate] no model to evaluate");
  LLMOPT_CHECK_INPUT(!wants("tasks") || !o_.tasks.empty(),
                     "[evaluate] metrics has 'tasks' but the tasks option is empty (e.g. tasks: [arc_easy, piqa])");
  LLMOPT_CHECK_INPUT(o_.tasks.empty() || wants("tasks"),
                     "[evaluate] tasks {} given but metrics has no 'tasks'", fmt::format("{}", fmt::join(o_.tasks, ", ")));
  if (wants("tasks")) {
    LLMOPT_CHECK_INPUT(state.tokenizer != nullptr, "[evaluate] tasks need a tokenizer; set model.tokenizer in the recipe");
    // Unknown tasks, bad task files and impossible splits fail before any stage runs.
    for (const auto& spec : resolve_tasks(o_.tasks)) eval::load_split_docs(spec, o_.task_holdout.split(o_.task_split));
  }
  if (wants("perplexity") || wants("kld")) {
    LLMOPT_CHECK_INPUT(state.tokenizer != nullptr,
                       "[evaluate] perplexity needs a tokenizer; set model.tokenizer in the recipe");
  }
}

// Bytes [offset, offset + max_bytes) of the file (max_bytes 0: to the end).
static std::string read_text(const std::string& path, int64_t offset = 0, int64_t max_bytes = 0) {
  std::ifstream in(path, std::ios::binary);
  LLMOPT_CHECK_INPUT(in.good(), "[evaluate] cannot read data.eval.path '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  LLMOPT_CHECK_INPUT(offset >= 0 && offset < static_cast<int64_t>(all.size()),
                     "[evaluate] data.eval.offset: {} is not inside '{}' ({} bytes)", offset, path, all.size());
  return all.substr(static_cast<size_t>(offset), max_bytes > 0 ? static_cast<size_t>(max_bytes) : std::string::npos);
}

StageResult EvaluateStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  StageResult result;
  auto& m = *state.model;
  const bool need_ppl = wants("perplexity") || wants("kld");
  // Perplexity, KLD and speed run through the one inference interface, on the engine `llmopt
  // eval|bench` would pick for this model (native_equivalent: dense, ggml, int-N, NF4 on the CPU).
  std::unique_ptr<infer::Engine> engine;
  if (need_ppl || wants("speed") || wants("tasks")) engine = model::make_engine(state.model, o_.engine);
  if (need_ppl) {
    LLMOPT_CHECK_INPUT(ctx.data && !ctx.data->eval.path.empty(),
                       "[evaluate] stage '{}' measures perplexity but data.eval.path is not set",
                       ctx.stage_name);
    const EvalDataOptions& d = ctx.data->eval;
    eval::PerplexityOptions po;
    po.protocol = eval::parse_protocol(d.protocol);
    po.ctx = o_.ctx > 0 ? o_.ctx : d.ctx;
    po.stride = d.stride;
    po.max_chunks = o_.max_chunks >= 0 ? o_.max_chunks : d.max_chunks;
    const std::vector<int64_t> ids = eval::tokenize_for_perplexity(*state.tokenizer, read_text(d.path, d.offset, d.max_bytes), po);
    // KL divergence needs a distinct baseline; against itself it is exactly 0 (and agreement 1),
    // so the second forward pass is skipped.
    std::unique_ptr<infer::Engine> baseline;
    // Read back from the input file when the model was modified (no dense copy kept between stages).
    if (wants("kld") && !state.baseline_is_current()) baseline = state.baseline_engine(o_.engine);
    const int64_t tokens_per_chunk = po.ctx;
    const eval::PerplexityResult r = eval::evaluate_perplexity(
        *engine, ids, po, baseline.get(), [&](int64_t done, int64_t total) {
          ctx.report(done * tokens_per_chunk, total * tokens_per_chunk, "tok");
        });
    result.metrics.update(eval::protocol_json(po, r, *engine));  // protocol, ctx, bos, chunks, tokens, engine
    if (wants("perplexity")) {
      result.metrics["perplexity"] = r.perplexity;
      result.metrics["nll_mean"] = r.nll_mean;
      result.metrics["nll_sd"] = r.nll_sd;
    }
    if (wants("kld")) {
      if (baseline) {
        result.metrics["kld_mean"] = r.kld_mean;
        result.metrics["kld_p99"] = r.kld_p99;
        result.metrics["kld_median"] = r.kld_median;
        result.metrics["kld_max"] = r.kld_max;
        result.metrics["top1_agreement"] = r.top1_agreement;
        result.metrics["delta_p_rms"] = r.delta_p_rms;
      } else {
        result.metrics["kld_mean"] = 0.0;
        result.metrics["kld_p99"] = 0.0;
        result.metrics["kld_median"] = 0.0;
        result.metrics["kld_max"] = 0.0;
        result.metrics["top1_agreement"] = 1.0;
        result.metrics["delta_p_rms"] = 0.0;
      }
    }
  }
  if (wants("tasks")) {
    // The harness of `llmopt eval --tasks` on the same engine: the same scores for the same model.
    eval::TaskRunOptions to;
    to.num_fewshot = static_cast<int>(o_.num_fewshot);
    to.limit = o_.task_limit;
    to.split = o_.task_holdout.split(o_.task_split);
    for (const auto& spec : resolve_tasks(o_.tasks)) {
      if (ctx.note) ctx.note(spec.name);
      // Instruction data an earlier finetune stage built from this task: none of it may be scored.
      const auto trained = state.artifacts.find(instruct_artifact_key(spec.name));
      to.trained_on = trained == state.artifacts.end() ? std::string()
                                                       : (std::filesystem::path(ctx.run_dir) / trained->second).string();
      if (!to.trained_on.empty() && !std::filesystem::exists(to.trained_on)) to.trained_on.clear();
      const eval::TaskResult r = eval::run_task(*engine, *state.tokenizer, spec, to,
                                                [&](int64_t done, int64_t total) { ctx.report(done, total, "req"); });
      for (const auto& [key, value] : r.metrics.items()) result.metrics[r.name + "/" + key] = value;
      result.metrics[r.name + "/chance"] = r.chance;
      result.metrics[r.name + "/samples"] = r.samples;
      result.metrics[r.name + "/num_fewshot"] = r.num_fewshot;
    }
    result.metrics["engine"] = engine->name();
  }
  if (wants("speed")) {
    infer::BenchOptions bo;
    bo.prompt_tokens = std::min<int64_t>(o_.bench_prompt_tokens, m.config().max_position_embeddings / 2);
    bo.gen_tokens = std::min<int64_t>(o_.bench_gen_tokens, m.config().max_position_embeddings / 2);
    bo.repetitions = o_.bench_repetitions;
    bo.seed = ctx.seed;
    // The loop of `llmopt bench` (infer::run_bench): the same figures for the same engine.
    const infer::BenchResult b =
        infer::run_bench(*engine, bo, [&](const std::string& label, int64_t rep, int64_t reps) {
          if (ctx.note) ctx.note(label);
          ctx.report(rep, reps, "rep");
        });
    result.metrics["engine"] = b.engine;
    result.metrics["pp_tok_s"] = b.pp_tok_s;
    result.metrics["pp_tok_s_sd"] = b.pp_tok_s_sd;
    result.metrics["tg_tok_s"] = b.tg_tok_s;
    result.metrics["tg_tok_s_sd"] = b.tg_tok_s_sd;
    result.metrics["threads"] = b.threads;
    result.metrics["kv_cache_bytes"] = b.kv_cache_bytes;
  }
  if (wants("memory") || wants("speed")) {
    result.metrics["model_bytes"] = m.storage_bytes();
    result.metrics["peak_rss_bytes"] = peak_rss_bytes();
  }
  return result;
}

}  // namespace llmopt::stages
