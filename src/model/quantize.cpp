#include "model/quantize.h"

#include <regex>

#include "core/error.h"
#include "core/log.h"
#include "kernels/quant_formats.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

DType packable_type(const std::string& name, const char* option) {
  const auto t = dtype_from_name(name);
  LLMOPT_CHECK_INPUT(t.has_value(), "[quantize] {}: unknown type '{}'", option, name);
  const bool ok = *t == DType::F32 || *t == DType::F16 || *t == DType::BF16 ||
                  (dtype_is_block_quantized(*t) && kernels::has_quantize_ref(*t));
  LLMOPT_CHECK_INPUT(ok, "[quantize] {}: no quantizer for '{}' yet (available: q8_0, q5_0, q5_1, q4_0, q4_1, f16, bf16)",
                     option, name);
  return *t;
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
  packable_type(spec.format, "format");
  if (spec.fallback != "error") packable_type(spec.fallback, "fallback");
  compile(spec.skip);
}

QuantizeReport quantize_rtn(LlamaModel& m, const QuantizeSpec& spec,
                            const std::function<void(int64_t, int64_t)>& progress) {
  torch::NoGradGuard no_grad;
  check_quantize_spec(spec);
  const DType type = packable_type(spec.format, "format");
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
      auto packed = PackedLinear::pack(layer->dense_weight(), layer->bias(), t);
      m.set_linear(path, packed);
      layer = packed;
    }
    const int64_t bias_bytes = layer->bias().defined() ? layer->bias().numel() * 4 : 0;
    bits += 8.0 * static_cast<double>(layer->storage_bytes() - bias_bytes);
    weights += n;
    if (progress) progress(++done, static_cast<int64_t>(layers.size()));
  }
  rep.linear_bits_per_weight = weights > 0 ? bits / weights : 0;
  return rep;
}

}  // namespace llmopt::model
