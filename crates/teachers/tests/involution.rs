//! Every involution (the shim's op on each of its kernel paths: the loops
//! with this CPU's widest kernels, the portable loops, libtorch ops; the
//! libtorch-ops slices) equals the im2col reference and the per-pixel
//! definition, in values and gradients.

use kd_teachers::involution::{
    Kernels, involution, involution_loops, involution_naive, involution_slices, involution_with,
    out_size,
};
use tch::{Device, Kind, Tensor};

type Op = Box<dyn Fn(&Tensor, &Tensor, i64, i64, i64) -> Tensor>;

/// The implementations under test, by name.
fn implementations() -> Vec<(&'static str, Op)> {
    vec![
        ("shim loops", Box::new(involution)),
        (
            "shim portable loops",
            Box::new(|x, w, k, s, g| involution_with(x, w, k, s, g, Kernels::Portable)),
        ),
        (
            "shim ops",
            Box::new(|x, w, k, s, g| involution_with(x, w, k, s, g, Kernels::Ops)),
        ),
        ("slices", Box::new(involution_slices)),
    ]
}

#[allow(clippy::too_many_arguments)]
fn case(b: i64, c: i64, h: i64, w: i64, k: i64, stride: i64, groups: i64, seed: i64) {
    // Tests of one binary run on parallel threads over libtorch's one RNG.
    let _rng = kd_core::torch_rng_lock();
    tch::manual_seed(seed);
    let ho = out_size(h, k, stride);
    let wo = out_size(w, k, stride);
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([b, c, h, w], opts).set_requires_grad(true);
    let wt = Tensor::randn([b, groups, k * k, ho, wo], opts).set_requires_grad(true);
    let naive = involution_naive(&x, &wt, k, stride, groups);
    let up = Tensor::randn([b, c, ho, wo], opts);
    let grads = |out: &Tensor| {
        let g = Tensor::run_backward(&[(out * &up).sum(Kind::Double)], &[&x, &wt], false, false);
        (g[0].shallow_clone(), g[1].shallow_clone())
    };
    let (gx_ref, gw_ref) = grads(&naive);
    for (name, op) in implementations() {
        let at = format!("{name}, k={k} s={stride} g={groups} {h}x{w}");
        let fast = op(&x, &wt, k, stride, groups);
        assert_eq!(fast.size(), [b, c, ho, wo], "{at}");
        let diff = f64::try_from((&fast - &naive).abs().max()).unwrap();
        assert!(diff < 1e-10, "{at}: outputs differ by {diff}");

        // Definition by loops.
        let xs: Vec<f64> = Vec::try_from(x.detach().flatten(0, -1)).unwrap();
        let ws: Vec<f64> = Vec::try_from(wt.detach().flatten(0, -1)).unwrap();
        let want = involution_loops(
            &xs,
            &ws,
            [b, c, h, w].map(|v| v as usize),
            k as usize,
            stride as usize,
            groups as usize,
        );
        let got: Vec<f64> = Vec::try_from(fast.detach().flatten(0, -1)).unwrap();
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-10, "{at}: loops differ by {worst}");
        assert!(
            got.iter().any(|v| v.abs() > 1e-3),
            "{at}: output is trivially zero"
        );

        // Gradients under a random upstream gradient.
        let (gx, gw) = grads(&fast);
        for (what, a, bb) in [("input", &gx, &gx_ref), ("kernel", &gw, &gw_ref)] {
            let d = f64::try_from((a - bb).abs().max()).unwrap();
            let scale = f64::try_from(bb.abs().max()).unwrap();
            assert!(scale > 1e-3, "{at}: {what} gradient is trivially zero");
            assert!(d < 1e-10, "{at}: {what} gradients differ by {d}");
        }
    }
}

#[test]
fn fast_equals_reference_values_and_gradients() {
    let mut seed = 0;
    for &(k, stride, groups) in &[
        (1, 1, 1),
        (3, 1, 1),
        (3, 2, 2),
        (5, 1, 4),
        (5, 2, 1),
        (7, 1, 2),
        (7, 2, 4),
        (3, 3, 2),
    ] {
        for &(h, w) in &[(7, 7), (8, 5), (2, 9)] {
            seed += 1;
            case(2, 8, h, w, k, stride, groups, seed);
        }
    }
    // Groups of 16 channels (RedNet's and the stems' width), which the shim
    // runs through a loop specialised for it.
    case(2, 32, 9, 9, 5, 2, 2, 100);
    case(1, 16, 6, 7, 7, 1, 1, 101);
}

#[test]
fn identity_kernel_returns_input() {
    // A kernel that is 1 at the centre tap and 0 elsewhere copies the input.
    let x = Tensor::randn([1, 4, 6, 6], (Kind::Float, Device::Cpu));
    let w = Tensor::zeros([1, 2, 9, 6, 6], (Kind::Float, Device::Cpu));
    let _ = w.narrow(2, 4, 1).fill_(1.0);
    let y = involution(&x, &w, 3, 1, 2);
    assert!(y.allclose(&x, 1e-6, 1e-6, false));
}

/// The float32 path (what training runs) against the im2col reference, with
/// inputs that are not contiguous and a kernel generated upstream, so the
/// gradients reach a leaf through other ops.
#[test]
fn float32_noncontiguous_inputs_and_gradients_agree() {
    let _rng = kd_core::torch_rng_lock();
    tch::manual_seed(11);
    let opts = (Kind::Float, Device::Cpu);
    let (b, c, h, k, s, g) = (3, 32, 14, 5, 2, 2);
    let ho = out_size(h, k, s);
    // [B, H, W, C] permuted to [B, C, H, W]: a view with channels last.
    let leaf_x = Tensor::randn([b, h, h, c], opts).set_requires_grad(true);
    let leaf_w = Tensor::randn([b, g * k * k, ho, ho], opts).set_requires_grad(true);
    let run = |op: &dyn Fn(&Tensor, &Tensor) -> Tensor| {
        let x = leaf_x.permute([0, 3, 1, 2]);
        assert!(!x.is_contiguous());
        let w = (&leaf_w * 0.5).view([b, g, k * k, ho, ho]);
        let y = op(&x, &w);
        let loss = (&y * &y).sum(Kind::Float);
        let gr = Tensor::run_backward(&[loss], &[&leaf_x, &leaf_w], false, false);
        (y.detach(), gr[0].shallow_clone(), gr[1].shallow_clone())
    };
    let reference = run(&|x, w| involution_naive(x, w, k, s, g));
    for (name, op) in implementations() {
        let got = run(&|x, w| op(x, w, k, s, g));
        for (what, a, r) in [
            ("output", &got.0, &reference.0),
            ("input gradient", &got.1, &reference.1),
            ("kernel gradient", &got.2, &reference.2),
        ] {
            assert_eq!(a.kind(), Kind::Float, "{name}: {what} dtype");
            let scale = f64::try_from(r.abs().max()).unwrap();
            let d = f64::try_from((a - r).abs().max()).unwrap();
            assert!(
                d <= 1e-5 * scale.max(1.0),
                "{name}: {what} differs by {d} (scale {scale})"
            );
        }
    }
}

/// Under bf16 autocast the kernel generator hands over bf16 kernels while the
/// input may be f32: the op promotes to the common dtype, as the elementwise
/// ops it replaced did, and gradients come back in each input's own dtype.
#[test]
fn mixed_dtypes_promote_and_gradients_keep_dtypes() {
    let _rng = kd_core::torch_rng_lock();
    tch::manual_seed(12);
    let x = Tensor::randn([2, 16, 6, 6], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let w = Tensor::randn([2, 1, 9, 6, 6], (Kind::BFloat16, Device::Cpu)).set_requires_grad(true);
    let y = involution(&x, &w, 3, 1, 1);
    assert_eq!(y.kind(), Kind::Float);
    let want = involution_naive(&x, &w.to_kind(Kind::Float), 3, 1, 1);
    assert!(y.allclose(&want, 1e-5, 1e-5, false));
    y.sum(Kind::Float).backward();
    assert_eq!(x.grad().kind(), Kind::Float);
    assert_eq!(w.grad().kind(), Kind::BFloat16);
    assert!(f64::try_from(w.grad().abs().sum(Kind::Float)).unwrap() > 0.0);
}

/// bf16 tensors take the libtorch-ops path on the CPU; it agrees with f32
/// within bf16's precision.
#[test]
fn bf16_inputs_take_the_ops_path() {
    let _rng = kd_core::torch_rng_lock();
    tch::manual_seed(13);
    let x = Tensor::randn([2, 16, 7, 7], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([2, 1, 25, 4, 4], (Kind::Float, Device::Cpu));
    let want = involution(&x, &w, 5, 2, 1);
    let got = involution(
        &x.to_kind(Kind::BFloat16),
        &w.to_kind(Kind::BFloat16),
        5,
        2,
        1,
    );
    assert_eq!(got.kind(), Kind::BFloat16);
    let d = f64::try_from((got.to_kind(Kind::Float) - &want).abs().max()).unwrap();
    let scale = f64::try_from(want.abs().max()).unwrap();
    assert!(d < 0.02 * scale, "bf16 differs by {d} (scale {scale})");
}

/// Strides of a dense channels-last `[B, C, H, W]` tensor.
fn channels_last_strides(t: &Tensor) -> Vec<i64> {
    let (_, c, h, w) = t.size4().unwrap();
    vec![c * h * w, 1, w * c, c]
}

/// A channels-last input with pixel-major kernels (what a channels-last
/// kernel generator hands over) gives the planar run's values and gradients
/// exactly, and keeps the channels-last layout in its output and input
/// gradient, with the kernel gradient in the kernel's layout.
#[test]
fn channels_last_inputs_keep_their_layout_and_agree_exactly() {
    let _rng = kd_core::torch_rng_lock();
    for (seed, &(c, h, k, s, g, kind)) in [
        (16, 9, 7, 1, 1, Kind::Float),
        (32, 14, 5, 2, 2, Kind::Float),
        (64, 7, 7, 1, 4, Kind::Float),
        (8, 8, 3, 1, 2, Kind::Double),
        (12, 7, 3, 2, 3, Kind::Float),
    ]
    .iter()
    .enumerate()
    {
        tch::manual_seed(20 + seed as i64);
        let b = 3;
        let ho = out_size(h, k, s);
        let opts = (kind, Device::Cpu);
        let x0 = Tensor::randn([b, c, h, h], opts);
        let w0 = Tensor::randn([b, g, k * k, ho, ho], opts);
        let up = Tensor::randn([b, c, ho, ho], opts);
        let at = format!("c={c} h={h} k={k} s={s} g={g} {kind:?}");
        let run = |channels_last: bool| {
            // Leaves in the layout under test; the op sees [B,C,H,W] views.
            let (lx, lw) = if channels_last {
                (
                    x0.permute([0, 2, 3, 1])
                        .contiguous()
                        .set_requires_grad(true),
                    w0.permute([0, 3, 4, 1, 2])
                        .contiguous()
                        .set_requires_grad(true),
                )
            } else {
                (
                    x0.copy().set_requires_grad(true),
                    w0.copy().set_requires_grad(true),
                )
            };
            let (x, w) = if channels_last {
                (lx.permute([0, 3, 1, 2]), lw.permute([0, 3, 4, 1, 2]))
            } else {
                (lx.shallow_clone(), lw.shallow_clone())
            };
            let y = involution(&x, &w, k, s, g);
            let gr = Tensor::run_backward(&[(&y * &up).sum(kind)], &[&x, &w], true, false);
            (y, gr[0].shallow_clone(), gr[1].shallow_clone(), w)
        };
        let (y_p, gx_p, gw_p, _) = run(false);
        let (y_c, gx_c, gw_c, w_c) = run(true);
        assert_eq!(
            y_c.stride(),
            channels_last_strides(&y_c),
            "{at}: output layout"
        );
        assert_eq!(
            gx_c.stride(),
            channels_last_strides(&gx_c),
            "{at}: input gradient layout"
        );
        assert_eq!(gw_c.stride(), w_c.stride(), "{at}: kernel gradient layout");
        for (what, a, r) in [
            ("output", &y_c, &y_p),
            ("input gradient", &gx_c, &gx_p),
            ("kernel gradient", &gw_c, &gw_p),
        ] {
            assert!(a.equal(r), "{at}: {what} differs from the planar run");
        }
    }
}
