//! Importers on small generated files: read back equals source; every bad
//! input gives a one-line error naming the file, and no manifest.

use flate2::{Compression, write::GzEncoder};
use kd_core::manifest::{MANIFEST, Manifest};
use kd_core::{Outcome, RunOptions};
use kd_core::{ViewParams, ViewSpec};
use kd_data::augment::{assemble, lut};
use kd_data::idx::encode_idx;
use kd_data::stage::{Format, ImportConfig, import_stage};
use kd_data::{Dataset, Split};
use std::io::Write;
use std::path::Path;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(vec![], Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// n images of h x w with pixel = (i * 7 + y * w + x) % 256, label = i % 10.
fn synth(n: usize, h: usize, w: usize) -> (Vec<u8>, Vec<u8>) {
    let mut img = vec![];
    for i in 0..n {
        for p in 0..h * w {
            img.push(((i * 7 + p) % 256) as u8);
        }
    }
    (img, (0..n).map(|i| (i % 10) as u8).collect())
}

fn write_idx_dir(dir: &Path, n_train: usize, n_test: usize, gzipped: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let (img, lab) = synth(n, 6, 5);
        let (i, l) = (encode_idx(&[n, 6, 5], &img), encode_idx(&[n], &lab));
        let (i, l, ext) = if gzipped {
            (gz(&i), gz(&l), ".gz")
        } else {
            (i, l, "")
        };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), i).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), l).unwrap();
    }
}

fn cfg(format: Format, src: &Path) -> ImportConfig {
    ImportConfig {
        format: Some(format),
        src: Some(src.into()),
        ..Default::default()
    }
}

#[test]
fn idx_raw_and_gz_read_back_equal_source() {
    for gzipped in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        write_idx_dir(&src, 40, 20, gzipped);
        let out = t.path().join("ds");
        assert!(matches!(
            import_stage(&cfg(Format::Idx, &src), &out, &RunOptions::default()).unwrap(),
            Outcome::Wrote(_)
        ));
        let ds = Dataset::open(&out).unwrap();
        let (img, lab) = synth(40, 6, 5);
        let train = ds.split("train").unwrap();
        assert_eq!(train.chw, [1, 6, 5]);
        assert_eq!(train.images.as_slice().unwrap(), &img[..]);
        assert_eq!(
            train.labels,
            lab.iter().map(|&l| l as u16).collect::<Vec<_>>()
        );
        assert_eq!(ds.split("test").unwrap().len(), 20);
        assert_eq!(ds.num_classes(), 10);
        let mean = img.iter().map(|&v| v as f64 / 255.0).sum::<f64>() / img.len() as f64;
        assert!((ds.mean[0] as f64 - mean).abs() < 1e-5);
    }
}

#[test]
fn limits_and_validation_split_are_stratified_and_seeded() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx_dir(&src, 200, 100, true);
    let mut c = cfg(Format::Idx, &src);
    c.split.limit_train = Some(100);
    c.split.limit_test = Some(50);
    c.split.val_fraction = 0.2;
    let out = t.path().join("ds");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let counts = |s: &Split| s.class_counts(10);
    assert_eq!(counts(ds.split("train").unwrap()), vec![8; 10]);
    assert_eq!(counts(ds.split("val").unwrap()), vec![2; 10]);
    assert_eq!(counts(ds.split("test").unwrap()), vec![5; 10]);
    let again = t.path().join("ds2");
    import_stage(&c, &again, &RunOptions::default()).unwrap();
    assert_eq!(Dataset::open(&again).unwrap().splits, ds.splits);
}

#[test]
fn second_run_does_nothing_and_force_reruns() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx_dir(&src, 30, 10, false);
    let out = t.path().join("ds");
    let c = cfg(Format::Idx, &src);
    let Outcome::Wrote(m1) = import_stage(&c, &out, &RunOptions::default()).unwrap() else {
        panic!("first run must write")
    };
    assert!(matches!(
        import_stage(&c, &out, &RunOptions::default()).unwrap(),
        Outcome::UpToDate
    ));
    assert_eq!(Manifest::read(&out).unwrap(), *m1);
    assert!(matches!(
        import_stage(&c, &out, &RunOptions::default().force(true)).unwrap(),
        Outcome::Wrote(_)
    ));
    // Changed source data: the stage reruns on its own.
    write_idx_dir(&src, 31, 10, false);
    assert!(matches!(
        import_stage(&c, &out, &RunOptions::default()).unwrap(),
        Outcome::Wrote(_)
    ));
    assert_eq!(
        Dataset::open(&out).unwrap().split("train").unwrap().len(),
        31
    );
}

fn cifar_record(label_bytes: &[u8], seed: usize) -> Vec<u8> {
    let mut r = label_bytes.to_vec();
    r.extend((0..3072).map(|p| ((p * 3 + seed) % 251) as u8));
    r
}

#[test]
fn cifar10_and_cifar100_read_back() {
    let t = tempfile::tempdir().unwrap();
    let c10 = t.path().join("c10");
    std::fs::create_dir_all(&c10).unwrap();
    for b in 1..=5 {
        let recs: Vec<u8> = (0..3)
            .flat_map(|i| cifar_record(&[(b + i) as u8 % 10], b * 10 + i))
            .collect();
        std::fs::write(c10.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    std::fs::write(c10.join("test_batch.bin"), cifar_record(&[9], 99)).unwrap();
    std::fs::write(
        c10.join("batches.meta.txt"),
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    )
    .unwrap();
    let out = t.path().join("ds10");
    import_stage(&cfg(Format::Cifar, &c10), &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let train = ds.split("train").unwrap();
    assert_eq!((train.len(), train.chw), (15, [3, 32, 32]));
    assert_eq!(train.image(4).unwrap(), &cifar_record(&[0], 21)[1..]);
    assert_eq!(train.labels[4], 3);
    assert_eq!(ds.class_names[9], "truck");

    let c100 = t.path().join("c100");
    std::fs::create_dir_all(&c100).unwrap();
    std::fs::write(
        c100.join("train.bin"),
        [cifar_record(&[1, 57], 1), cifar_record(&[2, 99], 2)].concat(),
    )
    .unwrap();
    std::fs::write(c100.join("test.bin"), cifar_record(&[3, 0], 3)).unwrap();
    let out = t.path().join("ds100");
    import_stage(&cfg(Format::Cifar, &c100), &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.num_classes(), 100);
    assert_eq!(ds.split("train").unwrap().labels, vec![57, 99]);
    assert_eq!(
        ds.split("test").unwrap().image(0).unwrap(),
        &cifar_record(&[3, 0], 3)[2..]
    );
}

#[test]
fn image_folder_reads_classes_and_pixels() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("imgs");
    for (ci, class) in ["cat", "dog"].iter().enumerate() {
        let d = src.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..5 {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([(x * 10 + y + ci as u32 * 100 + i) as u8])
            });
            img.save(d.join(format!("{i}.png"))).unwrap();
        }
    }
    let mut c = cfg(Format::Folder, &src);
    c.size = Some(8);
    c.channels = 1;
    c.test_fraction = 0.2;
    let out = t.path().join("ds");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.class_names, vec!["cat", "dog"]);
    let (train, test) = (ds.split("train").unwrap(), ds.split("test").unwrap());
    assert_eq!((train.len(), test.len()), (8, 2));
    assert_eq!(test.class_counts(2), vec![1, 1]);
    // Same size: pixels pass through unchanged (row-major, y then x).
    let first = train.image(0).unwrap();
    let label = train.labels[0] as u32;
    let i = (first[0] as u32) - label * 100;
    assert_eq!(first[1] as u32, 10 + label * 100 + i);
    assert_eq!(first[8] as u32, 1 + label * 100 + i);

    // RGB, resized, with explicit train/ and test/.
    let src2 = t.path().join("split");
    for part in ["train", "test"] {
        for class in ["a", "b"] {
            let d = src2.join(part).join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::from_pixel(20, 10, image::Rgb([200, 10, 30]))
                .save(d.join("x.jpg"))
                .unwrap();
        }
    }
    let mut c = cfg(Format::Folder, &src2);
    c.size = Some(4);
    let out = t.path().join("ds2");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let s = ds.split("train").unwrap();
    assert_eq!((s.len(), s.chw), (2, [3, 4, 4]));
    assert!(
        s.image(0).unwrap()[..16].iter().all(|&v| v > 180),
        "red channel first (CHW)"
    );
}

/// Expect a failed import whose message names `file` and contains `what`.
fn expect_err(c: &ImportConfig, file: &str, what: &str) {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("ds");
    let e = import_stage(c, &out, &RunOptions::default()).unwrap_err();
    let msg = format!("{e}");
    assert!(
        msg.contains(file) && msg.contains(what),
        "message {msg:?} should name {file:?} and {what:?}"
    );
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert!(!out.join(MANIFEST).exists(), "no manifest on failure");
}

#[test]
fn bad_idx_inputs_are_refused_clearly() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let c = cfg(Format::Idx, &src);
    let labels = src.join("train-labels-idx1-ubyte");
    let images = src.join("train-images-idx3-ubyte");

    write_idx_dir(&src, 10, 5, false);
    std::fs::write(&images, b"PK\x03\x04 not idx").unwrap();
    expect_err(&c, "train-images-idx3-ubyte", "bad magic");

    write_idx_dir(&src, 10, 5, false);
    let full = std::fs::read(&images).unwrap();
    std::fs::write(&images, &full[..full.len() - 7]).unwrap();
    expect_err(&c, "train-images-idx3-ubyte", "truncated");

    write_idx_dir(&src, 10, 5, false);
    std::fs::write(&labels, encode_idx(&[9], &[0; 9])).unwrap();
    expect_err(&c, "train-labels-idx1-ubyte", "9 labels for 10 images");

    write_idx_dir(&src, 10, 5, false);
    let mut l = vec![1u8; 10];
    l[3] = 12;
    std::fs::write(&labels, encode_idx(&[10], &l)).unwrap();
    expect_err(
        &c,
        "train-labels-idx1-ubyte",
        "label 12 at index 3 is out of range",
    );

    std::fs::remove_file(&labels).unwrap();
    expect_err(&c, "train-labels-idx1-ubyte", "missing IDX file");

    expect_err(
        &cfg(Format::Idx, &t.path().join("nowhere")),
        "nowhere",
        "no such directory",
    );
}

#[test]
fn bad_cifar_and_folder_inputs_are_refused_clearly() {
    let t = tempfile::tempdir().unwrap();
    let c100 = t.path().join("c100");
    std::fs::create_dir_all(&c100).unwrap();
    std::fs::write(
        c100.join("train.bin"),
        [cifar_record(&[1, 5], 1), vec![0; 100]].concat(),
    )
    .unwrap();
    std::fs::write(c100.join("test.bin"), cifar_record(&[3, 0], 3)).unwrap();
    expect_err(
        &cfg(Format::Cifar, &c100),
        "train.bin",
        "corrupt CIFAR batch",
    );
    std::fs::write(c100.join("train.bin"), cifar_record(&[1, 150], 1)).unwrap();
    expect_err(
        &cfg(Format::Cifar, &c100),
        "train.bin",
        "label 150 out of range",
    );

    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    expect_err(&cfg(Format::Folder, &empty), "empty", "empty image folder");
    std::fs::create_dir_all(empty.join("cls")).unwrap();
    expect_err(&cfg(Format::Folder, &empty), "empty", "no PNG or JPEG");
    std::fs::write(empty.join("cls").join("broken.png"), b"not a png").unwrap();
    expect_err(
        &cfg(Format::Folder, &empty),
        "broken.png",
        "unreadable image",
    );
}

#[test]
fn views_are_identical_whatever_the_thread_count() {
    let (img, lab) = synth(64, 28, 28);
    let split = Split::in_memory(img, lab.into_iter().map(u16::from).collect(), [1, 28, 28]);
    // Pad-crop and resized-crop (bilinear) views alike.
    let specs = [
        ViewSpec {
            pad: 3,
            ..ViewSpec::default()
        },
        ViewSpec::resized(kd_core::CropRange::default(), true),
    ];
    for spec in specs {
        let hw = [28, 28];
        let idx: Vec<usize> = (0..64).rev().collect();
        let views: Vec<ViewParams> = idx
            .iter()
            .map(|&i| spec.draw(hw, 11, i as u64, 1 + (i % 4) as u64))
            .collect();
        let table = lut(&[0.3], &[0.4]);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| assemble(&split, &idx, &views, &spec, &table).unwrap())
        };
        let one = run(1);
        assert_eq!(one.len(), 64 * 784);
        for threads in [2, 3] {
            let other = run(threads);
            assert!(
                one.iter()
                    .zip(&other)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        // Not all views are the identity: the batch differs from the plain images.
        let plain: Vec<ViewParams> = idx
            .iter()
            .map(|&i| spec.draw(hw, 11, i as u64, 0))
            .collect();
        assert_ne!(one, assemble(&split, &idx, &plain, &spec, &table).unwrap());
    }
}

#[test]
fn deleted_dataset_chunks_are_refused_naming_the_file() {
    for array in ["images/c/0/0/0/0", "labels/c/0"] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        write_idx_dir(&src, 10, 5, false);
        let out = t.path().join("ds");
        import_stage(&cfg(Format::Idx, &src), &out, &RunOptions::default()).unwrap();
        Dataset::open(&out).unwrap();
        let chunk = out.join("dataset.zarr/train").join(array);
        assert!(chunk.is_file(), "{}", chunk.display());
        std::fs::remove_file(&chunk).unwrap();
        // Zarr would read the chunk as zeros: all-black images, all class 0.
        let msg = Dataset::open(&out).unwrap_err().to_string();
        assert!(
            msg.contains(&chunk.display().to_string())
                && msg.contains("missing")
                && msg.contains(&format!(
                    "of array /train/{}",
                    array.split('/').next().unwrap()
                )),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn all_zero_chunks_are_stored_and_read_back() {
    // A class-0-only split writes an all-zero label chunk: it must still be
    // a file, or the reader could not tell it from a deleted one.
    let t = tempfile::tempdir().unwrap();
    let split = Split::in_memory(vec![0; 3 * 4], vec![0; 3], [1, 2, 2]);
    let splits = vec![
        ("train".to_string(), split.clone()),
        ("test".to_string(), split),
    ];
    kd_data::write_dataset(t.path(), &splits, &["a".into(), "b".into()], "zeros").unwrap();
    Manifest::new("data", serde_json::json!({}))
        .write(t.path())
        .unwrap();
    assert!(t.path().join("dataset.zarr/train/labels/c/0").is_file());
    let ds = Dataset::open(t.path()).unwrap();
    assert_eq!(ds.split("train").unwrap().labels, vec![0; 3]);
}

fn png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(4, 4, image::Luma([9]))
        .save(path)
        .unwrap();
}

#[test]
fn folder_import_refuses_what_it_would_drop() {
    let t = tempfile::tempdir().unwrap();
    let folder = |name: &str, files: &[&str]| {
        let src = t.path().join(name);
        for f in files {
            if let Some(dir) = f.strip_suffix('/') {
                std::fs::create_dir_all(src.join(dir)).unwrap();
            } else {
                png(&src.join(f));
            }
        }
        let mut c = cfg(Format::Folder, &src);
        (c.size, c.channels, c.test_fraction) = (Some(4), 1, 0.5);
        (src, c)
    };
    // The good layout imports, hidden entries ignored.
    let (_, c) = folder(
        "ok",
        &[
            "a/1.png",
            "a/2.png",
            "b/1.png",
            "b/2.png",
            "a/.hidden/x.png",
        ],
    );
    import_stage(&c, &t.path().join("ok-ds"), &RunOptions::default()).unwrap();

    let (_, c) = folder("empty-class", &["a/1.png", "a/2.png", "b/"]);
    expect_err(
        &c,
        "empty-class/b",
        "class folder has no PNG or JPEG images",
    );
    let (_, c) = folder("nested", &["a/1.png", "a/2.png", "b/1.png", "b/more/2.png"]);
    expect_err(&c, "nested/b/more", "folder inside a class folder");
    let (_, c) = folder("stray", &["a/1.png", "b/1.png", "lost.png"]);
    expect_err(&c, "stray/lost.png", "image outside every class folder");
    let (_, c) = folder(
        "test-only",
        &[
            "train/a/1.png",
            "train/b/1.png",
            "test/a/1.png",
            "test/b/1.png",
            "test/c/1.png",
        ],
    );
    expect_err(&c, "test-only/test/c", "class folder not under train/");
    let (_, c) = folder("half", &["train/a/1.png", "train/b/1.png"]);
    expect_err(&c, "half", "has train/ but no test/");
}

/// A grey `w x h` PNG at `path` whose pixels are `f(x, y)`.
fn grey(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

/// `n` distinct 5x5 grey images per class under `dir/<class>/`; returns how
/// many were written before (the pattern's offset) plus these.
fn grey_classes(dir: &Path, classes: &[&str], n: usize, offset: usize) -> usize {
    let mut k = offset;
    for class in classes {
        for i in 0..n {
            let v = k;
            grey(&dir.join(class).join(format!("{i}.png")), 5, 5, |x, y| {
                (v * 11 + (x * 5 + y) as usize) as u8
            });
            k += 1;
        }
    }
    k
}

fn folder_cfg(src: &Path) -> ImportConfig {
    let mut c = cfg(Format::Folder, src);
    c.channels = 1;
    c
}

#[test]
fn folder_train_and_val_is_imagenets_layout_val_becomes_test() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("imagenet");
    let k = grey_classes(&src.join("train"), &["n01", "n02"], 3, 0);
    grey_classes(&src.join("val"), &["n01", "n02"], 2, k);
    let out = t.path().join("ds");
    import_stage(&folder_cfg(&src), &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.class_names, vec!["n01", "n02"]);
    assert_eq!(
        ds.splits.keys().collect::<Vec<_>>(),
        vec!["test", "train"],
        "no val split: val/ is the test split"
    );
    assert_eq!(ds.split("train").unwrap().class_counts(2), vec![3, 3]);
    assert_eq!(ds.split("test").unwrap().class_counts(2), vec![2, 2]);
    let test_origins = kd_data::origins(&out, "test").unwrap();
    assert_eq!(test_origins[0], "val/n01/0.png");
    assert!(test_origins.iter().all(|o| o.starts_with("val/")));

    // A val split can still be carved from train.
    let mut c = folder_cfg(&src);
    c.split.val_fraction = 0.34;
    let out = t.path().join("ds-val");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.split("val").unwrap().class_counts(2), vec![1, 1]);
    assert_eq!(ds.split("test").unwrap().len(), 4);
    assert!(
        kd_data::origins(&out, "val")
            .unwrap()
            .iter()
            .all(|o| o.starts_with("train/"))
    );
}

#[test]
fn folder_train_val_test_gives_three_splits_and_refuses_a_val_fraction() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("three");
    let mut k = grey_classes(&src.join("train"), &["a", "b", "c"], 4, 0);
    k = grey_classes(&src.join("val"), &["a", "b", "c"], 2, k);
    grey_classes(&src.join("test"), &["a", "b", "c"], 1, k);
    let out = t.path().join("ds");
    import_stage(&folder_cfg(&src), &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    for (split, n, prefix) in [
        ("train", 4, "train/"),
        ("val", 2, "val/"),
        ("test", 1, "test/"),
    ] {
        assert_eq!(
            ds.split(split).unwrap().class_counts(3),
            vec![n; 3],
            "{split}"
        );
        assert!(
            kd_data::origins(&out, split)
                .unwrap()
                .iter()
                .all(|o| o.starts_with(prefix)),
            "{split}"
        );
    }

    let mut c = folder_cfg(&src);
    c.split.val_fraction = 0.2;
    expect_err(&c, "three/val", "val_fraction = 0.2");
}

#[test]
fn folder_layouts_that_are_none_of_the_known_ones_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let make = |name: &str, parts: &[&str]| {
        let src = t.path().join(name);
        for p in parts {
            grey_classes(&src.join(p), &["a", "b"], 1, 0);
        }
        folder_cfg(&src)
    };
    expect_err(
        &make("train-only", &["train"]),
        "train-only",
        "has train/ but no test/ or val/",
    );
    expect_err(
        &make("val-only", &["val"]),
        "val-only",
        "has val/ but no train/",
    );
    expect_err(
        &make("no-train", &["val", "test"]),
        "no-train",
        "has val/ and test/ but no train/",
    );
    expect_err(
        &make("extra", &["train", "test", "more"]),
        "extra/more",
        "folder beside the split folders",
    );
}

#[test]
fn folder_crop_keeps_the_centre_and_squash_keeps_the_whole_image() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("wide");
    // 40x20: left and right quarters bright, the middle half dark.
    let wide = |x: u32, _y: u32| if (10..30).contains(&x) { 50 } else { 200 };
    for class in ["a", "b"] {
        for i in 0..2 {
            grey(&src.join(class).join(format!("{i}.png")), 40, 20, wide);
        }
    }
    let import = |size: u32, resize: Option<&str>, name: &str| {
        let mut c = folder_cfg(&src);
        c.size = Some(size);
        c.test_fraction = 0.5;
        if let Some(r) = resize {
            c.resize = r.parse().unwrap();
        }
        let out = t.path().join(name);
        import_stage(&c, &out, &RunOptions::default()).unwrap();
        Dataset::open(&out)
            .unwrap()
            .split("train")
            .unwrap()
            .image(0)
            .unwrap()
            .to_vec()
    };
    // Crop (the default): the shorter side is already 20, so the centre
    // 20 columns are cut out as they are: only the dark middle is left.
    let crop = import(20, None, "crop20");
    assert_eq!(crop, vec![50; 20 * 20]);
    // Shorter side 20 -> 10 (the image becomes 20x10), then the centre:
    // the inner columns are the middle's, only the two edges blend in a
    // little of the quarters.
    let crop = import(10, None, "crop10");
    for row in crop.chunks(10) {
        assert!(row[1..9].iter().all(|&v| v == 50), "{row:?}");
        assert!(row[0] < 125 && row[9] < 125, "{row:?}");
    }
    // Squash: the whole width, halved, so the quarters stay at the edges.
    let squash = import(20, Some("squash"), "squash20");
    for row in squash.chunks(20) {
        assert!(row[0] > 190 && row[19] > 190, "{row:?}");
        assert!(row[7..13].iter().all(|&v| v == 50), "{row:?}");
    }
    // The setting is part of the config: changing it re-imports.
    let mut c = folder_cfg(&src);
    (c.size, c.test_fraction) = (Some(20), 0.5);
    let out = t.path().join("crop20");
    assert!(matches!(
        import_stage(&c, &out, &RunOptions::default()).unwrap(),
        Outcome::UpToDate
    ));
    c.resize = "squash".parse().unwrap();
    assert!(matches!(
        import_stage(&c, &out, &RunOptions::default()).unwrap(),
        Outcome::Wrote(_)
    ));
}

#[test]
fn folder_without_size_keeps_one_square_size_or_names_the_image_that_differs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("square");
    grey_classes(&src, &["a", "b"], 3, 0);
    let out = t.path().join("ds");
    import_stage(&folder_cfg(&src), &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.chw(), [1, 5, 5]);
    // Kept as they are: every row equals its file's pixels.
    let train = ds.split("train").unwrap();
    for i in 0..train.len() {
        let file = src.join(ds.origin("train", i).unwrap());
        assert_eq!(
            train.image(i).unwrap(),
            *image::open(file).unwrap().to_luma8().as_raw()
        );
    }

    grey(&src.join("b/9.png"), 5, 4, |_, _| 0);
    expect_err(&folder_cfg(&src), "square/b/9.png", "image is 5x4 while");
    expect_err(&folder_cfg(&src), "square/a/0.png", "needs a size");

    let odd = t.path().join("odd");
    grey(&odd.join("a/0.png"), 6, 5, |_, _| 0);
    grey(&odd.join("b/0.png"), 6, 5, |_, _| 0);
    expect_err(&folder_cfg(&odd), "odd/a/0.png", "image is 6x5, not square");
}

#[test]
fn folder_origins_name_the_file_of_every_row_after_subsets_and_carves() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("traced");
    let k = grey_classes(&src.join("train"), &["a", "b", "c"], 6, 0);
    grey_classes(&src.join("test"), &["a", "b", "c"], 3, k);
    let mut c = folder_cfg(&src);
    c.split.limit_train = Some(12);
    c.split.limit_test = Some(6);
    c.split.val_fraction = 0.25;
    let out = t.path().join("ds");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    for (split, n) in [("train", 9), ("val", 3), ("test", 6)] {
        let s = ds.split(split).unwrap();
        assert_eq!(s.len(), n, "{split}");
        let all = kd_data::origins(&out, split).unwrap();
        assert_eq!(all.len(), n);
        for (i, o) in all.iter().enumerate() {
            assert_eq!(&kd_data::origin(&out, split, i).unwrap(), o);
            let pixels = image::open(src.join(o)).unwrap().to_luma8().into_raw();
            assert_eq!(s.image(i).unwrap(), &pixels[..], "{split} row {i}: {o}");
            let class = o.split('/').nth(1).unwrap();
            assert_eq!(ds.class_names[s.labels[i] as usize], class, "{o}");
        }
    }

    let e = kd_data::origin(&out, "train", 9).unwrap_err().to_string();
    assert!(e.contains("has 9 samples, no sample 9"), "{e}");
    let e = kd_data::origin(&out, "extra", 0).unwrap_err();
    assert!(
        matches!(e.core().and_then(kd_core::CoreError::as_input), Some(kd_core::InputError::NotFound { what, name, .. })
            if what == "split" && name == "extra"),
        "{e}"
    );

    // A dataset from before origins were recorded still opens; asking for
    // an origin says why there is none.
    std::fs::remove_dir_all(out.join("dataset.zarr/train/origin")).unwrap();
    assert_eq!(Dataset::open(&out).unwrap().splits, ds.splits);
    let e = kd_data::origin(&out, "train", 0).unwrap_err().to_string();
    assert!(
        e.contains("dataset.zarr") && e.contains("'train' records no sample origins"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert!(kd_data::origin(&out, "test", 0).is_ok());
}

#[test]
fn idx_and_cifar_origins_are_indices_in_the_source_files() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    write_idx_dir(&src, 200, 100, false);
    let mut c = cfg(Format::Idx, &src);
    c.split.limit_train = Some(50);
    c.split.limit_test = Some(20);
    c.split.val_fraction = 0.2;
    let out = t.path().join("ds");
    import_stage(&c, &out, &RunOptions::default()).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let (train_src, _) = synth(200, 6, 5);
    let (test_src, _) = synth(100, 6, 5);
    let mut seen = std::collections::BTreeSet::new();
    for (split, source) in [
        ("train", &train_src),
        ("val", &train_src),
        ("test", &test_src),
    ] {
        let s = ds.split(split).unwrap();
        for (i, o) in kd_data::origins(&out, split).unwrap().iter().enumerate() {
            let k: usize = o.parse().unwrap();
            assert_eq!(
                s.image(i).unwrap(),
                &source[k * 30..(k + 1) * 30],
                "{split} row {i}"
            );
            assert_eq!(s.labels[i] as usize, k % 10);
            if split != "test" {
                assert!(seen.insert(k), "train index {k} twice");
            }
        }
    }
    assert_eq!(seen.len(), 50);

    let c10 = t.path().join("c10");
    std::fs::create_dir_all(&c10).unwrap();
    for b in 1..=5 {
        let recs: Vec<u8> = (0..2)
            .flat_map(|i| cifar_record(&[i as u8], b * 10 + i))
            .collect();
        std::fs::write(c10.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    std::fs::write(c10.join("test_batch.bin"), cifar_record(&[9], 99)).unwrap();
    let out = t.path().join("ds10");
    import_stage(&cfg(Format::Cifar, &c10), &out, &RunOptions::default()).unwrap();
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(kd_data::origins(&out, "train").unwrap(), want);
    assert_eq!(kd_data::origins(&out, "test").unwrap(), vec!["0"]);
}

#[test]
fn zarr_python_reads_the_origins() {
    // The test virtualenv's Python with zarr 3 (`KD_PYTHON`, as `make test`
    // sets it). Missing, this test fails: a cross-check that cannot run
    // must not pass.
    let py = std::env::var("KD_PYTHON")
        .unwrap_or_else(|_| "/root/.cache/kd/torch-2.11.0/bin/python".into());
    let probe = std::process::Command::new(&py)
        .args(["-c", "import zarr"])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "needs a Python with zarr 3 at {py}: set KD_PYTHON (make test does)"
    );
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("py");
    let k = grey_classes(&src.join("train"), &["a", "b"], 3, 0);
    grey_classes(&src.join("test"), &["a", "b"], 1, k);
    let out = t.path().join("ds");
    import_stage(&folder_cfg(&src), &out, &RunOptions::default()).unwrap();
    let script = r#"
import json, sys, zarr
g = zarr.open_group(sys.argv[1], mode="r")
a = g["train/origin"]
print(json.dumps({"kind": a.attrs["kind"], "origins": [str(x) for x in a[:]], "one": str(g["test/origin"][1])}))
"#;
    let o = std::process::Command::new(&py)
        .args(["-c", script])
        .arg(out.join("dataset.zarr"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "path");
    let origins: Vec<String> = serde_json::from_value(v["origins"].clone()).unwrap();
    assert_eq!(origins, kd_data::origins(&out, "train").unwrap());
    assert_eq!(origins[0], "train/a/0.png");
    assert_eq!(v["one"], kd_data::origin(&out, "test", 1).unwrap());
}
