// llama.cpp imatrix files: the legacy .dat layout built byte by byte from llama-quantize's reader
// (tools/quantize/quantize.cpp load_legacy_imatrix: values divided by ncall), the GGUF layout
// (in_sum2 / counts, 1 where a count is 0), our .dat writer read back, projection lookup by HF
// module path, and malformed files rejected with the path in the message.
#include "io/imatrix.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io_test_util.h"

namespace llmopt::io {
namespace {

using testing::Bytes;
using testing::TempDir;

Bytes legacy_entry(Bytes b, const std::string& name, int32_t ncall, const std::vector<float>& v) {
  b.i32(static_cast<int32_t>(name.size())).raw(name).i32(ncall).i32(static_cast<int32_t>(v.size()));
  for (float x : v) b.f32(x);
  return b;
}

TEST(Imatrix, LegacyDatDividesByCallCount) {
  TempDir dir("imatrix_dat");
  Bytes b;
  b.i32(2);
  b = legacy_entry(b, "blk.0.attn_q.weight", 4, {4.0f, 2.0f, 0.0f, 1.0f});
  b = legacy_entry(b, "blk.1.ffn_down.weight", 0, {3.0f, 5.0f});  // ncall 0: kept as stored
  b.i32(7).i32(9).raw("calib.txt");
  b.write(dir.file("m.dat"));
  const Imatrix m = read_imatrix(dir.file("m.dat"));
  ASSERT_EQ(m.entries.size(), 2u);
  EXPECT_EQ(m.entries.at("blk.0.attn_q.weight"), (std::vector<float>{1.0f, 0.5f, 0.0f, 0.25f}));
  EXPECT_EQ(m.entries.at("blk.1.ffn_down.weight"), (std::vector<float>{3.0f, 5.0f}));
  EXPECT_EQ(m.chunks, 7);
  ASSERT_EQ(m.datasets.size(), 1u);
  EXPECT_EQ(m.datasets[0], "calib.txt");
  // Lookup by HF module path: q_proj of layer 0 is blk.0.attn_q.weight.
  const auto* q = m.find_projection("model.layers.0.self_attn.q_proj", 4);
  ASSERT_NE(q, nullptr);
  EXPECT_EQ((*q)[1], 0.5f);
  EXPECT_EQ(m.find_projection("model.layers.0.self_attn.k_proj", 4), nullptr);
  EXPECT_EQ(m.find_projection("lm_head", 4), nullptr);
  EXPECT_THROW(m.find_projection("model.layers.1.mlp.down_proj", 3), InputError);
}

TEST(Imatrix, WriterRoundTripsAndOlderFilesWithoutTrailerRead) {
  TempDir dir("imatrix_rt");
  Imatrix m;
  m.entries["blk.0.ffn_up.weight"] = {0.125f, 3.5f, 1e-8f};
  m.entries["output.weight"] = {2.0f};
  m.chunks = 3;
  m.datasets = {"x.txt"};
  write_imatrix_dat(dir.file("w.dat"), m);
  const Imatrix back = read_imatrix(dir.file("w.dat"));
  EXPECT_EQ(back.entries, m.entries);
  EXPECT_EQ(back.chunks, 3);
  EXPECT_EQ(back.datasets, m.datasets);
  Bytes b;
  b.i32(1);
  b = legacy_entry(b, "blk.2.attn_v.weight", 2, {1.0f, 3.0f});
  b.write(dir.file("old.dat"));
  const Imatrix old = read_imatrix(dir.file("old.dat"));
  EXPECT_EQ(old.entries.at("blk.2.attn_v.weight"), (std::vector<float>{0.5f, 1.5f}));
  EXPECT_EQ(old.chunks, 0);
}

TEST(Imatrix, GgufSumsOverCounts) {
  TempDir dir("imatrix_gguf");
  // Two experts of 3 columns: the second saw no token (count 0) and reads as 1.
  const std::vector<float> sums = {2.0f, 4.0f, 6.0f, 9.0f, 9.0f, 9.0f}, counts = {2.0f, 0.0f};
  const std::vector<float> sums1 = {1.0f, 2.0f}, counts1 = {4.0f};
  std::vector<GgufKeyValue> kvs;
  kvs.push_back({"general.type", GgufValue::make_string("imatrix")});
  kvs.push_back({"imatrix.datasets", GgufValue::make_string_array({"a.txt"})});
  kvs.push_back({"imatrix.chunk_count", GgufValue::make_u32(5)});
  kvs.push_back({"imatrix.chunk_size", GgufValue::make_u32(512)});
  const uint32_t f32 = ggml_type_for(DType::F32);
  std::vector<GgufOutTensor> ts = {
      {"blk.0.ffn_gate_exps.weight.in_sum2", f32, {2, 3}, sums.data(), 24},
      {"blk.0.ffn_gate_exps.weight.counts", f32, {2}, counts.data(), 8},
      {"blk.0.attn_k.weight.in_sum2", f32, {1, 2}, sums1.data(), 8},
      {"blk.0.attn_k.weight.counts", f32, {1}, counts1.data(), 4},
  };
  write_gguf_file(dir.file("m.gguf"), kvs, ts);
  const Imatrix m = read_imatrix(dir.file("m.gguf"));
  EXPECT_EQ(m.entries.at("blk.0.ffn_gate_exps.weight"), (std::vector<float>{1.0f, 2.0f, 3.0f, 1.0f, 1.0f, 1.0f}));
  EXPECT_EQ(m.entries.at("blk.0.attn_k.weight"), (std::vector<float>{0.25f, 0.5f}));
  EXPECT_EQ(m.chunks, 5);
  EXPECT_EQ(m.datasets, std::vector<std::string>{"a.txt"});
  // Sums without counts is malformed.
  write_gguf_file(dir.file("bad.gguf"), kvs, {ts[0]});
  EXPECT_THROW(read_imatrix(dir.file("bad.gguf")), InputError);
}

TEST(Imatrix, MalformedFilesNameThePath) {
  TempDir dir("imatrix_bad");
  auto expect_bad = [&](Bytes b, const std::string& what) {
    const std::string path = dir.file("bad.dat");
    b.write(path);
    try {
      read_imatrix(path);
      ADD_FAILURE() << what << ": accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << what << ": " << e.what();
    }
  };
  expect_bad(Bytes().i32(0), "no entries");
  expect_bad(legacy_entry(Bytes().i32(2), "blk.0.attn_q.weight", 1, {1.0f}), "truncated: second entry missing");
  Bytes short_values;
  short_values.i32(1).i32(3).raw("abc").i32(1).i32(4).f32(1.0f);
  expect_bad(short_values, "fewer values than declared");
  expect_bad(legacy_entry(Bytes().i32(1), "blk.0.attn_q.weight", 1, {1.0f, -2.0f}), "negative importance");
  expect_bad(legacy_entry(Bytes().i32(1), "blk.0.attn_q.weight", 1, {NAN}), "NaN importance");
  EXPECT_THROW(write_imatrix_dat(dir.file("empty.dat"), Imatrix{}), InputError);
}

}  // namespace
}  // namespace llmopt::io
