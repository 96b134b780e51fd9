#include "pipeline/quickstart_model.h"

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "io/sha256.h"
#include "model/loader.h"
#include "model/save.h"
#include "core/progress.h"
#include "pipeline/run_dir.h"
#include "stages/stage.h"
#include "train/quickstart.h"

namespace fs = std::filesystem;

namespace llmopt::pipeline {

QuickstartModel build_or_load_quickstart_model(const QuickstartRequest& request) {
  const int64_t steps = request.steps > 0 ? request.steps : train::kDefaultQuickstartSteps;
  const nlohmann::json what = {{"quickstart", 1}, {"steps", steps}, {"seed", request.seed},
                               {"threads", request.threads}};
  const std::string key = io::sha256_hex(what.dump());
  // The built model lives in the stage cache when there is one (reruns reuse it), otherwise in
  // the run directory's state/.
  const fs::path dir = request.cache_dir.empty()
                           ? fs::path(request.run_dir) / "state" / "quickstart"
                           : fs::path(request.cache_dir) / "quickstart" / key;
  QuickstartModel out;
  out.model_dir = (dir / "model").string();
  out.tokenizer_path = (dir / train::kQuickstartTokenizerFile).string();
  out.eval_text_path = (dir / train::kQuickstartEvalTextFile).string();
  out.state_hash = io::sha256_hex("quickstart-model:" + key);
  std::error_code ec;
  if (fs::is_regular_file(dir / "done.json", ec)) {
    model::ModelLoadOptions lo;
    lo.tokenizer_path = out.tokenizer_path;
    model::LoadedModel lm = model::load_model(out.model_dir, lo);
    out.model = lm.model;
    out.tokenizer = lm.tokenizer;
    out.cached = true;
    if (request.progress) request.progress->line("quickstart model: reused " + dir.string());
    return out;
  }
  // Built in a temporary directory and renamed, so `dir` is complete or absent. Training
  // checkpoints go to the run directory: an interrupted run resumes training with --resume.
  const fs::path tmp = dir.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  train::QuickstartOptions qo;
  qo.output_dir = tmp.string();
  qo.seed = request.seed;
  qo.steps = steps;
  qo.checkpoint_dir = (fs::path(request.run_dir) / "state" / "quickstart-training").string();
  qo.cancel = request.interrupt;
  Progress* progress = request.progress;
  if (progress) progress->begin_stage("", -1, 0, "quickstart model (training a tiny Llama)");
  model::LoadedModel lm;
  try {
    lm = train::build_quickstart_model(qo, [&](const train::QuickstartProgress& p) {
      if (!progress) return;
      if (p.phase == "train") {
        progress->note(fmt::format("loss {:.3f}", p.training.loss));
        progress->update(p.training.step, p.training.steps, "steps");
      } else {
        progress->note(p.message);
      }
    });
  } catch (...) {
    if (progress) progress->end_stage();
    fs::remove_all(tmp, ec);
    if (request.interrupt && request.interrupt->load()) throw stages::Interrupted();
    throw;
  }
  if (progress) progress->end_stage();
  model::save_model(*lm.model, nullptr, "", model::ExportFormat::Hf, DType::F32,
                    (tmp / "model").string());
  write_json_atomic((tmp / "done.json").string(), {{"key", key}, {"build", what}, {"info", lm.source_info}});
  fs::create_directories(dir.parent_path());
  fs::remove_all(dir, ec);
  fs::rename(tmp, dir);
  fs::remove_all(qo.checkpoint_dir, ec);
  out.model = lm.model;
  out.tokenizer = lm.tokenizer;
  if (progress) progress->line("quickstart model: built in " + dir.string());
  return out;
}

}  // namespace llmopt::pipeline
