// Data-parallel training on torch's c10d: the process group (Gloo on CPU, over a TCPStore
// rendezvous), bucketed gradient averaging, and the local launcher behind `--nproc N`.
//
// The job is described the way torchrun describes it, in the environment of every process:
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Rank 0 hosts the TCPStore at
// MASTER_ADDR:MASTER_PORT; every rank connects to it and the Gloo group forms over it.
// `llmopt run|finetune ... --nproc N` sets these itself for N processes on this machine
// (launch_local); on several machines the user starts one process per rank with them set
// (docs/finetuning.md). The trainer (trainer.h) uses the group when one was set up:
// init_from_environment() connects once per process, world() returns it.
//
// c10d's headers stay in distributed.cpp; this header only needs torch's tensor types.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmopt::train::dist {

// This process's place in the job.
struct Env {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  bool distributed() const { return world_size > 1; }
};

// Reads the job from the environment. WORLD_SIZE unset (or 1): one process, nothing else is read.
// Otherwise RANK, MASTER_ADDR and MASTER_PORT are required; a missing, non-integer or out-of-range
// value is an InputError (exit 2) naming the variable, the value found and what was expected.
Env env_from_environment();

// A c10d process group (pimpl: c10d types stay in distributed.cpp). Collectives are blocking and
// must be called by every rank in the same order.
class ProcessGroup {
 public:
  // Rendezvous over a TCPStore at env.master_addr:env.master_port (rank 0 hosts it), then a Gloo
  // group. Gloo binds to GLOO_SOCKET_IFNAME's interface when set, to 127.0.0.1 when MASTER_ADDR is
  // a loopback address, else to the address of this host's name.
  static std::unique_ptr<ProcessGroup> connect(const Env& env, std::chrono::milliseconds timeout);
  ~ProcessGroup();

  int rank() const;
  int size() const;
  std::string backend() const;

  // In-place sum over ranks (one tensor, or several launched together and then awaited).
  void allreduce_sum(torch::Tensor& t);
  void allreduce_sum(std::vector<torch::Tensor>& ts);
  void allreduce_max(torch::Tensor& t);
  // In place: every rank ends with root's values (same shape and dtype on every rank).
  void broadcast(torch::Tensor& t, int root = 0);
  // Every rank's tensor (same shape and dtype on every rank), in rank order.
  std::vector<torch::Tensor> allgather(const torch::Tensor& t);
  void barrier();

  // Root's bytes on every rank (sizes may differ before the call).
  std::string broadcast_bytes(const std::string& bytes, int root = 0);
  // True on every rank when `flag` is true on any.
  bool any(bool flag);

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Connects the process-wide group from the environment the first time it is called with
// WORLD_SIZE > 1 (LLMOPT_DIST_TIMEOUT seconds for the rendezvous and each collective, default
// 1800) and returns it; nullptr for a single process. Later calls return the same group.
ProcessGroup* init_from_environment();
// The process-wide group, or nullptr when init_from_environment() has not connected one.
ProcessGroup* world();
int rank();        // 0 without a group
int world_size();  // 1 without a group

// Averages gradients over the ranks the way DistributedDataParallel does after backward: the
// gradients are packed into flat buckets of at most bucket_bytes (in reverse parameter order, one
// dtype per bucket, a parameter larger than a bucket alone in its own), each bucket is summed
// over the ranks, divided by the rank count and unpacked. A parameter whose gradient is
// undefined on a rank contributes zeros; it keeps an undefined gradient only when it is undefined
// on every rank (so the optimizer skips it exactly as in a single process).
class GradientAverager {
 public:
  static constexpr int64_t kDefaultBucketBytes = 25LL << 20;
  GradientAverager(std::vector<torch::Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);
  // Averages the gradients in place and sums `extra` (float64, e.g. loss and token counts) in the
  // same round trip.
  void average(ProcessGroup& group, torch::Tensor* extra = nullptr);
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    int64_t numel = 0;
    torch::ScalarType dtype = torch::kFloat32;
  };
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
};

// 64-bit hash of the bytes of every tensor (thread-count independent): what ranks compare to
// check that they hold the same weights.
uint64_t weights_hash(const std::vector<torch::Tensor>& tensors);

// ---------------------------------------------------------------- local launcher

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> argv;  // the command each rank runs (argv[0] ignored: /proc/self/exe)
  // LLMOPT_THREADS for each rank when the environment does not set it already (0 = leave unset).
  int threads_per_rank = 0;
};

// Spawns nproc copies of this executable (fork + exec of /proc/self/exe) with RANK, LOCAL_RANK,
// WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT (a free port) set, ranks > 0
// with stdout on /dev/null. Waits for all; when one fails (non-zero exit or a signal) the others
// get SIGTERM (SIGKILL 10 s later) and its status is returned: the exit code, or 128 + signal.
// SIGTERM to the launcher is passed on to the ranks (Ctrl-C reaches them from the terminal, as
// they share its process group). InputError for nproc < 1 or inside a job (WORLD_SIZE set).
int launch_local(const LaunchOptions& options);

// argv without "--nproc N" / "--nproc=N" (what the ranks run).
std::vector<std::string> strip_nproc(const std::vector<std::string>& argv);
// This process's command line (/proc/self/cmdline).
std::vector<std::string> self_argv();
// For rank > 0: log warnings and errors only (unless LLMOPT_LOG says otherwise).
void quiet_logs_off_rank0();

// A private directory for a rank > 0's outputs (removed by the destructor): ranks other than 0
// compute the same stages but write nothing the user sees.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace llmopt::train::dist
