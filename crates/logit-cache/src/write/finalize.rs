//! Finishing a store: every shard checked present and decodable, then the
//! manifest sealed.

use super::claim::lock_out;
use crate::error::{Result, store_err};
use crate::layout::{Dtype, STAGE, StoreMeta, marker_path, store_dir};
use kd_core::manifest::{Manifest, OutputRef};
use kd_core::stage::StageRun;
use kd_core::zarr;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;

/// Check that every shard of `out` is done and its files are present and
/// decode (crc32c), then write the manifest. Run after the `--shard` workers.
pub fn finalize(out: &Path) -> Result<Manifest> {
    let _lock = lock_out(out, false)?;
    finalize_inner(out, &HashSet::new())
}

/// Shard files of every array: present, with every inner chunk that cannot
/// be all zeros (see [`StoreMeta::presence`]), and (unless `trusted`)
/// decodable.
pub fn check_shards(out: &Path, meta: &StoreMeta, trusted: &HashSet<usize>) -> Result<()> {
    let root = store_dir(out);
    let store = zarr::open_store(&root)?;
    for path in meta.array_paths() {
        let arr = zarr::open_array(&store, &path)?;
        let dims = arr.shape().len();
        for s in 0..meta.num_shards {
            let mut at = vec![0u64; dims];
            at[0] = s as u64;
            let key = arr.chunk_key(&at);
            let file = root.join(key.as_str());
            if !file.is_file() {
                return Err(store_err(
                    &file,
                    format!("shard {s} of {path} is missing (zarr would read it as zeros)"),
                ));
            }
            let (a, b) = meta.shard_range(s);
            let mut shape = arr.shape().to_vec();
            shape[0] = (b - a) as u64;
            let mut origin = vec![0u64; dims];
            origin[0] = a as u64;
            zarr::check_present(&arr, &origin, &shape, meta.presence(&path))?;
            if trusted.contains(&s) {
                continue;
            }
            let res = if path == "/views/params" && meta.view_spec.param_bytes() == 2 {
                zarr::read_block_unchecked::<u16>(&arr, &origin, &shape).map(|_| ())
            } else if path == "/views/params" || path.ends_with("/fold") {
                zarr::read_block_unchecked::<u8>(&arr, &origin, &shape).map(|_| ())
            } else if path == "/views/mix" {
                zarr::read_block_unchecked::<u32>(&arr, &origin, &shape).map(|_| ())
            } else if path.ends_with("/indices") {
                zarr::read_block_unchecked::<u16>(&arr, &origin, &shape).map(|_| ())
            } else if meta.dtype == Dtype::F16 {
                zarr::read_block_unchecked::<half::f16>(&arr, &origin, &shape).map(|_| ())
            } else {
                zarr::read_block_unchecked::<f32>(&arr, &origin, &shape).map(|_| ())
            };
            res.map_err(|e| store_err(&file, format!("shard {s} of {path} is corrupt: {e}")))?;
        }
    }
    Ok(())
}

pub(super) fn finalize_inner(out: &Path, trusted: &HashSet<usize>) -> Result<Manifest> {
    let root = store_dir(out);
    let meta = StoreMeta::read(&root)?;
    let missing: Vec<usize> = (0..meta.num_shards)
        .filter(|&s| !marker_path(out, s).is_file())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(8).map(|s| s.to_string()).collect();
        return Err(store_err(
            &root,
            format!(
                "{} of {} shards are not done (shards {}{}): run the missing `kd cache build --shard i/n` workers first",
                missing.len(),
                meta.num_shards,
                shown.join(", "),
                if missing.len() > 8 { ", ..." } else { "" }
            ),
        ));
    }
    check_shards(out, &meta, trusted)?;
    // `finalize` may run in another process and directory than the
    // workers: the lifecycle re-checks the inputs where the store recorded them.
    let stage = StageRun::new(STAGE, out, meta.key["config"].clone(), meta.inputs.clone());
    let info = zarr::describe(&root)?;
    let per_teacher: serde_json::Map<String, serde_json::Value> = meta
        .teachers
        .iter()
        .map(|t| {
            let b: u64 = info
                .iter()
                .filter(|a| a.path.starts_with(&format!("teachers/{}/", t.name)))
                .map(|a| a.stored_bytes)
                .sum();
            (
                t.name.clone(),
                json!((b as f64) / (meta.samples * meta.views).max(1) as f64),
            )
        })
        .collect();
    let mut metrics = json!({
        "samples": meta.samples,
        "views": meta.views,
        "classes": meta.num_classes,
        "dtype": meta.dtype,
        "top_k": meta.top_k,
        "teachers": meta.teachers.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "shards": meta.num_shards,
        "stored_bytes": info.iter().map(|a| a.stored_bytes).sum::<u64>(),
        "bytes_per_view_per_teacher": per_teacher,
    });
    // Only when used, so a plain store's manifest reads as it always did.
    if let Some(mix) = &meta.mix {
        metrics["mix"] = json!(mix);
    }
    let folds: serde_json::Map<String, serde_json::Value> = meta
        .teachers
        .iter()
        .filter_map(|t| t.folds.as_ref().map(|f| (t.name.clone(), json!(f.k))))
        .collect();
    if !folds.is_empty() {
        metrics["cross_fitted_folds"] = json!(folds);
    }
    let outputs = vec![OutputRef::of(out, crate::layout::STORE, false)?];
    let m = stage.seal(&[("views", meta.seed)], outputs, metrics)?;
    tracing::info!(out = %out.display(), shards = meta.num_shards, "logit cache finished");
    Ok(m)
}
