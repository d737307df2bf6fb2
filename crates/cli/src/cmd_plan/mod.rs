//! `kd plan`: what a profile will cost before anything long starts.
//!
//! For every stage the profile names (data import, each teacher, the logit
//! cache, each student) it prints the images it sees, its steps, the logit
//! store's bytes, peak memory and a time estimate. Settings are read the way
//! the stages read them (`layered` over the same sections, the same config
//! types and presets); times are extrapolated from a few measured steps of
//! the stage's real model on random input of the dataset's shape. Each
//! measurement runs in a child process (`kd plan --probe`), so that its
//! peak memory (VmHWM) is the stage's own and not what an earlier, larger
//! model left in the allocator.

use crate::ui::out;
use anyhow::{Context, bail};
use kd_core::amp::{Precision, autocast};
use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::profile::{Overlay, Profile, layered};
use kd_core::profile_vars::{ProfilePlan, StudentTeachers, TeacherPlan};
use kd_core::{Manifest, MixParams, ViewParams, ViewSpec};
use kd_data::Split;
use kd_data::stage::{Format, ImportConfig};
use kd_logit_cache::{CacheConfig, SizeModel};
use kd_student::StudentConfig;
use kd_teachers::{ModelConfig, Net, TeacherConfig};
use serde::{Deserialize, Serialize};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

mod cache;
mod images;
pub(crate) mod probe;
mod stages;
mod students;
mod table;
mod teachers;

use images::*;
use probe::*;
use stages::*;

/// Where `make` keeps Fashion-MNIST, the raw data of a profile without `src`.
const DEFAULT_RAW: &str = "data/raw/fashion-mnist";
/// Assumed import throughput of IDX / CIFAR sources (read, hash, write zstd
/// Zarr); computed, not measured.
const IMPORT_BYTES_PER_SEC: f64 = 60e6;

#[derive(clap::Args)]
pub struct Args {
    /// Profile TOML (data/profiles/<name>.toml).
    #[arg(long, required_unless_present = "probe")]
    profile: Option<PathBuf>,
    /// An imported dataset artifact (`kd data import --out`) to count images
    /// from; default: data/runs/<profile name>/dataset when it exists, else
    /// the raw source ([data] src) read cheaply (headers, file sizes).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Device to measure on: auto, cpu, cuda or cuda:N (default: each
    /// section's `device`, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Timed steps per stage, after one warm-up step.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// Count images, steps and store bytes only: build no model, time nothing.
    #[arg(long)]
    no_measure: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// Internal: measure one stage (JSON) and print the measurement.
    #[arg(long, hide = true)]
    probe: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(p) = &a.probe {
        let probe: Probe = serde_json::from_str(p).context("kd plan --probe: bad probe")?;
        let m = probe.run()?;
        out(serde_json::to_string(&m)?);
        return Ok(());
    }
    let path = a.profile.clone().expect("clap requires --profile");
    let prof = Profile::load(&path)?;
    let plan = make_plan(&prof, &a).with_context(|| format!("plan of {}", path.display()))?;
    if a.json {
        out(serde_json::to_string_pretty(&plan)?);
    } else {
        out(plan.table());
    }
    Ok(())
}
