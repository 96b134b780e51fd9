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

// Drops the resident pages of [p, p + n) where they lie in a live mapping made by open() (read-only
// file pages: touched again, they are read back from the page cache), so a loader that has copied
// a tensor out of the file stops paying for it in resident memory. A no-op for other memory.
void release_mapped_pages(const void* p, size_t n);

// Reads a whole (small) file into a string: config.json, index files. InputError if unreadable.
std::string read_text_file(const std::string& path, const char* component);

}  // namespace llmopt::io
