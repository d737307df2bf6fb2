//! One type over the two teacher architectures, chosen by name.

use crate::cnn::{Cnn, CnnConfig};
use crate::error::{Result, TeacherError};
use crate::rednet::{RedNet, RedNetConfig};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Cnn,
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

    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "cnn" => Ok(Arch::Cnn),
            "involution" | "rednet" => Ok(Arch::Involution),
            _ => Err(TeacherError::Invalid(format!(
                "unknown architecture '{s}' (expected cnn or involution)"
            ))),
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
        found.ok_or_else(|| {
            TeacherError::Invalid(format!(
                "unknown preset '{name}' for architecture {} (known: {})",
                arch.name(),
                arch.presets().join(", ")
            ))
        })
    }

    pub fn arch(&self) -> Arch {
        match self {
            ModelConfig::Cnn(_) => Arch::Cnn,
            ModelConfig::Involution(_) => Arch::Involution,
        }
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

/// Number of trainable parameters in a VarStore.
pub fn param_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
