// kd-core's C++ shim: the libtorch functions that tch does not wrap and
// the training loop needs, called through libtorch's public C++ headers so
// that a libtorch update shows up as a compile error, never as a wrong call.
//
// - AdamW over all parameters in a few launches (`at::_fused_adamw_`, the
//   kernel behind `torch.optim.AdamW(fused=True)`) and the gradients zeroed
//   in one (`at::_foreach_zero_`): a small ViT on a GPU is otherwise bound
//   by ~10 kernel launches per parameter tensor.
// - The global switches for reproducible GPU runs: deterministic algorithms
//   and cuDNN, and TF32 (float32 matmuls and convolutions in 19-bit
//   precision on Ampere and later), which tch does not expose.
// - Autocast's per-device switches (bf16 over float32 master weights); tch
//   wraps only the CUDA float16 one.
//
// Tensors cross as tch's `C_tensor` pointers, which are `at::Tensor*`.
// Every entry that can throw catches (kd_guarded.h), so no C++ exception
// crosses into Rust; errors come back as one line of text.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include "kd_guarded.h"

#include <cstdlib>
#include <vector>

namespace {

std::vector<at::Tensor> gather(at::Tensor** ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

at::DeviceType device_type(int8_t cuda) { return cuda ? at::kCUDA : at::kCPU; }

}  // namespace

extern "C" {

// One AdamW update of `n` parameters sharing a weight decay: `step` is the
// update's 1-based count (for bias correction); every list is in the same
// order and on one device.
int32_t kd_adamw_step(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                      at::Tensor** exp_avg_sqs, int64_t n, int64_t step, double lr,
                      double beta1, double beta2, double weight_decay, double eps, char* err,
                      size_t err_len) {
  return kd_shim::guarded(err, err_len, [&] {
    if (n == 0) return;
    auto p = gather(params, n);
    auto g = gather(grads, n);
    auto m = gather(exp_avgs, n);
    auto v = gather(exp_avg_sqs, n);
    // The kernel reads the step from a float tensor on the parameters'
    // device; one tensor serves every parameter (the kernel does not write
    // it), so this is one small fill, not one per parameter.
    auto t = at::full({}, static_cast<double>(step),
                      at::TensorOptions().dtype(at::kFloat).device(p[0].device()));
    std::vector<at::Tensor> steps(n, t);
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

int32_t kd_zero(at::Tensor** tensors, int64_t n, char* err, size_t err_len) {
  return kd_shim::guarded(err, err_len, [&] {
    if (n == 0) return;
    at::_foreach_zero_(gather(tensors, n));
  });
}

// Deterministic kernels everywhere (an op without one raises), cuDNN's
// deterministic algorithms and no autotuning; or libtorch's defaults.
int32_t kd_set_deterministic(bool on, char* err, size_t err_len) {
  return kd_shim::guarded(err, err_len, [&] {
    // cuBLAS is deterministic only with a fixed workspace, read when its
    // handle is made: set before the first CUDA call, unless the user did.
    if (on) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    auto& ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(on, /*warn_only=*/false);
    ctx.setDeterministicCuDNN(on);
    ctx.setBenchmarkCuDNN(false);
  });
}

// TF32 for float32 matmuls (cuBLAS) and convolutions (cuDNN): on or off.
int32_t kd_set_tf32(bool on, char* err, size_t err_len) {
  return kd_shim::guarded(err, err_len, [&] {
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuBLAS(on);
    ctx.setAllowTF32CuDNN(on);
  });
}

bool kd_tf32_allowed() { return at::globalContext().allowTF32CuBLAS(); }

// Autocast state of one device type (`cuda` 0: CPU, 1: CUDA). `dtype` is a
// c10::ScalarType as its int8_t value.
bool kd_autocast_is_enabled(int8_t cuda) { return at::autocast::is_autocast_enabled(device_type(cuda)); }
void kd_autocast_set_enabled(int8_t cuda, bool on) {
  at::autocast::set_autocast_enabled(device_type(cuda), on);
}
int8_t kd_autocast_get_dtype(int8_t cuda) {
  return static_cast<int8_t>(at::autocast::get_autocast_dtype(device_type(cuda)));
}
void kd_autocast_set_dtype(int8_t cuda, int8_t dtype) {
  at::autocast::set_autocast_dtype(device_type(cuda), static_cast<at::ScalarType>(dtype));
}
int32_t kd_autocast_increment_nesting() { return at::autocast::increment_nesting(); }
int32_t kd_autocast_decrement_nesting() { return at::autocast::decrement_nesting(); }
void kd_autocast_clear_cache() { at::autocast::clear_cache(); }
int8_t kd_scalar_type_bfloat16() { return static_cast<int8_t>(at::kBFloat16); }

}  // extern "C"
