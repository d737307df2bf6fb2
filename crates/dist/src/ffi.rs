//! The only unsafe code of kd-dist: calls into the C ABI of cpp/kd_dist.cpp.
//!
//! The shim catches every C++ exception and reports it as text, so a failed
//! collective is an ordinary error here. Tensors cross as tch's `C_tensor`
//! pointers, which are `at::Tensor*` on the C++ side (torch-sys's
//! convention); the shim copies the handle, never takes ownership.

#![allow(unsafe_code)]

use std::ffi::{CString, c_char};
use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

#[repr(C)]
struct RawReducer {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn kd_dist_new(
        host: *const c_char,
        port: u16,
        rank: i32,
        size: i32,
        serve_store: bool,
        prefix: *const c_char,
        timeout_ms: i64,
        backend: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawGroup;
    fn kd_dist_has_nccl() -> bool;
    fn kd_dist_all_reduce_sum(
        g: *mut RawGroup,
        t: *const C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn kd_dist_broadcast(
        g: *mut RawGroup,
        t: *const C_tensor,
        root: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn kd_dist_barrier(g: *mut RawGroup, err: *mut c_char, err_len: usize) -> i32;
    fn kd_dist_free(g: *mut RawGroup);
    fn kd_dist_reducer_new(
        g: *mut RawGroup,
        params: *const *const C_tensor,
        n: usize,
        bucket_bytes: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut RawReducer;
    fn kd_dist_reducer_backward(
        r: *mut RawReducer,
        loss: *const C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn kd_dist_reducer_free(r: *mut RawReducer);
}

const ERR_LEN: usize = 1024;

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A shim call's result; a failure poisons the object it was made on (its
/// state is unknown after a half-done collective).
fn checked(rc: i32, err: &[u8], poisoned: &std::cell::Cell<bool>) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        poisoned.set(true);
        Err(message(err))
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} '{s}' contains a NUL byte"))
}

/// Whether the shim was compiled with NCCL.
pub(crate) fn has_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { kd_dist_has_nccl() }
}

/// An owned c10d process group (Gloo or NCCL) with its store.
pub(crate) struct Handle {
    ptr: *mut RawGroup,
    /// After a failed collective the group's state is unknown (a Gloo
    /// context may be half-way through a transfer); destroying it could
    /// block on a dead peer, so it is leaked instead: the process is about
    /// to exit with the error anyway.
    poisoned: std::cell::Cell<bool>,
}

impl Handle {
    /// Connect to the store and join the group (blocks until every rank has).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        host: &str,
        port: u16,
        rank: usize,
        size: usize,
        serve_store: bool,
        prefix: &str,
        timeout_ms: i64,
        backend: crate::Backend,
    ) -> Result<Handle, String> {
        let host = cstring("MASTER_ADDR", host)?;
        let prefix = cstring("store prefix", prefix)?;
        let mut err = [0u8; ERR_LEN];
        // SAFETY: valid NUL-terminated strings and an err buffer of the
        // length passed; the shim catches all exceptions.
        let ptr = unsafe {
            kd_dist_new(
                host.as_ptr(),
                port,
                rank as i32,
                size as i32,
                serve_store,
                prefix.as_ptr(),
                timeout_ms,
                backend as i32,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if ptr.is_null() {
            return Err(message(&err));
        }
        Ok(Handle {
            ptr,
            poisoned: std::cell::Cell::new(false),
        })
    }

    fn check(&self, rc: i32, err: &[u8]) -> Result<(), String> {
        checked(rc, err, &self.poisoned)
    }

    /// In place; `t` must be contiguous (the caller checks).
    pub(crate) fn all_reduce_sum(&self, t: &Tensor) -> Result<(), String> {
        let mut err = [0u8; ERR_LEN];
        // SAFETY: live group and tensor; the shim writes into the tensor's
        // storage only, which tch allows through a shared reference as its
        // own in-place ops do.
        let rc = unsafe {
            kd_dist_all_reduce_sum(self.ptr, t.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN)
        };
        self.check(rc, &err)
    }

    /// In place; `t` must be contiguous (the caller checks).
    pub(crate) fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), String> {
        let mut err = [0u8; ERR_LEN];
        // SAFETY: as for all_reduce_sum.
        let rc = unsafe {
            kd_dist_broadcast(
                self.ptr,
                t.as_ptr(),
                root as i32,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        self.check(rc, &err)
    }

    pub(crate) fn barrier(&self) -> Result<(), String> {
        let mut err = [0u8; ERR_LEN];
        // SAFETY: live group, err buffer of the length passed.
        let rc = unsafe { kd_dist_barrier(self.ptr, err.as_mut_ptr().cast(), ERR_LEN) };
        self.check(rc, &err)
    }
}

/// An owned c10d Reducer over a group's backend. It holds its own
/// reference to the backend, so it may outlive the [`Handle`] it came from.
pub(crate) struct ReducerHandle {
    ptr: *mut RawReducer,
    /// As [`Handle`]'s: after a failed reduction the reducer is leaked.
    poisoned: std::cell::Cell<bool>,
}

impl ReducerHandle {
    pub(crate) fn new(g: &Handle, params: &[Tensor], bucket_bytes: i64) -> Result<Self, String> {
        let ptrs: Vec<*const C_tensor> = params.iter().map(|p| p.as_ptr()).collect();
        let mut err = [0u8; ERR_LEN];
        // SAFETY: live group and tensors (the shim copies their handles), an
        // array of `ptrs.len()` pointers, an err buffer of the length passed.
        let ptr = unsafe {
            kd_dist_reducer_new(
                g.ptr,
                ptrs.as_ptr(),
                ptrs.len(),
                bucket_bytes,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if ptr.is_null() {
            return Err(message(&err));
        }
        Ok(ReducerHandle {
            ptr,
            poisoned: std::cell::Cell::new(false),
        })
    }

    /// `loss.backward()` with the gradients summed over the ranks.
    pub(crate) fn backward(&self, loss: &Tensor) -> Result<(), String> {
        let mut err = [0u8; ERR_LEN];
        // SAFETY: live reducer and tensor, err buffer of the length passed.
        let rc = unsafe {
            kd_dist_reducer_backward(self.ptr, loss.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN)
        };
        checked(rc, &err, &self.poisoned)
    }
}

impl Drop for ReducerHandle {
    fn drop(&mut self) {
        if !self.poisoned.get() {
            // SAFETY: created by kd_dist_reducer_new, freed once.
            unsafe { kd_dist_reducer_free(self.ptr) }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.poisoned.get() {
            // SAFETY: created by kd_dist_new, freed once.
            unsafe { kd_dist_free(self.ptr) }
        }
    }
}
