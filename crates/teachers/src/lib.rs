//! kd-teachers: the ensemble's two light teachers with different inductive
//! biases, their training stage and their loader.
//!
//! - [`cnn`]: a ResNet-style CNN (local, translation-equivariant kernels);
//! - [`rednet`]: a RedNet-style involution network (kernels generated per
//!   pixel, shared across channels), on the [`involution`] operator;
//! - [`model`]: [`Arch`] and [`Net`] over both, built from named presets;
//! - [`train`]: the `teacher` stage ([`train_stage`]), [`evaluate`], and
//!   [`load`], which hands other stages a `Box<dyn kd_core::Teacher>`.

pub mod cnn;
pub mod error;
pub mod involution;
pub mod model;
pub mod rednet;
pub mod torchscript;
pub mod train;

pub use error::{Result, TeacherError};
pub use model::{Arch, ModelConfig, ModelOverrides, Net};
pub use train::{
    EvalReport, EvalStats, LoadedTeacher, Outcome, TeacherConfig, TeacherFile, evaluate, load,
    load_teacher, train_stage, train_stage_with,
};
