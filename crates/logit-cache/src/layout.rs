//! The store's layout and metadata: what `build` writes and every reader
//! trusts.
//!
//! ```text
//! <out>/logits.zarr/                 group; attrs: StoreMeta (class names, hashes, views, ...)
//!   views/params                     uint8  [samples, views, 3]  (dy, dx, flip)
//!   views/mix                        uint32 [samples, views, 7]  (kind, partner, lam_q, y0, x0, h, w); only with mixing
//!   teachers/<name>/logits           f16|f32 [samples, views, classes]      (full form)
//!   teachers/<name>/values           f16|f32 [samples, views, k]  sorted    (top-k form)
//!   teachers/<name>/indices          uint16 [samples, views, k]
//!   teachers/<name>/fold             uint8  [samples]  held-out fold; only for a cross-fitted teacher
//! <out>/.shards/<shard>.done         written after the shard's data: resume skips it
//! <out>/.build.lock                  held by the build writing the store
//! <out>/manifest.json                written by finalize, last
//! ```
//!
//! Every array is sharded along samples (`shard_samples` per shard file,
//! `chunk_samples` per inner chunk), zstd-compressed and crc32c-checksummed.
//! Shard `s` covers samples `s*shard_samples ..` in every array, so one
//! worker owns one shard file per array and no two writers ever touch a file.
//!
//! Mixing and cross-fitting are optional in the metadata (`mix`, a teacher's
//! `folds`) and absent when off, so a store without them has the same
//! attributes, key and bytes as before either existed.
//!
//! `views/mix` is one uint32 array rather than a uint32 partner column beside
//! a uint16 rest: a reader gets a view's mixing in one read, zarr-python sees
//! one array with named fields, and zstd turns the all-zero rows of unmixed
//! views (and the zero high halves) into almost nothing.

use crate::config::CacheConfig;
use crate::error::{Result, store_err};
use kd_core::manifest::InputRef;
use kd_core::zarr::{self, Layout, Store, ZArray, data_type};
use kd_core::{MixParams, MixSpec, ViewSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

pub const STAGE: &str = "cache";
pub const STORE: &str = "logits.zarr";
pub const MARKERS: &str = ".shards";
/// Build lock (see `write::build`): never removed, so every process locks
/// the same file.
pub const LOCK: &str = ".build.lock";
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

/// The size of a store before compression, as a formula: a store of N
/// images, K views and T teachers holds `N * K * (T * row + view) + N * folds`
/// bytes, where `row` is one (sample, view, teacher) row of logits, `view`
/// the view's parameters (and mixing), `folds` one byte per cross-fitted
/// teacher. zstd then takes off what the data allow (`kd cache inspect`
/// shows the measured ratio).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SizeModel {
    pub row: usize,
    pub view: usize,
    pub folds: usize,
}

impl SizeModel {
    /// Bytes of one (sample, view, teacher) row: C values, or k values and
    /// their uint16 class indices.
    pub fn row_bytes(classes: usize, dtype: Dtype, top_k: Option<usize>) -> usize {
        match top_k {
            None => classes * dtype.bytes(),
            Some(k) => k * (dtype.bytes() + 2),
        }
    }

    pub fn of(meta: &StoreMeta) -> SizeModel {
        let spec = &meta.view_spec;
        let mix = if meta.mix.is_some() {
            4 * MixParams::LEN
        } else {
            0
        };
        SizeModel {
            row: Self::row_bytes(meta.num_classes, meta.dtype, meta.top_k),
            view: spec.param_fields().len() * spec.param_bytes() + mix,
            folds: meta.teachers.iter().filter(|t| t.folds.is_some()).count(),
        }
    }

    /// Raw bytes of a store of `n` images, `k` views, `teachers` teachers.
    pub fn bytes(&self, n: u64, k: u64, teachers: u64) -> u64 {
        n * k * (teachers * self.row as u64 + self.view as u64) + n * self.folds as u64
    }
}

/// A cross-fitted teacher's folds as recorded in the store (the per-sample
/// assignment is the `teachers/<name>/fold` array).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldsMeta {
    pub k: usize,
    /// blake3 of each fold model's weights file, in fold order.
    pub checkpoint_hashes: Vec<String>,
}

/// One teacher as recorded in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherMeta {
    pub name: String,
    pub arch: String,
    pub checkpoint_hash: String,
    pub dataset_hash: String,
    /// Present only for a cross-fitted teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<FoldsMeta>,
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
    /// How views are mixed; absent (and `views/mix` too) without mixing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixSpec>,
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
        if self.mix.is_some() {
            v.push("/views/mix".into());
        }
        for t in &self.teachers {
            if self.top_k.is_some() {
                v.push(format!("/teachers/{}/values", t.name));
                v.push(format!("/teachers/{}/indices", t.name));
            } else {
                v.push(format!("/teachers/{}/logits", t.name));
            }
            if t.folds.is_some() {
                v.push(format!("/teachers/{}/fold", t.name));
            }
        }
        v
    }

    /// Which absent chunks a reader of array `path` refuses. Every shard
    /// file must exist; the sharding codec leaves out an inner chunk that is
    /// all zeros, which logits never are, nor view parameters when views are
    /// padded (view 0 is `(pad, pad, 0)`) or resized (view 0's box has the
    /// image's size), but mixing rows (unmixed views are
    /// zeros), top-k indices (class 0) and folds (fold 0) may be.
    pub fn presence(&self, path: &str) -> zarr::Presence {
        let dense = path.ends_with("/logits")
            || path.ends_with("/values")
            || (path == "/views/params"
                && (self.view_spec.pad > 0 || self.view_spec.resized_crop.is_some()));
        if dense {
            zarr::Presence::All
        } else {
            zarr::Presence::Chunks
        }
    }

    fn zstd_level(&self) -> i32 {
        self.key["config"]["zstd_level"].as_i64().unwrap_or(3) as i32
    }

    fn layout(&self, width: usize, dim: &str) -> Layout {
        let (n, k) = (self.samples as u64, self.views as u64);
        Layout {
            shape: vec![n, k, width as u64],
            chunk: vec![self.shard_samples as u64, k, width as u64],
            subchunk: Some(vec![self.chunk_samples as u64, k, width as u64]),
            zstd_level: self.zstd_level(),
            dims: vec!["sample".into(), "view".into(), dim.into()],
        }
    }

    /// One value per sample, sharded like the `[samples, views, ..]` arrays.
    fn sample_layout(&self) -> Layout {
        Layout {
            shape: vec![self.samples as u64],
            chunk: vec![self.shard_samples as u64],
            subchunk: Some(vec![self.chunk_samples as u64]),
            zstd_level: self.zstd_level(),
            dims: vec!["sample".into()],
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
        let spec = &self.view_spec;
        let fields = json!({"fields": spec.param_fields(), "crop": spec.crop().name()});
        let params = self.layout(spec.param_fields().len(), "param");
        let attrs = fields.as_object().cloned().unwrap_or_default();
        match spec.param_bytes() {
            1 => zarr::create_array(
                &store,
                "/views/params",
                data_type::uint8(),
                0u8,
                &params,
                attrs,
            )?,
            _ => zarr::create_array(
                &store,
                "/views/params",
                data_type::uint16(),
                0u16,
                &params,
                attrs,
            )?,
        };
        if self.mix.is_some() {
            let a = json!({
                "fields": MixParams::FIELDS,
                "note": "kind 0 none, 1 mixup (lambda = lam_q / 65535 on the own view), 2 cutmix (the partner's pixels in rows y0..y0+h, columns x0..x0+w); the partner is taken at its own views/params of the same view index",
            });
            zarr::create_array(
                &store,
                "/views/mix",
                data_type::uint32(),
                0u32,
                &self.layout(MixParams::LEN, "param"),
                a.as_object().cloned().unwrap_or_default(),
            )?;
        }
        let dt = || match self.dtype {
            Dtype::F16 => data_type::float16(),
            Dtype::F32 => data_type::float32(),
        };
        for t in &self.teachers {
            let mut a = json!({"arch": t.arch, "checkpoint_hash": t.checkpoint_hash, "note": "raw logits, no temperature"});
            if let Some(f) = &t.folds {
                a["folds"] = json!(f.k);
                a["note"] = json!(
                    "raw logits, no temperature; cross-fitted: each sample's logits come from the fold model that never saw it (fold)"
                );
            }
            let a = a.as_object().cloned().unwrap_or_default();
            zarr::create_group(&store, &format!("/teachers/{}", t.name), a)?;
            if t.folds.is_some() {
                zarr::create_array(
                    &store,
                    &format!("/teachers/{}/fold", t.name),
                    data_type::uint8(),
                    0u8,
                    &self.sample_layout(),
                    Map::new(),
                )?;
            }
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

#[cfg(test)]
mod tests;
