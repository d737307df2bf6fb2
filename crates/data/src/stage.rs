//! The `data` stage: import a source into a dataset artifact, idempotently.

use crate::error::Result;
use crate::folder::Resize;
use crate::split::{SplitConfig, cut};
use crate::store::{STAGE, STORE, write_traced};
use crate::{cifar, folder, idx};
use kd_core::SettingError;
use kd_core::manifest::{OutputRef, hash_file};
use kd_core::stage::{Outcome, RunOptions, StageRun};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Idx,
    Cifar,
    Folder,
}

/// Everything that determines a dataset artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    pub format: Option<Format>,
    pub src: Option<PathBuf>,
    #[serde(flatten)]
    pub split: SplitConfig,
    /// Folder import: output side length (none: the images' own, when they
    /// all share one square size) and channel count.
    pub size: Option<u32>,
    pub channels: usize,
    /// Folder import: how images that are not `size x size` get there
    /// (`crop`: torchvision's resize + centre crop; `squash`).
    pub resize: Resize,
    /// Folder import of class folders only: fraction held out as test.
    pub test_fraction: f64,
    /// IDX import: class names (default by data set, from the directory name).
    pub class_names: Option<Vec<String>>,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            format: None,
            src: None,
            split: SplitConfig::default(),
            size: None,
            channels: 3,
            resize: Resize::default(),
            test_fraction: 0.2,
            class_names: None,
        }
    }
}

fn source_files(src: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(src).map_err(crate::error::io_err(src))?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if recursive {
                source_files(&p, true, out)?;
            }
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Run the import into `out` unless an identical artifact is already there.
pub fn import_stage(cfg: &ImportConfig, out: &Path, run: &RunOptions) -> Result<Outcome> {
    let format = cfg.format.ok_or_else(|| SettingError::Missing {
        setting: "format".into(),
        hint: format!(
            "one of {}; [data] format or --format",
            kd_core::profile::setting_names::<Format>()
                .unwrap_or_default()
                .join(", ")
        ),
    })?;
    let src = cfg.src.clone().ok_or_else(|| SettingError::Missing {
        setting: "src".into(),
        hint: "the source directory; [data] src or --src".into(),
    })?;
    if !src.is_dir() {
        return Err(crate::error::format_err(&src, "no such directory"));
    }
    // The source's content is part of the config: changed raw files rerun the stage.
    let mut files = vec![];
    source_files(&src, format == Format::Folder, &mut files)?;
    files.sort();
    let hashes: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            Ok((
                f.strip_prefix(&src).unwrap_or(f).display().to_string(),
                hash_file(f)?,
            ))
        })
        .collect::<Result<_>>()?;
    let config = json!({ "import": cfg, "source_blake3": hashes });
    let stage = StageRun::new(STAGE, out, config, vec![]).leaves(&[STORE]);
    if !stage.claim(run.force)? {
        return Ok(Outcome::UpToDate);
    }
    tracing::info!(src = %src.display(), ?format, "importing");
    let imported = match format {
        Format::Idx => idx::import(&src, cfg.class_names.clone())?,
        Format::Cifar => cifar::import(&src)?,
        Format::Folder => folder::import(
            &src,
            &folder::Options {
                size: cfg.size,
                channels: cfg.channels,
                resize: cfg.resize,
                test_fraction: cfg.test_fraction,
                val_fraction: cfg.split.val_fraction,
                seed: cfg.split.seed,
            },
        )?,
    };
    let splits = cut(&imported, &cfg.split)?;
    let attrs = write_traced(
        out,
        &splits,
        imported.origin,
        &imported.class_names,
        &imported.source,
    )?;
    let k = imported.class_names.len();
    let per_class: serde_json::Map<String, serde_json::Value> = splits
        .iter()
        .map(|(n, s)| (n.clone(), json!(s.split.class_counts(k))))
        .collect();
    let m = stage.seal(
        &[("split", cfg.split.seed)],
        vec![OutputRef::of(out, STORE, false)?],
        json!({
            "samples": attrs.get("splits"),
            "class_counts": per_class,
            "chw": attrs.get("chw"),
            "mean": attrs.get("mean"),
            "std": attrs.get("std"),
            "num_classes": k,
        }),
    )?;
    tracing::info!(out = %out.display(), samples = %m.metrics["samples"], "dataset written");
    Ok(Outcome::Wrote(Box::new(m)))
}
