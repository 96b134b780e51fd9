#include "train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <mutex>
#include <sstream>
#include <unordered_set>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"

namespace llmopt::train {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStepPrefix = "step-";
constexpr const char* kStateFile = "trainer_state.json";

std::string step_dir_name(int64_t step) { return fmt::format("{}{:08d}", kStepPrefix, step); }

// Step of a directory named step-NNNNNNNN, or -1.
int64_t step_of_dir_name(const std::string& name) {
  if (name.rfind(kStepPrefix, 0) != 0) return -1;
  const std::string digits = name.substr(std::strlen(kStepPrefix));
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoll(digits);
}

std::vector<std::pair<int64_t, fs::path>> complete_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const int64_t step = step_of_dir_name(entry.path().filename().string());
    if (step >= 0 && fs::exists(entry.path() / kStateFile)) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

nlohmann::json options_json(const TrainerOptions& o) {
  return {{"steps", o.steps},         {"batch", o.batch},
          {"seq_len", o.seq_len},     {"lr", o.lr},
          {"min_lr", o.min_lr},       {"warmup", o.warmup},
          {"weight_decay", o.weight_decay}, {"beta1", o.beta1},
          {"beta2", o.beta2},         {"eps", o.eps},
          {"grad_clip", o.grad_clip}, {"seed", o.seed},
          {"grad_accum", o.grad_accum}, {"schedule", o.schedule},
          {"eval_every", o.eval_every}, {"patience", o.patience}};
}

int64_t predicted_positions(const torch::Tensor& batch) {
  if (batch.dim() == 3 && batch.size(1) == 2) return batch.select(1, 1).slice(1, 1).sum().item<int64_t>();  // masked
  return batch.dim() == 2 ? batch.size(0) * (batch.size(1) - 1) : batch.numel();
}

}  // namespace

void TrainerOptions::validate() const {
  LLMOPT_CHECK_INPUT(steps > 0, "[train] steps must be positive, found {}", steps);
  LLMOPT_CHECK_INPUT(batch > 0, "[train] batch must be positive, found {}", batch);
  LLMOPT_CHECK_INPUT(seq_len > 0, "[train] seq_len must be positive, found {}", seq_len);
  LLMOPT_CHECK_INPUT(lr > 0 && std::isfinite(lr), "[train] lr must be positive, found {}", lr);
  LLMOPT_CHECK_INPUT(min_lr >= 0 && min_lr <= lr, "[train] min_lr must be in [0, lr={}], found {}", lr,
                     min_lr);
  LLMOPT_CHECK_INPUT(warmup >= 0, "[train] warmup must be >= 0, found {}", warmup);
  LLMOPT_CHECK_INPUT(weight_decay >= 0, "[train] weight_decay must be >= 0, found {}", weight_decay);
  LLMOPT_CHECK_INPUT(beta1 >= 0 && beta1 < 1, "[train] beta1 must be in [0, 1), found {}", beta1);
  LLMOPT_CHECK_INPUT(beta2 >= 0 && beta2 < 1, "[train] beta2 must be in [0, 1), found {}", beta2);
  LLMOPT_CHECK_INPUT(eps > 0, "[train] eps must be positive, found {}", eps);
  LLMOPT_CHECK_INPUT(grad_clip >= 0, "[train] grad_clip must be >= 0 (0 = off), found {}", grad_clip);
  LLMOPT_CHECK_INPUT(log_every >= 0, "[train] log_every must be >= 0, found {}", log_every);
  LLMOPT_CHECK_INPUT(checkpoint_every >= 0, "[train] checkpoint_every must be >= 0, found {}",
                     checkpoint_every);
  LLMOPT_CHECK_INPUT(checkpoint_every == 0 || !checkpoint_dir.empty(),
                     "[train] checkpoint_every is {} but checkpoint_dir is empty", checkpoint_every);
  LLMOPT_CHECK_INPUT(grad_accum >= 1, "[train] grad_accum must be >= 1, found {}", grad_accum);
  LLMOPT_CHECK_INPUT(schedule == "constant" || schedule == "linear" || schedule == "cosine",
                     "[train] schedule must be constant, linear or cosine, found '{}'", schedule);
  LLMOPT_CHECK_INPUT(eval_every >= 0, "[train] eval_every must be >= 0, found {}", eval_every);
  LLMOPT_CHECK_INPUT(patience >= 0, "[train] patience must be >= 0, found {}", patience);
  LLMOPT_CHECK_INPUT(patience == 0 || eval_every > 0, "[train] patience {} needs eval_every > 0", patience);
  LLMOPT_CHECK_INPUT(keep_checkpoints >= 1, "[train] keep_checkpoints must be >= 1, found {}",
                     keep_checkpoints);
}

double learning_rate_at(const TrainerOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const int64_t decay_steps = o.steps - 1 - o.warmup;
  if (decay_steps <= 0 || o.schedule == "constant") return o.lr;
  const double progress =
      std::clamp(static_cast<double>(step - o.warmup) / static_cast<double>(decay_steps), 0.0, 1.0);
  if (o.schedule == "linear") return o.lr + (o.min_lr - o.lr) * progress;
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

TokenDataset::TokenDataset(std::vector<int64_t> tokens)
    : tokens_(torch::tensor(tokens, torch::kInt64)) {}

torch::Tensor TokenDataset::sample(int64_t batch, int64_t seq_len, torch::Generator& rng) const {
  LLMOPT_CHECK_INPUT(size() >= seq_len + 1,
                     "[train] dataset has {} tokens, fewer than one window of seq_len + 1 = {}",
                     size(), seq_len + 1);
  // Window starts in [0, N - seq_len - 1] so every window holds seq_len + 1 tokens.
  const torch::Tensor starts = torch::randint(0, size() - seq_len, {batch}, rng, torch::kInt64);
  const torch::Tensor index = starts.unsqueeze(1) + torch::arange(seq_len + 1, torch::kInt64);
  return tokens_.index({index});  // [batch, seq_len + 1]
}

namespace {

// Mean cross entropy of the logits h·Wᵀ (h [N, D], W [V, D] frozen) against targets [N], with the
// gradient d loss / d h computed in the same pass, a block of rows at a time: the [N, V] logits,
// their log-softmax and its gradient (three fresh tensors of 412 MB each at 8 x 256 tokens and a
// 50k vocabulary, every page of them faulted in anew each step) never exist; one [rows, V] block
// is reused in place (logits -> softmax -> softmax - onehot) and multiplied back by W. Same
// arithmetic as cross_entropy(h·Wᵀ) up to float reassociation; W gets no gradient.
class FrozenHeadCrossEntropy : public torch::autograd::Function<FrozenHeadCrossEntropy> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& w,
                               const torch::Tensor& targets) {
    const int64_t n = h.size(0), vocab = w.size(0);
    const bool need_grad = ctx->needs_input_grad(0);
    const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(vocab, 1));
    torch::Tensor grad_h = need_grad ? torch::empty_like(h) : torch::Tensor();
    torch::Tensor loss = torch::zeros({}, h.options().dtype(torch::kFloat64));
    const double inv_n = 1.0 / static_cast<double>(n);
    for (int64_t r = 0; r < n; r += rows) {
      const int64_t m = std::min(rows, n - r);
      const torch::Tensor hc = h.narrow(0, r, m);
      const torch::Tensor tc = targets.narrow(0, r, m).unsqueeze(1);  // [m, 1]
      torch::Tensor block = torch::mm(hc, w.t());                     // logits [m, V]
      const torch::Tensor lse = block.logsumexp(1, /*keepdim=*/true);  // [m, 1]
      loss += (lse - block.gather(1, tc)).sum().to(torch::kFloat64);
      if (!need_grad) continue;
      block.sub_(lse).exp_();                                          // softmax
      block.scatter_add_(1, tc, torch::full({m, 1}, -1.0, block.options()));  // - onehot
      block.mul_(inv_n);
      torch::Tensor out = grad_h.narrow(0, r, m);  // a view: mm_out writes into grad_h
      torch::mm_out(out, block, w);
    }
    ctx->save_for_backward({grad_h});
    return (loss * inv_n).to(h.scalar_type());
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const torch::Tensor grad_h = ctx->get_saved_variables()[0];
    return {grad_h.defined() ? grad_h * grad_out[0] : torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

LossFn next_token_loss(model::LlamaModel& model) {
  return [&model](const torch::Tensor& batch) {
    LLMOPT_CHECK_INPUT(batch.dim() == 2 && batch.size(1) >= 2,
                       "[train] next-token batch must be [B, T+1] with T >= 1, found {} dims",
                       batch.dim());
    const torch::Tensor tokens = batch.to(model.device());
    const torch::Tensor inputs = tokens.slice(1, 0, -1).contiguous();  // [B, T]
    const torch::Tensor targets = tokens.slice(1, 1).contiguous();     // [B, T]
    // A frozen output head tied to the embedding (LoRA, QLoRA, DoRA, prompt learning): the
    // blockwise loss above; else (full fine-tuning, an untied head) the plain logits.
    const torch::Tensor& w = model.embed_tokens();
    if (model.config().tie_word_embeddings && !w.requires_grad() && torch::GradMode::is_enabled()) {
      const torch::Tensor h = model.forward_hidden(inputs);  // [B, T, D]
      return FrozenHeadCrossEntropy::apply(h.reshape({-1, h.size(-1)}), w.to(h.scalar_type()),
                                           targets.reshape({-1}));
    }
    const torch::Tensor logits = model.forward(inputs);                // [B, T, V]
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                targets.reshape({-1}));
  };
}

Trainer::Trainer(torch::nn::Module& module, LossFn loss, TrainerOptions options)
    : module_(module),
      loss_(std::move(loss)),
      options_(std::move(options)),
      rng_(at::make_generator<at::CPUGeneratorImpl>(options_.seed)) {
  options_.validate();
  // Tied weights appear once per name; AdamW must see each tensor once or it would step twice.
  std::unordered_set<const void*> seen;
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& item : module_.named_parameters(/*recurse=*/true)) {
    const torch::Tensor& p = item.value();
    if (!p.requires_grad() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
    trainable_.push_back(p);
    (p.dim() >= 2 ? decay : no_decay).push_back(p);
  }
  LLMOPT_CHECK_INPUT(!trainable_.empty(), "[train] the module has no parameter that requires grad");
  auto group_options = [&](double weight_decay) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(options_.lr);
    o->betas({options_.beta1, options_.beta2}).eps(options_.eps).weight_decay(weight_decay);
    return o;
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  // Both groups always exist (possibly empty) so checkpoints of one module always match.
  groups.emplace_back(decay, group_options(options_.weight_decay));
  groups.emplace_back(no_decay, group_options(0.0));
  optimizer_ = std::make_unique<torch::optim::AdamW>(groups, *group_options(options_.weight_decay));
  group_ = dist::world();
  if (group_ != nullptr && group_->size() > 1) {
    averager_ = std::make_unique<dist::GradientAverager>(trainable_);
  } else {
    group_ = nullptr;
  }
  if (!options_.resume_from.empty()) load_checkpoint(options_.resume_from);
}

Trainer::~Trainer() = default;

void Trainer::sync_ranks() {
  const int rank = group_->rank(), world = group_->size();
  // The frozen weights and buffers must agree (every rank loaded the same model); trainable ones
  // are broadcast.
  std::unordered_set<const void*> trainable;
  for (const auto& p : trainable_) trainable.insert(p.unsafeGetTensorImpl());
  std::vector<torch::Tensor> frozen;
  for (const auto& p : module_.parameters(/*recurse=*/true))
    if (!trainable.count(p.unsafeGetTensorImpl())) frozen.push_back(p);
  for (const auto& b : module_.buffers(/*recurse=*/true)) frozen.push_back(b);  // packed / NF4 bases
  const auto hashes = torch::tensor({static_cast<int64_t>(dist::weights_hash(frozen)),
                                     static_cast<int64_t>(dist::weights_hash(trainable_))},
                                    torch::kInt64);
  const auto all = group_->allgather(hashes);
  int differing_trainable = 0;
  for (int r = 1; r < world; ++r) {
    LLMOPT_CHECK_INPUT(all[r][0].item<int64_t>() == all[0][0].item<int64_t>(),
                       "[train] rank {}'s frozen weights differ from rank 0's: every rank must load the same model",
                       r);
    differing_trainable += all[r][1].item<int64_t>() != all[0][1].item<int64_t>();
  }
  if (rank == 0 && differing_trainable > 0)
    log::warn("[train] trainable weights differed on {} rank(s) before training; rank 0's are used", differing_trainable);
  // Rank 0's trainable weights, optimizer, sampler and progress (fresh or resumed) to every rank.
  std::string blob;
  if (rank == 0) {
    torch::serialize::OutputArchive a;
    for (size_t i = 0; i < trainable_.size(); ++i) a.write(fmt::format("param{}", i), trainable_[i].detach());
    torch::serialize::OutputArchive opt;
    optimizer_->save(opt);
    a.write("optimizer", opt);
    a.write("rng", rng_.get_state());
    if (rank_torch_rng_.defined()) a.write("torch_rng_ranks", rank_torch_rng_);
    const std::string text = state_text();
    a.write("state", torch::from_blob(const_cast<char*>(text.data()), {static_cast<int64_t>(text.size())},
                                      torch::kUInt8).clone());
    std::ostringstream os;
    a.save_to(os);
    blob = os.str();
  }
  blob = group_->broadcast_bytes(blob);
  if (rank != 0) {
    std::istringstream is(blob);
    torch::serialize::InputArchive a;
    a.load_from(is);
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < trainable_.size(); ++i) {
        torch::Tensor t;
        a.read(fmt::format("param{}", i), t);
        trainable_[i].copy_(t);
      }
    }
    torch::serialize::InputArchive opt;
    a.read("optimizer", opt);
    optimizer_->load(opt);
    // A fresh tensor for every read: reading into a defined tensor re-points it (Tensor::set_).
    torch::Tensor rng_state, ranks_rng, state;
    a.read("rng", rng_state);
    rng_.set_state(rng_state);
    rank_torch_rng_ = a.try_read("torch_rng_ranks", ranks_rng) ? ranks_rng : torch::Tensor();
    a.read("state", state);
    apply_state_text(std::string(static_cast<const char*>(state.data_ptr()), static_cast<size_t>(state.numel())),
                     "rank 0's trainer state");
  }
}

TrainResult Trainer::train(const TokenDataset& data, const ProgressFn& progress,
                           const std::atomic<bool>* cancel) {
  const int64_t batch = options_.batch, seq_len = options_.seq_len;
  return train([&](torch::Generator& rng) { return data.sample(batch, seq_len, rng); }, progress,
               cancel);
}

TrainResult Trainer::train(const BatchFn& next_batch, const ProgressFn& progress,
                           const std::atomic<bool>* cancel) {
  return train([&](int64_t, torch::Generator& rng) { return next_batch(rng); }, progress, cancel);
}

TrainResult Trainer::train(const IndexedBatchFn& batch_at, const ProgressFn& progress,
                           const std::atomic<bool>* cancel) {
  TrainResult result;
  // Dropout draws from torch's default generator: seeded here for a fresh run, restored from the
  // checkpoint for a resumed one.
  const int rank = group_ ? group_->rank() : 0, world = group_ ? group_->size() : 1;
  if (group_) sync_ranks();
  result.resumed_from_step = step_;
  if (step_ == 0) {
    at::Generator g = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_current_seed(options_.seed + static_cast<uint64_t>(rank));
  } else if (rank > 0) {
    // Rank 0 restored its own generator from the checkpoint; the others take their row of it.
    at::Generator g = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(g.mutex());
    if (rank_torch_rng_.defined() && rank_torch_rng_.size(0) == world) {
      g.set_state(rank_torch_rng_[rank].clone());
    } else {
      g.set_current_seed(options_.seed + static_cast<uint64_t>(rank) + 1000003ULL * static_cast<uint64_t>(step_));
      if (rank == 1) log::warn("[train] the checkpoint has no dropout state for {} ranks: ranks > 0 reseed", world);
    }
  }
  const Timer timer;
  int64_t tokens_this_call = 0;
  double last_loss = 0, last_lr = 0;
  module_.train();
  while (step_ < options_.steps && !stopped_early_) {
    bool stop = cancel && cancel->load();
    if (group_) stop = group_->any(stop);  // every rank stops at the same step
    if (stop) {
      result.cancelled = true;
      break;
    }
    last_lr = learning_rate_at(options_, step_);
    for (auto& group : optimizer_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(last_lr);
    }
    optimizer_->zero_grad();
    // Gradient accumulation: the mean of the micro-batch losses, each backward scaled by 1/n.
    // Data parallel: each rank takes its contiguous share of every micro-batch's rows.
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      torch::Tensor batch = batch_at(data_position_, rng_);
      ++data_position_;
      if (group_) {
        const int64_t rows = batch.size(0);
        LLMOPT_CHECK_INPUT(rows % world == 0,
                           "[train] a batch of {} rows does not split evenly over {} processes: make batch_size a "
                           "multiple of the process count",
                           rows, world);
        batch = batch.slice(0, rows / world * rank, rows / world * (rank + 1));
      }
      const torch::Tensor loss = loss_(batch);
      const double value = loss.item<double>();
      if (!std::isfinite(value) && !group_) {
        throw_run("[train] loss is {} at step {} (lr {}); lower lr or check the data", value, step_ + 1,
                  last_lr);
      }
      loss_sum += value;
      if (std::isfinite(value))
        (options_.grad_accum > 1 ? loss / static_cast<double>(options_.grad_accum) : loss).backward();
      tokens += predicted_positions(batch);
    }
    if (group_) {
      // Gradients averaged over the ranks; the loss (mean of the ranks' means) and the token count
      // summed in the same round trip. A non-finite loss on any rank stops every rank here.
      torch::Tensor extra = torch::tensor({loss_sum, static_cast<double>(tokens)}, torch::kFloat64);
      averager_->average(*group_, &extra);
      loss_sum = extra[0].item<double>() / static_cast<double>(world);
      tokens = static_cast<int64_t>(std::llround(extra[1].item<double>()));
      if (!std::isfinite(loss_sum)) {
        throw_run("[train] loss is {} at step {} (lr {}) on at least one rank; lower lr or check the data", loss_sum,
                  step_ + 1, last_lr);
      }
    }
    last_loss = loss_sum / static_cast<double>(options_.grad_accum);
    double grad_norm = 0;
    if (options_.grad_clip > 0) {
      grad_norm = torch::nn::utils::clip_grad_norm_(trainable_, options_.grad_clip);
    } else {
      double sq = 0;
      for (const auto& p : trainable_)
        if (p.grad().defined()) sq += p.grad().detach().to(torch::kFloat64).pow(2).sum().item<double>();
      grad_norm = std::sqrt(sq);
    }
    optimizer_->step();
    ++step_;
    loss_curve_.push_back(last_loss);
    tokens_seen_ += tokens;
    tokens_this_call += tokens;
    const bool last = step_ == options_.steps;
    double val_loss = NAN;
    if (validate_ && options_.eval_every > 0 && (step_ % options_.eval_every == 0 || last)) {
      if (rank == 0) {
        torch::NoGradGuard no_grad;
        module_.eval();
        val_loss = validate_();
        module_.train();
      }
      if (group_) {  // rank 0's value, so that every rank takes the same early-stopping decision
        torch::Tensor v = torch::tensor({val_loss}, torch::kFloat64);
        group_->broadcast(v);
        val_loss = v.item<double>();
      }
      val_curve_.emplace_back(step_, val_loss);
      if (val_loss < best_val_) {
        best_val_ = val_loss;
        bad_evals_ = 0;
      } else if (++bad_evals_ >= options_.patience && options_.patience > 0) {
        stopped_early_ = true;
      }
    }
    const double seconds = timer.seconds();
    TrainProgress p{step_,
                    options_.steps,
                    last_loss,
                    last_lr,
                    seconds > 0 ? static_cast<double>(tokens_this_call) / seconds : 0.0,
                    seconds,
                    grad_norm,
                    val_loss,
                    tokens};
    if (on_step_) on_step_(p);
    if (progress && (last || stopped_early_ || (options_.log_every > 0 && step_ % options_.log_every == 0))) {
      progress(p);
    }
    if ((options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0) ||
        (stopped_early_ && !options_.checkpoint_dir.empty())) {
      result.last_checkpoint = save_checkpoint(options_.checkpoint_dir);
    }
  }
  if (result.cancelled && !options_.checkpoint_dir.empty() && step_ > result.resumed_from_step) {
    result.last_checkpoint = save_checkpoint(options_.checkpoint_dir);
  }
  result.loss_curve = loss_curve_;
  result.tokens_seen = tokens_seen_;
  result.steps_done = step_;
  result.seconds = timer.seconds();
  result.stopped_early = stopped_early_;
  result.val_curve = val_curve_;
  result.best_val_loss = val_curve_.empty() ? NAN : best_val_;
  const size_t tail = std::max<size_t>(1, loss_curve_.size() / 20);
  if (!loss_curve_.empty()) {
    const size_t n = std::min(tail, loss_curve_.size());
    double sum = 0;
    for (size_t i = loss_curve_.size() - n; i < loss_curve_.size(); ++i) sum += loss_curve_[i];
    result.final_loss = sum / static_cast<double>(n);
  }
  return result;
}

std::string Trainer::save_checkpoint(const std::string& checkpoint_dir) {
  LLMOPT_CHECK_INPUT(!checkpoint_dir.empty(), "[train] save_checkpoint: checkpoint_dir is empty");
  torch::Tensor ranks_rng;  // every rank's dropout generator, for a bit-exact resume
  if (group_) {
    ranks_rng = torch::stack(group_->allgather(at::detail::getDefaultCPUGenerator().get_state()));
    if (group_->rank() != 0) return std::string();
  }
  const fs::path root(checkpoint_dir);
  fs::create_directories(root);
  const fs::path final_dir = root / step_dir_name(step_);
  const fs::path tmp_dir = root / fmt::format(".tmp-{}-{}", step_dir_name(step_), ::getpid());
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);
  try {
    {
      torch::serialize::OutputArchive archive;
      module_.save(archive);
      archive.save_to((tmp_dir / "model.pt").string());
    }
    {
      torch::serialize::OutputArchive archive;
      optimizer_->save(archive);
      archive.save_to((tmp_dir / "optimizer.pt").string());
    }
    torch::save(rng_.get_state(), (tmp_dir / "rng.pt").string());
    torch::save(at::detail::getDefaultCPUGenerator().get_state(), (tmp_dir / "torch_rng.pt").string());
    if (ranks_rng.defined()) torch::save(ranks_rng, (tmp_dir / "torch_rng_ranks.pt").string());
    // The state file is written last: a step directory without it is never taken as complete.
    std::ofstream out(tmp_dir / kStateFile);
    out << state_text() << "\n";
    out.flush();
    if (!out.good()) throw_run("[train] {}: write failed", (tmp_dir / kStateFile).string());
  } catch (...) {
    fs::remove_all(tmp_dir);
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  // Drop the oldest checkpoints beyond keep_checkpoints.
  auto all = complete_checkpoints(root);
  const int64_t excess = static_cast<int64_t>(all.size()) - options_.keep_checkpoints;
  for (int64_t i = 0; i < excess; ++i) fs::remove_all(all[i].second);
  return final_dir.string();
}

std::string latest_checkpoint(const std::string& checkpoint_dir) {
  auto all = complete_checkpoints(checkpoint_dir);
  return all.empty() ? std::string() : all.back().second.string();
}

void Trainer::load_checkpoint(const std::string& path) {
  fs::path dir(path);
  if (!fs::exists(dir / kStateFile)) {
    const std::string latest = latest_checkpoint(path);
    LLMOPT_CHECK_INPUT(!latest.empty(),
                       "[train] resume_from '{}': no checkpoint found (expected {} or {}NNNNNNNN/{})",
                       path, kStateFile, kStepPrefix, kStateFile);
    dir = latest;
  }
  {
    std::ifstream in(dir / kStateFile);
    std::stringstream text;
    text << in.rdbuf();
    apply_state_text(text.str(), (dir / kStateFile).string());
  }
  LLMOPT_CHECK_INPUT(step_ >= 0 && step_ <= options_.steps &&
                         static_cast<int64_t>(loss_curve_.size()) == step_,
                     "[train] {}: checkpoint at step {} with {} losses does not fit a run of {} steps",
                     dir.string(), step_, loss_curve_.size(), options_.steps);
  try {
    {
      torch::serialize::InputArchive archive;
      archive.load_from((dir / "model.pt").string());
      module_.load(archive);
    }
    {
      torch::serialize::InputArchive archive;
      archive.load_from((dir / "optimizer.pt").string());
      optimizer_->load(archive);
    }
    torch::Tensor rng_state;
    torch::load(rng_state, (dir / "rng.pt").string());
    rng_.set_state(rng_state);
    if (fs::exists(dir / "torch_rng.pt")) {
      torch::Tensor torch_rng;
      torch::load(torch_rng, (dir / "torch_rng.pt").string());
      at::Generator g = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(torch_rng);
    }
    rank_torch_rng_ = torch::Tensor();
    if (fs::exists(dir / "torch_rng_ranks.pt")) torch::load(rank_torch_rng_, (dir / "torch_rng_ranks.pt").string());
  } catch (const c10::Error& e) {
    throw_input("[train] {}: checkpoint does not match this model/optimizer: {}", dir.string(),
                e.what_without_backtrace());
  }
}

std::string Trainer::state_text() const {
  nlohmann::json val = nlohmann::json::array();
  for (const auto& [st, v] : val_curve_) val.push_back({st, v});
  const nlohmann::json state = {
      {"step", step_},
      {"tokens_seen", tokens_seen_},
      {"data_position", data_position_},
      {"loss_curve", loss_curve_},
      {"val_curve", val},
      {"best_val_loss", std::isfinite(best_val_) ? nlohmann::json(best_val_) : nlohmann::json()},
      {"bad_evals", bad_evals_},
      {"stopped_early", stopped_early_},
      {"world_size", group_ ? group_->size() : 1},
      {"options", options_json(options_)}};
  return state.dump(1);
}

void Trainer::apply_state_text(const std::string& text, const std::string& where) {
  try {
    const nlohmann::json state = nlohmann::json::parse(text);
    step_ = state.at("step").get<int64_t>();
    tokens_seen_ = state.at("tokens_seen").get<int64_t>();
    loss_curve_ = state.at("loss_curve").get<std::vector<double>>();
    data_position_ = state.value("data_position", step_ * options_.grad_accum);
    val_curve_.clear();
    for (const auto& v : state.value("val_curve", nlohmann::json::array()))
      val_curve_.emplace_back(v.at(0).get<int64_t>(), v.at(1).get<double>());
    best_val_ = state.contains("best_val_loss") && state["best_val_loss"].is_number()
                    ? state["best_val_loss"].get<double>()
                    : INFINITY;
    bad_evals_ = state.value("bad_evals", int64_t{0});
    stopped_early_ = state.value("stopped_early", false);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[train] {}: malformed trainer state: {}", where, e.what());
  }
}

}  // namespace llmopt::train
