//! Logging and progress bars: the only place anything is drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
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

/// Progress bars on stderr: one per phase, nested (a stage's training bar
/// stays while an evaluation's bar runs below it). When stderr is not a
/// terminal (CI, `nohup`, `2>log`) indicatif hides them, so a plain log line
/// marks every tenth of a phase instead: long runs are never silent in a
/// log file.
#[derive(Default)]
pub struct Bars {
    bars: Mutex<Vec<Bar>>,
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
                "{prefix:>8} [{bar:30}] {pos}/{len} {rate:>8} eta {eta:>4} {msg}",
            )
            .expect("valid template")
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", s.per_sec());
            })
            .progress_chars("=> "),
        );
        pb.set_prefix(label.to_string());
        self.bars.lock().unwrap().push(Bar {
            pb,
            label: label.to_string(),
            total,
            logged_tenths: 0,
            started: std::time::Instant::now(),
        });
    }
    fn update(&self, pos: u64, msg: &str) {
        if let Some(b) = self.bars.lock().unwrap().last_mut() {
            b.pb.set_position(pos);
            b.pb.set_message(msg.to_string());
            let tenths = pos.saturating_mul(10) / b.total.max(1);
            if b.pb.is_hidden() && tenths > b.logged_tenths && pos < b.total {
                b.logged_tenths = tenths;
                let rate = pos as f64 / b.started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!("{} {pos}/{} ({rate:.0}/s) {msg}", b.label, b.total);
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bars.lock().unwrap().pop() {
            b.pb.finish_and_clear();
        }
    }
}

/// Print a line of a command's result on stdout (logs go to stderr). A
/// reader that went away (`kd cache inspect DIR | head -1`) ends the command
/// quietly, as it ends any Unix filter, instead of a panic.
pub fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    suspend(|| {
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            tracing::error!("cannot write to stdout: {e}");
            std::process::exit(1);
        }
    });
}

/// The line a stage's command prints when it is done: the same words for
/// every stage; `wrote` says what a written artifact holds.
pub fn outcome(
    dir: &std::path::Path,
    o: &kd_core::Outcome,
    wrote: impl FnOnce(&kd_core::Manifest) -> String,
) {
    let d = dir.display();
    out(match o {
        kd_core::Outcome::UpToDate => format!("{d}: up to date"),
        kd_core::Outcome::Wrote(m) => format!("{d}: {}", wrote(m)),
        kd_core::Outcome::Stopped { done } => {
            format!("{d}: stopped after {done} epochs")
        }
        kd_core::Outcome::Follower { rank } => {
            format!("{d}: rank {rank} trained its share; rank 0 wrote the artifact")
        }
    });
}
