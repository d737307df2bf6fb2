//! Build, read, resume, shard, cross-check with zarr-python, verify and
//! refuse bad input, on a tiny synthetic dataset with seeded conv teachers.

use half::f16;
use kd_core::Outcome;
use kd_core::RunOptions;
use kd_core::manifest::{Manifest, manifest_hash};
use kd_core::{Crop, Silent, Teacher, ViewParams};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor, lut};
use kd_logit_cache::testing::{ConvTeacher, synthetic_dataset, teacher_artifact};
use kd_logit_cache::{
    BuildOptions, Built, CacheConfig, Dtype, LogitStore, TeacherInput, build, finalize, inspect,
    verify,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const N: usize = 50;
const CLASSES: usize = 4;
const HW: [usize; 2] = [8, 8];

struct Fixture {
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    dataset: PathBuf,
    hash: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dataset = synthetic_dataset(&root.join("data"), N, CLASSES, [1, 8, 8], 7);
    let hash = manifest_hash(&dataset).unwrap();
    Fixture {
        _tmp: Some(tmp),
        root,
        dataset,
        hash,
    }
}

fn teacher(f: &Fixture, name: &str, seed: u64) -> TeacherInput {
    let dir = teacher_artifact(&f.root.join("teachers").join(name), name, seed, &f.hash);
    TeacherInput {
        dir,
        teacher: Box::new(ConvTeacher::new(
            name,
            seed,
            1,
            6,
            CLASSES,
            &f.hash,
            Device::Cpu,
        )),
    }
}

fn teachers(f: &Fixture) -> Vec<TeacherInput> {
    vec![teacher(f, "cnn", 1), teacher(f, "inv", 2)]
}

fn cfg(dtype: Dtype, top_k: Option<usize>) -> CacheConfig {
    CacheConfig {
        views: 3,
        dtype,
        top_k,
        seed: 11,
        shard_samples: 16,
        chunk_samples: 8,
        batch_size: 20,
        device: "cpu".into(),
        ..CacheConfig::default()
    }
}

fn run(
    f: &Fixture,
    out: &Path,
    c: &CacheConfig,
    opts: &BuildOptions,
) -> kd_logit_cache::Result<Built> {
    build(
        &f.dataset,
        &teachers(f),
        out,
        c,
        opts,
        &RunOptions::default(),
    )
}

/// The error a `--shard i/n` worker build fails with.
fn shard_err(f: &Fixture, out: &Path, c: &CacheConfig, shard: (usize, usize)) -> String {
    let opts = BuildOptions {
        shard: Some(shard),
        ..Default::default()
    };
    run(f, out, c, &opts).unwrap_err().to_string()
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// Same files with the same bytes; on failure, name the files that differ.
fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    let keys = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&fa), keys(&fb));
    let differ: Vec<&String> = fa.keys().filter(|k| fa[*k] != fb[*k]).collect();
    assert!(
        differ.is_empty(),
        "{} and {} differ in {differ:?}",
        a.display(),
        b.display()
    );
}

fn manifest_sans_time(dir: &Path) -> Manifest {
    let mut m = Manifest::read(dir).unwrap();
    m.created_unix = 0;
    m
}

/// What the store must hold: the teachers run shard by shard in the build's batches.
fn expected(f: &Fixture, c: &CacheConfig, t: &dyn Teacher) -> Vec<f32> {
    let ds = Dataset::open(&f.dataset).unwrap();
    let train = ds.split("train").unwrap();
    let spec = c.view_spec();
    let hw = [train.chw[1], train.chw[2]];
    let table = lut(&ds.mean, &ds.std);
    let mut out = vec![];
    for a in (0..N).step_by(c.shard_samples) {
        let b = (a + c.shard_samples).min(N);
        let pairs: Vec<(usize, usize)> = (a..b)
            .flat_map(|i| (0..c.views).map(move |v| (i, v)))
            .collect();
        for pb in pairs.chunks(c.batch_size) {
            let idx: Vec<usize> = pb.iter().map(|p| p.0).collect();
            let views: Vec<ViewParams> = pb
                .iter()
                .map(|&(i, v)| spec.draw(hw, c.seed, i as u64, v as u64))
                .collect();
            let y =
                t.logits(&batch_tensor(train, &idx, &views, &spec, &table, Device::Cpu).unwrap());
            let rows: Vec<f32> = match c.top_k {
                None => Vec::try_from(&y.contiguous().view(-1)).unwrap(),
                Some(k) => {
                    let (v, i) = y.topk(k as i64, -1, true, true);
                    let full = Tensor::full(
                        [pb.len() as i64, CLASSES as i64],
                        -1e4,
                        (Kind::Float, Device::Cpu),
                    );
                    let full = full.scatter(1, &i, &v);
                    Vec::try_from(&full.contiguous().view(-1)).unwrap()
                }
            };
            out.extend(rows.into_iter().map(|x| match c.dtype {
                Dtype::F16 if x != -1e4 => f16::from_f32(x).to_f32(),
                _ => x,
            }));
        }
    }
    out
}

fn all_pairs() -> Vec<(usize, usize)> {
    (0..N).flat_map(|i| (0..3).map(move |v| (i, v))).collect()
}

#[test]
fn write_then_read_back_bit_exact_in_every_form() {
    let f = fixture();
    for (dtype, top_k, crop) in [
        (Dtype::F16, None, Crop::PadCrop),
        (Dtype::F32, None, Crop::PadCrop),
        (Dtype::F16, Some(2), Crop::PadCrop),
        (Dtype::F32, Some(2), Crop::PadCrop),
        (Dtype::F16, None, Crop::ResizedCrop),
        (Dtype::F32, Some(2), Crop::ResizedCrop),
    ] {
        let c = CacheConfig {
            crop,
            crop_scale: [0.3, 1.0],
            ..cfg(dtype, top_k)
        };
        let out = f.root.join(format!("logits-{dtype:?}-{top_k:?}-{crop:?}"));
        let o = run(&f, &out, &c, &BuildOptions::default()).unwrap();
        assert!(
            matches!(
                (&o.outcome, o.written, o.skipped),
                (Outcome::Wrote(_), 4, 0)
            ),
            "{o:?}"
        );
        let s = LogitStore::open(&out).unwrap();
        assert!(s.in_memory());
        assert_eq!(
            (s.num_samples(), s.views(), s.num_classes()),
            (N, 3, CLASSES)
        );
        assert_eq!(s.teachers(), ["cnn", "inv"]);
        assert_eq!(s.dataset_hash(), f.hash);
        assert_eq!(s.seed(), 11);
        assert_eq!(s.class_names()[3], "class3");
        assert_eq!(s.view_spec().crop(), crop);
        let mut resized = 0;
        for i in 0..N {
            let plain = s.view_params(i, 0);
            assert!(
                plain.is_shift(HW) && plain.y == s.view_spec().pad as u16,
                "{plain:?}"
            );
            resized += (1..3)
                .filter(|&v| !s.view_params(i, v).is_shift(HW))
                .count();
            for v in 0..3 {
                assert_eq!(
                    s.view_params(i, v),
                    c.view_spec().draw(HW, 11, i as u64, v as u64)
                );
            }
        }
        // Resized-crop boxes are stored as drawn, and most of them are resized.
        assert_eq!(
            resized > N,
            crop == Crop::ResizedCrop,
            "{resized} resized views"
        );
        // The chunk-cache path (budget of a few chunks) returns the same bits.
        let chunked = LogitStore::open_with_budget(&out, 1).unwrap();
        assert!(!chunked.in_memory());
        let pairs = all_pairs();
        for ti in teachers(&f) {
            let want = expected(&f, &c, ti.teacher.as_ref());
            let got = s.logits(ti.teacher.name(), &pairs).unwrap();
            assert_eq!(got.len(), N * 3 * CLASSES);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{dtype:?} top-k {top_k:?} {crop:?} teacher {}",
                ti.teacher.name()
            );
            let mut shuffled = pairs.clone();
            shuffled.reverse();
            let a = chunked.logits(ti.teacher.name(), &shuffled).unwrap();
            let b = s.logits(ti.teacher.name(), &shuffled).unwrap();
            assert_eq!(bits(&a), bits(&b));
            if top_k.is_some() {
                let kept = got
                    .chunks(CLASSES)
                    .map(|r| r.iter().filter(|&&x| x != -1e4).count());
                assert!(kept.into_iter().all(|n| n == 2));
            }
        }
        // Views differ from each other: the teachers did see augmented images.
        let r = s.logits("cnn", &[(5, 0), (5, 1), (5, 2)]).unwrap();
        assert!(r[..CLASSES] != r[CLASSES..2 * CLASSES] || r[..CLASSES] != r[2 * CLASSES..]);
        assert!(
            s.logits("nope", &[(0, 0)])
                .unwrap_err()
                .to_string()
                .contains("no teacher 'nope'")
        );
        assert!(s.logits("cnn", &[(N, 0)]).is_err());
    }
}

#[test]
fn killed_and_resumed_build_is_byte_identical() {
    let f = fixture();
    let c = cfg(Dtype::F16, None);
    let whole = f.root.join("whole");
    run(&f, &whole, &c, &BuildOptions::default()).unwrap();

    let resumed = f.root.join("resumed");
    let stop = BuildOptions {
        stop_after_shards: Some(2),
        ..Default::default()
    };
    let o = run(&f, &resumed, &c, &stop).unwrap();
    assert!(
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Stopped { .. }, 2, 0)
        ),
        "{o:?}"
    );
    assert!(!resumed.join("manifest.json").exists());
    let e = LogitStore::open(&resumed).unwrap_err().to_string();
    assert!(e.contains("no manifest.json"), "{e}");
    // A shard killed mid-write: garbage in its file, no marker.
    let half_written = resumed.join("logits.zarr/teachers/cnn/logits/c/2/0/0");
    assert!(!half_written.exists());
    std::fs::create_dir_all(half_written.parent().unwrap()).unwrap();
    std::fs::write(&half_written, b"partial shard").unwrap();

    let o = run(&f, &resumed, &c, &BuildOptions::default()).unwrap();
    assert!(
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Wrote(_), 2, 2)
        ),
        "{o:?}"
    );
    let a = files(&whole.join("logits.zarr"));
    assert_eq!(
        a.len(),
        1 + 2 + 3 + 3 * 4 + 2,
        "groups, arrays and 3 arrays x 4 shards: {:?}",
        a.keys()
    );
    assert_same_files(&whole.join("logits.zarr"), &resumed.join("logits.zarr"));
    assert_same_files(&whole.join(".shards"), &resumed.join(".shards"));
    assert_eq!(manifest_sans_time(&whole), manifest_sans_time(&resumed));
    // Rerun: nothing to do.
    assert!(matches!(
        run(&f, &resumed, &c, &BuildOptions::default())
            .unwrap()
            .outcome,
        Outcome::UpToDate
    ));
}

/// Not a test: the body of one `--shard i/n` worker process, started by
/// `parallel_shard_workers_equal_one_worker` (libtorch's thread pool is per
/// process, so workers are processes, as on a cluster).
#[test]
#[ignore]
fn shard_worker_process() {
    let Ok(spec) = std::env::var("KD_TEST_SHARD_WORKER") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (root, dataset) = (PathBuf::from(parts[1]), PathBuf::from(parts[2]));
    let hash = manifest_hash(&dataset).unwrap();
    let f = Fixture {
        _tmp: None,
        root,
        dataset,
        hash,
    };
    let opts = BuildOptions {
        shard: Some(kd_logit_cache::parse_shard(parts[0]).unwrap()),
        ..Default::default()
    };
    let o = run(&f, Path::new(parts[3]), &cfg(Dtype::F16, Some(3)), &opts).unwrap();
    assert!(
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Stopped { .. }, 2, 0)
        ),
        "{o:?}"
    );
}

#[test]
fn parallel_shard_workers_equal_one_worker() {
    let f = fixture();
    let c = cfg(Dtype::F16, Some(3));
    let one = f.root.join("one");
    run(&f, &one, &c, &BuildOptions::default()).unwrap();

    let par = f.root.join("par");
    let workers: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "shard_worker_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    "KD_TEST_SHARD_WORKER",
                    format!(
                        "{i}/2|{}|{}|{}",
                        f.root.display(),
                        f.dataset.display(),
                        par.display()
                    ),
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in workers {
        assert!(w.wait().unwrap().success(), "a shard worker failed");
    }
    assert!(
        !par.join("manifest.json").exists(),
        "shard workers write no manifest"
    );
    assert_eq!(std::fs::read_dir(par.join(".shards")).unwrap().count(), 4);
    finalize(&par).unwrap();
    assert_same_files(&one.join("logits.zarr"), &par.join("logits.zarr"));
    assert_same_files(&one.join(".shards"), &par.join(".shards"));
    assert_eq!(manifest_sans_time(&one), manifest_sans_time(&par));
    assert!(LogitStore::open(&par).is_ok());
}

#[test]
fn zarr_python_reads_the_same_numbers() {
    let py = kd_logit_cache::testing::zarr_python();
    let f = fixture();
    for (dtype, top_k, crop) in [
        (Dtype::F16, None, Crop::PadCrop),
        (Dtype::F32, Some(2), Crop::ResizedCrop),
    ] {
        let c = CacheConfig {
            crop,
            ..cfg(dtype, top_k)
        };
        let out = f.root.join(format!("py-{dtype:?}"));
        run(&f, &out, &c, &BuildOptions::default()).unwrap();
        let script = r#"
import json, sys, zarr, numpy as np
g = zarr.open_group(sys.argv[1], mode="r")
assert zarr.__version__.startswith("3"), zarr.__version__
out = {"attrs": dict(g.attrs), "params": g["views/params"][:].tolist(), "teachers": {}}
for name in g.attrs["teachers"]:
    t = g["teachers"][name["name"]]
    if "logits" in t:
        a = t["logits"]
        out["teachers"][name["name"]] = {"dtype": str(a.dtype), "shape": list(a.shape), "logits": a[:].astype(np.float64).ravel().tolist()}
    else:
        v, i = t["values"][:], t["indices"][:]
        full = np.full(v.shape[:2] + (len(g.attrs["class_names"]),), -1e4, dtype=np.float64)
        np.put_along_axis(full, i.astype(np.int64), v.astype(np.float64), axis=2)
        out["teachers"][name["name"]] = {"dtype": str(v.dtype), "shape": list(v.shape), "logits": full.ravel().tolist()}
print(json.dumps(out))
"#;
        let o = std::process::Command::new(&py)
            .args(["-c", script])
            .arg(out.join("logits.zarr"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let s = LogitStore::open(&out).unwrap();
        assert_eq!(v["attrs"]["dataset_hash"], f.hash);
        assert_eq!(v["attrs"]["note"], "raw logits, no temperature");
        let params: Vec<Vec<Vec<u16>>> = serde_json::from_value(v["params"].clone()).unwrap();
        for (i, row) in params.iter().enumerate() {
            for (vi, p) in row.iter().enumerate() {
                assert_eq!(s.view_spec().decode(p), s.view_params(i, vi));
            }
        }
        for name in s.teachers() {
            let t = &v["teachers"][name];
            assert_eq!(
                t["dtype"],
                if dtype == Dtype::F16 {
                    "float16"
                } else {
                    "float32"
                }
            );
            assert_eq!(t["shape"][0], N);
            let py: Vec<f64> = serde_json::from_value(t["logits"].clone()).unwrap();
            let ours: Vec<f64> = s
                .logits(name, &all_pairs())
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            assert_eq!(py, ours, "{name} {dtype:?}");
        }
    }
}

#[test]
fn verify_passes_then_catches_corruption_missing_shards_and_drift() {
    let f = fixture();
    let c = cfg(Dtype::F16, None);
    let out = f.root.join("v");
    run(&f, &out, &c, &BuildOptions::default()).unwrap();
    let live =
        || -> Vec<Box<dyn Teacher>> { teachers(&f).into_iter().map(|t| t.teacher).collect() };
    let r = verify(&out, &live(), 40, 3, &Silent).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.pairs, 40);
    assert!(
        r.teachers
            .iter()
            .all(|t| t.max_abs_logit > 0.1 && t.max_abs_diff <= t.tolerance)
    );

    // Weights changed under the same checkpoint name: numbers differ.
    let drifted: Vec<Box<dyn Teacher>> = vec![
        Box::new(ConvTeacher::new(
            "cnn",
            1,
            1,
            6,
            CLASSES,
            &f.hash,
            Device::Cpu,
        )),
        Box::new(
            ConvTeacher::new("inv", 99, 1, 6, CLASSES, &f.hash, Device::Cpu)
                .with_checkpoint("test-seed-2"),
        ),
    ];
    let r = verify(&out, &drifted, 40, 3, &Silent).unwrap();
    assert!(!r.ok && r.teachers[0].ok && !r.teachers[1].ok, "{r:?}");
    // A different checkpoint is refused outright.
    let other: Vec<Box<dyn Teacher>> = vec![
        Box::new(ConvTeacher::new(
            "cnn",
            1,
            1,
            6,
            CLASSES,
            &f.hash,
            Device::Cpu,
        )),
        Box::new(ConvTeacher::new(
            "inv",
            5,
            1,
            6,
            CLASSES,
            &f.hash,
            Device::Cpu,
        )),
    ];
    let e = verify(&out, &other, 10, 3, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint") && e.contains("inv"), "{e}");

    // Flip bytes in the middle of a shard: the crc32c check names it.
    let shard = out.join("logits.zarr/teachers/inv/logits/c/1/0/0");
    let good = std::fs::read(&shard).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 3;
    for b in &mut bad[mid..mid + 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&shard, &bad).unwrap();
    let e = verify(&out, &live(), 10, 3, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shard 1 of /teachers/inv/logits is corrupt"),
        "{e}"
    );
    // A missing shard file (zarr would silently read zeros).
    std::fs::remove_file(&shard).unwrap();
    let e = verify(&out, &live(), 10, 3, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shard 1 of /teachers/inv/logits is missing"),
        "{e}"
    );
    std::fs::write(&shard, &good).unwrap();
    assert!(verify(&out, &live(), 10, 3, &Silent).unwrap().ok);

    // Top-k f32: the kept classes are compared at f32 tolerance.
    let out = f.root.join("v-topk");
    run(
        &f,
        &out,
        &cfg(Dtype::F32, Some(2)),
        &BuildOptions::default(),
    )
    .unwrap();
    let r = verify(&out, &live(), 40, 4, &Silent).unwrap();
    assert!(
        r.ok && r.teachers.iter().all(|t| t.tolerance < 1e-2),
        "{r:?}"
    );
    assert!(!verify(&out, &drifted, 40, 4, &Silent).unwrap().ok);
}

#[test]
fn inspect_reports_layout_and_content() {
    let f = fixture();
    let c = cfg(Dtype::F16, None);
    let out = f.root.join("i");
    // "twin" is "cnn" under another name: the two must agree everywhere.
    let ts = vec![
        teacher(&f, "cnn", 1),
        teacher(&f, "twin", 1),
        teacher(&f, "inv", 2),
    ];
    build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let r = inspect(&out).unwrap();
    assert_eq!(
        (r.samples, r.views, r.classes, r.shards),
        (N, 3, CLASSES, 4)
    );
    assert_eq!(r.arrays.len(), 4);
    let a = r
        .arrays
        .iter()
        .find(|a| a.path == "teachers/cnn/logits")
        .unwrap();
    assert_eq!(
        (a.shape.clone(), a.shard.clone(), a.chunk.clone()),
        (vec![50, 3, 4], Some(vec![16, 3, 4]), vec![8, 3, 4])
    );
    assert!(a.codecs.join(" ").contains("zstd"), "{:?}", a.codecs);
    assert!(r.ratio > 0.0 && r.stored_bytes > 0);
    // The size formula: 3 teachers x 4 classes x 2 bytes (f16) + 3 bytes of
    // view parameters per (sample, view); it adds up to the arrays' raw bytes.
    assert_eq!((r.size.row, r.size.view, r.size.folds), (8, 3, 0));
    assert_eq!(r.size.bytes(N as u64, 3, 3), r.raw_bytes);
    for t in &r.teachers {
        assert!(
            t.bytes_per_view > 0.0 && (t.bytes_per_sample - t.bytes_per_view * 3.0).abs() < 1e-9
        );
        let (a0, aa) = (t.acc_view0.unwrap(), t.acc_all_views.unwrap());
        assert!((0.0..=1.0).contains(&a0) && (0.0..=1.0).contains(&aa));
        assert!(t.mean_entropy > 0.0 && t.mean_entropy <= (CLASSES as f64).ln() + 1e-9);
    }
    let twin = r
        .agreement
        .iter()
        .find(|g| g.a == "cnn" && g.b == "twin")
        .unwrap();
    assert_eq!((twin.view0, twin.all_views), (1.0, 1.0));
    assert_eq!(r.agreement.len(), 3);
    // Accuracy by hand for cnn on view 0.
    let s = LogitStore::open(&out).unwrap();
    let ds = Dataset::open(&f.dataset).unwrap();
    let labels = &ds.split("train").unwrap().labels;
    let rows = s
        .logits("cnn", &(0..N).map(|i| (i, 0)).collect::<Vec<_>>())
        .unwrap();
    let hits = rows
        .chunks(CLASSES)
        .zip(labels)
        .filter(|(r, l)| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
                == **l as usize
        })
        .count();
    assert_eq!(r.teachers[0].acc_view0.unwrap(), hits as f64 / N as f64);

    // A twin adds nothing: zero KL, never right alone.
    assert!(
        twin.kl_ab.abs() < 1e-9 && twin.kl_ba.abs() < 1e-9,
        "{twin:?}"
    );
    assert_eq!(
        (twin.only_a_right, twin.only_b_right),
        (Some(0.0), Some(0.0))
    );
    // cnn vs inv by hand over all views: KL both ways and who is right alone.
    let all: Vec<(usize, usize)> = (0..N).flat_map(|i| (0..3).map(move |v| (i, v))).collect();
    let softmax = |r: &[f32]| {
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = r.iter().map(|&x| (x as f64 - m).exp()).sum();
        r.iter()
            .map(|&x| (x as f64 - m).exp() / z)
            .collect::<Vec<f64>>()
    };
    let top = |p: &[f64]| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    let (pa, pb) = (
        s.logits("cnn", &all).unwrap(),
        s.logits("inv", &all).unwrap(),
    );
    let (mut kl, mut only_inv, mut avg_hits) = (0.0, 0usize, 0usize);
    for ((ra, rb), (i, _)) in pa.chunks(CLASSES).zip(pb.chunks(CLASSES)).zip(&all) {
        let (p, q) = (softmax(ra), softmax(rb));
        kl += p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum::<f64>();
        let y = labels[*i] as usize;
        only_inv += (top(&q) == y && top(&p) != y) as usize;
        // Three teachers: cnn, twin (= cnn) and inv.
        let mean: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 2.0 * a + b).collect();
        avg_hits += (top(&mean) == y) as usize;
    }
    let g = r
        .agreement
        .iter()
        .find(|g| g.a == "cnn" && g.b == "inv")
        .unwrap();
    let rows = all.len() as f64;
    assert!(
        (g.kl_ab - kl / rows).abs() < 1e-5,
        "{} vs {}",
        g.kl_ab,
        kl / rows
    );
    assert!(g.kl_ab > 0.0 && g.kl_ba > 0.0);
    assert_eq!(g.only_b_right, Some(only_inv as f64 / rows));
    assert_eq!(r.averaged_acc_all_views, Some(avg_hits as f64 / rows));
}

#[test]
fn bad_inputs_are_refused_with_one_clear_line() {
    let f = fixture();
    let c = cfg(Dtype::F16, None);
    let out = f.root.join("bad");
    let no_manifest = |o: &Path| assert!(!o.join("manifest.json").exists());

    // Teacher trained on another dataset.
    let other = teacher_artifact(&f.root.join("teachers/x"), "x", 3, "0123");
    let ts = vec![TeacherInput {
        dir: other.clone(),
        teacher: Box::new(ConvTeacher::new("x", 3, 1, 6, CLASSES, "0123", Device::Cpu)),
    }];
    let e = build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trained on dataset 0123") && e.contains("teachers/x/manifest.json"),
        "{e}"
    );
    no_manifest(&out);

    // Class count differing from the dataset (and so from the other teacher).
    let ts = vec![
        teacher(&f, "cnn", 1),
        TeacherInput {
            dir: other,
            teacher: Box::new(ConvTeacher::new(
                "x",
                3,
                1,
                6,
                CLASSES + 1,
                &f.hash,
                Device::Cpu,
            )),
        },
    ];
    let e = build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has 5 classes") && e.contains("has 4"), "{e}");
    no_manifest(&out);
    assert!(
        !out.join("logits.zarr").exists(),
        "nothing written on refused input"
    );

    // --shard out of range.
    for s in ["2/2", "1/0", "a/b", "3"] {
        assert!(kd_logit_cache::parse_shard(s).is_err(), "{s}");
    }
    assert_eq!(kd_logit_cache::parse_shard("1/4").unwrap(), (1, 4));
    let e = shard_err(&f, &out, &c, (3, 2));
    assert!(e.contains("--shard 3/2: out of range"), "{e}");

    // Finalize with shards missing.
    run(
        &f,
        &out,
        &c,
        &BuildOptions {
            shard: Some((0, 2)),
            ..Default::default()
        },
    )
    .unwrap();
    let e = finalize(&out).unwrap_err().to_string();
    assert!(
        e.contains("2 of 4 shards are not done (shards 1, 3)"),
        "{e}"
    );
    no_manifest(&out);

    // An --out holding a store of another config: refused, untouched; --force replaces it.
    let other_cfg = CacheConfig {
        views: 2,
        ..c.clone()
    };
    let before = files(&out);
    let e = run(&f, &out, &other_cfg, &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unfinished store of another config")
            && e.contains("views 3 -> 2")
            && e.contains("--force")
            && e.contains("logits.zarr"),
        "{e}"
    );
    assert_eq!(before, files(&out));
    let o = build(
        &f.dataset,
        &teachers(&f),
        &out,
        &other_cfg,
        &BuildOptions::default(),
        &RunOptions::default().force(true),
    )
    .unwrap();
    assert!(
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Wrote(_), 4, 0)
        ),
        "{o:?}"
    );
    assert_eq!(LogitStore::open(&out).unwrap().views(), 2);
    // A *finished* store of another config is just out of date (Make reruns
    // the stage after a teacher changed): rebuilt without --force, but never
    // by a --shard worker, which cannot know what the other workers do.
    let e = shard_err(&f, &out, &c, (0, 2));
    assert!(e.contains("views 2 -> 3"), "{e}");
    assert!(out.join("manifest.json").exists());
    let o = run(&f, &out, &c, &BuildOptions::default()).unwrap();
    assert!(
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Wrote(_), 4, 0)
        ),
        "{o:?}"
    );
    assert_eq!(LogitStore::open(&out).unwrap().views(), 3);
    // --force with --shard is refused (it would delete the other workers' shards).
    let e = build(
        &f.dataset,
        &teachers(&f),
        &out,
        &c,
        &BuildOptions {
            shard: Some((0, 2)),
            ..Default::default()
        },
        &RunOptions::default().force(true),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            kd_logit_cache::CacheError::Shard(kd_logit_cache::ShardError::Force)
        ),
        "{e}"
    );
    // Bad options.
    assert!(
        run(
            &f,
            &out,
            &CacheConfig {
                views: 0,
                ..c.clone()
            },
            &BuildOptions::default()
        )
        .is_err()
    );
    let e = run(
        &f,
        &out,
        &cfg(Dtype::F16, Some(9)),
        &BuildOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("setting top_k = 9"), "{e}");
}
