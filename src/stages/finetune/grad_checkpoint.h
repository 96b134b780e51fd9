// Gradient checkpointing for fine-tuning (as the QLoRA paper trains): each decoder layer runs
// without keeping its activations for the backward pass, which runs the layer again from its
// saved input (one [B, T, dim] tensor per layer) with the random state of the first run, so
// dropout draws the same mask. The memory of the activations goes from all layers' to one layer's.
#pragma once
#include <torch/torch.h>

#include "model/llama.h"
#include "train/trainer.h"

namespace llmopt::stages {

// Logits of `m` on tokens [B, T] with every decoder layer checkpointed (no KV cache, no prompt
// adapter). Same values as m.forward(tokens); gradients the same up to float reassociation.
torch::Tensor checkpointed_logits(model::LlamaModel& m, const torch::Tensor& tokens);

// train::masked_next_token_loss with checkpointed_logits.
train::LossFn checkpointed_next_token_loss(model::LlamaModel& m);

}  // namespace llmopt::stages
