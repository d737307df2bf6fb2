//! The student's settings: a profile's `[students.<variant>]` section
//! ([`StudentConfig`]), its checks, and the view settings it takes from the
//! store.

use crate::error::Result;
use crate::loss::{Distill, LossConfig, Weighting};
use crate::source::Source;
use crate::stem::Stem;
use crate::vit::ModelOverrides;
use kd_core::amp::Precision;
use kd_core::fit::FitConfig;
use kd_core::optim::AdamWConfig;
use kd_core::{CropRange, InputError, SettingError, ViewSpec};
use serde::{Deserialize, Serialize};

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
    /// Side of a resized-crop view when it is not the image's; taken from
    /// the store in cache mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_size: Option<u16>,
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
            view_size: None,
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
        self.fit_config().validate()?;
        check::within("alpha", self.alpha, 0.0, 1.0, false)?;
        check::positive("tau", self.tau)?;
        check::within("label_smoothing", self.label_smoothing, 0.0, 1.0, true)?;
        if let Some(dp) = self.drop_path {
            check::within("drop_path", dp, 0.0, 1.0, true)?;
        }
        check::count("eval_batch_size", self.eval_batch_size)?;
        if let Some(v) = self.views {
            check::count("views", v)?;
        }
        Ok(())
    }
}

impl StudentConfig {
    /// The views this student trains on (and whose plain view it is
    /// evaluated on), from its `view_*` settings: after
    /// [`StudentConfig::resolved`], a store's own spec.
    pub fn view_spec(&self) -> ViewSpec {
        let flip = self.view_flip.unwrap_or(ViewSpec::default().flip);
        let spec = match self.view_crop {
            Some(range) => ViewSpec::resized(range, flip),
            None => ViewSpec {
                pad: self.view_pad.unwrap_or(ViewSpec::default().pad),
                flip,
                ..ViewSpec::default()
            },
        };
        ViewSpec {
            size: self.view_size,
            ..spec
        }
    }
}

fn resolve_views(cfg: &mut StudentConfig, source: &Source) -> Result<()> {
    let dflt = ViewSpec::default();
    if let Source::Cache { store, .. } = source {
        let spec = store.view_spec();
        let check = |what: &str, mine: Option<String>, theirs: String| -> Result<()> {
            match mine {
                Some(m) if m != theirs => {
                    Err(
                        InputError::mismatch(store.dir(), what, theirs, "the student config", m)
                            .into(),
                    )
                }
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
        check(
            "view size",
            cfg.view_size.map(|s| s.to_string()),
            spec.size.map_or("the image's".into(), |s| s.to_string()),
        )?;
        cfg.views = Some(store.views());
        cfg.view_seed = Some(store.seed());
        cfg.view_pad = Some(spec.pad);
        cfg.view_flip = Some(spec.flip);
        cfg.view_crop = spec.resized_crop;
        cfg.view_size = spec.size;
    } else {
        cfg.views = Some(cfg.views.unwrap_or(8));
        cfg.view_seed = Some(cfg.view_seed.unwrap_or(0));
        cfg.view_pad = Some(cfg.view_pad.unwrap_or(dflt.pad));
        cfg.view_flip = Some(cfg.view_flip.unwrap_or(dflt.flip));
    }
    cfg.view_spec().validate()?;
    if cfg.views == Some(0) {
        return Err(match source {
            Source::Cache { store, .. } => InputError::Malformed {
                at: store.dir().to_path_buf(),
                what: "0 views per sample".into(),
            }
            .into(),
            _ => SettingError::out_of_range("views", 0, "at least 1").into(),
        });
    }
    Ok(())
}
