// Writing a model (and its tokenizer) in one of the supported formats: shared by `convert`,
// `synth` and the pipeline's export stage.
#pragma once
#include <string>

#include "core/dtype.h"
#include "io/onnx_graph.h"
#include "model/llama.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::model {

enum class ExportFormat { Hf, Gguf, Llama2c, Onnx };
ExportFormat parse_export_format(const std::string& name);  // "hf" | "gguf" | "llama2c" | "onnx"
DType parse_float_type(const std::string& name);           // "f32" | "f16" | "bf16"

// Writes `m` to `out`: a directory for Hf (config.json, model.safetensors, tokenizer.json — the
// original file copied when tokenizer_file is a tokenizer.json, otherwise exported), a file for
// Gguf (tokenizer embedded as tokenizer.ggml.*) and Llama2c (legacy fp32 .bin, plus
// tokenizer.bin in the same directory). Every file is written atomically. `tk` may be null (no
// tokenizer is written then; Gguf requires one). Onnx writes a directory like save_onnx with
// default options (opset 17, KV-cache variant) at `type` (f32 or f16).
// `weights`: AsStored keeps packed projections as they are where the format can hold them (GGUF
// writes their blocks unchanged); Dense writes every weight at `type` (what `convert --type` asks).
void save_model(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file, ExportFormat fmt,
                DType type, const std::string& out, CheckpointWeights weights = CheckpointWeights::AsStored);

// ONNX export (src/model/save_onnx.cpp): a directory with model.onnx (+ model.onnx.data when the
// weights exceed the external-data threshold), config.json and tokenizer.json next to it, as
// optimum lays it out. `variant` "kv" writes model.onnx with past/present key-values, "nocache"
// writes model.onnx without, "both" writes model.onnx (kv) and model_nocache.onnx. Projections
// whose kind has a registered ONNX mapping (io::register_onnx_linear_kind) keep their storage;
// others are written dequantized (warning) or refused when o.require_packed.
struct OnnxSaveResult {
  std::vector<std::string> files;
  std::string check_note;
};
enum class OnnxVariants { Kv, NoCache, Both };
OnnxVariants parse_onnx_variants(const std::string& name);  // "kv" | "nocache" | "both"
OnnxSaveResult save_onnx(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file,
                         const io::OnnxExportOptions& o, OnnxVariants variants, const std::string& out_dir);
// Writes tokenizer.json into `dir`: the original file copied when tokenizer_file is a
// tokenizer.json, otherwise exported from the vocabulary.
void write_hf_tokenizer(const tok::Tokenizer& tk, const std::string& tokenizer_file, const std::string& dir);

}  // namespace llmopt::model
