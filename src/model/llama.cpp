#include "model/llama.h"

#include <cmath>

#include "core/error.h"
#include "infer/weights.h"
#include "model/fast_ops.h"
#include "model/llama_layers.h"

namespace llmopt::model {
namespace {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  // x [..., dim]; statistics in f32 as HF's LlamaRMSNorm does.
  auto var = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * torch::rsqrt(var + eps) * w;
}

// HF rotate_half: [x1, x2] -> [-x2, x1] on the last dimension split in halves.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

// Inverse frequencies [head_dim/2] (Llama-3.1 scaling applied): shared with the CPU engine.
torch::Tensor make_inv_freq(const ModelConfig& c) {
  return torch::tensor(infer::rope_inv_freq(c), torch::kFloat32);
}

}  // namespace


namespace {
// Holder for the "model." prefix of HF names.
struct Backbone : torch::nn::Module {
  std::shared_ptr<WeightModule> embed_tokens, norm;
  torch::nn::ModuleList layers;
};

std::shared_ptr<LinearLayer> zeros_linear(int64_t out, int64_t in, bool bias) {
  return std::make_shared<DenseLinear>(out, in, bias);
}
}  // namespace

LlamaModel::LlamaModel(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate("model config");
  const int64_t d = cfg.hidden_size, hd = cfg.head_dim;
  auto backbone = register_module("model", std::make_shared<Backbone>());
  backbone->embed_tokens =
      backbone->register_module("embed_tokens", std::make_shared<WeightModule>(torch::zeros({cfg.vocab_size, d})));
  backbone->layers = backbone->register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    auto L = std::make_shared<Layer>();
    L->input_layernorm = L->register_module("input_layernorm", std::make_shared<WeightModule>(torch::ones({d})));
    L->self_attn = L->register_module("self_attn", std::make_shared<Attention>());
    auto& a = *L->self_attn;
    a.q_proj = a.register_module("q_proj", zeros_linear(cfg.num_attention_heads * hd, d, cfg.attention_bias));
    a.k_proj = a.register_module("k_proj", zeros_linear(cfg.num_key_value_heads * hd, d, cfg.attention_bias));
    a.v_proj = a.register_module("v_proj", zeros_linear(cfg.num_key_value_heads * hd, d, cfg.attention_bias));
    a.o_proj = a.register_module("o_proj", zeros_linear(d, cfg.num_attention_heads * hd, false));
    L->post_attention_layernorm =
        L->register_module("post_attention_layernorm", std::make_shared<WeightModule>(torch::ones({d})));
    L->mlp = L->register_module("mlp", std::make_shared<Mlp>());
    auto& m = *L->mlp;
    m.gate_proj = m.register_module("gate_proj", zeros_linear(cfg.intermediate_size, d, false));
    m.up_proj = m.register_module("up_proj", zeros_linear(cfg.intermediate_size, d, false));
    m.down_proj = m.register_module("down_proj", zeros_linear(d, cfg.intermediate_size, false));
    backbone->layers->push_back(L);
    layers_.push_back(L);
  }
  backbone->norm = backbone->register_module("norm", std::make_shared<WeightModule>(torch::ones({d})));
  embed_tokens_ = backbone->embed_tokens->weight;
  norm_ = backbone->norm->weight;
  if (!cfg.tie_word_embeddings) lm_head_ = register_module("lm_head", zeros_linear(cfg.vocab_size, d, false));
  rope_inv_freq_ = make_inv_freq(cfg_);
}

int64_t KVCache::bytes() const {
  int64_t b = 0;
  for (const auto& t : k) b += t.numel() * t.element_size();
  for (const auto& t : v) b += t.numel() * t.element_size();
  return b;
}

KVCache LlamaModel::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  c.capacity = capacity;
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(embed_tokens_.device());
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    c.k.push_back(torch::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
    c.v.push_back(torch::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
  }
  return c;
}

torch::Device LlamaModel::device() const { return embed_tokens_.device(); }

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens, KVCache* cache) {
  // One token with a cache on the CPU, no autograd: the fused decode step (decode_cpu.cpp).
  if (cache && tokens.dim() == 2 && tokens.size(0) == 1 && tokens.size(1) == 1 && !torch::GradMode::is_enabled() &&
      embed_tokens_.device().is_cpu() && tokens.device().is_cpu()) {
    if (auto logits = try_decode_fused(tokens.item<int64_t>(), *cache); logits.defined()) return logits;
  }
  return logits_from_hidden(forward_hidden(tokens, cache));
}

torch::Tensor LlamaModel::logits_from_hidden(const torch::Tensor& hidden) {
  // hidden [B, T, dim] -> logits [B, T, vocab]
  if (lm_head_) return lm_head_->forward(hidden);
  return linear_f32(hidden, embed_tokens_, torch::Tensor());
}

torch::Tensor LlamaModel::forward_hidden(const torch::Tensor& tokens, KVCache* cache) {
  LLMOPT_CHECK_INPUT(tokens.dim() == 2, "[model] tokens must be [batch, time], got {} dims", tokens.dim());
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  const int64_t G = H / KV;
  const int64_t pos0 = cache ? cache->length : 0;
  if (cache) {
    LLMOPT_CHECK_INPUT(pos0 + T <= cache->capacity, "[model] KV cache overflow: {} + {} tokens > capacity {}", pos0,
                       T, cache->capacity);
  }
  const auto dev = embed_tokens_.device();
  // Small prefills on the CPU: torch's element-wise ops on one thread. The GEMMs run on
  // OpenBLAS's own pool whatever torch's count; torch's OpenMP workers spinning between ops steal
  // its cores (134M model, 128 tokens, 2 cores: 565 -> 690 tok/s). Large activations keep all.
  // Not with MKL (PyPI's libtorch): its GEMMs run on torch's threads, and one thread would cost
  // them 5x (H100 machine, 16 cores: pp128 ~3000 -> ~500 tok/s).
  struct IntraOpThreads {
    int saved = 0;
    ~IntraOpThreads() {
      if (saved > 0) at::set_num_threads(saved);
    }
  } intra_op;
  if (dev.is_cpu() && !at::hasMKL() && T > 1 && B * T * cfg_.hidden_size <= (int64_t{1} << 20) &&
      at::get_num_threads() > 1) {
    intra_op.saved = at::get_num_threads();
    at::set_num_threads(1);
  }
  // RoPE tables for positions pos0 .. pos0+T-1: cos/sin [T, hd] (halves duplicated as in HF).
  auto inv = rope_inv_freq_.to(dev);
  auto pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
  auto freqs = torch::outer(pos, inv);
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos(), sin = emb.sin();

  // Causal mask over keys 0 .. pos0+T-1 for queries at pos0 .. pos0+T-1 (only needed when T > 1).
  const int64_t S = pos0 + T;
  torch::Tensor mask;
  if (T > 1) {
    auto qpos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(1);
    auto kpos = torch::arange(0, S, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0);
    mask = torch::zeros({T, S}, torch::TensorOptions().dtype(torch::kFloat32).device(dev))
               .masked_fill(kpos > qpos, -std::numeric_limits<float>::infinity());
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  auto x = torch::embedding(embed_tokens_, tokens.to(dev));  // [B, T, dim]
  for (size_t li = 0; li < layers_.size(); ++li) {
    auto& L = *layers_[li];
    auto h = rms_norm(x, L.input_layernorm->weight, cfg_.rms_norm_eps);
    auto q = L.self_attn->q_proj->forward(h).view({B, T, H, hd}).transpose(1, 2);   // [B, H, T, hd]
    auto k = L.self_attn->k_proj->forward(h).view({B, T, KV, hd}).transpose(1, 2);  // [B, KV, T, hd]
    auto v = L.self_attn->v_proj->forward(h).view({B, T, KV, hd}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    torch::Tensor K = k, V = v;
    if (cache) {
      cache->k[li].narrow(2, pos0, T).copy_(k);
      cache->v[li].narrow(2, pos0, T).copy_(v);
      K = cache->k[li].narrow(2, 0, S);
      V = cache->v[li].narrow(2, 0, S);
    }
    // Grouped-query attention: queries [B, KV, G*T, hd] against keys [B, KV, S, hd].
    auto qg = q.reshape({B, KV, G * T, hd});
    auto scores = torch::matmul(qg, K.transpose(-1, -2)) * scale;  // [B, KV, G*T, S]
    if (mask.defined()) scores = (scores.view({B, KV, G, T, S}) + mask).view({B, KV, G * T, S});
    auto probs = torch::softmax(scores, -1);
    auto att = torch::matmul(probs, V).view({B, H, T, hd}).transpose(1, 2).reshape({B, T, H * hd});
    x = x + L.self_attn->o_proj->forward(att);
    h = rms_norm(x, L.post_attention_layernorm->weight, cfg_.rms_norm_eps);
    auto g = L.mlp->gate_proj->forward(h);
    auto u = L.mlp->up_proj->forward(h);
    x = x + L.mlp->down_proj->forward(torch::silu(g) * u);
  }
  if (cache) cache->length = S;
  return rms_norm(x, norm_, cfg_.rms_norm_eps);
}

std::vector<std::pair<std::string, std::shared_ptr<LinearLayer>>> LlamaModel::linear_layers() {
  std::vector<std::pair<std::string, std::shared_ptr<LinearLayer>>> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    auto& a = *layers_[i]->self_attn;
    auto& m = *layers_[i]->mlp;
    out.emplace_back(p + ".self_attn.q_proj", a.q_proj);
    out.emplace_back(p + ".self_attn.k_proj", a.k_proj);
    out.emplace_back(p + ".self_attn.v_proj", a.v_proj);
    out.emplace_back(p + ".self_attn.o_proj", a.o_proj);
    out.emplace_back(p + ".mlp.gate_proj", m.gate_proj);
    out.emplace_back(p + ".mlp.up_proj", m.up_proj);
    out.emplace_back(p + ".mlp.down_proj", m.down_proj);
  }
  if (lm_head_) out.emplace_back("lm_head", lm_head_);
  return out;
}

void LlamaModel::set_linear(const std::string& path, std::shared_ptr<LinearLayer> layer) {
  if (path == "lm_head") {
    LLMOPT_CHECK_INPUT(lm_head_ != nullptr, "[model] lm_head is tied to the embedding; cannot replace it");
    lm_head_ = replace_module("lm_head", layer);
    return;
  }
  // model.layers.{i}.{self_attn|mlp}.{name}
  const std::string prefix = "model.layers.";
  LLMOPT_CHECK_INPUT(path.rfind(prefix, 0) == 0, "[model] unknown linear layer '{}'", path);
  const auto dot = path.find('.', prefix.size());
  LLMOPT_CHECK_INPUT(dot != std::string::npos, "[model] unknown linear layer '{}'", path);
  const size_t idx = std::stoul(path.substr(prefix.size(), dot - prefix.size()));
  LLMOPT_CHECK_INPUT(idx < layers_.size(), "[model] layer index {} out of range in '{}'", idx, path);
  const std::string rest = path.substr(dot + 1);
  auto& a = *layers_[idx]->self_attn;
  auto& m = *layers_[idx]->mlp;
  auto swap = [&](torch::nn::Module& parent, std::shared_ptr<LinearLayer>& slot, const std::string& name) {
    LLMOPT_CHECK_INPUT(layer->in_features() == slot->in_features() && layer->out_features() == slot->out_features(),
                       "[model] replacement for '{}' has shape [{}, {}], expected [{}, {}]", path,
                       layer->out_features(), layer->in_features(), slot->out_features(), slot->in_features());
    slot = parent.replace_module(name, layer);
  };
  if (rest == "self_attn.q_proj") return swap(a, a.q_proj, "q_proj");
  if (rest == "self_attn.k_proj") return swap(a, a.k_proj, "k_proj");
  if (rest == "self_attn.v_proj") return swap(a, a.v_proj, "v_proj");
  if (rest == "self_attn.o_proj") return swap(a, a.o_proj, "o_proj");
  if (rest == "mlp.gate_proj") return swap(m, m.gate_proj, "gate_proj");
  if (rest == "mlp.up_proj") return swap(m, m.up_proj, "up_proj");
  if (rest == "mlp.down_proj") return swap(m, m.down_proj, "down_proj");
  throw_input("[model] unknown linear layer '{}'", path);
}

int64_t LlamaModel::storage_bytes() {
  int64_t b = embed_tokens_.numel() * embed_tokens_.element_size() + norm_.numel() * norm_.element_size();
  for (auto& L : layers_)
    b += (L->input_layernorm->weight.numel() + L->post_attention_layernorm->weight.numel()) * 4;
  for (auto& [name, l] : linear_layers()) b += l->storage_bytes();
  return b;
}

}  // namespace llmopt::model
