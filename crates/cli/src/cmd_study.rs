//! `kd study`: the data-efficiency study's report (issue 11). One run
//! directory per training-set size (`make study`), each with the same student
//! variants over several seeds; this page puts them side by side: test
//! accuracy against training-set size, the teachers and how much they
//! disagree at each size, and one verdict per size.
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

use crate::cmd_report::{mean_sd, pct, sub_artifacts, variant_of};
use crate::ui::out;
use anyhow::{Context, bail};
use kd_core::manifest::{Manifest, read_json, write_json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A run directory of the study (data/runs/study-<N>); repeat once per size.
    #[arg(long = "run", required = true)]
    runs: Vec<PathBuf>,
    /// Output directory: study.md, study.json, accuracy-vs-size.png.
    #[arg(long)]
    out: PathBuf,
    /// An earlier study.json: its sizes fill in for run directories that are
    /// absent or unfinished here (results committed by an earlier session).
    #[arg(long)]
    previous: Option<PathBuf>,
}

/// The prefixes of the single-teacher variants (`cnn`, `cnn-stems`, ...)
/// and of the ensemble variants. A single teacher with the same stems is
/// the fair rival of the stem ensemble, so it competes for "best single".
const SINGLE: [&str; 2] = ["cnn", "involution"];
const ENSEMBLE: &str = "ensemble";

fn is_single(variant: &str) -> bool {
    SINGLE
        .iter()
        .any(|s| variant == *s || variant.strip_prefix(s).is_some_and(|r| r.starts_with('-')))
}
/// The bar of issue 11: gain over the best single-teacher student, in accuracy.
const MIN_GAIN: f64 = 0.005;
/// Seeds each side needs before a verdict is given.
const MIN_SEEDS: usize = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TeacherResult {
    name: String,
    arch: String,
    test_accuracy: f64,
    /// Cross-fitted teachers: accuracy of each training image's own fold model.
    held_out_accuracy: Option<f64>,
    folds: Option<usize>,
    epochs: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Diversity {
    store: String,
    a: String,
    b: String,
    /// Top-1 agreement over all stored views.
    agreement: f64,
    kl_ab: f64,
    kl_ba: f64,
    only_a_right: Option<f64>,
    only_b_right: Option<f64>,
    averaged_accuracy: Option<f64>,
    /// Each teacher's accuracy on the stored (training) views.
    train_view_accuracy: BTreeMap<String, Option<f64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct VariantResult {
    variant: String,
    test: Vec<f64>,
    val: Vec<f64>,
    /// Mean test accuracy of each head alone (`cls`, `dist_<teacher>`).
    heads: BTreeMap<String, f64>,
    epochs: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SizeResult {
    run: String,
    train: usize,
    val: usize,
    test: usize,
    teachers: Vec<TeacherResult>,
    diversity: Vec<Diversity>,
    variants: Vec<VariantResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Study {
    sizes: Vec<SizeResult>,
}

fn split_counts(run: &Path) -> anyhow::Result<(usize, usize, usize)> {
    let m = Manifest::read_stage(&run.join("dataset"), "data")?;
    let n = |s: &str| m.metrics["samples"][s].as_u64().unwrap_or(0) as usize;
    Ok((n("train"), n("val"), n("test")))
}

fn teachers(run: &Path) -> anyhow::Result<Vec<TeacherResult>> {
    let mut v = vec![];
    for (name, p) in sub_artifacts(&run.join("teachers"), "teacher") {
        let m: Value =
            read_json(&p.join("metrics.json")).with_context(|| format!("teacher {name}"))?;
        v.push(TeacherResult {
            arch: format!(
                "{}/{}",
                m["arch"].as_str().unwrap_or("?"),
                m["preset"].as_str().unwrap_or("?")
            ),
            name,
            test_accuracy: m["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            held_out_accuracy: m["held_out_accuracy"].as_f64(),
            folds: m["folds"].as_u64().map(|k| k as usize),
            epochs: m["epochs"].as_u64(),
        });
    }
    Ok(v)
}

fn diversity(run: &Path) -> Vec<Diversity> {
    let mut v = vec![];
    for store in ["logits", "logits-crossfit", "logits-mixed"] {
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

fn last_eval(m: &Value) -> &Value {
    m["epochs"]
        .as_array()
        .and_then(|e| e.last())
        .map(|r| &r["eval"])
        .unwrap_or(&Value::Null)
}

fn variants(run: &Path) -> anyhow::Result<Vec<VariantResult>> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, p) in sub_artifacts(&run.join("student"), "student") {
        let m: Value =
            read_json(&p.join("metrics.json")).with_context(|| format!("student {name}"))?;
        groups.entry(variant_of(&name)).or_default().push(m);
    }
    let mut v = vec![];
    for (variant, runs) in groups {
        if variant == "ensemble-live" {
            continue; // a timing run, not part of the study
        }
        let mut heads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in &runs {
            if let Some(e) = last_eval(m).as_object() {
                for (k, x) in e {
                    if let (Some(h), Some(x)) = (k.strip_prefix("test_acc_"), x.as_f64()) {
                        heads.entry(h.to_string()).or_default().push(x);
                    }
                }
            }
        }
        v.push(VariantResult {
            test: runs
                .iter()
                .map(|m| m["test_accuracy"].as_f64().unwrap_or(f64::NAN))
                .collect(),
            val: runs
                .iter()
                .filter_map(|m| last_eval(m)["val_acc_avg"].as_f64())
                .collect(),
            heads: heads
                .into_iter()
                .map(|(h, xs)| (h, mean_sd(&xs).0))
                .collect(),
            epochs: runs[0]["epochs"].as_array().map_or(0, Vec::len),
            variant,
        });
    }
    Ok(v)
}

fn size_result(run: &Path) -> anyhow::Result<SizeResult> {
    let (train, val, test) = split_counts(run)?;
    Ok(SizeResult {
        run: run.display().to_string(),
        train,
        val,
        test,
        teachers: teachers(run)?,
        diversity: diversity(run),
        variants: variants(run)?,
    })
}

/// The variant with the highest mean val accuracy among `candidates`.
fn pick<'a>(s: &'a SizeResult, candidates: impl Fn(&str) -> bool) -> Option<&'a VariantResult> {
    s.variants
        .iter()
        .filter(|v| candidates(&v.variant) && !v.val.is_empty())
        .max_by(|a, b| mean_sd(&a.val).0.total_cmp(&mean_sd(&b.val).0))
}

struct Verdict<'a> {
    single: &'a VariantResult,
    ensemble: &'a VariantResult,
    gain: f64,
    /// `None` until both sides have [`MIN_SEEDS`] seeds.
    passes: Option<bool>,
}

impl Verdict<'_> {
    fn word(&self) -> String {
        match self.passes {
            Some(true) => "**yes**".into(),
            Some(false) => "no".into(),
            None => format!("too early: needs {MIN_SEEDS} seeds each"),
        }
    }
}

fn verdict(s: &SizeResult) -> Option<Verdict<'_>> {
    let single = pick(s, is_single)?;
    let ensemble = pick(s, |v| v.starts_with(ENSEMBLE))?;
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

fn cell(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let (m, sd) = mean_sd(xs);
    format!("{} ± {} ({})", pct(m), pct(sd), xs.len())
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

fn markdown(study: &Study, cmd: &str) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(md, "# Data-efficiency study\n\nMade by `{cmd}`.\n")?;
    writeln!(
        md,
        "Fashion-MNIST: at each size a stratified training subset and a held-out `val` split from the rest of the training data; test is the full test split. \
         Every variant is trained with the same step budget at a size; cells are test accuracy (%) of the averaged heads, mean ± sample sd (seeds). \
         Settings are chosen on `val`, never on test.\n"
    )?;
    let sizes = &study.sizes;
    let mut names: Vec<String> = vec![];
    for s in sizes {
        for v in &s.variants {
            if !names.contains(&v.variant) {
                names.push(v.variant.clone());
            }
        }
    }
    let order = |n: &str| {
        [
            "none",
            "cnn",
            "involution",
            "ensemble",
            "none-stems",
            "cnn-stems",
            "involution-stems",
            "ensemble-stems",
        ]
        .iter()
        .position(|x| *x == n)
        .unwrap_or(8)
    };
    names.sort_by(|a, b| order(a).cmp(&order(b)).then(a.cmp(b)));
    let header = |md: &mut String, what: &str| -> std::fmt::Result {
        write!(md, "| {what} |")?;
        for s in sizes {
            write!(md, " {} |", s.train)?;
        }
        writeln!(md)?;
        writeln!(md, "|---|{}", "---|".repeat(sizes.len()))
    };
    let table =
        |md: &mut String, title: &str, of: fn(&VariantResult) -> &[f64]| -> std::fmt::Result {
            writeln!(md, "## {title}\n")?;
            header(md, "variant \\ train images")?;
            for n in &names {
                write!(md, "| {n} |")?;
                for s in sizes {
                    let v = s.variants.iter().find(|v| &v.variant == n);
                    write!(md, " {} |", v.map_or("-".into(), |v| cell(of(v))))?;
                }
                writeln!(md)?;
            }
            Ok(())
        };
    table(&mut md, "Test accuracy (%) by training-set size", |v| {
        &v.test
    })?;
    writeln!(
        md,
        "\n![test accuracy against training-set size](accuracy-vs-size.png)\n"
    )?;
    table(
        &mut md,
        "Val accuracy (%): what the settings are chosen on",
        |v| &v.val,
    )?;
    writeln!(
        md,
        "\n## Verdict per size\n\nBest single-teacher student and best ensemble variant by mean val accuracy; their test accuracies compared. \
         Bar: the ensemble at least {:.1} point above, by more than two seed sd's.\n\n\
         | train images | best single (val) | its test (%) | best ensemble (val) | its test (%) | gain (pts) | bar met |\n|---|---|---|---|---|---|---|",
        100.0 * MIN_GAIN
    )?;
    for s in sizes {
        match verdict(s) {
            Some(v) => writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:+.2} | {} |",
                s.train,
                v.single.variant,
                cell(&v.single.test),
                v.ensemble.variant,
                cell(&v.ensemble.test),
                100.0 * v.gain,
                v.word()
            )?,
            None => writeln!(md, "| {} | - | - | - | - | - | not enough runs |", s.train)?,
        }
    }
    writeln!(
        md,
        "\n## Teachers\n\n| train images | teacher | arch | epochs | test (%) | held-out train (%) |\n|---|---|---|---|---|---|"
    )?;
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
            )?;
        }
    }
    writeln!(
        md,
        "\nA cross-fitted teacher's test accuracy is that of its fold models' averaged logits; its held-out accuracy is each training image's own fold model on it (what its stored view-0 logits score).\n\n\
         ## Teacher diversity on the stored training views\n\n\
         | train images | store | teachers | agreement (%) | KL a‖b / b‖a (nats) | only a right / only b right (%) | averaged (%) | each on its training views (%) |\n|---|---|---|---|---|---|---|---|"
    )?;
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
            )?;
        }
    }
    writeln!(
        md,
        "\n## Heads\n\nTest accuracy (%) of each head alone at the last epoch, mean over seeds (`avg` is the student's prediction).\n\n| train images | variant | heads |\n|---|---|---|"
    )?;
    for s in sizes {
        for v in &s.variants {
            let h: Vec<String> = v
                .heads
                .iter()
                .map(|(k, x)| format!("{k} {}", pct(*x)))
                .collect();
            writeln!(md, "| {} | {} | {} |", s.train, v.variant, h.join(", "))?;
        }
    }
    Ok(md)
}

fn plot(study: &Study, path: &Path) -> anyhow::Result<()> {
    let mut series: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for s in &study.sizes {
        for v in &s.variants {
            let (m, sd) = mean_sd(&v.test);
            series
                .entry(v.variant.clone())
                .or_default()
                .push((s.train as f64, m, sd));
        }
    }
    let series: Vec<(String, Vec<(f64, f64, f64)>)> = series.into_iter().collect();
    kd_core::plot::error_bar_chart(
        path,
        "student test accuracy vs training images",
        "training images",
        "accuracy",
        &series,
    )?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let previous: Vec<SizeResult> = match &a.previous {
        Some(p) if p.is_file() => {
            read_json::<Study>(p)
                .with_context(|| format!("{}: not a study.json", p.display()))?
                .sizes
        }
        _ => vec![],
    };
    let mut sizes = vec![];
    for run in &a.runs {
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
        bail!("no finished student runs under any --run directory (nor in --previous)");
    }
    sizes.sort_by_key(|s| s.train);
    let study = Study { sizes };
    std::fs::create_dir_all(&a.out).with_context(|| a.out.display().to_string())?;
    let cmd = std::env::args().collect::<Vec<_>>().join(" ");
    std::fs::write(a.out.join("study.md"), markdown(&study, &cmd)?)
        .with_context(|| a.out.join("study.md").display().to_string())?;
    write_json(&a.out.join("study.json"), &study)?;
    plot(&study, &a.out.join("accuracy-vs-size.png"))?;
    for s in &study.sizes {
        match verdict(s) {
            Some(v) => out(format!(
                "{} train images: best single {} {}, best ensemble {} {}, gain {:+.2} pts: {}",
                s.train,
                v.single.variant,
                cell(&v.single.test),
                v.ensemble.variant,
                cell(&v.ensemble.test),
                100.0 * v.gain,
                v.word().replace("**", "")
            )),
            None => out(format!(
                "{} train images: not enough runs for a verdict",
                s.train
            )),
        }
    }
    out(format!(
        "{}: study.md, study.json, accuracy-vs-size.png",
        a.out.display()
    ));
    Ok(())
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
        assert!(is_single("cnn") && is_single("involution-stems") && !is_single("cnnx"));
        assert!(!is_single("ensemble-stems") && !is_single("none-stems"));
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
    }
}
