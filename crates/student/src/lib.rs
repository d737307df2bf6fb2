//! kd-student: a ViT with one distillation token per teacher, its losses and
//! its trainer.
//!
//! The trainer reads teacher logits from the logit cache (`kd-logit-cache`),
//! runs teachers live on the same batches (the speed baseline and a fidelity
//! check of the cache), or trains without teachers. All three are the same
//! trainer with different token counts, sharing `kd_core::fit` (optimiser,
//! schedule, checkpoint and resume) with the teachers.

pub mod error;
pub mod loss;
pub mod stem;
pub mod train;
pub mod vit;

pub use error::{Result, StudentError};
pub use loss::{Distill, LossConfig, Weighting};
pub use stem::{Stem, TokenStem};
pub use train::{
    Batcher, Outcome, Source, StudentConfig, TokenMode, train_stage, train_stage_with,
};
pub use vit::{Config, Vit, VitOutput};
