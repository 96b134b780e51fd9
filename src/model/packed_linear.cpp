#include "model/packed_linear.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/gemv.h"
#include "kernels/quant_formats.h"

namespace llmopt::model {
namespace {

int64_t row_bytes(DType t, int64_t in) { return in / dtype_block_elems(t) * dtype_block_bytes(t); }

// Rows dequantized per tile in forward(): 64 rows x in floats stay in cache for the product.
constexpr int64_t kPackedTileRows = 64;

}  // namespace

double bits_per_weight(DType t) {
  return 8.0 * static_cast<double>(dtype_block_bytes(t)) / static_cast<double>(dtype_block_elems(t));
}

std::shared_ptr<PackedLinear> PackedLinear::pack(const torch::Tensor& weight, const torch::Tensor& bias, DType type) {
  LLMOPT_CHECK_INPUT(weight.dim() == 2, "[quantize] weight must be [out, in], got {} dims", weight.dim());
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t block = dtype_block_elems(type);
  LLMOPT_CHECK_INPUT(in % block == 0, "[quantize] rows of {} values are not whole {} blocks of {}", in,
                     dtype_name(type), block);
  auto w = weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  std::vector<uint8_t> bytes(static_cast<size_t>(out * row_bytes(type, in)));
  const float* src = w.data_ptr<float>();
  if (type == DType::F32) {
    std::memcpy(bytes.data(), src, bytes.size());
  } else if (type == DType::F16 || type == DType::BF16) {
    auto h = w.to(type == DType::F16 ? torch::kFloat16 : torch::kBFloat16).contiguous();
    std::memcpy(bytes.data(), h.data_ptr(), bytes.size());
  } else {
    LLMOPT_CHECK_INPUT(kernels::has_quantize_ref(type), "[quantize] no quantizer for {} yet", dtype_name(type));
    for (int64_t r = 0; r < out; ++r)
      kernels::quantize_row_ref(type, src + r * in, bytes.data() + r * row_bytes(type, in), in);
  }
  return std::make_shared<PackedLinear>(type, out, in, std::move(bytes), bias);
}

PackedLinear::PackedLinear(DType type, int64_t out, int64_t in, std::vector<uint8_t> blocks, torch::Tensor bias)
    : type_(type), out_(out), in_(in), blocks_(std::make_shared<std::vector<uint8_t>>(std::move(blocks))) {
  LLMOPT_CHECK_INPUT(in % dtype_block_elems(type) == 0 &&
                         static_cast<int64_t>(blocks_->size()) == out * row_bytes(type, in),
                     "[model] packed {} weight [{}, {}] needs {} bytes, got {}", dtype_name(type), out, in,
                     out * row_bytes(type, in), blocks_->size());
  if (bias.defined()) {
    LLMOPT_CHECK_INPUT(bias.dim() == 1 && bias.size(0) == out, "[model] packed layer bias must be [{}]", out);
    bias_ = register_buffer("bias", bias.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone());
  }
}

torch::Tensor PackedLinear::dense_weight() const {
  auto w = torch::empty({out_, in_}, torch::kFloat32);
  kernels::dequantize_row(type_, blocks_->data(), w.data_ptr<float>(), out_ * in_);
  return w;
}

int64_t PackedLinear::storage_bytes() const {
  return static_cast<int64_t>(blocks_->size()) + (bias_.defined() ? bias_.numel() * 4 : 0);
}

const void* PackedLinear::gemv_weights(DType* type) const {
  if (!kernels::gemv_supports(type_)) return nullptr;
  *type = type_;
  return blocks_->data();
}

torch::Tensor PackedLinear::forward(const torch::Tensor& x) {
  LLMOPT_CHECK_INPUT(x.size(-1) == in_, "[model] packed layer expects {} inputs, got {}", in_, x.size(-1));
  auto sizes = x.sizes().vec();
  sizes.back() = out_;
  auto xf = x.detach().to(torch::kCPU, torch::kFloat32).reshape({-1, in_}).contiguous();
  const int64_t m = xf.size(0);
  auto y = torch::empty({m, out_}, torch::kFloat32);
  const float* b = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  if (m <= kernels::kMaxGemvBatch) {
    // Decode: stream the packed rows once (bandwidth-bound).
    kernels::gemv_batch(type_, blocks_->data(), xf.data_ptr<float>(), b, y.data_ptr<float>(), m, out_, in_);
  } else {
    // Prefill / evaluation: dequantize a tile of rows, multiply, move on (no dense copy kept).
    auto tile = torch::empty({kPackedTileRows, in_}, torch::kFloat32);
    const int64_t rb = row_bytes(type_, in_);
    for (int64_t r0 = 0; r0 < out_; r0 += kPackedTileRows) {
      const int64_t rows = std::min(kPackedTileRows, out_ - r0);
      kernels::dequantize_row(type_, blocks_->data() + r0 * rb, tile.data_ptr<float>(), rows * in_);
      y.narrow(1, r0, rows).copy_(torch::matmul(xf, tile.narrow(0, 0, rows).t()));
    }
    if (b) y.add_(bias_);
  }
  return y.reshape(sizes).to(x.device());
}

LayerState PackedLinear::stored_state() const {
  LayerState s;
  s.kind = kind();
  s.meta = {{"type", std::string(dtype_name(type_))}};
  s.tensors.push_back(*file_weight());
  if (bias_.defined()) s.tensors.push_back(stored_from_tensor("bias", bias_));
  return s;
}

std::optional<StoredTensor> PackedLinear::file_weight() const {
  StoredTensor t;
  t.name = "weight";
  t.dtype = type_;
  t.shape = {out_, in_};
  t.data = blocks_->data();
  t.nbytes = static_cast<int64_t>(blocks_->size());
  t.owner = blocks_;
  return t;
}

LinearFactory packed_linear_factory() {
  return [](const LayerState& s, const std::string& where) -> std::shared_ptr<LinearLayer> {
    const StoredTensor& w = s.get("weight", where);
    LLMOPT_CHECK_INPUT(w.shape.size() == 2, "[model] {}: packed weight must be [out, in]", where);
    torch::Tensor bias;
    if (const StoredTensor* b = s.find("bias")) bias = f32_tensor_from_stored(*b, where);
    return std::make_shared<PackedLinear>(w.dtype, w.shape[0], w.shape[1],
                                          std::vector<uint8_t>(w.data, w.data + w.nbytes), bias);
  };
}

}  // namespace llmopt::model
