//! Small real teachers and data sets for tests and benches, with no
//! dependency on `kd-teachers`: a seeded conv net implementing
//! `kd_core::Teacher`, a synthetic dataset artifact and a teacher artifact
//! directory whose manifest pins it.

use kd_core::manifest::Manifest;
use kd_core::{Rng, Teacher};
use kd_data::Split;
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// conv3x3 -> relu -> conv3x3 -> relu -> 2x2 average pool -> linear, with
/// weights drawn from a keyed generator (so identical in every process).
pub struct ConvTeacher {
    name: String,
    arch: String,
    classes: usize,
    checkpoint: String,
    dataset_hash: String,
    device: Device,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
}

fn uniform(seed: u64, tag: u64, shape: &[i64], scale: f64, device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let mut r = Rng::keyed(seed, &[tag]);
    let v: Vec<f32> = (0..n)
        .map(|_| ((r.unit() * 2.0 - 1.0) * scale) as f32)
        .collect();
    Tensor::from_slice(&v).view(shape).to_device(device)
}

impl ConvTeacher {
    pub fn new(
        name: &str,
        seed: u64,
        in_ch: usize,
        width: usize,
        classes: usize,
        dataset_hash: &str,
        device: Device,
    ) -> Self {
        let (c, w, k) = (in_ch as i64, width as i64, classes as i64);
        let s1 = (3.0 / (c * 9) as f64).sqrt();
        let s2 = (3.0 / (w * 9) as f64).sqrt();
        ConvTeacher {
            name: name.into(),
            arch: format!("test-conv/w{width}"),
            classes,
            checkpoint: format!("test-seed-{seed}"),
            dataset_hash: dataset_hash.into(),
            device,
            w1: uniform(seed, 1, &[w, c, 3, 3], s1, device),
            b1: uniform(seed, 2, &[w], 0.1, device),
            w2: uniform(seed, 3, &[w, w, 3, 3], s2, device),
            b2: uniform(seed, 4, &[w], 0.1, device),
            w3: uniform(seed, 5, &[w * 4, k], 3.0 / ((w * 4) as f64).sqrt(), device),
            b3: uniform(seed, 6, &[k], 0.5, device),
        }
    }
}

impl Teacher for ConvTeacher {
    fn name(&self) -> &str {
        &self.name
    }
    fn arch(&self) -> &str {
        &self.arch
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn checkpoint_hash(&self) -> &str {
        &self.checkpoint
    }
    fn dataset_hash(&self) -> &str {
        &self.dataset_hash
    }
    fn device(&self) -> Device {
        self.device
    }
    fn logits(&self, images: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let x = images.to_kind(Kind::Float).to_device(self.device);
        let x = x
            .conv2d(&self.w1, Some(&self.b1), [1, 1], [1, 1], [1, 1], 1)
            .relu();
        let x = x
            .conv2d(&self.w2, Some(&self.b2), [1, 1], [1, 1], [1, 1], 1)
            .relu();
        x.adaptive_avg_pool2d([2, 2])
            .flatten(1, -1)
            .matmul(&self.w3)
            + &self.b3
    }
}

/// A dataset artifact of `n` random `chw` images in `classes` classes (the
/// label shifts the image's brightness, so it is learnable), plus a small test split.
pub fn synthetic_dataset(
    dir: &Path,
    n: usize,
    classes: usize,
    chw: [usize; 3],
    seed: u64,
) -> PathBuf {
    let make = |n: usize, salt: u64| {
        let mut r = Rng::keyed(seed, &[salt]);
        let len: usize = chw.iter().product();
        let mut images = Vec::with_capacity(n * len);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let l = r.below(classes as u64) as u16;
            labels.push(l);
            let base = (l as u64 * 200 / classes.max(1) as u64) as u8;
            images.extend((0..len).map(|_| base.saturating_add(r.below(56) as u8)));
        }
        Split::in_memory(images, labels, chw)
    };
    let splits = vec![
        ("train".to_string(), make(n, 1)),
        ("test".to_string(), make(n / 4 + 1, 2)),
    ];
    let names: Vec<String> = (0..classes).map(|c| format!("class{c}")).collect();
    kd_data::write_dataset(dir, &splits, &names, "synthetic").expect("write dataset");
    let mut m = Manifest::new(
        kd_data::store::STAGE,
        json!({"synthetic": {"n": n, "classes": classes, "seed": seed}}),
    );
    m.metrics = json!({"num_classes": classes});
    m.write(dir).expect("dataset manifest");
    dir.into()
}

/// A teacher artifact directory (manifest only) for a [`ConvTeacher`];
/// left alone when it exists, so its hash stays put.
pub fn teacher_artifact(dir: &Path, name: &str, seed: u64, dataset_hash: &str) -> PathBuf {
    if dir.join(kd_core::manifest::MANIFEST).is_file() {
        return dir.into();
    }
    std::fs::create_dir_all(dir).expect("teacher dir");
    let m = Manifest::new(
        "teacher",
        json!({"name": name, "seed": seed, "dataset": dataset_hash}),
    );
    m.write(dir).expect("teacher manifest");
    dir.into()
}

impl ConvTeacher {
    /// Pretend to be another checkpoint (tests of drift detection).
    pub fn with_checkpoint(mut self, checkpoint: &str) -> Self {
        self.checkpoint = checkpoint.into();
        self
    }
}

/// The test virtualenv's Python with zarr 3 (`KD_PYTHON`, as `make test`
/// sets it). Missing, the calling test fails: a cross-check that cannot run
/// must not pass.
pub fn zarr_python() -> std::path::PathBuf {
    let py = std::env::var("KD_PYTHON")
        .unwrap_or_else(|_| "/root/.cache/kd/torch-2.11.0/bin/python".into());
    let probe = std::process::Command::new(&py)
        .args(["-c", "import zarr, numpy"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "needs a Python with zarr 3 and numpy at {py}: set KD_PYTHON (make test does; scripts/setup-libtorch.sh installs it)"
    );
    py.into()
}
