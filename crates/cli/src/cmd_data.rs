//! `kd data import`: flags laid over the profile's `[data]` section, then
//! the `data` stage (`kd_data::stage`).

use crate::ui::outcome;
use anyhow::Context;
use kd_core::profile::{Overlay, Profile, layered, parse_setting};
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
    /// Source format: idx, cifar or folder (default: from the profile's [data] section).
    #[arg(long, value_parser = parse_setting::<Format>)]
    format: Option<Format>,
    /// Source directory: the four IDX files (raw or .gz); CIFAR's *.bin
    /// batches; or an image folder (class sub-folders, either directly or
    /// under train/ plus test/ and/or val/).
    #[arg(long)]
    src: Option<PathBuf>,
    /// Output artifact directory.
    #[arg(long)]
    out: PathBuf,
    /// Profile TOML whose [data] section gives defaults for every option.
    #[arg(long)]
    profile: Option<PathBuf>,
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
    #[arg(long, value_parser = parse_setting::<Resize>)]
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
    /// Rerun even if the artifact is up to date.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Import(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let prof = a.profile.as_deref().map(Profile::load).transpose()?;
    let mut flags = Overlay::default();
    flags
        .set("format", a.format)
        .set("src", a.src.clone())
        .set("limit_train", a.limit_train)
        .set("limit_test", a.limit_test)
        .set("val_fraction", a.val_fraction)
        .set("seed", a.seed)
        .set("size", a.size)
        .set("resize", a.resize)
        .set("channels", a.channels)
        .set("test_fraction", a.test_fraction)
        .set("class_names", a.class_names.clone());
    let cfg: ImportConfig = layered(prof.as_ref(), "data", &flags, &[], None)?.config;
    let o = import_stage(&cfg, &a.out, a.force)
        .with_context(|| format!("data import into {}", a.out.display()))?;
    outcome(&a.out, &o, |m| format!("{} ", m.metrics["samples"]));
    Ok(())
}
