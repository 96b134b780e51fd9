// A SentencePiece-style BPE vocabulary as the BPE trainer produces it, laid out like llama2.c's
// tok512 / Llama 2's tokenizer: id 0 <unk>, 1 <s>, 2 </s>, 3..258 byte-fallback tokens <0x00>..
// <0xFF>, then merged pieces in merge order (score = -merge index), then single characters
// (scores continuing downwards). Spaces are literal ' ' (as in llama2.c's tokenizer.bin), not
// U+2581.
//
// Also holds a reference encoder/decoder for such vocabularies (the llama2.c / SentencePiece BPE
// algorithm: add a dummy-prefix space, split into characters with byte fallback, repeatedly merge
// the adjacent pair whose concatenation is a piece with the highest score, leftmost on ties). It
// is used by tests and as an independent cross-check of the tokenizer layer.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/vocab.h"

namespace llmopt::train {

// Values as in SentencePiece's ModelProto.SentencePiece.Type.
enum class PieceType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Byte = 6 };

struct BpeVocabulary {
  std::vector<std::string> pieces;  // index = token id
  std::vector<float> scores;        // same length
  std::vector<PieceType> types;     // same length

  static constexpr int64_t kUnkId = 0;
  static constexpr int64_t kBosId = 1;
  static constexpr int64_t kEosId = 2;
  static constexpr int64_t kFirstByteId = 3;  // <0x00>; byte b is id 3 + b
  static constexpr int64_t kNumSpecial = 3 + 256;

  int64_t size() const { return static_cast<int64_t>(pieces.size()); }
  void add(std::string piece, float score, PieceType type);
};

// The first 259 entries: <unk>, <s>, </s>, <0x00>..<0xFF> (all score 0).
BpeVocabulary special_and_byte_pieces();

// The tokenizer layer's data model of the same vocabulary (SPM kind: ' ' spelled U+2581, BOS/EOS/
// UNK ids 1/2/0, BOS added by default, dummy-prefix space, byte fallback), for tok::make_tokenizer.
tok::Vocab to_tokenizer_vocab(const BpeVocabulary& vocab);

// Writes llama2.c's tokenizer.bin: int32 max_token_length, then per token f32 score, i32 byte
// length, bytes. BOS/EOS are written as "\n<s>\n" / "\n</s>\n" exactly like llama2.c's exporter
// (and tok512.bin) so every llama2.c-compatible reader treats them the same way. Written to a
// temporary file in the same directory and renamed (never a half-written file).
void write_llama2c_tokenizer(const BpeVocabulary& vocab, const std::string& path);

class BpeEncoder {
 public:
  // Requires the layout above: no piece contains a space except at its first byte, and no piece
  // mixes '\n' with other characters (the BPE trainer guarantees both). That lets the encoder
  // work word by word with a cache while giving exactly the whole-text greedy result.
  explicit BpeEncoder(const BpeVocabulary& vocab);

  // Token ids of text with a dummy-prefix space (when text is non-empty), optionally BOS first.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // Inverse of encode: specials skipped, byte tokens emitted as raw bytes, the dummy-prefix space
  // of the first piece removed.
  std::string decode(const std::vector<int32_t>& ids) const;

 private:
  std::vector<int32_t> encode_word(std::string_view word) const;

  const BpeVocabulary& vocab_;
  std::unordered_map<std::string, int32_t> piece_ids_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> word_cache_;
};

// Splits text into the units that BPE pieces never cross: a run of '\n', or an optional single
// leading space followed by characters other than ' ' and '\n'. Concatenating the words gives text
// back.
std::vector<std::string_view> split_bpe_words(std::string_view text);

// Length in bytes of the UTF-8 character starting with byte lead (1 for invalid lead bytes, so
// malformed text still splits into byte-fallback tokens).
size_t utf8_char_length(unsigned char lead);

}  // namespace llmopt::train
