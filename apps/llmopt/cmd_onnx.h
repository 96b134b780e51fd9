// `llmopt convert MODEL OUT --to onnx`: the ONNX options of convert and the conversion itself
// (model::save_onnx; docs/onnx.md).
#pragma once
#include <CLI/CLI.hpp>

#include <string>

namespace llmopt::cli {

// Adds --opset, --onnx-variant, --optimize and --external-data to `convert`.
void add_onnx_convert_options(CLI::App* cmd);
// Writes MODEL as an ONNX directory OUT (model.onnx, config.json, tokenizer.json) at `type`
// ("f32" | "f16"), with the options add_onnx_convert_options() parsed.
void convert_to_onnx(const std::string& model, const std::string& tokenizer, const std::string& type,
                     const std::string& out);

}  // namespace llmopt::cli
