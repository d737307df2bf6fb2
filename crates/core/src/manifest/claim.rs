//! Claiming `--out` for a stage run: what the directory holds, whether it
//! is up to date, and clearing it under `--force`.

use super::{InputRef, MANIFEST, Manifest, absolute_clean, manifest_path, remove_file_if_exists};
use crate::error::{CoreError, IoContext, Result};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

/// Whether `names` are work in progress left by a version of kd that wrote
/// no marker: files the stage names as its own (`work_files`; a trailing
/// `*` matches a prefix). The stage's own checks (a checkpoint's identity, a
/// store's key) still refuse a mismatch.
fn legacy_unfinished(work_files: &[&str], names: &[String]) -> bool {
    names.iter().any(|n| {
        work_files.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => n.starts_with(prefix),
            None => n == f,
        })
    })
}

fn occupant(dir: &Path, work_files: &[&str]) -> Result<Occupant> {
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
    if names.is_empty() || legacy_unfinished(work_files, &names) {
        return Ok(Occupant::Empty);
    }
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    Ok(Occupant::Foreign(format!(
        "files that are not a kd artifact ({}{})",
        shown.join(", "),
        if names.len() > 4 { ", ..." } else { "" }
    )))
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

/// Claim `dir` for a run of `stage`, or find it up to date. `work_files`
/// are the files an unfinished run of the stage leaves (see
/// [`crate::stage::StageRun::leaves`]).
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
    work_files: &[&str],
    force: bool,
) -> Result<Claim> {
    let p = manifest_path(dir);
    let occupied = |what: String| CoreError::OutOccupied {
        dir: dir.into(),
        msg: format!(
            "holds {what}; refusing to write a '{stage}' artifact there (--force replaces the directory's contents, or choose another --out)"
        ),
    };
    match occupant(dir, work_files)? {
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
