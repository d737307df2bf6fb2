//! Thin helpers over zarrs: every Zarr v3 store of the pipeline (dataset,
//! logit cache) is made with these, so layouts and codecs stay uniform, and
//! `describe` summarises any store by reading its `zarr.json` files.
//!
//! Zarr reads an absent chunk as the fill value, so a deleted chunk or shard
//! file would silently become zeros. Every artifact knows its shape, so its
//! readers know which chunks must exist: [`read_block`] and [`read_all`]
//! refuse a block that touches an absent chunk file or an inner chunk absent
//! from its shard's index, naming the file, the array and the chunk. The
//! writer stores all-fill chunks too ([`write_block`]), so a complete artifact
//! has every chunk file. An all-fill inner chunk of a shard is always left
//! out by the sharding codec, so for sharded arrays whose data may hold such
//! a chunk the reader asks for chunk files only ([`Presence::Chunks`]).

mod describe;

pub use describe::{ArrayInfo, describe};

use crate::error::{CoreError, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;
use zarrs::array::builder::ArrayBuilderFillValue;
use zarrs::array::codec::ShardingCodec;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::{
    Array, ArrayBuilder, ArrayShardedExt, ArraySubset, CodecOptions, DataType, Element,
    ElementOwned,
};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::{Group, GroupBuilder};
use zarrs::storage::ReadableStorageTraits;
use zarrs::storage::byte_range::ByteRange;

pub type Store = Arc<FilesystemStore>;
pub type ZArray = Array<FilesystemStore>;
pub use zarrs::array::data_type;

/// A zarrs error (or what kd found wrong) at `path`, kept as the source.
fn zerr(
    path: impl std::fmt::Display,
    e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
) -> CoreError {
    CoreError::Zarr {
        path: path.to_string(),
        source: e.into(),
    }
}

pub fn open_store(path: &Path) -> Result<Store> {
    FilesystemStore::new(path)
        .map(Arc::new)
        .map_err(|e| zerr(path.display(), e))
}

/// Create (or overwrite the metadata of) a group with attributes.
pub fn create_group(store: &Store, path: &str, attrs: Map<String, Value>) -> Result<()> {
    let mut g = GroupBuilder::new()
        .build(store.clone(), path)
        .map_err(|e| zerr(path, e))?;
    *g.attributes_mut() = attrs;
    g.store_metadata().map_err(|e| zerr(path, e))
}

pub fn group_attrs(store: &Store, path: &str) -> Result<Map<String, Value>> {
    let g = Group::open(store.clone(), path).map_err(|e| zerr(path, e))?;
    Ok(g.attributes().clone())
}

/// How an array is laid out: `chunk` is the shard shape when `subchunk` is set.
#[derive(Clone, Debug)]
pub struct Layout {
    pub shape: Vec<u64>,
    pub chunk: Vec<u64>,
    pub subchunk: Option<Vec<u64>>,
    pub zstd_level: i32,
    pub dims: Vec<String>,
}

/// Create an array (zstd-compressed, crc32c-checksummed) and store its metadata.
pub fn create_array(
    store: &Store,
    path: &str,
    dtype: DataType,
    fill: impl Into<ArrayBuilderFillValue>,
    layout: &Layout,
    attrs: Map<String, Value>,
) -> Result<ZArray> {
    let mut b = ArrayBuilder::new(layout.shape.clone(), layout.chunk.clone(), dtype, fill);
    b.bytes_to_bytes_codecs(vec![
        Arc::new(ZstdCodec::new(layout.zstd_level, false)),
        Arc::new(Crc32cCodec::new()),
    ]);
    if let Some(sub) = &layout.subchunk {
        b.subchunk_shape(sub.clone());
    }
    if !layout.dims.is_empty() {
        b.dimension_names(Some(layout.dims.clone()));
    }
    b.attributes(attrs);
    let a = b.build(store.clone(), path).map_err(|e| zerr(path, e))?;
    a.store_metadata().map_err(|e| zerr(path, e))?;
    Ok(a)
}

pub fn open_array(store: &Store, path: &str) -> Result<ZArray> {
    Array::open(store.clone(), path).map_err(|e| zerr(path, e))
}

fn subset(start: &[u64], shape: &[u64]) -> ArraySubset {
    let ranges: Vec<_> = start.iter().zip(shape).map(|(&s, &n)| s..s + n).collect();
    ArraySubset::new_with_ranges(&ranges)
}

/// Write `data` into the block starting at `start` with `shape`. Chunks that
/// are all fill value are stored too, so that a reader can tell a deleted
/// chunk file from a chunk of zeros.
pub fn write_block<T: Element>(a: &ZArray, start: &[u64], shape: &[u64], data: &[T]) -> Result<()> {
    let opts = CodecOptions::default().with_store_empty_chunks(true);
    a.store_array_subset_opt(&subset(start, shape), data, &opts)
        .map_err(|e| zerr(a.path(), e))
}

/// Which absent chunks a read refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Every chunk file, and every inner chunk of a shard: data that can
    /// never be all fill value over an inner chunk (logits, images).
    All,
    /// Every chunk (shard) file only: the sharding codec leaves out inner
    /// chunks that are all fill value, and this array may hold one (flags,
    /// indices, rows of zeros that mean "unmixed").
    Chunks,
}

/// Refuse a block that would read fill values in place of data: every chunk
/// file it touches must exist and, with [`Presence::All`], every inner chunk
/// it touches must be in its shard's index. Costs a `stat` per chunk file
/// and one index read per shard.
pub fn check_present(a: &ZArray, start: &[u64], shape: &[u64], presence: Presence) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    let block = subset(start, shape);
    let storage = a.storage();
    let file = |idx: &[u64]| storage.key_to_fspath(&a.chunk_key(idx));
    // Rows (first dimension) of chunk `i` of `per` rows: what the chunk holds.
    let rows = |i: u64, per: u64| {
        let n = a.shape().first().copied().unwrap_or(0);
        format!("rows {}..{}", i * per, ((i + 1) * per).min(n))
    };
    let dims = a.shape().len();
    let chunk_shape: Vec<u64> = a
        .chunk_shape(&vec![0; dims])
        .map_err(|e| zerr(a.path(), e))?
        .iter()
        .map(|c| c.get())
        .collect();
    let chunks = a
        .chunks_in_array_subset(&block)
        .map_err(|e| zerr(a.path(), e))?
        .ok_or_else(|| zerr(a.path(), "cannot tell which chunks a block touches"))?;
    for idx in &chunks.indices() {
        let found = storage
            .size_key(&a.chunk_key(&idx))
            .map_err(|e| zerr(a.path(), e))?;
        if found.is_none() {
            return Err(CoreError::MissingChunk {
                file: file(&idx),
                what: format!(
                    "chunk {:?} of array {} ({})",
                    idx.as_slice(),
                    a.path(),
                    rows(idx[0], chunk_shape[0])
                ),
            });
        }
    }
    let Some(sub_shape) = a.subchunk_shape() else {
        return Ok(());
    };
    if presence == Presence::Chunks {
        return Ok(());
    }
    let sub_shape: Vec<u64> = sub_shape.iter().map(|s| s.get()).collect();
    let per_shard: Vec<u64> = chunk_shape
        .iter()
        .zip(&sub_shape)
        .map(|(c, s)| c / s)
        .collect();
    let subs = a
        .subchunk_grid()
        .chunks_in_array_subset(&block)
        .map_err(|e| zerr(a.path(), e))?
        .ok_or_else(|| zerr(a.path(), "cannot tell which inner chunks a block touches"))?;
    let mut indexes: HashMap<Vec<u64>, Vec<u64>> = HashMap::new();
    for idx in &subs.indices() {
        let shard: Vec<u64> = idx.iter().zip(&per_shard).map(|(i, n)| i / n).collect();
        if !indexes.contains_key(&shard) {
            let index = shard_index(a, &shard, &per_shard).map_err(|msg| {
                zerr(
                    file(&shard).display(),
                    format!("shard index unreadable: {msg}"),
                )
            })?;
            indexes.insert(shard.clone(), index);
        }
        // C order of the inner chunk inside its shard; (MAX, MAX) marks it absent.
        let local = idx
            .iter()
            .zip(&per_shard)
            .fold(0u64, |acc, (i, n)| acc * n + i % n) as usize;
        let index = &indexes[&shard];
        if index.get(2 * local..2 * local + 2) == Some(&[u64::MAX, u64::MAX]) {
            return Err(CoreError::MissingChunk {
                file: file(&shard),
                what: format!(
                    "inner chunk {:?} of array {} ({}, absent from its shard's index)",
                    idx.as_slice(),
                    a.path(),
                    rows(idx[0], sub_shape[0])
                ),
            });
        }
    }
    Ok(())
}

/// The decoded index of shard `shard`: (offset, size) per inner chunk in C
/// order. Reads only the index when it sits at the end of the file (what
/// [`create_array`] writes), else the whole shard.
fn shard_index(a: &ZArray, shard: &[u64], per_shard: &[u64]) -> Result<Vec<u64>, String> {
    let codec = a.codecs();
    let Some(sharding) = codec
        .array_to_bytes_codec()
        .as_any()
        .downcast_ref::<ShardingCodec>()
    else {
        return Err("its sharding codec is not its array-to-bytes codec".into());
    };
    // Zarr's default, and what `create_array` writes, is an index at the end.
    let meta = serde_json::to_value(a.metadata()).unwrap_or_default();
    let at_end = meta["codecs"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "sharding_indexed"))
        .is_none_or(|c| c["configuration"]["index_location"] != "start");
    let key = a.chunk_key(shard);
    let storage = a.storage();
    let n: u64 = per_shard.iter().product();
    // The index is 16 bytes per inner chunk plus its codecs' few bytes (crc32c: 4).
    let bytes = if at_end {
        let size = storage
            .size_key(&key)
            .map_err(|e| e.to_string())?
            .ok_or("shard file vanished")?;
        storage.get_partial(&key, ByteRange::Suffix(size.min(16 * n + 64)))
    } else {
        storage.get(&key)
    }
    .map_err(|e| e.to_string())?
    .ok_or("shard file vanished")?;
    let per: Vec<NonZeroU64> = per_shard
        .iter()
        .map(|&x| NonZeroU64::new(x).ok_or("empty shard shape"))
        .collect::<Result<_, _>>()?;
    sharding
        .decode_index(&bytes, &per, &CodecOptions::default())
        .map_err(|e| e.to_string())
}

/// Read the block starting at `start` with `shape`, row-major, refusing
/// absent chunks ([`check_present`] with [`Presence::All`]).
pub fn read_block<T: ElementOwned>(a: &ZArray, start: &[u64], shape: &[u64]) -> Result<Vec<T>> {
    check_present(a, start, shape, Presence::All)?;
    read_block_unchecked(a, start, shape)
}

/// Read a block whose chunks the caller has already checked with
/// [`check_present`] (a reader that checks a whole array once, then reads
/// it chunk by chunk).
pub fn read_block_unchecked<T: ElementOwned>(
    a: &ZArray,
    start: &[u64],
    shape: &[u64],
) -> Result<Vec<T>> {
    a.retrieve_array_subset::<Vec<T>>(&subset(start, shape))
        .map_err(|e| zerr(a.path(), e))
}

/// The whole array, refusing absent chunks.
pub fn read_all<T: ElementOwned>(a: &ZArray) -> Result<Vec<T>> {
    let shape = a.shape().to_vec();
    read_block(a, &vec![0; shape.len()], &shape)
}

/// The whole array's shape as a block: `(origin, shape)`.
pub fn whole(a: &ZArray) -> (Vec<u64>, Vec<u64>) {
    (vec![0; a.shape().len()], a.shape().to_vec())
}

/// Uncompressed over stored bytes (0 when nothing is stored yet).
pub fn compression_ratio(raw: u64, stored: u64) -> f64 {
    if stored > 0 {
        raw as f64 / stored as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
