//! The report's charts: accuracy and loss curves over epochs (mean over
//! seeds), and the patience and views curves of `-ep<N>` / `-v<K>` runs.

use super::sections::{ordered, test_accuracy};
use super::*;

/// One setting a method was trained at several values of, off the
/// profile's own: a table of its points and a chart.
pub(super) struct Curve {
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
pub(super) const PATIENCE: Curve = Curve {
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
pub(super) const VIEWS: Curve = Curve {
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
pub(super) fn curve_section(
    md: &mut String,
    groups: &Groups,
    out: &Path,
    curve: &Curve,
) -> Result<()> {
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

/// One series per variant: the mean over its seeds epoch by epoch, with its
/// sd as a band. Only the compared variants when there are any: ablations
/// would drown them.
pub(super) fn seed_series(groups: &Groups, key: &str) -> Vec<Series> {
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

pub(super) fn write_curves(groups: &Groups, out: &Path) -> Result<()> {
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
