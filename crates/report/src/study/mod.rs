//! The data-efficiency study's report. One run directory per
//! training-set size (`make study`), each with the same student variants
//! over several seeds; this page puts them side by side: test accuracy
//! against training-set size, the teachers and how much they disagree at
//! each size, and one verdict per size.
//!
//! Settings are chosen on the `val` split (held out from the training data),
//! never on test: the "best single teacher" and the "best ensemble" of a size
//! are the variants with the highest mean val accuracy, and only then are
//! their test accuracies compared. A size passes when that ensemble is at
//! least 0.5 point above that single-teacher student and the gap exceeds two
//! seed sd's of either.
//!
//! `study.json` keeps every number, so a later session on a fresh machine can
//! pass it as `--previous` and add sizes without rerunning the finished ones.

mod chart;
mod collect;
mod markdown;
#[cfg(test)]
mod tests;

pub use collect::EVAL_DIR;
pub use markdown::markdown;

use crate::error::{ReportError, Result, io_at};
use crate::naming;
use crate::numbers::{mean_sd, pct};
use kd_core::manifest::{Manifest, read_json, write_json};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const MARKDOWN: &str = "study.md";
pub const JSON: &str = "study.json";
pub const CHART: &str = "accuracy-vs-size.png";

/// The bar a size must clear: gain over the best single-teacher student, in accuracy.
pub const MIN_GAIN: f64 = 0.005;
/// Seeds each side needs before a verdict is given.
pub const MIN_SEEDS: usize = 3;

/// The stores whose teachers' disagreement the study tabulates.
const STORES: [&str; 3] = ["logits", "logits-crossfit", "logits-mixed"];

/// What to put side by side and where.
#[derive(Clone, Debug)]
pub struct StudyConfig {
    /// One run directory per training-set size.
    pub runs: Vec<PathBuf>,
    /// Receives study.md, study.json, accuracy-vs-size.png.
    pub out: PathBuf,
    /// An earlier study.json: its sizes fill in for run directories that are
    /// absent or unfinished here (results committed by an earlier session).
    pub previous: Option<PathBuf>,
    /// The command line, quoted at the top of study.md.
    pub command: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TeacherResult {
    pub name: String,
    pub arch: String,
    pub test_accuracy: f64,
    /// Cross-fitted teachers: accuracy of each training image's own fold model.
    pub held_out_accuracy: Option<f64>,
    pub folds: Option<usize>,
    pub epochs: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diversity {
    pub store: String,
    pub a: String,
    pub b: String,
    /// Top-1 agreement over all stored views.
    pub agreement: f64,
    pub kl_ab: f64,
    pub kl_ba: f64,
    pub only_a_right: Option<f64>,
    pub only_b_right: Option<f64>,
    pub averaged_accuracy: Option<f64>,
    /// Each teacher's accuracy on the stored (training) views.
    pub train_view_accuracy: BTreeMap<String, Option<f64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantResult {
    pub variant: String,
    pub test: Vec<f64>,
    pub val: Vec<f64>,
    /// Mean test accuracy of each head alone (`cls`, `dist_<teacher>`).
    pub heads: BTreeMap<String, f64>,
    pub epochs: usize,
    /// From `kd student eval` (`<run>/eval/<student>.json`), mean over the
    /// seeds evaluated: each head's (`avg`, `cls`, `dist_<t>`) test
    /// agreement with each teacher, and the share of each teacher's test
    /// mistakes it repeats.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agreement: BTreeMap<String, BTreeMap<String, f64>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repeats_errors: BTreeMap<String, BTreeMap<String, f64>>,
    /// Seeds with an evaluation behind `agreement`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evaluated: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SizeResult {
    pub run: String,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub teachers: Vec<TeacherResult>,
    pub diversity: Vec<Diversity>,
    pub variants: Vec<VariantResult>,
    /// Teachers' top-1 agreement with each other on test (`a vs b`), from
    /// the students' evaluations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teacher_test_agreement: BTreeMap<String, f64>,
}

/// `study.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Study {
    pub sizes: Vec<SizeResult>,
}

/// The verdict of one size.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub single: &'a VariantResult,
    pub ensemble: &'a VariantResult,
    pub gain: f64,
    /// `None` until both sides have [`MIN_SEEDS`] seeds.
    pub passes: Option<bool>,
}

impl Verdict<'_> {
    /// The verdict in words (markdown: a pass is bold).
    pub fn word(&self) -> String {
        match self.passes {
            Some(true) => "**yes**".into(),
            Some(false) => "no".into(),
            None => format!("too early: needs {MIN_SEEDS} seeds each"),
        }
    }
}

/// Collect every size (fresh or from `previous`) and write study.md,
/// study.json and the chart; returns what was written.
pub fn write_study(cfg: &StudyConfig) -> Result<Study> {
    let previous: Vec<SizeResult> = match &cfg.previous {
        Some(p) if p.is_file() => {
            read_json::<Study>(p)
                .map_err(|source| ReportError::PreviousStudy {
                    path: p.clone(),
                    source: Box::new(source),
                })?
                .sizes
        }
        _ => vec![],
    };
    let mut sizes = vec![];
    for run in &cfg.runs {
        let fresh = if Manifest::read_stage(&run.join("dataset"), "data").is_ok() {
            Some(collect::size_result(run)?)
        } else {
            None
        };
        let name = run.display().to_string();
        let old = previous.iter().find(|s| s.run == name);
        // A fresh result wins unless an earlier one has more finished runs.
        let runs_in = |s: &SizeResult| s.variants.iter().map(|v| v.test.len()).sum::<usize>();
        match (fresh, old) {
            (Some(f), Some(o)) if runs_in(o) > runs_in(&f) => sizes.push(o.clone()),
            (Some(f), _) => sizes.push(f),
            (None, Some(o)) => sizes.push(o.clone()),
            (None, None) => {
                tracing::warn!(run = %name, "no dataset artifact and no earlier result: size left out")
            }
        }
    }
    sizes.retain(|s| !s.variants.is_empty());
    if sizes.is_empty() {
        return Err(ReportError::NoStudyRuns {
            previous: cfg
                .previous
                .as_ref()
                .map_or("no --previous".into(), |p| p.display().to_string()),
        });
    }
    sizes.sort_by_key(|s| s.train);
    let study = Study { sizes };
    std::fs::create_dir_all(&cfg.out).map_err(io_at(&cfg.out))?;
    let md_path = cfg.out.join(MARKDOWN);
    std::fs::write(&md_path, markdown(&study, &cfg.command)).map_err(io_at(&md_path))?;
    write_json(&cfg.out.join(JSON), &study)?;
    chart::chart(&study, &cfg.out.join(CHART))?;
    tracing::info!(out = %cfg.out.display(), sizes = study.sizes.len(), "study written");
    Ok(study)
}

/// The variants of a size a setting can be chosen among: `candidates` with
/// val results, at the profile's own budget and store. A run off them (a
/// patience or views curve's point) is a different experiment, not a
/// setting to choose; it keeps its own row in the tables.
fn choosable(s: &SizeResult, candidates: fn(&str) -> bool) -> impl Iterator<Item = &VariantResult> {
    s.variants.iter().filter(move |v| {
        candidates(&v.variant) && !v.val.is_empty() && naming::at_profile_settings(&v.variant)
    })
}

/// The variant with the highest mean val accuracy among `candidates`.
fn pick(s: &SizeResult, candidates: fn(&str) -> bool) -> Option<&VariantResult> {
    choosable(s, candidates).max_by(|a, b| mean_sd(&a.val).0.total_cmp(&mean_sd(&b.val).0))
}

/// What a verdict picks from: single-teacher and ensemble students.
fn is_taught(variant: &str) -> bool {
    naming::is_single_teacher(variant) || naming::is_ensemble(variant)
}

/// Best single-teacher student against best ensemble variant of a size.
pub fn verdict(s: &SizeResult) -> Option<Verdict<'_>> {
    let single = pick(s, naming::is_single_teacher)?;
    let ensemble = pick(s, naming::is_ensemble)?;
    let (ms, sds) = mean_sd(&single.test);
    let (me, sde) = mean_sd(&ensemble.test);
    let gain = me - ms;
    Some(Verdict {
        single,
        ensemble,
        gain,
        passes: (single.test.len() >= MIN_SEEDS && ensemble.test.len() >= MIN_SEEDS)
            .then(|| gain >= MIN_GAIN && gain > 2.0 * sds.max(sde)),
    })
}

/// `mean ± sd (seeds)` in percent, or `-`.
pub fn cell(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let (m, sd) = mean_sd(xs);
    format!("{} ± {} ({})", pct(m), pct(sd), xs.len())
}
