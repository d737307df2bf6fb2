//! `kd teacher train | eval | import`: flags laid over the profile's
//! `[teachers.<name>]` section, then the `teacher` stage, evaluation or a
//! TorchScript import.

use crate::data_parallel::{DistArgs, place};
use crate::gpu_args::GpuArgs;
use crate::setting_flag::setting;
use crate::ui::{Bars, out, outcome};
use anyhow::Context;
use kd_core::amp::Precision;
use kd_core::fit::FitOptions;
use kd_core::profile::{DEFAULT_DEVICE, Layered, Overlay, Profile, layered, parse_setting};
use kd_core::stage::RunOptions;
use kd_core::{MixMode, Partners};
use kd_teachers::{Arch, TeacherConfig, evaluate, evaluate_ensemble, train_stage};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Train a teacher on a dataset artifact into DIR (weights.safetensors,
    /// config.json, metrics.json, manifest.json). Killed at any point, the
    /// same command resumes from the last finished epoch.
    Train(TrainArgs),
    /// Re-evaluate a trained teacher on a split of a dataset artifact; given
    /// several (--teacher repeated), also their averaged prediction's
    /// accuracy and, for each pair, agreement and "only A right / only B
    /// right": whether an ensemble of them can teach more than its best.
    Eval(EvalArgs),
    /// Import a PyTorch teacher exported as TorchScript (`torch.jit.script`
    /// or `torch.jit.trace`): checked on the dataset's images, evaluated on
    /// its test split, written as an ordinary teacher artifact that `kd cache
    /// build`, `live:` students and `kd cache verify` use like any other.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The TorchScript file (`model.pt`). It must take `[B, C, H, W]` float
    /// images normalised with --mean/--std and return `[B, classes]` logits.
    #[arg(long)]
    torchscript: PathBuf,
    /// Teacher name (in stores, reports, student heads).
    #[arg(long)]
    name: String,
    /// Dataset artifact the teacher is for (classes and image size must match).
    #[arg(long)]
    dataset: PathBuf,
    /// Output teacher directory.
    #[arg(long)]
    out: PathBuf,
    /// Per-channel mean the module was trained with, pixels in [0, 1]
    /// (e.g. 0.485,0.456,0.406 for ImageNet); default: the dataset's.
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel std the module was trained with; default: the dataset's.
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    #[arg(long, default_value_t = 256)]
    eval_batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = DEFAULT_DEVICE)]
    device: String,
    /// Re-import even if the artifact is up to date.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
// `--lr -0.01` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Dataset artifact directory (from `kd data import`).
    #[arg(long)]
    dataset: PathBuf,
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// auto, cpu, cuda or cuda:N (default: the profile section's `device`, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Profile TOML; its [teachers.<name>] section gives defaults.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Teacher name (profile section and name in stores; default: the architecture).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    settings: TeacherSettings,
    /// Retrain even if the artifact is up to date (discards any checkpoint).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    dist: DistArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// The `[teachers.<name>]` settings as flags: each one given replaces the
/// profile's key of the same name (`fit.*` and `mix.*` in their tables).
#[derive(clap::Args, serde::Serialize)]
// `--lr -0.01` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
struct TeacherSettings {
    /// Architecture (default: the profile section's
    /// `arch`, else the section's name).
    #[arg(long, value_parser = setting::<Arch>())]
    arch: Option<Arch>,
    /// Preset (of --arch's kind: cnn-* for cnn, rednet-* for involution).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        kd_teachers::Arch::Cnn.presets().iter().chain(kd_teachers::Arch::Involution.presets())
    ))]
    preset: Option<String>,
    /// Training epochs.
    #[arg(long)]
    #[serde(rename = "fit.epochs")]
    epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    #[serde(rename = "fit.batch_size")]
    batch_size: Option<usize>,
    /// Peak learning rate (AdamW, warmup then cosine).
    #[arg(long)]
    #[serde(rename = "fit.lr")]
    lr: Option<f64>,
    /// Seed of the initialisation, the views and the batch order.
    #[arg(long)]
    #[serde(rename = "fit.seed")]
    seed: Option<u64>,
    /// Training forward precision: f32, or bf16 (autocast compute over f32
    /// master weights; for GPUs with bf16 tensor cores).
    #[arg(long, value_parser = setting::<Precision>())]
    #[serde(rename = "fit.precision")]
    precision: Option<Precision>,
    /// Cross-fit: train K fold models, each on all but one of K stratified
    /// folds of the training split; the logit cache then labels every
    /// training image with the model that never saw it (K times the cost).
    #[arg(long)]
    folds: Option<usize>,
    /// Evaluate on the test split every N epochs (and after the last).
    #[arg(long)]
    #[serde(rename = "fit.eval_every")]
    eval_every: Option<usize>,
    /// Mix training views with a random partner's, as `kd cache build --mix`
    /// does (trained on the mixed soft labels).
    #[arg(long, value_parser = setting::<MixMode>().named(&MixMode::NAMES))]
    #[serde(rename = "mix.mode")]
    mix: Option<MixMode>,
    /// Probability that a training view is mixed.
    #[arg(long)]
    #[serde(rename = "mix.prob")]
    mix_prob: Option<f64>,
    /// lambda ~ Beta(mix_alpha, mix_alpha).
    #[arg(long)]
    #[serde(rename = "mix.alpha")]
    mix_alpha: Option<f64>,
    /// Where a partner comes from: any (default) or chunk (one of the same
    /// stored chunk of the dataset: for datasets larger than the data cache).
    #[arg(long, value_parser = setting::<Partners>())]
    #[serde(rename = "mix.partners")]
    mix_partners: Option<Partners>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Teacher artifact directory (trained or imported); repeat for several.
    #[arg(long, required = true)]
    teacher: Vec<PathBuf>,
    /// Dataset artifact directory.
    #[arg(long)]
    dataset: PathBuf,
    /// train, val (when the dataset holds one) or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = DEFAULT_DEVICE)]
    device: String,
    /// Print the full report (with the confusion matrix) as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
        Cmd::Import(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let device = kd_core::parse_device(&a.device)?;
    let cfg = kd_teachers::torchscript::ImportConfig {
        name: a.name,
        mean: a.mean,
        std: a.std,
        eval_batch_size: a.eval_batch_size,
    };
    let bars = Bars::default();
    let o = kd_teachers::torchscript::import_stage(
        &a.torchscript,
        &cfg,
        &a.dataset,
        &a.out,
        &RunOptions::new(device, &bars).force(a.force),
    )
    .with_context(|| format!("teacher import into {}", a.out.display()))?;
    outcome(&a.out, &o, |m| {
        format!(
            "TorchScript teacher '{}', test_accuracy {:.4} ({:.0} inference img/s)",
            cfg.name,
            m.metrics["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            m.metrics["inference_images_per_sec"]
                .as_f64()
                .unwrap_or(f64::NAN)
        )
    });
    Ok(())
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let name = a
        .name
        .clone()
        .or_else(|| a.settings.arch.map(|x| x.name().to_string()));
    let prof = a.profile.as_deref().map(Profile::load).transpose()?;
    let section = match (&prof, &name) {
        (Some(p), Some(n)) => {
            let section = format!("teachers.{n}");
            if p.table_at(&section).is_none() {
                anyhow::bail!("{}: no [{section}] section", p.path.display());
            }
            section
        }
        (Some(p), None) => {
            anyhow::bail!(
                "{}: say which teacher with --name or --arch",
                p.path.display()
            )
        }
        (None, None) => anyhow::bail!("no --arch given (cnn or involution)"),
        (None, Some(n)) => format!("teachers.{n}"),
    };
    // A section named after an architecture needs no `arch` key.
    let arch_known = a.settings.arch.is_some()
        || prof
            .as_ref()
            .and_then(|p| p.table_at(&section))
            .is_some_and(|t| t.contains_key("arch"));
    let flags = Overlay::of(&a.settings);
    let Layered {
        config: mut cfg,
        device: device_spec,
        ..
    } = layered::<TeacherConfig>(prof.as_ref(), &section, &flags, &[], a.device.as_deref())?;
    if a.name.is_some() || cfg.name.is_none() {
        cfg.name = name.clone();
    }
    if !arch_known {
        cfg.arch = parse_setting::<Arch>(name.as_deref().unwrap_or_default()).map_err(|_| {
            anyhow::anyhow!(
                "no --arch given and the profile section names none (cnn or involution)"
            )
        })?;
    }
    let sync_every = a.gpu.apply()?;
    let asked = kd_core::parse_device(&device_spec)?;
    let grad_reduce = a.dist.grad_reduce()?;
    let dist = a.dist.join(asked)?;
    let device = place(asked, &device_spec, dist.as_deref())?;
    let bars = Bars::default();
    let opts = FitOptions {
        dist,
        sync_every,
        grad_reduce,
        ..Default::default()
    };
    let run = RunOptions::new(device, &bars).force(a.force).fit(opts);
    let o = train_stage(&cfg, &a.dataset, &a.out, &run)
        .with_context(|| format!("teacher train into {}", a.out.display()))?;
    outcome(&a.out, &o, |m| {
        format!(
            "test_accuracy {:.4} ({} params, {:.0} train img/s, {:.0} inference img/s)",
            m.metrics["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            m.metrics["params"],
            m.metrics["train_images_per_sec"]
                .as_f64()
                .unwrap_or(f64::NAN),
            m.metrics["inference_images_per_sec"]
                .as_f64()
                .unwrap_or(f64::NAN),
        )
    });
    Ok(())
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let device = kd_core::parse_device(&a.device)?;
    let bars = Bars::default();
    if let [one] = a.teacher.as_slice() {
        return eval_one(one, &a, device, &bars);
    }
    let dirs: Vec<&std::path::Path> = a.teacher.iter().map(PathBuf::as_path).collect();
    let rep = evaluate_ensemble(&dirs, &a.dataset, &a.split, device, &bars)
        .context("teacher eval of several teachers")?;
    if a.json {
        out(serde_json::to_string_pretty(&rep)?);
        return Ok(());
    }
    let s = &rep.stats;
    let mut text = format!(
        "{} teachers on {} [{}], {} images\n",
        s.teachers.len(),
        rep.dataset,
        rep.split,
        s.samples
    );
    for (n, acc) in s.teachers.iter().zip(&s.accuracy) {
        text += &format!("  {n}: accuracy {acc:.4}\n");
    }
    text += &format!(
        "  averaged softmax: accuracy {:.4} ({:+.2} points over the best, {})\n",
        s.averaged_accuracy,
        s.averaged_gain * 100.0,
        s.best
    );
    for p in &s.pairs {
        text += &format!(
            "  {} vs {}: agree {:.4}, only {} right {:.4}, only {} right {:.4}, both wrong {:.4}\n",
            p.a, p.b, p.agreement, p.a, p.only_a_right, p.b, p.only_b_right, p.both_wrong
        );
    }
    out(text.trim_end().to_string());
    Ok(())
}

fn eval_one(
    teacher: &std::path::Path,
    a: &EvalArgs,
    device: tch::Device,
    bars: &Bars,
) -> anyhow::Result<()> {
    let rep = evaluate(teacher, &a.dataset, &a.split, device, bars)
        .with_context(|| format!("teacher eval of {}", teacher.display()))?;
    if a.json {
        out(serde_json::to_string_pretty(&rep)?);
    } else {
        out(format!(
            "{} on {} [{}]: accuracy {:.4}, loss {:.4}, {} images, {:.0} img/s{}",
            rep.teacher,
            rep.dataset,
            rep.split,
            rep.stats.accuracy,
            rep.stats.loss,
            rep.stats.samples,
            rep.stats.images_per_sec,
            if rep.same_dataset {
                ""
            } else {
                " (not the dataset it was trained on)"
            }
        ));
    }
    Ok(())
}
