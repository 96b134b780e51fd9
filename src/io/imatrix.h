// llama.cpp importance matrices (the output of llama-imatrix, the input of llama-quantize
// --imatrix): per projection weight, one importance value per input column, the mean over the
// calibration tokens of the squared activation entering that column, E[a_j²]. llmopt's
// importance-weighted quantizers (kernels::quantize_row_weighted) take exactly these values.
//
// Two file formats, told apart by the GGUF magic:
//  - GGUF (llama-imatrix's default since 2025): tensors "<weight>.in_sum2" (f32 [ne0 = columns,
//    ne1 = experts]) and "<weight>.counts" (f32 [ne1]); importance = in_sum2 / count, or 1 where
//    the count is 0 (that expert saw no token), as llama-quantize does.
//  - legacy .dat: i32 n_entries; per entry i32 name_len, name bytes, i32 ncall, i32 nval,
//    f32 values[nval] (sums over ncall calls); optionally i32 chunk count, i32 len, dataset name.
//    Importance = value / ncall when ncall > 0 (float division, as llama-quantize).
// Entries are keyed by GGUF tensor name ("blk.3.ffn_down.weight").
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace llmopt::io {

struct Imatrix {
  std::map<std::string, std::vector<float>> entries;  // GGUF weight name -> importance per column
  std::vector<std::string> datasets;                  // calibration file names, if recorded
  int64_t chunks = 0;                                 // calibration chunks, if recorded (else 0)

  // The importance of the projection at HF module path `module_path` ("model.layers.3.mlp.up_proj",
  // "lm_head"), found under its GGUF name; nullptr if the file has none. InputError naming the
  // file and tensor if the entry's length is not `columns`.
  const std::vector<float>* find_projection(std::string_view module_path, int64_t columns,
                                            std::string_view file = "imatrix") const;
};

// Reads either format. InputError "[imatrix] PATH: ..." for a truncated or malformed file, no
// entries, a negative or non-finite value, or sums without counts.
Imatrix read_imatrix(const std::string& path);

// Writes the legacy .dat format (ncall = 1, so the stored values are the importance itself),
// which every llama-quantize version reads; through a temporary file renamed on success.
void write_imatrix_dat(const std::string& path, const Imatrix& m);

}  // namespace llmopt::io
