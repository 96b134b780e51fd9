// The progress line's text (the drawing itself goes to stderr and is not asserted).
#include <gtest/gtest.h>

#include "core/progress.h"

namespace llmopt {
namespace {

TEST(Progress, RendersBarRateAndEta) {
  const std::string s = Progress::render("stage 2/4 baseline", 45, 100, "tok", 1234.0, 12.4, 20);
  EXPECT_EQ(s, "stage 2/4 baseline [#########           ]  45% 1.2k tok/s ETA 0:12");
}

TEST(Progress, UnknownTotalShowsCount) {
  EXPECT_EQ(Progress::render("s", 1500, 0, "tok", 0, -1, 10), "s 1.5k tok");
}

TEST(Progress, HumanUnits) {
  EXPECT_EQ(Progress::human_count(999), "999");
  EXPECT_EQ(Progress::human_count(2500000), "2.5M");
  EXPECT_EQ(Progress::human_duration(3723), "1:02:03");
  EXPECT_EQ(Progress::human_duration(59.6), "1:00");
}

}  // namespace
}  // namespace llmopt
