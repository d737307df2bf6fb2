//! Image folders: one sub-folder per class holding PNG/JPEG files, either
//! under `train/` and `test/`, or directly (then a seeded stratified fraction
//! becomes the test split). Images are resized to `size x size`.
//!
//! Whatever would be left out is refused, naming the folder, rather than
//! dropped: a class folder without images (a class no split can learn), a
//! folder inside a class folder, an image outside every class folder, a
//! class present under `test/` only, and `train/` without `test/`. Hidden
//! entries (`.DS_Store`, `.ipynb_checkpoints`) are ignored.

use crate::error::{DataError, Result, format_err, io_err};
use crate::split::{Imported, Split, stratified_pick};
use image::imageops::FilterType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The folder's entries, sorted, hidden ones left out.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_hidden(p))
        .collect();
    v.sort();
    Ok(v)
}

/// Class names are the sub-folder names, sorted; an image beside them
/// belongs to no class.
fn classes_of(dir: &Path) -> Result<Vec<String>> {
    let entries = sorted_entries(dir)?;
    if let Some(img) = entries.iter().find(|p| p.is_file() && is_image(p)) {
        return Err(format_err(
            img,
            "image outside every class folder (put it in its class's sub-folder)",
        ));
    }
    let names: Vec<String> = entries
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(format_err(dir, "empty image folder: no class sub-folders"));
    }
    Ok(names)
}

fn load(path: &Path, size: u32, channels: usize) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| format_err(path, format!("unreadable image: {e}")))?;
    let img = img.resize_exact(size, size, FilterType::Triangle);
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

fn read_split(dir: &Path, classes: &[String], size: u32, channels: usize) -> Result<Split> {
    let mut files = vec![];
    for (ci, name) in classes.iter().enumerate() {
        let cdir = dir.join(name);
        if !cdir.is_dir() {
            return Err(format_err(
                cdir,
                "missing class folder (every split needs the same classes)",
            ));
        }
        let before = files.len();
        for p in sorted_entries(&cdir)? {
            if p.is_dir() {
                return Err(format_err(
                    p,
                    "folder inside a class folder: its images would not be read (move them into the class folder)",
                ));
            }
            if is_image(&p) {
                files.push((p, ci as u16));
            }
        }
        if files.len() == before {
            return Err(format_err(
                cdir,
                "class folder has no PNG or JPEG images (a class without samples)",
            ));
        }
    }
    let images: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| load(p, size, channels))
        .collect::<Result<_>>()?;
    Ok(Split {
        images: images.concat(),
        labels: files.iter().map(|f| f.1).collect(),
        chw: [channels, size as usize, size as usize],
    })
}

/// Import an image folder.
pub fn import(
    src: &Path,
    size: u32,
    channels: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Imported> {
    if !src.is_dir() {
        return Err(format_err(src, "no such directory"));
    }
    if !(channels == 1 || channels == 3) || size == 0 {
        return Err(DataError::Invalid(format!(
            "folder import needs channels 1 or 3 and size > 0 (got {channels}, {size})"
        )));
    }
    let (train_dir, test_dir) = (src.join("train"), src.join("test"));
    if train_dir.is_dir() != test_dir.is_dir() {
        let (has, lacks) = if train_dir.is_dir() {
            ("train", "test")
        } else {
            ("test", "train")
        };
        return Err(format_err(
            src,
            format!("has {has}/ but no {lacks}/: give both, or class folders only"),
        ));
    }
    let (train, test, class_names) = if train_dir.is_dir() && test_dir.is_dir() {
        let classes = classes_of(&train_dir)?;
        if let Some(extra) = classes_of(&test_dir)?
            .into_iter()
            .find(|c| !classes.contains(c))
        {
            return Err(format_err(
                test_dir.join(extra),
                "class folder not under train/ (every split needs the same classes)",
            ));
        }
        (
            read_split(&train_dir, &classes, size, channels)?,
            read_split(&test_dir, &classes, size, channels)?,
            classes,
        )
    } else {
        let classes = classes_of(src)?;
        let all = read_split(src, &classes, size, channels)?;
        let ntest = ((all.len() as f64) * test_fraction).round() as usize;
        if ntest == 0 || ntest >= all.len() {
            return Err(format_err(
                src,
                format!(
                    "{} images cannot be split with test fraction {test_fraction}",
                    all.len()
                ),
            ));
        }
        let test_idx = stratified_pick(&all.labels, classes.len(), ntest, seed ^ 4);
        let mut is_test = vec![false; all.len()];
        for &i in &test_idx {
            is_test[i] = true;
        }
        let train_idx: Vec<usize> = (0..all.len()).filter(|&i| !is_test[i]).collect();
        (all.select(&train_idx), all.select(&test_idx), classes)
    };
    Ok(Imported {
        source: format!("folder:{}", src.display()),
        train,
        test,
        class_names,
    })
}
