// Trains a small SentencePiece-style BPE vocabulary from text (as SentencePiece's BPE trainer
// with byte_fallback=true, split_by_whitespace=true would): words are counted once, the most
// frequent adjacent pair of symbols is merged until the vocabulary is full, each new piece gets
// score -(merge index), and the characters of the text follow with lower scores. Deterministic:
// ties between equally frequent pairs go to the lexicographically smallest (left, right).
#pragma once
#include <cstdint>
#include <string_view>

#include "train/bpe_vocabulary.h"

namespace llmopt::train {

struct BpeTrainerOptions {
  // Total size including the 3 specials and 256 byte tokens (so at least 259).
  int64_t vocab_size = 512;
  // Longest merged piece in bytes (SentencePiece's max_sentencepiece_length default).
  int64_t max_piece_bytes = 16;
};

// Characters that do not fit (more distinct characters than vocab_size - 259) are left out,
// rarest first, and fall back to byte tokens. Stops early (a smaller vocabulary) if no pair is
// left to merge. Throws InputError for vocab_size < 259.
BpeVocabulary train_bpe(std::string_view text, const BpeTrainerOptions& options = {});

}  // namespace llmopt::train
