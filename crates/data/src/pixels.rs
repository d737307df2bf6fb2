//! Where a split's pixels live: in memory, in `dataset.zarr` read by chunk
//! through a bounded cache, or (during an import) in source files decoded on
//! demand. Memory stays proportional to the batch, not the dataset, when
//! the dataset is larger than the data cache ([`cache_budget`]).
//!
//! Readers never borrow an image from a [`Split`](crate::Split) directly:
//! they [`Pixels::gather`] the samples a batch needs, which decodes each
//! needed chunk once (errors surface there, naming the file), then read
//! every image of the batch from the returned [`Gathered`] without locks.

use crate::error::{DataError, Result};
use kd_core::zarr::{self, ZArray};
use rayon::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable that sets the data cache (bytes, with an
/// optional K, M, G or T suffix, powers of 1024).
pub const CACHE_ENV: &str = "KD_DATA_CACHE";

/// The data cache when [`CACHE_ENV`] is unset: datasets up to this size are
/// read whole into memory, larger ones by chunk through a cache this big.
pub const DEFAULT_CACHE: u64 = 2 << 30;

/// Images per stored chunk: 4096 (as every dataset before larger images
/// were read by chunk), fewer where 4096 images would pass 64 MiB, so a
/// chunk decodes in tens of milliseconds and a cache of a few GB holds dozens.
pub fn chunk_images(image_len: usize, n: usize) -> usize {
    let by_bytes = ((64usize << 20) / image_len.max(1)).max(1);
    4096.min(by_bytes).min(n.max(1))
}

/// A size setting such as `2G`, `512M` or `1073741824`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| (v * mult as f64) as u64)
}

/// The data cache in bytes: [`CACHE_ENV`], else [`DEFAULT_CACHE`].
pub fn cache_budget() -> Result<u64> {
    cache_setting(std::env::var(CACHE_ENV).ok().as_deref())
}

/// The data cache a value of [`CACHE_ENV`] asks for (`None`: unset).
pub fn cache_setting(value: Option<&str>) -> Result<u64> {
    match value {
        None => Ok(DEFAULT_CACHE),
        Some(v) => parse_size(v).ok_or_else(|| DataError::Setting {
            setting: CACHE_ENV,
            value: v.into(),
            expected: "a size in bytes, e.g. 2G, 512M or 1073741824",
        }),
    }
}

/// Decodes sample `i` of an import's source (an image file, resized).
pub type Loader = Arc<dyn Fn(usize) -> Result<Vec<u8>> + Send + Sync>;

/// A split's pixels, `[n, c, h, w]` uint8.
#[derive(Clone)]
pub enum Pixels {
    /// Every image in one buffer.
    Memory(Vec<u8>),
    /// A `dataset.zarr` images array, read by chunk.
    Chunked(Arc<ChunkedImages>),
    /// Images decoded when asked for: sample `i` is `load(idx[i])`.
    Deferred { load: Loader, idx: Vec<usize> },
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pixels::Memory(v) => write!(f, "Memory({} bytes)", v.len()),
            Pixels::Chunked(c) => write!(f, "Chunked({})", c.path.display()),
            Pixels::Deferred { idx, .. } => write!(f, "Deferred({} images)", idx.len()),
        }
    }
}

/// Pixels compare by content where both are in memory; anything else is
/// equal only to itself (tests compare imported splits in memory).
impl PartialEq for Pixels {
    fn eq(&self, other: &Pixels) -> bool {
        match (self, other) {
            (Pixels::Memory(a), Pixels::Memory(b)) => a == b,
            (Pixels::Chunked(a), Pixels::Chunked(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl From<Vec<u8>> for Pixels {
    fn from(v: Vec<u8>) -> Pixels {
        Pixels::Memory(v)
    }
}

impl FromIterator<u8> for Pixels {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> Pixels {
        Pixels::Memory(it.into_iter().collect())
    }
}

impl Pixels {
    /// The in-memory buffer, if the pixels are in memory.
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self {
            Pixels::Memory(v) => Some(v),
            _ => None,
        }
    }

    /// The samples at `idx` (in that order) as pixels of the same kind:
    /// copied when in memory, a remapped index otherwise.
    pub fn select(&self, idx: &[usize], image_len: usize) -> Pixels {
        match self {
            Pixels::Memory(v) => {
                let mut out = Vec::with_capacity(idx.len() * image_len);
                for &i in idx {
                    out.extend_from_slice(&v[i * image_len..(i + 1) * image_len]);
                }
                Pixels::Memory(out)
            }
            Pixels::Deferred { load, idx: base } => Pixels::Deferred {
                load: load.clone(),
                idx: idx.iter().map(|&i| base[i]).collect(),
            },
            Pixels::Chunked(c) => {
                let c = c.clone();
                Pixels::Deferred {
                    load: Arc::new(move |i| c.image(i)),
                    idx: idx.to_vec(),
                }
            }
        }
    }

    /// Images `start..start + n`, contiguous, decoded in parallel where
    /// they are not in memory: what the dataset writer stores chunk by chunk.
    pub fn range(&self, start: usize, n: usize, image_len: usize) -> Result<Vec<u8>> {
        match self {
            Pixels::Memory(v) => Ok(v[start * image_len..(start + n) * image_len].to_vec()),
            Pixels::Chunked(c) => c.read(start, n),
            Pixels::Deferred { load, idx } => {
                let imgs: Vec<Vec<u8>> = idx[start..start + n]
                    .par_iter()
                    .map(|&i| load(i))
                    .collect::<Result<_>>()?;
                Ok(imgs.concat())
            }
        }
    }

    /// Everything needed to read the images of samples `idx` (any order,
    /// repeats allowed): nothing to fetch in memory, each touched chunk
    /// once when chunked.
    pub fn gather(&self, idx: &[usize], image_len: usize) -> Result<Gathered<'_>> {
        Ok(match self {
            Pixels::Memory(v) => Gathered::Memory { v, image_len },
            Pixels::Chunked(c) => {
                let mut need: Vec<usize> = idx.iter().map(|&i| i / c.chunk).collect();
                need.sort_unstable();
                need.dedup();
                let chunks = need
                    .into_iter()
                    .map(|k| Ok((k, c.chunk(k)?)))
                    .collect::<Result<HashMap<_, _>>>()?;
                Gathered::Chunks {
                    chunks,
                    per: c.chunk,
                    image_len,
                }
            }
            Pixels::Deferred { load, idx: base } => {
                let mut need = idx.to_vec();
                need.sort_unstable();
                need.dedup();
                let images = need
                    .par_iter()
                    .map(|&i| Ok((i, load(base[i])?)))
                    .collect::<Result<HashMap<_, _>>>()?;
                Gathered::Images(images)
            }
        })
    }

    /// Samples per stored chunk, when read by chunk: the block size of a
    /// shuffle that decodes each chunk about once per epoch.
    pub fn chunk_len(&self) -> Option<usize> {
        match self {
            Pixels::Chunked(c) => Some(c.chunk),
            _ => None,
        }
    }

    /// How many chunks the data cache holds at once, when read by chunk.
    pub fn cached_chunks(&self) -> Option<usize> {
        match self {
            Pixels::Chunked(c) => Some((c.budget / c.chunk_bytes().max(1) as u64).max(1) as usize),
            _ => None,
        }
    }

    /// Bytes decoded from the store so far (0 in memory).
    pub fn decoded_bytes(&self) -> u64 {
        match self {
            Pixels::Chunked(c) => c.decoded.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

/// The images of one batch, ready to read without locks.
pub enum Gathered<'a> {
    Memory {
        v: &'a [u8],
        image_len: usize,
    },
    Chunks {
        chunks: HashMap<usize, Arc<Vec<u8>>>,
        per: usize,
        image_len: usize,
    },
    Images(HashMap<usize, Vec<u8>>),
}

impl Gathered<'_> {
    /// The image of sample `i`; `i` must be one of the gathered samples.
    pub fn image(&self, i: usize) -> &[u8] {
        match self {
            Gathered::Memory { v, image_len } => &v[i * image_len..(i + 1) * image_len],
            Gathered::Chunks {
                chunks,
                per,
                image_len,
            } => {
                let o = (i % per) * image_len;
                &chunks[&(i / per)][o..o + image_len]
            }
            Gathered::Images(m) => &m[&i],
        }
    }
}

/// A `dataset.zarr` images array read by chunk through a least-recently-used
/// cache of decoded chunks, at most `budget` bytes (and never fewer than
/// the chunk being read). Concurrent readers of one chunk wait for one
/// decode of it.
pub struct ChunkedImages {
    array: ZArray,
    /// The array's path, for errors.
    pub path: PathBuf,
    len: usize,
    image_len: usize,
    chunk: usize,
    budget: u64,
    cache: Mutex<Lru>,
    decoded: AtomicU64,
}

type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

#[derive(Default)]
struct Lru {
    slots: HashMap<usize, Slot>,
    /// Chunk ids, least recently used first.
    order: VecDeque<usize>,
    /// Bytes of each decoded chunk the cache holds.
    sizes: HashMap<usize, u64>,
    bytes: u64,
}

impl ChunkedImages {
    /// `array` is `[n, c, h, w]` uint8, chunked along samples only.
    pub fn new(array: ZArray, path: PathBuf, budget: u64) -> Result<ChunkedImages> {
        let shape = array.shape().to_vec();
        let grid = array
            .chunk_shape(&vec![0; shape.len()])
            .map_err(|e| DataError::Format {
                path: path.clone(),
                msg: format!("no regular chunk grid: {e}"),
            })?;
        let chunk = grid.first().map_or(1, |c| c.get() as usize);
        if shape.len() != 4
            || grid
                .iter()
                .skip(1)
                .zip(&shape[1..])
                .any(|(g, &s)| g.get() != s)
        {
            return Err(DataError::Format {
                path,
                msg: format!("images {shape:?} must be [n,c,h,w] chunked along n only"),
            });
        }
        check_all_present(&array)?;
        Ok(ChunkedImages {
            len: shape[0] as usize,
            image_len: shape[1..].iter().product::<u64>() as usize,
            chunk,
            budget,
            array,
            path,
            cache: Mutex::new(Lru::default()),
            decoded: AtomicU64::new(0),
        })
    }

    fn chunk_bytes(&self) -> usize {
        self.chunk * self.image_len
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A reader that panicked left the cache consistent (every update
        // is a few plain assignments), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunk `k`, from the cache or decoded (and cached, evicting the least
    /// recently used chunks past the budget).
    pub fn chunk(&self, k: usize) -> Result<Arc<Vec<u8>>> {
        let slot = {
            let mut lru = self.lock();
            let slot = lru.slots.entry(k).or_default().clone();
            if let Some(p) = lru.order.iter().position(|&c| c == k) {
                lru.order.remove(p);
            }
            lru.order.push_back(k);
            slot
        };
        let mut filled = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = filled.as_ref() {
            return Ok(v.clone());
        }
        let start = k * self.chunk;
        let n = self.chunk.min(self.len - start);
        let v = Arc::new(self.read(start, n)?);
        self.decoded.fetch_add(v.len() as u64, Ordering::Relaxed);
        *filled = Some(v.clone());
        drop(filled);
        let mut lru = self.lock();
        // Evicted while being decoded: the caller's copy is the only one.
        if !lru.slots.get(&k).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
            return Ok(v);
        }
        lru.sizes.insert(k, v.len() as u64);
        lru.bytes += v.len() as u64;
        while lru.bytes > self.budget && lru.order.len() > 1 {
            let Some(old) = lru.order.pop_front() else {
                break;
            };
            if old == k {
                lru.order.push_back(old);
                continue;
            }
            // A slot still being decoded has no size yet: its decoder sees
            // it gone and keeps its chunk to itself.
            lru.slots.remove(&old);
            if let Some(b) = lru.sizes.remove(&old) {
                lru.bytes -= b;
            }
        }
        Ok(v)
    }

    /// Bytes of decoded chunks the cache holds now.
    pub fn cached_bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Images `start..start + n`, straight from the store (not cached).
    pub fn read(&self, start: usize, n: usize) -> Result<Vec<u8>> {
        let mut shape = self.array.shape().to_vec();
        shape[0] = n as u64;
        let mut origin = vec![0; shape.len()];
        origin[0] = start as u64;
        Ok(zarr::read_block_unchecked::<u8>(
            &self.array,
            &origin,
            &shape,
        )?)
    }

    /// Every image in one buffer, read a chunk at a time (so the peak is
    /// the dataset plus one chunk, not twice the dataset).
    pub fn read_whole(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len * self.image_len);
        for start in (0..self.len).step_by(self.chunk.max(1)) {
            out.extend_from_slice(&self.read(start, self.chunk.min(self.len - start))?);
        }
        Ok(out)
    }

    /// The image of sample `i` (through the cache).
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        let c = self.chunk(i / self.chunk)?;
        let o = (i % self.chunk) * self.image_len;
        Ok(c[o..o + self.image_len].to_vec())
    }
}

/// Every chunk file of the array must exist: a deleted one would otherwise
/// read as black images in the middle of training.
fn check_all_present(a: &ZArray) -> Result<()> {
    let (origin, shape) = zarr::whole(a);
    Ok(zarr::check_present(
        a,
        &origin,
        &shape,
        zarr::Presence::All,
    )?)
}

#[cfg(test)]
mod tests;
