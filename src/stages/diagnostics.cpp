#include "stages/diagnostics.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace llmopt::stages {

void Diagnostics::error(const SourceLoc& loc, std::string message) {
  for (const auto& d : errors_)
    if (d.loc.str() == loc.str() && d.message == message) return;  // same problem seen twice
  errors_.push_back({loc, std::move(message)});
}

std::string Diagnostics::format() const {
  std::string out;
  for (size_t i = 0; i < errors_.size(); ++i) {
    if (i) out += "\n";
    out += fmt::format("[recipe] {}: {}", errors_[i].loc.str(), errors_[i].message);
  }
  return out;
}

void Diagnostics::throw_if_any() const {
  if (!errors_.empty()) throw InputError(format());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // A typo is at most a third of the word's letters away (at least 2 edits allowed), so 'ctxx'
  // suggests 'ctx' but 'foo' does not suggest 'seed'.
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_distance = limit + 1;
  for (const auto& c : candidates) {
    // A word that is the start of a candidate ('llama' for 'llamacpp') is a likely abbreviation.
    const bool prefix = word.size() >= 3 && c.size() > word.size() && c.compare(0, word.size(), word) == 0;
    const size_t d = prefix ? 1 : edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string m = closest_match(word, candidates);
  return m.empty() ? std::string() : fmt::format(" (did you mean '{}'?)", m);
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

}  // namespace llmopt::stages
