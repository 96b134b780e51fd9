// Placeholder until the pipeline subcommands land.
#include "apps/llmopt/commands.h"

namespace llmopt::cli {
void register_pipeline_commands(CLI::App& app, GlobalOptions& g) {}
}  // namespace llmopt::cli
