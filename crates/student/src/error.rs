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
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = StudentError> = std::result::Result<T, E>;
