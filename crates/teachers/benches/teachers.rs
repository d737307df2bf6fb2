//! `cargo bench -p kd-teachers`: the involution op (the shim's single-node
//! op vs the libtorch-ops slices it replaced vs im2col) and training /
//! inference throughput of every teacher preset on CPU (batch 128, 1x28x28),
//! with rednet-small / cnn-small side by side. Prints markdown tables; about
//! a minute on 2 cores. `KD_BENCH_QUICK=1` runs fewer repetitions.
#![allow(clippy::print_stdout)]

use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::stage::param_count;
use kd_teachers::involution::{Implementation, out_size};
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
    // As the kd binary does at startup.
    kd_core::malloc::keep_freed_memory();
    let quick = std::env::var_os("KD_BENCH_QUICK").is_some();
    let reps = if quick { 2 } else { 5 };
    let b = 128i64;
    println!(
        "libtorch threads: {}, batch {b}, input 1x28x28, median of {reps}\n",
        tch::get_num_threads()
    );

    println!("### Involution op: shim vs libtorch-ops slices vs im2col, ms per call\n");
    println!(
        "| C | H | K | stride | groups | fwd shim | fwd slices | fwd im2col | fwd+bwd shim | fwd+bwd slices | fwd+bwd im2col | fwd+bwd slices / shim | fwd+bwd im2col / shim |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // The involution layers of rednet-small at batch 128, and the stem
    // student's (32 channels, 5x5, stride 2, 28 px) at its batch of 64.
    for (bs, c, h, k, s, g) in [
        (b, 16, 28, 7, 1, 1),
        (b, 32, 28, 7, 2, 2),
        (b, 64, 14, 7, 2, 4),
        (b, 64, 7, 7, 1, 4),
        (64, 32, 28, 5, 2, 2),
    ] {
        let ho = out_size(h, k, s);
        let x = Tensor::randn([bs, c, h, h], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let w = Tensor::randn([bs, g, k * k, ho, ho], (Kind::Float, Device::Cpu))
            .set_requires_grad(true);
        let fwd = |op: Implementation| {
            time(reps, || {
                let _g = tch::no_grad_guard();
                let _ = op.apply(&x, &w, k, s, g);
            })
        };
        let fb = |op: Implementation| {
            time(reps, || {
                let y = op.apply(&x, &w, k, s, g);
                y.sum(Kind::Float).backward();
                let _ = x.grad().zero_();
                let _ = w.grad().zero_();
            })
        };
        let f: Vec<f64> = Implementation::ALL.iter().map(|&op| fwd(op)).collect();
        let t: Vec<f64> = Implementation::ALL.iter().map(|&op| fb(op)).collect();
        println!(
            "| {c} | {h} | {k} | {s} | {g}{} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x |",
            if bs == b {
                String::new()
            } else {
                format!(" (batch {bs})")
            },
            f[0] * 1e3,
            f[1] * 1e3,
            f[2] * 1e3,
            t[0] * 1e3,
            t[1] * 1e3,
            t[2] * 1e3,
            t[1] / t[0],
            t[2] / t[0]
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
            rows.push((arch, *preset, Implementation::Shim));
            if arch == Arch::Involution && preset.ends_with("small") {
                rows.push((arch, *preset, Implementation::Slices));
                rows.push((arch, *preset, Implementation::Im2col));
            }
        }
    }
    let mut small = (f64::NAN, f64::NAN);
    for (arch, preset, implementation) in rows {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let mut net = Net::new(
            &vs.root(),
            &ModelConfig::preset(arch, preset).unwrap(),
            1,
            10,
        );
        if let Net::RedNet(r) = &mut net {
            r.set_implementation(implementation);
        }
        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let train = time(reps, || {
            opt.zero_grad().unwrap();
            let loss = net.forward_t(&x, true).cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                0.1,
            );
            loss.backward();
            opt.step(1e-3).unwrap();
        });
        let infer = time(reps, || {
            let _g = tch::no_grad_guard();
            let _ = net.forward_t(&x, false);
        });
        let op = match arch {
            Arch::Cnn => "-",
            Arch::Involution => implementation.name(),
        };
        match (preset, implementation) {
            ("cnn-small", _) => small.0 = b as f64 / train,
            ("rednet-small", Implementation::Shim) => small.1 = b as f64 / train,
            _ => {}
        }
        println!(
            "| {preset} | {op} | {} | {:.0} | {:.0} |",
            param_count(&vs),
            b as f64 / train,
            b as f64 / infer
        );
    }
    println!(
        "\nrednet-small (shim) / cnn-small train img/s: {:.2}x",
        small.1 / small.0
    );
}
