//! What a model-specific trainer gives the loop: the [`Learner`] (a step,
//! an evaluation) and, optionally, the [`Feed`] that assembles the next
//! batch's inputs on a second thread.

use crate::error::Result;
use crate::sampler::Shuffle;
use serde_json::{Map, Value};
use tch::{Tensor, nn::VarStore};

/// What a model-specific trainer provides to the shared loop.
pub trait Learner {
    fn var_store(&mut self) -> &mut VarStore;
    /// Number of training samples (indices `0..n` are shuffled each epoch).
    fn train_len(&self) -> usize;
    /// How the epoch's order is drawn: a full shuffle, or blocks of the
    /// stored chunks when the training data are read by chunk.
    fn shuffle(&self) -> Shuffle {
        Shuffle::Full
    }
    /// Forward one training batch; return the loss to minimise and named
    /// scalars (0-dim tensors, left on the device: the loop reads them every
    /// few steps) whose per-sample mean is reported for the epoch.
    fn train_batch(
        &mut self,
        indices: &[usize],
        epoch: usize,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)>;
    /// [`Learner::train_batch`] on inputs a [`Feed`] assembled ahead of
    /// the step, on another thread. Learners without a feed never get one.
    fn train_prepared(
        &mut self,
        prepared: Prepared,
        indices: &[usize],
        epoch: usize,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let _ = prepared;
        self.train_batch(indices, epoch)
    }
    /// Evaluate after an epoch (test accuracy and the like).
    fn evaluate(&mut self, epoch: usize) -> Result<Map<String, Value>>;
}

/// A batch's inputs as a [`Feed`] made them, for its learner's
/// [`Learner::train_prepared`] (which knows the concrete type).
pub type Prepared = Box<dyn std::any::Any + Send>;

/// The `T` a learner's own feed prepared.
/// A learner is only ever fed by its own feed, so another type is a bug
/// in the learner, not a condition of the run.
pub fn unpack<T: 'static>(prepared: Prepared) -> T {
    *prepared
        .downcast::<T>()
        .expect("a learner's feed prepares that learner's batch type")
}

/// The part of a learner that turns a batch's indices into its inputs
/// (pixels, labels, stored logits) without touching the model, so that
/// [`fit`] assembles batch `n + 1` on a second thread while step `n` runs.
/// What it prepares must be exactly what the step would assemble inline.
pub trait Feed: Sync {
    fn prepare(&self, indices: &[usize], epoch: usize) -> Result<Prepared>;
}

/// Batches a feed may run ahead of the step: one is all the overlap there
/// is, and each held batch is memory.
pub(super) const PREFETCH_DEPTH: usize = 1;
