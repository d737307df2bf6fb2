use super::*;
use tch::Device;

#[test]
fn shapes_and_names_for_each_token_count() {
    for t in 0..=2 {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config::preset("vit-test", 8, 1, 5, t).unwrap();
        let m = Vit::new(&vs.root(), &cfg);
        let out = m.forward_t(
            &Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(out.cls.size(), [3, 5]);
        assert_eq!(out.dist.len(), t);
        for d in &out.dist {
            assert_eq!(d.size(), [3, 5]);
        }
        assert_eq!(out.averaged().size(), [3, 5]);
        let vars = vs.variables();
        assert_eq!(vars["pos_embed"].size(), [1, 1 + t as i64 + 4, 16]);
        assert_eq!(vars.contains_key("dist_tokens"), t > 0);
        if t > 0 {
            assert_eq!(vars["dist_tokens"].size(), [1, t as i64, 16]);
            assert!(vars.contains_key(&format!("head_dist.{}.weight", t - 1)));
        }
        for k in [
            "cls_token",
            "patch_embed.proj.weight",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.proj.bias",
            "blocks.0.norm1.weight",
            "blocks.0.norm2.bias",
            "blocks.0.mlp.fc1.weight",
            "blocks.0.mlp.fc2.weight",
            "norm.weight",
            "head.weight",
        ] {
            assert!(vars.contains_key(k), "missing {k}");
        }
    }
}

#[test]
fn averaged_is_mean_of_head_logits() {
    let o = VitOutput {
        cls: Tensor::from_slice(&[1.0f32, 4.0]).view([1, 2]),
        dist: vec![
            Tensor::from_slice(&[3.0f32, 0.0]).view([1, 2]),
            Tensor::from_slice(&[2.0f32, 2.0]).view([1, 2]),
        ],
    };
    let a: Vec<f32> = Vec::try_from(o.averaged().view([-1])).unwrap();
    assert_eq!(a, vec![2.0, 2.0]);
}

#[test]
fn bf16_autocast_forward_agrees_with_f32_and_grads_stay_f32() {
    use kd_core::amp::{Precision, autocast};
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Vit::new(&vs.root(), &Config::preset("vit-test", 8, 1, 5, 2).unwrap());
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let f32_out = m.forward_t(&x, false).averaged();
    let bf16_out = autocast(Device::Cpu, Precision::Bf16, || m.forward_t(&x, false));
    // The heads (linear layers) really ran in bf16.
    assert_eq!(bf16_out.cls.kind(), Kind::BFloat16);
    let avg = bf16_out.averaged().to_kind(Kind::Float);
    let err = f64::try_from((&avg - &f32_out).abs().max()).unwrap();
    let scale = f64::try_from(f32_out.abs().max()).unwrap();
    assert!(
        err < 0.05 * scale.max(1.0),
        "bf16 off by {err} (scale {scale})"
    );
    avg.sum(Kind::Float).backward();
    for (name, v) in vs.variables() {
        assert_eq!(v.kind(), Kind::Float, "{name}");
        assert!(v.grad().defined(), "{name} got no gradient");
        assert_eq!(v.grad().kind(), Kind::Float, "{name}");
    }
}

/// DeiT presets against timm's `deit_tiny_distilled_patch16_224` (5,910,800
/// parameters) and `deit_small_distilled_patch16_224` (22,436,432): one
/// distillation token, 1000 classes, 224 px RGB. The counts are
/// `12 D^2 + 13 D` per block, patch conv, cls/dist/pos, final norm and
/// two heads.
#[test]
fn deit_presets_match_timm_parameter_counts() {
    for (preset, want) in [("deit-tiny", 5_910_800i64), ("deit-small", 22_436_432)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = Config::preset(preset, 224, 3, 1000, 1).unwrap();
        cfg.validate().unwrap();
        let _m = Vit::new(&vs.root(), &cfg);
        assert_eq!(kd_core::stage::param_count(&vs), want, "{preset}");
    }
    // Each extra teacher adds one token, its position and one head.
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Vit::new(
        &vs.root(),
        &Config::preset("deit-tiny", 224, 3, 1000, 2).unwrap(),
    );
    assert_eq!(
        kd_core::stage::param_count(&vs),
        5_910_800 + 2 * 192 + 192 * 1000 + 1000
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Vit::new(
        &vs.root(),
        &Config::preset("vit-c32", 32, 3, 10, 2).unwrap(),
    );
    let n = kd_core::stage::param_count(&vs);
    assert!((3_000_000..5_000_000).contains(&n), "{n}");
    let out = m.forward_t(
        &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(out.cls.size(), [2, 10]);
}

#[test]
fn overrides_make_any_model_and_impossible_ones_are_refused() {
    let mut cfg = Config::preset("vit-tiny", 32, 3, 10, 1).unwrap();
    let o = ModelOverrides {
        patch_size: Some(8),
        depth: Some(2),
        ..Default::default()
    };
    o.apply(&mut cfg);
    assert_eq!((cfg.patch_size, cfg.depth, cfg.embed_dim), (8, 2, 96));
    cfg.validate().unwrap();
    ModelOverrides {
        patch_size: Some(5),
        ..Default::default()
    }
    .apply(&mut cfg);
    assert!(
        cfg.validate()
            .unwrap_err()
            .contains("not a multiple of patch size 5")
    );
    let mut cfg = Config::preset("vit-tiny", 32, 3, 10, 1).unwrap();
    cfg.num_heads = 5;
    assert!(cfg.validate().unwrap_err().contains("5 heads"));
}

#[test]
fn vit_tiny_is_demo_sized() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Vit::new(
        &vs.root(),
        &Config::preset("vit-tiny", 28, 1, 10, 2).unwrap(),
    );
    let n = kd_core::stage::param_count(&vs);
    assert!((250_000..400_000).contains(&n), "{n}");
}

#[test]
fn eval_is_deterministic_and_train_drops_paths() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = Config::preset("vit-test", 8, 1, 3, 1).unwrap();
    cfg.depth = 2;
    cfg.drop_path = 0.9;
    let m = Vit::new(&vs.root(), &cfg);
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(
        m.forward_t(&x, false)
            .cls
            .equal(&m.forward_t(&x, false).cls)
    );
    let a = m.forward_t(&x, true).cls;
    let differs = (0..5).any(|_| !m.forward_t(&x, true).cls.equal(&a));
    assert!(differs, "drop path had no effect in training mode");
}
