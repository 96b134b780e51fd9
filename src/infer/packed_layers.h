// Int-N and NF4 projections in an io::Checkpoint, as the native engine reads them (no dense copy).
//
// Two ways a projection `<module>.weight` [out, in] arrives packed instead of as one tensor:
//   * llmopt's own layers (model::IntNLinear, model::NF4Linear): checkpoint metadata
//     "llmopt_layers" holds {<module>: {"kind": "intn" | "nf4", "meta": {...}}} and the layer's
//     stored tensors are `<module>#<name>`, with the names, dtypes and meta of the layer's
//     stored_state() (model::model_to_checkpoint(m, CheckpointWeights::Packed) writes them; see
//     kernels/intn.h and kernels/nf4.h for the layouts):
//       intn  meta {bits, group_size (-1: whole row), sym, act_order, in_features}:
//             qweight u8 [out, code bytes], scales f16 [out, groups], qzeros u8 [out, zero
//             bytes] (asym), g_idx i32 [in] (act_order)
//       nf4   meta {double_quant, in_features}: qweight u8 [out, (in + 1) / 2], absmax f32
//             [out·blocks] or absmax_codes i8 [out·blocks], absmax_scales f32
//             [ceil(out·blocks / 256)], absmax_offset f32 [1]
//   * GPTQ's Hugging Face layout (io/gptq.h: qweight/qzeros/scales/g_idx with a
//     quantization_config): converted once at load into int-N storage (still packed).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/intn.h"
#include "kernels/nf4.h"

namespace llmopt::infer {

// The metadata key of llmopt's own packed layers in a checkpoint.
inline constexpr const char* kStoredLayersKey = "llmopt_layers";
// Layer kinds the native engine binds as stored: "intn", "nf4".
bool native_stored_kind(std::string_view kind);

// A projection bound as stored. `intn` or `nf4` views either the checkpoint's bytes (borrowed:
// the caller keeps the checkpoint's storage alive) or `owned` buffers (copied, or converted from
// GPTQ's layout).
struct PackedProjection {
  enum class Kind { None, IntN, NF4 } kind = Kind::None;
  kernels::IntNMatrix intn;
  kernels::NF4Matrix nf4;
  std::shared_ptr<const void> owned;
  int64_t bytes = 0;  // as held: codes, scales, zeros, g_idx / absmax
};

// Whether `module`'s weight is stored packed in `ckpt` (either way above).
bool has_packed_projection(const io::Checkpoint& ckpt, const std::string& module);
// Binds `module` [out, in]: InputError "[infer] FILE: ..." naming the tensor for a missing tensor,
// a wrong dtype or shape, bad meta, a scale that is not a positive finite f16, a g_idx entry out
// of range, a non-finite absmax. `copy`: the views point into owned buffers (the checkpoint may be
// dropped); otherwise into the checkpoint where its bytes are aligned for their type.
PackedProjection bind_packed_projection(const io::Checkpoint& ckpt, const std::string& module, int64_t out, int64_t in,
                                        bool copy);

}  // namespace llmopt::infer
