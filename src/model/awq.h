// AWQ (Lin et al., 2023): activation-aware scaling before quantization. For each set of
// projections that read one tensor (q/k/v after the attention norm, gate/up after the MLP norm,
// down after up, o after v when every query head has its own value head), a per-input-channel
// scale s = mean|x|^α / sqrt(max·min) is searched over α ∈ {0, 1/n, ..., (n−1)/n}: the α whose
// fake-quantized W·diag(s) applied to x/s gives the smallest squared output error on sampled
// calibration inputs wins (α = 0 is no scaling, so the search never does worse than plain
// rounding on those inputs). W·diag(s) replaces the projections' weights and 1/s is folded into
// what produces their input (the norm's weight, or the rows of v / up), so the float model
// computes the same function and the quantizer sees salient channels enlarged.
//
// Auto-clip (the second half of llm-awq's search, `auto_clip`; AutoAWQ `_search_best_clip`): after
// the scales, every (output row, group of input columns) of the v/o/gate/up/down projections gets
// a clipping threshold t = r·max|w| over r ∈ {1, 0.95, …, 0.55}: the weights are clamped to ±t
// before rounding, trading the rounding error of the group's other weights against the clipped
// outliers. The r kept is the one whose rounded group gives the smallest output error on the
// calibration inputs, Σ_t (x_g·(q_g − w_g))², computed exactly from the calibration Hessian's
// diagonal block d_g H_gg d_gᵀ (every calibration token, memory in×group, where the references
// take a 512-token subsample). q/k are left unclipped, as in the references (their error passes
// through q·kᵀ). The rounding in the search is the one that stores the weight (the format's own
// block/grid fit with the calibration importance), so for ggml blocks the clip feeds the block's
// scale search. Groups are judged one by one, as the references do; a row whose chosen clips
// raise its full output error (cross-group terms, k-quant super-block scales) is left unclipped,
// so the clip never increases a projection's output error on the calibration inputs.
#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
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

struct AwqClipOptions {
  int64_t grid = 20;        // ratios r = 1 − i/grid
  double max_shrink = 0.5;  // i < max_shrink·grid: r = 1, 0.95, …, 0.55 (llm-awq's defaults)
};

// Rounds a dense weight [rows, in] to the stored format and back, row by row (rows independent).
using RoundFn = std::function<torch::Tensor(const torch::Tensor& w)>;

struct ClipSearch {
  torch::Tensor weight;  // [out, in] f32: W with each group clamped to ±r·max|w_group|
  torch::Tensor ratio;   // [out, groups] f32: r chosen (1 = unclipped)
  // Σ over rows of (q − w) M (q − w)ᵀ, M the inputs' second moment (Σxxᵀ / tokens): the summed
  // squared output error per calibration token, rounding the unclipped vs the clipped weight.
  double error_before = 0, error_after = 0;
  int64_t rows_reverted = 0;  // rows left unclipped because their chosen clips raised the row's error
  double clipped_fraction = 0;  // groups with r < 1
};

// The clip search of one weight W [out, in] (f32) given M = Σxxᵀ/tokens [in, in] (f64) of its
// inputs, `group` input columns per threshold (the last group of a row shorter when in is not a
// multiple).
ClipSearch awq_search_clip(const torch::Tensor& W, const torch::Tensor& M, int64_t group, const RoundFn& round,
                           const AwqClipOptions& o);

struct AwqClipChoice {
  std::string path;
  ClipSearch search;  // weight/ratio released after use
};

// Clips the v/o/gate/up/down projections of decoder layer lc.layer in place (their weights become
// the clamped weights; lc.stats must hold the Hessian: StatsRequest hessian). `round_for(path)`
// gives the rounding of that projection and its group, or {nullptr, 0} to leave it (skipped,
// unquantized, fallback types).
using ClipRoundFor = std::function<std::pair<RoundFn, int64_t>(const std::string& path)>;
std::vector<AwqClipChoice> awq_clip_layer(LlamaModel& m, const LayerCalibration& lc, const ClipRoundFor& round_for,
                                          const AwqClipOptions& o);

}  // namespace llmopt::model
