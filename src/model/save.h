// Writing a model (and its tokenizer) in one of the supported formats: shared by `convert`,
// `synth` and the pipeline's export stage.
#pragma once
#include <string>

#include "core/dtype.h"
#include "model/llama.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::model {

enum class ExportFormat { Hf, Gguf, Llama2c };
ExportFormat parse_export_format(const std::string& name);  // "hf" | "gguf" | "llama2c"
DType parse_float_type(const std::string& name);           // "f32" | "f16" | "bf16"

// Writes `m` to `out`: a directory for Hf (config.json, model.safetensors, tokenizer.json — the
// original file copied when tokenizer_file is a tokenizer.json, otherwise exported), a file for
// Gguf (tokenizer embedded as tokenizer.ggml.*) and Llama2c (legacy fp32 .bin, plus
// tokenizer.bin in the same directory). Every file is written atomically. `tk` may be null (no
// tokenizer is written then; Gguf requires one).
// `weights`: AsStored keeps packed projections as they are where the format can hold them (GGUF
// writes their blocks unchanged); Dense writes every weight at `type` (what `convert --type` asks).
void save_model(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file, ExportFormat fmt,
                DType type, const std::string& out, CheckpointWeights weights = CheckpointWeights::AsStored);

}  // namespace llmopt::model
