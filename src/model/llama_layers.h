// Submodules of LlamaModel (internal to src/model: llama.cpp builds them, decode_cpu.cpp reads
// them). The module tree is built from the architecture description (io/architecture.h), so
// parameter names come out as Hugging Face's.
#pragma once
#include <torch/torch.h>

#include <array>
#include <map>
#include <memory>
#include <string>

#include "io/architecture.h"
#include "model/linear.h"
#include "model/llama.h"

namespace llmopt::model {

// A module holding one named tensor parameter "weight" (embeddings, norms).
struct WeightModule : torch::nn::Module {
  explicit WeightModule(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};

// An empty node of the module tree ("model", "model.layers", "model.layers.3.self_attn").
struct ModuleGroup : torch::nn::Module {};

struct LlamaModel::Layer {
  torch::Tensor attn_norm, ffn_norm;  // [dim] parameters
  // The projections, indexed as io::arch::kLayerLinears, and the modules that hold them (for
  // replace_module).
  std::array<std::shared_ptr<LinearLayer>, io::arch::kLayerLinears.size()> proj;
  std::array<std::shared_ptr<torch::nn::Module>, io::arch::kLayerLinears.size()> parent;
  std::array<std::string, io::arch::kLayerLinears.size()> child;
  LinearLayer& at(io::arch::Role r) const { return *proj[static_cast<size_t>(io::arch::layer_linear_index(r))]; }
};

}  // namespace llmopt::model
