// The recipe's `data:` section, which stages read through StageContext: the evaluation text and
// the calibration sample (used by quantization and pruning stages).
#pragma once
#include <cstdint>
#include <string>

#include "stages/options.h"

namespace llmopt::stages {

struct EvalDataOptions {
  std::string path;
  int64_t ctx = 256;
  std::string protocol = "llamacpp";
  int64_t stride = 0;
  int64_t max_chunks = 0;
  int64_t offset = 0;
  int64_t max_bytes = 0;

  static void describe(Schema<EvalDataOptions>& s) {
    s.field("path", &EvalDataOptions::path, "Text file for perplexity and KL divergence")
        .existing_path();
    s.field("ctx", &EvalDataOptions::ctx, "Context length of each scored window, in tokens")
        .range(4, 1 << 20);
    s.field("protocol", &EvalDataOptions::protocol,
            "Perplexity protocol: llamacpp (llama-perplexity), windows, sliding")
        .choices({"llamacpp", "windows", "sliding"});
    s.field("stride", &EvalDataOptions::stride, "Sliding protocol: tokens between windows (0 = ctx/2)")
        .range(0, 1 << 20);
    s.field("max_chunks", &EvalDataOptions::max_chunks, "Evaluate at most this many chunks (0 = all)")
        .range(0, 1e9);
    s.field("offset", &EvalDataOptions::offset, "First byte of the file evaluated").range(0, 1e15);
    s.field("max_bytes", &EvalDataOptions::max_bytes, "Bytes evaluated from offset (0 = to the end)").range(0, 1e15);
  }
};

struct CalibrationDataOptions {
  std::string path;
  int64_t samples = 128;
  int64_t seq_len = 256;
  int64_t seed = 0;
  int64_t offset = 0;
  int64_t max_bytes = 0;
  std::string format = "auto";
  std::string field = "text";

  static void describe(Schema<CalibrationDataOptions>& s) {
    s.field("path", &CalibrationDataOptions::path, "Text file to draw calibration samples from")
        .existing_path();
    s.field("samples", &CalibrationDataOptions::samples, "Number of calibration sequences")
        .range(1, 1e7);
    s.field("seq_len", &CalibrationDataOptions::seq_len, "Tokens per calibration sequence")
        .range(2, 1 << 20);
    s.field("seed", &CalibrationDataOptions::seed, "Which non-overlapping windows of the text are drawn")
        .range(0, 1e15);
    s.field("offset", &CalibrationDataOptions::offset, "First byte of the file used").range(0, 1e15);
    s.field("max_bytes", &CalibrationDataOptions::max_bytes, "Bytes used from offset (0 = to the end)")
        .range(0, 1e15);
    s.field("format", &CalibrationDataOptions::format, "auto (by extension), text, or jsonl (one object a line)")
        .choices({"auto", "text", "jsonl"});
    s.field("field", &CalibrationDataOptions::field, "jsonl: the field holding the text");
  }
};

struct DataOptions {
  EvalDataOptions eval;
  CalibrationDataOptions calibration;

  static void describe(Schema<DataOptions>& s) {
    s.field("eval", &DataOptions::eval, "Evaluation text (perplexity, KL divergence)");
    s.field("calibration", &DataOptions::calibration, "Calibration sample for quantization/pruning");
  }
};

}  // namespace llmopt::stages
