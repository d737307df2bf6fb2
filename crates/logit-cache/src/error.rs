//! `CacheError`: what can go wrong building, reading or verifying a store.

use std::path::PathBuf;

/// Everything that can go wrong building, reading or checking a logit store.
/// Messages are one line naming the file (or flag) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Core(#[from] kd_core::CoreError),
    #[error(transparent)]
    Data(#[from] kd_data::DataError),
    #[error(transparent)]
    Shard(#[from] crate::write::ShardError),
    /// A store on disk that is not what it should be (incomplete, corrupt, other config).
    #[error("{}: {msg}", path.display())]
    Store { path: PathBuf, msg: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

kd_core::from_core_concerns!(CacheError);

impl CacheError {
    /// The shared error inside, for matching on its concern.
    pub fn core(&self) -> Option<&kd_core::CoreError> {
        match self {
            CacheError::Core(e) => Some(e),
            CacheError::Data(e) => e.core(),
            _ => None,
        }
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.into();
    move |source| CacheError::Io { path, source }
}

pub(crate) fn store_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> CacheError {
    CacheError::Store {
        path: path.into(),
        msg: msg.into(),
    }
}
