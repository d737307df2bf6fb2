//! The progress trait library code reports through; only the binary draws.

/// How long-running library code reports progress. Library crates never draw
/// anything; the binary implements this with progress bars (hidden when stderr
/// is not a terminal).
pub trait Progress: Send + Sync {
    /// A new phase with `total` units of work.
    fn start(&self, _label: &str, _total: u64) {}
    /// Position within the phase and a short status (loss, accuracy, ...).
    fn update(&self, _pos: u64, _msg: &str) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing (tests, scripts).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}
