// `llmopt data instruct --task NAME --out FILE [--split train|held-out|all --held-out N --split-seed S]`:
// an instruction jsonl built from a task's documents in the prompt format the task YAML scores
// (eval::instruction_examples: prompt = the rendered context, response = target_delimiter + the
// gold choice), for `llmopt finetune --data FILE` or a finetune stage. The training part leaves
// out the held-out documents that `llmopt eval --tasks NAME --split held-out` with the same
// --held-out / --split-seed scores, and any document whose prompt equals a held-out one.
//
// `llmopt data render --model M --data FILE [--template auto|NAME]`: each `messages` row of an
// instruction jsonl rendered with a chat template (train/chat_template.h), one JSON line per row
// {line, template, text, segments: [{text, response}], ids, targets}: the text and loss mask a
// finetune run trains on (tests/peer/test_chat_template.py compares the text with transformers).
#include <filesystem>
#include <fstream>
#include <iostream>

#include "apps/llmopt/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/harness.h"
#include "eval/tasks.h"
#include "io/atomic_file.h"
#include "train/chat_template.h"
#include "train/finetune_data.h"

namespace llmopt::cli {
namespace fs = std::filesystem;

void register_data_command(CLI::App& app, GlobalOptions& g) {
  auto* data = app.add_subcommand("data", "Build training data");
  data->require_subcommand(1);
  auto* cmd = data->add_subcommand(
      "instruct", "Instruction jsonl (prompt/response) from a task's documents, rendered as the task scores them");
  static std::string task, tasks_dir, out, split = "train";
  static double held_out = 0;
  static uint64_t split_seed = 1;
  cmd->add_option("--task", task, "Task name (configs/tasks/*.yaml) or task YAML path")->required();
  cmd->add_option("--tasks-dir", tasks_dir, "Directory of task YAML files (default: configs/tasks)");
  cmd->add_option("--split", split, "Documents written: train | held-out | all")->capture_default_str();
  cmd->add_option("--held-out", held_out,
                  "Documents held out of the training part (a count, or a fraction below 1; 0 with a task that ships "
                  "train_data)")
      ->capture_default_str();
  cmd->add_option("--split-seed", split_seed, "Seed of the held-out draw")->capture_default_str();
  cmd->add_option("--out", out, "Output jsonl: {prompt, response, task, doc, source} per line")->required();
  cmd->callback([&g] {
    (void)g;
    const std::string dir = eval::find_tasks_dir(tasks_dir);
    const eval::TaskSpec spec = eval::resolve_task(task, dir, eval::find_shared_dir(dir));
    eval::TaskSplit s;
    s.part = eval::parse_split_part(split, "--split");
    s.held_out = held_out;
    s.seed = split_seed;
    int64_t dropped = 0;
    const auto examples = eval::instruction_examples(spec, s, &dropped);
    LLMOPT_CHECK_INPUT(!examples.empty(), "[data] task '{}': no documents in the {} part", spec.name, s.part);
    if (!fs::path(out).parent_path().empty()) fs::create_directories(fs::path(out).parent_path());
    io::AtomicFile f(out);
    for (const auto& e : examples)
      f.write(eval::instruction_json(spec, e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    f.commit();
    if (dropped > 0)
      log::info("[data] {}: {} documents left out: their prompt equals a prompt of the other part", spec.name, dropped);
    std::printf("%s -> %s (%zu examples)\n", eval::describe_split(spec, s, examples.size() + dropped).c_str(),
                out.c_str(), examples.size());
  });

  auto* render = data->add_subcommand("render", "Rendered text and loss mask of jsonl `messages` rows (JSON lines)");
  static std::string model, tokenizer, file, tmpl = "auto";
  render->add_option("--model", model, "Model (its tokenizer, and its chat_template for auto)")->required();
  render->add_option("--tokenizer", tokenizer, "Tokenizer file (llama2.c models)");
  render->add_option("--data", file, "Instruction jsonl with `messages` rows")->required();
  render->add_option("--template", tmpl, "auto | " + train::chat_template_list())->capture_default_str();
  render->callback([] {
    const auto tk = load_tokenizer_for(model, tokenizer);
    const std::string name = train::resolve_chat_template(tmpl, tokenizer.empty() ? model : tokenizer);
    // Tokens and targets from the training loader itself (plain rows are tokenized per message
    // there, with EOS ids); the text and segments are the template's rendering.
    train::FinetuneDataOptions fo;
    fo.path = file;
    fo.template_name = name;
    const auto rows = train::read_instruction_rows(fo, *tk);
    size_t row = 0;
    std::ifstream in(file);
    LLMOPT_CHECK_INPUT(in.good(), "[data] --data {}: cannot read", file);
    std::string line;
    for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = fmt::format("{}:{}", file, lineno);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw_input("[data] {}: not valid JSON ({})", where, e.what());
      }
      LLMOPT_CHECK_INPUT(j.is_object() && j.contains("messages") && j["messages"].is_array(),
                         "[data] {}: expected an object with a 'messages' array", where);
      const auto segments =
          train::render_chat(name, train::chat_messages(j["messages"], where), train::chat_special_pieces(*tk), where);
      const auto& tokens = rows.at(row++);
      nlohmann::json out = {{"line", lineno}, {"template", name}, {"text", train::joined_text(segments)}};
      out["segments"] = nlohmann::json::array();
      for (const auto& g : segments) out["segments"].push_back({{"text", g.text}, {"response", g.is_response}});
      out["ids"] = tokens.ids;
      out["targets"] = tokens.target;
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
  });
}

}  // namespace llmopt::cli
