// Optimized ONNX decoder (`optimize: true`): the graph ONNX Runtime's fused contrib ops make, as
// onnxruntime-genai's model builder emits them for the CPU, built with the same OnnxGraphBuilder
// and the same projections (emit_linear: dense MatMul or a packed kind's MatMulNBits ...) as the
// standard-op graph of io/onnx_graph.h, with the same input/output names and dynamic axes:
//
//   first norm         SimplifiedLayerNormalization (ai.onnx domain as ORT registers it; stash_type 1)
//   residual + norm    com.microsoft.SkipSimplifiedLayerNormalization (output 3 = the residual sum)
//   q/k/v              one packed MatMul [dim, (H+2KV)·hd] + Split when all three are dense
//                      (separate projections otherwise: packed kinds keep their own nodes)
//   RoPE               com.microsoft.RotaryEmbedding on q and k ([b, s, n·hd], interleaved 0 =
//                      HF's rotate-half layout), position_ids from the graph input, cos/sin caches
//                      [max_position_embeddings, hd/2] as initializers computed from the model's
//                      inverse frequencies (Llama-3 scaling folded in)
//   attention          com.microsoft.GroupQueryAttention (num_heads, kv_num_heads, scale 1/√hd,
//                      local_window_size = sliding_window - 1), past/present key/value in BNSH,
//                      seqlens_k = Σ attention_mask - 1 (int32 [b]), total_sequence_length (int32)
//   gate/up            one packed MatMul + Split when both are dense; SiLU as Sigmoid·x
//   tied output head   com.microsoft.FusedMatMul(transB) on the embedding (no transposed copy)
//
// GroupQueryAttention reads the mask only through seqlens_k: a row's keys must be contiguous from
// position 0 (no left padding), as onnxruntime-genai feeds it. Float32 only (ORT 1.19's CPU
// GroupQueryAttention kernel is float32).
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "io/onnx_graph.h"

namespace llmopt::io {

// Checks what the optimized graph needs beyond validate_onnx_options (InputError naming the
// option and the way out).
void validate_onnx_optimized_options(const OnnxExportOptions& o, const ModelConfig& cfg);

// Builds the optimized decoder graph into `m` (ir_version and the ai.onnx opset already set).
void build_onnx_optimized_decoder(const OnnxModelSource& src, const OnnxExportOptions& o, onnx::ModelProto& m);

// Registers, once, the schemas of ORT's contrib ops that live in the ai.onnx domain
// (SimplifiedLayerNormalization) in libonnx's registry, so that the ONNX checker verifies nodes
// of the optimized graph instead of rejecting an unknown ai.onnx op. com.microsoft nodes are not
// verified by the checker (a domain it does not know).
void register_ort_onnx_domain_schemas();

// onnxruntime-genai's genai_config.json for the optimized KV graph `model_file` (file name
// relative to the config): model type, context length, head sizes, input/output names,
// bos/eos/pad ids, greedy search defaults.
nlohmann::json onnx_genai_config(const ModelConfig& cfg, const std::string& model_file);

}  // namespace llmopt::io
