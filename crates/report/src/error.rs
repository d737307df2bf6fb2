//! What can stop a report: every message names the file or setting at fault,
//! with the underlying cause as its `source`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A manifest, a hash or a store could not be read (the message of
    /// kd-core names the file).
    #[error(transparent)]
    Core(Box<kd_core::CoreError>),
    #[error("{}: cannot read as a {what}", path.display())]
    Metrics {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<kd_core::CoreError>,
    },
    #[error("{}: its `metrics` are not a {what}'s", path.display())]
    ManifestMetrics {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: its `config.student` is not a student config", path.display())]
    ManifestConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no finished teacher or student artifacts to report on", run.display())]
    NothingToReport { run: PathBuf },
    #[error("no finished student runs under any --run directory (nor in {previous})")]
    NoStudyRuns { previous: String },
    #[error("{}: not a study.json", path.display())]
    PreviousStudy {
        path: PathBuf,
        #[source]
        source: Box<kd_core::CoreError>,
    },
    #[error("{}: cannot draw the chart", path.display())]
    Plot {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded font did not parse: a broken build, not a broken run.
    #[error("the embedded DejaVu Sans font is not a valid font")]
    Font,
}

// Boxed: kd-core's error is large, and every report function returns this.
impl From<kd_core::CoreError> for ReportError {
    fn from(e: kd_core::CoreError) -> Self {
        ReportError::Core(Box::new(e))
    }
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// Attach a path to an I/O error.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ReportError {
    let path = path.into();
    move |source| ReportError::Io { path, source }
}
