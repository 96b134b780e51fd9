// Content-addressed stage cache. A stage's key is the sha256 of everything its output depends
// on: the hash of the input state (weights + tokenizer), the stage type and canonical options,
// the hashes of the data files it reads, the seed, the thread count and the llmopt version and
// commit. An entry holds the stage's metrics entry, copies of its artifacts and (for stages that
// change the model) the output weights, so an unchanged prefix of a recipe is skipped on rerun.
//
// Layout: ROOT/<key[0:2]>/<key>/{entry.json, artifacts/..., model/...}; entries are written into a
// temporary directory and renamed, so a reader sees whole entries or none.
// ROOT: $LLMOPT_CACHE_DIR, else $XDG_CACHE_HOME/llmopt/stages, else ~/.cache/llmopt/stages.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace llmopt::pipeline {

std::string default_cache_dir();

class StageCache {
 public:
  explicit StageCache(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  std::string entry_dir(const std::string& key) const;
  // The entry's JSON when present and complete.
  std::optional<nlohmann::json> lookup(const std::string& key) const;
  // Stores `entry` with the listed artifacts (relative to run_dir) and an optional model dir.
  // Failures are warnings only: a cache is an optimization.
  void store(const std::string& key, const nlohmann::json& entry, const std::string& run_dir,
             const std::vector<std::string>& artifacts, const std::string& model_dir) const;
  // Copies the entry's artifacts into run_dir (each atomically). Returns false if any is missing.
  bool restore_artifacts(const std::string& key, const std::string& run_dir,
                         const std::vector<std::string>& artifacts) const;

 private:
  std::string root_;
};

// Copies a file through a temporary and a rename (hard link when possible).
void copy_file_atomic(const std::string& from, const std::string& to);

}  // namespace llmopt::pipeline
