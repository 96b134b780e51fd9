// Runs a test body once per SIMD target that Highway compiled and this CPU supports (e.g.
// AVX3, AVX2, SSE4, SSSE3, EMU128), so the dispatched kernels are checked on every code path a
// user's machine may take, not only on the best one of the test machine.
#pragma once
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cstdint>

namespace llmopt::kernels::testing {

template <class Body>
void for_each_simd_target(Body&& body) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    body();
  }
  hwy::SetSupportedTargetsForTest(0);  // back to the best target
}

}  // namespace llmopt::kernels::testing
