//! The student's shape: [`Config`], its named presets and the profile's
//! knobs over them.

use crate::stem::{Stem, TokenStem};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    pub in_chans: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub num_classes: usize,
    /// Distillation tokens (0: plain ViT with only the class token).
    pub dist_tokens: usize,
    /// Stochastic depth rate of the last block (linearly 0 -> rate).
    pub drop_path: f64,
    /// Patch embedding (absent from the serialised config when `patch`, so
    /// artifacts made before stems existed keep their hashes).
    #[serde(default, skip_serializing_if = "Stem::is_patch")]
    pub stem: Stem,
    /// With CivT stems: the stem each distillation token is the mean of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_stems: Vec<TokenStem>,
}

/// Names of the presets accepted by [`Config::preset`].
pub const PRESETS: [&str; 6] = [
    "vit-test",
    "vit-tiny",
    "vit-small",
    "vit-c32",
    "deit-tiny",
    "deit-small",
];

/// Every architecture knob, each optional: a profile's `[students.<v>.model]`
/// table, applied over the preset (or making a model of its own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverrides {
    pub patch_size: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    pub mlp_ratio: Option<f64>,
    pub qkv_bias: Option<bool>,
    pub drop_path: Option<f64>,
}

impl ModelOverrides {
    pub fn is_empty(&self) -> bool {
        *self == ModelOverrides::default()
    }

    pub fn apply(&self, cfg: &mut Config) {
        macro_rules! set {
            ($($f:ident),*) => {$(if let Some(v) = self.$f { cfg.$f = v; })*};
        }
        set!(
            patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path
        );
    }
}

impl Config {
    /// An architecture preset, completed with the data's geometry and the
    /// token count.
    pub fn preset(
        name: &str,
        image_size: usize,
        in_chans: usize,
        num_classes: usize,
        dist_tokens: usize,
    ) -> Option<Config> {
        let (patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path) = match name {
            // For unit tests: a few thousand parameters.
            "vit-test" => (4, 16, 1, 2, 2.0, 0.0),
            // ~310k parameters at 28 px (MLP ratio 2): the demo student.
            "vit-tiny" => (4, 96, 4, 3, 2.0, 0.1),
            // ~810k parameters: the full-profile student.
            "vit-small" => (4, 128, 6, 4, 2.0, 0.1),
            // 32 px colour (CIFAR): 64 patches of 4x4, ~3.7M parameters.
            "vit-c32" => (4, 256, 7, 4, 2.0, 0.1),
            // DeiT-Ti and DeiT-S (Touvron et al. 2021) for 224 px: patch 16.
            "deit-tiny" => (16, 192, 12, 3, 4.0, 0.1),
            "deit-small" => (16, 384, 12, 6, 4.0, 0.1),
            _ => return None,
        };
        Some(Config {
            image_size,
            in_chans,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias: true,
            num_classes,
            dist_tokens,
            drop_path,
            stem: Stem::Patch,
            token_stems: vec![],
        })
    }

    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }

    /// Check the geometry; a readable reason when it does not fit.
    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image size {} is not a multiple of patch size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.depth == 0 || self.embed_dim == 0 {
            return Err("depth and embed dim must be at least 1".into());
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(format!("mlp ratio {} must be > 0", self.mlp_ratio));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(format!("drop path {} must be in [0, 1)", self.drop_path));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "embed dim {} is not a multiple of {} heads",
                self.embed_dim, self.num_heads
            ));
        }
        if self.num_classes == 0 || self.in_chans == 0 {
            return Err("no classes or no channels".into());
        }
        match self.stem {
            Stem::Patch if !self.token_stems.is_empty() => {
                return Err("token stems given without the conv-involution stem".into());
            }
            Stem::ConvInvolution if self.token_stems.len() != self.dist_tokens => {
                return Err(format!(
                    "{} distillation tokens but {} token stems",
                    self.dist_tokens,
                    self.token_stems.len()
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
