#include "model/smoothquant.h"

#include <cmath>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "model/linear.h"

namespace llmopt::model {

std::vector<SmoothChoice> smooth_layer(LlamaModel& m, const LayerCalibration& lc, double alpha,
                                       const std::function<bool(const std::string&)>& skip) {
  torch::NoGradGuard ng;
  LLMOPT_CHECK_INPUT(alpha >= 0 && alpha <= 1, "[smoothquant] smooth_alpha: expected 0..1, got {}", alpha);
  using io::arch::Role;
  const int64_t li = lc.layer;
  std::vector<SmoothChoice> choices;
  if (li < 0) return choices;
  std::map<std::string, std::shared_ptr<LinearLayer>> layers;
  for (auto& [p, l] : m.linear_layers()) layers[p] = l;
  auto path = [&](Role r) { return io::arch::module_path(r, li); };
  const std::vector<ScaleGroup> groups = scale_groups(m, li);

  for (const auto& g : groups) {
    bool leave = false;
    for (auto r : g.roles) leave = leave || skip(path(r)) || layers.at(path(r))->kind() != "dense";
    if (g.prev_linear != Role::TokenEmbd) leave = leave || layers.at(path(g.prev_linear))->kind() != "dense";
    if (leave) continue;
    const auto& st = *lc.stats.at(path(g.roles[0]));
    LLMOPT_CHECK_INPUT(st.abs_max.defined() && st.rows > 0, "[smoothquant] {}: no calibration inputs", path(g.roles[0]));
    std::vector<torch::Tensor> W;
    torch::Tensor wmax;
    for (auto r : g.roles) {
      W.push_back(layers.at(path(r))->dense_weight().to(torch::kFloat32));
      auto cm = W.back().abs().amax(0);
      wmax = wmax.defined() ? torch::maximum(wmax, cm) : cm;
    }
    const auto xmax = st.abs_max.to(torch::kFloat32).clamp_min(1e-5);
    auto s = (xmax.pow(alpha) / wmax.clamp_min(1e-5).pow(1.0 - alpha)).clamp_min(1e-5);
    SmoothChoice c;
    c.input = g.input;
    for (auto r : g.roles) c.paths.push_back(path(r));
    c.min_scale = s.min().item<double>();
    c.max_scale = s.max().item<double>();
    for (size_t i = 0; i < W.size(); ++i) {
      auto b = layers.at(c.paths[i])->bias();
      m.set_linear(c.paths[i],
                   std::make_shared<DenseLinear>((W[i] * s).contiguous(), b.defined() ? b.clone() : torch::Tensor()));
    }
    if (g.norm) {
      g.norm->div_(s);
    } else {
      const std::string pp = path(g.prev_linear);
      auto prev = layers.at(pp);
      auto w = prev->dense_weight().to(torch::kFloat32) / s.unsqueeze(1);
      auto b = prev->bias();
      m.set_linear(pp, std::make_shared<DenseLinear>(w.contiguous(), b.defined() ? (b / s).contiguous() : torch::Tensor()));
    }
    for (auto& [p, l] : m.linear_layers()) layers[p] = l;
    log::debug("[smoothquant] layer {} {}: scales {:.3g} .. {:.3g}", li, g.input, c.min_scale, c.max_scale);
    choices.push_back(std::move(c));
  }
  return choices;
}

double activation_clip(const InputStats& st, const std::string& method, const torch::Tensor& exclude,
                       double percentile) {
  LLMOPT_CHECK_INPUT(method == "minmax" || method == "percentile" || method == "mse",
                     "[quantize] act_range: expected minmax, percentile or mse, got '{}'", method);
  LLMOPT_CHECK_INPUT(st.abs_max.defined() && st.rows > 0, "[quantize] act_range: no calibration inputs recorded");
  torch::Tensor keep = exclude.defined() ? exclude.to(torch::kBool).logical_not() : torch::ones_like(st.abs_max, torch::kBool);
  auto amax_t = st.abs_max.to(torch::kFloat64).masked_select(keep);
  const double amax = amax_t.numel() > 0 ? amax_t.max().item<double>() : 0.0;
  if (!(amax > 0)) return 1.0;  // all-zero inputs: any step gives zero codes
  if (method == "minmax") return amax;
  LLMOPT_CHECK_INPUT(st.sample.defined() && st.sample.size(0) > 0,
                     "[quantize] act_range {}: needs sampled calibration rows", method);
  auto x = st.sample.to(torch::kFloat64).index({torch::indexing::Slice(), keep}).reshape({-1});
  if (method == "percentile") {
    LLMOPT_CHECK_INPUT(percentile > 0 && percentile <= 100, "[quantize] percentile: expected (0, 100], got {}",
                       percentile);
    auto a = std::get<0>(torch::sort(x.abs()));
    const int64_t n = a.numel();
    const int64_t k = std::min<int64_t>(n - 1, static_cast<int64_t>(std::ceil(percentile / 100.0 * n)) - 1);
    const double c = a[std::max<int64_t>(k, 0)].item<double>();
    return c > 0 ? c : amax;
  }
  double best = -1, best_c = amax;
  for (int i = 0; i < 100; ++i) {
    const double c = amax * (1.0 - 0.008 * i);
    const double step = c / 127.0;
    const auto q = torch::round(x / step).clamp(-127, 127) * step;
    const double err = (x - q).pow(2).sum().item<double>();
    if (best < 0 || err < best) best = err, best_c = c;
  }
  return best_c;
}

}  // namespace llmopt::model
