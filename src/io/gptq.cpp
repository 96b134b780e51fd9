#include "io/gptq.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "io/checkpoint_tensors.h"

namespace llmopt::io {

std::optional<GptqConfig> parse_gptq_config(const nlohmann::json& config_json, const std::string& source) {
  if (!config_json.is_object() || !config_json.contains("quantization_config")) return std::nullopt;
  const auto& q = config_json["quantization_config"];
  if (!q.is_object() || q.value("quant_method", std::string()) != "gptq") return std::nullopt;
  GptqConfig c;
  try {
    c.bits = q.at("bits").get<int>();
    c.group_size = q.value("group_size", int64_t{-1});
    c.desc_act = q.value("desc_act", false);
    c.sym = q.value("sym", true);
    c.static_groups = q.value("static_groups", false);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[gptq] {}: quantization_config: {}", source, e.what());
  }
  LLMOPT_CHECK_INPUT(c.bits == 2 || c.bits == 4 || c.bits == 8,
                     "[gptq] {}: quantization_config.bits = {}: llmopt reads GPTQ bits 2, 4 and 8", source, c.bits);
  LLMOPT_CHECK_INPUT(c.group_size == -1 || c.group_size > 0, "[gptq] {}: quantization_config.group_size = {}", source,
                     c.group_size);
  const std::string fmt = q.value("checkpoint_format", std::string("gptq"));
  LLMOPT_CHECK_INPUT(fmt == "gptq", "[gptq] {}: quantization_config.checkpoint_format '{}': llmopt reads 'gptq' (v1)",
                     source, fmt);
  // auto-gptq's Marlin repacking keeps the names but not the v1 layout.
  const auto marlin = q.find("is_marlin_format");
  LLMOPT_CHECK_INPUT(marlin == q.end() || !marlin->is_boolean() || !marlin->get<bool>(),
                     "[gptq] {}: quantization_config.is_marlin_format is true: llmopt reads the GPTQ v1 layout, not "
                     "Marlin's repacked tensors",
                     source);
  return c;
}

nlohmann::json gptq_config_json(const GptqConfig& c) {
  return {{"quant_method", "gptq"}, {"bits", c.bits},           {"group_size", c.group_size},
          {"desc_act", c.desc_act}, {"sym", c.sym},             {"checkpoint_format", "gptq"},
          {"damp_percent", 0.01},   {"true_sequential", true},  {"static_groups", c.static_groups}};
}

std::string gptq_cannot_hold(const kernels::IntNMatrix& w) {
  if (w.bits != 2 && w.bits != 4 && w.bits != 8)
    return fmt::format("{} bits (the GPTQ layout holds 2, 4 and 8 in int32 words)", w.bits);
  if (w.group_size() != w.cols && w.cols % w.group_size() != 0)
    return fmt::format("rows of {} are not whole groups of {} (a tail group of {}); GPTQ has no tail group", w.cols,
                       w.group_size(), w.cols % w.group_size());
  const int64_t per_word = 32 / w.bits;
  if (w.cols % per_word != 0)
    return fmt::format("{} input columns are not whole int32 words of {} codes", w.cols, per_word);
  if (w.rows % per_word != 0)
    return fmt::format("{} output rows are not whole int32 words of {} zero points", w.rows, per_word);
  if (!w.sym)
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t g = 0; g < w.groups(); ++g)
        if (w.grid(r, g).zero == 0.0f)
          return fmt::format("row {} group {} has zero point 0, which GPTQ v1 (stored zero − 1) cannot hold", r, g);
  return {};
}

GptqTensors gptq_pack(const kernels::IntNMatrix& w, const std::string& tensor) {
  const std::string why = gptq_cannot_hold(w);
  LLMOPT_CHECK_INPUT(why.empty(), "[gptq] {}: cannot be written in the GPTQ layout: {}", tensor, why);
  GptqTensors t;
  t.in = w.cols;
  t.out = w.rows;
  t.groups = w.groups();
  t.bits = w.bits;
  const int per_word = 32 / w.bits;
  const uint32_t mask = (1u << w.bits) - 1u;
  t.qweight.assign(static_cast<size_t>(t.in / per_word * t.out), 0);
  t.qzeros.assign(static_cast<size_t>(t.groups * (t.out / per_word)), 0);
  if (w.scales_f32) {
    t.scales_f32.assign(static_cast<size_t>(t.groups * t.out), 0.0f);
  } else {
    t.scales.assign(static_cast<size_t>(t.groups * t.out), 0);
  }
  t.g_idx.resize(static_cast<size_t>(t.in));
  for (int64_t i = 0; i < t.in; ++i) t.g_idx[i] = static_cast<int32_t>(w.group_of(i));
  std::vector<uint8_t> codes(static_cast<size_t>(t.in));
  for (int64_t o = 0; o < t.out; ++o) {
    kernels::intn_unpack_codes(w.codes + o * w.code_row_bytes(), 0, t.in, w.bits, codes.data());
    for (int64_t i = 0; i < t.in; ++i) {
      auto& word = reinterpret_cast<uint32_t&>(t.qweight[(i / per_word) * t.out + o]);
      word |= static_cast<uint32_t>(codes[i]) << (w.bits * (i % per_word));
    }
    for (int64_t g = 0; g < t.groups; ++g) {
      const kernels::IntNGrid grid = w.grid(o, g);
      if (w.scales_f32) {
        t.scales_f32[g * t.out + o] = grid.scale;
      } else {
        t.scales[g * t.out + o] = f32_to_f16(grid.scale);
      }
      const uint32_t stored = (static_cast<uint32_t>(grid.zero) - 1u) & mask;
      auto& word = reinterpret_cast<uint32_t&>(t.qzeros[g * (t.out / per_word) + o / per_word]);
      word |= stored << (w.bits * (o % per_word));
    }
  }
  return t;
}

namespace {

// Shared by both scale types: `scale_at(g, o)` is the f32 value of scales[g, o] (checked there).
template <class ScaleAt>
kernels::IntNStorage unpack_impl(const int32_t* qweight, const int32_t* qzeros, ScaleAt scale_at, bool f32_scales,
                                 const int32_t* g_idx, int64_t in, int64_t out, int64_t groups, const GptqConfig& c,
                                 const std::string& tensor) {
  const int bits = c.bits;
  const int per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  LLMOPT_CHECK_INPUT(in % per_word == 0 && out % per_word == 0, "[gptq] {}: [{}, {}] is not whole int32 words of {}",
                     tensor, out, in, per_word);
  const int64_t group = c.group_size <= 0 ? in : c.group_size;
  const int64_t want_groups = kernels::intn_groups(in, group);
  LLMOPT_CHECK_INPUT(groups == want_groups, "[gptq] {}: scales have {} groups, {} inputs in groups of {} need {}", tensor,
                     groups, in, group, want_groups);
  bool plain_order = true;
  for (int64_t i = 0; i < in; ++i) {
    LLMOPT_CHECK_INPUT(g_idx[i] >= 0 && g_idx[i] < groups, "[gptq] {}.g_idx[{}] = {} is outside [0, {})", tensor, i,
                       g_idx[i], groups);
    plain_order = plain_order && g_idx[i] == i / group;
  }
  std::vector<uint8_t> zero_codes(static_cast<size_t>(out * groups));
  bool all_mid = true;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < out; ++o) {
      const auto word = static_cast<uint32_t>(qzeros[g * (out / per_word) + o / per_word]);
      const uint32_t z = ((word >> (bits * (o % per_word))) & mask) + 1u;
      LLMOPT_CHECK_INPUT(z <= mask, "[gptq] {}.qzeros[{}, {}]: zero point {} does not fit {} bits (v1 zero 0)", tensor, g,
                         o, z, bits);
      zero_codes[o * groups + g] = static_cast<uint8_t>(z);
      all_mid = all_mid && z == (1u << (bits - 1));
    }
  std::vector<uint8_t> codes(static_cast<size_t>(out * in));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) {
      const auto word = static_cast<uint32_t>(qweight[(i / per_word) * out + o]);
      codes[o * in + i] = static_cast<uint8_t>((word >> (bits * (i % per_word))) & mask);
    }
  std::vector<kernels::IntNGrid> grids(static_cast<size_t>(out * groups));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < groups; ++g) {
      // A zero or negative scale cannot come from GPTQ's packer (an all-zero group gets 2/maxq).
      const float sc = scale_at(g, o);
      LLMOPT_CHECK_INPUT(sc > 0.0f && std::isfinite(sc), "[gptq] {}.scales[{}, {}] = {} is not a positive finite value",
                         tensor, g, o, sc);
      grids[o * groups + g] = {sc, static_cast<float>(zero_codes[o * groups + g])};
    }
  return kernels::intn_from_codes(codes.data(), grids.data(), out, in, bits, group, all_mid,
                                  plain_order ? nullptr : g_idx, f32_scales);
}

}  // namespace

kernels::IntNStorage gptq_unpack(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                                 const int32_t* g_idx, int64_t in, int64_t out, int64_t groups, const GptqConfig& c,
                                 const std::string& tensor) {
  // f16 scales stay f16 in the storage (every f16 value is exact there).
  auto at = [&](int64_t g, int64_t o) { return f16_to_f32(scales[g * out + o]); };
  return unpack_impl(qweight, qzeros, at, false, g_idx, in, out, groups, c, tensor);
}

kernels::IntNStorage gptq_unpack(const int32_t* qweight, const int32_t* qzeros, const float* scales,
                                 const int32_t* g_idx, int64_t in, int64_t out, int64_t groups, const GptqConfig& c,
                                 const std::string& tensor) {
  auto at = [&](int64_t g, int64_t o) { return scales[g * out + o]; };
  return unpack_impl(qweight, qzeros, at, true, g_idx, in, out, groups, c, tensor);
}

std::optional<GptqConfig> checkpoint_gptq_config(const Checkpoint& ckpt) {
  if (!ckpt.metadata.contains("quantization_config")) return std::nullopt;
  return parse_gptq_config(nlohmann::json{{"quantization_config", ckpt.metadata["quantization_config"]}}, ckpt.path);
}

bool has_gptq_module(const Checkpoint& ckpt, const std::string& module) {
  return ckpt.metadata.contains("quantization_config") && ckpt.find(module + ".qweight") != nullptr;
}

namespace {
std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}
}  // namespace

void check_gptq_module(const Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in,
                       const char* component) {
  const auto c = checkpoint_gptq_config(ckpt);
  LLMOPT_CHECK_INPUT(c.has_value(), "[{}] {}: '{}.qweight' without a GPTQ quantization_config in config.json", component,
                     ckpt.path, module);
  const int64_t per_word = 32 / c->bits;
  const int64_t group = c->group_size <= 0 ? in : c->group_size;
  const int64_t groups = kernels::intn_groups(in, group);
  auto expect = [&](const std::string& suffix, DType dt, std::vector<int64_t> shape, bool required) {
    const TensorView* t = ckpt.find(module + suffix);
    if (!t) {
      LLMOPT_CHECK_INPUT(!required, "[{}] {}: missing tensor '{}{}' (GPTQ, expected shape {})", component, ckpt.path,
                         module, suffix, shape_text(shape));
      return;
    }
    LLMOPT_CHECK_INPUT(t->dtype == dt && t->shape == shape,
                       "[{}] {}: tensor '{}' is {} {}, GPTQ {} bits group {} of a [{}, {}] projection needs {} {}",
                       component, ckpt.path, t->name, dtype_name(t->dtype), shape_text(t->shape), c->bits,
                       c->group_size, out, in, dtype_name(dt), shape_text(shape));
  };
  LLMOPT_CHECK_INPUT(in % per_word == 0 && out % per_word == 0,
                     "[{}] {}: '{}' [{}, {}] cannot be GPTQ {}-bit (not whole int32 words)", component, ckpt.path,
                     module, out, in, c->bits);
  expect(".qweight", DType::I32, {in / per_word, out}, true);
  expect(".qzeros", DType::I32, {groups, out / per_word}, true);
  // Scales keep the dtype of the model they were saved from: f16, f32 or bf16 (all read exactly).
  const TensorView* sc = ckpt.find(module + ".scales");
  const DType scales_dt = sc && (sc->dtype == DType::F32 || sc->dtype == DType::BF16) ? sc->dtype : DType::F16;
  expect(".scales", scales_dt, {groups, out}, true);
  expect(".g_idx", DType::I32, {in}, false);
}

kernels::IntNStorage load_gptq_module(const Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in) {
  check_gptq_module(ckpt, module, out, in, "gptq");
  const GptqConfig c = *checkpoint_gptq_config(ckpt);
  const int64_t group = c.group_size <= 0 ? in : c.group_size;
  const TensorView& scales = ckpt.get(module + ".scales");
  std::vector<int32_t> g_idx(static_cast<size_t>(in));
  if (const TensorView* g = ckpt.find(module + ".g_idx")) {
    std::memcpy(g_idx.data(), g->data, static_cast<size_t>(g->nbytes));
  } else {
    for (int64_t i = 0; i < in; ++i) g_idx[i] = static_cast<int32_t>(i / group);
  }
  // Safetensors data offsets are only byte-aligned: copy to aligned buffers before reading words.
  auto words = [&](const std::string& suffix) {
    const TensorView& t = ckpt.get(module + suffix);
    std::vector<int32_t> v(static_cast<size_t>(t.nbytes / 4));
    std::memcpy(v.data(), t.data, static_cast<size_t>(t.nbytes));
    return v;
  };
  const std::vector<int32_t> qweight = words(".qweight"), qzeros = words(".qzeros");
  const std::string where = ckpt.path + ": " + module;
  if (scales.dtype == DType::F16) {
    std::vector<uint16_t> sc(static_cast<size_t>(scales.nbytes / 2));
    std::memcpy(sc.data(), scales.data, static_cast<size_t>(scales.nbytes));
    return gptq_unpack(qweight.data(), qzeros.data(), sc.data(), g_idx.data(), in, out, scales.shape[0], c, where);
  }
  // f32 as they are; bf16 widened to f32 (exact).
  std::vector<float> sc = tensor_to_f32(scales);
  return gptq_unpack(qweight.data(), qzeros.data(), sc.data(), g_idx.data(), in, out, scales.shape[0], c, where);
}

std::vector<std::string> gptq_tensor_names(const Checkpoint& ckpt, const std::string& module) {
  std::vector<std::string> names;
  for (const char* s : {".qweight", ".qzeros", ".scales", ".g_idx"})
    if (ckpt.find(module + s)) names.push_back(module + s);
  return names;
}

}  // namespace llmopt::io
