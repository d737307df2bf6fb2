//! `StudentError`: what can go wrong setting up or training the student.

#[derive(Debug, thiserror::Error)]
pub enum StudentError {
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
    /// A teacher a store was built from, changed since: the store's
    /// logits are no longer that teacher's.
    #[error("{}: teacher '{teacher}' changed after the store was built; rebuild the cache", store.display())]
    TeacherChanged {
        store: std::path::PathBuf,
        teacher: String,
        #[source]
        source: kd_core::CoreError,
    },
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
}

kd_core::from_core_concerns!(StudentError);

impl StudentError {
    /// The shared error inside, for matching on its concern.
    pub fn core(&self) -> Option<&kd_core::CoreError> {
        match self {
            StudentError::Core(e) => Some(e),
            StudentError::Data(e) => e.core(),
            StudentError::Cache(e) => e.core(),
            _ => None,
        }
    }
}

pub type Result<T, E = StudentError> = std::result::Result<T, E>;
