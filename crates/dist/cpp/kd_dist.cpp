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
};

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
    out = new kd_dist_group{tcp, pg};
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

}  // extern "C"
