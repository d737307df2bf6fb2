//! `kd cache inspect`: how a store is laid out and what its teachers say.
//!
//! Scores against the labels (accuracy, who is right alone, the averaged
//! teachers) count unmixed views only: a mixed view has two labels, and
//! scoring it against one would read as the teacher being wrong. Agreement,
//! KL and entropy need no label and count every view.
//!
//! The labels come from the dataset the store recorded, located from the
//! store (so from any working directory, and in a run directory copied
//! whole) and pinned by its hash; when it cannot be used the report says
//! why (`no_labels`) instead of leaving the accuracies blank.

use crate::error::Result;
use crate::layout::{Dtype, SizeModel, StoreMeta, store_dir};
use crate::store::LogitStore;
use kd_core::zarr::{self, ArrayInfo};
use kd_core::{MixKind, MixSpec};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct TeacherStats {
    pub name: String,
    pub arch: String,
    pub checkpoint_hash: String,
    /// k when the teacher is cross-fitted: every stored logit comes from a
    /// fold model that never saw the sample, so its accuracy here is held out.
    pub folds: Option<usize>,
    pub stored_bytes: u64,
    pub bytes_per_sample: f64,
    pub bytes_per_view: f64,
    /// Top-1 accuracy against the dataset labels (None when the dataset is
    /// gone); "all views" counts unmixed views only.
    pub acc_view0: Option<f64>,
    pub acc_all_views: Option<f64>,
    /// Mean entropy (nats) of the softmax of the raw logits, over all views.
    pub mean_entropy: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    pub a: String,
    pub b: String,
    /// Fraction of views where both teachers' top-1 classes agree.
    pub view0: f64,
    pub all_views: f64,
    /// Mean KL(softmax(a) || softmax(b)) and the reverse, in nats, over all
    /// views at temperature 1: how much the second token can add to the first.
    pub kl_ab: f64,
    pub kl_ba: f64,
    /// Fraction of views where only `a` (only `b`) is right (None without labels).
    pub only_a_right: Option<f64>,
    pub only_b_right: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub dir: String,
    pub samples: usize,
    pub views: usize,
    pub classes: usize,
    pub dtype: Dtype,
    pub top_k: Option<usize>,
    pub shards: usize,
    pub seed: u64,
    pub dataset_hash: String,
    /// The store's mixing (None: no mixed views).
    pub mix: Option<MixSpec>,
    /// Share of all (sample, view) pairs that are mixed, and by kind.
    pub mixed_share: f64,
    pub mixup_share: f64,
    pub cutmix_share: f64,
    pub arrays: Vec<ArrayInfo>,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub ratio: f64,
    /// The raw size as a formula of N, K and T (equals `raw_bytes` here).
    pub size: SizeModel,
    pub teachers: Vec<TeacherStats>,
    pub agreement: Vec<Agreement>,
    /// Top-1 accuracy over all (unmixed) views of the teachers' averaged probabilities
    /// (None without labels or with one teacher).
    pub averaged_acc_all_views: Option<f64>,
    /// Why there are no accuracies: the dataset is gone, changed or unreadable.
    pub no_labels: Option<String>,
}

/// The training labels of the store's dataset, or why they cannot be had.
fn dataset_labels(dir: &Path, meta: &StoreMeta) -> std::result::Result<Vec<u16>, String> {
    let ds = meta
        .inputs
        .iter()
        .find(|i| i.role == "dataset")
        .ok_or("the store records no dataset")?;
    let found = ds.verify_at(dir).map_err(|e| e.to_string())?;
    let root = found.join(kd_data::store::STORE);
    let read = || -> kd_core::Result<Vec<u16>> {
        let store = zarr::open_store(&root)?;
        zarr::read_all::<u16>(&zarr::open_array(&store, "/train/labels")?)
    };
    match read() {
        Ok(l) if l.len() == meta.samples => Ok(l),
        Ok(l) => Err(format!(
            "{}: {} training labels, the store has {} samples",
            root.display(),
            l.len(),
            meta.samples
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Softmax of one row, appended to `out`; returns its entropy (nats).
fn push_softmax(row: &[f32], out: &mut Vec<f32>) -> f64 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
    let mut entropy = 0f64;
    for &x in row {
        let p = ((x - m) as f64).exp() / z;
        if p > 0.0 {
            entropy -= p * p.ln();
        }
        out.push(p as f32);
    }
    entropy
}

/// Mean over rows of KL(p || q), both row-major softmax tables.
fn mean_kl(p: &[f32], q: &[f32], classes: usize) -> f64 {
    let rows = p.len() / classes.max(1);
    let total: f64 = p
        .iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(&a, &b)| a as f64 * ((a as f64).ln() - (b as f64).max(1e-30).ln()))
        .sum();
    total / rows.max(1) as f64
}

fn argmax(row: &[f32]) -> usize {
    let (mut best, mut m) = (0, f32::NEG_INFINITY);
    for (i, &x) in row.iter().enumerate() {
        if x > m {
            (best, m) = (i, x);
        }
    }
    best
}

pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let store = LogitStore::open(dir)?;
    let meta = store.meta().clone();
    let arrays = zarr::describe(&store_dir(dir))?;
    let (labels, no_labels) = match dataset_labels(dir, &meta) {
        Ok(l) => (Some(l), None),
        Err(why) => {
            // The report carries it (`no_labels`); `kd cache inspect` prints it.
            tracing::debug!("no accuracies: {why}");
            (None, Some(why))
        }
    };
    let (n, k) = (meta.samples, meta.views);
    let c = meta.num_classes;
    // Row i is (sample i / k, view i % k).
    let kinds: Vec<MixKind> = (0..n * k)
        .map(|i| {
            store
                .mix_params(i / k, i % k)
                .map_or(MixKind::None, |m| m.kind)
        })
        .collect();
    let share = |f: &dyn Fn(MixKind) -> bool| {
        kinds.iter().filter(|&&x| f(x)).count() as f64 / (n * k).max(1) as f64
    };
    let scored = |i: usize| kinds[i] == MixKind::None;
    let mut top1: Vec<Vec<u32>> = vec![];
    let mut probs: Vec<Vec<f32>> = vec![];
    let mut teachers = vec![];
    for t in &meta.teachers {
        let mut preds = Vec::with_capacity(n * k);
        let mut prob = Vec::with_capacity(n * k * c);
        let mut ent = 0f64;
        for block in (0..n).collect::<Vec<_>>().chunks(256) {
            let pairs: Vec<(usize, usize)> = block
                .iter()
                .flat_map(|&s| (0..k).map(move |v| (s, v)))
                .collect();
            let rows = store.logits(&t.name, &pairs)?;
            for row in rows.chunks_exact(c) {
                ent += push_softmax(row, &mut prob);
                preds.push(argmax(row) as u32);
            }
        }
        let acc = |all: bool| {
            labels.as_ref().map(|l| {
                let (mut hit, mut tot) = (0usize, 0usize);
                for (i, &p) in preds.iter().enumerate() {
                    if (all && scored(i)) || i % k == 0 {
                        tot += 1;
                        hit += (p == l[i / k] as u32) as usize;
                    }
                }
                hit as f64 / tot.max(1) as f64
            })
        };
        let stored: u64 = arrays
            .iter()
            .filter(|a| a.path.starts_with(&format!("teachers/{}/", t.name)))
            .map(|a| a.stored_bytes)
            .sum();
        teachers.push(TeacherStats {
            name: t.name.clone(),
            arch: t.arch.clone(),
            checkpoint_hash: t.checkpoint_hash.clone(),
            folds: t.folds.as_ref().map(|f| f.k),
            stored_bytes: stored,
            bytes_per_sample: stored as f64 / n.max(1) as f64,
            bytes_per_view: stored as f64 / (n * k).max(1) as f64,
            acc_view0: acc(false),
            acc_all_views: acc(true),
            mean_entropy: ent / (n * k).max(1) as f64,
        });
        top1.push(preds);
        probs.push(prob);
    }
    let label = |i: usize| labels.as_ref().map(|l| l[i / k] as u32);
    let n_scored = (0..n * k).filter(|&i| scored(i)).count().max(1) as f64;
    // Fraction of (unmixed) views where `x` is right and `y` is wrong.
    let only_right = |x: &[u32], y: &[u32]| {
        labels.as_ref().map(|_| {
            let hits = (0..x.len())
                .filter(|&i| scored(i) && Some(x[i]) == label(i) && Some(y[i]) != label(i))
                .count();
            hits as f64 / n_scored
        })
    };
    let mut agreement = vec![];
    for a in 0..top1.len() {
        for b in a + 1..top1.len() {
            let frac = |all: bool| {
                let (mut same, mut tot) = (0usize, 0usize);
                for (i, (x, y)) in top1[a].iter().zip(&top1[b]).enumerate() {
                    if all || i % k == 0 {
                        tot += 1;
                        same += (x == y) as usize;
                    }
                }
                same as f64 / tot.max(1) as f64
            };
            agreement.push(Agreement {
                a: meta.teachers[a].name.clone(),
                b: meta.teachers[b].name.clone(),
                view0: frac(false),
                all_views: frac(true),
                kl_ab: mean_kl(&probs[a], &probs[b], c),
                kl_ba: mean_kl(&probs[b], &probs[a], c),
                only_a_right: only_right(&top1[a], &top1[b]),
                only_b_right: only_right(&top1[b], &top1[a]),
            });
        }
    }
    let averaged_acc_all_views = (probs.len() > 1 && labels.is_some()).then(|| {
        let mut mean = vec![0f32; c];
        let hits = (0..n * k)
            .filter(|&i| {
                if !scored(i) {
                    return false;
                }
                mean.fill(0.0);
                for p in &probs {
                    for (m, x) in mean.iter_mut().zip(&p[i * c..(i + 1) * c]) {
                        *m += x;
                    }
                }
                Some(argmax(&mean) as u32) == label(i)
            })
            .count();
        hits as f64 / n_scored
    });
    let stored: u64 = arrays.iter().map(|a| a.stored_bytes).sum();
    let raw: u64 = arrays.iter().map(|a| a.raw_bytes).sum();
    Ok(InspectReport {
        dir: dir.display().to_string(),
        samples: n,
        views: k,
        classes: meta.num_classes,
        dtype: meta.dtype,
        top_k: meta.top_k,
        shards: meta.num_shards,
        seed: meta.seed,
        dataset_hash: meta.dataset_hash.clone(),
        mix: meta.mix,
        mixed_share: share(&|x| x != MixKind::None),
        mixup_share: share(&|x| x == MixKind::Mixup),
        cutmix_share: share(&|x| x == MixKind::Cutmix),
        arrays,
        stored_bytes: stored,
        raw_bytes: raw,
        ratio: kd_core::zarr::compression_ratio(raw, stored),
        size: SizeModel::of(&meta),
        teachers,
        agreement,
        averaged_acc_all_views,
        no_labels,
    })
}
