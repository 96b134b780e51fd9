// Where a model runs. CPU always; CUDA when libtorch was built with it (-DLLMOPT_CUDA=ON against a
// CUDA libtorch) and a GPU is visible. The forward is device-agnostic: move with
// model->to(parse_device("cuda")); inputs and caches follow the model's device.
#pragma once
#include <torch/torch.h>

#include <string>

namespace llmopt::model {

// "cpu", "cuda" or "cuda:N" -> torch::Device. InputError (exit 2) for anything else, and for a
// CUDA device this build or machine cannot reach (naming what is missing).
torch::Device parse_device(const std::string& name);

}  // namespace llmopt::model
