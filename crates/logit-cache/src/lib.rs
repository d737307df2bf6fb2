//! kd-logit-cache: every teacher's logits on the same augmented views, once,
//! in one Zarr v3 store.
//!
//! [`build`] runs the teachers (any `kd_core::Teacher`) in eval mode over K
//! views of every training image — view 0 the plain image, views 1.. drawn by
//! `kd_core::ViewSpec::draw` — and writes raw logits (no temperature) into a
//! sharded, zstd-compressed, checksummed store ([`layout`] shows it). Builds
//! resume from their finished shards and split over independent workers
//! (`--shard i/n`) whose results [`finalize`] checks and seals with the
//! manifest. [`LogitStore`] is the student's reader; [`inspect`] and
//! [`verify`] summarise and re-check a store.
//!
//! Optionally a store holds mixed views (`kd_core::mix`: mixup / cutmix
//! with a partner sample, the teachers' logits being those of the mixed
//! image) and cross-fitted teachers (each sample answered by the fold model
//! that never saw it, the fold recorded per sample).

pub mod config;
pub mod disagreement;
pub mod error;
pub mod inspect;
pub mod layout;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod verify;
pub mod write;

pub use config::CacheConfig;
pub use error::{CacheError, Result};
pub use inspect::{InspectReport, inspect};
pub use layout::{Dtype, FoldsMeta, STAGE, STORE, SizeModel, StoreMeta, TeacherMeta};
pub use store::LogitStore;
pub use verify::{VerifyReport, verify};
pub use write::{
    BuildOptions, BuildStats, Built, ShardError, TeacherInput, build, finalize, parse_shard,
};
