//! `kd student train`: flags laid over the profile's `[students.<variant>]`
//! section, the logit source (`--teachers`) opened, then the `student` stage.

use crate::data_parallel::{DistArgs, place};
use crate::ui::{Bars, outcome};
use anyhow::{Context, bail};
use kd_core::amp::Precision;
use kd_core::fit::FitOptions;
use kd_core::profile::{Layered, Overlay, Profile, layered, parse_setting};
use kd_core::stage::RunOptions;
use kd_logit_cache::LogitStore;
use kd_student::{Distill, Source, Stem, StudentConfig, TokenMode, Weighting, train_stage};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Train the ViT student into DIR (weights, config, metrics, curves, manifest).
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Dataset artifact directory (from `kd data import`).
    #[arg(long)]
    dataset: PathBuf,
    /// Where teacher logits come from: `cache:DIR` (all teachers of a logit
    /// store), `cache:DIR#cnn,involution` (a subset, in token order),
    /// `live:TEACHER_DIR,...` (teachers run on every batch) or `none`.
    /// Default: the profile section's `teachers`.
    #[arg(long)]
    teachers: Option<String>,
    /// Architecture preset: vit-test, vit-tiny, vit-small.
    #[arg(long)]
    preset: Option<String>,
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// auto, cpu, cuda or cuda:N (default: the profile section's `device`, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Profile TOML; its [students.<variant>] section gives defaults.
    #[arg(long, requires = "variant")]
    profile: Option<PathBuf>,
    /// Section of the profile: none, cnn, involution, ensemble, ...
    #[arg(long, requires = "profile")]
    variant: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the teachers against the labels (0..1).
    #[arg(long)]
    alpha: Option<f64>,
    /// Distillation temperature.
    #[arg(long)]
    tau: Option<f64>,
    /// soft (KL at temperature tau) or hard (teacher argmax).
    #[arg(long, value_parser = parse_setting::<Distill>)]
    distill: Option<Distill>,
    /// per-teacher (one token each) or averaged (one token, mean teacher logits).
    #[arg(long, value_parser = parse_setting::<TokenMode>)]
    tokens: Option<TokenMode>,
    /// Patch embedding: patch (DeiT: one strided conv, free distillation
    /// tokens) or conv-involution (CivT: patch tokens are the sum of a
    /// convolution stem and an involution stem; each teacher's distillation
    /// token is the mean of the stem matching its arch).
    #[arg(long, value_parser = parse_setting::<Stem>)]
    stem: Option<Stem>,
    /// How each view's distillation weight is shared among the teachers:
    /// uniform (1/T each), confidence (softmax over teachers of minus their
    /// cross-entropy on the label) or correct (only the teachers whose argmax
    /// is the label, renormalised; a view none gets right keeps only the label loss).
    #[arg(long, value_parser = parse_setting::<Weighting>)]
    weighting: Option<Weighting>,
    /// Evaluate every N epochs (and after the last); evaluation on a large
    /// test split can cost more than short epochs.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Expected distillation token count (refused if the teachers imply another).
    #[arg(long)]
    dist_tokens: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Training forward precision: f32, or bf16 (autocast compute over f32
    /// master weights; for GPUs with bf16 tensor cores).
    #[arg(long, value_parser = parse_setting::<Precision>)]
    precision: Option<Precision>,
    /// Rerun from scratch even if the artifact is up to date or a checkpoint exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    dist: DistArgs,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Train(a) => train(a),
    }
}

/// Turn a SOURCE spec into a [`Source`].
fn parse_source(spec: &str, device: tch::Device) -> anyhow::Result<Source> {
    let spec = spec.trim();
    if spec == "none" {
        return Ok(Source::None);
    }
    if let Some(rest) = spec.strip_prefix("cache:") {
        let (dir, subset) = match rest.split_once('#') {
            Some((d, s)) => (d, Some(s)),
            None => (rest, None),
        };
        let store = LogitStore::open(Path::new(dir))?;
        let teachers = match subset {
            Some(s) => s
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            None => store.teachers().to_vec(),
        };
        return Ok(Source::Cache { store, teachers });
    }
    if let Some(rest) = spec.strip_prefix("live:") {
        let mut ts = vec![];
        for dir in rest.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            ts.push(kd_teachers::load(Path::new(dir), device)?);
        }
        if ts.is_empty() {
            bail!("--teachers '{spec}': no teacher directory after 'live:'");
        }
        return Ok(Source::Live(ts));
    }
    bail!("--teachers '{spec}': expected cache:DIR, cache:DIR#name,..., live:DIR,... or none")
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let prof = a.profile.as_deref().map(Profile::load).transpose()?;
    let section = format!("students.{}", a.variant.as_deref().unwrap_or_default());
    if let Some(p) = &prof
        && p.table_at(&section).is_none()
    {
        bail!("{}: no [{section}] section", p.path.display());
    }
    let mut flags = Overlay::default();
    flags
        .set("preset", a.preset.clone())
        .set("epochs", a.epochs)
        .set("batch_size", a.batch_size)
        .set("lr", a.lr)
        .set("alpha", a.alpha)
        .set("tau", a.tau)
        .set("distill", a.distill)
        .set("tokens", a.tokens)
        .set("stem", a.stem)
        .set("weighting", a.weighting)
        .set("eval_every", a.eval_every)
        .set("dist_tokens", a.dist_tokens)
        .set("seed", a.seed)
        .set("precision", a.precision);
    // `teachers` says where the logits come from, not what is trained: the
    // source's own identity (store hash, checkpoints) enters the config.
    let Layered {
        config: cfg,
        mut run,
        device: device_spec,
    } = layered::<StudentConfig>(
        prof.as_ref(),
        &section,
        &flags,
        &["teachers"],
        a.device.as_deref(),
    )?;
    let dist = a.dist.join()?;
    let device = place(
        kd_core::parse_device(&device_spec)?,
        &device_spec,
        dist.as_deref(),
    );
    let spec = a.teachers.or(run.remove("teachers")).context(
        "no --teachers given (cache:DIR, live:DIR,... or none) and none in the profile section",
    )?;
    let source = parse_source(&spec, device)?;
    let bars = Bars::default();
    let opts = FitOptions {
        dist,
        ..Default::default()
    };
    let run = RunOptions::new(device, &bars).force(a.force).fit(opts);
    let o = train_stage(&cfg, &a.dataset, &source, &a.out, &run)
        .with_context(|| format!("student train into {}", a.out.display()))?;
    outcome(&a.out, &o, |m| {
        format!(
            "test accuracy {:.4} (teachers: {}, {:.0} images/s)",
            m.metrics["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            spec,
            m.metrics["images_per_sec"].as_f64().unwrap_or(0.0)
        )
    });
    Ok(())
}
