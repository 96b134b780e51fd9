#include "model/save.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/gguf_checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "model/loader.h"

namespace llmopt::model {
namespace fs = std::filesystem;

ExportFormat parse_export_format(const std::string& name) {
  if (name == "hf") return ExportFormat::Hf;
  if (name == "gguf") return ExportFormat::Gguf;
  if (name == "llama2c") return ExportFormat::Llama2c;
  throw_input("[export] unknown format '{}' (valid: hf, gguf, llama2c)", name);
}

DType parse_float_type(const std::string& name) {
  if (name == "f32" || name == "F32") return DType::F32;
  if (name == "f16" || name == "F16") return DType::F16;
  if (name == "bf16" || name == "BF16") return DType::BF16;
  throw_input("[export] unknown --type '{}' (valid: f32, f16, bf16)", name);
}

void save_model(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file, ExportFormat fmt,
                DType type, const std::string& out, CheckpointWeights weights) {
  // Projections keep their storage where the format can hold it (GGUF writes packed ggml blocks
  // as they are); HF and llama2.c convert to their float types.
  io::Checkpoint ck = model_to_checkpoint(m, weights);
  switch (fmt) {
    case ExportFormat::Hf: {
      fs::create_directories(out);
      io::write_hf(ck, out, type);
      if (tk) {
        const fs::path dst = fs::path(out) / "tokenizer.json";
        if (!tokenizer_file.empty() && fs::path(tokenizer_file).filename() == "tokenizer.json") {
          std::ifstream in(tokenizer_file, std::ios::binary);
          std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
          tok::write_file_atomic(dst.string(), bytes);
        } else {
          tok::write_file_atomic(dst.string(), tok::export_hf_tokenizer_json(tk->vocab()));
        }
      }
      break;
    }
    case ExportFormat::Gguf: {
      LLMOPT_CHECK_INPUT(tk != nullptr, "[export] GGUF export needs a tokenizer (give --tokenizer)");
      io::write_gguf(out, ck, type, tok::export_gguf_kvs(tk->vocab()));
      break;
    }
    case ExportFormat::Llama2c: {
      // llama2.c holds fp32 (legacy) or int8 groups (v2, export.py's version 2): q8_0 writes v2 with
      // ggml's block of 32 values per scale.
      LLMOPT_CHECK_INPUT(type == DType::F32 || type == DType::Q8_0,
                         "[export] llama2c export is f32 or q8_0 (v2 int8, groups of 32), got {}", dtype_name(type));
      if (type == DType::Q8_0) {
        io::write_llama2c_v2(out, ck, 32);
      } else {
        io::write_llama2c_legacy(out, ck);
      }
      if (tk) {
        const std::string tok_path = (fs::path(out).parent_path() / "tokenizer.bin").string();
        tok::write_file_atomic(tok_path, tok::export_llama2c_tokenizer(tk->vocab()));
      }
      break;
    }
  }
}

}  // namespace llmopt::model
