// A projection stored packed: ggml blocks (q8_0, q4_0, q4_k ...) or a 16-bit float type, kept as
// stored in memory, in checkpoints and in GGUF exports (kind "packed", meta {"type": "q4_0"}).
// forward() never keeps a dense copy: one or a few rows (decode) go through the packed GEMV of
// src/kernels, larger inputs dequantize the weight a tile of rows at a time and multiply it.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "model/linear.h"

namespace llmopt::model {

class PackedLinear : public LinearLayer {
 public:
  // Packs `weight` [out, in] with the reference quantizer of `type` (or converts it, for
  // F16/BF16/F32). InputError when `in` is not a multiple of the type's block.
  static std::shared_ptr<PackedLinear> pack(const torch::Tensor& weight, const torch::Tensor& bias, DType type);
  // Takes stored bytes as they are (`blocks`: out rows of in / block_elems blocks).
  PackedLinear(DType type, int64_t out, int64_t in, std::vector<uint8_t> blocks, torch::Tensor bias = {});

  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  std::string kind() const override { return "packed"; }
  torch::Tensor dense_weight() const override;
  torch::Tensor bias() const override { return bias_; }
  int64_t storage_bytes() const override;
  const void* gemv_weights(DType* type) const override;
  LayerState stored_state() const override;
  std::optional<StoredTensor> file_weight() const override;

  DType type() const { return type_; }
  const std::vector<uint8_t>& blocks() const { return *blocks_; }

 private:
  DType type_;
  int64_t out_, in_;
  std::shared_ptr<std::vector<uint8_t>> blocks_;
  torch::Tensor bias_;  // [out] f32 or undefined
};

// The factory of kind "packed" (registered with the built-in kinds in linear.cpp).
LinearFactory packed_linear_factory();

// Bits per weight of `type` (block bytes × 8 / block elements; scales included).
double bits_per_weight(DType type);

}  // namespace llmopt::model
