//! What a student artifact holds on disk (`<out>/`), named once for the
//! stage that writes it and the evaluation that reads it:
//! `weights.safetensors` (PyTorch key names), `config.json` (the network,
//! the student's settings and its head names), `metrics.json` (per-epoch
//! history), `curves.csv` and `curves.png` (the training curves),
//! `manifest.json` last. While training, `<out>/ckpt/` holds the checkpoint
//! the same command resumes from.

pub const STAGE: &str = "student";
/// What an unfinished student run leaves: its checkpoint.
pub const WORK_FILES: &[&str] = &[kd_core::fit::CHECKPOINT, kd_core::fit::CHECKPOINT_OLD];
pub use kd_core::stage::WEIGHTS;
pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.json";
pub const CURVES_CSV: &str = "curves.csv";
pub const CURVES_PNG: &str = "curves.png";
