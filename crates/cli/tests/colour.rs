//! Colour end to end: every stage (data import, both teachers,
//! cache build, verify, inspect, student, report) from the command line on
//! 32x32x3 images in CIFAR's binary form and as an image folder, and on
//! 64x64x3 folder images with resized-crop views, and 40x40x3 ones with
//! resized-crop views of 32 px (stored larger than trained on). Synthetic images whose
//! class is in their colour, tiny models, one epoch: the point is that the
//! shapes, the stored view boxes and the artifacts hold, not the accuracy.

use std::path::Path;
use std::process::{Command, Output};

fn kd(cwd: &Path, args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kd"))
        .args(args.split_whitespace())
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kd runs")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Image `i` of class `c`: a colour per class (one channel bright), with a
/// position-dependent texture so views differ.
fn pixel(c: usize, i: usize, ch: usize, y: usize, x: usize) -> u8 {
    let base = if ch == c % 3 { 170 } else { 40 + 30 * (c / 3) };
    (base + (y * 3 + x * 5 + i * 11) % 40) as u8
}

const CLASSES: usize = 4;

/// CIFAR-10 binary: `data_batch_{1..5}.bin` of 8 records, `test_batch.bin`
/// of 12; a record is a label byte and 3072 pixel bytes (planes R, G, B).
fn write_cifar(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let batch = |n: usize, salt: usize| {
        let mut b = vec![];
        for i in 0..n {
            let c = (i + salt) % CLASSES;
            b.push(c as u8);
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        b.push(pixel(c, i + salt, ch, y, x));
                    }
                }
            }
        }
        b
    };
    for k in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{k}.bin")), batch(8, k * 8)).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(12, 100)).unwrap();
}

/// `dir/{train,test}/<class>/<i>.png`, RGB, `size` px.
fn write_folder(dir: &Path, size: u32) {
    for (split, n) in [("train", 10usize), ("test", 4)] {
        for c in 0..CLASSES {
            let d = dir.join(split).join(format!("class{c}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(size, size, |x, y| {
                    image::Rgb([0, 1, 2].map(|ch| pixel(c, i, ch, y as usize, x as usize)))
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// Teachers, store, verify, inspect, student and report on `run/dataset`;
/// returns the store's inspect report.
fn stages(root: &Path, cache_flags: &str) -> serde_json::Value {
    for (name, arch, preset) in [
        ("cnn", "cnn", "cnn-tiny"),
        ("involution", "involution", "rednet-tiny"),
    ] {
        ok(&kd(
            root,
            &format!(
                "teacher train --arch {arch} --preset {preset} --epochs 1 --batch-size 16 \
                 --device cpu --dataset run/dataset --out run/teachers/{name}"
            ),
        ));
    }
    ok(&kd(
        root,
        &format!(
            "cache build --dataset run/dataset --teacher run/teachers/cnn \
             --teacher run/teachers/involution --views 3 --shard-samples 16 \
             --chunk-samples 8 --device cpu --out run/logits {cache_flags}"
        ),
    ));
    let v = ok(&kd(
        root,
        "cache verify run/logits --samples 40 --device cpu --json",
    ));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let text = ok(&kd(root, "cache inspect run/logits"));
    assert!(text.contains("raw size = N x K x (T x "), "{text}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&kd(root, "cache inspect run/logits --json"))).unwrap();
    ok(&kd(
        root,
        "student train --dataset run/dataset --teachers cache:run/logits --preset vit-test \
         --epochs 1 --batch-size 16 --device cpu --out run/student/ensemble",
    ));
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("run/student/ensemble/metrics.json")).unwrap(),
    )
    .unwrap();
    assert!(m.to_string().contains("test_acc"), "{m}");
    ok(&kd(root, "report --run run --out run/report"));
    assert!(root.join("run/report/manifest.json").is_file());
    inspect
}

fn chw(root: &Path) -> Vec<u64> {
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("run/dataset/dataset.zarr/train/images/zarr.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_value(meta["shape"].clone()).unwrap()
}

#[test]
fn cifar_binary_32px_colour_runs_every_stage() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_cifar(&root.join("src"));
    ok(&kd(
        root,
        "data import --format cifar --src src --out run/dataset",
    ));
    assert_eq!(chw(root), [40, 3, 32, 32]);
    let r = stages(root, "");
    // Pad-crop views: three uint8 parameters per view; CIFAR-10's 10
    // classes (4 of them present) in f16.
    assert_eq!(r["size"]["row"], 20);
    assert_eq!(r["size"]["view"], 3);
}

#[test]
fn image_folder_32px_colour_runs_every_stage() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_folder(&root.join("imgs"), 32);
    ok(&kd(
        root,
        "data import --format folder --src imgs --size 32 --channels 3 --out run/dataset",
    ));
    assert_eq!(chw(root), [40, 3, 32, 32]);
    stages(root, "--dtype f32");
}

#[test]
fn image_folder_64px_with_resized_crop_views_runs_every_stage() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_folder(&root.join("imgs"), 64);
    ok(&kd(
        root,
        "data import --format folder --src imgs --size 64 --channels 3 --out run/dataset",
    ));
    assert_eq!(chw(root), [40, 3, 64, 64]);
    let r = stages(
        root,
        "--crop resized-crop --crop-scale 0.25,1 --crop-ratio 0.75,1.3333",
    );
    // Resized-crop views: five uint16 parameters per view.
    assert_eq!(r["size"]["view"], 10);
    let params: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("run/logits/logits.zarr/views/params/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(params["data_type"], "uint16");
    assert_eq!(
        params["attributes"]["fields"],
        serde_json::json!(["y", "x", "h", "w", "flip"])
    );
    // The student recorded the store's crop in its config.
    let manifest =
        std::fs::read_to_string(root.join("run/student/ensemble/manifest.json")).unwrap();
    assert!(manifest.contains("view_crop"), "{manifest}");
    // A bad range is one clear line.
    let o = kd(
        root,
        "cache build --dataset run/dataset --teacher run/teachers/cnn --crop resized-crop \
         --crop-scale 0.5,0.2 --device cpu --out run/logits-bad",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("crop_scale"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = kd(
        root,
        "cache build --dataset run/dataset --teacher run/teachers/cnn --crop squash \
         --device cpu --out run/logits-bad",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--crop") && err.contains("'squash'"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn images_stored_larger_than_their_views_train_at_the_view_size() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    write_folder(&root.join("imgs"), 40);
    ok(&kd(
        root,
        "data import --format folder --src imgs --size 40 --channels 3 --out run/dataset",
    ));
    assert_eq!(chw(root), [40, 3, 40, 40]);
    // A teacher trained on 32 px views of its own (a profile's [view] size),
    // and one trained on the stored 40 px images: both label 32 px views.
    std::fs::write(
        root.join("p.toml"),
        "[teachers.cnn]\narch = \"cnn\"\npreset = \"cnn-tiny\"\n\
         [teachers.cnn.view]\npad = 0\nflip = true\nsize = 32\n\
         resized_crop = { scale = [0.25, 1.0], ratio = [0.75, 1.3333] }\n",
    )
    .unwrap();
    ok(&kd(
        root,
        "teacher train --profile p.toml --name cnn --epochs 1 --batch-size 16 --device cpu \
         --dataset run/dataset --out run/teachers/cnn",
    ));
    let cfg = std::fs::read_to_string(root.join("run/teachers/cnn/config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["chw"], serde_json::json!([3, 32, 32]), "{cfg}");
    assert_eq!(cfg["teacher"]["view"]["size"], 32, "{cfg}");
    ok(&kd(
        root,
        "teacher train --arch involution --preset rednet-tiny --epochs 1 --batch-size 16 \
         --device cpu --dataset run/dataset --out run/teachers/involution",
    ));
    ok(&kd(
        root,
        "cache build --dataset run/dataset --teacher run/teachers/cnn \
         --teacher run/teachers/involution --views 3 --crop resized-crop --view-size 32 \
         --mix cutmix --mix-prob 1 --device cpu --out run/logits",
    ));
    let v = ok(&kd(
        root,
        "cache verify run/logits --samples 40 --device cpu --json",
    ));
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // The store records the views' size for its readers.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("run/logits/logits.zarr/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["attributes"]["view_spec"]["size"], 32, "{meta}");
    ok(&kd(
        root,
        "student train --dataset run/dataset --teachers cache:run/logits --preset vit-test \
         --epochs 1 --batch-size 16 --device cpu --out run/student/ensemble",
    ));
    let cfg = std::fs::read_to_string(root.join("run/student/ensemble/config.json")).unwrap();
    assert!(cfg.contains("\"image_size\": 32"), "{cfg}");
    assert!(cfg.contains("\"view_size\": 32"), "{cfg}");
    let e = ok(&kd(
        root,
        "student eval --student run/student/ensemble --split test --device cpu --json",
    ));
    assert!(e.contains("agreement"), "{e}");
    ok(&kd(
        root,
        "teacher eval --teacher run/teachers/cnn --dataset run/dataset --split test --device cpu",
    ));
    ok(&kd(
        root,
        "cache gallery run/logits --out run/gallery.png --count 4",
    ));
    // A size for pad-crop views is one clear line naming the setting.
    let o = kd(
        root,
        "cache build --dataset run/dataset --teacher run/teachers/cnn --view-size 32 \
         --device cpu --out run/logits-bad",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("view_size"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
