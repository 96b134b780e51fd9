#include "io/atomic_file.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace llmopt::io {
namespace {
namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const auto dir =
      fs::temp_directory_path() / ("llmopt_atomic_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count_entries(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(AtomicFileTest, CommitRenamesOverDestination) {
  const auto dir = fresh_dir("commit");
  const auto dest = dir / "out.bin";
  { std::ofstream(dest) << "old"; }
  {
    AtomicFile f(dest.string());
    f.write("hello ");
    f.write_zeros(2);
    f.write_pod<uint32_t>(0x41424344);
    EXPECT_EQ(slurp(dest), "old");  // untouched until commit
    f.commit();
  }
  EXPECT_EQ(slurp(dest), std::string("hello \0\0DCBA", 12));
  EXPECT_EQ(count_entries(dir), 1u);  // no temporary left behind
  fs::remove_all(dir);
}

TEST(AtomicFileTest, NoCommitLeavesNothing) {
  const auto dir = fresh_dir("abort");
  {
    AtomicFile f((dir / "out.bin").string());
    f.write(std::string(3 << 20, 'x'));  // more than the buffer, so bytes reached the temp file
  }
  EXPECT_EQ(count_entries(dir), 0u);
  fs::remove_all(dir);
}

// A destination in a missing directory is the user's mistake: InputError (exit 2) naming it.
TEST(AtomicFileTest, MissingDirectoryIsInputErrorNamingFile) {
  try {
    AtomicFile f("/nonexistent-dir-llmopt/out.bin");
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir-llmopt/out.bin"), std::string::npos) << e.what();
  }
}

// Outputs get the mode a plain open(O_CREAT, 0666) would give under the umask, not mkstemp's 0600.
TEST(AtomicFileTest, ModeFollowsTheUmask) {
  const auto dir = fresh_dir("mode");
  const mode_t old = ::umask(022);
  for (const mode_t mask : {mode_t{022}, mode_t{027}, mode_t{077}, mode_t{002}}) {
    ::umask(mask);
    const auto dest = dir / ("out-" + std::to_string(mask));
    write_file_atomic(dest.string(), "x");
    struct stat st {};
    ASSERT_EQ(::stat(dest.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask) << "umask " << std::oct << mask;
  }
  ::umask(old);
  fs::remove_all(dir);
}

// A file-size limit makes write(2) fail with EFBIG, the same path a full disk (ENOSPC) takes.
TEST(AtomicFileTest, FailedWriteIsRunErrorAndLeavesNoFile) {
  const auto dir = fresh_dir("full");
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 1 << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string message;
  try {
    AtomicFile f((dir / "big.bin").string());
    f.write(std::string(4 << 20, 'x'));
    f.commit();
  } catch (const RunError& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  EXPECT_NE(message.find("big.bin"), std::string::npos) << message;
  EXPECT_EQ(count_entries(dir), 0u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::io
