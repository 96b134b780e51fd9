// Bytes as tokens (mod 90), no BOS or EOS: a tokenizer for calibration windows in model tests,
// independent of any vocabulary file.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace llmopt::testing {

class ByteTokenizer : public tok::Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, const tok::EncodeOptions&) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c % 90);
    return ids;
  }
  std::string decode(std::span<const int32_t>) const override { return {}; }
  std::string token_piece(int32_t) const override { return {}; }
  std::string decode_token(int32_t) const override { return {}; }
  int32_t vocab_size() const override { return 90; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
  bool add_bos_default() const override { return false; }
  const tok::Vocab& vocab() const override { return vocab_; }

 private:
  tok::Vocab vocab_;
};

}  // namespace llmopt::testing
