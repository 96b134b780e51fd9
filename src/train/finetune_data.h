// Fine-tuning data: plain text packed into seq_len blocks, or instruction jsonl (`prompt` /
// `response` fields, tokenized as the task harness tokenizes a context and continuation, or
// `messages` [{role, content}] rendered with a built-in template) with the loss only on response
// tokens, an EOS target after each response unless the line says "eos": false (task data from
// `llmopt data instruct`: the harness scores the response alone); a train / validation split by
// fraction (the tail) or a separate
// file; deterministic shuffling (one permutation per epoch from the seed), addressed by batch
// index so a checkpoint's data position resumes the exact order.
//
// A batch is [B, T+1] int64 token rows (every next token is a target) or [B, 2, T+1] with row 1
// the target mask (1 where token t is predicted from tokens < t; prompt and padding are 0).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "train/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace llmopt::train {

struct FinetuneDataOptions {
  std::string path;
  std::string format = "auto";  // auto (by extension: .jsonl = instruction) | text | jsonl
  int64_t seq_len = 256;        // predicted positions per row (rows hold seq_len + 1 tokens)
  int64_t offset = 0;           // text: first byte of the file used
  int64_t max_bytes = 0;        // text: bytes used from offset (0 = to the end)
  // `messages` rendering: a built-in chat template (train/chat_template.h) or auto = the one the
  // model's chat_template is (read from template_model: its directory, .gguf or tokenizer file), plain
  // (User:/Assistant: lines) when it has none.
  std::string template_name = "auto";
  std::string template_model;
  // EOS target after each prompt/response or plain-template response: auto = unless the line says
  // "eos": false (task data for log-likelihood tasks does), true = always, false = never.
  std::string eos = "auto";
  std::string val_path;         // validation file in the same format; empty = split by fraction
  double val_fraction = 0;      // the tail of the rows held out when val_path is empty
};

class FinetuneDataset {
 public:
  FinetuneDataset(torch::Tensor rows, torch::Tensor mask) : rows_(std::move(rows)), mask_(std::move(mask)) {}
  int64_t size() const { return rows_.size(0); }
  int64_t seq_len() const { return rows_.size(1) - 1; }
  bool masked() const { return mask_.defined(); }
  // Number of predicted positions (targets) over all rows.
  int64_t targets() const;
  // Batch `index` of `batch` rows: positions index*batch .. +batch-1 of the endless sequence of
  // epochs, each epoch a permutation of the rows drawn from seed + epoch (deterministic).
  torch::Tensor batch_at(int64_t index, int64_t batch, uint64_t seed) const;
  // Rows [begin, end) in order (validation).
  torch::Tensor rows(int64_t begin, int64_t end) const;

 private:
  torch::Tensor rows_;  // [N, T+1] int64
  torch::Tensor mask_;  // [N, T+1] int64 (0/1) or undefined
  mutable int64_t perm_epoch_ = -1;
  mutable uint64_t perm_seed_ = 0;
  mutable torch::Tensor perm_;
};

struct FinetuneData {
  std::shared_ptr<FinetuneDataset> train, val;  // val null when none
  std::string format;                           // "text" or "jsonl"
  int64_t train_tokens = 0, val_tokens = 0;     // predicted positions
};

// Reads and tokenizes the data. InputError (exit 2): unreadable file, invalid JSON or missing
// fields (naming file:line), no response tokens, data too short for one row / batch.
FinetuneData load_finetune_data(const FinetuneDataOptions& o, const tok::Tokenizer& tk, int64_t batch);

// The token ids and targets (1 = learned) of each row of the instruction jsonl o.path, exactly as
// training reads them (template, eos; a BOS where the tokenizer adds one to prompt/response and
// plain rows); InputError naming file:line as load_finetune_data. `llmopt data render` prints them.
std::vector<ChatTokens> read_instruction_rows(const FinetuneDataOptions& o, const tok::Tokenizer& tk);

// Mean next-token cross entropy over the targets of a batch ([B, T+1] or [B, 2, T+1] masked; the
// masked one computes logits only at the target positions).
LossFn masked_next_token_loss(model::LlamaModel& model);
// Mean loss per target over a whole dataset (batches of `batch` rows, no grad).
double dataset_loss(model::LlamaModel& model, const FinetuneDataset& data, int64_t batch);

}  // namespace llmopt::train
