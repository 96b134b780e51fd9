// Raw views of a Llama-family model's weights for the torch-free CPU paths: the fused
// single-token decode step (shared by the torch engine's LlamaModel and by CpuLlama) and
// CpuLlama's prefill. Nothing here owns memory.
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/model_config.h"
#include "kernels/intn.h"
#include "kernels/nf4.h"

namespace llmopt::infer {

// One projection y = W·x + bias with W [n, k] row-major in a kernels::gemv storage type, or
// (repacked) Q4_0/Q4_K rows in kernels/repack.h's 8-row interleaved form: the int8-activation
// decode GEMV reads that form directly; every other path unpacks the rows it needs
// (gemv_rows_f32, the prefill GEMMs) into ggml blocks first.
// Int-N / NF4 projections (infer/packed_layers.h) are held as stored: `intn` or `nf4` points to
// the view (decode: kernels/gemv_intn.h; prefill: dequantized tiles into a GEMM), `w` to the
// codes and `type` is U8 (no kernel reads it as rows).
struct Matrix {
  const void* w = nullptr;
  DType type = DType::F32;
  const float* bias = nullptr;  // [n] or null
  int64_t n = 0, k = 0;
  bool repacked = false;
  const kernels::IntNMatrix* intn = nullptr;
  const kernels::NF4Matrix* nf4 = nullptr;
  bool packed_layer() const { return intn != nullptr || nf4 != nullptr; }
};

// y[r] = row r of m · x (+ bias) for r in [r0, r1), f32 activations (kernels::gemv_rows; repacked
// rows are unpacked into a per-thread buffer first, so the result is the same). On the calling
// thread; each row's result does not depend on r0/r1.
void gemv_rows_f32(const Matrix& m, const float* x, float* y, int64_t r0, int64_t r1);

struct LayerWeights {
  // Indexed as io::arch::kLayerLinears lists the projections.
  enum { Q, K, V, O, Gate, Up, Down };
  std::array<Matrix, 7> m;
  const float* ln1 = nullptr;  // input_layernorm [dim]
  const float* ln2 = nullptr;  // post_attention_layernorm [dim]
};

struct Weights {
  ModelConfig cfg;
  const float* embed = nullptr;       // [vocab, dim] f32
  const float* final_norm = nullptr;  // [dim]
  const float* inv_freq = nullptr;    // [head_dim / 2], rope_inv_freq(cfg)
  Matrix head;                        // lm_head (the embedding when tied)
  std::vector<LayerWeights> layers;
  // Projections whose type has an integer-dot kernel (kernels::act_q8_supports: Q8_0, Q4_0, Q4_K,
  // Q6_K) take their input quantized to int8 blocks of 32 (kernels/gemm_quant.h), as llama.cpp
  // does: faster, and within q8 rounding of the f32-activation product. Off: exact f32 inputs.
  bool int8_activations = false;
};

// Per-layer key/value cache: k[l], v[l] each [n_kv_heads, capacity, head_dim] f32.
struct KvSlots {
  std::vector<float*> k, v;
  int64_t capacity = 0;
};

// RoPE inverse frequencies [head_dim / 2], with Llama-3.1 frequency-dependent scaling when the
// config asks for it (HF's _compute_llama3_parameters).
std::vector<float> rope_inv_freq(const ModelConfig& c);

// HF rotate-half RoPE on one head of hd values: v*cos + rotate_half(v)*sin, with cos/sin [hd]
// holding each half's angles twice.
inline void rope_rotate_half(float* v, const float* cos, const float* sin, int64_t hd) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = v[i], b = v[i + h];
    v[i] = a * cos[i] + (-b) * sin[i];
    v[i + h] = b * cos[i] + a * sin[i];
  }
}

// cos/sin [hd] of position `pos` for rope_rotate_half: angle pos·inv_freq[i] (a float product, as
// the torch engine computes it) for each half.
inline void rope_angles(const float* inv_freq, int64_t pos, int64_t hd, float* cos, float* sin) {
  const int64_t h = hd / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float a = static_cast<float>(pos) * inv_freq[i];
    cos[i] = cos[i + h] = std::cos(a);
    sin[i] = sin[i + h] = std::sin(a);
  }
}

// One token at position `pos` (the cache holds positions 0..pos-1 and gets this one): writes
// logits[vocab]. One OpenMP region of llmopt::threads() threads; projections are split into the
// row slabs of kernels::gemv (kernels::gemv_act_q8_rows with w.int8_activations), so the result is
// bit-identical for every thread count.
void decode_step(const Weights& w, const KvSlots& kv, int64_t pos, int64_t token, float* logits);

}  // namespace llmopt::infer
