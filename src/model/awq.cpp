#include "model/awq.h"

#include <cmath>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"

namespace llmopt::model {

std::vector<AwqChoice> awq_scale_layer(LlamaModel& m, const LayerCalibration& lc, const FakeQuantFn& fake_quant,
                                       const std::function<bool(const std::string&)>& skip, const AwqOptions& o) {
  torch::NoGradGuard ng;
  using io::arch::Role;
  const int64_t li = lc.layer;
  std::vector<AwqChoice> choices;
  if (li < 0) return choices;
  std::map<std::string, std::shared_ptr<LinearLayer>> layers;
  for (auto& [p, l] : m.linear_layers()) layers[p] = l;
  auto path = [&](Role r) { return io::arch::module_path(r, li); };

  const std::vector<ScaleGroup> groups = scale_groups(m, li);

  for (const auto& g : groups) {
    bool any_skipped = false;
    for (auto r : g.roles) any_skipped = any_skipped || skip(path(r));
    if (g.prev_linear != Role::TokenEmbd) any_skipped = any_skipped || layers.at(path(g.prev_linear))->kind() != "dense";
    for (auto r : g.roles) any_skipped = any_skipped || layers.at(path(r))->kind() != "dense";
    if (any_skipped) continue;
    const auto& st = *lc.stats.at(path(g.roles[0]));
    LLMOPT_CHECK_INPUT(st.sample.defined() && st.sample.size(0) > 0, "[awq] {}: no sampled inputs",
                       path(g.roles[0]));
    const auto X = st.sample;  // [k, in]
    const auto x_mean = st.mean_abs().clamp_min(1e-8);
    std::vector<torch::Tensor> W, ref;
    for (auto r : g.roles) {
      W.push_back(layers.at(path(r))->dense_weight().to(torch::kFloat32));
      ref.push_back(torch::matmul(X, W.back().t()));
    }
    AwqChoice c;
    c.input = g.input;
    for (auto r : g.roles) c.paths.push_back(path(r));
    double best = -1;
    torch::Tensor best_s;
    for (int64_t a = 0; a < o.grid; ++a) {
      const double alpha = static_cast<double>(a) / static_cast<double>(o.grid);
      auto s = x_mean.pow(alpha).clamp_min(1e-4);
      s = s / std::sqrt((s.max() * s.min()).item<double>());
      const auto Xs = X / s;
      double err = 0;
      for (size_t i = 0; i < W.size(); ++i) {
        auto q = fake_quant(W[i] * s, c.paths[i]);
        err += (torch::matmul(Xs, q.t()) - ref[i]).pow(2).sum().item<double>();
      }
      if (a == 0) c.error_before = err;
      if (best < 0 || err < best) best = err, best_s = s, c.alpha = alpha;
    }
    c.error_after = best;
    if (c.alpha > 0) {
      for (size_t i = 0; i < W.size(); ++i) {
        auto old = layers.at(c.paths[i]);
        auto b = old->bias();
        m.set_linear(c.paths[i], std::make_shared<DenseLinear>((W[i] * best_s).contiguous(),
                                                               b.defined() ? b.clone() : torch::Tensor()));
      }
      if (g.norm) {
        g.norm->div_(best_s);
      } else {
        const std::string pp = path(g.prev_linear);
        auto prev = layers.at(pp);
        auto w = prev->dense_weight().to(torch::kFloat32) / best_s.unsqueeze(1);
        auto b = prev->bias();
        m.set_linear(pp, std::make_shared<DenseLinear>(w.contiguous(), b.defined() ? (b / best_s).contiguous()
                                                                                   : torch::Tensor()));
      }
      for (auto& [p, l] : m.linear_layers()) layers[p] = l;
    }
    log::debug("[awq] layer {} {}: alpha {:.2f}, output error {:.4g} -> {:.4g}", li, g.input, c.alpha,
               c.error_before, c.error_after);
    choices.push_back(std::move(c));
  }
  return choices;
}

}  // namespace llmopt::model
