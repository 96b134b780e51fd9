#include "model/awq.h"

#include <fmt/ranges.h>

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

namespace {

// The diagonal blocks of M [in, in] for groups of gs columns: [G, gs, gs] (the tail group
// zero-padded, so padded columns add nothing).
torch::Tensor diagonal_blocks(const torch::Tensor& M, int64_t gs, int64_t groups) {
  const int64_t in = M.size(0), padded = gs * groups;
  auto Mp = padded == in ? M : torch::constant_pad_nd(M, {0, padded - in, 0, padded - in});
  std::vector<torch::Tensor> blocks;
  blocks.reserve(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) blocks.push_back(Mp.narrow(0, g * gs, gs).narrow(1, g * gs, gs));
  return torch::stack(blocks).contiguous();
}

// d_g M_gg d_gᵀ for every row and group of D [out, in] (f64): [out, G].
torch::Tensor group_errors(const torch::Tensor& D, const torch::Tensor& blocks, int64_t gs) {
  const int64_t out = D.size(0), in = D.size(1), groups = blocks.size(0);
  auto Dp = gs * groups == in ? D : torch::constant_pad_nd(D, {0, gs * groups - in});
  auto Dg = Dp.reshape({out, groups, gs}).transpose(0, 1);  // [G, out, gs]
  return (torch::matmul(Dg, blocks) * Dg).sum(-1).t().contiguous();
}

// d M dᵀ for every row of D [out, in] (f64): [out].
torch::Tensor row_errors(const torch::Tensor& D, const torch::Tensor& M) { return (torch::matmul(D, M) * D).sum(1); }

}  // namespace

ClipSearch awq_search_clip(const torch::Tensor& W, const torch::Tensor& M, int64_t group, const RoundFn& round,
                           const AwqClipOptions& o) {
  torch::NoGradGuard ng;
  LLMOPT_CHECK_INPUT(W.dim() == 2 && M.dim() == 2 && M.size(0) == W.size(1) && M.size(1) == W.size(1),
                     "[awq] clip: weight [{}] and second moment [{}] do not match", fmt::join(W.sizes().vec(), ", "),
                     fmt::join(M.sizes().vec(), ", "));
  LLMOPT_CHECK_INPUT(o.grid >= 1 && o.max_shrink >= 0 && o.max_shrink < 1,
                     "[awq] clip: grid must be ≥ 1 and max_shrink in [0, 1), got {} and {}", o.grid, o.max_shrink);
  const auto W32 = W.to(torch::kFloat32).contiguous();
  const auto W64 = W32.to(torch::kFloat64);
  const auto Md = M.to(torch::kFloat64).contiguous();
  const int64_t out = W32.size(0), in = W32.size(1);
  const int64_t gs = group > 0 && group < in ? group : in;
  const int64_t groups = (in + gs - 1) / gs;
  const auto blocks = diagonal_blocks(Md, gs, groups);
  auto Wp = gs * groups == in ? W32 : torch::constant_pad_nd(W32, {0, gs * groups - in});
  const auto maxabs = Wp.abs().reshape({out, groups, gs}).amax(-1);  // [out, G]
  // W with group (r, g) clamped to ±ratio[r, g]·max|w|.
  auto clamp = [&](const torch::Tensor& ratio) {
    auto t = (ratio * maxabs).unsqueeze(-1).expand({out, groups, gs}).reshape({out, groups * gs}).narrow(1, 0, in);
    return torch::maximum(torch::minimum(W32, t), -t).contiguous();
  };
  auto rounded = [&](const torch::Tensor& w) { return round(w).to(torch::kFloat64); };

  const auto Q1 = rounded(W32);
  auto best = group_errors(Q1 - W64, blocks, gs);
  auto best_ratio = torch::ones({out, groups}, torch::kFloat32);
  const auto steps = static_cast<int64_t>(o.max_shrink * static_cast<double>(o.grid) + 1e-9);
  for (int64_t i = 1; i < steps; ++i) {
    const double r = 1.0 - static_cast<double>(i) / static_cast<double>(o.grid);
    auto ratio = torch::full({out, groups}, r, torch::kFloat32);
    auto err = group_errors(rounded(clamp(ratio)) - W64, blocks, gs);
    auto better = err < best;
    best = torch::where(better, err, best);
    best_ratio = torch::where(better, ratio, best_ratio);
  }
  // Row check: the per-group choices against the unclipped row, on the full output error.
  auto Wc = clamp(best_ratio);
  const auto e1 = row_errors(Q1 - W64, Md);
  const auto ec = row_errors(rounded(Wc) - W64, Md);
  const auto worse = ec > e1;
  ClipSearch res;
  res.rows_reverted = worse.sum().item<int64_t>();
  best_ratio.masked_fill_(worse.unsqueeze(1), 1.0);
  res.weight = torch::where(worse.unsqueeze(1), W32, Wc).contiguous();
  res.ratio = best_ratio;
  res.error_before = e1.sum().item<double>();
  res.error_after = torch::where(worse, e1, ec).sum().item<double>();
  res.clipped_fraction = best_ratio.lt(1.0).to(torch::kFloat64).mean().item<double>();
  return res;
}

std::vector<AwqClipChoice> awq_clip_layer(LlamaModel& m, const LayerCalibration& lc, const ClipRoundFor& round_for,
                                          const AwqClipOptions& o) {
  torch::NoGradGuard ng;
  using io::arch::Role;
  std::vector<AwqClipChoice> out;
  if (lc.layer < 0) return out;  // the output head: not a decoder block
  std::map<std::string, std::shared_ptr<LinearLayer>> layers;
  for (auto& [p, l] : m.linear_layers()) layers[p] = l;
  for (Role r : {Role::AttnV, Role::AttnOut, Role::FfnGate, Role::FfnUp, Role::FfnDown}) {
    const std::string path = io::arch::module_path(r, lc.layer);
    auto it = layers.find(path);
    if (it == layers.end() || it->second->kind() != "dense") continue;
    auto [round, gs] = round_for(path);
    if (!round) continue;
    const auto& st = *lc.stats.at(path);
    LLMOPT_CHECK_INPUT(st.hessian.defined() && st.rows > 0, "[awq] {}: clip needs the inputs' Hessian", path);
    AwqClipChoice c;
    c.path = path;
    c.search = awq_search_clip(it->second->dense_weight(), st.hessian / static_cast<double>(st.rows), gs, round, o);
    if (c.search.clipped_fraction > 0) {
      auto b = it->second->bias();
      m.set_linear(path, std::make_shared<DenseLinear>(c.search.weight, b.defined() ? b.clone() : torch::Tensor()));
    }
    log::debug("[awq] {}: clip {:.1f}% of groups ({} rows left unclipped), output error {:.4g} -> {:.4g}", path,
               100.0 * c.search.clipped_fraction, c.search.rows_reverted, c.search.error_before,
               c.search.error_after);
    c.search.weight = torch::Tensor();
    c.search.ratio = torch::Tensor();
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace llmopt::model
