//! kd-core: the vocabulary every stage of the pipeline shares.
//!
//! Stages never call each other; they meet only through artifacts on disk.
//! This crate defines what an artifact is (a directory finished by an
//! atomically written `manifest.json`), how inputs are pinned by content hash,
//! the augmentation-view contract between the logit cache and the student
//! (crops and flips, and mixup / cutmix pairs),
//! device selection, and the training machinery (AdamW with savable moments,
//! cosine schedule, checkpointed epoch loop) that teachers and student share.

pub mod amp;
pub mod data_parallel;
pub mod device;
pub mod error;
pub mod figures;
pub mod fit;
pub mod layout;
pub mod malloc;
pub mod manifest;
pub mod metrics;
pub mod mix;
pub mod optim;
pub mod profile;
pub mod profile_vars;
pub mod progress;
pub mod rng;
pub mod sampler;
mod shim;
pub mod stage;
pub mod teacher;
pub mod view;
pub mod zarr;

pub use device::parse_device;
pub use error::{CheckpointError, CoreError, InputError, Result, SettingError};
pub use manifest::{InputRef, Manifest, OutputRef};
pub use mix::{MixKind, MixMode, MixParams, MixSpec, Partners, ViewBatch};
pub use progress::{Progress, Silent};
pub use rng::Rng;
pub use stage::{Outcome, RunOptions, StageRun};
pub use teacher::{Folds, Teacher};
pub use view::{Crop, CropRange, ViewParams, ViewSpec};

/// Tests that seed or draw from libtorch's global generator hold this lock:
/// the harness runs tests on parallel threads, and one test's draws would
/// shift another's (the resume tests compare weights bit for bit). Public so
/// that every crate's tests in one process share the same lock.
#[cfg(any(test, feature = "testing"))]
pub fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Version of the tool, recorded in every manifest.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git revision the tool was built from (`unknown` outside a checkout).
pub const GIT_REV: &str = env!("KD_GIT_REV");
