// Random-weight models of a given shape (benchmarks, tests).
#pragma once
#include <cstdint>
#include <memory>

#include "core/model_config.h"
#include "model/llama.h"

namespace llmopt::model {

// N(0, 0.02) weights (like HF initializer_range), unit norms; deterministic for a seed.
std::shared_ptr<LlamaModel> synth_model(const ModelConfig& cfg, uint64_t seed);

}  // namespace llmopt::model
