//! Gradients summed over the ranks while the backward pass runs: parameters
//! are grouped into buckets of about a set size, in the order the backward
//! pass produces their gradients (last layers first), and each bucket's
//! all-reduce starts as soon as its last gradient is computed, so
//! communication overlaps the rest of the backward pass (as PyTorch's DDP
//! does; this is its Reducer, driven from here).

use crate::{Group, Result, ffi};
use tch::Tensor;

/// The bucket size PyTorch's DDP uses by default (`bucket_cap_mb = 25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// A group's gradient reducer for one fixed list of parameters.
///
/// Sums, not means: each rank scales its loss by its share of the global
/// batch before the backward pass, so the summed gradients are the global
/// batch's. A parameter a rank's forward did not reach counts as zero
/// there; one no rank reached keeps no gradient (as in one process).
pub struct Reducer<'g> {
    handle: ffi::ReducerHandle,
    group: &'g Group,
}

impl std::fmt::Debug for Reducer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("group", self.group)
            .finish()
    }
}

impl Group {
    /// A reducer of `params`' gradients in buckets of about `bucket_bytes`
    /// (at least 1). Every rank must make it with the same parameters in
    /// the same order.
    pub fn reducer(&self, params: &[Tensor], bucket_bytes: usize) -> Result<Reducer<'_>> {
        let cap = i64::try_from(bucket_bytes.max(1)).unwrap_or(i64::MAX);
        let handle = ffi::ReducerHandle::new(&self.handle, params, cap)
            .map_err(|e| self.failed("gradient reducer set-up", e))?;
        Ok(Reducer {
            handle,
            group: self,
        })
    }
}

impl Reducer<'_> {
    /// `loss.backward()`, with the gradients of the reducer's parameters
    /// summed over the ranks by the time it returns. Every rank must call
    /// it once per step; a rank with nothing to train on passes a loss that
    /// reaches at least one parameter, with zero gradient.
    pub fn backward(&self, loss: &Tensor) -> Result<()> {
        self.handle
            .backward(loss)
            .map_err(|e| self.group.failed("bucketed all-reduce", e))
    }
}
