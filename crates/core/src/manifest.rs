//! Artifact manifests: the only thing a later stage trusts.
//!
//! A stage writes everything else first and `manifest.json` last, atomically
//! (temporary file, fsync, rename), so a directory without one is incomplete.
//! Inputs are pinned by the blake3 hash of their manifest file; a changed
//! input is refused with both hashes named.
//!
//! An input's path is recorded as typed (often relative to the directory
//! `make` ran in) and, by [`Manifest::write`], relative to the artifact too;
//! readers find it with [`InputRef::locate`], so an artifact read from
//! another working directory, or a run directory copied whole, still finds
//! its inputs (and manifests written before `rel` existed are searched for
//! under the artifact's parent directories).
//!
//! `--out` is guarded by [`claim_out_dir`], the common entry of every stage
//! (through [`crate::stage::StageRun::claim`]): a
//! directory holding another stage's artifact, or files that are no kd
//! artifact, is refused unless `--force`, and then its contents are replaced
//! whole. An unfinished artifact says which stage it belongs to with a
//! marker file ([`STAGE_MARKER`]) that the manifest replaces.

use crate::error::{CoreError, IoContext, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const MANIFEST: &str = "manifest.json";

/// An input artifact, pinned by the hash of its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// What the input is to this stage (`dataset`, `teacher:cnn`, ...).
    pub role: String,
    pub path: PathBuf,
    pub stage: String,
    pub manifest_hash: String,
    /// `path` relative to the recording artifact's directory (absent in
    /// manifests written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel: Option<PathBuf>,
}

/// A file or directory the stage produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRef {
    pub path: String,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub tool_version: String,
    pub git_rev: String,
    /// The resolved configuration: equal config + equal inputs = nothing to do.
    pub config: Value,
    #[serde(default)]
    pub seeds: BTreeMap<String, u64>,
    #[serde(default)]
    pub inputs: Vec<InputRef>,
    #[serde(default)]
    pub outputs: Vec<OutputRef>,
    #[serde(default)]
    pub metrics: Value,
    pub created_unix: u64,
}

pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST)
}

/// blake3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(path).at(path)?;
    std::io::copy(&mut f, &mut h).at(path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Total size in bytes of a file or of every file under a directory.
pub fn disk_bytes(path: &Path) -> Result<u64> {
    let md = fs::metadata(path).at(path)?;
    if md.is_file() {
        return Ok(md.len());
    }
    let mut total = 0;
    for entry in fs::read_dir(path).at(path)? {
        total += disk_bytes(&entry.at(path)?.path())?;
    }
    Ok(total)
}

/// The hash identifying an artifact: that of its manifest file.
pub fn manifest_hash(dir: &Path) -> Result<String> {
    let p = manifest_path(dir);
    if !p.is_file() {
        return Err(CoreError::ManifestMissing { dir: dir.into() });
    }
    hash_file(&p)
}

impl InputRef {
    /// Pin the artifact in `dir`, which must be a finished `stage` artifact.
    pub fn of(role: &str, dir: &Path, stage: &str) -> Result<InputRef> {
        Manifest::read_stage(dir, stage)?;
        Ok(InputRef {
            role: role.into(),
            path: dir.into(),
            stage: stage.into(),
            manifest_hash: manifest_hash(dir)?,
            rel: None,
        })
    }

    /// Where this input is now, for the artifact in `artifact` that recorded
    /// it: relative to the artifact (`rel`), as recorded (absolute, or
    /// relative to the working directory), or, for a relative path recorded
    /// without `rel`, under one of the artifact's parent directories (the
    /// directory the recording command ran in). A candidate whose manifest
    /// has the recorded hash wins; else the first that holds a manifest, so
    /// that [`InputRef::verify_at`] names the changed input.
    pub fn locate(&self, artifact: &Path) -> Result<PathBuf> {
        let mut candidates = vec![];
        if let Some(rel) = &self.rel {
            candidates.push(artifact.join(rel));
        }
        candidates.push(self.path.clone());
        let searched_parents = self.path.is_relative() && self.rel.is_none();
        if searched_parents && let Ok(abs) = absolute_clean(artifact) {
            candidates.extend(abs.ancestors().map(|a| a.join(&self.path)));
        }
        let present: Vec<&PathBuf> = candidates
            .iter()
            .filter(|c| manifest_path(c).is_file())
            .collect();
        if let Some(hit) = present
            .iter()
            .find(|c| manifest_hash(c).is_ok_and(|h| h == self.manifest_hash))
        {
            return Ok((*hit).clone());
        }
        if let Some(first) = present.first() {
            return Ok((*first).clone());
        }
        let mut looked: Vec<String> = vec![];
        if let Some(rel) = &self.rel {
            looked.push(artifact.join(rel).display().to_string());
        }
        looked.push(format!(
            "{} from the working directory",
            self.path.display()
        ));
        if searched_parents {
            looked.push(format!("under each parent of {}", artifact.display()));
        }
        Err(CoreError::InputMissing {
            manifest: manifest_path(artifact),
            role: self.role.clone(),
            recorded: self.path.clone(),
            looked: looked.join(", "),
        })
    }

    /// [`InputRef::locate`], then check it is still the artifact that was
    /// recorded; returns where it is.
    pub fn verify_at(&self, artifact: &Path) -> Result<PathBuf> {
        let found = self.locate(artifact)?;
        let actual = manifest_hash(&found)?;
        if actual != self.manifest_hash {
            return Err(CoreError::HashMismatch {
                path: manifest_path(&found),
                recorded: self.manifest_hash.clone(),
                actual,
            });
        }
        Ok(found)
    }

    /// Check the input is still the artifact that was recorded.
    pub fn verify(&self) -> Result<()> {
        let actual = manifest_hash(&self.path)?;
        if actual != self.manifest_hash {
            return Err(CoreError::HashMismatch {
                path: manifest_path(&self.path),
                recorded: self.manifest_hash.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl OutputRef {
    /// Describe `rel` (relative to `dir`); hash it if it is a file and `hash`.
    pub fn of(dir: &Path, rel: &str, hash: bool) -> Result<OutputRef> {
        let p = dir.join(rel);
        Ok(OutputRef {
            path: rel.into(),
            bytes: disk_bytes(&p)?,
            blake3: if hash && p.is_file() {
                Some(hash_file(&p)?)
            } else {
                None
            },
        })
    }
}

impl Manifest {
    pub fn new(stage: &str, config: Value) -> Manifest {
        Manifest {
            stage: stage.into(),
            tool_version: crate::TOOL_VERSION.into(),
            git_rev: crate::GIT_REV.into(),
            config,
            seeds: BTreeMap::new(),
            inputs: vec![],
            outputs: vec![],
            metrics: Value::Null,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    pub fn read(dir: &Path) -> Result<Manifest> {
        let p = manifest_path(dir);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CoreError::ManifestMissing { dir: dir.into() });
            }
            Err(source) => return Err(CoreError::Io { path: p, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| CoreError::Json { path: p, source })
    }

    /// Input `role` (`dataset`, `logits`, ...) of the artifact in `dir`,
    /// refusing a manifest that records none.
    pub fn input(&self, dir: &Path, role: &str) -> Result<&InputRef> {
        self.inputs
            .iter()
            .find(|i| i.role == role)
            .ok_or_else(|| CoreError::ManifestIncomplete {
                path: manifest_path(dir),
                msg: format!("records no '{role}' input"),
            })
    }

    /// The manifest hash of input `role` (see [`Manifest::input`]).
    pub fn input_hash(&self, dir: &Path, role: &str) -> Result<String> {
        Ok(self.input(dir, role)?.manifest_hash.clone())
    }

    /// The blake3 of output `rel` of the artifact in `dir`, refusing a
    /// missing file or one whose hash is not the one recorded here: what a
    /// stage loading a finished artifact's weights must check first.
    pub fn checked_output(&self, dir: &Path, rel: &str) -> Result<String> {
        let path = dir.join(rel);
        if !path.is_file() {
            return Err(CoreError::OutputMissing { path });
        }
        let actual = hash_file(&path)?;
        if let Some(recorded) = self
            .outputs
            .iter()
            .find(|o| o.path == rel)
            .and_then(|o| o.blake3.clone())
            && recorded != actual
        {
            return Err(CoreError::HashMismatch {
                path,
                recorded,
                actual,
            });
        }
        Ok(actual)
    }

    /// Read `dir`'s manifest, insisting on its stage.
    pub fn read_stage(dir: &Path, stage: &str) -> Result<Manifest> {
        let m = Manifest::read(dir)?;
        if m.stage != stage {
            return Err(CoreError::WrongStage {
                dir: dir.into(),
                expected: stage.into(),
                found: m.stage,
            });
        }
        Ok(m)
    }

    /// Write atomically: everything the manifest describes must already be on
    /// disk. Each input's path relative to `dir` is recorded too (`rel`), and
    /// the unfinished-artifact marker is removed: the manifest replaces it.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = manifest_path(dir);
        let tmp = dir.join(".manifest.json.tmp");
        let mut m = self.clone();
        for i in &mut m.inputs {
            if i.rel.is_none() {
                i.rel = relative_to(&i.path, dir);
            }
        }
        let text = serde_json::to_string_pretty(&m).expect("manifest serialises");
        {
            let mut f = fs::File::create(&tmp).at(&tmp)?;
            f.write_all(text.as_bytes()).at(&tmp)?;
            f.write_all(b"\n").at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &p).at(&p)?;
        remove_file_if_exists(&dir.join(STAGE_MARKER))?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Same stage, config and inputs as this manifest? Then a stage has nothing to do.
    pub fn matches(&self, stage: &str, config: &Value, inputs: &[InputRef]) -> bool {
        let key = |v: &[InputRef]| -> Vec<(String, String)> {
            v.iter()
                .map(|i| (i.role.clone(), i.manifest_hash.clone()))
                .collect()
        };
        self.stage == stage && &self.config == config && key(&self.inputs) == key(inputs)
    }
}

/// Names a directory as `stage`'s unfinished artifact: written when a stage
/// starts in a directory, removed by [`Manifest::write`]. It lets a killed
/// run resume in its own directory while any other directory without a
/// manifest is refused.
pub const STAGE_MARKER: &str = ".kd-stage";

/// What `--out` holds before a stage writes into it.
enum Occupant {
    /// Nothing (or no directory yet).
    Empty,
    Finished(Box<Manifest>),
    /// An unfinished artifact of this stage (marker).
    Unfinished(String),
    /// Something else, described for the error message.
    Foreign(String),
}

/// Entries a stage itself may leave next to its marker or manifest.
fn is_own_bookkeeping(name: &str) -> bool {
    name.starts_with(STAGE_MARKER) || name == ".manifest.json.tmp"
}

/// Work in progress left by a version of kd that wrote no marker: a
/// training checkpoint (`kd_core::fit`; teacher and student), a logit
/// store's shard markers, a dataset store or a report's files. The stage's
/// own checks (the checkpoint's identity, the store's key) still refuse a
/// mismatch, and the data and report stages rewrite their files whole.
fn legacy_unfinished(stage: &str, names: &[String]) -> bool {
    let has = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    match stage {
        "teacher" | "student" => has(&|n| n == "ckpt" || n == "ckpt.old" || n.starts_with("fold-")),
        "cache" => has(&|n| n == ".shards"),
        "data" => has(&|n| n == "dataset.zarr"),
        "report" => has(&|n| matches!(n, "report.md" | "accuracy.png" | "loss.png")),
        _ => false,
    }
}

fn occupant(dir: &Path, stage: &str) -> Result<Occupant> {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Occupant::Empty),
        Err(source) => {
            if dir.exists() && !dir.is_dir() {
                return Ok(Occupant::Foreign("a file, not a directory".into()));
            }
            return Err(CoreError::Io {
                path: dir.into(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.iter().any(|n| n == MANIFEST) {
        return Ok(match Manifest::read(dir) {
            Ok(m) => Occupant::Finished(Box::new(m)),
            Err(_) => Occupant::Foreign("a manifest.json this tool cannot read".into()),
        });
    }
    if let Ok(text) = fs::read_to_string(dir.join(STAGE_MARKER)) {
        return Ok(Occupant::Unfinished(text.trim().to_string()));
    }
    names.retain(|n| !is_own_bookkeeping(n));
    if names.is_empty() || legacy_unfinished(stage, &names) {
        return Ok(Occupant::Empty);
    }
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    Ok(Occupant::Foreign(format!(
        "files that are not a kd artifact ({}{})",
        shown.join(", "),
        if names.len() > 4 { ", ..." } else { "" }
    )))
}

fn remove_file_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CoreError::Io {
            path: p.into(),
            source,
        }),
    }
}

/// Canonical when the path exists, else absolute: for comparing locations.
fn absolute_clean(p: &Path) -> std::io::Result<PathBuf> {
    fs::canonicalize(p).or_else(|_| std::path::absolute(p))
}

/// `target` relative to `base` (both made canonical), if both exist.
fn relative_to(target: &Path, base: &Path) -> Option<PathBuf> {
    let (t, b) = (fs::canonicalize(target).ok()?, fs::canonicalize(base).ok()?);
    let (tc, bc): (Vec<_>, Vec<_>) = (t.components().collect(), b.components().collect());
    let common = tc.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..bc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c);
    }
    Some(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    })
}

/// Empty `dir` for `--force`, refusing where that would destroy more than
/// one artifact's worth of work: the file system root, the home directory,
/// the working directory or one of its parents, or a directory with other
/// artifacts below it (a run directory).
fn clear_for_force(dir: &Path, stage: &str) -> Result<()> {
    let refuse = |why: String| {
        Err(CoreError::OutOccupied {
            dir: dir.into(),
            msg: format!(
                "{why}; not replacing it with a '{stage}' artifact even with --force: choose another --out"
            ),
        })
    };
    let here = absolute_clean(dir).at(dir)?;
    let home = std::env::var_os("HOME").and_then(|h| fs::canonicalize(h).ok());
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| fs::canonicalize(c).ok());
    if here.parent().is_none() || home.as_deref() == Some(here.as_path()) {
        return refuse("is the root or home directory".into());
    }
    if cwd.is_some_and(|c| c.starts_with(&here)) {
        return refuse("is the working directory or one of its parents".into());
    }
    let mut nested = vec![];
    find_artifacts(dir, 3, &mut nested);
    if !nested.is_empty() {
        let shown: Vec<String> = nested
            .iter()
            .take(3)
            .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
            .collect();
        return refuse(format!(
            "holds other artifacts ({}{})",
            shown.join(", "),
            if nested.len() > 3 { ", ..." } else { "" }
        ));
    }
    tracing::warn!(dir = %dir.display(), "--force: replacing the directory's contents");
    for e in fs::read_dir(dir).at(dir)?.flatten() {
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        r.at(&p)?;
    }
    Ok(())
}

/// Manifests in sub-directories of `dir`, down to `depth` levels.
fn find_artifacts(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let p = e.path();
            if manifest_path(&p).is_file() {
                out.push(manifest_path(&p));
            }
            find_artifacts(&p, depth - 1, out);
        }
    }
}

fn write_marker(dir: &Path, stage: &str) -> Result<()> {
    let m = dir.join(STAGE_MARKER);
    let tmp = dir.join(format!("{STAGE_MARKER}.tmp-{}", std::process::id()));
    fs::write(&tmp, format!("{stage}\n")).at(&tmp)?;
    fs::rename(&tmp, &m).at(&m)
}

/// What [`claim_out_dir`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A finished artifact of the same stage, config and inputs: nothing to do.
    UpToDate,
    /// The directory is this stage's now, marked unfinished, without a manifest.
    Claimed,
}

/// Claim `dir` for a run of `stage`, or find it up to date.
///
/// Up to date when `dir` holds a finished artifact of the same stage, config
/// and inputs and `force` is off; its manifest's mtime is then refreshed so
/// Make sees the target as up to date. Otherwise the old manifest, if any,
/// is removed first, so a crash mid-run cannot leave a directory that looks
/// finished, and the directory is marked as this stage's unfinished
/// artifact. (It acts, so it is not a question: the stage lifecycle in
/// [`crate::stage`] calls it.)
///
/// A directory holding another stage's artifact (finished or not), or files
/// that are no kd artifact, is refused unless `force`; with `force` its
/// contents are removed first (never a directory with other artifacts
/// below it, the working directory or its parents).
pub fn claim_out_dir(
    dir: &Path,
    stage: &str,
    config: &Value,
    inputs: &[InputRef],
    force: bool,
) -> Result<Claim> {
    let p = manifest_path(dir);
    let occupied = |what: String| CoreError::OutOccupied {
        dir: dir.into(),
        msg: format!(
            "holds {what}; refusing to write a '{stage}' artifact there (--force replaces the directory's contents, or choose another --out)"
        ),
    };
    match occupant(dir, stage)? {
        Occupant::Finished(m) if m.stage == stage => {
            if !force && m.matches(stage, config, inputs) {
                let f = fs::File::options().append(true).open(&p).at(&p)?;
                f.set_modified(SystemTime::now()).at(&p)?;
                tracing::info!(dir = %dir.display(), "up to date, nothing to do (use --force to rerun)");
                return Ok(Claim::UpToDate);
            }
        }
        Occupant::Unfinished(s) if s == stage => {}
        Occupant::Empty => {}
        Occupant::Finished(m) if !force => {
            return Err(occupied(format!("a finished '{}' artifact", m.stage)));
        }
        Occupant::Unfinished(s) if !force => {
            return Err(occupied(format!("an unfinished '{s}' artifact")));
        }
        Occupant::Foreign(what) if !force => return Err(occupied(what)),
        Occupant::Finished(_) | Occupant::Unfinished(_) | Occupant::Foreign(_) => {
            clear_for_force(dir, stage)?;
        }
    }
    fs::create_dir_all(dir).at(dir)?;
    write_marker(dir, stage)?;
    remove_file_if_exists(&p)?;
    Ok(Claim::Claimed)
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).expect("value serialises");
    fs::write(&tmp, text + "\n").at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

/// Read JSON from `path` into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).at(path)?;
    serde_json::from_slice(&bytes).map_err(|source| CoreError::Json {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    /// Whether the stage has to run: the claim as a yes/no.
    fn claims(
        dir: &Path,
        stage: &str,
        config: &Value,
        inputs: &[InputRef],
        force: bool,
    ) -> Result<bool> {
        claim_out_dir(dir, stage, config, inputs, force).map(|c| c == Claim::Claimed)
    }

    use super::*;
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
}
