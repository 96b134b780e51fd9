// The reusable training loop: AdamW (weight decay on 2-D weights only), constant / linear / cosine
// learning-rate schedules with linear warmup, gradient accumulation, gradient clipping, validation
// every N steps with early stopping, per-step metrics, progress reports, cancellation, and atomic
// checkpoints (data position included) that resume bit-exactly. It is generic over the loss: pretraining passes
// next_token_loss(model); fine-tuning, distillation and quantization-aware training pass their own
// loss function over the same module (frozen parameters, with requires_grad false, are skipped).
//
// Determinism: batches come from one torch::Generator seeded with options.seed whose state is part
// of every checkpoint, and all math is on CPU tensors, so the same seed, data, initial weights and
// thread count give byte-identical weights, interrupted-and-resumed or not.
//
// Data parallel: when this process belongs to a c10d group (train/distributed.h: WORLD_SIZE > 1,
// connected by dist::init_from_environment()), the same loop trains one model over all ranks.
// The global batch is the one the options give (batch rows × grad_accum micro-batches per step,
// whatever the process count): every rank draws the same batch and keeps its own contiguous
// 1/world_size of the rows (batch must divide evenly), so a run gives the same updates as one
// process up to float reassociation. After the backward pass of the last micro-batch the
// gradients are averaged over the ranks in ~25 MB buckets (the loss and token count travel with
// them), so every rank clips and steps identically. At the start of train() rank 0's trainable
// weights, optimizer moments, sampler state and progress (resumed or fresh) are broadcast and
// every rank checks that its frozen weights hash to rank 0's. Only rank 0 validates (the value is
// broadcast) and writes checkpoints (with every rank's dropout generator state); Ctrl-C on any
// rank stops all of them at the same step. Dropout draws from seed + rank.
#pragma once
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "train/distributed.h"

namespace llmopt::train {

struct TrainerOptions {
  int64_t steps = 1000;        // optimizer steps in the whole run (the schedule spans them)
  int64_t batch = 16;          // sequences per micro-batch
  int64_t grad_accum = 1;      // micro-batches per optimizer step (gradients averaged)
  int64_t seq_len = 128;       // predicted positions per sequence (windows hold seq_len + 1 tokens)
  double lr = 1e-3;            // peak learning rate, reached at the end of warmup
  double min_lr = 1e-4;        // learning rate at the last step of the linear / cosine decay
  int64_t warmup = 100;        // steps of linear warmup
  std::string schedule = "cosine";  // after warmup: constant | linear | cosine (to min_lr)
  double weight_decay = 0.1;   // decoupled (AdamW), only on parameters with 2 or more dims
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;      // max global L2 norm of the gradients; 0 = no clipping
  uint64_t seed = 0;           // seeds the batch sampler
  int64_t log_every = 10;      // progress callback period in steps (the last step always reports)
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0 = only on cancellation
  std::string checkpoint_dir;    // where checkpoints go; empty = never write any
  int64_t keep_checkpoints = 1;  // newest checkpoints kept in checkpoint_dir
  int64_t eval_every = 0;        // steps between validations (needs a ValidationFn); 0 = never
  // Early stopping: stop after this many validations in a row without a new best loss; 0 = never.
  int64_t patience = 0;
  // A checkpoint to continue from: a step directory, or a checkpoint_dir (its newest step is
  // used). Empty = start at step 0.
  std::string resume_from;

  // Throws InputError "[train] <option>: ..." for out-of-range values.
  void validate() const;
};

// Learning rate used for the update of step `step` (0-based): linear warmup lr*(step+1)/warmup
// for step < warmup, then (schedule) constant lr, or a linear or cosine decay from lr to min_lr
// reaching min_lr at step == steps-1.
double learning_rate_at(const TrainerOptions& options, int64_t step);

// A token stream cut into random windows: the dataset of pretraining-style training.
class TokenDataset {
 public:
  explicit TokenDataset(std::vector<int64_t> tokens);
  // [batch, seq_len + 1] int64 windows starting at offsets drawn uniformly from rng. Throws
  // InputError when the stream is shorter than seq_len + 1 tokens.
  torch::Tensor sample(int64_t batch, int64_t seq_len, torch::Generator& rng) const;
  int64_t size() const { return tokens_.numel(); }

 private:
  torch::Tensor tokens_;  // [N] int64
};

// Draws one batch; the trainer passes its generator so the draw is reproducible and checkpointed.
using BatchFn = std::function<torch::Tensor(torch::Generator& rng)>;
// Batch number `index` (0-based count of micro-batches drawn in the run, the data position kept in
// checkpoints) of a deterministic data order, e.g. shuffled epochs over packed blocks.
using IndexedBatchFn = std::function<torch::Tensor(int64_t index, torch::Generator& rng)>;
// Validation loss (mean next-token loss over the validation set), called in eval mode without grad.
using ValidationFn = std::function<double()>;
// Scalar loss of a batch; the trainer calls backward() on it.
using LossFn = std::function<torch::Tensor(const torch::Tensor& batch)>;

// Mean next-token cross entropy (nats): batch [B, T+1] int64, inputs batch[:, :T], targets
// batch[:, 1:].
LossFn next_token_loss(model::LlamaModel& model);

struct TrainProgress {
  int64_t step = 0;    // steps completed (1-based)
  int64_t steps = 0;   // total steps of the run
  double loss = 0;     // loss of the last step
  double lr = 0;       // learning rate of the last step
  double tokens_per_second = 0;  // since this call of train() started
  double seconds = 0;            // wall time since this call of train() started
  double grad_norm = 0;          // global L2 norm of the gradients before clipping
  double val_loss = NAN;         // validation loss when this step validated, else NaN
  int64_t tokens = 0;            // predicted positions of this step (all micro-batches)
};
using ProgressFn = std::function<void(const TrainProgress&)>;

struct TrainResult {
  double final_loss = 0;          // mean loss of the last max(1, steps/20) steps of the run
  std::vector<double> loss_curve;  // loss of every step run so far, resumed steps included
  int64_t tokens_seen = 0;        // predicted positions over all steps (B * T per step)
  double seconds = 0;             // wall time of this call
  int64_t steps_done = 0;         // steps completed, resumed ones included
  int64_t resumed_from_step = 0;  // 0 for a fresh run
  bool cancelled = false;
  bool stopped_early = false;     // early stopping ended the run before options.steps
  std::vector<std::pair<int64_t, double>> val_curve;  // (step, validation loss), resumed included
  double best_val_loss = NAN;
  std::string last_checkpoint;    // directory of the newest checkpoint written, if any
};

class Trainer {
 public:
  // Trains the parameters of `module` that require grad. The module must outlive the trainer.
  Trainer(torch::nn::Module& module, LossFn loss, TrainerOptions options);
  ~Trainer();

  TrainResult train(const BatchFn& next_batch, const ProgressFn& progress = {},
                    const std::atomic<bool>* cancel = nullptr);
  TrainResult train(const IndexedBatchFn& batch_at, const ProgressFn& progress = {},
                    const std::atomic<bool>* cancel = nullptr);
  // Validation run every options.eval_every steps (and checked for early stopping).
  void set_validation(ValidationFn fn) { validate_ = std::move(fn); }
  // Called after every step with its metrics (ProgressFn is called every log_every steps).
  void set_step_callback(ProgressFn fn) { on_step_ = std::move(fn); }
  // Random windows of options.seq_len + 1 tokens, options.batch per step.
  TrainResult train(const TokenDataset& data, const ProgressFn& progress = {},
                    const std::atomic<bool>* cancel = nullptr);

  // Writes <checkpoint_dir>/step-NNNNNNNN atomically (temporary directory, then rename) and
  // returns its path. Contents: model.pt (module parameters and buffers), optimizer.pt (AdamW
  // moments and step counts), rng.pt (sampler generator state), torch_rng.pt (torch's default CPU
  // generator: dropout), trainer_state.json (step, data position, loss and validation curves,
  // early-stopping state, tokens seen, options).
  std::string save_checkpoint(const std::string& checkpoint_dir);
  // Data parallel: collective (every rank calls it at the same step); rank 0 writes and returns the
  // path, other ranks return "".
  // Restores everything save_checkpoint wrote; `path` is a step directory or a checkpoint_dir.
  void load_checkpoint(const std::string& path);

  int64_t step() const { return step_; }
  int64_t data_position() const { return data_position_; }
  const TrainerOptions& options() const { return options_; }

 private:
  torch::nn::Module& module_;
  LossFn loss_;
  TrainerOptions options_;
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  torch::Generator rng_;
  int64_t step_ = 0;
  std::vector<double> loss_curve_;
  int64_t tokens_seen_ = 0;
  int64_t data_position_ = 0;  // micro-batches drawn so far
  std::vector<std::pair<int64_t, double>> val_curve_;
  double best_val_ = INFINITY;
  int64_t bad_evals_ = 0;  // validations since the best one
  bool stopped_early_ = false;
  ValidationFn validate_;
  ProgressFn on_step_;
  // Data parallel (null / undefined with one process).
  dist::ProcessGroup* group_ = nullptr;
  std::unique_ptr<dist::GradientAverager> averager_;
  torch::Tensor rank_torch_rng_;  // [world, state bytes]: every rank's dropout generator at the checkpoint

  std::string state_text() const;  // step, data position, curves ... as JSON
  void apply_state_text(const std::string& text, const std::string& where);
  void sync_ranks();  // rank 0's state to every rank, frozen weights checked
};

// The newest complete checkpoint under checkpoint_dir ("" when there is none).
std::string latest_checkpoint(const std::string& checkpoint_dir);

}  // namespace llmopt::train
