//! Logging and progress bars: the only place anything is drawn.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Writer)
        .with_target(false)
        .compact()
        .try_init();
}

pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    multi().suspend(f)
}

/// Progress bars on stderr; hidden by indicatif when stderr is not a terminal.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
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
        if let Some(old) = self.bar.lock().unwrap().replace(pb) {
            old.finish_and_clear();
        }
    }
    fn update(&self, pos: u64, msg: &str) {
        if let Some(pb) = &*self.bar.lock().unwrap() {
            pb.set_position(pos);
            pb.set_message(msg.to_string());
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.bar.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Print a line of a command's result on stdout (logs go to stderr).
#[allow(clippy::print_stdout)]
pub fn out(line: impl std::fmt::Display) {
    suspend(|| println!("{line}"));
}
