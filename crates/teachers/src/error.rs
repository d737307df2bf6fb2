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
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TeacherError> = std::result::Result<T, E>;
