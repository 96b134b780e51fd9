#include "stages/quantize/quantize_stage.h"

#include "core/error.h"
#include "io/atomic_file.h"
#include "model/quantize.h"

namespace llmopt::stages {

model::QuantizeSpec QuantizeStage::spec(const DataOptions* data) const {
  model::QuantizeSpec s;
  s.method = o_.method;
  s.format = o_.format;
  s.fallback = o_.fallback;
  s.skip = o_.skip;
  s.group_size = o_.group_size;
  s.sym = o_.sym;
  s.gptq.damp = o_.damp;
  s.gptq.act_order = o_.act_order;
  s.gptq.block = o_.block;
  s.awq_grid = o_.awq_grid;
  s.awq_clip = o_.awq_clip;
  s.outlier_threshold = o_.outlier_threshold;
  s.act_range = o_.act_range;
  s.act_percentile = o_.act_percentile;
  s.smooth_alpha = o_.smooth_alpha;
  s.smooth = o_.smooth;
  s.target_bpw = o_.target_bpw;
  s.candidates = o_.candidates;
  s.imatrix_path = o_.imatrix;
  s.calibration.where = "data.calibration";
  // Plain rtn stays uncalibrated unless asked for a calibrated method.
  if (data && (o_.method != "rtn" || o_.target_bpw > 0)) {
    const auto& c = data->calibration;
    s.calibration.path = c.path;
    s.calibration.samples = c.samples;
    s.calibration.seq_len = c.seq_len;
    s.calibration.seed = static_cast<uint64_t>(c.seed);
    s.calibration.offset = c.offset;
    s.calibration.max_bytes = c.max_bytes;
    s.calibration.format = c.format;
    s.calibration.field = c.field;
  }
  return s;
}

std::vector<std::string> QuantizeStage::input_files(const DataOptions& data) const {
  std::vector<std::string> files;
  if (!o_.imatrix.empty()) files.push_back(o_.imatrix);
  if ((o_.method == "rtn" && o_.target_bpw <= 0) || data.calibration.path.empty()) return files;
  files.push_back(data.calibration.path);
  return files;
}

void QuantizeStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[quantize] no model to quantize");
  auto s = spec();
  if (o_.method != "rtn" || o_.target_bpw > 0) s.calibration.path = "(checked when the stage runs)";
  model::check_quantize_spec(s);
}

StageResult QuantizeStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  const model::QuantizeSpec sp = spec(ctx.data);
  if (ctx.data && model::method_needs_calibration(sp)) {
    const auto& e = ctx.data->eval;
    model::check_calibration_overlap(sp.calibration, e.path, e.offset, e.max_bytes, "data.eval");
  }
  const model::QuantizeReport rep = model::quantize_model(*state.model, state.tokenizer.get(), sp,
                                                          [&](int64_t done, int64_t total) {
    ctx.report(done, total, "layers");
  });
  StageResult r;
  r.metrics["layers_quantized"] = rep.quantized;
  r.metrics["layers_fallback"] = rep.fallback;
  r.metrics["layers_skipped"] = rep.skipped;
  r.metrics["linear_bits_per_weight"] = rep.linear_bits_per_weight;
  r.metrics["model_bytes"] = state.model->storage_bytes();
  r.metrics["method"] = sp.method;
  if (rep.calibration_tokens > 0) r.metrics["calibration_tokens"] = rep.calibration_tokens;
  // The per-projection choice (type, bits, error on the calibration inputs, AWQ exponent).
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : rep.layers) {
    nlohmann::json j = {{"path", l.path}, {"type", l.type}, {"bits_per_weight", l.bits_per_weight}};
    if (l.rel_error >= 0) j["rel_error"] = l.rel_error;
    if (l.awq_alpha >= 0) j["awq_alpha"] = l.awq_alpha;
    if (l.awq_clipped >= 0) {
      j["awq_clipped"] = l.awq_clipped;
      j["awq_clip_error_ratio"] = l.awq_clip_error_ratio;
    }
    for (const auto& ls : rep.sensitivity)
      if (ls.path == l.path) j["kld_if_only_this_rounded"] = ls.kld;
    layers.push_back(j);
  }
  if (!layers.empty()) {
    io::write_file_atomic(ctx.artifacts_dir + "/quantize_layers.json", layers.dump(1) + "\n");
    r.artifacts.push_back("artifacts/quantize_layers.json");
  }
  return r;
}

}  // namespace llmopt::stages
