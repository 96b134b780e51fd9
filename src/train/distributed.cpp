#include "train/distributed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/log.h"

extern char** environ;

namespace llmopt::train::dist {
namespace fs = std::filesystem;

namespace {

// An integer environment variable in [lo, hi]; `fallback` when unset.
int env_int(const char* name, int lo, int hi, int fallback, const char* what) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  LLMOPT_CHECK_INPUT(*v != '\0' && end && *end == '\0' && errno == 0 && x >= lo && x <= hi,
                     "[dist] environment variable {}='{}': expected {} (an integer in [{}, {}])", name, v, what, lo,
                     hi);
  return static_cast<int>(x);
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

[[noreturn]] void rethrow_c10(const c10::Error& e, const std::string& what) {
  throw_run("[dist] {}: {}", what, e.what_without_backtrace());
}

}  // namespace

Env env_from_environment() {
  Env e;
  const char* ws = std::getenv("WORLD_SIZE");
  if (ws == nullptr) {
    const char* r = std::getenv("RANK");
    LLMOPT_CHECK_INPUT(r == nullptr || std::string(r) == "0",
                       "[dist] environment variable RANK='{}' is set but WORLD_SIZE is not (set both, as torchrun "
                       "does, or neither)",
                       r ? r : "");
    return e;
  }
  e.world_size = env_int("WORLD_SIZE", 1, 1 << 16, 1, "the number of processes");
  LLMOPT_CHECK_INPUT(e.world_size == 1 || std::getenv("RANK") != nullptr,
                     "[dist] environment variable WORLD_SIZE={} is set but RANK is not (each process needs its "
                     "RANK in [0, {}])",
                     e.world_size, e.world_size - 1);
  e.rank = env_int("RANK", 0, e.world_size - 1, 0, "this process's rank");
  e.local_rank = env_int("LOCAL_RANK", 0, e.world_size - 1, e.rank, "this process's rank on its machine");
  if (e.world_size == 1) return e;
  const char* addr = std::getenv("MASTER_ADDR");
  LLMOPT_CHECK_INPUT(addr != nullptr && *addr != '\0',
                     "[dist] environment variable MASTER_ADDR is not set (WORLD_SIZE={}): expected the address of "
                     "rank 0's machine",
                     e.world_size);
  e.master_addr = addr;
  LLMOPT_CHECK_INPUT(std::getenv("MASTER_PORT") != nullptr,
                     "[dist] environment variable MASTER_PORT is not set (WORLD_SIZE={}): expected a free TCP port "
                     "on rank 0's machine",
                     e.world_size);
  e.master_port = env_int("MASTER_PORT", 1, 65535, 0, "a TCP port");
  return e;
}

// ---------------------------------------------------------------- process group

// What ProcessGroupGloo derives from: c10d::ProcessGroup in torch 1.x (Debian's 1.13), c10d::Backend
// from torch 2.0 on (the PyPI libtorch a CUDA build links), with the same collective methods.
#if TORCH_VERSION_MAJOR >= 2
using GroupBackend = c10d::Backend;
#else
using GroupBackend = c10d::ProcessGroup;
#endif

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<GroupBackend> pg;
  std::chrono::milliseconds timeout{0};

  void wait(const c10::intrusive_ptr<c10d::Work>& w, const char* what) {
    try {
      w->wait();
    } catch (const c10::Error& e) {
      rethrow_c10(e, fmt::format("{} failed on rank {} (another rank stopped?)", what, pg->getRank()));
    }
  }
};

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;

std::unique_ptr<ProcessGroup> ProcessGroup::connect(const Env& env, std::chrono::milliseconds timeout) {
  LLMOPT_CHECK_INPUT(env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size,
                     "[dist] rank {} out of range for world size {}", env.rank, env.world_size);
  auto impl = std::make_unique<Impl>();
  impl->timeout = timeout;
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const c10::Error& e) {
    rethrow_c10(e, fmt::format("rank {}: rendezvous at MASTER_ADDR:MASTER_PORT = {}:{} failed", env.rank,
                               env.master_addr, env.master_port));
  } catch (const std::exception& e) {
    throw_run("[dist] rank {}: rendezvous at MASTER_ADDR:MASTER_PORT = {}:{} failed: {}", env.rank, env.master_addr,
              env.master_port, e.what());
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (is_loopback(env.master_addr)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    options->threads = 2;
    impl->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl->store, env.rank, env.world_size, options);
  } catch (const c10::Error& e) {
    rethrow_c10(e, fmt::format("rank {}: Gloo group of {} processes", env.rank, env.world_size));
  } catch (const std::exception& e) {
    throw_run("[dist] rank {}: Gloo group of {} processes: {}", env.rank, env.world_size, e.what());
  }
  return std::unique_ptr<ProcessGroup>(new ProcessGroup(std::move(impl)));
}

int ProcessGroup::rank() const { return impl_->pg->getRank(); }
int ProcessGroup::size() const { return impl_->pg->getSize(); }
std::string ProcessGroup::backend() const { return impl_->pg->getBackendName(); }

void ProcessGroup::allreduce_sum(torch::Tensor& t) {
  std::vector<torch::Tensor> v{t};
  impl_->wait(impl_->pg->allreduce(v), "all-reduce");
}

void ProcessGroup::allreduce_sum(std::vector<torch::Tensor>& ts) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  works.reserve(ts.size());
  for (auto& t : ts) {
    std::vector<torch::Tensor> v{t};
    works.push_back(impl_->pg->allreduce(v));
  }
  for (auto& w : works) impl_->wait(w, "all-reduce");
}

void ProcessGroup::allreduce_max(torch::Tensor& t) {
  std::vector<torch::Tensor> v{t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  impl_->wait(impl_->pg->allreduce(v, o), "all-reduce (max)");
}

void ProcessGroup::broadcast(torch::Tensor& t, int root) {
  std::vector<torch::Tensor> v{t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  impl_->wait(impl_->pg->broadcast(v, o), "broadcast");
}

std::vector<torch::Tensor> ProcessGroup::allgather(const torch::Tensor& t) {
  std::vector<torch::Tensor> in{t.contiguous()};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(in[0]));
  impl_->wait(impl_->pg->allgather(out, in), "all-gather");
  return out[0];
}

void ProcessGroup::barrier() { impl_->wait(impl_->pg->barrier(), "barrier"); }

std::string ProcessGroup::broadcast_bytes(const std::string& bytes, int root) {
  torch::Tensor n = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
  broadcast(n, root);
  const int64_t size = n.item<int64_t>();
  if (size == 0) return std::string();
  torch::Tensor buf = torch::empty({size}, torch::kUInt8);
  if (rank() == root) std::memcpy(buf.data_ptr(), bytes.data(), static_cast<size_t>(size));
  broadcast(buf, root);
  return std::string(static_cast<const char*>(buf.data_ptr()), static_cast<size_t>(size));
}

bool ProcessGroup::any(bool flag) {
  torch::Tensor t = torch::tensor({flag ? 1 : 0}, torch::kInt32);
  allreduce_max(t);
  return t.item<int32_t>() != 0;
}

// ---------------------------------------------------------------- the process-wide group

namespace {
std::mutex g_mutex;
std::unique_ptr<ProcessGroup> g_world;
}  // namespace

ProcessGroup* init_from_environment() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_world) return g_world.get();
  const Env env = env_from_environment();
  if (!env.distributed()) return nullptr;
  const int seconds = env_int("LLMOPT_DIST_TIMEOUT", 1, 7 * 24 * 3600, 1800, "seconds");
  log::debug("[dist] rank {} of {}: rendezvous at {}:{}", env.rank, env.world_size, env.master_addr, env.master_port);
  g_world = ProcessGroup::connect(env, std::chrono::seconds(seconds));
  if (env.rank == 0) {
    log::info("[dist] {} processes joined ({} over {}:{})", env.world_size, g_world->backend(), env.master_addr,
              env.master_port);
  }
  return g_world.get();
}

ProcessGroup* world() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_world.get();
}

int rank() {
  ProcessGroup* g = world();
  return g ? g->rank() : 0;
}

int world_size() {
  ProcessGroup* g = world();
  return g ? g->size() : 1;
}

// ---------------------------------------------------------------- gradient averaging

GradientAverager::GradientAverager(std::vector<torch::Tensor> params, int64_t bucket_bytes)
    : params_(std::move(params)) {
  LLMOPT_CHECK_INPUT(bucket_bytes > 0, "[dist] bucket size must be positive, found {}", bucket_bytes);
  // Reverse order, as DistributedDataParallel: the last layers' gradients are ready first.
  Bucket current;
  int64_t current_bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const torch::Tensor& p = params_[k];
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool fits = current.params.empty() ||
                      (current.dtype == p.scalar_type() && current_bytes + bytes <= bucket_bytes);
    if (!fits) {
      buckets_.push_back(std::move(current));
      current = Bucket();
      current_bytes = 0;
    }
    if (current.params.empty()) current.dtype = p.scalar_type();
    current.params.push_back(k);
    current.numel += p.numel();
    current_bytes += bytes;
  }
  if (!current.params.empty()) buckets_.push_back(std::move(current));
}

void GradientAverager::average(ProcessGroup& group, torch::Tensor* extra) {
  torch::NoGradGuard no_grad;
  const int64_t n_extra = extra ? extra->numel() : 0;
  // Meta: the extra values, then 1 per parameter whose gradient is defined here.
  torch::Tensor meta = torch::zeros({n_extra + static_cast<int64_t>(params_.size())}, torch::kFloat64);
  if (extra) meta.slice(0, 0, n_extra).copy_(extra->reshape({-1}));
  auto* m = meta.data_ptr<double>();
  for (size_t k = 0; k < params_.size(); ++k) m[n_extra + k] = params_[k].grad().defined() ? 1.0 : 0.0;
  std::vector<torch::Tensor> flats;
  flats.reserve(buckets_.size() + 1);
  for (const Bucket& b : buckets_) {
    torch::Tensor flat = torch::empty({b.numel}, torch::TensorOptions().dtype(b.dtype));
    int64_t off = 0;
    for (size_t k : b.params) {
      const torch::Tensor& p = params_[k];
      const int64_t n = p.numel();
      if (p.grad().defined()) flat.slice(0, off, off + n).copy_(p.grad().reshape({-1}));
      else flat.slice(0, off, off + n).zero_();
      off += n;
    }
    flats.push_back(std::move(flat));
  }
  flats.push_back(meta);
  group.allreduce_sum(flats);
  const double inv = 1.0 / static_cast<double>(group.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    torch::Tensor& flat = flats[i];
    flat.mul_(inv);
    int64_t off = 0;
    for (size_t k : b.params) {
      torch::Tensor& p = params_[k];
      const int64_t n = p.numel();
      if (m[n_extra + k] > 0) {
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        p.mutable_grad().copy_(flat.slice(0, off, off + n).view(p.sizes()));
      }
      off += n;
    }
  }
  if (extra) extra->copy_(meta.slice(0, 0, n_extra).view(extra->sizes()));
}

uint64_t weights_hash(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a offset basis, over 8-byte words
  auto mix = [&h](uint64_t w) {
    h ^= w;
    h *= 1099511628211ULL;
  };
  for (const auto& t0 : tensors) {
    const torch::Tensor t = t0.detach().cpu().contiguous();
    mix(static_cast<uint64_t>(t.numel()));
    mix(static_cast<uint64_t>(t.scalar_type()));
    const auto* bytes = static_cast<const unsigned char*>(t.data_ptr());
    const size_t size = static_cast<size_t>(t.numel()) * t.element_size();
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      uint64_t w;
      std::memcpy(&w, bytes + i, 8);
      mix(w);
    }
    for (; i < size; ++i) mix(bytes[i]);
  }
  return h;
}

// ---------------------------------------------------------------- local launcher

namespace {

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw_run("[dist] socket(): {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw_run("[dist] no free port on 127.0.0.1: {}", std::strerror(err));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

volatile sig_atomic_t g_term_signal = 0;
void on_term(int sig) { g_term_signal = sig; }

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::vector<std::string> strip_nproc(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "--nproc") {
      ++i;
      continue;
    }
    if (argv[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(argv[i]);
  }
  return out;
}

std::vector<std::string> self_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(in, arg, '\0')) out.push_back(arg);
  return out;
}

void quiet_logs_off_rank0() {
  if (rank() > 0 && std::getenv("LLMOPT_LOG") == nullptr) spdlog::set_level(spdlog::level::warn);
}

int launch_local(const LaunchOptions& o) {
  LLMOPT_CHECK_INPUT(o.nproc >= 1, "[dist] --nproc must be at least 1, found {}", o.nproc);
  LLMOPT_CHECK_INPUT(std::getenv("WORLD_SIZE") == nullptr,
                     "[dist] --nproc {} inside a job that already sets WORLD_SIZE={} (use one or the other)", o.nproc,
                     std::getenv("WORLD_SIZE"));
  LLMOPT_CHECK_INPUT(!o.argv.empty(), "[dist] launch: empty command");
  const int port = free_local_port();
  // Environment of each rank: ours without the job variables, then the job variables.
  const std::vector<std::string> job_vars = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                             "MASTER_PORT"};
  std::vector<std::string> base_env;
  bool have_threads = false;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (std::find(job_vars.begin(), job_vars.end(), key) != job_vars.end()) continue;
    if (key == "LLMOPT_THREADS") have_threads = true;
    base_env.push_back(kv);
  }
  if (!have_threads && o.threads_per_rank > 0) base_env.push_back(fmt::format("LLMOPT_THREADS={}", o.threads_per_rank));

  std::vector<char*> argv;
  std::string exe = "/proc/self/exe";
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) exe = self.string();
  std::vector<std::string> args = o.argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct sigaction sa {}, old_term {};
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, &old_term);
  g_term_signal = 0;

  std::vector<pid_t> pids(static_cast<size_t>(o.nproc), -1);
  std::vector<bool> alive(pids.size(), false);
  auto kill_all = [&](int sig) {
    for (size_t r = 0; r < pids.size(); ++r)
      if (alive[r]) ::kill(pids[r], sig);
  };
  int result = 0;
  bool failed = false;
  for (int r = 0; r < o.nproc; ++r) {
    std::vector<std::string> env = base_env;
    env.push_back(fmt::format("RANK={}", r));
    env.push_back(fmt::format("LOCAL_RANK={}", r));
    env.push_back(fmt::format("WORLD_SIZE={}", o.nproc));
    env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", o.nproc));
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back(fmt::format("MASTER_PORT={}", port));
    std::vector<char*> envp;
    for (auto& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (r > 0) posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      log::error("[dist] could not start rank {}: {}", r, std::strerror(rc));
      kill_all(SIGTERM);
      result = 1;
      failed = true;
      break;
    }
    pids[static_cast<size_t>(r)] = pid;
    alive[static_cast<size_t>(r)] = true;
  }
  log::debug("[dist] started {} ranks (MASTER_PORT {})", o.nproc, port);

  auto now = [] { return std::chrono::steady_clock::now(); };
  std::chrono::steady_clock::time_point kill_at{};
  bool forwarded_term = false, sent_kill = false;
  if (failed) kill_at = now() + std::chrono::seconds(10);
  while (std::any_of(alive.begin(), alive.end(), [](bool a) { return a; })) {
    int status = 0;
    const pid_t p = ::waitpid(-1, &status, WNOHANG);
    if (p > 0) {
      const auto it = std::find(pids.begin(), pids.end(), p);
      if (it == pids.end()) continue;
      const size_t r = static_cast<size_t>(it - pids.begin());
      alive[r] = false;
      const int code = status_code(status);
      if (code != 0 && !failed) {
        failed = true;
        result = code;
        log::error("[dist] rank {} {} {}; stopping the other ranks", r,
                   WIFSIGNALED(status) ? "was killed by signal" : "exited with status",
                   WIFSIGNALED(status) ? WTERMSIG(status) : code);
        kill_all(SIGTERM);
        kill_at = now() + std::chrono::seconds(10);
      }
      continue;
    }
    if (p < 0 && errno != EINTR) break;
    if (g_term_signal != 0 && !forwarded_term) {
      forwarded_term = true;
      kill_all(SIGTERM);
    }
    if (failed && !sent_kill && now() > kill_at) {
      sent_kill = true;
      kill_all(SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

// ---------------------------------------------------------------- scratch directory

ScratchDir::ScratchDir(const std::string& tag) {
  const fs::path base = fs::temp_directory_path();
  std::string templ = (base / fmt::format("llmopt-{}-XXXXXX", tag)).string();
  if (::mkdtemp(templ.data()) == nullptr) throw_run("[dist] mkdtemp {}: {}", templ, std::strerror(errno));
  path_ = templ;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace llmopt::train::dist
