// Run directory bookkeeping: the manifest (what ran, on what, built how), input hashing, and the
// metrics.json document (schema in docs/pipeline.md; the report renderer reads it).
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace llmopt::pipeline {

struct BuildInfo {
  std::string version = "0.0.0";
  std::string git_commit = "unknown";
  std::string build_type = "unknown";
};

// sha256 and size of input files, computed once per path (thread-safe).
class InputHashes {
 public:
  struct Entry {
    std::string path;
    std::string sha256;
    int64_t bytes = 0;
  };
  // A file, or every file of a directory (sorted by name).
  std::vector<Entry> add(const std::string& path);
  // One digest over a file or directory's contents (names and hashes of its files).
  std::string digest(const std::string& path);
  std::vector<Entry> all() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

std::string cpu_model_name();
std::string host_name();

// Writes JSON (2-space indent, trailing newline) atomically.
void write_json_atomic(const std::string& path, const nlohmann::json& j);
nlohmann::json read_json_file(const std::string& path);
// Removes temporary files a killed run left behind (".NAME.tmp-XXXXXX", ".export-*.tmp").
void remove_stale_temporaries(const std::string& dir);

}  // namespace llmopt::pipeline
