#include "stages/evaluate/evaluate_stage.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/memory.h"
#include "eval/perplexity.h"
#include "eval/speed.h"

namespace llmopt::stages {

bool EvaluateStage::wants(const std::string& metric) const {
  return std::find(o_.metrics.begin(), o_.metrics.end(), metric) != o_.metrics.end();
}

std::vector<std::string> EvaluateStage::input_files(const DataOptions& data) const {
  if ((wants("perplexity") || wants("kld")) && !data.eval.path.empty()) return {data.eval.path};
  return {};
}

void EvaluateStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[evaluate] no model to evaluate");
  if (wants("perplexity") || wants("kld")) {
    LLMOPT_CHECK_INPUT(state.tokenizer != nullptr,
                       "[evaluate] perplexity needs a tokenizer; set model.tokenizer in the recipe");
  }
}

static std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLMOPT_CHECK_INPUT(in.good(), "[evaluate] cannot read data.eval.path '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StageResult EvaluateStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  StageResult result;
  auto& m = *state.model;
  const bool need_ppl = wants("perplexity") || wants("kld");
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
    po.bos_id = state.tokenizer->bos_id() >= 0 ? state.tokenizer->bos_id() : 1;
    const std::string text = read_text(d.path);
    tok::EncodeOptions eo;
    eo.add_bos = po.protocol == eval::PerplexityProtocol::LlamaCpp || state.tokenizer->add_bos_default();
    const std::vector<int32_t> ids32 = state.tokenizer->encode(text, eo);
    const std::vector<int64_t> ids(ids32.begin(), ids32.end());
    // KL divergence needs a distinct baseline; against itself it is exactly 0 (and agreement 1),
    // so the second forward pass is skipped.
    model::LlamaModel* baseline =
        wants("kld") && !state.baseline_is_current() && state.baseline ? state.baseline.get() : nullptr;
    const int64_t tokens_per_chunk = po.ctx;
    const eval::PerplexityResult r = eval::evaluate_perplexity(
        m, ids, po, baseline, [&](int64_t done, int64_t total) {
          ctx.report(done * tokens_per_chunk, total * tokens_per_chunk, "tok");
        });
    if (wants("perplexity")) {
      result.metrics["perplexity"] = r.perplexity;
      result.metrics["nll_mean"] = r.nll_mean;
      result.metrics["nll_sd"] = r.nll_sd;
      result.metrics["tokens"] = r.tokens;
      result.metrics["chunks"] = r.chunks;
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
  if (wants("speed")) {
    eval::BenchOptions bo;
    bo.prompt_tokens = std::min<int64_t>(o_.bench_prompt_tokens, m.config().max_position_embeddings / 2);
    bo.gen_tokens = std::min<int64_t>(o_.bench_gen_tokens, m.config().max_position_embeddings / 2);
    bo.repetitions = o_.bench_repetitions;
    bo.seed = ctx.seed;
    const eval::BenchResult b =
        eval::run_bench(m, bo, [&](const std::string& label, int64_t rep, int64_t reps) {
          if (ctx.note) ctx.note(label);
          ctx.report(rep, reps, "rep");
        });
    result.metrics["pp_tok_s"] = b.pp_tok_s;
    result.metrics["pp_tok_s_sd"] = b.pp_tok_s_sd;
    result.metrics["tg_tok_s"] = b.tg_tok_s;
    result.metrics["tg_tok_s_sd"] = b.tg_tok_s_sd;
    result.metrics["threads"] = b.threads;
  }
  if (wants("memory") || wants("speed")) {
    result.metrics["model_bytes"] = m.storage_bytes();
    result.metrics["peak_rss_bytes"] = peak_rss_bytes();
  }
  return result;
}

}  // namespace llmopt::stages
