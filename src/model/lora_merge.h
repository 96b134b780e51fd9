// Merging LoRA adapters into a quantized base, verified: every adapted projection becomes its
// merged weight W' = dequant(W) + s·B·A (DoRA: rows rescaled to m, LoraLinear::dense_weight())
// re-quantized into the base's own format (ggml blocks, llmopt int-N, NF4 with its double
// quantization), either
//   - rtn:  round to nearest, what PEFT's merge_and_unload does for a 4-bit base (peft#2321: the
//           drift is called unavoidable), or
//   - gptq: GPTQ (model/gptq.h) on the inputs of calibration windows, layer by layer
//           (model/calibration.h), so the rounding error of W' is compensated where the inputs
//           put weight on it.
// Dense bases merge exactly (W + s·B·A in float32) either way. The merged model's drift is
// measured against the unmerged adapter model (merge_kld).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "model/gptq.h"
#include "model/llama.h"
#include "model/lora_linear.h"

namespace llmopt::model {

struct LoraMergeOptions {
  std::string method = "rtn";  // rtn | gptq
  torch::Tensor calibration;   // gptq: [samples, seq_len] int64 token windows
  GptqOptions gptq;            // damp, block, act_order (propagate is always on)
  int64_t batch = 8;           // calibration windows per forward
};

struct LoraMergeResult {
  int64_t merged = 0;       // LoRA layers replaced by their merged projection
  int64_t requantized = 0;  // of them, re-quantized into a packed / int-N / NF4 base format
  int64_t gptq = 0;         // of those, by GPTQ
};

// A GPTQ column quantizer into NF4 blocks of 64 (kernels/nf4.h) for a [out, in] weight; with
// double quantization the absmax code grid (offset, one scale per 256 absmax values) is fixed up
// front from `reference` (the weight before GPTQ), then each block's absmax, fitted from its
// error-compensated values, is rounded onto it.
std::unique_ptr<ColumnQuantizer> make_nf4_column_quantizer(const torch::Tensor& reference, bool double_quant);

// Re-quantizes the merged weight of `lora` into its base's format by round to nearest (a dense
// base: W + s·B·A exactly).
std::shared_ptr<LinearLayer> merge_rtn(const LoraLinear& lora);

// Replaces every LoRA layer of `m` by its merged projection (see the file comment).
// InputError for gptq without calibration windows or an unknown method.
LoraMergeResult merge_lora_requantized(LlamaModel& m, const LoraMergeOptions& o);

// Mean KL(P_a || P_b) per token (nats) of two models on `tokens` [n, t] (float64 softmax).
double model_kld(LlamaModel& a, LlamaModel& b, const torch::Tensor& tokens, int64_t batch = 8);

}  // namespace llmopt::model
