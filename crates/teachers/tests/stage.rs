//! The `teacher` stage end to end on tiny synthetic data: artifact contents,
//! idempotence, resume after an interruption, loading, evaluation, bad input.

mod common;

use kd_core::fit::{FitOptions, Prefetch};
use kd_core::manifest::{hash_file, manifest_hash};
use kd_core::{CoreError, InputError, SettingError, Silent};
use kd_teachers::{
    Arch, Outcome, RunOptions, TeacherConfig, TeacherError, evaluate, load, train_stage,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn tiny(arch: Arch, epochs: usize) -> TeacherConfig {
    let mut c = TeacherConfig {
        arch,
        preset: Some(
            if arch == Arch::Cnn {
                "cnn-tiny"
            } else {
                "rednet-tiny"
            }
            .into(),
        ),
        eval_batch_size: 64,
        ..Default::default()
    };
    c.fit.epochs = epochs;
    c.fit.batch_size = 32;
    c.fit.lr = 5e-3;
    c.fit.seed = 3;
    c
}

fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("weights.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn metrics(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn train_resume_load_and_evaluate() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 512, 64, 0);
    let cfg = tiny(Arch::Cnn, 3);

    // Straight run.
    let a = t.path().join("a");
    let Outcome::Wrote(man) =
        train_stage(&cfg, &data, &a, &RunOptions::new(Device::Cpu, &Silent)).unwrap()
    else {
        panic!("expected a trained teacher")
    };
    assert_eq!(man.stage, "teacher");
    assert_eq!(man.inputs[0].role, "dataset");
    assert_eq!(man.inputs[0].manifest_hash, manifest_hash(&data).unwrap());
    assert_eq!(man.config["name"], "cnn");
    assert!(!a.join("ckpt").exists(), "checkpoint left behind");
    let m = metrics(&a);
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(
        acc > 0.5,
        "a trivially learnable task reached only {acc}: {}",
        m["history"]
    );
    assert_eq!(m["history"].as_array().unwrap().len(), 3);
    assert!(m["history"][0]["eval"]["test_accuracy"].is_number());
    let conf = m["confusion"].as_array().unwrap();
    assert_eq!(conf.len(), 4);
    let total: u64 = conf
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 64);
    assert!(m["train_images_per_sec"].as_f64().unwrap() > 0.0);
    assert!(m["inference_images_per_sec"].as_f64().unwrap() > 0.0);

    // Idempotent.
    assert!(matches!(
        train_stage(&cfg, &data, &a, &RunOptions::new(Device::Cpu, &Silent)).unwrap(),
        Outcome::UpToDate
    ));

    // Interrupted after one epoch, then the same call resumes.
    let b = t.path().join("b");
    let stop = FitOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    let r = train_stage(
        &cfg,
        &data,
        &b,
        &RunOptions::new(Device::Cpu, &Silent).fit(stop.clone()),
    )
    .unwrap();
    assert!(matches!(r, Outcome::Stopped { done: 1 }), "{r:?}");
    assert!(!b.join("manifest.json").exists());
    assert!(b.join("ckpt/state.json").is_file());
    let r = train_stage(
        &cfg,
        &data,
        &b,
        &RunOptions::new(Device::Cpu, &Silent).fit(stop.clone()),
    )
    .unwrap();
    assert!(matches!(r, Outcome::Stopped { done: 2 }), "{r:?}");
    assert!(matches!(
        train_stage(&cfg, &data, &b, &RunOptions::new(Device::Cpu, &Silent)).unwrap(),
        Outcome::Wrote(_)
    ));
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, v) in &wa {
        assert!(
            v.equal(&wb[k]),
            "{k} differs between straight and resumed runs"
        );
    }
    let mb = metrics(&b);
    assert_eq!(mb["history"].as_array().unwrap().len(), 3);
    assert_eq!(m["history"][2]["train"], mb["history"][2]["train"]);
    assert_eq!(m["test_accuracy"], mb["test_accuracy"]);

    // Loaded for other stages.
    let teacher = load(&a, Device::Cpu).unwrap();
    assert_eq!(teacher.name(), "cnn");
    assert_eq!(teacher.arch(), "cnn/cnn-tiny");
    assert_eq!(teacher.num_classes(), 4);
    assert_eq!(
        teacher.checkpoint_hash(),
        hash_file(&a.join("weights.safetensors")).unwrap()
    );
    assert_eq!(teacher.dataset_hash(), manifest_hash(&data).unwrap());
    let x = Tensor::randn([5, 1, 12, 12], (Kind::Float, Device::Cpu));
    let y = teacher.logits(&x);
    assert_eq!(y.size(), [5, 4]);
    assert_eq!(y.kind(), Kind::Float);
    assert!(!y.requires_grad());
    assert!(
        y.equal(&teacher.logits(&x)),
        "eval mode must be deterministic"
    );

    // Re-evaluation reproduces the recorded accuracy.
    let rep = evaluate(&a, &data, "test", Device::Cpu, &Silent).unwrap();
    assert!(rep.same_dataset);
    assert_eq!(rep.stats.samples, 64);
    assert!(
        (rep.stats.accuracy - acc).abs() < 1e-12,
        "{} vs {acc}",
        rep.stats.accuracy
    );
}

#[test]
fn involution_teacher_trains_and_loads() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 3, 96, 48, 1);
    let mut cfg = tiny(Arch::Involution, 2);
    cfg.name = Some("inv".into());
    let out = t.path().join("inv");
    assert!(matches!(
        train_stage(&cfg, &data, &out, &RunOptions::new(Device::Cpu, &Silent)).unwrap(),
        Outcome::Wrote(_)
    ));
    let teacher = load(&out, Device::Cpu).unwrap();
    assert_eq!(teacher.name(), "inv");
    assert_eq!(teacher.arch(), "involution/rednet-tiny");
    let y = teacher.logits(&Tensor::zeros([2, 1, 12, 12], (Kind::Float, Device::Cpu)));
    assert_eq!(y.size(), [2, 3]);
    // --force retrains.
    assert!(matches!(
        train_stage(
            &cfg,
            &data,
            &out,
            &RunOptions::new(Device::Cpu, &Silent).force(true)
        )
        .unwrap(),
        Outcome::Wrote(_)
    ));
}

#[test]
fn bad_input_is_refused_without_a_manifest() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 3, 64, 32, 2);

    // A dataset directory without a manifest.
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = t.path().join("o1");
    let e = train_stage(
        &tiny(Arch::Cnn, 1),
        &empty,
        &out,
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("empty") && e.contains("no manifest.json"), "{e}");
    assert!(!out.join("manifest.json").exists());

    // A class count that does not match the dataset.
    let mut cfg = tiny(Arch::Cnn, 1);
    cfg.num_classes = Some(10);
    let out = t.path().join("o2");
    let e = train_stage(&cfg, &data, &out, &RunOptions::new(Device::Cpu, &Silent)).unwrap_err();
    assert!(
        matches!(input(&e), Some(InputError::Mismatch { at, what, found, expected, .. })
            if at.ends_with("dataset.zarr") && what == "classes" && found == "3" && expected == "10"),
        "{e}"
    );
    assert!(!out.join("manifest.json").exists());

    // Unknown preset for the architecture.
    let mut cfg = tiny(Arch::Cnn, 1);
    cfg.preset = Some("rednet-tiny".into());
    let e = train_stage(&cfg, &data, &out, &RunOptions::new(Device::Cpu, &Silent)).unwrap_err();
    assert!(
        matches!(setting(&e), Some(SettingError::Unknown { setting, value, known })
            if setting == "preset" && value == "rednet-tiny" && known.iter().any(|k| k == "cnn-small")),
        "{e}"
    );

    // A checkpoint from another config (and from another architecture) on resume.
    let out = t.path().join("o3");
    let stop = FitOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    let cfg = tiny(Arch::Cnn, 2);
    assert!(matches!(
        train_stage(
            &cfg,
            &data,
            &out,
            &RunOptions::new(Device::Cpu, &Silent).fit(stop.clone())
        )
        .unwrap(),
        Outcome::Stopped { done: 1 }
    ));
    let mut other = cfg.clone();
    other.fit.lr = 1e-3;
    let e = train_stage(&other, &data, &out, &RunOptions::new(Device::Cpu, &Silent))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ckpt") && e.contains("another model, config or dataset"),
        "{e}"
    );
    let mut inv = tiny(Arch::Involution, 2);
    inv.name = Some("cnn".into());
    let e = train_stage(&inv, &data, &out, &RunOptions::new(Device::Cpu, &Silent))
        .unwrap_err()
        .to_string();
    assert!(e.contains("another model, config or dataset"), "{e}");
    assert!(!out.join("manifest.json").exists());
    // --force starts over instead.
    assert!(matches!(
        train_stage(
            &other,
            &data,
            &out,
            &RunOptions::new(Device::Cpu, &Silent).force(true)
        )
        .unwrap(),
        Outcome::Wrote(_)
    ));

    // Evaluating on a dataset with another class count.
    let data5 = t.path().join("data5");
    common::dataset(&data5, 5, 20, 10, 3);
    let e = evaluate(&out, &data5, "test", Device::Cpu, &Silent).unwrap_err();
    assert!(
        matches!(input(&e), Some(InputError::Mismatch { at, what, found, expected, .. })
            if at.starts_with(&data5) && what == "classes" && found == "5" && expected == "3"),
        "{e}"
    );
    // Loading an unfinished teacher.
    let e = load(&t.path().join("o2"), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no manifest.json"), "{e}");
    // Loading a directory of another stage.
    let e = load(&data, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("expected 'teacher'"), "{e}");
    // A missing split.
    let e = evaluate(&out, &data, "val", Device::Cpu, &Silent).unwrap_err();
    assert!(
        matches!(input(&e), Some(InputError::NotFound { what, name, has, .. })
            if what == "split" && name == "val" && has == &["test", "train"]),
        "{e}"
    );
}

#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    let _rng = kd_core::torch_rng_lock();
    // With a GPU the same request must succeed instead.
    match kd_core::parse_device("cuda") {
        Ok(d) => assert!(tch::Cuda::is_available() && d.is_cuda(), "{d:?}"),
        Err(e) => {
            assert!(!tch::Cuda::is_available());
            assert!(e.to_string().contains("CUDA is not available"), "{e}");
        }
    }
}

#[test]
fn cross_fitted_teacher_answers_each_sample_with_the_model_that_never_saw_it() {
    use kd_core::Teacher;
    use kd_data::Dataset;
    use kd_data::augment::{batch_tensor, lut};
    use tch::nn::ModuleT;
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 240, 64, 1);
    let mut cfg = tiny(Arch::Cnn, 2);
    cfg.folds = Some(3);
    cfg.fit.eval_every = 2;
    let out = t.path().join("cf");
    // Interrupted inside the first fold, then resumed: same artifact as a straight run.
    let opts = FitOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        train_stage(
            &cfg,
            &data,
            &out,
            &RunOptions::new(Device::Cpu, &Silent).fit(opts.clone())
        )
        .unwrap(),
        Outcome::Stopped { .. }
    ));
    let Outcome::Wrote(man) =
        train_stage(&cfg, &data, &out, &RunOptions::new(Device::Cpu, &Silent)).unwrap()
    else {
        panic!("expected a cross-fitted teacher")
    };
    assert_eq!(man.config["folds"], 3);
    for f in 0..3 {
        assert!(out.join(format!("fold-{f}/weights.safetensors")).is_file());
        assert!(!out.join(format!("fold-{f}/ckpt")).exists());
    }
    assert!(!out.join("weights.safetensors").exists());
    let m = metrics(&out);
    assert_eq!(m["fold_models"].as_array().unwrap().len(), 3);
    assert!(m["held_out_accuracy"].as_f64().unwrap() > 0.0);
    // Evaluated only on epoch 2 (eval_every 2) of each fold.
    let h = &m["fold_models"][0]["history"];
    assert!(h[0]["eval"].as_object().unwrap().is_empty());
    assert!(h[1]["eval"]["test_accuracy"].is_number());

    let teacher = kd_teachers::load_teacher(&out, Device::Cpu).unwrap();
    let folds = teacher.folds().expect("cross-fitted").clone();
    assert_eq!(folds.k(), 3);
    let ds = Dataset::open(&data).unwrap();
    let train = ds.split("train").unwrap();
    // Stratified: every class is dealt evenly to the folds.
    for c in 0..4u16 {
        let mut per_fold = [0usize; 3];
        for (i, &l) in train.labels.iter().enumerate() {
            if l == c {
                per_fold[folds.of(i)] += 1;
            }
        }
        assert!(
            per_fold.iter().max().unwrap() - per_fold.iter().min().unwrap() <= 1,
            "{per_fold:?}"
        );
    }
    assert_eq!(
        folds.assignment,
        kd_teachers::fold_assignment(&train.labels, 4, 3, cfg.fit.seed)
    );
    // logits_for routes each sample to its own fold's model.
    let idx: Vec<usize> = (0..12).collect();
    let spec = kd_core::ViewSpec::default();
    let views = vec![spec.plain([train.chw[1], train.chw[2]]); idx.len()];
    let x = batch_tensor(
        train,
        &idx,
        &views,
        &spec,
        &lut(&ds.mean, &ds.std),
        Device::Cpu,
    )
    .unwrap();
    let routed = teacher.logits_for(&idx, &x);
    for (r, &s) in idx.iter().enumerate() {
        let own = teacher.models[folds.of(s)]
            .1
            .forward_t(&x.narrow(0, r as i64, 1), false);
        let other = teacher.models[(folds.of(s) + 1) % 3]
            .1
            .forward_t(&x.narrow(0, r as i64, 1), false);
        let row = routed.narrow(0, r as i64, 1);
        assert!(f64::try_from((&row - &own).abs().max()).unwrap() < 1e-5);
        assert!(f64::try_from((&row - &other).abs().max()).unwrap() > 1e-6);
    }
    // Images of no training sample get the folds' mean.
    let mean = Tensor::stack(
        &teacher
            .models
            .iter()
            .map(|(_, n)| n.forward_t(&x, false))
            .collect::<Vec<_>>(),
        0,
    )
    .mean_dim(0, false, Kind::Float);
    assert!(f64::try_from((teacher.logits(&x) - mean).abs().max()).unwrap() < 1e-5);
    // A tampered fold's weights are refused by hash.
    let w = out.join("fold-1/weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, bytes).unwrap();
    let e = kd_teachers::load_teacher(&out, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fold-1"), "{e}");
    // One fold is not cross-fitting.
    cfg.folds = Some(1);
    let e = train_stage(
        &cfg,
        &data,
        &t.path().join("bad"),
        &RunOptions::new(Device::Cpu, &Silent),
    )
    .unwrap_err();
    assert!(
        matches!(setting(&e), Some(SettingError::OutOfRange { setting, value, .. }) if setting == "folds" && value == "1"),
        "{e}"
    );
}

/// A teacher trained on mixed views records the mixing in its config (and
/// so in its identity), learns the task, replays the same weights on a
/// rerun, and differs from the teacher trained without mixing; several
/// teachers evaluate side by side.
#[test]
fn mixed_views_recorded_replayed_and_ensemble_evaluated() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 512, 64, 0);
    let plain = tiny(Arch::Cnn, 3);
    let mut mixed = plain.clone();
    mixed.mix = kd_core::MixSpec {
        mode: kd_core::MixMode::MixupCutmix,
        prob: 0.8,
        alpha: 1.0,
        ..Default::default()
    };
    let run = |cfg: &TeacherConfig, dir: &str| {
        let d = t.path().join(dir);
        let o = train_stage(cfg, &data, &d, &RunOptions::new(Device::Cpu, &Silent)).unwrap();
        assert!(matches!(o, Outcome::Wrote(_)), "{dir}: {o:?}");
        d
    };
    let (p, m1, m2) = (run(&plain, "plain"), run(&mixed, "m1"), run(&mixed, "m2"));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(m1.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["teacher"]["mix"]["mode"], "mixup-cutmix");
    assert_eq!(cfg["teacher"]["mix"]["prob"], 0.8);
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(p.join("config.json")).unwrap()).unwrap();
    assert!(cfg["teacher"].get("mix").is_none(), "no mixing, no key");
    let (wp, w1, w2) = (weights(&p), weights(&m1), weights(&m2));
    assert!(
        w1.iter().all(|(k, v)| v.equal(&w2[k])),
        "mixed rerun differs"
    );
    assert!(
        w1.iter().any(|(k, v)| !v.equal(&wp[k])),
        "mixing changed nothing"
    );
    let acc = metrics(&m1)["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "mixed teacher reached only {acc}");

    let rep = kd_teachers::evaluate_ensemble(
        &[p.as_path(), m1.as_path()],
        &data,
        "test",
        Device::Cpu,
        &Silent,
    );
    // Both are named "cnn": the report needs distinct names.
    assert!(matches!(
        setting(&rep.unwrap_err()),
        Some(SettingError::Repeated { name, .. }) if name == "cnn"
    ));
    let mut named = mixed.clone();
    named.name = Some("cnn-mixed".into());
    let m3 = run(&named, "m3");
    let rep = kd_teachers::evaluate_ensemble(
        &[p.as_path(), m3.as_path()],
        &data,
        "test",
        Device::Cpu,
        &Silent,
    )
    .unwrap();
    let s = &rep.stats;
    assert_eq!(s.teachers, ["cnn", "cnn-mixed"]);
    let single = evaluate(&p, &data, "test", Device::Cpu, &Silent).unwrap();
    assert!((s.accuracy[0] - single.stats.accuracy).abs() < 1e-12);
    let pr = &s.pairs[0];
    let total = pr.both_right + pr.only_a_right + pr.only_b_right + pr.both_wrong;
    assert!((total - 1.0).abs() < 1e-9);
    assert!((pr.both_right + pr.only_a_right - s.accuracy[0]).abs() < 1e-9);
    assert!((pr.both_right + pr.only_b_right - s.accuracy[1]).abs() < 1e-9);
}

/// The next batch assembled during the step (the default) trains the very
/// teacher every batch assembled inline trains, mixed views included.
#[test]
fn prefetched_batches_train_exactly_as_inline() {
    let _rng = kd_core::torch_rng_lock();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::dataset(&data, 4, 256, 32, 0);
    let mut cfg = tiny(Arch::Cnn, 2);
    cfg.mix = kd_core::MixSpec {
        mode: kd_core::MixMode::MixupCutmix,
        prob: 0.8,
        alpha: 1.0,
        ..Default::default()
    };
    let run = |inline: bool| {
        let d = t.path().join(format!("inline-{inline}"));
        let fit = FitOptions {
            prefetch: if inline {
                Prefetch::Never
            } else {
                Prefetch::Always
            },
            ..Default::default()
        };
        let o = train_stage(
            &cfg,
            &data,
            &d,
            &RunOptions::new(Device::Cpu, &Silent).fit(fit),
        );
        assert!(matches!(o.unwrap(), Outcome::Wrote(_)));
        std::fs::read(d.join("weights.safetensors")).unwrap()
    };
    assert!(
        run(false) == run(true),
        "prefetched weights differ from inline"
    );
}

/// The shared concern a teacher error is about, with its fields.
fn input(e: &TeacherError) -> Option<&InputError> {
    e.core().and_then(CoreError::as_input)
}

fn setting(e: &TeacherError) -> Option<&SettingError> {
    e.core().and_then(CoreError::as_setting)
}
