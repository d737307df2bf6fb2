//! Building a store: teachers run over every (sample, view) once, a writer
//! thread encodes and stores whole shards while the next shard is inferred.
//!
//! Resumable: a shard counts as done only when its marker exists, and the
//! marker is written after the shard's data, so a killed run redoes at most
//! the shards in flight. Every shard is computed in the same batches whatever
//! ran before, so a resumed store is byte-identical to an uninterrupted one.
//! Shardable: `--shard i/n` takes shards `s % n == i`; the store's metadata
//! is created once, atomically (built in a temporary directory and renamed),
//! so concurrent workers agree on it without locks.
//!
//! Byte-identity needs deterministic kernels: the same device, thread count
//! and batch size give the same logits; batch size and device are left out of
//! the store's identity because they change results only within rounding.
//!
//! [`build()`] drives a build (`build.rs`), claiming `--out` first
//! (`claim.rs`); [`finalize()`] seals the result of `--shard` workers.

mod build;
mod claim;
mod finalize;
mod infer;
mod shard_arg;
mod teachers;
mod writer;

pub use build::build;
pub use finalize::{check_shards, finalize};
pub use shard_arg::{ShardError, parse_shard, shard, shard_from_env};
pub use teachers::TeacherInput;

use kd_core::Outcome;

/// How this process takes part in a build (none of it changes the store's
/// bytes); how any stage runs (`force`, progress) is the [`RunOptions`]
/// beside it.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `(i, n)`: fill only shards with index % n == i, write no manifest.
    pub shard: Option<(usize, usize)>,
    /// Stop after writing this many shards, as if killed (tests).
    pub stop_after_shards: Option<usize>,
}

/// What a store build did: the stage's [`Outcome`] (`UpToDate`; `Wrote`
/// once every shard is present and the manifest is written; `Stopped` for a
/// worker whose shards are done, `--shard` or a stop) and its work.
#[derive(Debug)]
pub struct Built {
    pub outcome: Outcome,
    /// Shards this run wrote.
    pub written: usize,
    /// Shards an earlier run had already written.
    pub skipped: usize,
    pub stats: BuildStats,
}

/// Where a build's time went (seconds). `send_wait` is the time inference
/// waited for the writer; near zero means writing was fully overlapped.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct BuildStats {
    pub total: f64,
    /// Opening the dataset, checking inputs, creating the store.
    pub setup: f64,
    /// Assembling views and running the teachers.
    pub inference: f64,
    pub send_wait: f64,
    /// Encoding and storing shards (on the writer thread, overlapped).
    pub writer_busy: f64,
    /// Waiting for the writer to drain after the last shard.
    pub drain: f64,
    pub finalize: f64,
}
