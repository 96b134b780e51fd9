#include "apps/llmopt/cmd_onnx.h"

#include "apps/llmopt/model_io.h"
#include "core/error.h"
#include "core/log.h"
#include "model/save.h"

namespace llmopt::cli {
namespace {

struct OnnxCliOptions {
  int64_t opset = 17;
  std::string variant = "kv";
  bool optimize = false;
  bool dequantize = false;
  int64_t external_data = int64_t{2000} * 1000 * 1000;
  std::string dtype;  // --dtype, the same as convert's --type
};
OnnxCliOptions& onnx_cli() {
  static OnnxCliOptions o;
  return o;
}

}  // namespace

void add_onnx_convert_options(CLI::App* cmd) {
  auto& o = onnx_cli();
  cmd->add_option("--opset", o.opset, "--to onnx: ONNX opset, 14..21 (libonnx's C++ checker verifies up to 17)")
      ->capture_default_str();
  cmd->add_option("--onnx-variant", o.variant,
                  "--to onnx: kv (past/present key-values), nocache (scoring), both (model.onnx + model_nocache.onnx)")
      ->capture_default_str();
  cmd->add_option("--dtype", o.dtype, "--to onnx: f32 | f16, the same as --type");
  cmd->add_flag("--optimize", o.optimize, "--to onnx: ONNX Runtime's fused contrib ops (GroupQueryAttention, RotaryEmbedding, "
                "SkipSimplifiedLayerNormalization; f32) and genai_config.json for onnxruntime-genai");
  cmd->add_flag("--onnx-dequantize", o.dequantize,
                "--to onnx: write packed projections without an exact ONNX mapping (q5_*, q2_k, q3_k, q6_k, ...) "
                "dequantized, with a warning per layer (default: refuse them, exit 2)");
  cmd->add_option("--external-data", o.external_data,
                  "--to onnx: weights above this many bytes go to model.onnx.data (0 = always)")
      ->capture_default_str();
}

void convert_to_onnx(const std::string& model, const std::string& tokenizer, const std::string& type_option,
                     const std::string& out) {
  const auto& c = onnx_cli();
  LLMOPT_CHECK_INPUT(c.dtype.empty() || type_option == "f32" || type_option == c.dtype,
                     "[convert] --dtype {} and --type {} disagree: give one of them", c.dtype, type_option);
  const std::string type = c.dtype.empty() ? type_option : c.dtype;
  LLMOPT_CHECK_INPUT(type == "f32" || type == "f16",
                     "[convert] --to onnx writes --type f32 or f16, not '{}' (quantized weights come from the "
                     "model as stored: quantize first)",
                     type);
  io::OnnxExportOptions o;
  o.opset = c.opset;
  o.dtype = parse_float_type(type);
  o.external_data_threshold = c.external_data;
  o.producer_version = LLMOPT_VERSION;
  o.optimize = c.optimize;
  o.require_packed = !c.dequantize;
  const model::OnnxVariants variants = model::parse_onnx_variants(c.variant);
  auto lm = load_for_inference(model, tokenizer, /*need_tokenizer=*/false);
  const auto r = model::save_onnx(*lm.model, lm.tokenizer.get(), lm.tokenizer_path, o, variants, out);
  log::info("[convert] wrote {} ({})", out, r.check_note);
}

}  // namespace llmopt::cli
