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

use crate::amp::{Precision, autocast};
use crate::data_parallel;
use crate::error::{CoreError, IoContext, Result};
use crate::figures::{DEFAULT_SYNC_EVERY, Figures, check_loss};
use crate::manifest::{read_json, write_json};
use crate::optim::{AdamW, AdamWConfig, cosine_lr};
use crate::progress::{Progress, Silent};
use crate::rng::key;
use crate::sampler::{Shuffle, epoch_order};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;
use tch::{Tensor, nn::VarStore};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub seed: u64,
    pub adamw: AdamWConfig,
    /// Precision of the training forward pass (see [`crate::amp`]); absent
    /// from the serialised config when f32, so older artifacts stay current.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Evaluate after every n-th epoch and after the last (evaluating a
    /// 10000-image test split after each of 100 short epochs would cost more
    /// than the training). Absent from the serialised config when 1.
    #[serde(skip_serializing_if = "is_one")]
    pub eval_every: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// Checks of numeric settings before any work, one message each naming the
/// setting (the same name as the flag and the profile key).
pub mod check {
    use crate::error::{CoreError, Result};

    fn bad(name: &str, v: impl std::fmt::Display, want: &str) -> CoreError {
        CoreError::Invalid(format!("setting {name} = {v}: must be {want}"))
    }

    /// Finite and > 0.
    pub fn positive(name: &str, v: f64) -> Result<()> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(bad(name, v, "a finite number > 0"))
        }
    }

    /// Finite and >= 0.
    pub fn non_negative(name: &str, v: f64) -> Result<()> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(bad(name, v, "a finite number >= 0"))
        }
    }

    /// In `[lo, hi]` (`hi_open`: `[lo, hi)`).
    pub fn within(name: &str, v: f64, lo: f64, hi: f64, hi_open: bool) -> Result<()> {
        let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
        if ok {
            Ok(())
        } else {
            Err(bad(
                name,
                v,
                &format!("in [{lo}, {hi}{}", if hi_open { ")" } else { "]" }),
            ))
        }
    }

    /// At least 1.
    pub fn count(name: &str, v: usize) -> Result<()> {
        if v >= 1 {
            Ok(())
        } else {
            Err(bad(name, v, "at least 1"))
        }
    }
}

impl FitConfig {
    /// Refuse settings that cannot train, before any work.
    pub fn validate(&self) -> Result<()> {
        check::count("epochs", self.epochs)?;
        check::count("batch_size", self.batch_size)?;
        check::count("eval_every", self.eval_every)?;
        check::positive("lr", self.lr)?;
        check::non_negative("min_lr", self.min_lr)?;
        if self.min_lr > self.lr {
            return Err(CoreError::Invalid(format!(
                "setting min_lr = {} is above lr = {}",
                self.min_lr, self.lr
            )));
        }
        check::non_negative("warmup_epochs", self.warmup_epochs)?;
        check::non_negative("weight_decay", self.adamw.weight_decay)?;
        check::within("beta1", self.adamw.beta1, 0.0, 1.0, true)?;
        check::within("beta2", self.adamw.beta2, 0.0, 1.0, true)?;
        check::positive("eps", self.adamw.eps)
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 128,
            lr: 2e-3,
            min_lr: 1e-5,
            warmup_epochs: 1.0,
            seed: 0,
            adamw: AdamWConfig::default(),
            precision: Precision::F32,
            eval_every: 1,
        }
    }
}

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
pub fn unpack<T: 'static>(prepared: Prepared) -> Result<T> {
    prepared
        .downcast::<T>()
        .map(|b| *b)
        .map_err(|_| CoreError::Invalid("a prefetched batch of another learner's feed".into()))
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
const PREFETCH_DEPTH: usize = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train: BTreeMap<String, f64>,
    pub eval: Map<String, Value>,
    pub train_seconds: f64,
    pub images_per_sec: f64,
    /// Data-parallel runs: seconds of `train_seconds` this rank spent in the
    /// gradient all-reduce (waiting for the slowest rank included). Absent
    /// in one process, so its metrics read as before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_seconds: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct CkptState {
    identity: Value,
    epochs_done: usize,
    history: Vec<EpochRecord>,
    /// Data-parallel ranks that made the checkpoint; absent when one, so a
    /// one-process checkpoint reads and writes as before the field existed.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    world_size: usize,
}

fn one() -> usize {
    1
}

/// Options that do not change the result (beyond float summation order).
#[derive(Clone, Debug, Default)]
pub struct FitOptions {
    /// Stop (as if killed) after this many epochs in this process; for tests.
    pub stop_after: Option<usize>,
    /// The data-parallel group this process trains in; `None` (or a group of
    /// one) trains alone, exactly as without the option.
    pub dist: Option<Rc<kd_dist::Group>>,
    /// Steps between two reads of the training figures from the device (0:
    /// [`DEFAULT_SYNC_EVERY`]). The loss's finiteness is checked at each
    /// read, so a diverging run stops at most this many steps late, with
    /// the step named. Data-parallel ranks read every step (the all-reduce
    /// needs the loss on the host).
    pub sync_every: usize,
    /// Assemble every batch on the training thread even when the learner
    /// has a [`Feed`] (the same batches, without the overlap).
    pub inline: bool,
}

impl FitOptions {
    /// The data-parallel group, if there is more than one rank.
    pub fn group(&self) -> Option<&kd_dist::Group> {
        self.dist.as_deref().filter(|g| g.size() > 1)
    }

    /// Whether this process writes artifacts: rank 0, or the only process.
    pub fn is_leader(&self) -> bool {
        self.group().is_none_or(kd_dist::Group::is_leader)
    }

    /// Number of data-parallel ranks (1 alone).
    pub fn world_size(&self) -> usize {
        self.group().map_or(1, kd_dist::Group::size)
    }
}

fn ckpt_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (out.join("ckpt"), out.join("ckpt.tmp"), out.join("ckpt.old"))
}

/// Remove a finished run's checkpoint (weights are in the artifact by then).
pub fn remove_checkpoint(out: &Path) -> Result<()> {
    let (ckpt, tmp, old) = ckpt_paths(out);
    for p in [ckpt, tmp, old] {
        if p.exists() {
            fs::remove_dir_all(&p).at(&p)?;
        }
    }
    Ok(())
}

fn save_checkpoint(out: &Path, vs: &VarStore, opt: &AdamW, state: &CkptState) -> Result<()> {
    let (ckpt, tmp, old) = ckpt_paths(out);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    fs::create_dir_all(&tmp).at(&tmp)?;
    vs.save(tmp.join(crate::stage::WEIGHTS))?;
    opt.save(&tmp.join("optim.safetensors"))?;
    write_json(&tmp.join("state.json"), state)?;
    if ckpt.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).at(&old)?;
        }
        fs::rename(&ckpt, &old).at(&ckpt)?;
    }
    fs::rename(&tmp, &ckpt).at(&ckpt)?;
    if old.exists() {
        fs::remove_dir_all(&old).at(&old)?;
    }
    Ok(())
}

/// Train `learner` for `cfg.epochs`, resuming from `out/ckpt` if present;
/// with a `feed`, each batch's inputs are assembled while the step before
/// runs ([`Feed`]; `opts.inline` turns that off).
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
        return Err(CoreError::Invalid(
            "nothing to train: empty split or batch size 0".into(),
        ));
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
        let feed = feed.filter(|_| !opts.inline);
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
                rx.recv()
                    .map_err(|_| CoreError::Invalid("the batch prefetch thread stopped".into()))?
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
                if !mine.is_empty() {
                    let (loss, stats) = autocast(device, cfg.precision, || {
                        train_step(learner, prepared, mine, epoch)
                    })?;
                    let w = mine.len() as f64 / idx.len() as f64;
                    (&loss * w).backward();
                    figures.push(b, mine.len(), &loss, stats);
                    // Unchecked: a rank alone must not stop on its own share;
                    // the batch's loss below is checked on every rank at once.
                    share = figures.settle(&mut sums, epoch, false)?.unwrap_or(0.0) * w;
                    mine_seen += mine.len();
                }
                // The batch's loss is the same number on every rank, so a
                // diverging run stops everywhere at the same step.
                let tc = Instant::now();
                let batch_loss = data_parallel::all_reduce_grads(g, &params, &[share])?[0];
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

/// The line a person scans after each epoch: epoch k/n, the loss and its
/// parts to 4 digits, test accuracy of the prediction and of each head in %,
/// images/s, the time the stage has left. Full precision is in
/// `metrics.json` and the debug log.
pub fn epoch_summary(rec: &EpochRecord, epochs: usize, secs_left: f64) -> String {
    let mut s = format!("epoch {}/{epochs}", rec.epoch);
    let loss = rec.train.get("loss");
    let parts: Vec<String> = rec
        .train
        .iter()
        .filter(|(k, _)| k.as_str() != "loss")
        .map(|(k, v)| format!("{k} {}", four_digits(*v)))
        .collect();
    match (loss, parts.is_empty()) {
        (Some(l), true) => s += &format!("  loss {}", four_digits(*l)),
        (Some(l), false) => s += &format!("  loss {} ({})", four_digits(*l), parts.join(", ")),
        (None, _) => s += &format!("  {}", parts.join(", ")),
    }
    let pct = |k: &str| rec.eval.get(k).and_then(Value::as_f64).map(|v| 100.0 * v);
    // The model's prediction (the student's averaged heads, a teacher's
    // logits), then each head of the student.
    if let Some(main) = pct("test_acc_avg").or_else(|| pct("test_accuracy")) {
        s += &format!("  test {main:.2}%");
        let heads: Vec<String> = rec
            .eval
            .iter()
            .filter_map(|(k, v)| {
                let head = k.strip_prefix("test_acc_").filter(|h| *h != "avg")?;
                Some(format!("{head} {:.2}", 100.0 * v.as_f64()?))
            })
            .collect();
        if !heads.is_empty() {
            s += &format!(" ({})", heads.join(", "));
        }
    }
    s += &format!("  {:.0} img/s", rec.images_per_sec);
    if rec.epoch < epochs {
        s += &format!("  {} left", duration(secs_left));
    }
    s
}

/// Four significant digits, without a trailing exponent for ordinary losses.
fn four_digits(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

/// `1h 02m`, `4m 12s`, `37s`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

fn running_means(sums: &BTreeMap<String, f64>, n: usize) -> String {
    sums.iter()
        .map(|(k, v)| format!("{k} {:.4}", v / n.max(1) as f64))
        .collect::<Vec<_>>()
        .join(" ")
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

/// Load `out`'s checkpoint into `learner` and `opt`, if there is one made
/// under the same identity and world size.
fn resume(
    learner: &mut dyn Learner,
    opt: &mut AdamW,
    identity: &Value,
    out: &Path,
    world: usize,
) -> Result<Option<CkptState>> {
    let (ckpt, _, old) = ckpt_paths(out);
    // A crash between the two renames leaves only ckpt.old: it is complete.
    let dir = if ckpt.join("state.json").is_file() {
        ckpt
    } else if old.join("state.json").is_file() {
        old
    } else {
        return Ok(None);
    };
    let saved: CkptState = read_json(&dir.join("state.json"))?;
    if &saved.identity != identity {
        return Err(CoreError::Invalid(format!(
            "{}: checkpoint was made with another model, config or dataset; delete it or rerun with --force",
            dir.display()
        )));
    }
    if saved.world_size != world {
        return Err(CoreError::Invalid(format!(
            "{}: checkpoint was made by {} data-parallel rank(s), this run has {world}; resume with WORLD_SIZE={} or rerun with --force",
            dir.display(),
            saved.world_size,
            saved.world_size
        )));
    }
    learner
        .var_store()
        .load(dir.join(crate::stage::WEIGHTS))
        .map_err(|e| {
            CoreError::Invalid(format!(
                "{}: cannot load checkpoint weights: {e}",
                dir.display()
            ))
        })?;
    opt.load(&dir.join("optim.safetensors"))?;
    tracing::info!(epochs_done = saved.epochs_done, world_size = world, dir = %dir.display(), "resuming from checkpoint");
    Ok(Some(saved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use serde_json::json;
    use tch::{Device, Kind, nn, nn::Module};

    struct Lin {
        vs: VarStore,
        lin: nn::Linear,
        x: Tensor,
        y: Tensor,
        /// Steps until the loss turns NaN (counting down), if ever.
        nan_at: Option<usize>,
        /// Steps trained on a feed's prepared batch.
        prefetched: usize,
    }

    impl Lin {
        fn new() -> Lin {
            tch::manual_seed(0);
            let vs = VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "fc", 4, 3, Default::default());
            let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
            let y = x.argmax(1, false);
            Lin {
                vs,
                lin,
                x,
                y: y.remainder(3),
                nan_at: None,
                prefetched: 0,
            }
        }
    }

    impl Learner for Lin {
        fn var_store(&mut self) -> &mut VarStore {
            &mut self.vs
        }
        fn train_len(&self) -> usize {
            32
        }
        fn train_batch(
            &mut self,
            idx: &[usize],
            _e: usize,
        ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
            let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let logits = self.lin.forward(&self.x.index_select(0, &i));
            let loss = logits.cross_entropy_for_logits(&self.y.index_select(0, &i));
            let loss = match self.nan_at.as_mut() {
                Some(0) => loss * f64::NAN,
                Some(k) => {
                    *k -= 1;
                    loss
                }
                None => loss,
            };
            Ok((loss.shallow_clone(), vec![("loss".into(), loss)]))
        }
        fn train_prepared(
            &mut self,
            prepared: Prepared,
            idx: &[usize],
            e: usize,
        ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
            let made = prepared.downcast::<Vec<usize>>().expect("LinFeed's batch");
            assert_eq!(&made[..], idx, "a prefetched batch for another step");
            self.prefetched += 1;
            self.train_batch(idx, e)
        }
        fn evaluate(&mut self, e: usize) -> Result<Map<String, Value>> {
            Ok(Map::from_iter([("evaluated_after".to_string(), json!(e))]))
        }
    }

    /// Prepares a batch as its indices (what [`Lin`] checks it got).
    struct LinFeed;

    impl Feed for LinFeed {
        fn prepare(&self, idx: &[usize], _e: usize) -> Result<Prepared> {
            Ok(Box::new(idx.to_vec()))
        }
    }

    #[test]
    fn a_feed_trains_exactly_as_inline() {
        let _rng = crate::torch_rng_lock();
        let cfg = FitConfig {
            epochs: 3,
            batch_size: 5,
            lr: 0.05,
            ..Default::default()
        };
        let id = json!({"m": "lin"});
        let t = tempfile::tempdir().unwrap();
        let run = |inline: bool, dir: &str| {
            let mut l = Lin::new();
            let opts = FitOptions {
                inline,
                ..Default::default()
            };
            let h = fit(
                &mut l,
                Some(&LinFeed),
                &cfg,
                &id,
                &t.path().join(dir),
                &opts,
                &Silent,
            )
            .unwrap();
            (l, h)
        };
        let (a, ha) = run(false, "prefetch");
        let (b, hb) = run(true, "inline");
        // Every step of 3 epochs of 7 batches took the feed's batch.
        assert_eq!((a.prefetched, b.prefetched), (21, 0));
        assert!(
            a.lin.ws.equal(&b.lin.ws)
                && a.lin.bs.as_ref().unwrap().equal(b.lin.bs.as_ref().unwrap())
        );
        let losses = |h: &[EpochRecord]| h.iter().map(|r| r.train["loss"]).collect::<Vec<_>>();
        assert_eq!(losses(&ha), losses(&hb));
    }

    #[test]
    fn bf16_trains_float32_master_weights() {
        let _rng = crate::torch_rng_lock();
        let cfg = FitConfig {
            epochs: 4,
            batch_size: 8,
            lr: 0.05,
            precision: Precision::Bf16,
            ..Default::default()
        };
        let t = tempfile::tempdir().unwrap();
        let mut a = Lin::new();
        let h = fit(
            &mut a,
            None,
            &cfg,
            &json!({"m": "lin"}),
            t.path(),
            &FitOptions::default(),
            &Silent,
        )
        .unwrap();
        assert!(h[3].train["loss"] < 0.8 * h[0].train["loss"], "{h:?}");
        assert_eq!(a.lin.ws.kind(), Kind::Float);
        assert!(!crate::amp::is_enabled(Device::Cpu));
        // f32 configs serialise as before the field existed (artifact hashes).
        let f32_json = serde_json::to_value(FitConfig::default()).unwrap();
        assert!(f32_json.get("precision").is_none());
        assert_eq!(serde_json::to_value(&cfg).unwrap()["precision"], "bf16");
    }

    /// `learner` for 2 epochs of 8 steps (32 samples, batches of 4), the
    /// figures read every `sync_every` steps.
    fn fit_synced(learner: &mut Lin, sync_every: usize) -> Result<Vec<EpochRecord>> {
        let cfg = FitConfig {
            epochs: 2,
            batch_size: 4,
            lr: 0.05,
            ..Default::default()
        };
        let opts = FitOptions {
            sync_every,
            ..Default::default()
        };
        let t = tempfile::tempdir().unwrap();
        fit(
            learner,
            None,
            &cfg,
            &json!({"m": "lin"}),
            t.path(),
            &opts,
            &Silent,
        )
    }

    #[test]
    fn a_step_reads_nothing_from_the_device_between_syncs() {
        let _rng = crate::torch_rng_lock();
        // Read after steps 3, 6 and 8 of each epoch (every 3 steps, and the
        // epoch's last).
        let before = crate::figures::host_reads();
        let h = fit_synced(&mut Lin::new(), 3).unwrap();
        assert_eq!(crate::figures::host_reads() - before, 2 * 3);
        // The epoch's loss is the same figure as with a read every step.
        let h1 = fit_synced(&mut Lin::new(), 1).unwrap();
        assert_eq!(h[1].train, h1[1].train);
    }

    #[test]
    fn a_nan_loss_between_syncs_still_stops_the_run_naming_its_step() {
        let _rng = crate::torch_rng_lock();
        let mut a = Lin::new();
        // The 13th step: epoch 2, step 4 (of 0..8), read at step 5.
        a.nan_at = Some(12);
        let e = fit_synced(&mut a, 3).unwrap_err().to_string();
        assert_eq!(
            e,
            "loss became NaN at epoch 2 step 4: lower the learning rate"
        );
    }

    #[test]
    fn eval_every_skips_epochs_but_never_the_last() {
        let _rng = crate::torch_rng_lock();
        let cfg = FitConfig {
            epochs: 5,
            batch_size: 8,
            lr: 0.05,
            eval_every: 2,
            ..Default::default()
        };
        let t = tempfile::tempdir().unwrap();
        let mut a = Lin::new();
        let h = fit(
            &mut a,
            None,
            &cfg,
            &json!({"m": "lin"}),
            t.path(),
            &FitOptions::default(),
            &Silent,
        )
        .unwrap();
        let evaluated: Vec<usize> = h
            .iter()
            .filter(|r| !r.eval.is_empty())
            .map(|r| r.epoch)
            .collect();
        assert_eq!(evaluated, vec![2, 4, 5]);
        // The default serialises as before the field existed (artifact hashes).
        assert!(
            serde_json::to_value(FitConfig::default())
                .unwrap()
                .get("eval_every")
                .is_none()
        );
    }

    #[test]
    fn nonsense_settings_are_refused_by_name() {
        let ok = FitConfig::default();
        ok.validate().unwrap();
        let cases: Vec<(FitConfig, &str)> = vec![
            (
                FitConfig {
                    lr: -0.01,
                    ..ok.clone()
                },
                "lr = -0.01",
            ),
            (
                FitConfig {
                    lr: 0.0,
                    ..ok.clone()
                },
                "lr = 0",
            ),
            (
                FitConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
                "lr = NaN",
            ),
            (
                FitConfig {
                    lr: f64::INFINITY,
                    ..ok.clone()
                },
                "lr = inf",
            ),
            (
                FitConfig {
                    epochs: 0,
                    ..ok.clone()
                },
                "epochs = 0",
            ),
            (
                FitConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
                "batch_size = 0",
            ),
            (
                FitConfig {
                    eval_every: 0,
                    ..ok.clone()
                },
                "eval_every = 0",
            ),
            (
                FitConfig {
                    min_lr: 1.0,
                    ..ok.clone()
                },
                "min_lr = 1",
            ),
            (
                FitConfig {
                    warmup_epochs: -1.0,
                    ..ok.clone()
                },
                "warmup_epochs = -1",
            ),
        ];
        for (cfg, want) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn resume_equals_uninterrupted() {
        let _rng = crate::torch_rng_lock();
        let cfg = FitConfig {
            epochs: 4,
            batch_size: 8,
            lr: 0.05,
            ..Default::default()
        };
        let id = json!({"m": "lin"});
        let t = tempfile::tempdir().unwrap();
        let mut a = Lin::new();
        let ha = fit(
            &mut a,
            None,
            &cfg,
            &id,
            &t.path().join("a"),
            &FitOptions::default(),
            &Silent,
        )
        .unwrap();
        assert_eq!(ha.len(), 4);
        assert!(ha[3].train["loss"] < ha[0].train["loss"]);

        let out = t.path().join("b");
        let mut b = Lin::new();
        let stop = FitOptions {
            stop_after: Some(1),
            ..Default::default()
        };
        assert_eq!(
            fit(&mut b, None, &cfg, &id, &out, &stop, &Silent)
                .unwrap()
                .len(),
            1
        );
        let mut b2 = Lin::new();
        let hb = fit(
            &mut b2,
            None,
            &cfg,
            &id,
            &out,
            &FitOptions::default(),
            &Silent,
        )
        .unwrap();
        assert_eq!(hb.len(), 4);
        assert!(a.lin.ws.equal(&b2.lin.ws), "resumed weights differ");
        assert_eq!(ha[3].train, hb[3].train);

        let mut c = Lin::new();
        let e = fit(
            &mut c,
            None,
            &cfg,
            &json!({"m": "other"}),
            &out,
            &FitOptions::default(),
            &Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("another model"), "{e}");
    }

    #[test]
    fn epoch_summary_is_short_and_rounded() {
        let mut train = BTreeMap::new();
        train.insert("loss".to_string(), 0.648_812_345);
        train.insert("ce".to_string(), 1.006_912_3);
        train.insert("kd_cnn".to_string(), 0.293_312_3);
        let mut eval = Map::new();
        eval.insert("test_acc_avg".into(), json!(0.812_34));
        eval.insert("test_acc_cls".into(), json!(0.8091));
        eval.insert("test_acc_dist_cnn".into(), json!(0.805));
        eval.insert("val_acc_avg".into(), json!(0.83));
        let rec = EpochRecord {
            epoch: 3,
            lr: 1e-3,
            train,
            eval,
            train_seconds: 2.0,
            images_per_sec: 663.4,
            allreduce_seconds: None,
        };
        assert_eq!(
            epoch_summary(&rec, 10, 252.4),
            "epoch 3/10  loss 0.6488 (ce 1.007, kd_cnn 0.2933)  test 81.23% (cls 80.91, dist_cnn 80.50)  663 img/s  4m 12s left"
        );
        // A teacher's record, the last epoch (nothing left to say).
        let mut train = BTreeMap::new();
        train.insert("loss".to_string(), 12.345_67);
        let mut eval = Map::new();
        eval.insert("test_accuracy".into(), json!(0.9));
        eval.insert("test_loss".into(), json!(0.31));
        let rec = EpochRecord {
            epoch: 10,
            train,
            eval,
            ..rec
        };
        assert_eq!(
            epoch_summary(&rec, 10, 0.0),
            "epoch 10/10  loss 12.35  test 90.00%  663 img/s"
        );
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(37.4), "37s");
        assert_eq!(four_digits(0.000_123_456), "0.0001235");
    }
}
