// UTF-8 helpers and GPT-2's byte <-> code point table for byte-level BPE.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace llmopt::tok {

// Length in bytes of the UTF-8 sequence starting at text[pos], or 0 if it is not a complete,
// valid sequence (overlong forms, surrogates and code points above U+10FFFF are invalid).
size_t utf8_sequence_length(std::string_view text, size_t pos);
// Appends code point `cp` (<= U+10FFFF) as UTF-8.
void append_utf8(std::string& out, uint32_t cp);
// Decodes the valid sequence of `len` bytes at `p` (from utf8_sequence_length).
uint32_t decode_utf8(const char* p, size_t len);

// GPT-2 byte-level mapping: every byte becomes one printable code point (bytes that are printable
// Latin-1 map to themselves, the other 68 to U+0100 upwards in byte order), so that BPE pieces
// are valid text. byte_to_unicode(b) returns the UTF-8 of the code point for byte b.
const std::string& byte_to_unicode(uint8_t b);
// Maps byte-level text back to bytes; false if a code point is not in the table.
bool unicode_to_bytes(std::string_view text, std::string& out);
// Maps every byte of raw text to its byte-level code point.
std::string bytes_to_unicode(std::string_view raw);

// SentencePiece's whitespace symbol U+2581 "▁" in UTF-8.
inline constexpr std::string_view kSpmSpace = "\xE2\x96\x81";

// "<0xAB>" -> 0xAB; -1 if `piece` is not a byte piece.
int parse_byte_piece(std::string_view piece);
std::string byte_piece(uint8_t b);

}  // namespace llmopt::tok
