//! Artifact manifests: the only thing a later stage trusts.
//!
//! A stage writes everything else first and `manifest.json` last, atomically
//! (temporary file, fsync, rename), so a directory without one is incomplete.
//! Inputs are pinned by the blake3 hash of their manifest file; a changed
//! input is refused with both hashes named.

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
        })
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

    /// Write atomically: everything the manifest describes must already be on disk.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let p = manifest_path(dir);
        let tmp = dir.join(".manifest.json.tmp");
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        {
            let mut f = fs::File::create(&tmp).at(&tmp)?;
            f.write_all(text.as_bytes()).at(&tmp)?;
            f.write_all(b"\n").at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &p).at(&p)?;
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

/// Decide whether a stage writing into `dir` must run.
///
/// Returns `false` (nothing to do) when `dir` holds a finished artifact of the
/// same stage, config and inputs and `force` is off; its manifest's mtime is
/// then refreshed so Make sees the target as up to date. Otherwise the old
/// manifest, if any, is removed first, so a crash mid-run cannot leave a
/// directory that looks finished.
pub fn needs_run(
    dir: &Path,
    stage: &str,
    config: &Value,
    inputs: &[InputRef],
    force: bool,
) -> Result<bool> {
    let p = manifest_path(dir);
    if !force {
        if let Ok(m) = Manifest::read(dir) {
            if m.matches(stage, config, inputs) {
                let f = fs::File::options().append(true).open(&p).at(&p)?;
                f.set_modified(SystemTime::now()).at(&p)?;
                tracing::info!(dir = %dir.display(), "up to date, nothing to do (use --force to rerun)");
                return Ok(false);
            }
        }
    }
    fs::create_dir_all(dir).at(dir)?;
    match fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CoreError::Io { path: p, source }),
    }
    Ok(true)
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
    use super::*;
    use serde_json::json;

    #[test]
    fn write_read_and_pin_inputs() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        assert!(needs_run(&a, "data", &json!({"x": 1}), &[], false).unwrap());
        let mut m = Manifest::new("data", json!({"x": 1}));
        m.metrics = json!({"n": 3});
        m.write(&a).unwrap();
        assert_eq!(Manifest::read(&a).unwrap(), m);
        assert!(!needs_run(&a, "data", &json!({"x": 1}), &[], false).unwrap());
        assert!(needs_run(&a, "data", &json!({"x": 2}), &[], false).unwrap());
        // needs_run removed the stale manifest: the directory is now incomplete.
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
}
