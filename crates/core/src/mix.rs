//! Function-matching views: mixup and cutmix pairs of training images whose
//! teacher logits are stored like any other view (Beyer et al. 2022, "a good
//! teacher is patient and consistent": the student matches the teacher on
//! the very mixed image it saw, so the teacher's answer on it is a target as
//! exact as on a plain crop).
//!
//! Whether view `v` of sample `s` is mixed, with which partner and how, is a
//! pure function of (seed, s, v) drawn from its own keyed stream, independent
//! of the crop stream of [`crate::view`]: turning mixing on changes no crop of
//! an existing store. The partner enters at its own view of the same view
//! index, so a mixed view is fully described by the two crops (both already
//! stored in `views/params`) and the integers of [`MixParams`]. Lambda is
//! quantised to 16 bits before anything uses it, so the stored value is the
//! value the pixels were made with, bit for bit.

mod batch;
mod beta;

pub use batch::ViewBatch;
use beta::beta_sym;

use crate::error::{CoreError, Result, SettingError};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Key tag of the mixing stream ("mix"); the crop stream uses "view".
const TAG: u64 = 0x006d_6978;
/// `lambda = lam_q / LAM_SCALE`.
pub const LAM_SCALE: f64 = 65535.0;

/// The store-wide mixing setting (`[cache] mix`, `--mix`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum MixMode {
    #[default]
    None,
    Mixup,
    Cutmix,
    /// Each mixed view is mixup or cutmix with probability 1/2.
    MixupCutmix,
}

impl MixMode {
    pub const NAMES: [&'static str; 4] = ["none", "mixup", "cutmix", "mixup-cutmix"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for MixMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MixMode {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(MixMode::None),
            "mixup" => Ok(MixMode::Mixup),
            "cutmix" => Ok(MixMode::Cutmix),
            "mixup-cutmix" | "mixup_cutmix" => Ok(MixMode::MixupCutmix),
            _ => Err(SettingError::unknown("mix", s, Self::NAMES).into()),
        }
    }
}

// Profiles deserialise through `FromStr`, so a typo gets the same one-line
// error naming the setting as the command-line flag.
impl TryFrom<String> for MixMode {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// How views are mixed. Recorded in the store's attributes when `mode` is
/// not `none`.
// `default`: a profile's `[teachers.<n>.mix]` table may give just `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixSpec {
    pub mode: MixMode,
    /// Probability that a view 1..K-1 is mixed (view 0 never is).
    pub prob: f64,
    /// lambda ~ Beta(alpha, alpha).
    pub alpha: f64,
    /// Where a partner comes from. Absent when `any`, so specs, stores and
    /// teachers from before the rule existed keep their identity.
    #[serde(skip_serializing_if = "Partners::is_any")]
    pub partners: Partners,
    /// Samples per stored chunk of the dataset, for [`Partners::Chunk`]
    /// (set by the stage that draws, from the dataset: see
    /// [`MixSpec::in_chunks_of`]); not part of the recorded spec.
    #[serde(skip)]
    pub chunk: u64,
}

impl Default for MixSpec {
    fn default() -> Self {
        MixSpec {
            mode: MixMode::None,
            prob: 0.5,
            alpha: 1.0,
            partners: Partners::Any,
            chunk: 0,
        }
    }
}

/// Which training samples a view may be mixed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partners {
    /// Any other training sample (the rule of every store before `chunk`).
    #[default]
    Any,
    /// Another sample of the same stored chunk of the dataset: a dataset
    /// read by chunk then decodes no chunk for a partner, since the block
    /// shuffle visits a chunk's samples together.
    Chunk,
}

impl Partners {
    pub const NAMES: [&str; 2] = ["any", "chunk"];

    pub fn is_any(&self) -> bool {
        *self == Partners::Any
    }
}

impl std::fmt::Display for Partners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

/// What a mixed view is: none, a pixel-wise blend, or a pasted box.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum MixKind {
    #[default]
    None = 0,
    Mixup = 1,
    Cutmix = 2,
}

impl MixKind {
    pub fn from_code(c: u32) -> Option<MixKind> {
        match c {
            0 => Some(MixKind::None),
            1 => Some(MixKind::Mixup),
            2 => Some(MixKind::Cutmix),
            _ => None,
        }
    }
}

/// One view's mixing. Not mixed: [`MixParams::NONE`] (all zero).
/// Mixup: `pixels = lam * own + (1 - lam) * partner`, `lam = lam_q / 65535`.
/// Cutmix: the partner's pixels replace the own view's in rows `y0..y0+h`,
/// columns `x0..x0+w` (all channels); `lam_q` is 0, the weight follows from
/// the box. Both images are the samples' views at the same view index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MixParams {
    /// Index of the partner in the train split.
    pub partner: u32,
    pub kind: MixKind,
    pub lam_q: u16,
    pub y0: u16,
    pub x0: u16,
    pub h: u16,
    pub w: u16,
}

impl MixParams {
    pub const NONE: MixParams = MixParams {
        partner: 0,
        kind: MixKind::None,
        lam_q: 0,
        y0: 0,
        x0: 0,
        h: 0,
        w: 0,
    };
    /// Names of the stored columns (`views/mix`, uint32), in order.
    pub const FIELDS: [&'static str; 7] = ["kind", "partner", "lam_q", "y0", "x0", "h", "w"];
    pub const LEN: usize = 7;

    pub fn is_mixed(&self) -> bool {
        self.kind != MixKind::None
    }

    pub fn to_array(self) -> [u32; 7] {
        [
            self.kind as u32,
            self.partner,
            self.lam_q as u32,
            self.y0 as u32,
            self.x0 as u32,
            self.h as u32,
            self.w as u32,
        ]
    }

    /// Parse stored columns; `None` for an unknown kind or a field out of its range.
    pub fn from_slice(s: &[u32]) -> Option<MixParams> {
        if s.len() != Self::LEN || s[2..].iter().any(|&x| x > u16::MAX as u32) {
            return None;
        }
        Some(MixParams {
            kind: MixKind::from_code(s[0])?,
            partner: s[1],
            lam_q: s[2] as u16,
            y0: s[3] as u16,
            x0: s[4] as u16,
            h: s[5] as u16,
            w: s[6] as u16,
        })
    }

    /// The cutmix box clipped to an `img_h x img_w` image: `(y0, y1, x0, x1)`.
    /// Clipping keeps a corrupt or foreign box from indexing out of bounds;
    /// a drawn box is always inside already.
    pub fn clipped_box(&self, img_h: usize, img_w: usize) -> (usize, usize, usize, usize) {
        let y0 = (self.y0 as usize).min(img_h);
        let x0 = (self.x0 as usize).min(img_w);
        let y1 = (y0 + self.h as usize).min(img_h);
        let x1 = (x0 + self.w as usize).min(img_w);
        (y0, y1, x0, x1)
    }

    /// Mixup weight of the own image, exactly as the pixels use it.
    pub fn lam_f32(&self) -> f32 {
        self.lam_q as f32 / LAM_SCALE as f32
    }

    /// Weight of the own sample's label in the mixed target (the partner's
    /// is `1 - own_weight`): 1 when not mixed, lambda for mixup, the share of
    /// own pixels for cutmix.
    pub fn own_weight(&self, img_h: usize, img_w: usize) -> f64 {
        match self.kind {
            MixKind::None => 1.0,
            MixKind::Mixup => self.lam_q as f64 / LAM_SCALE,
            MixKind::Cutmix => {
                let (y0, y1, x0, x1) = self.clipped_box(img_h, img_w);
                let area = (img_h * img_w).max(1) as f64;
                1.0 - ((y1 - y0) * (x1 - x0)) as f64 / area
            }
        }
    }
}

impl MixSpec {
    pub fn is_none(&self) -> bool {
        self.mode == MixMode::None
    }

    /// This spec for a dataset stored in chunks of `chunk` samples (what
    /// [`Partners::Chunk`] draws within).
    pub fn in_chunks_of(self, chunk: usize) -> MixSpec {
        MixSpec {
            chunk: chunk as u64,
            ..self
        }
    }

    /// Checked for every setting, mixing or not, so a typo never waits for
    /// the day mixing is switched on.
    pub fn validate(&self) -> Result<()> {
        crate::fit::check::within("mix_prob", self.prob, 0.0, 1.0, false)?;
        crate::fit::check::positive("mix_alpha", self.alpha)
    }

    /// The mixing of view `view` of `sample` among `samples` training
    /// samples of `hw = [height, width]` pixels. Pure function of its
    /// arguments; view 0 is never mixed.
    pub fn draw(
        &self,
        seed: u64,
        sample: u64,
        view: u64,
        samples: u64,
        hw: [usize; 2],
    ) -> MixParams {
        if view == 0 || self.is_none() || samples < 2 {
            return MixParams::NONE;
        }
        let mut r = Rng::keyed(seed, &[TAG, sample, view]);
        if r.unit() >= self.prob {
            return MixParams::NONE;
        }
        // The pool a partner comes from: every sample, or the sample's own
        // chunk (unless that chunk is a last chunk of one sample).
        let (base, pool) = match self.partners {
            Partners::Chunk if self.chunk >= 2 => {
                let base = sample / self.chunk * self.chunk;
                match self.chunk.min(samples - base) {
                    n if n >= 2 => (base, n),
                    _ => (0, samples),
                }
            }
            _ => (0, samples),
        };
        let p = r.below(pool - 1);
        let partner = (base + if p >= sample - base { p + 1 } else { p }) as u32;
        let kind = match self.mode {
            MixMode::Mixup => MixKind::Mixup,
            MixMode::Cutmix => MixKind::Cutmix,
            _ if r.next_u64() >> 63 == 0 => MixKind::Mixup,
            _ => MixKind::Cutmix,
        };
        let lam = beta_sym(&mut r, self.alpha);
        match kind {
            MixKind::Cutmix => {
                // As in the CutMix paper's code: a box of side sqrt(1 - lam)
                // of the image around a uniform centre, clipped to the image.
                let [h, w] = hw;
                let cut = (1.0 - lam).sqrt();
                let (ch, cw) = ((h as f64 * cut) as usize, (w as f64 * cut) as usize);
                let cy = r.below(h.max(1) as u64) as usize;
                let cx = r.below(w.max(1) as u64) as usize;
                let (y0, y1) = (cy.saturating_sub(ch / 2), (cy + ch / 2).min(h));
                let (x0, x1) = (cx.saturating_sub(cw / 2), (cx + cw / 2).min(w));
                let q = |v: usize| v.min(u16::MAX as usize) as u16;
                MixParams {
                    partner,
                    kind,
                    lam_q: 0,
                    y0: q(y0),
                    x0: q(x0),
                    h: q(y1 - y0),
                    w: q(x1 - x0),
                }
            }
            _ => MixParams {
                partner,
                kind,
                lam_q: (lam * LAM_SCALE).round() as u16,
                ..MixParams::NONE
            },
        }
    }
}

#[cfg(test)]
mod tests;
