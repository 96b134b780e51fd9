// Process memory meter (Linux /proc/self/status).
#pragma once
#include <cstdint>

namespace llmopt {

// Peak resident set size of this process so far (VmHWM), bytes.
int64_t peak_rss_bytes();
// Current resident set size (VmRSS), bytes.
int64_t current_rss_bytes();
// Resets the peak counter (writes 5 to /proc/self/clear_refs); returns false if unsupported.
bool reset_peak_rss();

}  // namespace llmopt
