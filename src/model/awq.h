// AWQ (Lin et al., 2023): activation-aware scaling before quantization. For each set of
// projections that read one tensor (q/k/v after the attention norm, gate/up after the MLP norm,
// down after up, o after v when every query head has its own value head), a per-input-channel
// scale s = mean|x|^α / sqrt(max·min) is searched over α ∈ {0, 1/n, ..., (n−1)/n}: the α whose
// fake-quantized W·diag(s) applied to x/s gives the smallest squared output error on sampled
// calibration inputs wins (α = 0 is no scaling, so the search never does worse than plain
// rounding on those inputs). W·diag(s) replaces the projections' weights and 1/s is folded into
// what produces their input (the norm's weight, or the rows of v / up), so the float model
// computes the same function and the quantizer sees salient channels enlarged.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "model/calibration.h"
#include "model/llama.h"

namespace llmopt::model {

struct AwqOptions {
  int64_t grid = 20;  // α steps
};

// Rounds a dense weight [out, in] of projection `path` to the target format and back.
using FakeQuantFn = std::function<torch::Tensor(const torch::Tensor& w, const std::string& path)>;

struct AwqChoice {
  std::string input;               // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::vector<std::string> paths;  // projections scaled
  double alpha = 0;
  double error_before = 0, error_after = 0;  // squared output error at α = 0 and at the best α
};

// Scales decoder layer lc.layer in place (lc.stats must hold input samples: StatsRequest
// sample_rows > 0). `skip(path)` true: that projection is not quantized, so its group is left as
// it is. Returns the choice per group.
std::vector<AwqChoice> awq_scale_layer(LlamaModel& m, const LayerCalibration& lc, const FakeQuantFn& fake_quant,
                                       const std::function<bool(const std::string&)>& skip, const AwqOptions& o);

}  // namespace llmopt::model
