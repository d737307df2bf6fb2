//! A damaged, misplaced or contended store: a deleted shard file
//! or inner chunk is refused when the store is opened instead of reading as
//! zeros; a second build into the same directory finds the lock taken; an
//! `--out` holding another artifact is refused unless `--force`; a store
//! copied with its run finds its dataset and teachers, and says so when
//! they are gone.

use kd_core::Outcome;
use kd_core::RunOptions;
use kd_core::Silent;
use kd_core::manifest::{MANIFEST, Manifest, manifest_hash};
use kd_core::zarr;
use kd_logit_cache::testing::{ConvTeacher, synthetic_dataset, teacher_artifact};
use kd_logit_cache::{
    BuildOptions, Built, CacheConfig, Dtype, LogitStore, TeacherInput, build, finalize, inspect,
    verify,
};
use std::path::{Path, PathBuf};
use tch::Device;

const N: usize = 50;
const CLASSES: usize = 4;

/// A run directory `root/run` with `dataset/` and `teachers/{cnn,inv}`.
struct Run {
    _tmp: tempfile::TempDir,
    run: PathBuf,
    hash: String,
}

fn run_dir() -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let ds = synthetic_dataset(&run.join("dataset"), N, CLASSES, [1, 8, 8], 7);
    let hash = manifest_hash(&ds).unwrap();
    for (name, seed) in [("cnn", 1), ("inv", 2)] {
        teacher_artifact(&run.join("teachers").join(name), name, seed, &hash);
    }
    Run {
        _tmp: tmp,
        run,
        hash,
    }
}

/// The run's teachers, loaded from `run` (which may be a copy).
fn teachers(run: &Path, hash: &str) -> Vec<TeacherInput> {
    [("cnn", 1), ("inv", 2)]
        .into_iter()
        .map(|(name, seed)| TeacherInput {
            dir: run.join("teachers").join(name),
            teacher: Box::new(ConvTeacher::new(
                name,
                seed,
                1,
                6,
                CLASSES,
                hash,
                Device::Cpu,
            )),
        })
        .collect()
}

fn live(r: &Run) -> Vec<Box<dyn kd_core::Teacher>> {
    teachers(&r.run, &r.hash)
        .into_iter()
        .map(|t| t.teacher)
        .collect()
}

fn cfg(top_k: Option<usize>) -> CacheConfig {
    CacheConfig {
        views: 3,
        dtype: Dtype::F16,
        top_k,
        seed: 11,
        shard_samples: 16,
        chunk_samples: 8,
        batch_size: 20,
        device: "cpu".into(),
        ..CacheConfig::default()
    }
}

fn build_into(
    r: &Run,
    out: &Path,
    c: &CacheConfig,
    opts: &BuildOptions,
) -> kd_logit_cache::Result<Built> {
    build_run(r, out, c, opts, &RunOptions::default())
}

fn build_run(
    r: &Run,
    out: &Path,
    c: &CacheConfig,
    opts: &BuildOptions,
    run: &RunOptions,
) -> kd_logit_cache::Result<Built> {
    build(
        &r.run.join("dataset"),
        &teachers(&r.run, &r.hash),
        out,
        c,
        opts,
        run,
    )
}

fn open_err(dir: &Path) -> String {
    LogitStore::open(dir).unwrap_err().to_string()
}

#[test]
fn missing_shard_files_and_inner_chunks_are_refused_on_open() {
    let r = run_dir();
    let out = r.run.join("logits");
    build_into(&r, &out, &cfg(None), &BuildOptions::default()).unwrap();
    let store = out.join("logits.zarr");
    let before = inspect(&out).unwrap();

    for (array, shard, rows) in [
        ("teachers/inv/logits", "c/1/0/0", "rows 16..32"),
        ("views/params", "c/3/0/0", "rows 48..50"),
    ] {
        let file = store.join(array).join(shard);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        for e in [open_err(&out), inspect(&out).unwrap_err().to_string()] {
            assert!(
                e.contains(&file.display().to_string())
                    && e.contains(&format!("of array /{array} ({rows})"))
                    && e.contains("would read as fill values"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        let e = verify(&out, &live(&r), 8, 0, &Silent)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("of /{array} is missing")), "{e}");
        std::fs::write(&file, bytes).unwrap();
    }
    let after = inspect(&out).unwrap();
    assert_eq!(
        before.teachers[0].acc_all_views,
        after.teachers[0].acc_all_views
    );

    // Rows 0..8 of a teacher become zeros: the codec leaves that inner chunk
    // out of the shard, which logits never legitimately are.
    let zstore = zarr::open_store(&store).unwrap();
    let a = zarr::open_array(&zstore, "/teachers/cnn/logits").unwrap();
    zarr::write_block(
        &a,
        &[0, 0, 0],
        &[8, 3, CLASSES as u64],
        &[half::f16::ZERO; 8 * 3 * CLASSES],
    )
    .unwrap();
    let e = open_err(&out);
    assert!(
        e.contains("inner chunk [0, 0, 0] of array /teachers/cnn/logits (rows 0..8, absent from its shard's index)"),
        "{e}"
    );
}

#[test]
fn all_zero_inner_chunks_of_index_arrays_still_open() {
    // Top-1 indices of class 0 over a whole inner chunk are data, not damage.
    let r = run_dir();
    let out = r.run.join("logits-top1");
    build_into(&r, &out, &cfg(Some(1)), &BuildOptions::default()).unwrap();
    let zstore = zarr::open_store(&out.join("logits.zarr")).unwrap();
    let a = zarr::open_array(&zstore, "/teachers/cnn/indices").unwrap();
    zarr::write_block(&a, &[0, 0, 0], &[8, 3, 1], &[0u16; 24]).unwrap();
    let s = LogitStore::open(&out).unwrap();
    let rows = s.logits("cnn", &[(0, 0), (7, 2)]).unwrap();
    assert!(
        rows[0] > -1e4 && rows[CLASSES] > -1e4,
        "class 0 kept: {rows:?}"
    );
}

#[test]
fn a_second_build_into_the_same_directory_finds_the_lock_taken() {
    let r = run_dir();
    let out = r.run.join("logits");
    let c = cfg(None);
    let stop = BuildOptions {
        stop_after_shards: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        build_into(&r, &out, &c, &stop).unwrap().outcome,
        Outcome::Stopped { done: 1 }
    ));
    // Another process building into `out` holds the lock.
    let lock = out.join(".build.lock");
    let held = std::fs::File::open(&lock).unwrap();
    held.lock().unwrap();
    for (opts, what) in [
        (BuildOptions::default(), "another `kd cache build`"),
        (
            BuildOptions {
                shard: Some((1, 2)),
                ..Default::default()
            },
            "an unsharded `kd cache build`",
        ),
    ] {
        let e = build_into(&r, &out, &c, &opts).unwrap_err().to_string();
        assert!(
            e.contains(&lock.display().to_string()) && e.contains(what),
            "{e}"
        );
    }
    assert!(finalize(&out).is_err());
    assert!(!out.join(MANIFEST).exists());
    drop(held);
    assert!({
        let o = build_into(&r, &out, &c, &BuildOptions::default()).unwrap();
        matches!(
            (&o.outcome, o.written, o.skipped),
            (Outcome::Wrote(_), 3, 1)
        )
    });
}

#[test]
fn out_holding_another_artifact_is_refused_unless_force() {
    let r = run_dir();
    let c = cfg(None);
    let teacher = r.run.join("teachers/cnn");
    let manifest = std::fs::read(teacher.join(MANIFEST)).unwrap();
    let e = build_into(&r, &teacher, &c, &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds a finished 'teacher' artifact") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read(teacher.join(MANIFEST)).unwrap(), manifest);
    assert!(!teacher.join("logits.zarr").exists());

    // --force replaces a directory of other files whole.
    let junk = r.run.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), "mine").unwrap();
    let e = build_into(&r, &junk, &c, &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a kd artifact (notes.txt)"), "{e}");
    let force = RunOptions::default().force(true);
    build_run(&r, &junk, &c, &BuildOptions::default(), &force).unwrap();
    assert!(!junk.join("notes.txt").exists());
    assert_eq!(Manifest::read(&junk).unwrap().stage, "cache");
    // Never a directory with artifacts below it, even with --force.
    let e = build_run(&r, &r.run, &c, &BuildOptions::default(), &force)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds other artifacts"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

#[test]
fn a_store_copied_with_its_run_finds_its_inputs_and_says_when_they_are_gone() {
    let r = run_dir();
    let out = r.run.join("logits");
    build_into(&r, &out, &cfg(None), &BuildOptions::default()).unwrap();
    let before = inspect(&out).unwrap();
    assert!(before.teachers[0].acc_view0.is_some() && before.no_labels.is_none());

    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("run");
    copy_dir(&r.run, &copy);
    std::fs::remove_dir_all(&r.run).unwrap();
    let store = LogitStore::open(&copy.join("logits")).unwrap();
    let ds = store
        .meta()
        .inputs
        .iter()
        .find(|i| i.role == "dataset")
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(&ds.path).unwrap(),
        std::fs::canonicalize(copy.join("dataset")).unwrap()
    );
    let moved = inspect(&copy.join("logits")).unwrap();
    assert_eq!(moved.teachers[0].acc_view0, before.teachers[0].acc_view0);
    let copied = Run {
        _tmp: elsewhere,
        run: copy.clone(),
        hash: r.hash.clone(),
    };
    assert!(
        verify(&copy.join("logits"), &live(&copied), 8, 0, &Silent)
            .unwrap()
            .ok
    );

    // The dataset gone: inspect still reports the store, and says why there
    // are no accuracies; verify cannot work without it.
    std::fs::remove_dir_all(copy.join("dataset")).unwrap();
    let bare = inspect(&copy.join("logits")).unwrap();
    assert!(bare.teachers[0].acc_view0.is_none());
    let why = bare.no_labels.unwrap();
    assert!(
        why.contains("input 'dataset'") && why.contains("is not there"),
        "{why}"
    );
    let e = verify(&copy.join("logits"), &live(&copied), 8, 0, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input 'dataset'") && e.contains("is not there"),
        "{e}"
    );
}
