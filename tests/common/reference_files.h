// Paths into ../shared and readers of its reference files, shared by the torch engine's tests
// (tests/model, tests/cuda) and the torch-free CPU engine's (tests/infer).
#pragma once
#include <fstream>
#include <sstream>
#include <string>

namespace llmopt::testref {

inline const std::string kShared = LLMOPT_SHARED_DIR;
inline const std::string kStories = kShared + "/models/stories260K/";
inline const std::string kTiny17m = kShared + "/models/tinyllama-bpe-17m";

inline std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// REFERENCE.txt's greedy text from "Once upon a time" (256 steps from BOS).
inline std::string greedy_reference() {
  const std::string all = read_file(kStories + "REFERENCE.txt");
  const std::string marker = "greedy: ";
  const auto pos = all.find(marker);
  if (pos == std::string::npos) return {};
  const auto end = all.find("\n\n== ", pos);
  return all.substr(pos + marker.size(), end - pos - marker.size());
}

}  // namespace llmopt::testref
