#include "model/w8a8_linear.h"

#include <cmath>

#include "core/error.h"

namespace llmopt::model {
namespace {

torch::Tensor tensor_from_stored(const StoredTensor& s, torch::ScalarType t, int64_t elem, const std::string& where) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  LLMOPT_CHECK_INPUT(s.nbytes == n * elem, "[model] {}: w8a8 tensor '{}' holds {} bytes, its shape needs {}", where,
                     s.name, s.nbytes, n * elem);
  return torch::from_blob(const_cast<uint8_t*>(s.data), s.shape, t).clone();
}

}  // namespace

void check_w8a8_params(const W8A8Params& p, const std::string& option) {
  LLMOPT_CHECK_INPUT(p.mode == "dynamic" || p.mode == "static", "[quantize] {}: w8a8 mode must be dynamic or static, got '{}'",
                     option, p.mode);
  LLMOPT_CHECK_INPUT(std::isfinite(p.threshold), "[quantize] {}: outlier threshold must be finite", option);
}

std::shared_ptr<W8A8Linear> W8A8Linear::quantize(const torch::Tensor& weight, const torch::Tensor& bias,
                                                 const W8A8Params& p, const torch::Tensor& outlier_cols,
                                                 double act_scale) {
  check_w8a8_params(p, "w8a8");
  LLMOPT_CHECK_INPUT(weight.dim() == 2, "[quantize] w8a8 weight must be [out, in], got {} dims", weight.dim());
  const auto w = weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  LLMOPT_CHECK_INPUT(torch::isfinite(w).all().item<bool>(), "[quantize] w8a8: weight has NaN or Inf");
  auto amax = w.abs().amax(1);
  auto scale = torch::where(amax > 0, amax / 127.0f, torch::ones_like(amax));
  auto q = torch::round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch::kInt8);
  torch::Tensor cols = outlier_cols.defined() ? outlier_cols.to(torch::kCPU, torch::kInt64).contiguous()
                                              : torch::empty({0}, torch::kInt64);
  cols = std::get<0>(torch::sort(cols));
  torch::Tensor colw = w.index_select(1, cols).to(torch::kFloat16).contiguous();
  torch::Tensor as;
  if (p.mode == "static") {
    LLMOPT_CHECK_INPUT(std::isfinite(act_scale) && act_scale > 0,
                       "[quantize] w8a8 static: activation scale must be > 0, got {}", act_scale);
    as = torch::full({1}, static_cast<float>(act_scale), torch::kFloat32);
  }
  return std::make_shared<W8A8Linear>(q, scale.contiguous(), bias, p, cols, colw, as);
}

W8A8Linear::W8A8Linear(torch::Tensor qweight, torch::Tensor wscale, torch::Tensor bias, W8A8Params p,
                       torch::Tensor outlier_cols, torch::Tensor outlier_w, torch::Tensor act_scale)
    : p_(std::move(p)) {
  check_w8a8_params(p_, "w8a8 layer");
  LLMOPT_CHECK_INPUT(qweight.dim() == 2 && qweight.scalar_type() == torch::kInt8, "[model] w8a8 qweight must be i8 [out, in]");
  const int64_t out = qweight.size(0), in = qweight.size(1);
  LLMOPT_CHECK_INPUT(wscale.dim() == 1 && wscale.size(0) == out, "[model] w8a8 wscale must be [{}]", out);
  qweight_ = register_buffer("qweight", qweight.contiguous());
  wscale_ = register_buffer("wscale", wscale.to(torch::kFloat32).contiguous());
  if (bias.defined()) {
    LLMOPT_CHECK_INPUT(bias.dim() == 1 && bias.size(0) == out, "[model] w8a8 bias must be [{}]", out);
    bias_ = register_buffer("bias", bias.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone());
  }
  if (!outlier_cols.defined()) outlier_cols = torch::empty({0}, torch::kInt64);
  const int64_t k = outlier_cols.numel();
  LLMOPT_CHECK_INPUT(outlier_cols.dim() == 1, "[model] w8a8 outlier_cols must be 1-D");
  if (k > 0) {
    LLMOPT_CHECK_INPUT(outlier_cols.min().item<int64_t>() >= 0 && outlier_cols.max().item<int64_t>() < in,
                       "[model] w8a8 outlier_cols must lie in [0, {})", in);
    LLMOPT_CHECK_INPUT(outlier_w.defined() && outlier_w.dim() == 2 && outlier_w.size(0) == out && outlier_w.size(1) == k,
                       "[model] w8a8 outlier_w must be [{}, {}]", out, k);
  }
  cols_ = register_buffer("outlier_cols", outlier_cols.to(torch::kInt64).contiguous());
  colw_ = register_buffer("outlier_w", k > 0 ? outlier_w.to(torch::kFloat16).contiguous()
                                             : torch::empty({out, 0}, torch::kFloat16));
  if (p_.mode == "static") {
    LLMOPT_CHECK_INPUT(act_scale.defined() && act_scale.numel() == 1 && act_scale.item<double>() > 0,
                       "[model] w8a8 static layer needs act_scale [1] > 0");
    act_scale_ = register_buffer("act_scale", act_scale.to(torch::kFloat32).reshape({1}).contiguous());
  }
}

torch::Tensor W8A8Linear::forward(const torch::Tensor& x) {
  const int64_t in = in_features(), out = out_features();
  LLMOPT_CHECK_INPUT(x.size(-1) == in, "[model] w8a8 layer expects {} inputs, got {}", in, x.size(-1));
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  auto xd = x.detach().to(torch::kCPU, torch::kFloat64).reshape({-1, in}).contiguous();
  // Columns computed in float: the calibrated ones (kept f16 weights) and, in dynamic mode, those
  // whose |x| exceeds the threshold in this call (dequantized int8 weight columns).
  auto in_float = torch::zeros({in}, torch::kBool);
  if (cols_.numel() > 0) in_float.index_fill_(0, cols_, true);
  torch::Tensor runtime_cols;
  if (p_.mode == "dynamic" && p_.threshold > 0 && xd.size(0) > 0) {
    auto hit = (xd.abs().amax(0) > p_.threshold).logical_and(in_float.logical_not());
    runtime_cols = hit.nonzero().reshape({-1});
    in_float.logical_or_(hit);
  }
  auto xi = xd.masked_fill(in_float.unsqueeze(0), 0.0);
  torch::Tensor sx;  // [m, 1] activation step
  if (p_.mode == "dynamic") {
    auto amax = xi.abs().amax(1, /*keepdim=*/true);
    sx = torch::where(amax > 0, amax / 127.0, torch::ones_like(amax));
  } else {
    sx = torch::full({1, 1}, act_scale_.item<double>(), torch::kFloat64);
  }
  auto xq = torch::round(xi / sx).clamp(-127, 127);
  // Exact integer product: |Σ| ≤ 127² · in, an integer float64 represents exactly.
  auto acc = torch::matmul(xq, qweight_.to(torch::kFloat64).t());
  auto y = acc * sx * wscale_.to(torch::kFloat64).unsqueeze(0);
  if (cols_.numel() > 0) y.add_(torch::matmul(xd.index_select(1, cols_), colw_.to(torch::kFloat64).t()));
  if (runtime_cols.defined() && runtime_cols.numel() > 0) {
    auto wc = qweight_.index_select(1, runtime_cols).to(torch::kFloat64) * wscale_.to(torch::kFloat64).unsqueeze(1);
    y.add_(torch::matmul(xd.index_select(1, runtime_cols), wc.t()));
  }
  if (bias_.defined()) y.add_(bias_.to(torch::kFloat64));
  return y.to(torch::kFloat32).reshape(sizes).to(x.device());
}

torch::Tensor W8A8Linear::dense_weight() const {
  auto w = qweight_.to(torch::kFloat32) * wscale_.unsqueeze(1);
  if (cols_.numel() > 0) w.index_copy_(1, cols_, colw_.to(torch::kFloat32));
  return w;
}

int64_t W8A8Linear::storage_bytes() const {
  return qweight_.numel() + wscale_.numel() * 4 + cols_.numel() * 8 + colw_.numel() * 2 +
         (act_scale_.defined() ? 4 : 0) + (bias_.defined() ? bias_.numel() * 4 : 0);
}

LayerState W8A8Linear::stored_state() const {
  LayerState st;
  st.kind = kind();
  st.meta = {{"mode", p_.mode}, {"threshold", p_.threshold}, {"in_features", in_features()}};
  st.tensors.push_back(stored_from_tensor("qweight", qweight_));
  st.tensors.push_back(stored_from_tensor("wscale", wscale_));
  if (act_scale_.defined()) st.tensors.push_back(stored_from_tensor("act_scale", act_scale_));
  if (cols_.numel() > 0) {
    st.tensors.push_back(stored_from_tensor("outlier_cols", cols_));
    st.tensors.push_back(stored_from_tensor("outlier_w", colw_));
  }
  if (bias_.defined()) st.tensors.push_back(stored_from_tensor("bias", bias_));
  return st;
}

LinearFactory w8a8_linear_factory() {
  return [](const LayerState& st, const std::string& where) -> std::shared_ptr<LinearLayer> {
    W8A8Params p;
    int64_t in = 0;
    try {
      p.mode = st.meta.at("mode").get<std::string>();
      p.threshold = st.meta.at("threshold").get<double>();
      in = st.meta.at("in_features").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
      throw_input("[model] {}: w8a8 layer meta needs mode, threshold, in_features: {}", where, e.what());
    }
    check_w8a8_params(p, where);
    const StoredTensor& q = st.get("qweight", where);
    LLMOPT_CHECK_INPUT(q.dtype == DType::I8 && q.shape.size() == 2 && q.shape[1] == in,
                       "[model] {}: w8a8 qweight must be i8 [out, {}]", where, in);
    auto qw = tensor_from_stored(q, torch::kInt8, 1, where);
    const StoredTensor& s = st.get("wscale", where);
    LLMOPT_CHECK_INPUT(s.dtype == DType::F32, "[model] {}: w8a8 wscale must be f32, got {}", where, dtype_name(s.dtype));
    auto ws = tensor_from_stored(s, torch::kFloat32, 4, where);
    torch::Tensor cols, colw, as, bias;
    if (const StoredTensor* c = st.find("outlier_cols")) {
      LLMOPT_CHECK_INPUT(c->dtype == DType::I64, "[model] {}: w8a8 outlier_cols must be i64", where);
      cols = tensor_from_stored(*c, torch::kInt64, 8, where);
      const StoredTensor& cw = st.get("outlier_w", where);
      LLMOPT_CHECK_INPUT(cw.dtype == DType::F16, "[model] {}: w8a8 outlier_w must be f16", where);
      colw = tensor_from_stored(cw, torch::kFloat16, 2, where);
    }
    if (const StoredTensor* a = st.find("act_scale")) as = f32_tensor_from_stored(*a, where);
    if (const StoredTensor* b = st.find("bias")) bias = f32_tensor_from_stored(*b, where);
    return std::make_shared<W8A8Linear>(qw, ws, bias, p, cols, colw, as);
  };
}

}  // namespace llmopt::model
