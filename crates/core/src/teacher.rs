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
}
