// Task splits and instruction data (src/eval/tasks.h TaskSplit, harness.h instruction_examples):
// the held-out and training parts partition the documents, have the asked size, depend only on
// the seed; the instruction pairs equal the task's rendering written out here by hand from the
// documents; a document duplicated across the parts never reaches the training part; scoring a
// trained prompt (check_not_trained_on) is an InputError naming both lines; a task with its own
// train_data uses it.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "core/error.h"
#include "eval/harness.h"
#include "eval/tasks.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("llmopt-task-split-" + tag + "-" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

eval::TaskSplit split_of(const std::string& part, double held_out, uint64_t seed) {
  eval::TaskSplit s;
  s.part = part;
  s.held_out = held_out;
  s.seed = seed;
  return s;
}

TEST(TaskSplit, PartsPartitionTheDocumentsBySeed) {
  const size_t n = 873;
  for (uint64_t seed : {1u, 2u, 77u}) {
    const auto held = eval::split_indices(n, split_of("held_out", 500, seed), "t");
    const auto train = eval::split_indices(n, split_of("train", 500, seed), "t");
    EXPECT_EQ(held.size(), 500u);
    EXPECT_EQ(train.size(), n - 500);
    EXPECT_TRUE(std::is_sorted(held.begin(), held.end()));
    std::set<size_t> all(held.begin(), held.end());
    for (size_t i : train) EXPECT_TRUE(all.insert(i).second) << "document " << i << " in both parts";
    EXPECT_EQ(all.size(), n);
    EXPECT_EQ(*all.rbegin(), n - 1);
    EXPECT_EQ(held, eval::split_indices(n, split_of("held-out", 500, seed), "t"));  // same draw every time
  }
  // Different seeds draw different parts; a fraction rounds to a count.
  EXPECT_NE(eval::split_indices(n, split_of("held_out", 500, 1), "t"),
            eval::split_indices(n, split_of("held_out", 500, 2), "t"));
  EXPECT_EQ(eval::split_indices(10, split_of("held_out", 0.25, 1), "t").size(), 3u);  // round(2.5) = 3
  EXPECT_EQ(eval::split_indices(10, split_of("all", 0, 1), "t").size(), 10u);
  // Impossible splits name the option.
  EXPECT_THROW(eval::split_indices(10, split_of("held_out", 0, 1), "t"), InputError);
  EXPECT_THROW(eval::split_indices(10, split_of("train", 10, 1), "t"), InputError);
  EXPECT_THROW(eval::split_indices(10, split_of("train", 2.5, 1), "t"), InputError);
  try {
    eval::split_indices(10, split_of("test", 2, 1), "--split");
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--split"), std::string::npos) << e.what();
  }
}

TEST(TaskSplit, InstructionPairsAreTheTaskRendering) {
  const fs::path dir = temp_dir("mc");
  // 12 documents; document 11 repeats document 3 exactly (a duplicate in the set).
  std::string docs;
  std::vector<std::pair<std::string, int>> raw;
  for (int i = 0; i < 12; ++i) {
    const int q = i == 11 ? 3 : i;
    raw.push_back({"q" + std::to_string(q), q % 3});
    docs += "{\"query\": \"q" + std::to_string(q) + "\", \"choices\": [\"red\", \"green\", \"blue\"], \"gold\": " +
            std::to_string(q % 3) + "}\n";
  }
  write(dir / "docs.jsonl", docs);
  write(dir / "t.yaml",
        "task: colors\ndata: ./docs.jsonl\noutput_type: multiple_choice\ndoc_to_text: \"Q: {{query}}\\nA:\"\n"
        "doc_to_choice: \"{{choices}}\"\ngold: \"{{gold}}\"\n");
  const eval::TaskSpec t = eval::load_task_file((dir / "t.yaml").string(), dir.string());
  const std::vector<std::string> color = {"red", "green", "blue"};
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    int64_t dropped = -1;
    const auto train = eval::instruction_examples(t, split_of("train", 4, seed), &dropped);
    const auto held = eval::split_indices(12, split_of("held_out", 4, seed), "t");
    const std::set<size_t> held_set(held.begin(), held.end());
    std::set<std::string> held_prompts;
    for (size_t i : held) held_prompts.insert("Q: " + raw[i].first + "\nA:");
    // Documents 3 and 11 are one prompt: when one of them is held out the other is left out of
    // training; otherwise both train.
    const bool split_pair = held_set.count(3) != held_set.count(11);
    EXPECT_EQ(dropped, split_pair ? 1 : 0) << "seed " << seed;
    EXPECT_EQ(train.size(), 8u - (split_pair ? 1 : 0));
    for (const auto& e : train) {
      EXPECT_FALSE(held_set.count(e.doc)) << e.doc;
      EXPECT_FALSE(held_prompts.count(e.prompt)) << e.prompt;
      EXPECT_EQ(e.prompt, "Q: " + raw[e.doc].first + "\nA:");
      EXPECT_EQ(e.response, " " + color[static_cast<size_t>(raw[e.doc].second)]);
      const std::string line = "docs.jsonl:" + std::to_string(e.doc + 1);  // 1-based line of the document
      EXPECT_EQ(e.source.substr(e.source.size() - std::min(e.source.size(), line.size())), line);
    }
  }
  // The jsonl line and the overlap check: the training part of seed 1 against the held-out part of
  // seed 1 passes, against all documents it fails naming the document and the training line.
  const auto train = eval::instruction_examples(t, split_of("train", 4, 1));
  const nlohmann::json line = eval::instruction_json(t, train[0]);
  EXPECT_EQ(line["prompt"], train[0].prompt);
  EXPECT_EQ(line["response"], train[0].response);
  EXPECT_EQ(line["task"], "colors");
  EXPECT_EQ(line["doc"], train[0].doc);
  EXPECT_EQ(line["eos"], false);  // scored by log-likelihood: the response alone, no EOS target
  eval::TaskSpec gen = t;
  gen.output_type = eval::OutputType::GenerateUntil;
  EXPECT_FALSE(eval::instruction_json(gen, train[0]).contains("eos"));  // generation: EOS after the answer
  std::string jsonl;
  for (const auto& e : train) jsonl += eval::instruction_json(t, e).dump() + "\n";
  write(dir / "train.jsonl", jsonl);
  const auto held = eval::load_split_docs(t, split_of("held_out", 4, 1));
  EXPECT_EQ(held.docs.docs.size(), 4u);
  EXPECT_NO_THROW(eval::check_not_trained_on(t, held.docs, (dir / "train.jsonl").string()));
  const auto all = eval::load_split_docs(t, split_of("all", 0, 1));
  try {
    eval::check_not_trained_on(t, all.docs, (dir / "train.jsonl").string());
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.jsonl:"), std::string::npos) << what;
    EXPECT_NE(what.find("docs.jsonl:"), std::string::npos) << what;
  }
  fs::remove_all(dir);
}

TEST(TaskSplit, MultipleInputAndShippedTrainSplit) {
  const fs::path dir = temp_dir("wino");
  write(dir / "dev.jsonl",
        "{\"opts\": [\"The cat\", \"The dog\"], \"cont\": \"barked.\", \"g\": 1}\n"
        "{\"opts\": [\"Ann\", \"Bob\"], \"cont\": \"won.\", \"g\": 0}\n");
  write(dir / "train.jsonl", "{\"opts\": [\"A\", \"B\"], \"cont\": \"ran.\", \"g\": 0}\n");
  write(dir / "w.yaml",
        "task: wino\ndata: ./dev.jsonl\ntrain_data: ./train.jsonl\noutput_type: multiple_choice\n"
        "multiple_input: true\ndoc_to_choice: \"{{opts}}\"\ndoc_to_target: \"{{cont}}\"\ngold: \"{{g}}\"\n");
  const eval::TaskSpec t = eval::load_task_file((dir / "w.yaml").string(), dir.string());
  // The shipped split: train = train_data, held out = every document of data.
  const auto train = eval::instruction_examples(t, split_of("train", 0, 1));
  ASSERT_EQ(train.size(), 1u);
  EXPECT_EQ(train[0].prompt, "A");  // the context with the gold option
  EXPECT_EQ(train[0].response, " ran.");
  const auto held = eval::instruction_examples(t, split_of("held_out", 0, 1));
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0].prompt, "The dog");
  EXPECT_EQ(held[0].response, " barked.");
  EXPECT_EQ(held[1].prompt, "Ann");
  // A count with a shipped split is an error (it would be ignored).
  EXPECT_THROW(eval::load_split_docs(t, split_of("train", 1, 1)), InputError);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt
