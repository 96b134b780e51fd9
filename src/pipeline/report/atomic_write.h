// Writes a whole file so that readers see either the old file or the complete new one: the text
// goes to a temporary file in the same directory, is flushed to disk, then renamed over the target.
#pragma once
#include <string>
#include <string_view>

namespace llmopt::pipeline::report {

// Throws RunError naming the path when the directory is not writable or the disk is full; the
// temporary file is removed on failure.
void write_file_atomically(const std::string& path, std::string_view contents);

}  // namespace llmopt::pipeline::report
