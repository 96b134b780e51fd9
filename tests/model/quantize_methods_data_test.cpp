// Issue 9's quality bars for the calibrated methods, on stories260K (the short CI version of the
// tables in docs/quantization.md): calibrated on the first 100 kB of tinystories_val.txt and
// measured on (the first 48 chunks of 256 tokens of) the rest of it, KLD against the f32 model
// computed by the evaluation code (eval::evaluate_perplexity over the inference interface), never
// by the quantizer.
//  - GPTQ q4_0 lowers the mean KLD of plain rounding into the same blocks (same bytes budget) by
//    at least 20% (measured over the whole rest: 0.0801 -> 0.0544, −32%);
//  - mixed precision with target_bpw 5.5 (int4/5/6/8, groups of 64 with zero points, GPTQ with
//    act-order) stays within the budget and reaches the bar, mean KLD ≤ 0.0164 (measured
//    over the whole rest: 5.488 bits, 0.0134).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "../common/reference_files.h"
#include "eval/perplexity.h"
#include "model/loader.h"
#include "model/quantize.h"
#include "model/torch_engine.h"

namespace llmopt {
namespace {

std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Measured {
  double bits = 0, kld = 0;
};

Measured quantize_and_measure(const model::QuantizeSpec& spec) {
  model::ModelLoadOptions lo;
  lo.tokenizer_path = testref::kStories + "tok512.bin";
  auto base = model::load_model(testref::kStories + "stories260K.bin", lo);
  auto q = model::load_model(testref::kStories + "stories260K.bin", lo);
  const auto rep = model::quantize_model(*q.model, q.tokenizer.get(), spec);
  eval::PerplexityOptions po;
  po.ctx = 256;
  po.max_chunks = 48;
  const std::string rest = read_all(testref::kShared + "/text/tinystories_val.txt").substr(100000);
  const auto ids = eval::tokenize_for_perplexity(*q.tokenizer, rest, po);
  auto eng = model::make_engine(q.model, "auto");
  auto ref = model::make_engine(base.model, "auto");
  const auto r = eval::evaluate_perplexity(*eng, ids, po, ref.get());
  return {rep.linear_bits_per_weight, r.kld_mean};
}

model::QuantizeSpec calibrated(const std::string& method, const std::string& format) {
  model::QuantizeSpec s;
  s.method = method;
  s.format = format;
  s.fallback = "f16";
  s.calibration.path = testref::kShared + "/text/tinystories_val.txt";
  s.calibration.max_bytes = 100000;
  s.calibration.samples = 128;
  s.calibration.seq_len = 256;
  return s;
}

TEST(QuantizeMethods, GptqBeatsRoundingInTheSameBlocks) {
  const Measured rtn = quantize_and_measure(calibrated("rtn", "q4_0"));
  const Measured gptq = quantize_and_measure(calibrated("gptq", "q4_0"));
  EXPECT_DOUBLE_EQ(rtn.bits, gptq.bits);
  EXPECT_LT(gptq.kld, 0.8 * rtn.kld) << "rtn " << rtn.kld << " gptq " << gptq.kld;
  std::printf("stories260K q4_0 (+f16 down_proj): %.3f bits, KLD rtn %.4f, gptq %.4f\n", rtn.bits, rtn.kld, gptq.kld);
}

TEST(QuantizeMethods, MixedPrecisionMeetsTheBarWithinTheBudget) {
  auto s = calibrated("gptq", "int5");
  s.group_size = 64;
  s.sym = false;
  s.gptq.act_order = true;
  s.target_bpw = 5.5;
  s.candidates = {"int4", "int5", "int6", "int8"};
  const Measured m = quantize_and_measure(s);
  EXPECT_LE(m.bits, 5.5);
  EXPECT_LE(m.kld, 0.0164);
  std::printf("stories260K mixed: %.3f bits per linear weight, KLD %.4f\n", m.bits, m.kld);
}

}  // namespace
}  // namespace llmopt
