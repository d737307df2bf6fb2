//! Reading a finished store: the student asks for a batch of (sample, view)
//! rows of one teacher. Small stores are decoded into memory once; large ones
//! go through a bounded cache of decoded inner chunks. View parameters, the
//! mixing of mixed views and cross-fitted teachers' folds are small and
//! always held in memory.
//!
//! Opening checks once that every shard file of every array is there (and
//! every inner chunk that cannot be all zeros): zarr would read a deleted
//! one as zeros, and a student would train on them. Reads after that skip
//! the check. The inputs the store records are located relative to the
//! store ([`kd_core::InputRef::locate`]), so `meta().inputs` holds paths
//! that work from any working directory, where the inputs still exist.

mod open;

use open::{check_arrays, locate_inputs, read_floats, read_params};

use crate::error::{Result, store_err};
use crate::layout::{Dtype, STAGE, StoreMeta, TOPK_FILL, store_dir};
use kd_core::manifest::{Manifest, manifest_hash};
use kd_core::zarr::{self, ZArray};
use kd_core::{InputError, MixParams, MixSpec, ViewBatch, ViewParams, ViewSpec};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Decoded logits of samples `start .. start + n`: dense rows, or top-k.
struct Block {
    start: usize,
    n: usize,
    values: Vec<f32>,
    indices: Option<Vec<u16>>,
}

struct Arrays {
    values: ZArray,
    indices: Option<ZArray>,
}

enum Source {
    Memory(Arc<Block>),
    Chunked(Box<Arrays>),
}

struct ChunkCache {
    map: HashMap<(usize, usize), Arc<Block>>,
    order: VecDeque<(usize, usize)>,
    capacity: usize,
}

/// A finished logit store (manifest stage `cache`).
pub struct LogitStore {
    dir: PathBuf,
    hash: String,
    meta: StoreMeta,
    names: Vec<String>,
    /// `views/params`, widened to u16 (see `read_params`).
    params: Vec<u16>,
    /// `views/mix`, decoded and checked; empty when the store does not mix.
    mixes: Vec<MixParams>,
    /// Per teacher: each sample's held-out fold, for cross-fitted teachers.
    folds: Vec<Option<Vec<u8>>>,
    sources: Vec<Source>,
    cache: Mutex<ChunkCache>,
}

impl std::fmt::Debug for LogitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitStore")
            .field("dir", &self.dir)
            .field("teachers", &self.names)
            .field("samples", &self.meta.samples)
            .field("views", &self.meta.views)
            .finish()
    }
}

/// Default memory for decoded logits (f32) before the chunk cache takes over.
pub const DEFAULT_MEMORY_BUDGET: usize = 4 << 30;

impl LogitStore {
    /// Open a finished store, in memory when its decoded logits fit
    /// [`DEFAULT_MEMORY_BUDGET`] (override: `KD_CACHE_MEMORY_MB`).
    pub fn open(dir: &Path) -> Result<LogitStore> {
        let budget = std::env::var("KD_CACHE_MEMORY_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map(|mb| mb << 20)
            .unwrap_or(DEFAULT_MEMORY_BUDGET);
        Self::open_with_budget(dir, budget)
    }

    /// Open with `budget` bytes for decoded logits: everything in memory if it
    /// fits, else a chunk cache of about that size.
    pub fn open_with_budget(dir: &Path, budget: usize) -> Result<LogitStore> {
        let manifest = Manifest::read_stage(dir, STAGE)?;
        let hash = manifest_hash(dir)?;
        let root = store_dir(dir);
        let mut meta = StoreMeta::read(&root)?;
        locate_inputs(&mut meta, &manifest, dir);
        let store = zarr::open_store(&root)?;
        check_arrays(&store, &meta)?;
        let (n, k, w) = (
            meta.samples as u64,
            meta.views as u64,
            meta.row_width() as u64,
        );
        let params = read_params(&root, &store, &meta)?;
        let mixes = match meta.mix {
            None => vec![],
            Some(_) => Self::read_mixes(&root, &meta, &store)?,
        };
        let mut folds = vec![];
        for t in &meta.teachers {
            folds.push(match &t.folds {
                None => None,
                Some(f) => {
                    let path = format!("/teachers/{}/fold", t.name);
                    let a = zarr::read_block_unchecked::<u8>(
                        &zarr::open_array(&store, &path)?,
                        &[0],
                        &[n],
                    )?;
                    if let Some((i, x)) = a.iter().enumerate().find(|(_, x)| **x as usize >= f.k) {
                        return Err(store_err(
                            root.join(&path[1..]),
                            format!(
                                "sample {i} is in fold {x}, but the teacher has {} folds",
                                f.k
                            ),
                        ));
                    }
                    Some(a)
                }
            });
        }
        let row_bytes = w as usize * if meta.top_k.is_some() { 6 } else { 4 };
        let total = row_bytes * (n * k) as usize * meta.teachers.len();
        let in_memory = total <= budget;
        let mut sources = vec![];
        for t in &meta.teachers {
            let arrays = match meta.top_k {
                None => Arrays {
                    values: zarr::open_array(&store, &format!("/teachers/{}/logits", t.name))?,
                    indices: None,
                },
                Some(_) => Arrays {
                    values: zarr::open_array(&store, &format!("/teachers/{}/values", t.name))?,
                    indices: Some(zarr::open_array(
                        &store,
                        &format!("/teachers/{}/indices", t.name),
                    )?),
                },
            };
            sources.push(if in_memory {
                Source::Memory(Arc::new(Self::decode(&meta, &arrays, 0, meta.samples)?))
            } else {
                Source::Chunked(Box::new(arrays))
            });
        }
        let chunk_bytes = row_bytes * meta.chunk_samples * meta.views;
        tracing::debug!(dir = %dir.display(), in_memory, total, "logit store opened");
        Ok(LogitStore {
            dir: dir.into(),
            hash,
            names: meta.teachers.iter().map(|t| t.name.clone()).collect(),
            params,
            mixes,
            folds,
            sources,
            cache: Mutex::new(ChunkCache {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity: (budget / chunk_bytes.max(1)).max(4),
            }),
            meta,
        })
    }

    /// Decode `views/mix`, refusing unknown kinds and partners outside the
    /// store, so readers can index the dataset with them safely.
    fn read_mixes(root: &Path, meta: &StoreMeta, store: &zarr::Store) -> Result<Vec<MixParams>> {
        let (n, k) = (meta.samples, meta.views);
        let raw = zarr::read_block_unchecked::<u32>(
            &zarr::open_array(store, "/views/mix")?,
            &[0, 0, 0],
            &[n as u64, k as u64, MixParams::LEN as u64],
        )?;
        raw.chunks_exact(MixParams::LEN)
            .enumerate()
            .map(|(i, row)| match MixParams::from_slice(row) {
                Some(m) if !m.is_mixed() || (m.partner as usize) < n => Ok(m),
                _ => Err(store_err(
                    root.join("views/mix"),
                    format!(
                        "(sample {}, view {}) holds {row:?}: not a mixing of this store's {n} samples",
                        i / k,
                        i % k
                    ),
                )),
            })
            .collect()
    }

    fn decode(meta: &StoreMeta, a: &Arrays, start: usize, n: usize) -> Result<Block> {
        let shape = [n as u64, meta.views as u64, meta.row_width() as u64];
        let origin = [start as u64, 0, 0];
        Ok(Block {
            start,
            n,
            values: read_floats(&a.values, meta.dtype, &origin, &shape)?,
            indices: match &a.indices {
                Some(ia) => Some(zarr::read_block_unchecked::<u16>(ia, &origin, &shape)?),
                None => None,
            },
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest_hash(&self) -> &str {
        &self.hash
    }
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }
    pub fn teachers(&self) -> &[String] {
        &self.names
    }
    pub fn num_samples(&self) -> usize {
        self.meta.samples
    }
    pub fn views(&self) -> usize {
        self.meta.views
    }
    pub fn num_classes(&self) -> usize {
        self.meta.num_classes
    }
    pub fn class_names(&self) -> &[String] {
        &self.meta.class_names
    }
    pub fn dataset_hash(&self) -> &str {
        &self.meta.dataset_hash
    }
    pub fn view_spec(&self) -> ViewSpec {
        self.meta.view_spec
    }
    pub fn seed(&self) -> u64 {
        self.meta.seed
    }
    pub fn top_k(&self) -> Option<usize> {
        self.meta.top_k
    }
    pub fn dtype(&self) -> Dtype {
        self.meta.dtype
    }
    /// Whether the logits were decoded into memory (else a chunk cache).
    pub fn in_memory(&self) -> bool {
        self.sources.iter().all(|s| matches!(s, Source::Memory(_)))
    }

    /// The stored parameters of view `view` of sample `sample`.
    pub fn view_params(&self, sample: usize, view: usize) -> ViewParams {
        let spec = &self.meta.view_spec;
        let len = spec.param_fields().len();
        let o = (sample * self.meta.views + view) * len;
        spec.decode(&self.params[o..o + len])
    }

    /// How the store mixes views (`None`: it does not).
    pub fn mix_spec(&self) -> Option<MixSpec> {
        self.meta.mix
    }

    /// The mixing of view `view` of `sample`: `None` for a store without
    /// mixing, [`MixParams::NONE`] for a view the store left unmixed.
    pub fn mix_params(&self, sample: usize, view: usize) -> Option<MixParams> {
        self.mixes.get(sample * self.meta.views + view).copied()
    }

    /// Everything [`kd_data::augment::batch_tensor_mixed`] needs to rebuild
    /// the pixels of (sample, view) `pairs` exactly as the teachers saw them:
    /// the own views, the partners' views at the same view index, the mixing
    /// (all [`MixParams::NONE`] in a store without mixing).
    pub fn view_batch(&self, pairs: &[(usize, usize)]) -> Result<ViewBatch> {
        let mut b = ViewBatch::default();
        for &(s, v) in pairs {
            self.check_pair(s, v)?;
            let own = self.view_params(s, v);
            let m = self.mix_params(s, v).unwrap_or(MixParams::NONE);
            b.views.push(own);
            b.partner_views.push(if m.is_mixed() {
                self.view_params(m.partner as usize, v)
            } else {
                own
            });
            b.mixes.push(m);
        }
        Ok(b)
    }

    /// The fold of `sample` for a cross-fitted `teacher`: its logits come
    /// from the model trained without that fold. `None` for a plain teacher,
    /// an unknown one, or a sample out of range.
    pub fn fold_of(&self, teacher: &str, sample: usize) -> Option<u8> {
        let t = self.names.iter().position(|n| n == teacher)?;
        self.folds[t].as_ref()?.get(sample).copied()
    }

    fn check_pair(&self, s: usize, v: usize) -> Result<()> {
        if s >= self.meta.samples || v >= self.meta.views {
            return Err(store_err(
                &self.dir,
                format!(
                    "(sample {s}, view {v}) out of range ({} samples, {} views)",
                    self.meta.samples, self.meta.views
                ),
            ));
        }
        Ok(())
    }

    fn block(&self, t: usize, sample: usize) -> Result<Arc<Block>> {
        match &self.sources[t] {
            Source::Memory(b) => Ok(b.clone()),
            Source::Chunked(arrays) => {
                let c = sample / self.meta.chunk_samples;
                if let Some(b) = self.cache.lock().expect("cache lock").map.get(&(t, c)) {
                    return Ok(b.clone());
                }
                let start = c * self.meta.chunk_samples;
                let n = self.meta.chunk_samples.min(self.meta.samples - start);
                let b = Arc::new(Self::decode(&self.meta, arrays, start, n)?);
                let mut cache = self.cache.lock().expect("cache lock");
                if cache.map.insert((t, c), b.clone()).is_none() {
                    cache.order.push_back((t, c));
                }
                while cache.order.len() > cache.capacity {
                    if let Some(old) = cache.order.pop_front() {
                        cache.map.remove(&old);
                    }
                }
                Ok(b)
            }
        }
    }

    /// Logits `[pairs.len(), classes]` row-major as f32 for (sample, view)
    /// pairs; top-k stores fill the classes they did not keep with -1e4.
    pub fn logits(&self, teacher: &str, pairs: &[(usize, usize)]) -> Result<Vec<f32>> {
        let t = self
            .names
            .iter()
            .position(|n| n == teacher)
            .ok_or_else(|| InputError::not_found(&self.dir, "teacher", teacher, &self.names))?;
        let (c, k, w) = (
            self.meta.num_classes,
            self.meta.views,
            self.meta.row_width(),
        );
        let mut out = vec![0f32; pairs.len() * c];
        for (row, &(s, v)) in out.chunks_exact_mut(c).zip(pairs) {
            self.check_pair(s, v)?;
            let b = self.block(t, s)?;
            debug_assert!(s >= b.start && s < b.start + b.n);
            let o = ((s - b.start) * k + v) * w;
            let vals = &b.values[o..o + w];
            match &b.indices {
                None => row.copy_from_slice(vals),
                Some(ind) => {
                    row.fill(TOPK_FILL);
                    for (&x, &i) in vals.iter().zip(&ind[o..o + w]) {
                        row[i as usize] = x;
                    }
                }
            }
        }
        Ok(out)
    }
}
