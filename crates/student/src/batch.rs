//! Batches: training indices to pixels and teacher logits. Every source
//! sees identical pixels: each epoch each sample uses view
//! `Rng::keyed(seed, [epoch, sample]).below(K)` of its K views ([`epoch_view`]),
//! whose parameters are read from the store or drawn by the same rule the
//! store was built with.

use crate::config::StudentConfig;
use crate::loss::Labels;
use crate::source::Source;
use kd_core::amp::Precision;
use kd_core::device::upload;
use kd_core::{CoreError, Rng, ViewBatch, ViewParams, ViewSpec};
use kd_data::augment::{batch_tensor, batch_tensor_mixed, label_tensor, lut};
use kd_data::{Dataset, Split};
use kd_logit_cache::LogitStore;
use tch::{Device, Kind, Tensor};

/// The view sample `sample` uses in `epoch` (of `views` views).
pub fn epoch_view(seed: u64, epoch: usize, sample: usize, views: usize) -> usize {
    Rng::keyed(seed, &[epoch as u64, sample as u64]).below(views as u64) as usize
}

/// How the trainer turns training indices into images and teacher logits:
/// the same (sample, view) pixels whatever the source. The data part
/// ([`Inputs`], shared with the prefetch thread) plus the source's live
/// teachers, which run on the training thread.
pub struct Batcher<'a> {
    pub inputs: Inputs<'a>,
    pub source: &'a Source,
}

/// Everything a batch needs but the live teachers: pixels, views, mixing,
/// labels and stored logits. `Sync`, so [`kd_core::fit::fit`] assembles the
/// next batch with it while the current step runs.
pub struct Inputs<'a> {
    pub train: &'a Split,
    pub lut: Vec<[f32; 256]>,
    pub spec: ViewSpec,
    pub view_seed: u64,
    pub views: usize,
    pub seed: u64,
    /// The store and the teachers read from it, in token order (cache mode).
    pub store: Option<(&'a LogitStore, &'a [String])>,
    pub device: Device,
}

impl<'a> std::ops::Deref for Batcher<'a> {
    type Target = Inputs<'a>;

    fn deref(&self) -> &Inputs<'a> {
        &self.inputs
    }
}

/// One batch's inputs, assembled by [`Inputs::prepare`].
pub struct Prepared {
    pub vids: Vec<usize>,
    pub images: Tensor,
    pub labels: Labels,
    /// Stored teacher logits (cache mode; empty without teachers); `None`
    /// when live teachers compute them on the training thread.
    pub stored: Option<Vec<Tensor>>,
}

impl<'a> Batcher<'a> {
    /// `cfg` must be resolved ([`StudentConfig::resolved`]).
    pub fn new(
        cfg: &StudentConfig,
        ds: &Dataset,
        train: &'a Split,
        source: &'a Source,
        device: Device,
    ) -> Batcher<'a> {
        let store = match source {
            Source::Cache { store, teachers } => Some((store, teachers.as_slice())),
            _ => None,
        };
        Batcher {
            inputs: Inputs {
                train,
                lut: lut(&ds.mean, &ds.std),
                spec: cfg.view_spec(),
                view_seed: cfg.view_seed.unwrap_or_default(),
                views: cfg.views.unwrap_or(1).max(1),
                seed: cfg.seed,
                store,
                device,
            },
            source,
        }
    }

    /// Raw teacher logits `[B, classes]` (f32, on the student's device), one
    /// per teacher, for the (sample, view) pairs whose images are `images`.
    pub fn teacher_logits(
        &self,
        idx: &[usize],
        vids: &[usize],
        images: &Tensor,
    ) -> kd_core::Result<Vec<Tensor>> {
        if let Some(stored) = self.inputs.stored_logits(idx, vids)? {
            return Ok(stored);
        }
        let _g = tch::no_grad_guard();
        match self.source {
            // Float32 even inside the student's bf16 autocast step: live
            // teachers are the store's fidelity check, and the store holds
            // float32 inference.
            Source::Live(ts) => Ok(ts
                .iter()
                .map(|t| {
                    kd_core::amp::autocast(t.device(), Precision::F32, || {
                        t.logits_for(idx, &images.to_device(t.device()))
                    })
                    .to_kind(Kind::Float)
                    .to_device(self.inputs.device)
                })
                .collect()),
            _ => Ok(vec![]),
        }
    }
}

impl Inputs<'_> {
    /// The view each sample uses in `epoch`.
    pub fn epoch_views(&self, idx: &[usize], epoch: usize) -> Vec<usize> {
        idx.iter()
            .map(|&s| epoch_view(self.seed, epoch, s, self.views))
            .collect()
    }

    /// Parameters of a view: read from the store in cache mode, drawn by the
    /// store's rule otherwise.
    pub fn view_params(&self, sample: usize, view: usize) -> ViewParams {
        match self.store {
            Some((store, _)) => store.view_params(sample, view),
            None => {
                let hw = [self.train.chw[1], self.train.chw[2]];
                self.spec
                    .draw(hw, self.view_seed, sample as u64, view as u64)
            }
        }
    }

    /// The store's mixing of the given pairs, when it mixes views.
    fn mixing(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Option<ViewBatch>> {
        match self.store {
            Some((store, _)) if store.mix_spec().is_some() => {
                let pairs: Vec<(usize, usize)> =
                    idx.iter().copied().zip(vids.iter().copied()).collect();
                store.view_batch(&pairs).map(Some).map_err(CoreError::stage)
            }
            _ => Ok(None),
        }
    }

    /// Images and labels of one training batch, reading the store's mixing
    /// once for both.
    pub fn batch(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<(Tensor, Labels)> {
        let mix = self.mixing(idx, vids)?;
        Ok((
            self.images_with(idx, vids, mix.as_ref())?,
            self.labels_with(idx, mix.as_ref()),
        ))
    }

    /// Normalised images `[B, C, H, W]` of the given (sample, view) pairs:
    /// for a store with mixed views, the very mixed pixels its teachers saw.
    pub fn images(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Tensor> {
        self.images_with(idx, vids, self.mixing(idx, vids)?.as_ref())
    }

    /// The labels of the given pairs: for mixed views both samples' classes
    /// and the own class's weight (its share of the pixels, or mixup's lambda).
    pub fn labels(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Labels> {
        Ok(self.labels_with(idx, self.mixing(idx, vids)?.as_ref()))
    }

    fn images_with(
        &self,
        idx: &[usize],
        vids: &[usize],
        mix: Option<&ViewBatch>,
    ) -> kd_core::Result<Tensor> {
        if let Some(b) = mix {
            return Ok(batch_tensor_mixed(
                self.train,
                idx,
                &b.views,
                &b.partner_views,
                &b.mixes,
                &self.spec,
                &self.lut,
                self.device,
            )?);
        }
        let params: Vec<ViewParams> = idx
            .iter()
            .zip(vids)
            .map(|(&s, &v)| self.view_params(s, v))
            .collect();
        Ok(batch_tensor(
            self.train,
            idx,
            &params,
            &self.spec,
            &self.lut,
            self.device,
        )?)
    }

    fn labels_with(&self, idx: &[usize], mix: Option<&ViewBatch>) -> Labels {
        let y = label_tensor(self.train, idx, self.device);
        let Some(b) = mix else {
            return Labels::plain(y);
        };
        let [h, w] = self.spec.out_hw([self.train.chw[1], self.train.chw[2]]);
        let partners: Vec<usize> = b
            .mixes
            .iter()
            .zip(idx)
            .map(|(m, &s)| if m.is_mixed() { m.partner as usize } else { s })
            .collect();
        let lam: Vec<f32> = b.mixes.iter().map(|m| m.own_weight(h, w) as f32).collect();
        Labels {
            y,
            mix: Some((
                label_tensor(self.train, &partners, self.device),
                upload(Tensor::from_slice(&lam), self.device),
            )),
        }
    }

    /// Stored teacher logits of the pairs, one `[B, classes]` tensor per
    /// teacher (none without teachers); `None` when live teachers must
    /// compute them.
    pub fn stored_logits(
        &self,
        idx: &[usize],
        vids: &[usize],
    ) -> kd_core::Result<Option<Vec<Tensor>>> {
        let Some((store, teachers)) = self.store else {
            return Ok(None);
        };
        let pairs: Vec<(usize, usize)> = idx.iter().copied().zip(vids.iter().copied()).collect();
        teachers
            .iter()
            .map(|name| {
                let v = store.logits(name, &pairs).map_err(CoreError::stage)?;
                Ok(upload(
                    Tensor::from_slice(&v).view([idx.len() as i64, -1]),
                    self.device,
                ))
            })
            .collect::<kd_core::Result<Vec<_>>>()
            .map(Some)
    }

    /// Everything of one training batch but live teachers' logits.
    pub fn prepare(&self, idx: &[usize], epoch: usize) -> kd_core::Result<Prepared> {
        let vids = self.epoch_views(idx, epoch);
        let (images, labels) = self.batch(idx, &vids)?;
        let stored = self.stored_logits(idx, &vids)?;
        Ok(Prepared {
            vids,
            images,
            labels,
            stored,
        })
    }
}

impl kd_core::fit::Feed for Inputs<'_> {
    fn prepare(&self, idx: &[usize], epoch: usize) -> kd_core::Result<kd_core::fit::Prepared> {
        Ok(Box::new(Inputs::prepare(self, idx, epoch)?))
    }
}
