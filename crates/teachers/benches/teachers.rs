//! `cargo bench -p kd-teachers`: the involution op (shifted slices vs im2col)
//! and training / inference throughput of every teacher preset on CPU
//! (batch 128, 1x28x28). Prints markdown tables; about a minute on 2 cores.
//! `KD_BENCH_QUICK=1` runs fewer repetitions.
#![allow(clippy::print_stdout)]

use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::stage::param_count;
use kd_teachers::involution::{involution, involution_naive, out_size};
use kd_teachers::model::{Arch, ModelConfig, Net};
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

/// Median seconds of `reps` calls after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::var_os("KD_BENCH_QUICK").is_some();
    let reps = if quick { 2 } else { 5 };
    let b = 128i64;
    println!(
        "libtorch threads: {}, batch {b}, input 1x28x28, median of {reps}\n",
        tch::get_num_threads()
    );

    println!("### Involution op: shifted slices (fast) vs im2col (naive)\n");
    println!(
        "| C | H | K | stride | groups | fwd fast ms | fwd naive ms | fwd ratio | fwd+bwd fast ms | fwd+bwd naive ms | fwd+bwd ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // The involution layers of rednet-small at batch 128.
    for (c, h, k, s, g) in [
        (16, 28, 7, 1, 1),
        (32, 28, 7, 2, 2),
        (64, 14, 7, 2, 4),
        (64, 7, 7, 1, 4),
    ] {
        let ho = out_size(h, k, s);
        let x = Tensor::randn([b, c, h, h], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([b, g, k * k, ho, ho], (Kind::Float, Device::Cpu))
            .set_requires_grad(true);
        type Op = fn(&Tensor, &Tensor, i64, i64, i64) -> Tensor;
        let fwd = |op: Op| {
            time(reps, || {
                let _g = tch::no_grad_guard();
                let _ = op(&x, &w, k, s, g);
            })
        };
        let fb = |op: Op| {
            time(reps, || {
                let y = op(&x, &w, k, s, g);
                y.sum(Kind::Float).backward();
                let _ = x.grad().zero_();
                let _ = w.grad().zero_();
            })
        };
        let (ff, fnv) = (fwd(involution), fwd(involution_naive));
        let (bf, bn) = (fb(involution), fb(involution_naive));
        println!(
            "| {c} | {h} | {k} | {s} | {g} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.2}x |",
            ff * 1e3,
            fnv * 1e3,
            fnv / ff,
            bf * 1e3,
            bn * 1e3,
            bn / bf
        );
    }

    println!("\n### Teachers on CPU (train: forward + backward + AdamW step)\n");
    println!("| preset | involution op | params | train img/s | inference img/s |");
    println!("|---|---|---|---|---|");
    let x = Tensor::randn([b, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [b], (Kind::Int64, Device::Cpu));
    let mut rows = vec![];
    for arch in [Arch::Cnn, Arch::Involution] {
        for preset in arch.presets() {
            rows.push((arch, *preset, false));
            if arch == Arch::Involution && preset.ends_with("small") {
                rows.push((arch, *preset, true));
            }
        }
    }
    for (arch, preset, naive) in rows {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let mut net = Net::new(
            &vs.root(),
            &ModelConfig::preset(arch, preset).unwrap(),
            1,
            10,
        );
        if let Net::RedNet(r) = &mut net {
            r.set_naive(naive);
        }
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let train = time(reps, || {
            opt.zero_grad();
            let loss = net.forward_t(&x, true).cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                0.1,
            );
            loss.backward();
            opt.step(1e-3);
        });
        let infer = time(reps, || {
            let _g = tch::no_grad_guard();
            let _ = net.forward_t(&x, false);
        });
        let op = match arch {
            Arch::Cnn => "-",
            Arch::Involution if naive => "im2col",
            Arch::Involution => "slices",
        };
        println!(
            "| {preset} | {op} | {} | {:.0} | {:.0} |",
            param_count(&vs),
            b as f64 / train,
            b as f64 / infer
        );
    }
}
