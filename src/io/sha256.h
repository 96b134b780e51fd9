// SHA-256 (FIPS 180-4) of a buffer or of a file read in chunks; used for run manifests and
// checksums of exported files.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace llmopt::io {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  std::array<uint8_t, 32> finish();  // the object must not be updated afterwards
  std::string finish_hex();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> block_{};
  size_t block_len_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lowercase hex digest.
std::string sha256_hex(const void* data, size_t n);
std::string sha256_hex(std::string_view s);
// Streams the file; InputError naming the file if it cannot be read.
std::string sha256_file_hex(const std::string& path);

}  // namespace llmopt::io
