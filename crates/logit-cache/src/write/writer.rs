//! The writer thread's side: one shard's arrays encoded and stored, then its
//! done-marker.

use crate::error::{Result, io_err};
use crate::layout::{Dtype, StoreMeta, marker_path, marker_text};
use kd_core::MixParams;
use kd_core::zarr::{self, ZArray};
use std::path::Path;

/// Open an array for writing with subchunks laid out in C order: zarrs'
/// default places them in completion order of its parallel encoder, which
/// would make shard files differ from run to run.
pub(super) fn open_for_write(store: &kd_core::zarr::Store, path: &str) -> Result<ZArray> {
    use zarrs::array::CodecSpecificOptions;
    use zarrs::array::codec::array_to_bytes::sharding::{ShardingCodecOptions, SubchunkWriteOrder};
    let opts = CodecSpecificOptions::default().with_option(
        ShardingCodecOptions::default().with_subchunk_write_order(SubchunkWriteOrder::C),
    );
    Ok(zarr::open_array(store, path)?.with_codec_specific_options(&opts))
}

/// One shard's results, on their way to the writer.
pub(super) struct ShardData {
    pub(super) shard: usize,
    /// `views/params` rows, widened to u16 (see `ViewSpec::encode`).
    pub(super) params: Vec<u16>,
    /// `views/mix` rows; empty when the store does not mix.
    pub(super) mix: Vec<u32>,
    /// Per teacher: the shard's fold assignment, for cross-fitted teachers.
    pub(super) folds: Vec<Option<Vec<u8>>>,
    /// Per teacher: the rows (full logits or top-k values), f32.
    pub(super) rows: Vec<Vec<f32>>,
    /// Per teacher, top-k only: class indices.
    pub(super) indices: Vec<Vec<i64>>,
}

fn write_floats(
    a: &ZArray,
    dtype: Dtype,
    start: &[u64],
    shape: &[u64],
    rows: &[f32],
) -> Result<()> {
    match dtype {
        Dtype::F16 => {
            let h: Vec<half::f16> = rows.iter().map(|&x| half::f16::from_f32(x)).collect();
            zarr::write_block(a, start, shape, &h)?
        }
        Dtype::F32 => zarr::write_block(a, start, shape, rows)?,
    }
    Ok(())
}

pub(super) fn write_shard(
    out: &Path,
    meta: &StoreMeta,
    params: &ZArray,
    mix: Option<&ZArray>,
    arrays: &[(ZArray, Option<ZArray>)],
    folds: &[Option<ZArray>],
    d: &ShardData,
) -> Result<()> {
    let (a, b) = meta.shard_range(d.shard);
    let (n, k) = ((b - a) as u64, meta.views as u64);
    let start = [a as u64, 0, 0];
    let shape = [n, k, meta.view_spec.param_fields().len() as u64];
    match meta.view_spec.param_bytes() {
        // Pad-crop values are at most 2 * pad <= 254: they fit.
        1 => {
            let narrow: Vec<u8> = d.params.iter().map(|&v| v as u8).collect();
            zarr::write_block(params, &start, &shape, &narrow)?
        }
        _ => zarr::write_block(params, &start, &shape, &d.params)?,
    }
    if let Some(m) = mix {
        zarr::write_block(m, &start, &[n, k, MixParams::LEN as u64], &d.mix)?;
    }
    let w = meta.row_width() as u64;
    for (ti, (vals, idx)) in arrays.iter().enumerate() {
        write_floats(vals, meta.dtype, &start, &[n, k, w], &d.rows[ti])?;
        if let Some(ia) = idx {
            let ind: Vec<u16> = d.indices[ti].iter().map(|&i| i as u16).collect();
            zarr::write_block(ia, &start, &[n, k, w], &ind)?;
        }
        if let (Some(fa), Some(f)) = (&folds[ti], &d.folds[ti]) {
            zarr::write_block(fa, &[a as u64], &[n], f)?;
        }
    }
    let m = marker_path(out, d.shard);
    let tmp = m.with_extension("tmp");
    std::fs::write(&tmp, marker_text(meta, d.shard)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &m).map_err(io_err(&m))?;
    tracing::debug!(shard = d.shard, "shard written");
    Ok(())
}
