//! Where each sample of a dataset artifact came from, so a row of any later
//! store (a logit-store row is train sample `i`) can be traced to its source.
//!
//! ```text
//! dataset.zarr/<split>/origin   string [N] (vlen-utf8); attrs: kind, description
//! ```
//!
//! An image folder's origins are the image's path relative to the source
//! folder, `/`-separated (`train/cat/1.png`); IDX and CIFAR origins are the
//! sample's index, in decimal, in the source's file order of the part it
//! came from (train files for `train` and a carved `val`, test files for
//! `test`), before any subset or carve. Zarr's `string` data type is what
//! zarr-python 3 reads as strings, so `zarr.open_group(p)["train/origin"][i]`
//! answers the same as [`origin`]. Artifacts written before origins were
//! recorded have no such array: they still open, and [`origin`] says so.

use crate::error::{DataError, Result, format_err};
use crate::store::{STAGE, STORE};
use kd_core::InputError;
use kd_core::manifest::Manifest;
use kd_core::zarr::{self, Layout, Store, data_type};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::path::Path;

/// What a split's origins are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    /// Image path relative to the source folder.
    Path,
    /// Index in the source's file order.
    Index,
}

impl OriginKind {
    fn description(self) -> &'static str {
        match self {
            OriginKind::Path => "path of the image relative to the source folder",
            OriginKind::Index => {
                "index of the sample in the source's file order (train files for train and a \
                 carved val, test files for test), before subsets and the val carve"
            }
        }
    }
}

/// Write `origin` (one per sample of split `name`) as `<name>/origin`.
pub(crate) fn write(store: &Store, name: &str, origin: &[String], kind: OriginKind) -> Result<()> {
    let n = origin.len() as u64;
    let a = zarr::create_array(
        store,
        &format!("/{name}/origin"),
        data_type::string(),
        "",
        &Layout {
            shape: vec![n],
            // A chunk of paths is a few hundred KiB: one read answers `origin`.
            chunk: vec![16384u64.min(n.max(1))],
            subchunk: None,
            zstd_level: 3,
            dims: vec!["sample".into()],
        },
        json!({ "kind": kind, "description": kind.description() })
            .as_object()
            .cloned()
            .unwrap_or_else(Map::new),
    )?;
    zarr::write_block(&a, &[0], &[n], origin)?;
    Ok(())
}

/// The origin array of `split`, checked against the split's sample count.
fn open(dir: &Path, split: &str) -> Result<zarr::ZArray> {
    Manifest::read_stage(dir, STAGE)?;
    let root = dir.join(STORE);
    let store = zarr::open_store(&root)?;
    let attrs = zarr::group_attrs(&store, "/")?;
    let counts: BTreeMap<String, usize> = attrs
        .get("splits")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| format_err(&root, "dataset attribute 'splits' missing or malformed"))?;
    let Some(&len) = counts.get(split) else {
        return Err(InputError::not_found(root, "split", split, counts.keys()).into());
    };
    if !root.join(split).join("origin").join("zarr.json").is_file() {
        return Err(DataError::NoOrigin {
            store: root,
            split: split.into(),
        });
    }
    let a = zarr::open_array(&store, &format!("/{split}/origin"))?;
    if a.shape() != [len as u64] {
        return Err(format_err(
            root.join(split).join("origin"),
            format!("{:?} origins for the split's {len} samples", a.shape()),
        ));
    }
    Ok(a)
}

/// The origin of sample `index` of `split` in the dataset artifact at `dir`
/// (see the module doc for what it is). Reads one chunk.
pub fn origin(dir: &Path, split: &str, index: usize) -> Result<String> {
    let a = open(dir, split)?;
    let len = a.shape()[0] as usize;
    if index >= len {
        return Err(DataError::NoSample {
            store: dir.join(STORE),
            split: split.into(),
            index,
            len,
        });
    }
    let mut one = zarr::read_block::<String>(&a, &[index as u64], &[1])?;
    Ok(one.pop().unwrap_or_default())
}

/// Every origin of `split`, in sample order.
pub fn origins(dir: &Path, split: &str) -> Result<Vec<String>> {
    Ok(zarr::read_all::<String>(&open(dir, split)?)?)
}
