// Ctrl-C handling for runs: the first SIGINT (or SIGTERM) sets a flag that stages poll through
// their progress callbacks, so the run stops at a safe point with every file either complete or
// absent; a second one terminates at once (still safe: all outputs are written atomically).
#pragma once
#include <atomic>

namespace llmopt::pipeline {

// Installs the handlers (idempotent) and returns the flag they set.
std::atomic<bool>& install_interrupt_handler();
std::atomic<bool>& interrupt_flag();

}  // namespace llmopt::pipeline
