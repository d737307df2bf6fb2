//! The lifecycle every stage shares, in one place.
//!
//! A stage run writes one artifact directory (`--out`):
//!
//! 1. [`StageRun::new`]: what the artifact *is*: the stage's name, its
//!    resolved config and its pinned inputs. Equal config and equal inputs
//!    mean an equal artifact.
//! 2. [`StageRun::claim`]: finds `--out` up to date (nothing to do), or
//!    claims it: refuses another stage's artifact or foreign files unless
//!    `force`, removes the old manifest (so a crash cannot leave a directory
//!    that looks finished) and, under `force`, the previous run's checkpoint
//!    and whatever else the stage names. In data-parallel training rank 0
//!    alone looks at the directory and tells the others.
//! 3. The stage's own work (training through [`crate::fit`], or import, or
//!    the store build), writing its files.
//! 4. [`StageRun::seal`]: re-checks every input (an input replaced while the
//!    stage ran must not be sealed into a manifest that names its old hash),
//!    then writes `manifest.json` last, with the seeds, outputs and summary
//!    metrics.
//!
//! [`Outcome`] is what a stage reports back, the same for every stage;
//! [`RunOptions`] how it runs (nothing in it changes the artifact).

use crate::CoreError;
use crate::error::Result;
use crate::fit::{EpochRecord, FitOptions, remove_checkpoint};
use crate::manifest::{Claim, InputRef, Manifest, OutputRef, claim_out_dir};
use crate::progress::Progress;
use serde_json::Value;
use std::path::Path;
use tch::Device;
use tch::nn::VarStore;

/// The trained weights in a teacher or student artifact (safetensors).
pub const WEIGHTS: &str = "weights.safetensors";

/// What a stage did.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A finished artifact with the same config and inputs is already there.
    UpToDate,
    /// The artifact was written; its manifest.
    Wrote(Box<Manifest>),
    /// The run ended before the artifact was complete and wrote no
    /// manifest; what it did is kept for the next run. Training stopped by
    /// `FitOptions::stop_after` (tests; `done` epochs), or a store build's
    /// worker whose shards are written (`--shard`, or a stop; `done`
    /// shards), to be finished by `kd cache finalize`.
    Stopped { done: usize },
    /// A data-parallel rank other than 0 trained its share of every batch;
    /// rank 0 wrote the artifact.
    Follower { rank: usize },
}

/// How a training stage runs: none of it changes the artifact (beyond float
/// summation order across data-parallel ranks, which the config records).
#[derive(Clone)]
pub struct RunOptions<'a> {
    pub device: Device,
    /// Rerun even when up to date; replace another stage's artifact.
    pub force: bool,
    /// Early stop (tests) and the data-parallel group.
    pub fit: FitOptions,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("device", &self.device)
            .field("force", &self.force)
            .field("fit", &self.fit)
            .finish_non_exhaustive()
    }
}

/// On the CPU, silent, one process, no `force`: what a stage that runs no
/// network (the import, the report) or a test needs.
impl Default for RunOptions<'static> {
    fn default() -> Self {
        RunOptions::new(Device::Cpu, &crate::progress::Silent)
    }
}

impl<'a> RunOptions<'a> {
    /// One process, no early stop, no `force`.
    pub fn new(device: Device, progress: &'a dyn Progress) -> RunOptions<'a> {
        RunOptions {
            device,
            force: false,
            fit: FitOptions::default(),
            progress,
        }
    }

    pub fn force(self, force: bool) -> Self {
        RunOptions { force, ..self }
    }

    pub fn fit(self, fit: FitOptions) -> Self {
        RunOptions { fit, ..self }
    }
}

/// One stage writing one artifact directory.
#[derive(Debug)]
pub struct StageRun<'a> {
    stage: &'static str,
    out: &'a Path,
    config: Value,
    inputs: Vec<InputRef>,
    work_files: &'static [&'static str],
}

impl<'a> StageRun<'a> {
    pub fn new(stage: &'static str, out: &'a Path, config: Value, inputs: Vec<InputRef>) -> Self {
        StageRun {
            stage,
            out,
            config,
            inputs,
            work_files: &[],
        }
    }

    /// The files an unfinished run of this stage leaves in `out` (a trailing
    /// `*` matches a prefix). Runs of kd versions that wrote no stage marker
    /// left only these, so a directory holding them is taken as this stage's
    /// work in progress rather than refused as foreign files.
    pub fn leaves(self, work_files: &'static [&'static str]) -> Self {
        StageRun { work_files, ..self }
    }

    pub fn config(&self) -> &Value {
        &self.config
    }

    pub fn inputs(&self) -> &[InputRef] {
        &self.inputs
    }

    /// Claim `out` for this run, or find it up to date (`Ok(false)`). Under
    /// `force` the previous run's checkpoint goes too.
    pub fn claim(&self, force: bool) -> Result<bool> {
        self.claim_in_group(force, &FitOptions::default(), |_| Ok::<(), CoreError>(()))
    }

    /// [`StageRun::claim`] for a training stage: with a data-parallel group
    /// rank 0 alone looks at (and under `force` empties) the directory and
    /// every rank gets its answer; under `force`, `on_force` then removes
    /// what else the stage keeps between runs.
    pub fn claim_in_group<E: From<CoreError>>(
        &self,
        force: bool,
        fit: &FitOptions,
        on_force: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        crate::data_parallel::leader_decides(fit.group(), || {
            match claim_out_dir(
                self.out,
                self.stage,
                &self.config,
                &self.inputs,
                self.work_files,
                force,
            )? {
                Claim::UpToDate => Ok(false),
                Claim::Claimed => {
                    if force {
                        remove_checkpoint(self.out)?;
                        on_force(self.out)?;
                    }
                    Ok(true)
                }
            }
        })
    }

    /// Remove the training checkpoint (the outputs hold the result now),
    /// re-check every input, then write the manifest (last): the artifact is
    /// finished. `outputs` are the files the stage wrote, in the order the
    /// manifest lists them.
    pub fn seal(
        self,
        seeds: &[(&str, u64)],
        outputs: Vec<OutputRef>,
        metrics: Value,
    ) -> Result<Manifest> {
        remove_checkpoint(self.out)?;
        for input in &self.inputs {
            input.verify_at(self.out)?;
        }
        let mut m = Manifest::new(self.stage, self.config);
        for (name, seed) in seeds {
            m.seeds.insert((*name).into(), *seed);
        }
        m.inputs = self.inputs;
        m.outputs = outputs;
        m.metrics = metrics;
        m.write(self.out)?;
        Ok(m)
    }
}

/// Trainable parameters of a model: the figure reports print beside each
/// model (buffers such as BatchNorm statistics are not parameters).
pub fn param_count(vs: &VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Mean training speed over a run's epochs, images/s (0 for no epochs).
pub fn mean_images_per_sec(history: &[EpochRecord]) -> f64 {
    history.iter().map(|r| r.images_per_sec).sum::<f64>() / history.len().max(1) as f64
}
