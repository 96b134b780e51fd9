// The held-out part of a task's documents, declared once for the stages that must agree on it:
// `evaluate` scores a part (task_split: held_out) and `finetune` trains on the other
// (train.task). The split itself is eval::TaskSplit (src/eval/tasks.h).
#pragma once
#include <cstdint>
#include <string>

#include "eval/tasks.h"
#include "stages/options.h"

namespace llmopt::stages {

struct TaskHoldoutOptions {
  double size = 0;
  int64_t seed = 1;

  static void describe(Schema<TaskHoldoutOptions>& s) {
    s.field("size", &TaskHoldoutOptions::size,
            "Documents held out of training: a count (>= 1) or a fraction below 1 (0: a task that ships train_data "
            "uses that split)")
        .range(0, 1e9);
    s.field("seed", &TaskHoldoutOptions::seed, "Seed of the held-out draw (a permutation of the document indices)")
        .range(0, 1e15);
  }

  eval::TaskSplit split(const std::string& part) const {
    eval::TaskSplit t;
    t.part = part;
    t.held_out = size;
    t.seed = static_cast<uint64_t>(seed);
    return t;
  }
};

// state.artifacts key of the instruction jsonl a finetune stage built from a task: the evaluate
// stage checks that it scores none of its prompts.
inline std::string instruct_artifact_key(const std::string& task) { return "instruct:" + task; }

}  // namespace llmopt::stages
