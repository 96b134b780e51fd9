#include "train/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace llmopt::train {
namespace {

constexpr int32_t kBarrier = -1;  // a character left out of the vocabulary: never merged

struct Word {
  std::vector<int32_t> symbols;  // indices into the symbol table, or kBarrier
  int64_t count = 0;
};

}  // namespace

BpeVocabulary train_bpe(std::string_view text, const BpeTrainerOptions& options) {
  LLMOPT_CHECK_INPUT(options.vocab_size >= BpeVocabulary::kNumSpecial,
                     "[bpe] vocab_size must be at least {} (3 specials + 256 byte tokens), found {}",
                     BpeVocabulary::kNumSpecial, options.vocab_size);
  LLMOPT_CHECK_INPUT(options.max_piece_bytes >= 2, "[bpe] max_piece_bytes must be at least 2, found {}",
                     options.max_piece_bytes);

  // Words exactly as the encoder will see them (dummy-prefix space included), counted once each.
  const std::string with_prefix = text.empty() ? std::string() : " " + std::string(text);
  std::map<std::string_view, int64_t> word_counts;
  for (std::string_view word : split_bpe_words(with_prefix)) ++word_counts[word];

  std::map<std::string, int64_t> char_counts;
  for (const auto& [word, count] : word_counts) {
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::min(utf8_char_length(static_cast<unsigned char>(word[i])), word.size() - i);
      char_counts[std::string(word.substr(i, len))] += count;
      i += len;
    }
  }
  std::vector<std::pair<std::string, int64_t>> chars(char_counts.begin(), char_counts.end());
  std::stable_sort(chars.begin(), chars.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  const int64_t room = options.vocab_size - BpeVocabulary::kNumSpecial;
  if (static_cast<int64_t>(chars.size()) > room) chars.resize(room);

  // Symbol table: kept characters first, merged pieces appended as they are created.
  std::vector<std::string> symbols;
  std::map<std::string, int32_t, std::less<>> symbol_ids;
  for (const auto& [ch, count] : chars) {
    symbol_ids.emplace(ch, static_cast<int32_t>(symbols.size()));
    symbols.push_back(ch);
  }
  std::vector<Word> words;
  words.reserve(word_counts.size());
  for (const auto& [word, count] : word_counts) {
    Word w;
    w.count = count;
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::min(utf8_char_length(static_cast<unsigned char>(word[i])), word.size() - i);
      auto it = symbol_ids.find(word.substr(i, len));
      w.symbols.push_back(it == symbol_ids.end() ? kBarrier : it->second);
      i += len;
    }
    words.push_back(std::move(w));
  }

  std::vector<std::string> merged_pieces;
  const int64_t max_merges = room - static_cast<int64_t>(chars.size());
  while (static_cast<int64_t>(merged_pieces.size()) < max_merges) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pair_counts;
    for (const Word& w : words) {
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        const int32_t a = w.symbols[i], b = w.symbols[i + 1];
        if (a == kBarrier || b == kBarrier) continue;
        if (static_cast<int64_t>(symbols[a].size() + symbols[b].size()) > options.max_piece_bytes) {
          continue;
        }
        pair_counts[{a, b}] += w.count;
      }
    }
    if (pair_counts.empty()) break;
    auto better = [&](const auto& x, const auto& y) {
      if (x.second != y.second) return x.second > y.second;
      const auto& [xa, xb] = x.first;
      const auto& [ya, yb] = y.first;
      if (symbols[xa] != symbols[ya]) return symbols[xa] < symbols[ya];
      return symbols[xb] < symbols[yb];
    };
    auto best = pair_counts.begin();
    for (auto it = pair_counts.begin(); it != pair_counts.end(); ++it) {
      if (better(*it, *best)) best = it;
    }
    const auto [left, right] = best->first;
    const std::string merged = symbols[left] + symbols[right];
    int32_t merged_id;
    if (auto it = symbol_ids.find(merged); it != symbol_ids.end()) {
      merged_id = it->second;  // same string reached through another split: no new piece
    } else {
      merged_id = static_cast<int32_t>(symbols.size());
      symbols.push_back(merged);
      symbol_ids.emplace(merged, merged_id);
      merged_pieces.push_back(merged);
    }
    for (Word& w : words) {
      std::vector<int32_t> out;
      out.reserve(w.symbols.size());
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          out.push_back(merged_id);
          ++i;
        } else {
          out.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(out);
    }
  }

  BpeVocabulary vocab = special_and_byte_pieces();
  float score = 0.0f;
  for (const std::string& piece : merged_pieces) {
    vocab.add(piece, score, PieceType::Normal);
    score -= 1.0f;
  }
  for (const auto& [ch, count] : chars) {
    vocab.add(ch, score, PieceType::Normal);
    score -= 1.0f;
  }
  return vocab;
}

}  // namespace llmopt::train
