//! One type over the two teacher architectures, chosen by name.

use crate::cnn::{Cnn, CnnConfig};
use crate::error::Result;
use crate::rednet::{RedNet, RedNetConfig};
use kd_core::SettingError;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Cnn,
    /// RedNet, the involution network (`rednet-*` presets).
    #[serde(alias = "rednet")]
    Involution,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Cnn => "cnn",
            Arch::Involution => "involution",
        }
    }

    pub fn presets(self) -> &'static [&'static str] {
        match self {
            Arch::Cnn => &CnnConfig::PRESETS,
            Arch::Involution => &RedNetConfig::PRESETS,
        }
    }

    /// The preset trained when none is named.
    pub fn default_preset(self) -> &'static str {
        match self {
            Arch::Cnn => "cnn-small",
            Arch::Involution => "rednet-small",
        }
    }
}

/// A preset's full architecture, as written to `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "lowercase")]
pub enum ModelConfig {
    Cnn(CnnConfig),
    Involution(RedNetConfig),
}

impl ModelConfig {
    pub fn preset(arch: Arch, name: &str) -> Result<ModelConfig> {
        let found = match arch {
            Arch::Cnn => CnnConfig::preset(name).map(ModelConfig::Cnn),
            Arch::Involution => RedNetConfig::preset(name).map(ModelConfig::Involution),
        };
        found.ok_or_else(|| SettingError::unknown("preset", name, arch.presets()).into())
    }

    pub fn arch(&self) -> Arch {
        match self {
            ModelConfig::Cnn(_) => Arch::Cnn,
            ModelConfig::Involution(_) => Arch::Involution,
        }
    }
}

/// `[teachers.<n>.model]`: any knob of the architecture, applied over the
/// preset. A knob of the other architecture is refused by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverrides {
    /// Both: channels of the stem.
    pub stem_width: Option<i64>,
    /// Both: blocks per stage (one entry per stage).
    pub blocks: Option<Vec<usize>>,
    /// cnn: output channels of each stage.
    pub widths: Option<Vec<i64>>,
    /// involution: bottleneck width of each stage (outputs `mid * expansion`).
    pub mids: Option<Vec<i64>>,
    pub expansion: Option<i64>,
    /// involution: kernel size (odd).
    pub kernel: Option<i64>,
    pub group_channels: Option<i64>,
    pub reduction: Option<i64>,
    pub zero_init_residual: Option<bool>,
}

impl ModelOverrides {
    pub fn is_empty(&self) -> bool {
        *self == ModelOverrides::default()
    }

    /// Apply over `model`, then check the result.
    pub fn apply(&self, model: &mut ModelConfig) -> Result<()> {
        let arch = model.arch();
        let foreign = |name: &str, set: bool| -> Result<()> {
            if set {
                return Err(SettingError::NotApplicable {
                    setting: format!("model.{name}"),
                    why: format!("not a knob of the {} architecture", arch.name()),
                }
                .into());
            }
            Ok(())
        };
        match model {
            ModelConfig::Cnn(m) => {
                foreign("mids", self.mids.is_some())?;
                foreign("expansion", self.expansion.is_some())?;
                foreign("kernel", self.kernel.is_some())?;
                foreign("group_channels", self.group_channels.is_some())?;
                foreign("reduction", self.reduction.is_some())?;
                foreign("zero_init_residual", self.zero_init_residual.is_some())?;
                if let Some(v) = self.stem_width {
                    m.stem_width = v;
                }
                if let Some(v) = &self.widths {
                    m.widths.clone_from(v);
                }
                if let Some(v) = &self.blocks {
                    m.blocks.clone_from(v);
                }
            }
            ModelConfig::Involution(m) => {
                foreign("widths", self.widths.is_some())?;
                macro_rules! set {
                    ($($f:ident),*) => {$(if let Some(v) = self.$f { m.$f = v; })*};
                }
                set!(
                    stem_width,
                    expansion,
                    kernel,
                    group_channels,
                    reduction,
                    zero_init_residual
                );
                if let Some(v) = &self.mids {
                    m.mids.clone_from(v);
                }
                if let Some(v) = &self.blocks {
                    m.blocks.clone_from(v);
                }
            }
        }
        model.validate()
    }
}

impl ModelConfig {
    /// Refuse an architecture that cannot be built, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, value: String, why: String| {
            Err(SettingError::rejected(format!("model.{name}"), value, why).into())
        };
        let (stem, stages, blocks, what) = match self {
            ModelConfig::Cnn(m) => (m.stem_width, &m.widths, &m.blocks, "widths"),
            ModelConfig::Involution(m) => (m.stem_width, &m.mids, &m.blocks, "mids"),
        };
        if stem < 1 {
            return bad("stem_width", stem.to_string(), "must be at least 1".into());
        }
        if stages.is_empty() || stages.iter().any(|&w| w < 1) {
            return bad(
                what,
                format!("{stages:?}"),
                "need one or more stages, each at least 1 channel".into(),
            );
        }
        if blocks.len() != stages.len() || blocks.contains(&0) {
            return bad(
                "blocks",
                format!("{blocks:?}"),
                format!(
                    "need one count of at least 1 per stage ({} stages in {what})",
                    stages.len()
                ),
            );
        }
        if let ModelConfig::Involution(m) = self {
            if m.kernel < 1 || m.kernel % 2 == 0 {
                return bad("kernel", m.kernel.to_string(), "must be odd".into());
            }
            for (name, v) in [
                ("expansion", m.expansion),
                ("group_channels", m.group_channels),
                ("reduction", m.reduction),
            ] {
                if v < 1 {
                    return bad(name, v.to_string(), "must be at least 1".into());
                }
            }
            for &mid in &m.mids {
                let groups = (mid / m.group_channels).max(1);
                if mid % groups != 0 {
                    return bad(
                        "group_channels",
                        m.group_channels.to_string(),
                        format!("a stage of {mid} channels does not split into groups of it"),
                    );
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum Net {
    Cnn(Cnn),
    RedNet(RedNet),
}

impl Net {
    /// Build under `p` (the VarStore root: names are `conv1.weight`, ...)
    /// for small images (the 3x3 stride-1 stem of 28-63 px).
    pub fn new(p: &nn::Path, cfg: &ModelConfig, in_channels: i64, num_classes: i64) -> Net {
        Net::for_images(p, cfg, [in_channels as usize, 32, 32], num_classes)
    }

    /// Build for `[C, H, W]` images: the stem strides by the image size.
    pub fn for_images(p: &nn::Path, cfg: &ModelConfig, chw: [usize; 3], num_classes: i64) -> Net {
        let (c, side) = (chw[0] as i64, chw[1].min(chw[2]));
        match cfg {
            ModelConfig::Cnn(m) => Net::Cnn(Cnn::new(p, m, c, num_classes, side)),
            ModelConfig::Involution(m) => Net::RedNet(RedNet::new(p, m, c, num_classes, side)),
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Net::Cnn(m) => m.forward_t(x, train),
            Net::RedNet(m) => m.forward_t(x, train),
        }
    }
}

/// A cross-fitted teacher's logits off its training data: its fold models'
/// mean (one model: its own logits).
pub(crate) fn mean_logits(models: &[(nn::VarStore, Net)], x: &Tensor) -> Tensor {
    let all: Vec<Tensor> = models
        .iter()
        .map(|(_, net)| net.forward_t(x, false).to_kind(tch::Kind::Float))
        .collect();
    if all.len() == 1 {
        return all.into_iter().next().expect("one model");
    }
    Tensor::stack(&all, 0).mean_dim(0, false, tch::Kind::Float)
}
