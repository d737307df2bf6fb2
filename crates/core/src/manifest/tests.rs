/// Whether the stage has to run: the claim as a yes/no.
fn claims(
    dir: &Path,
    stage: &str,
    config: &Value,
    inputs: &[InputRef],
    force: bool,
) -> Result<bool> {
    claim_out_dir(dir, stage, config, inputs, work_files(stage), force).map(|c| c == Claim::Claimed)
}

use super::*;

/// What the tests' stages leave unfinished, as the real stages name theirs.
fn work_files(stage: &str) -> &'static [&'static str] {
    match stage {
        "teacher" | "student" => &["ckpt", "ckpt.old", "fold-*"],
        "cache" => &[".shards"],
        _ => &[],
    }
}
use serde_json::json;

#[test]
fn write_read_and_pin_inputs() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    assert!(claims(&a, "data", &json!({"x": 1}), &[], false).unwrap());
    let mut m = Manifest::new("data", json!({"x": 1}));
    m.metrics = json!({"n": 3});
    m.write(&a).unwrap();
    assert_eq!(Manifest::read(&a).unwrap(), m);
    assert!(!claims(&a, "data", &json!({"x": 1}), &[], false).unwrap());
    assert!(claims(&a, "data", &json!({"x": 2}), &[], false).unwrap());
    // claim_out_dir removed the stale manifest: the directory is now incomplete.
    assert!(matches!(
        Manifest::read(&a),
        Err(CoreError::ManifestMissing { .. })
    ));
    m.write(&a).unwrap();
    let pin = InputRef::of("dataset", &a, "data").unwrap();
    pin.verify().unwrap();
    assert!(matches!(
        InputRef::of("dataset", &a, "teacher"),
        Err(CoreError::WrongStage { .. })
    ));
    let mut m2 = m.clone();
    m2.created_unix += 1;
    m2.write(&a).unwrap();
    let err = pin.verify().unwrap_err();
    assert!(matches!(err, CoreError::HashMismatch { .. }));
    assert!(err.to_string().contains("manifest.json"), "{err}");
}

#[test]
fn missing_manifest_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let e = InputRef::of("dataset", t.path(), "data").unwrap_err();
    assert!(e.to_string().contains("no manifest.json"), "{e}");
}

fn finished(dir: &Path, stage: &str) {
    fs::create_dir_all(dir).unwrap();
    Manifest::new(stage, json!({})).write(dir).unwrap();
}

#[test]
fn out_holding_another_stage_or_other_files_is_refused_unless_force() {
    let t = tempfile::tempdir().unwrap();
    let teacher = t.path().join("teacher");
    finished(&teacher, "teacher");
    fs::write(teacher.join("weights.safetensors"), b"w").unwrap();
    let e = claims(&teacher, "cache", &json!({}), &[], false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, CoreError::OutOccupied { .. }), "{msg}");
    assert!(
        msg.contains("finished 'teacher' artifact") && msg.contains("teacher"),
        "{msg}"
    );
    assert!(teacher.join(MANIFEST).is_file(), "refusal leaves it alone");
    // --force replaces it whole.
    assert!(claims(&teacher, "cache", &json!({}), &[], true).unwrap());
    let left: Vec<_> = fs::read_dir(&teacher)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from(STAGE_MARKER)]);

    let notes = t.path().join("notes");
    fs::create_dir_all(&notes).unwrap();
    fs::write(notes.join("todo.txt"), b"x").unwrap();
    let msg = claims(&notes, "student", &json!({}), &[], false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a kd artifact (todo.txt)"), "{msg}");
    assert!(claims(&notes, "student", &json!({}), &[], true).unwrap());
    assert!(!notes.join("todo.txt").exists());
}

#[test]
fn unfinished_artifacts_resume_only_in_their_own_stage() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    assert!(claims(&a, "teacher", &json!({}), &[], false).unwrap());
    fs::create_dir_all(a.join("ckpt")).unwrap();
    // Killed and started again: the marker says whose it is.
    assert!(claims(&a, "teacher", &json!({}), &[], false).unwrap());
    let msg = claims(&a, "student", &json!({}), &[], false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unfinished 'teacher' artifact"), "{msg}");
    Manifest::new("teacher", json!({})).write(&a).unwrap();
    assert!(
        !a.join(STAGE_MARKER).exists(),
        "the manifest replaces the marker"
    );

    // A run started by a version that wrote no marker still resumes.
    let old = t.path().join("old");
    fs::create_dir_all(old.join("ckpt")).unwrap();
    assert!(claims(&old, "student", &json!({}), &[], false).unwrap());
    let old_cache = t.path().join("old-cache");
    fs::create_dir_all(old_cache.join(".shards")).unwrap();
    fs::create_dir_all(old_cache.join("logits.zarr")).unwrap();
    assert!(claims(&old_cache, "cache", &json!({}), &[], false).unwrap());
    fs::remove_file(old_cache.join(STAGE_MARKER)).unwrap();
    assert!(claims(&old_cache, "student", &json!({}), &[], false).is_err());
}

#[test]
fn force_never_clears_a_directory_with_artifacts_below_it() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("run");
    finished(&run.join("teachers").join("cnn"), "teacher");
    let msg = claims(&run, "report", &json!({}), &[], true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("holds other artifacts") && msg.contains("even with --force"),
        "{msg}"
    );
    assert!(run.join("teachers/cnn").join(MANIFEST).is_file());
}

#[test]
fn inputs_are_found_relative_to_the_artifact() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("run");
    let ds = run.join("dataset");
    finished(&ds, "data");
    let cache = run.join("logits");
    fs::create_dir_all(&cache).unwrap();
    let mut m = Manifest::new("cache", json!({}));
    m.inputs.push(InputRef::of("dataset", &ds, "data").unwrap());
    m.write(&cache).unwrap();
    let rec = Manifest::read(&cache).unwrap();
    assert_eq!(rec.inputs[0].rel.as_deref(), Some(Path::new("../dataset")));
    assert_eq!(rec.inputs[0].path, ds, "the typed path is kept");

    // The whole run copied elsewhere (the recorded path is the original).
    let copy = t.path().join("copy");
    fs::create_dir_all(copy.join("dataset")).unwrap();
    fs::create_dir_all(copy.join("logits")).unwrap();
    fs::copy(ds.join(MANIFEST), copy.join("dataset").join(MANIFEST)).unwrap();
    assert_eq!(
        rec.inputs[0].verify_at(&copy.join("logits")).unwrap(),
        copy.join("logits").join("../dataset")
    );

    // A manifest from before `rel`: a relative path typed in the
    // directory above the run is found from any working directory.
    let mut old = rec.inputs[0].clone();
    old.rel = None;
    old.path = PathBuf::from("run/dataset");
    let found = old.verify_at(&cache).unwrap();
    assert_eq!(
        fs::canonicalize(found).unwrap(),
        fs::canonicalize(&ds).unwrap()
    );

    // Gone: one error naming the artifact, the role and the recorded path.
    fs::remove_dir_all(copy.join("dataset")).unwrap();
    fs::remove_dir_all(&ds).unwrap();
    let e = rec.inputs[0].locate(&copy.join("logits")).unwrap_err();
    assert!(matches!(e, CoreError::InputMissing { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("copy/logits/manifest.json")
            && msg.contains("input 'dataset'")
            && msg.contains("is not there"),
        "{msg}"
    );
}
