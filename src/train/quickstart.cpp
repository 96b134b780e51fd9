#include "train/quickstart.h"

#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/timer.h"
#include "model/synth.h"
#include "tokenizer/tokenizer.h"
#include "train/bpe_trainer.h"
#include "train/story_grammar.h"

namespace llmopt::train {
namespace fs = std::filesystem;

namespace {

// Held-out text must never share stories with the training text: a fixed, distinct seed stream.
constexpr uint64_t kEvalSeedOffset = 0x5EED0E7A1ull;
constexpr int64_t kContext = 128;

}  // namespace

ModelConfig quickstart_model_config(int64_t vocab_size) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.vocab_size = vocab_size;
  // Trained at kContext; RoPE lets generation run somewhat past it, with declining quality.
  c.max_position_embeddings = 2 * kContext;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.bos_token_id = BpeVocabulary::kBosId;
  c.eos_token_id = BpeVocabulary::kEosId;
  return c;
}

TrainerOptions quickstart_trainer_options(int64_t steps, uint64_t seed) {
  TrainerOptions o;
  o.steps = steps > 0 ? steps : kDefaultQuickstartSteps;
  o.batch = 16;
  o.seq_len = kContext;
  o.lr = 3e-3;
  o.min_lr = 3e-4;
  o.warmup = std::min<int64_t>(30, o.steps / 10);
  o.weight_decay = 0.1;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.grad_clip = 1.0;
  o.seed = seed;
  o.log_every = 10;
  return o;
}

model::LoadedModel build_quickstart_model(const QuickstartOptions& options,
                                          const QuickstartProgressFn& progress) {
  LLMOPT_CHECK_INPUT(!options.output_dir.empty(), "[quickstart] output_dir is required");
  LLMOPT_CHECK_INPUT(options.train_text_bytes >= 10000,
                     "[quickstart] train_text_bytes must be at least 10000, found {}",
                     options.train_text_bytes);
  LLMOPT_CHECK_INPUT(options.eval_text_bytes > 0, "[quickstart] eval_text_bytes must be positive");
  const Timer total;
  auto report = [&](const char* phase, std::string message) {
    if (progress) progress({phase, std::move(message), {}});
  };
  const fs::path out_dir(options.output_dir);
  fs::create_directories(out_dir);

  report("text", fmt::format("writing {} KB of story-grammar text", options.train_text_bytes / 1000));
  const std::string train_text = generate_stories(options.seed, options.train_text_bytes);
  const std::string eval_text =
      generate_stories(options.seed + kEvalSeedOffset, options.eval_text_bytes);
  const fs::path eval_path = out_dir / kQuickstartEvalTextFile;
  tok::write_file_atomic(eval_path.string(), eval_text);

  report("tokenizer", fmt::format("training a {}-piece BPE tokenizer", options.vocab_size));
  const BpeVocabulary vocab = train_bpe(train_text, {.vocab_size = options.vocab_size});
  const fs::path tokenizer_path = out_dir / kQuickstartTokenizerFile;
  write_llama2c_tokenizer(vocab, tokenizer_path.string());
  std::shared_ptr<tok::Tokenizer> tokenizer = tok::load_tokenizer_file(tokenizer_path.string());
  // The whole text with one BOS, exactly as the llama.cpp perplexity protocol tokenizes a file.
  const std::vector<int32_t> ids = tokenizer->encode(train_text, {.add_bos = true});
  const TokenDataset data(std::vector<int64_t>(ids.begin(), ids.end()));

  const ModelConfig config = quickstart_model_config(vocab.size());
  config.validate("quickstart");
  auto model = model::synth_model(config, options.seed);
  TrainerOptions trainer_options = quickstart_trainer_options(options.steps, options.seed);
  if (options.adjust_training) options.adjust_training(trainer_options);
  if (!options.checkpoint_dir.empty()) {
    trainer_options.checkpoint_dir = options.checkpoint_dir;
    trainer_options.checkpoint_every = 100;
    if (!latest_checkpoint(options.checkpoint_dir).empty()) {
      trainer_options.resume_from = options.checkpoint_dir;
    }
  }
  int64_t parameters = 0;
  for (const auto& p : model->parameters()) parameters += p.numel();
  report("train", fmt::format("training a {:.2f}M-parameter Llama for {} steps on {} tokens",
                              parameters / 1e6, trainer_options.steps, data.size()));

  Trainer trainer(*model, next_token_loss(*model), trainer_options);
  const int64_t batch = trainer_options.batch, seq_len = trainer_options.seq_len;
  // Every window starts with BOS, as every chunk does under the llama.cpp perplexity protocol
  // (and as generation from a fresh prompt does).
  const BatchFn windows = [&](torch::Generator& rng) {
    torch::Tensor b = data.sample(batch, seq_len, rng);
    b.select(1, 0).fill_(BpeVocabulary::kBosId);
    return b;
  };
  const TrainResult result = trainer.train(
      windows,
      [&](const TrainProgress& p) {
        if (progress) {
          progress({"train",
                    fmt::format("step {}/{} loss {:.3f} lr {:.2e} {:.0f} tok/s", p.step, p.steps,
                                p.loss, p.lr, p.tokens_per_second),
                    p});
        }
      },
      options.cancel);
  if (result.cancelled) {
    throw_run("[quickstart] training interrupted at step {}/{}{}", result.steps_done,
              trainer_options.steps,
              result.last_checkpoint.empty() ? "" : "; checkpoint " + result.last_checkpoint);
  }
  model->eval();

  nlohmann::json info = {
      {"config",
       {{"hidden_size", config.hidden_size},
        {"intermediate_size", config.intermediate_size},
        {"num_hidden_layers", config.num_hidden_layers},
        {"num_attention_heads", config.num_attention_heads},
        {"num_key_value_heads", config.num_key_value_heads},
        {"vocab_size", config.vocab_size},
        {"tie_word_embeddings", config.tie_word_embeddings}}},
      {"parameters", parameters},
      {"seed", options.seed},
      {"steps", trainer_options.steps},
      {"batch", trainer_options.batch},
      {"seq_len", trainer_options.seq_len},
      {"lr", trainer_options.lr},
      {"train_text_bytes", train_text.size()},
      {"train_tokens", data.size()},
      {"eval_text", eval_path.string()},
      {"tokenizer", tokenizer_path.string()},
      {"final_loss", result.final_loss},
      {"loss_curve", result.loss_curve},
      {"tokens_seen", result.tokens_seen},
      {"train_seconds", result.seconds},
      {"total_seconds", total.seconds()},
      {"threads", torch::get_num_threads()}};
  tok::write_file_atomic((out_dir / kQuickstartInfoFile).string(), info.dump(1) + "\n");

  model::LoadedModel loaded;
  loaded.model = model;
  loaded.tokenizer = tokenizer;
  loaded.path = out_dir.string();  // built here, not read from a model file (format is unused)
  loaded.tokenizer_path = tokenizer_path.string();
  loaded.file_bytes = 0;
  info.erase("loss_curve");
  loaded.source_info = {{"quickstart", info}};
  return loaded;
}

}  // namespace llmopt::train
