//! The teacher's settings: a profile's `[teachers.<name>]` section
//! ([`TeacherConfig`]) and `config.json` ([`TeacherFile`]), everything
//! needed to rebuild a trained network.

use crate::error::Result;
use crate::model::{Arch, ModelConfig, ModelOverrides};
use kd_core::SettingError;
use kd_core::fit::FitConfig;
use kd_core::{MixSpec, ViewSpec};
use serde::{Deserialize, Serialize};

/// Everything that determines a trained teacher (a profile's
/// `[teachers.<name>]` section; flags override).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Name in stores and reports; default: the architecture's name.
    pub name: Option<String>,
    pub arch: Arch,
    /// Default: `cnn-small` / `rednet-small`.
    pub preset: Option<String>,
    /// Expected class count; checked against the dataset when given.
    pub num_classes: Option<usize>,
    pub fit: FitConfig,
    /// Training views (the shared augmentation contract).
    pub view: ViewSpec,
    /// Mixed training views (mixup / cutmix with a random partner, drawn
    /// as the cache draws them), trained on the mixed soft labels. Absent
    /// (and so out of the teacher's identity) when off.
    #[serde(default, skip_serializing_if = "MixSpec::is_none")]
    pub mix: MixSpec,
    pub label_smoothing: f64,
    pub eval_batch_size: usize,
    /// Cross-fitting: train k fold models (k >= 2); absent for one model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    /// `[teachers.<n>.model]`: knobs over the preset.
    #[serde(default, skip_serializing_if = "ModelOverrides::is_empty")]
    pub model: ModelOverrides,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            name: None,
            arch: Arch::Cnn,
            preset: None,
            num_classes: None,
            fit: FitConfig::default(),
            view: ViewSpec::default(),
            mix: MixSpec::default(),
            label_smoothing: 0.1,
            eval_batch_size: 500,
            folds: None,
            model: ModelOverrides::default(),
        }
    }
}

impl TeacherConfig {
    /// Fill in the defaults that depend on the architecture and check the preset.
    pub fn resolve(&self) -> Result<(TeacherConfig, ModelConfig)> {
        let mut c = self.clone();
        c.name.get_or_insert_with(|| self.arch.name().to_string());
        let preset = c
            .preset
            .get_or_insert_with(|| self.arch.default_preset().to_string());
        let mut model = ModelConfig::preset(self.arch, preset)?;
        self.model.apply(&mut model)?;
        c.view.validate()?;
        c.mix.validate()?;
        c.fit.validate()?;
        kd_core::fit::check::count("eval_batch_size", c.eval_batch_size)?;
        if let Some(k) = c.folds
            && !kd_core::Folds::RANGE.contains(&k)
        {
            let r = kd_core::Folds::RANGE;
            return Err(SettingError::out_of_range(
                "folds",
                k,
                format!("{} to {} (cross-fitting)", r.start(), r.end()),
            )
            .into());
        }
        kd_core::fit::check::within("label_smoothing", c.label_smoothing, 0.0, 1.0, true)?;
        Ok((c, model))
    }
}

/// `config.json`: what [`load`] needs to rebuild the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherFile {
    pub teacher: TeacherConfig,
    pub model: ModelConfig,
    pub chw: [usize; 3],
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// Normalisation the inputs must have (per channel, pixels in [0,1]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}
