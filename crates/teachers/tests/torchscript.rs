//! TorchScript teachers: a small PyTorch CNN, scripted and traced by the test
//! virtualenv's torch, imported with `import_stage`, gives the same logits in
//! kd as in PyTorch; a module of the wrong input or class count is refused
//! with one clear error and no artifact.

mod common;

use kd_core::Silent;
use kd_data::Dataset;
use kd_data::augment::{batch_tensor, lut};
use kd_teachers::torchscript::{ImportConfig, import_stage};
use kd_teachers::{Outcome, RunOptions, evaluate, load};
use std::path::Path;
use std::process::Command;
use tch::{Device, Tensor};

const PY: &str = r#"
import sys, numpy as np, torch, torch.nn as nn
out, n_in, classes, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(n_in, 4, 3, padding=1)
        self.fc = nn.Linear(16, classes)
    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = nn.functional.adaptive_avg_pool2d(y, 2).flatten(1)
        return self.fc(y)
net = Net().eval()
m = torch.jit.script(net) if mode == "script" else torch.jit.trace(net, torch.zeros(2, n_in, 12, 12))
m.save(out)
if len(sys.argv) > 5:
    raw = np.fromfile(sys.argv[5], dtype=np.float32).reshape(-1, 1, 12, 12)
    with torch.no_grad():
        z = m((torch.from_numpy(raw) - 0.5) / 0.25)
    z.numpy().astype(np.float32).tofile(sys.argv[6])
"#;

fn python() -> std::path::PathBuf {
    common::python()
        .expect("needs the test virtualenv's python with torch: set KD_PYTHON (make test does)")
}

fn export(
    dir: &Path,
    name: &str,
    n_in: usize,
    classes: usize,
    mode: &str,
    io: Option<(&Path, &Path)>,
) -> std::path::PathBuf {
    let out = dir.join(name);
    // torch.jit.script reads the class's source: it must live in a file.
    let script = dir.join("export.py");
    std::fs::write(&script, PY).unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(&out)
        .arg(n_in.to_string())
        .arg(classes.to_string())
        .arg(mode);
    if let Some((i, o)) = io {
        cmd.arg(i).arg(o);
    }
    let r = cmd.output().expect("python runs");
    assert!(
        r.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    out
}

fn cfg(name: &str) -> ImportConfig {
    ImportConfig {
        name: name.into(),
        mean: Some(vec![0.5]),
        std: Some(vec![0.25]),
        eval_batch_size: 16,
    }
}

#[test]
fn scripted_and_traced_modules_give_pytorchs_logits() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 64, 40, 0);
    let ds = Dataset::open(&data).unwrap();
    let test = ds.split("test").unwrap();
    // The raw test pixels in [0, 1], for PyTorch.
    let raw: Vec<f32> = (test.images.as_slice().unwrap().iter())
        .map(|&p| p as f32 / 255.0)
        .collect();
    let raw_path = t.path().join("raw.f32");
    std::fs::write(
        &raw_path,
        raw.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    for mode in ["script", "trace"] {
        let want_path = t.path().join(format!("{mode}.f32"));
        let pt = export(
            t.path(),
            &format!("{mode}.pt"),
            1,
            4,
            mode,
            Some((&raw_path, &want_path)),
        );
        let out = t.path().join(mode);
        let Outcome::Wrote(man) = import_stage(
            &pt,
            &cfg(mode),
            &data,
            &out,
            &RunOptions::new(Device::Cpu, &Silent),
        )
        .unwrap() else {
            panic!("expected an imported teacher")
        };
        assert_eq!(man.stage, "teacher");
        assert!(out.join("model.pt").is_file());
        // kd hands teachers dataset-normalised images; the teacher re-normalises.
        let teacher = load(&out, Device::Cpu).unwrap();
        assert_eq!(teacher.arch(), format!("torchscript/{mode}"));
        let idx: Vec<usize> = (0..test.len()).collect();
        let spec = kd_core::ViewSpec::default();
        let views = vec![spec.plain([test.chw[1], test.chw[2]]); idx.len()];
        let x = batch_tensor(
            test,
            &idx,
            &views,
            &spec,
            &lut(&ds.mean, &ds.std),
            Device::Cpu,
        )
        .unwrap();
        let got = teacher.logits(&x);
        let want: Vec<f32> = std::fs::read(&want_path)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let want = Tensor::from_slice(&want).view([idx.len() as i64, 4]);
        let err = f64::try_from((&got - &want).abs().max()).unwrap();
        assert!(err < 1e-5, "{mode}: kd and PyTorch differ by {err}");
        // Its test accuracy is that of these logits.
        let acc = man.metrics["test_accuracy"].as_f64().unwrap();
        let pred: Vec<i64> = Vec::try_from(want.argmax(-1, false)).unwrap();
        let right = pred
            .iter()
            .zip(&test.labels)
            .filter(|(p, l)| **p == **l as i64)
            .count();
        assert!((acc - right as f64 / idx.len() as f64).abs() < 1e-9);
        let ev = evaluate(&out, &data, "test", Device::Cpu, &Silent).unwrap();
        assert!((ev.stats.accuracy - acc).abs() < 1e-9);
        // Idempotent like every stage.
        assert!(matches!(
            import_stage(
                &pt,
                &cfg(mode),
                &data,
                &out,
                &RunOptions::new(Device::Cpu, &Silent)
            )
            .unwrap(),
            Outcome::UpToDate
        ));
    }
}

#[test]
fn wrong_classes_or_input_shape_is_one_clear_error() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 32, 8, 0);
    let five = export(t.path(), "five.pt", 1, 5, "script", None);
    let out = t.path().join("five");
    let e = import_stage(
        &five,
        &cfg("five"),
        &data,
        &out,
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("five.pt") && e.contains("[2, 4] logits (4 classes)"),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists());
    let rgb = export(t.path(), "rgb.pt", 3, 4, "trace", None);
    let e = import_stage(
        &rgb,
        &cfg("rgb"),
        &data,
        &t.path().join("rgb"),
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("rgb.pt") && e.contains("does not run on [2, 1, 12, 12]"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let junk = t.path().join("junk.pt");
    std::fs::write(&junk, b"not a module").unwrap();
    let e = import_stage(
        &junk,
        &cfg("junk"),
        &data,
        &t.path().join("junk"),
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a TorchScript module"), "{e}");
    let mut bad = cfg("bad");
    bad.std = Some(vec![0.0]);
    let e = import_stage(
        &five,
        &bad,
        &data,
        &t.path().join("bad"),
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("setting std"), "{e}");
}
