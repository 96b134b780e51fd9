#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {
using testing::TempDir;

TEST(SafetensorsTest, WriterRoundTripAndReferenceLayout) {
  TempDir dir("st_rt");
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> b = {0x3f80, 0x4000};
  std::vector<int8_t> c = {-1, 2, 3};
  write_safetensors(dir.file("m.safetensors"),
                    {{"z.bf16", DType::BF16, {2}, b.data(), 4},
                     {"a.f32", DType::F32, {2, 3}, a.data(), 24},
                     {"c.i8", DType::I8, {3}, c.data(), 3}},
                    {{"format", "pt"}});
  const auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  // The header is padded with spaces to a multiple of 8 so the data section is 8-byte aligned.
  EXPECT_EQ(f.header_size() % 8, 0u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 3u);
  // Largest element size first, then by name: a.f32, z.bf16, c.i8.
  const auto* ta = f.find("a.f32");
  const auto* tz = f.find("z.bf16");
  const auto* tc = f.find("c.i8");
  ASSERT_TRUE(ta && tz && tc);
  EXPECT_EQ(ta->begin, 0u);
  EXPECT_EQ(tz->begin, 24u);
  EXPECT_EQ(tc->begin, 28u);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 24), 0);
  EXPECT_EQ(tz->dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(tc->data, c.data(), 3), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ta->data) % 8,
            reinterpret_cast<uintptr_t>(f.mapping()->data()) % 8);
}

TEST(SafetensorsTest, ExactHeaderBytesForOneTensor) {
  TempDir dir("st_hdr");
  float x = 1.0f;
  write_safetensors(dir.file("x.safetensors"), {{"x", DType::F32, {1}, &x, 4}});
  const auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  const std::string header(reinterpret_cast<const char*>(f.mapping()->data() + 8), f.header_size());
  // serde_json's compact form, field order dtype/shape/data_offsets, padded with spaces.
  EXPECT_EQ(header, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}  ");
}

TEST(SafetensorsTest, OtherDtypesAreParsedAndReported) {
  TempDir dir("st_f8");
  testing::Bytes b;
  const std::string h =
      R"({"e":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"u":{"dtype":"U32","shape":[],"data_offsets":[2,6]}})";
  b.u64(h.size()).raw(h).zeros(6);
  b.write(dir.file("f8.safetensors"));
  const auto f = SafetensorsFile::open(dir.file("f8.safetensors"));
  EXPECT_EQ(f.find("e")->dtype_name, "F8_E4M3");
  EXPECT_FALSE(f.find("e")->dtype.has_value());
  EXPECT_TRUE(f.find("u")->shape.empty());
  EXPECT_EQ(f.find("u")->nbytes, 4);
}

TEST(SafetensorsTest, WriterRejectsBadTensors) {
  TempDir dir("st_bad");
  float x[2] = {};
  EXPECT_THROW(write_safetensors(dir.file("a"), {{"x", DType::F32, {3}, x, 8}}), InputError);
  EXPECT_THROW(write_safetensors(dir.file("b"), {{"x", DType::Q8_0, {32}, x, 34}}), InputError);
  EXPECT_THROW(write_safetensors(dir.file("c"),
                                 {{"x", DType::F32, {2}, x, 8}, {"x", DType::F32, {2}, x, 8}}),
               InputError);
}

TEST(SafetensorsTest, IndexFile) {
  TempDir dir("st_index");
  testing::write_text(
      dir.file("i.json"),
      R"({"metadata":{"total_size":8},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}})");
  const auto idx = read_safetensors_index(dir.file("i.json"));
  EXPECT_EQ(idx.shard_files, (std::vector<std::string>{"s1.safetensors", "s2.safetensors"}));
  testing::write_text(dir.file("bad.json"), R"({"weight_map":{"a":"../etc/passwd"}})");
  EXPECT_THROW(read_safetensors_index(dir.file("bad.json")), InputError);
}

}  // namespace
}  // namespace llmopt::io
