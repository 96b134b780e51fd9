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
#include <unordered_set>

#include "core/error.h"
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

LossFn next_token_loss(model::LlamaModel& model) {
  return [&model](const torch::Tensor& batch) {
    LLMOPT_CHECK_INPUT(batch.dim() == 2 && batch.size(1) >= 2,
                       "[train] next-token batch must be [B, T+1] with T >= 1, found {} dims",
                       batch.dim());
    const torch::Tensor tokens = batch.to(model.device());
    const torch::Tensor inputs = tokens.slice(1, 0, -1).contiguous();  // [B, T]
    const torch::Tensor targets = tokens.slice(1, 1).contiguous();     // [B, T]
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
  if (!options_.resume_from.empty()) load_checkpoint(options_.resume_from);
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
  result.resumed_from_step = step_;
  // Dropout draws from torch's default generator: seeded here for a fresh run, restored from the
  // checkpoint for a resumed one.
  if (step_ == 0) {
    at::Generator g = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_current_seed(options_.seed);
  }
  const Timer timer;
  int64_t tokens_this_call = 0;
  double last_loss = 0, last_lr = 0;
  module_.train();
  while (step_ < options_.steps && !stopped_early_) {
    if (cancel && cancel->load()) {
      result.cancelled = true;
      break;
    }
    last_lr = learning_rate_at(options_, step_);
    for (auto& group : optimizer_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(last_lr);
    }
    optimizer_->zero_grad();
    // Gradient accumulation: the mean of the micro-batch losses, each backward scaled by 1/n.
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      const torch::Tensor batch = batch_at(data_position_, rng_);
      ++data_position_;
      const torch::Tensor loss = loss_(batch);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {
        throw_run("[train] loss is {} at step {} (lr {}); lower lr or check the data", value, step_ + 1,
                  last_lr);
      }
      loss_sum += value;
      (options_.grad_accum > 1 ? loss / static_cast<double>(options_.grad_accum) : loss).backward();
      tokens += predicted_positions(batch);
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
      {
        torch::NoGradGuard no_grad;
        module_.eval();
        val_loss = validate_();
        module_.train();
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
    nlohmann::json val = nlohmann::json::array();
    for (const auto& [st, v] : val_curve_) val.push_back({st, v});
    nlohmann::json state = {{"step", step_},
                            {"tokens_seen", tokens_seen_},
                            {"data_position", data_position_},
                            {"loss_curve", loss_curve_},
                            {"val_curve", val},
                            {"best_val_loss", std::isfinite(best_val_) ? nlohmann::json(best_val_) : nlohmann::json()},
                            {"bad_evals", bad_evals_},
                            {"stopped_early", stopped_early_},
                            {"options", options_json(options_)}};
    // The state file is written last: a step directory without it is never taken as complete.
    std::ofstream out(tmp_dir / kStateFile);
    out << state.dump(1) << "\n";
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
  nlohmann::json state;
  try {
    std::ifstream in(dir / kStateFile);
    state = nlohmann::json::parse(in);
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
    throw_input("[train] {}: malformed trainer state: {}", (dir / kStateFile).string(), e.what());
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
  } catch (const c10::Error& e) {
    throw_input("[train] {}: checkpoint does not match this model/optimizer: {}", dir.string(),
                e.what_without_backtrace());
  }
}

}  // namespace llmopt::train
