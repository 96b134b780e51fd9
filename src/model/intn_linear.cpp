#include "model/intn_linear.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/gemv.h"

namespace llmopt::model {
namespace {

// Rows dequantized per tile in forward(): 64 rows x in floats stay in cache for the product.
constexpr int64_t kTileRows = 64;

StoredTensor view_of(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
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

torch::Tensor cpu_f32_2d(const torch::Tensor& w, const char* what) {
  LLMOPT_CHECK_INPUT(w.dim() == 2, "[quantize] {} must be [out, in], got {} dims", what, w.dim());
  return w.detach().to(torch::kCPU, torch::kFloat32).contiguous();
}

template <class T>
void copy_stored(const StoredTensor& t, DType want, int64_t count, std::vector<T>& out, const std::string& where) {
  LLMOPT_CHECK_INPUT(t.dtype == want && t.nbytes == count * static_cast<int64_t>(sizeof(T)),
                     "[model] {}: stored '{}' must be {} values of {}, got {} bytes of {}", where, t.name, count,
                     dtype_name(want), t.nbytes, dtype_name(t.dtype));
  out.resize(static_cast<size_t>(count));
  if (count > 0) std::memcpy(out.data(), t.data, static_cast<size_t>(t.nbytes));
}

}  // namespace

void check_intn_params(const IntNParams& p, const std::string& option) {
  LLMOPT_CHECK_INPUT(p.bits >= 2 && p.bits <= 8, "[quantize] {}: bits must be 2..8, got {}", option, p.bits);
  LLMOPT_CHECK_INPUT(p.group_size == 32 || p.group_size == 64 || p.group_size == 128 || p.group_size == -1,
                     "[quantize] {}: group size must be 32, 64, 128 or -1 (whole row), got {}", option, p.group_size);
}

std::shared_ptr<IntNLinear> IntNLinear::quantize(const torch::Tensor& weight, const torch::Tensor& bias,
                                                 const IntNParams& p, const torch::Tensor& col_importance) {
  check_intn_params(p, "intn");
  auto w = cpu_f32_2d(weight, "weight");
  torch::Tensor imp;
  if (col_importance.defined()) {
    imp = col_importance.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    LLMOPT_CHECK_INPUT(imp.dim() == 1 && imp.size(0) == w.size(1), "[quantize] column importance must be [{}]",
                       w.size(1));
  }
  auto s = kernels::intn_quantize(w.data_ptr<float>(), w.size(0), w.size(1), p.bits, p.group_size, p.sym,
                                  imp.defined() ? imp.data_ptr<float>() : nullptr, p.clip_search);
  return std::make_shared<IntNLinear>(std::move(s), bias);
}

std::shared_ptr<IntNLinear> IntNLinear::from_codes(const torch::Tensor& codes, const std::vector<kernels::IntNGrid>& grids,
                                                   const torch::Tensor& bias, const IntNParams& p,
                                                   const std::vector<int32_t>& g_idx) {
  check_intn_params(p, "intn");
  LLMOPT_CHECK_INPUT(codes.dim() == 2, "[quantize] codes must be [out, in], got {} dims", codes.dim());
  auto c = codes.detach().to(torch::kCPU, torch::kUInt8).contiguous();
  const int64_t out = c.size(0), in = c.size(1);
  const int64_t groups = kernels::intn_groups(in, p.group_size);
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(grids.size()) == out * groups,
                     "[quantize] {} grids given, [{}, {}] with group size {} needs {}", grids.size(), out, in,
                     p.group_size, out * groups);
  LLMOPT_CHECK_INPUT(g_idx.empty() || static_cast<int64_t>(g_idx.size()) == in, "[quantize] g_idx has {} entries, expected {}",
                     g_idx.size(), in);
  auto s = kernels::intn_from_codes(c.data_ptr<uint8_t>(), grids.data(), out, in, p.bits, p.group_size, p.sym,
                                    g_idx.empty() ? nullptr : g_idx.data());
  return std::make_shared<IntNLinear>(std::move(s), bias);
}

IntNLinear::IntNLinear(kernels::IntNStorage storage, torch::Tensor bias)
    : s_(std::make_shared<kernels::IntNStorage>(std::move(storage))) {
  kernels::intn_check_storage(*s_, "intn layer");
  if (bias.defined()) {
    LLMOPT_CHECK_INPUT(bias.dim() == 1 && bias.size(0) == s_->rows, "[model] intn layer bias must be [{}]", s_->rows);
    bias_ = register_buffer("bias", bias.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone());
  }
}

torch::Tensor IntNLinear::dense_weight() const {
  auto w = torch::empty({s_->rows, s_->cols}, torch::kFloat32);
  kernels::intn_dequantize_rows(s_->view(), 0, s_->rows, w.data_ptr<float>());
  return w;
}

int64_t IntNLinear::storage_bytes() const {
  return static_cast<int64_t>(s_->codes.size() + 2 * s_->scales.size() + 4 * s_->scales_f32.size() + s_->zeros.size() +
                              4 * s_->g_idx.size()) +
         (bias_.defined() ? bias_.numel() * 4 : 0);
}

torch::Tensor IntNLinear::forward(const torch::Tensor& x) {
  const int64_t in = s_->cols, out = s_->rows;
  LLMOPT_CHECK_INPUT(x.size(-1) == in, "[model] intn layer expects {} inputs, got {}", in, x.size(-1));
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  auto xf = x.detach().to(torch::kCPU, torch::kFloat32).reshape({-1, in}).contiguous();
  const int64_t m = xf.size(0);
  auto y = torch::empty({m, out}, torch::kFloat32);
  const float* b = bias_.defined() ? bias_.data_ptr<float>() : nullptr;
  const kernels::IntNMatrix w = s_->view();
  if (m <= kernels::kMaxGemvBatch) {
    kernels::intn_gemv(w, xf.data_ptr<float>(), b, y.data_ptr<float>(), m);
  } else {
    auto tile = torch::empty({kTileRows, in}, torch::kFloat32);
    for (int64_t r0 = 0; r0 < out; r0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, out - r0);
      kernels::intn_dequantize_rows(w, r0, r0 + rows, tile.data_ptr<float>());
      y.narrow(1, r0, rows).copy_(torch::matmul(xf, tile.narrow(0, 0, rows).t()));
    }
    if (b) y.add_(bias_);
  }
  return y.reshape(sizes).to(x.device());
}

LayerState IntNLinear::stored_state() const {
  LayerState st;
  st.kind = kind();
  const kernels::IntNMatrix v = s_->view();
  st.meta = {{"bits", s_->bits},
             {"group_size", s_->group},
             {"sym", s_->sym},
             {"act_order", act_order()},
             {"in_features", s_->cols}};
  if (gptq_) st.meta["gptq"] = {{"desc_act", gptq_->desc_act}, {"static_groups", gptq_->static_groups}};
  auto owner = std::static_pointer_cast<const void>(s_);
  st.tensors.push_back(view_of("qweight", DType::U8, {s_->rows, v.code_row_bytes()}, s_->codes.data(),
                               static_cast<int64_t>(s_->codes.size()), owner));
  if (s_->scales_f32.empty()) {
    st.tensors.push_back(view_of("scales", DType::F16, {s_->rows, v.groups()}, s_->scales.data(),
                                 static_cast<int64_t>(2 * s_->scales.size()), owner));
  } else {
    st.tensors.push_back(view_of("scales", DType::F32, {s_->rows, v.groups()}, s_->scales_f32.data(),
                                 static_cast<int64_t>(4 * s_->scales_f32.size()), owner));
  }
  if (!s_->sym)
    st.tensors.push_back(view_of("qzeros", DType::U8, {s_->rows, v.zero_row_bytes()}, s_->zeros.data(),
                                 static_cast<int64_t>(s_->zeros.size()), owner));
  if (act_order())
    st.tensors.push_back(view_of("g_idx", DType::I32, {s_->cols}, s_->g_idx.data(),
                                 static_cast<int64_t>(4 * s_->g_idx.size()), owner));
  if (bias_.defined()) st.tensors.push_back(stored_from_tensor("bias", bias_));
  return st;
}

LinearFactory intn_linear_factory() {
  return [](const LayerState& st, const std::string& where) -> std::shared_ptr<LinearLayer> {
    kernels::IntNStorage s;
    try {
      s.bits = st.meta.at("bits").get<int>();
      s.group = st.meta.at("group_size").get<int64_t>();
      s.sym = st.meta.at("sym").get<bool>();
      s.cols = st.meta.at("in_features").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
      throw_input("[model] {}: intn layer meta needs bits, group_size, sym, in_features: {}", where, e.what());
    }
    kernels::intn_check_bits(s.bits, where.c_str());
    LLMOPT_CHECK_INPUT(s.cols > 0, "[model] {}: intn in_features must be > 0, got {}", where, s.cols);
    const StoredTensor& q = st.get("qweight", where);
    LLMOPT_CHECK_INPUT(q.shape.size() == 2, "[model] {}: intn qweight must be 2-D", where);
    s.rows = q.shape[0];
    const kernels::IntNMatrix v = s.view();
    copy_stored(q, DType::U8, s.rows * v.code_row_bytes(), s.codes, where);
    const StoredTensor& sc = st.get("scales", where);
    if (sc.dtype == DType::F32) {
      copy_stored(sc, DType::F32, s.rows * v.groups(), s.scales_f32, where);
    } else {
      copy_stored(sc, DType::F16, s.rows * v.groups(), s.scales, where);
    }
    if (!s.sym) copy_stored(st.get("qzeros", where), DType::U8, s.rows * v.zero_row_bytes(), s.zeros, where);
    if (const StoredTensor* g = st.find("g_idx")) copy_stored(*g, DType::I32, s.cols, s.g_idx, where);
    kernels::intn_check_storage(s, where.c_str());
    torch::Tensor bias;
    if (const StoredTensor* b = st.find("bias")) bias = f32_tensor_from_stored(*b, where);
    auto layer = std::make_shared<IntNLinear>(std::move(s), bias);
    if (const auto g = st.meta.find("gptq"); g != st.meta.end() && g->is_object())
      layer->set_gptq_process({g->value("desc_act", false), g->value("static_groups", false)});
    return layer;
  };
}

}  // namespace llmopt::model
