//! The student stage end to end on tiny synthetic data: cached vs live
//! fidelity, resume, outputs, idempotence and refusals.

use kd_core::fit::{FitOptions, Prefetch};
use kd_core::manifest::Manifest;
use kd_core::optim::{AdamW, AdamWConfig};
use kd_core::{CoreError, InputError, SettingError, Silent, Teacher};
use kd_data::Dataset;
use kd_logit_cache::testing::{ConvTeacher, synthetic_dataset, teacher_artifact};
use kd_logit_cache::{BuildOptions, CacheConfig, LogitStore, TeacherInput};
use kd_student::Distill;
use kd_student::loss::{LossConfig, student_loss};
use kd_student::vit::{Config, Vit};
use kd_student::{
    Batcher, Outcome, RunOptions, Source, StudentConfig, StudentError, TokenMode, train_stage,
};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor, nn};

const CPU: Device = Device::Cpu;

fn teacher(name: &str, seed: u64, ds_hash: &str) -> Box<dyn Teacher> {
    Box::new(ConvTeacher::new(name, seed, 1, 4, 3, ds_hash, CPU))
}

/// A 48-sample 1x8x8 3-class dataset and a 3-view f16 store of two teachers.
fn fixture(root: &Path) -> (PathBuf, PathBuf) {
    fixture_with(root, kd_core::MixMode::None)
}

/// [`fixture`] whose store mixes every view but view 0 by `mix`.
fn fixture_with(root: &Path, mix: kd_core::MixMode) -> (PathBuf, PathBuf) {
    let ds = synthetic_dataset(&root.join("ds"), 48, 3, [1, 8, 8], 7);
    let hash = Dataset::open(&ds).unwrap().manifest_hash;
    let inputs: Vec<TeacherInput> = [("cnn", 1u64), ("involution", 2)]
        .iter()
        .map(|&(n, s)| TeacherInput {
            dir: teacher_artifact(&root.join(n), n, s, &hash),
            teacher: teacher(n, s, &hash),
        })
        .collect();
    let cfg = CacheConfig {
        views: 3,
        seed: 5,
        device: "cpu".into(),
        shard_samples: 16,
        chunk_samples: 16,
        batch_size: 32,
        mix,
        mix_prob: 1.0,
        ..Default::default()
    };
    let store = root.join("logits");
    kd_logit_cache::build(
        &ds,
        &inputs,
        &store,
        &cfg,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    (ds, store)
}

fn live(ds: &Path) -> Source {
    let hash = Dataset::open(ds).unwrap().manifest_hash;
    Source::Live(vec![
        teacher("cnn", 1, &hash),
        teacher("involution", 2, &hash),
    ])
}

fn cache(store: &Path, names: &[&str]) -> Source {
    Source::Cache {
        store: LogitStore::open(store).unwrap(),
        teachers: names.iter().map(|s| s.to_string()).collect(),
    }
}

fn small_cfg(epochs: usize) -> StudentConfig {
    StudentConfig {
        preset: "vit-test".into(),
        epochs,
        batch_size: 16,
        lr: 3e-3,
        warmup_epochs: 0.5,
        drop_path: Some(0.1),
        eval_batch_size: 8,
        ..Default::default()
    }
}

fn err_of(r: kd_student::Result<Outcome>) -> String {
    match r {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => e.to_string(),
    }
}

fn weights(p: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(p).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Both architectures (DeiT patch embedding with free tokens, CivT stems)
/// fit one batch: labels and both teachers. (Under a non-uniform weighting
/// a teacher's raw KD may stay high where its weight is near 0, so the
/// weightings are pinned by hand-computed values in `loss.rs` instead.)
#[test]
fn overfits_one_batch() {
    use kd_student::loss::{Labels, Weighting, per_teacher_targets};
    use kd_student::{Stem, TokenStem};
    let _rng = kd_core::torch_rng_lock();
    for (stem, weighting) in [
        (Stem::Patch, Weighting::Uniform),
        (Stem::ConvInvolution, Weighting::Uniform),
    ] {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(CPU);
        let mut mcfg = Config::preset("vit-test", 8, 1, 4, 2).unwrap();
        if stem == Stem::ConvInvolution {
            mcfg.stem = stem;
            mcfg.token_stems = vec![TokenStem::Conv, TokenStem::Involution];
        }
        let m = Vit::new(&vs.root(), &mcfg);
        let x = Tensor::randn([16, 1, 8, 8], (Kind::Float, CPU));
        let y = Tensor::randint(4, [16], (Kind::Int64, CPU));
        let z = vec![
            Tensor::randn([16, 4], (Kind::Float, CPU)) * 3.0,
            Tensor::randn([16, 4], (Kind::Float, CPU)) * 3.0,
        ];
        let labels = Labels::plain(y.shallow_clone());
        let targets = per_teacher_targets(z, &labels, weighting);
        let cfg = LossConfig {
            alpha: 0.5,
            tau: 1.0,
            distill: Distill::Soft,
            label_smoothing: 0.0,
        };
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        );
        let loss =
            |train: bool| student_loss(&m.forward_t(&x, train), &labels, Some(&targets), &cfg);
        let first = f64::try_from(&loss(true).total).unwrap();
        for _ in 0..300 {
            opt.zero_grad().unwrap();
            loss(true).total.backward();
            opt.step(3e-3).unwrap();
        }
        let p = loss(false);
        let (ce, kd0, kd1) = (
            f64::try_from(&p.ce).unwrap(),
            f64::try_from(&p.kd[0]).unwrap(),
            f64::try_from(&p.kd[1]).unwrap(),
        );
        assert!(
            ce < 0.05 && kd0 < 0.05 && kd1 < 0.05,
            "{stem:?}/{weighting:?} did not overfit: first {first}, ce {ce}, kd {kd0} {kd1}"
        );
        let acc = f64::try_from(
            m.forward_t(&x, false)
                .cls
                .argmax(-1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float),
        )
        .unwrap();
        assert_eq!(acc, 1.0, "{stem:?}");
    }
}

/// The stage with stems and a weighting: trains from the store, records
/// both, evaluates the val split, and refuses stems for a teacher whose arch
/// has no stem.
#[test]
fn stems_and_weighting_from_the_store() {
    use kd_student::{Stem, Weighting};
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, store) = fixture(t.path());
    let cfg = StudentConfig {
        stem: Stem::ConvInvolution,
        weighting: Weighting::Correct,
        ..small_cfg(1)
    };
    // The fixture's teachers are `test-conv/...`: no stem shares their bias.
    let e = train_stage(
        &cfg,
        &ds,
        &cache(&store, &["cnn"]),
        &t.path().join("x"),
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap_err();
    assert!(
        matches!(e.core().and_then(CoreError::as_setting), Some(SettingError::Rejected { setting, value, why })
            if setting == "stem" && value == "conv-involution" && why.contains("test-conv")),
        "{e}"
    );
    // With averaged tokens the one token is the mean of both stems: no arch needed.
    let cfg = StudentConfig {
        tokens: TokenMode::Averaged,
        ..cfg
    };
    let out = t.path().join("s");
    let Outcome::Wrote(m) = train_stage(
        &cfg,
        &ds,
        &cache(&store, &["cnn", "involution"]),
        &out,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap() else {
        panic!("expected a student")
    };
    assert_eq!(m.config["student"]["stem"], "conv-involution");
    assert_eq!(m.config["student"]["weighting"], "correct");
    assert_eq!(m.config["model"]["token_stems"][0], "both");
    let vars: Vec<String> = Tensor::read_safetensors(out.join("weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        vars.iter().any(|k| k == "inv_stem.inv.conv2.conv.weight"),
        "{vars:?}"
    );
    assert!(!vars.iter().any(|k| k == "dist_tokens"));
    // Defaults stay out of the config, so earlier artifacts keep their hashes.
    let Outcome::Wrote(plain) = train_stage(
        &small_cfg(1),
        &ds,
        &Source::None,
        &t.path().join("p"),
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap() else {
        panic!("expected a student")
    };
    for k in ["stem", "weighting", "eval_every"] {
        assert!(
            plain.config["student"].get(k).is_none(),
            "{k} in {}",
            plain.config["student"]
        );
    }
    assert!(plain.config["model"].get("stem").is_none());
}

#[test]
fn cached_and_live_see_the_same_pixels_and_logits() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds_dir, store) = fixture(t.path());
    let ds = Dataset::open(&ds_dir).unwrap();
    let train = ds.split("train").unwrap();
    let (c, l) = (cache(&store, &["cnn", "involution"]), live(&ds_dir));
    let cfg_c = small_cfg(1).resolved(&c).unwrap();
    // The live student draws views by the store's rule: same K, seed and spec.
    let mut cfg_l = small_cfg(1);
    (
        cfg_l.views,
        cfg_l.view_seed,
        cfg_l.view_pad,
        cfg_l.view_flip,
    ) = (
        cfg_c.views,
        cfg_c.view_seed,
        cfg_c.view_pad,
        cfg_c.view_flip,
    );
    let cfg_l = cfg_l.resolved(&l).unwrap();
    assert_eq!(cfg_c.views, Some(3));
    let (bc, bl) = (
        Batcher::new(&cfg_c, &ds, train, &c, CPU),
        Batcher::new(&cfg_l, &ds, train, &l, CPU),
    );
    let idx: Vec<usize> = (0..train.len()).collect();
    let mut seen_views = std::collections::BTreeSet::new();
    for epoch in 0..3 {
        let vids = bc.epoch_views(&idx, epoch);
        assert_eq!(vids, bl.epoch_views(&idx, epoch));
        seen_views.extend(vids.iter().copied());
        let (xc, xl) = (
            bc.images(&idx, &vids).unwrap(),
            bl.images(&idx, &vids).unwrap(),
        );
        assert!(
            xc.equal(&xl),
            "cached and live images differ in epoch {epoch}"
        );
        let (zc, zl) = (
            bc.teacher_logits(&idx, &vids, &xc).unwrap(),
            bl.teacher_logits(&idx, &vids, &xl).unwrap(),
        );
        assert_eq!(zc.len(), 2);
        // Live teachers stay float32 inside a bf16 student step: they are
        // the store's fidelity check.
        let zl_bf16 = kd_core::amp::autocast(CPU, kd_core::amp::Precision::Bf16, || {
            bl.teacher_logits(&idx, &vids, &xl).unwrap()
        });
        for (a, b) in zl.iter().zip(&zl_bf16) {
            assert!(
                a.equal(b),
                "live teacher logits changed under bf16 autocast"
            );
        }
        for (a, b) in zc.iter().zip(&zl) {
            assert_eq!(a.size(), [48, 3]);
            // float16 storage: relative error 2^-11, plus a little for tiny values.
            let tol = b.abs() * (1.0 / 1024.0) + 1e-3;
            let ok = (a - b).abs().le_tensor(&tol).all();
            assert!(
                bool::try_from(ok).unwrap(),
                "cached logits differ from live beyond f16 rounding"
            );
            assert!(
                f64::try_from(b.abs().max()).unwrap() > 0.1,
                "logits are trivially small"
            );
        }
    }
    assert_eq!(
        seen_views.len(),
        3,
        "every view should be used across epochs"
    );
}

/// A store of mixed views: the student rebuilds the very mixed pixels the
/// teachers labelled (a live teacher on the student's images reproduces the
/// stored logits), gets both classes with the own class's pixel share, and
/// trains from it.
#[test]
fn mixed_store_gives_the_teachers_pixels_and_mixed_labels() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds_dir, store) = fixture_with(t.path(), kd_core::MixMode::MixupCutmix);
    let ds = Dataset::open(&ds_dir).unwrap();
    let train = ds.split("train").unwrap();
    let c = cache(&store, &["cnn", "involution"]);
    let cfg = small_cfg(1).resolved(&c).unwrap();
    let b = Batcher::new(&cfg, &ds, train, &c, CPU);
    let idx: Vec<usize> = (0..train.len()).collect();
    let view1 = vec![1; idx.len()];
    let x = b.images(&idx, &view1).unwrap();
    let plain: Vec<kd_core::ViewParams> = idx.iter().map(|&s| b.view_params(s, 1)).collect();
    let unmixed =
        kd_data::augment::batch_tensor(train, &idx, &plain, &b.spec, &b.lut, CPU).unwrap();
    assert!(!x.equal(&unmixed), "view 1 should be mixed (mix_prob 1)");
    let stored = b.teacher_logits(&idx, &view1, &x).unwrap();
    let live = teacher("cnn", 1, &ds.manifest_hash).logits(&x);
    let tol = live.abs() * (1.0 / 1024.0) + 1e-3;
    assert!(
        bool::try_from((&stored[0] - &live).abs().le_tensor(&tol).all()).unwrap(),
        "stored logits are not those of the student's (mixed) pixels"
    );
    let labels = b.labels(&idx, &view1).unwrap();
    let (y2, lam) = labels.mix.as_ref().expect("mixed labels");
    let lam: Vec<f32> = Vec::try_from(lam).unwrap();
    assert!(lam.iter().all(|&l| (0.0..=1.0).contains(&l)) && lam.iter().any(|&l| l < 1.0));
    let st = LogitStore::open(&store).unwrap();
    let y2: Vec<i64> = Vec::try_from(y2).unwrap();
    for (&s, &p) in idx.iter().zip(&y2) {
        let m = st.mix_params(s, 1).unwrap();
        assert_eq!(p, train.labels[m.partner as usize] as i64);
    }
    // View 0 stays the plain image with its one label.
    let x0 = b.images(&idx, &vec![0; idx.len()]).unwrap();
    let id: Vec<kd_core::ViewParams> = idx.iter().map(|&s| b.view_params(s, 0)).collect();
    assert!(
        x0.equal(&kd_data::augment::batch_tensor(train, &idx, &id, &b.spec, &b.lut, CPU).unwrap())
    );
    assert!(matches!(
        train_stage(
            &small_cfg(1),
            &ds_dir,
            &c,
            &t.path().join("s"),
            &RunOptions::new(CPU, &Silent)
        )
        .unwrap(),
        Outcome::Wrote(_)
    ));
}

#[test]
fn prefetched_batches_train_exactly_as_inline() {
    // A mixed store: the prefetch thread rebuilds mixed pixels and reads
    // stored logits; live teachers still run on the training thread.
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, store) = fixture_with(t.path(), kd_core::MixMode::MixupCutmix);
    let cfg = small_cfg(2);
    for (name, src) in [
        ("cache", cache(&store, &["cnn", "involution"])),
        ("live", live(&ds)),
    ] {
        let run = |inline: bool| {
            let out = t.path().join(format!("{name}-{inline}"));
            let opts = FitOptions {
                prefetch: if inline {
                    Prefetch::Never
                } else {
                    Prefetch::Always
                },
                ..Default::default()
            };
            let o = train_stage(
                &cfg,
                &ds,
                &src,
                &out,
                &RunOptions::new(CPU, &Silent).fit(opts),
            );
            assert!(matches!(o.unwrap(), Outcome::Wrote(_)));
            std::fs::read(out.join("weights.safetensors")).unwrap()
        };
        assert!(
            run(false) == run(true),
            "{name}: prefetched weights differ from inline"
        );
    }
}

#[test]
fn resume_after_interruption_equals_straight_run() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, store) = fixture(t.path());
    let cfg = small_cfg(2);
    let a = t.path().join("a");
    let o = train_stage(
        &cfg,
        &ds,
        &cache(&store, &["cnn", "involution"]),
        &a,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap();
    assert!(matches!(o, Outcome::Wrote(_)));
    let b = t.path().join("b");
    let stop = FitOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    let src = cache(&store, &["cnn", "involution"]);
    let o = train_stage(
        &cfg,
        &ds,
        &src,
        &b,
        &RunOptions::new(CPU, &Silent).fit(stop.clone()),
    )
    .unwrap();
    assert!(matches!(o, Outcome::Stopped { done: 1 }), "{o:?}");
    assert!(!b.join("manifest.json").exists());
    // A different config must not resume from this checkpoint.
    let other = StudentConfig {
        lr: 1e-3,
        ..cfg.clone()
    };
    let e = err_of(train_stage(
        &other,
        &ds,
        &src,
        &b,
        &RunOptions::new(CPU, &Silent),
    ));
    assert!(e.contains("checkpoint") && e.contains("another"), "{e}");
    let o = train_stage(&cfg, &ds, &src, &b, &RunOptions::new(CPU, &Silent)).unwrap();
    assert!(matches!(o, Outcome::Wrote(_)));
    let (wa, wb) = (
        weights(&a.join("weights.safetensors")),
        weights(&b.join("weights.safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resume");
    }
    assert!(!b.join("ckpt").exists(), "finished run keeps no checkpoint");
}

#[test]
fn outputs_metrics_and_idempotence() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, _store) = fixture(t.path());
    let out = t.path().join("live");
    let src = live(&ds);
    let cfg = small_cfg(2);
    let Outcome::Wrote(m) =
        train_stage(&cfg, &ds, &src, &out, &RunOptions::new(CPU, &Silent)).unwrap()
    else {
        panic!("expected a run");
    };
    assert_eq!(m.stage, "student");
    assert_eq!(m.inputs[0].role, "dataset");
    assert_eq!(
        m.config["source"]["teachers"][1]["checkpoint"],
        "test-seed-2"
    );
    for f in [
        "weights.safetensors",
        "config.json",
        "metrics.json",
        "curves.csv",
        "curves.png",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let acc = metrics["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let last = &metrics["epochs"][1];
    for k in [
        "test_acc_avg",
        "test_acc_cls",
        "test_acc_dist_cnn",
        "test_acc_dist_involution",
        "agree_cnn",
        "agree_involution",
    ] {
        let v = last["eval"][k].as_f64().unwrap_or_else(|| panic!("no {k}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    for k in ["loss", "ce", "kd_cnn", "kd_involution"] {
        assert!(last["train"][k].as_f64().unwrap().is_finite(), "{k}");
    }
    assert!(last["images_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(acc, last["eval"]["test_acc_avg"].as_f64().unwrap());
    let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().next().unwrap().contains("agree_cnn"));
    // Same config and inputs: nothing to do; --force reruns.
    assert!(matches!(
        train_stage(&cfg, &ds, &src, &out, &RunOptions::new(CPU, &Silent)).unwrap(),
        Outcome::UpToDate
    ));
    assert!(matches!(
        train_stage(
            &cfg,
            &ds,
            &src,
            &out,
            &RunOptions::new(CPU, &Silent).force(true)
        )
        .unwrap(),
        Outcome::Wrote(_)
    ));
    // The no-teacher baseline has only the class head.
    let none = t.path().join("none");
    train_stage(
        &small_cfg(1),
        &ds,
        &Source::None,
        &none,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap();
    let w = weights(&none.join("weights.safetensors"));
    assert!(w.iter().all(|(n, _)| !n.contains("dist")));
    assert!(
        Manifest::read(&none).unwrap().metrics["test_accuracy"]
            .as_f64()
            .is_some()
    );
}

#[test]
fn single_teacher_and_averaged_token_from_the_ensemble_store() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, store) = fixture(t.path());
    let one = t.path().join("one");
    train_stage(
        &small_cfg(1),
        &ds,
        &cache(&store, &["involution"]),
        &one,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap();
    let names: Vec<String> = weights(&one.join("weights.safetensors"))
        .into_iter()
        .map(|w| w.0)
        .collect();
    assert!(
        names.contains(&"head_dist.0.weight".to_string())
            && !names.iter().any(|n| n.starts_with("head_dist.1"))
    );
    let avg = t.path().join("avg");
    let cfg = StudentConfig {
        tokens: TokenMode::Averaged,
        dist_tokens: Some(1),
        ..small_cfg(1)
    };
    train_stage(
        &cfg,
        &ds,
        &cache(&store, &["cnn", "involution"]),
        &avg,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(avg.join("metrics.json")).unwrap()).unwrap();
    assert!(m["epochs"][0]["train"]["kd_avg"].as_f64().is_some(), "{m}");
}

#[test]
fn refuses_bad_inputs() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, store) = fixture(t.path());
    let out = t.path().join("s");
    let fail = |cfg: &StudentConfig, ds: &Path, src: &Source| match train_stage(
        cfg,
        ds,
        src,
        &out,
        &RunOptions::new(CPU, &Silent),
    ) {
        Ok(o) => panic!("expected an error, got {o:?}"),
        Err(e) => e,
    };
    // The shared concern an error is about, with its fields.
    let input = |e: &StudentError| e.core().and_then(CoreError::as_input).cloned();
    let setting = |e: &StudentError| e.core().and_then(CoreError::as_setting).cloned();

    let other_ds = synthetic_dataset(&t.path().join("ds2"), 48, 3, [1, 8, 8], 8);
    let e = fail(&small_cfg(1), &other_ds, &cache(&store, &["cnn"]));
    assert!(
        matches!(input(&e), Some(InputError::Mismatch { ref what, ref at, .. }) if what == "dataset hash" && at.ends_with("logits")),
        "{e}"
    );
    assert!(e.to_string().contains("rebuild the cache"), "{e}");

    let e = fail(&small_cfg(1), &ds, &cache(&store, &["cnn", "resnet"]));
    assert!(
        matches!(input(&e), Some(InputError::NotFound { ref name, ref has, .. }) if name == "resnet" && has == &["cnn", "involution"]),
        "{e}"
    );

    let cfg = StudentConfig {
        views: Some(0),
        ..small_cfg(1)
    };
    let e = fail(&cfg, &ds, &Source::None);
    assert!(
        matches!(setting(&e), Some(SettingError::OutOfRange { ref setting, ref value, .. }) if setting == "views" && value == "0"),
        "{e}"
    );
    for (cfg, name, want) in [
        (
            StudentConfig {
                lr: -0.01,
                ..small_cfg(1)
            },
            "lr",
            "-0.01",
        ),
        (
            StudentConfig {
                lr: 0.0,
                ..small_cfg(1)
            },
            "lr",
            "0",
        ),
        (
            StudentConfig {
                lr: f64::NAN,
                ..small_cfg(1)
            },
            "lr",
            "NaN",
        ),
        (
            StudentConfig {
                alpha: 2.0,
                ..small_cfg(1)
            },
            "alpha",
            "2",
        ),
        (
            StudentConfig {
                alpha: -1.0,
                ..small_cfg(1)
            },
            "alpha",
            "-1",
        ),
        (
            StudentConfig {
                tau: -1.0,
                ..small_cfg(1)
            },
            "tau",
            "-1",
        ),
        (
            StudentConfig {
                tau: 0.0,
                ..small_cfg(1)
            },
            "tau",
            "0",
        ),
        (
            StudentConfig {
                epochs: 0,
                ..small_cfg(1)
            },
            "epochs",
            "0",
        ),
    ] {
        let e = fail(&cfg, &ds, &cache(&store, &["cnn"]));
        assert!(
            matches!(setting(&e), Some(SettingError::OutOfRange { ref setting, ref value, .. }) if setting == name && value == want),
            "{e} (wanted {name} = {want})"
        );
        // The message is the user interface: one line naming the setting.
        assert!(
            e.to_string().contains(&format!("setting {name} = {want}")),
            "{e}"
        );
    }
    let cfg = StudentConfig {
        views: Some(5),
        ..small_cfg(1)
    };
    let e = fail(&cfg, &ds, &cache(&store, &["cnn"]));
    assert!(
        matches!(input(&e), Some(InputError::Mismatch { ref what, ref found, ref expected, .. }) if what == "views" && found == "3" && expected == "5"),
        "{e}"
    );

    let cfg = StudentConfig {
        dist_tokens: Some(2),
        ..small_cfg(1)
    };
    let e = fail(&cfg, &ds, &cache(&store, &["cnn"]));
    assert!(
        matches!(setting(&e), Some(SettingError::Rejected { ref setting, ref why, .. }) if setting == "preset" && why.contains("2 distillation token(s)") && why.contains("1 teacher")),
        "{e}"
    );

    let cfg = StudentConfig {
        preset: "vit-huge".into(),
        ..small_cfg(1)
    };
    let e = fail(&cfg, &ds, &Source::None);
    assert!(
        matches!(setting(&e), Some(SettingError::Unknown { ref value, ref known, .. }) if value == "vit-huge" && known.iter().any(|k| k == "vit-tiny")),
        "{e}"
    );

    let wrong = Source::Live(vec![teacher("cnn", 1, "not-this-dataset")]);
    let e = fail(&small_cfg(1), &ds, &wrong);
    assert!(
        matches!(input(&e), Some(InputError::Mismatch { ref what, ref found, .. }) if what == "training dataset hash" && found == "not-this-dataset"),
        "{e}"
    );

    // A teacher retrained (`--force`) after the store was built: its
    // manifest is not the one the store pinned.
    let cnn = t.path().join("cnn");
    std::fs::remove_file(cnn.join("manifest.json")).unwrap();
    let hash = Dataset::open(&ds).unwrap().manifest_hash;
    teacher_artifact(&cnn, "cnn", 99, &hash);
    let e = fail(&small_cfg(1), &ds, &cache(&store, &["cnn"]));
    assert!(
        matches!(&e, StudentError::TeacherChanged { teacher, .. } if teacher == "cnn"),
        "{e}"
    );
    // The other teacher is unchanged, so a student of it alone still trains.
    assert!(!out.join("manifest.json").exists());
}

/// `kd student eval` of a finished student reproduces, from its weights
/// alone, the test figures training recorded (each head's accuracy, and each
/// head's agreement with its live teacher); refuses damaged weights and a
/// dataset of another shape.
#[test]
fn eval_reproduces_the_training_figures() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let (ds, _store) = fixture(t.path());
    let out = t.path().join("live");
    train_stage(
        &small_cfg(2),
        &ds,
        &live(&ds),
        &out,
        &RunOptions::new(CPU, &Silent),
    )
    .unwrap();
    let Source::Live(teachers) = live(&ds) else {
        unreachable!()
    };
    let e = kd_student::evaluate(&out, &ds, "test", &teachers, CPU, &Silent).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let last = &metrics["epochs"][1]["eval"];
    assert!(e.same_dataset);
    assert_eq!(
        e.samples as usize,
        Dataset::open(&ds).unwrap().split("test").unwrap().len()
    );
    let heads: Vec<&str> = e.heads.iter().map(|h| h.head.as_str()).collect();
    assert_eq!(heads, ["avg", "cls", "dist_cnn", "dist_involution"]);
    for h in &e.heads {
        let recorded = last[format!("test_acc_{}", h.head)].as_f64().unwrap();
        assert_eq!(h.accuracy, recorded, "{}", h.head);
        // Both teachers, and their averaged prediction.
        assert_eq!(h.agreement.len(), 3, "{}", h.head);
    }
    // The averaged prediction by hand: argmax of the summed softmaxes of
    // the teachers on the plain test images.
    {
        let d = Dataset::open(&ds).unwrap();
        let test = d.split("test").unwrap();
        let idx: Vec<usize> = (0..test.len()).collect();
        let spec = kd_core::ViewSpec::default();
        let plain = vec![spec.plain([test.chw[1], test.chw[2]]); idx.len()];
        let l = kd_data::augment::lut(&d.mean, &d.std);
        let x = kd_data::augment::batch_tensor(test, &idx, &plain, &spec, &l, CPU).unwrap();
        let _g = tch::no_grad_guard();
        let sum = teachers
            .iter()
            .map(|t| t.logits(&x).softmax(1, tch::Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        let pred = Vec::<i64>::try_from(sum.argmax(1, false)).unwrap();
        let hits = pred
            .iter()
            .zip(&test.labels)
            .filter(|(p, y)| **p == **y as i64)
            .count();
        let want = hits as f64 / test.len() as f64;
        assert_eq!(e.averaged_accuracy, Some(want));
    }
    for (h, teacher) in [(2, "cnn"), (3, "involution")] {
        let recorded = last[format!("agree_{teacher}")].as_f64().unwrap();
        assert_eq!(e.heads[h].agreement[teacher], recorded, "{teacher}");
    }
    let names: Vec<&str> = e.teachers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["cnn", "involution"]);
    assert_eq!(
        e.teachers[0].agreement["involution"],
        e.teachers[1].agreement["cnn"]
    );
    // No teachers: heads only.
    let bare = kd_student::evaluate(&out, &ds, "test", &[], CPU, &Silent).unwrap();
    assert!(bare.heads.iter().all(|h| h.agreement.is_empty()));
    assert_eq!(bare.averaged_accuracy, None);
    assert_eq!(bare.heads[0].accuracy, e.heads[0].accuracy);

    // Another dataset shape: one line naming it.
    let other = synthetic_dataset(&t.path().join("ds5"), 24, 5, [1, 8, 8], 3);
    let err = kd_student::evaluate(&out, &other, "test", &[], CPU, &Silent).unwrap_err();
    assert!(
        matches!(err.core().and_then(CoreError::as_input), Some(InputError::Mismatch { at, what, found, expected, .. })
            if at.ends_with("ds5") && what == "classes" && found == "5" && expected == "3"),
        "{err}"
    );
    // Damaged weights: refused by the hash the manifest recorded.
    let w = out.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let err = kd_student::evaluate(&out, &ds, "test", &[], CPU, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights.safetensors") && err.contains("changed"),
        "{err}"
    );
}
