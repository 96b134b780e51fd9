// The tokenizer's data model, shared by every loader, the encoders and the exporters: pieces as
// stored in the source file, per-token scores and types (GGUF's token types), BPE merges, special
// ids and the flags that change how text is encoded. Format-independent and torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llmopt::tok {

// GGUF tokenizer.ggml.token_type codes (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

// Which encoding algorithm a vocabulary uses.
enum class VocabKind {
  // SentencePiece BPE ("llama" in GGUF): spaces become U+2581, a dummy-prefix space, merges of
  // adjacent pieces by highest score (or by merge rank when the source gave merges), byte fallback
  // to <0xXX> pieces.
  Spm,
  // GPT-2 byte-level BPE ("gpt2" in GGUF): regex pre-tokenization, bytes mapped to printable
  // code points, merges ranked by their order in the merges list.
  ByteLevelBpe,
};

struct Vocab {
  VocabKind kind = VocabKind::Spm;
  // Pieces as the source stores them: SPM pieces use U+2581 for space and <0xXX> for bytes,
  // byte-level pieces use GPT-2's byte-to-code-point mapping. Control and user-defined pieces are
  // raw text (they are matched against the input before any normalization).
  std::vector<std::string> tokens;
  std::vector<float> scores;     // same length as tokens (0 where the source has none)
  std::vector<TokenType> types;  // same length as tokens
  // Merges in rank order (rank 0 merges first). Required for byte-level BPE; optional for SPM,
  // where they replace score order when present (Hugging Face tokenizer.json).
  std::vector<std::pair<std::string, std::string>> merges;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = false;  // the model's tokenizer config asks for BOS at the start
  bool add_eos = false;
  bool add_space_prefix = true;  // SPM: prepend a space to text at the start / after a special
  // SPM: SentencePiece's normalizer option: drop leading and trailing spaces and collapse runs of
  // spaces to one before encoding (llama.cpp has no such option; Llama models leave it off).
  bool remove_extra_whitespaces = false;
  bool byte_fallback = true;     // SPM: unknown characters become <0xXX> byte pieces
  bool ignore_merges = false;    // BPE: a pre-token that is a whole vocab entry is taken as is
  // Byte-level BPE pre-tokenizer: the GGUF tokenizer.ggml.pre name (selects llama.cpp's regex
  // family) and/or explicit regexes applied in sequence (from tokenizer.json); explicit regexes
  // win when present.
  std::string pre = "default";
  std::vector<std::string> pre_regexes;
  bool add_prefix_space = false;  // BPE (ByteLevel add_prefix_space): prepend ' ' to the text

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  bool valid_id(int64_t id) const { return id >= 0 && id < static_cast<int64_t>(tokens.size()); }
  TokenType type(int32_t id) const { return types[static_cast<size_t>(id)]; }
  // Checks lengths, id ranges and kinds; InputError "[tokenizer] SOURCE: ..." on the first problem.
  void validate(const std::string& source) const;
};

const char* token_type_name(TokenType t);

// The smallest usable vocabulary, for models made without a tokenizer (`llmopt synth`): SPM kind
// laid out like Llama 2's, id 0 <unk>, 1 <s> (added by default), 2 </s>, 3..258 the byte pieces
// <0x00>..<0xFF>, 259 the space piece U+2581, then unused pieces "<unused_N>" up to `size`: every
// text encodes byte by byte (spaces as U+2581). InputError if `size` < kByteVocabSize.
constexpr int32_t kByteVocabSize = 3 + 256 + 1;
Vocab byte_fallback_vocab(int32_t size);

}  // namespace llmopt::tok
