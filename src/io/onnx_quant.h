// ONNX mappings of llmopt's packed projections: the codes, scales and zero points the
// quantization work produced, repacked losslessly (never re-rounded) into ONNX Runtime's
// operators, as plain node/initializer descriptions the ONNX writer turns into protobufs.
//
// A projection y = x·Wᵀ (W [N = out, K = in], x [..., K] in the graph's float type) becomes:
//   4-bit weights  → com.microsoft.MatMulNBits(x, B, scales[, zero_points]), bits 4:
//       B [N, n_blocks, block/2] u8, element 2i of a block in the low nibble of byte i, 2i+1 in
//       the high nibble; scales [N·n_blocks]; zero points u8 packed the same way [N·ceil(nb/2)]
//       (default 8 when absent) or, for the formats with a float offset, float [N·n_blocks];
//       W[n, k] = (q − zp)·scale of block k / block. K need not be a multiple of the block: the
//       last block of a row is a tail whose padding codes (0) meet no input.
//         ggml q4_0   block 32, scale d, zero point 8 (default): exact.
//         ggml q4_1   block 32, scale d, float zero point −m/d: x = q·d + m up to the rounding
//                     of −m/d to the graph's float type (|Δw| ≤ 2⁻²⁴·|m| in f32).
//         ggml q4_k   block 32 (the super-block's 8 sub-blocks), scale d·sc (exact in f32),
//                     float zero point dmin·m/(d·sc): x = d·sc·q − dmin·m up to that rounding.
//                     A sub-block with d·sc = 0 (or q4_1's d = 0) holds one constant c: its codes
//                     are written 0 with zero point 1 and scale −c (exact).
//         int-N 4-bit group 32/64/128 (block = group, tail groups as above), sym (default zero
//                     point 8 = llmopt's 2^(bits−1)) or asym (llmopt's packed zeros are already
//                     ORT's layout); whole-row groups (group −1) use block 128 with the row's scale
//                     and zero repeated; act-order (g_idx) layers gather x's columns sorted by
//                     group first (Gather on the last axis), so every group is one block: exact.
//   8-bit weights (ggml q8_0, int-N 8-bit) and int-N of 2, 3, 5, 6, 7 bits (codes widened to one
//   byte each: exact, larger file) → dequantized in the graph, then MatMul:
//       opset ≥ 21: DequantizeLinear(codes [K, N], scale [nb, N], zero [nb, N], axis 0,
//                   block_size = group) — ONNX's blocked quantization;
//       opset < 21: Cast(codes [nb, block, N]) − zero [nb, 1, N], · scale [nb, 1, N], Reshape to
//                   [nb·block, N] (and Slice to K rows when the last group is a tail).
//       Whole-row groups use block = K. Values are exact: an 8-bit code times an f16 scale has at
//       most 19 significant bits.
//   W8A8 (int8 weights per channel, int8 activations) → the activation quantization spelled out
//       in standard ops and MatMulInteger (int8 × int8 → int32, exact), rescaled in float:
//       static: x / act_scale rounded (half to even, as torch.round) and clipped to ±127;
//       dynamic: per-row (per-token) scale max|x|/127 (1 for an all-zero row); outlier columns
//       (calibrated ones from the kept f16 weights; in dynamic mode also the columns whose |x|
//       exceeds the threshold anywhere in the call, from the int8 weights dequantized) are
//       zeroed before quantization and added back through a float MatMul — the layer's
//       forward() step by step. min_opset 13.
//   NF4 (rows of whole 64-blocks) → com.microsoft.MatMulBnb4(x, B, absmax), quant_type 1:
//       llmopt's codes as stored (first element in the high nibble, bitsandbytes' packing; the
//       [N, K] weight flattened), absmax per block decoded (double quantization included); ORT
//       decodes f32(value·absmax) like the kernel: exact.
// Not mapped (onnx_quant_unsupported names why): NF4 rows ending in a short block, ggml q5_0/q5_1/q2_k/q3_k/q5_k/q6_k (codes of 5, 2, 3, 5, 6 bits with float offsets or 16-wide
// sub-blocks MatMulNBits cannot hold on ORT's CPU kernel), kinds that are not packed storage
// (LoRA, masks). The writer then exits 2 naming the option that writes such layers dense.
//
// Biases are not part of these mappings: the writer adds a layer's bias after the projection as
// for dense layers.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint.h"

namespace llmopt::io {

// ONNX TensorProto.DataType values of the element types used here.
enum class OnnxElemType : int32_t { Float = 1, Uint8 = 2, Int8 = 3, Int32 = 6, Int64 = 7, Float16 = 10 };

// One initializer: raw little-endian bytes in ONNX's row-major order.
struct OnnxInitializer {
  std::string name;
  OnnxElemType type = OnnxElemType::Float;
  std::vector<int64_t> dims;
  std::vector<uint8_t> raw;
};

struct OnnxAttribute {
  enum class Kind { Int, Float, Ints };
  std::string name;
  Kind kind = Kind::Int;
  int64_t i = 0;
  float f = 0;
  std::vector<int64_t> ints;
  static OnnxAttribute of_int(std::string name, int64_t v);
  static OnnxAttribute of_float(std::string name, float v);
  static OnnxAttribute of_ints(std::string name, std::vector<int64_t> v);
};

struct OnnxNode {
  std::string op_type;
  std::string domain;  // "" (ai.onnx) or "com.microsoft"
  std::string name;
  std::vector<std::string> inputs;  // "" = optional input left out
  std::vector<std::string> outputs;
  std::vector<OnnxAttribute> attributes;
  const OnnxAttribute* attribute(std::string_view name) const;
};

inline constexpr const char* kOnnxMsDomain = "com.microsoft";

// The nodes and initializers computing `output` = `input`·Wᵀ for one projection.
struct OnnxQuantProjection {
  std::vector<OnnxNode> nodes;
  std::vector<OnnxInitializer> initializers;
  int min_opset = 13;           // lowest ai.onnx opset the nodes need
  bool uses_ms_domain = false;  // com.microsoft opset 1 must be imported
  std::string mapping;          // e.g. "MatMulNBits bits 4 block 32 (q4_0)", for logs and reports
};

// A projection's weight as its layer kind stores it: a torch-free mirror of model::LayerState
// (kind, meta and stored tensors by name, e.g. "packed" {type: q4_0} with "weight" [out, in] of
// ggml blocks; "intn" {bits, group_size, sym, in_features} with qweight/scales/qzeros/g_idx;
// "w8a8" {mode, threshold} with qweight/wscale/act_scale/outlier_cols/outlier_w; "nf4"
// {double_quant} with qweight and absmax or absmax_codes/absmax_scales/absmax_offset).
struct OnnxPackedWeight {
  std::string kind;
  nlohmann::json meta = nlohmann::json::object();
  int64_t out = 0, in = 0;
  std::vector<TensorView> tensors;
  const TensorView* find(std::string_view name) const;
};

struct OnnxQuantOptions {
  int opset = 17;                                 // ai.onnx opset of the graph (14..21)
  OnnxElemType float_type = OnnxElemType::Float;  // type of x and y (Float or Float16)
  int64_t accuracy_level = 0;                     // MatMulNBits accuracy_level (0: left unset)
};

// Empty when onnx_quant_projection can map `w` exactly; otherwise why not (for the writer's error
// or warning). Float storage ("dense", packed f32/f16/bf16) answers "not quantized".
std::string onnx_quant_unsupported(const OnnxPackedWeight& w, const OnnxQuantOptions& opts);

// Nodes and initializers for `w`; names start with `prefix` (the module path, e.g.
// "model.layers.0.self_attn.q_proj"). InputError naming `prefix` when `w` has no mapping (see
// onnx_quant_unsupported) or its stored tensors do not match its meta.
OnnxQuantProjection onnx_quant_projection(const OnnxPackedWeight& w, const std::string& prefix,
                                          const std::string& input, const std::string& output,
                                          const OnnxQuantOptions& opts);

// The option that writes unmapped quantized layers dense, and the policy every writer applies:
// InputError (exit 2) naming `layer`, why and the way out unless `dequantize_unmapped`, when a
// warning is logged instead and false returned (write the layer dense). True when mapped.
inline constexpr const char* kOnnxDequantizeOption = "onnx_dequantize: true, or --onnx-dequantize";
bool onnx_quant_check_mappable(const OnnxPackedWeight& w, const std::string& layer, const OnnxQuantOptions& opts,
                               bool dequantize_unmapped);

// Registers these mappings with the ONNX graph builder (io/onnx_graph.h) for the layer kinds
// "packed", "intn", "w8a8" and "nf4". A layer of such a kind that has no mapping (packed q6_k, f16 ...)
// is written dense from its own stored tensors, dequantized by the kernels, after the check above
// (refused when the export asked for packed weights only). Idempotent.
void register_onnx_quant_kinds();

}  // namespace llmopt::io
