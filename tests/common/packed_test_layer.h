// A made-up packed layer kind for state-preservation tests: the weight as ggml Q8_0 blocks plus a
// per-output-row U8 "tag" tensor (standing in for masks, scales or adapter tensors a real technique
// stores next to its blocks). It registers itself as kind "test_q8"; forward() dequantizes.
#pragma once
#include <torch/torch.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/quant_formats.h"
#include "model/linear.h"

namespace llmopt::testing {

class PackedTestLinear : public model::LinearLayer {
 public:
  // Quantizes `dense` [out, in] (in a multiple of 32) to Q8_0 with tags = row index mod 251.
  explicit PackedTestLinear(const torch::Tensor& dense) : out_(dense.size(0)), in_(dense.size(1)) {
    auto w = dense.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    blocks_.resize(static_cast<size_t>(dtype_bytes_for(DType::Q8_0, out_ * in_)));
    kernels::quantize_row_ref(DType::Q8_0, w.data_ptr<float>(), blocks_.data(), out_ * in_);
    tags_.resize(static_cast<size_t>(out_));
    for (int64_t r = 0; r < out_; ++r) tags_[static_cast<size_t>(r)] = static_cast<uint8_t>(r % 251);
  }
  PackedTestLinear(int64_t out, int64_t in, std::vector<uint8_t> blocks, std::vector<uint8_t> tags)
      : out_(out), in_(in), blocks_(std::move(blocks)), tags_(std::move(tags)) {}

  torch::Tensor forward(const torch::Tensor& x) override {
    return torch::matmul(x, dense_weight().to(x.device()).t());
  }
  int64_t in_features() const override { return in_; }
  int64_t out_features() const override { return out_; }
  std::string kind() const override { return "test_q8"; }
  torch::Tensor dense_weight() const override {
    auto w = torch::empty({out_, in_}, torch::kFloat32);
    kernels::dequantize_row(DType::Q8_0, blocks_.data(), w.data_ptr<float>(), out_ * in_);
    return w;
  }
  int64_t storage_bytes() const override { return static_cast<int64_t>(blocks_.size() + tags_.size()); }
  model::LayerState stored_state() const override {
    model::LayerState s;
    s.kind = kind();
    s.meta = {{"note", "test kind"}};
    s.tensors.push_back(view("blocks", DType::Q8_0, {out_, in_}, blocks_));
    s.tensors.push_back(view("tags", DType::U8, {out_}, tags_));
    return s;
  }
  std::optional<model::StoredTensor> file_weight() const override {
    return view("weight", DType::Q8_0, {out_, in_}, blocks_);
  }
  const std::vector<uint8_t>& blocks() const { return blocks_; }
  const std::vector<uint8_t>& tags() const { return tags_; }

  static void register_kind() {
    model::register_linear_kind("test_q8", [](const model::LayerState& s, const std::string& where) {
      const auto& b = s.get("blocks", where);
      const auto& t = s.get("tags", where);
      LLMOPT_CHECK_INPUT(b.dtype == DType::Q8_0 && b.shape.size() == 2, "{}: bad blocks", where);
      return std::static_pointer_cast<model::LinearLayer>(std::make_shared<PackedTestLinear>(
          b.shape[0], b.shape[1], std::vector<uint8_t>(b.data, b.data + b.nbytes),
          std::vector<uint8_t>(t.data, t.data + t.nbytes)));
    });
  }

 private:
  model::StoredTensor view(const char* name, DType dt, std::vector<int64_t> shape, const std::vector<uint8_t>& bytes) const {
    auto copy = std::make_shared<std::vector<uint8_t>>(bytes);
    model::StoredTensor t;
    t.name = name;
    t.dtype = dt;
    t.shape = std::move(shape);
    t.data = copy->data();
    t.nbytes = static_cast<int64_t>(copy->size());
    t.owner = std::static_pointer_cast<const void>(copy);
    return t;
  }
  int64_t out_, in_;
  std::vector<uint8_t> blocks_, tags_;
};

}  // namespace llmopt::testing
