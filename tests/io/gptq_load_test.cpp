// GPTQ checkpoints as producers write them beyond llmopt's own exports: f32 and bf16 scales (what
// auto-gptq saves from an f32/bf16 model) kept exactly, checked against the layout's formula
// W[o, i] = s[g, o]·(q[i, o] − (qzeros[g, o] + 1)) computed in float64 from hand-packed words;
// and auto-gptq's file names (gptq_model-4bit-128g.safetensors, quantize_config.json), with exit 2
// when the directory leaves the weights ambiguous.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "core/half.h"
#include "io/gptq.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {

namespace fs = std::filesystem;

// A [out, in] projection in GPTQ's words, packed by hand from chosen codes / zeros / g_idx.
struct HandPacked {
  int bits = 4;
  int64_t out = 0, in = 0, group = 0, groups = 0;
  std::vector<uint8_t> q;      // [in, out] codes
  std::vector<uint8_t> z;      // [groups, out] zero points (1 .. 2^bits − 1)
  std::vector<float> s;        // [groups, out] scales
  std::vector<int32_t> g_idx;  // [in]
  std::vector<int32_t> qweight, qzeros;

  HandPacked(int bits_, int64_t out_, int64_t in_, int64_t group_, bool permute) : bits(bits_), out(out_), in(in_), group(group_) {
    groups = in / group;
    const int per = 32 / bits, maxq = (1 << bits) - 1;
    q.resize(in * out);
    z.resize(groups * out);
    s.resize(groups * out);
    g_idx.resize(in);
    for (int64_t i = 0; i < in; ++i) g_idx[i] = static_cast<int32_t>((permute ? (i * 5 + 3) % in : i) / group);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o) q[i * out + o] = static_cast<uint8_t>((i * 7 + o * 3 + i * o) % (maxq + 1));
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t o = 0; o < out; ++o) {
        z[g * out + o] = static_cast<uint8_t>(1 + (g * 3 + o) % maxq);
        // f32 values with more significand bits than f16 holds (checked in the tests).
        s[g * out + o] = 0.0123456789f * (1.0f + 0.3711f * static_cast<float>(o) + 0.0173f * static_cast<float>(g));
      }
    qweight.assign(in / per * out, 0);
    qzeros.assign(groups * (out / per), 0);
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o)
        reinterpret_cast<uint32_t&>(qweight[(i / per) * out + o]) |= static_cast<uint32_t>(q[i * out + o])
                                                                      << (bits * (i % per));
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t o = 0; o < out; ++o)
        reinterpret_cast<uint32_t&>(qzeros[g * (out / per) + o / per]) |=
            static_cast<uint32_t>(z[g * out + o] - 1) << (bits * (o % per));
  }

  // W[o, i] in float64 (exact: a 24-bit significand times an integer below 2^9), then one f32 rounding,
  // which is what an f32 engine computing s·(q − z) gets.
  float weight(int64_t o, int64_t i) const {
    const int64_t g = g_idx[i];
    const double w = static_cast<double>(s[g * out + o]) *
                     (static_cast<double>(q[i * out + o]) - static_cast<double>(z[g * out + o]));
    return static_cast<float>(w);
  }
};

std::vector<float> dequantized(const kernels::IntNStorage& st) {
  std::vector<float> w(st.rows * st.cols);
  kernels::intn_dequantize_rows(st.view(), 0, st.rows, w.data());
  return w;
}

TEST(GptqLoad, F32ScalesKeptExactlyAgainstFloat64Math) {
  for (int bits : {4, 8}) {
    for (bool permute : {false, true}) {
      const HandPacked h(bits, 8, 64, 32, permute);
      int not_f16 = 0;
      for (float v : h.s) not_f16 += f16_to_f32(f32_to_f16(v)) != v;
      ASSERT_GT(not_f16, 0) << "the scales must not all be f16 values, or rounding would go unnoticed";
      const GptqConfig c{bits, 32, permute, false};
      const auto st = gptq_unpack(h.qweight.data(), h.qzeros.data(), h.s.data(), h.g_idx.data(), h.in, h.out,
                                  h.groups, c, "m");
      ASSERT_TRUE(st.scales.empty());
      ASSERT_EQ(st.scales_f32.size(), h.s.size());
      for (int64_t o = 0; o < h.out; ++o)
        for (int64_t g = 0; g < h.groups; ++g) EXPECT_EQ(st.scales_f32[o * h.groups + g], h.s[g * h.out + o]);
      const auto w = dequantized(st);
      for (int64_t o = 0; o < h.out; ++o)
        for (int64_t i = 0; i < h.in; ++i)
          ASSERT_EQ(w[o * h.in + i], h.weight(o, i)) << bits << " bits, permute " << permute << " [" << o << ", " << i << "]";
      // The GEMV on those weights against float64: |Σ w·x − ref| ≤ n·2^-24·Σ|w·x| (f32 accumulation).
      std::vector<float> x(h.in);
      for (int64_t i = 0; i < h.in; ++i) x[i] = 0.25f * static_cast<float>((i * 11) % 13) - 1.5f;
      for (int64_t o = 0; o < h.out; ++o) {
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < h.in; ++i) {
          ref += static_cast<double>(h.weight(o, i)) * x[i];
          mag += std::abs(static_cast<double>(h.weight(o, i)) * x[i]);
        }
        const double tol = static_cast<double>(h.in + 2) * 0x1p-24 * mag;
        EXPECT_NEAR(kernels::intn_dot(st.view(), o, x.data()), ref, tol) << o;
        EXPECT_NEAR(kernels::intn_dot_ref(st.view(), o, x.data()), ref, tol) << o;
      }
      // Packing it back writes the same words and the same f32 scales.
      const GptqTensors t = gptq_pack(st.view(), "m.weight");
      EXPECT_TRUE(t.scales.empty());
      EXPECT_EQ(t.scales_f32, h.s);
      EXPECT_EQ(t.qweight, h.qweight);
      EXPECT_EQ(t.qzeros, h.qzeros);
      EXPECT_EQ(t.g_idx, h.g_idx);
    }
  }
}

TEST(GptqLoad, F32ScaleThatIsNotPositiveIsNamed) {
  HandPacked h(4, 8, 64, 32, false);
  h.s[3] = 0.0f;
  try {
    gptq_unpack(h.qweight.data(), h.qzeros.data(), h.s.data(), h.g_idx.data(), h.in, h.out, h.groups,
                GptqConfig{4, 32, false, false}, "model.layers.0.mlp.up_proj");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj.scales[0, 3]"), std::string::npos) << e.what();
  }
}

// A checkpoint holding one module's GPTQ tensors, scales of `scales_dtype` (F16, F32, BF16).
struct ModuleCheckpoint {
  Checkpoint ck;
  std::vector<uint8_t> scale_bytes;
  ModuleCheckpoint(const HandPacked& h, DType scales_dtype) {
    ck.path = "mem";
    ck.metadata["quantization_config"] = {{"quant_method", "gptq"}, {"bits", h.bits}, {"group_size", h.group},
                                          {"desc_act", true}, {"sym", false}};
    auto view = [&](const std::string& name, DType dt, std::vector<int64_t> shape, const void* data, size_t n) {
      TensorView v;
      v.name = name;
      v.dtype = dt;
      v.shape = std::move(shape);
      v.data = static_cast<const uint8_t*>(data);
      v.nbytes = static_cast<int64_t>(n);
      ck.tensors.push_back(v);
    };
    const int per = 32 / h.bits;
    view("m.qweight", DType::I32, {h.in / per, h.out}, h.qweight.data(), 4 * h.qweight.size());
    view("m.qzeros", DType::I32, {h.groups, h.out / per}, h.qzeros.data(), 4 * h.qzeros.size());
    view("m.g_idx", DType::I32, {h.in}, h.g_idx.data(), 4 * h.g_idx.size());
    for (float v : h.s) {
      if (scales_dtype == DType::F32) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        scale_bytes.insert(scale_bytes.end(), p, p + 4);
      } else {
        const uint16_t b = scales_dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        scale_bytes.push_back(static_cast<uint8_t>(b & 0xff));
        scale_bytes.push_back(static_cast<uint8_t>(b >> 8));
      }
    }
    view("m.scales", scales_dtype, {h.groups, h.out}, scale_bytes.data(), scale_bytes.size());
  }
};

TEST(GptqLoad, ModuleScalesF16F32Bf16ReadAsStored) {
  const HandPacked h(4, 8, 64, 32, true);
  for (DType dt : {DType::F16, DType::F32, DType::BF16}) {
    ModuleCheckpoint m(h, dt);
    ASSERT_TRUE(has_gptq_module(m.ck, "m"));
    check_gptq_module(m.ck, "m", h.out, h.in, "test");
    const auto st = load_gptq_module(m.ck, "m", h.out, h.in);
    const auto w = dequantized(st);
    for (int64_t o = 0; o < h.out; ++o)
      for (int64_t g = 0; g < h.groups; ++g) {
        const float want = dt == DType::F32    ? h.s[g * h.out + o]
                           : dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(h.s[g * h.out + o]))
                                               : f16_to_f32(f32_to_f16(h.s[g * h.out + o]));
        EXPECT_EQ(st.view().grid(o, g).scale, want) << dtype_name(dt);
      }
    EXPECT_EQ(st.scales_f32.empty(), dt == DType::F16) << dtype_name(dt);
    for (int64_t o = 0; o < h.out; ++o)
      for (int64_t i = 0; i < h.in; ++i) {
        const int64_t g = h.g_idx[i];
        const double s = st.view().grid(o, g).scale;
        const double ref = s * (static_cast<double>(h.q[i * h.out + o]) - h.z[g * h.out + o]);
        ASSERT_EQ(w[o * h.in + i], static_cast<float>(ref)) << dtype_name(dt);
      }
  }
  // Any other scales dtype is named with what the layout needs.
  ModuleCheckpoint bad(h, DType::F32);
  bad.ck.tensors.back().dtype = DType::I32;
  try {
    check_gptq_module(bad.ck, "m", h.out, h.in, "test");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("m.scales"), std::string::npos) << e.what();
  }
}

TEST(GptqLoad, StaticGroupsAndMarlinInConfig) {
  const auto j = nlohmann::json::parse(
      R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true, "static_groups": true}})");
  const auto c = parse_gptq_config(j, "config.json");
  ASSERT_TRUE(c.has_value());
  EXPECT_TRUE(c->static_groups);
  EXPECT_EQ(gptq_config_json(*c)["static_groups"], true);
  EXPECT_EQ(gptq_config_json(GptqConfig{})["static_groups"], false);
  EXPECT_THROW(parse_gptq_config(nlohmann::json::parse(
                                     R"({"quantization_config": {"quant_method": "gptq", "bits": 4, "is_marlin_format": true}})"),
                                 "x"),
               InputError);
}

// ---------------------------------------------------------------- directories as auto-gptq saves them

// A dense tiny model written by write_hf; the tests rename its files and add configs.
struct Dir {
  testing::TempDir dir;
  Checkpoint ck;
  explicit Dir(const std::string& name) : dir(name), ck(testing::random_checkpoint(testing::tiny_config())) {
    write_hf(ck, dir.path().string(), DType::F32);
  }
  fs::path p(const std::string& f) const { return dir.path() / f; }
  void quantize_config(const nlohmann::json& j) const { testing::write_text(p("quantize_config.json"), j.dump()); }
  void config_quantization(const nlohmann::json& q) const {
    std::ifstream f(p("config.json"));
    auto c = nlohmann::json::parse(f);
    c["quantization_config"] = q;
    testing::write_text(p("config.json"), c.dump());
  }
};

const nlohmann::json kAutoGptq4 = {{"bits", 4},         {"group_size", 128},    {"damp_percent", 0.01},
                                   {"desc_act", false}, {"static_groups", false}, {"sym", true},
                                   {"true_sequential", true}, {"model_name_or_path", nullptr},
                                   {"model_file_base_name", nullptr}, {"is_marlin_format", false},
                                   {"quant_method", "gptq"}};

std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return {};
}

TEST(GptqLoad, AutoGptqDefaultFileNameAndQuantizeConfig) {
  Dir d("gptq_names");
  fs::rename(d.p("model.safetensors"), d.p("gptq_model-4bit-128g.safetensors"));
  d.quantize_config(kAutoGptq4);  // config.json without quantization_config (older auto-gptq)
  const auto back = load_hf_dir(d.dir.path().string());
  EXPECT_EQ(back.tensors.size(), d.ck.tensors.size());
  EXPECT_EQ(back.metadata["files"], nlohmann::json({"gptq_model-4bit-128g.safetensors"}));
  ASSERT_TRUE(checkpoint_gptq_config(back).has_value());
  EXPECT_EQ(checkpoint_gptq_config(back)->bits, 4);
  EXPECT_EQ(checkpoint_gptq_config(back)->group_size, 128);

  // Both configs (auto-gptq 0.7 writes both): they agree, fine; they disagree: exit 2 naming both.
  d.config_quantization(kAutoGptq4);
  EXPECT_NO_THROW(load_hf_dir(d.dir.path().string()));
  auto other = kAutoGptq4;
  other["bits"] = 8;
  d.config_quantization(other);
  const std::string e = input_error([&] { load_hf_dir(d.dir.path().string()); });
  EXPECT_NE(e.find("quantize_config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("disagree"), std::string::npos) << e;
  d.config_quantization(kAutoGptq4);

  // A second *.safetensors makes it ambiguous, unless quantize_config.json names the file.
  fs::copy_file(d.p("gptq_model-4bit-128g.safetensors"), d.p("extra.safetensors"));
  const std::string amb = input_error([&] { load_hf_dir(d.dir.path().string()); });
  EXPECT_NE(amb.find("ambiguous"), std::string::npos) << amb;
  EXPECT_NE(amb.find("extra.safetensors"), std::string::npos) << amb;
  EXPECT_NE(amb.find("gptq_model-4bit-128g.safetensors"), std::string::npos) << amb;
  auto named = kAutoGptq4;
  named["model_file_base_name"] = "gptq_model-4bit-128g";
  d.quantize_config(named);
  d.config_quantization(named);
  EXPECT_EQ(load_hf_dir(d.dir.path().string()).metadata["files"],
            nlohmann::json({"gptq_model-4bit-128g.safetensors"}));

  // No weights at all.
  fs::remove(d.p("gptq_model-4bit-128g.safetensors"));
  fs::remove(d.p("extra.safetensors"));
  EXPECT_NE(input_error([&] { load_hf_dir(d.dir.path().string()); }).find("no model.safetensors"), std::string::npos);
}

TEST(GptqLoad, ShardedUnderAnotherIndexName) {
  Dir d("gptq_shards");
  fs::remove(d.p("model.safetensors"));
  std::vector<SafetensorsOutTensor> shard[2];
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (size_t k = 0; k < d.ck.tensors.size(); ++k) {
    const auto& t = d.ck.tensors[k];
    shard[k % 2].push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
    index["weight_map"][t.name] = k % 2 ? "gptq_model-4bit-128g-00002-of-00002.safetensors"
                                        : "gptq_model-4bit-128g-00001-of-00002.safetensors";
  }
  write_safetensors(d.p("gptq_model-4bit-128g-00001-of-00002.safetensors").string(), shard[0]);
  write_safetensors(d.p("gptq_model-4bit-128g-00002-of-00002.safetensors").string(), shard[1]);
  testing::write_text(d.p("gptq_model-4bit-128g.safetensors.index.json").string(), index.dump());
  d.quantize_config(kAutoGptq4);
  const auto back = load_hf_dir(d.dir.path().string());
  EXPECT_EQ(back.tensors.size(), d.ck.tensors.size());
  EXPECT_EQ(back.metadata["files"].size(), 2u);
  // Two index files: ambiguous.
  testing::write_text(d.p("other.safetensors.index.json").string(), index.dump());
  EXPECT_NE(input_error([&] { load_hf_dir(d.dir.path().string()); }).find("ambiguous"), std::string::npos);
}

}  // namespace
}  // namespace llmopt::io
