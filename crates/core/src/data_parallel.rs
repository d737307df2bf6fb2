//! Data-parallel training in [`crate::fit::fit`]: the pieces that talk to
//! the other ranks (through [`kd_dist::Group`]).
//!
//! Every rank shuffles identically (the order is keyed by seed and epoch) and
//! trains on its own contiguous slice of each global batch; `batch_size`
//! stays the global batch. Each rank scales its slice-mean loss by its share
//! of the batch (slice / batch) before `backward`, so the all-reduced *sum*
//! of gradients is the gradient of the mean over the whole batch, also for a
//! last batch whose slices are unequal: one process on the global batch up
//! to float summation order. The sum runs in buckets during the backward
//! pass ([`kd_dist::Reducer`]) or after it ([`all_reduce_grads`]), as
//! [`crate::fit::GradReduce`] says. Rank 0 alone reads and writes checkpoints,
//! evaluates and reports; it broadcasts where training starts (weights,
//! buffers, optimiser moments, epoch) so the other ranks need no access to
//! its files.

use crate::error::{CoreError, Result};
use kd_dist::Group;
use std::collections::BTreeMap;
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Rank `rank`'s part of a batch of `len`: contiguous, sizes differing by at
/// most one, the larger ones first (so rank 0 always has a sample).
pub fn slice(len: usize, rank: usize, size: usize) -> Range<usize> {
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// Rank 0 runs `decide` (whether the stage has work: it reads `--out`, may
/// empty it under `--force`); the others follow its answer. An error on rank
/// 0 is its own; the others get a line saying rank 0 stopped.
pub fn leader_decides<E: From<CoreError>>(
    dist: Option<&Group>,
    decide: impl FnOnce() -> std::result::Result<bool, E>,
) -> std::result::Result<bool, E> {
    let Some(g) = dist else {
        return decide();
    };
    if g.is_leader() {
        let r = decide();
        let code = match &r {
            Ok(false) => 0,
            Ok(true) => 1,
            Err(_) => 2,
        };
        let t = Tensor::from_slice(&[code as i64]);
        match (g.broadcast(&t, 0), r) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(CoreError::from(e).into()),
            (Ok(()), Ok(run)) => Ok(run),
        }
    } else {
        let t = Tensor::from_slice(&[-1i64]);
        g.broadcast(&t, 0).map_err(CoreError::from)?;
        match i64::try_from(&t).map_err(CoreError::from)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(stopped(g).into()),
        }
    }
}

/// What the other ranks report when rank 0 refused to start.
pub(crate) fn stopped(g: &Group) -> CoreError {
    kd_dist::Error::LeaderStopped {
        rank: g.rank(),
        size: g.size(),
    }
    .into()
}

/// Make every rank's `tensors` rank 0's (in place, in the given order).
pub(crate) fn broadcast_all(g: &Group, tensors: &[Tensor]) -> Result<()> {
    let _ng = tch::no_grad_guard();
    for t in tensors {
        if t.is_contiguous() {
            g.broadcast(t, 0)?;
        } else {
            let c = t.contiguous();
            g.broadcast(&c, 0)?;
            t.shallow_clone().copy_(&c);
        }
    }
    Ok(())
}

/// Sum every rank's gradients of `params` (and the `extra` numbers) in one
/// all-reduce after the backward pass ([`crate::fit::GradReduce::AfterBackward`]); each rank has scaled its loss by its share of the batch, so
/// the sums are the global batch's gradients. A parameter without a gradient
/// on one rank (not reached by its forward) counts as zero there; one
/// without a gradient anywhere keeps none, as in one process (AdamW skips it).
/// Returns the summed `extra`.
pub(crate) fn all_reduce_grads(g: &Group, params: &[Tensor], extra: &[f64]) -> Result<Vec<f64>> {
    let device = params.first().map_or(Device::Cpu, Tensor::device);
    let (flat, sizes) = {
        let _ng = tch::no_grad_guard();
        let mut parts = Vec::with_capacity(params.len() + 1);
        let mut tail = Vec::with_capacity(params.len() + extra.len());
        let mut sizes = Vec::with_capacity(params.len());
        for p in params {
            let n = p.numel() as i64;
            sizes.push(n);
            let gr = p.grad();
            if gr.defined() {
                parts.push(gr.to_kind(Kind::Float).reshape([n]));
                tail.push(1.0f32);
            } else {
                parts.push(Tensor::zeros([n], (Kind::Float, device)));
                tail.push(0.0);
            }
        }
        tail.extend(extra.iter().map(|&x| x as f32));
        parts.push(Tensor::from_slice(&tail).to_device(device));
        (Tensor::cat(&parts, 0), sizes)
    };
    g.all_reduce_sum(&flat)?;
    let total: i64 = sizes.iter().sum();
    let tail = Vec::<f32>::try_from(
        flat.narrow(0, total, (params.len() + extra.len()) as i64)
            .to_device(Device::Cpu),
    )?;
    let mut off = 0;
    for (i, (p, &n)) in params.iter().zip(&sizes).enumerate() {
        if tail[i] > 0.0 {
            if !p.grad().defined() {
                // Give it a (zero) gradient to copy into: tch cannot set one.
                (p * 0.0).sum(Kind::Float).backward();
            }
            let _ng = tch::no_grad_guard();
            let mut gr = p.grad();
            let src = flat.narrow(0, off, n).view_as(&gr).to_kind(gr.kind());
            gr.copy_(&src);
        }
        off += n;
    }
    Ok(tail[params.len()..].iter().map(|&x| x as f64).collect())
}

/// `x` summed over the ranks.
pub(crate) fn sum_over_ranks(g: &Group, x: f64) -> Result<f64> {
    let t = Tensor::from_slice(&[x]);
    g.all_reduce_sum(&t)?;
    Ok(f64::try_from(&t)?)
}

/// Make buffers (BatchNorm running statistics and the like, which each rank
/// updated from its own slices) equal on every rank: floating ones become the
/// mean over ranks, others rank 0's.
pub(crate) fn sync_buffers(g: &Group, buffers: &[Tensor]) -> Result<()> {
    let _ng = tch::no_grad_guard();
    for b in buffers {
        if b.is_floating_point() {
            let c = b.contiguous();
            g.all_reduce_sum(&c)?;
            b.shallow_clone().copy_(&(c / g.size() as f64));
        } else {
            broadcast_all(g, std::slice::from_ref(b))?;
        }
    }
    Ok(())
}

/// Sum each named statistic over ranks. Rank 0 always trained on samples, so
/// its names are the epoch's; a rank whose slices were all empty has none
/// and adds zeros.
pub(crate) fn all_reduce_stats(
    g: &Group,
    sums: &BTreeMap<String, f64>,
) -> Result<BTreeMap<String, f64>> {
    let count = Tensor::from_slice(&[sums.len() as i64]);
    g.broadcast(&count, 0)?;
    let k = i64::try_from(&count)? as usize;
    if !sums.is_empty() && sums.len() != k {
        return Err(kd_dist::Error::Disagree {
            rank: g.rank(),
            what: "training statistics",
            mine: sums.len(),
            leader: k,
        }
        .into());
    }
    let vals: Vec<f64> = if sums.is_empty() {
        vec![0.0; k]
    } else {
        sums.values().copied().collect()
    };
    let t = Tensor::from_slice(&vals);
    g.all_reduce_sum(&t)?;
    let summed = Vec::<f64>::try_from(&t)?;
    Ok(sums.keys().cloned().zip(summed).collect())
}

#[cfg(test)]
mod tests {
    use super::slice;

    #[test]
    fn slices_cover_the_batch_in_order_and_differ_by_at_most_one() {
        for len in 1..20 {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| slice(len, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() - w[1].len() <= 1);
                }
                assert!(!parts[0].is_empty());
            }
        }
        assert_eq!(slice(5, 1, 2), 3..5);
    }
}
