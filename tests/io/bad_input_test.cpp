// Table of malformed model files. Each is generated in a temp dir and must be rejected with an
// InputError whose message starts with "[component]", names the file and contains a keyword that
// says what is wrong. Nothing may crash or read out of bounds (the suite also runs under ASan
// with LLMOPT_SANITIZE=ON).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/gguf_writer.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {
namespace fs = std::filesystem;
using testing::Bytes;
using testing::TempDir;

struct BadCase {
  const char* name;
  // Creates the bad input under `dir`; returns the path to load and the text the error must name.
  std::function<std::pair<std::string, std::string>(const TempDir& dir)> make;
  std::function<void(const std::string& path)> load;
  const char* keyword;
};

void load_model(const std::string& path) {
  LoadOptions o;
  // Any existing file will do as the tokenizer: only llama2.c needs one, and it is not parsed here.
  if (fs::is_regular_file(path)) o.tokenizer_path = path;
  load_checkpoint(path, o);
}
void load_gguf(const std::string& path) { GgufFile::open(path); }
void load_safetensors(const std::string& path) { SafetensorsFile::open(path); }
void load_l2c(const std::string& path) { load_llama2c(path); }

// A minimal GGUF: header, `kvs` already encoded, `tensor_infos` already encoded, aligned data.
Bytes gguf_bytes(uint64_t n_tensors, uint64_t n_kv, const Bytes& kvs, const Bytes& infos,
                 size_t data_bytes) {
  Bytes b;
  b.u32(kGgufMagic).u32(3).u64(n_tensors).u64(n_kv);
  b.raw(std::string(
      kvs.size() ? reinterpret_cast<const char*>(const_cast<Bytes&>(kvs).data().data()) : "",
      kvs.size()));
  b.raw(std::string(
      infos.size() ? reinterpret_cast<const char*>(const_cast<Bytes&>(infos).data().data()) : "",
      infos.size()));
  b.pad_to(32).zeros(data_bytes);
  return b;
}

Bytes tensor_info(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
  Bytes b;
  b.gguf_string(name).u32(static_cast<uint32_t>(ne.size()));
  for (auto n : ne) b.u64(n);
  b.u32(type).u64(offset);
  return b;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) {
    auto& d = const_cast<Bytes&>(p).data();
    out.raw(std::string(reinterpret_cast<const char*>(d.data()), d.size()));
  }
  return out;
}

std::pair<std::string, std::string> write_bytes(const TempDir& dir, const std::string& name,
                                                const Bytes& b) {
  const std::string p = dir.file(name);
  b.write(p);
  return {p, name};
}

// A valid tiny GGUF model written by our writer; `edit` may change the kvs before writing.
std::pair<std::string, std::string> tiny_gguf(
    const TempDir& dir, const std::string& name,
    const std::function<void(std::vector<GgufKeyValue>&)>& edit) {
  const std::string ok = dir.file("ok.gguf");
  write_gguf(ok, testing::random_checkpoint(testing::tiny_config()), DType::F32);
  const auto g = GgufFile::open(ok);
  std::vector<GgufKeyValue> kvs = g.kvs();
  edit(kvs);
  std::vector<GgufOutTensor> ts;
  for (const auto& t : g.tensors()) ts.push_back({t.name, t.ggml_type, t.shape, t.data, t.nbytes});
  write_gguf_file(dir.file(name), kvs, ts);
  return {dir.file(name), name};
}

// A valid tiny HF directory; `edit` runs on the directory afterwards.
std::pair<std::string, std::string> tiny_hf(const TempDir& dir, const std::string& name,
                                            const std::function<void(const fs::path&)>& edit,
                                            const std::string& named = "") {
  const fs::path d = dir.path() / name;
  write_hf(testing::random_checkpoint(testing::tiny_config()), d.string(), DType::F32);
  edit(d);
  return {d.string(), named.empty() ? name : named};
}

std::string safetensors_with_header(const std::string& header, size_t data_bytes) {
  Bytes b;
  b.u64(header.size()).raw(header).zeros(data_bytes);
  return std::string(reinterpret_cast<const char*>(b.data().data()), b.size());
}

std::pair<std::string, std::string> write_st(const TempDir& dir, const std::string& name,
                                             const std::string& header, size_t data_bytes) {
  testing::write_text(dir.file(name), safetensors_with_header(header, data_bytes));
  return {dir.file(name), name};
}

// Writes a tiny llama2.c legacy file and lets `edit` patch its bytes.
std::pair<std::string, std::string> tiny_l2c(
    const TempDir& dir, const std::string& name, int version,
    const std::function<void(std::vector<uint8_t>&)>& edit) {
  const std::string p = dir.file(name);
  auto ck = testing::random_checkpoint(testing::tiny_config());
  if (version == 0) write_llama2c_legacy(p, ck);
  if (version == 1) write_llama2c_v1(p, ck);
  if (version == 2) write_llama2c_v2(p, ck, 32);
  auto bytes = MappedFile::open(p);
  std::vector<uint8_t> v(bytes->data(), bytes->data() + bytes->size());
  edit(v);
  Bytes b;
  b.data() = v;
  b.write(p);
  return {p, name};
}

const std::vector<BadCase>& cases() {
  static const std::vector<BadCase> all = {
      // ---- GGUF ----
      {"gguf_bad_magic",
       [](const TempDir& d) {
         return write_bytes(d, "magic.gguf", Bytes().u32(0x12345678).u32(3).u64(0).u64(0));
       },
       load_gguf, "bad magic"},
      {"gguf_bad_version",
       [](const TempDir& d) {
         return write_bytes(d, "version.gguf", Bytes().u32(kGgufMagic).u32(4).u64(0).u64(0));
       },
       load_gguf, "unsupported version"},
      {"gguf_truncated_header",
       [](const TempDir& d) {
         return write_bytes(d, "short.gguf", Bytes().u32(kGgufMagic).u32(3).u32(1));
       },
       load_gguf, "truncated"},
      {"gguf_absurd_tensor_count",
       [](const TempDir& d) {
         return write_bytes(d, "tcount.gguf", gguf_bytes(uint64_t{1} << 60, 0, {}, {}, 0));
       },
       load_gguf, "tensor count"},
      {"gguf_absurd_kv_count",
       [](const TempDir& d) {
         return write_bytes(d, "kvcount.gguf", gguf_bytes(0, 1'000'000'000, {}, {}, 0));
       },
       load_gguf, "metadata count"},
      {"gguf_string_past_eof",
       [](const TempDir& d) {
         return write_bytes(d, "str.gguf", gguf_bytes(0, 1, Bytes().u64(1000).raw("abc"), {}, 0));
       },
       load_gguf, "truncated"},
      {"gguf_absurd_array_length",
       [](const TempDir& d) {
         return write_bytes(
             d, "array.gguf",
             gguf_bytes(0, 1, Bytes().gguf_string("a").u32(9).u32(8).u64(uint64_t{1} << 62), {},
                        0));
       },
       load_gguf, "array of"},
      {"gguf_unknown_value_type",
       [](const TempDir& d) {
         return write_bytes(d, "vtype.gguf",
                            gguf_bytes(0, 1, Bytes().gguf_string("k").u32(99).u32(0), {}, 0));
       },
       load_gguf, "unknown value type"},
      {"gguf_tensor_past_eof",
       [](const TempDir& d) {
         return write_bytes(d, "eof.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {64, 64}, 0, 0), 100));
       },
       load_gguf, "past end of file"},
      {"gguf_unaligned_offset",
       [](const TempDir& d) {
         return write_bytes(d, "unaligned.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {4}, 0, 4), 64));
       },
       load_gguf, "alignment"},
      {"gguf_overlapping_tensors",
       [](const TempDir& d) {
         return write_bytes(
             d, "overlap.gguf",
             gguf_bytes(2, 0, {},
                        concat({tensor_info("a", {16}, 0, 0), tensor_info("b", {16}, 0, 32)}),
                        128));
       },
       load_gguf, "overlap"},
      {"gguf_unknown_ggml_type",
       [](const TempDir& d) {
         return write_bytes(d, "gtype.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {4}, 77, 0), 64));
       },
       load_gguf, "unknown ggml type"},
      {"gguf_too_many_dims",
       [](const TempDir& d) {
         return write_bytes(d, "dims.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {1, 1, 1, 1, 1}, 0, 0), 64));
       },
       load_gguf, "dims"},
      {"gguf_zero_dim",
       [](const TempDir& d) {
         return write_bytes(d, "zerodim.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {4, 0}, 0, 0), 64));
       },
       load_gguf, "out of range"},
      {"gguf_absurd_dims",
       [](const TempDir& d) {
         return write_bytes(
             d, "huge.gguf",
             gguf_bytes(1, 0, {}, tensor_info("w", {1u << 30, 1u << 30, 1u << 30}, 0, 0), 64));
       },
       load_gguf, "elements"},
      {"gguf_block_row_not_multiple",
       [](const TempDir& d) {
         return write_bytes(d, "block.gguf",
                            gguf_bytes(1, 0, {}, tensor_info("w", {33}, 8, 0), 64));
       },
       load_gguf, "block size"},
      {"gguf_duplicate_key",
       [](const TempDir& d) {
         const Bytes kv = Bytes().gguf_string("k").u32(4).u32(1);
         return write_bytes(d, "dupkey.gguf", gguf_bytes(0, 2, concat({kv, kv}), {}, 0));
       },
       load_gguf, "duplicate"},
      {"gguf_bad_alignment",
       [](const TempDir& d) {
         return write_bytes(
             d, "align.gguf",
             gguf_bytes(0, 1, Bytes().gguf_string("general.alignment").u32(4).u32(3), {}, 0));
       },
       load_gguf, "power of two"},
      {"gguf_missing_architecture",
       [](const TempDir& d) {
         return tiny_gguf(d, "noarch.gguf", [](auto& kvs) {
           std::erase_if(kvs, [](const auto& kv) { return kv.first == "general.architecture"; });
         });
       },
       load_model, "general.architecture"},
      {"gguf_unsupported_architecture",
       [](const TempDir& d) {
         return tiny_gguf(d, "gpt2.gguf",
                          [](auto& kvs) { kvs[0].second = GgufValue::make_string("gpt2"); });
       },
       load_model, "unsupported general.architecture"},
      {"gguf_shape_mismatch_vs_config",
       [](const TempDir& d) {
         return tiny_gguf(d, "shape.gguf", [](auto& kvs) {
           for (auto& [k, v] : kvs)
             if (k == "llama.feed_forward_length") v = GgufValue::make_u32(128);
         });
       },
       load_model, "shape mismatch"},
      // Fuzz finding (docs/fuzzing.md): a huge block_count must fail fast at the first missing
      // layer, not after listing 2^30 x 9 expected tensor names.
      {"gguf_absurd_block_count",
       [](const TempDir& d) {
         return tiny_gguf(d, "layers.gguf", [](auto& kvs) {
           for (auto& [k, v] : kvs)
             if (k == "llama.block_count") v = GgufValue::make_u32(1u << 30);
         });
       },
       load_model, "missing tensor 'model.layers.2.input_layernorm.weight'"},
      {"gguf_wrong_key_type",
       [](const TempDir& d) {
         return tiny_gguf(d, "ktype.gguf", [](auto& kvs) {
           for (auto& [k, v] : kvs)
             if (k == "llama.block_count") v = GgufValue::make_string("two");
         });
       },
       load_model, "expected i64, found string"},
      // ---- safetensors ----
      {"st_too_small",
       [](const TempDir& d) {
         testing::write_text(d.file("small.safetensors"), "abc");
         return std::pair<std::string, std::string>{d.file("small.safetensors"),
                                                    "small.safetensors"};
       },
       load_safetensors, "too small"},
      {"st_header_past_eof",
       [](const TempDir& d) {
         return write_bytes(d, "hdr.safetensors", Bytes().u64(1000).raw("{}"));
       },
       load_safetensors, "past end of file"},
      {"st_header_absurd",
       [](const TempDir& d) {
         return write_bytes(d, "hdrbig.safetensors", Bytes().u64(~uint64_t{0}).raw("{}"));
       },
       load_safetensors, "limit"},
      {"st_invalid_json",
       [](const TempDir& d) { return write_st(d, "json.safetensors", "{\"a\": [1, 2", 0); },
       load_safetensors, "not valid JSON"},
      {"st_not_object",
       [](const TempDir& d) { return write_st(d, "arr.safetensors", "[1, 2]", 0); },
       load_safetensors, "JSON object"},
      {"st_unknown_dtype",
       [](const TempDir& d) {
         return write_st(d, "dtype.safetensors",
                         R"({"w":{"dtype":"F12","shape":[2],"data_offsets":[0,4]}})", 4);
       },
       load_safetensors, "unknown dtype"},
      {"st_offsets_past_eof",
       [](const TempDir& d) {
         return write_st(d, "off.safetensors",
                         R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
       },
       load_safetensors, "past end of file"},
      {"st_size_mismatch",
       [](const TempDir& d) {
         return write_st(d, "size.safetensors",
                         R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
       },
       load_safetensors, "size mismatch"},
      {"st_overlap",
       [](const TempDir& d) {
         return write_st(
             d, "overlap.safetensors",
             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
             12);
       },
       load_safetensors, "overlap"},
      {"st_reversed_offsets",
       [](const TempDir& d) {
         return write_st(d, "rev.safetensors",
                         R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8);
       },
       load_safetensors, "reversed"},
      {"st_negative_shape",
       [](const TempDir& d) {
         return write_st(d, "neg.safetensors",
                         R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4);
       },
       load_safetensors, "non-negative"},
      // ---- Hugging Face directories ----
      {"hf_config_missing_field",
       [](const TempDir& d) {
         return tiny_hf(
             d, "nofield",
             [](const fs::path& p) {
               std::ifstream in(p / "config.json");
               auto j = nlohmann::json::parse(in);
               j.erase("hidden_size");
               testing::write_text((p / "config.json").string(), j.dump());
             },
             "config.json");
       },
       load_model, "hidden_size"},
      {"hf_config_not_json",
       [](const TempDir& d) {
         return tiny_hf(
             d, "notjson",
             [](const fs::path& p) { testing::write_text((p / "config.json").string(), "{"); },
             "config.json");
       },
       load_model, "not valid JSON"},
      {"hf_unsupported_architecture",
       [](const TempDir& d) {
         return tiny_hf(
             d, "arch",
             [](const fs::path& p) {
               std::ifstream in(p / "config.json");
               auto j = nlohmann::json::parse(in);
               j["architectures"] = {"GPT2LMHeadModel"};
               testing::write_text((p / "config.json").string(), j.dump());
             },
             "config.json");
       },
       load_model, "unsupported architecture"},
      {"hf_shape_mismatch_vs_config",
       [](const TempDir& d) {
         return tiny_hf(d, "hfshape", [](const fs::path& p) {
           std::ifstream in(p / "config.json");
           auto j = nlohmann::json::parse(in);
           j["intermediate_size"] = 128;
           testing::write_text((p / "config.json").string(), j.dump());
         });
       },
       load_model, "shape mismatch"},
      {"hf_missing_tensor",
       [](const TempDir& d) {
         return tiny_hf(d, "hfmissing", [](const fs::path& p) {
           std::ifstream in(p / "config.json");
           auto j = nlohmann::json::parse(in);
           j["num_hidden_layers"] = 3;
           testing::write_text((p / "config.json").string(), j.dump());
         });
       },
       load_model, "missing tensor"},
      {"hf_no_weights",
       [](const TempDir& d) {
         return tiny_hf(d, "noweights",
                        [](const fs::path& p) { fs::remove(p / "model.safetensors"); });
       },
       load_model, "no model.safetensors"},
      {"hf_nan_weight",
       [](const TempDir& d) {
         auto ck = testing::random_checkpoint(testing::tiny_config());
         float nan = std::nanf("");
         std::memcpy(const_cast<uint8_t*>(ck.get("model.layers.1.mlp.up_proj.weight").data) + 40,
                     &nan, 4);
         write_hf(ck, (d.path() / "nan").string(), DType::BF16);
         return std::pair<std::string, std::string>{
             (d.path() / "nan").string(),
             "model.layers.1.mlp.up_proj.weight' has a non-finite value (nan) at element 10"};
       },
       load_model, "non-finite"},
      {"hf_index_names_missing_tensor",
       [](const TempDir& d) {
         return tiny_hf(
             d, "sharded",
             [](const fs::path& p) {
               fs::rename(p / "model.safetensors", p / "model-00001-of-00001.safetensors");
               testing::write_text(
                   (p / "model.safetensors.index.json").string(),
                   R"({"weight_map":{"ghost.weight":"model-00001-of-00001.safetensors"}})");
             },
             "model.safetensors.index.json");
       },
       load_model, "does not hold"},
      // ---- llama2.c ----
      {"l2c_v1_truncated",
       [](const TempDir& d) {
         return tiny_l2c(d, "trunc.bin", 1, [](auto& v) { v.resize(v.size() - 4); });
       },
       load_model, "implies"},
      {"l2c_v2_bad_version",
       [](const TempDir& d) { return tiny_l2c(d, "v3.bin", 2, [](auto& v) { v[4] = 3; }); },
       load_model, "unsupported version"},
      {"l2c_legacy_bad_dim",
       [](const TempDir& d) { return tiny_l2c(d, "dim.bin", 0, [](auto& v) { v[3] = 0x80; }); },
       load_l2c, "out of range"},
      {"l2c_v2_group_not_dividing",
       [](const TempDir& d) { return tiny_l2c(d, "group.bin", 2, [](auto& v) { v[37] = 48; }); },
       load_model, "group_size"},
      {"l2c_nan_weight",
       [](const TempDir& d) {
         return tiny_l2c(d, "nan.bin", 0, [](auto& v) {
           const float nan = std::nanf("");
           std::memcpy(v.data() + 28 + 4 * 5, &nan, 4);  // embedding row 0, element 5
         });
       },
       load_model, "model.embed_tokens.weight' has a non-finite value (nan) at element 5"},
      {"l2c_missing_tokenizer",
       [](const TempDir& d) { return tiny_l2c(d, "notok.bin", 0, [](auto&) {}); },
       [](const std::string& p) { load_checkpoint(p); }, "tokenizer"},
      // ---- format detection ----
      {"unknown_format",
       [](const TempDir& d) {
         return write_bytes(d, "random.bin", Bytes().u64(0x0123456789abcdefull).u64(42));
       },
       load_model, "unrecognized model format"},
      {"missing_file",
       [](const TempDir& d) {
         return std::pair<std::string, std::string>{d.file("absent.gguf"), "absent.gguf"};
       },
       load_model, "no such file"},
  };
  return all;
}

class BadInputTest : public ::testing::TestWithParam<size_t> {};

TEST_P(BadInputTest, RejectedWithInputErrorNamingFileAndProblem) {
  const BadCase& c = cases()[GetParam()];
  TempDir dir(std::string("bad_") + c.name);
  const auto [path, named] = c.make(dir);
  std::string message;
  try {
    c.load(path);
  } catch (const InputError& e) {
    message = e.what();
  } catch (const std::exception& e) {
    FAIL() << c.name << ": expected InputError, got another exception: " << e.what();
  }
  ASSERT_FALSE(message.empty()) << c.name << ": no error";
  EXPECT_EQ(message.rfind('[', 0), 0u) << message;
  EXPECT_NE(message.find(named), std::string::npos)
      << c.name << ": message does not name '" << named << "': " << message;
  EXPECT_NE(message.find(c.keyword), std::string::npos)
      << c.name << ": no '" << c.keyword << "' in: " << message;
}

INSTANTIATE_TEST_SUITE_P(Table, BadInputTest, ::testing::Range<size_t>(0, cases().size()),
                         [](const auto& info) { return std::string(cases()[info.param].name); });

TEST(BadInputTableTest, HasAtLeastTwentyCases) { EXPECT_GE(cases().size(), 20u); }

}  // namespace
}  // namespace llmopt::io
