// Bad recipes: every class of mistake is reported as FILE:LINE:COLUMN with a useful message, by
// the library (InputError) and by `llmopt validate` (exit code 2). Expected positions are counted
// by hand from the recipe texts below (1-based lines and columns).
#include <gtest/gtest.h>

#include <regex>

#include "core/error.h"
#include "pipeline/recipe.h"
#include "pipeline_test_util.h"

namespace llmopt::testing {
namespace {

struct BadRecipe {
  const char* name;
  std::vector<std::pair<std::string, std::string>> files;  // first = the recipe to load
  std::vector<std::string> overrides;
  const char* file;  // file name in the location ("<override>" for overrides)
  int line;          // 0 = any line/column (malformed YAML: the parser decides)
  int column;
  std::vector<std::string> needles;  // substrings of the message
};

const std::string kValid = "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n";
const std::string kValidExport =
    "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n  - {type: export}\n";

std::vector<BadRecipe> bad_recipes() {
  return {
      {"unknown_top_key", {{"r.yaml", "seeed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 1, 1, {"unknown key 'seeed'", "did you mean 'seed'"}},
      {"unknown_nested_key", {{"r.yaml", "seed: 0\nmodel:\n  pth: x\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 3, 3, {"unknown key 'pth' in model", "did you mean 'path'"}},
      {"unknown_stage_option", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate, metrcs: [perplexity]}\n"}}, {}, "r.yaml", 5, 22, {"unknown key 'metrcs'", "did you mean 'metrics'"}},
      {"wrong_type_int", {{"r.yaml", "seed: abc\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 1, 7, {"seed: expected an integer, found 'abc'"}},
      {"wrong_type_bool", {{"r.yaml", kValid + "output:\n  cache: maybe\n"}}, {}, "r.yaml", 7, 10, {"expected a boolean"}},
      {"wrong_type_section", {{"r.yaml", "seed: 0\ndata: 5\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 2, 7, {"data: expected a mapping, found '5'"}},
      {"wrong_type_list_for_string", {{"r.yaml", "seed: 0\nmodel:\n  path: [a, b]\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 3, 9, {"model.path: expected a string, found a list"}},
      {"out_of_range", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\ndata:\n  eval:\n    ctx: 1\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 6, 10, {"data.eval.ctx: value 1 is out of range"}},
      {"bad_choice", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\ndata:\n  eval:\n    protocol: llama\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 6, 15, {"'llama' is not one of", "did you mean 'llamacpp'"}},
      {"missing_file", {{"r.yaml", "seed: 0\nmodel:\n  path: /nonexistent/llmopt-model.bin\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 3, 9, {"file not found: '/nonexistent/llmopt-model.bin'"}},
      {"unknown_stage_type", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: quantise}\n"}}, {}, "r.yaml", 5, 12, {"unknown stage type 'quantise' (did you mean 'quantize'?)", "valid types: evaluate, quantize, export"}},
      {"missing_stage_type", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {name: x}\n"}}, {}, "r.yaml", 5, 5, {"missing required key 'type'"}},
      {"stage_not_mapping", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - evaluate\n"}}, {}, "r.yaml", 5, 5, {"expected a stage mapping"}},
      {"empty_pipeline", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline: []\n"}}, {}, "r.yaml", 4, 11, {"non-empty list of stages"}},
      {"missing_pipeline", {{"r.yaml", "seed: 0\n"}}, {}, "r.yaml", 1, 1, {"missing required key 'pipeline'"}},
      {"export_bad_format", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: export, formats: [tflite]}\n"}}, {}, "r.yaml", 5, 30, {"'tflite' is not one of: hf, gguf, llama2c, onnx"}},
      {"duplicate_stage_names", {{"r.yaml", "seed: 0\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate, name: a}\n  - {type: export, name: a}\n"}}, {}, "r.yaml", 6, 26, {"stage name 'a' is used twice"}},
      {"duplicate_yaml_key", {{"r.yaml", "seed: 0\nseed: 1\nmodel:\n  path: @MODEL@\npipeline:\n  - {type: evaluate}\n"}}, {}, "r.yaml", 2, 1, {"duplicate key 'seed'"}},
      {"cyclic_defaults", {{"r.yaml", "defaults: [a]\n" + kValid}, {"a.yaml", "defaults: [b]\nseed: 1\n"}, {"b.yaml", "defaults: [a]\n"}}, {}, "b.yaml", 1, 12, {"cyclic defaults", "a.yaml -> ", "b.yaml -> ", "a.yaml"}},
      {"self_cyclic_defaults", {{"r.yaml", "defaults: [r]\n" + kValid}}, {}, "r.yaml", 1, 12, {"cyclic defaults"}},
      {"missing_defaults_file", {{"r.yaml", "defaults: [nope]\n" + kValid}}, {}, "r.yaml", 1, 12, {"recipe 'nope' not found"}},
      {"error_in_composed_file", {{"r.yaml", "defaults: [base2]\n" + kValid}, {"base2.yaml", "seed: 1\nsed: 1\n"}}, {}, "base2.yaml", 2, 1, {"unknown key 'sed'", "did you mean 'seed'"}},
      {"interpolation_unknown_key", {{"r.yaml", kValid + "name: run-${sed}\n"}}, {}, "r.yaml", 6, 11, {"interpolation '${sed}': no such key", "did you mean 'seed'"}},
      {"interpolation_unterminated", {{"r.yaml", kValid + "name: run-${seed\n"}}, {}, "r.yaml", 6, 11, {"unterminated interpolation"}},
      {"interpolation_env_unset", {{"r.yaml", kValid + "name: ${env:LLMOPT_TEST_SURELY_UNSET_VAR}\n"}}, {}, "r.yaml", 6, 7, {"environment variable 'LLMOPT_TEST_SURELY_UNSET_VAR' is not set"}},
      {"interpolation_cycle", {{"r.yaml", kValid + "name: ${output.dir}\noutput:\n  dir: ${name}\n"}}, {}, "r.yaml", 6, 7, {"cyclic interpolation: output.dir -> name -> output.dir"}},
      {"interpolation_of_mapping", {{"r.yaml", kValid + "name: ${model}\n"}}, {}, "r.yaml", 6, 7, {"refers to a mapping"}},
      {"malformed_yaml_unclosed", {{"r.yaml", "seed: 0\npipeline: [ {type: evaluate}\n"}}, {}, "r.yaml", 0, 0, {"malformed YAML"}},
      {"malformed_yaml_indentation", {{"r.yaml", "seed: 0\nmodel:\n  path: x\n bad: 1\n"}}, {}, "r.yaml", 0, 0, {"malformed YAML"}},
      {"override_bad_path", {{"r.yaml", kValid}}, {"model.paht.x=5"}, "<override>", 1, 1, {"bad override path 'model.paht.x'", "did you mean 'path'"}},
      {"override_index_out_of_range", {{"r.yaml", kValid}}, {"pipeline.5.ctx=5"}, "<override>", 1, 1, {"index 5 is out of range"}},
      {"override_wrong_type", {{"r.yaml", kValid}}, {"seed=abc"}, "<override>", 1, 6, {"seed: expected an integer, found 'abc'"}},
      {"override_wrong_type_list", {{"r.yaml", kValid}}, {"seed=0", "model.quickstart_steps=[1, 2]"}, "<override>", 2, 24, {"expected an integer, found a list"}},
      {"override_unknown_key", {{"r.yaml", kValid}}, {"seeed=1"}, "<override>", 1, 1, {"unknown key 'seeed'", "did you mean 'seed'"}},
      {"override_out_of_range_stage_option", {{"r.yaml", kValid}}, {"pipeline.0.bench_repetitions=0"}, "<override>", 1, 30, {"bench_repetitions: value 0 is out of range"}},
      {"override_delete_missing", {{"r.yaml", kValid}}, {"~output.nothing"}, "<override>", 1, 2, {"nothing to delete"}},
      {"override_add_existing", {{"r.yaml", kValid}}, {"+seed=3"}, "<override>", 1, 2, {"already exists"}},
      {"override_not_assignment", {{"r.yaml", kValid}}, {"seed"}, "<override>", 1, 1, {"must look like key.path=value"}},
      {"sweep_bad_value", {{"r.yaml", kValidExport + "sweep:\n  pipeline.1.dtype: [f16, f8]\n"}}, {}, "r.yaml", 8, 27, {"'f8' is not one of"}},
      {"sweep_not_a_list", {{"r.yaml", kValid + "sweep:\n  seed: 3\n"}}, {}, "r.yaml", 7, 9, {"expected a list of values"}},
      {"sweep_bad_path", {{"r.yaml", kValid + "sweep:\n  model.paht: [a, b]\n"}}, {}, "r.yaml", 7, 3, {"unknown key 'paht'"}},
  };
}

class BadRecipeTest : public ::testing::TestWithParam<BadRecipe> {
 protected:
  fs::path write_case(const BadRecipe& c) {
    dir_ = make_temp_dir(std::string("bad-") + c.name);
    write_text(dir_ / "model.bin", "not really a model; validation only checks that it exists");
    for (const auto& [name, text] : c.files) {
      std::string t = text;
      for (size_t p; (p = t.find("@MODEL@")) != std::string::npos;)
        t.replace(p, 7, (dir_ / "model.bin").string());
      write_text(dir_ / name, t);
    }
    return dir_ / c.files[0].first;
  }
  std::regex location_regex(const BadRecipe& c) {
    std::string file = std::regex_replace(c.file, std::regex(R"([.])"), R"(\$&)");
    const std::string pos = c.line > 0 ? std::to_string(c.line) + ":" + std::to_string(c.column)
                                       : std::string(R"(\d+:\d+)");
    return std::regex("(^|[/ ])" + file + ":" + pos + ": ");
  }
  fs::path dir_;
};

TEST_P(BadRecipeTest, LibraryReportsFileLineColumn) {
  const BadRecipe& c = GetParam();
  const fs::path recipe = write_case(c);
  pipeline::RecipeLoadOptions lo;
  lo.overrides = c.overrides;
  try {
    pipeline::load_recipe(recipe.string(), lo);
    FAIL() << "expected an InputError for " << c.name;
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(std::regex_search(msg, location_regex(c)))
        << "expected " << c.file << ":" << c.line << ":" << c.column << " in:\n" << msg;
    for (const auto& n : c.needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in:\n" << msg;
  }
}

TEST_P(BadRecipeTest, ValidateCommandExitsWithTwo) {
  const BadRecipe& c = GetParam();
  const fs::path recipe = write_case(c);
  std::string args = "validate " + shell_quote(recipe.string());
  for (const auto& o : c.overrides) args += " " + shell_quote(o);
  const CommandResult r = run_llmopt(args);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, location_regex(c))) << r.output;
}

INSTANTIATE_TEST_SUITE_P(Recipes, BadRecipeTest, ::testing::ValuesIn(bad_recipes()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RecipeValidation, ValidRecipePasses) {
  const fs::path dir = make_temp_dir("valid");
  write_text(dir / "model.bin", "x");
  std::string t = kValidExport;
  t.replace(t.find("@MODEL@"), 7, (dir / "model.bin").string());
  write_text(dir / "r.yaml", t);
  const pipeline::Recipe r = pipeline::load_recipe((dir / "r.yaml").string());
  ASSERT_EQ(r.stages.size(), 2u);
  EXPECT_EQ(r.stages[0].name, "evaluate");
  EXPECT_EQ(r.stages[1].name, "export");
  EXPECT_EQ(r.options.name, "r");
  const CommandResult cli = run_llmopt("validate " + shell_quote((dir / "r.yaml").string()));
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
}

}  // namespace
}  // namespace llmopt::testing
