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

use crate::error::{ReportError, Result, io_at};
use crate::naming::{self, LIVE};
use crate::numbers::{mean_sd, pct};
use crate::plot::{Chart, Series, Spread};
use crate::report::{
    dataset_metrics, finished_artifacts, read_student_metrics, read_teacher_metrics,
};
use kd_core::manifest::{Manifest, read_json, write_json};
use kd_core::metrics::{HeadEval, StudentEval, StudentMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
            Some(size_result(run)?)
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
    chart(&study, &cfg.out.join(CHART))?;
    tracing::info!(out = %cfg.out.display(), sizes = study.sizes.len(), "study written");
    Ok(study)
}

fn size_result(run: &Path) -> Result<SizeResult> {
    let dataset_dir = run.join("dataset");
    let ds = Manifest::read_stage(&dataset_dir, "data")?;
    let samples = dataset_metrics(&ds, &dataset_dir)?.samples;
    let n = |s: &str| samples.get(s).copied().unwrap_or(0) as usize;
    Ok(SizeResult {
        run: run.display().to_string(),
        train: n("train"),
        val: n("val"),
        test: n("test"),
        teachers: teachers(run)?,
        diversity: diversity(run),
        variants: variants(run)?,
        teacher_test_agreement: teacher_test_agreement(run)?,
    })
}

/// The directory `kd student eval` results of a run go to (`make study-eval`):
/// `<run>/eval/<student run>.json`.
pub const EVAL_DIR: &str = "eval";

/// The evaluation of student run `name`, when one was made.
fn student_eval(run: &Path, name: &str) -> Result<Option<StudentEval>> {
    let p = run.join(EVAL_DIR).join(format!("{name}.json"));
    if !p.is_file() {
        return Ok(None);
    }
    Ok(Some(read_json(&p)?))
}

/// Each teacher pair's test agreement, from any student evaluation of the run.
fn teacher_test_agreement(run: &Path) -> Result<BTreeMap<String, f64>> {
    let mut pairs = BTreeMap::new();
    for (name, _) in finished_artifacts(&run.join("student"), "student") {
        if let Some(e) = student_eval(run, &name)? {
            for t in &e.teachers {
                for (o, a) in &t.agreement {
                    if t.name < *o {
                        pairs.insert(format!("{} vs {o}", t.name), *a);
                    }
                }
            }
        }
    }
    Ok(pairs)
}

fn teachers(run: &Path) -> Result<Vec<TeacherResult>> {
    let mut v = vec![];
    for (name, p) in finished_artifacts(&run.join("teachers"), "teacher") {
        let t = read_teacher_metrics(&p)?.summary;
        v.push(TeacherResult {
            arch: format!("{}/{}", t.arch, t.preset.as_deref().unwrap_or("?")),
            name,
            test_accuracy: t.test_accuracy,
            held_out_accuracy: t.held_out_accuracy,
            folds: t.folds,
            epochs: Some(t.epochs),
        });
    }
    Ok(v)
}

fn diversity(run: &Path) -> Vec<Diversity> {
    let mut v = vec![];
    for store in STORES {
        let dir = run.join(store);
        if Manifest::read_stage(&dir, "cache").is_err() {
            continue;
        }
        let r = match kd_logit_cache::inspect::inspect(&dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(store = %dir.display(), error = %e, "cannot inspect the store; no diversity figures for it");
                continue;
            }
        };
        let acc: BTreeMap<String, Option<f64>> = r
            .teachers
            .iter()
            .map(|t| (t.name.clone(), t.acc_all_views))
            .collect();
        for a in &r.agreement {
            v.push(Diversity {
                store: store.into(),
                a: a.a.clone(),
                b: a.b.clone(),
                agreement: a.all_views,
                kl_ab: a.kl_ab,
                kl_ba: a.kl_ba,
                only_a_right: a.only_a_right,
                only_b_right: a.only_b_right,
                averaged_accuracy: r.averaged_acc_all_views,
                train_view_accuracy: acc.clone(),
            });
        }
    }
    v
}

fn variants(run: &Path) -> Result<Vec<VariantResult>> {
    let mut groups: BTreeMap<String, Vec<StudentMetrics>> = BTreeMap::new();
    let mut evals: BTreeMap<String, Vec<StudentEval>> = BTreeMap::new();
    for (name, p) in finished_artifacts(&run.join("student"), "student") {
        let m = read_student_metrics(&p)?;
        let variant = naming::variant_of(&name).to_string();
        if let Some(e) = student_eval(run, &name)? {
            evals.entry(variant.clone()).or_default().push(e);
        }
        groups.entry(variant).or_default().push(m);
    }
    let mut v = vec![];
    for (variant, runs) in groups {
        if variant == LIVE {
            continue; // a timing run, not part of the study
        }
        let mut heads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in &runs {
            for (k, x) in m.last_eval() {
                if let (Some(h), Some(x)) = (k.strip_prefix("test_acc_"), x.as_f64()) {
                    heads.entry(h.to_string()).or_default().push(x);
                }
            }
        }
        v.push(VariantResult {
            test: runs.iter().map(|m| m.test_accuracy).collect(),
            val: runs
                .iter()
                .filter_map(|m| m.last_eval().get("val_acc_avg").and_then(|x| x.as_f64()))
                .collect(),
            heads: heads
                .into_iter()
                .map(|(h, xs)| (h, mean_sd(&xs).0))
                .collect(),
            epochs: runs[0].epochs.len(),
            agreement: mean_by_head(evals.get(&variant), |h| &h.agreement),
            repeats_errors: mean_by_head(evals.get(&variant), |h| &h.repeats_errors),
            evaluated: evals.get(&variant).map_or(0, Vec::len),
            variant,
        });
    }
    Ok(v)
}

/// head -> teacher -> mean over the evaluations of one figure.
fn mean_by_head(
    evals: Option<&Vec<StudentEval>>,
    figure: impl Fn(&HeadEval) -> &BTreeMap<String, f64>,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut all: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for e in evals.into_iter().flatten() {
        for h in &e.heads {
            for (t, x) in figure(h) {
                all.entry(h.head.clone())
                    .or_default()
                    .entry(t.clone())
                    .or_default()
                    .push(*x);
            }
        }
    }
    all.into_iter()
        .map(|(h, ts)| {
            let means = ts.into_iter().map(|(t, xs)| (t, mean_sd(&xs).0)).collect();
            (h, means)
        })
        .collect()
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

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

/// study.md; `cmd` is the command line that made it.
pub fn markdown(study: &Study, cmd: &str) -> String {
    let mut md = String::new();
    writeln!(md, "# Data-efficiency study\n\nMade by `{cmd}`.\n").ok();
    writeln!(
        md,
        "Fashion-MNIST: at each size a stratified training subset and a held-out `val` split from the rest of the training data; test is the full test split. \
         Every variant is trained with the same step budget at a size; cells are test accuracy (%) of the averaged heads, mean ± sample sd (seeds). \
         Settings are chosen on `val`, never on test.\n"
    )
    .ok();
    let sizes = &study.sizes;
    let mut names: Vec<String> = vec![];
    for s in sizes {
        for v in &s.variants {
            if !names.contains(&v.variant) {
                names.push(v.variant.clone());
            }
        }
    }
    names.sort_by(|a, b| {
        naming::study_rank(a)
            .cmp(&naming::study_rank(b))
            .then(a.cmp(b))
    });
    let header = |md: &mut String, what: &str| {
        write!(md, "| {what} |").ok();
        for s in sizes {
            write!(md, " {} |", s.train).ok();
        }
        writeln!(md).ok();
        writeln!(md, "|---|{}", "---|".repeat(sizes.len())).ok();
    };
    let table = |md: &mut String, title: &str, of: fn(&VariantResult) -> &[f64]| {
        writeln!(md, "## {title}\n").ok();
        header(md, "variant \\ train images");
        for n in &names {
            write!(md, "| {n} |").ok();
            for s in sizes {
                let v = s.variants.iter().find(|v| &v.variant == n);
                write!(md, " {} |", v.map_or("-".into(), |v| cell(of(v)))).ok();
            }
            writeln!(md).ok();
        }
    };
    table(&mut md, "Test accuracy (%) by training-set size", |v| {
        &v.test
    });
    writeln!(
        md,
        "\n![test accuracy against training-set size]({CHART})\n"
    )
    .ok();
    table(
        &mut md,
        "Val accuracy (%): what the settings are chosen on",
        |v| &v.val,
    );
    writeln!(
        md,
        "\n## Verdict per size\n\nBest single-teacher student and best ensemble variant by mean val accuracy; their test accuracies compared. \
         Bar: the ensemble at least {:.1} point above, by more than two seed sd's.\n\n\
         \"Picked from\" counts the teacher-taught variants run at that size against those run at any size: \
         a size that ran fewer has a verdict over fewer settings.\n\n\
         | train images | picked from | best single (val) | its test (%) | best ensemble (val) | its test (%) | gain (pts) | bar met |\n|---|---|---|---|---|---|---|---|",
        100.0 * MIN_GAIN
    )
    .ok();
    let all_taught = sizes
        .iter()
        .flat_map(|s| choosable(s, is_taught).map(|v| v.variant.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    for s in sizes {
        let picked_from = format!("{} of {all_taught}", choosable(s, is_taught).count());
        match verdict(s) {
            Some(v) => writeln!(
                md,
                "| {} | {picked_from} | {} | {} | {} | {} | {:+.2} | {} |",
                s.train,
                v.single.variant,
                cell(&v.single.test),
                v.ensemble.variant,
                cell(&v.ensemble.test),
                100.0 * v.gain,
                v.word()
            ),
            None => writeln!(
                md,
                "| {} | {picked_from} | - | - | - | - | - | not enough runs |",
                s.train
            ),
        }
        .ok();
    }
    writeln!(
        md,
        "\n## Teachers\n\n| train images | teacher | arch | epochs | test (%) | held-out train (%) |\n|---|---|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        for t in &s.teachers {
            writeln!(
                md,
                "| {} | {} | {}{} | {} | {} | {} |",
                s.train,
                t.name,
                t.arch,
                t.folds.map_or(String::new(), |k| format!(", {k} folds")),
                t.epochs.map_or("-".into(), |e| e.to_string()),
                pct(t.test_accuracy),
                opt_pct(t.held_out_accuracy)
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\nA cross-fitted teacher's test accuracy is that of its fold models' averaged logits; its held-out accuracy is each training image's own fold model on it (what its stored view-0 logits score).\n\n\
         ## Teacher diversity on the stored training views\n\n\
         | train images | store | teachers | agreement (%) | KL a‖b / b‖a (nats) | only a right / only b right (%) | averaged (%) | each on its training views (%) |\n|---|---|---|---|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        for d in &s.diversity {
            let each: Vec<String> = d
                .train_view_accuracy
                .iter()
                .map(|(n, a)| format!("{n} {}", opt_pct(*a)))
                .collect();
            writeln!(
                md,
                "| {} | {} | {} vs {} | {} | {:.3} / {:.3} | {} / {} | {} | {} |",
                s.train,
                d.store,
                d.a,
                d.b,
                pct(d.agreement),
                d.kl_ab,
                d.kl_ba,
                opt_pct(d.only_a_right),
                opt_pct(d.only_b_right),
                opt_pct(d.averaged_accuracy),
                each.join(", ")
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\n## Heads\n\nTest accuracy (%) of each head alone at the last epoch, mean over seeds (`avg` is the student's prediction).\n\n| train images | variant | heads |\n|---|---|---|"
    )
    .ok();
    for s in sizes {
        for v in &s.variants {
            let h: Vec<String> = v
                .heads
                .iter()
                .map(|(k, x)| format!("{k} {}", pct(*x)))
                .collect();
            writeln!(md, "| {} | {} | {} |", s.train, v.variant, h.join(", ")).ok();
        }
    }
    heads_and_teachers(&mut md, sizes);
    md
}

/// Whether each distillation head learned its own teacher: test agreement
/// with every teacher and the share of its mistakes repeated. Only when some
/// student of the study was evaluated (`kd student eval`).
fn heads_and_teachers(md: &mut String, sizes: &[SizeResult]) {
    if sizes
        .iter()
        .all(|s| s.variants.iter().all(|v| v.agreement.is_empty()))
    {
        return;
    }
    writeln!(
        md,
        "\n## Heads against the teachers\n\nOn test, each head's top-1 agreement (%) with each teacher and, in brackets, the share (%) of that teacher's mistakes it repeats (same wrong class); mean over the seeds evaluated (`kd student eval`, `make study-eval`). A head that learned its own teacher agrees with it more than with the other and repeats more of its mistakes; the no-teacher rows are the control.\n"
    )
    .ok();
    for s in sizes {
        for (pair, a) in &s.teacher_test_agreement {
            writeln!(
                md,
                "- {} images: teachers {pair} agree on {}% of test.",
                s.train,
                pct(*a)
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\n| train images | variant (seeds) | head | against each teacher |\n|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        let mut vs: Vec<&VariantResult> = s
            .variants
            .iter()
            .filter(|v| !v.agreement.is_empty())
            .collect();
        vs.sort_by(|a, b| {
            naming::study_rank(&a.variant)
                .cmp(&naming::study_rank(&b.variant))
                .then(a.variant.cmp(&b.variant))
        });
        for v in vs {
            let mut heads: Vec<&String> = v.agreement.keys().collect();
            // avg, cls, then the distillation heads.
            heads.sort_by_key(|h| (!h.starts_with("avg"), !h.starts_with("cls"), h.to_string()));
            for h in heads {
                let cells: Vec<String> = v.agreement[h]
                    .iter()
                    .map(|(t, a)| {
                        let r = v
                            .repeats_errors
                            .get(h)
                            .and_then(|r| r.get(t))
                            .map_or("-".into(), |r| pct(*r));
                        format!("{t} {} ({r})", pct(*a))
                    })
                    .collect();
                writeln!(
                    md,
                    "| {} | {} ({}) | {h} | {} |",
                    s.train,
                    v.variant,
                    v.evaluated,
                    cells.join(", ")
                )
                .ok();
            }
        }
    }
}

/// Test accuracy against training-set size, one line per variant, with its
/// seed sd as bars.
fn chart(study: &Study, path: &Path) -> Result<()> {
    let mut by_variant: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for s in &study.sizes {
        for v in &s.variants {
            let (m, sd) = mean_sd(&v.test);
            by_variant
                .entry(&v.variant)
                .or_default()
                .push((s.train as f64, m, sd));
        }
    }
    let mut series: Vec<Series> = by_variant
        .into_iter()
        .map(|(v, pts)| Series::with_sd(v, pts))
        .collect();
    // The legend in the order of the tables.
    series.sort_by(|a, b| {
        naming::study_rank(&a.label)
            .cmp(&naming::study_rank(&b.label))
            .then(a.label.cmp(&b.label))
    });
    Chart::new(
        "Student test accuracy vs training images",
        "Training images",
        "Test accuracy",
        &series,
    )
    .spread(Spread::Bars)
    .size(1100, 600)
    .write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, test: &[f64], val: &[f64]) -> VariantResult {
        VariantResult {
            variant: name.into(),
            test: test.to_vec(),
            val: val.to_vec(),
            heads: BTreeMap::new(),
            epochs: 1,
            agreement: BTreeMap::new(),
            repeats_errors: BTreeMap::new(),
            evaluated: 0,
        }
    }

    fn size(variants: Vec<VariantResult>) -> SizeResult {
        SizeResult {
            run: "r".into(),
            train: 1000,
            val: 1000,
            test: 10000,
            teachers: vec![],
            diversity: vec![],
            variants,
            teacher_test_agreement: BTreeMap::new(),
        }
    }

    #[test]
    fn verdict_picks_by_val_and_compares_test() {
        // ensemble-b is best on test but ensemble-a on val: the verdict uses a.
        let s = size(vec![
            v("cnn", &[0.80, 0.81, 0.79], &[0.70, 0.70, 0.70]),
            v("involution", &[0.82, 0.82, 0.82], &[0.69, 0.69, 0.69]),
            v("ensemble-a", &[0.81, 0.81, 0.81], &[0.75, 0.75, 0.75]),
            v("ensemble-b", &[0.90, 0.90, 0.90], &[0.71, 0.71, 0.71]),
        ]);
        let d = verdict(&s).unwrap();
        assert_eq!(d.single.variant, "cnn");
        assert_eq!(d.ensemble.variant, "ensemble-a");
        assert!((d.gain - 0.01).abs() < 1e-9);
        // sd of cnn is 0.01: a 1-point gain is not above two sd's.
        assert_eq!(d.passes, Some(false));
        let s = size(vec![
            v("cnn", &[0.80, 0.80, 0.80], &[0.70; 3]),
            v("ensemble", &[0.81, 0.81, 0.812], &[0.71; 3]),
        ]);
        assert_eq!(verdict(&s).unwrap().passes, Some(true));
        // One seed each: no verdict yet.
        let s = size(vec![
            v("cnn", &[0.80], &[0.70]),
            v("ensemble", &[0.9], &[0.71]),
        ]);
        assert_eq!(verdict(&s).unwrap().passes, None);
        assert!(verdict(&size(vec![v("none", &[0.7], &[0.7])])).is_none());
        // A longer budget or another store (a patience or views curve's
        // point) is never picked, however well it does on val.
        let s = size(vec![
            v("cnn-stems", &[0.80; 3], &[0.70; 3]),
            v("cnn-stems-ep800", &[0.90; 3], &[0.90; 3]),
            v("ensemble-stems", &[0.81; 3], &[0.71; 3]),
            v("ensemble-stems-ep800", &[0.95; 3], &[0.95; 3]),
            v("ensemble-stems-k256", &[0.96; 3], &[0.96; 3]),
        ]);
        let d = verdict(&s).unwrap();
        assert_eq!(
            (d.single.variant.as_str(), d.ensemble.variant.as_str()),
            ("cnn-stems", "ensemble-stems")
        );
    }

    #[test]
    fn verdict_row_says_how_many_settings_it_picked_from() {
        let full = size(vec![
            v("none", &[0.7; 3], &[0.7; 3]),
            v("cnn", &[0.80; 3], &[0.70; 3]),
            v("involution-stems", &[0.81; 3], &[0.72; 3]),
            v("ensemble", &[0.80; 3], &[0.71; 3]),
            v("ensemble-stems", &[0.82; 3], &[0.73; 3]),
        ]);
        let mut part = size(vec![
            v("none", &[0.7; 3], &[0.7; 3]),
            v("involution-stems", &[0.83; 3], &[0.74; 3]),
            v("ensemble-stems", &[0.84; 3], &[0.75; 3]),
        ]);
        part.train = 4000;
        let md = markdown(
            &Study {
                sizes: vec![full, part],
            },
            "kd study",
        );
        let rows: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| 1000 | 4 of 4 |") || l.starts_with("| 4000 | 2 of 4 |"))
            .collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows[1].contains("| involution-stems |") && rows[1].contains("| ensemble-stems |"));
    }

    #[test]
    fn heads_against_teachers_section() {
        let mut sizes = vec![size(vec![v("none", &[0.7], &[0.7])])];
        let mut md = String::new();
        heads_and_teachers(&mut md, &sizes);
        assert!(md.is_empty(), "no evaluation, no section: {md}");

        let mut e = v("ensemble", &[0.8], &[0.8]);
        let fig = |a: f64, b: f64| {
            BTreeMap::from([("cnn".to_string(), a), ("involution".to_string(), b)])
        };
        e.agreement = BTreeMap::from([
            ("dist_involution".to_string(), fig(0.861, 0.865)),
            ("avg".to_string(), fig(0.8655, 0.8653)),
        ]);
        e.repeats_errors = BTreeMap::from([("dist_involution".to_string(), fig(0.594, 0.5775))]);
        e.evaluated = 3;
        sizes[0].variants.push(e);
        sizes[0]
            .teacher_test_agreement
            .insert("cnn vs involution".into(), 0.8834);
        heads_and_teachers(&mut md, &sizes);
        assert!(
            md.contains("- 1000 images: teachers cnn vs involution agree on 88.34% of test."),
            "{md}"
        );
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1000 |")).collect();
        assert_eq!(
            rows,
            [
                "| 1000 | ensemble (3) | avg | cnn 86.55 (-), involution 86.53 (-) |",
                "| 1000 | ensemble (3) | dist_involution | cnn 86.10 (59.40), involution 86.50 (57.75) |",
            ]
        );
    }
}
