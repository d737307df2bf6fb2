//! The fast involution equals the im2col reference and the per-pixel
//! definition, in values and gradients.

use kd_teachers::involution::{involution, involution_loops, involution_naive, out_size};
use tch::{Device, Kind, Tensor};

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
    let fast = involution(&x, &wt, k, stride, groups);
    let naive = involution_naive(&x, &wt, k, stride, groups);
    assert_eq!(fast.size(), [b, c, ho, wo]);
    let diff = f64::try_from((&fast - &naive).abs().max()).unwrap();
    assert!(
        diff < 1e-10,
        "k={k} s={stride} g={groups}: outputs differ by {diff}"
    );

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
    assert!(
        worst < 1e-10,
        "k={k} s={stride} g={groups}: loops differ by {worst}"
    );
    assert!(
        got.iter().any(|v| v.abs() > 1e-3),
        "output is trivially zero"
    );

    // Gradients under a random upstream gradient.
    let up = Tensor::randn([b, c, ho, wo], opts);
    let grads = |out: &Tensor| {
        let g = Tensor::run_backward(&[(out * &up).sum(Kind::Double)], &[&x, &wt], false, false);
        (g[0].shallow_clone(), g[1].shallow_clone())
    };
    let (gx1, gw1) = grads(&fast);
    let (gx2, gw2) = grads(&naive);
    for (name, a, bb) in [("input", &gx1, &gx2), ("kernel", &gw1, &gw2)] {
        let d = f64::try_from((a - bb).abs().max()).unwrap();
        let scale = f64::try_from(bb.abs().max()).unwrap();
        assert!(scale > 1e-3, "{name} gradient is trivially zero");
        assert!(
            d < 1e-10,
            "k={k} s={stride} g={groups}: {name} gradients differ by {d}"
        );
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
        for &(h, w) in &[(7, 7), (8, 5)] {
            seed += 1;
            case(2, 8, h, w, k, stride, groups, seed);
        }
    }
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
