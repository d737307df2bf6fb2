//! The report's tables: teachers, students per variant with their verdict,
//! epoch times by teacher source, and the store.

use super::*;

/// The `arch` of a teacher imported from TorchScript.
pub(super) const IMPORTED_ARCH: &str = "torchscript";

pub(super) fn teacher_section(md: &mut String, teachers: &[(String, PathBuf)]) -> Result<()> {
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
            "| {name} | {} | {} | {} | {rate} | {epochs} |",
            teacher_architecture(p, &t),
            t.params,
            pct(t.test_accuracy),
        )
        .ok();
    }
    Ok(())
}

pub(super) fn test_accuracy(s: &Student) -> f64 {
    s.metrics.test_accuracy
}

/// The mean test accuracy over a group's seeds.
pub(super) fn mean_accuracy(runs: &[Student]) -> f64 {
    mean_sd(&runs.iter().map(test_accuracy).collect::<Vec<_>>()).0
}

pub(super) fn student_section(md: &mut String, groups: &Groups) {
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
pub(super) fn ordered(groups: &Groups) -> Vec<(&String, &Vec<Student>)> {
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
pub(super) fn head_means(runs: &[Student]) -> String {
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
pub(super) fn verdict(groups: &Groups, tag: &str) -> Option<String> {
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
pub(super) fn epoch_time_section(md: &mut String, groups: &Groups) {
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

pub(super) fn cache_section(md: &mut String, store: &Path) -> Result<()> {
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
