// Replaceable linear layers. Every projection of the model is a LinearLayer registered under its
// Hugging Face module path (io/architecture.h), so a quantization, LoRA or sparsity stage swaps one
// implementation for another with LlamaModel::set_linear() and exports map 1:1 to HF names.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/checkpoint.h"

namespace llmopt::model {

// One tensor exactly as a layer stores it (packed blocks and scales, LoRA A/B, masks, ...): its
// name within the layer ("weight", "bias", "scales", "lora_A", ...), dtype, row-major shape and
// bytes, kept alive by `owner`.
struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  std::shared_ptr<const void> owner;
};

// Everything needed to rebuild a layer: its kind, the kind's own small settings (group size,
// LoRA rank and scale, ...) and its stored tensors. Checkpoints, resume, the cache, sweep points
// and clones carry this, never a dense round trip.
struct LayerState {
  std::string kind;
  nlohmann::json meta = nlohmann::json::object();
  std::vector<StoredTensor> tensors;
  const StoredTensor* find(const std::string& name) const;
  const StoredTensor& get(const std::string& name, const std::string& where) const;  // InputError
};

// Copies `t` (any dtype, contiguous) into a StoredTensor that owns its bytes.
StoredTensor stored_from_tensor(const std::string& name, const torch::Tensor& t);
// A float32 tensor holding a copy of an F32 StoredTensor's values (InputError for other dtypes).
torch::Tensor f32_tensor_from_stored(const StoredTensor& s, const std::string& where);

class LinearLayer : public torch::nn::Module {
 public:
  // x [..., in_features] -> [..., out_features], float32.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // "dense", "q8_0", "lora", "sparse", ... (for `info` and reports).
  virtual std::string kind() const = 0;
  // The effective weight as a dense float32 [out, in] tensor (dequantized / merged), for export
  // and for reference checks.
  virtual torch::Tensor dense_weight() const = 0;
  // Optional bias [out] (undefined tensor when absent).
  virtual torch::Tensor bias() const { return {}; }
  // Bytes this layer's weights occupy in memory in their storage format.
  virtual int64_t storage_bytes() const = 0;
  // The weight as one GEMV operand for the fused CPU decode step: row-major [out, in] in the
  // storage type written to *type (any type kernels::gemv accepts), or nullptr when this layer
  // is not a plain (optionally biased) matrix-vector product on the CPU; the model then takes
  // the generic path through forward().
  virtual const void* gemv_weights(DType* type) const { return nullptr; }

  // The tensors this layer stores, as stored, to be rebuilt by the factory registered for kind()
  // (register_linear_kind). make_linear(stored_state()) must give a layer that computes the same
  // function with the same stored bytes.
  virtual LayerState stored_state() const = 0;
  // The weight [out, in] as a tensor a file format can hold as it is (F32/F16/BF16 or a ggml block
  // type, HF row order), for writers that keep the storage (GGUF): nullopt when only the
  // dequantized dense_weight() can express the layer (LoRA, masks ...).
  virtual std::optional<StoredTensor> file_weight() const { return std::nullopt; }
};

// Rebuilds a layer of `state.kind` from its stored tensors (copied: the views may be released
// afterwards). `where` names the layer in errors; InputError for an unknown kind (listing the
// registered ones) or missing/misshapen tensors.
using LinearFactory = std::function<std::shared_ptr<LinearLayer>(const LayerState& state, const std::string& where)>;
void register_linear_kind(const std::string& kind, LinearFactory factory);
std::shared_ptr<LinearLayer> make_linear(const LayerState& state, const std::string& where);
std::vector<std::string> linear_kinds();

// Plain float32 weight [out, in] (+ optional bias [out]) as trainable parameters "weight"/"bias".
// Inference with one row (decode) on CPU goes through the bandwidth-bound GEMV kernel of
// src/kernels; everything else (prefill, training, CUDA) through torch::linear.
class DenseLinear : public LinearLayer {
 public:
  DenseLinear(torch::Tensor weight, torch::Tensor bias = {});
  // Zero weights [out, in] (+ zero bias), to be filled by a loader.
  DenseLinear(int64_t out_features, int64_t in_features, bool with_bias);
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return weight_.size(1); }
  int64_t out_features() const override { return weight_.size(0); }
  std::string kind() const override { return "dense"; }
  torch::Tensor dense_weight() const override { return weight_; }
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  const void* gemv_weights(DType* type) const override;
  LayerState stored_state() const override;
  std::optional<StoredTensor> file_weight() const override;
  torch::Tensor& weight() { return weight_; }

 private:
  torch::Tensor weight_;  // [out, in] f32
  torch::Tensor bias_;    // [out] f32 or undefined
};

}  // namespace llmopt::model
