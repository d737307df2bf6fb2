//! `kd data import`: flags laid over the profile's `[data]` section, then
//! the `data` stage (`kd_data::stage`).

use crate::setting_flag::setting;
use crate::ui::outcome;
use anyhow::Context;
use kd_core::profile::{Overlay, Profile, layered};
use kd_core::stage::RunOptions;
use kd_data::folder::Resize;
use kd_data::stage::{Format, ImportConfig, import_stage};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Import IDX (MNIST, Fashion-MNIST, KMNIST), CIFAR-10/100 binary or an
    /// image folder into DIR/dataset.zarr + DIR/manifest.json.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// Profile TOML whose [data] section gives defaults for every setting.
    #[arg(long)]
    profile: Option<PathBuf>,
    #[command(flatten)]
    settings: ImportSettings,
    /// Rerun even if the artifact is up to date.
    #[arg(long)]
    force: bool,
}

/// The `[data]` settings as flags: each one given replaces the profile's
/// key of the same name.
#[derive(clap::Args, serde::Serialize)]
struct ImportSettings {
    /// Source format (default: from the profile's [data] section).
    #[arg(long, value_parser = setting::<Format>())]
    format: Option<Format>,
    /// Source directory: the four IDX files (raw or .gz); CIFAR's *.bin
    /// batches; or an image folder (class sub-folders, either directly or
    /// under train/ plus test/ and/or val/).
    #[arg(long)]
    src: Option<PathBuf>,
    /// Keep a seeded, stratified subset of this many training images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Keep a seeded, stratified subset of this many test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Carve this fraction of train into a stratified validation split.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Seed of the subsets and splits.
    #[arg(long)]
    seed: Option<u64>,
    /// Folder import: bring every image to SIZE x SIZE (default: the
    /// images' own size, when they all share one square size).
    #[arg(long)]
    size: Option<u32>,
    /// Folder import: how to reach SIZE: crop (shorter side to SIZE, then
    /// the centre square; keeps the aspect ratio) or squash (stretch).
    #[arg(long, value_parser = setting::<Resize>())]
    resize: Option<Resize>,
    /// Folder import: 1 (grey) or 3 (RGB) channels.
    #[arg(long)]
    channels: Option<usize>,
    /// Folder import without train/ and test/: fraction held out as test.
    #[arg(long)]
    test_fraction: Option<f64>,
    /// IDX import: comma-separated class names (default: by data set name).
    #[arg(long, value_delimiter = ',')]
    class_names: Option<Vec<String>>,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Import(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let prof = a.profile.as_deref().map(Profile::load).transpose()?;
    let flags = Overlay::of(&a.settings);
    let cfg: ImportConfig = layered(prof.as_ref(), "data", &flags, &[], None)?.config;
    let o = import_stage(&cfg, &a.out, &RunOptions::default().force(a.force))
        .with_context(|| format!("data import into {}", a.out.display()))?;
    outcome(&a.out, &o, |m| format!("{} ", m.metrics["samples"]));
    Ok(())
}
