//! Data-parallel training across processes on localhost (Gloo): two ranks
//! train the weights one process trains on the same global batches, and a
//! rank that dies makes the other stop with an error instead of hanging,
//! after which the job resumes from its last checkpoint.
//!
//! The first test launches through torchrun (from the PyTorch virtualenv the
//! Makefile puts on PATH), as users do; the second sets torchrun's variables
//! itself, to kill exactly one rank. Neither skips: a missing torchrun fails.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

const KD: &str = env!("CARGO_BIN_EXE_kd");

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A dataset of `n` train and 10 test `side`x`side` images with varied pixels.
fn dataset(root: &Path, n: usize, side: usize) -> PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let px = side * side;
    for (p, n) in [("train", n), ("t10k", 10)] {
        let pixels: Vec<u8> = (0..n * px)
            .map(|k| ((k * 37 + (k / px) * 11) % 251) as u8)
            .collect();
        std::fs::write(
            src.join(format!("{p}-images-idx3-ubyte")),
            kd_data::idx::encode_idx(&[n, side, side], &pixels),
        )
        .unwrap();
        let labels: Vec<u8> = (0..n).map(|i| ((i * 7) % 10) as u8).collect();
        std::fs::write(
            src.join(format!("{p}-labels-idx1-ubyte")),
            kd_data::idx::encode_idx(&[n], &labels),
        )
        .unwrap();
    }
    let ds = root.join("ds");
    let o = Command::new(KD)
        .args(["data", "import", "--format", "idx", "--src"])
        .arg(&src)
        .arg("--out")
        .arg(&ds)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    ds
}

fn student_args(ds: &Path, out: &Path, epochs: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "student",
        "train",
        "--teachers",
        "none",
        "--preset",
        "vit-test",
        "--batch-size",
        "7",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--dist-timeout",
        "20",
        "--epochs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(epochs.to_string());
    for (k, v) in [("--dataset", ds), ("--out", out)] {
        a.push(k.into());
        a.push(v.display().to_string());
    }
    a
}

/// One rank of a two-rank job, with torchrun's variables set by hand.
fn rank<S: AsRef<std::ffi::OsStr>>(args: &[S], r: usize, port: u16) -> Child {
    Command::new(KD)
        .args(args)
        .env("RANK", r.to_string())
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", r.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("KD_THREADS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(dir.join("weights.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Largest absolute difference between two weight sets of the same model.
fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            f64::try_from((ta - tb).abs().max()).unwrap()
        })
        .fold(0.0, f64::max)
}

/// `|a - b| / |a|` over all weights together (L2).
fn relative_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for ((_, ta), (_, tb)) in a.iter().zip(b) {
        num += f64::try_from((ta - tb).square().sum(tch::Kind::Double)).unwrap();
        den += f64::try_from(ta.square().sum(tch::Kind::Double)).unwrap();
    }
    (num / den).sqrt()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn two_ranks_under_torchrun_train_the_weights_of_one_process() {
    let t = tempfile::tempdir().unwrap();
    // 22 images in batches of 7: a batch splits 4 + 3 between the ranks (an
    // unweighted mean of the two gradients would be wrong), and the last
    // batch of 1 leaves rank 1 nothing (it contributes zeros).
    let ds = dataset(t.path(), 22, 4);
    let (one, two) = (t.path().join("one"), t.path().join("two"));
    let o = Command::new(KD)
        .args(student_args(&ds, &one, 3))
        .env("KD_THREADS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let torchrun = std::env::var_os("VIRTUAL_ENV")
        .map(|v| PathBuf::from(v).join("bin/torchrun"))
        .filter(|p| p.is_file())
        .expect("torchrun: set VIRTUAL_ENV to the PyTorch virtualenv (make test does)");
    let o = Command::new(&torchrun)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python", KD])
        .args(student_args(&ds, &two, 3))
        .env("KD_THREADS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("rank 1 trained its share"), "{out}");
    // Gradients summed in one all-reduce after the backward pass instead of
    // in buckets during it: the same sums (two addends commute), so the
    // same weights, bit for bit.
    let after = t.path().join("after");
    let o = Command::new(&torchrun)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python", KD])
        .args(student_args(&ds, &after, 3))
        .args(["--dist-bucket-mb", "0"])
        .env("KD_THREADS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (w2, wa) = (weights(&two), weights(&after));
    assert_eq!(
        max_diff(&w2, &wa),
        0.0,
        "bucketed and after-backward sums differ"
    );

    let (w1, w2) = (weights(&one), weights(&two));
    // AdamW's first steps move every weight by about lr times the sign of
    // its gradient, so a weight whose gradient is float noise can differ by
    // ~lr between any two summation orders (one process on 1 and on 2
    // threads differs by 3e-5 relative, 1.4e-4 at most, here). The bounds
    // sit 15-25x above that; averaging the two gradients unweighted gives 5.6e-2
    // relative and 4.5e-2 at most.
    let (rel, d) = (relative_diff(&w1, &w2), max_diff(&w1, &w2));
    eprintln!("two ranks vs one process: relative weight difference {rel:e}, largest {d:e}");
    assert!(
        rel < 1e-3,
        "two ranks differ from one process by {rel} (relative)"
    );
    assert!(
        d < 4e-3,
        "two ranks differ from one process by {d} in a weight"
    );
    // Two more epochs move the weights far more than the bound, so the
    // bound says something (an unweighted gradient mean misses it too).
    let short = t.path().join("short");
    let o = Command::new(KD)
        .args(student_args(&ds, &short, 1))
        .env("KD_THREADS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let moved = max_diff(&w1, &weights(&short));
    assert!(moved > 1e-2, "weights moved only {moved}");
    let m1 = json(&one.join("manifest.json"));
    let m2 = json(&two.join("manifest.json"));
    // Same result, same config: the world size is not part of the hash.
    assert_eq!(m1["config"], m2["config"]);
    let h1 = &json(&one.join("metrics.json"))["epochs"];
    let h2 = &json(&two.join("metrics.json"))["epochs"];
    let l1 = h1[2]["train"]["loss"].as_f64().unwrap();
    let l2 = h2[2]["train"]["loss"].as_f64().unwrap();
    assert!((l1 - l2).abs() < 1e-4, "epoch loss {l1} vs {l2}");
    assert!(
        h1[0]["train"]["loss"].as_f64().unwrap() > l1,
        "trained: {h1}"
    );
    assert_eq!(json(&two.join("metrics.json"))["data_parallel_ranks"], 2);
    assert_eq!(
        h1[2]["eval"], h2[2]["eval"],
        "rank 0 evaluates the same model"
    );
}

#[test]
fn a_killed_rank_stops_the_other_with_an_error_and_the_job_resumes() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 400, 4);
    let out = t.path().join("st");
    let args = student_args(&ds, &out, 12);
    let port = free_port();
    let mut r0 = rank(&args, 0, port);
    let mut r1 = rank(&args, 1, port);
    // Kill rank 1 once rank 0 has checkpointed an epoch, mid-run.
    let state = out.join("ckpt/state.json");
    let t0 = Instant::now();
    while !state.is_file() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    r1.kill().unwrap();
    r1.wait().unwrap();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = r0.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "rank 0 still running 40 s after its peer died (timeout 20 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    r0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "rank 0 exited 0 without its peer");
    let last = err.lines().last().unwrap_or_default();
    eprintln!("rank 0, {:?} after its peer died: {last}", killed.elapsed());
    assert!(
        last.starts_with("error: ")
            && last.contains("data-parallel")
            && last.contains("rank 0 of 2"),
        "{err}"
    );
    assert!(!out.join("manifest.json").exists());
    let done: serde_json::Value = json(&state);
    let epochs_done = done["epochs_done"].as_u64().unwrap();
    assert!((1..12).contains(&epochs_done), "{done}");
    assert_eq!(done["world_size"], 2);

    // One process may not continue a two-rank checkpoint.
    let o = Command::new(KD)
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("made by 2 data-parallel rank(s), this run has 1"),
        "{}",
        stderr(&o)
    );

    // Rerunning both ranks resumes from the checkpoint and finishes.
    let port = free_port();
    let (r0, r1) = (rank(&args, 0, port), rank(&args, 1, port));
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    assert!(o0.status.success(), "{}", stderr(&o0));
    assert!(o1.status.success(), "{}", stderr(&o1));
    assert!(
        stderr(&o0).contains("resuming from checkpoint"),
        "{}",
        stderr(&o0)
    );
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["epochs"].as_array().unwrap().len(), 12);
}

#[test]
fn two_ranks_train_a_k_fold_batchnorm_teacher_and_rank_0_decides_what_runs() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 40, 12);
    let out = t.path().join("cnn");
    let args: Vec<String> = [
        "teacher",
        "train",
        "--arch",
        "cnn",
        "--preset",
        "cnn-tiny",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--folds",
        "2",
        "--device",
        "cpu",
        "--dist-timeout",
        "20",
        "--dataset",
        ds.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let both = |args: &[String]| {
        let port = free_port();
        let (r0, r1) = (rank(args, 0, port), rank(args, 1, port));
        (
            r0.wait_with_output().unwrap(),
            r1.wait_with_output().unwrap(),
        )
    };
    let (o0, o1) = both(&args);
    assert!(o0.status.success(), "{}", stderr(&o0));
    assert!(o1.status.success(), "{}", stderr(&o1));
    assert!(String::from_utf8_lossy(&o1.stdout).contains("rank 1 trained its share"));
    let m = json(&out.join("manifest.json"));
    // BatchNorm normalises over each rank's slice: another training, another hash.
    assert_eq!(m["config"]["data_parallel_ranks"], 2, "{m}");
    for f in 0..2 {
        let w = weights(&out.join(format!("fold-{f}")));
        let bn: Vec<_> = w
            .iter()
            .filter(|(n, _)| n.contains("running_var"))
            .collect();
        assert!(
            !bn.is_empty(),
            "no BatchNorm buffers in {:?}",
            w.iter().map(|x| &x.0).collect::<Vec<_>>()
        );
        for (n, v) in bn {
            let min = f64::try_from(v.min()).unwrap();
            assert!(min.is_finite() && min > 0.0, "{n}: {min}");
        }
    }
    // A second run: rank 0 finds the artifact current and both ranks stop.
    let (o0, o1) = both(&args);
    assert!(
        o0.status.success() && o1.status.success(),
        "{}{}",
        stderr(&o0),
        stderr(&o1)
    );
    assert!(String::from_utf8_lossy(&o0.stdout).contains("up to date"));
    assert!(String::from_utf8_lossy(&o1.stdout).contains("up to date"));
}

/// NCCL asked for on the CPU: one line naming the setting, before any rank
/// waits for the others (so a lone rank does not hang in the rendezvous).
#[test]
fn nccl_on_the_cpu_is_one_error_line_before_the_rendezvous() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 20, 8);
    let out = t.path().join("s");
    let mut args = student_args(&ds, &out, 1);
    args.extend(["--dist-backend".into(), "nccl".into()]);
    let t0 = Instant::now();
    let o = rank(&args, 0, free_port()).wait_with_output().unwrap();
    let e = stderr(&o);
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!o.status.success(), "{e}");
    assert_eq!(errors.len(), 1, "{e}");
    assert!(
        errors[0].contains("dist_backend = nccl") && errors[0].contains("device is cpu"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "waited for peers");
    assert!(!out.join("manifest.json").exists());
    // A name that is no backend: clap's one line, exit 2.
    let o = Command::new(KD)
        .args(["student", "train", "--dist-backend", "mpi"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--dist-backend"), "{}", stderr(&o));
    // A negative bucket size: one line naming the setting, before the
    // rendezvous too.
    let mut args = student_args(&ds, &out, 1);
    args.extend(["--dist-bucket-mb".into(), "-1".into()]);
    let o = rank(&args, 0, free_port()).wait_with_output().unwrap();
    let e = stderr(&o);
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!o.status.success(), "{e}");
    assert_eq!(errors.len(), 1, "{e}");
    assert!(errors[0].contains("dist_bucket_mb"), "{e}");
    assert!(!out.join("manifest.json").exists());
}
