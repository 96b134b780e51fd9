// `export`: writes the current model (and its tokenizer) into artifacts/ as Hugging Face
// safetensors directories, GGUF files and/or llama2.c checkpoints, at f32, f16 or bf16.
// Quantized export types plug in here when the quantization stages land.
#pragma once
#include <string>
#include <vector>

#include "stages/options.h"
#include "stages/stage.h"

namespace llmopt::stages {

struct ExportOptions {
  std::vector<std::string> formats = {"gguf", "hf"};
  std::string dtype = "f32";
  std::string basename = "model";

  static void describe(Schema<ExportOptions>& s) {
    s.field("formats", &ExportOptions::formats,
            "Formats to write: hf (directory), gguf (file), llama2c (.bin + tokenizer .bin)")
        .choices({"hf", "gguf", "llama2c"});
    s.field("dtype", &ExportOptions::dtype, "Tensor storage type of the exported weights")
        .choices({"f32", "f16", "bf16"});
    s.field("basename", &ExportOptions::basename,
            "File name stem inside artifacts/: NAME.gguf, NAME-hf/, NAME.bin");
  }
};

class ExportStage : public Stage {
 public:
  using Options = ExportOptions;
  static constexpr const char* kType = "export";
  static constexpr const char* kDoc =
      "Write the model to artifacts/ as hf, gguf and/or llama2c at f32/f16/bf16";

  explicit ExportStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  void validate(const ModelState& state) const override;
  StageResult run(ModelState& state, StageContext& ctx) override;
  nlohmann::json options_json() const override { return schema_of<Options>().json(o_); }

 private:
  Options o_;
};

}  // namespace llmopt::stages
