//! Image folders: one sub-folder per class holding PNG/JPEG files, in one of
//! these layouts:
//!
//! - `train/` + `test/`: the two splits;
//! - `train/` + `val/`: ImageNet's layout, where `val/` is the held-out
//!   evaluation set, so it becomes the dataset's *test* split (a val split
//!   can still be carved from train by `val_fraction`);
//! - `train/` + `val/` + `test/`: all three splits as given (then
//!   `val_fraction` must be 0: the folder already gives the val split);
//! - class folders directly: a seeded stratified `test_fraction` becomes the
//!   test split.
//!
//! Images are brought to `size x size` as torchvision's eval transform does
//! ([`Resize::Crop`], the default): the shorter side resized to `size`
//! (triangle filter, i.e. bilinear with antialiasing, as PIL), then the
//! centre `size x size` cut out. [`Resize::Squash`] resizes to
//! `size x size` directly, losing the aspect ratio. Without a size, images
//! keep theirs when all share one square size; otherwise the import is
//! refused, naming the first image that differs.
//!
//! Whatever would be left out is refused, naming the folder, rather than
//! dropped: a class folder without images (a class no split can learn), a
//! folder inside a class folder, an image outside every class folder, a
//! class present under `test/` or `val/` only, a folder beside the split
//! folders, and split folders that are none of the layouts above (`train/`
//! alone, `val/` without `train/`). Hidden entries (`.DS_Store`,
//! `.ipynb_checkpoints`) are ignored.
//!
//! Each sample's origin is its image's path relative to `src`
//! (`train/cat/1.png`).

mod layout;

use crate::error::{DataError, Result, format_err};
use crate::origin::OriginKind;
use crate::pixels::{Loader, Pixels};
use crate::split::{Imported, Split, Traced, stratified_pick};
use image::DynamicImage;
use image::imageops::FilterType;
use kd_core::{InputError, SettingError};
use layout::{Image, Parts};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How an image that is not `size x size` gets there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Shorter side to `size`, then the centre square (torchvision's
    /// `Resize(size)` + `CenterCrop(size)`): the aspect ratio is kept.
    #[default]
    Crop,
    /// Straight to `size x size`: the whole image, stretched.
    Squash,
}

impl std::fmt::Display for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resize::Crop => "crop",
            Resize::Squash => "squash",
        })
    }
}

impl std::str::FromStr for Resize {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Resize> {
        match s.trim() {
            "crop" => Ok(Resize::Crop),
            "squash" => Ok(Resize::Squash),
            other => Err(SettingError::unknown("resize", other, ["crop", "squash"]).into()),
        }
    }
}

/// What a folder import makes of the images.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Output side length; `None` keeps the images' own size, which must
    /// then be one square size for all.
    pub size: Option<u32>,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub resize: Resize,
    /// Class folders directly: the fraction held out as test.
    pub test_fraction: f64,
    /// The val carve asked of train: refused when the folder gives `val/`
    /// beside `test/`, before any image is decoded.
    pub val_fraction: f64,
    pub seed: u64,
}

/// torchvision's `Resize(size)` then `CenterCrop(size)` on a `w x h` image:
/// the resized width and height (shorter side `size`, the longer one
/// truncated, as torchvision does), and the crop's left and top offsets
/// (`round((len - size) / 2)`, rounding half to even like Python's `round`).
pub fn crop_box(w: u32, h: u32, size: u32) -> (u32, u32, u32, u32) {
    let long = |l: u32, s: u32| ((size as u64 * l as u64) / s as u64) as u32;
    let (nw, nh) = if w <= h {
        (size, long(h, w))
    } else {
        (long(w, h), size)
    };
    let offset = |len: u32| {
        let d = len - size;
        let half = d / 2;
        // d odd: half + 0.5 rounds to the even one of half and half + 1.
        if d % 2 == 1 && half % 2 == 1 {
            half + 1
        } else {
            half
        }
    };
    (nw, nh, offset(nw), offset(nh))
}

fn fit(img: DynamicImage, size: u32, resize: Resize) -> DynamicImage {
    if img.width() == size && img.height() == size {
        return img;
    }
    match resize {
        Resize::Squash => img.resize_exact(size, size, FilterType::Triangle),
        Resize::Crop => {
            let (nw, nh, left, top) = crop_box(img.width(), img.height(), size);
            img.resize_exact(nw, nh, FilterType::Triangle)
                .crop_imm(left, top, size, size)
        }
    }
}

fn load(path: &Path, size: u32, resize: Resize, channels: usize) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| format_err(path, format!("unreadable image: {e}")))?;
    let img = fit(img, size, resize);
    let (w, h) = (size as usize, size as usize);
    Ok(if channels == 1 {
        img.to_luma8().into_raw()
    } else {
        // HWC -> CHW
        let rgb = img.to_rgb8().into_raw();
        let mut out = vec![0u8; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * h * w + i] = px[c];
            }
        }
        out
    })
}

/// The side length when none is given: every image's own, which must be
/// one square size (read from the file headers only).
fn common_size(images: &[&Image]) -> Result<u32> {
    let dims: Vec<(u32, u32)> = images
        .par_iter()
        .map(|im| {
            image::image_dimensions(&im.path)
                .map_err(|e| format_err(&im.path, format!("unreadable image: {e}")))
        })
        .collect::<Result<_>>()?;
    let Some(&(w, h)) = dims.first() else {
        return Err(InputError::Empty {
            what: "the image folder".into(),
        }
        .into());
    };
    if w != h {
        return Err(DataError::SizeNeeded {
            path: images[0].path.clone(),
            found: (w, h),
            first: None,
        });
    }
    if let Some(i) = dims.iter().position(|&d| d != (w, h)) {
        return Err(DataError::SizeNeeded {
            path: images[i].path.clone(),
            found: dims[i],
            first: Some((images[0].path.clone(), w, h)),
        });
    }
    Ok(w)
}

/// The path of `p` relative to `src`, `/`-separated: the sample's origin.
fn origin_of(src: &Path, p: &Path) -> Result<String> {
    let rel = p.strip_prefix(src).unwrap_or(p);
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|v| v.join("/")).ok_or_else(|| {
        format_err(
            p,
            "file name is not UTF-8: its origin could not be recorded (rename it)",
        )
    })
}

/// The split of `images`, decoded only when its pixels are read (the
/// dataset writer decodes one chunk of them at a time).
fn read(src: &Path, images: &[Image], size: u32, opts: &Options) -> Result<Traced> {
    let paths: Arc<Vec<PathBuf>> = Arc::new(images.iter().map(|im| im.path.clone()).collect());
    let (resize, channels) = (opts.resize, opts.channels);
    let load: Loader = Arc::new(move |i| load(&paths[i], size, resize, channels));
    Ok(Traced {
        split: Split {
            images: Pixels::Deferred {
                load,
                idx: (0..images.len()).collect(),
            },
            labels: images.iter().map(|im| im.label).collect(),
            chw: [opts.channels, size as usize, size as usize],
        },
        origin: images
            .iter()
            .map(|im| origin_of(src, &im.path))
            .collect::<Result<_>>()?,
    })
}

/// Import an image folder (see the module doc for its layouts).
pub fn import(src: &Path, opts: &Options) -> Result<Imported> {
    if !src.is_dir() {
        return Err(format_err(src, "no such directory"));
    }
    let channels = opts.channels;
    if !(channels == 1 || channels == 3) {
        return Err(SettingError::out_of_range("channels", channels, "1 or 3").into());
    }
    if opts.size == Some(0) {
        return Err(SettingError::out_of_range("size", 0, "at least 1").into());
    }
    let found = layout::discover(src)?;
    if let Parts::Split { val: Some(_), .. } = &found.parts
        && opts.val_fraction > 0.0
    {
        return Err(DataError::ValTwice {
            path: src.join("val").display().to_string(),
            val_fraction: opts.val_fraction,
        });
    }
    let size = match opts.size {
        Some(s) => s,
        None => common_size(&found.parts.all())?,
    };
    let classes = found.classes;
    let (train, val, test) = match &found.parts {
        Parts::Split { train, val, test } => (
            read(src, train, size, opts)?,
            val.as_ref().map(|v| read(src, v, size, opts)).transpose()?,
            read(src, test, size, opts)?,
        ),
        Parts::Flat(images) => {
            let all = read(src, images, size, opts)?;
            let ntest = ((all.len() as f64) * opts.test_fraction).round() as usize;
            if ntest == 0 || ntest >= all.len() {
                return Err(format_err(
                    src,
                    format!(
                        "{} images cannot be split with test fraction {}",
                        all.len(),
                        opts.test_fraction
                    ),
                ));
            }
            let labels = &all.split.labels;
            let test_idx = stratified_pick(labels, classes.len(), ntest, opts.seed ^ 4);
            let mut is_test = vec![false; all.len()];
            for &i in &test_idx {
                is_test[i] = true;
            }
            let train_idx: Vec<usize> = (0..all.len()).filter(|&i| !is_test[i]).collect();
            (all.select(&train_idx), None, all.select(&test_idx))
        }
    };
    Ok(Imported {
        source: format!("folder:{}", src.display()),
        train,
        test,
        val,
        class_names: classes,
        origin: OriginKind::Path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_box_matches_torchvision() {
        // torchvision.transforms.Resize(224) + CenterCrop(224) on PIL images.
        assert_eq!(crop_box(500, 375, 224), (298, 224, 37, 0));
        assert_eq!(crop_box(375, 500, 224), (224, 298, 0, 37));
        // Odd margins: round(37.5) = 38, round(36.5) = 36 (half to even).
        assert_eq!(crop_box(299, 224, 224), (299, 224, 38, 0));
        assert_eq!(crop_box(297, 224, 224), (297, 224, 36, 0));
        assert_eq!(crop_box(40, 20, 20), (40, 20, 10, 0));
        assert_eq!(crop_box(64, 64, 32), (32, 32, 0, 0));
    }

    #[test]
    fn resize_setting_spellings() {
        for r in [Resize::Crop, Resize::Squash] {
            assert_eq!(r.to_string().parse::<Resize>().unwrap(), r);
        }
        let e = "stretch".parse::<Resize>().unwrap_err().to_string();
        assert!(e.contains("resize") && e.contains("stretch") && e.contains("squash"));
    }
}
