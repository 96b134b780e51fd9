// A small probabilistic grammar that writes TinyStories-like English ("Once upon a time, there was
// a little girl named Lily. She liked to play with her red ball...") for training the quickstart
// model without any downloaded data. Stories have characters with consistent names and pronouns,
// objects, places, feelings, dialogue and one of several simple plots, so a tiny model has both
// local (grammar) and long-range (who is "she", which object was lost) structure to learn.
// Output is a pure function of the seed: the same seed gives the same bytes on every platform
// (own PRNG, no std:: distributions).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace llmopt::train {

// SplitMix64: tiny, fast, fully specified, so grammar output never depends on the standard library.
class StoryRng {
 public:
  explicit StoryRng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, n); n > 0. The modulo bias (n / 2^64) is irrelevant for a text grammar.
  uint64_t below(uint64_t n) { return next() % n; }
  // True with probability percent / 100.
  bool chance(int percent) { return static_cast<int>(below(100)) < percent; }

 private:
  uint64_t state_;
};

// One story (one or more paragraphs separated by "\n\n"), drawn from rng.
std::string generate_story(StoryRng& rng);

// Stories separated by blank lines ("\n\n") until the text holds at least min_bytes bytes; ends
// with a single "\n". ASCII only. Deterministic for a seed.
std::string generate_stories(uint64_t seed, size_t min_bytes);

}  // namespace llmopt::train
