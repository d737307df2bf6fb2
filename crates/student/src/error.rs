//! `StudentError`: what can go wrong setting up or training the student.

#[derive(Debug, thiserror::Error)]
pub enum StudentError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Core(#[from] kd_core::CoreError),
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    #[error(transparent)]
    Cache(#[from] kd_logit_cache::CacheError),
    /// The training-curve chart could not be drawn.
    #[error(transparent)]
    Report(#[from] kd_report::ReportError),
    /// A weights file that does not fit the network its `config.json` describes.
    #[error("{}: does not fit the network in config.json", path.display())]
    Weights {
        path: std::path::PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = StudentError> = std::result::Result<T, E>;
