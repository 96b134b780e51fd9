#include "model/lora_merge.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "kernels/nf4.h"
#include "model/calibration.h"
#include "model/intn_linear.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

using kernels::kNF4Block;
using kernels::kNF4DoubleQuantBlock;

class NF4ColumnQuantizer : public ColumnQuantizer {
 public:
  NF4ColumnQuantizer(const torch::Tensor& reference, bool double_quant) {
    const torch::Tensor w = reference.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    s_.rows = w.size(0);
    s_.cols = w.size(1);
    s_.double_quant = double_quant;
    bpr_ = (s_.cols + kNF4Block - 1) / kNF4Block;
    const int64_t n_abs = s_.rows * bpr_;
    decoded_.assign(static_cast<size_t>(n_abs), 0.0f);
    s_.codes.assign(static_cast<size_t>(s_.rows * ((s_.cols + 1) / 2)), 0);
    if (double_quant) {
      // The absmax grid (offset, scale per 256) from the reference weight, as nf4_quantize fixes it.
      const kernels::NF4Storage ref = kernels::nf4_quantize(w.data_ptr<float>(), s_.rows, s_.cols, true);
      s_.absmax_offset = ref.absmax_offset;
      s_.absmax_scales = ref.absmax_scales;
      s_.absmax_codes.assign(static_cast<size_t>(n_abs), 0);
    } else {
      s_.absmax.assign(static_cast<size_t>(n_abs), 0.0f);
    }
  }
  int64_t group() const override { return kNF4Block; }
  void fit(int64_t g0, int64_t n, const float* w, const float*) override {
    const int64_t b = g0 / kNF4Block;
    for (int64_t r = 0; r < s_.rows; ++r) {
      float a = 0.0f;
      for (int64_t j = 0; j < n; ++j) a = std::max(a, std::fabs(w[r * n + j]));
      const int64_t i = r * bpr_ + b;
      if (s_.double_quant) {
        const float s2 = s_.absmax_scales[static_cast<size_t>(i / kNF4DoubleQuantBlock)];
        const float c = std::clamp(std::round((a - s_.absmax_offset) / s2), -127.0f, 127.0f);
        s_.absmax_codes[static_cast<size_t>(i)] = static_cast<int8_t>(c);
        decoded_[static_cast<size_t>(i)] = c * s2 + s_.absmax_offset;
      } else {
        s_.absmax[static_cast<size_t>(i)] = a;
        decoded_[static_cast<size_t>(i)] = a;
      }
    }
  }
  void round_column(int64_t c, const float* w, float* q) override {
    const int64_t row_bytes = (s_.cols + 1) / 2;
    for (int64_t r = 0; r < s_.rows; ++r) {
      const float a = decoded_[static_cast<size_t>(r * bpr_ + c / kNF4Block)];
      const float t = a > 0.0f ? std::clamp(w[r] / a, -1.0f, 1.0f) : 0.0f;
      const int code = kernels::nf4_code(t);
      uint8_t& byte = s_.codes[static_cast<size_t>(r * row_bytes + c / 2)];
      byte = (c & 1) ? static_cast<uint8_t>((byte & 0xF0) | code) : static_cast<uint8_t>((byte & 0x0F) | (code << 4));
      q[r] = kernels::kNF4Values[code] * a;
    }
  }
  std::shared_ptr<LinearLayer> build(const torch::Tensor& bias) override {
    return std::make_shared<NF4Linear>(s_, bias.defined() ? bias.detach() : bias);
  }

 private:
  kernels::NF4Storage s_;
  int64_t bpr_ = 0;
  std::vector<float> decoded_;  // the absmax each block decodes to
};

// The base of `lora` without a grad-through wrapper.
std::shared_ptr<LinearLayer> plain_base(const LoraLinear& lora) {
  std::shared_ptr<LinearLayer> b = lora.base();
  if (auto g = std::dynamic_pointer_cast<GradThroughLinear>(b)) b = g->base();
  return b;
}

// A GPTQ quantizer into the format of `base` for the merged weight `w`; nullptr for a dense base
// or a format without one (merged by RTN then).
std::unique_ptr<ColumnQuantizer> quantizer_for(const LinearLayer& base, const torch::Tensor& w) {
  const int64_t out = base.out_features(), in = base.in_features();
  if (auto p = dynamic_cast<const PackedLinear*>(&base)) return make_ggml_column_quantizer(p->type(), out, in);
  if (auto n = dynamic_cast<const NF4Linear*>(&base)) return make_nf4_column_quantizer(w, n->double_quant());
  if (auto q = dynamic_cast<const IntNLinear*>(&base)) {
    if (q->act_order()) return nullptr;  // a g_idx layout is not rebuilt here: RTN
    IntNParams p;
    p.bits = q->bits();
    p.group_size = q->group_size();
    p.sym = q->sym();
    return make_intn_column_quantizer(p, out, in);
  }
  return nullptr;
}

bool is_quantized(const LinearLayer& base) {
  return dynamic_cast<const PackedLinear*>(&base) || dynamic_cast<const NF4Linear*>(&base) ||
         dynamic_cast<const IntNLinear*>(&base);
}

}  // namespace

std::unique_ptr<ColumnQuantizer> make_nf4_column_quantizer(const torch::Tensor& reference, bool double_quant) {
  return std::make_unique<NF4ColumnQuantizer>(reference, double_quant);
}

std::shared_ptr<LinearLayer> merge_rtn(const LoraLinear& lora) {
  torch::NoGradGuard no_grad;
  const auto base = plain_base(lora);
  if (auto q = std::dynamic_pointer_cast<IntNLinear>(base)) {
    IntNParams p;
    p.bits = q->bits();
    p.group_size = q->group_size();
    p.sym = q->sym();
    const torch::Tensor b = q->bias();
    return IntNLinear::quantize(lora.dense_weight().to(torch::kFloat32).contiguous(), b.defined() ? b.detach() : b, p);
  }
  return lora.merged_layer();
}

LoraMergeResult merge_lora_requantized(LlamaModel& m, const LoraMergeOptions& o) {
  torch::NoGradGuard no_grad;
  LLMOPT_CHECK_INPUT(o.method == "rtn" || o.method == "gptq", "[merge] method must be rtn or gptq, found '{}'",
                     o.method);
  LoraMergeResult res;
  const auto layers = lora_layers(m);
  std::map<std::string, std::shared_ptr<LoraLinear>> lora_by_path(layers.begin(), layers.end());
  bool any_quantized = false;
  for (const auto& [p, l] : layers) any_quantized = any_quantized || is_quantized(*plain_base(*l));
  if (o.method == "rtn" || !any_quantized) {
    for (const auto& [p, l] : layers) {
      m.set_linear(p, merge_rtn(*l));
      ++res.merged;
      if (is_quantized(*plain_base(*l))) ++res.requantized;
    }
    return res;
  }
  LLMOPT_CHECK_INPUT(o.calibration.defined() && o.calibration.dim() == 2 && o.calibration.size(0) > 0,
                     "[merge] GPTQ re-quantization needs calibration windows (give calibration data, or merge with "
                     "method rtn)");
  CalibrateOptions co;
  co.stats.hessian = true;
  co.batch = o.batch;
  co.include_head = lora_by_path.count("lm_head") > 0;
  GptqOptions go = o.gptq;
  go.propagate = true;
  calibrate_layerwise(m, o.calibration, co, [&](LayerCalibration& lc) {
    for (const auto& path : lc.paths) {
      const auto it = lora_by_path.find(path);
      if (it == lora_by_path.end()) continue;
      const LoraLinear& lora = *it->second;
      const auto base = plain_base(lora);
      ++res.merged;
      const torch::Tensor w = lora.dense_weight().to(torch::kFloat32).contiguous();
      std::unique_ptr<ColumnQuantizer> cq = is_quantized(*base) ? quantizer_for(*base, w) : nullptr;
      if (!cq) {
        if (is_quantized(*base)) ++res.requantized;
        m.set_linear(path, merge_rtn(lora));
        continue;
      }
      const auto stats = lc.stats.at(path);
      m.set_linear(path, gptq_quantize(lora, *stats, *cq, go, path).layer);
      ++res.requantized;
      ++res.gptq;
    }
  });
  // Adapters the layer walk did not reach (none for decoder projections; a tied head ...).
  for (const auto& [p, l] : lora_layers(m)) {
    m.set_linear(p, merge_rtn(*l));
    ++res.merged;
  }
  return res;
}

double model_kld(LlamaModel& a, LlamaModel& b, const torch::Tensor& tokens, int64_t batch) {
  torch::NoGradGuard no_grad;
  LLMOPT_CHECK_INPUT(tokens.defined() && tokens.dim() == 2 && tokens.numel() > 0, "[merge] no tokens to compare on");
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < tokens.size(0); i += batch) {
    const torch::Tensor t = tokens.slice(0, i, std::min(tokens.size(0), i + batch));
    const auto lp = torch::log_softmax(a.forward(t).to(torch::kFloat64), -1);
    const auto lq = torch::log_softmax(b.forward(t).to(torch::kFloat64), -1);
    sum += (lp.exp() * (lp - lq)).sum(-1).sum().item<double>();
    n += t.size(0) * t.size(1);
  }
  return sum / static_cast<double>(n);
}

}  // namespace llmopt::model
