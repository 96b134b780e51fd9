// Methods `dynamic` and `static` of quantize_model: every projection (but `skip`) becomes a W8A8
// layer (model/w8a8_linear.h). With calibration text the model is run layer by layer
// (model/calibration.h): SmoothQuant scales are folded first (spec.smooth, α = smooth_alpha,
// model/smoothquant.h), then each projection's inputs give its outlier columns (calibrated
// max|x| > outlier_threshold, kept in f16) and, for static, its activation clip (act_range).
// Dynamic without calibration: no smoothing, outliers found at run time only.
#include <regex>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "model/quantize.h"
#include "model/smoothquant.h"
#include "model/w8a8_linear.h"

namespace llmopt::model {

void check_w8a8_spec(const QuantizeSpec& spec) {
  W8A8Params p;
  p.mode = spec.method;
  p.threshold = spec.outlier_threshold;
  check_w8a8_params(p, "method");
  LLMOPT_CHECK_INPUT(spec.act_range == "minmax" || spec.act_range == "percentile" || spec.act_range == "mse",
                     "[quantize] act_range: expected minmax, percentile or mse, got '{}'", spec.act_range);
  LLMOPT_CHECK_INPUT(spec.smooth_alpha >= 0 && spec.smooth_alpha <= 1,
                     "[quantize] smooth_alpha: expected 0..1, got {}", spec.smooth_alpha);
  LLMOPT_CHECK_INPUT(spec.act_percentile > 0 && spec.act_percentile <= 100,
                     "[quantize] act_percentile: expected (0, 100], got {}", spec.act_percentile);
  LLMOPT_CHECK_INPUT(spec.method != "static" || !spec.calibration.path.empty(),
                     "[quantize] {}.path: method static needs calibration text for its activation ranges "
                     "(data.calibration in a recipe, --calibration FILE on the command line)",
                     spec.calibration.where);
  for (const auto& s : spec.skip) {
    try {
      std::regex re(s);
    } catch (const std::regex_error& e) {
      throw_input("[quantize] skip: '{}' is not a valid regular expression ({})", s, e.what());
    }
  }
}

QuantizeReport quantize_w8a8(LlamaModel& m, const tok::Tokenizer* tk, const QuantizeSpec& spec,
                             const std::function<void(int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  check_w8a8_spec(spec);
  std::vector<std::regex> skip;
  for (const auto& s : spec.skip) skip.emplace_back(s);
  auto skipped = [&](const std::string& path) {
    for (const auto& re : skip)
      if (std::regex_search(path, re)) return true;
    return false;
  };
  W8A8Params p;
  p.mode = spec.method;
  p.threshold = spec.outlier_threshold;
  const std::string type = "w8a8_" + spec.method;
  QuantizeReport rep;
  auto record = [&](const std::string& path, const std::string& note) {
    QuantizedLayer ql;
    ql.path = path;
    ql.type = type;
    ql.method = spec.method + note;
    rep.layers.push_back(ql);
  };
  if (spec.calibration.path.empty()) {
    auto layers = m.linear_layers();
    int64_t done = 0;
    for (auto& [path, layer] : layers) {
      if (!skipped(path)) {
        m.set_linear(path, W8A8Linear::quantize(layer->dense_weight(), layer->bias(), p));
        record(path, "");
      }
      if (progress) progress(++done, static_cast<int64_t>(layers.size()));
    }
  } else {
    LLMOPT_CHECK_INPUT(tk != nullptr, "[quantize] method {} needs the model's tokenizer to read the calibration text",
                       spec.method);
    const torch::Tensor tokens = load_calibration_tokens(spec.calibration, *tk);
    rep.calibration_tokens = tokens.numel();
    CalibrateOptions co;
    co.stats.sample_rows = spec.awq_sample_rows;
    co.batch = spec.calibration_batch;
    co.progress = progress;
    for (auto& [path, layer] : m.linear_layers()) {
      const auto named = io::arch::parse_hf_name(path + ".weight");
      if (named && named->layer < 0 && !skipped(path)) co.include_head = true;
    }
    int64_t outliers = 0;
    calibrate_layerwise(m, tokens, co, [&](LayerCalibration& lc) {
      if (spec.smooth && lc.layer >= 0) {
        smooth_layer(m, lc, spec.smooth_alpha, skipped);
        lc.recapture();
      }
      std::map<std::string, std::shared_ptr<LinearLayer>> current;
      for (auto& [path, l] : m.linear_layers()) current[path] = l;
      for (const auto& path : lc.paths) {
        if (skipped(path)) continue;
        auto layer = current.at(path);
        const InputStats& st = *lc.stats.at(path);
        torch::Tensor out_mask = p.threshold > 0 ? (st.abs_max.to(torch::kFloat64) > p.threshold)
                                                 : torch::zeros({layer->in_features()}, torch::kBool);
        torch::Tensor cols = out_mask.nonzero().reshape({-1});
        outliers += cols.numel();
        double step = 0;
        if (spec.method == "static")
          step = activation_clip(st, spec.act_range, out_mask, spec.act_percentile) / 127.0;
        m.set_linear(path, W8A8Linear::quantize(layer->dense_weight(), layer->bias(), p, cols, step));
        record(path, spec.smooth ? "+smoothquant" : "");
        log::debug("[quantize] {}: {} outlier columns{}", path, cols.numel(),
                   spec.method == "static" ? fmt::format(", activation step {:.4g}", step) : std::string());
      }
    });
    log::info("[quantize] {}: {} calibrated outlier columns kept in f16 (threshold {})", spec.method, outliers,
              p.threshold);
  }
  tally_report(m, rep);
  return rep;
}

}  // namespace llmopt::model
