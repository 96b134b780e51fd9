// `llmopt quantize MODEL OUT --method rtn --format q4_0 [--skip REGEX]... [--fallback f16]
// [--to gguf|hf]`: packs the projections (model/quantize.h) and writes OUT. GGUF keeps the
// packed blocks as they are (llama.cpp reads them); HF gets the dequantized weights. The written
// file is loaded back and replayed as the export stage does.
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "apps/llmopt/commands.h"
#include "apps/llmopt/model_io.h"
#include "core/error.h"
#include "core/log.h"
#include "model/quantize.h"
#include "model/verify.h"

namespace llmopt::cli {

void register_quantize_command(CLI::App& app, GlobalOptions& g) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a model's projections (rtn, gptq, awq into ggml blocks) and write it");
  static std::string model, out, tokenizer, method = "rtn", format = "q8_0", fallback = "f16", to;
  static std::vector<std::string> skip = {"lm_head"};
  static std::string calibration, imatrix;
  static int64_t cal_samples = 128, cal_seq_len = 256, cal_offset = 0, cal_bytes = 0, cal_seed = 0;
  static double damp = 0.01;
  static bool act_order = false, asym = false, awq_clip = true;
  static int64_t group_size = 128;
  static double outlier_threshold = 6.0, smooth_alpha = 0.5;
  static std::string act_range = "minmax";
  static double target_bpw = 0;
  static std::vector<std::string> candidates;
  cmd->add_option("MODEL", model, "Model path")->required();
  cmd->add_option("OUT", out, "Output path (a .gguf file, or a directory for --to hf)")->required();
  cmd->add_option("--method", method,
                  "rtn (importance-weighted with --calibration) | gptq | awq | awq_gptq (these need --calibration) | "
                  "dynamic | static (W8A8; measured in memory with `llmopt run`, no file format holds them)")
      ->check(CLI::IsMember({"rtn", "gptq", "awq", "awq_gptq", "dynamic", "static"}))
      ->capture_default_str();
  cmd->add_option("--calibration", calibration, "Calibration text (.txt) or jsonl ({\"text\": ...} per line)");
  cmd->add_option("--calibration-samples", cal_samples, "Calibration windows")->capture_default_str();
  cmd->add_option("--calibration-seq-len", cal_seq_len, "Tokens per calibration window")->capture_default_str();
  cmd->add_option("--calibration-offset", cal_offset, "First byte of the calibration file used")->capture_default_str();
  cmd->add_option("--calibration-bytes", cal_bytes, "Bytes of the calibration file used (0 = to the end)")
      ->capture_default_str();
  cmd->add_option("--calibration-seed", cal_seed, "Which windows are drawn")->capture_default_str();
  cmd->add_option("--damp", damp, "GPTQ dampening (fraction of the mean Hessian diagonal)")->capture_default_str();
  cmd->add_flag("--act-order", act_order, "GPTQ: columns by decreasing Hessian diagonal");
  cmd->add_flag("--awq-clip,!--no-awq-clip", awq_clip,
                "--method awq: clip weight groups at the output-error-minimizing threshold (default on)");
  cmd->add_option("--outlier-threshold", outlier_threshold, "W8A8: |x| above which a column is computed in float")
      ->capture_default_str();
  cmd->add_option("--act-range", act_range, "W8A8 static: minmax | percentile | mse")
      ->check(CLI::IsMember({"minmax", "percentile", "mse"}))
      ->capture_default_str();
  cmd->add_option("--smooth-alpha", smooth_alpha, "W8A8: SmoothQuant strength (with --calibration)")
      ->capture_default_str();
  cmd->add_option("--group-size", group_size, "int-N: columns per scale (32, 64, 128; -1 = per output channel)")
      ->capture_default_str();
  cmd->add_option("--target-bpw", target_bpw,
                  "Mixed precision: bits per linear weight to spend; per-projection formats chosen by measured KLD "
                  "(needs --calibration)");
  cmd->add_option("--candidates", candidates, "Mixed precision: formats to choose from (repeatable)");
  cmd->add_flag("--asym", asym, "int-N: asymmetric grid with zero points (default symmetric)");
  cmd->add_option("--format", format, "q8_0 | q6_k | q5_k | q5_1 | q5_0 | q4_k | q4_1 | q4_0 | q3_k | q2_k | f16 | bf16 | int2..int8 (--group-size, --asym) | nf4")
      ->capture_default_str();
  cmd->add_option("--imatrix", imatrix,
                  "llama.cpp importance matrix (llama-imatrix .gguf or legacy .dat): rtn rounds as llama-quantize "
                  "--imatrix does");
  cmd->add_option("--skip", skip, "Regular expression of module paths kept as they are (repeatable)")
      ->capture_default_str();
  cmd->add_option("--fallback", fallback, "Type for rows that are not whole blocks: f16 | bf16 | f32 | q8_0 | error")
      ->capture_default_str();
  cmd->add_option("--to", to, "gguf | hf (default: gguf when OUT ends in .gguf, else hf)");
  cmd->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  cmd->callback([&g] {
    apply_threads(g);
    model::QuantizeSpec spec;
    spec.format = format;
    spec.fallback = fallback;
    spec.skip = skip;
    spec.method = method;
    spec.gptq.damp = damp;
    spec.group_size = group_size;
    spec.sym = !asym;
    spec.target_bpw = target_bpw;
    spec.candidates = candidates;
    spec.gptq.act_order = act_order;
    spec.awq_clip = awq_clip;
    spec.outlier_threshold = outlier_threshold;
    spec.act_range = act_range;
    spec.smooth_alpha = smooth_alpha;
    spec.calibration.where = "--calibration";
    spec.calibration.path = calibration;
    spec.calibration.samples = cal_samples;
    spec.calibration.seq_len = cal_seq_len;
    spec.calibration.offset = cal_offset;
    spec.calibration.max_bytes = cal_bytes;
    spec.calibration.seed = static_cast<uint64_t>(cal_seed);
    spec.imatrix_path = imatrix;
    model::check_quantize_spec(spec);
    LLMOPT_CHECK_INPUT(method != "dynamic" && method != "static",
                       "[quantize] --method {}: no file format holds W8A8 layers (int8 activations are computed at "
                       "run time); measure them in memory with `llmopt run configs/quantize_w8a8.yaml`", method);
    const std::string fmt_name = !to.empty() ? to : (std::filesystem::path(out).extension() == ".gguf" ? "gguf" : "hf");
    // GGUF has ggml block types only: llmopt's int-N / NF4 layers would go out dequantized.
    const bool own_format = format == "nf4" || (format.size() == 4 && format.rfind("int", 0) == 0) ||
                            std::any_of(candidates.begin(), candidates.end(),
                                        [](const std::string& c) { return c.rfind("int", 0) == 0 || c == "nf4"; });
    LLMOPT_CHECK_INPUT(!(own_format && fmt_name == "gguf"),
                       "[quantize] --format {}: GGUF holds ggml block types only (q4_0, q4_k, q8_0 ...); write int-N "
                       "with --to hf (GPTQ layout: 2/4/8 bits, groups that divide every row) or use `llmopt run` with a "
                       "quantize stage to measure it in memory", format);
    auto lm = load_for_inference(model, tokenizer,
                                 /*need_tokenizer=*/fmt_name == "gguf" || model::method_needs_calibration(spec));
    const model::QuantizeReport rep = model::quantize_model(*lm.model, lm.tokenizer.get(), spec);
    // Written under a temporary name beside OUT and renamed only once the file, loaded back,
    // computes what the packed model computes (GGUF holds the same blocks; HF their dequantized
    // f32 values: f32 limits). A failed check leaves nothing behind.
    namespace fs = std::filesystem;
    const fs::path dest(out);
    const fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    LLMOPT_CHECK_INPUT(fs::is_directory(parent), "[quantize] {}: output directory '{}' does not exist", out,
                       parent.string());
    const fs::path tmp = parent / fmt::format(".{}.tmp-{}", dest.filename().string(), ::getpid());
    model::ReplayStats r;
    try {
      save_model(*lm.model, lm.tokenizer.get(), lm.tokenizer_path, fmt_name, DType::F32, tmp.string(),
                 /*keep_packed=*/true);
      const int64_t len = std::min<int64_t>(64, lm.model->config().max_position_embeddings);
      r = model::verify_written_model(*lm.model, tmp.string(),
                                      model::random_sequences(4, len, lm.model->config().vocab_size, 0),
                                      model::replay_limits(DType::F32));
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      throw;
    }
    if (fs::is_directory(tmp)) fs::remove_all(dest);
    fs::rename(tmp, dest);
    log::info("[quantize] verified {}: mean KLD {:.2g}, top-1 {:.4f} vs the packed model", out, r.kld_mean, r.top1);
    log::info("[quantize] {} projections as {}, {} fallback ({}), {} skipped: {:.3f} bits per linear weight; wrote {}",
              rep.quantized, format, rep.fallback, fallback, rep.skipped, rep.linear_bits_per_weight, out);
  });
}

}  // namespace llmopt::cli
