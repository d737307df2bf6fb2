//! The teachers a store is built from, checked against the dataset and
//! each other before anything is written.

use crate::error::{Result, store_err};
use crate::layout::{FoldsMeta, TeacherMeta};
use kd_core::{SettingError, Teacher};
use kd_data::Dataset;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A loaded teacher and the artifact directory it came from (pinned by hash).
pub struct TeacherInput {
    pub dir: PathBuf,
    pub teacher: Box<dyn Teacher>,
}

impl std::fmt::Debug for TeacherInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TeacherInput({}, {})",
            self.teacher.name(),
            self.dir.display()
        )
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A cross-fitted teacher's folds, checked against the `samples` training
/// samples it must cover.
fn check_folds(t: &dyn Teacher, m: &Path, samples: usize) -> Result<Option<FoldsMeta>> {
    let Some(f) = t.folds() else {
        return Ok(None);
    };
    let bad = |msg: String| Err(store_err(m, format!("teacher '{}' {msg}", t.name())));
    let k = f.k();
    let range = kd_core::Folds::RANGE;
    if !range.contains(&k) {
        return bad(format!(
            "is cross-fitted with {k} fold checkpoints: need {} to {}",
            range.start(),
            range.end()
        ));
    }
    if f.assignment.len() != samples {
        return bad(format!(
            "assigns folds to {} samples, the train split has {samples}",
            f.assignment.len()
        ));
    }
    if let Some((i, &x)) = f
        .assignment
        .iter()
        .enumerate()
        .find(|(_, x)| **x as usize >= k)
    {
        return bad(format!("puts sample {i} in fold {x}, but has {k} folds"));
    }
    Ok(Some(FoldsMeta {
        k,
        checkpoint_hashes: f.checkpoint_hashes.clone(),
    }))
}

/// Check teachers against the dataset and each other; returns their store metadata.
pub(super) fn check_teachers(ds: &Dataset, teachers: &[TeacherInput]) -> Result<Vec<TeacherMeta>> {
    if teachers.is_empty() {
        return Err(SettingError::Missing {
            setting: "teacher".into(),
            hint: "one --teacher per teacher artifact".into(),
        }
        .into());
    }
    let samples = ds.split("train")?.len();
    let mut seen = HashSet::new();
    let mut out = vec![];
    for ti in teachers {
        let t = &ti.teacher;
        let m = ti.dir.join(kd_core::manifest::MANIFEST);
        if !valid_name(t.name()) {
            return Err(store_err(
                &m,
                format!("teacher name '{}' is not [A-Za-z0-9_-]+", t.name()),
            ));
        }
        if !seen.insert(t.name().to_string()) {
            return Err(store_err(
                &m,
                format!("two teachers are named '{}'", t.name()),
            ));
        }
        if t.dataset_hash() != ds.manifest_hash {
            return Err(store_err(
                &m,
                format!(
                    "teacher '{}' was trained on dataset {} but --dataset {} is {}",
                    t.name(),
                    t.dataset_hash(),
                    ds.dir.display(),
                    ds.manifest_hash
                ),
            ));
        }
        if t.num_classes() != ds.num_classes() {
            return Err(store_err(
                &m,
                format!(
                    "teacher '{}' has {} classes, the dataset {} has {}",
                    t.name(),
                    t.num_classes(),
                    ds.dir.display(),
                    ds.num_classes()
                ),
            ));
        }
        out.push(TeacherMeta {
            name: t.name().into(),
            arch: t.arch().into(),
            checkpoint_hash: t.checkpoint_hash().into(),
            dataset_hash: t.dataset_hash().into(),
            folds: check_folds(t.as_ref(), &m, samples)?,
        });
    }
    Ok(out)
}
