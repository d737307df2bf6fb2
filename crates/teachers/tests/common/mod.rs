//! Tiny synthetic dataset artifacts for the stage tests.
#![allow(dead_code)]

use kd_core::Manifest;
use kd_core::rng::Rng;
use kd_data::{Split, write_dataset};
use serde_json::json;
use std::path::Path;

/// Class `c` is a bright horizontal band at rows `c*s..c*s+s` (s = h / classes)
/// on noise: learnable in a few steps.
pub fn split(n: usize, classes: usize, chw: [usize; 3], seed: u64) -> Split {
    let [c, h, w] = chw;
    let mut r = Rng::keyed(seed, &[n as u64]);
    let band = h / classes;
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % classes;
        labels.push(label as u16);
        for _ in 0..c {
            for y in 0..h {
                for _ in 0..w {
                    let base = if y / band == label { 200 } else { 30 };
                    images.push((base + r.below(50)) as u8);
                }
            }
        }
    }
    Split::in_memory(images, labels, chw)
}

/// A finished `data` artifact in `dir`.
pub fn dataset(dir: &Path, classes: usize, n_train: usize, n_test: usize, tag: u64) {
    let chw = [1, 12, 12];
    let splits = vec![
        ("train".to_string(), split(n_train, classes, chw, 1 + tag)),
        ("test".to_string(), split(n_test, classes, chw, 100 + tag)),
    ];
    let names: Vec<String> = (0..classes).map(|c| format!("c{c}")).collect();
    write_dataset(dir, &splits, &names, "synthetic").unwrap();
    Manifest::new("data", json!({"synthetic": tag, "classes": classes}))
        .write(dir)
        .unwrap();
}

pub fn python() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("KD_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/root/.cache/kd/torch-2.11.0/bin/python".into());
    p.is_file().then_some(p)
}
