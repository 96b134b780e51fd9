// `quantize`: replaces the model's projections by packed layers (model::PackedLinear) that keep
// their blocks through every later stage, checkpoint and GGUF export. Method `rtn`: each row
// rounded to the nearest values of the chosen ggml type (its reference quantizer, bit-compatible
// with ggml's). Rows that are not whole blocks of the format take the declared `fallback` type
// and are counted in the metrics, never silently.
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

  static void describe(Schema<QuantizeOptions>& s) {
    s.field("method", &QuantizeOptions::method, "Quantization method: rtn (round to nearest)")
        .choices({"rtn"});
    s.field("format", &QuantizeOptions::format,
            "Storage type of the quantized projections (ggml blocks, bit-compatible with llama.cpp)")
        .choices({"q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "f16", "bf16"});
    s.field("skip", &QuantizeOptions::skip,
            "Projections kept as they are: regular expressions searched in module paths "
            "(e.g. lm_head, \"layers\\.0\\.\", \"mlp\")");
    s.field("fallback", &QuantizeOptions::fallback,
            "Type for projections whose rows are not whole blocks of `format` (error: refuse)")
        .choices({"f16", "bf16", "f32", "q8_0", "error"});
  }
};

class QuantizeStage : public Stage {
 public:
  using Options = QuantizeOptions;
  static constexpr const char* kType = "quantize";
  static constexpr const char* kDoc = "Quantize the projections (rtn to q8_0/q5_x/q4_x ggml blocks), kept packed";

  explicit QuantizeStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  bool modifies_model() const override { return true; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }

 private:
  model::QuantizeSpec spec() const;
  Options o_;
};

}  // namespace llmopt::stages
