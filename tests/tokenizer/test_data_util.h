// Helpers shared by the tokenizer data tests: reading ../shared files and llama.cpp's
// tokenizer test vectors (X.gguf.inp inputs separated by "\n__ggml_vocab_test__\n", X.gguf.out
// one line of space-separated expected ids per input).
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace llmopt::tok::testing {

inline std::string shared_path(const std::string& relative) {
  return std::string(LLMOPT_SHARED_DIR) + "/" + relative;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct VocabTestCase {
  std::string input;
  std::vector<int32_t> expected;
};

// Parses the pair exactly as llama.cpp's test-tokenizer-0.cpp read_tests() does: the .inp is cut
// at every separator (the trailing separator ends the last input), one .out line per input.
inline std::vector<VocabTestCase> read_vocab_tests(const std::string& inp_path,
                                                   const std::string& out_path) {
  const std::string raw = read_file(inp_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  for (size_t pos = 0; pos < raw.size();) {
    const size_t next = raw.find(sep, pos);
    if (next == std::string::npos) {
      inputs.push_back(raw.substr(pos));
      break;
    }
    inputs.push_back(raw.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::ifstream out(out_path);
  std::vector<VocabTestCase> cases;
  std::string line;
  for (size_t i = 0; std::getline(out, line); ++i) {
    VocabTestCase c;
    c.input = i < inputs.size() ? inputs[i] : std::string();
    std::istringstream ids(line);
    for (int64_t id; ids >> id;) c.expected.push_back(static_cast<int32_t>(id));
    cases.push_back(std::move(c));
  }
  if (cases.size() != inputs.size()) return {};  // mismatched pair: caller fails loudly
  return cases;
}

}  // namespace llmopt::tok::testing

namespace llmopt::tok::testing {

// The first `max_bytes` of `text`, cut back to a UTF-8 character boundary.
inline std::string utf8_head(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

inline const std::vector<std::string>& shared_text_files() {
  static const std::vector<std::string> files = {
      "text/tinyshakespeare.txt", "text/tinystories_val.txt", "text/wikitext2.test.raw",
      "text/wikitext2.test.tokens.txt", "text/wikitext2.valid.tokens.txt"};
  return files;
}

}  // namespace llmopt::tok::testing
