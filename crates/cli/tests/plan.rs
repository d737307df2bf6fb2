//! `kd plan`: images, steps and store bytes as computed by hand, the store
//! bytes against a real tiny store, a measured plan on CIFAR-format bins,
//! and a bad setting as one error line.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .expect("kd runs")
}

fn ok_json(args: &[&str]) -> Value {
    let o = kd(args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stage<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {plan}"))
}

fn images(s: &Value) -> [u64; 3] {
    [
        s["train"].as_u64().unwrap(),
        s["val"].as_u64().unwrap(),
        s["test"].as_u64().unwrap(),
    ]
}

const FMNIST: &str = "data/raw/fashion-mnist";

#[test]
fn tiny_profile_images_steps_and_store_bytes_are_the_hand_computed_ones() {
    if !root().join(FMNIST).is_dir() {
        eprintln!("skipped: no {FMNIST} (scripts/fetch-fashion-mnist.sh)");
        return;
    }
    let plan = ok_json(&[
        "plan",
        "--profile",
        "data/profiles/tiny.toml",
        "--no-measure",
        "--json",
    ]);
    // limit_train 400, limit_test 100, no val; batch 64: ceil(400/64) = 7.
    for name in [
        "data",
        "teacher:cnn",
        "teacher:involution",
        "student:none",
        "student:ensemble-live",
    ] {
        assert_eq!(images(stage(&plan, name)), [400, 0, 100], "{name}");
    }
    for name in ["teacher:cnn", "student:ensemble"] {
        let s = stage(&plan, name);
        assert_eq!(
            (
                s["epochs"].as_u64(),
                s["batches_per_epoch"].as_u64(),
                s["steps"].as_u64()
            ),
            (Some(1), Some(7), Some(7))
        );
    }
    // The cache: 400 images x 2 views, batch 128: ceil(800/128) = 7 forward
    // batches per teacher; rows of 10 float16 logits per teacher plus 3
    // bytes of view parameters: 400 * 2 * (2 * 20 + 3).
    let c = stage(&plan, "cache");
    assert_eq!(c["steps"].as_u64(), Some(14));
    assert_eq!(c["store_bytes"].as_u64(), Some(400 * 2 * (2 * 20 + 3)));
    assert_eq!(plan["total_store_bytes"].as_u64(), Some(34400));
    // The table says the same, and where the counts came from.
    let o = kd(&[
        "plan",
        "--profile",
        "data/profiles/tiny.toml",
        "--no-measure",
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("400/0/100") && text.contains("1x7=7") && text.contains("33.6 KiB"),
        "{text}"
    );
    assert!(text.contains("counted from"), "{text}");
}

/// Bytes of every file under `dir`.
fn file_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        n += if p.is_dir() {
            file_bytes(&p)
        } else {
            std::fs::metadata(&p).unwrap().len()
        };
    }
    n
}

#[test]
fn store_bytes_are_within_a_few_percent_of_a_real_tiny_store() {
    if !root().join(FMNIST).is_dir() {
        eprintln!("skipped: no {FMNIST}");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = |s: &str| t.path().join(s).to_str().unwrap().to_string();
    let p = "data/profiles/tiny.toml";
    let run = |args: &[&str]| {
        let o = kd(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "data",
        "import",
        "--profile",
        p,
        "--src",
        FMNIST,
        "--out",
        &d("dataset"),
    ]);
    for name in ["cnn", "involution"] {
        run(&[
            "teacher",
            "train",
            "--profile",
            p,
            "--name",
            name,
            "--dataset",
            &d("dataset"),
            "--out",
            &d(&format!("t/{name}")),
            "--device",
            "cpu",
        ]);
    }
    run(&[
        "cache",
        "build",
        "--profile",
        p,
        "--dataset",
        &d("dataset"),
        "--teacher",
        &d("t/cnn"),
        "--teacher",
        &d("t/involution"),
        "--out",
        &d("logits"),
        "--device",
        "cpu",
    ]);
    let plan = ok_json(&[
        "plan",
        "--profile",
        p,
        "--dataset",
        &d("dataset"),
        "--no-measure",
        "--json",
    ]);
    assert!(
        plan["images"]["source"]
            .as_str()
            .unwrap()
            .starts_with("dataset:"),
        "{plan}"
    );
    let planned = stage(&plan, "cache")["store_bytes"].as_u64().unwrap() as f64;
    // The arrays' shard files (data, shard index, checksums); the JSON
    // metadata beside them is a few KiB whatever the store's size.
    let zarr = t.path().join("logits/logits.zarr");
    let mut arrays = 0;
    for a in [
        "views/params",
        "teachers/cnn/logits",
        "teachers/involution/logits",
    ] {
        arrays += file_bytes(&zarr.join(a).join("c"));
    }
    let err = (planned - arrays as f64).abs() / arrays as f64;
    assert!(
        err < 0.06,
        "planned {planned} bytes, the store's arrays hold {arrays} ({:.1}% off)",
        err * 100.0
    );
}

/// CIFAR-10 binary batches of `n` records each (label byte + 3072 pixels).
fn write_cifar10(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let batch = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                std::iter::once((i % 10) as u8)
                    .chain((0..3072).map(move |j| ((i * 7 + j) % 251) as u8))
            })
            .collect()
    };
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), batch(n)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(n / 2)).unwrap();
}

#[test]
fn cifar_bins_are_counted_from_file_sizes_and_a_step_is_measured() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("cifar");
    write_cifar10(&src, 40);
    let prof = t.path().join("c.toml");
    std::fs::write(
        &prof,
        format!(
            r#"[data]
format = "cifar"
src = "{}"
val_fraction = 0.1
limit_test = 15
[teachers.cnn]
arch = "cnn"
preset = "cnn-tiny"
eval_batch_size = 50
[teachers.cnn.fit]
epochs = 2
batch_size = 32
[cache]
views = 3
dtype = "f32"
top_k = 4
batch_size = 64
[students.cnn]
preset = "vit-test"
epochs = 3
batch_size = 16
eval_batch_size = 50
"#,
            src.display()
        ),
    )
    .unwrap();
    let p = prof.to_str().unwrap();
    let plan = ok_json(&[
        "plan",
        "--profile",
        p,
        "--json",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    // 5 x 40 train records, val 10% = 20, test min(20, 15).
    assert_eq!(images(stage(&plan, "data")), [180, 20, 15]);
    assert_eq!(plan["images"]["chw"], serde_json::json!([3, 32, 32]));
    let teacher = stage(&plan, "teacher:cnn");
    assert_eq!(teacher["steps"].as_u64(), Some(2 * 6)); // ceil(180/32) = 6
    let student = stage(&plan, "student:cnn");
    assert_eq!(student["steps"].as_u64(), Some(3 * 12)); // ceil(180/16) = 12
    // Top-4 of float32 plus uint16 indices, one teacher, 3 view bytes.
    assert_eq!(
        stage(&plan, "cache")["store_bytes"].as_u64(),
        Some(180 * 3 * (4 * (4 + 2) + 3))
    );
    for s in [teacher, student, stage(&plan, "cache")] {
        assert_eq!(s["time_measured"], true, "{s}");
        assert!(s["seconds"].as_f64().unwrap() > 0.0, "{s}");
        assert_eq!(s["peak_measured"], true, "{s}");
        // At least the dataset held in memory.
        assert!(s["peak_bytes"].as_u64().unwrap() > 215 * 3072, "{s}");
    }
    assert!(plan["total_seconds"].as_f64().unwrap() > 0.0);
    let o = kd(&["plan", "--profile", p, "--no-measure"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("raw:cifar10:"));

    // CIFAR-100: train.bin + test.bin of 3074-byte records.
    let c100 = t.path().join("c100");
    std::fs::create_dir_all(&c100).unwrap();
    std::fs::write(c100.join("train.bin"), vec![0u8; 3074 * 30]).unwrap();
    std::fs::write(c100.join("test.bin"), vec![0u8; 3074 * 12]).unwrap();
    std::fs::write(
        &prof,
        format!("[data]\nformat = \"cifar\"\nsrc = \"{}\"\n", c100.display()),
    )
    .unwrap();
    let plan = ok_json(&["plan", "--profile", p, "--no-measure", "--json"]);
    assert_eq!(images(stage(&plan, "data")), [30, 0, 12]);
    assert_eq!(plan["images"]["classes"].as_u64(), Some(100));
}

#[test]
fn a_bad_setting_is_one_error_line() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("cifar");
    write_cifar10(&src, 4);
    let prof = t.path().join("bad.toml");
    for (body, says) in [
        ("[cache]\nviews = 0\n[teachers.cnn]\n", "views = 0"),
        ("[students.none]\npreset = \"vit-huge\"\n", "vit-huge"),
        ("[teachers.cnn]\npreset = \"cnn-r99\"\n", "cnn-r99"),
        ("[students.none]\nbatch_size = 0\n", "batch_size"),
    ] {
        std::fs::write(
            &prof,
            format!(
                "[data]\nformat = \"cifar\"\nsrc = \"{}\"\n{body}",
                src.display()
            ),
        )
        .unwrap();
        let o = kd(&["plan", "--profile", prof.to_str().unwrap(), "--no-measure"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{body}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error:") && err.contains(says),
            "{body}: {err}"
        );
    }
    // No raw data where the profile says: one line naming the directory.
    std::fs::write(
        &prof,
        "[data]\nformat = \"cifar\"\nsrc = \"/nonexistent/cifar\"\n",
    )
    .unwrap();
    let o = kd(&["plan", "--profile", prof.to_str().unwrap(), "--no-measure"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.lines().count() == 1 && err.contains("/nonexistent/cifar"),
        "{err}"
    );
}
