//! `cargo bench -p kd-logit-cache --bench cache`: what caching costs over
//! running the teachers, measured side by side in one run on CPU.
//!
//! Two seeded conv teachers (widths 16 and 32, 1x28x28 input, 10 classes)
//! over 2048 synthetic images x 4 views. "Inference" does exactly the build's
//! compute (the same batches: assemble views, forward every teacher, copy
//! the logits to host memory) and writes nothing; "cache build" is
//! `kd_logit_cache::build` end to end (overlapped f16 encoding + zstd + shard
//! writes, markers, finalize). Each is timed `reps` times alternately; the
//! median counts. Prints `| what | result |` rows (scripts/bench.sh).
//! `KD_BENCH_QUICK=1` runs fewer repetitions.
#![allow(clippy::print_stdout)]

use kd_core::Outcome;
use kd_core::RunOptions;
use kd_core::ViewBatch;
use kd_data::Dataset;
use kd_data::augment::{batch_tensor_mixed, lut};
use kd_logit_cache::testing::{ConvTeacher, synthetic_dataset, teacher_artifact};
use kd_logit_cache::{BuildOptions, CacheConfig, LogitStore, TeacherInput, build};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind};

const N: usize = 2048;
const VIEWS: usize = 4;
const CLASSES: usize = 10;

fn teachers(root: &Path, hash: &str) -> Vec<TeacherInput> {
    [("cnn", 1u64, 16usize), ("wide", 2, 32)]
        .into_iter()
        .map(|(name, seed, width)| TeacherInput {
            dir: teacher_artifact(&root.join(name), name, seed, hash),
            teacher: Box::new(ConvTeacher::new(
                name,
                seed,
                1,
                width,
                CLASSES,
                hash,
                Device::Cpu,
            )),
        })
        .collect()
}

/// The build's compute without any writing.
fn infer_only(ds: &Dataset, ts: &[TeacherInput], cfg: &CacheConfig) -> usize {
    let _g = tch::no_grad_guard();
    let train = ds.split("train").unwrap();
    let spec = cfg.view_spec();
    let table = lut(&ds.mean, &ds.std);
    let hw = [train.chw[1], train.chw[2]];
    let mut sink = 0usize;
    for a in (0..N).step_by(cfg.shard_samples) {
        let b = (a + cfg.shard_samples).min(N);
        let pairs: Vec<(usize, usize)> = (a..b)
            .flat_map(|i| (0..VIEWS).map(move |v| (i, v)))
            .collect();
        let vb = ViewBatch::draw(&spec, &cfg.mix_spec(), cfg.seed, N, hw, &pairs);
        for start in (0..pairs.len()).step_by(cfg.batch_size) {
            let end = (start + cfg.batch_size).min(pairs.len());
            let idx: Vec<usize> = pairs[start..end].iter().map(|p| p.0).collect();
            let x = batch_tensor_mixed(
                train,
                &idx,
                &vb.views[start..end],
                &vb.partner_views[start..end],
                &vb.mixes[start..end],
                &spec,
                &table,
                Device::Cpu,
            )
            .unwrap();
            for t in ts {
                let y = t
                    .teacher
                    .logits_for(&idx, &x)
                    .to_kind(Kind::Float)
                    .contiguous()
                    .view(-1);
                sink += Vec::<f32>::try_from(&y).unwrap().len();
            }
        }
    }
    sink
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::var_os("KD_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 3 };
    let tmp = tempfile::tempdir().unwrap();
    let ds_dir = synthetic_dataset(&tmp.path().join("data"), N, CLASSES, [1, 28, 28], 3);
    let hash = kd_core::manifest::manifest_hash(&ds_dir).unwrap();
    let ds = Dataset::open(&ds_dir).unwrap();
    let ts = teachers(&tmp.path().join("teachers"), &hash);
    let cfg = CacheConfig {
        views: VIEWS,
        shard_samples: 512,
        chunk_samples: 128,
        batch_size: 256,
        device: "cpu".into(),
        ..CacheConfig::default()
    };
    let images = (N * VIEWS) as f64;
    infer_only(&ds, &ts, &cfg); // warm-up
    let (mut t_inf, mut t_build, mut all_stats) = (vec![], vec![], vec![]);
    let out = tmp.path().join("logits");
    for _ in 0..reps {
        let t = Instant::now();
        assert_eq!(infer_only(&ds, &ts, &cfg), N * VIEWS * CLASSES * ts.len());
        t_inf.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let o = build(
            &ds_dir,
            &ts,
            &out,
            &cfg,
            &BuildOptions {
                ..Default::default()
            },
            &RunOptions::default().force(true),
        )
        .unwrap();
        t_build.push(t.elapsed().as_secs_f64());
        if let Outcome::Wrote(_) = o.outcome {
            all_stats.push(o.stats);
        }
    }
    let (ti, tb) = (median(t_inf), median(t_build));
    let m = kd_core::manifest::Manifest::read(&out).unwrap();
    let mut opens = vec![];
    let mut store = None;
    for _ in 0..reps.max(3) {
        let t = Instant::now();
        store = Some(LogitStore::open(&out).unwrap());
        opens.push(t.elapsed().as_secs_f64());
    }
    let store = store.unwrap();
    assert!(store.in_memory());
    let mut r = kd_core::Rng::new(5);
    let batches: Vec<Vec<(usize, usize)>> = (0..200)
        .map(|_| {
            (0..256)
                .map(|_| (r.below(N as u64) as usize, r.below(VIEWS as u64) as usize))
                .collect()
        })
        .collect();
    let t = Instant::now();
    for b in &batches {
        for name in store.teachers() {
            std::hint::black_box(store.logits(name, b).unwrap());
        }
    }
    let read_rows = (200 * 256 * store.teachers().len()) as f64 / t.elapsed().as_secs_f64();

    let threads = tch::get_num_threads();
    let per_view = &m.metrics["bytes_per_view_per_teacher"];
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| cache: teacher inference only (2 conv teachers, {N} imgs x {VIEWS} views, 1x28x28, CPU {threads} threads) | {:.0} views/s |",
        images / ti
    );
    println!(
        "| cache: cache build, same teachers and views (f16, zstd, sharded) | {:.0} views/s |",
        images / tb
    );
    println!(
        "| cache: write overhead of the build over inference | {:+.1}% |",
        (tb / ti - 1.0) * 100.0
    );
    let mid = all_stats.len() / 2;
    all_stats.sort_by(|a, b| a.total.total_cmp(&b.total));
    let s = all_stats[mid];
    println!(
        "| cache: build breakdown (s): setup / inference / waited on writer / writer busy (overlapped) / finalize | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} |",
        s.setup,
        s.inference,
        s.send_wait + s.drain,
        s.writer_busy,
        s.finalize
    );
    for (name, b) in per_view.as_object().into_iter().flatten() {
        println!(
            "| cache: stored bytes per view, teacher {name} ({CLASSES} f16 logits = {} raw) | {:.1} B |",
            CLASSES * 2,
            b.as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "| cache: LogitStore::open, whole store into memory ({} views x 2 teachers, {:.0} KiB on disk) | {:.1} ms |",
        N * VIEWS,
        m.metrics["stored_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
        median(opens) * 1e3
    );
    println!(
        "| cache: reader, random batches of 256 (sample, view) rows | {:.2} M rows/s |",
        read_rows / 1e6
    );
}
