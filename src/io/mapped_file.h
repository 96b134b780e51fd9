// A read-only view of a whole file's bytes: memory-mapped from disk (the usual case) or owned in
// memory (tests and fuzzers build inputs without touching the disk). Empty files are valid
// (data() is nullptr, size() is 0).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmopt::io {

class MappedFile {
 public:
  // Maps `path` read-only. InputError "[io] PATH: ..." if it cannot be opened or is a directory.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // Wraps bytes already in memory; `name` stands in for the path in error messages.
  static std::shared_ptr<const MappedFile> from_bytes(std::vector<uint8_t> bytes, std::string name);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;         // data_ came from mmap and must be unmapped
  std::vector<uint8_t> owned_;  // backing store of from_bytes()
};

// Reads a whole (small) file into a string: config.json, index files. InputError if unreadable.
std::string read_text_file(const std::string& path, const char* component);

}  // namespace llmopt::io
