// Collects every problem found in a recipe, each with its location, so the user sees all of them
// at once; throw_if_any() turns them into one InputError (exit code 2) whose lines read
// "[recipe] FILE:LINE:COLUMN: message".
#pragma once
#include <string>
#include <vector>

#include "stages/config_node.h"

namespace llmopt::stages {

struct Diagnostic {
  SourceLoc loc;
  std::string message;
};

class Diagnostics {
 public:
  void error(const SourceLoc& loc, std::string message);
  bool empty() const { return errors_.empty(); }
  size_t size() const { return errors_.size(); }
  const std::vector<Diagnostic>& errors() const { return errors_; }
  std::string format() const;
  void throw_if_any() const;

 private:
  std::vector<Diagnostic> errors_;
};

// Levenshtein distance, and the closest candidate to `word` when it is plausibly a typo.
size_t edit_distance(const std::string& a, const std::string& b);
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);
// " (did you mean 'x'?)" or "" when nothing is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

}  // namespace llmopt::stages
