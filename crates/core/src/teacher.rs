//! What the logit cache and the student's live mode need of a teacher,
//! whatever its architecture. `kd-teachers` implements it; the binary wires
//! the two together, so cache and student never depend on teacher code.

use tch::{Device, Tensor};

pub trait Teacher {
    /// Name of this teacher in stores and reports (`cnn`, `involution`, ...).
    fn name(&self) -> &str;
    /// Architecture and preset, e.g. `cnn/cnn-small`.
    fn arch(&self) -> &str;
    fn num_classes(&self) -> usize;
    /// blake3 of the weights file this teacher was loaded from.
    fn checkpoint_hash(&self) -> &str;
    /// Manifest hash of the dataset artifact it was trained on.
    fn dataset_hash(&self) -> &str;
    fn device(&self) -> Device;
    /// Raw logits `[B, classes]` (float32) of normalised images `[B,C,H,W]`,
    /// in eval mode and without gradients.
    fn logits(&self, images: &Tensor) -> Tensor;
    /// Logits of training samples `samples` (indices into the train split)
    /// whose views are `images`. A cross-fitted teacher answers each sample
    /// with the fold model that never saw it; a plain teacher ignores
    /// `samples`.
    fn logits_for(&self, samples: &[usize], images: &Tensor) -> Tensor {
        let _ = samples;
        self.logits(images)
    }
    /// Cross-fitting, when this teacher is k fold models rather than one.
    fn folds(&self) -> Option<&Folds> {
        None
    }
}

/// A cross-fitted teacher's folds: model `f` was trained on every training
/// sample whose fold is not `f`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Folds {
    /// Fold of each training sample, in `0..k`.
    pub assignment: Vec<u8>,
    /// blake3 of each fold model's weights file, in fold order.
    pub checkpoint_hashes: Vec<String>,
}

impl Folds {
    /// How many folds a cross-fitted teacher may have: at least two (one
    /// fold model alone would have seen nothing held out), at most 64 (each
    /// fold is another full training run; the store's uint8 fold index
    /// would allow 256).
    pub const RANGE: std::ops::RangeInclusive<usize> = 2..=64;

    pub fn k(&self) -> usize {
        self.checkpoint_hashes.len()
    }

    /// The fold holding `sample` out.
    pub fn of(&self, sample: usize) -> usize {
        self.assignment[sample] as usize
    }
}
