#include "model/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "kernels/quant_formats.h"
#include "kernels/intn.h"
#include "model/intn_linear.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

// The affine grid of one element of a ggml block: x = offset + scale·q, q ∈ [qmin, qmax].
struct Grid {
  float scale = 0, offset = 0;
  int qmin = 0, qmax = 0;
};

// Grid of element j of an encoded block, and writing its code back.
Grid block_grid(DType t, const uint8_t* b, int64_t j) {
  using namespace kernels;
  switch (t) {
    case DType::Q4_0: {
      const float d = f16_to_f32(reinterpret_cast<const BlockQ4_0*>(b)->d);
      return {d, -8 * d, 0, 15};
    }
    case DType::Q4_1: {
      const auto* x = reinterpret_cast<const BlockQ4_1*>(b);
      return {f16_to_f32(x->d), f16_to_f32(x->m), 0, 15};
    }
    case DType::Q5_0: {
      const float d = f16_to_f32(reinterpret_cast<const BlockQ5_0*>(b)->d);
      return {d, -16 * d, 0, 31};
    }
    case DType::Q5_1: {
      const auto* x = reinterpret_cast<const BlockQ5_1*>(b);
      return {f16_to_f32(x->d), f16_to_f32(x->m), 0, 31};
    }
    case DType::Q8_0:
      return {f16_to_f32(reinterpret_cast<const BlockQ8_0*>(b)->d), 0, -128, 127};
    case DType::Q4_K:
    case DType::Q5_K: {
      // 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes (ggml's get_scale_min_k4).
      const uint8_t* sc = t == DType::Q4_K ? reinterpret_cast<const BlockQ4_K*>(b)->scales
                                           : reinterpret_cast<const BlockQ5_K*>(b)->scales;
      const uint16_t dh = t == DType::Q4_K ? reinterpret_cast<const BlockQ4_K*>(b)->d
                                           : reinterpret_cast<const BlockQ5_K*>(b)->d;
      const uint16_t mh = t == DType::Q4_K ? reinterpret_cast<const BlockQ4_K*>(b)->dmin
                                           : reinterpret_cast<const BlockQ5_K*>(b)->dmin;
      const int s = static_cast<int>(j / 32);
      uint8_t scale, mn;
      if (s < 4) {
        scale = sc[s] & 63;
        mn = sc[s + 4] & 63;
      } else {
        scale = static_cast<uint8_t>((sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4));
        mn = static_cast<uint8_t>((sc[s + 4] >> 4) | ((sc[s] >> 6) << 4));
      }
      return {f16_to_f32(dh) * scale, -f16_to_f32(mh) * mn, 0, t == DType::Q4_K ? 15 : 31};
    }
    case DType::Q6_K: {
      const auto* x = reinterpret_cast<const BlockQ6_K*>(b);
      const float d = f16_to_f32(x->d) * x->scales[j / 16];
      return {d, -32 * d, 0, 63};
    }
    default:
      return {};
  }
}

void set_code(DType t, uint8_t* b, int64_t j, int q) {
  using namespace kernels;
  auto nibble = [&](uint8_t* qs, int64_t jj, int v) {  // element jj of a 32-element nibble block
    uint8_t& byte = qs[jj % 16];
    byte = jj < 16 ? static_cast<uint8_t>((byte & 0xF0) | (v & 0xF)) : static_cast<uint8_t>((byte & 0x0F) | ((v & 0xF) << 4));
  };
  auto high_bit = [&](uint8_t* qh, int64_t jj, int v) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    h = (h & ~(1u << jj)) | (static_cast<uint32_t>((v >> 4) & 1) << jj);
    std::memcpy(qh, &h, 4);
  };
  switch (t) {
    case DType::Q4_0: nibble(reinterpret_cast<BlockQ4_0*>(b)->qs, j, q); break;
    case DType::Q4_1: nibble(reinterpret_cast<BlockQ4_1*>(b)->qs, j, q); break;
    case DType::Q5_0: {
      auto* x = reinterpret_cast<BlockQ5_0*>(b);
      nibble(x->qs, j, q);
      high_bit(x->qh, j, q);
      break;
    }
    case DType::Q5_1: {
      auto* x = reinterpret_cast<BlockQ5_1*>(b);
      nibble(x->qs, j, q);
      high_bit(x->qh, j, q);
      break;
    }
    case DType::Q8_0: reinterpret_cast<BlockQ8_0*>(b)->qs[j] = static_cast<int8_t>(q); break;
    case DType::Q4_K:
    case DType::Q5_K: {
      // Chunks of 64 elements share 32 bytes: element c·64 + l in the low nibble of qs[c·32 + l],
      // element c·64 + 32 + l in its high nibble. Q5_K's fifth bit: qh[l] bit 2c (first 32 of
      // the chunk) or 2c+1 (second 32).
      uint8_t* qs = t == DType::Q4_K ? reinterpret_cast<BlockQ4_K*>(b)->qs : reinterpret_cast<BlockQ5_K*>(b)->qs;
      const int64_t c = j / 64, r = j % 64, l = r % 32;
      uint8_t& byte = qs[c * 32 + l];
      byte = r < 32 ? static_cast<uint8_t>((byte & 0xF0) | (q & 0xF)) : static_cast<uint8_t>((byte & 0x0F) | ((q & 0xF) << 4));
      if (t == DType::Q5_K) {
        uint8_t& h = reinterpret_cast<BlockQ5_K*>(b)->qh[l];
        const int bit = static_cast<int>(2 * c + (r < 32 ? 0 : 1));
        h = static_cast<uint8_t>((h & ~(1 << bit)) | (((q >> 4) & 1) << bit));
      }
      break;
    }
    case DType::Q6_K: {
      // Halves of 128: ql[64], qh[32]; element e of a half: l = e % 32, quarter k = e / 32;
      // low 4 bits in ql[l + 32·(k&1)] (low nibble for k < 2, high for k ≥ 2), high 2 bits in
      // qh[l] at bit 2k.
      auto* x = reinterpret_cast<BlockQ6_K*>(b);
      const int64_t n = j / 128, e = j % 128, l = e % 32, k = e / 32;
      uint8_t& lo = x->ql[n * 64 + l + 32 * (k & 1)];
      lo = k < 2 ? static_cast<uint8_t>((lo & 0xF0) | (q & 0xF)) : static_cast<uint8_t>((lo & 0x0F) | ((q & 0xF) << 4));
      uint8_t& hi = x->qh[n * 32 + l];
      hi = static_cast<uint8_t>((hi & ~(3 << (2 * k))) | (((q >> 4) & 3) << (2 * k)));
      break;
    }
    default: break;
  }
}

class GgmlColumnQuantizer : public ColumnQuantizer {
 public:
  GgmlColumnQuantizer(DType t, int64_t out, int64_t in)
      : t_(t), out_(out), in_(in), be_(dtype_block_elems(t)), bb_(dtype_block_bytes(t)),
        blocks_(static_cast<size_t>(out * (in / be_) * bb_)) {}
  int64_t group() const override { return be_; }
  void fit(int64_t g0, int64_t n, const float* w, const float* importance) override {
    // The block's scales from the format's own quantizer: importance-weighted (llama.cpp's
    // imatrix search) when the format has one and importance is given.
    const bool weighted = importance && kernels::has_quantize_weighted(t_);
    std::vector<float> row(static_cast<size_t>(be_));
    for (int64_t r = 0; r < out_; ++r) {
      std::copy(w + r * n, w + r * n + be_, row.begin());
      if (weighted) {
        kernels::quantize_row_weighted(t_, row.data(), block(r, g0), be_, importance);
      } else {
        kernels::quantize_row_ref(t_, row.data(), block(r, g0), be_);
      }
    }
  }
  void round_column(int64_t c, const float* w, float* q) override {
    const int64_t j = c % be_;
    for (int64_t r = 0; r < out_; ++r) {
      uint8_t* b = block(r, c);
      const Grid g = block_grid(t_, b, j);
      // A zero step decodes every code to `offset`; any code will do.
      int code = std::clamp(0, g.qmin, g.qmax);
      if (g.scale != 0) {
        code = static_cast<int>(std::lround((w[r] - g.offset) / g.scale));
        code = std::clamp(code, g.qmin, g.qmax);
      }
      set_code(t_, b, j, code);
      q[r] = g.offset + g.scale * static_cast<float>(code);
    }
  }
  std::shared_ptr<LinearLayer> build(const torch::Tensor& bias) override {
    return std::make_shared<PackedLinear>(t_, out_, in_, std::move(blocks_), bias);
  }

 private:
  uint8_t* block(int64_t r, int64_t c) { return blocks_.data() + (r * (in_ / be_) + c / be_) * bb_; }
  DType t_;
  int64_t out_, in_, be_, bb_;
  std::vector<uint8_t> blocks_;
};

// llmopt's group-wise int-N (model::IntNLinear): one grid per group of `group` columns of a row,
// the last group of a row shorter when the row is not a multiple (tail group).
class IntNColumnQuantizer : public ColumnQuantizer {
 public:
  IntNColumnQuantizer(const IntNParams& p, int64_t out, int64_t in)
      : p_(p), out_(out), in_(in), gs_(p.group_size > 0 && p.group_size < in ? p.group_size : in),
        groups_((in + gs_ - 1) / gs_), grids_(static_cast<size_t>(out * groups_)),
        codes_(torch::zeros({out, in}, torch::kUInt8)) {}
  int64_t group() const override { return gs_; }
  void fit(int64_t g0, int64_t n, const float* w, const float* importance) override {
    for (int64_t r = 0; r < out_; ++r)
      grids_[static_cast<size_t>(r * groups_ + g0 / gs_)] =
          kernels::fit_group(w + r * n, n, p_.bits, p_.sym, importance, p_.clip_search);
  }
  void round_column(int64_t c, const float* w, float* q) override {
    auto* codes = codes_.data_ptr<uint8_t>();
    for (int64_t r = 0; r < out_; ++r) {
      const auto& g = grids_[static_cast<size_t>(r * groups_ + c / gs_)];
      const int code = kernels::quantize_code(w[r], g, p_.bits);
      codes[r * in_ + c] = static_cast<uint8_t>(code);
      q[r] = kernels::dequantize_code(code, g);
    }
  }
  std::shared_ptr<LinearLayer> build(const torch::Tensor& bias) override {
    return IntNLinear::from_codes(codes_, grids_, bias, p_);
  }

 private:
  IntNParams p_;
  int64_t out_, in_, gs_, groups_;
  std::vector<kernels::IntNGrid> grids_;
  torch::Tensor codes_;
};

}  // namespace

std::unique_ptr<ColumnQuantizer> make_intn_column_quantizer(const IntNParams& p, int64_t out, int64_t in) {
  check_intn_params(p, "format");
  return std::make_unique<IntNColumnQuantizer>(p, out, in);
}

bool ggml_column_quantizer_supports(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q8_0:
    case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      return kernels::has_quantize_ref(t);
    default:
      return false;
  }
}

std::unique_ptr<ColumnQuantizer> make_ggml_column_quantizer(DType t, int64_t out, int64_t in) {
  if (!ggml_column_quantizer_supports(t) || in % dtype_block_elems(t) != 0) return nullptr;
  return std::make_unique<GgmlColumnQuantizer>(t, out, in);
}

torch::Tensor round_to_grid(const torch::Tensor& W, const InputStats& stats, ColumnQuantizer& qz) {
  torch::NoGradGuard ng;
  const int64_t out = W.size(0), in = W.size(1), gs = qz.group();
  LLMOPT_CHECK_INPUT(stats.rows > 0 && stats.sum_sq.defined() && stats.sum_sq.size(0) == in,
                     "[gptq] no calibration statistics for {} inputs", in);
  // The importance gptq_quantize uses: diag of H = 2/n Σxxᵀ (or 2/n Σx²), dead inputs at 1.
  auto diag = (stats.hessian.defined() ? stats.hessian.diagonal() : stats.sum_sq) * (2.0 / static_cast<double>(stats.rows));
  auto dead = diag.eq(0);
  auto Wc = W.to(torch::kFloat32).clone();
  if (dead.any().item<bool>()) {
    Wc.index_fill_(1, dead.nonzero().flatten(), 0.0f);
    diag = diag.masked_fill(dead, 1.0);
  }
  const auto importance = diag.to(torch::kFloat32).contiguous();
  const float* imp = importance.data_ptr<float>();
  Wc = Wc.contiguous();
  const auto Wt = Wc.t().contiguous();  // column c of W is row c of Wt
  auto Qt = torch::empty_like(Wt);
  std::vector<float> buf;
  const float* w = Wc.data_ptr<float>();
  for (int64_t g0 = 0; g0 < in; g0 += gs) {
    const int64_t gn = std::min(gs, in - g0);
    buf.resize(static_cast<size_t>(out * gn));
    for (int64_t r = 0; r < out; ++r) std::copy(w + r * in + g0, w + r * in + g0 + gn, buf.begin() + r * gn);
    qz.fit(g0, gn, buf.data(), imp + g0);
    for (int64_t c = g0; c < g0 + gn; ++c) qz.round_column(c, Wt.data_ptr<float>() + c * out, Qt.data_ptr<float>() + c * out);
  }
  return Qt.t().contiguous();
}

GptqResult gptq_quantize(const LinearLayer& layer, const InputStats& stats, ColumnQuantizer& qz,
                         const GptqOptions& o, const std::string& where) {
  torch::NoGradGuard ng;
  const int64_t out = layer.out_features(), in = layer.in_features();
  const int64_t gs = qz.group();
  LLMOPT_CHECK_INPUT(stats.rows > 0 && stats.sum_sq.defined() && stats.sum_sq.size(0) == in,
                     "[gptq] {}: no calibration statistics for its {} inputs", where, in);
  LLMOPT_CHECK_INPUT(!o.propagate || stats.hessian.defined(), "[gptq] {}: no Hessian collected", where);
  const torch::Tensor W0 = layer.dense_weight().to(torch::kFloat32).contiguous();  // [out, in]
  LLMOPT_CHECK_INPUT(torch::isfinite(W0).all().item<bool>(), "[gptq] {}: weight holds NaN or Inf", where);

  // H = 2/n Σ x xᵀ (or its diagonal when only rounding).
  torch::Tensor H = stats.hessian.defined() ? stats.hessian * (2.0 / static_cast<double>(stats.rows))
                                            : torch::diag(stats.sum_sq * (2.0 / static_cast<double>(stats.rows)));
  auto diag = H.diagonal().clone();
  auto dead = diag.eq(0);
  auto Wt = W0.t().contiguous();  // [in, out]: column j of W is row j of Wt
  if (dead.any().item<bool>()) {
    auto idx = dead.nonzero().flatten();
    Wt.index_fill_(0, idx, 0.0f);
    H.diagonal().masked_fill_(dead, 1.0);
    diag = H.diagonal().clone();
  }
  const auto importance = diag.to(torch::kFloat32).contiguous();  // per input column
  const float* imp = importance.data_ptr<float>();

  std::vector<int64_t> perm(static_cast<size_t>(in));
  for (int64_t j = 0; j < in; ++j) perm[static_cast<size_t>(j)] = j;
  // One grid over whole rows (per output channel) is fitted up front as well, as GPTQ does.
  const bool static_groups = o.act_order || gs >= in;
  if (static_groups) {
    if (o.act_order) {
      auto order = torch::argsort(diag, 0, /*descending=*/true);
      for (int64_t j = 0; j < in; ++j) perm[static_cast<size_t>(j)] = order[j].item<int64_t>();
    }
    // Static groups: every grid from the original weights, in stored (unpermuted) order.
    std::vector<float> buf(static_cast<size_t>(out * gs));
    auto Wc = Wt.t().contiguous();
    for (int64_t g0 = 0; g0 < in; g0 += gs) {
      const int64_t gn = std::min(gs, in - g0);  // the tail group may be shorter
      const float* src = Wc.data_ptr<float>();
      for (int64_t r = 0; r < out; ++r)
        std::copy(src + r * in + g0, src + r * in + g0 + gn, buf.begin() + r * gn);
      qz.fit(g0, gn, buf.data(), imp + g0);
    }
  }
  auto pidx = torch::tensor(perm, torch::kInt64);
  Wt = Wt.index_select(0, pidx).contiguous();

  torch::Tensor U;  // upper Cholesky factor of H⁻¹ (permuted), [in, in] f32
  if (o.propagate) {
    auto Hp = H.index_select(0, pidx).index_select(1, pidx);
    Hp.diagonal().add_(o.damp * Hp.diagonal().mean().item<double>());
    try {
      auto Lc = torch::linalg::cholesky(Hp);
      auto Hinv = torch::cholesky_inverse(Lc);
      U = torch::linalg::cholesky(Hinv).t().contiguous();  // upper
    } catch (const std::exception& e) {
      throw_input("[gptq] {}: the Hessian is not positive definite even with damp {} (raise damp or give more "
                  "calibration data): {}", where, o.damp, e.what());
    }
    U = U.to(torch::kFloat32).contiguous();
  }

  // Blocks hold whole groups (a group's grid is fitted from its columns' current values).
  const int64_t B = static_groups ? std::max<int64_t>(1, o.block)
                                  : std::max<int64_t>(gs, (std::max<int64_t>(o.block, gs) / gs) * gs);
  auto Qt = torch::zeros_like(Wt);  // dequantized result, permuted rows
  std::vector<float> col(static_cast<size_t>(out)), qcol(static_cast<size_t>(out)), gbuf;
  for (int64_t i1 = 0; i1 < in; i1 += B) {
    const int64_t i2 = std::min(in, i1 + B), n = i2 - i1;
    auto W1 = Wt.narrow(0, i1, n).clone();  // [n, out]
    auto E1 = torch::zeros({n, out}, torch::kFloat32);
    float* w1 = W1.data_ptr<float>();
    float* e1 = E1.data_ptr<float>();
    float* q1 = Qt.data_ptr<float>() + i1 * out;
    const float* u = o.propagate ? U.data_ptr<float>() : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = perm[static_cast<size_t>(i1 + i)];
      if (!static_groups && c % gs == 0) {
        // The group's grid from its columns' current values (they lie in this block: B % gs == 0).
        const int64_t gn = std::min(gs, in - c);
        gbuf.resize(static_cast<size_t>(out * gn));
        for (int64_t r = 0; r < out; ++r)
          for (int64_t k = 0; k < gn; ++k) gbuf[static_cast<size_t>(r * gn + k)] = w1[(i + k) * out + r];
        qz.fit(c, gn, gbuf.data(), imp + c);
      }
      float* w = w1 + i * out;
      qz.round_column(c, w, q1 + i * out);
      if (!o.propagate) continue;
      const float d = u[(i1 + i) * in + (i1 + i)];
      float* e = e1 + i * out;
      for (int64_t r = 0; r < out; ++r) e[r] = (w[r] - q1[i * out + r]) / d;
      // In-block update of the later columns of this block.
      for (int64_t k = i + 1; k < n; ++k) {
        const float h = u[(i1 + i) * in + (i1 + k)];
        if (h == 0) continue;
        float* wk = w1 + k * out;
        for (int64_t r = 0; r < out; ++r) wk[r] -= e[r] * h;
      }
    }
    if (o.propagate && i2 < in) {
      // Lazy update of every column after the block: W[i2:] -= U[i1:i2, i2:]ᵀ E1.
      auto Ub = U.narrow(0, i1, n).narrow(1, i2, in - i2);  // [n, in - i2]
      Wt.narrow(0, i2, in - i2).sub_(torch::matmul(Ub.t(), E1));
    }
  }
  // Unpermute: Q [out, in].
  auto inv = torch::empty({in}, torch::kInt64);
  inv.index_put_({pidx}, torch::arange(in, torch::kInt64));
  auto Q = Qt.index_select(0, inv).t().contiguous();
  GptqResult res;
  res.layer = qz.build(layer.bias());
  // For the HF export's quantization_config (desc_act, static_groups as auto-gptq means them).
  if (auto* l = dynamic_cast<IntNLinear*>(res.layer.get()); l && o.propagate)
    l->set_gptq_process({o.act_order, static_groups});
  {
    auto Hf = (stats.hessian.defined() ? stats.hessian : torch::diag(stats.sum_sq)).to(torch::kFloat64);
    auto D = (W0 - Q).to(torch::kFloat64);
    auto W0d = W0.to(torch::kFloat64);
    const double num = (torch::matmul(D, Hf) * D).sum().item<double>();
    const double den = (torch::matmul(W0d, Hf) * W0d).sum().item<double>();
    res.rel_error = den > 0 ? num / den : 0;
  }
  return res;
}

}  // namespace llmopt::model
