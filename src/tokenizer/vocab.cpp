#include "tokenizer/vocab.h"

#include "core/error.h"

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
