// The architecture description of a Llama-family decoder (Llama 1/2/3, Mistral, Qwen2): every
// tensor the model holds, written once. For each tensor: its role, its Hugging Face name (the
// canonical name of io::Checkpoint), its GGUF name, its shape as a function of ModelConfig,
// whether it is a replaceable projection (model::LinearLayer) and the row permutation that maps
// its rotate-half (HF) RoPE layout to the interleaved one of GGUF / llama2.c / Meta checkpoints.
//
// The loaders and writers (HF, GGUF, llama2.c), the torch engine's module tree, the native
// engine's weight binding and the state checkpoints all read this table; adding an architecture
// or an exporter touches it and nothing that restates names. Torch-free.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/model_config.h"

namespace llmopt::io::arch {

enum class Role : uint8_t {
  TokenEmbd,   // [vocab, dim]
  AttnNorm,    // [dim] per layer
  AttnQ,       // [heads*head_dim, dim] per layer (+ bias with attention_bias)
  AttnK,       // [kv_heads*head_dim, dim]       (+ bias)
  AttnV,       // [kv_heads*head_dim, dim]       (+ bias)
  AttnOut,     // [dim, heads*head_dim]
  FfnNorm,     // [dim]
  FfnGate,     // [ffn, dim]
  FfnUp,       // [ffn, dim]
  FfnDown,     // [dim, ffn]
  OutputNorm,  // [dim]
  Output,      // [vocab, dim], absent when tied to the embedding
};

// The per-layer projections in the order the engines index them (infer::LayerWeights::m).
inline constexpr std::array<Role, 7> kLayerLinears = {Role::AttnQ,   Role::AttnK,  Role::AttnV,
                                                      Role::AttnOut, Role::FfnGate, Role::FfnUp,
                                                      Role::FfnDown};
// Index of `r` in kLayerLinears, or -1.
int layer_linear_index(Role r);

// Row permutation between the rotate-half (HF) and interleaved (GGUF, llama2.c) RoPE layouts.
enum class Permute : uint8_t { None, Heads, KvHeads };

struct RoleDesc {
  Role role;
  bool per_layer;
  const char* hf;    // HF name of the weight ("model.norm.weight"), or its suffix after "model.layers.N."
  const char* gguf;  // GGUF name of the weight ("output_norm.weight"), or its suffix after "blk.N."
  bool linear;       // a replaceable projection (LinearLayer), named by `hf` without ".weight"
  bool biased;       // carries a bias when ModelConfig::attention_bias
  Permute permute;
};
// Every role, in the order HF checkpoints list them (per-layer roles once, for layer N).
const std::vector<RoleDesc>& roles();
const RoleDesc& describe(Role r);

// One tensor of a concrete model.
struct TensorInfo {
  Role role;
  int64_t layer = -1;  // -1 for global tensors
  bool bias = false;   // the projection's bias rather than its weight
  std::string hf_name;
  std::string gguf_name;
  std::vector<int64_t> shape;
  int64_t permute_heads = 0;  // > 0: rows permuted by this many heads between the layouts
};

// Every tensor `cfg` implies, in HF order (embedding; per layer: norm, q, k, v, o, q/k/v
// biases, norm, gate, up, down; final norm; lm_head when untied). Lazily, so a hostile layer
// count fails at the first use instead of building a 2^31-entry list.
void for_each_tensor(const ModelConfig& cfg, const std::function<void(const TensorInfo&)>& fn);
std::vector<TensorInfo> tensors(const ModelConfig& cfg);

// One replaceable projection of a concrete model.
struct LinearInfo {
  Role role;
  int64_t layer = -1;  // -1 for lm_head
  std::string path;    // HF module path: "model.layers.3.self_attn.q_proj", "lm_head"
  std::string parent;  // module path of its parent: "model.layers.3.self_attn", "" for lm_head
  std::string child;   // its name under the parent: "q_proj"
  int64_t out = 0, in = 0;
  bool bias = false;
  int64_t permute_heads = 0;
};
void for_each_linear(const ModelConfig& cfg, const std::function<void(const LinearInfo&)>& fn);
std::vector<LinearInfo> linears(const ModelConfig& cfg);
// The projection at HF module path `path` ("model.layers.3.mlp.up_proj"), if `cfg` has one.
std::optional<LinearInfo> find_linear(const ModelConfig& cfg, std::string_view path);

// Shape of role `r` (a bias: [out]).
std::vector<int64_t> shape_of(Role r, const ModelConfig& cfg, bool bias = false);
// Heads the rows of role `r` are permuted by between the layouts (0: not permuted).
int64_t permute_heads(Role r, const ModelConfig& cfg);

std::string hf_name(Role r, int64_t layer = -1, bool bias = false);
std::string gguf_name(Role r, int64_t layer = -1, bool bias = false);
std::string module_path(Role r, int64_t layer = -1);  // HF module path of a projection

// Name lookups (configuration-independent): the tensor an HF or GGUF name denotes.
struct NamedTensor {
  Role role;
  int64_t layer = -1;
  bool bias = false;
};
std::optional<NamedTensor> parse_hf_name(std::string_view name);
std::optional<NamedTensor> parse_gguf_name(std::string_view name);

}  // namespace llmopt::io::arch
