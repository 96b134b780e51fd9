#include "model/quantize.h"

#include <map>
#include <optional>
#include <regex>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "io/imatrix.h"
#include "kernels/quant_formats.h"
#include "model/awq.h"
#include "model/intn_linear.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

DType packable_type(const std::string& name, const char* option) {
  const auto t = dtype_from_name(name);
  LLMOPT_CHECK_INPUT(t.has_value(), "[quantize] {}: unknown type '{}'", option, name);
  const bool ok = *t == DType::F32 || *t == DType::F16 || *t == DType::BF16 ||
                  (dtype_is_block_quantized(*t) && kernels::has_quantize_ref(*t));
  LLMOPT_CHECK_INPUT(ok, "[quantize] {}: no quantizer for '{}' yet (available: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, "
                     "q4_0, q3_k, q2_k, f16, bf16)",
                     option, name);
  return *t;
}

// Packs w [out, in] row by row with llama.cpp's importance-weighted rounding (one importance per
// input column); types without a weighted quantizer fall back to PackedLinear::pack.
std::shared_ptr<PackedLinear> pack_weighted(const torch::Tensor& weight, const torch::Tensor& bias, DType t,
                                            const float* importance) {
  if (!dtype_is_block_quantized(t) || !kernels::has_quantize_weighted(t)) return PackedLinear::pack(weight, bias, t);
  const auto w = weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t out = w.size(0), in = w.size(1), row = dtype_bytes_for(t, in);
  std::vector<uint8_t> bytes(static_cast<size_t>(out * row));
  for (int64_t r = 0; r < out; ++r)
    kernels::quantize_row_weighted(t, w.data_ptr<float>() + r * in, bytes.data() + r * row, in, importance);
  return std::make_shared<PackedLinear>(t, out, in, std::move(bytes), bias);
}

// "int2" .. "int8": the bits; nullopt for other formats.
std::optional<int> intn_bits(const std::string& format) {
  if (format.size() == 4 && format.rfind("int", 0) == 0 && format[3] >= '2' && format[3] <= '8') return format[3] - '0';
  return std::nullopt;
}

IntNParams intn_params(const QuantizeSpec& spec, bool clip_search) {
  IntNParams p;
  p.bits = *intn_bits(spec.format);
  p.group_size = spec.group_size;
  p.sym = spec.sym;
  p.clip_search = clip_search;
  return p;
}

std::string intn_name(const IntNParams& p) {
  return fmt::format("int{}_{}{}", p.bits, p.group_size > 0 ? "g" + std::to_string(p.group_size) : std::string("row"),
                     p.sym ? "" : "_asym");
}

std::vector<std::regex> compile(const std::vector<std::string>& patterns) {
  std::vector<std::regex> out;
  for (const auto& p : patterns) {
    try {
      out.emplace_back(p);
    } catch (const std::regex_error& e) {
      throw_input("[quantize] skip: '{}' is not a valid regular expression ({})", p, e.what());
    }
  }
  return out;
}

}  // namespace

void check_quantize_spec(const QuantizeSpec& spec) {
  const bool own = intn_bits(spec.format).has_value() || spec.format == "nf4";
  if (intn_bits(spec.format)) check_intn_params(intn_params(spec, false), "format");
  LLMOPT_CHECK_INPUT(!(spec.format == "nf4" && method_needs_calibration(spec)),
                     "[quantize] format: nf4 is written by uncalibrated rtn only (got method {}{})", spec.method,
                     spec.calibration.path.empty() ? "" : " with calibration");
  const DType t = own ? DType::F32 : packable_type(spec.format, "format");
  if (spec.fallback != "error") packable_type(spec.fallback, "fallback");
  compile(spec.skip);
  LLMOPT_CHECK_INPUT(spec.method == "rtn" || spec.method == "gptq" || spec.method == "awq" || spec.method == "awq_gptq",
                     "[quantize] method: expected rtn, gptq, awq or awq_gptq, got '{}'", spec.method);
  LLMOPT_CHECK_INPUT(spec.imatrix_path.empty() || !method_needs_calibration(spec),
                     "[quantize] imatrix: an importance matrix applies to method rtn without calibration "
                     "(got method {}{})", spec.method, spec.calibration.path.empty() ? "" : " with calibration");
  if (method_needs_calibration(spec)) {
    LLMOPT_CHECK_INPUT(!spec.calibration.path.empty(),
                       "[quantize] {}.path: method {} needs calibration text (data.calibration in a recipe, "
                       "--calibration FILE on the command line)", spec.calibration.where, spec.method);
    LLMOPT_CHECK_INPUT(ggml_column_quantizer_supports(t) || t == DType::F16 || t == DType::BF16 || t == DType::F32,
                       "[quantize] format: method {} cannot write '{}' yet", spec.method, spec.format);
    LLMOPT_CHECK_INPUT(spec.gptq.damp > 0 && spec.gptq.damp < 1, "[quantize] damp: expected (0, 1), got {}",
                       spec.gptq.damp);
  }
}

bool method_needs_calibration(const QuantizeSpec& spec) {
  return spec.method != "rtn" || !spec.calibration.path.empty();
}

namespace {

// Round to nearest into llmopt's own formats (int-N with tail groups, NF4): every row shape fits.
QuantizeReport quantize_own_format(LlamaModel& m, const QuantizeSpec& spec,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  const auto skip = compile(spec.skip);
  QuantizeReport rep;
  double bits = 0, weights = 0;
  auto layers = m.linear_layers();
  int64_t done = 0;
  for (auto& [path, layer] : layers) {
    bool skipped = false;
    for (const auto& re : skip) skipped = skipped || std::regex_search(path, re);
    const double n = static_cast<double>(layer->in_features() * layer->out_features());
    if (skipped) {
      ++rep.skipped;
    } else {
      std::shared_ptr<LinearLayer> q;
      QuantizedLayer ql;
      ql.path = path;
      ql.method = "rtn";
      if (spec.format == "nf4") {
        q = NF4Linear::quantize(layer->dense_weight(), layer->bias(), /*double_quant=*/false);
        ql.type = "nf4";
      } else {
        const auto p = intn_params(spec, /*clip_search=*/false);
        q = IntNLinear::quantize(layer->dense_weight(), layer->bias(), p);
        ql.type = intn_name(p);
      }
      m.set_linear(path, q);
      layer = q;
      ++rep.quantized;
      rep.layers.push_back(ql);
    }
    const int64_t bias_bytes = layer->bias().defined() ? layer->bias().numel() * 4 : 0;
    const double b = 8.0 * static_cast<double>(layer->storage_bytes() - bias_bytes);
    if (!skipped) rep.layers.back().bits_per_weight = b / n;
    bits += b;
    weights += n;
    if (progress) progress(++done, static_cast<int64_t>(layers.size()));
  }
  rep.linear_bits_per_weight = weights > 0 ? bits / weights : 0;
  return rep;
}

}  // namespace

QuantizeReport quantize_rtn(LlamaModel& m, const QuantizeSpec& spec,
                            const std::function<void(int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  check_quantize_spec(spec);
  if (intn_bits(spec.format) || spec.format == "nf4") return quantize_own_format(m, spec, progress);
  const DType type = packable_type(spec.format, "format");
  const auto skip = compile(spec.skip);
  QuantizeReport rep;
  double bits = 0, weights = 0;
  auto layers = m.linear_layers();
  int64_t done = 0;
  std::optional<io::Imatrix> imatrix;
  if (!spec.imatrix_path.empty()) imatrix = io::read_imatrix(spec.imatrix_path);
  int64_t weighted = 0;
  for (auto& [path, layer] : layers) {
    bool skipped = false;
    for (const auto& re : skip) skipped = skipped || std::regex_search(path, re);
    const double n = static_cast<double>(layer->in_features() * layer->out_features());
    if (skipped) {
      ++rep.skipped;
    } else {
      DType t = type;
      if (layer->in_features() % dtype_block_elems(t) != 0) {
        LLMOPT_CHECK_INPUT(spec.fallback != "error",
                           "[quantize] {}: rows of {} values are not whole {} blocks of {} (set fallback)", path,
                           layer->in_features(), spec.format, dtype_block_elems(t));
        t = packable_type(spec.fallback, "fallback");
        LLMOPT_CHECK_INPUT(layer->in_features() % dtype_block_elems(t) == 0,
                           "[quantize] {}: rows of {} values fit neither format {} nor fallback {}", path,
                           layer->in_features(), spec.format, spec.fallback);
        ++rep.fallback;
        rep.fallback_layers.push_back(path);
        log::info("[quantize] {}: rows of {} values are not whole {} blocks: stored as {}", path,
                  layer->in_features(), spec.format, spec.fallback);
      } else {
        ++rep.quantized;
      }
      const std::vector<float>* importance =
          imatrix ? imatrix->find_projection(path, layer->in_features(), spec.imatrix_path) : nullptr;
      if (imatrix && !importance) log::info("[quantize] {}: no entry in {}: plain rounding", path, spec.imatrix_path);
      weighted += importance != nullptr;
      auto packed = importance ? pack_weighted(layer->dense_weight(), layer->bias(), t, importance->data())
                               : PackedLinear::pack(layer->dense_weight(), layer->bias(), t);
      m.set_linear(path, packed);
      layer = packed;
    }
    const int64_t bias_bytes = layer->bias().defined() ? layer->bias().numel() * 4 : 0;
    bits += 8.0 * static_cast<double>(layer->storage_bytes() - bias_bytes);
    weights += n;
    if (progress) progress(++done, static_cast<int64_t>(layers.size()));
  }
  rep.linear_bits_per_weight = weights > 0 ? bits / weights : 0;
  if (imatrix) log::info("[quantize] {} projections rounded with importance from {}", weighted, spec.imatrix_path);
  return rep;
}

namespace {

// Rounds w [out, in] to type t and back (AWQ's search).
torch::Tensor fake_quantize(const torch::Tensor& w, DType t) {
  if (t == DType::F32) return w;
  if (t == DType::F16) return w.to(torch::kFloat16).to(torch::kFloat32);
  if (t == DType::BF16) return w.to(torch::kBFloat16).to(torch::kFloat32);
  auto src = w.to(torch::kFloat32).contiguous();
  const int64_t out = src.size(0), in = src.size(1);
  std::vector<uint8_t> row(static_cast<size_t>(dtype_bytes_for(t, in)));
  auto res = torch::empty_like(src);
  for (int64_t r = 0; r < out; ++r) {
    kernels::quantize_row_ref(t, src.data_ptr<float>() + r * in, row.data(), in);
    kernels::dequantize_row(t, row.data(), res.data_ptr<float>() + r * in, in);
  }
  return res;
}

}  // namespace

QuantizeReport quantize_model(LlamaModel& m, const tok::Tokenizer* tk, const QuantizeSpec& spec,
                              const std::function<void(int64_t, int64_t)>& progress) {
  if (!method_needs_calibration(spec)) {
    auto rep = quantize_rtn(m, spec, progress);
    return rep;
  }
  torch::NoGradGuard no_grad;
  check_quantize_spec(spec);
  LLMOPT_CHECK_INPUT(tk != nullptr, "[quantize] method {} needs the model's tokenizer to read the calibration text",
                     spec.method);
  const bool intn = intn_bits(spec.format).has_value();
  const DType type = intn ? DType::F32 : packable_type(spec.format, "format");
  const auto skip = compile(spec.skip);
  auto skipped = [&](const std::string& path) {
    for (const auto& re : skip)
      if (std::regex_search(path, re)) return true;
    return false;
  };
  // The stored type of a projection with rows of `in` values.
  auto type_for = [&](const std::string& path, int64_t in, bool* fell_back) {
    *fell_back = false;
    if (intn) return DType::F32;  // unused: int-N holds every row (tail groups)
    if (in % dtype_block_elems(type) == 0) return type;
    LLMOPT_CHECK_INPUT(spec.fallback != "error",
                       "[quantize] {}: rows of {} values are not whole {} blocks of {} (set fallback)", path, in,
                       spec.format, dtype_block_elems(type));
    const DType fb = packable_type(spec.fallback, "fallback");
    LLMOPT_CHECK_INPUT(in % dtype_block_elems(fb) == 0, "[quantize] {}: rows of {} values fit neither format {} nor fallback {}",
                       path, in, spec.format, spec.fallback);
    *fell_back = true;
    return fb;
  };

  const torch::Tensor tokens = load_calibration_tokens(spec.calibration, *tk);
  QuantizeReport rep;
  rep.calibration_tokens = tokens.numel();
  const bool awq = spec.method == "awq" || spec.method == "awq_gptq";
  const bool propagate = spec.method == "gptq" || spec.method == "awq_gptq";
  CalibrateOptions co;
  co.stats.hessian = true;
  co.stats.sample_rows = awq ? spec.awq_sample_rows : 0;
  co.batch = spec.calibration_batch;
  co.progress = progress;
  co.include_head = false;
  for (auto& [path, layer] : m.linear_layers())
    if (io::arch::parse_hf_name(path + ".weight") && io::arch::parse_hf_name(path + ".weight")->layer < 0 &&
        !skipped(path))
      co.include_head = true;

  std::map<std::string, double> alpha_of;
  calibrate_layerwise(m, tokens, co, [&](LayerCalibration& lc) {
    if (awq) {
      auto fq = [&](const torch::Tensor& w, const std::string& path) {
        if (intn) return IntNLinear::quantize(w, {}, intn_params(spec, false))->dense_weight();
        bool fb = false;
        return fake_quantize(w, type_for(path, w.size(1), &fb));
      };
      const auto choices = awq_scale_layer(m, lc, fq, skipped, AwqOptions{spec.awq_grid});
      for (const auto& c : choices)
        for (const auto& p : c.paths) alpha_of[p] = c.alpha;
      lc.recapture();
    }
    std::map<std::string, std::shared_ptr<LinearLayer>> current;
    for (auto& [p, l] : m.linear_layers()) current[p] = l;
    for (const auto& path : lc.paths) {
      if (skipped(path)) continue;
      auto layer = current.at(path);
      bool fell_back = false;
      const DType t = type_for(path, layer->in_features(), &fell_back);
      QuantizedLayer ql;
      ql.path = path;
      ql.type = intn ? intn_name(intn_params(spec, false)) : std::string(dtype_name(t));
      ql.method = spec.method;
      ql.fallback = fell_back;
      if (alpha_of.count(path)) ql.awq_alpha = alpha_of[path];
      auto cq = intn ? make_intn_column_quantizer(intn_params(spec, /*clip_search=*/!propagate), layer->out_features(),
                                                  layer->in_features())
                     : make_ggml_column_quantizer(t, layer->out_features(), layer->in_features());
      if (cq) {
        GptqOptions go = spec.gptq;
        go.propagate = propagate;
        auto res = gptq_quantize(*layer, *lc.stats.at(path), *cq, go, path);
        ql.rel_error = res.rel_error;
        m.set_linear(path, res.layer);
      } else {
        m.set_linear(path, PackedLinear::pack(layer->dense_weight(), layer->bias(), t));
      }
      if (fell_back) {
        log::info("[quantize] {}: rows of {} values are not whole {} blocks: stored as {}", path,
                  layer->in_features(), spec.format, spec.fallback);
      }
      rep.layers.push_back(ql);
    }
  });
  // Totals over every projection (skipped ones as they are).
  double bits = 0, weights = 0;
  std::map<std::string, const QuantizedLayer*> by_path;
  for (const auto& l : rep.layers) by_path[l.path] = &l;
  for (auto& [path, layer] : m.linear_layers()) {
    const double n = static_cast<double>(layer->in_features() * layer->out_features());
    const int64_t bias_bytes = layer->bias().defined() ? layer->bias().numel() * 4 : 0;
    const double b = 8.0 * static_cast<double>(layer->storage_bytes() - bias_bytes);
    bits += b;
    weights += n;
    if (!by_path.count(path)) {
      ++rep.skipped;
      continue;
    }
    auto& ql = const_cast<QuantizedLayer&>(*by_path[path]);
    ql.bits_per_weight = b / n;
    if (!ql.fallback) {
      ++rep.quantized;
    } else {
      ++rep.fallback;
      rep.fallback_layers.push_back(path);
    }
  }
  rep.linear_bits_per_weight = weights > 0 ? bits / weights : 0;
  return rep;
}

}  // namespace llmopt::model
