// `export`: writes the current model (and its tokenizer) into artifacts/ as Hugging Face
// safetensors directories, GGUF files, llama2.c checkpoints and/or ONNX directories, at f32, f16
// or bf16 (ONNX: f32/f16, docs/onnx.md); or only its adapter (from a finetune stage) as a
// llama.cpp GGUF LoRA adapter (gguf_lora) or a PEFT adapter directory (peft).
// Quantized export types plug in here when the quantization stages land.
#pragma once
#include <string>
#include <vector>

#include "io/onnx_graph.h"
#include "stages/options.h"
#include "stages/stage.h"

namespace llmopt::stages {

struct ExportOptions {
  std::vector<std::string> formats = {"gguf", "hf"};
  std::string dtype = "f32";
  std::string basename = "model";
  bool verify = true;
  double verify_max_kld = -1;   // < 0: by dtype (f32 1e-5, f16 1e-3, bf16 1e-2)
  double verify_min_top1 = -1;  // < 0: by dtype (f32 0.99, f16 0.9, bf16 0.8)
  int64_t verify_sequences = 4;
  int64_t verify_tokens = 64;
  int64_t opset = 17;
  std::string onnx_variant = "kv";
  bool onnx_dequantize = false;
  bool optimize = false;
  int64_t external_data = int64_t{2000} * 1000 * 1000;

  static void describe(Schema<ExportOptions>& s) {
    s.field("formats", &ExportOptions::formats,
            "Formats to write: hf (directory), gguf (file), llama2c (.bin + tokenizer .bin), onnx "
            "(directory: model.onnx, config.json, tokenizer.json) hold the model (LoRA merged in); gguf_lora "
            "(NAME-lora.gguf, llama.cpp's --lora; dtype f32 or f16) and peft (NAME-peft/: adapter_config.json, "
            "adapter_model.safetensors; LoRA or prompt/prefix/P-tuning) hold only the adapter of an earlier "
            "finetune stage")
        .choices({"hf", "gguf", "llama2c", "onnx", "gguf_lora", "peft"});
    s.field("dtype", &ExportOptions::dtype, "Tensor storage type of the exported weights")
        .choices({"f32", "f16", "bf16"});
    s.field("basename", &ExportOptions::basename,
            "File name stem inside artifacts/: NAME.gguf, NAME-hf/, NAME.bin, NAME-onnx/, NAME-lora.gguf, "
            "NAME-peft/");
    s.field("verify", &ExportOptions::verify,
            "Load every written artifact back and replay it against the in-memory model; the "
            "stage fails when it disagrees beyond verify_max_kld / verify_min_top1");
    s.field("verify_max_kld", &ExportOptions::verify_max_kld,
            "Largest mean KL(model || artifact) per token accepted; < 0 = by dtype: f32 1e-5, "
            "f16 1e-3, bf16 1e-2");
    s.field("verify_min_top1", &ExportOptions::verify_min_top1,
            "Smallest top-1 agreement accepted; < 0 = by dtype: f32 0.99, f16 0.9, bf16 0.8");
    s.field("verify_sequences", &ExportOptions::verify_sequences,
            "Sequences replayed (from data.eval when set, else seeded random tokens)")
        .range(1, 1024);
    s.field("verify_tokens", &ExportOptions::verify_tokens, "Tokens per replayed sequence").range(2, 4096);
    s.field("opset", &ExportOptions::opset,
            "onnx: ai.onnx opset of the graph (libonnx's C++ checker verifies up to 17; 18-21 are checked by "
            "the peer tests)")
        .range(14, 21);
    s.field("onnx_dequantize", &ExportOptions::onnx_dequantize,
            "onnx: write packed projections that have no exact ONNX mapping (q5_*, q2_k, q3_k, q6_k, ...) "
            "dequantized, with a warning per layer; false refuses them (exit 2) naming the layer");
    s.field("onnx_variant", &ExportOptions::onnx_variant,
            "onnx: kv (past/present key-values, model.onnx), nocache (scoring graph, model.onnx) or both "
            "(model.onnx + model_nocache.onnx)")
        .choices({"kv", "nocache", "both"});
    s.field("optimize", &ExportOptions::optimize,
            "onnx: ONNX Runtime's fused contrib ops (GroupQueryAttention, RotaryEmbedding, "
            "SkipSimplifiedLayerNormalization, MatMulNBits for 4-bit kinds; f32 only) plus genai_config.json for "
            "onnxruntime-genai");
    s.field("external_data", &ExportOptions::external_data,
            "onnx: weights above this many bytes go to model.onnx.data next to model.onnx (0 = always)")
        .range(0, int64_t{1} << 50);
  }
};

class ExportStage : public Stage {
 public:
  using Options = ExportOptions;
  static constexpr const char* kType = "export";
  static constexpr const char* kDoc =
      "Write the model to artifacts/ as hf, gguf, llama2c and/or onnx at f32/f16/bf16, or its adapter as "
      "gguf_lora / peft";

  explicit ExportStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }

 private:
  io::OnnxExportOptions onnx_options() const;
  // Writes the model's adapter as `format_name` (gguf_lora | peft) to `out` and, with verify,
  // replays a copy of the base with the written adapter loaded back against the model.
  void write_adapter(ModelState& state, const std::string& format_name, const std::string& out,
                     const std::vector<std::vector<int64_t>>& replay, StageResult& result) const;
  Options o_;
};

}  // namespace llmopt::stages
