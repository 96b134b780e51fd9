// The options declaration machinery: one describe() drives parsing, defaults, validation and help.
#include <gtest/gtest.h>

#include "core/error.h"
#include "stages/config_node.h"
#include "stages/evaluate/evaluate_stage.h"
#include "stages/export/export_stage.h"
#include "stages/options.h"
#include "stages/registry.h"

namespace llmopt::stages {
namespace {

struct Inner {
  int64_t n = 4;
  static void describe(Schema<Inner>& s) { s.field("n", &Inner::n, "a count").range(1, 10); }
};

struct Demo {
  bool flag = false;
  int64_t count = 3;
  double ratio = 0.5;
  std::string mode = "fast";
  std::vector<std::string> tags = {"a"};
  std::vector<int64_t> sizes;
  Inner inner;
  static void describe(Schema<Demo>& s) {
    s.field("flag", &Demo::flag, "on or off");
    s.field("count", &Demo::count, "how many").range(0, 100);
    s.field("ratio", &Demo::ratio, "a fraction").range(0, 1);
    s.field("mode", &Demo::mode, "speed").choices({"fast", "slow"});
    s.field("tags", &Demo::tags, "labels");
    s.field("sizes", &Demo::sizes, "sizes");
    s.field("inner", &Demo::inner, "nested");
  }
};

Demo parse(const std::string& yaml, Diagnostics& diag) {
  Demo d;
  schema_of<Demo>().parse(d, ConfigNode::parse(yaml, "t.yaml"), diag, "");
  return d;
}

TEST(Options, DefaultsComeFromMemberInitializers) {
  const auto& s = schema_of<Demo>();
  EXPECT_EQ(s.find("count")->default_text, "3");
  EXPECT_EQ(s.find("mode")->default_text, "fast");
  EXPECT_EQ(s.find("tags")->default_text, "[a]");
  EXPECT_EQ(s.find("flag")->default_text, "false");
  EXPECT_EQ(s.find("inner")->type, FieldType::Section);
  Diagnostics diag;
  const Demo d = parse("{}", diag);
  EXPECT_TRUE(diag.empty());
  EXPECT_EQ(d.count, 3);
  EXPECT_EQ(d.inner.n, 4);
}

TEST(Options, ParsesEveryType) {
  Diagnostics diag;
  const Demo d = parse("flag: true\ncount: 7\nratio: 0.25\nmode: slow\ntags: [x, y]\nsizes: [1, 2]\ninner: {n: 9}\n", diag);
  EXPECT_TRUE(diag.empty()) << diag.format();
  EXPECT_TRUE(d.flag);
  EXPECT_EQ(d.count, 7);
  EXPECT_DOUBLE_EQ(d.ratio, 0.25);
  EXPECT_EQ(d.mode, "slow");
  EXPECT_EQ(d.tags, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(d.sizes, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(d.inner.n, 9);
  nlohmann::json j = schema_of<Demo>().json(d);
  EXPECT_EQ(j["inner"]["n"], 9);
  EXPECT_EQ(j["mode"], "slow");
}

TEST(Options, ReportsEveryProblemWithItsPosition) {
  Diagnostics diag;
  parse("flag: 2\ncount: 101\nratio: x\nmode: fsat\ninner: {n: 0, m: 1}\ncuont: 1\n", diag);
  const std::string msg = diag.format();
  EXPECT_EQ(diag.size(), 7u) << msg;
  EXPECT_NE(msg.find("t.yaml:1:7: flag: expected a boolean"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:2:8: count: value 101 is out of range (must be between 0 and 100)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:3:8: ratio: expected a number"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:4:7: mode: 'fsat' is not one of: fast, slow (did you mean 'fast'?)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:5:12: inner.n: value 0 is out of range"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:5:15: unknown key 'm' in inner"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml:6:1: unknown key 'cuont' (did you mean 'count'?)"), std::string::npos) << msg;
  EXPECT_THROW(diag.throw_if_any(), InputError);
}

TEST(Options, EditDistanceAndSuggestions) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(closest_match("ctxx", {"ctx", "path", "protocol"}), "ctx");
  EXPECT_EQ(closest_match("zzzzzz", {"ctx", "path"}), "");
  EXPECT_EQ(did_you_mean("evalute", {"evaluate", "export"}), " (did you mean 'evaluate'?)");
}

TEST(Registry, BuiltinStagesAndUnknownTypes) {
  const Registry& r = builtin_registry();
  EXPECT_EQ(r.types(), (std::vector<std::string>{"evaluate", "quantize", "export", "finetune", "benchmark"}));
  EXPECT_EQ(r.find("quantise"), nullptr);
  Diagnostics diag;
  auto stage = r.find("export")->create(ConfigNode::parse("{type: export, formats: [hf], dtype: bf16}", "t.yaml"),
                                        diag, "pipeline.0");
  EXPECT_TRUE(diag.empty()) << diag.format();
  EXPECT_EQ(stage->type(), "export");
  EXPECT_EQ(stage->options_json()["dtype"], "bf16");
  EXPECT_FALSE(stage->modifies_model());
}

TEST(ConfigNode, MergeIsDeepForMapsAndReplacesLists) {
  const ConfigNode a = ConfigNode::parse("x: {a: 1, b: 2}\nl: [1, 2]\n", "a.yaml");
  const ConfigNode b = ConfigNode::parse("x: {b: 3}\nl: [9]\n", "b.yaml");
  const ConfigNode m = ConfigNode::merge(a, b);
  EXPECT_EQ(m.to_json(), nlohmann::json::parse(R"({"x": {"a": 1, "b": 3}, "l": [9]})"));
  EXPECT_EQ(m.find("x")->find("a")->loc().file, "a.yaml");
  EXPECT_EQ(m.find("x")->find("b")->loc().file, "b.yaml");
  EXPECT_EQ(m.find("x")->find("b")->loc().line, 1);
  EXPECT_EQ(m.find("x")->find("b")->loc().column, 8);
}

TEST(ConfigNode, QuotedScalarsStayStrings) {
  const ConfigNode n = ConfigNode::parse("a: '5'\nb: 5\nc: true\nd: ~\n", "t.yaml");
  EXPECT_EQ(n.to_json(), nlohmann::json::parse(R"({"a": "5", "b": 5, "c": true, "d": null})"));
}

}  // namespace
}  // namespace llmopt::stages
