//! What opening a store reads and checks: the view parameters, every
//! array's presence, the inputs' current places; and the f16 / f32 reads.

use crate::error::{Result, store_err};
use crate::layout::{Dtype, StoreMeta};
use kd_core::manifest::Manifest;
use kd_core::zarr::{self, ZArray};
use std::path::Path;

pub(super) fn read_floats(
    a: &ZArray,
    dtype: Dtype,
    start: &[u64],
    shape: &[u64],
) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F16 => zarr::read_block_unchecked::<half::f16>(a, start, shape)?
            .into_iter()
            .map(f32::from)
            .collect(),
        Dtype::F32 => zarr::read_block_unchecked::<f32>(a, start, shape)?,
    })
}

/// Point each recorded input at where it is now, seen from the store in
/// `dir` (the manifest's copy of an input also knows its path relative to
/// the store); an input that cannot be found keeps its recorded path.
pub(super) fn locate_inputs(meta: &mut StoreMeta, manifest: &Manifest, dir: &Path) {
    for i in &mut meta.inputs {
        if let Some(m) = manifest.inputs.iter().find(|m| m.role == i.role) {
            i.rel.clone_from(&m.rel);
        }
        match i.locate(dir) {
            Ok(p) => i.path = p,
            Err(e) => tracing::debug!("{e}"),
        }
    }
}

/// Every row of `views/params`, widened to u16: uint8 (dy, dx, flip) in a
/// pad-crop store, uint16 (y, x, h, w, flip) in a resized-crop one. A
/// resized-crop box outside the image is refused here, so readers can crop
/// with it safely.
pub(super) fn read_params(root: &Path, store: &zarr::Store, meta: &StoreMeta) -> Result<Vec<u16>> {
    let spec = &meta.view_spec;
    let arr = zarr::open_array(store, "/views/params")?;
    let shape = [
        meta.samples as u64,
        meta.views as u64,
        spec.param_fields().len() as u64,
    ];
    if arr.shape() != shape {
        return Err(store_err(
            root.join("views/params"),
            format!(
                "shape {:?}, expected {shape:?} for {} views ({})",
                arr.shape(),
                spec.crop().name(),
                spec.param_fields().join(", ")
            ),
        ));
    }
    Ok(match spec.param_bytes() {
        1 => zarr::read_block_unchecked::<u8>(&arr, &[0, 0, 0], &shape)?
            .into_iter()
            .map(u16::from)
            .collect(),
        _ => zarr::read_block_unchecked::<u16>(&arr, &[0, 0, 0], &shape)?,
    })
}

/// Refuse a store with an absent shard file or a missing inner chunk.
pub(super) fn check_arrays(store: &zarr::Store, meta: &StoreMeta) -> Result<()> {
    for path in meta.array_paths() {
        let a = zarr::open_array(store, &path)?;
        let (origin, shape) = zarr::whole(&a);
        zarr::check_present(&a, &origin, &shape, meta.presence(&path))?;
    }
    Ok(())
}
