#include "model/loader.h"

#include <malloc.h>

#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "io/checkpoint_tensors.h"
#include "io/gptq.h"
#include "infer/packed_layers.h"
#include "io/mapped_file.h"
#include "kernels/gemv.h"
#include "model/intn_linear.h"
#include "model/packed_linear.h"

namespace llmopt::model {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::shared_ptr<LlamaModel> model_from_checkpoint(const io::Checkpoint& ckpt) {
  torch::NoGradGuard no_grad;
  auto m = std::make_shared<LlamaModel>(ckpt.config);
  // Projections stored in ggml blocks stay packed (model::PackedLinear): a 4-bit file is a 4-bit
  // model in memory too, and exports write its blocks back unchanged.
  std::unordered_set<std::string> packed;
  for (const auto& li : io::arch::linears(ckpt.config)) {
    if (io::has_gptq_module(ckpt, li.path)) {
      // GPTQ's layout (io/gptq.h): the codes, scales and zero points become an int-N layer as
      // they are (no dense round trip).
      torch::Tensor bias;
      if (li.bias) {
        const io::TensorView& b = ckpt.get(li.path + ".bias");
        std::vector<float> values = io::tensor_to_f32(b);
        bias = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat32).clone();
        packed.insert(b.name);
      }
      m->set_linear(li.path, std::make_shared<IntNLinear>(io::load_gptq_module(ckpt, li.path, li.out, li.in), bias));
      for (const auto& n : io::gptq_tensor_names(ckpt, li.path)) packed.insert(n);
      continue;
    }
    const io::TensorView* w = ckpt.find(li.path + ".weight");
    if (w == nullptr || !dtype_is_block_quantized(w->dtype) || !kernels::gemv_supports(w->dtype)) continue;
    LLMOPT_CHECK_INPUT(w->shape == std::vector<int64_t>({li.out, li.in}),
                       "[model] {}: tensor '{}' has shape {}, config expects [{}, {}]", ckpt.path, w->name,
                       shape_str(w->shape), li.out, li.in);
    torch::Tensor bias;
    if (li.bias) {
      const io::TensorView& b = ckpt.get(li.path + ".bias");
      std::vector<float> values = io::tensor_to_f32(b);
      bias = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat32).clone();
      packed.insert(b.name);
    }
    m->set_linear(li.path, std::make_shared<PackedLinear>(w->dtype, li.out, li.in,
                                                          std::vector<uint8_t>(w->data, w->data + w->nbytes), bias));
    packed.insert(w->name);
  }
  std::unordered_map<std::string, torch::Tensor> params;
  for (auto& p : m->named_parameters()) params.emplace(p.key(), p.value());
  size_t assigned = 0;
  for (const auto& t : ckpt.tensors) {
    if (packed.count(t.name)) continue;
    auto it = params.find(t.name);
    if (it == params.end()) {
      log::debug("[model] {}: ignoring tensor '{}'", ckpt.path, t.name);
      continue;
    }
    std::vector<int64_t> want = it->second.sizes().vec();
    LLMOPT_CHECK_INPUT(want == t.shape, "[model] {}: tensor '{}' has shape {}, config expects {}", ckpt.path, t.name,
                       shape_str(t.shape), shape_str(want));
    // io::tensor_to_f32 converts F16/BF16 and dequantizes block formats (src/kernels).
    std::vector<float> values = io::tensor_to_f32(t);
    it->second.copy_(torch::from_blob(values.data(), it->second.sizes(), torch::kFloat32));
    // Copied: the file's pages need not stay resident beside the model's own (peak RSS of a
    // load is then about the model, not model + file).
    io::release_mapped_pages(t.data, static_cast<size_t>(t.nbytes));
    ++assigned;
    params.erase(it);
  }
  if (!params.empty()) {
    std::string missing;
    for (auto& [k, v] : params) missing += (missing.empty() ? "" : ", ") + k;
    throw_input("[model] {}: missing tensors: {}", ckpt.path, missing);
  }
  return m;
}

LoadedModel load_model(const std::string& path, const ModelLoadOptions& opts) {
  io::LoadOptions lo;
  lo.tokenizer_path = opts.tokenizer_path;
  lo.check_finite = opts.check_finite;
  LoadedModel out;
  {
    io::Checkpoint ckpt = io::load_checkpoint(path, lo);
    out.model = model_from_checkpoint(ckpt);
    out.format = ckpt.format;
    out.path = path;
    out.file_bytes = ckpt.total_bytes();
    out.tokenizer_path = ckpt.tokenizer.path;
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : ckpt.tensors)
      tensors.push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape},
                         {"bytes", t.nbytes}});
    out.source_info = {{"format", std::string(io::model_format_name(ckpt.format))},
                       {"tensors", tensors},
                       {"metadata", ckpt.metadata}};
    if (ckpt.tokenizer.kind != io::TokenizerSource::Kind::None) {
      out.tokenizer = tok::load_tokenizer(
          ckpt.tokenizer, static_cast<int32_t>(ckpt.config.vocab_size));
    }
  }  // the checkpoint (and its file mappings) is released here
  // Conversion temporaries (f16/bf16 -> f32, permutations) are freed by now but stay in malloc's
  // heap; hand those pages back so that they do not count in the model's resident memory.
  malloc_trim(0);
  return out;
}

io::Checkpoint model_to_checkpoint(LlamaModel& model, CheckpointWeights weights) {
  torch::NoGradGuard no_grad;
  io::Checkpoint ck;
  ck.config = model.config();
  auto add_view = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, const uint8_t* data,
                      int64_t nbytes, std::shared_ptr<const void> owner) {
    io::TensorView v;
    v.name = name;
    v.dtype = dtype;
    v.shape = std::move(shape);
    v.data = data;
    v.nbytes = nbytes;
    ck.tensors.push_back(v);
    ck.storage.push_back(std::move(owner));
  };
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    auto holder = std::make_shared<torch::Tensor>(t.detach().to(torch::kCPU, torch::kFloat32).contiguous());
    add_view(name, DType::F32, holder->sizes().vec(), static_cast<const uint8_t*>(holder->data_ptr()),
             holder->numel() * 4, std::static_pointer_cast<const void>(holder));
  };
  std::unordered_map<std::string, torch::Tensor> params;
  for (auto& p : model.named_parameters()) params.emplace(p.key(), p.value());
  std::unordered_map<std::string, std::shared_ptr<LinearLayer>> linears;
  for (auto& [n, l] : model.linear_layers()) linears.emplace(n, l);
  // In the architecture description's order (HF's).
  io::arch::for_each_tensor(model.config(), [&](const io::arch::TensorInfo& t) {
    if (!io::arch::describe(t.role).linear) {
      add(t.hf_name, params.at(t.hf_name));
      return;
    }
    const LinearLayer& l = *linears.at(io::arch::module_path(t.role, t.layer));
    if (t.bias) {
      add(t.hf_name, l.bias());
      return;
    }
    if (weights == CheckpointWeights::Packed && infer::native_stored_kind(l.kind())) {
      const std::string module = io::arch::module_path(t.role, t.layer);
      LayerState st = l.stored_state();
      for (const StoredTensor& s : st.tensors)
        if (s.name != "bias") add_view(module + "#" + s.name, s.dtype, s.shape, s.data, s.nbytes, s.owner);
      ck.metadata[infer::kStoredLayersKey][module] = {{"kind", st.kind}, {"meta", st.meta}};
      return;
    }
    if (weights != CheckpointWeights::Dense) {
      if (auto fw = l.file_weight()) {
        LLMOPT_CHECK_INPUT(fw->shape == t.shape, "[model] {}: stored weight has shape {}, expected {}", t.hf_name,
                           shape_str(fw->shape), shape_str(t.shape));
        add_view(t.hf_name, fw->dtype, fw->shape, fw->data, fw->nbytes, fw->owner);
        return;
      }
    }
    add(t.hf_name, l.dense_weight());
  });
  return ck;
}

}  // namespace llmopt::model
