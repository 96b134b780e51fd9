#include "stages/quantize/quantize_stage.h"

#include <regex>

#include "core/error.h"
#include "model/packed_linear.h"
#include "model/quantize.h"

namespace llmopt::stages {

void QuantizeStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[quantize] no model to quantize");
  model::QuantizeSpec spec;
  spec.format = o_.format;
  spec.fallback = o_.fallback;
  spec.skip = o_.skip;
  model::check_quantize_spec(spec);
}

StageResult QuantizeStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  model::QuantizeSpec spec;
  spec.format = o_.format;
  spec.fallback = o_.fallback;
  spec.skip = o_.skip;
  const model::QuantizeReport rep = model::quantize_rtn(*state.model, spec, [&](int64_t done, int64_t total) {
    ctx.report(done, total, "layers");
  });
  StageResult r;
  r.metrics["layers_quantized"] = rep.quantized;
  r.metrics["layers_fallback"] = rep.fallback;
  r.metrics["layers_skipped"] = rep.skipped;
  r.metrics["linear_bits_per_weight"] = rep.linear_bits_per_weight;
  r.metrics["model_bytes"] = state.model->storage_bytes();
  return r;
}

}  // namespace llmopt::stages
