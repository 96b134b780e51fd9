// Placeholder until the model subcommands land.
#include "apps/llmopt/commands.h"

namespace llmopt::cli {
void register_model_commands(CLI::App& app, GlobalOptions& g) {}
}  // namespace llmopt::cli
