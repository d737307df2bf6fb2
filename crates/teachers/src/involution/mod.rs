//! The involution operator (Li et al., "Involution: Inverting the Inherence of
//! Convolution for Visual Recognition", CVPR 2021).
//!
//! For every output pixel a `K x K` kernel is given (generated from that
//! pixel's features by [`crate::rednet::Involution`]), shared by the `C/G`
//! channels of each of `G` groups:
//!
//! `out[b, c, h, w] = sum_{i,j} W[b, g(c), i*K+j, h, w] * xpad[b, c, h*s + i, w*s + j]`
//!
//! with `xpad` the input zero-padded by `(K-1)/2`. Three implementations:
//!
//! - [`involution`], the one the networks use: one autograd node of the C++
//!   shim (`cpp/involution.cpp`) whose backward accumulates the input and
//!   kernel gradients into one buffer each, in one pass (direct loops on
//!   float CPU tensors, libtorch ops elsewhere; [`Kernels`] picks).
//! - [`involution_slices`], the same sum as K*K strided slices of the padded
//!   input built from libtorch ops, so autograd derives its backward: K*K
//!   nodes, each zero-filling an input-sized gradient buffer. It was the fast
//!   path before the shim; `benches/teachers.rs` keeps it as the "before".
//! - [`involution_naive`], the textbook one: unfold (im2col) the input to
//!   `[B, C*K*K, H'*W']`, multiply, sum. It materialises K*K copies of the
//!   activation (and keeps them for the backward pass).
//!
//! The tests check values and gradients of each against the others and
//! against a per-pixel loop ([`involution_loops`]).

mod ffi;

use tch::Tensor;

/// Output side length for input side `n`, kernel `k` (odd), stride `s`.
pub fn out_size(n: i64, k: i64, s: i64) -> i64 {
    (n + 2 * ((k - 1) / 2) - k) / s + 1
}

fn check(x: &Tensor, w: &Tensor, k: i64, stride: i64, groups: i64) -> (i64, i64, i64, i64, i64) {
    let (b, c, h, wd) = x.size4().expect("involution input is [B,C,H,W]");
    assert!(k % 2 == 1, "involution kernel size must be odd, got {k}");
    assert!(
        groups > 0 && c % groups == 0,
        "{c} channels do not split into {groups} groups"
    );
    let (ho, wo) = (out_size(h, k, stride), out_size(wd, k, stride));
    assert_eq!(
        w.size(),
        [b, groups, k * k, ho, wo],
        "involution kernel must be [B, G, K*K, H', W']"
    );
    (b, c, ho, wo, c / groups)
}

/// Which implementation an involution layer runs (benchmarks compare them;
/// networks use [`Implementation::Shim`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Implementation {
    #[default]
    Shim,
    Slices,
    Im2col,
}

impl Implementation {
    pub const ALL: [Implementation; 3] = [
        Implementation::Shim,
        Implementation::Slices,
        Implementation::Im2col,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Shim => "shim",
            Implementation::Slices => "slices",
            Implementation::Im2col => "im2col",
        }
    }

    /// Involution of `x` by `w` with this implementation.
    pub fn apply(self, x: &Tensor, w: &Tensor, k: i64, stride: i64, groups: i64) -> Tensor {
        match self {
            Implementation::Shim => involution(x, w, k, stride, groups),
            Implementation::Slices => involution_slices(x, w, k, stride, groups),
            Implementation::Im2col => involution_naive(x, w, k, stride, groups),
        }
    }
}

/// Which kernels the shim's involution runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// Direct loops for float / double CPU tensors, with AVX2 + FMA kernels
    /// for float groups of 16 channels where the CPU has them; libtorch ops
    /// otherwise.
    #[default]
    Auto,
    /// libtorch ops on every device (what CUDA and bf16 tensors get; tests
    /// pick it on the CPU to check it there).
    Ops,
    /// The direct loops in portable SIMD only (what a CPU without AVX2
    /// runs; tests pick it to check it on one that has AVX2).
    Portable,
}

impl Kernels {
    /// The shim's code for it.
    fn code(self) -> i32 {
        match self {
            Kernels::Auto => 0,
            Kernels::Ops => 1,
            Kernels::Portable => 2,
        }
    }
}

/// Involution as one autograd node with a single-buffer backward.
///
/// `x`: `[B, C, H, W]`; `w`: `[B, G, K*K, H', W']` with `H' = ceil(H / stride)`
/// for odd `k`. Returns `[B, C, H', W']`, in the common dtype of `x` and `w`.
pub fn involution(x: &Tensor, w: &Tensor, k: i64, stride: i64, groups: i64) -> Tensor {
    involution_with(x, w, k, stride, groups, Kernels::Auto)
}

/// [`involution`] with a choice of kernels.
pub fn involution_with(
    x: &Tensor,
    w: &Tensor,
    k: i64,
    stride: i64,
    groups: i64,
    kernels: Kernels,
) -> Tensor {
    check(x, w, k, stride, groups);
    ffi::involution(x, w, k, stride, groups, kernels.code())
        .unwrap_or_else(|e| panic!("involution (k={k}, stride={stride}, groups={groups}): {e}"))
}

/// Involution as a sum of `K*K` shifted (strided) slices of the padded input,
/// from libtorch ops (autograd derives the backward). Same contract as
/// [`involution`].
pub fn involution_slices(x: &Tensor, w: &Tensor, k: i64, stride: i64, groups: i64) -> Tensor {
    let (b, c, ho, wo, cg) = check(x, w, k, stride, groups);
    let p = (k - 1) / 2;
    let xp = x.constant_pad_nd([p, p, p, p]);
    let (hp, wp) = (xp.size()[2], xp.size()[3]);
    let xp = xp.view([b, groups, cg, hp, wp]);
    // unbind, not K*K selects: its backward is one stack, where each select's
    // would zero-fill a kernel-sized gradient buffer.
    let taps = w.unsqueeze(2).unbind(3);
    let mut acc: Option<Tensor> = None;
    for i in 0..k {
        let rows = xp.slice(3, i, i + stride * (ho - 1) + 1, stride);
        for j in 0..k {
            let xs = rows.slice(4, j, j + stride * (wo - 1) + 1, stride);
            let wk = &taps[(i * k + j) as usize];
            match acc.as_mut() {
                // In place: autograd of addcmul does not need the accumulator's
                // old value, so one [B,C,H',W'] buffer serves every term.
                Some(a) => {
                    let _ = a.addcmul_(&xs, wk);
                }
                None => acc = Some(&xs * wk),
            }
        }
    }
    acc.expect("k >= 1").view([b, c, ho, wo])
}

/// Reference involution through im2col (`nn.Unfold`), as in the authors'
/// `involution_naive.py`. Same contract as [`involution`].
pub fn involution_naive(x: &Tensor, w: &Tensor, k: i64, stride: i64, groups: i64) -> Tensor {
    let (b, c, ho, wo, cg) = check(x, w, k, stride, groups);
    let p = (k - 1) / 2;
    let cols =
        x.im2col([k, k], [1, 1], [p, p], [stride, stride])
            .view([b, groups, cg, k * k, ho, wo]);
    (cols * w.view([b, groups, 1, k * k, ho, wo]))
        .sum_dim_intlist(3, false, None::<tch::Kind>)
        .view([b, c, ho, wo])
}

/// Per-pixel loops over plain buffers: the definition, for tests on tiny
/// inputs. `x` is `[b,c,h,w]` row-major, `w` is `[b,g,k*k,h',w']`.
#[allow(clippy::too_many_arguments)]
pub fn involution_loops(
    x: &[f64],
    w: &[f64],
    [b, c, h, wd]: [usize; 4],
    k: usize,
    stride: usize,
    groups: usize,
) -> Vec<f64> {
    let ho = out_size(h as i64, k as i64, stride as i64) as usize;
    let wo = out_size(wd as i64, k as i64, stride as i64) as usize;
    let p = (k - 1) / 2;
    let cg = c / groups;
    let mut out = vec![0.0; b * c * ho * wo];
    for bi in 0..b {
        for ci in 0..c {
            let g = ci / cg;
            for y in 0..ho {
                for xo in 0..wo {
                    let mut s = 0.0;
                    for i in 0..k {
                        for j in 0..k {
                            let sy = (y * stride + i) as isize - p as isize;
                            let sx = (xo * stride + j) as isize - p as isize;
                            if sy < 0 || sx < 0 || sy >= h as isize || sx >= wd as isize {
                                continue;
                            }
                            let xv = x[((bi * c + ci) * h + sy as usize) * wd + sx as usize];
                            let wv =
                                w[(((bi * groups + g) * k * k + i * k + j) * ho + y) * wo + xo];
                            s += xv * wv;
                        }
                    }
                    out[((bi * c + ci) * ho + y) * wo + xo] = s;
                }
            }
        }
    }
    out
}
