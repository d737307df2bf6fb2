//! `kd report`: one markdown page (plus PNG plots) summarising a run
//! directory: teachers, students per variant (mean and spread over seeds),
//! epoch times of cached vs live vs no teacher, the cache's size, curves.

use crate::ui::{bytes, out};
use anyhow::Context;
use kd_core::manifest::{InputRef, Manifest, OutputRef, read_json};
use kd_core::stage::StageRun;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (data/runs/<profile>) holding dataset/, teachers/, logits/, student/.
    #[arg(long)]
    run: PathBuf,
    /// Output directory (default RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rewrite even if up to date.
    #[arg(long)]
    force: bool,
}

struct Student {
    metrics: Value,
    /// The `[students.*]` config the run was made with (its manifest).
    config: Value,
}

/// How a run distils, in a few words: what tells ablations apart in the table.
fn settings(cfg: &Value, source: &str) -> String {
    let mut s = if source == "none" {
        "labels only".to_string()
    } else {
        let f = |k: &str| cfg[k].as_f64().map_or("?".into(), |x| format!("{x}"));
        match cfg["distill"].as_str() {
            Some("hard") => format!("hard, alpha {}", f("alpha")),
            _ => format!("soft, tau {}, alpha {}", f("tau"), f("alpha")),
        }
    };
    if cfg["tokens"].as_str() == Some("averaged") {
        s.push_str(", one averaged token");
    }
    if cfg["stem"].as_str() == Some("conv-involution") {
        s.push_str(", CivT conv + involution stems");
    }
    if let Some(w) = cfg["weighting"].as_str() {
        write!(s, ", {w} weighting").ok();
    }
    if let Some(p) = cfg["precision"].as_str() {
        write!(s, ", {p}").ok();
    }
    s
}

pub(crate) fn sub_artifacts(dir: &Path, stage: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| Manifest::read_stage(p, stage).is_ok())
                .map(|p| {
                    (
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        p,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The `{tag}N` tail of a run name (`-seed2`, `-ep8`), else "".
fn numbered_tail<'a>(name: &'a str, tag: &str) -> &'a str {
    match name.rfind(tag) {
        Some(i)
            if name.len() > i + tag.len()
                && name[i + tag.len()..].chars().all(|c| c.is_ascii_digit()) =>
        {
            &name[i..]
        }
        _ => "",
    }
}

/// `ensemble-seed2` -> `ensemble`: runs that differ only by seed are grouped.
pub(crate) fn variant_of(name: &str) -> String {
    name[..name.len() - numbered_tail(name, "-seed").len()].to_string()
}

pub(crate) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().sum::<f64>() / n;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn epochs(m: &Value) -> &[Value] {
    m["epochs"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn mean_epoch_seconds(m: &Value) -> f64 {
    let e = epochs(m);
    e.iter()
        .filter_map(|r| r["train_seconds"].as_f64())
        .sum::<f64>()
        / e.len().max(1) as f64
}

/// The compared variants first, in the order of the method; anything else
/// (the live timing run, ablations) after them by name; then the same for
/// each longer budget.
fn ordered(groups: &BTreeMap<String, Vec<Student>>) -> Vec<(&String, &Vec<Student>)> {
    let rank = |v: &str| {
        COMPARED
            .iter()
            .position(|o| *o == v)
            .unwrap_or(COMPARED.len())
    };
    let mut v: Vec<_> = groups.iter().collect();
    // Longer budgets (`make long`) come after, in the same method order.
    v.sort_by_key(|(name, _)| {
        let suffix = budget_suffix(name);
        (
            suffix.len(),
            suffix.to_string(),
            rank(budget_base(name)),
            (*name).clone(),
        )
    });
    v
}

/// Each head's last-epoch test accuracy, averaged over a variant's seeds.
fn head_means(runs: &[Student]) -> String {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in runs {
        let Some(eval) = epochs(&r.metrics)
            .last()
            .and_then(|e| e["eval"].as_object())
        else {
            continue;
        };
        for (k, v) in eval {
            if let (Some(head), Some(x)) = (k.strip_prefix("test_acc_"), v.as_f64()) {
                if head != "avg" {
                    let e = sums.entry(head.to_string()).or_default();
                    e.0 += x;
                    e.1 += 1;
                }
            }
        }
    }
    sums.iter()
        .map(|(h, (s, n))| format!("{h} {}", pct(s / *n as f64)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The variants the method compares, in its order.
const COMPARED: [&str; 4] = ["none", "cnn", "involution", "ensemble"];

/// Whether `variant` is a compared variant at some budget (`cnn`, `cnn-ep8`).
fn is_compared(variant: &str) -> bool {
    COMPARED.contains(&budget_base(variant))
}

/// `cnn-ep8` -> `-ep8`: the budget tag of a `make long` run, else "".
fn budget_suffix(variant: &str) -> &str {
    numbered_tail(variant, "-ep")
}

/// `cnn-ep8` -> `cnn`: the method variant whatever the budget.
fn budget_base(variant: &str) -> &str {
    &variant[..variant.len() - budget_suffix(variant).len()]
}

/// One sentence on the claim being tested: does the ensemble beat no teacher
/// and each single teacher (differences of the seed means)? `suffix` picks a
/// budget's runs (`-ep8`: `ensemble-ep8` vs `none-ep8`, ...).
fn verdict(
    groups: &BTreeMap<String, Vec<Student>>,
    acc: impl Fn(&Student) -> f64,
    suffix: &str,
) -> Option<String> {
    let mean = |v: &str| {
        groups
            .get(&format!("{v}{suffix}"))
            .map(|g| mean_sd(&g.iter().map(&acc).collect::<Vec<_>>()).0)
    };
    let ens = mean("ensemble")?;
    let parts: Vec<String> = ["none", "cnn", "involution"]
        .iter()
        .filter_map(|v| mean(v).map(|m| format!("{:+.2} pts vs {v}{suffix}", 100.0 * (ens - m))))
        .collect();
    let who = if suffix.is_empty() {
        "Ensemble student".to_string()
    } else {
        format!("Ensemble student `ensemble{suffix}`")
    };
    (!parts.is_empty()).then(|| format!("{who}: {}.", parts.join(", ")))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let out_dir = a.out.clone().unwrap_or_else(|| a.run.join("report"));
    let teachers = sub_artifacts(&a.run.join("teachers"), "teacher");
    let students = sub_artifacts(&a.run.join("student"), "student");
    if students.is_empty() && teachers.is_empty() {
        anyhow::bail!(
            "{}: no finished teacher or student artifacts to report on",
            a.run.display()
        );
    }
    let mut inputs = vec![];
    for (n, p) in &teachers {
        inputs.push(InputRef::of(&format!("teacher:{n}"), p, "teacher")?);
    }
    let cache_dir = a.run.join("logits");
    let has_cache = Manifest::read_stage(&cache_dir, "cache").is_ok();
    if has_cache {
        inputs.push(InputRef::of("cache", &cache_dir, "cache")?);
    }
    for (n, p) in &students {
        inputs.push(InputRef::of(&format!("student:{n}"), p, "student")?);
    }
    let config = json!({ "run": a.run });
    if !StageRun::new("report", &out_dir, config.clone(), inputs.clone()).claim(a.force)? {
        out(format!("{}: up to date", out_dir.display()));
        return Ok(());
    }

    let mut md = String::new();
    writeln!(md, "# Report: `{}`\n", a.run.display())?;
    if let Ok(ds) = Manifest::read_stage(&a.run.join("dataset"), "data") {
        writeln!(
            md,
            "Dataset: {} samples per split {}.\n",
            ds.config["import"]["src"], ds.metrics["samples"]
        )?;
    }

    writeln!(
        md,
        "## Teachers\n\n| teacher | architecture | params | test accuracy (%) | train img/s | epochs |\n|---|---|---|---|---|---|"
    )?;
    for (name, p) in &teachers {
        let m: Value =
            read_json(&p.join("metrics.json")).with_context(|| format!("teacher {name}"))?;
        writeln!(
            md,
            "| {name} | {}/{} | {} | {} | {:.0} | {} |",
            m["arch"].as_str().unwrap_or("?"),
            m["preset"].as_str().unwrap_or("?"),
            m["params"],
            pct(m["test_accuracy"].as_f64().unwrap_or(f64::NAN)),
            m["train_images_per_sec"].as_f64().unwrap_or(f64::NAN),
            m["epochs"],
        )?;
    }

    let mut groups: BTreeMap<String, Vec<Student>> = BTreeMap::new();
    for (name, p) in &students {
        let metrics: Value =
            read_json(&p.join("metrics.json")).with_context(|| format!("student {name}"))?;
        let config = Manifest::read(p)?.config["student"].clone();
        groups
            .entry(variant_of(name))
            .or_default()
            .push(Student { metrics, config });
    }
    let acc = |s: &Student| s.metrics["test_accuracy"].as_f64().unwrap_or(f64::NAN);
    // Each run is compared with the no-teacher run of its budget (`none`, `none-ep8`).
    let baseline = |variant: &str| {
        groups
            .get(&format!("none{}", budget_suffix(variant)))
            .map(|g| {
                (
                    mean_sd(&g.iter().map(acc).collect::<Vec<_>>()).0,
                    epochs(&g[0].metrics).len(),
                )
            })
    };
    writeln!(
        md,
        "\n## Students\n\nTest accuracy of the averaged heads (the student's prediction), mean ± sample sd over seeds; \
         each head alone at the last epoch, averaged over seeds. Each run is compared with the no-teacher run of the same budget (`none`, or `none-ep8` for `make long`'s runs); a run with another epoch budget (the live-teacher timing run) is not.\n\n\
         | variant | source | distillation | epochs | seeds | test accuracy (%) | vs none (pts) | per head (%) | epoch time (s) | train img/s |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (variant, runs) in ordered(&groups) {
        let accs: Vec<f64> = runs.iter().map(acc).collect();
        let (m, sd) = mean_sd(&accs);
        let first = &runs[0].metrics;
        let source = first["source"].as_str().unwrap_or("?");
        let n_epochs = epochs(first).len();
        let secs = runs
            .iter()
            .map(|r| mean_epoch_seconds(&r.metrics))
            .sum::<f64>()
            / runs.len() as f64;
        let ips = runs
            .iter()
            .filter_map(|r| r.metrics["images_per_sec"].as_f64())
            .sum::<f64>()
            / runs.len() as f64;
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
            "| {variant} | {source} | {} | {n_epochs} | {} | {accuracy} | {vs_none} | {} | {secs:.1} | {ips:.0} |",
            settings(&runs[0].config, source),
            runs.len(),
            head_means(runs),
        )?;
    }
    let mut budgets: Vec<&str> = vec![""];
    budgets.extend(
        groups
            .keys()
            .filter_map(|k| k.strip_prefix("ensemble"))
            .filter(|s| !s.is_empty() && budget_suffix(s) == *s),
    );
    for suffix in budgets {
        if let Some(line) = verdict(&groups, acc, suffix) {
            writeln!(md, "\n{line}")?;
        }
    }

    // Epoch time of the same ensemble distillation, cached vs live, against no teacher.
    let secs_of = |v: &str| {
        groups.get(v).map(|g| {
            g.iter()
                .map(|s| mean_epoch_seconds(&s.metrics))
                .sum::<f64>()
                / g.len() as f64
        })
    };
    if let (Some(none), Some(cached)) = (secs_of("none"), secs_of("ensemble")) {
        writeln!(
            md,
            "\n## Epoch time\n\n| source | seconds per epoch | vs no teacher |\n|---|---|---|"
        )?;
        writeln!(md, "| none | {none:.1} | 1.00x |")?;
        writeln!(
            md,
            "| cached ensemble | {cached:.1} | {:.2}x |",
            cached / none
        )?;
        if let Some(live) = secs_of("ensemble-live") {
            writeln!(md, "| live ensemble | {live:.1} | {:.2}x |", live / none)?;
            writeln!(
                md,
                "\nLive teachers cost {:.2}x the cached store's epoch time.",
                live / cached
            )?;
        }
    }

    if has_cache {
        let store = cache_dir.join("logits.zarr");
        let arrays = kd_core::zarr::describe(&store)?;
        writeln!(
            md,
            "\n## Logit cache\n\n| array | shape | dtype | stored | bytes per (sample, view) | compression |\n|---|---|---|---|---|---|"
        )?;
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
            )?;
        }
    }

    std::fs::create_dir_all(&out_dir)?;
    // One curve per variant: the mean over its seeds, epoch by epoch. Only
    // the compared variants when there are any: ablations would drown them.
    let any_compared = groups.keys().any(|v| is_compared(v));
    let series = |key: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        ordered(&groups)
            .into_iter()
            .filter(|(variant, _)| !any_compared || is_compared(variant))
            .map(|(variant, runs)| {
                let mut by_epoch: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
                for r in runs {
                    for e in epochs(&r.metrics) {
                        let (Some(ep), Some(v)) = (
                            e["epoch"].as_u64(),
                            e["eval"][key].as_f64().or(e["train"][key].as_f64()),
                        ) else {
                            continue;
                        };
                        let acc = by_epoch.entry(ep).or_default();
                        acc.0 += v;
                        acc.1 += 1;
                    }
                }
                let pts = by_epoch
                    .into_iter()
                    .map(|(ep, (sum, n))| (ep as f64, sum / n as f64))
                    .collect();
                let label = match runs.len() {
                    1 => variant.clone(),
                    n => format!("{variant} (mean of {n} seeds)"),
                };
                (label, pts)
            })
            .collect()
    };
    if !groups.is_empty() {
        kd_core::plot::line_chart(
            &out_dir.join("accuracy.png"),
            "student test accuracy (averaged heads)",
            "epoch",
            "accuracy",
            &series("test_acc_avg"),
        )?;
        kd_core::plot::line_chart(
            &out_dir.join("loss.png"),
            "student training loss",
            "epoch",
            "loss",
            &series("loss"),
        )?;
        writeln!(
            md,
            "\n## Curves\n\nThe compared variants (ablations are in the table only).\n\n![test accuracy per epoch](accuracy.png)\n\n![training loss per epoch](loss.png)"
        )?;
    }
    std::fs::write(out_dir.join("report.md"), &md)?;
    let mut m = Manifest::new("report", config);
    m.inputs = inputs;
    for f in ["report.md", "accuracy.png", "loss.png"] {
        if out_dir.join(f).exists() {
            m.outputs.push(OutputRef::of(&out_dir, f, false)?);
        }
    }
    m.write(&out_dir)?;
    out(md);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(_name: &str, acc: f64) -> Student {
        Student {
            metrics: json!({ "test_accuracy": acc, "epochs": [] }),
            config: json!({}),
        }
    }

    #[test]
    fn settings_name_what_an_ablation_changes() {
        let soft = json!({"distill": "soft", "tau": 1.0, "alpha": 0.5, "tokens": "per-teacher"});
        assert_eq!(settings(&soft, "cache"), "soft, tau 1, alpha 0.5");
        assert_eq!(settings(&soft, "none"), "labels only");
        let abl =
            json!({"distill": "hard", "alpha": 0.8, "tokens": "averaged", "precision": "bf16"});
        assert_eq!(
            settings(&abl, "live"),
            "hard, alpha 0.8, one averaged token, bf16"
        );
    }

    fn groups(runs: &[(&str, f64)]) -> BTreeMap<String, Vec<Student>> {
        let mut g: BTreeMap<String, Vec<Student>> = BTreeMap::new();
        for (name, acc) in runs {
            g.entry(variant_of(name)).or_default().push(run(name, *acc));
        }
        g
    }

    #[test]
    fn seed_runs_group_with_their_variant() {
        assert_eq!(variant_of("ensemble-seed2"), "ensemble");
        assert_eq!(variant_of("ensemble-live"), "ensemble-live");
        assert_eq!(variant_of("none-seed"), "none-seed");
        let (m, sd) = mean_sd(&[0.80, 0.82, 0.84]);
        assert!((m - 0.82).abs() < 1e-12 && (sd - 0.02).abs() < 1e-12);
        assert_eq!(mean_sd(&[0.5]).1, 0.0);
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
        let acc = |s: &Student| s.metrics["test_accuracy"].as_f64().unwrap();
        assert_eq!(
            verdict(&g, acc, "").unwrap(),
            "Ensemble student: +3.50 pts vs none, +1.50 pts vs cnn, +3.00 pts vs involution."
        );
        assert!(verdict(&groups(&[("none", 0.8)]), acc, "").is_none());
        let long = groups(&[
            ("none-ep8", 0.85),
            ("cnn-ep8", 0.86),
            ("ensemble-ep8", 0.87),
        ]);
        assert_eq!(
            verdict(&long, acc, "-ep8").unwrap(),
            "Ensemble student `ensemble-ep8`: +2.00 pts vs none-ep8, +1.00 pts vs cnn-ep8."
        );
        assert_eq!(budget_suffix("involution-ep12"), "-ep12");
        assert_eq!(budget_suffix("ensemble-tau0.5"), "");
        assert_eq!(budget_suffix("x-ep"), "");
        assert!(is_compared("cnn-ep8") && is_compared("none"));
        assert!(!is_compared("ensemble-live") && !is_compared("ensemble-tau3"));
    }
}
