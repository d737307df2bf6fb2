//! `describe`: every array of a store, read from its `zarr.json` files
//! alone (shape, dtype, chunks, codecs, stored bytes), for `kd inspect`.

use super::compression_ratio;
use crate::error::{IoContext, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

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
