//! [`ChunkedImages`]: a `dataset.zarr` images array read by chunk through a
//! bounded least-recently-used cache of decoded chunks.

use crate::error::{DataError, Result};
use kd_core::zarr::{self, ZArray};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    pub(super) chunk: usize,
    pub(super) budget: u64,
    cache: Mutex<Lru>,
    pub(super) decoded: AtomicU64,
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

    pub(super) fn chunk_bytes(&self) -> usize {
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
