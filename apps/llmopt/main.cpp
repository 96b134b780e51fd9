// llmopt command-line entry point: parses arguments, calls the library, maps exceptions to exit
// codes (0 ok, 1 failure while running, 2 bad input).
#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "core/error.h"
#include "core/log.h"

int main(int argc, char** argv) {
  llmopt::log::init();
  try {
    std::fprintf(stderr, "llmopt: not yet wired\n");
    return 0;
  } catch (const llmopt::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
