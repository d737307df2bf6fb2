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

mod claim;
#[cfg(test)]
mod tests;

pub use claim::{Claim, STAGE_MARKER, claim_out_dir};

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
