//! Student training throughput, side by side in one run: no teacher, the
//! cached ensemble (2 teachers read from a logit store), the live ensemble
//! (the same 2 teachers run on every batch), the cached ensemble under
//! bf16 autocast, the cached ensemble with CivT's conv + involution
//! stems (the stem student against the plain one), and the cached ensemble
//! with every batch assembled on the training thread (against the default,
//! the next batch assembled during the step). vit-tiny, batch 128, 1x28x28.
//!
//! Teachers are kd-teachers' `cnn-small` and `rednet-small` networks with
//! untrained weights: speed does not depend on what they learnt.
//! Each round trains one epoch per source (interleaved, so machine load
//! hits all three alike); the table shows the median over rounds.
//!
//! Env: KD_BENCH_SAMPLES (2048), KD_BENCH_ROUNDS (3), KD_BENCH_VIEWS (2),
//! KD_BENCH_DEVICE (auto), KD_THREADS (libtorch's default). On a machine
//! whose other jobs hold cores, use KD_THREADS=1: threads that share a core
//! spin-wait on each other, and the models with more, smaller ops (live
//! teachers, the stems) lose far more to that than the plain student does.

#![allow(clippy::print_stdout)]

mod common;

use common::{env, median, set_threads_from_env};
use kd_core::amp::Precision;
use kd_core::fit::Prefetch;
use kd_core::{Silent, Teacher};
use kd_data::Dataset;
use kd_logit_cache::testing::{synthetic_dataset, teacher_artifact};
use kd_logit_cache::{BuildOptions, CacheConfig, LogitStore, TeacherInput};
use kd_student::{Outcome, RunOptions, Source, StudentConfig, train_stage};
use kd_teachers::{Arch, ModelConfig, Net};
use std::path::Path;
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

struct BenchTeacher {
    name: String,
    arch: String,
    hash: String,
    device: Device,
    _vs: VarStore,
    net: Net,
}

impl Teacher for BenchTeacher {
    fn name(&self) -> &str {
        &self.name
    }
    fn arch(&self) -> &str {
        &self.arch
    }
    fn num_classes(&self) -> usize {
        10
    }
    fn checkpoint_hash(&self) -> &str {
        "untrained"
    }
    fn dataset_hash(&self) -> &str {
        &self.hash
    }
    fn device(&self) -> Device {
        self.device
    }
    fn logits(&self, images: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.net
            .forward_t(&images.to_device(self.device), false)
            .to_kind(Kind::Float)
    }
}

fn teacher(name: &str, arch: Arch, preset: &str, hash: &str, device: Device) -> Box<dyn Teacher> {
    tch::manual_seed(1);
    let vs = VarStore::new(device);
    let cfg = ModelConfig::preset(arch, preset).expect("teacher preset");
    let net = Net::new(&vs.root(), &cfg, 1, 10);
    Box::new(BenchTeacher {
        name: name.into(),
        arch: format!("{}/{preset}", arch.name()),
        hash: hash.into(),
        device,
        _vs: vs,
        net,
    })
}

fn teachers(hash: &str, device: Device) -> Vec<Box<dyn Teacher>> {
    vec![
        teacher("cnn", Arch::Cnn, "cnn-small", hash, device),
        teacher("involution", Arch::Involution, "rednet-small", hash, device),
    ]
}

fn epoch_rate(
    cfg: &StudentConfig,
    ds: &Path,
    src: &Source,
    out: &Path,
    device: Device,
    prefetch: Prefetch,
) -> f64 {
    let fit = kd_core::fit::FitOptions {
        prefetch,
        ..Default::default()
    };
    match train_stage(
        cfg,
        ds,
        src,
        out,
        &RunOptions::new(device, &Silent).force(true).fit(fit),
    )
    .expect("student run")
    {
        Outcome::Wrote(m) => m.metrics["images_per_sec"].as_f64().unwrap_or(0.0),
        o => panic!("unexpected {o:?}"),
    }
}

fn main() {
    // As the kd binary does at startup.
    kd_core::malloc::keep_freed_memory();
    set_threads_from_env();
    let n = env("KD_BENCH_SAMPLES", 2048);
    let rounds = env("KD_BENCH_ROUNDS", 3).max(1);
    let views = env("KD_BENCH_VIEWS", 2);
    let device =
        kd_core::parse_device(&std::env::var("KD_BENCH_DEVICE").unwrap_or_else(|_| "auto".into()))
            .expect("KD_BENCH_DEVICE");
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // The synthetic set has n/4+1 test images; evaluation is outside the timed loop.
    let ds = synthetic_dataset(&root.join("ds"), n, 10, [1, 28, 28], 3);
    let hash = Dataset::open(&ds).expect("dataset").manifest_hash;
    let inputs: Vec<TeacherInput> = teachers(&hash, device)
        .into_iter()
        .map(|t| TeacherInput {
            dir: teacher_artifact(&root.join(t.name()), t.name(), 1, &hash),
            teacher: t,
        })
        .collect();
    let cache_cfg = CacheConfig {
        views,
        device: kd_core::device::device_name(device),
        ..Default::default()
    };
    let t0 = Instant::now();
    let store_dir = root.join("logits");
    kd_logit_cache::build(
        &ds,
        &inputs,
        &store_dir,
        &cache_cfg,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .expect("cache build");
    let build_s = t0.elapsed().as_secs_f64();

    let cfg = StudentConfig {
        preset: "vit-tiny".into(),
        epochs: 1,
        batch_size: 128,
        ..Default::default()
    };
    let cached = || Source::Cache {
        store: LogitStore::open(&store_dir).expect("store"),
        teachers: vec!["cnn".into(), "involution".into()],
    };
    let sources: Vec<(&str, Source, Precision)> = vec![
        ("no teacher", Source::None, Precision::F32),
        ("cached ensemble (2)", cached(), Precision::F32),
        (
            "live ensemble (2)",
            Source::Live(teachers(&hash, device)),
            Precision::F32,
        ),
        (
            "cached ensemble (2), bf16 autocast",
            cached(),
            Precision::Bf16,
        ),
        ("cached ensemble (2), CivT stems", cached(), Precision::F32),
        (
            "cached ensemble (2), next batch prefetched on a second thread",
            cached(),
            Precision::F32,
        ),
    ];
    const STEMS: usize = 4;
    const PREFETCH: usize = 5;
    let mut rates = vec![vec![]; sources.len()];
    for _ in 0..rounds {
        for (i, (_, src, precision)) in sources.iter().enumerate() {
            let mut c = cfg.clone();
            c.precision = *precision;
            if i == STEMS {
                c.stem = kd_student::Stem::ConvInvolution;
            }
            if !matches!(src, Source::Cache { .. }) {
                c.views = Some(views);
            }
            rates[i].push(epoch_rate(
                &c,
                &ds,
                src,
                &root.join(format!("s{i}")),
                device,
                if i == PREFETCH {
                    Prefetch::Always
                } else {
                    Prefetch::Auto
                },
            ));
        }
    }
    let med: Vec<f64> = rates.into_iter().map(median).collect();
    println!(
        "\nStudent training throughput: vit-tiny, batch 128, 1x28x28, {n} samples, {views} views, device {}, \
         {} threads, median of {rounds} one-epoch rounds (cache build {build_s:.1} s, not counted)\n",
        kd_core::device::device_name(device),
        tch::get_num_threads()
    );
    println!("| source | train images/s | relative to no teacher |");
    println!("|---|---:|---:|");
    for ((name, _, _), r) in sources.iter().zip(&med) {
        println!("| {name} | {r:.0} | {:.3} |", r / med[0]);
    }
    println!(
        "\ncached/none = {:.3} (cost of the cache: {:+.1}%), live/cached = {:.3} (cached is {:.2}x faster than live)",
        med[1] / med[0],
        (med[0] / med[1] - 1.0) * 100.0,
        med[2] / med[1],
        med[1] / med[2]
    );
    println!(
        "bf16/f32 (cached ensemble) = {:.3}: bf16 autocast is {} here",
        med[3] / med[1],
        if med[3] > med[1] { "faster" } else { "slower" }
    );
    println!(
        "stems/plain (cached ensemble) = {:.3}: the CivT stem student trains at {:.2}x the speed of the patch-embedding one",
        med[STEMS] / med[1],
        med[STEMS] / med[1]
    );
    // The default (every row but PREFETCH) on this device.
    let default = if Prefetch::Auto.applies(device) {
        "prefetch"
    } else {
        "inline"
    };
    println!(
        "prefetch/{default} (cached ensemble) = {:.3}: assembling the next batch on a second thread is {} here",
        med[PREFETCH] / med[1],
        if med[PREFETCH] >= med[1] {
            "no slower"
        } else {
            "slower"
        }
    );
}
