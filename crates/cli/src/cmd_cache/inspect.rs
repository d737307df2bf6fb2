//! `kd cache inspect`: a store's shape, size, teachers and their agreement.

use crate::ui::{bytes, out};
use anyhow::Context;
use kd_logit_cache::{Dtype, SizeModel};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The store's artifact directory.
    dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.2}%", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let r = kd_logit_cache::inspect(&a.dir)
        .with_context(|| format!("cache inspect {}", a.dir.display()))?;
    if a.json {
        out(serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    out(format!(
        "{}: {} samples x {} views x {} classes, {:?}{}, {} shards, seed {}, dataset {}",
        r.dir,
        r.samples,
        r.views,
        r.classes,
        r.dtype,
        r.top_k.map(|k| format!(" top-{k}")).unwrap_or_default(),
        r.shards,
        r.seed,
        &r.dataset_hash[..r.dataset_hash.len().min(12)]
    ));
    out(format!(
        "stored {} of {} raw (ratio {:.2})",
        bytes(r.stored_bytes),
        bytes(r.raw_bytes),
        r.ratio
    ));
    let z = &r.size;
    out(format!(
        "raw size = N x K x (T x {} + {}) + N x {} bytes (N images, K views, T teachers; {} B per (sample, view, teacher) row, {} B of view parameters per view, {} B of folds per image)",
        z.row, z.view, z.folds, z.row, z.view, z.folds
    ));
    let row = |dtype, top_k| SizeModel::row_bytes(r.classes, dtype, top_k);
    let k = r.top_k.unwrap_or(r.classes.min(10));
    out(format!(
        "row bytes for {} classes: f32 {}, f16 {}, top-{k} f32 {}, top-{k} f16 {} (top-k rows add uint16 class indices)",
        r.classes,
        row(Dtype::F32, None),
        row(Dtype::F16, None),
        row(Dtype::F32, Some(k)),
        row(Dtype::F16, Some(k)),
    ));
    match &r.mix {
        None => out("mix: none (no mixed views)"),
        Some(m) => out(format!(
            "mix: {} (prob {}, alpha {}): {} of views mixed (mixup {}, cutmix {}); accuracies count unmixed views only",
            m.mode,
            m.prob,
            m.alpha,
            pct(Some(r.mixed_share)),
            pct(Some(r.mixup_share)),
            pct(Some(r.cutmix_share))
        )),
    }
    out(
        "array                          shape            dtype    chunk          shard          codecs                                stored      ratio  files",
    );
    for x in &r.arrays {
        out(format!(
            "{:<30} {:<16} {:<8} {:<14} {:<14} {:<37} {:>10} {:>6.2} {:>6}",
            x.path,
            format!("{:?}", x.shape),
            x.dtype,
            format!("{:?}", x.chunk),
            x.shard
                .as_ref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "-".into()),
            x.codecs.join(", "),
            bytes(x.stored_bytes),
            x.ratio,
            x.files
        ));
    }
    if let Some(why) = &r.no_labels {
        out(format!(
            "no accuracies (they need the dataset's labels): {why}"
        ));
    }
    out(
        "teacher        arch                  acc view0  acc all   entropy  bytes/sample  bytes/view",
    );
    for t in &r.teachers {
        out(format!(
            "{:<14} {:<21} {:>9} {:>8} {:>9.4} {:>13.1} {:>11.1}{}",
            t.name,
            t.arch,
            pct(t.acc_view0),
            pct(t.acc_all_views),
            t.mean_entropy,
            t.bytes_per_sample,
            t.bytes_per_view,
            t.folds
                .map(|k| format!("  cross-fitted, {k} folds (held-out accuracy)"))
                .unwrap_or_default()
        ));
    }
    for g in &r.agreement {
        out(format!(
            "agreement {} vs {}: {} on view 0, {} over all views; KL({a}||{b}) {:.4}, KL({b}||{a}) {:.4} nats; right where the other is wrong: {a} {}, {b} {}",
            g.a,
            g.b,
            pct(Some(g.view0)),
            pct(Some(g.all_views)),
            g.kl_ab,
            g.kl_ba,
            pct(g.only_a_right),
            pct(g.only_b_right),
            a = g.a,
            b = g.b,
        ));
    }
    if let Some(acc) = r.averaged_acc_all_views {
        out(format!(
            "averaged teachers (mean of softmaxes): {} over all {}views",
            pct(Some(acc)),
            if r.mix.is_some() { "unmixed " } else { "" }
        ));
    }
    Ok(())
}
