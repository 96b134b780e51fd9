// `rtn` with an importance matrix (QuantizeSpec::imatrix_path): every projection with an entry is
// rounded row by row by kernels::quantize_row_weighted with that entry, the others (and the
// fallback of rows that fit no block, here f16) exactly as without the file; a wrong-length entry
// or a calibrated method is an InputError. (Byte equality with llama-quantize --imatrix is the
// peer check tests/peer/test_llama_kquants.py.)
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <random>

#include "core/error.h"
#include "io/architecture.h"
#include "io/imatrix.h"
#include "kernels/quant_formats.h"
#include "model/packed_linear.h"
#include "model/quantize.h"
#include "model/synth.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

ModelConfig config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 80;
  c.tie_word_embeddings = true;
  return c;
}

const std::vector<uint8_t>& blocks_of(model::LlamaModel& m, const std::string& path) {
  for (auto& [p, l] : m.linear_layers())
    if (p == path) return dynamic_cast<const model::PackedLinear&>(*l).blocks();
  throw std::runtime_error("no layer " + path);
}

TEST(QuantizeImatrix, EntriesRoundWithImportanceOthersAsBefore) {
  const fs::path dir = fs::temp_directory_path() / ("llmopt_qimatrix_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string file = (dir / "m.dat").string();
  // Entries for every projection of layer 0 (importance spread over orders of magnitude).
  io::Imatrix im;
  std::mt19937 rng(1);
  std::lognormal_distribution<float> dist(0.0f, 2.0f);
  auto dense = model::synth_model(config(), 3);
  for (auto& [path, layer] : dense->linear_layers()) {
    if (path.find("layers.0.") == std::string::npos) continue;
    const auto named = io::arch::parse_hf_name(path + ".weight");
    ASSERT_TRUE(named);
    auto& v = im.entries[io::arch::gguf_name(named->role, named->layer)];
    for (int64_t j = 0; j < layer->in_features(); ++j) v.push_back(dist(rng));
  }
  io::write_imatrix_dat(file, im);

  for (const char* fmt : {"q4_0", "q5_1", "q8_0"}) {
    SCOPED_TRACE(fmt);
    const DType t = *dtype_from_name(fmt);
    auto plain = model::synth_model(config(), 3);
    auto weighted = model::synth_model(config(), 3);
    model::QuantizeSpec spec;
    spec.format = fmt;
    model::quantize_rtn(*plain, spec);
    spec.imatrix_path = file;
    const auto rep = model::quantize_rtn(*weighted, spec);
    EXPECT_EQ(rep.quantized, 14);
    int differ = 0;
    for (auto& [path, layer] : dense->linear_layers()) {
      const auto& got = blocks_of(*weighted, path);
      const auto named = io::arch::parse_hf_name(path + ".weight");
      const auto it = im.entries.find(io::arch::gguf_name(named->role, named->layer));
      if (it == im.entries.end()) {
        EXPECT_EQ(got, blocks_of(*plain, path)) << path;
        continue;
      }
      const auto w = layer->dense_weight().contiguous();
      const int64_t out = w.size(0), in = w.size(1), row = dtype_bytes_for(t, in);
      std::vector<uint8_t> want(static_cast<size_t>(out * row));
      for (int64_t r = 0; r < out; ++r)
        kernels::quantize_row_weighted(t, w.data_ptr<float>() + r * in, want.data() + r * row, in,
                                       it->second.data());
      EXPECT_EQ(got, want) << path;
      differ += got != blocks_of(*plain, path);
    }
    // The importance must matter for the searched formats, and only for them.
    if (kernels::has_quantize_weighted(t))
      EXPECT_EQ(differ, 7);
    else
      EXPECT_EQ(differ, 0);
  }

  // A calibrated method cannot also take an imatrix; an entry of the wrong length names it.
  model::QuantizeSpec spec;
  spec.format = "q4_0";
  spec.imatrix_path = file;
  spec.method = "gptq";
  spec.calibration.path = "x.txt";
  EXPECT_THROW(model::check_quantize_spec(spec), InputError);
  io::Imatrix bad;
  bad.entries["blk.1.attn_q.weight"] = {1.0f, 2.0f};
  io::write_imatrix_dat((dir / "bad.dat").string(), bad);
  spec = model::QuantizeSpec{};
  spec.format = "q4_0";
  spec.imatrix_path = (dir / "bad.dat").string();
  auto m = model::synth_model(config(), 3);
  try {
    model::quantize_rtn(*m, spec);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.attn_q.weight"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
