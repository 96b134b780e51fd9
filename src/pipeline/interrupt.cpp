#include "pipeline/interrupt.h"

#include <csignal>

namespace llmopt::pipeline {

namespace {
std::atomic<bool> g_interrupted{false};

extern "C" void on_interrupt(int sig) {
  g_interrupted.store(true);
  // The next signal of this kind takes the default action (terminate).
  std::signal(sig, SIG_DFL);
}
}  // namespace

std::atomic<bool>& interrupt_flag() { return g_interrupted; }

std::atomic<bool>& install_interrupt_handler() {
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  return g_interrupted;
}

}  // namespace llmopt::pipeline
