//! Inference: one teacher on one batch, its logits or their top-k.
//!
//! Every teacher is asked through `Teacher::logits_for` with the batch's
//! train indices, so a cross-fitted teacher answers each sample with the
//! fold model that never saw it.

use crate::error::Result;
use kd_core::{InputError, Teacher};
use tch::{Device, Kind, Tensor};

/// One teacher on one batch of train samples `idx`: `[B, classes]` rows, or
/// top-k values + indices.
pub(super) fn run_teacher(
    t: &dyn Teacher,
    idx: &[usize],
    x: &Tensor,
    classes: usize,
    top_k: Option<usize>,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let b = idx.len();
    // Top-k on the teacher's device: only k of the classes cross to the host.
    let y = t
        .logits_for(idx, &x.to_device(t.device()))
        .to_kind(Kind::Float);
    if y.size() != [b as i64, classes as i64] {
        return Err(InputError::mismatch(
            format!("teacher '{}'", t.name()),
            "logits' shape",
            format!("{:?}", y.size()),
            "the batch and dataset",
            format!("[{b}, {classes}]"),
        )
        .into());
    }
    match top_k {
        None => Ok((
            Vec::<f32>::try_from(&y.to_device(Device::Cpu).contiguous().view(-1))?,
            vec![],
        )),
        Some(k) => {
            let (v, i) = y.topk(k as i64, -1, true, true);
            let (v, i) = (v.to_device(Device::Cpu), i.to_device(Device::Cpu));
            Ok((
                Vec::<f32>::try_from(&v.contiguous().view(-1))?,
                Vec::<i64>::try_from(&i.contiguous().view(-1))?,
            ))
        }
    }
}
