// Loading a tokenizer from a TokenizerSource or from a file detected by content.
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {
namespace {

enum class FileKind { Gguf, HfJson, SentencePiece, Llama2c };

FileKind detect_kind(const std::string& path, std::string_view head) {
  const std::string ext = std::filesystem::path(path).extension().string();
  if (head.size() >= 4 && head.substr(0, 4) == "GGUF") return FileKind::Gguf;
  const size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && head[first] == '{') return FileKind::HfJson;
  if (ext == ".model") return FileKind::SentencePiece;
  if (ext == ".bin") return FileKind::Llama2c;
  // llama2.c starts with a small little-endian int32 (max_token_length: upper bytes zero); a
  // SentencePiece ModelProto starts with field 1 (0x0A), a length, then the piece tag 0x0A.
  if (head.size() >= 4 && head[2] == 0 && head[3] == 0) return FileKind::Llama2c;
  if (head.size() >= 3 && head[0] == 0x0A) return FileKind::SentencePiece;
  throw_input(
      "[tokenizer] {}: unrecognized tokenizer file (expected GGUF, tokenizer.json, "
      "SentencePiece tokenizer.model or llama2.c tokenizer.bin)",
      path);
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path) {
  const auto file = io::MappedFile::open(path);
  const std::string_view bytes(reinterpret_cast<const char*>(file->data()), file->size());
  switch (detect_kind(path, bytes.substr(0, 64))) {
    case FileKind::Gguf:
      return make_tokenizer(load_gguf_vocab(path), path);
    case FileKind::HfJson:
      return make_tokenizer(load_hf_tokenizer_json(path), path);
    case FileKind::SentencePiece:
      return make_tokenizer(parse_sentencepiece_model(bytes, path), path);
    case FileKind::Llama2c:
      return make_tokenizer(parse_llama2c_tokenizer(bytes, path), path);
  }
  throw_input("[tokenizer] {}: unrecognized tokenizer file", path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const io::TokenizerSource& src,
                                          int32_t llama2c_vocab_size) {
  using Kind = io::TokenizerSource::Kind;
  switch (src.kind) {
    case Kind::HfJson:
      return make_tokenizer(load_hf_tokenizer_json(src.path), src.path);
    case Kind::SentencePieceModel:
      return make_tokenizer(load_sentencepiece_model(src.path), src.path);
    case Kind::Llama2cBin:
      return make_tokenizer(load_llama2c_tokenizer(src.path, llama2c_vocab_size), src.path);
    case Kind::Gguf:
      return make_tokenizer(load_gguf_vocab(src.path), src.path);
    case Kind::None:
      break;
  }
  throw_input("[tokenizer] no tokenizer found for this model{}{} (give one with --tokenizer)",
              src.path.empty() ? "" : ": ", src.path);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  io::AtomicFile out(path);
  out.write(bytes);
  out.commit();
}

}  // namespace llmopt::tok
