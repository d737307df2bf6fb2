//! CIFAR-10 and CIFAR-100 binary versions.
//!
//! CIFAR-10: `data_batch_{1..5}.bin`, `test_batch.bin`, records of
//! 1 label byte + 3072 pixel bytes. CIFAR-100: `train.bin`, `test.bin`,
//! records of coarse label, fine label, 3072 bytes (fine labels are used).
//! A sample's origin is its index over the train (or test) batches in
//! file order: CIFAR-10's `data_batch_2.bin` starts at 10000.

use crate::error::{Result, format_err, io_err};
use crate::origin::OriginKind;
use crate::split::{Imported, Split, Traced};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3 * 32 * 32;

fn read_batches(files: &[PathBuf], label_bytes: usize, classes: usize) -> Result<Split> {
    let rec = label_bytes + PIXELS;
    let (mut images, mut labels) = (vec![], vec![]);
    for f in files {
        let bytes = std::fs::read(f).map_err(io_err(f))?;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(format_err(
                f,
                format!(
                    "corrupt CIFAR batch: {} bytes is not a whole number of {rec}-byte records",
                    bytes.len()
                ),
            ));
        }
        for (i, r) in bytes.chunks_exact(rec).enumerate() {
            let label = r[label_bytes - 1] as usize;
            if label >= classes {
                return Err(format_err(
                    f,
                    format!(
                        "corrupt CIFAR record {i}: label {label} out of range for {classes} classes"
                    ),
                ));
            }
            labels.push(label as u16);
            images.extend_from_slice(&r[label_bytes..]);
        }
    }
    Ok(Split::in_memory(images, labels, [3, 32, 32]))
}

fn names_from(path: &Path, fallback: usize) -> Vec<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|v| v.len() == fallback)
        .unwrap_or_else(|| (0..fallback).map(|i| i.to_string()).collect())
}

/// Import CIFAR-10 or CIFAR-100 (detected from the files in `src`).
pub fn import(src: &Path) -> Result<Imported> {
    if !src.is_dir() {
        return Err(format_err(src, "no such directory"));
    }
    let c10: Vec<PathBuf> = (1..=5)
        .map(|i| src.join(format!("data_batch_{i}.bin")))
        .collect();
    if c10.iter().all(|p| p.is_file()) {
        let test = src.join("test_batch.bin");
        if !test.is_file() {
            return Err(format_err(test, "missing CIFAR-10 test batch"));
        }
        return Ok(Imported {
            train: Traced::indexed(read_batches(&c10, 1, 10)?),
            test: Traced::indexed(read_batches(&[test], 1, 10)?),
            val: None,
            class_names: names_from(&src.join("batches.meta.txt"), 10),
            source: format!("cifar10:{}", src.display()),
            origin: OriginKind::Index,
        });
    }
    let (train, test) = (src.join("train.bin"), src.join("test.bin"));
    if train.is_file() && test.is_file() {
        return Ok(Imported {
            train: Traced::indexed(read_batches(&[train], 2, 100)?),
            test: Traced::indexed(read_batches(&[test], 2, 100)?),
            val: None,
            class_names: names_from(&src.join("fine_label_names.txt"), 100),
            source: format!("cifar100:{}", src.display()),
            origin: OriginKind::Index,
        });
    }
    Err(format_err(
        src,
        "not a CIFAR binary directory (need data_batch_1..5.bin + test_batch.bin, or train.bin + test.bin)",
    ))
}
