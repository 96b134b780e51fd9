#include "model/nf4_linear.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/gemv.h"

namespace llmopt::model {
namespace {

constexpr int64_t kNf4TileRows = 64;

StoredTensor nf4_view_of(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                     int64_t nbytes, std::shared_ptr<const void> owner) {
  StoredTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data = static_cast<const uint8_t*>(data);
  t.nbytes = nbytes;
  t.owner = std::move(owner);
  return t;
}

template <class T>
void nf4_copy_stored(const StoredTensor& t, DType want, int64_t count, std::vector<T>& out, const std::string& where) {
  LLMOPT_CHECK_INPUT(t.dtype == want && t.nbytes == count * static_cast<int64_t>(sizeof(T)),
                     "[model] {}: stored '{}' must be {} values of {}, got {} bytes of {}", where, t.name, count,
                     dtype_name(want), t.nbytes, dtype_name(t.dtype));
  out.resize(static_cast<size_t>(count));
  if (count > 0) std::memcpy(out.data(), t.data, static_cast<size_t>(t.nbytes));
}

}  // namespace

std::shared_ptr<NF4Linear> NF4Linear::quantize(const torch::Tensor& weight, const torch::Tensor& bias, bool double_quant) {
  LLMOPT_CHECK_INPUT(weight.dim() == 2, "[quantize] weight must be [out, in], got {} dims", weight.dim());
  auto w = weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::make_shared<NF4Linear>(kernels::nf4_quantize(w.data_ptr<float>(), w.size(0), w.size(1), double_quant),
                                     bias);
}

NF4Linear::NF4Linear(kernels::NF4Storage storage, torch::Tensor bias)
    : s_(std::make_shared<kernels::NF4Storage>(std::move(storage))) {
  kernels::nf4_check_storage(*s_, "nf4 layer");
  if (bias.defined()) {
    LLMOPT_CHECK_INPUT(bias.dim() == 1 && bias.size(0) == s_->rows, "[model] nf4 layer bias must be [{}]", s_->rows);
    bias_ = register_buffer("bias", bias.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone());
  }
}

torch::Tensor NF4Linear::dense_weight() const {
  auto w = torch::empty({s_->rows, s_->cols}, torch::kFloat32);
  kernels::nf4_dequantize_rows(s_->view(), 0, s_->rows, w.data_ptr<float>());
  return w;
}

int64_t NF4Linear::storage_bytes() const {
  return static_cast<int64_t>(s_->codes.size() + 4 * s_->absmax.size() + s_->absmax_codes.size() +
                              4 * s_->absmax_scales.size() + (s_->double_quant ? 4 : 0)) +
         (bias_.defined() ? bias_.numel() * 4 : 0);
}

torch::Tensor NF4Linear::forward(const torch::Tensor& x) {
  const int64_t in = s_->cols, out = s_->rows;
  LLMOPT_CHECK_INPUT(x.size(-1) == in, "[model] nf4 layer expects {} inputs, got {}", in, x.size(-1));
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  auto xf = x.detach().to(torch::kCPU, torch::kFloat32).reshape({-1, in}).contiguous();
  const int64_t m = xf.size(0);
  auto y = torch::empty({m, out}, torch::kFloat32);
  const float* b = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  const kernels::NF4Matrix w = s_->view();
  if (m <= kernels::kMaxGemvBatch) {
    kernels::nf4_gemv(w, xf.data_ptr<float>(), b, y.data_ptr<float>(), m);
  } else {
    auto tile = torch::empty({kNf4TileRows, in}, torch::kFloat32);
    for (int64_t r0 = 0; r0 < out; r0 += kNf4TileRows) {
      const int64_t rows = std::min(kNf4TileRows, out - r0);
      kernels::nf4_dequantize_rows(w, r0, r0 + rows, tile.data_ptr<float>());
      y.narrow(1, r0, rows).copy_(torch::matmul(xf, tile.narrow(0, 0, rows).t()));
    }
    if (b) y.add_(bias_);
  }
  return y.reshape(sizes).to(x.device());
}

LayerState NF4Linear::stored_state() const {
  LayerState st;
  st.kind = kind();
  st.meta = {{"double_quant", s_->double_quant}, {"in_features", s_->cols}};
  auto owner = std::static_pointer_cast<const void>(s_);
  const kernels::NF4Matrix v = s_->view();
  st.tensors.push_back(nf4_view_of("qweight", DType::U8, {s_->rows, v.code_row_bytes()}, s_->codes.data(),
                               static_cast<int64_t>(s_->codes.size()), owner));
  if (s_->double_quant) {
    st.tensors.push_back(nf4_view_of("absmax_codes", DType::I8, {static_cast<int64_t>(s_->absmax_codes.size())},
                                 s_->absmax_codes.data(), static_cast<int64_t>(s_->absmax_codes.size()), owner));
    st.tensors.push_back(nf4_view_of("absmax_scales", DType::F32, {static_cast<int64_t>(s_->absmax_scales.size())},
                                 s_->absmax_scales.data(), static_cast<int64_t>(4 * s_->absmax_scales.size()), owner));
    st.tensors.push_back(nf4_view_of("absmax_offset", DType::F32, {1}, &s_->absmax_offset, 4, owner));
  } else {
    st.tensors.push_back(nf4_view_of("absmax", DType::F32, {static_cast<int64_t>(s_->absmax.size())}, s_->absmax.data(),
                                 static_cast<int64_t>(4 * s_->absmax.size()), owner));
  }
  if (bias_.defined()) st.tensors.push_back(stored_from_tensor("bias", bias_));
  return st;
}

LinearFactory nf4_linear_factory() {
  return [](const LayerState& st, const std::string& where) -> std::shared_ptr<LinearLayer> {
    kernels::NF4Storage s;
    try {
      s.double_quant = st.meta.at("double_quant").get<bool>();
      s.cols = st.meta.at("in_features").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
      throw_input("[model] {}: nf4 layer meta needs double_quant, in_features: {}", where, e.what());
    }
    LLMOPT_CHECK_INPUT(s.cols > 0, "[model] {}: nf4 in_features must be > 0, got {}", where, s.cols);
    const StoredTensor& q = st.get("qweight", where);
    LLMOPT_CHECK_INPUT(q.shape.size() == 2, "[model] {}: nf4 qweight must be 2-D", where);
    s.rows = q.shape[0];
    const kernels::NF4Matrix v = s.view();
    const int64_t n_abs = s.rows * v.blocks_per_row();
    nf4_copy_stored(q, DType::U8, s.rows * v.code_row_bytes(), s.codes, where);
    if (s.double_quant) {
      nf4_copy_stored(st.get("absmax_codes", where), DType::I8, n_abs, s.absmax_codes, where);
      nf4_copy_stored(st.get("absmax_scales", where), DType::F32,
                  (n_abs + kernels::kNF4DoubleQuantBlock - 1) / kernels::kNF4DoubleQuantBlock, s.absmax_scales, where);
      std::vector<float> offset;
      nf4_copy_stored(st.get("absmax_offset", where), DType::F32, 1, offset, where);
      s.absmax_offset = offset[0];
    } else {
      nf4_copy_stored(st.get("absmax", where), DType::F32, n_abs, s.absmax, where);
    }
    kernels::nf4_check_storage(s, where.c_str());
    torch::Tensor bias;
    if (const StoredTensor* b = st.find("bias")) bias = f32_tensor_from_stored(*b, where);
    return std::make_shared<NF4Linear>(std::move(s), bias);
  };
}

}  // namespace llmopt::model
