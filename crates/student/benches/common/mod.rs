//! What the student benches share: their settings come from the
//! environment (`cargo bench` passes no flags through to a harness-less
//! bench) and they report medians over rounds.

/// `key` parsed as a count, or `default` when unset or not a number.
pub fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of the rounds: one slow round (another job waking up) moves
/// it less than it moves a mean.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// libtorch threads from KD_THREADS, as `kd --threads` takes them; unset or
/// 0 keeps libtorch's default.
// The data-parallel bench sets threads per configuration instead.
#[allow(dead_code)]
pub fn set_threads_from_env() {
    let threads = env("KD_THREADS", 0);
    if threads > 0 {
        tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    }
}
