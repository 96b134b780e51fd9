// Submodules of LlamaModel (internal to src/model: llama.cpp builds them, decode_cpu.cpp reads
// them). Their member names give the Hugging Face parameter names.
#pragma once
#include <torch/torch.h>

#include <memory>

#include "model/linear.h"
#include "model/llama.h"

namespace llmopt::model {

// A module holding one named tensor parameter "weight" (embeddings, norms), so that parameter
// names come out as HF's ("model.norm.weight").
struct WeightModule : torch::nn::Module {
  explicit WeightModule(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};

struct Attention : torch::nn::Module {
  std::shared_ptr<LinearLayer> q_proj, k_proj, v_proj, o_proj;
};
struct Mlp : torch::nn::Module {
  std::shared_ptr<LinearLayer> gate_proj, up_proj, down_proj;
};

struct LlamaModel::Layer : torch::nn::Module {
  std::shared_ptr<WeightModule> input_layernorm, post_attention_layernorm;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<Mlp> mlp;
};

}  // namespace llmopt::model
