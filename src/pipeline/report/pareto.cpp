#include "pipeline/report/pareto.h"

#include <algorithm>

namespace llmopt::pipeline::report {

std::vector<size_t> pareto_front(const std::vector<Objective2D>& points, bool minimize_x,
                                 bool minimize_y) {
  // Flip signs so that smaller is better on both axes; O(n^2) is fine for report-sized inputs.
  const double sx = minimize_x ? 1.0 : -1.0;
  const double sy = minimize_y ? 1.0 : -1.0;
  const auto dominates = [&](const Objective2D& a, const Objective2D& b) {
    const double ax = sx * a.x, ay = sy * a.y, bx = sx * b.x, by = sy * b.y;
    return ax <= bx && ay <= by && (ax < bx || ay < by);
  };
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      dominated = j != i && dominates(points[j], points[i]);
    }
    if (!dominated) front.push_back(i);
  }
  std::sort(front.begin(), front.end(), [&](size_t a, size_t b) {
    if (points[a].x != points[b].x) return points[a].x < points[b].x;
    return points[a].y < points[b].y;
  });
  return front;
}

}  // namespace llmopt::pipeline::report
