//! The `student` stage: train the ViT from labels and teacher logits.
//!
//! Teacher logits come from a [`Source`]: the logit store (the point of the
//! project: no teacher forward passes), the teachers run live on the same
//! batches (the speed baseline and a fidelity check), or none (the
//! no-distillation baseline). All three see identical pixels: each epoch each
//! sample uses view `Rng::keyed(seed, [epoch, sample]).below(K)` of its K
//! views, whose parameters are read from the store or drawn by the same rule
//! the store was built with.
//!
//! The epoch loop, optimiser, schedule, checkpoint and resume are
//! `kd_core::fit`'s, shared with the teachers.

use crate::error::{Result, StudentError};
use crate::loss::{
    Distill, Labels, LossConfig, Targets, Weighting, averaged_target, per_teacher_targets,
    student_loss,
};
use crate::stem::{Stem, TokenStem};
use crate::vit::{Config, ModelOverrides, PRESETS, Vit, num_params};
use kd_core::ViewBatch;
use kd_core::amp::Precision;
use kd_core::fit::{EpochRecord, FitConfig, FitOptions, Learner, fit, remove_checkpoint};
use kd_core::manifest::{InputRef, Manifest, OutputRef, needs_run, write_json};
use kd_core::optim::AdamWConfig;
use kd_core::{CoreError, CropRange, Progress, Rng, Teacher, ViewParams, ViewSpec};
use kd_data::augment::{batch_tensor, batch_tensor_mixed, label_tensor, lut};
use kd_data::{Dataset, Split};
use kd_logit_cache::LogitStore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn::VarStore};

pub const STAGE: &str = "student";

/// Where the teachers' logits come from.
#[allow(clippy::large_enum_variant)] // one per run
pub enum Source {
    /// No distillation: the class token only.
    None,
    /// Read from a logit store; `teachers` is the subset used, in token order.
    Cache {
        store: LogitStore,
        teachers: Vec<String>,
    },
    /// Run the teachers on every batch.
    Live(Vec<Box<dyn Teacher>>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.teacher_names().join(","))
    }
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Cache { .. } => "cache",
            Source::Live(_) => "live",
        }
    }

    /// Each teacher's recorded architecture (`cnn/cnn-small`), in token order.
    pub fn teacher_archs(&self) -> Vec<String> {
        match self {
            Source::None => vec![],
            Source::Cache { store, teachers } => teachers
                .iter()
                .map(|t| {
                    store
                        .meta()
                        .teachers
                        .iter()
                        .find(|m| &m.name == t)
                        .map(|m| m.arch.clone())
                        .unwrap_or_default()
                })
                .collect(),
            Source::Live(ts) => ts.iter().map(|t| t.arch().to_string()).collect(),
        }
    }

    /// Teacher names in token order.
    pub fn teacher_names(&self) -> Vec<String> {
        match self {
            Source::None => vec![],
            Source::Cache { teachers, .. } => teachers.clone(),
            Source::Live(ts) => ts.iter().map(|t| t.name().to_string()).collect(),
        }
    }
}

/// How teachers map onto distillation tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenMode {
    /// One token and head per teacher (Co-advise).
    #[default]
    PerTeacher,
    /// Ablation: one token learning the teachers' averaged logits.
    Averaged,
}

/// The `[students.<variant>]` section of a profile (less `teachers`, which
/// the binary turns into a [`Source`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentConfig {
    /// Architecture preset (`vit-test`, `vit-tiny`, `vit-small`).
    pub preset: String,
    /// Expected distillation token count; refused when the teachers imply another.
    pub dist_tokens: Option<usize>,
    pub tokens: TokenMode,
    /// Patch embedding: `patch` (DeiT) or `conv-involution` (CivT stems, each
    /// distillation token the mean of its teacher's stem).
    #[serde(skip_serializing_if = "Stem::is_patch")]
    pub stem: Stem,
    /// How each view's distillation weight is shared among the teachers.
    #[serde(skip_serializing_if = "Weighting::is_uniform")]
    pub weighting: Weighting,
    /// Override of the preset's stochastic depth rate.
    pub drop_path: Option<f64>,
    /// Any architecture knob over the preset (`[students.<v>.model]`).
    #[serde(skip_serializing_if = "ModelOverrides::is_empty")]
    pub model: ModelOverrides,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// Weight of the teachers against the labels.
    pub alpha: f64,
    pub tau: f64,
    pub distill: Distill,
    pub label_smoothing: f64,
    /// Views per sample (K) and their generator; taken from the store in
    /// cache mode (where a differing explicit value is refused).
    pub views: Option<usize>,
    pub view_seed: Option<u64>,
    pub view_pad: Option<u8>,
    pub view_flip: Option<bool>,
    /// Resized-crop views (`pad` unused then); absent: pad-crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_crop: Option<CropRange>,
    pub eval_batch_size: usize,
    /// Evaluate every n-th epoch (and after the last).
    #[serde(skip_serializing_if = "is_one")]
    pub eval_every: usize,
    /// Training forward precision: f32, or bf16 autocast over f32 weights.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Default for StudentConfig {
    fn default() -> Self {
        StudentConfig {
            preset: "vit-tiny".into(),
            dist_tokens: None,
            tokens: TokenMode::PerTeacher,
            stem: Stem::Patch,
            weighting: Weighting::Uniform,
            drop_path: None,
            model: ModelOverrides::default(),
            epochs: 10,
            batch_size: 128,
            lr: 1e-3,
            min_lr: 1e-5,
            warmup_epochs: 1.0,
            weight_decay: 0.05,
            seed: 0,
            alpha: 0.5,
            tau: 1.0,
            distill: Distill::Soft,
            label_smoothing: 0.1,
            views: None,
            view_seed: None,
            view_pad: None,
            view_flip: None,
            view_crop: None,
            eval_batch_size: 500,
            eval_every: 1,
            precision: Precision::F32,
        }
    }
}

impl StudentConfig {
    pub fn fit_config(&self) -> FitConfig {
        FitConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_epochs: self.warmup_epochs,
            seed: self.seed,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..Default::default()
            },
            precision: self.precision,
            eval_every: self.eval_every,
        }
    }

    pub fn loss_config(&self) -> LossConfig {
        LossConfig {
            alpha: self.alpha,
            tau: self.tau,
            distill: self.distill,
            label_smoothing: self.label_smoothing,
        }
    }
}

/// The view sample `sample` uses in `epoch` (of `views` views).
pub fn epoch_view(seed: u64, epoch: usize, sample: usize, views: usize) -> usize {
    Rng::keyed(seed, &[epoch as u64, sample as u64]).below(views as u64) as usize
}

/// What the stage did.
#[derive(Debug)]
pub enum Outcome {
    UpToDate,
    /// `FitOptions::stop_after` ended the run early; the checkpoint is kept.
    Stopped {
        epochs_done: usize,
    },
    Wrote(Box<Manifest>),
    /// A data-parallel rank other than 0 trained its share of every batch;
    /// rank 0 wrote the artifact.
    Follower {
        rank: usize,
    },
}

fn invalid(msg: impl Into<String>) -> StudentError {
    StudentError::Invalid(msg.into())
}

impl StudentConfig {
    /// Fill the view settings from the store (cache mode) or defaults,
    /// refusing explicit values the store contradicts and zero views.
    pub fn resolved(&self, source: &Source) -> Result<StudentConfig> {
        self.validate()?;
        let mut cfg = self.clone();
        resolve_views(&mut cfg, source)?;
        Ok(cfg)
    }
}

impl StudentConfig {
    /// Refuse numeric settings that cannot train, before any work; each
    /// message names the setting as the flag and the profile key do.
    pub fn validate(&self) -> Result<()> {
        use kd_core::fit::check;
        let at = |e: CoreError| invalid(e.to_string());
        self.fit_config().validate().map_err(at)?;
        check::within("alpha", self.alpha, 0.0, 1.0, false).map_err(at)?;
        check::positive("tau", self.tau).map_err(at)?;
        check::within("label_smoothing", self.label_smoothing, 0.0, 1.0, true).map_err(at)?;
        if let Some(dp) = self.drop_path {
            check::within("drop_path", dp, 0.0, 1.0, true).map_err(at)?;
        }
        check::count("eval_batch_size", self.eval_batch_size).map_err(at)?;
        if let Some(v) = self.views {
            check::count("views", v).map_err(at)?;
        }
        Ok(())
    }
}

fn resolve_views(cfg: &mut StudentConfig, source: &Source) -> Result<()> {
    let dflt = ViewSpec::default();
    if let Source::Cache { store, .. } = source {
        let spec = store.view_spec();
        let at = store.dir().display().to_string();
        let check = |what: &str, mine: Option<String>, theirs: String| -> Result<()> {
            match mine {
                Some(m) if m != theirs => Err(invalid(format!(
                    "{at}: store has {what} {theirs} but the student config asks for {m}"
                ))),
                _ => Ok(()),
            }
        };
        check(
            "views",
            cfg.views.map(|v| v.to_string()),
            store.views().to_string(),
        )?;
        check(
            "view seed",
            cfg.view_seed.map(|v| v.to_string()),
            store.seed().to_string(),
        )?;
        check(
            "view pad",
            cfg.view_pad.map(|v| v.to_string()),
            spec.pad.to_string(),
        )?;
        check(
            "view flip",
            cfg.view_flip.map(|v| v.to_string()),
            spec.flip.to_string(),
        )?;
        check(
            "view crop",
            cfg.view_crop.map(|c| format!("{c:?}")),
            format!("{:?}", spec.resized_crop),
        )?;
        cfg.views = Some(store.views());
        cfg.view_seed = Some(store.seed());
        cfg.view_pad = Some(spec.pad);
        cfg.view_flip = Some(spec.flip);
        cfg.view_crop = spec.resized_crop;
    } else {
        cfg.views = Some(cfg.views.unwrap_or(8));
        cfg.view_seed = Some(cfg.view_seed.unwrap_or(0));
        cfg.view_pad = Some(cfg.view_pad.unwrap_or(dflt.pad));
        cfg.view_flip = Some(cfg.view_flip.unwrap_or(dflt.flip));
    }
    if cfg.views == Some(0) {
        let whose = match source {
            Source::Cache { store, .. } => format!("{}: store", store.dir().display()),
            _ => "student config".into(),
        };
        return Err(invalid(format!(
            "{whose} has 0 views per sample; need at least 1"
        )));
    }
    Ok(())
}

/// Check the source against the dataset; return a description for the config.
fn check_source(source: &Source, ds: &Dataset, train: &Split) -> Result<Value> {
    let names = source.teacher_names();
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        return Err(invalid(format!(
            "teacher names repeat: {}",
            names.join(",")
        )));
    }
    let classes = ds.num_classes();
    match source {
        Source::None => Ok(json!({"kind": "none"})),
        Source::Cache { store, teachers } => {
            let at = store.dir().display();
            if store.dataset_hash() != ds.manifest_hash {
                return Err(invalid(format!(
                    "{at}: logit store was made from dataset {} but {} has hash {} (rebuild the cache)",
                    store.dataset_hash(),
                    ds.dir.display(),
                    ds.manifest_hash
                )));
            }
            if teachers.is_empty() {
                return Err(invalid(format!("{at}: no teachers chosen from the store")));
            }
            for t in teachers {
                if !store.teachers().contains(t) {
                    return Err(invalid(format!(
                        "{at}: no teacher '{t}' in the store (has: {})",
                        store.teachers().join(", ")
                    )));
                }
            }
            if store.num_classes() != classes {
                return Err(invalid(format!(
                    "{at}: store has {} classes, dataset {classes}",
                    store.num_classes()
                )));
            }
            check_store_teachers(store, teachers)?;
            if store.num_samples() != train.len() {
                return Err(invalid(format!(
                    "{at}: store has {} samples, the train split {}",
                    store.num_samples(),
                    train.len()
                )));
            }
            Ok(json!({"kind": "cache", "teachers": teachers, "store": store.manifest_hash()}))
        }
        Source::Live(ts) => {
            if ts.is_empty() {
                return Err(invalid("live source without teachers"));
            }
            let mut desc = vec![];
            for t in ts {
                if t.dataset_hash() != ds.manifest_hash {
                    return Err(invalid(format!(
                        "teacher '{}' was trained on dataset {} but {} has hash {}",
                        t.name(),
                        t.dataset_hash(),
                        ds.dir.display(),
                        ds.manifest_hash
                    )));
                }
                if t.num_classes() != classes {
                    return Err(invalid(format!(
                        "teacher '{}' has {} classes, dataset {classes}",
                        t.name(),
                        t.num_classes()
                    )));
                }
                desc.push(
                    json!({"name": t.name(), "arch": t.arch(), "checkpoint": t.checkpoint_hash()}),
                );
            }
            Ok(json!({"kind": "live", "teachers": desc}))
        }
    }
}

/// Refuse a store whose teachers were retrained after it was built: the
/// store pins each teacher directory by its manifest hash. A directory that
/// is gone (a store copied elsewhere) cannot be checked; that is logged.
fn check_store_teachers(store: &LogitStore, used: &[String]) -> Result<()> {
    for t in used {
        let role = format!("teacher:{t}");
        let Some(pin) = store.meta().inputs.iter().find(|i| i.role == role) else {
            continue;
        };
        if !kd_core::manifest::manifest_path(&pin.path).is_file() {
            tracing::warn!(store = %store.dir().display(), teacher = %t, path = %pin.path.display(),
                "the teacher directory the store was built from is not there; cannot check it is unchanged");
            continue;
        }
        if let Err(e) = pin.verify() {
            return Err(invalid(format!(
                "{}: teacher '{t}' changed after the store was built ({e}); rebuild the cache",
                store.dir().display()
            )));
        }
    }
    Ok(())
}

/// How the trainer turns training indices into images and teacher logits:
/// the same (sample, view) pixels whatever the source.
pub struct Batcher<'a> {
    pub train: &'a Split,
    pub lut: Vec<[f32; 256]>,
    pub spec: ViewSpec,
    pub view_seed: u64,
    pub views: usize,
    pub seed: u64,
    pub source: &'a Source,
    pub device: Device,
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
        Batcher {
            train,
            lut: lut(&ds.mean, &ds.std),
            spec: match cfg.view_crop {
                Some(range) => ViewSpec::resized(range, cfg.view_flip.unwrap_or_default()),
                None => ViewSpec {
                    pad: cfg.view_pad.unwrap_or_default(),
                    flip: cfg.view_flip.unwrap_or_default(),
                    resized_crop: None,
                },
            },
            view_seed: cfg.view_seed.unwrap_or_default(),
            views: cfg.views.unwrap_or(1).max(1),
            seed: cfg.seed,
            source,
            device,
        }
    }

    /// The view each sample uses in `epoch`.
    pub fn epoch_views(&self, idx: &[usize], epoch: usize) -> Vec<usize> {
        idx.iter()
            .map(|&s| epoch_view(self.seed, epoch, s, self.views))
            .collect()
    }

    /// Parameters of a view: read from the store in cache mode, drawn by the
    /// store's rule otherwise.
    pub fn view_params(&self, sample: usize, view: usize) -> ViewParams {
        match self.source {
            Source::Cache { store, .. } => store.view_params(sample, view),
            _ => {
                let hw = [self.train.chw[1], self.train.chw[2]];
                self.spec
                    .draw(hw, self.view_seed, sample as u64, view as u64)
            }
        }
    }

    /// The store's mixing of the given pairs, when it mixes views.
    fn mixing(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Option<ViewBatch>> {
        match self.source {
            Source::Cache { store, .. } if store.mix_spec().is_some() => {
                let pairs: Vec<(usize, usize)> =
                    idx.iter().copied().zip(vids.iter().copied()).collect();
                store
                    .view_batch(&pairs)
                    .map(Some)
                    .map_err(|e| CoreError::Invalid(e.to_string()))
            }
            _ => Ok(None),
        }
    }

    /// Images and labels of one training batch, reading the store's mixing
    /// once for both.
    pub fn batch(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<(Tensor, Labels)> {
        let mix = self.mixing(idx, vids)?;
        Ok((
            self.images_with(idx, vids, mix.as_ref()),
            self.labels_with(idx, mix.as_ref()),
        ))
    }

    /// Normalised images `[B, C, H, W]` of the given (sample, view) pairs:
    /// for a store with mixed views, the very mixed pixels its teachers saw.
    pub fn images(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Tensor> {
        Ok(self.images_with(idx, vids, self.mixing(idx, vids)?.as_ref()))
    }

    /// The labels of the given pairs: for mixed views both samples' classes
    /// and the own class's weight (its share of the pixels, or mixup's lambda).
    pub fn labels(&self, idx: &[usize], vids: &[usize]) -> kd_core::Result<Labels> {
        Ok(self.labels_with(idx, self.mixing(idx, vids)?.as_ref()))
    }

    fn images_with(&self, idx: &[usize], vids: &[usize], mix: Option<&ViewBatch>) -> Tensor {
        if let Some(b) = mix {
            return batch_tensor_mixed(
                self.train,
                idx,
                &b.views,
                &b.partner_views,
                &b.mixes,
                &self.spec,
                &self.lut,
                self.device,
            );
        }
        let params: Vec<ViewParams> = idx
            .iter()
            .zip(vids)
            .map(|(&s, &v)| self.view_params(s, v))
            .collect();
        batch_tensor(self.train, idx, &params, &self.spec, &self.lut, self.device)
    }

    fn labels_with(&self, idx: &[usize], mix: Option<&ViewBatch>) -> Labels {
        let y = label_tensor(self.train, idx, self.device);
        let Some(b) = mix else {
            return Labels::plain(y);
        };
        let [_, h, w] = self.train.chw;
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
                Tensor::from_slice(&lam).to_device(self.device),
            )),
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
        let _g = tch::no_grad_guard();
        match self.source {
            Source::None => Ok(vec![]),
            Source::Cache { store, teachers } => {
                let pairs: Vec<(usize, usize)> =
                    idx.iter().copied().zip(vids.iter().copied()).collect();
                teachers
                    .iter()
                    .map(|name| {
                        let v = store
                            .logits(name, &pairs)
                            .map_err(|e| CoreError::Invalid(e.to_string()))?;
                        Ok(Tensor::from_slice(&v)
                            .view([idx.len() as i64, -1])
                            .to_device(self.device))
                    })
                    .collect()
            }
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
                    .to_device(self.device)
                })
                .collect()),
        }
    }
}

struct StudentLearner<'a> {
    vs: VarStore,
    model: Vit,
    batcher: Batcher<'a>,
    test: &'a Split,
    /// Name of each distillation head (teacher name, or `avg`).
    heads: Vec<String>,
    tokens: TokenMode,
    weighting: Weighting,
    loss: LossConfig,
    eval_batch: usize,
    /// The held-out part of the training data, when the dataset has one
    /// (settings are chosen on it, never on test).
    val: Option<&'a Split>,
    /// Live mode: each head's teacher prediction on the test split (fixed, so computed once).
    teacher_test_pred: Option<Vec<Vec<i64>>>,
}

impl StudentLearner<'_> {
    fn targets(&self, logits: Vec<Tensor>, labels: &Labels) -> Option<Targets> {
        if logits.is_empty() {
            return None;
        }
        Some(match self.tokens {
            TokenMode::PerTeacher => per_teacher_targets(logits, labels, self.weighting),
            TokenMode::Averaged => averaged_target(&logits, labels, self.weighting),
        })
    }

    fn eval_batches(&self, split: &Split) -> Vec<Vec<usize>> {
        let idx: Vec<usize> = (0..split.len()).collect();
        idx.chunks(self.eval_batch.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    fn plain_images(&self, split: &Split, idx: &[usize]) -> Tensor {
        let b = &self.batcher;
        let views = vec![ViewParams::identity(&b.spec); idx.len()];
        batch_tensor(split, idx, &views, &b.spec, &b.lut, b.device)
    }

    /// Accuracy of the averaged heads, the class head and each distillation
    /// head on the plain images of `split`, and (live teachers, test split)
    /// each head's agreement with its teacher.
    fn accuracies(
        &mut self,
        split: &Split,
        prefix: &str,
        m: &mut Map<String, Value>,
    ) -> kd_core::Result<()> {
        let batches = self.eval_batches(split);
        let agree_with = if prefix == "test" {
            self.teacher_test_pred.as_ref()
        } else {
            None
        };
        let nh = self.heads.len();
        let (mut cls_ok, mut avg_ok) = (0usize, 0usize);
        let mut head_ok = vec![0usize; nh];
        let mut agree = vec![0usize; nh];
        for b in &batches {
            let x = self.plain_images(split, b);
            let out = self.model.forward_t(&x, false);
            let labels: Vec<i64> = b.iter().map(|&i| split.labels[i] as i64).collect();
            let hits = |p: &[i64]| p.iter().zip(&labels).filter(|(a, b)| a == b).count();
            cls_ok += hits(&argmax_vec(&out.cls)?);
            avg_ok += hits(&argmax_vec(&out.averaged())?);
            for (h, d) in out.dist.iter().enumerate() {
                let p = argmax_vec(d)?;
                head_ok[h] += hits(&p);
                if let Some(tp) = agree_with {
                    agree[h] += p
                        .iter()
                        .zip(&tp[h][b[0]..b[0] + b.len()])
                        .filter(|(a, b)| a == b)
                        .count();
                }
            }
        }
        let n = split.len().max(1) as f64;
        m.insert(format!("{prefix}_acc_avg"), json!(avg_ok as f64 / n));
        m.insert(format!("{prefix}_acc_cls"), json!(cls_ok as f64 / n));
        for (h, name) in self.heads.iter().enumerate() {
            m.insert(
                format!("{prefix}_acc_dist_{name}"),
                json!(head_ok[h] as f64 / n),
            );
            if agree_with.is_some() {
                m.insert(format!("agree_{name}"), json!(agree[h] as f64 / n));
            }
        }
        Ok(())
    }
}

fn argmax_vec(t: &Tensor) -> kd_core::Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        t.argmax(-1, false).to_device(Device::Cpu),
    )?)
}

impl Learner for StudentLearner<'_> {
    fn var_store(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    fn train_len(&self) -> usize {
        self.batcher.train.len()
    }

    fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, f64)>)> {
        let b = &self.batcher;
        let vids = b.epoch_views(idx, epoch);
        let (x, y) = b.batch(idx, &vids)?;
        let targets = self.targets(b.teacher_logits(idx, &vids, &x)?, &y);
        let out = self.model.forward_t(&x, true);
        let parts = student_loss(&out, &y, targets.as_ref(), &self.loss);
        let mut stats = vec![
            ("loss".to_string(), f64::try_from(&parts.total)?),
            ("ce".to_string(), f64::try_from(&parts.ce)?),
        ];
        for (h, k) in self.heads.iter().zip(&parts.kd) {
            stats.push((format!("kd_{h}"), f64::try_from(k)?));
        }
        Ok((parts.total, stats))
    }

    fn evaluate(&mut self, _epoch: usize) -> kd_core::Result<Map<String, Value>> {
        let _g = tch::no_grad_guard();
        if self.teacher_test_pred.is_none() && matches!(self.batcher.source, Source::Live(_)) {
            // Teachers see the plain test images; their predictions are fixed.
            let mut preds = vec![vec![]; self.heads.len()];
            for b in &self.eval_batches(self.test) {
                let x = self.plain_images(self.test, b);
                let labels = Labels::plain(label_tensor(self.test, b, self.batcher.device));
                let logits = match self.batcher.source {
                    Source::Live(ts) => ts
                        .iter()
                        .map(|t| {
                            t.logits(&x.to_device(t.device()))
                                .to_kind(Kind::Float)
                                .to_device(self.batcher.device)
                        })
                        .collect(),
                    _ => vec![],
                };
                if let Some(t) = self.targets(logits, &labels) {
                    for (p, z) in preds.iter_mut().zip(&t.logits) {
                        p.extend(argmax_vec(z)?);
                    }
                }
            }
            self.teacher_test_pred = Some(preds);
        }
        let mut m = Map::new();
        let test = self.test;
        self.accuracies(test, "test", &mut m)?;
        if let Some(val) = self.val {
            self.accuracies(val, "val", &mut m)?;
        }
        Ok(m)
    }
}

/// [`train_stage_with`] with default fit options.
pub fn train_stage(
    cfg: &StudentConfig,
    dataset_dir: &Path,
    source: &Source,
    out: &Path,
    device: Device,
    force: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    train_stage_with(
        cfg,
        dataset_dir,
        source,
        out,
        device,
        force,
        &FitOptions::default(),
        progress,
    )
}

/// Train a student into `out` unless an identical one is already there.
#[allow(clippy::too_many_arguments)]
pub fn train_stage_with(
    cfg: &StudentConfig,
    dataset_dir: &Path,
    source: &Source,
    out: &Path,
    device: Device,
    force: bool,
    opts: &FitOptions,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let ds_input = InputRef::of("dataset", dataset_dir, kd_data::store::STAGE)?;
    let ds = Dataset::open(dataset_dir)?;
    let train = ds.split("train")?;
    let test = ds.split("test")?;
    let cfg = cfg.resolved(source)?;
    let source_desc = check_source(source, &ds, train)?;
    let names = source.teacher_names();
    let heads: Vec<String> = match (cfg.tokens, names.is_empty()) {
        (_, true) => vec![],
        (TokenMode::PerTeacher, false) => names.clone(),
        (TokenMode::Averaged, false) => vec!["avg".into()],
    };
    if let Some(n) = cfg.dist_tokens
        && n != heads.len()
    {
        return Err(invalid(format!(
            "preset asks for {n} distillation token(s) but the source '{}' gives {} teacher target(s) ({})",
            source.kind(),
            heads.len(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(",")
            }
        )));
    }
    let [c, h, w] = train.chw;
    if h != w {
        return Err(invalid(format!(
            "{}: images are {h}x{w}; the ViT needs square images",
            ds.dir.display()
        )));
    }
    let mut model_cfg = Config::preset(&cfg.preset, h, c, ds.num_classes(), heads.len())
        .ok_or_else(|| {
            invalid(format!(
                "unknown student preset '{}' (have: {})",
                cfg.preset,
                PRESETS.join(", ")
            ))
        })?;
    cfg.model.apply(&mut model_cfg);
    if let Some(dp) = cfg.drop_path {
        model_cfg.drop_path = dp;
    }
    model_cfg.stem = cfg.stem;
    if cfg.stem == Stem::ConvInvolution {
        model_cfg.token_stems = token_stems(source, cfg.tokens, heads.len())?;
    }
    model_cfg.validate().map_err(|e| {
        let with = if cfg.model.is_empty() {
            ""
        } else {
            " with the [model] overrides"
        };
        invalid(format!(
            "student model (preset '{}'{with}) on {h}x{w} images: {e}",
            cfg.preset
        ))
    })?;
    let mut inputs = vec![ds_input];
    if let Source::Cache { store, .. } = source {
        let stage = Manifest::read(store.dir())?.stage;
        let pin = InputRef::of("logits", store.dir(), &stage)?;
        if pin.manifest_hash != store.manifest_hash() {
            return Err(invalid(format!(
                "{}: store changed while opening it (manifest {} vs {})",
                store.dir().display(),
                store.manifest_hash(),
                pin.manifest_hash
            )));
        }
        inputs.push(pin);
    }
    let mut config = json!({"student": cfg, "model": model_cfg, "source": source_desc});
    let world = opts.world_size();
    if world > 1 && model_cfg.drop_path > 0.0 {
        // Each rank draws the drop-path masks of its own slice, so the run
        // is another random realisation than one process's: not the same
        // artifact. (Without random draws inside a batch the ranks compute
        // one process's result up to float rounding, and the hash stays.)
        config["data_parallel_ranks"] = json!(world);
    }
    // Rank 0 alone looks at (and under --force empties) `--out`.
    let run = kd_core::data_parallel::leader_decides(opts.group(), || -> Result<bool> {
        if !needs_run(out, STAGE, &config, &inputs, force)? {
            return Ok(false);
        }
        if force {
            remove_checkpoint(out)?;
        }
        Ok(true)
    })?;
    if !run {
        return Ok(Outcome::UpToDate);
    }
    let identity = json!({
        "config": config,
        "inputs": inputs.iter().map(|i| (i.role.clone(), i.manifest_hash.clone())).collect::<Vec<_>>(),
    });

    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(device);
    let model = Vit::new(&vs.root(), &model_cfg);
    let params = num_params(&vs);
    tracing::info!(preset = %cfg.preset, params, tokens = heads.len(), source = ?source, "training student");
    let mut learner = StudentLearner {
        vs,
        model,
        batcher: Batcher::new(&cfg, &ds, train, source, device),
        test,
        heads: heads.clone(),
        tokens: cfg.tokens,
        weighting: cfg.weighting,
        loss: cfg.loss_config(),
        eval_batch: cfg.eval_batch_size,
        val: ds.splits.get("val").filter(|v| !v.is_empty()),
        teacher_test_pred: None,
    };
    let history = fit(
        &mut learner,
        &cfg.fit_config(),
        &identity,
        out,
        opts,
        progress,
    )?;
    if history.len() < cfg.epochs {
        // Stopped early on purpose (tests): keep the checkpoint, write no artifact.
        return Ok(Outcome::Stopped {
            epochs_done: history.len(),
        });
    }
    if let Some(g) = opts.group().filter(|g| !g.is_leader()) {
        return Ok(Outcome::Follower { rank: g.rank() });
    }

    let weights = out.join("weights.safetensors");
    learner.vs.save(&weights)?;
    write_json(
        &out.join("config.json"),
        &json!({"model": model_cfg, "student": cfg, "heads": heads, "inference": "mean of all heads' logits"}),
    )?;
    let last = history.last();
    let test_accuracy = last
        .and_then(|r| r.eval.get("test_acc_avg"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mean_ips =
        history.iter().map(|r| r.images_per_sec).sum::<f64>() / history.len().max(1) as f64;
    let metrics = json!({
        "test_accuracy": test_accuracy,
        "source": source.kind(),
        "teachers": names,
        "heads": heads,
        "params": params,
        "device": kd_core::device::device_name(device),
        "images_per_sec": mean_ips,
        "data_parallel_ranks": world,
        "epochs": history,
    });
    write_json(&out.join("metrics.json"), &metrics)?;
    write_curves(out, &history)?;
    remove_checkpoint(out)?;

    let mut m = Manifest::new(STAGE, config);
    m.seeds.insert("train".into(), cfg.seed);
    m.seeds
        .insert("views".into(), cfg.view_seed.unwrap_or_default());
    m.inputs = inputs;
    m.outputs
        .push(OutputRef::of(out, "weights.safetensors", true)?);
    for f in ["config.json", "metrics.json", "curves.csv", "curves.png"] {
        m.outputs.push(OutputRef::of(out, f, false)?);
    }
    m.metrics = json!({
        "test_accuracy": test_accuracy,
        "last_epoch": last.map(|r| json!({"train": r.train, "eval": r.eval})),
        "images_per_sec": mean_ips,
        "params": params,
    });
    m.write(out)?;
    tracing::info!(out = %out.display(), test_accuracy, "student written");
    Ok(Outcome::Wrote(Box::new(m)))
}

/// The stem each distillation token is the mean of: a teacher's own bias
/// (matched by the arch recorded in the store or the teacher directory), or
/// both stems for the single token of an averaged target.
fn token_stems(source: &Source, tokens: TokenMode, heads: usize) -> Result<Vec<TokenStem>> {
    if heads == 0 {
        return Ok(vec![]);
    }
    if tokens == TokenMode::Averaged {
        return Ok(vec![TokenStem::Both]);
    }
    source
        .teacher_names()
        .iter()
        .zip(source.teacher_archs())
        .map(|(name, arch)| {
            TokenStem::for_arch(&arch).ok_or_else(|| {
                invalid(format!(
                    "stem conv-involution: teacher '{name}' has arch '{arch}', but a stem token needs a cnn or involution teacher (use --stem patch)"
                ))
            })
        })
        .collect()
}

/// `curves.csv` (every number per epoch) and `curves.png` (test accuracy of
/// each head and of their average, and agreement with the teachers).
fn write_curves(out: &Path, history: &[EpochRecord]) -> Result<()> {
    let train_keys: BTreeSet<&String> = history.iter().flat_map(|r| r.train.keys()).collect();
    let eval_keys: BTreeSet<&String> = history
        .iter()
        .flat_map(|r| r.eval.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k))
        .collect();
    let mut csv = String::from("epoch,lr");
    for k in &train_keys {
        let _ = write!(csv, ",train_{k}");
    }
    for k in &eval_keys {
        let _ = write!(csv, ",{k}");
    }
    csv.push_str(",images_per_sec\n");
    for r in history {
        let _ = write!(csv, "{},{}", r.epoch, r.lr);
        for k in &train_keys {
            let _ = write!(
                csv,
                ",{}",
                r.train.get(*k).map(f64::to_string).unwrap_or_default()
            );
        }
        for k in &eval_keys {
            let v = r
                .eval
                .get(*k)
                .and_then(Value::as_f64)
                .map(|v| v.to_string());
            let _ = write!(csv, ",{}", v.unwrap_or_default());
        }
        let _ = writeln!(csv, ",{}", r.images_per_sec);
    }
    let p = out.join("curves.csv");
    std::fs::write(&p, csv).map_err(|source| CoreError::Io { path: p, source })?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in history {
        for k in &eval_keys {
            if let Some(v) = r.eval.get(*k).and_then(Value::as_f64) {
                series
                    .entry((*k).clone())
                    .or_default()
                    .push((r.epoch as f64, v));
            }
        }
    }
    let series: Vec<kd_report::plot::Series> = series
        .into_iter()
        .map(|(k, pts)| kd_report::plot::Series::new(k, pts))
        .collect();
    // Accuracies and agreements share the [0, 1] axis; losses are in the CSV.
    kd_report::plot::Chart::new(
        "Student: test accuracy per head",
        "Epoch",
        "Fraction",
        &series,
    )
    .write_png(&out.join("curves.png"))?;
    Ok(())
}
