//! The checkpoint after every epoch: weights, optimiser moments, epochs
//! done and the history, written so that a crash at any point leaves one
//! complete checkpoint (`ckpt`, or `ckpt.old` between two renames).

use super::{EpochRecord, Learner};
use crate::error::{CheckpointError, IoContext, Result};
use crate::manifest::{read_json, write_json};
use crate::optim::AdamW;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;

#[derive(Serialize, Deserialize)]
pub(super) struct CkptState {
    pub(super) identity: Value,
    pub(super) epochs_done: usize,
    pub(super) history: Vec<EpochRecord>,
    /// Data-parallel ranks that made the checkpoint; absent when one, so a
    /// one-process checkpoint reads and writes as before the field existed.
    #[serde(default = "one", skip_serializing_if = "super::is_one")]
    pub(super) world_size: usize,
}

fn one() -> usize {
    1
}

/// The checkpoint directory in a training stage's `--out`.
pub const CHECKPOINT: &str = "ckpt";
/// The previous checkpoint, between the two renames of a save.
pub const CHECKPOINT_OLD: &str = "ckpt.old";

fn ckpt_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        out.join(CHECKPOINT),
        out.join("ckpt.tmp"),
        out.join(CHECKPOINT_OLD),
    )
}

/// Remove a finished run's checkpoint (weights are in the artifact by then).
pub fn remove_checkpoint(out: &Path) -> Result<()> {
    let (ckpt, tmp, old) = ckpt_paths(out);
    for p in [ckpt, tmp, old] {
        if p.exists() {
            fs::remove_dir_all(&p).at(&p)?;
        }
    }
    Ok(())
}

pub(super) fn save_checkpoint(
    out: &Path,
    vs: &VarStore,
    opt: &AdamW,
    state: &CkptState,
) -> Result<()> {
    let (ckpt, tmp, old) = ckpt_paths(out);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    fs::create_dir_all(&tmp).at(&tmp)?;
    vs.save(tmp.join(crate::stage::WEIGHTS))?;
    opt.save(&tmp.join("optim.safetensors"))?;
    write_json(&tmp.join("state.json"), state)?;
    if ckpt.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).at(&old)?;
        }
        fs::rename(&ckpt, &old).at(&ckpt)?;
    }
    fs::rename(&tmp, &ckpt).at(&ckpt)?;
    if old.exists() {
        fs::remove_dir_all(&old).at(&old)?;
    }
    Ok(())
}

/// Load `out`'s checkpoint into `learner` and `opt`, if there is one made
/// under the same identity and world size.
pub(super) fn resume(
    learner: &mut dyn Learner,
    opt: &mut AdamW,
    identity: &Value,
    out: &Path,
    world: usize,
) -> Result<Option<CkptState>> {
    let (ckpt, _, old) = ckpt_paths(out);
    // A crash between the two renames leaves only ckpt.old: it is complete.
    let dir = if ckpt.join("state.json").is_file() {
        ckpt
    } else if old.join("state.json").is_file() {
        old
    } else {
        return Ok(None);
    };
    let saved: CkptState = read_json(&dir.join("state.json"))?;
    if &saved.identity != identity {
        return Err(CheckpointError::Foreign { dir }.into());
    }
    if saved.world_size != world {
        return Err(CheckpointError::WorldSize {
            dir,
            saved: saved.world_size,
            now: world,
        }
        .into());
    }
    learner
        .var_store()
        .load(dir.join(crate::stage::WEIGHTS))
        .map_err(|source| CheckpointError::Weights {
            dir: dir.clone(),
            source,
        })?;
    opt.load(&dir.join("optim.safetensors"))?;
    tracing::info!(epochs_done = saved.epochs_done, world_size = world, dir = %dir.display(), "resuming from checkpoint");
    Ok(Some(saved))
}
