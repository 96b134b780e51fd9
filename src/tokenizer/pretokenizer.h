// Byte-level BPE pre-tokenization: the text is cut into pieces by a sequence of regexes (PCRE2,
// UTF + UCP so \p{L}, \p{N}, \s follow Unicode). Each regex is applied to every piece left by the
// previous one; both its matches and the unmatched stretches between them become pieces, the way
// Hugging Face's Split(behavior=Isolated) and llama.cpp's unicode_regex_split work.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llmopt::tok {

// The regex sequence llama.cpp uses for a GGUF tokenizer.ggml.pre name ("gpt2", "llama-bpe",
// "qwen2", "deepseek-coder", ...). Unknown names get llama.cpp's default sequence; `known` (if
// given) tells whether the name was recognized.
std::vector<std::string> pretokenizer_regexes(std::string_view pre_name, bool* known = nullptr);

// GPT-2's ByteLevel regex as Hugging Face tokenizers writes it.
extern const char* const kGpt2Regex;

class PreTokenizer {
 public:
  // Compiles every regex; InputError "[tokenizer] SOURCE: bad pre-tokenizer regex ..." if one
  // does not compile.
  PreTokenizer(const std::vector<std::string>& regexes, const std::string& source);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `text` into pieces (views into `text`) that concatenate back to it. Bytes that are
  // not valid UTF-8 are never given to the regexes: each becomes a piece of its own.
  std::vector<std::string_view> split(std::string_view text) const;

 private:
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> compiled_;
};

}  // namespace llmopt::tok
