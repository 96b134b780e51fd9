// Instruction tuning on a task's documents, end to end on SST-2 and stories260K (CI-sized: two
// training steps, a few scored documents; mechanics, not accuracy):
//  - `llmopt data instruct --task sst2` writes, per training document, the prompt and response the
//    task scores, checked here against the TSV parsed by hand with sst2.yaml's template written
//    out; its documents and the held-out ones partition the set;
//  - the fine-tuning loader learns exactly the continuation tokens the harness scores: the response
//    tokens are encode(prompt + response) after encode(prompt) (lm-eval's _encode_pair), computed
//    here with the tokenizer alone (no EOS: the lines say "eos": false);
//  - `llmopt eval --split held-out --trained-on` scores the held-out documents, and scoring a
//    trained document (another seed, or all documents) exits 2 naming the training file;
//  - the recipe stages evaluate(task_split held_out) -> finetune(train.task) -> evaluate run, the
//    artifact equals the CLI's jsonl byte for byte, and an evaluate of all documents after the
//    finetune stage fails with exit 2.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../common/reference_files.h"
#include "../pipeline/pipeline_test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/finetune_data.h"

namespace llmopt::testing {
namespace {

const std::string kModelArgs = shell_quote(testref::kStories + "stories260K.bin") + " --tokenizer " +
                               shell_quote(testref::kStories + "tok512.bin");
const std::string kSst2 = testref::kShared + "/tasks/sst2_dev.tsv";

struct Sst2Row {
  std::string text, label;
};
// sst2_dev.tsv by hand: a header line, then text<TAB>label; line numbers 1-based.
std::map<int, Sst2Row> read_sst2() {
  std::map<int, Sst2Row> rows;
  std::istringstream in(read_text(kSst2));
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (lineno == 1 || line.empty()) continue;
    const auto tab = line.rfind('\t');
    rows[lineno] = {line.substr(0, tab), line.substr(tab + 1)};
  }
  return rows;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(p));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

int line_of(const nlohmann::json& e) {
  const std::string s = e["source"];
  return std::stoi(s.substr(s.rfind(':') + 1));
}

TEST(InstructTuning, Sst2JsonlHeldOutEvalAndRecipe) {
  const fs::path dir = make_temp_dir("instruct");
  const auto rows = read_sst2();
  ASSERT_EQ(rows.size(), 872u);
  const std::string split = " --held-out 500 --split-seed 1";
  auto r = run_llmopt("-q data instruct --task sst2" + split + " --out " + shell_quote((dir / "train.jsonl").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_llmopt("-q data instruct --task sst2 --split held-out" + split + " --out " +
                 shell_quote((dir / "held.jsonl").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto train = read_jsonl(dir / "train.jsonl"), held = read_jsonl(dir / "held.jsonl");
  EXPECT_EQ(held.size(), 500u);
  std::set<int> held_lines, train_lines;
  std::set<std::string> held_prompts;
  for (const auto& e : held) held_lines.insert(line_of(e)), held_prompts.insert(e["prompt"].get<std::string>());
  // Every document is in exactly one part, except training documents whose sentence repeats a
  // held-out one (left out).
  for (const auto& e : train) {
    const int ln = line_of(e);
    ASSERT_TRUE(rows.count(ln)) << ln;
    EXPECT_FALSE(held_lines.count(ln)) << "document at line " << ln << " is in both parts";
    EXPECT_TRUE(train_lines.insert(ln).second);
    const Sst2Row& row = rows.at(ln);
    EXPECT_EQ(e["prompt"], row.text + "\nQuestion: Is this sentence positive or negative?\nAnswer:");
    EXPECT_EQ(e["response"], row.label == "1" ? " positive" : " negative");
    EXPECT_EQ(e["task"], "sst2");
    EXPECT_EQ(e["eos"], false);
    EXPECT_EQ(e["doc"].get<int>(), ln - 2);
    EXPECT_FALSE(held_prompts.count(e["prompt"])) << ln;
  }
  size_t repeats = 0;
  for (const auto& [ln, row] : rows)
    if (!held_lines.count(ln) && !train_lines.count(ln)) {
      ++repeats;
      EXPECT_TRUE(held_prompts.count(row.text + "\nQuestion: Is this sentence positive or negative?\nAnswer:")) << ln;
    }
  EXPECT_EQ(train.size() + repeats, 372u);

  // The loader's response tokens are the continuation tokens the harness scores.
  auto tk = std::shared_ptr<tok::Tokenizer>(tok::load_tokenizer_file(testref::kStories + "tok512.bin"));
  train::FinetuneDataOptions o;
  o.path = (dir / "train.jsonl").string();
  o.seq_len = 511;
  const auto data = train::load_finetune_data(o, *tk, 1);
  ASSERT_EQ(data.train->size(), static_cast<int64_t>(train.size()));
  tok::EncodeOptions plain;
  plain.add_bos = false;
  const auto rows_t = data.train->rows(0, 8);  // [8, 2, 512]
  for (int64_t i = 0; i < 8; ++i) {
    const std::string p = train[static_cast<size_t>(i)]["prompt"], resp = train[static_cast<size_t>(i)]["response"];
    const auto whole = tk->encode(p + resp, plain), ctx = tk->encode(p, plain);
    std::vector<int64_t> want(whole.begin() + static_cast<std::ptrdiff_t>(ctx.size()), whole.end());
    EXPECT_EQ(train[static_cast<size_t>(i)]["eos"], false);  // the task scores the response alone: no EOS target
    std::vector<int64_t> got;
    for (int64_t t = 1; t < 512; ++t)
      if (rows_t[i][1][t].item<int64_t>() == 1) got.push_back(rows_t[i][0][t].item<int64_t>());
    EXPECT_EQ(got, want) << p;
    EXPECT_FALSE(want.empty());
  }

  // Held-out scoring; a trained document scored is exit 2 naming the training file.
  const std::string trained = " --trained-on " + shell_quote((dir / "train.jsonl").string());
  r = run_llmopt("-q eval " + kModelArgs + " --tasks sst2 --split held-out" + split + trained + " --limit 6 --json -");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"samples\": 6"), std::string::npos) << r.output;
  for (const std::string bad : {" --split all", " --split held-out --held-out 500 --split-seed 2"}) {
    r = run_llmopt("-q eval " + kModelArgs + " --tasks sst2" + bad + trained + " --limit 6");
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("train.jsonl:"), std::string::npos) << r.output;
  }

  // The recipe: baseline on the held-out part, finetune on the task's training part, again.
  const std::string head = "model: {path: " + testref::kStories + "stories260K.bin, tokenizer: " + testref::kStories +
                           "tok512.bin}\npipeline:\n";
  const std::string eval_held =
      "  - {type: evaluate, metrics: [tasks], tasks: [sst2], task_limit: 6, task_split: held_out, "
      "task_holdout: {size: 500, seed: 1}}\n";
  const std::string finetune =
      "  - {type: finetune, method: lora, lora: {r: 2}, max_steps: 2, batch_size: 2, "
      "train: {task: sst2, task_holdout: {size: 500, seed: 1}, seq_len: 256}}\n";
  write_text(dir / "ok.yaml", head + eval_held + finetune + eval_held);
  r = run_llmopt("-q run " + shell_quote((dir / "ok.yaml").string()) + " --no-cache --out " +
                 shell_quote((dir / "run-ok").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(dir / "run-ok" / "artifacts" / "instruct-sst2.jsonl"), read_text(dir / "train.jsonl"));
  const auto m = nlohmann::json::parse(read_text(dir / "run-ok" / "metrics.json"));
  EXPECT_EQ(m["stages"][0]["metrics"]["sst2/samples"], 6) << m.dump();
  EXPECT_EQ(m["stages"][2]["metrics"]["sst2/samples"], 6) << m.dump();
  write_text(dir / "bad.yaml",
             head + eval_held + finetune + "  - {type: evaluate, metrics: [tasks], tasks: [sst2], task_limit: 20}\n");
  r = run_llmopt("-q run " + shell_quote((dir / "bad.yaml").string()) + " --no-cache --out " +
                 shell_quote((dir / "run-bad").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("instruct-sst2.jsonl:"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::testing
