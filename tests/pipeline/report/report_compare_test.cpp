// compare_table across run directories.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "pipeline/report/report.h"
#include "tests/pipeline/report/fake_run_dir.h"

namespace llmopt::pipeline::report {
namespace {

using ::testing::HasSubstr;
namespace t = testing;

TEST(ReportCompare, RunsSideBySide) {
  const auto simple = t::make_temp_dir("cmp-simple");
  const auto sweep = t::make_temp_dir("cmp-sweep");
  const auto failed = t::make_temp_dir("cmp-failed");
  t::write_run_dir(simple, t::simple_run_metrics());
  t::write_run_dir(sweep, t::sweep_run_metrics());
  t::write_run_dir(failed, t::failed_run_metrics());
  const std::string table = compare_table({simple.string(), sweep.string(), failed.string()});

  // Header, rule, 1 simple row, 4 sweep rows, 1 failed row.
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2 + 1 + 4 + 1);
  EXPECT_THAT(table, HasSubstr("| Run | Evaluation | Status | Perplexity |"));
  // The first row is the reference: q4 at perplexity 10.5 without a delta.
  EXPECT_THAT(table, HasSubstr("| gptq-q4 | q4 | ok | 10.500 |"));
  // bits=4,group_size=32 at 10.3 vs 10.5: -1.90 %, better.
  EXPECT_THAT(table, HasSubstr("| gptq-sweep | bits=4,group_size=32 | ok | 10.300 (-1.90 % \u2713) |"));
  // The failed run falls back to its baseline evaluation (10.0) and keeps status failed.
  EXPECT_THAT(table, HasSubstr("| gptq-broken | baseline | failed | 10.000 (-4.76 % \u2713) |"));
}

TEST(ReportCompare, BadInput) {
  EXPECT_THROW(compare_table({}), InputError);
  const auto empty = t::make_temp_dir("cmp-empty");
  EXPECT_THROW(compare_table({empty.string()}), InputError);
}

}  // namespace
}  // namespace llmopt::pipeline::report
