//! Data-parallel training on one machine, side by side in one run: the
//! student (vit-tiny, batch 128, 1x28x28, no teacher) trained by 2 ranks of
//! 1 libtorch thread each (Gloo over localhost) against 1 process of 2
//! threads; the ranks sum their gradients in buckets during the backward
//! pass (the default) and in one all-reduce after it, whose share of a step
//! is shown. 1 process of 1
//! thread is the reference that shows what the machine's load does to a
//! process whose threads must meet at every op (on a shared machine two
//! OpenMP threads can be far slower than one).
//!
//! The bench re-executes itself for each configuration (KD_BENCH_DP_ROLE =
//! threads:N | rank, ranks with torchrun's variables and KD_BENCH_DP_BUCKETS
//! = 1 | 0), so thread settings never
//! leak between them; rounds alternate the two so machine load hits both
//! alike, and the table shows the median over rounds. Images/s count the
//! training loop only (rank 0's clock, all ranks' images); evaluation is
//! outside it.
//!
//! Env: KD_BENCH_SAMPLES (2048), KD_BENCH_ROUNDS (3).

#![allow(clippy::print_stdout)]

mod common;

use common::{env, median};
use kd_core::Silent;
use kd_core::fit::{FitOptions, GradReduce};
use kd_logit_cache::testing::synthetic_dataset;
use kd_student::{Outcome, RunOptions, Source, StudentConfig, train_stage};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;
use tch::Device;

const BATCH: usize = 128;

/// One configuration's process: train one epoch into KD_BENCH_DP_OUT.
fn child(role: &str) {
    let var = |k: &str| PathBuf::from(std::env::var(k).expect(k));
    let (ds, out) = (var("KD_BENCH_DP_DATASET"), var("KD_BENCH_DP_OUT"));
    let threads = role
        .strip_prefix("threads:")
        .map_or(1, |n| n.parse().expect("threads:N"));
    tch::set_num_threads(threads);
    let dist = kd_dist::Group::from_env(Duration::from_secs(300), kd_dist::Backend::Gloo)
        .expect("join the group")
        .map(Rc::new);
    let buckets = std::env::var("KD_BENCH_DP_BUCKETS").as_deref() != Ok("0");
    let opts = FitOptions {
        dist,
        grad_reduce: if buckets {
            GradReduce::default()
        } else {
            GradReduce::AfterBackward
        },
        ..Default::default()
    };
    let cfg = StudentConfig {
        preset: "vit-tiny".into(),
        epochs: 1,
        batch_size: BATCH,
        ..Default::default()
    };
    match train_stage(
        &cfg,
        &ds,
        &Source::None,
        &out,
        &RunOptions::new(Device::Cpu, &Silent)
            .force(true)
            .fit(opts.clone()),
    )
    .expect("student run")
    {
        Outcome::Wrote(_) | Outcome::Follower { .. } => {}
        o => panic!("unexpected {o:?}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("port")
        .port()
}

/// Run one configuration (`ranks` processes of `threads` threads, gradients
/// in `buckets` or after the backward pass); (images/s, all-reduce seconds
/// of the epoch) from rank 0's metrics.
fn run(ds: &Path, out: &Path, ranks: usize, threads: usize, buckets: bool) -> (f64, f64) {
    let me = std::env::current_exe().expect("bench binary");
    let port = free_port();
    let children: Vec<_> = (0..ranks)
        .map(|r| {
            let mut c = Command::new(&me);
            c.env("KD_BENCH_DP_DATASET", ds)
                .env("KD_BENCH_DP_OUT", out)
                .env("RUST_LOG", "warn");
            if ranks == 1 {
                c.env("KD_BENCH_DP_ROLE", format!("threads:{threads}"));
            } else {
                c.env("KD_BENCH_DP_ROLE", "rank")
                    .env("KD_BENCH_DP_BUCKETS", if buckets { "1" } else { "0" })
                    .env("RANK", r.to_string())
                    .env("LOCAL_RANK", r.to_string())
                    .env("WORLD_SIZE", ranks.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", port.to_string());
            }
            c.spawn().expect("spawn a rank")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("rank").success(), "a rank failed");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).expect("metrics"))
            .expect("metrics json");
    let e = &m["epochs"][0];
    (
        e["images_per_sec"].as_f64().unwrap_or(0.0),
        e["allreduce_seconds"].as_f64().unwrap_or(0.0),
    )
}

fn main() {
    // As the kd binary does at startup.
    kd_core::malloc::keep_freed_memory();
    if let Ok(role) = std::env::var("KD_BENCH_DP_ROLE") {
        child(&role);
        return;
    }
    let n = env("KD_BENCH_SAMPLES", 2048);
    let rounds = env("KD_BENCH_ROUNDS", 3).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ds = synthetic_dataset(&tmp.path().join("ds"), n, 10, [1, 28, 28], 3);
    let steps = n.div_ceil(BATCH) as f64;
    let (mut one, mut single, mut dp, mut after, mut comm) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        one.push(run(&ds, &tmp.path().join("one"), 1, 1, true).0);
        single.push(run(&ds, &tmp.path().join("single"), 1, 2, true).0);
        dp.push(run(&ds, &tmp.path().join("dp"), 2, 1, true).0);
        let (ips, ar) = run(&ds, &tmp.path().join("after"), 2, 1, false);
        after.push(ips);
        comm.push(ar / steps);
    }
    let (o, s, d, a, c) = (
        median(one),
        median(single),
        median(dp),
        median(after),
        median(comm),
    );
    let step_ms = BATCH as f64 / a * 1e3;
    println!(
        "\nData-parallel student training: vit-tiny, batch {BATCH} (global), 1x28x28, {n} samples, no teacher, CPU, \
         median of {rounds} one-epoch rounds\n"
    );
    println!("| configuration | train images/s | relative to 1 x 2 threads |");
    println!("|---|---:|---:|");
    println!(
        "| 1 process x 1 thread (reference) | {o:.0} | {:.3} |",
        o / s
    );
    println!("| 1 process x 2 threads | {s:.0} | 1.000 |");
    println!(
        "| 2 ranks x 1 thread (Gloo, localhost), gradients in buckets during the backward pass | {d:.0} | {:.3} |",
        d / s
    );
    println!(
        "| 2 ranks x 1 thread (Gloo, localhost), one all-reduce after the backward pass | {a:.0} | {:.3} |",
        a / s
    );
    println!(
        "\nthe all-reduce after the backward pass: {:.2} ms per step on rank 0 (of {step_ms:.1} ms per step, {:.1}%; includes waiting for the slower rank)",
        c * 1e3,
        c * 1e3 / step_ms * 100.0
    );
}
