#include "stages/quantize/quantize_stage.h"

#include "core/error.h"
#include "model/quantize.h"

namespace llmopt::stages {

model::QuantizeSpec QuantizeStage::spec() const {
  model::QuantizeSpec s;
  s.format = o_.format;
  s.fallback = o_.fallback;
  s.skip = o_.skip;
  return s;
}

void QuantizeStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[quantize] no model to quantize");
  model::check_quantize_spec(spec());
}

StageResult QuantizeStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  const model::QuantizeReport rep = model::quantize_rtn(*state.model, spec(), [&](int64_t done, int64_t total) {
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
