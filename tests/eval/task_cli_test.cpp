// `llmopt eval --tasks` bad input exits 2 with a message naming the problem (issue 11): an unknown
// task lists the known ones, a task file missing a field names file:line, a document without
// choices names its file:line, more few-shot examples than the pool holds names the pool.
#include <gtest/gtest.h>

#include "../common/reference_files.h"
#include "../pipeline/pipeline_test_util.h"

namespace llmopt::testing {
namespace {

const std::string kModel = shell_quote(testref::kStories + "stories260K.bin") + " --tokenizer " +
                           shell_quote(testref::kStories + "tok512.bin");

TEST(TaskCli, BadInputExits2) {
  const fs::path dir = make_temp_dir("task-cli");
  auto expect2 = [&](const std::string& args, const std::string& needle) {
    const auto r = run_llmopt("-q eval " + kModel + " " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << args << "\n" << r.output;
  };
  expect2("--tasks arc_easy,no_such_task", "unknown task 'no_such_task'");
  expect2("--tasks arc_easy,no_such_task", "arc_challenge, arc_easy, boolq, commonsense_qa");
  write_text(dir / "docs.jsonl", "{\"q\": \"a\", \"c\": [\"x\"], \"g\": 0}\n{\"q\": \"b\", \"c\": [], \"g\": 0}\n");
  write_text(dir / "nogold.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                  "doc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\n");
  expect2("--tasks " + shell_quote((dir / "nogold.yaml").string()), "nogold.yaml:1: missing field 'gold'");
  write_text(dir / "empty.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                 "doc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ngold: \"{{g}}\"\n");
  expect2("--tasks " + shell_quote((dir / "empty.yaml").string()), "docs.jsonl:2 has no choices");
  // COPA has 100 documents: 99 besides the evaluated one.
  expect2("--tasks copa --num-fewshot 100 --limit 1", "100 few-shot examples asked");
  const auto list = run_llmopt("eval --tasks list");
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_NE(list.output.find("winogrande"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::testing
