// GPTQ's Hugging Face safetensors layout (what transformers/optimum, AutoGPTQ and GPTQModel read
// with checkpoint_format "gptq", i.e. v1), for int-N weights (kernels/intn.h) of 2, 4 or 8 bits.
// For a projection W [out, in] with groups of G input columns (G = in for group_size -1):
//   <module>.qweight  i32 [in·bits/32, out]  codes packed along the INPUT dim: word [i, o] holds
//                     W-codes of inputs i·(32/bits) + t at bits [t·bits, (t+1)·bits), t = 0 ..
//   <module>.qzeros   i32 [groups, out·bits/32]  zero points minus one ((z − 1) mod 2^bits, v1),
//                     packed along the OUTPUT dim the same way
//   <module>.scales   f16 [groups, out] (f32 or bf16 when saved from such a model: auto-gptq keeps
//                     the model's dtype; loaded into f32 int-N scales as they are, never rounded)
//   <module>.g_idx    i32 [in]  group of each input (i / G, or a permutation with desc_act)
// and W[o, i] = scales[g, o]·(q[i, o] − (qzeros[g, o] + 1)), g = g_idx[i].
// config.json gains quantization_config {quant_method: "gptq", bits, group_size, desc_act, sym,
// checkpoint_format: "gptq"}. The layout has no tail group and no zero point 0 (v1 stores z − 1):
// gptq_cannot_hold says why a matrix does not fit.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "kernels/intn.h"

namespace llmopt::io {

struct GptqConfig {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per input row
  bool desc_act = false;
  bool sym = true;
  // How the codes were chosen, as auto-gptq records it (nothing a reader needs: g_idx says it):
  // grids fitted before GPTQ's column sweep; with desc_act, g_idx then stays i / group_size.
  bool static_groups = false;
};

// quantization_config of a config.json: nullopt when absent or not GPTQ; InputError naming
// `source` for a GPTQ config with unsupported bits (not 2/4/8), group size, or a
// checkpoint_format other than "gptq" (v1).
std::optional<GptqConfig> parse_gptq_config(const nlohmann::json& config_json, const std::string& source);
nlohmann::json gptq_config_json(const GptqConfig& c);

// Empty when `w` fits the layout; otherwise the reason (for an error naming the tensor).
std::string gptq_cannot_hold(const kernels::IntNMatrix& w);

struct GptqTensors {
  int64_t in = 0, out = 0, groups = 0;
  int bits = 4;
  std::vector<int32_t> qweight;  // [in·bits/32, out]
  std::vector<int32_t> qzeros;   // [groups, out·bits/32]
  std::vector<uint16_t> scales;  // [groups, out] f16 bits (empty when scales_f32 is used)
  std::vector<float> scales_f32; // [groups, out] when the int-N storage holds f32 scales
  std::vector<int32_t> g_idx;    // [in]
};

// Packs `w` (InputError naming `tensor` when gptq_cannot_hold says it does not fit).
GptqTensors gptq_pack(const kernels::IntNMatrix& w, const std::string& tensor);
// Unpacks GPTQ tensors (shapes as above, `groups` from scales) into int-N storage: symmetric when
// every zero point is 2^(bits−1), g_idx kept only when it is not i / group_size. InputError
// naming `tensor` for inconsistent shapes, a g_idx entry out of range, or a zero point of 2^bits
// (v1's unrepresentable zero 0).
kernels::IntNStorage gptq_unpack(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                                 const int32_t* g_idx, int64_t in, int64_t out, int64_t groups,
                                 const GptqConfig& c, const std::string& tensor);
// The same with f32 scales [groups, out]: the storage keeps them as they are (scales_f32).
kernels::IntNStorage gptq_unpack(const int32_t* qweight, const int32_t* qzeros, const float* scales,
                                 const int32_t* g_idx, int64_t in, int64_t out, int64_t groups,
                                 const GptqConfig& c, const std::string& tensor);

// The GPTQ config recorded in a checkpoint's metadata by load_hf_dir (nullopt: not GPTQ).
std::optional<GptqConfig> checkpoint_gptq_config(const Checkpoint& ckpt);
// Whether `module` ("model.layers.0.self_attn.q_proj") is stored in GPTQ's layout in `ckpt`.
bool has_gptq_module(const Checkpoint& ckpt, const std::string& module);
// InputError "[component] FILE: ..." unless the module's GPTQ tensors have the dtypes and shapes
// a [out, in] projection implies (g_idx may be absent: i / group_size; scales f16, f32 or bf16).
void check_gptq_module(const Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in,
                       const char* component);
// The module's int-N storage (after check_gptq_module).
kernels::IntNStorage load_gptq_module(const Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in);
// Names of the module's GPTQ tensors present in `ckpt`.
std::vector<std::string> gptq_tensor_names(const Checkpoint& ckpt, const std::string& module);

}  // namespace llmopt::io
