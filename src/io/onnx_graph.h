// ONNX export of a Llama-family decoder, built on libonnx's protobuf classes and driven by the
// architecture description (io/architecture.h: roles, shapes, biases, tied output) and ModelConfig
// (GQA, RoPE theta and Llama-3 scaling, RMSNorm eps, sliding window). Torch-free.
//
// Two graph variants, with the input/output names optimum uses:
//   Kv:      input_ids [batch_size, sequence_length] int64, attention_mask [batch_size,
//            total_sequence_length] int64, position_ids [batch_size, sequence_length] int64,
//            past_key_values.N.key/value [batch_size, kv_heads, past_sequence_length, head_dim]
//            -> logits [batch_size, sequence_length, vocab] float32,
//               present.N.key/value [batch_size, kv_heads, total_sequence_length, head_dim]
//   NoCache: input_ids, attention_mask [batch_size, sequence_length], position_ids -> logits.
// Precision: f32, or f16 weights and activations with RMSNorm and softmax computed in float32
// (Cast around them) and float32 logits.
//
// Projections go through one function, OnnxGraphBuilder::emit_linear(), which dispatches on the
// kind of weight it is given: dense float weights become MatMul with the transposed weight as an
// initializer; a packed kind (MatMulNBits, blocked DequantizeLinear, MatMulInteger ...) becomes
// whatever nodes the emitter registered for it with register_onnx_linear_kind() produces.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/model_config.h"
#include "io/architecture.h"

// libonnx's protobuf classes, declared only: ONNX's headers need its compile definitions
// (ONNX_NAMESPACE=onnx, ONNX_ML=1), which only the io layer (and its tests) carry. Code that
// builds nodes includes <onnx/onnx_pb.h> itself.
namespace onnx {
class ModelProto;
class GraphProto;
class NodeProto;
}  // namespace onnx

namespace llmopt::io {

// Supported opset range (ai.onnx domain).
inline constexpr int64_t kOnnxMinOpset = 14;
inline constexpr int64_t kOnnxMaxOpset = 21;
// The newest opset libonnx 1.12's C++ checker and shape inference know.
inline constexpr int64_t kOnnxCheckerMaxOpset = 17;

enum class OnnxVariant { Kv, NoCache };

struct OnnxExportOptions {
  int64_t opset = 17;
  OnnxVariant variant = OnnxVariant::Kv;
  DType dtype = DType::F32;  // F32 or F16 (weights and activations)
  // Packed projections whose kind has no registered ONNX mapping: false writes them dequantized
  // (with a warning); true refuses (InputError, exit 2).
  bool require_packed = false;
  // Model weights above this many bytes (all initializers together) go to an external data file
  // next to the model ("<model file name>.data"); protobuf cannot serialize a message over 2 GB.
  int64_t external_data_threshold = int64_t{2000} * 1000 * 1000;
  std::string producer_version;  // written as the model's producer_version
  // The fused contrib-op graph of io/onnx_optimized.h instead of the standard-op one.
  bool optimize = false;
};

// Checks the options against the supported range (InputError naming the option and the way out).
void validate_onnx_options(const OnnxExportOptions& o, const ModelConfig& cfg);

// One tensor exactly as a layer stores it (model::StoredTensor without torch): name within the
// layer ("qweight", "scales", ...), dtype, row-major shape and bytes (kept alive by `owner`).
struct OnnxStoredTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  std::shared_ptr<const void> owner;
};

// One projection y = x·Wᵀ (+ b), as the exporter receives it. `kind` "dense": `dense` holds W
// [out, in] row-major float32. Any other kind: `stored`/`meta` describe the layer as stored
// (model::LayerState of that kind); `dense` is filled too when no emitter is registered for the
// kind (the dequantized fallback) and may be empty otherwise.
struct OnnxLinearWeight {
  std::string path;  // HF module path: "model.layers.3.self_attn.q_proj", "lm_head"
  int64_t out = 0, in = 0;
  std::string kind = "dense";
  std::vector<float> dense;  // [out, in]
  nlohmann::json meta = nlohmann::json::object();
  std::vector<OnnxStoredTensor> stored;
  std::vector<float> bias;  // [out] or empty
};

// Where the exporter reads the model from (so io needs no torch): the configuration, the
// non-projection float tensors by HF name (embedding, norms) as float32, and the projections.
struct OnnxModelSource {
  ModelConfig config;
  std::vector<float> inv_freq;  // [head_dim/2] RoPE inverse frequencies; empty = theta^(-2i/d), no scaling
  std::function<std::vector<float>(const std::string& hf_name)> tensor;
  std::function<OnnxLinearWeight(const arch::LinearInfo& info)> linear;
};

// What both decoder builders (the plain graph here, the optimized one in io/onnx_optimized.h) read
// from an OnnxModelSource, checked against the architecture description: a float tensor of a given
// shape, a projection (shape and bias as the configuration implies), RoPE's inverse frequencies.
class OnnxSourceReader {
 public:
  explicit OnnxSourceReader(const OnnxModelSource& src);
  std::vector<float> tensor(const std::string& hf_name, const std::vector<int64_t>& shape) const;
  OnnxLinearWeight linear(int64_t layer, arch::Role role) const;  // layer -1: lm_head
  std::vector<float> inv_freq() const;  // the model's, or theta^(-2i/d) without scaling

 private:
  const OnnxModelSource& src_;
  std::map<std::pair<int64_t, int>, arch::LinearInfo> linears_;
};

class OnnxGraphBuilder;
// Emits the nodes computing y = x·Wᵀ for a packed kind: `x` is the name of the input activation
// [batch, seq, in] (builder.act_type()); returns the name of y [batch, seq, out] in the same type.
// The bias is added by the builder afterwards.
using OnnxLinearEmitter =
    std::function<std::string(OnnxGraphBuilder& g, const std::string& x, const OnnxLinearWeight& w)>;
// Registers the emitter of a layer kind ("intn", "q4_0", "w8a8", ...); a later registration of the
// same kind replaces the earlier one.
void register_onnx_linear_kind(const std::string& kind, OnnxLinearEmitter emitter);
bool onnx_linear_kind_registered(const std::string& kind);
std::vector<std::string> onnx_linear_kinds();

// Graph construction helpers, shared by the decoder builder and the packed-kind emitters.
class OnnxGraphBuilder {
 public:
  OnnxGraphBuilder(onnx::ModelProto& model, const OnnxExportOptions& o);

  const OnnxExportOptions& options() const { return o_; }
  int64_t opset() const { return o_.opset; }
  // Element type of activations and float weights: FLOAT or FLOAT16.
  int32_t act_type() const { return act_; }
  onnx::GraphProto& graph() { return *graph_; }

  // A fresh unique value name "<base>_<n>" (node outputs).
  std::string fresh(const std::string& base);
  // Adds a node of `op` (domain "" = ai.onnx); outputs named fresh(op) when `outputs` is empty.
  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs,
                        std::vector<std::string> outputs = {}, const std::string& domain = "");
  // Adds a node and returns the name of its only output.
  std::string op(const std::string& op, const std::vector<std::string>& inputs);
  // Declares an extra opset domain ("com.microsoft", 1).
  void use_domain(const std::string& domain, int64_t version);

  // Initializers. `name` must be unique; returns it.
  std::string initializer(const std::string& name, int32_t elem_type, const std::vector<int64_t>& shape,
                          const void* data, size_t nbytes);
  // Float values stored as act_type() (f32 or f16).
  std::string float_initializer(const std::string& name, const std::vector<int64_t>& shape, const float* values);
  std::string f32_initializer(const std::string& name, const std::vector<int64_t>& shape, const float* values);
  std::string i64_initializer(const std::string& name, const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& values);
  // Small constants (named "const_..."), deduplicated by value.
  std::string const_i64(const std::vector<int64_t>& values, bool scalar = false);
  std::string const_f32(float v);
  std::string const_act(float v);  // scalar in act_type()

  std::string cast(const std::string& x, int32_t to);
  // Reduction over the last axis keeping it (attribute before opset 18, input from 18 on).
  std::string reduce_mean_last(const std::string& x);

  // y = x·Wᵀ (+ bias): the one place a projection becomes nodes (dense MatMul or a registered
  // packed emitter); `w.path` names the initializers.
  std::string emit_linear(const std::string& x, const OnnxLinearWeight& w);

  static void set_attr(onnx::NodeProto& n, const std::string& name, int64_t v);
  static void set_attr(onnx::NodeProto& n, const std::string& name, float v);
  static void set_attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v);
  static void set_attr(onnx::NodeProto& n, const std::string& name, const std::string& v);

 private:
  onnx::ModelProto& model_;
  onnx::GraphProto* graph_;
  OnnxExportOptions o_;
  int32_t act_;
  int64_t counter_ = 0;
  std::unordered_map<std::string, std::string> consts_;
};

// Builds the decoder graph of `src` (no check, nothing written).
// The graph output `logits` (float32) from `logits` in the activation type.
void emit_logits_output(OnnxGraphBuilder& g, const std::string& logits);

onnx::ModelProto build_onnx_model(const OnnxModelSource& src, const OnnxExportOptions& o);

// Runs libonnx's checker and strict shape inference where libonnx 1.12 knows the opset (<= 17);
// returns a note saying what was checked (RunError if the checker rejects the graph).
std::string check_onnx_model(const onnx::ModelProto& m);

// Writes `m` to `path` atomically; when its initializers exceed `external_data_threshold` bytes,
// every initializer of 1 KiB or more goes to "<path>.data" (location relative to the model, offsets
// aligned to 4 KiB), written atomically before the model. Returns the files written.
std::vector<std::string> write_onnx_model(onnx::ModelProto& m, const std::string& path,
                                          int64_t external_data_threshold);

// Build, check and write: returns the files written.
struct OnnxExportResult {
  std::vector<std::string> files;
  std::string check_note;
  int64_t nodes = 0, initializers = 0, initializer_bytes = 0;
};
OnnxExportResult export_onnx(const OnnxModelSource& src, const OnnxExportOptions& o, const std::string& path);

}  // namespace llmopt::io
