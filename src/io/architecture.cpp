#include "io/architecture.h"

#include <charconv>

#include "core/error.h"

namespace llmopt::io::arch {
namespace {

// The table. HF order; a per-layer role's names are suffixes after "model.layers.N." / "blk.N.".
const std::vector<RoleDesc> kRoles = {
    // role               per_layer  hf                                  gguf                  linear biased permute
    {Role::TokenEmbd,  false, "model.embed_tokens.weight",            "token_embd.weight",  false, false, Permute::None},
    {Role::AttnNorm,   true,  "input_layernorm.weight",               "attn_norm.weight",   false, false, Permute::None},
    {Role::AttnQ,      true,  "self_attn.q_proj.weight",              "attn_q.weight",      true,  true,  Permute::Heads},
    {Role::AttnK,      true,  "self_attn.k_proj.weight",              "attn_k.weight",      true,  true,  Permute::KvHeads},
    {Role::AttnV,      true,  "self_attn.v_proj.weight",              "attn_v.weight",      true,  true,  Permute::None},
    {Role::AttnOut,    true,  "self_attn.o_proj.weight",              "attn_output.weight", true,  false, Permute::None},
    {Role::FfnNorm,    true,  "post_attention_layernorm.weight",      "ffn_norm.weight",    false, false, Permute::None},
    {Role::FfnGate,    true,  "mlp.gate_proj.weight",                 "ffn_gate.weight",    true,  false, Permute::None},
    {Role::FfnUp,      true,  "mlp.up_proj.weight",                   "ffn_up.weight",      true,  false, Permute::None},
    {Role::FfnDown,    true,  "mlp.down_proj.weight",                 "ffn_down.weight",    true,  false, Permute::None},
    {Role::OutputNorm, false, "model.norm.weight",                    "output_norm.weight", false, false, Permute::None},
    {Role::Output,     false, "lm_head.weight",                       "output.weight",      true,  false, Permute::None},
};

constexpr std::string_view kHfLayer = "model.layers.";
constexpr std::string_view kGgufLayer = "blk.";

// "x.weight" -> "x.bias" (bias = true) or "x" (module = true).
std::string with_suffix(std::string_view weight_name, bool bias) {
  std::string_view stem = weight_name.substr(0, weight_name.size() - std::string_view(".weight").size());
  return std::string(stem) + (bias ? ".bias" : ".weight");
}

std::string stem(std::string_view weight_name) {
  return std::string(weight_name.substr(0, weight_name.size() - std::string_view(".weight").size()));
}

// Parses "<prefix><N>.<rest>"; nullopt when `name` does not start that way.
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  const auto dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0 || (dot > 1 && name[0] == '0')) return std::nullopt;
  int64_t layer = 0;
  const auto [p, ec] = std::from_chars(name.data(), name.data() + dot, layer);
  if (ec != std::errc() || p != name.data() + dot || layer < 0) return std::nullopt;
  return std::make_pair(layer, name.substr(dot + 1));
}

std::optional<NamedTensor> parse_name(std::string_view name, std::string_view layer_prefix, bool gguf) {
  auto match = [&](const RoleDesc& d, std::string_view candidate, int64_t layer) -> std::optional<NamedTensor> {
    const std::string_view w = gguf ? d.gguf : d.hf;
    if (candidate == w) return NamedTensor{d.role, layer, false};
    if (d.biased && candidate == with_suffix(w, true)) return NamedTensor{d.role, layer, true};
    return std::nullopt;
  };
  if (auto split = split_layer(name, layer_prefix)) {
    for (const auto& d : kRoles)
      if (d.per_layer)
        if (auto r = match(d, split->second, split->first)) return r;
    return std::nullopt;
  }
  for (const auto& d : kRoles)
    if (!d.per_layer)
      if (auto r = match(d, name, -1)) return r;
  return std::nullopt;
}

}  // namespace

const std::vector<RoleDesc>& roles() { return kRoles; }

const RoleDesc& describe(Role r) {
  for (const auto& d : kRoles)
    if (d.role == r) return d;
  LLMOPT_ASSERT(false, "unknown role {}", static_cast<int>(r));
  return kRoles.front();
}

int layer_linear_index(Role r) {
  for (size_t i = 0; i < kLayerLinears.size(); ++i)
    if (kLayerLinears[i] == r) return static_cast<int>(i);
  return -1;
}

std::vector<int64_t> shape_of(Role r, const ModelConfig& c, bool bias) {
  const int64_t dim = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim, kv_dim = c.kv_dim();
  const int64_t ffn = c.intermediate_size;
  std::vector<int64_t> s;
  switch (r) {
    case Role::TokenEmbd:
    case Role::Output: s = {c.vocab_size, dim}; break;
    case Role::AttnNorm:
    case Role::FfnNorm:
    case Role::OutputNorm: s = {dim}; break;
    case Role::AttnQ: s = {q_dim, dim}; break;
    case Role::AttnK:
    case Role::AttnV: s = {kv_dim, dim}; break;
    case Role::AttnOut: s = {dim, q_dim}; break;
    case Role::FfnGate:
    case Role::FfnUp: s = {ffn, dim}; break;
    case Role::FfnDown: s = {dim, ffn}; break;
  }
  if (bias) s.resize(1);
  return s;
}

int64_t permute_heads(Role r, const ModelConfig& c) {
  switch (describe(r).permute) {
    case Permute::Heads: return c.num_attention_heads;
    case Permute::KvHeads: return c.num_key_value_heads;
    case Permute::None: break;
  }
  return 0;
}

std::string hf_name(Role r, int64_t layer, bool bias) {
  const RoleDesc& d = describe(r);
  std::string n = bias ? with_suffix(d.hf, true) : std::string(d.hf);
  return d.per_layer ? std::string(kHfLayer) + std::to_string(layer) + "." + n : n;
}

std::string gguf_name(Role r, int64_t layer, bool bias) {
  const RoleDesc& d = describe(r);
  std::string n = bias ? with_suffix(d.gguf, true) : std::string(d.gguf);
  return d.per_layer ? std::string(kGgufLayer) + std::to_string(layer) + "." + n : n;
}

std::string module_path(Role r, int64_t layer) { return stem(hf_name(r, layer)); }

void for_each_tensor(const ModelConfig& c, const std::function<void(const TensorInfo&)>& fn) {
  auto emit = [&](const RoleDesc& d, int64_t layer, bool bias) {
    TensorInfo t;
    t.role = d.role;
    t.layer = layer;
    t.bias = bias;
    t.hf_name = hf_name(d.role, layer, bias);
    t.gguf_name = gguf_name(d.role, layer, bias);
    t.shape = shape_of(d.role, c, bias);
    t.permute_heads = permute_heads(d.role, c);
    fn(t);
  };
  auto present = [&](const RoleDesc& d) { return !(d.role == Role::Output && c.tie_word_embeddings); };
  for (const auto& d : kRoles)
    if (!d.per_layer && d.role == Role::TokenEmbd) emit(d, -1, false);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const auto& d : kRoles) {
      if (!d.per_layer) continue;
      emit(d, l, false);
      // HF lists the q/k/v biases after o_proj.
      if (d.role == Role::AttnOut && c.attention_bias)
        for (const auto& b : kRoles)
          if (b.per_layer && b.biased) emit(b, l, true);
    }
  }
  for (const auto& d : kRoles)
    if (!d.per_layer && d.role != Role::TokenEmbd && present(d)) emit(d, -1, false);
}

std::vector<TensorInfo> tensors(const ModelConfig& c) {
  std::vector<TensorInfo> out;
  for_each_tensor(c, [&](const TensorInfo& t) { out.push_back(t); });
  return out;
}

namespace {
LinearInfo linear_info(const RoleDesc& d, int64_t layer, const ModelConfig& c) {
  LinearInfo li;
  li.role = d.role;
  li.layer = layer;
  li.path = module_path(d.role, layer);
  const auto dot = li.path.rfind('.');
  li.parent = dot == std::string::npos ? "" : li.path.substr(0, dot);
  li.child = dot == std::string::npos ? li.path : li.path.substr(dot + 1);
  const auto s = shape_of(d.role, c);
  li.out = s[0];
  li.in = s[1];
  li.bias = d.biased && c.attention_bias;
  li.permute_heads = permute_heads(d.role, c);
  return li;
}
}  // namespace

void for_each_linear(const ModelConfig& c, const std::function<void(const LinearInfo&)>& fn) {
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (Role r : kLayerLinears) fn(linear_info(describe(r), l, c));
  if (!c.tie_word_embeddings) fn(linear_info(describe(Role::Output), -1, c));
}

std::vector<LinearInfo> linears(const ModelConfig& c) {
  std::vector<LinearInfo> out;
  for_each_linear(c, [&](const LinearInfo& l) { out.push_back(l); });
  return out;
}

std::optional<LinearInfo> find_linear(const ModelConfig& c, std::string_view path) {
  const auto named = parse_hf_name(std::string(path) + ".weight");
  if (!named || named->bias) return std::nullopt;
  const RoleDesc& d = describe(named->role);
  if (!d.linear) return std::nullopt;
  if (d.per_layer && named->layer >= c.num_hidden_layers) return std::nullopt;
  if (d.role == Role::Output && c.tie_word_embeddings) return std::nullopt;
  return linear_info(d, named->layer, c);
}

std::optional<NamedTensor> parse_hf_name(std::string_view name) { return parse_name(name, kHfLayer, false); }
std::optional<NamedTensor> parse_gguf_name(std::string_view name) { return parse_name(name, kGgufLayer, true); }

}  // namespace llmopt::io::arch
