// Pareto front of two objectives (e.g. perplexity vs model size): the points no other point beats
// on both at once.
#pragma once
#include <cstddef>
#include <vector>

namespace llmopt::pipeline::report {

struct Objective2D {
  double x = 0;
  double y = 0;
};

// Indices of the non-dominated points, sorted by ascending x (ties by ascending y). A point is
// dominated when another is at least as good on both objectives and strictly better on one;
// identical points do not dominate each other, so both stay on the front.
// `minimize_x` / `minimize_y` say which direction is better for each objective.
std::vector<size_t> pareto_front(const std::vector<Objective2D>& points, bool minimize_x,
                                 bool minimize_y);

}  // namespace llmopt::pipeline::report
