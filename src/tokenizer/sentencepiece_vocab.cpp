// SentencePiece tokenizer.model (protobuf ModelProto) -> Vocab, parsed with our own schema
// (sentencepiece_model.proto, compiled by layer.cmake) and the system protobuf.
#include "core/error.h"
#include "core/log.h"
#include "io/mapped_file.h"
#include "tokenizer/sentencepiece_model.pb.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {

Vocab parse_sentencepiece_model(std::string_view bytes, const std::string& source) {
  spm::ModelProto model;
  LLMOPT_CHECK_INPUT(bytes.size() < (size_t{1} << 31),
                     "[tokenizer] {}: {} bytes, too large for a SentencePiece model (< 2 GiB)",
                     source, bytes.size());
  LLMOPT_CHECK_INPUT(model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
                     "[tokenizer] {}: not a SentencePiece model (protobuf ModelProto did not "
                     "parse, {} bytes)",
                     source, bytes.size());
  LLMOPT_CHECK_INPUT(model.pieces_size() > 0, "[tokenizer] {}: SentencePiece model has no pieces",
                     source);
  const auto& trainer = model.trainer_spec();
  LLMOPT_CHECK_INPUT(trainer.model_type() == spm::TrainerSpec::BPE,
                     "[tokenizer] {}: SentencePiece model type {} is not supported (expected BPE)",
                     source, spm::TrainerSpec::ModelType_Name(trainer.model_type()));
  Vocab v;
  v.kind = VocabKind::Spm;
  bool has_byte_pieces = false;
  for (const auto& p : model.pieces()) {
    v.tokens.push_back(p.piece());
    v.scores.push_back(p.score());
    TokenType type = TokenType::Normal;
    switch (p.type()) {
      case spm::ModelProto::SentencePiece::NORMAL:
        type = TokenType::Normal;
        break;
      case spm::ModelProto::SentencePiece::UNKNOWN:
        type = TokenType::Unknown;
        break;
      case spm::ModelProto::SentencePiece::CONTROL:
        type = TokenType::Control;
        break;
      case spm::ModelProto::SentencePiece::USER_DEFINED:
        type = TokenType::UserDefined;
        break;
      case spm::ModelProto::SentencePiece::BYTE:
        type = TokenType::Byte;
        has_byte_pieces = true;
        break;
      case spm::ModelProto::SentencePiece::UNUSED:
        type = TokenType::Unused;
        break;
    }
    v.types.push_back(type);
  }
  const auto id_or_none = [&](int32_t id) { return v.valid_id(id) ? id : -1; };
  v.unk_id = id_or_none(trainer.unk_id());
  v.bos_id = id_or_none(trainer.bos_id());
  v.eos_id = id_or_none(trainer.eos_id());
  v.pad_id = id_or_none(trainer.pad_id());
  v.byte_fallback = trainer.byte_fallback() || has_byte_pieces;
  const auto& normalizer = model.normalizer_spec();
  v.add_space_prefix = normalizer.add_dummy_prefix();
  v.remove_extra_whitespaces = normalizer.remove_extra_whitespaces();
  v.add_bos = true;
  if (!normalizer.precompiled_charsmap().empty()) {
    log::warn(
        "[tokenizer] {}: normalizer '{}' (charsmap of {} bytes) is applied as identity; text "
        "with characters it would change encodes differently",
        source, normalizer.name(), normalizer.precompiled_charsmap().size());
  }
  v.validate(source);
  return v;
}

Vocab load_sentencepiece_model(const std::string& path) {
  const auto file = io::MappedFile::open(path);
  return parse_sentencepiece_model(
      std::string_view(reinterpret_cast<const char*>(file->data()), file->size()), path);
}

}  // namespace llmopt::tok
