//! Training figures (the loss and its named parts) kept on the device and
//! read to the host together, every few steps.
//!
//! Reading a scalar from a GPU waits for every kernel queued before it: one
//! read per figure per step would stall the GPU several times a step. The
//! training loop instead queues each step's figures here as device scalars
//! and reads all the queued ones in one transfer every `sync_every` steps;
//! the sums it reports, and the check that the loss is finite, are the same
//! as with a read per step, only later (at most `sync_every - 1` steps).

use crate::error::{CoreError, Result};
use std::cell::Cell;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Steps between two reads when no setting says otherwise.
pub const DEFAULT_SYNC_EVERY: usize = 10;

thread_local! {
    static HOST_READS: Cell<usize> = const { Cell::new(0) };
}

/// How many reads of training figures this thread has made: the training
/// loop's only waits on the device besides the data-parallel all-reduce.
/// Tests count them.
pub fn host_reads() -> usize {
    HOST_READS.with(Cell::get)
}

/// One step's figures, on the device.
struct Step {
    step: usize,
    samples: usize,
    loss: Tensor,
    parts: Vec<(String, Tensor)>,
}

/// The figures of the steps not yet read.
#[derive(Default)]
pub(crate) struct Figures {
    queued: Vec<Step>,
}

impl Figures {
    /// Queue step `step`'s loss and named parts (scalars, each a mean over
    /// the step's `samples` samples).
    pub fn push(
        &mut self,
        step: usize,
        samples: usize,
        loss: &Tensor,
        parts: Vec<(String, Tensor)>,
    ) {
        self.queued.push(Step {
            step,
            samples,
            loss: loss.detach(),
            parts: parts.into_iter().map(|(k, t)| (k, t.detach())).collect(),
        });
    }

    /// Read every queued figure in one transfer and add each part, weighted
    /// by its step's samples, to `sums`. With `check`, the first non-finite
    /// loss stops here with the error naming its epoch and step. Returns the
    /// last queued loss.
    pub fn settle(
        &mut self,
        sums: &mut BTreeMap<String, f64>,
        epoch: usize,
        check: bool,
    ) -> Result<Option<f64>> {
        if self.queued.is_empty() {
            return Ok(None);
        }
        let flat: Vec<Tensor> = self
            .queued
            .iter()
            .flat_map(|s| std::iter::once(&s.loss).chain(s.parts.iter().map(|(_, t)| t)))
            .map(|t| t.to_kind(Kind::Double).reshape([1]))
            .collect();
        let values = Vec::<f64>::try_from(Tensor::cat(&flat, 0).to_device(Device::Cpu))?;
        HOST_READS.with(|r| r.set(r.get() + 1));
        let mut values = values.into_iter();
        let mut last = None;
        for s in self.queued.drain(..) {
            let loss = values.next().unwrap_or(f64::NAN);
            if check {
                check_loss(loss, epoch, s.step)?;
            }
            for (k, _) in &s.parts {
                let v = values.next().unwrap_or(f64::NAN);
                *sums.entry(k.clone()).or_default() += v * s.samples as f64;
            }
            last = Some(loss);
        }
        Ok(last)
    }
}

/// A loss that is not a finite number ends the run: training on would only
/// spread it into every weight.
pub(crate) fn check_loss(loss: f64, epoch: usize, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(CoreError::Diverged {
            loss,
            epoch: epoch + 1,
            step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_for_many_steps_and_the_same_sums() {
        let mut f = Figures::default();
        let mut sums = BTreeMap::new();
        let before = host_reads();
        for step in 0..4 {
            let v = Tensor::from(step as f32 + 0.5);
            f.push(
                step,
                2 + step,
                &v,
                vec![("ce".into(), v.shallow_clone() * 2)],
            );
        }
        assert_eq!(f.settle(&mut sums, 0, true).unwrap(), Some(3.5));
        assert_eq!(host_reads(), before + 1);
        // Sum over steps of (2 * (step + 0.5)) * samples.
        let want: f64 = (0..4)
            .map(|s| 2.0 * (s as f64 + 0.5) * (2 + s) as f64)
            .sum();
        assert_eq!(sums["ce"], want);
        // Nothing queued: no read.
        assert_eq!(f.settle(&mut sums, 0, true).unwrap(), None);
        assert_eq!(host_reads(), before + 1);
    }

    #[test]
    fn a_non_finite_loss_is_named_by_its_step() {
        let mut f = Figures::default();
        for (step, v) in [(3, 1.0f32), (4, f32::NAN), (5, 1.0)] {
            f.push(step, 8, &Tensor::from(v), vec![]);
        }
        let e = f
            .settle(&mut BTreeMap::new(), 1, true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "loss became NaN at epoch 2 step 4: lower the learning rate"
        );
        let mut g = Figures::default();
        g.push(0, 8, &Tensor::from(f32::INFINITY), vec![]);
        // Unchecked (a data-parallel rank's own share): read, not judged.
        assert_eq!(
            g.settle(&mut BTreeMap::new(), 0, false).unwrap(),
            Some(f64::INFINITY)
        );
    }
}
