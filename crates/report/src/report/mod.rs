//! The report stage: one markdown page (plus PNG charts) summarising a run
//! directory: teachers, students per variant (mean and spread over seeds),
//! epoch times of cached vs live vs no teacher, the cache's size, curves.
//!
//! It reads only typed metrics ([`kd_core::metrics`]) and run names
//! ([`crate::naming`]), and is an artifact like any stage's: a manifest
//! pins every teacher, store and student it summarised, so an unchanged
//! run directory is not reported twice.

use crate::error::{ReportError, Result, io_at};
use crate::naming::{self, LIVE};
use crate::numbers::{bytes, mean_sd, pct};
use crate::plot::{Chart, Series};
use kd_core::Outcome;
use kd_core::manifest::{InputRef, Manifest, OutputRef, read_json};
use kd_core::metrics::{DatasetMetrics, StudentMetrics, TeacherMetrics, TeacherSummary};
use kd_core::stage::{RunOptions, StageRun};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod curves;
mod sections;
#[cfg(test)]
mod tests;

use curves::{PATIENCE, VIEWS, curve_section, write_curves};
use sections::{cache_section, epoch_time_section, student_section, teacher_section};

pub const STAGE: &str = "report";
pub const MARKDOWN: &str = "report.md";
pub const ACCURACY_CHART: &str = "accuracy.png";
pub const LOSS_CHART: &str = "loss.png";
pub const PATIENCE_CHART: &str = "patience.png";
pub const VIEWS_CHART: &str = "views.png";

/// What to report on and where.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Run directory (`data/runs/<profile>`) holding dataset/, teachers/,
    /// logits/, student/.
    pub run: PathBuf,
    pub out: PathBuf,
}

impl ReportConfig {
    /// Reports `run` into `run/report`.
    pub fn new(run: impl Into<PathBuf>) -> ReportConfig {
        let run = run.into();
        ReportConfig {
            out: run.join("report"),
            run,
        }
    }
}

/// The distillation settings of a student, from its manifest's
/// `config.student`: what tells ablations apart in the table. Absent
/// fields are the defaults of the run's time.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
struct DistillSettings {
    distill: Option<String>,
    tau: Option<f64>,
    alpha: Option<f64>,
    tokens: Option<String>,
    stem: Option<String>,
    weighting: Option<String>,
    precision: Option<String>,
    /// The store's views per image (absent without a store).
    views: Option<u64>,
}

impl DistillSettings {
    /// How a run distils, in a few words.
    fn describe(&self, source: &str) -> String {
        let mut s = if source == "none" {
            "labels only".to_string()
        } else {
            let f = |x: Option<f64>| x.map_or("?".into(), |x| format!("{x}"));
            match self.distill.as_deref() {
                Some("hard") => format!("hard, alpha {}", f(self.alpha)),
                _ => format!("soft, tau {}, alpha {}", f(self.tau), f(self.alpha)),
            }
        };
        if self.tokens.as_deref() == Some("averaged") {
            s.push_str(", one averaged token");
        }
        if self.stem.as_deref() == Some("conv-involution") {
            s.push_str(", CivT conv + involution stems");
        }
        if let Some(w) = &self.weighting {
            write!(s, ", {w} weighting").ok();
        }
        if let Some(p) = &self.precision {
            write!(s, ", {p}").ok();
        }
        s
    }
}

/// The `import.src` of a dataset artifact's config.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DatasetConfig {
    import: DatasetImport,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DatasetImport {
    src: Option<String>,
}

struct Student {
    metrics: StudentMetrics,
    settings: DistillSettings,
}

/// Runs of one variant (its seeds), keyed by variant.
type Groups = BTreeMap<String, Vec<Student>>;

/// The finished artifacts of `stage` directly under `dir`, by name.
pub fn finished_artifacts(dir: &Path, stage: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| Manifest::read_stage(p, stage).is_ok())
                .map(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    (name.into_owned(), p)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A teacher artifact's `metrics.json`.
pub fn read_teacher_metrics(dir: &Path) -> Result<TeacherMetrics> {
    let path = dir.join("metrics.json");
    read_json(&path).map_err(|source| ReportError::Metrics {
        path,
        what: "teacher metrics.json",
        source: Box::new(source),
    })
}

/// A teacher's architecture as a table shows it: `arch/preset`, followed by
/// the model settings its profile set over the preset (`config.json`'s
/// `teacher.model`; the top-level `model` is the resolved whole), such as
/// `blocks [2, 2, 2], zero_init_residual`, since a preset name alone would
/// claim a model the teacher is not. A teacher without them (an imported
/// one) shows `arch/preset` alone.
pub fn teacher_architecture(dir: &Path, t: &TeacherSummary) -> String {
    let mut s = format!("{}/{}", t.arch, t.preset.as_deref().unwrap_or("?"));
    let overrides = read_json::<serde_json::Value>(&dir.join("config.json"))
        .ok()
        .and_then(|c| {
            c.pointer("/teacher/model")
                .and_then(|m| m.as_object())
                .cloned()
        })
        .unwrap_or_default();
    let set: Vec<String> = overrides
        .iter()
        .filter(|(_, v)| !v.is_null() && *v != &serde_json::Value::Bool(false))
        .map(|(k, v)| match v {
            serde_json::Value::Bool(true) => k.clone(),
            serde_json::Value::Array(a) => format!(
                "{k} [{}]",
                a.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            v => format!("{k} {v}"),
        })
        .collect();
    if !set.is_empty() {
        write!(s, " + {}", set.join(", ")).ok();
    }
    s
}

/// A student artifact's `metrics.json`.
pub fn read_student_metrics(dir: &Path) -> Result<StudentMetrics> {
    let path = dir.join("metrics.json");
    read_json(&path).map_err(|source| ReportError::Metrics {
        path,
        what: "student metrics.json",
        source: Box::new(source),
    })
}

/// A dataset artifact's manifest `metrics`.
pub fn dataset_metrics(dataset: &Manifest, dir: &Path) -> Result<DatasetMetrics> {
    serde_json::from_value(dataset.metrics.clone()).map_err(|source| ReportError::ManifestMetrics {
        path: kd_core::manifest::manifest_path(dir),
        what: "dataset",
        source,
    })
}

/// Write the report of `cfg.run` unless it is up to date.
pub fn write_report(cfg: &ReportConfig, opts: &RunOptions) -> Result<Outcome> {
    let run = &cfg.run;
    let teachers = finished_artifacts(&run.join("teachers"), "teacher");
    let students = finished_artifacts(&run.join("student"), "student");
    if students.is_empty() && teachers.is_empty() {
        return Err(ReportError::NothingToReport { run: run.clone() });
    }
    let cache_dir = run.join("logits");
    let has_cache = Manifest::read_stage(&cache_dir, "cache").is_ok();
    let mut inputs = vec![];
    for (n, p) in &teachers {
        inputs.push(InputRef::of(&format!("teacher:{n}"), p, "teacher")?);
    }
    if has_cache {
        inputs.push(InputRef::of("cache", &cache_dir, "cache")?);
    }
    for (n, p) in &students {
        inputs.push(InputRef::of(&format!("student:{n}"), p, "student")?);
    }
    let config = json!({ "run": run });
    let stage = StageRun::new(STAGE, &cfg.out, config, inputs).leaves(&[
        MARKDOWN,
        ACCURACY_CHART,
        LOSS_CHART,
    ]);
    if !stage.claim(opts.force)? {
        tracing::info!(out = %cfg.out.display(), "report up to date");
        return Ok(Outcome::UpToDate);
    }

    let mut md = String::new();
    writeln!(md, "# Report: `{}`\n", run.display()).ok();
    let dataset_dir = run.join("dataset");
    if let Ok(ds) = Manifest::read_stage(&dataset_dir, "data") {
        let metrics = dataset_metrics(&ds, &dataset_dir)?;
        let src = serde_json::from_value::<DatasetConfig>(ds.config.clone())
            .unwrap_or_default()
            .import
            .src;
        writeln!(
            md,
            "Dataset: {} samples per split {}.\n",
            json!(src),
            json!(metrics.samples)
        )
        .ok();
    }
    teacher_section(&mut md, &teachers)?;

    let mut groups = Groups::new();
    for (name, p) in &students {
        let metrics = read_student_metrics(p)?;
        let manifest = Manifest::read(p)?;
        let settings = match &manifest.config["student"] {
            serde_json::Value::Null => DistillSettings::default(),
            v => {
                serde_json::from_value(v.clone()).map_err(|source| ReportError::ManifestConfig {
                    path: kd_core::manifest::manifest_path(p),
                    source,
                })?
            }
        };
        groups
            .entry(naming::variant_of(name).to_string())
            .or_default()
            .push(Student { metrics, settings });
    }
    student_section(&mut md, &groups);
    epoch_time_section(&mut md, &groups);
    std::fs::create_dir_all(&cfg.out).map_err(io_at(&cfg.out))?;
    curve_section(&mut md, &groups, &cfg.out, &PATIENCE)?;
    curve_section(&mut md, &groups, &cfg.out, &VIEWS)?;
    if has_cache {
        cache_section(&mut md, &cache_dir.join("logits.zarr"))?;
    }

    std::fs::create_dir_all(&cfg.out).map_err(io_at(&cfg.out))?;
    if !groups.is_empty() {
        write_curves(&groups, &cfg.out)?;
        writeln!(
            md,
            "\n## Curves\n\nThe compared variants (ablations are in the table only).\n\n![test accuracy per epoch]({ACCURACY_CHART})\n\n![training loss per epoch]({LOSS_CHART})"
        )
        .ok();
    }
    let md_path = cfg.out.join(MARKDOWN);
    std::fs::write(&md_path, &md).map_err(io_at(&md_path))?;
    let mut outputs = vec![];
    for f in [
        MARKDOWN,
        ACCURACY_CHART,
        LOSS_CHART,
        PATIENCE_CHART,
        VIEWS_CHART,
    ] {
        if cfg.out.join(f).exists() {
            outputs.push(OutputRef::of(&cfg.out, f, false)?);
        }
    }
    let m = stage.seal(&[], outputs, serde_json::Value::Null)?;
    tracing::info!(out = %cfg.out.display(), "report written");
    Ok(Outcome::Wrote(Box::new(m)))
}
