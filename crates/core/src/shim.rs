//! The only unsafe code of kd-core's training path: calls into
//! `cpp/ops.cpp`, the shim over libtorch functions that tch does not wrap
//! (fused AdamW, foreach zero, autocast's per-device switches).
//!
//! Tensors cross as tch's `C_tensor` pointers, which are `at::Tensor*` on
//! the C++ side (torch-sys's convention); the shim only reads and updates
//! them in place. Entries that can throw catch on the C++ side and report
//! one line of text.

#![allow(unsafe_code)]

use std::ffi::c_char;
use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn kd_adamw_step(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        n: i64,
        step: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn kd_zero(tensors: *const *mut C_tensor, n: i64, err: *mut c_char, err_len: usize) -> i32;
    fn kd_set_deterministic(on: bool, err: *mut c_char, err_len: usize) -> i32;
    fn kd_set_tf32(on: bool, err: *mut c_char, err_len: usize) -> i32;
    fn kd_tf32_allowed() -> bool;
    fn kd_autocast_is_enabled(cuda: i8) -> bool;
    fn kd_autocast_set_enabled(cuda: i8, on: bool);
    fn kd_autocast_get_dtype(cuda: i8) -> i8;
    fn kd_autocast_set_dtype(cuda: i8, dtype: i8);
    fn kd_autocast_increment_nesting() -> i32;
    fn kd_autocast_decrement_nesting() -> i32;
    fn kd_autocast_clear_cache();
    fn kd_scalar_type_bfloat16() -> i8;
}

const ERR_LEN: usize = 1024;

/// The tensors' handles. Updating a tensor in place changes its storage,
/// never the handle, so a shared borrow is enough.
fn ptrs(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr().cast_mut()).collect()
}

/// Run a shim entry with an error buffer; its one line of text on failure.
fn checked(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<(), String> {
    let mut err = vec![0u8; ERR_LEN];
    if f(err.as_mut_ptr().cast(), ERR_LEN) == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}

/// Hyper-parameters of one fused AdamW update.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamWStep {
    pub step: i64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW update of every parameter in `params` (libtorch's fused
/// kernel), moments and parameters updated in place. All four lists have
/// the same length and order, and live on one device in float32.
pub(crate) fn adamw_step(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    h: AdamWStep,
) -> Result<(), String> {
    let n = params.len();
    assert!(grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n);
    let (p, g, m, v) = (ptrs(params), ptrs(grads), ptrs(exp_avgs), ptrs(exp_avg_sqs));
    // SAFETY: the four pointer arrays hold `n` live tensors each, borrowed
    // for the call; the shim updates them in place and keeps no reference,
    // and writes at most `len` bytes into `err`.
    checked(|err, len| unsafe {
        kd_adamw_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n as i64,
            h.step,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            err,
            len,
        )
    })
}

/// Zero every tensor of `ts` in place, in one launch per device and dtype.
pub(crate) fn zero(ts: &[Tensor]) -> Result<(), String> {
    let p = ptrs(ts);
    // SAFETY: as for `adamw_step`: `n` live tensors, updated in place.
    checked(|err, len| unsafe { kd_zero(p.as_ptr(), p.len() as i64, err, len) })
}

/// libtorch's process-wide switch for deterministic algorithms (and
/// cuDNN's, with autotuning off); off restores libtorch's default.
pub(crate) fn set_deterministic(on: bool) -> Result<(), String> {
    // SAFETY: a setter of process-wide libtorch state; `err` as above.
    checked(|err, len| unsafe { kd_set_deterministic(on, err, len) })
}

/// TF32 for float32 matmuls and convolutions on GPUs that have it.
pub(crate) fn set_tf32(on: bool) -> Result<(), String> {
    // SAFETY: a setter of process-wide libtorch state; `err` as above.
    checked(|err, len| unsafe { kd_set_tf32(on, err, len) })
}

pub(crate) fn tf32_allowed() -> bool {
    // SAFETY: a getter of process-wide libtorch state.
    unsafe { kd_tf32_allowed() }
}

/// Autocast's thread-local switches for the CPU (`cuda == 0`) or CUDA.
pub(crate) mod autocast {
    // SAFETY (every function here): plain getters and setters of
    // thread-local libtorch state, with enums passed as their int8_t value.
    pub fn is_enabled(cuda: i8) -> bool {
        unsafe { super::kd_autocast_is_enabled(cuda) }
    }
    pub fn set_enabled(cuda: i8, on: bool) {
        unsafe { super::kd_autocast_set_enabled(cuda, on) }
    }
    pub fn dtype(cuda: i8) -> i8 {
        unsafe { super::kd_autocast_get_dtype(cuda) }
    }
    pub fn set_dtype(cuda: i8, dtype: i8) {
        unsafe { super::kd_autocast_set_dtype(cuda, dtype) }
    }
    pub fn increment_nesting() -> i32 {
        unsafe { super::kd_autocast_increment_nesting() }
    }
    pub fn decrement_nesting() -> i32 {
        unsafe { super::kd_autocast_decrement_nesting() }
    }
    pub fn clear_cache() {
        unsafe { super::kd_autocast_clear_cache() }
    }
    pub fn bfloat16() -> i8 {
        unsafe { super::kd_scalar_type_bfloat16() }
    }
}
