// Helpers for the io tests: temp directories, raw little-endian byte building, and small random
// checkpoints.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/checkpoint_tensors.h"

namespace llmopt::io::testing {

// A fresh, empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() /
              ("llmopt_io_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Appends little-endian values.
class Bytes {
 public:
  template <typename T>
  Bytes& pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data_.insert(data_.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& u32(uint32_t v) { return pod(v); }
  Bytes& i32(int32_t v) { return pod(v); }
  Bytes& u64(uint64_t v) { return pod(v); }
  Bytes& f32(float v) { return pod(v); }
  Bytes& raw(const std::string& s) {
    data_.insert(data_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& gguf_string(const std::string& s) { return u64(s.size()).raw(s); }
  Bytes& zeros(size_t n) {
    data_.insert(data_.end(), n, 0);
    return *this;
  }
  Bytes& pad_to(size_t alignment) {
    return zeros((alignment - data_.size() % alignment) % alignment);
  }
  size_t size() const { return data_.size(); }
  std::vector<uint8_t>& data() { return data_; }
  void write(const std::string& path) const {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data_.data()),
              static_cast<std::streamsize>(data_.size()));
  }

 private:
  std::vector<uint8_t> data_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A small Llama config: dim 64, 2 layers, 4 heads of 16, 2 KV heads, FFN 96, vocab 64.
inline ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 64;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

// Every expected tensor of `cfg` filled with uniform(-1, 1) f32 values from `seed`.
inline Checkpoint random_checkpoint(const ModelConfig& cfg, uint32_t seed = 1) {
  Checkpoint ck;
  ck.config = cfg;
  ck.path = "random";
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const auto& e : expected_tensors(cfg)) {
    TensorView v;
    v.name = e.name;
    v.shape = e.shape;
    v.dtype = DType::F32;
    v.nbytes = 4 * v.numel();
    auto* p = reinterpret_cast<float*>(own_buffer(ck, static_cast<size_t>(v.nbytes)));
    for (int64_t k = 0; k < v.numel(); ++k) p[k] = u(rng);
    v.data = reinterpret_cast<const uint8_t*>(p);
    ck.tensors.push_back(v);
  }
  return ck;
}

}  // namespace llmopt::io::testing
