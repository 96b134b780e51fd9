// Public tokenizer API used by the engine, the CLI and exporters: one Tokenizer interface over
// SentencePiece-style BPE and GPT-2 byte-level BPE vocabularies, loaders for every supported file
// (tokenizer.json, tokenizer.model, llama2.c tokenizer.bin, GGUF metadata) and exporters back to
// those formats. Torch-free.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint.h"
#include "io/gguf_value.h"
#include "tokenizer/vocab.h"

namespace llmopt::io {
class GgufFile;
}

namespace llmopt::tok {

struct EncodeOptions {
  bool add_bos = true;         // prepend BOS when the vocabulary has one
  bool parse_special = false;  // match control tokens ("<s>", "<|endoftext|>") written in the text
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions& o = {}) const = 0;
  virtual std::string decode(std::span<const int32_t> ids) const = 0;  // full text
  virtual std::string token_piece(int32_t id) const = 0;   // the raw vocab piece for display
  virtual std::string decode_token(int32_t id) const = 0;  // bytes this token contributes
  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 if none
  virtual int32_t eos_id() const = 0;
  virtual bool add_bos_default() const = 0;  // what the model's tokenizer config says
  // The vocabulary behind this tokenizer (for exports and `info`).
  virtual const Vocab& vocab() const = 0;
};

// Builds the encoder for a vocabulary (checks it first: InputError naming `source`).
std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab, const std::string& source);

// `llama2c_vocab_size`: for Llama2cBin sources, the model's vocab_size (the file has no count);
// -1 reads tokens to the end of the file.
std::unique_ptr<Tokenizer> load_tokenizer(const io::TokenizerSource& src,
                                          int32_t llama2c_vocab_size = -1);
// Detects the format by content: GGUF magic, JSON object, SentencePiece protobuf, llama2.c bin.
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path);

// ---- Loaders to the data model (InputError "[tokenizer] PATH: ..." on malformed input) ----
Vocab load_hf_tokenizer_json(const std::string& path);  // reads tokenizer_config.json beside it
// `config_json`: the tokenizer_config.json beside it (BOS/EOS pieces, add_bos_token), if any.
// Without it, BOS comes from a TemplateProcessing post-processor or conventional piece names.
Vocab parse_hf_tokenizer_json(std::string_view json_text, const std::string& source,
                              std::string_view config_json = {});
Vocab load_sentencepiece_model(const std::string& path);
Vocab parse_sentencepiece_model(std::string_view bytes, const std::string& source);
// llama2.c tokenizer.bin. vocab_size < 0: read tokens until the end of the file.
Vocab load_llama2c_tokenizer(const std::string& path, int32_t vocab_size = -1);
Vocab parse_llama2c_tokenizer(std::string_view bytes, const std::string& source,
                              int32_t vocab_size = -1);
Vocab load_gguf_vocab(const std::string& path);
Vocab vocab_from_gguf(const io::GgufFile& file);
// From GGUF key/values (as read from a file or as produced by export_gguf_kvs).
Vocab vocab_from_gguf_kvs(const std::vector<io::GgufKeyValue>& kvs, const std::string& source);

// ---- Exports ----
// GGUF tokenizer.ggml.* key/values for a "llama" (SPM) or "gpt2" (byte-level) vocabulary, so that
// llama.cpp tokenizes the exported model exactly as the source.
std::vector<io::GgufKeyValue> export_gguf_kvs(const Vocab& vocab);
// llama2.c tokenizer.bin bytes (SPM vocabularies only: '▁' written as ' ', BOS/EOS as
// "\n<s>\n" / "\n</s>\n" like llama2.c's tokenizer.py).
std::string export_llama2c_tokenizer(const Vocab& vocab);
// Hugging Face tokenizer.json text (pretty-printed).
std::string export_hf_tokenizer_json(const Vocab& vocab);
// The tokenizer_config.json that goes beside it (bos/eos/unk/pad pieces, add_bos/add_eos).
std::string export_hf_tokenizer_config_json(const Vocab& vocab);
// Writes `bytes` to `path` through a temporary file and a rename.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace llmopt::tok
