#include "pipeline/quickstart_model.h"

#include "core/error.h"

#if __has_include("train/quickstart.h")
#define LLMOPT_HAVE_QUICKSTART 0  // wired up once the trainer's builder API is final
#else
#define LLMOPT_HAVE_QUICKSTART 0
#endif

namespace llmopt::pipeline {

QuickstartModel build_or_load_quickstart_model(const QuickstartRequest& request) {
  throw_input(
      "[pipeline] model.path is empty and this build cannot train the quickstart model yet; set "
      "model.path (e.g. model.path=../shared/models/stories260K/stories260K.bin "
      "model.tokenizer=../shared/models/stories260K/tok512.bin)");
}

}  // namespace llmopt::pipeline
