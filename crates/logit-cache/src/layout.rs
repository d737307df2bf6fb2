//! The store's layout and metadata: what `build` writes and every reader
//! trusts.
//!
//! ```text
//! <out>/logits.zarr/                 group; attrs: StoreMeta (class names, hashes, views, ...)
//!   views/params                     uint8  [samples, views, 3]  (dy, dx, flip)
//!   teachers/<name>/logits           f16|f32 [samples, views, classes]      (full form)
//!   teachers/<name>/values           f16|f32 [samples, views, k]  sorted    (top-k form)
//!   teachers/<name>/indices          uint16 [samples, views, k]
//! <out>/.shards/<shard>.done         written after the shard's data: resume skips it
//! <out>/manifest.json                written by finalize, last
//! ```
//!
//! Every array is sharded along samples (`shard_samples` per shard file,
//! `chunk_samples` per inner chunk), zstd-compressed and crc32c-checksummed.
//! Shard `s` covers samples `s*shard_samples ..` in every array, so one
//! worker owns one shard file per array and no two writers ever touch a file.

use crate::error::{CacheError, Result, store_err};
use kd_core::manifest::InputRef;
use kd_core::zarr::{self, Layout, Store, ZArray, data_type};
use kd_core::{ViewParams, ViewSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

pub const STAGE: &str = "cache";
pub const STORE: &str = "logits.zarr";
pub const MARKERS: &str = ".shards";
pub const FORMAT: &str = "kd-logit-cache/1";
/// What the reader puts in the classes a top-k store did not keep.
pub const TOPK_FILL: f32 = -1e4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = CacheError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" | "float16" => Ok(Dtype::F16),
            "f32" | "float32" => Ok(Dtype::F32),
            _ => Err(CacheError::Invalid(format!(
                "--dtype '{s}': expected f16 or f32"
            ))),
        }
    }
}

/// The `[cache]` section of a profile: every knob of a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Views per sample, view 0 being the plain image.
    pub views: usize,
    pub dtype: Dtype,
    /// Store only the k largest logits (values + uint16 indices).
    pub top_k: Option<usize>,
    /// Seed of the view generator.
    pub seed: u64,
    pub pad: u8,
    pub flip: bool,
    pub shard_samples: usize,
    pub chunk_samples: usize,
    pub zstd_level: i32,
    /// Views per teacher forward pass. Not part of the store's identity.
    pub batch_size: usize,
    /// `auto|cpu|cuda|cuda:N`. Not part of the store's identity.
    pub device: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            views: 8,
            dtype: Dtype::F16,
            top_k: None,
            seed: 0,
            pad: 2,
            flip: true,
            shard_samples: 1024,
            chunk_samples: 128,
            zstd_level: 3,
            batch_size: 256,
            device: "auto".into(),
        }
    }
}

impl CacheConfig {
    pub fn view_spec(&self) -> ViewSpec {
        ViewSpec {
            pad: self.pad,
            flip: self.flip,
        }
    }

    /// What determines the bytes of the store (batch size and device only
    /// change results within float rounding, so they are left out).
    pub fn identity(&self) -> Value {
        json!({
            "views": self.views,
            "dtype": self.dtype,
            "top_k": self.top_k,
            "seed": self.seed,
            "view_spec": self.view_spec(),
            "shard_samples": self.shard_samples,
            "chunk_samples": self.chunk_samples,
            "zstd_level": self.zstd_level,
        })
    }

    pub fn validate(&self, classes: usize) -> Result<()> {
        let bad = |m: String| Err(CacheError::Invalid(m));
        if self.views == 0 {
            return bad("--views must be at least 1 (view 0 is the plain image)".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if self.chunk_samples == 0
            || self.shard_samples == 0
            || !self.shard_samples.is_multiple_of(self.chunk_samples)
        {
            return bad(format!(
                "shard_samples ({}) must be a positive multiple of chunk_samples ({})",
                self.shard_samples, self.chunk_samples
            ));
        }
        if let Some(k) = self.top_k {
            if k == 0 || k > classes {
                return bad(format!(
                    "--top-k {k}: must be in 1..={classes} (the number of classes)"
                ));
            }
            if classes > u16::MAX as usize + 1 {
                return bad(format!(
                    "--top-k: {classes} classes do not fit uint16 indices"
                ));
            }
        }
        Ok(())
    }
}

/// One teacher as recorded in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherMeta {
    pub name: String,
    pub arch: String,
    pub checkpoint_hash: String,
    pub dataset_hash: String,
}

/// The root group's attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreMeta {
    pub format: String,
    pub note: String,
    pub class_names: Vec<String>,
    pub num_classes: usize,
    pub samples: usize,
    pub views: usize,
    pub dtype: Dtype,
    pub top_k: Option<usize>,
    pub seed: u64,
    pub view_spec: ViewSpec,
    pub view_params_fields: Vec<String>,
    pub shard_samples: usize,
    pub chunk_samples: usize,
    pub num_shards: usize,
    pub dataset_hash: String,
    pub teachers: Vec<TeacherMeta>,
    /// Inputs pinned by manifest hash; `finalize` pins them again from here.
    pub inputs: Vec<InputRef>,
    /// Identity of the store: config identity + input hashes. A store on
    /// disk with another key is never resumed into.
    pub key: Value,
}

pub fn store_key(cfg: &CacheConfig, inputs: &[InputRef]) -> Value {
    let ins: Vec<Value> = inputs
        .iter()
        .map(|i| json!({"role": i.role, "manifest_hash": i.manifest_hash}))
        .collect();
    json!({"config": cfg.identity(), "inputs": ins})
}

pub fn store_dir(out: &Path) -> PathBuf {
    out.join(STORE)
}

pub fn marker_path(out: &Path, shard: usize) -> PathBuf {
    out.join(MARKERS).join(format!("{shard:06}.done"))
}

pub fn marker_text(meta: &StoreMeta, shard: usize) -> String {
    let (a, b) = meta.shard_range(shard);
    format!("shard {shard} of {}: samples {a}..{b}\n", meta.num_shards)
}

impl StoreMeta {
    pub fn read(root: &Path) -> Result<StoreMeta> {
        if !root.join("zarr.json").is_file() {
            return Err(store_err(root, "not a logit store (no zarr.json)"));
        }
        let store = zarr::open_store(root)?;
        let attrs = zarr::group_attrs(&store, "/")?;
        let meta: StoreMeta = serde_json::from_value(Value::Object(attrs))
            .map_err(|e| store_err(root.join("zarr.json"), format!("not a logit store: {e}")))?;
        if meta.format != FORMAT {
            return Err(store_err(
                root.join("zarr.json"),
                format!("format '{}', expected '{FORMAT}'", meta.format),
            ));
        }
        Ok(meta)
    }

    pub fn shard_range(&self, shard: usize) -> (usize, usize) {
        let a = shard * self.shard_samples;
        (a, (a + self.shard_samples).min(self.samples))
    }

    /// Width of a teacher's stored rows: classes, or k.
    pub fn row_width(&self) -> usize {
        self.top_k.unwrap_or(self.num_classes)
    }

    /// Relative paths of every array in the store.
    pub fn array_paths(&self) -> Vec<String> {
        let mut v = vec!["/views/params".to_string()];
        for t in &self.teachers {
            if self.top_k.is_some() {
                v.push(format!("/teachers/{}/values", t.name));
                v.push(format!("/teachers/{}/indices", t.name));
            } else {
                v.push(format!("/teachers/{}/logits", t.name));
            }
        }
        v
    }

    fn layout(&self, width: usize, dim: &str) -> Layout {
        let (n, k) = (self.samples as u64, self.views as u64);
        Layout {
            shape: vec![n, k, width as u64],
            chunk: vec![self.shard_samples as u64, k, width as u64],
            subchunk: Some(vec![self.chunk_samples as u64, k, width as u64]),
            zstd_level: self.key["config"]["zstd_level"].as_i64().unwrap_or(3) as i32,
            dims: vec!["sample".into(), "view".into(), dim.into()],
        }
    }

    /// Write the group and array metadata of an empty store at `root`.
    pub fn create(&self, root: &Path) -> Result<()> {
        let store = zarr::open_store(root)?;
        let attrs = match serde_json::to_value(self).expect("meta serialises") {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        zarr::create_group(&store, "/", attrs)?;
        zarr::create_group(&store, "/views", Map::new())?;
        zarr::create_group(&store, "/teachers", Map::new())?;
        let fields = json!({"fields": ViewParams::FIELDS});
        zarr::create_array(
            &store,
            "/views/params",
            data_type::uint8(),
            0u8,
            &self.layout(ViewParams::LEN, "param"),
            fields.as_object().cloned().unwrap_or_default(),
        )?;
        let dt = || match self.dtype {
            Dtype::F16 => data_type::float16(),
            Dtype::F32 => data_type::float32(),
        };
        for t in &self.teachers {
            let a = json!({"arch": t.arch, "checkpoint_hash": t.checkpoint_hash, "note": "raw logits, no temperature"});
            let a = a.as_object().cloned().unwrap_or_default();
            zarr::create_group(&store, &format!("/teachers/{}", t.name), a)?;
            match self.top_k {
                None => {
                    self.float_array(
                        &store,
                        &format!("/teachers/{}/logits", t.name),
                        dt(),
                        "class",
                    )?;
                }
                Some(k) => {
                    self.float_array(
                        &store,
                        &format!("/teachers/{}/values", t.name),
                        dt(),
                        "rank",
                    )?;
                    zarr::create_array(
                        &store,
                        &format!("/teachers/{}/indices", t.name),
                        data_type::uint16(),
                        0u16,
                        &self.layout(k, "rank"),
                        Map::new(),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn float_array(
        &self,
        store: &Store,
        path: &str,
        dt: zarrs::array::DataType,
        dim: &str,
    ) -> Result<ZArray> {
        let layout = self.layout(self.row_width(), dim);
        Ok(match self.dtype {
            Dtype::F16 => {
                zarr::create_array(store, path, dt, half::f16::ZERO, &layout, Map::new())?
            }
            Dtype::F32 => zarr::create_array(store, path, dt, 0f32, &layout, Map::new())?,
        })
    }
}
