//! What a fit is given: its settings ([`FitConfig`], part of the artifact's
//! identity), how it runs ([`FitOptions`], not part of it), and what each
//! epoch records.

use super::{check, is_one};
use crate::amp::Precision;
use crate::error::{Result, SettingError};
use crate::optim::AdamWConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub seed: u64,
    pub adamw: AdamWConfig,
    /// Precision of the training forward pass (see [`crate::amp`]); absent
    /// from the serialised config when f32, so older artifacts stay current.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Evaluate after every n-th epoch and after the last (evaluating a
    /// 10000-image test split after each of 100 short epochs would cost more
    /// than the training). Absent from the serialised config when 1.
    #[serde(skip_serializing_if = "is_one")]
    pub eval_every: usize,
}

impl FitConfig {
    /// Refuse settings that cannot train, before any work.
    pub fn validate(&self) -> Result<()> {
        check::count("epochs", self.epochs)?;
        check::count("batch_size", self.batch_size)?;
        check::count("eval_every", self.eval_every)?;
        check::positive("lr", self.lr)?;
        check::non_negative("min_lr", self.min_lr)?;
        if self.min_lr > self.lr {
            return Err(SettingError::out_of_range(
                "min_lr",
                self.min_lr,
                format!("at most lr = {}", self.lr),
            )
            .into());
        }
        check::non_negative("warmup_epochs", self.warmup_epochs)?;
        check::non_negative("weight_decay", self.adamw.weight_decay)?;
        check::within("beta1", self.adamw.beta1, 0.0, 1.0, true)?;
        check::within("beta2", self.adamw.beta2, 0.0, 1.0, true)?;
        check::positive("eps", self.adamw.eps)
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 128,
            lr: 2e-3,
            min_lr: 1e-5,
            warmup_epochs: 1.0,
            seed: 0,
            adamw: AdamWConfig::default(),
            precision: Precision::F32,
            eval_every: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train: BTreeMap<String, f64>,
    pub eval: Map<String, Value>,
    pub train_seconds: f64,
    pub images_per_sec: f64,
    /// Data-parallel runs: seconds of `train_seconds` this rank spent in the
    /// exchange that closes each step (waiting for the slowest rank
    /// included): with [`GradReduce::AfterBackward`] the whole gradient
    /// all-reduce; with buckets only the batch loss's, the gradients' being
    /// inside the backward pass. Absent in one process, so its metrics read
    /// as before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_seconds: Option<f64>,
}

/// Options that do not change the result (beyond float summation order).
#[derive(Clone, Debug, Default)]
pub struct FitOptions {
    /// Stop (as if killed) after this many epochs in this process; for tests.
    pub stop_after: Option<usize>,
    /// The data-parallel group this process trains in; `None` (or a group of
    /// one) trains alone, exactly as without the option.
    pub dist: Option<Rc<kd_dist::Group>>,
    /// Steps between two reads of the training figures from the device (0:
    /// [`crate::figures::DEFAULT_SYNC_EVERY`]). The loss's finiteness is checked at each
    /// read, so a diverging run stops at most this many steps late, with
    /// the step named. Data-parallel ranks read every step (the all-reduce
    /// needs the loss on the host).
    pub sync_every: usize,
    /// When a learner's [`Feed`] assembles batches on a second thread
    /// (the batches are the same either way).
    pub prefetch: Prefetch,
    /// How a data-parallel step sums its gradients over the ranks.
    pub grad_reduce: GradReduce,
}

/// How a data-parallel step sums the ranks' gradients. Both give the same
/// sums (up to float summation order over more than two ranks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradReduce {
    /// In buckets of about this many bytes, each all-reduced as soon as the
    /// backward pass has computed all of its gradients, so communication
    /// overlaps the rest of the backward pass (as PyTorch's DDP does).
    Buckets(usize),
    /// In one all-reduce once the backward pass has finished.
    AfterBackward,
}

impl Default for GradReduce {
    fn default() -> Self {
        GradReduce::Buckets(kd_dist::DEFAULT_BUCKET_BYTES)
    }
}

impl GradReduce {
    /// From a bucket size in MiB (`--dist-bucket-mb`): 0 reduces after the
    /// backward pass.
    pub fn from_mib(mib: f64) -> Result<GradReduce> {
        super::check::non_negative("dist_bucket_mb", mib)?;
        if mib > 1e6 {
            return Err(
                SettingError::out_of_range("dist_bucket_mb", mib, "at most 1e6 MiB").into(),
            );
        }
        Ok(if mib == 0.0 {
            GradReduce::AfterBackward
        } else {
            GradReduce::Buckets(((mib * (1u64 << 20) as f64) as usize).max(1))
        })
    }
}

/// When the next batch is assembled on a second thread while the step
/// before runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefetch {
    /// When the model trains on a GPU, whose steps leave the CPU idle. On
    /// the CPU the assembling thread would compete for the cores
    /// libtorch's own threads compute on, and it made training 13-18%
    /// slower on 2 cores (`cargo bench -p kd-student --bench student`);
    /// inline assembly there costs a small share of a step.
    #[default]
    Auto,
    /// Always, the CPU included.
    Always,
    /// Never: every batch on the training thread.
    Never,
}

impl Prefetch {
    /// Whether batches are prefetched for a model on `device`.
    pub fn applies(self, device: tch::Device) -> bool {
        match self {
            Prefetch::Auto => device != tch::Device::Cpu,
            Prefetch::Always => true,
            Prefetch::Never => false,
        }
    }
}

impl FitOptions {
    /// The data-parallel group, if there is more than one rank.
    pub fn group(&self) -> Option<&kd_dist::Group> {
        self.dist.as_deref().filter(|g| g.size() > 1)
    }

    /// Whether this process writes artifacts: rank 0, or the only process.
    pub fn is_leader(&self) -> bool {
        self.group().is_none_or(kd_dist::Group::is_leader)
    }

    /// Number of data-parallel ranks (1 alone).
    pub fn world_size(&self) -> usize {
        self.group().map_or(1, kd_dist::Group::size)
    }
}
