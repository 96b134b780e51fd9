// SmoothQuant (Xiao et al., 2023) and static activation ranges for W8A8 (model/w8a8_linear.h).
// Smoothing: for each set of projections that read one tensor (q/k/v after the attention norm,
// gate/up after the MLP norm, down after up, o after v when every query head has its own value
// head — the groups of model/awq.h), s_j = max|X_j|^α / max|W_j|^(1−α) (max over calibration rows,
// resp. over the rows of all the group's weights) migrates activation outliers into the weights:
// W·diag(s) replaces the weights and 1/s is folded into what produces the input (norm weight, or
// the rows of v / up), so the float model computes the same function.
// Ranges: the clip c of one static activation scale (step c/127) from a projection's InputStats:
// minmax (largest |x|), percentile (of the sampled |x|, e.g. 99.99) or mse (the clip among 100
// candidates in (0.2, 1]·max|x| minimizing the squared int8 rounding + clipping error of the
// sampled rows). Columns in `exclude` (outliers kept in float) are left out.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "model/calibration.h"
#include "model/llama.h"

namespace llmopt::model {

struct SmoothChoice {
  std::string input;               // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::vector<std::string> paths;  // projections scaled
  double min_scale = 0, max_scale = 0;
};

// Smooths decoder layer lc.layer in place (lc.stats abs_max is used). `skip(path)` true, or a
// projection of the group (or the producing one) not dense: that group is left alone.
// InputError for α outside [0, 1].
std::vector<SmoothChoice> smooth_layer(LlamaModel& m, const LayerCalibration& lc, double alpha,
                                       const std::function<bool(const std::string&)>& skip);

// The clip value c (> 0) of a static int8 activation scale. method: minmax | percentile | mse
// (InputError otherwise; percentile and mse need st.sample). exclude: [in] bool or undefined.
double activation_clip(const InputStats& st, const std::string& method, const torch::Tensor& exclude = {},
                       double percentile = 99.99);

}  // namespace llmopt::model
