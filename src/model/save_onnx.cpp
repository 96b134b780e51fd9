// ONNX export of a LlamaModel: hands the model's tensors to the torch-free graph builder
// (io/onnx_graph.h) and lays the directory out as optimum does (model.onnx, config.json,
// tokenizer.json).
#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "infer/weights.h"
#include "io/atomic_file.h"
#include "io/hf_config.h"
#include "io/onnx_optimized.h"
#include "io/onnx_quant.h"
#include "model/save.h"

namespace llmopt::model {
namespace fs = std::filesystem;

namespace {

std::vector<float> to_f32_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const float* p = c.data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

}  // namespace

OnnxVariants parse_onnx_variants(const std::string& name) {
  if (name == "kv") return OnnxVariants::Kv;
  if (name == "nocache") return OnnxVariants::NoCache;
  if (name == "both") return OnnxVariants::Both;
  throw_input("[export] unknown onnx_variant '{}' (valid: kv, nocache, both)", name);
}

OnnxSaveResult save_onnx(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file,
                         const io::OnnxExportOptions& o, OnnxVariants variants, const std::string& out_dir) {
  torch::NoGradGuard no_grad;
  const ModelConfig& cfg = m.config();
  io::validate_onnx_options(o, cfg);
  // Packed projections (ggml blocks, int-N, W8A8) as MatMulNBits / DequantizeLinear /
  // MatMulInteger: io/onnx_quant.h.
  io::register_onnx_quant_kinds();
  // With require_packed, refuse before any file is written.
  std::unordered_map<std::string, std::shared_ptr<LinearLayer>> linears;
  for (auto& [n, l] : m.linear_layers()) {
    linears.emplace(n, l);
    LLMOPT_CHECK_INPUT(!o.require_packed || l->kind() == "dense" || io::onnx_linear_kind_registered(l->kind()),
                       "[export] {}: layer kind '{}' has no ONNX mapping and packed ONNX weights were asked for; "
                       "export dequantized weights instead (onnx_dequantize: true, or --onnx-dequantize), or quantize into a kind "
                       "with one",
                       n, l->kind());
  }
  std::unordered_map<std::string, torch::Tensor> params;
  for (auto& p : m.named_parameters()) params.emplace(p.key(), p.value());

  io::OnnxModelSource src;
  src.config = cfg;
  src.inv_freq = infer::rope_inv_freq(cfg);
  src.tensor = [&](const std::string& name) {
    auto it = params.find(name);
    LLMOPT_CHECK_INPUT(it != params.end(), "[export] the model has no tensor {}", name);
    return to_f32_vector(it->second);
  };
  src.linear = [&](const io::arch::LinearInfo& info) {
    auto it = linears.find(info.path);
    LLMOPT_CHECK_INPUT(it != linears.end(), "[export] the model has no projection {}", info.path);
    const LinearLayer& l = *it->second;
    io::OnnxLinearWeight w;
    w.path = info.path;
    w.out = l.out_features();
    w.in = l.in_features();
    w.kind = l.kind();
    if (w.kind != "dense" && io::onnx_linear_kind_registered(w.kind)) {
      LayerState st = l.stored_state();
      w.meta = st.meta;
      for (auto& t : st.tensors)
        w.stored.push_back(io::OnnxStoredTensor{t.name, t.dtype, t.shape, t.data, t.nbytes, t.owner});
    } else {
      w.dense = to_f32_vector(l.dense_weight());
    }
    const torch::Tensor b = l.bias();
    if (b.defined()) w.bias = to_f32_vector(b);
    return w;
  };

  fs::create_directories(out_dir);
  OnnxSaveResult r;
  auto one = [&](io::OnnxVariant v, const std::string& file) {
    io::OnnxExportOptions ov = o;
    ov.variant = v;
    const io::OnnxExportResult e = io::export_onnx(src, ov, (fs::path(out_dir) / file).string());
    log::info("[export] {}: {} nodes, {} initializers ({:.1f} MB), opset {}, {}; {}", file, e.nodes, e.initializers,
              e.initializer_bytes / 1e6, o.opset, dtype_name(o.dtype), e.check_note);
    r.files.insert(r.files.end(), e.files.begin(), e.files.end());
    if (r.check_note.empty()) r.check_note = e.check_note;
  };
  switch (variants) {
    case OnnxVariants::Kv:
      one(io::OnnxVariant::Kv, "model.onnx");
      break;
    case OnnxVariants::NoCache:
      one(io::OnnxVariant::NoCache, "model.onnx");
      break;
    case OnnxVariants::Both:
      one(io::OnnxVariant::Kv, "model.onnx");
      one(io::OnnxVariant::NoCache, "model_nocache.onnx");
      break;
  }
  if (o.optimize && variants != OnnxVariants::NoCache) {
    // onnxruntime-genai reads its own configuration next to the KV graph.
    const std::string genai_path = (fs::path(out_dir) / "genai_config.json").string();
    io::write_file_atomic(genai_path, io::onnx_genai_config(cfg, "model.onnx").dump(4) + "\n");
    r.files.push_back(genai_path);
  }
  const std::string config_path = (fs::path(out_dir) / "config.json").string();
  io::write_hf_config(config_path, cfg, o.dtype);
  r.files.push_back(config_path);
  if (tk) {
    write_hf_tokenizer(*tk, tokenizer_file, out_dir);
    r.files.push_back((fs::path(out_dir) / "tokenizer.json").string());
  }
  return r;
}

}  // namespace llmopt::model
