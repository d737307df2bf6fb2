//! Where a split's pixels live: in memory, in `dataset.zarr` read by chunk
//! through a bounded cache, or (during an import) in source files decoded on
//! demand. Memory stays proportional to the batch, not the dataset, when
//! the dataset is larger than the data cache ([`cache_budget`]).
//!
//! Readers never borrow an image from a [`Split`](crate::Split) directly:
//! they [`Pixels::gather`] the samples a batch needs, which decodes each
//! needed chunk once (errors surface there, naming the file), then read
//! every image of the batch from the returned [`Gathered`] without locks.

mod chunked;

pub use chunked::ChunkedImages;

use crate::error::Result;
use kd_core::SettingError;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
        Some(v) => parse_size(v).ok_or_else(|| {
            SettingError::out_of_range(CACHE_ENV, v, "a size in bytes, e.g. 2G, 512M or 1073741824")
                .into()
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

#[cfg(test)]
mod tests;
