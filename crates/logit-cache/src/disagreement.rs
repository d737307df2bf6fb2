//! The stored views on which two teachers disagree most, with their pixels
//! rebuilt exactly as the teachers saw them: what a person looks at to see
//! what each teacher's bias makes of a hard view.
//!
//! Disagreement is the total variation distance between the two teachers'
//! softmaxes, `0.5 * sum |p_a - p_b|`: 0 for identical predictions, 1 for
//! confident predictions of different classes. Each sample contributes its
//! one most disputed view, so the picks are distinct images. The store is
//! read one chunk of samples at a time.

use crate::error::Result;
use crate::store::LogitStore;
use kd_core::{InputError, MixKind};
use kd_data::Split;
use kd_data::augment::{assemble_mixed, lut};

/// One disputed view: where it is, its label(s), and what each teacher says.
#[derive(Clone, Debug, PartialEq)]
pub struct Disputed {
    pub sample: usize,
    pub view: usize,
    /// The sample's label and, for a mixed view, the partner's label and the
    /// own label's weight.
    pub label: usize,
    pub mixed_with: Option<(usize, f64)>,
    /// `mixup` or `cutmix` for a mixed view.
    pub mix: Option<&'static str>,
    /// Total variation distance between the two teachers' softmaxes.
    pub distance: f64,
    /// Per teacher (in the order asked): its top two (class, probability).
    pub top2: Vec<[(usize, f32); 2]>,
    /// The view's pixels, `[C, H, W]` row-major, 0-255.
    pub pixels: Vec<u8>,
    pub chw: [usize; 3],
}

/// The `count` samples whose most disputed view (between teachers `a` and
/// `b` of `store`) is disputed most, most disputed first. `train` is the
/// store's dataset's training split (its labels and images).
pub fn most_disputed(
    store: &LogitStore,
    train: &Split,
    a: &str,
    b: &str,
    count: usize,
) -> Result<Vec<Disputed>> {
    if train.len() != store.num_samples() {
        return Err(InputError::mismatch(
            store.dir(),
            "samples",
            store.num_samples(),
            "the dataset's training split",
            train.len(),
        )
        .into());
    }
    let (n, k, c) = (store.num_samples(), store.views(), store.num_classes());
    // Per sample: (distance, view) of its most disputed view.
    let mut best: Vec<(f64, usize)> = Vec::with_capacity(n);
    let step = store.meta().chunk_samples.max(1);
    for start in (0..n).step_by(step) {
        let end = (start + step).min(n);
        let pairs: Vec<(usize, usize)> = (start..end)
            .flat_map(|s| (0..k).map(move |v| (s, v)))
            .collect();
        let (pa, pb) = (
            softmax_rows(&store.logits(a, &pairs)?, c),
            softmax_rows(&store.logits(b, &pairs)?, c),
        );
        for s in 0..end - start {
            let (d, v) = (0..k)
                .map(|v| {
                    let r = (s * k + v) * c;
                    (distance(&pa[r..r + c], &pb[r..r + c]), v)
                })
                .fold((f64::NEG_INFINITY, 0), |m, x| if x.0 > m.0 { x } else { m });
            best.push((d, v));
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    // Ties broken by sample index, so the pick is a pure function of the store.
    order.sort_by(|&x, &y| best[y].0.total_cmp(&best[x].0).then(x.cmp(&y)));
    order.truncate(count);
    let spec = store.view_spec();
    let view_chw = spec.out_chw(train.chw);
    let [ch, h, w] = view_chw;
    let raw = lut(&vec![0.0; ch], &vec![1.0; ch]);
    order
        .into_iter()
        .map(|s| {
            let (distance, v) = best[s];
            let pair = [(s, v)];
            let batch = store.view_batch(&pair)?;
            let m = batch.mixes[0];
            let px = assemble_mixed(
                train,
                &[s],
                &batch.views,
                &batch.partner_views,
                &batch.mixes,
                &spec,
                &raw,
            )?;
            let top2 = [a, b]
                .iter()
                .map(|t| Ok(top_two(&softmax_rows(&store.logits(t, &pair)?, c))))
                .collect::<Result<Vec<_>>>()?;
            Ok(Disputed {
                sample: s,
                view: v,
                label: train.labels[s] as usize,
                mixed_with: m.is_mixed().then(|| {
                    (
                        train.labels[m.partner as usize] as usize,
                        m.own_weight(h, w),
                    )
                }),
                mix: match m.kind {
                    MixKind::None => None,
                    MixKind::Mixup => Some("mixup"),
                    MixKind::Cutmix => Some("cutmix"),
                },
                distance,
                top2,
                pixels: px
                    .iter()
                    .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
                    .collect(),
                chw: view_chw,
            })
        })
        .collect()
}

fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
        out.extend(row.iter().map(|&x| (((x - m) as f64).exp() / z) as f32));
    }
    out
}

/// Total variation distance of two probability rows.
fn distance(p: &[f32], q: &[f32]) -> f64 {
    0.5 * p
        .iter()
        .zip(q)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
}

/// The two most probable classes of one row, most probable first.
fn top_two(p: &[f32]) -> [(usize, f32); 2] {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&x, &y| p[y].total_cmp(&p[x]).then(x.cmp(&y)));
    let at = |i: usize| idx.get(i).map_or((0, 0.0), |&j| (j, p[j]));
    [at(0), at(1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_zero_for_agreement_and_one_for_confident_disagreement() {
        assert_eq!(distance(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
        assert!((distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!((distance(&[0.5, 0.5, 0.0], &[0.25, 0.25, 0.5]) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn top_two_in_order_with_ties_to_the_lower_class() {
        assert_eq!(top_two(&[0.1, 0.6, 0.3]), [(1, 0.6), (2, 0.3)]);
        assert_eq!(top_two(&[0.4, 0.4, 0.2]), [(0, 0.4), (1, 0.4)]);
    }
}
