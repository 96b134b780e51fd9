// End-to-end speed and memory: prefill and decode tokens/s over repetitions.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "infer/generate.h"
#include "model/llama.h"

namespace llmopt::eval {

// Options and results are the CPU engine's (src/infer/generate.h): one report for both engines.
using infer::BenchOptions;
using infer::BenchResult;

// progress(label, rep, reps) is called before each repetition.
BenchResult run_bench(model::LlamaModel& m, const BenchOptions& o,
                      const std::function<void(const std::string&, int64_t, int64_t)>& progress = {});

}  // namespace llmopt::eval
