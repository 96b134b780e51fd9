// Subcommand registration. Each group lives in its own file; main.cpp calls every register_*.
// A subcommand's callback throws llmopt::InputError (exit 2) or RunError (exit 1) and sets
// `exit_code` for non-exception outcomes.
#pragma once
#include <CLI/CLI.hpp>

#include "apps/common/cli_common.h"  // GlobalOptions and the commands shared with llmopt-native

namespace llmopt::cli {

// info, tokenize, generate, eval, bench, synth, convert (cmd_model.cpp)
void register_model_commands(CLI::App& app, GlobalOptions& g);
// quantize (cmd_quantize.cpp)
void register_quantize_command(CLI::App& app, GlobalOptions& g);
// finetune (cmd_finetune.cpp)
void register_finetune_command(CLI::App& app, GlobalOptions& g);
// data instruct (cmd_data.cpp)
void register_data_command(CLI::App& app, GlobalOptions& g);
// run, validate, init, stages, report, compare (cmd_pipeline.cpp)
void register_pipeline_commands(CLI::App& app, GlobalOptions& g);

// Applies --threads / LLMOPT_THREADS to OpenMP and torch.
void apply_threads(const GlobalOptions& g);

}  // namespace llmopt::cli
