//! Reading one size's run directory: its dataset, teachers, stores,
//! student runs and their evaluations.

use super::{Diversity, STORES, SizeResult, TeacherResult, VariantResult};
use crate::error::Result;
use crate::naming::{self, LIVE};
use crate::numbers::mean_sd;
use crate::report::{
    dataset_metrics, finished_artifacts, read_student_metrics, read_teacher_metrics,
    teacher_architecture,
};
use kd_core::manifest::{Manifest, read_json};
use kd_core::metrics::{HeadEval, StudentEval, StudentMetrics};
use std::collections::BTreeMap;
use std::path::Path;

pub(super) fn size_result(run: &Path) -> Result<SizeResult> {
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
            arch: teacher_architecture(&p, &t),
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
