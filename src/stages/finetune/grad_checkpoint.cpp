#include "stages/finetune/grad_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "core/error.h"

namespace llmopt::stages {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

model::LlamaModel::LayerInputs inputs_from(AutogradContext* ctx) {
  model::LlamaModel::LayerInputs in;
  in.cos = ctx->saved_data["cos"].toTensor();
  in.sin = ctx->saved_data["sin"].toTensor();
  if (ctx->saved_data.count("mask")) in.mask = ctx->saved_data["mask"].toTensor();
  in.T = ctx->saved_data["T"].toInt();
  in.pos0 = ctx->saved_data["pos0"].toInt();
  return in;
}

torch::Tensor rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const torch::Tensor& s) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

struct CheckpointedLayer : torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t model, int64_t li, torch::Tensor cos,
                               torch::Tensor sin, torch::Tensor mask, int64_t T, int64_t pos0) {
    auto* m = reinterpret_cast<model::LlamaModel*>(model);
    ctx->save_for_backward({x});
    ctx->saved_data["model"] = model;
    ctx->saved_data["li"] = li;
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    if (mask.defined()) ctx->saved_data["mask"] = mask;
    ctx->saved_data["T"] = T;
    ctx->saved_data["pos0"] = pos0;
    ctx->saved_data["rng"] = rng_state();
    const auto in = inputs_from(ctx);
    torch::NoGradGuard no_grad;
    return m->forward_layer(li, x, in);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto* m = reinterpret_cast<model::LlamaModel*>(ctx->saved_data["model"].toInt());
    const int64_t li = ctx->saved_data["li"].toInt();
    const auto in = inputs_from(ctx);
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Re-run with the random state of the forward pass (dropout), then put the stream back.
    const torch::Tensor after = rng_state();
    set_rng_state(ctx->saved_data["rng"].toTensor());
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = m->forward_layer(li, x, in);
    }
    set_rng_state(after);
    torch::autograd::backward({y}, {grad[0]});
    return {x.grad(), {}, {}, {}, {}, {}, {}, {}};
  }
};

}  // namespace

torch::Tensor checkpointed_logits(model::LlamaModel& m, const torch::Tensor& tokens) {
  LLMOPT_CHECK_INPUT(tokens.dim() == 2, "[finetune] tokens must be [batch, time]");
  const auto in = m.layer_inputs(tokens.size(1), 0);
  torch::Tensor x = m.embed(tokens);
  // The layers' backward must run even when the embedding is frozen: x carries a gradient edge.
  if (!x.requires_grad()) x = x.detach().requires_grad_(true);
  for (int64_t li = 0; li < m.num_layers(); ++li)
    x = CheckpointedLayer::apply(x, reinterpret_cast<int64_t>(&m), li, in.cos, in.sin, in.mask, in.T, in.pos0);
  const double eps = m.config().rms_norm_eps;
  // The final RMSNorm as LlamaModel computes it (statistics in f32, as HF's LlamaRMSNorm).
  const torch::Tensor h = x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * m.final_norm();
  return m.logits_from_hidden(h);
}

train::LossFn checkpointed_next_token_loss(model::LlamaModel& m) {
  return [&m](const torch::Tensor& batch) {
    const bool masked = batch.dim() == 3;
    const torch::Tensor tokens = (masked ? batch.select(1, 0) : batch).to(m.device());
    const torch::Tensor logits = checkpointed_logits(m, tokens.slice(1, 0, -1).contiguous());
    const torch::Tensor nll = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), tokens.slice(1, 1).reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    if (!masked) return nll.mean();
    const torch::Tensor mask = batch.select(1, 1).slice(1, 1).to(m.device()).to(torch::kFloat32).reshape({-1});
    return (nll * mask).sum() / mask.sum().clamp_min(1);
  };
}

}  // namespace llmopt::stages
