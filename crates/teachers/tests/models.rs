//! Forward shapes, parameter names (read back by Python), and each
//! architecture's ability to memorise a batch.

mod common;

use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::stage::param_count;
use kd_teachers::cnn::CnnConfig;
use kd_teachers::model::{Arch, ModelConfig, Net};
use kd_teachers::rednet::RedNetConfig;
use std::collections::BTreeMap;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

fn all_presets() -> Vec<(Arch, &'static str)> {
    let mut v = vec![];
    for arch in [Arch::Cnn, Arch::Involution] {
        for p in arch.presets() {
            v.push((arch, *p));
        }
    }
    v
}

#[test]
fn forward_shapes_for_every_preset() {
    let _g = tch::no_grad_guard();
    for (arch, preset) in all_presets() {
        let cfg = ModelConfig::preset(arch, preset).unwrap();
        for (c, hw, classes) in [(1, 28, 10), (3, 32, 7)] {
            let vs = VarStore::new(Device::Cpu);
            let net = Net::new(&vs.root(), &cfg, c, classes);
            let x = Tensor::randn([3, c, hw, hw], (Kind::Float, Device::Cpu));
            for train in [true, false] {
                let y = net.forward_t(&x, train);
                assert_eq!(y.size(), [3, classes], "{preset} on {c}x{hw}x{hw}");
                assert!(
                    f64::try_from(y.isfinite().all().to_kind(Kind::Float)).unwrap() == 1.0,
                    "{preset} on {c}x{hw}x{hw}, train {train}: {}",
                    y.abs().max()
                );
            }
        }
    }
    assert!(ModelConfig::preset(Arch::Cnn, "rednet-small").is_err());
}

#[test]
fn preset_sizes() {
    let count = |arch, p| {
        let vs = VarStore::new(Device::Cpu);
        let _n = Net::new(&vs.root(), &ModelConfig::preset(arch, p).unwrap(), 1, 10);
        param_count(&vs)
    };
    let small = count(Arch::Cnn, "cnn-small");
    assert!(
        (250_000..350_000).contains(&small),
        "cnn-small has {small} parameters"
    );
    assert!(count(Arch::Cnn, "cnn-tiny") < 10_000);
    assert!(count(Arch::Involution, "rednet-tiny") < 10_000);
    let red = count(Arch::Involution, "rednet-small");
    assert!(
        (30_000..200_000).contains(&red),
        "rednet-small has {red} parameters"
    );
    assert_eq!(
        CnnConfig::PRESETS.len() + RedNetConfig::PRESETS.len(),
        all_presets().len()
    );
}

/// Each architecture memorises 64 images with random labels (eval mode, so
/// BatchNorm's running statistics are part of what is checked).
#[test]
fn tiny_presets_overfit_a_batch_of_64() {
    for (arch, preset) in [(Arch::Cnn, "cnn-tiny"), (Arch::Involution, "rednet-tiny")] {
        let _rng = kd_core::torch_rng_lock();
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let net = Net::new(
            &vs.root(),
            &ModelConfig::preset(arch, preset).unwrap(),
            1,
            10,
        );
        let x = Tensor::randn([64, 1, 16, 16], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        );
        let acc = |net: &Net| {
            let _g = tch::no_grad_guard();
            let p = net.forward_t(&x, false).argmax(1, false);
            f64::try_from(p.eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float)).unwrap()
        };
        let first = acc(&net);
        let mut steps = 0;
        let mut best = 0.0;
        while steps < 400 {
            for _ in 0..10 {
                opt.zero_grad().unwrap();
                let loss = net.forward_t(&x, true).cross_entropy_loss::<Tensor>(
                    &y,
                    None,
                    Reduction::Mean,
                    -100,
                    0.0,
                );
                loss.backward();
                opt.step(1e-2).unwrap();
                steps += 1;
            }
            best = acc(&net);
            if best == 1.0 {
                break;
            }
        }
        assert!(
            first < 0.5,
            "{preset} starts at {first}: the task is not a memorisation test"
        );
        assert_eq!(
            best, 1.0,
            "{preset}: train accuracy {best} after {steps} steps"
        );
        eprintln!("{preset}: 100% of 64 random-label images after {steps} steps");
    }
}

/// The documented key names are what Python's safetensors sees.
#[test]
fn weights_load_in_python_with_pytorch_names() {
    let py = common::python().expect(
        "needs the test virtualenv's Python with safetensors: set KD_PYTHON (make test does)",
    );
    let t = tempfile::tempdir().unwrap();
    let cases = [
        (
            Arch::Cnn,
            "cnn-tiny",
            vec![
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "layer1.0.conv1.weight",
                "layer1.0.bn2.weight",
                "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.running_var",
                "fc.weight",
                "fc.bias",
            ],
        ),
        (
            Arch::Involution,
            "rednet-tiny",
            vec![
                "conv1.weight",
                "bn1.weight",
                "layer1.0.conv1.weight",
                "layer1.0.bn1.weight",
                "layer1.0.conv2.conv1.conv.weight",
                "layer1.0.conv2.conv1.bn.running_mean",
                "layer1.0.conv2.conv2.conv.weight",
                "layer1.0.conv2.conv2.conv.bias",
                "layer1.0.bn2.weight",
                "layer1.0.conv3.weight",
                "layer1.0.bn3.weight",
                "layer2.0.downsample.1.weight",
                "layer2.0.downsample.2.weight",
                "fc.weight",
            ],
        ),
    ];
    for (arch, preset, expected) in cases {
        let vs = VarStore::new(Device::Cpu);
        let _net = Net::new(
            &vs.root(),
            &ModelConfig::preset(arch, preset).unwrap(),
            1,
            10,
        );
        let path = t.path().join(format!("{preset}.safetensors"));
        vs.save(&path).unwrap();
        let script = "import sys, json\nfrom safetensors.torch import load_file\n\
                      sd = load_file(sys.argv[1])\n\
                      print(json.dumps({k: [list(v.shape), float(v.double().sum())] for k, v in sd.items()}))";
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(script)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: BTreeMap<String, (Vec<i64>, f64)> = serde_json::from_slice(&out.stdout).unwrap();
        let ours: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>(),
            "{preset}"
        );
        for (k, (shape, sum)) in &got {
            assert_eq!(shape, &ours[k].size(), "{k}");
            let s = f64::try_from(ours[k].to_kind(Kind::Double).sum(Kind::Double)).unwrap();
            assert!(
                (s - sum).abs() <= 1e-4 * (1.0 + s.abs()),
                "{k}: {s} vs {sum}"
            );
        }
        for k in expected {
            assert!(
                got.contains_key(k),
                "{preset}: no '{k}' in {:?}",
                got.keys()
            );
        }
    }
}

/// The teacher presets for a user's images: one preset from 32 to 224 px,
/// the stem striding by the image size; `cnn-r18` at 224 px is torchvision's
/// ResNet-18 parameter for parameter (11,689,512 with 1000 classes).
#[test]
fn large_presets_work_from_32_to_224_px() {
    let _rng = kd_core::torch_rng_lock();
    let count = |arch, preset, side: usize, classes| {
        let vs = VarStore::new(Device::Cpu);
        let cfg = ModelConfig::preset(arch, preset).unwrap();
        let net = Net::for_images(&vs.root(), &cfg, [3, side, side], classes);
        let y = net.forward_t(
            &Tensor::randn([2, 3, side as i64, side as i64], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(y.size(), [2, classes], "{preset} at {side} px");
        param_count(&vs)
    };
    assert_eq!(count(Arch::Cnn, "cnn-r18", 224, 1000), 11_689_512);
    // The 32 px stem is a 3x3 conv instead of the 7x7 one.
    assert_eq!(
        count(Arch::Cnn, "cnn-r18", 32, 1000),
        11_689_512 - 64 * 3 * 49 + 64 * 3 * 9
    );
    let n = count(Arch::Involution, "rednet-26", 32, 10);
    assert!((5_000_000..12_000_000).contains(&n), "rednet-26: {n}");
    assert_eq!(
        count(Arch::Involution, "rednet-26", 96, 10),
        n,
        "same weights at every size"
    );
}

/// `[teachers.<n>.model]`: every knob over a preset, checked before building.
#[test]
fn model_knobs_apply_over_presets_and_impossible_ones_are_refused() {
    use kd_teachers::ModelOverrides;
    let build = |arch: Arch, preset: &str, o: &ModelOverrides| {
        let mut m = ModelConfig::preset(arch, preset).unwrap();
        o.apply(&mut m).map(|()| m)
    };
    // A three-stage CNN from the two-stage tiny preset.
    let wide = ModelOverrides {
        widths: Some(vec![8, 16, 24]),
        blocks: Some(vec![1, 2, 1]),
        stem_width: Some(12),
        ..ModelOverrides::default()
    };
    let m = build(Arch::Cnn, "cnn-tiny", &wide).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let net = Net::for_images(&vs.root(), &m, [3, 32, 32], 5);
    let y = net.forward_t(
        &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(y.size(), [2, 5]);
    assert!(vs.variables().contains_key("layer3.0.conv1.weight"));
    // An involution net with its own kernel and groups.
    let inv = ModelOverrides {
        mids: Some(vec![16, 32]),
        kernel: Some(5),
        group_channels: Some(8),
        zero_init_residual: Some(true),
        ..ModelOverrides::default()
    };
    let m = build(Arch::Involution, "rednet-tiny", &inv).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let net = Net::for_images(&vs.root(), &m, [1, 28, 28], 10);
    let y = net.forward_t(
        &Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(y.size(), [2, 10]);
    // One line naming the setting for each impossible combination.
    for (arch, preset, o, needle) in [
        (
            Arch::Cnn,
            "cnn-tiny",
            ModelOverrides {
                kernel: Some(3),
                ..Default::default()
            },
            "model.kernel: not a knob of the cnn",
        ),
        (
            Arch::Involution,
            "rednet-tiny",
            ModelOverrides {
                widths: Some(vec![8]),
                ..Default::default()
            },
            "model.widths: not a knob of the involution",
        ),
        (
            Arch::Cnn,
            "cnn-tiny",
            ModelOverrides {
                blocks: Some(vec![1]),
                ..Default::default()
            },
            "model.blocks",
        ),
        (
            Arch::Cnn,
            "cnn-tiny",
            ModelOverrides {
                widths: Some(vec![]),
                blocks: Some(vec![]),
                ..Default::default()
            },
            "model.widths",
        ),
        (
            Arch::Cnn,
            "cnn-tiny",
            ModelOverrides {
                stem_width: Some(0),
                ..Default::default()
            },
            "model.stem_width",
        ),
        (
            Arch::Involution,
            "rednet-tiny",
            ModelOverrides {
                kernel: Some(4),
                ..Default::default()
            },
            "model.kernel = 4: must be odd",
        ),
        (
            Arch::Involution,
            "rednet-tiny",
            ModelOverrides {
                mids: Some(vec![50, 16]),
                ..Default::default()
            },
            "model.group_channels",
        ),
        (
            Arch::Involution,
            "rednet-tiny",
            ModelOverrides {
                reduction: Some(0),
                ..Default::default()
            },
            "model.reduction",
        ),
    ] {
        let err = build(arch, preset, &o).unwrap_err();
        let setting = err
            .core()
            .and_then(kd_core::CoreError::as_setting)
            .map(|s| s.setting().to_string());
        let e = err.to_string();
        assert!(
            setting.is_some_and(|s| needle.starts_with(&s)),
            "{needle:?}: {err:?}"
        );
        assert!(e.contains(needle), "{needle:?} not in {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
