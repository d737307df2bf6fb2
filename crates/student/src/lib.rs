//! kd-student: a ViT with one distillation token per teacher, its losses and
//! its trainer.
//!
//! Modules by job: [`artifact`] (the files of a student artifact),
//! [`config`] (the profile section and its checks),
//! [`source`] (stored, live or no teacher logits), [`batch`] (indices to
//! pixels and logits), `learner` (one step and the evaluation), [`stage`]
//! (the `student` stage: inputs, model, outputs), [`vit`] and [`stem`] (the
//! model), [`loss`] (the losses as pure functions), [`eval`] (a finished
//! student's heads against the teachers).
//!
//! The trainer reads teacher logits from the logit cache (`kd-logit-cache`),
//! runs teachers live on the same batches (the speed baseline and a fidelity
//! check of the cache), or trains without teachers. All three are the same
//! trainer with different token counts, sharing `kd_core::fit` (optimiser,
//! schedule, checkpoint and resume) with the teachers.

pub mod artifact;
pub mod batch;
pub mod config;
pub mod error;
pub mod eval;
mod learner;
pub mod loss;
pub mod source;
pub mod stage;
pub mod stem;
pub mod vit;

pub use artifact::STAGE;
pub use batch::{Batcher, epoch_view};
pub use config::{StudentConfig, TokenMode};
pub use error::{Result, StudentError};
pub use eval::{evaluate, load_student};
pub use kd_core::stage::{Outcome, RunOptions};
pub use loss::{Distill, LossConfig, Weighting};
pub use source::Source;
pub use stage::train_stage;
pub use stem::{Stem, TokenStem};
pub use vit::{Config, Vit, VitOutput};
