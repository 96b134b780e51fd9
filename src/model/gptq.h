// GPTQ (Frantar et al., 2022) and calibrated round-to-nearest, written once over a
// ColumnQuantizer: the target format's grid, fitted a group of input columns at a time and
// applied one input column at a time. Any format with such a grid plugs in (ggml blocks: the
// group is the block, its grid is fitted by the block's quantizer, importance-weighted; llmopt's
// int-N groups ...), so GPTQ writes straight into the stored format — a GGUF of GPTQ q4_0 blocks
// is read by llama.cpp as any q4_0 file.
//
// The algorithm, for W [out, in] and the inputs' Hessian H = 2/n Σ x xᵀ:
//   dead inputs (H_jj = 0) are zeroed; optional act-order processes columns by decreasing H_jj;
//   H += damp · mean(diag H) · I; U = upper Cholesky factor of H⁻¹; then column by column
//   q_j = round(w_j), e_j = (w_j − q_j) / U_jj, and the not-yet-quantized columns k > j take
//   w_k −= e_j U_jk (inside a block of columns at once; lazily, as one GEMM, for the columns after
//   the block). Groups: without act-order a group's grid is fitted when its first column is
//   reached, from the columns' current (error-compensated) values; with act-order every grid is
//   fitted up front from the original weights ("static groups"), so groups stay contiguous in the
//   stored layout (ggml blocks need that).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "model/calibration.h"
#include "model/intn_linear.h"
#include "model/linear.h"

namespace llmopt::model {

class ColumnQuantizer {
 public:
  virtual ~ColumnQuantizer() = default;
  // Input columns sharing a grid (a ggml block: 32 or 256).
  virtual int64_t group() const = 0;
  // Fixes, for every output row, the grid of the group of columns [g0, g0 + n) from their values
  // w (row-major [out, n]) and per-column importance (n values, or nullptr).
  virtual void fit(int64_t g0, int64_t n, const float* w, const float* importance) = 0;
  // Rounds input column c (its `out` values, one per output row) onto its group's grid: the
  // dequantized values go to q, the codes are kept for build().
  virtual void round_column(int64_t c, const float* w, float* q) = 0;
  // The layer holding what was rounded (every column rounded once).
  virtual std::shared_ptr<LinearLayer> build(const torch::Tensor& bias) = 0;
};

// A quantizer into the ggml block type t for a [out, in] weight; nullptr when t has no grid
// here (in must be a multiple of t's block).
std::unique_ptr<ColumnQuantizer> make_ggml_column_quantizer(DType t, int64_t out, int64_t in);
bool ggml_column_quantizer_supports(DType t);
// A quantizer into llmopt's group-wise int-N (model::IntNLinear; tail groups allowed).
std::unique_ptr<ColumnQuantizer> make_intn_column_quantizer(const IntNParams& p, int64_t out, int64_t in);

struct GptqOptions {
  double damp = 0.01;      // fraction of mean(diag H) added to the diagonal
  int64_t block = 128;     // columns updated together (rounded up to a multiple of the group)
  bool act_order = false;  // columns by decreasing H_jj (static groups)
  bool propagate = true;   // false: no error compensation (calibrated, importance-weighted RTN)
};

struct GptqResult {
  std::shared_ptr<LinearLayer> layer;
  // tr((W−Q) H (W−Q)ᵀ) / tr(W H Wᵀ): the relative output error on the calibration inputs.
  double rel_error = 0;
};

// Quantizes `layer`'s dense weight with the statistics of its inputs (hessian required when
// propagate). InputError for a non-positive-definite Hessian even after dampening.
GptqResult gptq_quantize(const LinearLayer& layer, const InputStats& stats, ColumnQuantizer& q,
                         const GptqOptions& o, const std::string& where);

// Calibrated round to nearest of a dense W [out, in]: the dequantized values gptq_quantize with
// propagate = false stores (same importance, dead inputs zeroed, same fits), without building the
// layer or measuring its error. q must be fresh (AWQ's clip search rounds many candidates).
torch::Tensor round_to_grid(const torch::Tensor& W, const InputStats& stats, ColumnQuantizer& q);

}  // namespace llmopt::model
