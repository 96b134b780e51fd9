// Calibration: the shared machinery of data-aware compression (GPTQ, AWQ, weighted RTN, static
// activation ranges, Wanda/SparseGPT pruning). Three pieces:
//   1. load_calibration_tokens: the calibration sample (text or jsonl, a byte range of the file,
//      non-overlapping windows chosen by seed), refused when it overlaps the evaluation text;
//   2. InputStats: what a hook records about the inputs of a linear layer (Σx², Σ|x|, max|x|, the
//      Hessian Σxxᵀ, a strided subsample of input rows), accumulated in float64;
//   3. calibrate_layerwise: runs the model one decoder layer at a time, so only one layer's
//      activations are alive whatever the depth: hooks record the layer's inputs, the caller
//      modifies the layer (scales, quantizes, prunes), and the modified layer produces the next
//      layer's inputs (errors of earlier layers are seen by later ones, as in GPTQ).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/architecture.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::model {

struct CalibrationOptions {
  std::string path;          // text file, or .jsonl (one JSON object a line with field `field`)
  std::string format = "auto";  // auto (by extension) | text | jsonl
  std::string field = "text";   // jsonl field holding the text
  int64_t samples = 128;     // windows drawn
  int64_t seq_len = 256;     // tokens per window (BOS included when the tokenizer adds one)
  uint64_t seed = 0;         // which windows are drawn
  int64_t offset = 0;        // first byte of the file used
  int64_t max_bytes = 0;     // bytes used from `offset` (0 = to the end)
  std::string where = "calibration";  // option path named in errors ("data.calibration", "--calibration")
};

// [samples, seq_len] int64 token windows. InputError naming the option for a missing path, an
// unreadable or empty file, jsonl lines without the field (file:line), or too little text.
torch::Tensor load_calibration_tokens(const CalibrationOptions& o, const tok::Tokenizer& tk);

// InputError when the calibration bytes overlap the evaluation bytes of the same file
// (eval_max_bytes 0 = to the end): models calibrated on their test text look better than they are.
void check_calibration_overlap(const CalibrationOptions& cal, const std::string& eval_path, int64_t eval_offset,
                               int64_t eval_max_bytes, const std::string& eval_where);

// Statistics of the inputs x [rows, in] a linear layer saw.
struct InputStats {
  int64_t rows = 0;
  torch::Tensor sum_sq;   // [in] f64 Σ x_j²
  torch::Tensor sum_abs;  // [in] f64 Σ |x_j|
  torch::Tensor abs_max;  // [in] f32 max |x_j|
  torch::Tensor hessian;  // [in, in] f64 Σ x xᵀ (when requested)
  torch::Tensor sample;   // [k, in] f32 every `sample_stride`-th input row (when requested)

  void add(const torch::Tensor& x2d, bool hessian, int64_t sample_stride);
  // Σx²/rows: the importance of each input column (llama.cpp's imatrix).
  torch::Tensor mean_sq() const;
  torch::Tensor mean_abs() const;
};

struct StatsRequest {
  bool hessian = false;
  int64_t sample_rows = 0;  // keep about this many input rows per input (0 = none)
};

// One decoder layer's projections with the statistics of their inputs: projections that read the
// same tensor (q/k/v, gate/up) share one InputStats.
struct LayerCalibration {
  int64_t layer = -1;            // decoder layer index, -1 for the output head
  std::vector<std::string> paths;  // HF module paths of this layer's projections
  std::map<std::string, std::shared_ptr<InputStats>> stats;  // by path
  // Run the layer again on the calibration inputs with its current projections and return the
  // statistics the hooks record (after a method changed scales, for example).
  std::function<void()> recapture;
};

using CalibrationStep = std::function<void(LayerCalibration&)>;

struct CalibrateOptions {
  StatsRequest stats;
  int64_t batch = 8;  // windows per forward
  bool include_head = false;  // also calibrate the untied output head (after the last layer)
  std::function<void(int64_t done, int64_t total)> progress;
};

// Calls `step` once per decoder layer (and for the head when include_head), in order, with the
// statistics of that layer's inputs computed from the already-processed earlier layers. Memory:
// the hidden states of all windows for one layer ([samples, seq_len, dim] f32, twice) plus the
// statistics of one layer.
void calibrate_layerwise(LlamaModel& m, const torch::Tensor& tokens, const CalibrateOptions& o,
                         const CalibrationStep& step);

// The projections of decoder layer `layer` that read one input, and where a per-input-channel
// scale of that input folds (AWQ, SmoothQuant): into a norm's weight, or into the output rows of
// the preceding projection (v -> o only when every head has its own values; up -> down).
struct ScaleGroup {
  std::string input;                   // "attn_norm", "v_proj", "ffn_norm", "up_proj"
  std::vector<io::arch::Role> roles;   // projections reading it
  io::arch::Role prev_linear;          // Role::TokenEmbd: the input is a norm's output
  torch::Tensor* norm;                 // that norm's weight, else nullptr
};
std::vector<ScaleGroup> scale_groups(LlamaModel& m, int64_t layer);

}  // namespace llmopt::model
