//! `cargo bench -p kd-student --bench presets`: the presets a user picks for
//! their own data, each beside its PyTorch twin in the same run
//! (scripts/bench-torch.py under the test virtualenv's Python, `KD_PYTHON`,
//! same thread count, same batch): PyTorch eager, which runs the same
//! libtorch kernels as kd, and the same model under `torch.compile`
//! (inductor), which fuses them; compile time is not counted. The one op
//! kd runs differently is the involution (rednet-*, the stem student's
//! involution stem): kd's C++ shim against the twin's K*K slices of
//! libtorch ops (PyTorch has no involution op), so those rows' kd/eager
//! ratio is the shim's gain. Train: forward
//! in train mode, cross-entropy on every head, backward, AdamW step.
//! Inference: eval forward without gradients. The parameter column is kd's;
//! the bench stops if PyTorch's twin has another count (not the same model).
//!
//! Rows: the 32 px (CIFAR) and 224 px (ImageNet) presets at batch 32, 3
//! channels, students with one distillation token (DeiT's distilled layout);
//! and the demo's models at 1x28x28 (Fashion-MNIST), batch 64 (the demo
//! profile's): the two teachers `cnn-small` and `rednet-small`, and the
//! student `vit-tiny` with the ensemble's two distillation tokens, once with
//! the patch embedding and once with CivT's conv + involution stems (each
//! token the mean of its teacher's stem). 10 classes everywhere.
//!
//! Env: KD_BENCH_REPS (3), KD_BENCH_QUICK (1 rep, no 224 px rows),
//! KD_BENCH_ONLY (rows whose preset is in this comma-separated list),
//! KD_BENCH_COMPILE (1; 0 skips torch.compile, which takes ~1 min per row to
//! compile on a 2-core CPU), KD_BENCH_DEVICE (cpu; cuda runs both sides on
//! the GPU, synchronising before every timer read), KD_THREADS (libtorch
//! threads on both sides; default: libtorch's). On a loaded machine use
//! KD_THREADS=1: two threads sharing one free core spin-wait each other and
//! the side that happens to meet the load loses several-fold.

#![allow(clippy::print_stdout)]

mod common;

use common::{env, median, set_threads_from_env};
use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::stage::param_count;
use kd_student::vit::{Config, Vit};
use kd_student::{Stem, TokenStem};
use kd_teachers::model::{Arch, ModelConfig, Net};
use std::process::Command;
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

const CLASSES: i64 = 10;

/// One model at one input geometry.
#[derive(Clone, Copy)]
struct Row {
    model: &'static str,
    size: i64,
    chans: i64,
    batch: i64,
    /// Students only: distillation tokens, and CivT's stems (tokens from
    /// the conv then the involution stem) instead of the patch embedding.
    dist: usize,
    stems: bool,
}

impl Row {
    const fn new(model: &'static str, size: i64) -> Row {
        Row {
            model,
            size,
            chans: 3,
            batch: 32,
            dist: 1,
            stems: false,
        }
    }

    /// The demo's geometry: Fashion-MNIST, its batch, its two teachers' tokens.
    const fn demo(model: &'static str, stems: bool) -> Row {
        Row {
            model,
            size: 28,
            chans: 1,
            batch: 64,
            dist: 2,
            stems,
        }
    }

    fn name(&self) -> String {
        if self.stems {
            format!("{} + CivT stems", self.model)
        } else {
            self.model.to_string()
        }
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn time(reps: usize, device: Device, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                sync(device);
                let t = Instant::now();
                f();
                sync(device);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn ce(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
}

/// (params, train s/step, inference s/batch) of kd's model.
fn kd_side(r: Row, reps: usize, device: Device) -> (i64, f64, f64) {
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let x = Tensor::randn([r.batch, r.chans, r.size, r.size], (Kind::Float, device));
    let y = Tensor::randint(CLASSES, [r.batch], (Kind::Int64, device));
    let (size, chans) = (r.size as usize, r.chans as usize);
    let forward: Box<dyn Fn(bool) -> Vec<Tensor>> =
        match Config::preset(r.model, size, chans, CLASSES as usize, r.dist) {
            Some(mut cfg) => {
                if r.stems {
                    cfg.stem = Stem::ConvInvolution;
                    cfg.token_stems = [TokenStem::Conv, TokenStem::Involution][..r.dist].to_vec();
                }
                cfg.validate().expect("a valid student");
                let vit = Vit::new(&vs.root(), &cfg);
                let x = x.shallow_clone();
                Box::new(move |train| {
                    let o = vit.forward_t(&x, train);
                    std::iter::once(o.cls).chain(o.dist).collect()
                })
            }
            None => {
                let arch = if r.model.starts_with("cnn") {
                    Arch::Cnn
                } else {
                    Arch::Involution
                };
                let m = ModelConfig::preset(arch, r.model).expect("a preset");
                let net = Net::for_images(&vs.root(), &m, [chans, size, size], CLASSES);
                let x = x.shallow_clone();
                Box::new(move |train| vec![net.forward_t(&x, train)])
            }
        };
    let params = param_count(&vs);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let train = time(reps, device, || {
        opt.zero_grad().unwrap();
        let outs = forward(true);
        let n = outs.len() as f64;
        let loss = outs.iter().map(|o| ce(o, &y)).sum::<Tensor>() / n;
        loss.backward();
        opt.step(1e-4).unwrap();
    });
    let infer = time(reps, device, || {
        let _g = tch::no_grad_guard();
        let _ = forward(false);
    });
    (params, train, infer)
}

/// What the PyTorch twin measured.
struct TorchSide {
    params: i64,
    train: f64,
    infer: f64,
    /// torch.compile's (train, inference) seconds, or why there are none.
    compiled: Result<(f64, f64), String>,
}

/// The same from PyTorch, or why not.
fn torch_side(r: Row, reps: usize, device: Device, compile: bool) -> Result<TorchSide, String> {
    let py = std::env::var("KD_PYTHON").map_err(|_| "KD_PYTHON not set".to_string())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-torch.py");
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .args(["--model", r.model, "--size", &r.size.to_string()])
        .args([
            "--chans",
            &r.chans.to_string(),
            "--dist",
            &r.dist.to_string(),
        ])
        .args(["--batch", &r.batch.to_string(), "--reps", &reps.to_string()])
        .args(["--threads", &tch::get_num_threads().to_string()])
        .args(["--device", &kd_core::device::device_name(device)]);
    if r.stems {
        let tokens = ["conv", "involution"][..r.dist].join(",");
        cmd.args(["--stem", "conv-involution", "--token-stems", &tokens]);
    }
    if compile {
        cmd.arg("--compile");
    }
    let o = cmd.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    let compiled = match (
        v["compiled_train_s"].as_f64(),
        v["compiled_infer_s"].as_f64(),
    ) {
        (Some(t), Some(i)) => Ok((t, i)),
        _ if !compile => Err("KD_BENCH_COMPILE=0".into()),
        _ => Err(v["compile_error"]
            .as_str()
            .unwrap_or("no compiled timings")
            .to_string()),
    };
    Ok(TorchSide {
        params: v["params"].as_i64().unwrap_or(-1),
        train: v["train_s"].as_f64().unwrap_or(f64::NAN),
        infer: v["infer_s"].as_f64().unwrap_or(f64::NAN),
        compiled,
    })
}

fn main() {
    // As the kd binary does at startup (bench-torch.py sets the same).
    kd_core::malloc::keep_freed_memory();
    let quick = std::env::var_os("KD_BENCH_QUICK").is_some();
    set_threads_from_env();
    let reps = env("KD_BENCH_REPS", if quick { 1 } else { 3 });
    let compile = env("KD_BENCH_COMPILE", 1) != 0;
    let device =
        kd_core::parse_device(&std::env::var("KD_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into()))
            .expect("KD_BENCH_DEVICE");
    println!(
        "{CLASSES} classes, device {}, libtorch threads {}, median of {reps}; img/s; \
         eager = PyTorch eager, compiled = torch.compile (compile time not counted); \
         ratios are kd's speed over PyTorch's (below 1: PyTorch faster)\n",
        kd_core::device::device_name(device),
        tch::get_num_threads()
    );
    println!(
        "| preset | input | batch | params | train kd | train eager | train compiled | train kd/eager | train kd/compiled \
         | inference kd | inference eager | inference compiled | inference kd/eager | inference kd/compiled |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = vec![
        Row::new("vit-c32", 32),
        Row::new("cnn-r18", 32),
        Row::new("rednet-26", 32),
        Row::demo("vit-tiny", false),
        Row::demo("vit-tiny", true),
        Row::demo("cnn-small", false),
        Row::demo("rednet-small", false),
    ];
    if !quick {
        rows.extend([
            Row::new("deit-tiny", 224),
            Row::new("deit-small", 224),
            Row::new("cnn-r18", 224),
            Row::new("rednet-26", 224),
        ]);
    }
    if let Ok(only) = std::env::var("KD_BENCH_ONLY") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        rows.retain(|r| only.contains(&r.model));
    }
    let mut notes = vec![];
    for r in rows {
        let model = r.name();
        let ips = |s: f64| r.batch as f64 / s;
        let (params, train, infer) = kd_side(r, reps, device);
        // img/s of eager and compiled, train and inference; None: no figure.
        let mut py = [None; 4];
        match torch_side(r, reps, device, compile) {
            Ok(t) => {
                assert_eq!(
                    t.params, params,
                    "{model}: PyTorch's twin has {} parameters, kd's {params}",
                    t.params
                );
                py[0] = Some(ips(t.train));
                py[2] = Some(ips(t.infer));
                match t.compiled {
                    Ok((ct, ci)) => {
                        py[1] = Some(ips(ct));
                        py[3] = Some(ips(ci));
                    }
                    Err(why) if compile => notes.push(format!("{model}: compiled: {why}")),
                    Err(_) => {}
                }
            }
            Err(why) if why.contains("no PyTorch twin") => notes.push(format!("{model}: {why}")),
            Err(why) => panic!("{model}: PyTorch side failed: {why}"),
        }
        let fig = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
        let ratio = |kd: f64, v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2}x", kd / v));
        let (kt, ki) = (ips(train), ips(infer));
        println!(
            "| {model} | {}x{}x{} | {} | {params} | {kt:.1} | {} | {} | {} | {} | {ki:.1} | {} | {} | {} | {} |",
            r.chans,
            r.size,
            r.size,
            r.batch,
            fig(py[0]),
            fig(py[1]),
            ratio(kt, py[0]),
            ratio(kt, py[1]),
            fig(py[2]),
            fig(py[3]),
            ratio(ki, py[2]),
            ratio(ki, py[3]),
        );
    }
    for n in notes {
        println!("\n- {n}");
    }
}
