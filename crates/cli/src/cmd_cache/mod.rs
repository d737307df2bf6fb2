//! `kd cache build | finalize | inspect | verify | gallery`: the logit store's
//! subcommands. Flags are laid over the profile's `[cache]` section
//! (`kd_core::profile::layered`), then the library does the work.

mod inspect;
mod verify;

pub use inspect::InspectArgs;
pub use verify::VerifyArgs;

use crate::data_parallel::visible_gpus;
use crate::setting_flag::setting;
use crate::ui::{Bars, bytes, out};
use anyhow::Context;
use kd_core::parse_device;
use kd_core::profile::{Layered, Overlay, Profile, layered};
use kd_core::{Crop, MixMode, Partners};
use kd_core::{Outcome, RunOptions};
use kd_logit_cache::{BuildOptions, CacheConfig, Dtype, TeacherInput, parse_shard};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Run every teacher over K views of each training image (view 0 plain,
    /// the others from the shared view generator) into DIR/logits.zarr, then
    /// write DIR/manifest.json. Killed at any point, the same command resumes
    /// from the finished shards; `--shard i/n` splits the work over n workers.
    Build(Box<BuildArgs>),
    /// After `build --shard i/n` workers: check that every shard is present
    /// and decodes, then write the manifest.
    Finalize(FinalizeArgs),
    /// Layout (arrays, chunks, shards, codecs, bytes) and content (accuracy,
    /// agreement, entropy) of a finished store.
    Inspect(InspectArgs),
    /// Decode every shard, then recompute a random sample of (sample, view)
    /// logits with the live teachers; fails above the dtype's tolerance.
    Verify(VerifyArgs),
    /// A PNG of the stored views two teachers disagree on most (one per
    /// image), each labelled with its label and both teachers' top two
    /// classes: what each teacher's bias makes of a hard view.
    Gallery(crate::cmd_gallery::GalleryArgs),
}

#[derive(clap::Args)]
// `--mix-prob -0.5` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
pub struct BuildArgs {
    /// Dataset artifact directory (its train split is cached).
    #[arg(long)]
    dataset: PathBuf,
    /// Teacher artifact directory; repeat for each teacher.
    #[arg(long, required = true)]
    teacher: Vec<PathBuf>,
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// Profile TOML whose [cache] section gives defaults for every option.
    #[arg(long)]
    profile: Option<PathBuf>,
    #[command(flatten)]
    settings: CacheSettings,
    /// auto, cpu, cuda or cuda:N (default: the [cache] section's `device`, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Fill only shards s with s % n == i (i/n); then `kd cache finalize`.
    /// `auto` takes i/n from the scheduler: a Slurm job array
    /// (SLURM_ARRAY_TASK_ID, _MIN, _STEP, _COUNT) or a Kubernetes Indexed
    /// Job (JOB_COMPLETION_INDEX, with --shards N).
    #[arg(long)]
    shard: Option<String>,
    /// Number of workers for `--shard auto` where the scheduler does not say
    /// (a Kubernetes Indexed Job's completions).
    #[arg(long)]
    shards: Option<usize>,
    /// Replace whatever store is in --out.
    #[arg(long)]
    force: bool,
    /// Let float32 convolutions and matmuls use TF32 on GPUs that have it
    /// (faster; off by default, so that the stored logits match a CPU
    /// recomputation within `kd cache verify`'s float32 tolerance).
    #[arg(long)]
    tf32: bool,
    /// Deterministic GPU kernels: the same store, byte for byte, from two
    /// builds on the same GPU (the CPU is deterministic without it).
    #[arg(long, env = "KD_DETERMINISTIC")]
    deterministic: bool,
    /// Stop after writing this many shards, as if killed (tests).
    #[arg(long, hide = true)]
    stop_after_shards: Option<usize>,
}

/// The `[cache]` settings as flags: each one given replaces the profile's
/// key of the same name.
#[derive(clap::Args, serde::Serialize)]
// `--mix-prob -0.5` reaches the range check and its message.
#[command(allow_negative_numbers = true)]
struct CacheSettings {
    /// Views per sample (view 0 is the plain image).
    #[arg(long)]
    views: Option<usize>,
    /// Stored dtype: f16 (default) or f32.
    #[arg(long, value_parser = setting::<Dtype>())]
    dtype: Option<Dtype>,
    /// Store only the k largest logits per view (values + uint16 indices);
    /// 0 stores every logit. Default: every logit below 100 classes, the
    /// 10 largest from 100 classes on.
    #[arg(long)]
    top_k: Option<usize>,
    /// Views per teacher forward pass.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of the view generator.
    #[arg(long)]
    seed: Option<u64>,
    /// How each view's box is drawn: pad-crop (default: pad with zeros,
    /// an image-sized box at a random offset; for 28-32 px images) or
    /// resized-crop (a random box of --crop-scale of the area and
    /// --crop-ratio aspect, resized bilinearly to --view-size; for larger
    /// images). The box and flip are stored in views/params either way.
    #[arg(long, value_parser = setting::<Crop>())]
    crop: Option<Crop>,
    /// Resized-crop: area fraction range LOW,HIGH (default 0.08,1).
    #[arg(long, value_name = "LOW,HIGH", value_parser = parse_range)]
    crop_scale: Option<[f64; 2]>,
    /// Resized-crop: width/height range LOW,HIGH (default 0.75,1.3333).
    #[arg(long, value_name = "LOW,HIGH", value_parser = parse_range)]
    crop_ratio: Option<[f64; 2]>,
    /// Resized-crop: side of every view in pixels, when it is not the stored
    /// image's (e.g. 224 from images imported at 256, as ImageNet recipes
    /// train). The plain view (view 0, and what students are evaluated on)
    /// is then the central box of this size.
    #[arg(long, value_name = "PIXELS")]
    view_size: Option<u16>,
    /// Pad-crop: zero padding before the random crop.
    #[arg(long)]
    pad: Option<u8>,
    /// No horizontal flips in the views.
    #[arg(long)]
    #[serde(
        rename = "flip",
        skip_serializing_if = "std::ops::Not::not",
        serialize_with = "flip_off"
    )]
    no_flip: bool,
    /// Mixed views (function matching): none, mixup, cutmix or mixup-cutmix
    /// (one of the two per mixed view). The teachers' logits are those of
    /// the mixed image; the student rebuilds it from the store.
    #[arg(long, value_parser = setting::<MixMode>().named(&MixMode::NAMES))]
    mix: Option<MixMode>,
    /// Probability that a view 1..K-1 is mixed (view 0 never is).
    #[arg(long)]
    mix_prob: Option<f64>,
    /// Beta(alpha, alpha) parameter of the mixing weight.
    #[arg(long)]
    mix_alpha: Option<f64>,
    /// Where a mixed view's partner comes from: any (default: any other
    /// training sample) or chunk (one of the same stored chunk of the
    /// dataset: for datasets larger than the data cache, KD_DATA_CACHE).
    #[arg(long, value_parser = setting::<Partners>())]
    mix_partners: Option<Partners>,
    /// Samples per shard file.
    #[arg(long)]
    shard_samples: Option<usize>,
    /// Samples per inner (compressed) chunk.
    #[arg(long)]
    chunk_samples: Option<usize>,
}

/// `--no-flip` is the profile's `flip = false`.
fn flip_off<S: serde::Serializer>(no_flip: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(!no_flip)
}

#[derive(clap::Args)]
pub struct FinalizeArgs {
    /// The store's artifact directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Build(a) => build(*a),
        Cmd::Finalize(a) => finalize(a),
        Cmd::Inspect(a) => inspect::inspect(a),
        Cmd::Verify(a) => verify::verify(a),
        Cmd::Gallery(a) => crate::cmd_gallery::gallery(a),
    }
}

/// `LOW,HIGH` as two numbers.
pub(crate) fn parse_range(s: &str) -> Result<[f64; 2], String> {
    let parts: Vec<Option<f64>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
    match parts[..] {
        [Some(a), Some(b)] => Ok([a, b]),
        _ => Err("expected two numbers LOW,HIGH".into()),
    }
}

fn build(a: BuildArgs) -> anyhow::Result<()> {
    let prof = a.profile.as_deref().map(Profile::load).transpose()?;
    let flags = Overlay::of(&a.settings);
    let Layered {
        config: mut cfg,
        device,
        ..
    } = layered::<CacheConfig>(prof.as_ref(), "cache", &flags, &[], a.device.as_deref())?;
    // Where the teachers run: not part of the store's identity.
    cfg.device = device;
    let shard = match a.shard.as_deref() {
        Some("auto") => Some(kd_logit_cache::write::shard_from_env(a.shards, &|k| {
            std::env::var(k).ok()
        })?),
        Some(s) => Some(parse_shard(s)?),
        None => None,
    };
    kd_core::device::set_tf32(a.tf32)?;
    if a.deterministic {
        kd_core::device::set_deterministic(true)?;
    }
    let device = parse_device(&cfg.device)?;
    // Shard workers started side by side on one machine share its GPUs as
    // data-parallel ranks do; the launcher's local rank, when it gives one,
    // says which process this is on the machine.
    let device = match shard {
        Some((i, n)) => {
            let local = ["LOCAL_RANK", "SLURM_LOCALID"]
                .iter()
                .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
                .unwrap_or(i);
            kd_core::device::place(device, &cfg.device, local, n, visible_gpus(device))?
        }
        None => device,
    };
    let mut teachers = vec![];
    for dir in &a.teacher {
        let t = kd_teachers::load(dir, device)
            .with_context(|| format!("loading teacher {}", dir.display()))?;
        teachers.push(TeacherInput {
            dir: dir.clone(),
            teacher: t,
        });
    }
    let opts = BuildOptions {
        shard,
        stop_after_shards: a.stop_after_shards,
    };
    let bars = Bars::default();
    let run = RunOptions::new(device, &bars).force(a.force);
    let t0 = std::time::Instant::now();
    let o = kd_logit_cache::build(&a.dataset, &teachers, &a.out, &cfg, &opts, &run)
        .with_context(|| format!("cache build into {}", a.out.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    let (written, skipped, stats) = (o.written, o.skipped, o.stats);
    match o.outcome {
        Outcome::UpToDate => out(format!("{}: up to date", a.out.display())),
        Outcome::Stopped { .. } => out(format!(
            "{}: {written} shards written, {skipped} already done, {:.1}s{}",
            a.out.display(),
            secs,
            if shard.is_some() {
                " (run `kd cache finalize` once every worker is done)"
            } else {
                " (stopped early)"
            }
        )),
        Outcome::Wrote(manifest) => {
            let m = &manifest.metrics;
            out(format!(
                "{}: {} samples x {} views, {} shards ({written} written, {skipped} already done), {} stored, {:.1}s \
                 (inference {:.1}s, writer {:.1}s overlapped, waited on writer {:.2}s)",
                a.out.display(),
                m["samples"],
                m["views"],
                m["shards"],
                bytes(m["stored_bytes"].as_u64().unwrap_or(0)),
                secs,
                stats.inference,
                stats.writer_busy,
                stats.send_wait + stats.drain
            ))
        }
        Outcome::Follower { .. } => {}
    }
    Ok(())
}

fn finalize(a: FinalizeArgs) -> anyhow::Result<()> {
    let m = kd_logit_cache::finalize(&a.out)
        .with_context(|| format!("cache finalize {}", a.out.display()))?;
    out(format!(
        "{}: complete, {} shards, {} stored; manifest written",
        a.out.display(),
        m.metrics["shards"],
        bytes(m.metrics["stored_bytes"].as_u64().unwrap_or(0))
    ));
    Ok(())
}
