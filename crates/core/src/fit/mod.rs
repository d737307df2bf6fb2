//! The epoch loop teachers and student share: seeded shuffling, cosine
//! schedule, AdamW, evaluation and a checkpoint after every epoch.
//!
//! A checkpoint holds the weights, the optimiser moments, the epoch count and
//! the history so far. Every random choice is keyed by (seed, epoch), so a run
//! killed at any point and restarted resumes from the last finished epoch and
//! ends with the same weights as an uninterrupted run.
//!
//! Under data-parallel training ([`FitOptions::dist`], see
//! [`crate::data_parallel`]) every rank runs this loop on its slice of each
//! batch; rank 0 alone checkpoints, evaluates and reports, and a checkpoint
//! records the world size it was made with (resuming with another is refused).

pub mod check;
mod checkpoint;
mod learner;
mod options;
mod summary;
#[cfg(test)]
mod tests;

pub use checkpoint::{CHECKPOINT, CHECKPOINT_OLD, remove_checkpoint};
pub use learner::{Feed, Learner, Prepared, unpack};
pub use options::{EpochRecord, FitConfig, FitOptions, GradReduce, Prefetch};
pub use summary::epoch_summary;

use crate::amp::autocast;
use crate::data_parallel;
use crate::error::{CoreError, InputError, Result};
use crate::figures::{DEFAULT_SYNC_EVERY, Figures, check_loss};
use crate::optim::{AdamW, cosine_lr};
use crate::progress::{Progress, Silent};
use crate::rng::key;
use crate::sampler::epoch_order;
use checkpoint::{CkptState, resume, save_checkpoint};
use learner::PREFETCH_DEPTH;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use summary::running_means;
use tch::{Tensor, nn::VarStore};

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Train `learner` for `cfg.epochs`, resuming from `out/ckpt` if present;
/// with a `feed`, each batch's inputs are assembled while the step before
/// runs, as `opts.prefetch` says ([`Feed`]).
///
/// `identity` names what is trained (architecture, config, data); a checkpoint
/// made under another identity is refused rather than silently mixed in.
pub fn fit(
    learner: &mut dyn Learner,
    feed: Option<&dyn Feed>,
    cfg: &FitConfig,
    identity: &Value,
    out: &Path,
    opts: &FitOptions,
    progress: &dyn Progress,
) -> Result<Vec<EpochRecord>> {
    let n = learner.train_len();
    let shuffle = learner.shuffle();
    if n == 0 || cfg.batch_size == 0 {
        return Err(InputError::Empty {
            what: "the training split".into(),
        }
        .into());
    }
    let dist = opts.group();
    let leader = opts.is_leader();
    let world = opts.world_size();
    // Only rank 0 shows progress; the others' would repeat it.
    let progress: &dyn Progress = if leader { progress } else { &Silent };
    let mut opt = AdamW::new(learner.var_store(), cfg.adamw);
    let mut state = CkptState {
        identity: identity.clone(),
        epochs_done: 0,
        history: vec![],
        world_size: world,
    };
    // Rank 0 reads the checkpoint; the others get its state by broadcast,
    // so they need no access to its files.
    let resumed = if leader {
        resume(learner, &mut opt, identity, out, world)
    } else {
        Ok(None)
    };
    if let Some(g) = dist {
        let head = Tensor::from_slice(&[
            i64::from(resumed.is_err()),
            match &resumed {
                Ok(Some(saved)) => saved.epochs_done as i64,
                _ => 0,
            },
            opt.steps,
        ]);
        let sent = g.broadcast(&head, 0);
        let resumed = resumed?;
        sent?;
        let head = Vec::<i64>::try_from(&head)?;
        if head[0] != 0 {
            return Err(data_parallel::stopped(g));
        }
        opt.steps = head[2];
        if let Some(saved) = resumed {
            state = saved;
        } else {
            state.epochs_done = head[1] as usize;
        }
        // Weights and buffers (after a resume, or the seeded initialisation,
        // which a rank on another device could draw differently) and the
        // optimiser moments: every rank starts where rank 0 does.
        data_parallel::broadcast_all(g, &sorted_variables(learner.var_store(), false))?;
        data_parallel::broadcast_all(g, &opt.moments())?;
    } else if let Some(saved) = resumed? {
        state = saved;
    }
    let params = opt.params();
    let buffers = sorted_variables(learner.var_store(), true);
    let reducer = match (dist, opts.grad_reduce) {
        (Some(g), GradReduce::Buckets(bytes)) => Some(g.reducer(&params, bytes)?),
        _ => None,
    };
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let device = learner.var_store().device();
    // The batch is global (one optimiser step's, split over the ranks), so
    // a profile trains the same model on any number of GPUs; too small a
    // share leaves each GPU mostly idle.
    let share = cfg.batch_size / world;
    if leader && world > 1 && matches!(device, tch::Device::Cuda(_)) && share < 32 {
        tracing::warn!(
            "batch_size {} over {world} data-parallel ranks is {share} images per GPU a step: \
             raise batch_size with the ranks, and the learning rate with it",
            cfg.batch_size
        );
    }
    let sync_every = match opts.sync_every {
        0 => DEFAULT_SYNC_EVERY,
        n => n,
    };
    let mut ran = 0;
    // One bar for the whole stage (its eta is the stage's); the epoch is in
    // its message, and a summary line closes every epoch.
    let first = state.epochs_done;
    progress.start("train", ((cfg.epochs - first) * n) as u64);
    let stage_t0 = Instant::now();
    for epoch in state.epochs_done..cfg.epochs {
        if opts.stop_after.is_some_and(|s| ran >= s) {
            break;
        }
        tch::manual_seed(key(cfg.seed, &[0x6570_6f63, epoch as u64]) as i64 & i64::MAX);
        let order = epoch_order(n, cfg.seed, epoch, shuffle);
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut figures = Figures::default();
        // Samples of the epoch so far (all ranks), and those this rank trained on.
        let mut seen = 0usize;
        let mut mine_seen = 0usize;
        let mut allreduce_seconds = 0.0;
        let done_before = ((epoch - first) * n) as u64;
        let epoch_of = format!("epoch {}/{}", epoch + 1, cfg.epochs);
        let t0 = Instant::now();
        let mut lr = cfg.lr;
        // Each batch as this rank trains it: the whole batch alone, its
        // slice in a data-parallel group.
        let parts: Vec<&[usize]> = order
            .chunks(cfg.batch_size)
            .map(|idx| match dist {
                Some(g) => &idx[data_parallel::slice(idx.len(), g.rank(), g.size())],
                None => idx,
            })
            .collect();
        let feed = feed.filter(|_| opts.prefetch.applies(device));
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Option<Prepared>>>(PREFETCH_DEPTH);
            if let Some(feed) = feed {
                let parts = &parts;
                scope.spawn(move || {
                    for mine in parts {
                        let r = if mine.is_empty() {
                            Ok(None)
                        } else {
                            feed.prepare(mine, epoch).map(Some)
                        };
                        // The step stopped (an error): nothing more to make.
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                });
            }
            // The next batch's prepared inputs (none without a feed).
            let next = || -> Result<Option<Prepared>> {
                if feed.is_none() {
                    return Ok(None);
                }
                rx.recv().map_err(|_| CoreError::Worker("batch prefetch"))?
            };
            for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
                let step = epoch * steps_per_epoch + b;
                lr = cosine_lr(step, total, warmup, cfg.lr, cfg.min_lr);
                opt.zero_grad()?;
                let Some(g) = dist else {
                    let (loss, stats) = autocast(device, cfg.precision, || {
                        train_step(learner, next()?, idx, epoch)
                    })?;
                    loss.backward();
                    opt.step(lr)?;
                    figures.push(b, idx.len(), &loss, stats);
                    seen += idx.len();
                    mine_seen += idx.len();
                    if (b + 1) % sync_every == 0 || b + 1 == steps_per_epoch {
                        figures.settle(&mut sums, epoch, true)?;
                        progress.update(
                            done_before + seen as u64,
                            &format!("{epoch_of} {}", running_means(&sums, mine_seen)),
                        );
                    }
                    continue;
                };
                let mine = parts[b];
                let prepared = next()?;
                // This rank's share of the batch's mean loss; a rank with an
                // empty slice (batch smaller than the world) contributes zeros.
                let mut share = 0.0;
                let mut stepped = None;
                if !mine.is_empty() {
                    let (loss, stats) = autocast(device, cfg.precision, || {
                        train_step(learner, prepared, mine, epoch)
                    })?;
                    stepped = Some((loss, stats, mine.len() as f64 / idx.len() as f64));
                }
                let scaled = stepped.as_ref().map(|(loss, _, w)| loss * *w);
                match (&reducer, scaled) {
                    (Some(r), scaled) => {
                        // Every rank joins every bucket's all-reduce: one
                        // without samples with zero gradients (of one
                        // parameter, so that the others stay unreached there).
                        let l = scaled.unwrap_or_else(|| params[0].sum(tch::Kind::Float) * 0.0);
                        r.backward(&l)?;
                    }
                    (None, Some(l)) => l.backward(),
                    (None, None) => {}
                }
                if let Some((loss, stats, w)) = stepped {
                    figures.push(b, mine.len(), &loss, stats);
                    // Unchecked: a rank alone must not stop on its own share;
                    // the batch's loss below is checked on every rank at once.
                    share = figures.settle(&mut sums, epoch, false)?.unwrap_or(0.0) * w;
                    mine_seen += mine.len();
                }
                // The batch's loss is the same number on every rank, so a
                // diverging run stops everywhere at the same step.
                let tc = Instant::now();
                let batch_loss = if reducer.is_some() {
                    data_parallel::sum_over_ranks(g, share)?
                } else {
                    data_parallel::all_reduce_grads(g, &params, &[share])?[0]
                };
                allreduce_seconds += tc.elapsed().as_secs_f64();
                check_loss(batch_loss, epoch, b)?;
                opt.step(lr)?;
                seen += idx.len();
                // Rank 0's progress shows the means over its own slices.
                progress.update(
                    done_before + seen as u64,
                    &format!("{epoch_of} {}", running_means(&sums, mine_seen)),
                );
            }
            Ok(())
        })?;
        if let Some(g) = dist {
            sums = data_parallel::all_reduce_stats(g, &sums)?;
            data_parallel::sync_buffers(g, &buffers)?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let due = (epoch + 1) % cfg.eval_every.max(1) == 0 || epoch + 1 == cfg.epochs;
        let eval = if due && leader {
            learner.evaluate(epoch)?
        } else {
            Map::new()
        };
        let rec = EpochRecord {
            epoch: epoch + 1,
            lr,
            train: sums
                .into_iter()
                .map(|(k, v)| (k, v / seen as f64))
                .collect(),
            eval,
            train_seconds: secs,
            images_per_sec: seen as f64 / secs.max(1e-9),
            allreduce_seconds: dist.map(|_| allreduce_seconds),
        };
        if leader {
            let per_epoch = stage_t0.elapsed().as_secs_f64() / (epoch + 1 - first) as f64;
            let left = per_epoch * (cfg.epochs - epoch - 1) as f64;
            tracing::info!("{}", epoch_summary(&rec, cfg.epochs, left));
            tracing::debug!(
                epoch = epoch + 1,
                train = ?rec.train,
                eval = %serde_json::Value::Object(rec.eval.clone()),
                images_per_sec = rec.images_per_sec,
                "epoch done"
            );
        }
        state.history.push(rec);
        state.epochs_done = epoch + 1;
        if leader {
            save_checkpoint(out, learner.var_store(), &opt, &state)?;
        }
        if let Some(g) = dist {
            // The others wait here while rank 0 evaluates and checkpoints:
            // an epoch is over on every rank once its checkpoint exists.
            g.barrier()?;
        }
        ran += 1;
    }
    progress.finish();
    Ok(state.history)
}

/// One step's forward: on the prepared inputs when a feed made them.
fn train_step(
    learner: &mut dyn Learner,
    prepared: Option<Prepared>,
    idx: &[usize],
    epoch: usize,
) -> Result<(Tensor, Vec<(String, Tensor)>)> {
    match prepared {
        Some(p) => learner.train_prepared(p, idx, epoch),
        None => learner.train_batch(idx, epoch),
    }
}

/// A var store's variables sorted by name (the same order on every rank):
/// all of them, or (`buffers_only`) those not trained by gradient.
fn sorted_variables(vs: &VarStore, buffers_only: bool) -> Vec<Tensor> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| !buffers_only || !t.requires_grad())
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().map(|(_, t)| t).collect()
}
