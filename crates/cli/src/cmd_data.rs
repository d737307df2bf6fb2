use crate::ui::out;
use anyhow::Context;
use kd_data::stage::{Format, ImportConfig, Outcome, import_stage};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Import IDX (MNIST, Fashion-MNIST, KMNIST), CIFAR-10/100 binary or an
    /// image folder into DIR/dataset.zarr + DIR/manifest.json.
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct ImportArgs {
    /// Source format (default: from the profile's [data] section).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Source directory: the four IDX files (raw or .gz); CIFAR's *.bin
    /// batches; or an image folder (class sub-folders, optionally under
    /// train/ and test/).
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
    /// Folder import: resize images to SIZE x SIZE.
    #[arg(long)]
    size: Option<u32>,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Idx,
    Cifar,
    Folder,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Import(a) => import(a),
    }
}

fn import(a: ImportArgs) -> anyhow::Result<()> {
    let mut cfg: ImportConfig = match &a.profile {
        Some(p) => kd_core::profile::Profile::load(p)?.section("data")?,
        None => ImportConfig::default(),
    };
    if let Some(f) = a.format {
        cfg.format = Some(match f {
            FormatArg::Idx => Format::Idx,
            FormatArg::Cifar => Format::Cifar,
            FormatArg::Folder => Format::Folder,
        });
    }
    macro_rules! set {
        ($($field:ident => $dst:expr),*) => {$(if let Some(v) = a.$field { $dst = v.into(); })*};
    }
    set!(src => cfg.src, limit_train => cfg.split.limit_train, limit_test => cfg.split.limit_test,
         val_fraction => cfg.split.val_fraction, seed => cfg.split.seed, size => cfg.size,
         channels => cfg.channels, test_fraction => cfg.test_fraction, class_names => cfg.class_names);
    match import_stage(&cfg, &a.out, a.force)
        .with_context(|| format!("data import into {}", a.out.display()))?
    {
        Outcome::UpToDate => out(format!("{}: up to date", a.out.display())),
        Outcome::Wrote(m) => out(format!("{}: {} ", a.out.display(), m.metrics["samples"])),
    }
    Ok(())
}
