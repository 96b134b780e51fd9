#include "tokenizer/vocab.h"

#include <string>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::Undefined:
      return "undefined";
    case TokenType::Normal:
      return "normal";
    case TokenType::Unknown:
      return "unknown";
    case TokenType::Control:
      return "control";
    case TokenType::UserDefined:
      return "user-defined";
    case TokenType::Unused:
      return "unused";
    case TokenType::Byte:
      return "byte";
  }
  return "?";
}

Vocab byte_fallback_vocab(int32_t size) {
  LLMOPT_CHECK_INPUT(size >= kByteVocabSize,
                     "[tokenizer] a byte-fallback vocabulary needs at least {} tokens (<unk>, <s>, "
                     "</s>, 256 bytes and the space piece), asked for {}",
                     kByteVocabSize, size);
  Vocab v;
  v.kind = VocabKind::Spm;
  const auto add = [&](std::string piece, TokenType type) {
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(0.0f);
    v.types.push_back(type);
  };
  add("<unk>", TokenType::Unknown);
  add("<s>", TokenType::Control);
  add("</s>", TokenType::Control);
  for (int b = 0; b < 256; ++b) add(byte_piece(static_cast<uint8_t>(b)), TokenType::Byte);
  add("\xE2\x96\x81", TokenType::Normal);  // U+2581: a space (bytes would decode to a literal '▁')
  for (int32_t id = kByteVocabSize; id < size; ++id)
    add("<unused_" + std::to_string(id - kByteVocabSize) + ">", TokenType::Unused);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  v.byte_fallback = true;
  return v;
}

void Vocab::validate(const std::string& source) const {
  LLMOPT_CHECK_INPUT(!tokens.empty(), "[tokenizer] {}: vocabulary is empty", source);
  LLMOPT_CHECK_INPUT(scores.size() == tokens.size(), "[tokenizer] {}: {} scores for {} tokens",
                     source, scores.size(), tokens.size());
  LLMOPT_CHECK_INPUT(types.size() == tokens.size(), "[tokenizer] {}: {} token types for {} tokens",
                     source, types.size(), tokens.size());
  for (size_t i = 0; i < types.size(); ++i) {
    const auto t = static_cast<int32_t>(types[i]);
    LLMOPT_CHECK_INPUT(t >= 0 && t <= 6, "[tokenizer] {}: token {} has type {}, expected 0..6",
                       source, i, t);
  }
  const auto check_id = [&](int32_t id, const char* what) {
    LLMOPT_CHECK_INPUT(id == -1 || valid_id(id), "[tokenizer] {}: {} id {} out of range [0, {})",
                       source, what, id, tokens.size());
  };
  check_id(bos_id, "BOS");
  check_id(eos_id, "EOS");
  check_id(unk_id, "unknown-token");
  check_id(pad_id, "padding");
  LLMOPT_CHECK_INPUT(kind != VocabKind::ByteLevelBpe || !merges.empty() || tokens.size() <= 256,
                     "[tokenizer] {}: byte-level BPE vocabulary of {} tokens has no merges", source,
                     tokens.size());
}

}  // namespace llmopt::tok
