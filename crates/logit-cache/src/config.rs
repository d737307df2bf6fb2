//! The `[cache]` section: every knob of a store, its defaults and checks.

use crate::error::Result;
use crate::layout::Dtype;
use kd_core::{Crop, CropRange, MixMode, MixSpec, Partners, SettingError, ViewSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// From this many classes on, a store keeps only the largest logits unless
/// `top_k` says otherwise: dense f16 rows at 1000 classes are 2 KB per view
/// and teacher, 20 GB per teacher for 8 views of ImageNet-1k.
pub const TOP_K_FROM_CLASSES: usize = 100;

/// The logits kept per view when `top_k` is unset at many classes (as FKD
/// keeps for ImageNet).
pub const DEFAULT_TOP_K: usize = 10;

/// The `[cache]` section of a profile: every knob of a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Views per sample, view 0 being the plain image.
    pub views: usize,
    pub dtype: Dtype,
    /// Store only the k largest logits (values + uint16 indices); 0 stores
    /// every logit. Unset: every logit below [`TOP_K_FROM_CLASSES`]
    /// classes, the [`DEFAULT_TOP_K`] largest from there ([`CacheConfig::resolved`]).
    pub top_k: Option<usize>,
    /// Seed of the view generator.
    pub seed: u64,
    /// How a view's box is drawn: `pad-crop` (pad, then an image-sized box
    /// at a random offset; small images) or `resized-crop` (a random box of
    /// `crop_scale` of the area and `crop_ratio` aspect, resized back).
    pub crop: Crop,
    /// Zero padding of pad-crop views (unused by resized-crop).
    pub pad: u8,
    pub flip: bool,
    /// Area fraction range of resized-crop boxes (torchvision's `scale`).
    pub crop_scale: [f64; 2],
    /// Width/height range of resized-crop boxes (torchvision's `ratio`).
    pub crop_ratio: [f64; 2],
    /// Side of every resized-crop view in pixels, when it is not the stored
    /// image's (store at 256, train at 224). Students of the store train at
    /// it; their plain view is the central box of this size.
    pub view_size: Option<u16>,
    pub shard_samples: usize,
    pub chunk_samples: usize,
    pub zstd_level: i32,
    /// Views per teacher forward pass. Not part of the store's identity.
    pub batch_size: usize,
    /// `auto|cpu|cuda|cuda:N`. Not part of the store's identity.
    pub device: String,
    /// Mixed views: `none`, `mixup`, `cutmix` or `mixup-cutmix`.
    pub mix: MixMode,
    /// Probability that a view 1..K-1 is mixed.
    pub mix_prob: f64,
    /// lambda ~ Beta(mix_alpha, mix_alpha).
    pub mix_alpha: f64,
    /// Where a mixed view's partner comes from: `any` training sample, or
    /// one of the same stored `chunk` of the dataset (for datasets larger
    /// than the data cache, where a partner from anywhere decodes a chunk).
    pub mix_partners: Partners,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            views: 8,
            dtype: Dtype::F16,
            top_k: None,
            seed: 0,
            crop: Crop::PadCrop,
            pad: 2,
            flip: true,
            crop_scale: CropRange::default().scale,
            crop_ratio: CropRange::default().ratio,
            view_size: None,
            shard_samples: 1024,
            chunk_samples: 128,
            zstd_level: 3,
            batch_size: 256,
            device: "auto".into(),
            mix: MixMode::None,
            mix_prob: MixSpec::default().prob,
            mix_alpha: MixSpec::default().alpha,
            mix_partners: Partners::Any,
        }
    }
}

impl CacheConfig {
    pub fn view_spec(&self) -> ViewSpec {
        match self.crop {
            // A size here is refused by the spec's validation, naming it.
            Crop::PadCrop => ViewSpec {
                pad: self.pad,
                flip: self.flip,
                resized_crop: None,
                size: self.view_size,
            },
            Crop::ResizedCrop => ViewSpec {
                size: self.view_size,
                ..ViewSpec::resized(
                    CropRange {
                        scale: self.crop_scale,
                        ratio: self.crop_ratio,
                    },
                    self.flip,
                )
            },
        }
    }

    pub fn mix_spec(&self) -> MixSpec {
        MixSpec {
            mode: self.mix,
            prob: self.mix_prob,
            alpha: self.mix_alpha,
            partners: self.mix_partners,
            chunk: 0,
        }
    }

    /// What determines the bytes of the store (batch size and device only
    /// change results within float rounding, so they are left out). `mix`
    /// appears only when mixing is on: stores without it keep the identity,
    /// and so the key and manifest, they had before mixing existed.
    pub fn identity(&self) -> Value {
        let mut v = json!({
            "views": self.views,
            "dtype": self.dtype,
            "top_k": self.top_k,
            "seed": self.seed,
            "view_spec": self.view_spec(),
            "shard_samples": self.shard_samples,
            "chunk_samples": self.chunk_samples,
            "zstd_level": self.zstd_level,
        });
        let mix = self.mix_spec();
        if !mix.is_none() {
            v["mix"] = json!(mix);
        }
        v
    }

    /// The settings a store of `classes` classes is built with: `top_k`
    /// unset becomes [`DEFAULT_TOP_K`] from [`TOP_K_FROM_CLASSES`] classes
    /// on (every logit below), and `top_k = 0` every logit.
    pub fn resolved(&self, classes: usize) -> CacheConfig {
        let top_k = match self.top_k {
            None if classes >= TOP_K_FROM_CLASSES => Some(DEFAULT_TOP_K),
            Some(0) => None,
            k => k,
        };
        CacheConfig {
            top_k,
            ..self.clone()
        }
    }

    pub fn validate(&self, classes: usize) -> Result<()> {
        use kd_core::fit::check;
        let bad = |e: SettingError| Err(e.into());
        check::count("views", self.views)?;
        check::count("batch_size", self.batch_size)?;
        check::count("chunk_samples", self.chunk_samples)?;
        if self.shard_samples == 0 || !self.shard_samples.is_multiple_of(self.chunk_samples) {
            return bad(SettingError::out_of_range(
                "shard_samples",
                self.shard_samples,
                format!(
                    "a positive multiple of chunk_samples = {}",
                    self.chunk_samples
                ),
            ));
        }
        if let Some(k) = self.top_k {
            if k > classes {
                return bad(SettingError::out_of_range(
                    "top_k",
                    k,
                    format!("in 1..={classes} (the number of classes), or 0 for every logit"),
                ));
            }
            if classes > u16::MAX as usize + 1 {
                return bad(SettingError::rejected(
                    "top_k",
                    k,
                    format!("{classes} classes do not fit uint16 indices"),
                ));
            }
        }
        self.mix_spec().validate()?;
        if let Some(r) = &self.view_spec().resized_crop {
            r.check()?;
        }
        Ok(())
    }
}
