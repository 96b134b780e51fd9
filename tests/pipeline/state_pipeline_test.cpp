// A two-stage recipe (a test stage that replaces projections with a made-up packed kind, then
// export) produces artifacts whose tensors are the packed ones, and the packed layers survive the
// stage checkpoint (--resume), the cache and the KL-divergence baseline read from the input file.
// Runs the pipeline in-process with a registry that adds the test stage.
#include <gtest/gtest.h>

#include <cstring>

#include "../common/packed_test_layer.h"
#include "io/checkpoint.h"
#include "model/loader.h"
#include "model/state_io.h"
#include "pipeline/recipe.h"
#include "pipeline/runner.h"
#include "pipeline_test_util.h"
#include "stages/registry.h"
#include "tiny_model.h"

namespace llmopt::testing {
namespace {

struct PackOptions {
  std::vector<std::string> layers;
  static void describe(stages::Schema<PackOptions>& s) {
    s.field("layers", &PackOptions::layers, "Projections to replace with the test_q8 packed kind");
  }
};

class PackStage : public stages::Stage {
 public:
  using Options = PackOptions;
  static constexpr const char* kType = "pack_test";
  static constexpr const char* kDoc = "test: replace projections with test_q8 packed layers";
  explicit PackStage(Options o) : o_(std::move(o)) {}
  std::string type() const override { return kType; }
  bool modifies_model() const override { return true; }
  stages::StageResult run(stages::ModelState& state, stages::StageContext&) override {
    std::map<std::string, std::shared_ptr<model::LinearLayer>> ls;
    for (auto& [n, l] : state.model->linear_layers()) ls[n] = l;
    for (const auto& p : o_.layers) state.model->set_linear(p, std::make_shared<PackedTestLinear>(ls.at(p)->dense_weight()));
    return {};
  }
  nlohmann::json options_json() const override { return stages::schema_of<Options>().json(o_); }

 private:
  Options o_;
};

const stages::Registry& test_registry() {
  static const stages::Registry r = [] {
    stages::Registry reg;
    stages::register_builtin_stages(reg);
    reg.add<PackStage>();
    return reg;
  }();
  return r;
}

const char* kLayers[] = {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                         "model.layers.1.mlp.gate_proj"};

// The Q8_0 blocks of the input model's projection, computed here from the input file.
std::vector<uint8_t> expected_blocks(const TinyModel& t, const std::string& layer) {
  auto m = model::load_model(t.model_dir.string()).model;
  for (auto& [n, l] : m->linear_layers())
    if (n == layer) return PackedTestLinear(l->dense_weight()).blocks();
  ADD_FAILURE() << "no layer " << layer;
  return {};
}

void expect_packed_gguf(const TinyModel& t, const fs::path& gguf) {
  const io::Checkpoint ck = io::load_checkpoint(gguf.string());
  for (const char* p : kLayers) {
    const io::TensorView& v = ck.get(std::string(p) + ".weight");
    EXPECT_EQ(v.dtype, DType::Q8_0) << p;
    const auto want = expected_blocks(t, p);
    ASSERT_EQ(v.nbytes, static_cast<int64_t>(want.size())) << p;
    EXPECT_EQ(std::memcmp(v.data, want.data(), want.size()), 0) << p;
  }
  EXPECT_EQ(ck.get("model.layers.0.mlp.up_proj.weight").dtype, DType::F32);
}

pipeline::RunOutcome run(const fs::path& recipe, const fs::path& out, const fs::path& cache) {
  pipeline::RecipeLoadOptions lo;
  lo.registry = &test_registry();
  const pipeline::Recipe r = pipeline::load_recipe(recipe.string(), lo);
  pipeline::RunOptions o;
  o.out_dir = out.string();
  o.cache_dir = cache.string();
  o.quiet = true;
  o.registry = &test_registry();
  return pipeline::run_recipe(r, o);
}

TEST(StatePipeline, PackedLayersReachTheExportAndSurviveResumeAndCache) {
  PackedTestLinear::register_kind();
  const fs::path dir = make_temp_dir("state-pipeline");
  const TinyModel t = make_tiny_model(dir);
  std::string layers;
  for (const char* p : kLayers) layers += std::string(layers.empty() ? "" : ", ") + p;
  const std::string pipe = "  - {type: pack_test, layers: [" + layers + "]}\n"
                           "  - {type: evaluate, metrics: [perplexity, kld]}\n"
                           "  - {type: export, formats: [gguf, hf], dtype: f32}\n";
  write_text(dir / "r.yaml", tiny_recipe(t, pipe));

  const auto a = run(dir / "r.yaml", dir / "a", dir / "cache");
  ASSERT_EQ(a.exit_code, 0) << a.error;
  const fs::path gguf = dir / "a" / "artifacts" / "model.gguf";
  expect_packed_gguf(t, gguf);
  // The stage checkpoint holds the packed kind, not a dense copy.
  auto restored = model::load_model_state((dir / "a" / "state" / "stage-0" / "model").string());
  for (auto& [n, l] : restored->linear_layers())
    for (const char* p : kLayers)
      if (n == p) EXPECT_EQ(l->kind(), "test_q8") << n;
  // KLD against the input file: a distinct, slightly perturbed model.
  const auto& ev = a.metrics["stages"][1]["metrics"];
  ASSERT_TRUE(ev.contains("kld_mean")) << ev.dump();
  EXPECT_GT(ev["kld_mean"].get<double>(), 0.0);
  EXPECT_LT(ev["kld_mean"].get<double>(), 0.05);  // Q8_0 of 3 projections: a small perturbation
  const std::string first = read_text(gguf);

  // --resume after the export's record is lost: the packed model comes back from the stage
  // checkpoint and the export writes the same bytes.
  fs::remove_all(dir / "a" / "state" / "stage-2");
  fs::remove(gguf);
  pipeline::RunOptions ro;
  ro.quiet = true;
  ro.use_cache = false;
  ro.registry = &test_registry();
  const auto b = pipeline::resume_run((dir / "a").string(), ro);
  ASSERT_EQ(b.exit_code, 0) << b.error;
  EXPECT_EQ(read_text(gguf), first);

  // The cache: a new run directory with another export basename reuses the cached packed model.
  std::string pipe2 = pipe;
  pipe2.replace(pipe2.find("dtype: f32}"), 11, "dtype: f32, basename: again}");
  write_text(dir / "r2.yaml", tiny_recipe(t, pipe2));
  const auto c = run(dir / "r2.yaml", dir / "c", dir / "cache");
  ASSERT_EQ(c.exit_code, 0) << c.error;
  EXPECT_EQ(c.metrics["stages"][0]["status"], "cached");
  EXPECT_EQ(read_text(dir / "c" / "artifacts" / "again.gguf"), first);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::testing
