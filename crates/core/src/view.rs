//! The augmentation contract between the logit cache and the student.
//!
//! A view of an image is a box in the (zero-padded) image, resized to the
//! view's size if it is not already that size, and a horizontal flip. The
//! view's size is the image's unless a resized-crop spec names a smaller (or
//! larger) one: store images at 256 px and train at 224 px, as ImageNet
//! recipes do, so a crop keeps the stored resolution.
//! Its parameters are a handful of small integers drawn from a generator
//! keyed by (seed, sample, view), stored beside the teachers' logits, and the
//! student rebuilds the very pixels the teachers saw from them. View 0 is
//! always the plain image. Two ways of drawing the box (the view's *crop*):
//!
//! - `pad-crop` (the default, right for 28-32 px images): pad by `pad` zero
//!   pixels, take an image-sized box at a random offset. No resize.
//! - `resized-crop` (for larger images; torchvision's `RandomResizedCrop`): a
//!   box of random area fraction (`scale`) and aspect ratio (`ratio`) inside
//!   the unpadded image, resized bilinearly to the view's size. Its plain
//!   view (view 0, and what evaluation sees) is the central box of the
//!   view's size, torchvision's `CenterCrop`: the whole image when the sizes
//!   agree.
//!
//! A view may also be mixed with a partner sample's view of the same index
//! (mixup, cutmix): see [`crate::mix`], whose draws come from a separate
//! stream so the boxes here never depend on whether mixing is on.

use crate::error::{CoreError, InputError, SettingError};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// How a view's box is drawn (profile `crop`, flag `--crop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Crop {
    #[default]
    PadCrop,
    ResizedCrop,
}

impl Crop {
    pub fn name(self) -> &'static str {
        match self {
            Crop::PadCrop => "pad-crop",
            Crop::ResizedCrop => "resized-crop",
        }
    }
}

/// The ranges of a resized crop, as torchvision's `RandomResizedCrop`: the
/// box covers `scale` of the image's area and has width/height in `ratio`
/// (drawn log-uniformly).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropRange {
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
}

impl Default for CropRange {
    fn default() -> Self {
        CropRange {
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
        }
    }
}

impl CropRange {
    /// `Err` names the setting that is out of range.
    pub fn check(&self) -> Result<(), SettingError> {
        let [s0, s1] = self.scale;
        let [r0, r1] = self.ratio;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(SettingError::out_of_range(
                "crop_scale",
                format!("[{s0}, {s1}]"),
                "[low, high] with 0 < low <= high <= 1",
            ));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(SettingError::out_of_range(
                "crop_ratio",
                format!("[{r0}, {r1}]"),
                "[low, high] with 0 < low <= high (width / height)",
            ));
        }
        Ok(())
    }
}

/// How views are drawn. `pad` and `flip` as always; `resized_crop` present
/// means resized-crop views (then `pad` is 0), and `size` the side of their
/// square output when it is not the image's. A pad-crop spec serialises as
/// it did before resized crops existed, and a spec without `size` as it did
/// before sizes existed, so older stores keep their identity.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    pub pad: u8,
    pub flip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resized_crop: Option<CropRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u16>,
}

impl Default for ViewSpec {
    fn default() -> Self {
        ViewSpec {
            pad: 2,
            flip: true,
            resized_crop: None,
            size: None,
        }
    }
}

/// One view's parameters: the box (`y, x` in the padded image, and its
/// `size`) and the flip. A pad-crop box has no size of its own (`None`: the
/// image's size) and `y, x` in `0..=2*pad` (identity: `pad, pad`); a
/// resized-crop box has a size and lies inside the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewParams {
    pub y: u16,
    pub x: u16,
    pub size: Option<[u16; 2]>,
    pub flip: u8,
}

impl ViewParams {
    /// A pad-crop view at offset (`dy`, `dx`) in the padded image.
    pub fn shifted(dy: u16, dx: u16, flip: u8) -> Self {
        ViewParams {
            y: dy,
            x: dx,
            size: None,
            flip,
        }
    }

    /// The box's `[height, width]` in an `hw` image (a pad-crop's box is
    /// the whole image).
    pub fn box_hw(&self, hw: [usize; 2]) -> [usize; 2] {
        self.size.map_or(hw, |[h, w]| [h as usize, w as usize])
    }

    /// Whether the box has the image's size (no resize needed).
    pub fn is_shift(&self, hw: [usize; 2]) -> bool {
        self.box_hw(hw) == hw
    }
}

impl ViewSpec {
    pub fn crop(&self) -> Crop {
        match self.resized_crop {
            None => Crop::PadCrop,
            Some(_) => Crop::ResizedCrop,
        }
    }

    /// A resized-crop spec whose views have the image's size.
    pub fn resized(range: CropRange, flip: bool) -> Self {
        ViewSpec {
            pad: 0,
            flip,
            resized_crop: Some(range),
            size: None,
        }
    }

    /// `[height, width]` of every view of an `hw` image.
    pub fn out_hw(&self, hw: [usize; 2]) -> [usize; 2] {
        self.size.map_or(hw, |s| [s as usize, s as usize])
    }

    /// `[channels, height, width]` of every view of a `chw` image.
    pub fn out_chw(&self, chw: [usize; 3]) -> [usize; 3] {
        let [h, w] = self.out_hw([chw[1], chw[2]]);
        [chw[0], h, w]
    }

    /// The plain view of an `hw` image: view 0 of a store, and what
    /// evaluation sees. Pad-crop: the image itself. Resized-crop: the central
    /// box of the view's size (the whole image without a `size`), as
    /// torchvision's `CenterCrop`, offsets rounded half to even as Python's
    /// `round`; an image smaller than the view is taken whole and resized.
    pub fn plain(&self, hw: [usize; 2]) -> ViewParams {
        match self.crop() {
            Crop::PadCrop => {
                let p = self.pad as u16;
                ViewParams::shifted(p, p, 0)
            }
            Crop::ResizedCrop => {
                let [oh, ow] = self.out_hw(hw);
                let (bh, bw) = (oh.min(hw[0]), ow.min(hw[1]));
                let centre =
                    |len: usize, b: usize| ((len - b) as f64 / 2.0).round_ties_even() as u16;
                ViewParams {
                    y: centre(hw[0], bh),
                    x: centre(hw[1], bw),
                    size: Some([bh as u16, bw as u16]),
                    flip: 0,
                }
            }
        }
    }

    /// Names of the stored columns (`views/params`), in order. Pad-crop
    /// stores keep their original uint8 layout (dy, dx, flip); resized-crop
    /// stores use uint16 (y, x, h, w, flip).
    pub fn param_fields(&self) -> &'static [&'static str] {
        match self.crop() {
            Crop::PadCrop => &["dy", "dx", "flip"],
            Crop::ResizedCrop => &["y", "x", "h", "w", "flip"],
        }
    }

    /// Bytes per stored value of `views/params` (1: uint8, 2: uint16).
    pub fn param_bytes(&self) -> usize {
        match self.crop() {
            Crop::PadCrop => 1,
            Crop::ResizedCrop => 2,
        }
    }

    /// The stored row of `p` (widened to u16; pad-crop values fit a u8).
    /// `p` must come from this spec.
    pub fn encode(&self, p: &ViewParams) -> Vec<u16> {
        match (self.crop(), p.size) {
            (Crop::ResizedCrop, Some([h, w])) => vec![p.y, p.x, h, w, p.flip as u16],
            _ => vec![p.y, p.x, p.flip as u16],
        }
    }

    /// Inverse of [`ViewSpec::encode`].
    pub fn decode(&self, row: &[u16]) -> ViewParams {
        match self.crop() {
            Crop::PadCrop => ViewParams::shifted(row[0], row[1], row[2] as u8),
            Crop::ResizedCrop => ViewParams {
                y: row[0],
                x: row[1],
                size: Some([row[2], row[3]]),
                flip: row[4] as u8,
            },
        }
    }

    /// `Err` names the setting that cannot work for `hw` images.
    pub fn check(&self, hw: [usize; 2]) -> Result<(), CoreError> {
        if hw[0] > u16::MAX as usize || hw[1] > u16::MAX as usize {
            return Err(InputError::Unsupported {
                what: format!("images of {}x{} pixels", hw[0], hw[1]),
                limit: "views need sides below 65536".into(),
            }
            .into());
        }
        Ok(self.validate()?)
    }

    /// `Err` names the setting out of range, whatever the images.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.pad > 127 {
            return Err(SettingError::out_of_range("pad", self.pad, "at most 127"));
        }
        match (self.size, self.crop()) {
            (Some(0), _) => {
                return Err(SettingError::out_of_range(
                    "view_size",
                    0,
                    "at least 1 pixel",
                ));
            }
            (Some(_), Crop::PadCrop) => {
                return Err(SettingError::NotApplicable {
                    setting: "view_size".into(),
                    why:
                        "only resized-crop views have a size of their own; a pad-crop view is the \
                          stored image's size (store the images at the size to train at)"
                            .into(),
                });
            }
            _ => {}
        }
        if let Some(r) = &self.resized_crop {
            r.check()?;
        }
        Ok(())
    }

    /// The parameters of view `view` of sample `sample` of an `hw` image.
    /// Pure function of its arguments; view 0 is the plain image.
    pub fn draw(&self, hw: [usize; 2], seed: u64, sample: u64, view: u64) -> ViewParams {
        if view == 0 {
            return self.plain(hw);
        }
        let mut r = Rng::keyed(seed, &[0x7669_6577, sample, view]);
        let mut p = match &self.resized_crop {
            None => {
                let span = 2 * self.pad as u64 + 1;
                let dy = r.below(span) as u16;
                ViewParams::shifted(dy, r.below(span) as u16, 0)
            }
            Some(range) => resized_box(range, hw, &mut r),
        };
        if self.flip {
            p.flip = (r.next_u64() >> 63) as u8;
        }
        p
    }

    /// Whether `p` could have come from this spec for an `hw` image.
    pub fn admits(&self, hw: [usize; 2], p: &ViewParams) -> bool {
        let flip_ok = p.flip == 0 || (self.flip && p.flip == 1);
        let box_ok = match (self.crop(), p.size) {
            (Crop::PadCrop, None) => p.y <= 2 * self.pad as u16 && p.x <= 2 * self.pad as u16,
            (Crop::ResizedCrop, Some([h, w])) => {
                h > 0
                    && w > 0
                    && p.y as usize + h as usize <= hw[0]
                    && p.x as usize + w as usize <= hw[1]
            }
            _ => false,
        };
        flip_ok && box_ok
    }
}

/// torchvision's `RandomResizedCrop.get_params` on our generator: ten tries
/// at a box of random area and log-uniform aspect ratio, then a central box
/// of the nearest admissible ratio.
fn resized_box(range: &CropRange, hw: [usize; 2], r: &mut Rng) -> ViewParams {
    let (h, w) = (hw[0] as f64, hw[1] as f64);
    let area = h * w;
    let [s0, s1] = range.scale;
    let (l0, l1) = (range.ratio[0].ln(), range.ratio[1].ln());
    for _ in 0..10 {
        let target = area * (s0 + (s1 - s0) * r.unit());
        let aspect = (l0 + (l1 - l0) * r.unit()).exp();
        let bw = (target * aspect).sqrt().round();
        let bh = (target / aspect).sqrt().round();
        if bw >= 1.0 && bw <= w && bh >= 1.0 && bh <= h {
            let (bh, bw) = (bh as usize, bw as usize);
            let y = r.below((hw[0] - bh + 1) as u64) as u16;
            let x = r.below((hw[1] - bw + 1) as u64) as u16;
            return ViewParams {
                y,
                x,
                size: Some([bh as u16, bw as u16]),
                flip: 0,
            };
        }
    }
    let ratio = w / h;
    let (bh, bw) = if ratio < range.ratio[0] {
        (
            ((w / range.ratio[0]).round() as usize).clamp(1, hw[0]),
            hw[1],
        )
    } else if ratio > range.ratio[1] {
        (
            hw[0],
            ((h * range.ratio[1]).round() as usize).clamp(1, hw[1]),
        )
    } else {
        (hw[0], hw[1])
    };
    ViewParams {
        y: ((hw[0] - bh) / 2) as u16,
        x: ((hw[1] - bw) / 2) as u16,
        size: Some([bh as u16, bw as u16]),
        flip: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_zero_is_identity_and_draws_are_admitted() {
        let hw = [28, 28];
        let s = ViewSpec {
            pad: 4,
            ..ViewSpec::default()
        };
        assert_eq!(s.draw(hw, 1, 5, 0), ViewParams::shifted(4, 4, 0));
        let mut flips = 0;
        for i in 0..1000 {
            let p = s.draw(hw, 1, i, 1);
            assert!(s.admits(hw, &p));
            flips += p.flip as u32;
            assert_eq!(p, s.draw(hw, 1, i, 1));
            assert_eq!(s.decode(&s.encode(&p)), p);
        }
        assert!((400..600).contains(&flips));
        let noflip = ViewSpec {
            flip: false,
            ..ViewSpec::default()
        };
        assert!((0..100).all(|i| noflip.draw(hw, 3, i, 2).flip == 0));
    }

    #[test]
    fn resized_crops_follow_their_ranges() {
        let hw = [64, 48];
        let range = CropRange {
            scale: [0.25, 0.5],
            ratio: [0.5, 2.0],
        };
        let s = ViewSpec::resized(range, true);
        assert!(s.draw(hw, 0, 3, 0).is_shift(hw));
        let (mut flips, mut areas) = (0, vec![]);
        for i in 0..2000 {
            let p = s.draw(hw, 7, i, 3);
            assert!(s.admits(hw, &p), "{p:?}");
            assert_eq!(s.decode(&s.encode(&p)), p);
            flips += p.flip as u32;
            let [h, w] = p.size.unwrap();
            areas.push((h as f64 * w as f64) / (64.0 * 48.0));
        }
        assert!((800..1200).contains(&flips));
        // Rounding the sides moves the area a little past the range ends.
        assert!(areas.iter().all(|&a| (0.2..0.56).contains(&a)), "{areas:?}");
        let mean = areas.iter().sum::<f64>() / areas.len() as f64;
        assert!((mean - 0.375).abs() < 0.02, "mean area {mean}");
        // An impossible ratio falls back to the central box of the nearest ratio.
        let wide = ViewSpec::resized(
            CropRange {
                scale: [1.0, 1.0],
                ratio: [2.0, 2.0],
            },
            false,
        );
        let p = wide.draw([40, 40], 0, 1, 1);
        assert_eq!((p.y, p.x, p.size), (10, 0, Some([20, 40])));
        assert_eq!(wide.draw([10, 40], 0, 1, 1).size, Some([10, 20]));
    }

    #[test]
    fn pad_crop_specs_serialise_as_before_and_ranges_are_checked() {
        let s = serde_json::to_value(ViewSpec::default()).unwrap();
        assert_eq!(s, serde_json::json!({"pad": 2, "flip": true}));
        let r = ViewSpec::resized(CropRange::default(), true);
        let back: ViewSpec = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(back, r);
        for (scale, ratio) in [
            ([0.0, 1.0], [1.0, 1.0]),
            ([0.5, 0.4], [1.0, 1.0]),
            ([0.1, 1.0], [2.0, 1.0]),
        ] {
            let e = CropRange { scale, ratio }.check().unwrap_err();
            assert!(e.setting().starts_with("crop_"), "{e}");
        }
        assert!(ViewSpec::default().check([70000, 3]).is_err());
    }

    #[test]
    fn a_view_size_centres_the_plain_view_and_is_for_resized_crops_only() {
        let sized = |s| ViewSpec {
            size: Some(s),
            ..ViewSpec::resized(CropRange::default(), true)
        };
        let s = sized(224);
        assert_eq!(s.out_hw([256, 256]), [224, 224]);
        assert_eq!(s.out_chw([3, 256, 256]), [3, 224, 224]);
        let p = s.plain([256, 256]);
        assert_eq!((p.y, p.x, p.size, p.flip), (16, 16, Some([224, 224]), 0));
        assert_eq!(s.draw([256, 256], 0, 9, 0), p);
        // Offsets rounded half to even, as torchvision's CenterCrop rounds.
        assert_eq!(sized(24).plain([29, 29]).y, 2);
        assert_eq!(sized(24).plain([31, 31]).y, 4);
        // A view larger than the image takes it whole (and resizes it).
        let up = sized(40).plain([32, 32]);
        assert_eq!((up.y, up.x, up.size), (0, 0, Some([32, 32])));
        for i in 0..500 {
            assert!(s.admits([256, 256], &s.draw([256, 256], 1, i, 3)));
        }
        // Without a size nothing changes, serialised or drawn.
        let plain = ViewSpec::resized(CropRange::default(), true);
        assert_eq!(plain.out_hw([28, 28]), [28, 28]);
        assert!(serde_json::to_value(plain).unwrap().get("size").is_none());
        let back: ViewSpec = serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap();
        assert_eq!(back, s);
        // A size means nothing to pad-crop views, and 0 pixels nothing at all.
        let pad = ViewSpec {
            size: Some(24),
            ..ViewSpec::default()
        };
        assert!(matches!(
            pad.validate(),
            Err(SettingError::NotApplicable { ref setting, .. }) if setting == "view_size"
        ));
        assert!(matches!(
            sized(0).validate(),
            Err(SettingError::OutOfRange { ref setting, .. }) if setting == "view_size"
        ));
        assert!(s.validate().is_ok());
    }
}
