//! Where one training step of the student goes, layer by layer: the CivT
//! stem student (vit-tiny, conv + involution stems, 2 distillation tokens)
//! beside the plain one, batch 128, 1x28x28, on the CPU. Each row times a
//! part on its own, forward and forward + backward (gradients of a random
//! projection of its output), median of rounds; the last rows time whole
//! steps (forward, cross-entropy on every head, backward, AdamW) so the
//! parts can be read as shares of a step.
//!
//! Env: KD_BENCH_REPS (7), KD_THREADS (libtorch's default).

#![allow(clippy::print_stdout)]

mod common;

use common::{env, median, set_threads_from_env};
use kd_core::layout;
use kd_core::optim::{AdamW, AdamWConfig};
use kd_student::stem::{ConvStem, InvolutionStem};
use kd_student::{Config, Stem, TokenStem, Vit};
use kd_teachers::rednet::Involution;
use std::time::Instant;
use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

const BATCH: i64 = 128;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// (forward ms, forward + backward ms) of `f` on a fresh input each call,
/// channels-last as the stems run (see `kd_core::layout`) or planar as the
/// plain student's patch embedding does.
fn part(
    reps: usize,
    shape: &[i64],
    channels_last: bool,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> (f64, f64) {
    let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let x = if channels_last {
        layout::channels_last(&x)
    } else {
        x
    }
    .set_requires_grad(true);
    let fwd = time(reps, || {
        let _g = tch::no_grad_guard();
        let _ = f(&x);
    });
    let fb = time(reps, || {
        let y = f(&x);
        y.sum(Kind::Float).backward();
        let _ = x.grad().zero_();
    });
    (fwd * 1e3, fb * 1e3)
}

fn main() {
    // As the kd binary does at startup.
    kd_core::malloc::keep_freed_memory();
    set_threads_from_env();
    let reps = env("KD_BENCH_REPS", 7);
    let dev = Device::Cpu;
    println!(
        "vit-tiny, batch {BATCH}, 1x28x28, libtorch threads {}, median of {reps}; ms per batch\n",
        tch::get_num_threads()
    );
    println!("| part | output | forward ms | forward + backward ms |");
    println!("|---|---|---:|---:|");
    let vs = VarStore::new(dev);
    let p = vs.root();
    let bn = |p: nn::Path, c| nn::batch_norm2d(p, c, Default::default());
    let cfg = |s, pad| nn::ConvConfig {
        stride: s,
        padding: pad,
        bias: false,
        ..Default::default()
    };
    let row = |name: &str, out: &str, (f, fb): (f64, f64)| {
        println!("| {name} | {out} | {f:.2} | {fb:.2} |");
    };
    // The stems' layers one by one, as stem.rs builds them.
    let c1 = nn::conv2d(&p / "c1", 1, 24, 3, cfg(1, 1));
    let b1 = bn(&p / "b1", 24);
    row(
        "conv stem: conv 3x3 1->24 + BN + ReLU (28 px)",
        "24x28x28",
        part(reps, &[BATCH, 1, 28, 28], true, &|x| {
            x.apply(&c1).apply_t(&b1, true).relu()
        }),
    );
    let c2 = nn::conv2d(&p / "c2", 24, 48, 3, cfg(2, 1));
    let b2 = bn(&p / "b2", 48);
    row(
        "conv stem: conv 3x3/2 24->48 + BN + ReLU",
        "48x14x14",
        part(reps, &[BATCH, 24, 28, 28], true, &|x| {
            x.apply(&c2).apply_t(&b2, true).relu()
        }),
    );
    let pr = nn::conv2d(
        &p / "pr",
        48,
        96,
        2,
        nn::ConvConfig {
            stride: 2,
            ..Default::default()
        },
    );
    row(
        "conv stem: projection 2x2/2 48->96",
        "96x7x7",
        part(reps, &[BATCH, 48, 14, 14], true, &|x| x.apply(&pr)),
    );
    let i1 = nn::conv2d(&p / "i1", 1, 32, 3, cfg(1, 1));
    let ib1 = bn(&p / "ib1", 32);
    row(
        "inv stem: conv 3x3 1->32 + BN + ReLU (28 px)",
        "32x28x28",
        part(reps, &[BATCH, 1, 28, 28], true, &|x| {
            x.apply(&i1).apply_t(&ib1, true).relu()
        }),
    );
    let inv = Involution::new(&p / "inv", 32, 5, 2, 16, 4);
    row(
        "inv stem: involution 5x5/2 (kernel generator + op)",
        "32x14x14",
        part(reps, &[BATCH, 32, 28, 28], true, &|x| {
            inv.forward_t(x, true)
        }),
    );
    let ib2 = bn(&p / "ib2", 32);
    row(
        "inv stem: BN + ReLU",
        "32x14x14",
        part(reps, &[BATCH, 32, 14, 14], true, &|x| {
            x.apply_t(&ib2, true).relu()
        }),
    );
    let ipr = nn::conv2d(
        &p / "ipr",
        32,
        96,
        2,
        nn::ConvConfig {
            stride: 2,
            ..Default::default()
        },
    );
    row(
        "inv stem: projection 2x2/2 32->96",
        "96x7x7",
        part(reps, &[BATCH, 32, 14, 14], true, &|x| x.apply(&ipr)),
    );
    let cs = ConvStem::new(&p / "cs", 1, 4, 96);
    row(
        "conv stem, whole",
        "49x96",
        part(reps, &[BATCH, 1, 28, 28], true, &|x| cs.forward_t(x, true)),
    );
    let is = InvolutionStem::new(&p / "is", 1, 4, 96);
    row(
        "inv stem, whole",
        "49x96",
        part(reps, &[BATCH, 1, 28, 28], true, &|x| is.forward_t(x, true)),
    );
    let pe = nn::conv2d(
        &p / "pe",
        1,
        96,
        4,
        nn::ConvConfig {
            stride: 4,
            ..Default::default()
        },
    );
    row(
        "plain: patch embedding 4x4/4 1->96",
        "96x7x7",
        part(reps, &[BATCH, 1, 28, 28], false, &|x| x.apply(&pe)),
    );

    println!("\n| whole step (fwd + CE on every head + bwd + AdamW) | ms | images/s |");
    println!("|---|---:|---:|");
    let y = Tensor::randint(10, [BATCH], (Kind::Int64, dev));
    let x = Tensor::randn([BATCH, 1, 28, 28], (Kind::Float, dev));
    let mut steps = vec![];
    for stem in [Stem::Patch, Stem::ConvInvolution] {
        tch::manual_seed(0);
        let vs = VarStore::new(dev);
        let mut c = Config::preset("vit-tiny", 28, 1, 10, 2).expect("vit-tiny");
        c.stem = stem;
        if stem == Stem::ConvInvolution {
            c.token_stems = vec![TokenStem::Conv, TokenStem::Involution];
        }
        let vit = Vit::new(&vs.root(), &c);
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let s = time(reps, || {
            opt.zero_grad().unwrap();
            let o = vit.forward_t(&x, true);
            let heads: Vec<Tensor> = std::iter::once(o.cls).chain(o.dist).collect();
            let n = heads.len() as f64;
            let loss = heads
                .iter()
                .map(|h| h.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0))
                .sum::<Tensor>()
                / n;
            loss.backward();
            opt.step(1e-3).unwrap();
        });
        println!(
            "| {} | {:.1} | {:.0} |",
            stem.name(),
            s * 1e3,
            BATCH as f64 / s
        );
        steps.push(s);
    }
    println!(
        "\nstem student / plain student, train images/s: {:.2}x",
        steps[0] / steps[1]
    );
}
