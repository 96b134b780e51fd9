// The torch engine's fused single-token CPU step (decode_cpu.cpp, LlamaModel::try_decode_fused):
// which single-token forward calls took it is invisible in their results (it computes what the
// generic cached path computes), so it counts them for tests and diagnostics.
#pragma once
#include <cstdint>

namespace llmopt::model {

// Single-token steps LlamaModel::forward has run on the fused CPU path in this process.
int64_t fused_decode_steps();

}  // namespace llmopt::model
