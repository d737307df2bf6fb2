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
    /// An image folder whose top-level split folders are none of the
    /// layouts the importer reads.
    #[error(
        "{}: has {has} but no {lacks}: give train/ + test/, train/ + val/ (val/ is then the test split), train/ + val/ + test/, or class folders only",
        path.display()
    )]
    Layout {
        path: PathBuf,
        has: String,
        lacks: String,
    },
    /// A source with its own val split (an image folder's `val/` beside
    /// `test/`) and a `val_fraction` that would carve a second one out of
    /// train. `path` names the folder (or the import's source).
    #[error(
        "{path}: gives the val split itself, and setting val_fraction = {val_fraction} would carve a second one from train: set val_fraction to 0, or merge val/ into train/"
    )]
    ValTwice { path: String, val_fraction: f64 },
    /// No `size` given, and the images do not share one square size.
    #[error(
        "{}: image is {}x{}{}: a folder import needs a size ([data] size or --size) unless every image has the same square size",
        path.display(), found.0, found.1, unlike(first)
    )]
    SizeNeeded {
        path: PathBuf,
        /// Width and height of `path`.
        found: (u32, u32),
        /// The first image and its size, when `path` is not that one.
        first: Option<(PathBuf, u32, u32)>,
    },
    /// A split of a dataset artifact written before origins were recorded.
    #[error(
        "{}: split '{split}' records no sample origins (imported before they were recorded): re-import the dataset with --force",
        store.display()
    )]
    NoOrigin { store: PathBuf, split: String },
    /// A sample index past the end of its split.
    #[error(
        "{}: split '{split}' has {len} samples, no sample {index}",
        store.display()
    )]
    NoSample {
        store: PathBuf,
        split: String,
        index: usize,
        len: usize,
    },
    #[error(transparent)]
    Core(#[from] kd_core::CoreError),
}

/// What an image's size is compared with: the first image's, or squareness.
fn unlike(first: &Option<(PathBuf, u32, u32)>) -> String {
    match first {
        Some((p, w, h)) => format!(" while {} is {w}x{h}", p.display()),
        None => ", not square".into(),
    }
}

kd_core::from_core_concerns!(DataError);

impl DataError {
    /// The shared error inside, for matching on its concern.
    pub fn core(&self) -> Option<&kd_core::CoreError> {
        match self {
            DataError::Core(e) => Some(e),
            _ => None,
        }
    }
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

/// Shared code (the epoch loop, batch assembly in a learner) speaks
/// `CoreError`: a data error crosses it whole, as a stage error.
impl From<DataError> for kd_core::CoreError {
    fn from(e: DataError) -> Self {
        match e {
            DataError::Core(c) => c,
            other => kd_core::CoreError::stage(other),
        }
    }
}
