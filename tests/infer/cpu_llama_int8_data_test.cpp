// The native engine's int8-activation path (Weights::int8_activations, kernels/gemm_quant.h) at
// the model level: tinyllama-bpe-17m with its projections quantized here by the reference
// quantizers (q8_0, q4_0, q4_k with q8_0 for the 704-wide down_proj rows that hold no 256-block),
// run once with f32 activations (the exact product on the dequantized weights, what the torch
// engine computes) and once with int8 activations, over 128 tokens of the model's test text,
// through prefill (all positions) and through decode.
//
// Stated bound: mean KLD(f32-activation ‖ int8-activation) per position ≤ 2e-4 nats, in prefill and
// in decode, and the argmax agrees on ≥ 90 % of positions. The KLD budget for a whole
// ≤ 5.5-bit recipe on stories260K is 0.0164; the activation rounding (≤ max|x|/254 per element of
// each block of 32) may spend at most ~1 % of it. The f32-activation run is the engine's ordinary
// GEMV/GEMM on the dequantized weights (tests/model/quantize_test.cpp compares it with the torch
// engine).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "../common/reference_files.h"
#include "core/dtype.h"
#include "infer/llama_cpu.h"
#include "io/checkpoint.h"
#include "kernels/gemm_quant.h"
#include "kernels/quant_formats.h"

namespace llmopt {
namespace {

constexpr double kMaxMeanKld = 2e-4;
constexpr double kMinArgmaxAgreement = 0.9;

bool is_projection(const std::string& name) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    if (name.find(p) != std::string::npos && name.size() > 7 && name.ends_with(".weight")) return true;
  return false;
}

// The checkpoint with every projection re-encoded as `type` (or Q8_0 where its rows hold no
// whole block of `type`).
io::Checkpoint quantized(io::Checkpoint ckpt, DType type) {
  for (auto& t : ckpt.tensors) {
    if (!is_projection(t.name)) continue;
    const int64_t n = t.shape[0], k = t.shape[1];
    const DType use = k % kernels::find_quant_traits(type)->block_elems == 0 ? type : DType::Q8_0;
    std::vector<float> f(static_cast<size_t>(n * k));
    kernels::dequantize_row(t.dtype, t.data, f.data(), n * k);
    auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(dtype_bytes_for(use, n * k)));
    kernels::quantize_row_ref(use, f.data(), buf->data(), n * k);
    t.dtype = use;
    t.data = buf->data();
    t.nbytes = static_cast<int64_t>(buf->size());
    ckpt.storage.push_back(buf);
  }
  return ckpt;
}

double kld(const float* p_logits, const float* q_logits, int64_t V) {
  const double mp = *std::max_element(p_logits, p_logits + V), mq = *std::max_element(q_logits, q_logits + V);
  double zp = 0, zq = 0;
  for (int64_t i = 0; i < V; ++i) zp += std::exp(p_logits[i] - mp), zq += std::exp(q_logits[i] - mq);
  const double lp = mp + std::log(zp), lq = mq + std::log(zq);
  double s = 0;
  for (int64_t i = 0; i < V; ++i) {
    const double a = p_logits[i] - lp, b = q_logits[i] - lq;
    s += std::exp(a) * (a - b);
  }
  return s;
}

TEST(CpuLlamaInt8Data, Tiny17mInt8ActivationsStayWithinStatedKld) {
  auto lm = infer::load_cpu_model(testref::kTiny17m);
  ASSERT_NE(lm.tokenizer, nullptr);
  auto ids32 = lm.tokenizer->encode(testref::read_file(testref::kTiny17m + "/reference/test_split.txt").substr(0, 4000),
                                    {.add_bos = false});
  ASSERT_GE(ids32.size(), 128u);
  const std::vector<int64_t> ids(ids32.begin(), ids32.begin() + 128);
  const int64_t T = static_cast<int64_t>(ids.size());
  const io::Checkpoint base = io::load_checkpoint(testref::kTiny17m);
  for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
    if (!kernels::has_quantize_ref(type)) continue;
    SCOPED_TRACE(dtype_name(type));
    const io::Checkpoint q = quantized(base, type);
    infer::CpuLlama exact(q), int8(q);
    int8.set_int8_activations(true);
    ASSERT_FALSE(exact.int8_activations());
    const int64_t V = exact.config().vocab_size;
    // Prefill, all positions.
    std::vector<float> a(static_cast<size_t>(T * V)), b(a.size());
    auto ca = exact.make_cache(T), cb = int8.make_cache(T);
    exact.prefill(ids.data(), T, *ca, a.data(), true);
    int8.prefill(ids.data(), T, *cb, b.data(), true);
    double sum = 0;
    int agree = 0;
    for (int64_t t = 0; t < T; ++t) {
      sum += kld(a.data() + t * V, b.data() + t * V, V);
      agree += std::max_element(a.data() + t * V, a.data() + (t + 1) * V) - (a.data() + t * V) ==
               std::max_element(b.data() + t * V, b.data() + (t + 1) * V) - (b.data() + t * V);
    }
    EXPECT_LE(sum / T, kMaxMeanKld) << "prefill";
    EXPECT_GE(agree, kMinArgmaxAgreement * T) << "prefill";
    EXPECT_GT(sum, 0.0) << "the int8 path must differ from the exact one";
    // The same rows one token at a time (the fused decode step).
    auto da = exact.make_cache(T), db = int8.make_cache(T);
    std::vector<float> la(static_cast<size_t>(V)), lb(la.size());
    double dsum = 0;
    for (int64_t t = 0; t < 32; ++t) {
      exact.decode(ids[t], *da, la.data());
      int8.decode(ids[t], *db, lb.data());
      dsum += kld(la.data(), lb.data(), V);
    }
    EXPECT_LE(dsum / 32, kMaxMeanKld) << "decode";
    std::printf("[int8 activations] %s: mean KLD prefill %.3g, decode %.3g, argmax agreement %d/%lld\n",
                dtype_name(type).data(), sum / T, dsum / 32, agree, static_cast<long long>(T));
  }
}

}  // namespace
}  // namespace llmopt
