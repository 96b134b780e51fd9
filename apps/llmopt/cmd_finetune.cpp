// `llmopt finetune MODEL --data FILE --method lora|qlora|full|prompt|prefix|ptuning [...] --out DIR`:
// the finetune stage's work (stages/finetune) on one model without a recipe. Methods lora and the
// prompt-learning ones write the PEFT adapter (adapter_config.json, adapter_model.safetensors)
// into DIR; method full (and lora --merge) writes
// the trained model as a Hugging Face directory (DIR/model). Per-step metrics go to
// DIR/train_events.jsonl; trainer checkpoints to DIR/checkpoints every --save-every steps (and on
// Ctrl-C), picked up by --resume and removed once the run completes. `--nproc N` trains with N
// local data-parallel processes (train/distributed.h); under a torchrun-style environment
// (WORLD_SIZE ...) this process is one rank of such a job. Only rank 0 writes DIR.
#include <filesystem>

#include "apps/llmopt/commands.h"
#include "apps/llmopt/model_io.h"
#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/threads.h"
#include "pipeline/events.h"
#include "pipeline/interrupt.h"
#include "train/distributed.h"
#include "stages/finetune/finetune_run.h"

namespace llmopt::cli {
namespace fs = std::filesystem;

void register_finetune_command(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("finetune", "Fine-tune a model (LoRA / DoRA or prompt / prefix / P-tuning adapters in PEFT format, or full)");
  static std::string model, tokenizer, out, json_out;
  static bool resume = false;
  static int nproc = 1;
  static stages::FinetuneOptions o;
  cmd->add_option("MODEL", model, "Model path")->required();
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  cmd->add_option("--data", o.train.path, "Training data: text, or instruction jsonl (prompt/response or messages)")
      ->required();
  cmd->add_option("--out", out, "Output directory (adapter files; model/ for full or --merge)")->required();
  cmd->add_option("--format", o.train.format, "auto | text | jsonl")->capture_default_str();
  cmd->add_option("--template", o.train.chat_template,
                  "jsonl messages: chat template, auto (the model's chat_template, plain when none) | plain | chatml | "
                  "llama2 | llama3 | zephyr | mistral | gemma | phi3")
      ->capture_default_str();
  cmd->add_option("--eos", o.train.eos,
                  "jsonl: EOS target after each response: auto (unless the line says \"eos\": false) | true | false")
      ->check(CLI::IsMember({"auto", "true", "false"}))
      ->capture_default_str();
  cmd->add_option("--seq-len", o.train.seq_len, "Predicted tokens per training row")->capture_default_str();
  cmd->add_option("--data-offset", o.train.offset, "Text: first byte of the file used")->capture_default_str();
  cmd->add_option("--data-bytes", o.train.max_bytes, "Text: bytes used from the offset (0 = all)")->capture_default_str();
  cmd->add_option("--val", o.val.path, "Validation file (same format)");
  cmd->add_option("--val-fraction", o.val.fraction, "Tail of the training rows held out for validation")
      ->capture_default_str();
  cmd->add_option("--method", o.method, "lora | qlora (NF4 base) | full | prompt | prefix | ptuning")
      ->capture_default_str();
  cmd->add_option("--num-virtual-tokens", o.prompt.num_virtual_tokens,
                  "prompt / prefix / ptuning: virtual tokens (prefix: key/value positions per layer)")
      ->capture_default_str();
  cmd->add_option("--prompt-init", o.prompt.init, "prompt: random | text (embeddings of --prompt-init-text)")
      ->capture_default_str();
  cmd->add_option("--prompt-init-text", o.prompt.init_text, "prompt, --prompt-init text: the initializing text");
  cmd->add_option("--encoder-hidden", o.prompt.encoder_hidden,
                  "ptuning: hidden width of the prompt encoder MLP (0 = the model's hidden size)")
      ->capture_default_str();
  cmd->add_option("--r", o.lora.r, "LoRA rank")->capture_default_str();
  cmd->add_option("--alpha", o.lora.alpha, "LoRA alpha (scaling alpha / r)")->capture_default_str();
  cmd->add_option("--dropout", o.lora.dropout, "LoRA dropout")->capture_default_str();
  cmd->add_option("--target-modules", o.lora.target_modules,
                  "Module names (q_proj ...), regular expressions over module paths, or all-linear")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_flag("--rslora", o.lora.rslora, "Rank-stabilized scaling alpha / sqrt(r)");
  cmd->add_flag("--dora", o.lora.dora, "DoRA (weight-decomposed LoRA)");
  cmd->add_option("--bias", o.lora.bias, "none | all | lora_only")->capture_default_str();
  cmd->add_option("--trainable", o.trainable, "Method full: regular expressions of parameter names that train");
  cmd->add_option("--steps", o.max_steps, "Optimizer steps")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "Rows per micro-batch")->capture_default_str();
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per step")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr", o.min_lr, "Final learning rate of linear / cosine")->capture_default_str();
  cmd->add_option("--schedule", o.schedule, "constant | linear | cosine")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Warmup steps")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--clip", o.clip, "Gradient norm clipping (0 = off)")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Steps between validations")->capture_default_str();
  cmd->add_option("--patience", o.patience, "Early stopping patience in validations (0 = off)")->capture_default_str();
  cmd->add_option("--save-every", o.save_every, "Steps between trainer checkpoints in OUT/checkpoints")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "LoRA init and data order seed")->capture_default_str();
  cmd->add_flag("--merge", o.merge, "Merge the adapters after training and write OUT/model");
  cmd->add_flag("--grad-checkpoint", o.grad_checkpoint,
                "Gradient checkpointing: recompute each decoder layer in the backward pass (less memory)");
  cmd->add_option("--merge-requant", o.merge_requant,
                  "Merging into a quantized base: auto | rtn | gptq (auto: gptq with --merge-calibration)")
      ->capture_default_str();
  cmd->add_option("--merge-calibration", o.merge_calibration.path, "Calibration text for GPTQ re-quantization on merge");
  cmd->add_option("--merge-calibration-bytes", o.merge_calibration.max_bytes, "Bytes of it used (0 = all)")
      ->capture_default_str();
  cmd->add_option("--merge-samples", o.merge_calibration.samples, "Calibration windows")->capture_default_str();
  cmd->add_option("--merge-seq-len", o.merge_calibration.seq_len, "Tokens per calibration window")
      ->capture_default_str();
  cmd->add_flag("--resume", resume, "Continue from the newest checkpoint in OUT/checkpoints");
  cmd->add_option("--json", json_out, "Write the metrics as JSON here ('-' = stdout)");
  cmd->add_option("--nproc", nproc,
                  "Data-parallel processes on this machine (Gloo); the global batch stays batch-size x grad-accum, "
                  "split over them")
      ->capture_default_str();
  cmd->callback([&g] {
    apply_threads(g);
    stages::check_finetune_options(o);
    LLMOPT_CHECK_INPUT(fs::exists(o.train.path), "[finetune] --data {}: no such file", o.train.path);
    LLMOPT_CHECK_INPUT(o.val.path.empty() || fs::exists(o.val.path), "[finetune] --val {}: no such file", o.val.path);
    const fs::path parent = fs::path(out).has_parent_path() ? fs::path(out).parent_path() : fs::path(".");
    LLMOPT_CHECK_INPUT(fs::is_directory(parent), "[finetune] --out {}: directory '{}' does not exist", out,
                       parent.string());
    LLMOPT_CHECK_INPUT(nproc >= 1, "[finetune] --nproc must be at least 1, found {}", nproc);
    LLMOPT_CHECK_INPUT(o.batch_size % nproc == 0,
                       "[finetune] --batch-size {} does not split over --nproc {}: give a multiple of it",
                       o.batch_size, nproc);
    if (nproc > 1) {
      train::dist::LaunchOptions lo;
      lo.nproc = nproc;
      lo.argv = train::dist::strip_nproc(train::dist::self_argv());
      lo.threads_per_rank = g.threads > 0 ? 0 : std::max(1, default_threads() / nproc);
      g.exit_code = train::dist::launch_local(lo);
      return;
    }
    // One rank of a data-parallel job (WORLD_SIZE > 1), or a single process. Ranks > 0 train the
    // same model but write into a scratch directory that is removed at the end.
    const train::dist::ProcessGroup* group = train::dist::init_from_environment();
    const int rank = group ? group->rank() : 0;
    std::unique_ptr<train::dist::ScratchDir> scratch;
    if (rank > 0) {
      train::dist::quiet_logs_off_rank0();
      scratch = std::make_unique<train::dist::ScratchDir>(fmt::format("finetune-rank{}", rank));
    }
    const fs::path dir(scratch ? scratch->path() : out);
    auto lm = load_for_inference(model, tokenizer, /*need_tokenizer=*/true);
    fs::create_directories(dir);
    const std::string ckpt = (dir / "checkpoints").string();
    // A fresh run into a directory used before starts new logs: its events would otherwise follow
    // the earlier run's, and its loss curve and step times would span both (a resumed run appends).
    if (!resume) {
      fs::remove_all(ckpt);
      fs::remove(dir / "train_events.jsonl");
    }
    stages::ModelState state;
    state.model = lm.model;
    state.tokenizer = lm.tokenizer;
    state.provenance.source_path = model;
    stages::StageContext ctx;
    ctx.run_dir = dir.string();
    ctx.artifacts_dir = dir.string();
    ctx.stage_name = "finetune";
    ctx.seed = 0;
    ctx.threads = threads();
    pipeline::EventLog events((dir / "train_events.jsonl").string(), false);
    ctx.event = [&events](const nlohmann::json& e) { events.emit(e); };
    Progress progress(Progress::detect(g.quiet || rank > 0));
    progress.begin_stage("", 0, 0, "finetune");
    ctx.progress = [&progress](int64_t d, int64_t t, const std::string& u) { progress.update(d, t, u); };
    ctx.note = [&progress](const std::string& n) { progress.note(n); };
    ctx.interrupt_flag = &pipeline::install_interrupt_handler();
    stages::FinetuneDirs dirs;
    if (o.method != "full") dirs.adapter = dir.string();
    dirs.checkpoints = (o.save_every > 0 || resume) ? ckpt : std::string();
    stages::StageResult r;
    try {
      r = stages::run_finetune(o, state, ctx, dirs);
    } catch (const stages::Interrupted&) {
      progress.end_stage();
      throw_run("[finetune] interrupted{}", dirs.checkpoints.empty() ? "" : "; continue with --resume");
    }
    progress.end_stage();
    if (rank > 0) return;  // rank 0 writes the model and reports
    if (o.method == "full" || o.merge) {
      save_model(*state.model, state.tokenizer.get(), lm.tokenizer_path, "hf", DType::F32, (dir / "model").string());
      r.metrics["model_dir"] = (dir / "model").string();
    }
    nlohmann::json j = r.metrics;
    j["out"] = out;
    if (!json_out.empty()) write_json_output(json_out, j);
    if (json_out != "-") {
      std::printf("finetune %s: %lld steps, train loss %.4f -> %.4f", o.method.c_str(),
                  static_cast<long long>(j.value("steps", int64_t{0})), j.value("train_loss_first", 0.0),
                  j.value("train_loss_final", 0.0));
      if (j.contains("val_loss")) std::printf(", val loss %.4f (ppl %.3f)", j["val_loss"].get<double>(),
                                              j["val_perplexity"].get<double>());
      std::printf("; wrote %s\n", out.c_str());
    }
  });
}

}  // namespace llmopt::cli
