//! `CoreError`: the errors every stage shares, one line each, with the
//! underlying error as the source.

use std::path::PathBuf;

/// Errors shared by every stage. Messages name the file and what is wrong in
/// one line; the underlying cause, if any, is the error's `source`.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: invalid profile: {msg}", path.display())]
    Profile { path: PathBuf, msg: String },
    #[error(
        "{}: no manifest.json, so the artifact is missing or incomplete (its stage did not finish)",
        dir.display()
    )]
    ManifestMissing { dir: PathBuf },
    #[error(
        "{}: input changed since it was used: recorded hash {recorded}, now {actual} (rerun this stage with --force)",
        path.display()
    )]
    HashMismatch {
        path: PathBuf,
        recorded: String,
        actual: String,
    },
    #[error("{}: is a '{found}' artifact, expected '{expected}'", dir.display())]
    WrongStage {
        dir: PathBuf,
        expected: String,
        found: String,
    },
    /// A Zarr read or write failed; zarrs' own error is the source.
    #[error("{path}: zarr")]
    Zarr {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Zarr would read the absent chunk as fill values (zeros) without a word.
    #[error(
        "{}: missing: {what} would read as fill values; the artifact is damaged (rebuild it)",
        file.display()
    )]
    MissingChunk { file: PathBuf, what: String },
    /// An input an artifact recorded is neither where it was recorded nor
    /// at the same place relative to the artifact.
    #[error(
        "{}: input '{role}' recorded as {} is not there{}",
        manifest.display(),
        recorded.display(),
        if looked.is_empty() { String::new() } else { format!(" (looked in {})", looked) }
    )]
    InputMissing {
        manifest: PathBuf,
        role: String,
        recorded: PathBuf,
        looked: String,
    },
    /// A file a finished artifact's manifest lists is gone.
    #[error("{}: missing, though the artifact's manifest lists it (the artifact is damaged; rerun its stage with --force)", path.display())]
    OutputMissing { path: PathBuf },
    /// A finished artifact's manifest lacks something every artifact of its
    /// stage records.
    #[error("{}: {msg}", path.display())]
    ManifestIncomplete { path: PathBuf, msg: String },
    /// `--out` holds something a stage must not write over without `--force`.
    #[error("{}: {msg}", dir.display())]
    OutOccupied { dir: PathBuf, msg: String },
    #[error("device {0}")]
    Device(String),
    /// A setting (flag or profile key, the same name) out of its range.
    #[error("setting {setting} = {value}: must be {want}")]
    Setting {
        setting: String,
        value: String,
        want: String,
    },
    #[error("{0}")]
    Invalid(String),
    /// A collective of data-parallel training failed (a peer died or
    /// stalled past the timeout), or rank 0 stopped and told the others.
    #[error("{0}")]
    DataParallel(String),
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    /// A stage's own error raised inside shared code that calls back into
    /// the stage (a store read failing mid-epoch in `fit`): kept whole, so
    /// its type and source chain survive the crossing.
    #[error(transparent)]
    Stage(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl CoreError {
    /// Carry a stage's error through shared code (see [`CoreError::Stage`]).
    pub fn stage(e: impl std::error::Error + Send + Sync + 'static) -> CoreError {
        CoreError::Stage(Box::new(e))
    }
}

impl From<kd_dist::Error> for CoreError {
    fn from(e: kd_dist::Error) -> Self {
        CoreError::DataParallel(e.0)
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| CoreError::Io {
            path: path.into(),
            source,
        })
    }
}
