#include "model/quantize.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <regex>
#include <tuple>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "io/imatrix.h"
#include "kernels/quant_formats.h"
#include "kernels/intn.h"
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

void check_mixed(const QuantizeSpec& spec);

void check_quantize_spec(const QuantizeSpec& spec) {
  if (spec.method == "dynamic" || spec.method == "static") return check_w8a8_spec(spec);  // W8A8
  const bool own = intn_bits(spec.format).has_value() || spec.format == "nf4";
  if (intn_bits(spec.format)) check_intn_params(intn_params(spec, false), "format");
  LLMOPT_CHECK_INPUT(!(spec.format == "nf4" && method_needs_calibration(spec)),
                     "[quantize] format: nf4 is written by uncalibrated rtn only (got method {}{})", spec.method,
                     spec.calibration.path.empty() ? "" : " with calibration");
  const DType t = own ? DType::F32 : packable_type(spec.format, "format");
  if (spec.fallback != "error") packable_type(spec.fallback, "fallback");
  compile(spec.skip);
  check_mixed(spec);
  LLMOPT_CHECK_INPUT(spec.method == "rtn" || spec.method == "gptq" || spec.method == "awq" || spec.method == "awq_gptq",
                     "[quantize] method: expected rtn, gptq, awq, awq_gptq, dynamic or static, got '{}'", spec.method);
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

bool method_needs_calibration(const QuantizeSpec& spec);

void check_mixed(const QuantizeSpec& spec) {
  LLMOPT_CHECK_INPUT(spec.target_bpw >= 0 && spec.target_bpw <= 32, "[quantize] target_bpw: expected 0..32, got {}",
                     spec.target_bpw);
  for (const auto& c : spec.candidates) {
    if (auto b = intn_bits(c)) {
      auto p = intn_params(spec, false);
      p.bits = *b;
      check_intn_params(p, "candidates");
    } else {
      packable_type(c, "candidates");
    }
  }
  for (const auto& [path, f] : spec.layer_format) {
    if (!intn_bits(f)) packable_type(f, "layer_format");
  }
}

bool method_needs_calibration(const QuantizeSpec& spec) {
  if (spec.method == "dynamic") return !spec.calibration.path.empty();  // W8A8: smoothing, outlier columns
  return spec.method != "rtn" || !spec.calibration.path.empty() || spec.target_bpw > 0;
}

namespace {

// Round to nearest into llmopt's own formats (int-N with tail groups, NF4): every row shape fits.
QuantizeReport quantize_own_format(LlamaModel& m, const QuantizeSpec& spec,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  const auto skip = compile(spec.skip);
  QuantizeReport rep;
  auto layers = m.linear_layers();
  int64_t done = 0;
  for (auto& [path, layer] : layers) {
    bool skipped = false;
    for (const auto& re : skip) skipped = skipped || std::regex_search(path, re);
    if (!skipped) {
      QuantizedLayer ql;
      ql.path = path;
      ql.method = "rtn";
      if (spec.format == "nf4") {
        m.set_linear(path, NF4Linear::quantize(layer->dense_weight(), layer->bias(), /*double_quant=*/false));
        ql.type = "nf4";
      } else {
        const auto p = intn_params(spec, /*clip_search=*/false);
        m.set_linear(path, IntNLinear::quantize(layer->dense_weight(), layer->bias(), p));
        ql.type = intn_name(p);
      }
      rep.layers.push_back(ql);
    }
    if (progress) progress(++done, static_cast<int64_t>(layers.size()));
  }
  tally_report(m, rep);
  return rep;
}

}  // namespace

namespace {

// A group larger than a row: the user asked for more columns per scale than some projection has.
// Refused (naming the projection and the way out) rather than silently stored as one group per row.
void check_groups_fit(LlamaModel& m, const QuantizeSpec& spec) {
  std::vector<std::string> formats;
  if (intn_bits(spec.format)) formats.push_back(spec.format);
  for (const auto& c : spec.candidates)
    if (intn_bits(c)) formats.push_back(c);
  const int64_t gs = spec.group_size;
  if (formats.empty() || gs <= 0) return;
  const auto skip = compile(spec.skip);
  for (auto& [path, layer] : m.linear_layers()) {
    bool skipped = false;
    for (const auto& re : skip) skipped = skipped || std::regex_search(path, re);
    if (skipped) continue;
    const int64_t in = layer->in_features();
    LLMOPT_CHECK_INPUT(gs <= in,
                       "[quantize] group_size: {} columns per group is larger than the rows of {} ({} values); "
                       "use group_size <= {} (32/64/128), -1 for one group per row, or skip: that projection",
                       gs, path, in, in);
  }
}

}  // namespace

QuantizeReport quantize_rtn(LlamaModel& m, const QuantizeSpec& spec,
                            const std::function<void(int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  check_quantize_spec(spec);
  check_groups_fit(m, spec);
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

namespace {

// What one projection becomes: llmopt's int-N (any row) or a ggml/float type (with the fallback
// for rows that are not whole blocks).
struct Target {
  bool intn = false;
  IntNParams p;
  DType t = DType::F32;
  bool fell_back = false;
  std::string name;
  double bits_per_weight(int64_t in) const {
    if (intn) {
      const int64_t gs = p.group_size > 0 && p.group_size < in ? p.group_size : in;
      // As kernels/intn.h stores a row: its codes as one byte-padded stream, an f16 scale per
      // group, zero points packed like codes when asymmetric.
      const int64_t groups = (in + gs - 1) / gs;
      const int64_t bytes = kernels::intn_code_bytes(p.bits, in) + 2 * groups +
                            (p.sym ? 0 : kernels::intn_code_bytes(p.bits, groups));
      return 8.0 * static_cast<double>(bytes) / static_cast<double>(in);
    }
    return static_cast<double>(dtype_bytes_for(t, in)) * 8.0 / static_cast<double>(in);
  }
};

Target target_for(const QuantizeSpec& spec, const std::string& format, const std::string& path, int64_t in) {
  Target tg;
  if (auto bits = intn_bits(format)) {
    tg.intn = true;
    tg.p = intn_params(spec, false);
    tg.p.bits = *bits;
    tg.name = intn_name(tg.p);
    return tg;
  }
  const DType type = packable_type(format, "format");
  tg.t = type;
  if (in % dtype_block_elems(type) != 0) {
    LLMOPT_CHECK_INPUT(spec.fallback != "error",
                       "[quantize] {}: rows of {} values are not whole {} blocks of {} (set fallback)", path, in,
                       format, dtype_block_elems(type));
    const DType fb = packable_type(spec.fallback, "fallback");
    LLMOPT_CHECK_INPUT(in % dtype_block_elems(fb) == 0,
                       "[quantize] {}: rows of {} values fit neither format {} nor fallback {}", path, in, format,
                       spec.fallback);
    tg.t = fb;
    tg.fell_back = true;
  }
  tg.name = std::string(dtype_name(tg.t));
  return tg;
}

// AWQ clip: columns sharing one scale in a ggml type (the sub-block of k-quants).
int64_t awq_clip_group(DType t) {
  switch (t) {
    case DType::Q6_K: case DType::Q3_K: case DType::Q2_K: return 16;
    case DType::Q4_K: case DType::Q5_K: return 32;
    default: return dtype_block_elems(t);
  }
}

torch::Tensor fake_quantize_target(const torch::Tensor& w, const Target& tg) {
  if (tg.intn) return IntNLinear::quantize(w, {}, tg.p)->dense_weight();
  return fake_quantize(w, tg.t);
}

// Mean KL divergence (nats/token) of the model's next-token distributions from `ref_logp`.
double mean_kld(LlamaModel& m, const torch::Tensor& tokens, const torch::Tensor& ref_logp) {
  auto logp = torch::log_softmax(m.forward(tokens), -1);
  return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item<double>();
}

}  // namespace

std::map<std::string, std::string> assign_bits(LlamaModel& m, const torch::Tensor& calibration_tokens,
                                               const QuantizeSpec& spec, std::vector<LayerSensitivity>* table) {
  torch::NoGradGuard no_grad;
  LLMOPT_CHECK_INPUT(spec.target_bpw > 0, "[quantize] target_bpw: expected > 0, got {}", spec.target_bpw);
  std::vector<std::string> cands = spec.candidates;
  if (cands.empty()) {
    if (intn_bits(spec.format)) {
      cands = {"int3", "int4", "int5", "int6", "int8"};
    } else {
      cands = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"};
    }
  }
  const auto skip = compile(spec.skip);
  // A few calibration windows (at most 1024 positions) score each choice.
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(calibration_tokens.size(0), 1024 / calibration_tokens.size(1)));
  const auto tokens = calibration_tokens.narrow(0, 0, rows);
  const auto ref = torch::log_softmax(m.forward(tokens), -1);
  struct Option {
    std::string format;
    double bits = 0, kld = 0;
  };
  struct Layer {
    std::string path;
    double weights = 0;
    std::vector<Option> options;  // by increasing bits
    size_t pick = 0;
  };
  std::vector<Layer> layers;
  double fixed_bits = 0, all_weights = 0;
  for (auto& [path, layer] : m.linear_layers()) {
    const int64_t in = layer->in_features(), out = layer->out_features();
    const double n = static_cast<double>(in * out);
    all_weights += n;
    bool skipped = false;
    for (const auto& re : skip) skipped = skipped || std::regex_search(path, re);
    if (skipped) {
      const int64_t bias_bytes = layer->bias().defined() ? layer->bias().numel() * 4 : 0;
      fixed_bits += 8.0 * static_cast<double>(layer->storage_bytes() - bias_bytes);
      continue;
    }
    Layer L;
    L.path = path;
    L.weights = n;
    const auto w = layer->dense_weight().to(torch::kFloat32);
    for (const auto& c : cands) {
      const Target tg = target_for(spec, c, path, in);
      Option o;
      o.format = c;
      o.bits = tg.bits_per_weight(in);
      auto dense = std::make_shared<DenseLinear>(fake_quantize_target(w, tg), layer->bias());
      m.set_linear(path, dense);
      o.kld = mean_kld(m, tokens, ref);
      m.set_linear(path, layer);
      L.options.push_back(o);
    }
    std::sort(L.options.begin(), L.options.end(), [](const Option& a, const Option& b) { return a.bits < b.bits; });
    layers.push_back(std::move(L));
  }
  // Greedy: everything at its cheapest option, then the upgrade with the largest KLD drop per
  // added bit while the budget holds.
  auto total = [&]() {
    double b = fixed_bits;
    for (const auto& L : layers) b += L.options[L.pick].bits * L.weights;
    return b / all_weights;
  };
  LLMOPT_CHECK_INPUT(total() <= spec.target_bpw + 1e-9,
                     "[quantize] target_bpw: {} is below the smallest choice ({:.3f} bits per linear weight with every "
                     "projection at its cheapest candidate)", spec.target_bpw, total());
  for (;;) {
    double best_gain = 0;
    Layer* best = nullptr;
    size_t best_next = 0;
    const double cur = total();
    for (auto& L : layers) {
      for (size_t j = L.pick + 1; j < L.options.size(); ++j) {
        const double add = (L.options[j].bits - L.options[L.pick].bits) * L.weights / all_weights;
        if (add <= 0 || cur + add > spec.target_bpw + 1e-9) continue;
        const double gain = (L.options[L.pick].kld - L.options[j].kld) / add;
        if (gain > best_gain) best_gain = gain, best = &L, best_next = j;
      }
    }
    if (!best) break;
    best->pick = best_next;
  }
  std::map<std::string, std::string> out;
  for (const auto& L : layers) {
    out[L.path] = L.options[L.pick].format;
    if (table) {
      LayerSensitivity ls;
      ls.path = L.path;
      for (const auto& o : L.options) ls.kld[o.format] = o.kld;
      ls.chosen = L.options[L.pick].format;
      table->push_back(ls);
    }
  }
  log::info("[quantize] target_bpw {}: {:.3f} bits per linear weight assigned over {} projections", spec.target_bpw,
            total(), layers.size());
  return out;
}

void tally_report(LlamaModel& m, QuantizeReport& rep) {
  double bits = 0, weights = 0;
  std::map<std::string, QuantizedLayer*> by_path;
  for (auto& l : rep.layers) by_path[l.path] = &l;
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
    auto& ql = *by_path[path];
    ql.bits_per_weight = b / n;
    if (!ql.fallback) {
      ++rep.quantized;
    } else {
      ++rep.fallback;
      rep.fallback_layers.push_back(path);
    }
  }
  rep.linear_bits_per_weight = weights > 0 ? bits / weights : 0;
}

QuantizeReport quantize_model(LlamaModel& m, const tok::Tokenizer* tk, const QuantizeSpec& spec,
                              const std::function<void(int64_t, int64_t)>& progress) {
  if (spec.method == "dynamic" || spec.method == "static") return quantize_w8a8(m, tk, spec, progress);
  if (!method_needs_calibration(spec)) {
    auto rep = quantize_rtn(m, spec, progress);
    return rep;
  }
  torch::NoGradGuard no_grad;
  check_quantize_spec(spec);
  check_groups_fit(m, spec);
  LLMOPT_CHECK_INPUT(tk != nullptr, "[quantize] method {} needs the model's tokenizer to read the calibration text",
                     spec.method);
  const auto skip = compile(spec.skip);
  auto skipped = [&](const std::string& path) {
    for (const auto& re : skip)
      if (std::regex_search(path, re)) return true;
    return false;
  };
  const torch::Tensor tokens = load_calibration_tokens(spec.calibration, *tk);
  QuantizeReport rep;
  rep.calibration_tokens = tokens.numel();
  std::map<std::string, std::string> format_of = spec.layer_format;
  if (spec.target_bpw > 0) {
    for (const auto& [p, f] : assign_bits(m, tokens, spec, &rep.sensitivity)) format_of[p] = f;
  }
  auto target = [&](const std::string& path, int64_t in) {
    auto it = format_of.find(path);
    return target_for(spec, it != format_of.end() ? it->second : spec.format, path, in);
  };
  const bool awq = spec.method == "awq" || spec.method == "awq_gptq";
  const bool propagate = spec.method == "gptq" || spec.method == "awq_gptq";
  CalibrateOptions co;
  co.stats.hessian = true;
  co.stats.sample_rows = awq ? spec.awq_sample_rows : 0;
  co.batch = spec.calibration_batch;
  co.progress = progress;
  co.include_head = false;
  for (auto& [path, layer] : m.linear_layers()) {
    const auto named = io::arch::parse_hf_name(path + ".weight");
    if (named && named->layer < 0 && !skipped(path)) co.include_head = true;
  }

  std::map<std::string, double> alpha_of;
  std::map<std::string, std::pair<double, double>> clip_of;  // AWQ clip: share clipped, error ratio
  calibrate_layerwise(m, tokens, co, [&](LayerCalibration& lc) {
    if (awq) {
      auto fq = [&](const torch::Tensor& w, const std::string& path) {
        return fake_quantize_target(w, target(path, w.size(1)));
      };
      const auto choices = awq_scale_layer(m, lc, fq, skipped, AwqOptions{spec.awq_grid});
      for (const auto& c : choices)
        for (const auto& p : c.paths) alpha_of[p] = c.alpha;
      lc.recapture();
      // Not before GPTQ: GPTQ would then compensate towards the clipped weights, and the clip's
      // error, chosen for plain rounding, stays (tinyllama-bpe-17m q4_0: mean KLD 0.000295 with
      // the clip vs 0.000195 without, bench/RESULTS.md).
      if (spec.awq_clip && !propagate) {
        // The rounding that will store each projection (its column quantizer, calibrated
        // importance, the fallback type's for rows that are not whole blocks), so the search
        // measures what is written; float types are left unclipped.
        auto round_for = [&](const std::string& path) -> std::pair<RoundFn, int64_t> {
          if (skipped(path)) return {nullptr, 0};
          std::shared_ptr<LinearLayer> layer;
          for (auto& [p, l] : m.linear_layers())
            if (p == path) layer = l;
          const int64_t out = layer->out_features(), in = layer->in_features();
          const Target tg = target(path, in);
          const auto& st = *lc.stats.at(path);
          if (tg.intn) {
            IntNParams p = tg.p;
            p.clip_search = !propagate;
            const int64_t gs = p.group_size > 0 && p.group_size < in ? p.group_size : in;
            return {[p, out, in, &st](const torch::Tensor& w) {
                      auto cq = make_intn_column_quantizer(p, out, in);
                      return round_to_grid(w, st, *cq);
                    },
                    gs};
          }
          if (!make_ggml_column_quantizer(tg.t, out, in)) return {nullptr, 0};  // f16/bf16/f32
          const DType t = tg.t;
          return {[t, out, in, &st](const torch::Tensor& w) {
                    auto cq = make_ggml_column_quantizer(t, out, in);
                    return round_to_grid(w, st, *cq);
                  },
                  awq_clip_group(t)};
        };
        for (const auto& c : awq_clip_layer(m, lc, round_for, AwqClipOptions{})) {
          clip_of[c.path] = {c.search.clipped_fraction,
                             c.search.error_before > 0 ? c.search.error_after / c.search.error_before : 1.0};
        }
      }
    }
    std::map<std::string, std::shared_ptr<LinearLayer>> current;
    for (auto& [p, l] : m.linear_layers()) current[p] = l;
    for (const auto& path : lc.paths) {
      if (skipped(path)) continue;
      auto layer = current.at(path);
      const Target tg = target(path, layer->in_features());
      QuantizedLayer ql;
      ql.path = path;
      ql.type = tg.name;
      ql.method = spec.method;
      ql.fallback = tg.fell_back;
      if (alpha_of.count(path)) ql.awq_alpha = alpha_of[path];
      if (clip_of.count(path)) std::tie(ql.awq_clipped, ql.awq_clip_error_ratio) = clip_of[path];
      std::unique_ptr<ColumnQuantizer> cq;
      if (tg.intn) {
        IntNParams p = tg.p;
        p.clip_search = !propagate;
        cq = make_intn_column_quantizer(p, layer->out_features(), layer->in_features());
      } else {
        cq = make_ggml_column_quantizer(tg.t, layer->out_features(), layer->in_features());
      }
      if (cq) {
        GptqOptions go = spec.gptq;
        go.propagate = propagate;
        auto res = gptq_quantize(*layer, *lc.stats.at(path), *cq, go, path);
        ql.rel_error = res.rel_error;
        m.set_linear(path, res.layer);
      } else {
        m.set_linear(path, PackedLinear::pack(layer->dense_weight(), layer->bias(), tg.t));
      }
      if (tg.fell_back) {
        log::info("[quantize] {}: rows of {} values are not whole {} blocks: stored as {}", path,
                  layer->in_features(), spec.format, spec.fallback);
      }
      rep.layers.push_back(ql);
    }
  });
  tally_report(m, rep);
  return rep;
}

}  // namespace llmopt::model
