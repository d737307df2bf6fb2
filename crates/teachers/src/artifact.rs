//! What a teacher artifact holds on disk, named once for every module that
//! writes or reads one.
//!
//! A trained teacher (`<out>/`): `weights.safetensors` (PyTorch key names),
//! `config.json` ([`crate::TeacherFile`]: everything needed to rebuild the
//! network), `metrics.json` (per-epoch history, `test_accuracy` in [0,1],
//! confusion matrix, images/s), `manifest.json` last. While training,
//! `<out>/ckpt/` holds the checkpoint the same command resumes from.
//!
//! A cross-fitted teacher: `fold-<f>/weights.safetensors` (and
//! `fold-<f>/ckpt/` while training), `folds.json` (each sample's fold and
//! each fold's weights hash, the file whose hash is the teacher's checkpoint
//! hash), `config.json`, `metrics.json`, `manifest.json`.
//!
//! An imported TorchScript teacher: `model.pt`, `config.json`
//! ([`crate::torchscript::TorchScriptFile`]), `metrics.json`,
//! `manifest.json`.

pub const STAGE: &str = "teacher";
/// What an unfinished teacher run leaves: its checkpoint, or its folds' ones.
pub const WORK_FILES: &[&str] = &[
    kd_core::fit::CHECKPOINT,
    kd_core::fit::CHECKPOINT_OLD,
    "fold-*",
];
pub use kd_core::stage::WEIGHTS;
pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.json";
pub const FOLDS: &str = "folds.json";
/// An imported teacher's TorchScript module.
pub const MODULE: &str = "model.pt";

/// The directory of fold model `f` of a cross-fitted teacher.
pub(crate) fn fold_dir(f: usize) -> String {
    format!("fold-{f}")
}
