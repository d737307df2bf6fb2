//! Which images an image folder holds, and in which split and class: the
//! folder's layout, found without decoding a single image.

use crate::error::{DataError, Result, format_err, io_err};
use std::path::{Path, PathBuf};

/// The top-level folders that name splits rather than classes.
const SPLITS: [&str; 3] = ["train", "val", "test"];

pub(super) fn is_image(p: &Path) -> bool {
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

/// One image file and its class.
#[derive(Clone, Debug)]
pub(super) struct Image {
    pub path: PathBuf,
    pub label: u16,
}

/// The images of each split the folder gives.
#[derive(Debug)]
pub(super) enum Parts {
    /// Class folders directly under the source: the test split is held out
    /// of these.
    Flat(Vec<Image>),
    /// `train/` and a test split (`test/`, or ImageNet's `val/` when there
    /// is no `test/`), and `val/` when it sits beside `test/`.
    Split {
        train: Vec<Image>,
        val: Option<Vec<Image>>,
        test: Vec<Image>,
    },
}

impl Parts {
    /// Every image, in split order (train, val, test) then class and file
    /// name: what "the first image" means in messages.
    pub fn all(&self) -> Vec<&Image> {
        match self {
            Parts::Flat(v) => v.iter().collect(),
            Parts::Split { train, val, test } => train
                .iter()
                .chain(val.iter().flatten())
                .chain(test)
                .collect(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Layout {
    pub classes: Vec<String>,
    pub parts: Parts,
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

/// The images of split folder `dir`, class by class; `dir` must hold
/// exactly the classes of train (`classes`).
fn images_of(dir: &Path, classes: &[String]) -> Result<Vec<Image>> {
    if let Some(extra) = classes_of(dir)?.into_iter().find(|c| !classes.contains(c)) {
        return Err(format_err(
            dir.join(extra),
            "class folder not under train/ (every split needs the same classes)",
        ));
    }
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
                files.push(Image {
                    path: p,
                    label: ci as u16,
                });
            }
        }
        if files.len() == before {
            return Err(format_err(
                cdir,
                "class folder has no PNG or JPEG images (a class without samples)",
            ));
        }
    }
    Ok(files)
}

/// Find the layout of image folder `src`: class folders directly, or
/// `train/` with `test/`, `val/` or both. Anything else, and anything
/// beside the split folders that would be left unread, is refused.
pub(super) fn discover(src: &Path) -> Result<Layout> {
    let present: Vec<&str> = SPLITS
        .into_iter()
        .filter(|s| src.join(s).is_dir())
        .collect();
    if present.is_empty() {
        let classes = classes_of(src)?;
        let images = images_of(src, &classes)?;
        return Ok(Layout {
            classes,
            parts: Parts::Flat(images),
        });
    }
    let has = |s: &str| present.contains(&s);
    if !has("train") || present.len() == 1 {
        let lacks = if has("train") {
            "test/ or val/"
        } else {
            "train/"
        };
        return Err(DataError::Layout {
            path: src.into(),
            has: present
                .iter()
                .map(|s| format!("{s}/"))
                .collect::<Vec<_>>()
                .join(" and "),
            lacks: lacks.into(),
        });
    }
    for p in sorted_entries(src)? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        if p.is_dir() && !name.as_deref().is_some_and(|n| SPLITS.contains(&n)) {
            return Err(format_err(
                p,
                "folder beside the split folders: its images would not be read (class folders go under train/, val/ and test/)",
            ));
        }
        if p.is_file() && is_image(&p) {
            return Err(format_err(
                p,
                "image beside the split folders would not be read (put it in a class folder under train/, val/ or test/)",
            ));
        }
    }
    // Train and at least one of val/ and test/ are here (checked above).
    let (val_dir, test_dir) = if has("test") {
        (has("val").then(|| src.join("val")), src.join("test"))
    } else {
        tracing::info!(
            folder = %src.display(),
            "train/ and val/ without test/ (ImageNet's layout): val/ is the held-out evaluation set, imported as the test split"
        );
        (None, src.join("val"))
    };
    let classes = classes_of(&src.join("train"))?;
    let parts = Parts::Split {
        train: images_of(&src.join("train"), &classes)?,
        val: val_dir.map(|d| images_of(&d, &classes)).transpose()?,
        test: images_of(&test_dir, &classes)?,
    };
    Ok(Layout { classes, parts })
}
