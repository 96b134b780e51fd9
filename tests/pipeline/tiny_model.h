// A tiny model for run tests, built without ../shared: a BPE tokenizer trained on grammar
// stories (llama2.c tokenizer.bin), random N(0, 0.02) weights of a 2-layer Llama saved as an HF
// directory, and held-out story text for evaluation. Deterministic for a seed.
#pragma once
#include <filesystem>
#include <string>

#include "core/model_config.h"
#include "model/save.h"
#include "model/synth.h"
#include "pipeline_test_util.h"
#include "train/bpe_trainer.h"
#include "train/story_grammar.h"

namespace llmopt::testing {

struct TinyModel {
  fs::path model_dir;
  fs::path tokenizer;
  fs::path eval_text;
};

inline TinyModel make_tiny_model(const fs::path& dir, int64_t eval_bytes = 20000) {
  TinyModel t;
  t.model_dir = dir / "tiny-hf";
  t.tokenizer = dir / "tiny-tok.bin";
  t.eval_text = dir / "eval.txt";
  if (fs::exists(t.model_dir / "config.json") && fs::exists(t.tokenizer)) return t;
  const std::string corpus = train::generate_stories(1, 60000);
  train::BpeTrainerOptions bo;
  bo.vocab_size = 320;
  const train::BpeVocabulary vocab = train::train_bpe(corpus, bo);
  train::write_llama2c_tokenizer(vocab, t.tokenizer.string());
  ModelConfig cfg;
  cfg.hidden_size = 32;
  cfg.intermediate_size = 88;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_dim = 8;
  cfg.vocab_size = vocab.size();
  cfg.max_position_embeddings = 256;
  cfg.tie_word_embeddings = true;
  auto m = model::synth_model(cfg, 42);
  model::save_model(*m, nullptr, "", model::ExportFormat::Hf, DType::F32, t.model_dir.string());
  write_text(t.eval_text, train::generate_stories(99, static_cast<size_t>(eval_bytes)));
  return t;
}

// A recipe running on the tiny model; `pipeline` is the YAML list body (indented by 2).
inline std::string tiny_recipe(const TinyModel& t, const std::string& pipeline,
                               const std::string& extra = "") {
  return "name: tiny\nseed: 3\nthreads: 2\nmodel:\n  path: " + t.model_dir.string() +
         "\n  tokenizer: " + t.tokenizer.string() + "\ndata:\n  eval: {path: " + t.eval_text.string() +
         ", ctx: 64}\npipeline:\n" + pipeline + extra;
}

}  // namespace llmopt::testing
