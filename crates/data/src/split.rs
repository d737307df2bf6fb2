//! Seeded stratified subsets and splits (train / val / test) of an imported
//! data set.

use crate::error::{DataError, Result};
use crate::origin::OriginKind;
use crate::pixels::{Gathered, Pixels};
use kd_core::InputError;
use kd_core::Rng;
use kd_core::sampler::Shuffle;
use serde::{Deserialize, Serialize};

/// Images `[n, c, h, w]` as uint8 (in memory, or read by chunk: see
/// [`Pixels`]), with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub images: Pixels,
    pub labels: Vec<u16>,
    pub chw: [usize; 3],
}

impl Split {
    /// A split whose pixels are in one buffer.
    pub fn in_memory(images: Vec<u8>, labels: Vec<u16>, chw: [usize; 3]) -> Split {
        Split {
            images: Pixels::Memory(images),
            labels,
            chw,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.chw.iter().product()
    }

    /// The images of samples `idx`, fetched once for a batch
    /// ([`Pixels::gather`]).
    pub fn gather(&self, idx: &[usize]) -> Result<Gathered<'_>> {
        self.images.gather(idx, self.image_len())
    }

    /// The image of sample `i` (a copy: for tools and tests; batches
    /// [`gather`](Split::gather)).
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        self.range(i, 1)
    }

    /// Images `start..start + n` in one buffer.
    pub fn range(&self, start: usize, n: usize) -> Result<Vec<u8>> {
        self.images.range(start, n, self.image_len())
    }

    /// Samples per chunk of this split as `dataset.zarr` stores it (what
    /// `Partners::Chunk` mixing draws within, in memory or not).
    pub fn stored_chunk(&self) -> usize {
        crate::pixels::chunk_images(self.image_len(), self.len())
    }

    /// The training order this split needs: a full shuffle in memory;
    /// read by chunk, blocks of its chunks in windows of half the chunks
    /// the data cache holds (the other half serves evaluation and the
    /// window before), so each chunk is decoded about once per epoch.
    pub fn shuffle(&self) -> Shuffle {
        match (self.images.chunk_len(), self.images.cached_chunks()) {
            (Some(block), Some(cached)) => Shuffle::Blocks {
                block,
                window: (cached / 2).max(1),
            },
            _ => Shuffle::Full,
        }
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Split {
        Split {
            images: self.images.select(idx, self.image_len()),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            chw: self.chw,
        }
    }

    /// Per-class counts.
    pub fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// Indices of a seeded, stratified subset of `take` samples (classes keep
/// their proportions; order of the result is by original index, so the subset
/// of a larger `take` is not required to contain a smaller one).
pub fn stratified_pick(labels: &[u16], classes: usize, take: usize, seed: u64) -> Vec<usize> {
    let n = labels.len();
    if take >= n {
        return (0..n).collect();
    }
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    // Largest-remainder apportionment of `take` over classes.
    let mut quota: Vec<(usize, f64)> = by_class
        .iter()
        .map(|v| {
            let exact = v.len() as f64 * take as f64 / n as f64;
            (exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut left = take - quota.iter().map(|q| q.0).sum::<usize>();
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by(|&a, &b| quota[b].1.total_cmp(&quota[a].1).then(a.cmp(&b)));
    for &c in order.iter().cycle().take(classes * 2) {
        if left == 0 {
            break;
        }
        if quota[c].0 < by_class[c].len() {
            quota[c].0 += 1;
            left -= 1;
        }
    }
    let mut out = vec![];
    for (c, members) in by_class.iter_mut().enumerate() {
        Rng::keyed(seed, &[0x7374_7261, c as u64]).shuffle(members);
        out.extend_from_slice(&members[..quota[c].0]);
    }
    out.sort_unstable();
    out
}

/// A split with each sample's origin (see [`crate::origin`]), so subsets
/// and carves keep the two in step.
#[derive(Clone, Debug, PartialEq)]
pub struct Traced {
    pub split: Split,
    /// One entry per sample: a path relative to the source folder, or the
    /// sample's index in the source's file order.
    pub origin: Vec<String>,
}

impl Traced {
    /// Samples traced by their position in the source's file order (IDX and
    /// CIFAR: nothing else names a sample there).
    pub fn indexed(split: Split) -> Traced {
        let origin = (0..split.len()).map(|i| i.to_string()).collect();
        Traced { split, origin }
    }

    pub fn len(&self) -> usize {
        self.split.len()
    }

    pub fn is_empty(&self) -> bool {
        self.split.is_empty()
    }

    /// The samples at `idx`, in that order, with their origins.
    pub fn select(&self, idx: &[usize]) -> Traced {
        Traced {
            split: self.split.select(idx),
            origin: idx.iter().map(|&i| self.origin[i].clone()).collect(),
        }
    }
}

/// What an importer produces.
#[derive(Clone, Debug)]
pub struct Imported {
    pub train: Traced,
    pub test: Traced,
    /// A val split the source gives itself (an image folder with `train/`,
    /// `val/` and `test/`); without one, val is carved from train.
    pub val: Option<Traced>,
    pub class_names: Vec<String>,
    /// Human-readable description of the source (format, files).
    pub source: String,
    /// What the origins are: paths or indices.
    pub origin: OriginKind,
}

/// How a dataset artifact is cut from an import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Fraction of (limited) train carved out, stratified, as `val`.
    pub val_fraction: f64,
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            limit_train: None,
            limit_test: None,
            val_fraction: 0.0,
            seed: 0,
        }
    }
}

/// Apply limits and the validation carve: returns `(name, split)` pairs,
/// each sample still carrying its origin.
pub fn cut(imp: &Imported, cfg: &SplitConfig) -> Result<Vec<(String, Traced)>> {
    let k = imp.class_names.len();
    kd_core::fit::check::within("val_fraction", cfg.val_fraction, 0.0, 1.0, true)?;
    if imp.val.is_some() && cfg.val_fraction > 0.0 {
        return Err(DataError::ValTwice {
            path: imp.source.clone(),
            val_fraction: cfg.val_fraction,
        });
    }
    let limit = |s: &Traced, lim: Option<usize>, salt: u64| match lim {
        Some(l) => s.select(&stratified_pick(&s.split.labels, k, l, cfg.seed ^ salt)),
        None => s.clone(),
    };
    let train = limit(&imp.train, cfg.limit_train, 1);
    let test = limit(&imp.test, cfg.limit_test, 2);
    let mut out = vec![];
    if let Some(val) = &imp.val {
        out.push(("train".to_string(), train));
        out.push(("val".to_string(), val.clone()));
    } else if cfg.val_fraction > 0.0 {
        let nval = ((train.len() as f64) * cfg.val_fraction).round() as usize;
        let val_idx = stratified_pick(&train.split.labels, k, nval, cfg.seed ^ 3);
        let mut is_val = vec![false; train.len()];
        for &i in &val_idx {
            is_val[i] = true;
        }
        let rest: Vec<usize> = (0..train.len()).filter(|&i| !is_val[i]).collect();
        out.push(("train".to_string(), train.select(&rest)));
        out.push(("val".to_string(), train.select(&val_idx)));
    } else {
        out.push(("train".to_string(), train));
    }
    out.push(("test".to_string(), test));
    for (name, s) in &out {
        if s.is_empty() {
            return Err(InputError::Empty {
                what: format!("split '{name}'"),
            }
            .into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_keeps_proportions_and_is_seeded() {
        let labels: Vec<u16> = (0..1000).map(|i| if i % 10 < 7 { 0 } else { 1 }).collect();
        let pick = stratified_pick(&labels, 2, 100, 5);
        assert_eq!(pick.len(), 100);
        let ones = pick.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(ones, 30);
        assert_eq!(pick, stratified_pick(&labels, 2, 100, 5));
        assert_ne!(pick, stratified_pick(&labels, 2, 100, 6));
        let uneven: Vec<u16> = (0..10).map(|i| (i % 3) as u16).collect();
        assert_eq!(stratified_pick(&uneven, 3, 5, 1).len(), 5);
    }
}
