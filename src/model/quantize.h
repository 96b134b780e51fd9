// Round-to-nearest quantization of a model's projections into packed layers (model::PackedLinear):
// shared by the `quantize` stage and `llmopt quantize`.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/calibration.h"
#include "model/gptq.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::model {

struct QuantizeSpec {
  // rtn: round to nearest (importance-weighted when calibration data is given);
  // gptq: Hessian-compensated rounding; awq: activation-aware scales folded in, then rounding
  // (awq_gptq: then GPTQ). Every method but plain rtn needs calibration.path.
  std::string method = "rtn";
  // ggml block type (q4_0 ... q6_k), f16/bf16, llmopt's group-wise int2..int8 (group_size, sym;
  // tail groups, so every row shape fits) or nf4 (bitsandbytes' 4-bit NormalFloat, blocks of 64).
  std::string format = "q8_0";
  int64_t group_size = 128;  // int-N: 32, 64, 128, or -1 for one group per row (per output channel)
  bool sym = true;           // int-N: symmetric grid (zero = 2^(bits-1)) or asymmetric (min/max)
  std::string fallback = "f16";              // for rows that are not whole blocks; "error" refuses
  std::vector<std::string> skip = {"lm_head"};  // regexes searched in module paths
  CalibrationOptions calibration;  // path empty: none
  GptqOptions gptq;
  int64_t awq_grid = 20;
  // AWQ auto-clip (model/awq.h): per output row and group, the clipping threshold over
  // max|w|·{1, 0.95, …, 0.55} with the smallest output error on the calibration inputs (q/k
  // excepted). On by default, as in llm-awq and AutoAWQ; method awq only (awq_gptq: GPTQ's
  // compensation does better from the unclipped weights).
  bool awq_clip = true;
  int64_t calibration_batch = 8;
  int64_t awq_sample_rows = 4096;  // calibration input rows kept per projection input for AWQ's search
  // llama.cpp importance matrix (llama-imatrix's GGUF or legacy .dat, io/imatrix.h): rtn rounds
  // ggml formats with kernels::quantize_row_weighted, the bytes llama-quantize --imatrix writes.
  std::string imatrix_path;
  // --- W8A8 (methods dynamic | static, model/w8a8_linear.h, model/quantize_w8a8.cpp) ---
  double outlier_threshold = 6.0;   // |x| above which an input column is computed in float (≤ 0: none)
  std::string act_range = "minmax";  // static: minmax | percentile | mse (model/smoothquant.h)
  double act_percentile = 99.99;     // act_range percentile
  double smooth_alpha = 0.5;         // SmoothQuant migration strength (with calibration)
  bool smooth = true;                // SmoothQuant before W8A8 when calibration text is given
  // Mixed precision: a bits budget over all projections (scales and zeros included); each
  // projection's candidates are scored by the model's KLD on calibration windows when only it is
  // rounded, and the greedy assignment spends bits where they lower KLD most (needs calibration).
  double target_bpw = 0;
  std::vector<std::string> candidates;  // formats to choose from (default by format family)
  std::map<std::string, std::string> layer_format;  // per-projection format overrides
};

// One projection's measured sensitivity: model KLD with only it rounded to each candidate.
struct LayerSensitivity {
  std::string path;
  std::map<std::string, double> kld;
  std::string chosen;
};

// What happened to one projection.
struct QuantizedLayer {
  std::string path, type, method;
  double bits_per_weight = 0;
  double rel_error = -1;  // GPTQ/calibrated: relative output error on the calibration inputs
  double awq_alpha = -1;  // AWQ: exponent chosen for this projection's input scales
  // AWQ clip: share of (row, group) thresholds below max|w|, and the rounded output error on the
  // calibration inputs with the clip over without it (≤ 1).
  double awq_clipped = -1, awq_clip_error_ratio = -1;
  bool fallback = false;  // stored as the fallback type (rows that are not whole blocks)
};

struct QuantizeReport {
  int64_t quantized = 0, fallback = 0, skipped = 0;
  // Bits per weight over every projection's weight as stored (scales included, biases not).
  double linear_bits_per_weight = 0;
  std::vector<std::string> fallback_layers;
  std::vector<QuantizedLayer> layers;
  std::vector<LayerSensitivity> sensitivity;  // target_bpw only
  int64_t calibration_tokens = 0;
};

// InputError naming the option for an unknown format, a format without a quantizer, or a bad
// regular expression.
void check_quantize_spec(const QuantizeSpec& spec);
QuantizeReport quantize_rtn(LlamaModel& m, const QuantizeSpec& spec,
                            const std::function<void(int64_t, int64_t)>& progress = {});
// Every method: plain rtn without calibration data goes to quantize_rtn; the others load the
// calibration sample with `tk` and run layer by layer (model/calibration.h).
QuantizeReport quantize_model(LlamaModel& m, const tok::Tokenizer* tk, const QuantizeSpec& spec,
                              const std::function<void(int64_t, int64_t)>& progress = {});
bool method_needs_calibration(const QuantizeSpec& spec);
// Fills rep's totals from the model as it now is: every projection's stored bits (biases
// excluded) into linear_bits_per_weight and each rep.layers entry's bits_per_weight; projections
// not in rep.layers count as skipped, the others as quantized or fallback.
void tally_report(LlamaModel& m, QuantizeReport& rep);
// Methods dynamic and static (model/quantize_w8a8.cpp): int8 weights and activations.
QuantizeReport quantize_w8a8(LlamaModel& m, const tok::Tokenizer* tk, const QuantizeSpec& spec,
                             const std::function<void(int64_t, int64_t)>& progress = {});
void check_w8a8_spec(const QuantizeSpec& spec);
// The format of each projection under spec.target_bpw (see QuantizeSpec), optionally with the
// measured table.
std::map<std::string, std::string> assign_bits(LlamaModel& m, const torch::Tensor& calibration_tokens,
                                               const QuantizeSpec& spec, std::vector<LayerSensitivity>* table = nullptr);

}  // namespace llmopt::model
