//! A dataset larger than its data cache: read by chunk, identical to the
//! same dataset in memory, with the cache under its budget and each chunk
//! decoded once per epoch under the block shuffle.

use kd_core::sampler::{Shuffle, epoch_order};
use kd_core::{ViewParams, ViewSpec};
use kd_data::augment::{batch_tensor, lut};
use kd_data::{Dataset, Pixels, Split};
use std::path::Path;

const N: usize = 10_000;
const CHW: [usize; 3] = [1, 8, 8];

/// 10 000 8x8 images: three chunks of (4096, 4096, 1808) images.
fn dataset(dir: &Path) {
    let len: usize = CHW.iter().product();
    let mut r = kd_core::Rng::new(3);
    let images: Vec<u8> = (0..N * len).map(|_| r.below(256) as u8).collect();
    let labels: Vec<u16> = (0..N).map(|i| (i % 10) as u16).collect();
    let test = Split::in_memory(images[..100 * len].to_vec(), labels[..100].to_vec(), CHW);
    let train = Split::in_memory(images, labels, CHW);
    let names: Vec<String> = (0..10).map(|c| c.to_string()).collect();
    let splits = vec![("train".to_string(), train), ("test".to_string(), test)];
    kd_data::write_dataset(dir, &splits, &names, "synthetic").unwrap();
    let stage = kd_core::StageRun::new(kd_data::store::STAGE, dir, serde_json::json!({}), vec![])
        .leaves(&[kd_data::store::STORE]);
    assert!(stage.claim(false).unwrap());
    stage
        .seal(
            &[],
            vec![kd_core::OutputRef::of(dir, kd_data::store::STORE, false).unwrap()],
            serde_json::json!({}),
        )
        .unwrap();
}

const CHUNK_BYTES: u64 = 4096 * 64;

#[test]
fn chunked_reads_equal_memory_under_the_budget() {
    let t = tempfile::tempdir().unwrap();
    dataset(t.path());
    let mem = Dataset::open_with_cache(t.path(), u64::MAX).unwrap();
    let chunked = Dataset::open_with_cache(t.path(), CHUNK_BYTES + 1).unwrap();
    assert_eq!(mem.manifest_hash, chunked.manifest_hash);
    assert_eq!(
        (mem.mean.clone(), mem.std.clone()),
        (chunked.mean.clone(), chunked.std.clone())
    );
    let (m, c) = (mem.split("train").unwrap(), chunked.split("train").unwrap());
    assert!(matches!(m.images, Pixels::Memory(_)));
    let Pixels::Chunked(reader) = &c.images else {
        panic!("a dataset over the budget is read by chunk");
    };
    assert_eq!(c.images.chunk_len(), Some(4096));
    assert_eq!(c.labels, m.labels);
    // Random batches, every one identical to the in-memory batch, the
    // cache never over its budget (one chunk here).
    let spec = ViewSpec {
        pad: 2,
        flip: true,
        ..ViewSpec::default()
    };
    let l = lut(&mem.mean, &mem.std);
    let mut r = kd_core::Rng::new(8);
    for step in 0..20 {
        let idx: Vec<usize> = (0..64).map(|_| r.below(N as u64) as usize).collect();
        let views: Vec<ViewParams> = idx
            .iter()
            .map(|&i| spec.draw([8, 8], 1, i as u64, step))
            .collect();
        let a = batch_tensor(m, &idx, &views, &spec, &l, tch::Device::Cpu).unwrap();
        let b = batch_tensor(c, &idx, &views, &spec, &l, tch::Device::Cpu).unwrap();
        assert!(a.equal(&b), "step {step}");
        assert!(
            reader.cached_bytes() <= CHUNK_BYTES,
            "{}",
            reader.cached_bytes()
        );
    }
    for i in [0, 4095, 4096, 8191, 8192, N - 1] {
        assert_eq!(c.image(i).unwrap(), m.image(i).unwrap(), "image {i}");
    }
}

#[test]
fn the_block_shuffle_decodes_each_chunk_once_per_epoch() {
    let t = tempfile::tempdir().unwrap();
    dataset(t.path());
    // Room for two chunks: windows of one chunk.
    let ds = Dataset::open_with_cache(t.path(), 2 * CHUNK_BYTES).unwrap();
    let train = ds.split("train").unwrap();
    let shuffle = train.shuffle();
    assert_eq!(
        shuffle,
        Shuffle::Blocks {
            block: 4096,
            window: 1
        }
    );
    let total = (N * 64) as u64;
    for epoch in 0..2 {
        let before = train.images.decoded_bytes();
        for b in epoch_order(N, 4, epoch, shuffle).chunks(100) {
            train.gather(b).unwrap();
        }
        // At most once each; the next epoch may find its first chunks
        // still cached from the last.
        let decoded = train.images.decoded_bytes() - before;
        assert!(
            decoded <= total && decoded + 2 * CHUNK_BYTES >= total,
            "epoch {epoch}: {decoded}"
        );
        if epoch == 0 {
            assert_eq!(decoded, total);
        }
    }
    // A full shuffle over the same reader decodes far more.
    let before = train.images.decoded_bytes();
    for b in epoch_order(N, 4, 0, Shuffle::Full).chunks(100) {
        train.gather(b).unwrap();
    }
    assert!(train.images.decoded_bytes() - before > 10 * total);
}

#[test]
fn in_memory_datasets_keep_the_full_shuffle() {
    let t = tempfile::tempdir().unwrap();
    dataset(t.path());
    let ds = Dataset::open(t.path()).unwrap();
    assert_eq!(ds.split("train").unwrap().shuffle(), Shuffle::Full);
}

#[test]
fn a_deleted_chunk_is_refused_when_the_dataset_opens() {
    let t = tempfile::tempdir().unwrap();
    dataset(t.path());
    let chunk = t.path().join("dataset.zarr/train/images/c/1/0/0/0");
    assert!(chunk.exists(), "{}", chunk.display());
    std::fs::remove_file(&chunk).unwrap();
    let e = Dataset::open_with_cache(t.path(), CHUNK_BYTES)
        .unwrap_err()
        .to_string();
    assert!(e.contains("images"), "{e}");
}

#[test]
fn a_bad_cache_setting_names_the_variable() {
    use kd_data::pixels::{DEFAULT_CACHE, cache_setting};
    let e = cache_setting(Some("lots")).unwrap_err().to_string();
    assert!(e.contains("KD_DATA_CACHE") && e.contains("lots"), "{e}");
    assert_eq!(cache_setting(None).unwrap(), DEFAULT_CACHE);
    assert_eq!(cache_setting(Some("3G")).unwrap(), 3 << 30);
}
