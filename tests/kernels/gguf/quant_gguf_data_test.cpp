// Real llama.cpp files (../shared/models/stories260K, DATA.md): the Q4_K_M file was made by
// llama-quantize from the f32 file, and holds q5_0, q8_0 and f16 tensors (the model's rows of 64
// and 172 fit no k-quant super-block). Checks, tensor by tensor (same names in both files):
//  1. our decoder reproduces the f32 values within the format's step (kStepBound below);
//  2. our reference quantizers re-create llama.cpp's bytes exactly from the f32 values, which is
//     what "our files equal llama.cpp's" means;
//  3. gemv run directly on the quantized tensors tracks the F32 gemv on the original weights.
// The GGUF files are read with the io layer's reader (this binary links llmopt_io).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "io/gguf.h"
#include "kernels/gemv.h"
#include "kernels/quant_formats.h"

namespace llmopt::kernels {
namespace {

const std::string kDir = std::string(LLMOPT_SHARED_DIR) + "/models/stories260K/";

struct Pair {
  io::GgufFile quantized = io::GgufFile::open(kDir + "stories260K.llamacpp-Q4_K_M.gguf");
  io::GgufFile reference = io::GgufFile::open(kDir + "stories260K.llamacpp-f32.gguf");
};

std::vector<float> f32_values(const io::GgufTensorInfo& t) {
  EXPECT_EQ(t.dtype, DType::F32) << t.name;
  std::vector<float> v(t.numel());
  std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}

// Step of block b of a symmetric 32-element format, read from its f16 scale (first 2 bytes).
float block_step(const io::GgufTensorInfo& t, int64_t b, int64_t block_bytes) {
  uint16_t d;
  std::memcpy(&d, t.data + b * block_bytes, 2);
  return std::fabs(f16_to_f32(d));
}

TEST(QuantGgufData, DecodedTensorsMatchF32WithinOneStep) {
  Pair files;
  std::map<std::string, int> seen;  // dtype name -> tensor count
  for (const auto& t : files.quantized.tensors()) {
    SCOPED_TRACE(t.name);
    const io::GgufTensorInfo* ref = files.reference.find_tensor(t.name);
    ASSERT_NE(ref, nullptr);
    ASSERT_EQ(ref->ne, t.ne);
    ASSERT_TRUE(t.dtype.has_value());
    const DType type = *t.dtype;
    ++seen[std::string(dtype_name(type))];
    const auto want = f32_values(*ref);
    std::vector<float> got(t.numel());
    dequantize_row(type, t.data, got.data(), t.numel());
    if (type == DType::F32) {
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4));
      continue;
    }
    if (type == DType::F16) {
      // Round to nearest: relative error ≤ 2^-11, or ≤ 2^-25 absolute in the subnormal range.
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_LE(std::fabs(got[i] - want[i]),
                  std::ldexp(std::fabs(want[i]), -11) + std::ldexp(1.0f, -25))
            << i;
      continue;
    }
    ASSERT_TRUE(type == DType::Q5_0 || type == DType::Q8_0) << dtype_name(type);
    // kStepBound: round-to-nearest errs by ≤ d/2, and Q5_0's clamped positive end by ≤ d; the
    // decoder uses the f16-rounded step d16 = d·(1 ± 2^-11), which moves the largest code
    // (|q| ≤ 32) by ≤ 32·2^-10·d16. So |decoded - x| ≤ d16·(1 + 2^-5) for both formats.
    const int64_t block_bytes = dtype_block_bytes(type);
    for (size_t i = 0; i < want.size(); ++i) {
      const float d16 = block_step(t, static_cast<int64_t>(i / 32), block_bytes);
      ASSERT_LE(std::fabs(got[i] - want[i]), d16 * (1.0f + 1.0f / 32)) << "element " << i;
    }
  }
  for (const auto& [name, count] : seen) std::cout << name << ": " << count << " tensors\n";
  // The file holds the types DATA.md says it does.
  EXPECT_GT(seen["Q5_0"], 0);
  EXPECT_GT(seen["Q8_0"], 0);
  EXPECT_GT(seen["F16"], 0);
}

TEST(QuantGgufData, ReferenceQuantizersReproduceLlamaCppBytes) {
  Pair files;
  int compared = 0;
  for (const auto& t : files.quantized.tensors()) {
    SCOPED_TRACE(t.name);
    const DType type = *t.dtype;
    const auto src = f32_values(*files.reference.find_tensor(t.name));
    std::vector<uint8_t> ours(static_cast<size_t>(t.nbytes));
    if (type == DType::F16) {
      auto* h = reinterpret_cast<uint16_t*>(ours.data());
      for (size_t i = 0; i < src.size(); ++i) h[i] = f32_to_f16(src[i]);
    } else if (has_quantize_ref(type)) {
      quantize_row_ref(type, src.data(), ours.data(), static_cast<int64_t>(src.size()));
    } else {
      continue;  // F32 copies
    }
    ++compared;
    int64_t differing_blocks = 0;
    const int64_t block_bytes = dtype_block_bytes(type);
    for (int64_t off = 0; off < t.nbytes; off += block_bytes)
      differing_blocks += std::memcmp(ours.data() + off, t.data + off, block_bytes) != 0;
    EXPECT_EQ(differing_blocks, 0) << dtype_name(type) << ": " << differing_blocks << " of "
                                   << t.nbytes / block_bytes << " blocks differ";
  }
  EXPECT_GT(compared, 0);
}

// GEMV straight on llama.cpp's quantized tensors (Q8_0 fused, Q5_0 and F16 through the decoding
// paths) against the F32 GEMV on the original weights, for one input vector x. Bound: per row,
// Σ_i |x_i|·e_i with e_i the per-element bound of the first test (d16·(1 + 2^-5) for the block
// types, 2^-11·|w_i| + 2^-25 for F16), plus the two summations' rounding, 2·(k+8)·u·Σ|w_i·x_i|
// with u = 2^-24 (Higham §3.1) — slack taken on the larger of |w| and |decoded w|.
TEST(QuantGgufData, GemvOnQuantizedTensorsTracksF32Gemv) {
  Pair files;
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  int checked = 0;
  for (const auto& t : files.quantized.tensors()) {
    if (t.ne.size() != 2 || *t.dtype == DType::F32) continue;
    SCOPED_TRACE(t.name);
    const int64_t k = t.ne[0], n = t.ne[1];
    const auto w32 = f32_values(*files.reference.find_tensor(t.name));
    std::vector<float> decoded(n * k), x(k), got(n), want(n);
    dequantize_row(*t.dtype, t.data, decoded.data(), n * k);
    for (auto& v : x) v = dist(rng);
    gemv(*t.dtype, t.data, x.data(), nullptr, got.data(), n, k, 2);
    gemv(DType::F32, w32.data(), x.data(), nullptr, want.data(), n, k, 2);
    const int64_t block_bytes = dtype_block_bytes(*t.dtype);
    for (int64_t r = 0; r < n; ++r) {
      double quant_err = 0, abs_sum = 0;
      for (int64_t i = 0; i < k; ++i) {
        const int64_t idx = r * k + i;
        const double e = *t.dtype == DType::F16
                             ? std::ldexp(std::fabs(w32[idx]), -11) + std::ldexp(1.0, -25)
                             : block_step(t, idx / 32, block_bytes) * (1.0 + 1.0 / 32);
        quant_err += std::fabs(x[i]) * e;
        abs_sum += std::fabs(x[i]) * std::max(std::fabs(w32[idx]), std::fabs(decoded[idx]));
      }
      const double bound = quant_err + 2.0 * (k + 8) * std::ldexp(1.0, -24) * abs_sum;
      ASSERT_LE(std::fabs(static_cast<double>(got[r]) - want[r]), bound) << "row " << r;
    }
    ++checked;
  }
  EXPECT_GT(checked, 30);
}

}  // namespace
}  // namespace llmopt::kernels
