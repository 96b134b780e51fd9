// convert round trips on the 17M HF model: HF -> GGUF F32 must give identical logits, F16 within
// 1e-2, llama2.c identical; and back to HF from GGUF identical.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "model/loader.h"
#include "model/save.h"

namespace llmopt {
namespace {
namespace fs = std::filesystem;

const std::string kTiny17m = std::string(LLMOPT_SHARED_DIR) + "/models/tinyllama-bpe-17m";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("llmopt-convert-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

torch::Tensor logits(model::LlamaModel& m, const std::vector<int64_t>& ids) {
  torch::NoGradGuard ng;
  return m.forward(torch::tensor(ids, torch::kLong).view({1, -1}))[0];
}

const std::vector<int64_t> kIds = {7454, 2402, 257, 640, 11, 612, 373, 257, 1310, 2576, 3706, 20037, 13};

double max_diff(model::LlamaModel& a, model::LlamaModel& b) {
  return (logits(a, kIds) - logits(b, kIds)).abs().max().item<double>();
}

TEST(ConvertData, HfToGgufF32IsExactAndF16Close) {
  TempDir tmp;
  auto src = model::load_model(kTiny17m);
  const std::string f32 = (tmp.path / "m-f32.gguf").string(), f16 = (tmp.path / "m-f16.gguf").string();
  model::save_model(*src.model, src.tokenizer.get(), src.tokenizer_path, model::ExportFormat::Gguf, DType::F32, f32);
  model::save_model(*src.model, src.tokenizer.get(), src.tokenizer_path, model::ExportFormat::Gguf, DType::F16, f16);
  auto a = model::load_model(f32);
  auto b = model::load_model(f16);
  // The q/k row permutation is exact, so F32 logits agree bit for bit.
  EXPECT_EQ(max_diff(*src.model, *a.model), 0.0);
  const double d16 = max_diff(*src.model, *b.model);
  std::printf("HF -> GGUF F16 max abs logit diff %.3g\n", d16);
  EXPECT_LT(d16, 1e-2);
  // The tokenizer embedded in the GGUF encodes like the source tokenizer.json.
  const std::string text = "Once upon a time, there was a little girl named Lily.\nShe said: \"Hi!\" 123";
  EXPECT_EQ(src.tokenizer->encode(text, {.add_bos = false}), a.tokenizer->encode(text, {.add_bos = false}));
  // And back to HF from the GGUF.
  const std::string hf = (tmp.path / "hf").string();
  model::save_model(*a.model, a.tokenizer.get(), "", model::ExportFormat::Hf, DType::F32, hf);
  auto c = model::load_model(hf);
  EXPECT_EQ(max_diff(*src.model, *c.model), 0.0);
  EXPECT_EQ(src.tokenizer->encode(text, {.add_bos = false}), c.tokenizer->encode(text, {.add_bos = false}));
}

TEST(ConvertData, HfToLlama2cIsExact) {
  TempDir tmp;
  auto src = model::load_model(kTiny17m);
  const std::string bin = (tmp.path / "m.bin").string();
  model::save_model(*src.model, nullptr, "", model::ExportFormat::Llama2c, DType::F32, bin);
  model::ModelLoadOptions o;
  // llama2.c files carry no tokenizer; any tokenizer file satisfies the loader for logits.
  o.tokenizer_path = kTiny17m + "/tokenizer.json";
  auto back = model::load_model(bin, o);
  EXPECT_EQ(max_diff(*src.model, *back.model), 0.0);
}

}  // namespace
}  // namespace llmopt
