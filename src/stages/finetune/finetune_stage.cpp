#include "stages/finetune/finetune_stage.h"

#include <filesystem>
#include <map>
#include <regex>

#include "core/error.h"
#include "core/log.h"
#include "eval/harness.h"
#include "eval/tasks.h"
#include "io/atomic_file.h"
#include "model/lora_adapter.h"
#include "model/lora_linear.h"
#include "model/lora_merge.h"
#include "model/calibration.h"
#include "model/nf4_linear.h"
#include "model/prompt_adapter.h"
#include "model/state_io.h"
#include "stages/finetune/finetune_run.h"
#include "stages/finetune/grad_checkpoint.h"
#include "train/finetune_data.h"
#include "train/trainer.h"

namespace llmopt::stages {
namespace fs = std::filesystem;

namespace {

model::LoraConfig lora_config(const FinetuneLoraOptions& o) {
  model::LoraConfig c;
  c.r = o.r;
  c.alpha = o.alpha;
  c.dropout = o.dropout;
  c.rslora = o.rslora;
  c.dora = o.dora;
  c.bias = o.bias;
  return c;
}

bool is_prompt_method(const std::string& m) { return m == "prompt" || m == "prefix" || m == "ptuning"; }

model::PromptAdapterConfig prompt_config(const FinetuneOptions& o) {
  model::PromptAdapterConfig c;
  c.method = o.method;
  c.num_virtual_tokens = o.prompt.num_virtual_tokens;
  c.encoder_hidden = o.prompt.encoder_hidden;
  c.init = o.prompt.init;
  c.init_text = o.prompt.init_text;
  return c;
}

eval::TaskSpec resolve_train_task(const std::string& name) {
  const std::string dir = eval::find_tasks_dir();
  return eval::resolve_task(name, dir, eval::find_shared_dir(dir));
}

}  // namespace

// Folds the adapters into the base (model/lora_merge.h). A quantized base is re-quantized by rtn
// and, with calibration data, by GPTQ; the KL divergence of each merged model from the unmerged
// adapter model is reported (merge_kld_rtn, merge_kld_gptq; merge_kld_mean: the one kept).
static void merge_adapters(const FinetuneOptions& o, model::LlamaModel& m, ModelState& state, StageContext& ctx,
                    const train::FinetuneData& data, StageResult& r) {
  bool quantized_base = false;
  for (auto& [p, l] : model::lora_layers(m)) quantized_base = quantized_base || l->base()->kind() != "dense";
  if (!quantized_base) {
    r.metrics["layers_merged"] = model::merge_lora_requantized(m, {}).merged;
    return;
  }
  CalibrationDataOptions cd = o.merge_calibration;
  std::string where = "merge_calibration";
  if (cd.path.empty() && ctx.data) cd = ctx.data->calibration, where = "data.calibration";
  const std::string method = o.merge_requant == "auto" ? (cd.path.empty() ? "rtn" : "gptq") : o.merge_requant;
  LLMOPT_CHECK_INPUT(method != "gptq" || !cd.path.empty(),
                     "[finetune] merge_requant gptq needs calibration text (merge_calibration.path or "
                     "data.calibration.path)");
  // The probe: held-out rows when there are any (up to 32), else the first 8 training rows.
  const auto& probe_set = data.val ? *data.val : *data.train;
  const torch::Tensor pr = probe_set.rows(0, std::min<int64_t>(data.val ? 32 : 8, probe_set.size()));
  const torch::Tensor probe = (pr.dim() == 3 ? pr.select(1, 0) : pr).slice(1, 0, -1).contiguous();
  auto adapter_model = model::clone_model(m);
  adapter_model->eval();
  model::LoraMergeOptions mo;
  if (method == "gptq") {
    auto rtn = model::clone_model(m);
    model::merge_lora_requantized(*rtn, mo);
    rtn->eval();
    r.metrics["merge_kld_rtn"] = model::model_kld(*adapter_model, *rtn, probe);
    model::CalibrationOptions co;
    co.path = cd.path;
    co.samples = cd.samples;
    co.seq_len = cd.seq_len;
    co.seed = static_cast<uint64_t>(cd.seed);
    co.offset = cd.offset;
    co.max_bytes = cd.max_bytes;
    co.format = cd.format;
    co.field = cd.field;
    co.where = where;
    mo.method = "gptq";
    mo.calibration = model::load_calibration_tokens(co, *state.tokenizer);
    r.metrics["merge_calibration_tokens"] = mo.calibration.numel();
    if (ctx.note) ctx.note("merging: GPTQ re-quantization");
  }
  const model::LoraMergeResult res = model::merge_lora_requantized(m, mo);
  m.eval();
  const double kld = model::model_kld(*adapter_model, m, probe);
  r.metrics["merge_kld_" + method] = kld;
  r.metrics["merge_kld_mean"] = kld;
  r.metrics["merge_requant"] = method;
  r.metrics["merge_kld_tokens"] = probe.numel();
  r.metrics["layers_merged"] = res.merged;
  r.metrics["layers_requantized"] = res.requantized;
  log::info("[finetune] merged {} adapters ({} re-quantized, {} by GPTQ): KL from the adapter model {:.5g}{}",
            res.merged, res.requantized, res.gptq, kld,
            r.metrics.contains("merge_kld_rtn") && method == "gptq"
                ? fmt::format(" (rtn: {:.5g})", r.metrics["merge_kld_rtn"].get<double>())
                : std::string());
}

void check_finetune_options(const FinetuneOptions& o) {
  LLMOPT_CHECK_INPUT(o.train.path.empty() != o.train.task.empty(),
                     "[finetune] give one of train.path (a file) and train.task (a task's training documents), found {}",
                     o.train.path.empty() ? "neither" : "both");
  LLMOPT_CHECK_INPUT(o.method == "lora" || o.method == "qlora" || o.method == "full" || is_prompt_method(o.method),
                     "[finetune] method must be lora, qlora, full, prompt, prefix or ptuning, found '{}'", o.method);
  if (o.method == "lora" || o.method == "qlora") lora_config(o.lora).validate();
  if (is_prompt_method(o.method)) prompt_config(o).validate();
  LLMOPT_CHECK_INPUT(!is_prompt_method(o.method) || !o.merge,
                     "[finetune] merge applies to methods lora and qlora, not {} (virtual tokens have no weights to "
                     "merge into)",
                     o.method);
  LLMOPT_CHECK_INPUT(o.min_lr <= o.lr, "[finetune] min_lr {} exceeds lr {}", o.min_lr, o.lr);
  LLMOPT_CHECK_INPUT(o.patience == 0 || o.eval_every > 0, "[finetune] patience needs eval_every > 0");
  LLMOPT_CHECK_INPUT(o.eval_every == 0 || !o.val.path.empty() || o.val.fraction > 0,
                     "[finetune] eval_every {} needs validation data (val.path or val.fraction)", o.eval_every);
  LLMOPT_CHECK_INPUT(!o.merge || o.method != "full", "[finetune] merge applies to methods lora and qlora");
  LLMOPT_CHECK_INPUT(!o.grad_checkpoint || !is_prompt_method(o.method),
                     "[finetune] grad_checkpoint applies to methods lora, qlora and full, not {}", o.method);
}

StageResult run_finetune(const FinetuneOptions& o, ModelState& state, StageContext& ctx, const FinetuneDirs& dirs) {
  check_finetune_options(o);
  LLMOPT_CHECK_INPUT(state.has_model(), "[finetune] no model to train");
  LLMOPT_CHECK_INPUT(state.tokenizer != nullptr, "[finetune] the model has no tokenizer (give model.tokenizer)");
  model::LlamaModel& m = *state.model;
  LLMOPT_CHECK_INPUT(m.device().is_cpu(), "[finetune] training runs on the CPU");
  const uint64_t seed = o.seed > 0 ? static_cast<uint64_t>(o.seed) : ctx.seed;

  train::FinetuneDataOptions dopt;
  dopt.path = o.train.path;
  if (!o.train.task.empty()) {
    // The task's training part as instruction jsonl, kept as an artifact: evaluate stages later in
    // the run refuse to score any of its prompts (stages/task_holdout_options.h).
    const eval::TaskSpec spec = resolve_train_task(o.train.task);
    int64_t dropped = 0;
    const auto examples = eval::instruction_examples(spec, o.train.task_holdout.split("train"), &dropped);
    LLMOPT_CHECK_INPUT(!examples.empty(), "[finetune] train.task {}: no training documents", spec.name);
    const std::string rel = "artifacts/instruct-" + spec.name + ".jsonl";
    dopt.path = (fs::path(ctx.artifacts_dir) / ("instruct-" + spec.name + ".jsonl")).string();
    io::AtomicFile f(dopt.path);
    for (const auto& e : examples)
      f.write(eval::instruction_json(spec, e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    f.commit();
    log::info("[finetune] {} -> {} ({} examples{})",
              eval::describe_split(spec, o.train.task_holdout.split("train"), examples.size() + dropped), rel,
              examples.size(), dropped > 0 ? fmt::format(", {} left out: same prompt as a held-out one", dropped) : "");
    state.artifacts[instruct_artifact_key(spec.name)] = rel;
    dopt.format = "jsonl";
  }
  dopt.format = o.train.format;
  dopt.seq_len = o.train.seq_len;
  dopt.offset = o.train.offset;
  dopt.max_bytes = o.train.max_bytes;
  dopt.template_name = o.train.chat_template;
  dopt.eos = o.train.eos;
  dopt.template_model =
      state.provenance.tokenizer_path.empty() ? state.provenance.source_path : state.provenance.tokenizer_path;
  dopt.val_path = o.val.path;
  dopt.val_fraction = o.val.fraction;
  const train::FinetuneData data = train::load_finetune_data(dopt, *state.tokenizer, o.batch_size);
  LLMOPT_CHECK_INPUT(m.config().max_position_embeddings <= 0 || o.train.seq_len <= m.config().max_position_embeddings,
                     "[finetune] train.seq_len {} exceeds the model's context length {}", o.train.seq_len,
                     m.config().max_position_embeddings);

  StageResult r;
  if (!o.train.task.empty()) {
    r.artifacts.push_back(state.artifacts[instruct_artifact_key(resolve_train_task(o.train.task).name)]);
    r.metrics["instruct_examples"] = data.train->size() + (data.val ? data.val->size() : 0);
  }
  model::LoraApplyResult applied;
  if (is_prompt_method(o.method)) {
    // Prompt learning: a PromptAdapter (virtual tokens / prefixes) in front of the frozen base.
    std::vector<int64_t> text_ids;
    if (o.prompt.init == "text" && o.method != "prompt")
      log::warn("[finetune] prompt.init text applies to method prompt only; {} starts from PEFT's own init", o.method);
    if (o.prompt.init == "text" && o.method == "prompt") {
      tok::EncodeOptions eo;
      eo.add_bos = state.tokenizer->add_bos_default();  // as PEFT's tokenizer(init_text) does
      for (int32_t id : state.tokenizer->encode(o.prompt.init_text, eo)) text_ids.push_back(id);
    }
    LLMOPT_CHECK_INPUT(m.prompt_adapter() == nullptr, "[finetune] the model already holds a prompt adapter");
    model::apply_prompt_adapter(m, prompt_config(o), seed, text_ids);
    for (auto& p : m.parameters(/*recurse=*/true)) {
      applied.total_params += p.numel();
      if (p.requires_grad()) applied.trainable_params += p.numel();
    }
    r.metrics["num_virtual_tokens"] = o.prompt.num_virtual_tokens;
    model::wrap_grad_through(m);  // gradients through frozen packed / NF4 projections to the prompt
  } else if (o.method != "full") {
    if (o.method == "qlora") {
      // QLoRA: the frozen base of every adapted projection in NF4 (double-quantized absmax), so no
      // full-precision copy of it stays in memory; LoRA in float32 on top.
      torch::NoGradGuard no_grad;
      std::map<std::string, std::shared_ptr<model::LinearLayer>> by_path;
      for (auto& [p, l] : m.linear_layers()) by_path[p] = l;
      for (const auto& p : model::match_target_modules(m, o.lora.target_modules)) {
        const auto& base = by_path.at(p);
        if (base->kind() == "nf4") continue;
        const torch::Tensor b = base->bias();
        m.set_linear(p, model::NF4Linear::quantize(base->dense_weight(), b.defined() ? b.detach() : b, true));
      }
    }
    applied = model::apply_lora(m, o.lora.target_modules, lora_config(o.lora), seed);
    r.metrics["lora_layers"] = static_cast<int64_t>(applied.paths.size());
    // Frozen packed / NF4 projections that are not adapted (an untied quantized output head ...)
    // must still pass gradients to the adapters before them.
    model::wrap_grad_through(m);
  } else {
    std::vector<std::regex> keep;
    for (const auto& t : o.trainable) {
      try {
        keep.emplace_back(t);
      } catch (const std::regex_error& e) {
        throw_input("[finetune] trainable: '{}' is not a valid regular expression ({})", t, e.what());
      }
    }
    std::vector<bool> used(keep.size(), false);
    for (auto& p : m.named_parameters(/*recurse=*/true)) {
      bool on = keep.empty();
      for (size_t i = 0; i < keep.size(); ++i)
        if (std::regex_search(p.key(), keep[i])) on = used[i] = true;
      p.value().set_requires_grad(on);
      applied.total_params += p.value().numel();
      if (on) applied.trainable_params += p.value().numel();
    }
    for (size_t i = 0; i < keep.size(); ++i)
      LLMOPT_CHECK_INPUT(used[i], "[finetune] trainable: '{}' matches no parameter name", o.trainable[i]);
  }
  r.metrics["trainable_params"] = applied.trainable_params;
  r.metrics["total_params"] = applied.total_params;
  log::info("[finetune] {}: {} trainable of {} parameters; {} training rows ({} target tokens){}", o.method,
            applied.trainable_params, applied.total_params, data.train->size(), data.train_tokens,
            data.val ? fmt::format(", {} validation rows", data.val->size()) : std::string());

  train::TrainerOptions to;
  to.steps = o.max_steps;
  to.batch = o.batch_size;
  to.grad_accum = o.grad_accum;
  to.seq_len = o.train.seq_len;
  to.lr = o.lr;
  to.min_lr = o.min_lr;
  to.warmup = o.warmup;
  to.schedule = o.schedule;
  to.weight_decay = o.weight_decay;
  to.grad_clip = o.clip;
  to.seed = seed;
  to.log_every = 1;
  to.eval_every = data.val ? (o.eval_every > 0 ? o.eval_every : o.max_steps) : 0;
  to.patience = o.patience;
  to.checkpoint_every = o.save_every;
  to.checkpoint_dir = dirs.checkpoints;
  if (!dirs.checkpoints.empty() && !train::latest_checkpoint(dirs.checkpoints).empty()) {
    to.resume_from = dirs.checkpoints;
  }
  train::Trainer trainer(m, o.grad_checkpoint ? checkpointed_next_token_loss(m) : train::masked_next_token_loss(m),
                         to);
  if (trainer.step() > 0) log::info("[finetune] resumed at step {} from {}", trainer.step(), dirs.checkpoints);
  if (data.val) {
    const auto val = data.val;
    const int64_t batch = o.batch_size;
    trainer.set_validation([&m, val, batch] { return train::dataset_loss(m, *val, batch); });
  }
  trainer.set_step_callback([&](const train::TrainProgress& p) {
    if (!ctx.event) return;
    nlohmann::json e = {{"event", "train_step"}, {"step", p.step},         {"steps", p.steps},
                        {"loss", p.loss},        {"lr", p.lr},             {"grad_norm", p.grad_norm},
                        {"tokens", p.tokens},    {"tokens_per_s", p.tokens_per_second}};
    if (std::isfinite(p.val_loss)) e["val_loss"] = p.val_loss;
    ctx.event(e);
  });
  const auto data_train = data.train;
  const int64_t batch = o.batch_size;
  const train::TrainResult tr = trainer.train(
      [data_train, batch, seed](int64_t index, torch::Generator&) { return data_train->batch_at(index, batch, seed); },
      [&](const train::TrainProgress& p) {
        if (ctx.progress) ctx.progress(p.step, p.steps, "steps");
        if (ctx.note)
          ctx.note(fmt::format("loss {:.4f} lr {:.2e} {:.0f} tok/s", p.loss, p.lr, p.tokens_per_second));
      },
      ctx.interrupt_flag);
  if (tr.cancelled) throw Interrupted();
  model::unwrap_grad_through(m);
  m.eval();
  for (auto& p : m.parameters(/*recurse=*/true)) p.set_requires_grad(false);

  r.metrics["steps"] = tr.steps_done;
  r.metrics["stopped_early"] = tr.stopped_early;
  r.metrics["train_tokens_seen"] = tr.tokens_seen;
  r.metrics["train_loss_first"] = tr.loss_curve.empty() ? 0.0 : tr.loss_curve.front();
  r.metrics["train_loss_final"] = tr.final_loss;
  r.metrics["train_tokens_per_s"] = tr.seconds > 0 ? static_cast<double>(tr.tokens_seen) / tr.seconds : 0.0;
  if (tr.resumed_from_step > 0) r.metrics["resumed_from_step"] = tr.resumed_from_step;
  if (!tr.val_curve.empty()) {
    r.metrics["val_loss"] = tr.val_curve.back().second;
    r.metrics["val_perplexity"] = std::exp(tr.val_curve.back().second);
    r.metrics["val_loss_best"] = tr.best_val_loss;
  }

  if (is_prompt_method(o.method)) {
    if (!dirs.adapter.empty()) {
      model::PromptAdapterSaveOptions so;
      so.base_model_name_or_path = state.provenance.source_path;
      model::save_prompt_adapter(m, dirs.adapter, so);
      if (!dirs.adapter_rel.empty()) r.artifacts.push_back(dirs.adapter_rel + "/adapter_config.json"),
            r.artifacts.push_back(dirs.adapter_rel + "/adapter_model.safetensors");
    }
  } else if (o.method != "full") {
    if (!dirs.adapter.empty()) {
      model::AdapterSaveOptions so;
      so.base_model_name_or_path = state.provenance.source_path;
      so.target_modules = o.lora.target_modules;
      model::save_peft_adapter(m, dirs.adapter, so);
      if (!dirs.adapter_rel.empty()) r.artifacts.push_back(dirs.adapter_rel + "/adapter_config.json"),
            r.artifacts.push_back(dirs.adapter_rel + "/adapter_model.safetensors");
      // The same adapter for llama.cpp's --lora, where it has a llama.cpp form (not DoRA, no
      // trained biases), for the base's GGUF (llmopt convert --to gguf, or the GGUF it came from).
      if (const std::string why = model::gguf_lora_unsupported(m); why.empty()) {
        model::save_gguf_lora_adapter(m, (fs::path(dirs.adapter) / model::kGgufAdapterFile).string(),
                                      model::gguf_lora_architecture(state.provenance.source_path));
        if (!dirs.adapter_rel.empty()) r.artifacts.push_back(dirs.adapter_rel + "/" + model::kGgufAdapterFile);
      } else {
        log::info("[finetune] no llama.cpp adapter ({}): {}", model::kGgufAdapterFile, why);
      }
    }
    if (o.merge) merge_adapters(o, m, state, ctx, data, r);
  }
  if (!dirs.checkpoints.empty()) fs::remove_all(dirs.checkpoints);
  r.metrics["model_bytes"] = m.storage_bytes();
  return r;
}

std::vector<std::string> FinetuneStage::input_files(const DataOptions&) const {
  std::vector<std::string> f;
  if (!o_.train.path.empty()) f.push_back(o_.train.path);
  if (!o_.train.task.empty()) {
    const eval::TaskSpec spec = resolve_train_task(o_.train.task);
    f.push_back(spec.file);
    f.push_back(spec.train_data.empty() ? spec.data : spec.train_data);
    if (!spec.train_data.empty()) f.push_back(spec.data);  // held-out prompts are left out of training
  }
  if (!o_.val.path.empty()) f.push_back(o_.val.path);
  if (o_.merge && !o_.merge_calibration.path.empty()) f.push_back(o_.merge_calibration.path);
  return f;
}

void FinetuneStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[finetune] no model to train");
  LLMOPT_CHECK_INPUT(state.tokenizer != nullptr, "[finetune] the model has no tokenizer (give model.tokenizer)");
  check_finetune_options(o_);
  if (!o_.train.task.empty())  // unknown task, bad task file or impossible split: fail before any stage runs
    eval::load_split_docs(resolve_train_task(o_.train.task), o_.train.task_holdout.split("train"));
}

StageResult FinetuneStage::run(ModelState& state, StageContext& ctx) {
  FinetuneDirs dirs;
  dirs.adapter = (fs::path(ctx.artifacts_dir) / "adapter").string();
  dirs.adapter_rel = "artifacts/adapter";
  if (ctx.total > 1 || ctx.index > 0) {
    dirs.adapter = (fs::path(ctx.artifacts_dir) / ("adapter-" + ctx.stage_name)).string();
    dirs.adapter_rel = "artifacts/adapter-" + ctx.stage_name;
  }
  dirs.checkpoints = (fs::path(ctx.run_dir) / "state" / fmt::format("stage-{}", ctx.index) / "train").string();
  return run_finetune(o_, state, ctx, dirs);
}

}  // namespace llmopt::stages
