//! Thin helpers over zarrs: every Zarr v3 store of the pipeline (dataset,
//! logit cache) is made with these, so layouts and codecs stay uniform, and
//! `describe` summarises any store by reading its `zarr.json` files.

use crate::error::{CoreError, IoContext, Result};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::builder::ArrayBuilderFillValue;
use zarrs::array::codec::{Crc32cCodec, ZstdCodec};
use zarrs::array::{Array, ArrayBuilder, ArraySubset, DataType, Element, ElementOwned};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::{Group, GroupBuilder};

pub type Store = Arc<FilesystemStore>;
pub type ZArray = Array<FilesystemStore>;
pub use zarrs::array::data_type;

fn zerr(path: impl std::fmt::Display, e: impl std::fmt::Display) -> CoreError {
    CoreError::Zarr {
        path: path.to_string(),
        msg: e.to_string(),
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
        Arc::new(ZstdCodec::new(layout.zstd_level.into(), false)),
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

/// Write `data` into the block starting at `start` with `shape`.
pub fn write_block<T: Element>(a: &ZArray, start: &[u64], shape: &[u64], data: &[T]) -> Result<()> {
    let ranges: Vec<_> = start.iter().zip(shape).map(|(&s, &n)| s..s + n).collect();
    a.store_array_subset(&ArraySubset::new_with_ranges(&ranges), data)
        .map_err(|e| zerr(a.path(), e))
}

/// Read the block starting at `start` with `shape`, row-major.
pub fn read_block<T: ElementOwned>(a: &ZArray, start: &[u64], shape: &[u64]) -> Result<Vec<T>> {
    let ranges: Vec<_> = start.iter().zip(shape).map(|(&s, &n)| s..s + n).collect();
    a.retrieve_array_subset::<Vec<T>>(&ArraySubset::new_with_ranges(&ranges))
        .map_err(|e| zerr(a.path(), e))
}

pub fn read_all<T: ElementOwned>(a: &ZArray) -> Result<Vec<T>> {
    a.retrieve_array_subset::<Vec<T>>(&a.subset_all())
        .map_err(|e| zerr(a.path(), e))
}

/// Uncompressed over stored bytes (0 when nothing is stored yet).
pub fn compression_ratio(raw: u64, stored: u64) -> f64 {
    if stored > 0 {
        raw as f64 / stored as f64
    } else {
        0.0
    }
}

/// One array of a store, as `kd inspect` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ArrayInfo {
    pub path: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub chunk: Vec<u64>,
    pub shard: Option<Vec<u64>>,
    pub codecs: Vec<String>,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
    pub ratio: f64,
    pub files: u64,
}

fn itemsize(dtype: &str) -> u64 {
    match dtype {
        "bool" | "int8" | "uint8" => 1,
        "int16" | "uint16" | "float16" | "bfloat16" => 2,
        "int32" | "uint32" | "float32" => 4,
        _ => 8,
    }
}

fn codec_names(codecs: &Value) -> Vec<String> {
    codecs
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("?").to_string();
                    match name.as_str() {
                        "zstd" => format!("zstd({})", c["configuration"]["level"]),
                        "sharding_indexed" => {
                            format!(
                                "sharding[{}]",
                                codec_names(&c["configuration"]["codecs"]).join(", ")
                            )
                        }
                        _ => name,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn walk(dir: &Path, files: &mut u64, bytes: &mut u64) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files, bytes);
            } else if p.file_name().is_some_and(|n| n != "zarr.json") {
                *files += 1;
                *bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
}

/// Every array under a Zarr v3 store, sorted by path.
pub fn describe(root: &Path) -> Result<Vec<ArrayInfo>> {
    let mut out = vec![];
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let meta = dir.join("zarr.json");
        if !meta.is_file() {
            continue;
        }
        let v: Value = crate::manifest::read_json(&meta)?;
        match v["node_type"].as_str() {
            Some("group") => {
                for e in std::fs::read_dir(&dir).at(&dir)?.flatten() {
                    if e.path().is_dir() {
                        stack.push(e.path());
                    }
                }
            }
            Some("array") => {
                let shape: Vec<u64> =
                    serde_json::from_value(v["shape"].clone()).unwrap_or_default();
                let dtype = v["data_type"].as_str().unwrap_or("?").to_string();
                let chunk: Vec<u64> =
                    serde_json::from_value(v["chunk_grid"]["configuration"]["chunk_shape"].clone())
                        .unwrap_or_default();
                let sharding = v["codecs"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == "sharding_indexed"));
                let (chunk, shard) = match sharding {
                    Some(s) => (
                        serde_json::from_value(s["configuration"]["chunk_shape"].clone())
                            .unwrap_or_default(),
                        Some(chunk),
                    ),
                    None => (chunk, None),
                };
                let (mut files, mut stored) = (0, 0);
                walk(&dir, &mut files, &mut stored);
                let raw = shape.iter().product::<u64>() * itemsize(&dtype);
                out.push(ArrayInfo {
                    path: dir
                        .strip_prefix(root)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    shape,
                    dtype,
                    chunk,
                    shard,
                    codecs: codec_names(&v["codecs"]),
                    stored_bytes: stored,
                    raw_bytes: raw,
                    ratio: compression_ratio(raw, stored),
                    files,
                });
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_round_trip_and_describe() {
        let t = tempfile::tempdir().unwrap();
        let store = open_store(t.path()).unwrap();
        create_group(&store, "/", Map::new()).unwrap();
        let layout = Layout {
            shape: vec![10, 3],
            chunk: vec![4, 3],
            subchunk: Some(vec![2, 3]),
            zstd_level: 3,
            dims: vec!["sample".into(), "class".into()],
        };
        let a = create_array(
            &store,
            "/x",
            data_type::float32(),
            0f32,
            &layout,
            Map::new(),
        )
        .unwrap();
        let data: Vec<f32> = (0..30).map(|i| i as f32 * 0.5).collect();
        write_block(&a, &[0, 0], &[10, 3], &data).unwrap();
        let a = open_array(&store, "/x").unwrap();
        assert_eq!(read_all::<f32>(&a).unwrap(), data);
        assert_eq!(
            read_block::<f32>(&a, &[4, 1], &[2, 2]).unwrap(),
            vec![6.5, 7.0, 8.0, 8.5]
        );
        let info = describe(t.path()).unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].path, "x");
        assert_eq!(info[0].shard, Some(vec![4, 3]));
        assert_eq!(info[0].chunk, vec![2, 3]);
        assert_eq!(info[0].files, 3);
        assert_eq!(info[0].raw_bytes, 120);
    }
}
