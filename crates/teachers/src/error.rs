//! `TeacherError`: what can go wrong training, loading or importing a teacher.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TeacherError {
    #[error(transparent)]
    Core(#[from] kd_core::CoreError),
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    /// A file of a teacher artifact is missing or not what it should be.
    #[error("{}: {msg}", path.display())]
    Artifact { path: PathBuf, msg: String },
    /// Weights that libtorch cannot load into the network; its error is the source.
    #[error("{}: {msg}", path.display())]
    Weights {
        path: PathBuf,
        msg: &'static str,
        #[source]
        source: tch::TchError,
    },
}

kd_core::from_core_concerns!(TeacherError);

impl TeacherError {
    /// The shared error inside, for matching on its concern.
    pub fn core(&self) -> Option<&kd_core::CoreError> {
        match self {
            TeacherError::Core(e) => Some(e),
            TeacherError::Data(e) => e.core(),
            _ => None,
        }
    }
}

pub type Result<T, E = TeacherError> = std::result::Result<T, E>;
