// Our SentencePiece-BPE encoder against SentencePiece's own (libsentencepiece, run in the helper
// spm_reference_encode) on the Llama-2 tokenizer.model: identical ids on every shared text (first
// 20 kB), on the whole TinyStories file and on edge cases, and decode(encode(x)) == x.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_data_util.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {
namespace {

using testing::read_file;
using testing::shared_path;
using testing::shared_text_files;
using testing::utf8_head;

// Encodes every text with SentencePiece through the helper; one id list per text.
std::vector<std::vector<int32_t>> reference_encode(const std::string& model,
                                                   const std::vector<std::string>& texts) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("llmopt-spm-ref-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string command = std::string(LLMOPT_SPM_REFERENCE_ENCODE) + " '" + model + "'";
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto path = dir / ("text" + std::to_string(i) + ".txt");
    std::ofstream(path, std::ios::binary) << texts[i];
    command += " '" + path.string() + "'";
  }
  std::vector<std::vector<int32_t>> result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::string output;
  char buffer[65536];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  std::filesystem::remove_all(dir);
  if (status != 0) return {};
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ids(line);
    result.emplace_back();
    for (int32_t id; ids >> id;) result.back().push_back(id);
  }
  return result;
}

void expect_same_as_sentencepiece(const std::vector<std::string>& texts,
                                  const std::vector<std::string>& names) {
  const std::string model = shared_path("tokenizers/llama2-32000/tokenizer_llama32000.model");
  const auto ours = load_tokenizer_file(model);
  const auto expected = reference_encode(model, texts);
  ASSERT_EQ(expected.size(), texts.size()) << "spm_reference_encode failed";
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto got = ours->encode(texts[i], {.add_bos = false, .parse_special = false});
    size_t first_diff = 0;
    while (first_diff < std::min(got.size(), expected[i].size()) &&
           got[first_diff] == expected[i][first_diff]) {
      ++first_diff;
    }
    EXPECT_TRUE(got == expected[i])
        << names[i] << ": " << got.size() << " vs " << expected[i].size()
        << " tokens, first difference at " << first_diff;
    EXPECT_EQ(ours->decode(got), texts[i]) << names[i];
  }
}

TEST(SpmReference, SharedTextHeadsMatchSentencePiece) {
  std::vector<std::string> texts;
  for (const std::string& file : shared_text_files()) {
    texts.push_back(utf8_head(read_file(shared_path(file)), 20000));
  }
  expect_same_as_sentencepiece(texts, shared_text_files());
}

TEST(SpmReference, WholeTinyStoriesMatchesSentencePiece) {
  expect_same_as_sentencepiece({read_file(shared_path("text/tinystories_val.txt"))},
                               {"tinystories_val.txt"});
}

TEST(SpmReference, EdgeCasesMatchSentencePiece) {
  const std::vector<std::string> texts = {"Hello world",
                                          " Hello  world ",
                                          "a\n\nb\tc",
                                          "🦙 emoji, 中文 and \x7f control",
                                          "unseen: \xe1\xb8\x80\xf0\x9f\x98\x81",
                                          "<s> and </s> are plain text here",
                                          "x"};
  expect_same_as_sentencepiece(texts, texts);
}

}  // namespace
}  // namespace llmopt::tok
