//! Images per split: from an imported dataset, or counted cheaply from the
//! raw source (IDX headers, CIFAR file sizes, a folder's file count).

use super::*;

/// Images per split, and where the counts came from.
#[derive(Clone, Debug, Serialize)]
pub struct Images {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub chw: [usize; 3],
    pub classes: usize,
    /// `dataset:DIR` (an imported artifact) or `raw:<format>:DIR`.
    pub source: String,
    /// Images the raw source holds before limits (raw sources only).
    pub raw_train: Option<usize>,
    pub raw_test: Option<usize>,
    /// Bytes of the raw source files (raw sources only).
    #[serde(skip)]
    pub(super) raw_bytes: u64,
    /// Folder sources: a few image files, to time decoding.
    #[serde(skip)]
    pub(super) sample_files: Vec<PathBuf>,
}

impl Images {
    /// uint8 `[N, C, H, W]` of every split, as `kd_data::Dataset` holds them.
    pub(super) fn dataset_bytes(&self) -> u64 {
        let [c, h, w] = self.chw;
        ((self.train + self.val + self.test) * c * h * w) as u64
    }
}

pub(super) fn from_dataset(dir: &Path) -> anyhow::Result<Images> {
    let m = Manifest::read_stage(dir, kd_data::store::STAGE)?;
    let samples = &m.metrics["samples"];
    let n = |k: &str| samples[k].as_u64().unwrap_or(0) as usize;
    let chw: [usize; 3] = serde_json::from_value(m.metrics["chw"].clone())
        .with_context(|| format!("{}: manifest has no chw", dir.display()))?;
    let classes = m.metrics["num_classes"].as_u64().unwrap_or(0) as usize;
    Ok(Images {
        train: n("train"),
        val: n("val"),
        test: n("test"),
        chw,
        classes,
        source: format!("dataset:{}", dir.display()),
        raw_train: None,
        raw_test: None,
        raw_bytes: 0,
        sample_files: vec![],
    })
}

/// The first bytes of a raw or gzipped file.
pub(super) fn head(path: &Path, n: usize) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut buf = vec![0u8; n];
    let read = if path.extension().is_some_and(|e| e == "gz") {
        let mut r = flate2::read::GzDecoder::new(f);
        r.read_exact(&mut buf).map(|_| n)
    } else {
        let mut f = f;
        f.read_exact(&mut buf).map(|_| n)
    };
    read.with_context(|| format!("{}: too short for an IDX header", path.display()))?;
    Ok(buf)
}

pub(super) fn find_idx(src: &Path, stem: &str) -> anyhow::Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    for name in [
        format!("{stem}.gz"),
        stem.to_string(),
        format!("{dotted}.gz"),
        dotted,
    ] {
        let p = src.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: missing IDX file {stem} (raw or .gz)", src.display())
}

/// Dimensions from an IDX images file's header.
pub(super) fn idx_dims(path: &Path) -> anyhow::Result<Vec<usize>> {
    let h = head(path, 4)?;
    if h[0] != 0 || h[1] != 0 || h[2] != 0x08 {
        bail!("{}: not an unsigned-byte IDX file", path.display());
    }
    let nd = h[3] as usize;
    let h = head(path, 4 + 4 * nd)?;
    Ok((0..nd)
        .map(|i| u32::from_be_bytes(h[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect())
}

pub(super) fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub(super) fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

pub(super) fn visible_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Image files per class folder of `dir`: (class names, files).
pub(super) fn class_images(dir: &Path) -> anyhow::Result<(Vec<String>, Vec<PathBuf>)> {
    let mut classes = vec![];
    let mut files = vec![];
    for p in visible_entries(dir)? {
        if p.is_dir() {
            classes.push(p.file_name().unwrap().to_string_lossy().to_string());
            files.extend(
                visible_entries(&p)?
                    .into_iter()
                    .filter(|f| f.is_file() && is_image(f)),
            );
        }
    }
    Ok((classes, files))
}

pub(super) fn from_raw(cfg: &ImportConfig, src: &Path) -> anyhow::Result<Images> {
    let format = cfg
        .format
        .context("[data] format: not given (idx, cifar or folder)")?;
    if !src.is_dir() {
        bail!(
            "{}: no such directory (the raw data; [data] src, or import it and give --dataset)",
            src.display()
        );
    }
    let mut sample_files = vec![];
    let (train, test, val, chw, classes, raw_bytes, name) = match format {
        Format::Idx => {
            let tr = find_idx(src, "train-images-idx3-ubyte")?;
            let te = find_idx(src, "t10k-images-idx3-ubyte")?;
            let (d, t) = (idx_dims(&tr)?, idx_dims(&te)?);
            if d.len() != 3 || t.len() != 3 {
                bail!("{}: IDX images must be [N, H, W]", tr.display());
            }
            let classes = cfg
                .class_names
                .as_ref()
                .map_or_else(|| kd_data::idx::default_class_names(src).len(), Vec::len);
            let bytes = file_len(&tr) + file_len(&te);
            (d[0], t[0], None, [1, d[1], d[2]], classes, bytes, "idx")
        }
        Format::Cifar => {
            let c10: Vec<PathBuf> = (1..=5)
                .map(|i| src.join(format!("data_batch_{i}.bin")))
                .collect();
            let (files, test, rec, classes, name) = if c10.iter().all(|p| p.is_file()) {
                (c10, src.join("test_batch.bin"), 3073u64, 10, "cifar10")
            } else {
                (
                    vec![src.join("train.bin")],
                    src.join("test.bin"),
                    3074,
                    100,
                    "cifar100",
                )
            };
            for f in files.iter().chain([&test]) {
                let n = file_len(f);
                if !f.is_file() || n == 0 || n % rec != 0 {
                    bail!(
                        "{}: not a CIFAR batch of {rec}-byte records (need data_batch_1..5.bin + test_batch.bin, or train.bin + test.bin)",
                        f.display()
                    );
                }
            }
            let train: u64 = files.iter().map(|f| file_len(f) / rec).sum();
            let bytes = files.iter().map(|f| file_len(f)).sum::<u64>() + file_len(&test);
            (
                train as usize,
                (file_len(&test) / rec) as usize,
                None,
                [3, 32, 32],
                classes,
                bytes,
                name,
            )
        }
        Format::Folder => {
            let split_dir = |s: &str| Some(src.join(s)).filter(|p| p.is_dir());
            let (classes, train, val, test) = match split_dir("train") {
                Some(tr) => {
                    let (classes, train) = class_images(&tr)?;
                    let (val, test) = match (split_dir("val"), split_dir("test")) {
                        (v, Some(t)) => (
                            v.map(|v| class_images(&v)).transpose()?.map(|x| x.1),
                            class_images(&t)?.1,
                        ),
                        (Some(v), None) => (None, class_images(&v)?.1),
                        (None, None) => bail!("{}: train/ without test/ or val/", src.display()),
                    };
                    (classes, train, val, test)
                }
                None => {
                    let (classes, all) = class_images(src)?;
                    let ntest = ((all.len() as f64) * cfg.test_fraction).round() as usize;
                    if ntest == 0 || ntest >= all.len() {
                        bail!(
                            "{}: {} images cannot be split with test fraction {}",
                            src.display(),
                            all.len(),
                            cfg.test_fraction
                        );
                    }
                    let (te, tr) = all.split_at(ntest);
                    (classes, tr.to_vec(), None, te.to_vec())
                }
            };
            if train.is_empty() {
                bail!("{}: no PNG/JPEG images in class folders", src.display());
            }
            let size = match cfg.size {
                Some(s) => s as usize,
                None => {
                    let (w, h) = image::image_dimensions(&train[0])
                        .with_context(|| format!("{}", train[0].display()))?;
                    if w != h {
                        bail!(
                            "{}: {w}x{h} images and no [data] size (a folder import needs one square size)",
                            train[0].display()
                        );
                    }
                    w as usize
                }
            };
            let all = train.len() + test.len() + val.as_ref().map_or(0, Vec::len);
            let step = (train.len() / 4).max(1);
            sample_files = train.iter().step_by(step).take(4).cloned().collect();
            let bytes = train
                .iter()
                .chain(&test)
                .chain(val.iter().flatten())
                .map(|f| file_len(f))
                .sum();
            let _ = all;
            (
                train.len(),
                test.len(),
                val.map(|v| v.len()),
                [cfg.channels, size, size],
                classes.len(),
                bytes,
                "folder",
            )
        }
    };
    let s = &cfg.split;
    let ltrain = s.limit_train.map_or(train, |l| l.min(train));
    let ltest = s.limit_test.map_or(test, |l| l.min(test));
    let (train_n, val_n) = match val {
        Some(v) => {
            if s.val_fraction > 0.0 {
                bail!(
                    "[data] val_fraction = {}: the folder already gives val/",
                    s.val_fraction
                );
            }
            (ltrain, v)
        }
        None => {
            if !(0.0..1.0).contains(&s.val_fraction) {
                bail!(
                    "[data] val_fraction = {}: must be in [0, 1)",
                    s.val_fraction
                );
            }
            let nval = ((ltrain as f64) * s.val_fraction).round() as usize;
            (ltrain - nval, nval)
        }
    };
    Ok(Images {
        train: train_n,
        val: val_n,
        test: ltest,
        chw,
        classes,
        source: format!("raw:{name}:{}", src.display()),
        raw_train: Some(train),
        raw_test: Some(test),
        raw_bytes,
        sample_files,
    })
}
