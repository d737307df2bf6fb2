//! `accuracy-vs-size.png`.

use super::Study;
use crate::error::Result;
use crate::naming;
use crate::numbers::mean_sd;
use crate::plot::{Chart, Series, Spread};
use std::collections::BTreeMap;
use std::path::Path;

/// Test accuracy against training-set size, one line per variant, with its
/// seed sd as bars.
pub(super) fn chart(study: &Study, path: &Path) -> Result<()> {
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
