//! kd-teachers: the ensemble's two light teachers with different inductive
//! biases, their training stage and their loader.
//!
//! - [`cnn`]: a ResNet-style CNN (local, translation-equivariant kernels);
//! - [`rednet`]: a RedNet-style involution network (kernels generated per
//!   pixel, shared across channels), on the [`involution`] operator;
//! - [`model`]: [`Arch`] and [`Net`] over both, built from named presets;
//! - [`config`]: a teacher's settings and its `config.json`;
//! - [`stage`]: the `teacher` stage ([`train_stage`]), plain or cross-fitted,
//!   over the training jobs in `learner`;
//! - [`eval`]: accuracy on a split, `kd teacher eval` of one teacher
//!   ([`evaluate`]) or several side by side ([`evaluate_ensemble`]);
//! - [`load`]: a finished artifact as a `Box<dyn kd_core::Teacher>`.

pub mod cnn;
pub mod config;
pub mod error;
pub mod eval;
pub mod involution;
mod learner;
pub mod load;
pub mod model;
pub mod rednet;
pub mod stage;
pub mod torchscript;

pub use config::{TeacherConfig, TeacherFile};
pub use error::{Result, TeacherError};
pub use eval::{
    EnsembleReport, EnsembleStats, EvalReport, EvalStats, PairStats, ensemble_stats, eval_split,
    evaluate, evaluate_ensemble,
};
pub use kd_core::stage::{Outcome, RunOptions};
pub use load::{LoadedTeacher, load, load_teacher};
pub use model::{Arch, ModelConfig, ModelOverrides, Net};
pub use stage::{STAGE, fold_assignment, train_stage};
