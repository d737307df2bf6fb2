//! Nothing silently wrong, from the command line: damaged artifacts, a wrong `--out`,
//! another working directory, a misspelt profile section, two builds into
//! one store, a folder import's long config. Every refusal exits non-zero
//! with one `error:` line naming the file or the setting, and writes no
//! manifest.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `kd` with the whitespace-separated `args`, run in `cwd` (paths may be
/// relative to it; the temporary directories have no spaces).
fn kd_in(cwd: &Path, args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args.split_whitespace())
        .current_dir(cwd)
        .env("RUST_LOG", "error")
        .output()
        .expect("kd runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

/// Failed, with one `error:` line holding every one of `needles`.
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {}{err}", stdout(o));
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error:"), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// IDX files of 40 train / 20 test 8x8 images whose brightness follows the label.
fn write_idx(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (p, n) in [("train", 40usize), ("t10k", 20)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images: Vec<u8> = (0..n * 64)
            .map(|i| (labels[i / 64] as usize * 20 + (i * 7) % 30) as u8)
            .collect();
        std::fs::write(
            dir.join(format!("{p}-images-idx3-ubyte")),
            kd_data::idx::encode_idx(&[n, 8, 8], &images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{p}-labels-idx1-ubyte")),
            kd_data::idx::encode_idx(&[n], &labels),
        )
        .unwrap();
    }
}

/// `root/run/{dataset,teachers/cnn,logits}` made as the Makefile does:
/// from `root`, with relative paths.
fn pipeline(root: &Path) -> PathBuf {
    write_idx(&root.join("src"));
    ok(&kd_in(
        root,
        "data import --format idx --src src --out run/dataset",
    ));
    ok(&kd_in(root, &teacher("run/teachers/cnn")));
    ok(&kd_in(root, &cache("run/logits")));
    root.join("run")
}

fn teacher(out: &str) -> String {
    format!(
        "teacher train --arch cnn --preset cnn-tiny --epochs 1 --batch-size 20 --device cpu \
         --dataset run/dataset --out {out}"
    )
}

fn cache(out: &str) -> String {
    format!(
        "cache build --dataset run/dataset --teacher run/teachers/cnn --views 2 \
         --shard-samples 16 --chunk-samples 8 --device cpu --out {out}"
    )
}

fn student(teachers: &str, out: &str) -> String {
    format!(
        "student train --dataset run/dataset --teachers {teachers} --preset vit-test \
         --epochs 1 --batch-size 20 --device cpu --out {out}"
    )
}

fn no_manifest(dir: &Path) {
    assert!(!dir.join("manifest.json").exists(), "{}", dir.display());
}

#[test]
fn a_deleted_chunk_or_shard_stops_every_reader() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = pipeline(root);

    // A shard of a teacher's logits, then one of the view parameters.
    for shard in ["teachers/cnn/logits/c/1/0/0", "views/params/c/2/0/0"] {
        let file = run.join("logits/logits.zarr").join(shard);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let named = ["logits.zarr", shard, "missing"];
        refused(
            &kd_in(root, &student("cache:run/logits", "run/student/c")),
            &named,
        );
        no_manifest(&run.join("student/c"));
        refused(&kd_in(root, "cache inspect run/logits"), &named);
        refused(&kd_in(root, "cache verify run/logits --device cpu"), &named);
        std::fs::write(&file, bytes).unwrap();
    }
    ok(&kd_in(root, "cache inspect run/logits"));

    // The dataset's images, then its labels.
    for chunk in ["train/images/c/0/0/0/0", "train/labels/c/0"] {
        let file = run.join("dataset/dataset.zarr").join(chunk);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let named = ["dataset.zarr", chunk, "missing"];
        refused(&kd_in(root, &teacher("run/teachers/t2")), &named);
        refused(&kd_in(root, &cache("run/logits2")), &named);
        refused(&kd_in(root, &student("none", "run/student/n")), &named);
        for dir in ["teachers/t2", "logits2", "student/n"] {
            no_manifest(&run.join(dir));
            std::fs::remove_dir_all(run.join(dir)).ok();
        }
        std::fs::write(&file, bytes).unwrap();
    }
}

#[test]
fn out_holding_another_stage_is_refused_unless_force() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = pipeline(root);
    let manifest = |d: &str| std::fs::read(run.join(d).join("manifest.json")).unwrap();
    let (teacher_m, dataset_m) = (manifest("teachers/cnn"), manifest("dataset"));

    refused(
        &kd_in(root, &cache("run/teachers/cnn")),
        &[
            "run/teachers/cnn",
            "holds a finished 'teacher' artifact",
            "--force",
        ],
    );
    refused(
        &kd_in(root, &student("none", "run/dataset")),
        &["run/dataset", "holds a finished 'data' artifact"],
    );
    refused(
        &kd_in(root, "report --run run --out run/teachers/cnn"),
        &["run/teachers/cnn", "holds a finished 'teacher' artifact"],
    );
    assert_eq!(manifest("teachers/cnn"), teacher_m, "left alone");
    assert_eq!(manifest("dataset"), dataset_m, "left alone");
    ok(&kd_in(root, &student("none", "run/student/none")));

    // Other files: refused too; --force replaces the directory whole.
    std::fs::create_dir_all(root.join("notes")).unwrap();
    std::fs::write(root.join("notes/todo.txt"), "mine").unwrap();
    refused(
        &kd_in(root, &student("none", "notes")),
        &["notes", "not a kd artifact (todo.txt)"],
    );
    ok(&kd_in(root, &(student("none", "notes") + " --force")));
    assert!(!root.join("notes/todo.txt").exists());
    // ... but never a directory with artifacts below it.
    refused(
        &kd_in(root, &(student("none", "run") + " --force")),
        &["holds other artifacts", "even with --force"],
    );
    assert_eq!(manifest("dataset"), dataset_m);
}

#[test]
fn recorded_paths_work_from_another_directory_and_in_a_copied_run() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = pipeline(root);
    let elsewhere = tempfile::tempdir().unwrap();
    let away = elsewhere.path();
    let (l, ds) = (run.join("logits"), run.join("dataset"));
    let (l, ds) = (l.display(), ds.display());

    ok(&kd_in(
        away,
        &format!("cache verify {l} --device cpu --samples 16"),
    ));
    let accuracy = |o: &Output| {
        ok(o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["teachers"][0]["acc_view0"].as_f64()
    };
    assert!(accuracy(&kd_in(away, &format!("cache inspect {l} --json"))).is_some());
    ok(&kd_in(
        away,
        &format!(
            "student train --dataset {ds} --teachers cache:{l} --preset vit-test --epochs 1 \
             --batch-size 20 --device cpu --out st"
        ),
    ));

    // The run copied elsewhere, the original gone.
    let copy = away.join("copy");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&run)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_dir_all(&run).unwrap();
    let cl = copy.join("logits");
    let cl = cl.display();
    assert!(accuracy(&kd_in(root, &format!("cache inspect {cl} --json"))).is_some());
    ok(&kd_in(
        root,
        &format!("cache verify {cl} --device cpu --samples 8"),
    ));

    // Gone: said, not a silent '-'.
    std::fs::remove_dir_all(copy.join("dataset")).unwrap();
    let o = kd_in(root, &format!("cache inspect {cl}"));
    ok(&o);
    assert!(
        stdout(&o).contains("no accuracies") && stdout(&o).contains("input 'dataset'"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_dir_all(copy.join("teachers")).unwrap();
    refused(
        &kd_in(root, &format!("cache verify {cl} --device cpu")),
        &["input 'teacher:cnn'", "run/teachers/cnn", "is not there"],
    );
}

#[test]
fn a_misspelt_profile_section_is_refused_by_every_command() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    pipeline(root);
    std::fs::write(
        root.join("p.toml"),
        "[data]\nformat = \"idx\"\n[cahce]\nviews = 2\n[teachers.cnn]\narch = \"cnn\"\n[students.none]\n",
    )
    .unwrap();
    let named = ["p.toml", "unknown section [cahce]"];
    refused(
        &kd_in(root, &(cache("run/l2") + " --profile p.toml")),
        &named,
    );
    no_manifest(&root.join("run/l2"));
    refused(
        &kd_in(root, "data import --profile p.toml --src src --out d2"),
        &named,
    );
    refused(
        &kd_in(
            root,
            "teacher train --profile p.toml --name cnn --dataset run/dataset --out t2",
        ),
        &named,
    );
    refused(
        &kd_in(
            root,
            &(student("none", "s2") + " --profile p.toml --variant none"),
        ),
        &named,
    );
}

#[test]
fn a_second_build_into_one_store_is_refused_while_the_first_runs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let run = pipeline(root);
    ok(&kd_in(root, &(cache("run/l2") + " --stop-after-shards 1")));
    // Another `kd cache build` holds the store.
    let held = std::fs::File::open(run.join("l2/.build.lock")).unwrap();
    held.lock().unwrap();
    refused(
        &kd_in(root, &cache("run/l2")),
        &["run/l2/.build.lock", "another `kd cache build`"],
    );
    no_manifest(&run.join("l2"));
    drop(held);
    let o = kd_in(root, &cache("run/l2"));
    ok(&o);
    assert!(
        stdout(&o).contains("(2 written, 1 already done)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn folder_imports_refuse_empty_classes_and_inspect_stays_readable() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for class in ["a", "b"] {
        let d = root.join("imgs").join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..15u8 {
            image::GrayImage::from_pixel(4, 4, image::Luma([i * 9]))
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let import = |out: &str| {
        kd_in(
            root,
            &format!("data import --format folder --src imgs --size 4 --channels 1 --out {out}"),
        )
    };
    ok(&import("ds"));
    let o = kd_in(root, "inspect ds");
    ok(&o);
    let text = stdout(&o);
    let config = text.lines().find(|l| l.starts_with("config")).unwrap();
    assert!(
        config.contains("\"source_blake3\":\"<30 items>\""),
        "{config}"
    );
    assert!(config.len() < 1000, "{config}");
    let o = kd_in(root, "inspect ds --json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hashes = v["manifest"]["config"]["source_blake3"].as_array().unwrap();
    assert_eq!(hashes.len(), 30, "--json keeps everything");

    std::fs::create_dir_all(root.join("imgs/c")).unwrap();
    refused(
        &import("ds2"),
        &["imgs/c", "class folder has no PNG or JPEG images"],
    );
    no_manifest(&root.join("ds2"));
}
