#include "model/lora_linear.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cctype>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = base(x) with d/dx = grad · W for a base whose forward does not carry gradients to its input
// (packed kinds compute on detached inputs). W is dequantized for the backward pass only and
// dropped right after: no full-precision copy of the base outlives the step.
struct BaseLinearFn : torch::autograd::Function<BaseLinearFn> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t layer) {
    ctx->saved_data["layer"] = layer;
    return reinterpret_cast<LinearLayer*>(layer)->forward(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    auto* layer = reinterpret_cast<LinearLayer*>(ctx->saved_data["layer"].toInt());
    torch::Tensor w = layer->dense_weight().to(grad[0].device(), grad[0].scalar_type());
    return {grad[0].matmul(w), torch::Tensor()};
  }
};

void freeze(torch::nn::Module& m) {
  for (auto& p : m.parameters(/*recurse=*/true)) p.set_requires_grad(false);
}

// A sub-state: the tensors of `s` named "<prefix><name>", renamed to <name>.
LayerState sub_state(const LayerState& s, const std::string& prefix, const nlohmann::json& kind_meta) {
  LayerState sub;
  sub.kind = kind_meta.at("kind").get<std::string>();
  sub.meta = kind_meta.value("meta", nlohmann::json::object());
  for (const auto& t : s.tensors) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    StoredTensor c = t;
    c.name = t.name.substr(prefix.size());
    sub.tensors.push_back(std::move(c));
  }
  return sub;
}

void append_prefixed(LayerState& out, const LayerState& in, const std::string& prefix) {
  for (const auto& t : in.tensors) {
    StoredTensor c = t;
    c.name = prefix + t.name;
    out.tensors.push_back(std::move(c));
  }
}

// Name characters only: PEFT's "module name" form of a target.
bool is_module_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

}  // namespace

// --- LoraConfig ---

double LoraConfig::scaling() const {
  return rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

void LoraConfig::validate() const {
  LLMOPT_CHECK_INPUT(r > 0, "[lora] lora.r must be positive, found {}", r);
  LLMOPT_CHECK_INPUT(alpha > 0 && std::isfinite(alpha), "[lora] lora.alpha must be positive, found {}", alpha);
  LLMOPT_CHECK_INPUT(dropout >= 0 && dropout < 1, "[lora] lora.dropout must be in [0, 1), found {}", dropout);
  LLMOPT_CHECK_INPUT(bias == "none" || bias == "all" || bias == "lora_only",
                     "[lora] lora.bias must be none, all or lora_only, found '{}'", bias);
}

nlohmann::json LoraConfig::json() const {
  return {{"r", r}, {"alpha", alpha}, {"dropout", dropout}, {"rslora", rslora}, {"dora", dora}, {"bias", bias}};
}

// --- LoraLinear ---

LoraLinear::LoraLinear(std::shared_ptr<LinearLayer> base, const LoraConfig& cfg, uint64_t seed)
    : base_(std::move(base)), cfg_(cfg) {
  cfg_.validate();
  LLMOPT_ASSERT(base_ != nullptr, "LoRA over a null base");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features()));
  A_ = torch::empty({cfg_.r, in_features()}, torch::kFloat32).uniform_(-bound, bound, gen);
  B_ = torch::zeros({out_features(), cfg_.r}, torch::kFloat32);
  init_common();
}

LoraLinear::LoraLinear(std::shared_ptr<LinearLayer> base, const LoraConfig& cfg, torch::Tensor A, torch::Tensor B,
                       torch::Tensor magnitude, const std::string& where)
    : base_(std::move(base)), cfg_(cfg) {
  cfg_.validate();
  LLMOPT_ASSERT(base_ != nullptr, "LoRA over a null base");
  const int64_t out = out_features(), in = in_features();
  LLMOPT_CHECK_INPUT(A.defined() && A.dim() == 2 && A.size(0) == cfg_.r && A.size(1) == in,
                     "[lora] {}: lora_A must be [r={}, in={}], found {}", where, cfg_.r, in,
                     A.defined() ? c10::str(A.sizes()) : std::string("none"));
  LLMOPT_CHECK_INPUT(B.defined() && B.dim() == 2 && B.size(0) == out && B.size(1) == cfg_.r,
                     "[lora] {}: lora_B must be [out={}, r={}], found {}", where, out, cfg_.r,
                     B.defined() ? c10::str(B.sizes()) : std::string("none"));
  A_ = A.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone();
  B_ = B.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone();
  if (cfg_.dora) {
    LLMOPT_CHECK_INPUT(magnitude.defined() && magnitude.numel() == out,
                       "[lora] {}: DoRA magnitude vector must have {} values, found {}", where, out,
                       magnitude.defined() ? magnitude.numel() : 0);
    m_ = magnitude.detach().to(torch::kCPU, torch::kFloat32).reshape({out}).contiguous().clone();
  }
  init_common();
}

void LoraLinear::init_common() {
  register_module("base_layer", base_);
  for (auto& p : base_->named_parameters(/*recurse=*/true)) {
    // Base biases train with bias all / lora_only (PEFT); everything else of the base is frozen.
    const bool is_bias = p.key() == "bias" || p.key().size() > 5 && p.key().substr(p.key().size() - 5) == ".bias";
    p.value().set_requires_grad(is_bias && cfg_.bias != "none");
  }
  A_ = register_parameter("lora_A", A_);
  B_ = register_parameter("lora_B", B_);
  if (cfg_.dora) {
    torch::NoGradGuard no_grad;
    const torch::Tensor w = base_->dense_weight().to(torch::kFloat64);
    base_norm2_ = register_buffer("base_norm2", w.pow(2).sum(1));
    if (!m_.defined()) m_ = weight_norm().to(torch::kFloat32).contiguous();
    m_ = register_parameter("lora_magnitude", m_);
  }
}

torch::Tensor LoraLinear::base_forward(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled() || !x.requires_grad() || std::dynamic_pointer_cast<DenseLinear>(base_))
    return base_->forward(x);
  return BaseLinearFn::apply(x, reinterpret_cast<int64_t>(base_.get()));
}

torch::Tensor LoraLinear::weight_norm() const {
  torch::NoGradGuard no_grad;
  LLMOPT_ASSERT(base_norm2_.defined(), "weight_norm() of a LoRA layer without DoRA");
  const double s = cfg_.scaling();
  const torch::Tensor A = A_.detach().to(torch::kFloat64), B = B_.detach().to(torch::kFloat64);
  // W·Aᵀ [out, r] through the base's own forward (no dense copy): rows of base(A) minus its bias.
  torch::Tensor wa = base_->forward(A_.detach());
  if (const torch::Tensor b = base_->bias(); b.defined()) wa = wa - b.to(wa.dtype());
  wa = wa.to(torch::kFloat64).t();
  const torch::Tensor cross = (B * wa).sum(1);
  const torch::Tensor bb = (B.matmul(A.matmul(A.t())) * B).sum(1);
  const torch::Tensor n2 = base_norm2_.to(torch::kFloat64) + 2 * s * cross + s * s * bb;
  return n2.clamp_min(0).sqrt().to(A_.scalar_type());
}

torch::Tensor LoraLinear::forward(const torch::Tensor& x) {
  if (merged_) return base_->forward(x);
  const double s = cfg_.scaling();
  const bool drop = cfg_.dropout > 0 && is_training();
  const torch::Tensor xd = drop ? torch::dropout(x, cfg_.dropout, true) : x;
  const torch::Tensor y = base_forward(x);
  const torch::Tensor lora = torch::linear(torch::linear(xd.to(A_.scalar_type()), A_), B_) * s;
  if (!cfg_.dora) return y + lora;
  // DoRA (PEFT's DoraLinearLayer): y + (m/‖W+sBA‖ − 1) ⊙ W·xd + m/‖W+sBA‖ ⊙ s·B·A·xd.
  const torch::Tensor scale = m_ / weight_norm().detach();
  const torch::Tensor b = base_->bias();
  torch::Tensor wx = drop ? base_forward(xd) : y;
  if (b.defined()) wx = wx - b;
  return y + (scale - 1) * wx + scale * lora;
}

torch::Tensor LoraLinear::lora_delta() const {
  return B_.detach().matmul(A_.detach()) * cfg_.scaling();
}

torch::Tensor LoraLinear::dense_weight() const {
  torch::NoGradGuard no_grad;
  if (merged_) return base_->dense_weight();
  torch::Tensor w = base_->dense_weight().to(A_.scalar_type()) + lora_delta();
  if (cfg_.dora) w = w * (m_.detach() / weight_norm()).unsqueeze(1);
  return w;
}

int64_t LoraLinear::storage_bytes() const {
  int64_t b = base_->storage_bytes() + (A_.numel() + B_.numel()) * 4;
  if (m_.defined()) b += m_.numel() * 4;
  if (orig_base_) b += orig_base_->storage_bytes();
  return b;
}

std::shared_ptr<LinearLayer> LoraLinear::merged_layer() const {
  torch::NoGradGuard no_grad;
  if (merged_) return base_;
  const torch::Tensor w = dense_weight().to(torch::kFloat32).contiguous();
  const torch::Tensor b = base_->bias();
  if (auto packed = std::dynamic_pointer_cast<PackedLinear>(base_)) return PackedLinear::pack(w, b, packed->type());
  if (auto nf4 = std::dynamic_pointer_cast<NF4Linear>(base_)) return NF4Linear::quantize(w, b, nf4->double_quant());
  if (!std::dynamic_pointer_cast<DenseLinear>(base_))
    log::warn("[lora] merging into a base of kind '{}': the merged projection is dense float32", base_->kind());
  return std::make_shared<DenseLinear>(w, b.defined() ? b.detach() : b);
}

void LoraLinear::merge() {
  if (merged_) return;
  torch::NoGradGuard no_grad;
  if (auto dense = std::dynamic_pointer_cast<DenseLinear>(base_)) {
    // In place, as PEFT merges: W ← W + sBA (DoRA: then rows scaled to m / ‖W + sBA‖).
    if (cfg_.dora) merged_norm_ = weight_norm();
    dense->weight().copy_(dense_weight());
  } else {
    orig_base_ = base_;
    base_ = replace_module("base_layer", merged_layer());
    for (auto& p : base_->parameters()) p.set_requires_grad(false);
  }
  merged_ = true;
}

void LoraLinear::unmerge() {
  if (!merged_) return;
  torch::NoGradGuard no_grad;
  if (orig_base_) {
    base_ = replace_module("base_layer", orig_base_);
    orig_base_.reset();
  } else {
    auto dense = std::dynamic_pointer_cast<DenseLinear>(base_);
    LLMOPT_ASSERT(dense != nullptr, "merged LoRA over a non-dense base without its original");
    torch::Tensor w = dense->weight();
    if (cfg_.dora) w = w * (merged_norm_ / m_.detach()).unsqueeze(1);
    dense->weight().copy_(w - lora_delta());
  }
  merged_ = false;
}

LayerState LoraLinear::stored_state() const {
  // Always the unmerged adapter (a merged one is flagged and re-merged when rebuilt).
  LayerState base_state;
  if (!merged_) {
    base_state = base_->stored_state();
  } else if (orig_base_) {
    base_state = orig_base_->stored_state();
  } else {
    torch::NoGradGuard no_grad;
    torch::Tensor w = base_->dense_weight();
    if (cfg_.dora) w = w * (merged_norm_ / m_.detach()).unsqueeze(1);
    base_state = DenseLinear(w - lora_delta(), base_->bias()).stored_state();
  }
  LayerState s;
  s.kind = kind();
  s.meta = cfg_.json();
  s.meta["merged"] = merged_;
  s.meta["base"] = {{"kind", base_state.kind}, {"meta", base_state.meta}};
  append_prefixed(s, base_state, "base.");
  s.tensors.push_back(stored_from_tensor("lora_A", A_));
  s.tensors.push_back(stored_from_tensor("lora_B", B_));
  if (m_.defined()) s.tensors.push_back(stored_from_tensor("lora_magnitude", m_));
  return s;
}

LinearFactory lora_linear_factory() {
  return [](const LayerState& s, const std::string& where) -> std::shared_ptr<LinearLayer> {
    LoraConfig cfg;
    nlohmann::json base_kind;
    bool merged = false;
    try {
      cfg.r = s.meta.at("r").get<int64_t>();
      cfg.alpha = s.meta.at("alpha").get<double>();
      cfg.dropout = s.meta.value("dropout", 0.0);
      cfg.rslora = s.meta.value("rslora", false);
      cfg.dora = s.meta.value("dora", false);
      cfg.bias = s.meta.value("bias", std::string("none"));
      merged = s.meta.value("merged", false);
      base_kind = s.meta.at("base");
    } catch (const nlohmann::json::exception& e) {
      throw_input("[model] {}: malformed LoRA settings: {}", where, e.what());
    }
    auto base = make_linear(sub_state(s, "base.", base_kind), where + ".base_layer");
    torch::Tensor m;
    if (const StoredTensor* mt = s.find("lora_magnitude")) m = f32_tensor_from_stored(*mt, where);
    auto layer = std::make_shared<LoraLinear>(base, cfg, f32_tensor_from_stored(s.get("lora_A", where), where),
                                              f32_tensor_from_stored(s.get("lora_B", where), where), m, where);
    if (merged) layer->merge();
    return layer;
  };
}

// --- applying adapters ---

std::vector<std::string> match_target_modules(LlamaModel& model, const std::vector<std::string>& targets,
                                              const std::string& option) {
  LLMOPT_CHECK_INPUT(!targets.empty(), "[lora] {}: no target modules given", option);
  const auto layers = model.linear_layers();
  std::vector<bool> hit(layers.size(), false);
  for (const auto& t : targets) {
    bool any = false;
    if (t == "all-linear") {
      for (size_t i = 0; i < layers.size(); ++i) {
        // The output head is excluded, as PEFT does for all-linear.
        if (const auto named = io::arch::parse_hf_name(layers[i].first + ".weight");
            named && named->role == io::arch::Role::Output)
          continue;
        hit[i] = any = true;
      }
    } else if (is_module_name(t)) {
      for (size_t i = 0; i < layers.size(); ++i) {
        const std::string& p = layers[i].first;
        if (p == t || (p.size() > t.size() && p.compare(p.size() - t.size() - 1, std::string::npos, "." + t) == 0))
          hit[i] = any = true;
      }
    } else {
      std::regex re;
      try {
        re = std::regex(t);
      } catch (const std::regex_error& e) {
        throw_input("[lora] {}: '{}' is not a valid regular expression ({})", option, t, e.what());
      }
      for (size_t i = 0; i < layers.size(); ++i)
        if (std::regex_match(layers[i].first, re)) hit[i] = any = true;
    }
    if (!any) {
      std::set<std::string> names;
      for (const auto& [p, l] : layers) names.insert(p.substr(p.rfind('.') + 1));
      std::string have;
      for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
      throw_input("[lora] {}: '{}' matches no projection of the model (module names: {}; or a regular "
                  "expression over paths such as {})",
                  option, t, have, layers.empty() ? std::string("-") : layers.front().first);
    }
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < layers.size(); ++i)
    if (hit[i]) out.push_back(layers[i].first);
  return out;
}

LoraApplyResult apply_lora(LlamaModel& model, const std::vector<std::string>& targets, const LoraConfig& cfg,
                           uint64_t seed) {
  cfg.validate();
  LoraApplyResult r;
  r.paths = match_target_modules(model, targets);
  freeze(model);
  std::map<std::string, std::shared_ptr<LinearLayer>> by_path;
  for (auto& [p, l] : model.linear_layers()) by_path[p] = l;
  uint64_t index = 0;
  for (const auto& path : r.paths) {
    auto base = by_path.at(path);
    LLMOPT_CHECK_INPUT(!std::dynamic_pointer_cast<LoraLinear>(base), "[lora] {} already holds a LoRA adapter", path);
    const uint64_t layer_seed = seed * 1000003ULL + 7919ULL * (++index);
    model.set_linear(path, std::make_shared<LoraLinear>(base, cfg, layer_seed));
  }
  if (cfg.bias == "all") {
    for (auto& p : model.named_parameters(/*recurse=*/true))
      if (p.key().size() >= 5 && p.key().substr(p.key().size() - 5) == ".bias") p.value().set_requires_grad(true);
  }
  for (auto& p : model.parameters(/*recurse=*/true)) {
    r.total_params += p.numel();
    if (p.requires_grad()) r.trainable_params += p.numel();
  }
  return r;
}

GradThroughLinear::GradThroughLinear(std::shared_ptr<LinearLayer> base) : base_(std::move(base)) {
  register_module("base_layer", base_);
}

torch::Tensor GradThroughLinear::forward(const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled() || !x.requires_grad()) return base_->forward(x);
  return BaseLinearFn::apply(x, reinterpret_cast<int64_t>(base_.get()));
}

int64_t wrap_grad_through(LlamaModel& model) {
  int64_t n = 0;
  for (auto& [p, l] : model.linear_layers()) {
    if (std::dynamic_pointer_cast<DenseLinear>(l) || std::dynamic_pointer_cast<LoraLinear>(l) ||
        std::dynamic_pointer_cast<GradThroughLinear>(l))
      continue;
    model.set_linear(p, std::make_shared<GradThroughLinear>(l));
    ++n;
  }
  return n;
}

void unwrap_grad_through(LlamaModel& model) {
  for (auto& [p, l] : model.linear_layers())
    if (auto g = std::dynamic_pointer_cast<GradThroughLinear>(l)) model.set_linear(p, g->base());
}

std::vector<std::pair<std::string, std::shared_ptr<LoraLinear>>> lora_layers(LlamaModel& model) {
  std::vector<std::pair<std::string, std::shared_ptr<LoraLinear>>> out;
  for (auto& [p, l] : model.linear_layers())
    if (auto lora = std::dynamic_pointer_cast<LoraLinear>(l)) out.emplace_back(p, lora);
  return out;
}

int64_t merge_lora(LlamaModel& model) {
  int64_t n = 0;
  for (auto& [p, l] : lora_layers(model)) {
    model.set_linear(p, l->merged_layer());
    ++n;
  }
  return n;
}

}  // namespace llmopt::model
