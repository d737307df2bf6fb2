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
use kd_core::manifest::{InputRef, Manifest, OutputRef, read_json};
use kd_core::metrics::{DatasetMetrics, StudentMetrics, TeacherMetrics};
use kd_core::stage::StageRun;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
    /// Rewrite even if up to date.
    pub force: bool,
}

impl ReportConfig {
    /// Reports `run` into `run/report`.
    pub fn new(run: impl Into<PathBuf>) -> ReportConfig {
        let run = run.into();
        ReportConfig {
            out: run.join("report"),
            run,
            force: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing the report summarises changed since it was written.
    UpToDate,
    /// `report.md` (its text here), the charts and the manifest were written.
    Wrote { markdown: String },
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
pub fn write_report(cfg: &ReportConfig) -> Result<Outcome> {
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
    let stage = StageRun::new(STAGE, &cfg.out, config, inputs);
    if !stage.claim(cfg.force)? {
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
    stage.seal(&[], outputs, serde_json::Value::Null)?;
    tracing::info!(out = %cfg.out.display(), "report written");
    Ok(Outcome::Wrote { markdown: md })
}

/// One setting a method was trained at several values of, off the
/// profile's own: a table of its points and a chart.
struct Curve {
    heading: &'static str,
    intro: &'static str,
    /// The setting's column header and the chart's x axis.
    column: &'static str,
    x_label: &'static str,
    title: &'static str,
    chart: &'static str,
    /// Whether a variant is a point of this curve off the profile's value.
    is_off: fn(&str) -> bool,
    /// Whether a variant can be a point at all (the other curve's points
    /// cannot: they move another setting too).
    is_on: fn(&str) -> bool,
    /// A group's value of the setting.
    x: fn(&[Student]) -> Option<u64>,
}

/// Each method trained at several budgets (its `-ep<N>` runs beside the
/// profile's own): accuracy against epochs, to show whether a longer
/// schedule still pays.
const PATIENCE: Curve = Curve {
    heading: "Patience",
    intro: "The same method at several budgets (one cosine schedule per budget)",
    column: "epochs",
    x_label: "Epochs (one schedule each)",
    title: "Patience: test accuracy against the training budget",
    chart: PATIENCE_CHART,
    is_off: |v| !naming::budget_tag(v).is_empty(),
    is_on: |v| naming::views_tag(v).is_empty(),
    x: |runs| Some(runs[0].metrics.epochs.len() as u64),
};

/// Each method trained over stores of several view counts (its `-k<K>`
/// runs beside the profile's own store): whether more stored views pay.
const VIEWS: Curve = Curve {
    heading: "Views",
    intro: "The same method over stores of several views per image (same budget and view policy)",
    column: "views",
    x_label: "Stored views per image",
    title: "Views: test accuracy against the store's views per image",
    chart: VIEWS_CHART,
    is_off: |v| !naming::views_tag(v).is_empty(),
    is_on: |v| naming::budget_tag(v).is_empty(),
    x: |runs| runs[0].settings.views,
};

/// `curve`'s table and chart, for the methods with a point off the
/// profile's value and more than one point. Test and val accuracy are the
/// last epoch's.
fn curve_section(md: &mut String, groups: &Groups, out: &Path, curve: &Curve) -> Result<()> {
    let mut by_method: BTreeMap<&str, Vec<(u64, &Vec<Student>)>> = BTreeMap::new();
    for (variant, runs) in groups.iter().filter(|(v, _)| (curve.is_on)(v)) {
        if let Some(x) = (curve.x)(runs) {
            by_method
                .entry(naming::method_of(variant))
                .or_default()
                .push((x, runs));
        }
    }
    by_method.retain(|m, points| {
        points.sort_by_key(|p| p.0);
        points.len() > 1
            && groups
                .keys()
                .any(|v| naming::method_of(v) == *m && (curve.is_off)(v) && (curve.is_on)(v))
    });
    if by_method.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "\n## {}\n\n{}, accuracy after the last epoch (mean ± sd over seeds).\n\n\
         | method | {} | test accuracy (%) | val accuracy (%) | seeds |\n|---|---|---|---|---|",
        curve.heading, curve.intro, curve.column
    )
    .ok();
    let mut series = vec![];
    for (method, points) in &by_method {
        let mut drawn = vec![];
        for (x, runs) in points {
            let test: Vec<f64> = runs.iter().map(test_accuracy).collect();
            let val: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    r.metrics
                        .last_eval()
                        .get("val_acc_avg")
                        .and_then(|v| v.as_f64())
                })
                .collect();
            let (tm, tsd) = mean_sd(&test);
            let cell = |xs: &[f64]| match xs.len() {
                0 => "-".to_string(),
                1 => format!("{:.2}", xs[0] * 100.0),
                _ => {
                    let (m, sd) = mean_sd(xs);
                    format!("{:.2} ± {:.2}", m * 100.0, sd * 100.0)
                }
            };
            writeln!(
                md,
                "| {method} | {x} | {} | {} | {} |",
                cell(&test),
                cell(&val),
                runs.len()
            )
            .ok();
            drawn.push((*x as f64, tm, tsd));
        }
        series.push(Series::with_sd(*method, drawn));
    }
    Chart::new(curve.title, curve.x_label, "Test accuracy", &series)
        .spread(crate::plot::Spread::Bars)
        .write_png(&out.join(curve.chart))?;
    writeln!(
        md,
        "\n![test accuracy against {}]({})",
        curve.column, curve.chart
    )
    .ok();
    Ok(())
}

/// The `arch` of a teacher imported from TorchScript.
const IMPORTED_ARCH: &str = "torchscript";

fn teacher_section(md: &mut String, teachers: &[(String, PathBuf)]) -> Result<()> {
    writeln!(
        md,
        "## Teachers\n\n| teacher | architecture | params | test accuracy (%) | train img/s | epochs |\n|---|---|---|---|---|---|"
    )
    .ok();
    for (name, p) in teachers {
        let t = read_teacher_metrics(p)?.summary;
        // An imported teacher was trained elsewhere: no rate, no epochs here.
        let (rate, epochs) = if t.arch == IMPORTED_ARCH {
            ("-".to_string(), "imported".to_string())
        } else {
            (
                format!("{:.0}", t.train_images_per_sec),
                t.epochs.to_string(),
            )
        };
        writeln!(
            md,
            "| {name} | {}/{} | {} | {} | {rate} | {epochs} |",
            t.arch,
            t.preset.as_deref().unwrap_or("?"),
            t.params,
            pct(t.test_accuracy),
        )
        .ok();
    }
    Ok(())
}

fn test_accuracy(s: &Student) -> f64 {
    s.metrics.test_accuracy
}

/// The mean test accuracy over a group's seeds.
fn mean_accuracy(runs: &[Student]) -> f64 {
    mean_sd(&runs.iter().map(test_accuracy).collect::<Vec<_>>()).0
}

fn student_section(md: &mut String, groups: &Groups) {
    // Each run is compared with the no-teacher run of its budget (`none`, `none-ep8`).
    let baseline = |variant: &str| {
        groups
            .get(&format!("none{}", naming::budget_tag(variant)))
            .map(|g| (mean_accuracy(g), g[0].metrics.epochs.len()))
    };
    writeln!(
        md,
        "\n## Students\n\nTest accuracy of the averaged heads (the student's prediction), mean ± sample sd over seeds; \
         each head alone at the last epoch, averaged over seeds. Each run is compared with the no-teacher run of the same budget (`none`, or `none-ep8` for `make long`'s runs); a run with another epoch budget (the live-teacher timing run) is not.\n\n\
         | variant | source | distillation | epochs | seeds | test accuracy (%) | vs none (pts) | per head (%) | epoch time (s) | train img/s |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    .ok();
    for (variant, runs) in ordered(groups) {
        let accs: Vec<f64> = runs.iter().map(test_accuracy).collect();
        let (m, sd) = mean_sd(&accs);
        let first = &runs[0].metrics;
        let n_epochs = first.epochs.len();
        let n = runs.len() as f64;
        let secs = runs
            .iter()
            .map(|r| r.metrics.mean_epoch_seconds())
            .sum::<f64>()
            / n;
        let ips = runs.iter().map(|r| r.metrics.images_per_sec).sum::<f64>() / n;
        let accuracy = if runs.len() > 1 {
            format!("{} ± {}", pct(m), pct(sd))
        } else {
            pct(m)
        };
        // A shorter run (the live timing run) is not an accuracy comparison.
        let vs_none = match baseline(variant) {
            Some((b, ne)) if ne == n_epochs => format!("{:+.2}", 100.0 * (m - b)),
            Some(_) => "- (other budget)".into(),
            None => "-".into(),
        };
        writeln!(
            md,
            "| {variant} | {} | {} | {n_epochs} | {} | {accuracy} | {vs_none} | {} | {secs:.1} | {ips:.0} |",
            first.source,
            runs[0].settings.describe(&first.source),
            runs.len(),
            head_means(runs),
        )
        .ok();
    }
    let mut budgets: Vec<&str> = vec![""];
    budgets.extend(
        groups
            .keys()
            .filter_map(|k| k.strip_prefix(naming::ENSEMBLE))
            .filter(|s| !s.is_empty() && naming::budget_tag(s) == *s),
    );
    for tag in budgets {
        if let Some(line) = verdict(groups, tag) {
            writeln!(md, "\n{line}").ok();
        }
    }
}

/// The compared variants first, in the order of the method; anything else
/// (the live timing run, ablations) after them by name; then the same for
/// each longer budget.
fn ordered(groups: &Groups) -> Vec<(&String, &Vec<Student>)> {
    let mut v: Vec<_> = groups.iter().collect();
    v.sort_by_key(|(name, _)| {
        let tag = naming::budget_tag(name);
        (
            tag.len(),
            tag.to_string(),
            naming::compared_rank(naming::method_of(name)),
            (*name).clone(),
        )
    });
    v
}

/// Each head's last-epoch test accuracy, averaged over a variant's seeds.
fn head_means(runs: &[Student]) -> String {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in runs {
        for (k, v) in r.metrics.last_eval() {
            if let (Some(head), Some(x)) = (k.strip_prefix("test_acc_"), v.as_f64())
                && head != "avg"
            {
                let e = sums.entry(head.to_string()).or_default();
                e.0 += x;
                e.1 += 1;
            }
        }
    }
    sums.iter()
        .map(|(h, (s, n))| format!("{h} {}", pct(s / *n as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One sentence on the claim being tested: does the ensemble beat no teacher
/// and each single teacher (differences of the seed means)? `tag` picks a
/// budget's runs (`-ep8`: `ensemble-ep8` vs `none-ep8`, ...).
fn verdict(groups: &Groups, tag: &str) -> Option<String> {
    let mean = |method: &str| {
        groups
            .get(&format!("{method}{tag}"))
            .map(|g| mean_accuracy(g))
    };
    let ens = mean(naming::ENSEMBLE)?;
    let parts: Vec<String> = naming::COMPARED
        .iter()
        .filter(|m| **m != naming::ENSEMBLE)
        .filter_map(|v| mean(v).map(|m| format!("{:+.2} pts vs {v}{tag}", 100.0 * (ens - m))))
        .collect();
    let who = if tag.is_empty() {
        "Ensemble student".to_string()
    } else {
        format!("Ensemble student `ensemble{tag}`")
    };
    (!parts.is_empty()).then(|| format!("{who}: {}.", parts.join(", ")))
}

/// Epoch time of the same ensemble distillation, cached vs live, against no teacher.
fn epoch_time_section(md: &mut String, groups: &Groups) {
    let secs_of = |v: &str| {
        groups.get(v).map(|g| {
            g.iter()
                .map(|s| s.metrics.mean_epoch_seconds())
                .sum::<f64>()
                / g.len() as f64
        })
    };
    let (Some(none), Some(cached)) = (secs_of("none"), secs_of(naming::ENSEMBLE)) else {
        return;
    };
    writeln!(
        md,
        "\n## Epoch time\n\n| source | seconds per epoch | vs no teacher |\n|---|---|---|"
    )
    .ok();
    writeln!(md, "| none | {none:.1} | 1.00x |").ok();
    writeln!(
        md,
        "| cached ensemble | {cached:.1} | {:.2}x |",
        cached / none
    )
    .ok();
    if let Some(live) = secs_of(LIVE) {
        writeln!(md, "| live ensemble | {live:.1} | {:.2}x |", live / none).ok();
        writeln!(
            md,
            "\nLive teachers cost {:.2}x the cached store's epoch time.",
            live / cached
        )
        .ok();
    }
}

fn cache_section(md: &mut String, store: &Path) -> Result<()> {
    let arrays = kd_core::zarr::describe(store)?;
    writeln!(
        md,
        "\n## Logit cache\n\n| array | shape | dtype | stored | bytes per (sample, view) | compression |\n|---|---|---|---|---|---|"
    )
    .ok();
    for i in &arrays {
        let per_view = i.shape.iter().take(2).product::<u64>().max(1);
        writeln!(
            md,
            "| {} | {:?} | {} | {} | {:.1} | {:.2}x |",
            i.path,
            i.shape,
            i.dtype,
            bytes(i.stored_bytes),
            i.stored_bytes as f64 / per_view as f64,
            i.ratio
        )
        .ok();
    }
    Ok(())
}

/// One series per variant: the mean over its seeds epoch by epoch, with its
/// sd as a band. Only the compared variants when there are any: ablations
/// would drown them.
fn seed_series(groups: &Groups, key: &str) -> Vec<Series> {
    let any_compared = groups.keys().any(|v| naming::is_compared(v));
    ordered(groups)
        .into_iter()
        .filter(|(variant, _)| !any_compared || naming::is_compared(variant))
        .map(|(variant, runs)| {
            let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            for r in runs {
                for e in &r.metrics.epochs {
                    let value = e
                        .eval
                        .get(key)
                        .and_then(|v| v.as_f64())
                        .or(e.train.get(key).copied());
                    if let Some(v) = value {
                        by_epoch.entry(e.epoch).or_default().push(v);
                    }
                }
            }
            let label = match runs.len() {
                1 => variant.clone(),
                n => format!("{variant} (mean of {n} seeds)"),
            };
            Series::with_sd(
                label,
                by_epoch.into_iter().map(|(ep, xs)| {
                    let (m, sd) = mean_sd(&xs);
                    (ep as f64, m, sd)
                }),
            )
        })
        .collect()
}

fn write_curves(groups: &Groups, out: &Path) -> Result<()> {
    let accuracy = seed_series(groups, "test_acc_avg");
    Chart::new(
        "Student test accuracy (averaged heads)",
        "Epoch",
        "Test accuracy",
        &accuracy,
    )
    .write_png(&out.join(ACCURACY_CHART))?;
    let loss = seed_series(groups, "loss");
    Chart::new("Student training loss", "Epoch", "Loss", &loss).write_png(&out.join(LOSS_CHART))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn student(acc: f64) -> Student {
        Student {
            metrics: serde_json::from_value(json!({
                "test_accuracy": acc, "source": "cache", "params": 1,
                "device": "cpu", "images_per_sec": 1.0, "epochs": []
            }))
            .unwrap(),
            settings: DistillSettings::default(),
        }
    }

    fn groups(runs: &[(&str, f64)]) -> Groups {
        let mut g = Groups::new();
        for (name, acc) in runs {
            g.entry(naming::variant_of(name).to_string())
                .or_default()
                .push(student(*acc));
        }
        g
    }

    /// A student of `epochs` epochs with test accuracy `acc` and val `val`.
    fn trained(epochs: usize, acc: f64, val: f64) -> Student {
        let rec = |e: usize| {
            json!({"epoch": e, "lr": 0.1, "train": {}, "eval": {"val_acc_avg": val},
                   "train_seconds": 1.0, "images_per_sec": 1.0})
        };
        Student {
            metrics: serde_json::from_value(json!({
                "test_accuracy": acc, "source": "cache", "params": 1, "device": "cpu",
                "images_per_sec": 1.0, "epochs": (1..=epochs).map(rec).collect::<Vec<_>>()
            }))
            .unwrap(),
            settings: DistillSettings::default(),
        }
    }

    #[test]
    fn patience_lists_each_method_by_budget_and_draws_it() {
        let mut g = Groups::new();
        g.insert(
            "cnn".into(),
            vec![trained(12, 0.80, 0.81), trained(12, 0.82, 0.83)],
        );
        g.insert("cnn-ep4".into(), vec![trained(4, 0.70, 0.72)]);
        g.insert("cnn-ep24".into(), vec![trained(24, 0.85, 0.86)]);
        // One budget only: no patience row for it.
        g.insert("none".into(), vec![trained(12, 0.75, 0.76)]);
        let t = tempfile::tempdir().unwrap();
        let mut md = String::new();
        curve_section(&mut md, &g, t.path(), &PATIENCE).unwrap();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| cnn")).collect();
        assert_eq!(
            rows,
            [
                "| cnn | 4 | 70.00 | 72.00 | 1 |",
                "| cnn | 12 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
                "| cnn | 24 | 85.00 | 86.00 | 1 |"
            ]
        );
        assert!(!md.contains("| none |"));
        assert!(t.path().join(PATIENCE_CHART).exists());
        // Nothing trained at a second budget: no section, no chart.
        let t2 = tempfile::tempdir().unwrap();
        let mut md2 = String::new();
        curve_section(&mut md2, &groups(&[("cnn", 0.8)]), t2.path(), &PATIENCE).unwrap();
        assert!(md2.is_empty() && !t2.path().join(PATIENCE_CHART).exists());
    }

    /// `trained` over a store of `views` views per image.
    fn over(views: u64, epochs: usize, acc: f64) -> Student {
        let mut s = trained(epochs, acc, acc + 0.01);
        s.settings.views = Some(views);
        s
    }

    #[test]
    fn views_and_patience_each_keep_their_own_points() {
        let mut g = Groups::new();
        g.insert(
            "ensemble-stems".into(),
            vec![over(128, 12, 0.80), over(128, 12, 0.82)],
        );
        g.insert("ensemble-stems-k8".into(), vec![over(8, 12, 0.70)]);
        g.insert("ensemble-stems-k32".into(), vec![over(32, 12, 0.75)]);
        g.insert("ensemble-stems-ep40".into(), vec![over(128, 40, 0.85)]);
        // No store, so no point on the views curve.
        g.insert("none-stems".into(), vec![trained(12, 0.78, 0.79)]);
        let t = tempfile::tempdir().unwrap();
        let mut md = String::new();
        curve_section(&mut md, &g, t.path(), &VIEWS).unwrap();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(
            rows,
            [
                "| ensemble-stems | 8 | 70.00 | 71.00 | 1 |",
                "| ensemble-stems | 32 | 75.00 | 76.00 | 1 |",
                "| ensemble-stems | 128 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
            ]
        );
        assert!(md.contains("## Views") && md.contains("(views.png)"));
        assert!(t.path().join(VIEWS_CHART).exists());
        // The patience curve has the profile's store's runs only.
        let mut md = String::new();
        curve_section(&mut md, &g, t.path(), &PATIENCE).unwrap();
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(
            rows,
            [
                "| ensemble-stems | 12 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
                "| ensemble-stems | 40 | 85.00 | 86.00 | 1 |",
            ]
        );
    }

    #[test]
    fn settings_name_what_an_ablation_changes() {
        let parse = |v: serde_json::Value| serde_json::from_value::<DistillSettings>(v).unwrap();
        let soft =
            parse(json!({"distill": "soft", "tau": 1.0, "alpha": 0.5, "tokens": "per-teacher"}));
        assert_eq!(soft.describe("cache"), "soft, tau 1, alpha 0.5");
        assert_eq!(soft.describe("none"), "labels only");
        let abl = parse(
            json!({"distill": "hard", "alpha": 0.8, "tokens": "averaged", "precision": "bf16", "lr": 0.1}),
        );
        assert_eq!(
            abl.describe("live"),
            "hard, alpha 0.8, one averaged token, bf16"
        );
    }

    #[test]
    fn variants_in_method_order_then_by_name() {
        let g = groups(&[
            ("ensemble-live", 0.1),
            ("ensemble", 0.9),
            ("cnn", 0.8),
            ("none", 0.7),
            ("abl", 0.5),
            ("ensemble-ep8", 0.9),
            ("none-ep8", 0.9),
        ]);
        let names: Vec<&str> = ordered(&g).iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "none",
                "cnn",
                "ensemble",
                "abl",
                "ensemble-live",
                "none-ep8",
                "ensemble-ep8"
            ]
        );
    }

    #[test]
    fn verdict_compares_seed_means() {
        let g = groups(&[
            ("none", 0.80),
            ("none-seed1", 0.82),
            ("cnn", 0.83),
            ("involution", 0.815),
            ("ensemble", 0.84),
            ("ensemble-seed1", 0.85),
        ]);
        assert_eq!(
            verdict(&g, "").unwrap(),
            "Ensemble student: +3.50 pts vs none, +1.50 pts vs cnn, +3.00 pts vs involution."
        );
        assert!(verdict(&groups(&[("none", 0.8)]), "").is_none());
        let long = groups(&[
            ("none-ep8", 0.85),
            ("cnn-ep8", 0.86),
            ("ensemble-ep8", 0.87),
        ]);
        assert_eq!(
            verdict(&long, "-ep8").unwrap(),
            "Ensemble student `ensemble-ep8`: +2.00 pts vs none-ep8, +1.00 pts vs cnn-ep8."
        );
    }
}
