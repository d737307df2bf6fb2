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
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Training produced a non-finite loss.
    #[error("loss became {loss} at epoch {epoch} step {step}: lower the learning rate")]
    Diverged {
        loss: f64,
        epoch: usize,
        step: usize,
    },
    /// A helper thread of a stage (batch prefetch, store writer) ended
    /// without its result: it panicked, and its own message is on stderr.
    #[error("the {0} thread stopped")]
    Worker(&'static str),
    /// A collective of data-parallel training failed (a peer died or
    /// stalled past the timeout), or rank 0 stopped and told the others.
    #[error(transparent)]
    DataParallel(#[from] kd_dist::Error),
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

    /// The setting this error is about, if it is one.
    pub fn as_setting(&self) -> Option<&SettingError> {
        match self {
            CoreError::Setting(e) => Some(e),
            _ => None,
        }
    }

    /// The inputs' disagreement this error is about, if it is one.
    pub fn as_input(&self) -> Option<&InputError> {
        match self {
            CoreError::Input(e) => Some(e),
            _ => None,
        }
    }
}

/// A setting (a flag and a profile key share its name) that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    /// A value outside the setting's range.
    #[error("setting {setting} = {value}: must be {want}")]
    OutOfRange {
        setting: String,
        value: String,
        want: String,
    },
    /// A value that cannot work, for a reason its range does not say (it
    /// does not fit the other settings).
    #[error("setting {setting} = {value}: {why}")]
    Rejected {
        setting: String,
        value: String,
        why: String,
    },
    /// A setting given where it means nothing (a knob of another
    /// architecture).
    #[error("setting {setting}: {why}")]
    NotApplicable { setting: String, why: String },
    /// A value outside the setting's set of values.
    #[error("setting {setting}: '{value}' is not one of {}", known.join(", "))]
    Unknown {
        setting: String,
        value: String,
        known: Vec<String>,
    },
    /// A setting the stage cannot run without.
    #[error("setting {setting}: not given ({hint})")]
    Missing { setting: String, hint: String },
    /// A name that must be unique among the values given.
    #[error("setting {setting}: '{name}' given twice")]
    Repeated { setting: String, name: String },
}

impl SettingError {
    /// The setting's name, as its flag and profile key spell it.
    pub fn setting(&self) -> &str {
        match self {
            SettingError::OutOfRange { setting, .. }
            | SettingError::Rejected { setting, .. }
            | SettingError::NotApplicable { setting, .. }
            | SettingError::Unknown { setting, .. }
            | SettingError::Missing { setting, .. }
            | SettingError::Repeated { setting, .. } => setting,
        }
    }

    pub fn out_of_range(
        setting: impl Into<String>,
        value: impl std::fmt::Display,
        want: impl Into<String>,
    ) -> SettingError {
        SettingError::OutOfRange {
            setting: setting.into(),
            value: value.to_string(),
            want: want.into(),
        }
    }

    pub fn rejected(
        setting: impl Into<String>,
        value: impl std::fmt::Display,
        why: impl Into<String>,
    ) -> SettingError {
        SettingError::Rejected {
            setting: setting.into(),
            value: value.to_string(),
            why: why.into(),
        }
    }

    pub fn unknown<S: ToString>(
        setting: impl Into<String>,
        value: impl Into<String>,
        known: impl IntoIterator<Item = S>,
    ) -> SettingError {
        SettingError::Unknown {
            setting: setting.into(),
            value: value.into(),
            known: known.into_iter().map(|k| k.to_string()).collect(),
        }
    }
}

/// Inputs of a stage (artifacts, and the settings that refer to them) that
/// do not fit together. `at` names the file or directory read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// A quantity two inputs must agree on (classes, channels, samples,
    /// the dataset's hash) differs.
    #[error("{}: {what}: {found} here, {expected} in {other}{}", at.display(), fix_suffix(fix))]
    Mismatch {
        at: PathBuf,
        what: String,
        found: String,
        other: String,
        expected: String,
        /// What to do about it, if there is one thing to do.
        fix: Option<String>,
    },
    /// A named part (a split, a teacher) that the input lacks.
    #[error("{}: no {what} '{name}' (has: {})", at.display(), has.join(", "))]
    NotFound {
        at: PathBuf,
        what: String,
        name: String,
        has: Vec<String>,
    },
    /// Nothing to work on: `what` is empty.
    #[error("{what}: nothing to work on")]
    Empty { what: String },
    /// Inputs beyond what this tool can represent.
    #[error("{what}: {limit}")]
    Unsupported { what: String, limit: String },
    /// A file whose content is not what its artifact says it holds.
    #[error("{}: {what}", at.display())]
    Malformed { at: PathBuf, what: String },
}

fn fix_suffix(fix: &Option<String>) -> String {
    fix.as_ref().map(|f| format!(" ({f})")).unwrap_or_default()
}

impl InputError {
    /// Two inputs disagree on `what`: `found` at `at`, `expected` in `other`.
    pub fn mismatch(
        at: impl Into<PathBuf>,
        what: impl Into<String>,
        found: impl std::fmt::Display,
        other: impl Into<String>,
        expected: impl std::fmt::Display,
    ) -> InputError {
        InputError::Mismatch {
            at: at.into(),
            what: what.into(),
            found: found.to_string(),
            other: other.into(),
            expected: expected.to_string(),
            fix: None,
        }
    }

    /// The same error with what to do about it.
    pub fn fix(self, how: impl Into<String>) -> InputError {
        match self {
            InputError::Mismatch {
                at,
                what,
                found,
                other,
                expected,
                ..
            } => InputError::Mismatch {
                at,
                what,
                found,
                other,
                expected,
                fix: Some(how.into()),
            },
            e => e,
        }
    }

    pub fn not_found<S: ToString>(
        at: impl Into<PathBuf>,
        what: impl Into<String>,
        name: impl Into<String>,
        has: impl IntoIterator<Item = S>,
    ) -> InputError {
        InputError::NotFound {
            at: at.into(),
            what: what.into(),
            name: name.into(),
            has: has.into_iter().map(|h| h.to_string()).collect(),
        }
    }

    /// What the two inputs disagree on, for a mismatch.
    pub fn what(&self) -> &str {
        match self {
            InputError::Mismatch { what, .. }
            | InputError::NotFound { what, .. }
            | InputError::Empty { what }
            | InputError::Unsupported { what, .. }
            | InputError::Malformed { what, .. } => what,
        }
    }
}

/// A training checkpoint that this run cannot resume from.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: checkpoint was made with another model, config or dataset; delete it or rerun with --force", dir.display())]
    Foreign { dir: PathBuf },
    #[error("{}: checkpoint was made by {saved} data-parallel rank(s), this run has {now}; resume with WORLD_SIZE={saved} or rerun with --force", dir.display())]
    WorldSize {
        dir: PathBuf,
        saved: usize,
        now: usize,
    },
    #[error("{}: cannot load checkpoint weights", dir.display())]
    Weights {
        dir: PathBuf,
        #[source]
        source: tch::TchError,
    },
}

/// Lets a stage's error type take the shared concerns with `?`, through
/// its `Core` variant.
#[macro_export]
macro_rules! from_core_concerns {
    ($t:ty) => {
        impl From<$crate::SettingError> for $t {
            fn from(e: $crate::SettingError) -> Self {
                <$t>::from($crate::CoreError::from(e))
            }
        }
        impl From<$crate::InputError> for $t {
            fn from(e: $crate::InputError) -> Self {
                <$t>::from($crate::CoreError::from(e))
            }
        }
    };
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
