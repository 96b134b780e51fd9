// The native engine's row-interleaved Q4_0 / Q4_K weights (kernels/repack.h) at the model level:
// tinyllama-bpe-17m with its projections quantized here by the reference quantizers (q4_0; q4_k
// with q8_0 for the 704-wide down_proj rows that hold no 256-block), loaded twice: Copy (the
// engine repacks every Q4_0/Q4_K projection with a multiple of 8 rows) and Borrow (the blocks are
// used where they lie, never repacked: the engine as it was before repacking).
//
// Oracles and bounds:
// - repacking changes no byte of meaning: with f32 activations both engines run kernels::gemv_rows
//   and the prefill GEMMs on the same blocks (the repacked rows are unpacked first), so decode
//   logits and prefill logits (T = 128 > the small-batch path) are equal bit for bit; with int8
//   activations the prefill GEMM is bit-identical too (gemm_quant unpacks each chunk);
// - int8-activation decode: the repacked GEMV computes each row as the scalar formula of
//   gemm_quant.h, the blocks' GEMV the same sums reassociated over vector lanes, so the logits
//   differ by float reassociation only. That alone would move the logits by ~1e-6 relative, but
//   the next projection's input is rounded to int8 again, and an input that reassociation moves
//   across a rounding boundary changes its code by one step (d_x = max|x|/127 of its block): the
//   two runs then differ like two int8 roundings of nearly the same activations, a small part of
//   the int8 path's own cost (CpuLlamaInt8Data: mean KLD vs f32 activations ≤ 2e-4). Stated
//   bound: mean KLD ≤ 1e-5 per position (5 % of that budget; measured 1.5e-6 for q4_0, 9e-7 for
//   q4_k) and the same argmax at every position;
// - results independent of the thread count: decode at 1 and 2 threads bit-identical;
// - memory: the repacked arena holds one copy (Q4_0: the blocks' size; Q4_K: 1184/1152 of it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "../common/reference_files.h"
#include "core/dtype.h"
#include "core/threads.h"
#include "infer/llama_cpu.h"
#include "io/checkpoint.h"
#include "kernels/quant_formats.h"
#include "kernels/repack.h"
#include "tokenizer/tokenizer.h"

namespace llmopt {
namespace {

constexpr double kMaxReassociationKld = 1e-5;

bool is_projection(const std::string& name) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
    if (name.find(p) != std::string::npos && name.ends_with(".weight")) return true;
  return false;
}

// The checkpoint with every projection re-encoded as `type` (Q8_0 where its rows hold no block).
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

int64_t argmax(const float* v, int64_t n) { return std::max_element(v, v + n) - v; }

std::vector<float> decode_all(const infer::CpuLlama& m, const std::vector<int64_t>& ids, int64_t steps) {
  const int64_t V = m.config().vocab_size;
  auto cache = m.make_cache(steps);
  std::vector<float> out(static_cast<size_t>(steps * V));
  for (int64_t t = 0; t < steps; ++t) m.decode(ids[t], *cache, out.data() + t * V);
  return out;
}

std::vector<float> prefill_all(const infer::CpuLlama& m, const std::vector<int64_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  auto cache = m.make_cache(T);
  std::vector<float> out(static_cast<size_t>(T * V));
  m.prefill(ids.data(), T, *cache, out.data(), true);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(CpuLlamaRepackData, RepackedEngineEqualsBlocksEngine) {
  auto tok = infer::load_cpu_model(testref::kTiny17m).tokenizer;
  ASSERT_NE(tok, nullptr);
  auto ids32 = tok->encode(testref::read_file(testref::kTiny17m + "/reference/test_split.txt").substr(0, 4000),
                           {.add_bos = false});
  ASSERT_GE(ids32.size(), 128u);
  const std::vector<int64_t> ids(ids32.begin(), ids32.begin() + 128);
  const int64_t steps = 24;
  const io::Checkpoint base = io::load_checkpoint(testref::kTiny17m);
  const int saved_threads = threads();
  for (DType type : {DType::Q4_0, DType::Q4_K}) {
    SCOPED_TRACE(dtype_name(type));
    const io::Checkpoint q = quantized(base, type);
    infer::CpuLlama packed(q, infer::CpuLlama::Storage::Copy), blocks(q, infer::CpuLlama::Storage::Borrow);
    const int64_t V = packed.config().vocab_size;
    // Which matrices are repacked, and the memory they take.
    int repacked = 0, eligible = 0;
    int64_t eligible_bytes = 0;
    for (size_t l = 0; l < packed.weights().layers.size(); ++l)
      for (size_t j = 0; j < 7; ++j) {
        const infer::Matrix& a = packed.weights().layers[l].m[j];
        const infer::Matrix& b = blocks.weights().layers[l].m[j];
        EXPECT_FALSE(b.repacked);
        const bool can = kernels::repack_supports(a.type, a.n, a.k);
        EXPECT_EQ(a.repacked, can);
        eligible += can, repacked += a.repacked;
        if (can) eligible_bytes += dtype_bytes_for(a.type, a.n * a.k);
      }
    EXPECT_GT(repacked, 0);
    const int64_t extra = type == DType::Q4_0 ? 0 : eligible_bytes / 1152 * 32;
    EXPECT_EQ(packed.weight_bytes(), blocks.weight_bytes() + extra);

    for (bool int8 : {false, true}) {
      SCOPED_TRACE(int8 ? "int8 activations" : "f32 activations");
      packed.set_int8_activations(int8);
      blocks.set_int8_activations(int8);
      EXPECT_TRUE(same_bits(prefill_all(packed, ids), prefill_all(blocks, ids))) << "prefill";
      set_threads(1);
      const auto d1 = decode_all(packed, ids, steps);
      set_threads(2);
      const auto d2 = decode_all(packed, ids, steps);
      const auto db = decode_all(blocks, ids, steps);
      EXPECT_TRUE(same_bits(d1, d2)) << "decode depends on the thread count";
      if (!int8) {
        EXPECT_TRUE(same_bits(d2, db)) << "decode";
        continue;
      }
      double sum = 0;
      for (int64_t t = 0; t < steps; ++t) {
        sum += kld(db.data() + t * V, d2.data() + t * V, V);
        EXPECT_EQ(argmax(db.data() + t * V, V), argmax(d2.data() + t * V, V)) << "position " << t;
      }
      EXPECT_LE(sum / steps, kMaxReassociationKld) << "decode";
      std::printf("[repack] %s int8 decode vs blocks engine: mean KLD %.3g over %lld positions\n",
                  dtype_name(type).data(), sum / steps, static_cast<long long>(steps));
    }
  }
  set_threads(saved_threads);
}

}  // namespace
}  // namespace llmopt
