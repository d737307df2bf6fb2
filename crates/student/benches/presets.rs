//! `cargo bench -p kd-student --bench presets`: the presets a user picks for
//! their own data, at batch 32 on CPU, each beside its PyTorch eager twin in
//! the same run (scripts/bench-torch.py under the test virtualenv's Python,
//! `KD_PYTHON`, same thread count). Train: forward in train mode,
//! cross-entropy on every head, backward, AdamW step. Inference: eval
//! forward without gradients. Students carry one distillation token (DeiT's
//! distilled layout); 10 classes, 3 channels. The parameter column is kd's;
//! the bench stops if PyTorch's twin has another count (not the same model).
//!
//! Env: KD_BENCH_REPS (3), KD_BENCH_QUICK (1 rep, 32 px only), KD_THREADS
//! (libtorch threads on both sides; default: libtorch's). On a loaded machine
//! use KD_THREADS=1: two threads sharing one free core spin-wait each other
//! and the side that happens to meet the load loses several-fold.

#![allow(clippy::print_stdout)]

mod common;

use common::{env, median, set_threads_from_env};
use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::stage::param_count;
use kd_student::vit::{Config, Vit};
use kd_teachers::model::{Arch, ModelConfig, Net};
use std::process::Command;
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

const BATCH: i64 = 32;
const CLASSES: i64 = 10;

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

fn ce(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
}

/// (params, train s/step, inference s/batch) of kd's model.
fn kd_side(model: &str, size: i64, reps: usize) -> (i64, f64, f64) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let x = Tensor::randn([BATCH, 3, size, size], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(CLASSES, [BATCH], (Kind::Int64, Device::Cpu));
    let forward: Box<dyn Fn(bool) -> Vec<Tensor>> =
        match Config::preset(model, size as usize, 3, CLASSES as usize, 1) {
            Some(cfg) => {
                let vit = Vit::new(&vs.root(), &cfg);
                let x = x.shallow_clone();
                Box::new(move |train| {
                    let o = vit.forward_t(&x, train);
                    std::iter::once(o.cls).chain(o.dist).collect()
                })
            }
            None => {
                let arch = if model.starts_with("cnn") {
                    Arch::Cnn
                } else {
                    Arch::Involution
                };
                let m = ModelConfig::preset(arch, model).expect("a preset");
                let net =
                    Net::for_images(&vs.root(), &m, [3, size as usize, size as usize], CLASSES);
                let x = x.shallow_clone();
                Box::new(move |train| vec![net.forward_t(&x, train)])
            }
        };
    let params = param_count(&vs);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let train = time(reps, || {
        opt.zero_grad();
        let outs = forward(true);
        let n = outs.len() as f64;
        let loss = outs.iter().map(|o| ce(o, &y)).sum::<Tensor>() / n;
        loss.backward();
        opt.step(1e-4);
    });
    let infer = time(reps, || {
        let _g = tch::no_grad_guard();
        let _ = forward(false);
    });
    (params, train, infer)
}

/// The same from PyTorch, or why not.
fn torch_side(model: &str, size: i64, reps: usize) -> Result<(i64, f64, f64), String> {
    let py = std::env::var("KD_PYTHON").map_err(|_| "KD_PYTHON not set".to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-torch.py");
    let o = Command::new(py)
        .arg(script)
        .args(["--model", model, "--size", &size.to_string()])
        .args(["--batch", &BATCH.to_string(), "--reps", &reps.to_string()])
        .args(["--threads", &tch::get_num_threads().to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    Ok((
        v["params"].as_i64().unwrap_or(-1),
        v["train_s"].as_f64().unwrap_or(f64::NAN),
        v["infer_s"].as_f64().unwrap_or(f64::NAN),
    ))
}

fn main() {
    let quick = std::env::var_os("KD_BENCH_QUICK").is_some();
    set_threads_from_env();
    let reps = env("KD_BENCH_REPS", if quick { 1 } else { 3 });
    println!(
        "batch {BATCH}, 3 channels, {CLASSES} classes, libtorch threads {}, median of {reps}; img/s (kd / PyTorch eager = ratio)\n",
        tch::get_num_threads()
    );
    println!(
        "| preset | image | params | train kd | train PyTorch | train ratio | inference kd | inference PyTorch | inference ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = vec![("vit-c32", 32), ("cnn-r18", 32), ("rednet-26", 32)];
    if !quick {
        rows.extend([
            ("deit-tiny", 224),
            ("deit-small", 224),
            ("cnn-r18", 224),
            ("rednet-26", 224),
        ]);
    }
    let ips = |s: f64| BATCH as f64 / s;
    for (model, size) in rows {
        let (params, train, infer) = kd_side(model, size, reps);
        let (tt, ti) = match torch_side(model, size, reps) {
            Ok((p, tt, ti)) => {
                assert_eq!(
                    p, params,
                    "{model}: PyTorch's twin has {p} parameters, kd's {params}"
                );
                (format!("{:.1}", ips(tt)), format!("{:.1}", ips(ti)))
            }
            Err(why) if why.contains("no PyTorch twin") => ("-".into(), "-".into()),
            Err(why) => panic!("{model}: PyTorch side failed: {why}"),
        };
        let ratio = |kd: f64, t: &str| {
            t.parse::<f64>()
                .map(|t| format!("{:.2}x", ips(kd) / t))
                .unwrap_or_else(|_| "-".into())
        };
        println!(
            "| {model} | {size} px | {params} | {:.1} | {tt} | {} | {:.1} | {ti} | {} |",
            ips(train),
            ratio(train, &tt),
            ips(infer),
            ratio(infer, &ti)
        );
    }
}
