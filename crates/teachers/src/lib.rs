//! kd-teachers: the ensemble's two light teachers with different inductive
//! biases, their training stage and their loader.
//!
//! - [`cnn`]: a ResNet-style CNN (local, translation-equivariant kernels);
//! - [`rednet`]: a RedNet-style involution network (kernels generated per
//!   pixel, shared across channels), on the [`involution`] operator;
//! - [`model`]: [`Arch`] and [`Net`] over both, built from named presets;
//! - [`config`]: a teacher's settings and its `config.json`;
//! - [`artifact`]: the files of a teacher artifact;
//! - [`stage`]: the `teacher` stage ([`train_stage`]), plain or cross-fitted,
//!   over the training jobs in `learner`;
//! - [`scoring`]: a model's accuracy on a split;
//! - [`torchscript`]: another framework's model imported as a teacher;
//! - [`load`]: a finished artifact as a `Box<dyn kd_core::Teacher>`;
//! - [`eval`]: `kd teacher eval` of one teacher ([`evaluate`]) or several
//!   side by side ([`evaluate_ensemble`]).
//!
//! Modules lean only on those above them in this list (and on the models),
//! so none reaches back into a stage for a name it shares.

pub mod artifact;
pub mod cnn;
pub mod config;
pub mod error;
pub mod eval;
pub mod involution;
mod learner;
pub mod load;
pub mod model;
pub mod rednet;
pub mod scoring;
pub mod stage;
pub mod torchscript;

pub use artifact::STAGE;
pub use config::{TeacherConfig, TeacherFile};
pub use error::{Result, TeacherError};
pub use eval::{
    EnsembleReport, EnsembleStats, EvalReport, PairStats, ensemble_stats, evaluate,
    evaluate_ensemble,
};
pub use kd_core::stage::{Outcome, RunOptions};
pub use load::{LoadedTeacher, load, load_teacher};
pub use model::{Arch, ModelConfig, ModelOverrides, Net};
pub use scoring::{EvalStats, eval_split};
pub use stage::{fold_assignment, train_stage};
