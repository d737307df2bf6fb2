//! The `teacher` stage: train one teacher (or k fold models) on a dataset
//! artifact and evaluate it, into the layout [`crate::artifact`] describes.
//! The lifecycle (claim `--out`, train, seal with a manifest after the
//! input is re-checked) is `kd_core::stage`'s, shared with the student.
//!
//! A *cross-fitted* teacher (`folds = k`) is k models instead of one: the
//! training split is cut into k stratified folds and model `f` is trained on
//! every fold but `f`, so each training image has a model that never saw it.
//! Its logits on training images come from that model ([`kd_core::Teacher::
//! logits_for`]), so a student distilled from them learns the teacher's
//! behaviour off its training data rather than its memory of the labels;
//! on other images the k models' logits are averaged.

use crate::artifact::{CONFIG, FOLDS, METRICS, STAGE, WEIGHTS, WORK_FILES, fold_dir};
use crate::config::{TeacherConfig, TeacherFile};
use crate::error::Result;
use crate::learner::FitJob;
use crate::model::mean_logits;
use kd_core::InputError;
use kd_core::InputRef;
use kd_core::fit::FitOptions;
use kd_core::manifest::{OutputRef, hash_file, write_json};
use kd_core::metrics::{FoldMetrics, TeacherMetrics, TeacherSummary};
use kd_core::stage::{Outcome, RunOptions, StageRun, mean_images_per_sec, param_count};
use kd_data::Dataset;
use kd_data::augment::lut;
use serde_json::{Value, json};
use std::path::Path;
use tch::Tensor;
use tch::nn::ModuleT;

/// Train a teacher into `out` unless an identical one is already there.
pub fn train_stage(
    cfg: &TeacherConfig,
    dataset: &Path,
    out: &Path,
    run: &RunOptions,
) -> Result<Outcome> {
    let (device, opts, progress) = (run.device, &run.fit, run.progress);
    let (cfg, model_cfg) = cfg.resolve()?;
    let input = InputRef::of("dataset", dataset, kd_data::store::STAGE)?;
    let mut config = serde_json::to_value(&cfg).expect("config serialises");
    let world = opts.world_size();
    if world > 1 {
        // The teachers' BatchNorm layers normalise over each rank's slice
        // (batch / ranks images), as PyTorch DDP does without SyncBatchNorm:
        // another training than one process's, so another artifact.
        config["data_parallel_ranks"] = json!(world);
    }
    let stage = StageRun::new(STAGE, out, config, vec![input]).leaves(WORK_FILES);
    if !stage.claim_in_group(run.force, opts, remove_folds)? {
        return Ok(Outcome::UpToDate);
    }
    let ds = Dataset::open(dataset)?;
    let classes = ds.num_classes();
    if let Some(k) = cfg.num_classes
        && k != classes
    {
        return Err(InputError::mismatch(
            dataset.join(kd_data::store::STORE),
            "classes",
            classes,
            "the teacher config (num_classes)",
            k,
        )
        .into());
    }
    let train = ds.split("train")?;
    let test = ds.split("test")?;
    if let Some(&bad) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= classes)
    {
        return Err(InputError::Malformed {
            at: dataset.join(kd_data::store::STORE),
            what: format!("label {bad} but only {classes} class names"),
        }
        .into());
    }
    // The network sees views, of the view's size where that is not the
    // image's (and records it, for every later user of the teacher).
    let chw = cfg.view.out_chw(ds.chw());
    let name = cfg.name.clone().unwrap_or_default();
    tracing::info!(%name, preset = cfg.preset.as_deref().unwrap_or(""), ?device, train = train.len(), test = test.len(), "training teacher");

    let lut = lut(&ds.mean, &ds.std);
    let identity = json!({
        "stage": STAGE,
        "config": stage.config(),
        "model": model_cfg,
        "dataset": stage.inputs()[0].manifest_hash,
        "classes": classes,
        "chw": chw,
    });
    let job = FitJob {
        cfg: &cfg,
        model_cfg: &model_cfg,
        test,
        lut: &lut,
        classes,
        chw,
        device,
        opts,
        progress,
    };
    let mut fold_metrics = vec![];
    let (models, history, folds) = match cfg.folds {
        None => match job.train_one(train, out, &identity)? {
            Err(epochs_done) => return Ok(Outcome::Stopped { done: epochs_done }),
            Ok(_) if !opts.is_leader() => return Ok(follower(opts)),
            Ok((vs, net, history)) => {
                vs.save(out.join(WEIGHTS))?;
                (vec![(vs, net)], history, None)
            }
        },
        Some(k) => {
            let assignment = fold_assignment(&train.labels, classes, k, cfg.fit.seed);
            let (mut models, mut history, mut hashes) = (vec![], vec![], vec![]);
            for f in 0..k {
                let dir = out.join(fold_dir(f));
                let keep: Vec<usize> = (0..train.len())
                    .filter(|&i| assignment[i] as usize != f)
                    .collect();
                tracing::info!(%name, fold = f, of = k, train = keep.len(), "training fold model");
                let fold_id = json!({"teacher": identity, "fold": f, "folds": k});
                let (vs, net, h) = match job.train_fold(&train.select(&keep), &dir, &fold_id)? {
                    Err(epochs_done) => return Ok(Outcome::Stopped { done: epochs_done }),
                    Ok(m) => m,
                };
                if !opts.is_leader() {
                    // Rank 0 evaluates and writes the fold.
                    continue;
                }
                let held_out: Vec<usize> = (0..train.len())
                    .filter(|&i| assignment[i] as usize == f)
                    .collect();
                let oof = job.eval(&|x, _| net.forward_t(x, false), &train.select(&held_out))?;
                fold_metrics.push(FoldMetrics {
                    fold: f,
                    train_samples: keep.len(),
                    held_out_samples: held_out.len(),
                    held_out_accuracy: oof.accuracy,
                    test_accuracy: h
                        .last()
                        .and_then(|r| r.eval.get("test_accuracy"))
                        .and_then(Value::as_f64),
                    history: h.clone(),
                });
                hashes.push(hash_file(&dir.join(WEIGHTS))?);
                history.extend(h);
                models.push((vs, net));
            }
            let folds = kd_core::Folds {
                assignment,
                checkpoint_hashes: hashes,
            };
            if !opts.is_leader() {
                return Ok(follower(opts));
            }
            write_json(&out.join(FOLDS), &folds)?;
            (models, history, Some(folds))
        }
    };
    // One model, or the mean of the fold models' logits on images none of them saw.
    let ensemble = |x: &Tensor, _: &[usize]| mean_logits(&models, x);
    let fin = job.eval(&ensemble, test)?;

    let file = TeacherFile {
        teacher: cfg.clone(),
        model: model_cfg.clone(),
        chw,
        num_classes: classes,
        class_names: ds.class_names.clone(),
        mean: ds.mean.clone(),
        std: ds.std.clone(),
    };
    write_json(&out.join(CONFIG), &file)?;
    let params = param_count(&models[0].0);
    let train_ips = mean_images_per_sec(&history);
    // Accuracy of each training image's own fold model: what the store's
    // logits on view 0 will score.
    let held_out = folds.as_ref().map(|_| {
        fold_metrics
            .iter()
            .map(|m| m.held_out_accuracy * m.held_out_samples as f64)
            .sum::<f64>()
            / train.len().max(1) as f64
    });
    let summary = TeacherSummary {
        name: name.clone(),
        arch: cfg.arch.name().into(),
        preset: cfg.preset.clone(),
        params: params as u64,
        epochs: cfg.fit.epochs as u64,
        test_accuracy: fin.accuracy,
        test_loss: fin.loss,
        train_images_per_sec: train_ips,
        inference_images_per_sec: fin.images_per_sec,
        device: kd_core::device::device_name(device),
        folds: folds.as_ref().map(kd_core::Folds::k),
        held_out_accuracy: held_out,
    };
    let metrics = TeacherMetrics {
        summary: summary.clone(),
        train_seconds: history.iter().map(|r| r.train_seconds).sum::<f64>(),
        history,
        confusion: fin.confusion,
        data_parallel_ranks: Some(world),
        class_names: ds.class_names.clone(),
        fold_models: (!fold_metrics.is_empty()).then_some(fold_metrics),
    };
    write_json(&out.join(METRICS), &metrics)?;

    let mut outputs = vec![];
    match &folds {
        None => outputs.push(OutputRef::of(out, WEIGHTS, true)?),
        Some(f) => {
            for k in 0..f.k() {
                outputs.push(OutputRef::of(
                    out,
                    &format!("{}/{WEIGHTS}", fold_dir(k)),
                    true,
                )?);
            }
            outputs.push(OutputRef::of(out, FOLDS, true)?);
        }
    }
    outputs.push(OutputRef::of(out, CONFIG, true)?);
    outputs.push(OutputRef::of(out, METRICS, false)?);
    let man = stage.seal(&[("fit", cfg.fit.seed)], outputs, json!(summary))?;
    tracing::info!(out = %out.display(), test_accuracy = fin.accuracy, "teacher written");
    Ok(Outcome::Wrote(Box::new(man)))
}

fn follower(opts: &FitOptions) -> Outcome {
    Outcome::Follower {
        rank: opts.group().map_or(0, |g| g.rank()),
    }
}

/// Remove the fold models of an earlier run (`--force`).
fn remove_folds(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && e.file_name().to_string_lossy().starts_with("fold-") {
            std::fs::remove_dir_all(&p).map_err(|source| kd_core::CoreError::Io {
                path: p.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The stratified fold of every training sample: each class's samples, in a
/// seeded order, are dealt round-robin to the k folds, so every fold model
/// trains on (k-1)/k of every class.
pub fn fold_assignment(labels: &[u16], classes: usize, k: usize, seed: u64) -> Vec<u8> {
    let mut fold = vec![0u8; labels.len()];
    for c in 0..classes {
        let mut members: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        kd_core::Rng::keyed(seed, &[0x666f_6c64, c as u64]).shuffle(&mut members);
        for (pos, &i) in members.iter().enumerate() {
            fold[i] = (pos % k) as u8;
        }
    }
    fold
}
