//! The `kd` binary as scripts use it: exit codes, one-line errors on stderr,
//! JSON on stdout.

use std::path::Path;
use std::process::{Command, Output};

fn kd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kd runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_idx(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let idx = |dims: &[usize], data: Vec<u8>| kd_data::idx::encode_idx(dims, &data);
    for (p, n) in [("train", 20usize), ("t10k", 10)] {
        std::fs::write(
            dir.join(format!("{p}-images-idx3-ubyte")),
            idx(&[n, 4, 4], vec![7; n * 16]),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{p}-labels-idx1-ubyte")),
            idx(&[n], (0..n).map(|i| (i % 10) as u8).collect()),
        )
        .unwrap();
    }
}

#[test]
fn env_reports_libtorch_and_cuda_as_json() {
    let o = kd(&["env", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["libtorch"].as_str().unwrap().starts_with("2.11"), "{v}");
    assert!(v["threads"].as_i64().unwrap() >= 1);
    assert_eq!(
        v["cuda_available"].as_bool().unwrap(),
        !v["cuda_devices"].as_array().unwrap().is_empty()
    );
}

#[test]
fn import_then_inspect_json_and_idempotence() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx(&src);
    let out = t.path().join("ds");
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    let first = kd(&["data", "import", "--format", "idx", "--src", s, "--out", o]);
    assert!(first.status.success(), "{}", stderr(&first));
    let mtime = || {
        std::fs::metadata(out.join("manifest.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let t0 = mtime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = kd(&["data", "import", "--format", "idx", "--src", s, "--out", o]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
    assert_eq!(
        std::fs::read(out.join("manifest.json")).unwrap(),
        before,
        "no-op keeps the manifest"
    );
    assert!(
        mtime() > t0,
        "no-op refreshes the manifest's mtime for make"
    );

    let o = kd(&["inspect", "--json", o]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["stage"], "data");
    let arrays = v["arrays"].as_array().unwrap();
    let imgs = arrays.iter().find(|a| a["path"] == "train/images").unwrap();
    assert_eq!(imgs["shape"], serde_json::json!([20, 1, 4, 4]));
    assert_eq!(imgs["dtype"], "uint8");
}

#[test]
fn bad_input_is_one_line_nonzero_and_leaves_no_manifest() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx(&src);
    std::fs::write(src.join("t10k-labels-idx1-ubyte"), b"garbage!").unwrap();
    let out = t.path().join("ds");
    let o = kd(&[
        "data",
        "import",
        "--format",
        "idx",
        "--src",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error:")
            && lines[0].contains("t10k-labels-idx1-ubyte")
            && lines[0].contains("bad magic"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert!(!out.join("manifest.json").exists());

    let o = kd(&["inspect", t.path().join("nothing").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no manifest.json"), "{}", stderr(&o));
}

#[test]
fn student_trains_under_bf16_autocast_and_records_it() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx(&src);
    let ds = t.path().join("ds");
    let (s, d) = (src.to_str().unwrap(), ds.to_str().unwrap());
    let o = kd(&["data", "import", "--format", "idx", "--src", s, "--out", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.path().join("st");
    let train = |precision: &str| {
        kd(&[
            "student",
            "train",
            "--dataset",
            d,
            "--teachers",
            "none",
            "--preset",
            "vit-test",
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--device",
            "cpu",
            "--precision",
            precision,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = train("bf16");
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["config"]["student"]["precision"], "bf16", "{m}");
    let acc = m["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));

    let o = train("fp8");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--precision") && e.contains("'fp8'") && e.contains("`bf16`"),
        "{e}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_kd_quietly() {
    // `kd env | head -0`: the pipe is closed before kd writes (starting
    // libtorch takes far longer than dropping the read end).
    let mut child = Command::new(env!("CARGO_BIN_EXE_kd"))
        .arg("env")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kd runs");
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn negative_numbers_and_unknown_presets_are_refused_before_any_data_loads() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let out = out.to_str().unwrap();
    // No dataset exists: each error must come before it is looked for.
    let common = ["--dataset", "/nonexistent-dataset", "--out", out];
    let cases: [(&[&str], &[&str], &str); 4] = [
        (
            &["student", "train"],
            &["--teachers", "none", "--alpha", "-0.1"],
            "alpha = -0.1",
        ),
        (
            &["teacher", "train", "--arch", "cnn"],
            &["--lr", "-0.01"],
            "lr = -0.01",
        ),
        (
            &["student", "train"],
            &["--teachers", "none", "--preset", "vit-huge"],
            "deit-small",
        ),
        (
            &["teacher", "train", "--arch", "cnn"],
            &["--preset", "resnet50"],
            "rednet-26",
        ),
    ];
    for (cmd, flags, want) in cases {
        let args: Vec<&str> = cmd.iter().chain(&common).chain(flags).copied().collect();
        let o = kd(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(
            !e.contains("nonexistent-dataset"),
            "{args:?} loaded data first: {e}"
        );
    }
}

/// `kd bench data` times the pipeline in memory and read by chunk (a data
/// cache smaller than the dataset); a bad cache setting or a missing
/// dataset is one line.
#[test]
fn bench_data_reads_in_memory_and_by_chunk() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx(&src);
    let ds = t.path().join("ds");
    let d = ds.to_str().unwrap();
    let imp = kd(&[
        "data",
        "import",
        "--format",
        "idx",
        "--src",
        src.to_str().unwrap(),
        "--out",
        d,
    ]);
    assert!(imp.status.success(), "{}", stderr(&imp));
    let bench = |cache: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_kd"))
            .args([
                "bench",
                "data",
                "--dataset",
                d,
                "--batch",
                "4",
                "--batches",
                "5",
            ])
            .args(["--crop", "pad-crop", "--pad", "1", "--json"])
            .env("RUST_LOG", "warn")
            .env("KD_DATA_CACHE", cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let mem = bench("1G");
    assert_eq!(mem["read_by_chunk"], false);
    assert_eq!(mem["images"], 20);
    assert!(mem["images_per_sec"].as_f64().unwrap() > 0.0);
    // 480 bytes of pixels over a 100-byte cache: read by chunk.
    let chunked = bench("100");
    assert_eq!(chunked["read_by_chunk"], true);
    assert_eq!(chunked["images"], 20);
    let bad = Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(["bench", "data", "--dataset", d])
        .env("KD_DATA_CACHE", "lots")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = stderr(&bad);
    assert!(
        e.contains("KD_DATA_CACHE") && e.contains("lots") && e.trim().lines().count() == 1,
        "{e}"
    );
    let missing = kd(&[
        "bench",
        "data",
        "--dataset",
        t.path().join("nope").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim().lines().count(),
        1,
        "{}",
        stderr(&missing)
    );
}

/// Every stage on a dataset read by chunk (a data cache of a few KB over
/// 4500 8x8 images: two stored chunks): the teacher and the student train,
/// and the store their teacher writes is byte for byte the store built from
/// the same dataset in memory (the cache stage reads in sample order).
#[test]
fn every_stage_runs_on_a_dataset_read_by_chunk() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut r = kd_core::Rng::new(9);
    for (p, n) in [("train", 4500usize), ("t10k", 200)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        // Class c is brighter in row c % 8: learnable, not constant.
        let images: Vec<u8> = (0..n * 64)
            .map(|k| {
                let (i, px) = (k / 64, k % 64);
                let bright = px / 8 == labels[i] as usize % 8;
                (if bright { 150 } else { 40 }) + r.below(60) as u8
            })
            .collect();
        let enc = kd_data::idx::encode_idx;
        std::fs::write(
            src.join(format!("{p}-images-idx3-ubyte")),
            enc(&[n, 8, 8], &images),
        )
        .unwrap();
        std::fs::write(
            src.join(format!("{p}-labels-idx1-ubyte")),
            enc(&[n], &labels),
        )
        .unwrap();
    }
    let path = |name: &str| t.path().join(name).to_str().unwrap().to_string();
    let (ds, teacher) = (path("ds"), path("cnn"));
    let run = |cache: &str, args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kd"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("KD_DATA_CACHE", cache)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stderr(&o)
    };
    run(
        "1G",
        &[
            "data",
            "import",
            "--format",
            "idx",
            "--src",
            src.to_str().unwrap(),
            "--out",
            &ds,
        ],
    );
    let small = "8K";
    let log = run(
        small,
        &[
            "teacher",
            "train",
            "--arch",
            "cnn",
            "--preset",
            "cnn-tiny",
            "--dataset",
            &ds,
            "--out",
            &teacher,
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--device",
            "cpu",
        ],
    );
    assert!(log.contains("reading by chunk"), "{log}");
    let store = |cache: &str, out: &str| {
        run(
            cache,
            &[
                "cache",
                "build",
                "--dataset",
                &ds,
                "--teacher",
                &teacher,
                "--out",
                out,
                "--views",
                "3",
                "--device",
                "cpu",
            ],
        )
    };
    store("1G", &path("mem"));
    assert!(store(small, &path("chunked")).contains("reading by chunk"));
    let zarr = |d: &str| t.path().join(d).join("logits.zarr");
    for f in [
        "teachers/cnn/logits/c/0/0/0",
        "teachers/cnn/logits/c/4/0/0",
        "views/params/c/0/0/0",
    ] {
        assert_eq!(
            std::fs::read(zarr("mem").join(f)).unwrap(),
            std::fs::read(zarr("chunked").join(f)).unwrap(),
            "{f}"
        );
    }
    let log = run(
        small,
        &[
            "student",
            "train",
            "--dataset",
            &ds,
            "--teachers",
            &format!("cache:{}", path("chunked")),
            "--preset",
            "vit-test",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--device",
            "cpu",
            "--out",
            &path("student"),
        ],
    );
    assert!(log.contains("reading by chunk"), "{log}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("student/metrics.json")).unwrap())
            .unwrap();
    assert!(
        (0.0..=1.0).contains(&m["test_accuracy"].as_f64().unwrap()),
        "{m}"
    );
}
