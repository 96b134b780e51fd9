// SHA-256 against the FIPS 180-2 appendix B test vectors and the empty message.
#include "io/sha256.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace llmopt::io {
namespace {

TEST(Sha256Test, Fips180_2Vectors) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, StreamingMatchesOneShotAcrossBlockBoundaries) {
  std::string msg;
  for (int k = 0; k < 300; ++k) msg += static_cast<char>(k * 7 + 3);
  const std::string expected = sha256_hex(msg);
  for (size_t chunk : {1u, 3u, 55u, 56u, 63u, 64u, 65u, 127u}) {
    Sha256 h;
    for (size_t p = 0; p < msg.size(); p += chunk) h.update(msg.substr(p, chunk));
    EXPECT_EQ(h.finish_hex(), expected) << "chunk " << chunk;
  }
}

TEST(Sha256Test, FileDigestMatchesBufferDigest) {
  const auto path = std::filesystem::temp_directory_path() / "llmopt_sha256_test.bin";
  const std::string content(3 << 20, 'a');
  { std::ofstream(path, std::ios::binary) << content; }
  EXPECT_EQ(sha256_file_hex(path.string()), sha256_hex(content));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace llmopt::io
