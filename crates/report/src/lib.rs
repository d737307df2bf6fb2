//! kd-report: what the pipeline's results look like on a page. The report
//! stage ([`report`]: one run directory), the data-efficiency study
//! ([`study`]: one run directory per training-set size), the charts both
//! draw ([`plot`]), and the run-naming rules the Makefile and both reports
//! follow ([`naming`]).
//!
//! It reads the stages' artifacts only through the typed metrics of
//! [`kd_core::metrics`] and never trains anything, so a report can be
//! tested from hand-written `metrics.json` files.

pub mod error;
pub mod gallery;
pub mod naming;
pub mod numbers;
pub mod plot;
pub mod report;
pub mod study;

pub use error::{ReportError, Result};
pub use report::{ReportConfig, write_report};
pub use study::{StudyConfig, write_study};
