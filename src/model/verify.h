// Replaying token sequences through two models (an export loaded back, and the in-memory model it
// came from): the check every export passes before it is declared done.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/llama.h"

namespace llmopt::model {

struct ReplayStats {
  double kld_mean = 0, kld_max = 0;  // KL(ref || other) per position, nats
  double top1 = 1;                   // fraction of positions whose argmax agrees
  int64_t positions = 0;
};

// Every position of every sequence through both models (float64 softmax).
ReplayStats replay(LlamaModel& ref, LlamaModel& other, const std::vector<std::vector<int64_t>>& sequences);
// `n` sequences of `len` seeded random token ids below `vocab`.
std::vector<std::vector<int64_t>> random_sequences(int64_t n, int64_t len, int64_t vocab, uint64_t seed);

// The stated limits an export must meet for its storage type: mean KLD (f32 1e-5, f16 1e-3,
// bf16 1e-2) and top-1 agreement (f32 0.99, f16 0.9, bf16 0.8); a negative override keeps them.
struct ReplayLimits {
  double max_kld = 1e-5, min_top1 = 0.99;
};
ReplayLimits replay_limits(DType export_type, double max_kld_override = -1, double min_top1_override = -1);

// Loads `path` (what was just written), replays `sequences` against `ref` and throws RunError
// naming the file and both figures when the limits are not met.
// `tokenizer_path` is given to the loader (llama2.c files need one; "" = found with the model).
ReplayStats verify_written_model(LlamaModel& ref, const std::string& path, const std::vector<std::vector<int64_t>>& sequences,
                                 const ReplayLimits& limits, const std::string& tokenizer_path = "");

}  // namespace llmopt::model
