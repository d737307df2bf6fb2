//! `kd cache verify`: recompute sampled stored views with the teachers and
//! compare.

use crate::ui::{Bars, out};
use anyhow::{Context, bail};
use kd_core::manifest::Manifest;
use kd_core::parse_device;
use kd_logit_cache::StoreMeta;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The store's artifact directory.
    dir: PathBuf,
    /// (sample, view) pairs to recompute.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Seed choosing the pairs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    // The recomputation is the reference: full float32, as the build.
    kd_core::device::set_tf32(false)?;
    let device = parse_device(&a.device)?;
    let ctx = || format!("cache verify {}", a.dir.display());
    StoreMeta::read(&a.dir.join(kd_logit_cache::STORE)).with_context(ctx)?;
    let manifest = Manifest::read_stage(&a.dir, kd_logit_cache::STAGE).with_context(ctx)?;
    let mut teachers = vec![];
    for i in manifest
        .inputs
        .iter()
        .filter(|i| i.role.starts_with("teacher:"))
    {
        // Recorded as typed where the store was built; found from here.
        let dir = i.locate(&a.dir).with_context(ctx)?;
        teachers.push(
            kd_teachers::load(&dir, device).with_context(|| {
                format!("loading teacher {} recorded in the store", dir.display())
            })?,
        );
    }
    let r = kd_logit_cache::verify(&a.dir, &teachers, a.samples, a.seed, &Bars::default())
        .with_context(|| format!("cache verify {}", a.dir.display()))?;
    if a.json {
        out(serde_json::to_string_pretty(&r)?);
    } else {
        out(format!(
            "{}: {} shards decoded, {} (sample, view) pairs recomputed",
            a.dir.display(),
            r.shards_decoded,
            r.pairs
        ));
        for t in &r.teachers {
            out(format!(
                "{:<14} max |diff| {:.3e}  (max |logit| {:.2}, tolerance {:.3e})  {}",
                t.name,
                t.max_abs_diff,
                t.max_abs_logit,
                t.tolerance,
                if t.ok { "ok" } else { "MISMATCH" }
            ));
        }
    }
    if !r.ok {
        bail!(
            "{}: cached logits differ from the live teachers beyond the tolerance",
            a.dir.display()
        );
    }
    Ok(())
}
