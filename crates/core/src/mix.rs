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

use crate::error::{CoreError, Result};
use crate::rng::Rng;
use crate::view::{ViewParams, ViewSpec};
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
            _ => Err(CoreError::Invalid(format!(
                "mix '{s}': expected one of {}",
                Self::NAMES.join(", ")
            ))),
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

/// Standard normal by Box-Muller (one of the pair).
fn normal(r: &mut Rng) -> f64 {
    let u1 = 1.0 - r.unit();
    let u2 = r.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(a, 1) by Marsaglia-Tsang; a < 1 through Gamma(a + 1) * U^(1/a).
fn gamma(r: &mut Rng, a: f64) -> f64 {
    if a < 1.0 {
        let u = 1.0 - r.unit();
        return gamma(r, a + 1.0) * u.powf(1.0 / a);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(r);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - r.unit();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// Beta(a, a) in [0, 1].
fn beta_sym(r: &mut Rng, a: f64) -> f64 {
    let x = gamma(r, a);
    let y = gamma(r, a);
    let s = x + y;
    if s > 0.0 && s.is_finite() {
        (x / s).clamp(0.0, 1.0)
    } else {
        // Both underflowed (alpha near 0): Beta(a, a) sits on 0 and 1 then.
        (r.next_u64() >> 63) as f64
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
        if !(0.0..=1.0).contains(&self.prob) {
            return Err(CoreError::Invalid(format!(
                "mix_prob {}: must be in [0, 1]",
                self.prob
            )));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(CoreError::Invalid(format!(
                "mix_alpha {}: must be a finite number > 0",
                self.alpha
            )));
        }
        Ok(())
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

/// The parameters to rebuild a batch of (sample, view) pairs: each own
/// view, the partner's view at the same view index (the own view again when
/// not mixed; unused then), and the mixing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewBatch {
    pub views: Vec<ViewParams>,
    pub partner_views: Vec<ViewParams>,
    pub mixes: Vec<MixParams>,
}

impl ViewBatch {
    /// From the generators, as the cache writer draws them.
    pub fn draw(
        view: &ViewSpec,
        mix: &MixSpec,
        seed: u64,
        samples: usize,
        hw: [usize; 2],
        pairs: &[(usize, usize)],
    ) -> ViewBatch {
        let mut b = ViewBatch::default();
        for &(s, v) in pairs {
            let own = view.draw(hw, seed, s as u64, v as u64);
            let m = mix.draw(seed, s as u64, v as u64, samples as u64, hw);
            b.views.push(own);
            b.partner_views.push(if m.is_mixed() {
                view.draw(hw, seed, m.partner as u64, v as u64)
            } else {
                own
            });
            b.mixes.push(m);
        }
        b
    }

    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Rows `a..b`.
    pub fn slice(&self, a: usize, b: usize) -> ViewBatch {
        ViewBatch {
            views: self.views[a..b].to_vec(),
            partner_views: self.partner_views[a..b].to_vec(),
            mixes: self.mixes[a..b].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HW: [usize; 2] = [28, 28];

    fn spec(mode: MixMode, prob: f64, alpha: f64) -> MixSpec {
        MixSpec {
            mode,
            prob,
            alpha,
            ..MixSpec::default()
        }
    }

    #[test]
    fn chunk_partners_stay_in_their_chunk_and_change_nothing_else() {
        let any = spec(MixMode::MixupCutmix, 1.0, 1.0);
        let chunk = MixSpec {
            partners: Partners::Chunk,
            ..any
        }
        .in_chunks_of(64);
        let n = 1000u64;
        let mut spread = std::collections::BTreeSet::new();
        for s in 0..n {
            for v in 1..4 {
                let (a, c) = (any.draw(7, s, v, n, HW), chunk.draw(7, s, v, n, HW));
                assert!(c.is_mixed());
                assert_ne!(c.partner as u64, s, "not itself");
                if s < 960 {
                    // Chunks of 64; the last, 40 samples, is its own too.
                    assert_eq!(c.partner as u64 / 64, s / 64, "sample {s}");
                } else {
                    assert!((960..n).contains(&(c.partner as u64)));
                }
                spread.insert(c.partner as u64 % 64);
                // The rest of the draw is the any-partner rule's.
                assert_eq!(
                    (a.kind, a.lam_q, a.y0, a.x0, a.h, a.w),
                    (c.kind, c.lam_q, c.y0, c.x0, c.h, c.w)
                );
            }
        }
        assert_eq!(spread.len(), 64, "every position of a chunk is drawn");
        // A last chunk of one sample takes a partner from anywhere.
        let c = chunk.draw(7, 1000, 1, 1001, HW);
        assert!(c.is_mixed() && c.partner < 1000);
        // The recorded spec says "chunk" only when it is.
        assert!(!serde_json::to_string(&any).unwrap().contains("partners"));
        assert!(
            serde_json::to_string(&chunk)
                .unwrap()
                .contains(r#""partners":"chunk""#)
        );
    }

    #[test]
    fn view_zero_and_mode_none_are_never_mixed() {
        let s = spec(MixMode::MixupCutmix, 1.0, 1.0);
        assert!((0..500).all(|i| s.draw(3, i, 0, 1000, HW) == MixParams::NONE));
        assert!((1..500).all(|i| s.draw(3, i, 1, 1000, HW).is_mixed()));
        let none = spec(MixMode::None, 1.0, 1.0);
        assert!((0..500).all(|i| none.draw(3, i, 2, 1000, HW) == MixParams::NONE));
        // One sample has no partner.
        assert_eq!(s.draw(3, 0, 1, 1, HW), MixParams::NONE);
        let never = spec(MixMode::Mixup, 0.0, 1.0);
        assert!((0..500).all(|i| !never.draw(3, i, 1, 1000, HW).is_mixed()));
    }

    #[test]
    fn draws_are_pure_and_keyed() {
        let s = spec(MixMode::MixupCutmix, 0.5, 0.4);
        for i in 0..200 {
            for v in 1..4 {
                assert_eq!(s.draw(9, i, v, 300, HW), s.draw(9, i, v, 300, HW));
            }
        }
        let a: Vec<_> = (0..200).map(|i| s.draw(9, i, 1, 300, HW)).collect();
        let b: Vec<_> = (0..200).map(|i| s.draw(10, i, 1, 300, HW)).collect();
        assert_ne!(a, b);
        // The crop stream does not move when mixing is switched on.
        let vs = ViewSpec::default();
        let pairs: Vec<(usize, usize)> =
            (0..50).flat_map(|i| (0..4).map(move |v| (i, v))).collect();
        let plain = ViewBatch::draw(&vs, &MixSpec::default(), 9, 50, HW, &pairs);
        let mixed = ViewBatch::draw(&vs, &s, 9, 50, HW, &pairs);
        assert_eq!(plain.views, mixed.views);
        assert!(plain.mixes.iter().all(|m| *m == MixParams::NONE));
        assert_eq!(plain.partner_views, plain.views);
        for ((p, m), &(_, v)) in mixed.partner_views.iter().zip(&mixed.mixes).zip(&pairs) {
            if m.is_mixed() {
                assert_eq!(*p, vs.draw(HW, 9, m.partner as u64, v as u64));
            }
        }
        assert_eq!(mixed.slice(4, 8).mixes, mixed.mixes[4..8]);
    }

    #[test]
    fn proportions_partners_and_lambda() {
        let n = 20_000u64;
        let s = spec(MixMode::MixupCutmix, 0.3, 1.0);
        // 1000 samples x 20 views.
        let d: Vec<MixParams> = (0..n)
            .map(|i| s.draw(1, i % 1000, 1 + i / 1000, 1000, HW))
            .collect();
        let mixed = d.iter().filter(|m| m.is_mixed()).count() as f64 / n as f64;
        assert!((mixed - 0.3).abs() < 0.015, "{mixed}");
        let mixup = d.iter().filter(|m| m.kind == MixKind::Mixup).count() as f64;
        let cutmix = d.iter().filter(|m| m.kind == MixKind::Cutmix).count() as f64;
        assert!((mixup / (mixup + cutmix) - 0.5).abs() < 0.03);
        for (i, m) in d.iter().enumerate().filter(|(_, m)| m.is_mixed()) {
            assert!(m.partner < 1000 && m.partner as usize != i % 1000);
        }
        // Partners: never the sample itself, uniform over the others.
        let s2 = spec(MixMode::Mixup, 1.0, 1.0);
        let mut counts = [0usize; 5];
        for v in 1..4001 {
            let m = s2.draw(2, 3, v, 5, HW);
            counts[m.partner as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        assert!(
            counts
                .iter()
                .enumerate()
                .all(|(i, &c)| i == 3 || (900..1100).contains(&c)),
            "{counts:?}"
        );
        // Beta(1,1) is uniform: mean 1/2, a quarter below 1/4.
        let lams: Vec<f64> = (0..n)
            .map(|i| s2.draw(4, i, 1, 1000, HW).own_weight(28, 28))
            .collect();
        let mean = lams.iter().sum::<f64>() / n as f64;
        let low = lams.iter().filter(|&&l| l < 0.25).count() as f64 / n as f64;
        assert!(
            (mean - 0.5).abs() < 0.01 && (low - 0.25).abs() < 0.015,
            "{mean} {low}"
        );
        // Beta(0.2, 0.2) is U-shaped: most mass near 0 and 1, mean 1/2.
        let u = spec(MixMode::Mixup, 1.0, 0.2);
        let lams: Vec<f64> = (0..n)
            .map(|i| u.draw(4, i, 1, 1000, HW).own_weight(28, 28))
            .collect();
        let ends = lams.iter().filter(|&&l| !(0.1..=0.9).contains(&l)).count() as f64 / n as f64;
        let mean = lams.iter().sum::<f64>() / n as f64;
        // P(|lam - 1/2| > 0.4) for Beta(0.2, 0.2) is about 0.65.
        assert!(ends > 0.6 && (mean - 0.5).abs() < 0.02, "{ends} {mean}");
        // Beta(4, 4): concentrated, variance 1/36.
        let c = spec(MixMode::Mixup, 1.0, 4.0);
        let lams: Vec<f64> = (0..n)
            .map(|i| c.draw(4, i, 1, 1000, HW).own_weight(28, 28))
            .collect();
        let var = lams.iter().map(|l| (l - 0.5).powi(2)).sum::<f64>() / n as f64;
        assert!((var - 1.0 / 36.0).abs() < 0.002, "{var}");
    }

    #[test]
    fn cutmix_boxes_lie_inside_the_image_and_match_lambda() {
        let s = spec(MixMode::Cutmix, 1.0, 1.0);
        let (mut area, n) = (0.0, 20_000u64);
        for i in 0..n {
            for hw in [[28, 28], [7, 5]] {
                let m = s.draw(5, i, 2, 100, hw);
                assert_eq!(m.kind, MixKind::Cutmix);
                assert_eq!(m.lam_q, 0);
                assert!(
                    m.y0 as usize + m.h as usize <= hw[0] && m.x0 as usize + m.w as usize <= hw[1],
                    "{m:?}"
                );
                let (y0, y1, x0, x1) = m.clipped_box(hw[0], hw[1]);
                assert_eq!(
                    (y0, y1 - y0, x0, x1 - x0),
                    (m.y0 as usize, m.h as usize, m.x0 as usize, m.w as usize)
                );
                if hw == [28, 28] {
                    area += 1.0 - m.own_weight(28, 28);
                }
            }
        }
        // E[box share] < E[1 - lam] = 1/2 because clipping only shrinks boxes.
        let share = area / n as f64;
        assert!((0.2..0.5).contains(&share), "{share}");
    }

    #[test]
    fn own_weight_and_storage_by_hand() {
        assert_eq!(MixParams::NONE.own_weight(28, 28), 1.0);
        let m = MixParams {
            partner: 7,
            kind: MixKind::Mixup,
            lam_q: 16384,
            ..MixParams::NONE
        };
        assert_eq!(m.own_weight(28, 28), 16384.0 / 65535.0);
        assert_eq!(m.lam_f32(), 16384.0f32 / 65535.0);
        let c = MixParams {
            partner: 3,
            kind: MixKind::Cutmix,
            y0: 2,
            x0: 4,
            h: 7,
            w: 4,
            ..MixParams::NONE
        };
        assert_eq!(c.own_weight(14, 14), 1.0 - 28.0 / 196.0);
        // A box hanging over the edge counts only its inside part.
        let over = MixParams { y0: 10, h: 9, ..c };
        assert_eq!(over.own_weight(14, 14), 1.0 - 16.0 / 196.0);
        for p in [MixParams::NONE, m, c] {
            assert_eq!(MixParams::from_slice(&p.to_array()), Some(p));
        }
        assert_eq!(c.to_array(), [2, 3, 0, 2, 4, 7, 4]);
        assert_eq!(MixParams::from_slice(&[3, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(MixParams::from_slice(&[1, 0, 70000, 0, 0, 0, 0]), None);
        assert_eq!(MixParams::from_slice(&[1, 0, 0]), None);
    }

    #[test]
    fn settings_are_validated_with_their_names() {
        assert!(MixSpec::default().validate().is_ok());
        for p in [-0.1, 1.5, f64::NAN] {
            let e = spec(MixMode::Mixup, p, 1.0)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("mix_prob"), "{e}");
        }
        for a in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            let e = spec(MixMode::Mixup, 0.5, a)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("mix_alpha"), "{e}");
        }
        assert_eq!(
            "mixup-cutmix".parse::<MixMode>().unwrap(),
            MixMode::MixupCutmix
        );
        assert_eq!("CutMix".parse::<MixMode>().unwrap(), MixMode::Cutmix);
        let e = "mixupp".parse::<MixMode>().unwrap_err().to_string();
        assert!(
            e.contains("mix 'mixupp'") && e.contains("mixup-cutmix"),
            "{e}"
        );
        let j = serde_json::to_value(spec(MixMode::MixupCutmix, 0.25, 0.5)).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"mode": "mixup-cutmix", "prob": 0.25, "alpha": 0.5})
        );
        assert_eq!(
            serde_json::from_value::<MixSpec>(j).unwrap().mode,
            MixMode::MixupCutmix
        );
        for m in MixMode::NAMES {
            assert_eq!(m.parse::<MixMode>().unwrap().name(), m);
        }
    }
}
