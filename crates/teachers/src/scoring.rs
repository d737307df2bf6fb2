//! A model's accuracy, loss and confusion on the plain images of a split:
//! one network ([`eval_split`]), or any logits function, such as a
//! cross-fitted teacher's folds or a TorchScript module ([`eval_split_with`]).

use crate::model::Net;
use kd_core::{Progress, ViewSpec};
use kd_data::Split;
use kd_data::augment::{batch_tensor, label_tensor};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::nn::ModuleT;
use tch::{Device, Kind, Reduction, Tensor};

/// Accuracy, loss and confusion of a model on one split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalStats {
    pub samples: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub images_per_sec: f64,
}

/// Evaluate `net` (eval mode, no grad) on the plain images of `split`.
#[allow(clippy::too_many_arguments)]
pub fn eval_split(
    net: &Net,
    split: &Split,
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    classes: usize,
    batch: usize,
    device: Device,
    progress: &dyn Progress,
) -> kd_core::Result<EvalStats> {
    let f = |x: &Tensor, _: &[usize]| net.forward_t(x, false);
    eval_split_with(&f, split, spec, lut, classes, batch, device, progress)
}

/// Evaluate any logits function of (images, sample indices) on the plain
/// images of `split`: one model, or a cross-fitted teacher's folds.
#[allow(clippy::too_many_arguments)]
pub fn eval_split_with(
    logits_of: &dyn Fn(&Tensor, &[usize]) -> Tensor,
    split: &Split,
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    classes: usize,
    batch: usize,
    device: Device,
    progress: &dyn Progress,
) -> kd_core::Result<EvalStats> {
    let _g = tch::no_grad_guard();
    let n = split.len();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    let ident = spec.plain([split.chw[1], split.chw[2]]);
    let t0 = Instant::now();
    progress.start("eval", n as u64);
    let all: Vec<usize> = (0..n).collect();
    for idx in all.chunks(batch.max(1)) {
        let x = batch_tensor(split, idx, &vec![ident; idx.len()], spec, lut, device)?;
        let y = label_tensor(split, idx, device);
        let logits = logits_of(&x, idx).to_kind(Kind::Float);
        let l = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0);
        loss_sum += f64::try_from(&l)?;
        let pred: Vec<i64> = Vec::try_from(logits.argmax(1, false).to_device(Device::Cpu))?;
        for (&i, &p) in idx.iter().zip(&pred) {
            let t = split.labels[i] as usize;
            confusion[t][p as usize] += 1;
            correct += (t == p as usize) as usize;
        }
        progress.update(
            (idx[0] + idx.len()) as u64,
            &format!("acc {:.4}", correct as f64 / (idx[0] + idx.len()) as f64),
        );
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    Ok(EvalStats {
        samples: n,
        accuracy: correct as f64 / n.max(1) as f64,
        loss: loss_sum / n.max(1) as f64,
        confusion,
        images_per_sec: n as f64 / secs.max(1e-9),
    })
}
