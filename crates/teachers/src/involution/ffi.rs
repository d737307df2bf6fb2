//! The only unsafe code of kd-teachers: the call into cpp/involution.cpp.
//!
//! Tensors cross as tch's `C_tensor` pointers, which are `at::Tensor*` on the
//! C++ side (torch-sys's convention). The shim catches every C++ exception
//! and reports it as text; the tensor it returns is a fresh `at::Tensor*`
//! that the returned [`Tensor`] owns and frees.

#![allow(unsafe_code)]

use std::ffi::c_char;
use tch::Tensor;
use torch_sys::C_tensor;

unsafe extern "C" {
    fn kd_involution(
        x: *const C_tensor,
        w: *const C_tensor,
        k: i64,
        stride: i64,
        groups: i64,
        kernels: i32,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

const ERR_LEN: usize = 1024;

/// The autograd-aware involution of the shim, or its error message.
pub(super) fn involution(
    x: &Tensor,
    w: &Tensor,
    k: i64,
    stride: i64,
    groups: i64,
    kernels: i32,
) -> Result<Tensor, String> {
    let mut err = vec![0u8; ERR_LEN];
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: both tensor pointers are live for the call (borrowed), `out`
    // and `err` point to writable memory of the sizes given, and the shim
    // writes `out` only with a pointer from `new at::Tensor`, which
    // `Tensor::from_ptr` takes ownership of exactly once.
    let rc = unsafe {
        kd_involution(
            x.as_ptr(),
            w.as_ptr(),
            k,
            stride,
            groups,
            kernels,
            &mut out,
            err.as_mut_ptr().cast(),
            ERR_LEN,
        )
    };
    if rc != 0 || out.is_null() {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        return Err(String::from_utf8_lossy(&err[..end]).into_owned());
    }
    // SAFETY: see above; `out` is non-null and owned by nobody else.
    Ok(unsafe { Tensor::from_ptr(out) })
}
