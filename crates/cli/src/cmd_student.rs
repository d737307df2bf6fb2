//! `kd student train`: flags laid over the profile's `[students.<variant>]`
//! section, the logit source (`--teachers`) opened, then the `student` stage.
//! `kd student eval`: a finished student's heads against its teachers (found
//! through the store it was trained from) and any others given.

use crate::data_parallel::{DistArgs, place};
use crate::gpu_args::GpuArgs;
use crate::setting_flag::setting;
use crate::ui::{Bars, out, outcome};
use anyhow::{Context, bail};
use kd_core::amp::Precision;
use kd_core::fit::FitOptions;
use kd_core::manifest::{Manifest, write_json};
use kd_core::metrics::StudentEval;
use kd_core::profile::{DEFAULT_DEVICE, Layered, Overlay, Profile, layered};
use kd_core::stage::RunOptions;
use kd_logit_cache::LogitStore;
use kd_student::{Distill, Source, Stem, StudentConfig, TokenMode, Weighting, train_stage};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Train the ViT student into DIR (weights, config, metrics, curves, manifest).
    Train(TrainArgs),
    /// Evaluate a finished student on a split: the accuracy of each head
    /// (avg, cls, dist_<teacher>) and each head's agreement with every
    /// teacher and share of its mistakes repeated. Its own teachers are found
    /// through the logit store it was trained from; --teacher adds others.
    Eval(EvalArgs),
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Student artifact directory (from `kd student train`).
    #[arg(long)]
    student: PathBuf,
    /// Dataset artifact directory (default: the one the student was trained on).
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[arg(long, default_value = "test")]
    split: String,
    /// A teacher artifact to compare the heads with, besides the student's
    /// own (repeatable): e.g. the plain teachers beside cross-fitted ones, or
    /// any teacher beside a student trained without one (a control).
    #[arg(long = "teacher")]
    teachers: Vec<PathBuf>,
    /// Compare with the --teacher directories only (for a live-teacher
    /// student, or a store whose teachers are gone).
    #[arg(long)]
    only_given: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = DEFAULT_DEVICE)]
    device: String,
    /// Print the evaluation as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the evaluation as JSON to FILE (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
// `--alpha -0.1` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
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
    #[command(flatten)]
    settings: StudentSettings,
    /// Rerun from scratch even if the artifact is up to date or a checkpoint exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    dist: DistArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// The `[students.<variant>]` settings as flags: each one given replaces
/// the profile's key of the same name.
#[derive(clap::Args, serde::Serialize)]
// `--alpha -0.1` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
struct StudentSettings {
    /// Architecture preset.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(kd_student::vit::PRESETS))]
    preset: Option<String>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate (AdamW, warmup then cosine).
    #[arg(long)]
    lr: Option<f64>,
    /// Weight of the teachers against the labels (0..1).
    #[arg(long)]
    alpha: Option<f64>,
    /// Distillation temperature.
    #[arg(long)]
    tau: Option<f64>,
    /// soft (KL at temperature tau) or hard (teacher argmax).
    #[arg(long, value_parser = setting::<Distill>())]
    distill: Option<Distill>,
    /// per-teacher (one token each) or averaged (one token, mean teacher logits).
    #[arg(long, value_parser = setting::<TokenMode>())]
    tokens: Option<TokenMode>,
    /// Patch embedding: patch (DeiT: one strided conv, free distillation
    /// tokens) or conv-involution (CivT: patch tokens are the sum of a
    /// convolution stem and an involution stem; each teacher's distillation
    /// token is the mean of the stem matching its arch).
    #[arg(long, value_parser = setting::<Stem>())]
    stem: Option<Stem>,
    /// How each view's distillation weight is shared among the teachers:
    /// uniform (1/T each), confidence (softmax over teachers of minus their
    /// cross-entropy on the label) or correct (only the teachers whose argmax
    /// is the label, renormalised; a view none gets right keeps only the label loss).
    #[arg(long, value_parser = setting::<Weighting>())]
    weighting: Option<Weighting>,
    /// Evaluate every N epochs (and after the last); evaluation on a large
    /// test split can cost more than short epochs.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Expected distillation token count (refused if the teachers imply another).
    #[arg(long)]
    dist_tokens: Option<usize>,
    /// Seed of the initialisation, the views and the batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Training forward precision: f32, or bf16 (autocast compute over f32
    /// master weights; for GPUs with bf16 tensor cores).
    #[arg(long, value_parser = setting::<Precision>())]
    precision: Option<Precision>,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Train(a) => train(a),
        Cmd::Eval(a) => eval(a),
    }
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let device = kd_core::parse_device(&a.device)?;
    let ctx = || format!("student eval of {}", a.student.display());
    let man = Manifest::read_stage(&a.student, kd_student::STAGE).with_context(ctx)?;
    let dataset = match &a.dataset {
        Some(d) => d.clone(),
        None => input_dir(&a.student, &man, "dataset").with_context(ctx)?,
    };
    let mut dirs = if a.only_given {
        vec![]
    } else {
        own_teachers(&a.student, &man).with_context(ctx)?
    };
    for d in &a.teachers {
        if !dirs.iter().any(|o| same_dir(o, d)) {
            dirs.push(d.clone());
        }
    }
    let mut teachers = vec![];
    for d in &dirs {
        teachers.push(
            kd_teachers::load(d, device)
                .with_context(|| format!("teacher {}", d.display()))
                .with_context(ctx)?,
        );
    }
    let bars = Bars::default();
    let e = kd_student::evaluate(&a.student, &dataset, &a.split, &teachers, device, &bars)
        .with_context(ctx)?;
    if let Some(f) = &a.out {
        write_json(f, &e).with_context(ctx)?;
    }
    if a.json {
        out(serde_json::to_string_pretty(&e)?);
    } else {
        out(eval_table(&e));
    }
    Ok(())
}

/// Where input `role` of the artifact in `dir` is now (recorded path, or the
/// same place relative to the artifact).
fn input_dir(dir: &Path, man: &Manifest, role: &str) -> anyhow::Result<PathBuf> {
    Ok(man.input(dir, role)?.verify_at(dir)?)
}

/// The teacher directories behind a cache-trained student's heads: its
/// store's `teacher:<name>` inputs, each checked unchanged since the store
/// was built. A live-teacher student records checkpoints, not directories.
fn own_teachers(dir: &Path, man: &Manifest) -> anyhow::Result<Vec<PathBuf>> {
    let source = &man.config["source"];
    let names: Vec<&str> = source["teachers"]
        .as_array()
        .map(|ts| ts.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    match source["kind"].as_str() {
        Some("cache") => {
            let store = input_dir(dir, man, "logits")?;
            let sman = Manifest::read(&store)?;
            names
                .iter()
                .map(|n| input_dir(&store, &sman, &format!("teacher:{n}")))
                .collect()
        }
        Some("live") => bail!(
            "{}: trained with live teachers, whose directories it does not record; give them with --teacher and --only-given",
            dir.display()
        ),
        _ => Ok(vec![]),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The evaluation as a table: one row per head, a column pair per teacher.
fn eval_table(e: &StudentEval) -> String {
    let pct = |v: Option<&f64>| v.map_or("-".to_string(), |v| format!("{:.2}", 100.0 * v));
    let mut s = format!(
        "{} on {} [{}], {} images{}\n",
        e.student,
        e.dataset,
        e.split,
        e.samples,
        if e.same_dataset {
            ""
        } else {
            " (not the dataset it was trained on)"
        }
    );
    // The teachers, then their averaged prediction where it was compared.
    let mut against: Vec<&str> = e.teachers.iter().map(|t| t.name.as_str()).collect();
    if e.averaged_accuracy.is_some() {
        against.push(kd_student::eval::AVERAGED);
    }
    let mut header = format!("{:<24} {:>8}", "head", "acc %");
    for t in &against {
        header += &format!(
            "  {:>14}  {:>14}",
            format!("agree {t}"),
            format!("repeats {t}")
        );
    }
    s += header.trim_end();
    s.push('\n');
    for h in &e.heads {
        let mut row = format!("{:<24} {:>8}", h.head, pct(Some(&h.accuracy)));
        for &t in &against {
            row += &format!(
                "  {:>14}  {:>14}",
                pct(h.agreement.get(t)),
                pct(h.repeats_errors.get(t))
            );
        }
        s += row.trim_end();
        s.push('\n');
    }
    for t in &e.teachers {
        s += &format!(
            "teacher {} ({}): acc {} %",
            t.name,
            t.arch,
            pct(Some(&t.accuracy))
        );
        for (o, v) in &t.agreement {
            s += &format!(", agrees with {o} on {} %", pct(Some(v)));
        }
        s.push('\n');
    }
    if let Some(a) = &e.averaged_accuracy {
        s += &format!(
            "teachers averaged (mean of softmaxes): acc {} %\n",
            pct(Some(a))
        );
    }
    s.trim_end().to_string()
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
    let flags = Overlay::of(&a.settings);
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
        &["teachers", "live"],
        a.device.as_deref(),
    )?;
    // Nonsense settings stop here, before any data loads.
    cfg.validate()?;
    let sync_every = a.gpu.apply()?;
    let asked = kd_core::parse_device(&device_spec)?;
    let grad_reduce = a.dist.grad_reduce()?;
    let dist = a.dist.join(asked)?;
    let device = place(asked, &device_spec, dist.as_deref())?;
    // A source string, or (from `make`'s profiles) a list of teacher names.
    let given = run.remove("teachers").map(|v| v.as_str().map(String::from));
    let spec = match (a.teachers, given) {
        (Some(flag), _) => flag,
        (None, Some(Some(source))) => source,
        (None, Some(_)) => bail!(
            "[{section}] names its teachers (teachers = [...]), which `make` turns into --teachers; run directly, give --teachers (cache:DIR, live:DIR,... or none)"
        ),
        (None, None) => bail!(
            "no --teachers given (cache:DIR, live:DIR,... or none) and none in the profile section"
        ),
    };
    let source = parse_source(&spec, device)?;
    let bars = Bars::default();
    let opts = FitOptions {
        dist,
        sync_every,
        grad_reduce,
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
