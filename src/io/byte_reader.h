// Bounds-checked little-endian reads over a byte range, for the binary parsers (GGUF, llama2.c,
// safetensors). Every read checks the remaining length first and throws InputError
// "[component] file: ..." instead of reading past the end.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"

namespace llmopt::io {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, uint64_t size, std::string_view component, std::string_view file)
      : data_(data), size_(size), component_(component), file_(file) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }
  const uint8_t* here() const { return data_ + pos_; }

  // Throws unless `n` more bytes are available; `what` names the field being read.
  void need(uint64_t n, std::string_view what) const {
    if (n > remaining())
      throw_input(
          "[{}] {}: truncated: {} needs {} bytes at offset {}, only {} left (file is {} bytes)",
          component_, file_, what, n, pos_, remaining(), size_);
  }
  void skip(uint64_t n, std::string_view what) {
    need(n, what);
    pos_ += n;
  }
  void seek(uint64_t p, std::string_view what) {
    if (p > size_)
      throw_input("[{}] {}: {} at offset {} is past end of file ({} bytes)", component_, file_,
                  what, p, size_);
    pos_ = p;
  }
  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_,
                sizeof(T));  // files are little-endian, as is every host we build for
    pos_ += sizeof(T);
    return v;
  }
  std::string_view read_bytes(uint64_t n, std::string_view what) {
    need(n, what);
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string_view component_;
  std::string_view file_;
};

}  // namespace llmopt::io
