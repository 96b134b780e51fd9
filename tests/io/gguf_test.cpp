// GGUF reader/writer round trips on synthetic files: every value type, nested arrays, tensor
// geometry, alignment, typed getter errors.
#include "io/gguf.h"

#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "io/gguf_writer.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {
using testing::Bytes;
using testing::TempDir;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}

TEST(GgufTest, RoundTripsEveryValueTypeAndNestedArrays) {
  TempDir dir("gguf_values");
  std::vector<GgufKeyValue> kvs;
  kvs.emplace_back("u8", GgufValue::make_integer(GgufType::U8, 200));
  kvs.emplace_back("i8", GgufValue::make_integer(GgufType::I8, -100));
  kvs.emplace_back("u16", GgufValue::make_integer(GgufType::U16, 60000));
  kvs.emplace_back("i16", GgufValue::make_integer(GgufType::I16, -30000));
  kvs.emplace_back("u32", GgufValue::make_u32(4000000000u));
  kvs.emplace_back("i32", GgufValue::make_i32(-2000000000));
  kvs.emplace_back("u64", GgufValue::make_u64(uint64_t{1} << 40));
  kvs.emplace_back("i64", GgufValue::make_integer(GgufType::I64, -(int64_t{1} << 40)));
  kvs.emplace_back("f32", GgufValue::make_f32(0.25f));
  GgufValue f64;
  f64.type = GgufType::F64;
  f64.f = 1e-300;
  kvs.emplace_back("f64", f64);
  kvs.emplace_back("bool", GgufValue::make_bool(true));
  kvs.emplace_back("str", GgufValue::make_string("héllo"));
  kvs.emplace_back("strs", GgufValue::make_string_array({"a", "", "ccc"}));
  kvs.emplace_back("f32s", GgufValue::make_f32_array({1.5f, -2.0f}));
  kvs.emplace_back("i32s", GgufValue::make_i32_array({-1, 7}));
  GgufValue nested;
  nested.type = GgufType::Array;
  nested.elem_type = GgufType::Array;
  nested.items = {GgufValue::make_i32_array({1, 2}), GgufValue::make_i32_array({})};
  kvs.emplace_back("nested", nested);
  write_gguf_file(dir.file("v.gguf"), kvs, {});

  const auto g = GgufFile::open(dir.file("v.gguf"));
  ASSERT_EQ(g.kvs().size(), kvs.size());
  for (size_t k = 0; k < kvs.size(); ++k) EXPECT_EQ(g.kvs()[k].first, kvs[k].first);
  EXPECT_EQ(g.get_u32("u8"), 200u);
  EXPECT_EQ(g.get_i64("i8"), -100);
  EXPECT_EQ(g.get_u32("u16"), 60000u);
  EXPECT_EQ(g.get_i64("i16"), -30000);
  EXPECT_EQ(g.get_u32("u32"), 4000000000u);
  EXPECT_EQ(g.get_i64("i32"), -2000000000);
  EXPECT_EQ(g.get_i64("u64"), int64_t{1} << 40);
  EXPECT_EQ(g.get_i64("i64"), -(int64_t{1} << 40));
  EXPECT_EQ(g.get_f32("f32"), 0.25f);
  EXPECT_EQ(g.get("f64").f, 1e-300);
  EXPECT_TRUE(g.get_bool("bool"));
  EXPECT_EQ(g.get_string("str"), "héllo");
  EXPECT_EQ(g.get_string_array("strs"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(g.get_f32_array("f32s"), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(g.get_i32_array("i32s"), (std::vector<int32_t>{-1, 7}));
  const auto& n = g.get("nested");
  ASSERT_EQ(n.items.size(), 2u);
  EXPECT_EQ(n.items[0].items[1].i, 2);
  EXPECT_TRUE(n.items[1].items.empty());
  EXPECT_TRUE(g.tensors().empty());
}

TEST(GgufTest, TypedGettersNameFileKeyAndTypes) {
  TempDir dir("gguf_getters");
  write_gguf_file(dir.file("g.gguf"),
                  {{"s", GgufValue::make_string("x")}, {"neg", GgufValue::make_i32(-1)}}, {});
  const auto g = GgufFile::open(dir.file("g.gguf"));
  const std::string e1 = error_of([&] { g.get_u32("s"); });
  EXPECT_NE(e1.find("g.gguf"), std::string::npos) << e1;
  EXPECT_NE(e1.find("'s'"), std::string::npos) << e1;
  EXPECT_NE(e1.find("expected u32, found string"), std::string::npos) << e1;
  EXPECT_NE(error_of([&] { g.get_u32("neg"); }).find("does not fit"), std::string::npos);
  EXPECT_NE(error_of([&] { g.get_string("absent"); }).find("missing metadata key 'absent'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { g.get_string_array("s"); }).find("expected array of string"),
            std::string::npos);
}

TEST(GgufTest, TensorsRoundTripWithAlignmentAndReversedDims) {
  TempDir dir("gguf_tensors");
  std::vector<float> a(3 * 5);
  for (size_t k = 0; k < a.size(); ++k) a[k] = static_cast<float>(k);
  std::vector<uint16_t> b(7, 0x3c00);
  std::vector<uint8_t> q(2 * 34, 0x11);  // two Q8_0 blocks: one row of 64
  write_gguf_file(dir.file("t.gguf"), {{"general.alignment", GgufValue::make_u32(64)}},
                  {{"a", 0, {3, 5}, a.data(), 60},
                   {"b", 1, {7}, b.data(), 14},
                   {"q", 8, {1, 64}, q.data(), 68}},
                  64);
  const auto g = GgufFile::open(dir.file("t.gguf"));
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.data_offset() % 64, 0u);
  const auto* ta = g.find_tensor("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->ne, (std::vector<int64_t>{5, 3}));  // fastest first in the file
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), 60), 0);
  const auto* tb = g.find_tensor("b");
  EXPECT_EQ(tb->offset % 64, 0u);
  EXPECT_EQ(tb->dtype, DType::F16);
  const auto* tq = g.find_tensor("q");
  EXPECT_EQ(tq->dtype, DType::Q8_0);
  EXPECT_EQ(tq->nbytes, 68);
  EXPECT_EQ(std::memcmp(tq->data, q.data(), 68), 0);
}

TEST(GgufTest, ReadsVersion2AndDefaultAlignment) {
  TempDir dir("gguf_v2");
  Bytes b;
  b.u32(kGgufMagic).u32(2).u64(1).u64(1);
  b.gguf_string("general.architecture").u32(8).gguf_string("llama");
  b.gguf_string("w").u32(1).u64(4).u32(0).u64(0);
  b.pad_to(32).f32(1).f32(2).f32(3).f32(4);
  b.write(dir.file("v2.gguf"));
  const auto g = GgufFile::open(dir.file("v2.gguf"));
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.alignment(), 32u);
  float x[4];
  std::memcpy(x, g.tensors()[0].data, 16);
  EXPECT_EQ(x[3], 4.0f);
}

TEST(GgufTest, EmptyFileAndBufferAreRejected) {
  TempDir dir("gguf_empty");
  testing::write_text(dir.file("e.gguf"), "");
  const std::string e = error_of([&] { GgufFile::open(dir.file("e.gguf")); });
  EXPECT_NE(e.find("e.gguf"), std::string::npos) << e;
}

}  // namespace
}  // namespace llmopt::io
