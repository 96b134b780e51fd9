// `quantize`: replaces the model's projections by packed layers (model::PackedLinear) that keep
// their blocks through every later stage, checkpoint and GGUF export. Methods: `rtn` rounds each
// row to the nearest values of the chosen type (ggml's reference quantizer; importance-weighted
// when data.calibration is set), `gptq` compensates rounding errors with the calibration inputs'
// Hessian, `awq` folds activation-aware input scales into the norms before rounding, `awq_gptq`
// both (model/gptq.h, model/awq.h; calibration layer by layer, model/calibration.h). Rows that are
// not whole blocks of the format take the declared `fallback` type and are counted in the
// metrics, never silently.
#pragma once
#include <string>
#include <vector>

#include "model/quantize.h"
#include "stages/options.h"
#include "stages/stage.h"

namespace llmopt::stages {

struct QuantizeOptions {
  std::string method = "rtn";
  std::string format = "q8_0";
  std::vector<std::string> skip = {"lm_head"};
  std::string fallback = "f16";
  int64_t group_size = 128;
  bool sym = true;
  double damp = 0.01;
  bool act_order = false;
  int64_t block = 128;
  int64_t awq_grid = 20;
  bool awq_clip = true;
  // W8A8 (methods dynamic, static)
  double outlier_threshold = 6.0;
  std::string act_range = "minmax";
  double act_percentile = 99.99;
  double smooth_alpha = 0.5;
  bool smooth = true;
  double target_bpw = 0;
  std::vector<std::string> candidates;
  std::string imatrix;

  static void describe(Schema<QuantizeOptions>& s) {
    s.field("method", &QuantizeOptions::method,
            "rtn (round to nearest; importance-weighted with data.calibration), gptq, awq, awq_gptq "
            "(these need data.calibration); dynamic (W8A8: int8 weights per channel, int8 activations per token, "
            "LLM.int8() outlier columns in float) or static (W8A8 with one calibrated activation scale per "
            "projection; needs data.calibration); with data.calibration both apply SmoothQuant first")
        .choices({"rtn", "gptq", "awq", "awq_gptq", "dynamic", "static"});
    s.field("format", &QuantizeOptions::format,
            "Storage type of the quantized projections: ggml blocks bit-compatible with llama.cpp "
            "(q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k), f16/bf16, llmopt's group-wise "
            "int2..int8 (group_size, sym; tail groups fit every row) or nf4");
    s.field("group_size", &QuantizeOptions::group_size,
            "int-N: columns per scale (32, 64, 128; -1 = one per output channel)");
    s.field("sym", &QuantizeOptions::sym, "int-N: symmetric grid (else asymmetric with zero points)");
    s.field("skip", &QuantizeOptions::skip,
            "Projections kept as they are: regular expressions searched in module paths "
            "(e.g. lm_head, \"layers\\.0\\.\", \"mlp\")");
    s.field("fallback", &QuantizeOptions::fallback,
            "Type for projections whose rows are not whole blocks of `format` (error: refuse)")
        .choices({"f16", "bf16", "f32", "q8_0", "error"});
    s.field("damp", &QuantizeOptions::damp, "GPTQ: fraction of the Hessian's mean diagonal added to it")
        .range(1e-6, 0.999);
    s.field("act_order", &QuantizeOptions::act_order,
            "GPTQ: quantize columns by decreasing Hessian diagonal (grids fitted up front)");
    s.field("block", &QuantizeOptions::block, "GPTQ: columns updated together").range(1, 1 << 16);
    s.field("awq_grid", &QuantizeOptions::awq_grid, "AWQ: exponents searched for the input scales")
        .range(1, 1000);
    s.field("awq_clip", &QuantizeOptions::awq_clip,
            "AWQ: clip each output row's weight groups at the threshold (max|w|·1 … 0.55) with the smallest "
            "output error on the calibration inputs (q/k excepted), as llm-awq's auto_clip; method awq only");
    s.field("outlier_threshold", &QuantizeOptions::outlier_threshold,
            "W8A8: input columns with |x| above this are computed in float (LLM.int8(); 0 = none)")
        .range(0, 1e9);
    s.field("act_range", &QuantizeOptions::act_range,
            "W8A8 static: activation clip from calibration: minmax, percentile (act_percentile of sampled |x|) "
            "or mse (clip minimizing squared int8 error)")
        .choices({"minmax", "percentile", "mse"});
    s.field("act_percentile", &QuantizeOptions::act_percentile, "W8A8 static, act_range percentile: percentile of |x|")
        .range(1e-9, 100);
    s.field("smooth_alpha", &QuantizeOptions::smooth_alpha,
            "W8A8: SmoothQuant migration strength s = max|X|^a / max|W|^(1-a) (with data.calibration)")
        .range(0, 1);
    s.field("smooth", &QuantizeOptions::smooth, "W8A8: apply SmoothQuant when data.calibration is given");
    s.field("target_bpw", &QuantizeOptions::target_bpw,
            "Mixed precision: bits per linear weight to spend (0 = one format); each projection's "
            "candidates scored by KLD on calibration data, bits assigned greedily")
        .range(0, 32);
    s.field("candidates", &QuantizeOptions::candidates,
            "Mixed precision: formats to choose from (default int3..int8 for int-N, q4_0..q8_0 for ggml)");
    s.field("imatrix", &QuantizeOptions::imatrix,
            "Method rtn without calibration: a llama.cpp importance matrix (llama-imatrix's imatrix.dat or "
            ".gguf) weighting each block's scale search as llama-quantize --imatrix does");
  }
};

class QuantizeStage : public Stage {
 public:
  using Options = QuantizeOptions;
  static constexpr const char* kType = "quantize";
  static constexpr const char* kDoc =
      "Quantize the projections (rtn, gptq, awq to ggml blocks), kept packed; calibrated with data.calibration";

  explicit QuantizeStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  bool modifies_model() const override { return true; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }
  std::vector<std::string> input_files(const DataOptions& data) const override;

 private:
  model::QuantizeSpec spec(const DataOptions* data = nullptr) const;
  Options o_;
};

}  // namespace llmopt::stages
