//! The dataset artifact: `dataset.zarr` plus `manifest.json`.
//!
//! ```text
//! dataset.zarr/            group; attrs: class_names, mean, std, chw, splits, source
//!   <split>/images         uint8  [N, C, H, W]
//!   <split>/labels         uint16 [N]
//!   <split>/origin         string [N]   where each sample came from (`crate::origin`)
//! ```

use crate::error::{DataError, Result};
use crate::origin::OriginKind;
use crate::pixels::{ChunkedImages, Pixels};
use crate::split::{Split, Traced};
use kd_core::InputError;
use kd_core::manifest::{Manifest, manifest_hash};
use kd_core::zarr::{self, Layout, data_type};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const STAGE: &str = "data";
pub const STORE: &str = "dataset.zarr";

/// Running per-channel sums of pixel values in [0, 1], fed image by image
/// in sample order (so a split written chunk by chunk has the same
/// statistics, to the bit, as one summed whole).
struct ChannelStats {
    sum: Vec<f64>,
    sq: Vec<f64>,
    pixels: usize,
}

impl ChannelStats {
    fn new(c: usize) -> ChannelStats {
        ChannelStats {
            sum: vec![0.0; c],
            sq: vec![0.0; c],
            pixels: 0,
        }
    }

    fn add(&mut self, images: &[u8], chw: [usize; 3]) {
        let [c, h, w] = chw;
        let hw = h * w;
        for img in images.chunks_exact(c * hw) {
            for ch in 0..c {
                for &v in &img[ch * hw..(ch + 1) * hw] {
                    let x = v as f64 / 255.0;
                    self.sum[ch] += x;
                    self.sq[ch] += x * x;
                }
            }
            self.pixels += hw;
        }
    }

    fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.pixels.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std = self
            .sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| ((q / n - m * m).max(1e-12)).sqrt() as f32)
            .collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }
}

/// Write the splits to `out/dataset.zarr` without origins (synthetic data
/// sets, which have no source to trace back to); returns the group
/// attributes (the caller writes the manifest).
pub fn write_dataset(
    out: &Path,
    splits: &[(String, Split)],
    class_names: &[String],
    source: &str,
) -> Result<Map<String, Value>> {
    let parts: Vec<Part> = splits.iter().map(|(n, s)| (n.as_str(), s, None)).collect();
    write(out, &parts, class_names, source)
}

/// Write imported splits with each sample's origin (`<split>/origin`, of
/// `kind`); returns the group attributes (the caller writes the manifest).
pub fn write_traced(
    out: &Path,
    splits: &[(String, Traced)],
    kind: OriginKind,
    class_names: &[String],
    source: &str,
) -> Result<Map<String, Value>> {
    let parts: Vec<Part> = splits
        .iter()
        .map(|(n, t)| (n.as_str(), &t.split, Some((t.origin.as_slice(), kind))))
        .collect();
    write(out, &parts, class_names, source)
}

/// A split to write: its name, samples and, when traced, their origins.
type Part<'a> = (&'a str, &'a Split, Option<(&'a [String], OriginKind)>);

fn write(
    out: &Path,
    splits: &[Part],
    class_names: &[String],
    source: &str,
) -> Result<Map<String, Value>> {
    for &(name, s, origin) in splits {
        if let Some((o, _)) = origin
            && o.len() != s.len()
        {
            return Err(InputError::mismatch(
                out.join(STORE),
                format!("split '{name}' samples"),
                s.len(),
                "its origins",
                o.len(),
            )
            .into());
        }
    }
    let root = out.join(STORE);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(crate::error::io_err(&root))?;
    }
    std::fs::create_dir_all(&root).map_err(crate::error::io_err(&root))?;
    if !splits.iter().any(|(n, _, _)| *n == "train") {
        return Err(
            InputError::not_found(&root, "split", "train", splits.iter().map(|p| p.0)).into(),
        );
    }
    let store = zarr::open_store(&root)?;
    // The group's attributes need the train split's statistics, gathered
    // while it is written: a placeholder group first, the real one last.
    zarr::create_group(&store, "/", Map::new())?;
    let mut stats = None;
    for &(name, s, origin) in splits {
        zarr::create_group(&store, &format!("/{name}"), Map::new())?;
        let [c, h, w] = s.chw.map(|x| x as u64);
        let n = s.len() as u64;
        let chunk = crate::pixels::chunk_images(s.image_len(), s.len()) as u64;
        let images = zarr::create_array(
            &store,
            &format!("/{name}/images"),
            data_type::uint8(),
            0u8,
            &Layout {
                shape: vec![n, c, h, w],
                chunk: vec![chunk, c, h, w],
                subchunk: None,
                zstd_level: 3,
                dims: ["sample", "channel", "y", "x"].map(String::from).to_vec(),
            },
            Map::new(),
        )?;
        // Chunk by chunk: an import holds one chunk of decoded images.
        let mut st = ChannelStats::new(s.chw[0]);
        let total = s.len();
        let tenth = total.div_ceil(10).max(1);
        for start in (0..total).step_by(chunk as usize) {
            let k = (chunk as usize).min(total - start);
            let block = s.range(start, k)?;
            if name == "train" {
                st.add(&block, s.chw);
            }
            zarr::write_block(
                &images,
                &[start as u64, 0, 0, 0],
                &[k as u64, c, h, w],
                &block,
            )?;
            // A tenth of a large split at a time: an import of many files
            // takes minutes, and says how far it is.
            if total > chunk as usize && (start + k) / tenth > start / tenth {
                tracing::info!(split = name, done = start + k, total, "images written");
            }
        }
        if name == "train" {
            stats = Some((st.mean_std(), s.chw));
        }
        let labels = zarr::create_array(
            &store,
            &format!("/{name}/labels"),
            data_type::uint16(),
            0u16,
            &Layout {
                shape: vec![n],
                chunk: vec![4096u64.min(n.max(1)) * 4],
                subchunk: None,
                zstd_level: 3,
                dims: vec!["sample".into()],
            },
            Map::new(),
        )?;
        zarr::write_block(&labels, &[0], &[n], &s.labels)?;
        if let Some((o, kind)) = origin {
            crate::origin::write(&store, name, o, kind)?;
        }
    }
    let Some(((mean, std), chw)) = stats else {
        unreachable!("the train split is checked before any is written");
    };
    let counts: BTreeMap<&str, usize> = splits.iter().map(|(n, s, _)| (*n, s.len())).collect();
    let attrs = json!({
        "class_names": class_names,
        "num_classes": class_names.len(),
        "chw": chw,
        "mean": mean,
        "std": std,
        "splits": counts,
        "source": source,
    });
    let attrs = attrs.as_object().cloned().unwrap_or_default();
    zarr::create_group(&store, "/", attrs.clone())?;
    Ok(attrs)
}

/// A dataset artifact: labels in memory, pixels in memory when they fit
/// the data cache and read by chunk otherwise ([`Pixels`]).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest_hash: String,
    pub class_names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub splits: BTreeMap<String, Split>,
}

impl Dataset {
    /// Open a finished dataset artifact (refusing one without a manifest),
    /// with the data cache [`crate::pixels::cache_budget`] sets.
    pub fn open(dir: &Path) -> Result<Dataset> {
        Dataset::open_with_cache(dir, crate::pixels::cache_budget()?)
    }

    /// [`Dataset::open`] with a data cache of `budget` bytes: pixels in
    /// memory when all splits fit in it, read by chunk through it otherwise.
    pub fn open_with_cache(dir: &Path, budget: u64) -> Result<Dataset> {
        Manifest::read_stage(dir, STAGE)?;
        let hash = manifest_hash(dir)?;
        let store = zarr::open_store(&dir.join(STORE))?;
        let attrs = zarr::group_attrs(&store, "/")?;
        let bad = |what: &str| {
            DataError::from(InputError::Malformed {
                at: dir.join(STORE),
                what: format!("dataset attribute '{what}' missing or malformed"),
            })
        };
        let get = |k: &str| attrs.get(k).cloned().ok_or_else(|| bad(k));
        let class_names: Vec<String> =
            serde_json::from_value(get("class_names")?).map_err(|_| bad("class_names"))?;
        let mean: Vec<f32> = serde_json::from_value(get("mean")?).map_err(|_| bad("mean"))?;
        let std: Vec<f32> = serde_json::from_value(get("std")?).map_err(|_| bad("std"))?;
        let counts: BTreeMap<String, usize> =
            serde_json::from_value(get("splits")?).map_err(|_| bad("splits"))?;
        let mut arrays = vec![];
        for name in counts.keys() {
            let images = zarr::open_array(&store, &format!("/{name}/images"))?;
            let labels = zarr::open_array(&store, &format!("/{name}/labels"))?;
            arrays.push((name, images, labels));
        }
        let bytes: u64 = arrays
            .iter()
            .map(|(_, a, _)| a.shape().iter().product::<u64>())
            .sum();
        // Whole in memory when it fits the data cache (the fastest reads,
        // and a full shuffle); by chunk otherwise.
        let chunked = bytes > budget;
        if chunked {
            tracing::info!(
                dataset = %dir.display(),
                gib = format!("{:.1}", bytes as f64 / (1u64 << 30) as f64),
                cache_gib = format!("{:.1}", budget as f64 / (1u64 << 30) as f64),
                "dataset larger than the data cache ({}): reading by chunk",
                crate::pixels::CACHE_ENV
            );
        }
        let mut splits = BTreeMap::new();
        for (name, images, labels) in arrays {
            let shape = images.shape().to_vec();
            let path = dir.join(STORE).join(name).join("images");
            let reader = ChunkedImages::new(images, path, budget)?;
            let pixels = if chunked {
                Pixels::Chunked(Arc::new(reader))
            } else {
                Pixels::Memory(reader.read_whole()?)
            };
            let split = Split {
                images: pixels,
                labels: zarr::read_all::<u16>(&labels)?,
                chw: [shape[1] as usize, shape[2] as usize, shape[3] as usize],
            };
            splits.insert(name.clone(), split);
        }
        Ok(Dataset {
            dir: dir.into(),
            manifest_hash: hash,
            class_names,
            mean,
            std,
            splits,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn split(&self, name: &str) -> Result<&Split> {
        self.splits.get(name).ok_or_else(|| {
            InputError::not_found(&self.dir, "split", name, self.splits.keys()).into()
        })
    }

    /// Where sample `index` of `split` came from ([`crate::origin::origin`]).
    pub fn origin(&self, split: &str, index: usize) -> Result<String> {
        crate::origin::origin(&self.dir, split, index)
    }

    pub fn chw(&self) -> [usize; 3] {
        self.splits.values().next().map(|s| s.chw).unwrap_or([0; 3])
    }
}
