//! `DataError`: what can go wrong importing or reading a dataset artifact.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file exists but its content is not what the format says.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] kd_core::CoreError),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn format_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.into(),
        msg: msg.into(),
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}
