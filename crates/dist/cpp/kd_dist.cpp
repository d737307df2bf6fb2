// kd-dist's shim: the few c10d calls the training loop needs, behind a C ABI
// (Rust cannot call C++ members or catch C++ exceptions). Every entry point
// catches, so no exception crosses into Rust; errors come back as text.
//
// Rendezvous is torch's own: a TCPStore on MASTER_ADDR:MASTER_PORT (served by
// rank 0, or by torchrun's agent), a prefix so that keys of another user of
// that store cannot collide, and a process group: Gloo, whose collectives
// take CPU and CUDA tensors alike, or NCCL (CUDA tensors, GPU to GPU), which
// is compiled in only where the libtorch is a CUDA build with NCCL's and
// CUDA's headers beside it (build.rs defines KD_WITH_NCCL then).
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef KD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "kd_guarded.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

struct kd_dist_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  int32_t rank;
  int32_t size;
  int32_t backend;
};

// The gradient reduction that overlaps the backward pass: torch's own DDP
// Reducer (autograd hooks on the parameters; a bucket's all-reduce starts as
// soon as the backward pass has computed all of its gradients, in the
// order the backward pass produces them).
struct kd_dist_reducer {
  std::shared_ptr<c10d::Reducer> reducer;
  // The Reducer reports through a Logger it assumes is there (a step that
  // finds an unused parameter dereferences it); it holds it weakly.
  std::shared_ptr<c10d::Logger> logger;
};

namespace {

// Each rank has scaled its loss by its share of the batch, so a bucket's
// reduction is a plain sum: no division by the world size, which DDP's
// default (a mean over ranks) would apply.
class SumHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::Backend>> {
 public:
  using CppCommHookInterface::CppCommHookInterface;
  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    std::vector<at::Tensor> t{bucket.getBufferRef()};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    return state_->allreduce(t, o)->getFuture();
  }
};

// find_unused_parameters is on because a step may leave parameters
// unreached (a rank without samples, a head without a loss); the Reducer's
// advice to turn it off when none were is for a model known to use all.
class QuietAboutUnused : public c10::WarningHandler {
 public:
  explicit QuietAboutUnused(c10::WarningHandler* next) : next_(next) {}
  void process(const c10::Warning& w) override {
    if (w.msg().find("find_unused_parameters=True") == std::string::npos) next_->process(w);
  }

 private:
  c10::WarningHandler* next_;
};

}  // namespace

// The backends, as the Rust side numbers them.
enum : int32_t { KD_GLOO = 0, KD_NCCL = 1 };

using kd_shim::guarded;

extern "C" {

// Whether this build can make an NCCL group.
bool kd_dist_has_nccl() {
#ifdef KD_WITH_NCCL
  return true;
#else
  return false;
#endif
}

// Join the group; blocks until all `size` ranks have joined or `timeout_ms`
// passed. Returns null and fills `err` on failure.
kd_dist_group* kd_dist_new(const char* host, uint16_t port, int32_t rank, int32_t size,
                           bool serve_store, const char* prefix, int64_t timeout_ms,
                           int32_t backend, char* err, size_t err_len) {
  kd_dist_group* out = nullptr;
  guarded(err, err_len, [&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions so;
    so.port = port;
    so.isServer = serve_store;
    so.numWorkers = size;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == KD_NCCL) {
#ifdef KD_WITH_NCCL
      // NCCL's own watchdog enforces the timeout on every collective.
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
#else
      throw std::runtime_error("NCCL is not compiled into this build");
#endif
    } else {
      // create_default picks the transport device as torch.distributed does
      // (GLOO_SOCKET_IFNAME, else this host's name, else loopback); the
      // timeout bounds every collective, so a dead or stuck peer ends in an
      // error.
      auto opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
    }
    out = new kd_dist_group{tcp, pg, rank, size, backend};
  });
  return out;
}

// In place: `t` becomes the elementwise sum of every rank's `t`.
int32_t kd_dist_all_reduce_sum(kd_dist_group* g, const at::Tensor* t, char* err,
                               size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    g->pg->allreduce(v, o)->wait();
  });
}

// In place: every rank's `t` becomes rank `root`'s.
int32_t kd_dist_broadcast(kd_dist_group* g, const at::Tensor* t, int32_t root, char* err,
                          size_t err_len) {
  return guarded(err, err_len, [&] {
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    g->pg->broadcast(v, o)->wait();
  });
}

int32_t kd_dist_barrier(kd_dist_group* g, char* err, size_t err_len) {
  return guarded(err, err_len, [&] { g->pg->barrier()->wait(); });
}

void kd_dist_free(kd_dist_group* g) { delete g; }

// A reducer of the gradients of `params` (all of one device, requiring
// grad) in buckets of about `bucket_bytes`. Parameters a step's forward
// does not reach count as zero on that rank; one reached on no rank keeps
// no gradient (torch's find_unused_parameters).
kd_dist_reducer* kd_dist_reducer_new(kd_dist_group* g, const at::Tensor* const* params,
                                     size_t n, int64_t bucket_bytes, char* err,
                                     size_t err_len) {
  kd_dist_reducer* out = nullptr;
  guarded(err, err_len, [&] {
    std::vector<at::Tensor> ps;
    ps.reserve(n);
    for (size_t i = 0; i < n; ++i) ps.push_back(*params[i]);
    // The Reducer talks to a ProcessGroup; ours wraps the one backend for
    // both device types (Gloo takes CUDA tensors too; NCCL only ever sees
    // CUDA parameters).
    auto group = c10::make_intrusive<c10d::ProcessGroup>(g->store, g->rank, g->size);
    const auto type = g->backend == KD_NCCL ? c10d::ProcessGroup::NCCL : c10d::ProcessGroup::GLOO;
    group->setDefaultBackend(type);
    group->setBackend(c10::DeviceType::CPU, type, g->pg);
    group->setBackend(c10::DeviceType::CUDA, type, g->pg);
    // Buckets in reverse parameter order, as DDP makes them: the backward
    // pass reaches the last layers first.
    std::vector<int64_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = static_cast<int64_t>(n - 1 - i);
    const auto cap = static_cast<size_t>(bucket_bytes);
    auto [buckets, limits] =
        c10d::compute_bucket_assignment_by_size(ps, {cap}, std::vector<bool>(n, false), order);
    (void)limits;
    auto r = std::make_shared<c10d::Reducer>(
        ps, std::move(buckets), group, std::vector<bool>(n, false), bucket_bytes,
        /*find_unused_parameters=*/true, /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{}, /*first_bucket_bytes_cap=*/bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        std::vector<int64_t>{});
    r->register_comm_hook(std::make_unique<SumHook>(g->pg));
    auto logger = std::make_shared<c10d::Logger>(r);
    r->set_logger(logger);
    out = new kd_dist_reducer{std::move(r), std::move(logger)};
  });
  return out;
}

// The backward pass of `loss` with the reducer armed: the parameters it
// cannot reach are marked unused for this step, and the gradients of the
// others are summed over the ranks, bucket by bucket, by the time it returns.
int32_t kd_dist_reducer_backward(kd_dist_reducer* r, const at::Tensor* loss, char* err,
                                 size_t err_len) {
  return guarded(err, err_len, [&] {
    {
      QuietAboutUnused quiet(c10::WarningUtils::get_warning_handler());
      c10::WarningUtils::WarningHandlerGuard guard(&quiet);
      r->reducer->prepare_for_forward();
      r->reducer->prepare_for_backward({*loss});
    }
    loss->backward();
  });
}

void kd_dist_reducer_free(kd_dist_reducer* r) {
  char ignored[8];
  guarded(ignored, sizeof ignored, [&] { delete r; });
}

}  // extern "C"
