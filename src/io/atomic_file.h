// Crash-safe output: bytes go to a temporary file in the destination's directory, which is
// flushed, fsync'ed and renamed over the destination only on commit(). Destroying an AtomicFile
// without commit() deletes the temporary, so a failed or interrupted write never leaves a file
// that looks complete (STYLE.md "Nothing is written in place").
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmopt::io {

class AtomicFile {
 public:
  // Creates "<dir>/.<name>.tmp-XXXXXX" with mode 0666 & ~umask (what a plain write would give).
  // InputError naming `path` if the directory does not exist, RunError if it is not writable.
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes; RunError naming the destination on failure (e.g. "No space left on device").
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void write_zeros(size_t n);
  template <typename T>
  void write_pod(const T& v) {
    write(&v, sizeof(T));
  }
  uint64_t bytes_written() const { return written_; }

  // Flushes, fsyncs, renames over the destination and fsyncs the directory.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void flush_buffer();
  [[noreturn]] void fail(std::string_view what, int err);

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t written_ = 0;
  std::vector<char> buffer_;  // write-behind buffer (1 MiB) so small writes are cheap
};

// Writes a whole file atomically.
void write_file_atomic(const std::string& path, std::string_view contents);

}  // namespace llmopt::io
