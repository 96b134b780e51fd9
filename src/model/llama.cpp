#include "model/llama.h"

#include <cmath>

#include "core/error.h"
#include "infer/weights.h"
#include "model/fast_ops.h"
#include "model/llama_layers.h"
#include "model/prompt_adapter.h"

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
// The module at dotted `path` under `root` (created as ModuleGroups where missing); null for "".
std::shared_ptr<torch::nn::Module> module_at(torch::nn::Module& root, const std::string& path) {
  torch::nn::Module* walk = &root;
  std::shared_ptr<torch::nn::Module> cur;
  size_t start = 0;
  while (start < path.size()) {
    size_t dot = path.find('.', start);
    if (dot == std::string::npos) dot = path.size();
    const std::string part = path.substr(start, dot - start);
    auto kids = walk->named_children();
    if (auto* found = kids.find(part)) {
      cur = *found;
    } else {
      cur = walk->register_module(part, std::make_shared<ModuleGroup>());
    }
    walk = cur.get();
    start = dot + 1;
  }
  return cur;
}

std::pair<std::string, std::string> split_last(const std::string& path) {
  const auto dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}
}  // namespace

LlamaModel::LlamaModel(const ModelConfig& cfg) : cfg_(cfg) {
  cfg_.validate("model config");
  using io::arch::Role;
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) layers_.push_back(std::make_shared<Layer>());
  // The module tree, in the architecture description's order (HF's): zero projections and
  // embeddings, unit norms, to be filled by a loader.
  io::arch::for_each_tensor(cfg_, [&](const io::arch::TensorInfo& t) {
    if (t.bias) return;  // created with its projection
    const io::arch::RoleDesc& d = io::arch::describe(t.role);
    const auto [parent_path, child] = split_last(io::arch::module_path(t.role, t.layer));
    std::shared_ptr<torch::nn::Module> parent = module_at(*this, parent_path);
    torch::nn::Module& holder = parent ? *parent : *this;
    if (d.linear) {
      const bool with_bias = io::arch::find_linear(cfg_, io::arch::module_path(t.role, t.layer))->bias;
      auto lin = holder.register_module(
          child, std::static_pointer_cast<LinearLayer>(std::make_shared<DenseLinear>(t.shape[0], t.shape[1], with_bias)));
      if (t.role == Role::Output) {
        lm_head_ = lin;
      } else {
        const auto j = static_cast<size_t>(io::arch::layer_linear_index(t.role));
        Layer& L = *layers_[static_cast<size_t>(t.layer)];
        L.proj[j] = lin, L.parent[j] = parent, L.child[j] = child;
      }
      return;
    }
    const bool is_norm = t.role != Role::TokenEmbd;
    auto w = holder.register_module(child, std::make_shared<WeightModule>(is_norm ? torch::ones(t.shape)
                                                                                  : torch::zeros(t.shape)));
    switch (t.role) {
      case Role::TokenEmbd: embed_tokens_ = w->weight; break;
      case Role::OutputNorm: norm_ = w->weight; break;
      case Role::AttnNorm: layers_[static_cast<size_t>(t.layer)]->attn_norm = w->weight; break;
      case Role::FfnNorm: layers_[static_cast<size_t>(t.layer)]->ffn_norm = w->weight; break;
      default: LLMOPT_ASSERT(false, "unhandled tensor role of '{}'", t.hf_name);
    }
  });
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
  c.reserved = prompt_ ? prompt_->num_virtual_tokens() : 0;
  capacity += c.reserved;
  c.capacity = capacity;
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(embed_tokens_.device());
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    c.k.push_back(torch::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
    c.v.push_back(torch::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
  }
  return c;
}

torch::Device LlamaModel::device() const { return embed_tokens_.device(); }

void LlamaModel::set_prompt_adapter(std::shared_ptr<PromptAdapter> adapter) {
  std::shared_ptr<torch::nn::Module> as_module = adapter;
  if (!as_module) as_module = std::make_shared<ModuleGroup>();
  if (named_children().find("prompt_encoder")) {
    replace_module("prompt_encoder", as_module);
  } else {
    register_module("prompt_encoder", as_module);
  }
  prompt_ = std::move(adapter);
}

void LlamaModel::prime_cache(KVCache& cache) {
  const int64_t n = prompt_->num_virtual_tokens();
  LLMOPT_CHECK_INPUT(cache.length == 0 && cache.reserved == n,
                     "[model] the KV cache was made without room for the prompt adapter's {} virtual tokens "
                     "(make it after attaching the adapter)",
                     n);
  LLMOPT_CHECK_INPUT(!cache.k.empty() && n <= cache.capacity, "[model] KV cache of {} positions cannot hold {} virtual tokens",
                     cache.capacity, n);
  const int64_t B = cache.k.front().size(0);
  if (prompt_->is_prefix()) {
    for (int64_t li = 0; li < num_layers(); ++li) {
      auto [k, v] = prompt_->prefix_kv(li);  // [KV, n, hd]
      cache.k[static_cast<size_t>(li)].narrow(2, 0, n).copy_(k.unsqueeze(0).expand({B, -1, -1, -1}));
      cache.v[static_cast<size_t>(li)].narrow(2, 0, n).copy_(v.unsqueeze(0).expand({B, -1, -1, -1}));
    }
  } else {
    // The virtual prompt through the model at positions 0..n-1, its keys and values into the cache.
    auto x = prompt_->virtual_embeddings().unsqueeze(0).expand({B, -1, -1}).to(embed_tokens_.dtype());
    const LayerInputs in = layer_inputs(n, 0);
    for (int64_t li = 0; li < num_layers(); ++li) x = forward_layer(li, x, in, &cache);
  }
  cache.length = n;
  cache.primed = true;
}

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens, KVCache* cache) {
  if (cache && prompt_ && !cache->primed) prime_cache(*cache);
  // One token with a cache on the CPU, no autograd: the fused decode step (decode_cpu.cpp). With a
  // prompt adapter too: its virtual tokens are ordinary rows at the front of the cache (primed
  // above), which the step reads like any other (prompt_adapter_test checks it against the generic
  // cached path and the cache-free forward, up to the cache's last row).
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
  if (cache && prompt_ && !cache->primed) prime_cache(*cache);
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
  auto x = embed(tokens);  // [B, T, dim]
  // Without a cache, a prompt adapter's n virtual tokens enter here (with a cache they are in its
  // reserved positions already): virtual embeddings prepended (prompt, P-tuning; their outputs
  // dropped below), or per-layer past keys / values with the real tokens at positions n.. (prefix).
  int64_t drop = 0;
  LayerInputs in;
  if (prompt_ && !cache) {
    const int64_t n = prompt_->num_virtual_tokens();
    if (prompt_->is_prefix()) {
      in = layer_inputs(T, n);
      for (int64_t li = 0; li < num_layers(); ++li) {
        auto [k, v] = prompt_->prefix_kv(li);
        in.past_k.push_back(k.unsqueeze(0).expand({B, -1, -1, -1}).to(x.dtype()));
        in.past_v.push_back(v.unsqueeze(0).expand({B, -1, -1, -1}).to(x.dtype()));
      }
    } else {
      x = torch::cat({prompt_->virtual_embeddings().unsqueeze(0).expand({B, -1, -1}).to(x.dtype()), x}, 1);
      in = layer_inputs(n + T, 0);
      drop = n;
    }
  } else {
    in = layer_inputs(T, pos0);
  }
  for (int64_t li = 0; li < num_layers(); ++li) x = forward_layer(li, x, in, cache);
  if (cache) cache->length = pos0 + T;
  if (drop > 0) x = x.narrow(1, drop, T);
  return rms_norm(x, norm_, cfg_.rms_norm_eps);
}

torch::Tensor LlamaModel::embed(const torch::Tensor& tokens) {
  return torch::embedding(embed_tokens_, tokens.to(embed_tokens_.device()));
}

LlamaModel::LayerInputs LlamaModel::layer_inputs(int64_t T, int64_t pos0) const {
  const auto dev = embed_tokens_.device();
  LayerInputs in;
  in.T = T;
  in.pos0 = pos0;
  // RoPE tables for positions pos0 .. pos0+T-1: cos/sin [T, hd] (halves duplicated as in HF).
  auto inv = rope_inv_freq_.to(dev);
  auto pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
  auto freqs = torch::outer(pos, inv);
  auto emb = torch::cat({freqs, freqs}, -1);
  in.cos = emb.cos();
  in.sin = emb.sin();
  // Causal mask over keys 0 .. pos0+T-1 for queries at pos0 .. pos0+T-1 (only needed when T > 1,
  // or when a sliding window (Mistral) hides keys: query q sees keys k with q - W < k <= q, as HF's
  // sliding-window mask and llama.cpp's SWA mask define it).
  const int64_t S = pos0 + T;
  const int64_t W = cfg_.sliding_window;
  if (T > 1 || (W > 0 && S > W)) {
    auto qpos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(1);
    auto kpos = torch::arange(0, S, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0);
    auto hidden = kpos > qpos;
    if (W > 0) hidden = hidden.logical_or(qpos - kpos >= W);
    in.mask = torch::zeros({T, S}, torch::TensorOptions().dtype(torch::kFloat32).device(dev))
                  .masked_fill(hidden, -std::numeric_limits<float>::infinity());
  }
  return in;
}

torch::Tensor LlamaModel::forward_layer(int64_t li, const torch::Tensor& x_in, const LayerInputs& in,
                                        KVCache* cache) {
  const int64_t B = x_in.size(0), T = in.T, pos0 = in.pos0, S = pos0 + T;
  const int64_t H = cfg_.num_attention_heads, KV = cfg_.num_key_value_heads, hd = cfg_.head_dim;
  const int64_t G = H / KV;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  using io::arch::Role;
  const Layer& L = *layers_[static_cast<size_t>(li)];
  auto x = x_in;
  auto h = rms_norm(x, L.attn_norm, cfg_.rms_norm_eps);
  auto q = L.at(Role::AttnQ).forward(h).view({B, T, H, hd}).transpose(1, 2);   // [B, H, T, hd]
  auto k = L.at(Role::AttnK).forward(h).view({B, T, KV, hd}).transpose(1, 2);  // [B, KV, T, hd]
  auto v = L.at(Role::AttnV).forward(h).view({B, T, KV, hd}).transpose(1, 2);
  q = q * in.cos + rotate_half(q) * in.sin;
  k = k * in.cos + rotate_half(k) * in.sin;
  torch::Tensor K = k, V = v;
  if (cache) {
    cache->k[static_cast<size_t>(li)].narrow(2, pos0, T).copy_(k);
    cache->v[static_cast<size_t>(li)].narrow(2, pos0, T).copy_(v);
    K = cache->k[static_cast<size_t>(li)].narrow(2, 0, S);
    V = cache->v[static_cast<size_t>(li)].narrow(2, 0, S);
  } else if (!in.past_k.empty()) {
    K = torch::cat({in.past_k[static_cast<size_t>(li)], k}, 2);  // [B, KV, pos0 + T, hd]
    V = torch::cat({in.past_v[static_cast<size_t>(li)], v}, 2);
  }
  // Grouped-query attention: queries [B, KV, G*T, hd] against keys [B, KV, S, hd].
  auto qg = q.reshape({B, KV, G * T, hd});
  auto scores = torch::matmul(qg, K.transpose(-1, -2)) * scale;  // [B, KV, G*T, S]
  if (in.mask.defined()) scores = (scores.view({B, KV, G, T, S}) + in.mask).view({B, KV, G * T, S});
  auto probs = torch::softmax(scores, -1);
  auto att = torch::matmul(probs, V).view({B, H, T, hd}).transpose(1, 2).reshape({B, T, H * hd});
  x = x + L.at(Role::AttnOut).forward(att);
  h = rms_norm(x, L.ffn_norm, cfg_.rms_norm_eps);
  auto g = L.at(Role::FfnGate).forward(h);
  auto u = L.at(Role::FfnUp).forward(h);
  return x + L.at(Role::FfnDown).forward(torch::silu(g) * u);
}

int64_t LlamaModel::num_layers() const { return static_cast<int64_t>(layers_.size()); }

torch::Tensor& LlamaModel::attn_norm(int64_t li) { return layers_.at(static_cast<size_t>(li))->attn_norm; }
torch::Tensor& LlamaModel::ffn_norm(int64_t li) { return layers_.at(static_cast<size_t>(li))->ffn_norm; }

std::vector<std::pair<std::string, std::shared_ptr<LinearLayer>>> LlamaModel::linear_layers() {
  std::vector<std::pair<std::string, std::shared_ptr<LinearLayer>>> out;
  io::arch::for_each_linear(cfg_, [&](const io::arch::LinearInfo& li) {
    if (li.layer < 0) {
      out.emplace_back(li.path, lm_head_);
    } else {
      const auto j = static_cast<size_t>(io::arch::layer_linear_index(li.role));
      out.emplace_back(li.path, layers_[static_cast<size_t>(li.layer)]->proj[j]);
    }
  });
  return out;
}

void LlamaModel::set_linear(const std::string& path, std::shared_ptr<LinearLayer> layer) {
  const auto info = io::arch::find_linear(cfg_, path);
  if (!info) {
    const auto named = io::arch::parse_hf_name(path + ".weight");
    LLMOPT_CHECK_INPUT(!(named && named->role == io::arch::Role::Output && cfg_.tie_word_embeddings),
                       "[model] {} is tied to the embedding; cannot replace it", path);
    throw_input("[model] unknown linear layer '{}'", path);
  }
  LLMOPT_CHECK_INPUT(layer != nullptr, "[model] replacement for '{}' is null", path);
  LLMOPT_CHECK_INPUT(layer->in_features() == info->in && layer->out_features() == info->out,
                     "[model] replacement for '{}' has shape [{}, {}], expected [{}, {}]", path,
                     layer->out_features(), layer->in_features(), info->out, info->in);
  if (info->layer < 0) {
    lm_head_ = replace_module(info->child, layer);
    return;
  }
  Layer& L = *layers_[static_cast<size_t>(info->layer)];
  const auto j = static_cast<size_t>(io::arch::layer_linear_index(info->role));
  L.proj[j] = L.parent[j]->replace_module(L.child[j], layer);
}

int64_t LlamaModel::storage_bytes() {
  int64_t b = embed_tokens_.numel() * embed_tokens_.element_size() + norm_.numel() * norm_.element_size();
  for (auto& L : layers_) b += (L->attn_norm.numel() + L->ffn_norm.numel()) * 4;
  for (auto& [name, l] : linear_layers()) b += l->storage_bytes();
  if (prompt_)
    for (const auto& p : prompt_->parameters()) b += p.numel() * p.element_size();
  return b;
}

}  // namespace llmopt::model
