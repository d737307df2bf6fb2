//! Logging and progress bars: the only place anything is drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

/// Human-readable byte count (the reports print the same).
pub use kd_report::numbers::bytes;

fn multi() -> &'static MultiProgress {
    static M: OnceLock<MultiProgress> = OnceLock::new();
    M.get_or_init(MultiProgress::new)
}

/// Log lines go through the progress bars so they do not tear them.
#[derive(Clone, Copy)]
struct Writer;

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let m = multi();
        if m.is_hidden() {
            std::io::stderr().write_all(buf)?;
        } else {
            let s = String::from_utf8_lossy(buf);
            m.suspend(|| eprint!("{s}"));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a log file
    // (CI, nohup, 2>log) are noise to read and to grep.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| Writer)
        .with_target(false)
        .compact()
        .try_init();
}

pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    multi().suspend(f)
}

/// Progress bars on stderr. When stderr is not a terminal (CI, `nohup`,
/// `2>log`) indicatif hides them, so a plain log line marks every tenth of
/// the work instead: long epochs are never silent in a log file.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<Bar>>,
}

struct Bar {
    pb: ProgressBar,
    label: String,
    total: u64,
    logged_tenths: u64,
    started: std::time::Instant,
}

impl kd_core::Progress for Bars {
    fn start(&self, label: &str, total: u64) {
        let pb = multi().add(ProgressBar::new(total));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {pos}/{len} {per_sec:>10} eta {eta:>4} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        let bar = Bar {
            pb,
            label: label.to_string(),
            total,
            logged_tenths: 0,
            started: std::time::Instant::now(),
        };
        if let Some(old) = self.bar.lock().unwrap().replace(bar) {
            old.pb.finish_and_clear();
        }
    }
    fn update(&self, pos: u64, msg: &str) {
        if let Some(b) = &mut *self.bar.lock().unwrap() {
            b.pb.set_position(pos);
            b.pb.set_message(msg.to_string());
            let tenths = pos.saturating_mul(10) / b.total.max(1);
            if b.pb.is_hidden() && tenths > b.logged_tenths && pos < b.total {
                b.logged_tenths = tenths;
                let rate = pos as f64 / b.started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!("{} {pos}/{} ({:.0}/s) {msg}", b.label, b.total, rate);
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.pb.finish_and_clear();
        }
    }
}

/// Print a line of a command's result on stdout (logs go to stderr).
#[allow(clippy::print_stdout)]
pub fn out(line: impl std::fmt::Display) {
    suspend(|| println!("{line}"));
}
