// The export stage's adapter formats, end to end through the llmopt binary (LLMOPT_BIN) on the
// tiny model: a recipe finetune (LoRA) -> export [gguf_lora, peft] writes NAME-lora.gguf
// byte-identical to what `llmopt convert NAME-peft OUT --to gguf-lora --base MODEL` makes of the
// exported PEFT adapter (and to the finetune stage's own adapter.gguf); the PEFT adapter holds the
// finetune stage's tensors; `--adapter` of either file gives the same logits. A prompt adapter
// exports as peft; DoRA or a prompt adapter as gguf_lora, no adapter at all, and dtype bf16 are
// exit 2 naming the option and the way out. (That llama.cpp applies the file as llmopt does is
// tests/peer/test_llama_lora.py.)
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../pipeline/tiny_model.h"

namespace llmopt::testing {
namespace {

// A finetune stage of `method` (3 steps on the evaluation text) followed by `export`.
std::string finetune_export_recipe(const TinyModel& t, const std::string& finetune_extra,
                                   const std::string& export_options) {
  return tiny_recipe(t, "  - type: finetune\n"
                        "    train: {path: " + t.eval_text.string() + ", format: text, seq_len: 32}\n"
                        "    max_steps: 3\n    batch_size: 2\n    lr: 0.01\n" + finetune_extra +
                        "  - {type: export, " + export_options + "}\n");
}

struct RecipeRun {
  CommandResult result;
  fs::path dir;
};

RecipeRun run_recipe(const fs::path& dir, const std::string& recipe, const std::string& tag) {
  write_text(dir / (tag + ".yaml"), recipe);
  RecipeRun r;
  r.dir = dir / ("run-" + tag);
  r.result = run_llmopt("-q run " + shell_quote((dir / (tag + ".yaml")).string()) + " --out " +
                        shell_quote(r.dir.string()));
  return r;
}

// Every position's logits of a fixed text (`llmopt logits --full`, through a JSON file) with
// `--adapter ADAPTER` ("" = the base), as one flat vector.
std::vector<double> logits_of(const TinyModel& t, const std::string& adapter, const fs::path& out) {
  std::string args = "-q logits " + shell_quote(t.model_dir.string()) + " --tokenizer " +
                     shell_quote(t.tokenizer.string()) + " --text 'once upon a time there was' --full --json " +
                     shell_quote(out.string());
  if (!adapter.empty()) args += " --adapter " + shell_quote(adapter);
  const CommandResult r = run_llmopt(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<double> v;
  const auto j = nlohmann::json::parse(read_text(out), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains("positions")) return v;
  for (const auto& p : j["positions"])
    for (double x : p["logits"]) v.push_back(x);
  return v;
}

TEST(ExportStage, LoraAdapterAsGgufLoraEqualsConvert) {
  const fs::path dir = make_temp_dir("export-lora");
  const TinyModel t = make_tiny_model(dir);
  const RecipeRun run = run_recipe(dir,
                             finetune_export_recipe(t, "    method: lora\n    lora: {r: 4, alpha: 8}\n",
                                                    "formats: [gguf_lora, peft], basename: tuned"),
                             "lora");
  ASSERT_EQ(run.result.exit_code, 0) << run.result.output;
  const fs::path art = run.dir / "artifacts";
  ASSERT_TRUE(fs::is_regular_file(art / "tuned-lora.gguf"));
  ASSERT_TRUE(fs::is_regular_file(art / "tuned-peft" / "adapter_model.safetensors"));
  ASSERT_TRUE(fs::is_regular_file(art / "tuned-peft" / "adapter_config.json"));
  for (const auto& e : fs::directory_iterator(art)) EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  // The stage replayed the adapter on the base against the model (f32: exact tensors).
  const auto metrics = nlohmann::json::parse(read_text(run.dir / "metrics.json"));
  const std::string dump = metrics.dump();
  EXPECT_NE(dump.find("verify_gguf_lora_kld_mean"), std::string::npos) << dump;
  EXPECT_NE(dump.find("verify_peft_kld_mean"), std::string::npos) << dump;

  // convert --to gguf-lora of the exported PEFT adapter writes the same bytes.
  const fs::path converted = dir / "converted.gguf";
  const CommandResult c = run_llmopt("-q convert " + shell_quote((art / "tuned-peft").string()) + " " +
                                     shell_quote(converted.string()) + " --to gguf-lora --base " +
                                     shell_quote(t.model_dir.string()) + " --tokenizer " +
                                     shell_quote(t.tokenizer.string()));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const std::string exported = read_text(art / "tuned-lora.gguf");
  EXPECT_GT(exported.size(), 1000u);
  EXPECT_TRUE(exported == read_text(converted)) << "export gguf_lora and convert --to gguf-lora differ";
  // ... and the finetune stage's own files: the same adapter.
  EXPECT_TRUE(exported == read_text(art / "adapter-finetune" / "adapter.gguf"));
  EXPECT_TRUE(read_text(art / "tuned-peft" / "adapter_model.safetensors") ==
              read_text(art / "adapter-finetune" / "adapter_model.safetensors"));
  // Both files load with --adapter to the same logits (f32 adapters of identical tensors: the
  // same LoRA layers, so equal to float rounding of identical operations: exact), and the
  // adapter changed them (B starts at zero; 3 steps at lr 0.01 move it).
  const auto from_peft = logits_of(t, (art / "tuned-peft").string(), dir / "peft.json");
  const auto from_gguf = logits_of(t, (art / "tuned-lora.gguf").string(), dir / "gguf.json");
  const auto base = logits_of(t, "", dir / "base.json");
  ASSERT_FALSE(from_peft.empty());
  ASSERT_EQ(from_peft.size(), from_gguf.size());
  ASSERT_EQ(from_peft.size(), base.size());
  double diff = 0, effect = 0;
  for (size_t i = 0; i < from_peft.size(); ++i) {
    diff = std::max(diff, std::abs(from_peft[i] - from_gguf[i]));
    effect = std::max(effect, std::abs(from_peft[i] - base[i]));
  }
  EXPECT_LE(diff, 1e-6);
  EXPECT_GT(effect, 1e-4);
}

TEST(ExportStage, PromptAdapterExportsAsPeftNotGgufLora) {
  const fs::path dir = make_temp_dir("export-prefix");
  const TinyModel t = make_tiny_model(dir);
  const std::string ft = "    method: prefix\n    prompt: {num_virtual_tokens: 4}\n";
  const RecipeRun ok = run_recipe(dir, finetune_export_recipe(t, ft, "formats: [peft]"), "prefix");
  ASSERT_EQ(ok.result.exit_code, 0) << ok.result.output;
  EXPECT_TRUE(read_text(ok.dir / "artifacts" / "model-peft" / "adapter_model.safetensors") ==
              read_text(ok.dir / "artifacts" / "adapter-finetune" / "adapter_model.safetensors"));
  const RecipeRun bad = run_recipe(dir, finetune_export_recipe(t, ft, "formats: [gguf_lora]"), "prefix-gguf");
  EXPECT_EQ(bad.result.exit_code, 2) << bad.result.output;
  EXPECT_NE(bad.result.output.find("formats: gguf_lora"), std::string::npos) << bad.result.output;
  EXPECT_NE(bad.result.output.find("formats: [peft]"), std::string::npos) << bad.result.output;
}

TEST(ExportStage, GgufLoraRefusesDoraNoAdapterAndBf16) {
  const fs::path dir = make_temp_dir("export-bad");
  const TinyModel t = make_tiny_model(dir);
  const RecipeRun dora = run_recipe(
      dir, finetune_export_recipe(t, "    method: lora\n    lora: {r: 2, alpha: 4, dora: true}\n", "formats: [gguf_lora]"),
      "dora");
  EXPECT_EQ(dora.result.exit_code, 2) << dora.result.output;
  for (const char* want : {"formats: gguf_lora", "DoRA", "formats: [peft]", "formats: [gguf]"})
    EXPECT_NE(dora.result.output.find(want), std::string::npos) << want << "\n" << dora.result.output;
  EXPECT_FALSE(fs::exists(dora.dir / "artifacts" / "model-lora.gguf"));

  const RecipeRun none = run_recipe(dir, tiny_recipe(t, "  - {type: export, formats: [gguf_lora]}\n"), "none");
  EXPECT_EQ(none.result.exit_code, 2) << none.result.output;
  EXPECT_NE(none.result.output.find("has none"), std::string::npos) << none.result.output;

  const RecipeRun bf16 = run_recipe(
      dir, finetune_export_recipe(t, "    method: lora\n", "formats: [gguf_lora], dtype: bf16"), "bf16");
  EXPECT_EQ(bf16.result.exit_code, 2) << bf16.result.output;
  EXPECT_NE(bf16.result.output.find("gguf_lora is written as f32 or f16"), std::string::npos) << bf16.result.output;
}

}  // namespace
}  // namespace llmopt::testing
