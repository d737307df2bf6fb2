//! The `student` stage: train the ViT from labels and teacher logits.
//!
//! Teacher logits come from a [`Source`]: the logit store (the point of the
//! project: no teacher forward passes), the teachers run live on the same
//! batches (the speed baseline and a fidelity check), or none (the
//! no-distillation baseline). All three see identical pixels: each epoch each
//! sample uses view `Rng::keyed(seed, [epoch, sample]).below(K)` of its K
//! views, whose parameters are read from the store or drawn by the same rule
//! the store was built with.
//!
//! The lifecycle (claim `--out`, train, seal with a manifest after the
//! inputs are re-checked) is `kd_core::stage`'s and the epoch loop,
//! optimiser, schedule, checkpoint and resume are `kd_core::fit`'s, both
//! shared with the teachers; this file holds what is the student's own:
//! which inputs pin it, the model it builds, and the files it writes.

use crate::artifact::{CONFIG, CURVES_CSV, CURVES_PNG, METRICS, STAGE, WEIGHTS, WORK_FILES};
use crate::batch::Batcher;
use crate::config::{StudentConfig, TokenMode};
use crate::error::Result;
use crate::learner::StudentLearner;
use crate::source::{Source, check_source};
use crate::stem::{Stem, TokenStem};
use crate::vit::{Config, PRESETS, Vit};
use kd_core::fit::{EpochRecord, fit};
use kd_core::manifest::{InputRef, Manifest, OutputRef, write_json};
use kd_core::metrics::{LastEpoch, StudentMetrics, StudentSummary};
use kd_core::stage::{Outcome, RunOptions, StageRun, mean_images_per_sec, param_count};
use kd_core::{CoreError, InputError, SettingError};
use kd_data::Dataset;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use tch::nn::VarStore;

/// Train a student into `out` unless an identical one is already there.
pub fn train_stage(
    cfg: &StudentConfig,
    dataset_dir: &Path,
    source: &Source,
    out: &Path,
    run: &RunOptions,
) -> Result<Outcome> {
    let (device, opts) = (run.device, &run.fit);
    let ds_input = InputRef::of("dataset", dataset_dir, kd_data::store::STAGE)?;
    let ds = Dataset::open(dataset_dir)?;
    let train = ds.split("train")?;
    let test = ds.split("test")?;
    let cfg = cfg.resolved(source)?;
    let source_desc = check_source(source, &ds, train)?;
    let names = source.teacher_names();
    let heads: Vec<String> = match (cfg.tokens, names.is_empty()) {
        (_, true) => vec![],
        (TokenMode::PerTeacher, false) => names.clone(),
        (TokenMode::Averaged, false) => vec!["avg".into()],
    };
    if let Some(n) = cfg.dist_tokens
        && n != heads.len()
    {
        return Err(SettingError::rejected(
            "preset",
            &cfg.preset,
            format!(
                "asks for {n} distillation token(s) but the source '{}' gives {} teacher target(s) ({})",
                source.kind(),
                heads.len(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(",")
                }
            ),
        )
        .into());
    }
    let [c, h, w] = cfg.view_spec().out_chw(train.chw);
    if h != w {
        return Err(InputError::Unsupported {
            what: format!("{}: images are {h}x{w}", ds.dir.display()),
            limit: "the ViT needs square images".into(),
        }
        .into());
    }
    let mut model_cfg = Config::preset(&cfg.preset, h, c, ds.num_classes(), heads.len())
        .ok_or_else(|| SettingError::unknown("preset", &cfg.preset, PRESETS))?;
    cfg.model.apply(&mut model_cfg);
    if let Some(dp) = cfg.drop_path {
        model_cfg.drop_path = dp;
    }
    model_cfg.stem = cfg.stem;
    if cfg.stem == Stem::ConvInvolution {
        model_cfg.token_stems = token_stems(source, cfg.tokens, heads.len())?;
    }
    model_cfg.validate().map_err(|e| {
        let with = if cfg.model.is_empty() {
            ""
        } else {
            " with the [model] overrides"
        };
        SettingError::rejected(
            "preset",
            format!("{}{with}", cfg.preset),
            format!("on {h}x{w} images: {e}"),
        )
    })?;
    let mut inputs = vec![ds_input];
    if let Source::Cache { store, .. } = source {
        let store_stage = Manifest::read(store.dir())?.stage;
        let pin = InputRef::of("logits", store.dir(), &store_stage)?;
        if pin.manifest_hash != store.manifest_hash() {
            return Err(InputError::mismatch(
                store.dir(),
                "manifest hash",
                store.manifest_hash(),
                "the store as first opened",
                &pin.manifest_hash,
            )
            .fix("it changed while being opened")
            .into());
        }
        inputs.push(pin);
    }
    let mut config = json!({"student": cfg, "model": model_cfg, "source": source_desc});
    let world = opts.world_size();
    if world > 1 && model_cfg.drop_path > 0.0 {
        // Each rank draws the drop-path masks of its own slice, so the run
        // is another random realisation than one process's: not the same
        // artifact. (Without random draws inside a batch the ranks compute
        // one process's result up to float rounding, and the hash stays.)
        config["data_parallel_ranks"] = json!(world);
    }
    let stage = StageRun::new(STAGE, out, config, inputs).leaves(WORK_FILES);
    if !stage.claim_in_group(run.force, opts, |_| Ok::<(), CoreError>(()))? {
        return Ok(Outcome::UpToDate);
    }
    let identity = json!({
        "config": stage.config(),
        "inputs": stage.inputs().iter().map(|i| (i.role.clone(), i.manifest_hash.clone())).collect::<Vec<_>>(),
    });

    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(device);
    let model = Vit::new(&vs.root(), &model_cfg);
    let params = param_count(&vs);
    tracing::info!(preset = %cfg.preset, params, tokens = heads.len(), source = ?source, "training student");
    let batcher = Batcher::new(&cfg, &ds, train, source, device);
    let mut learner = StudentLearner {
        vs,
        model,
        batcher: &batcher,
        test,
        heads: heads.clone(),
        tokens: cfg.tokens,
        weighting: cfg.weighting,
        loss: cfg.loss_config(),
        eval_batch: cfg.eval_batch_size,
        val: ds.splits.get("val").filter(|v| !v.is_empty()),
        teacher_test_pred: None,
    };
    let history = fit(
        &mut learner,
        Some(&batcher.inputs),
        &cfg.fit_config(),
        &identity,
        out,
        opts,
        run.progress,
    )?;
    if history.len() < cfg.epochs {
        // Stopped early on purpose (tests): keep the checkpoint, write no artifact.
        return Ok(Outcome::Stopped {
            done: history.len(),
        });
    }
    if let Some(g) = opts.group().filter(|g| !g.is_leader()) {
        return Ok(Outcome::Follower { rank: g.rank() });
    }

    let weights = out.join(WEIGHTS);
    learner.vs.save(&weights)?;
    write_json(
        &out.join(CONFIG),
        &json!({"model": model_cfg, "student": cfg, "heads": heads, "inference": "mean of all heads' logits"}),
    )?;
    let last = history.last();
    let test_accuracy = last
        .and_then(|r| r.eval.get("test_acc_avg"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let mean_ips = mean_images_per_sec(&history);
    let summary = StudentSummary {
        test_accuracy,
        last_epoch: last.map(|r| LastEpoch {
            train: r.train.clone(),
            eval: r.eval.clone(),
        }),
        images_per_sec: mean_ips,
        params: params as u64,
    };
    let metrics = StudentMetrics {
        test_accuracy,
        source: source.kind().into(),
        teachers: names,
        heads: heads.clone(),
        params: params as u64,
        device: kd_core::device::device_name(device),
        images_per_sec: mean_ips,
        data_parallel_ranks: Some(world),
        epochs: history.clone(),
    };
    write_json(&out.join(METRICS), &metrics)?;
    write_curves(out, &history)?;

    let mut outputs = vec![OutputRef::of(out, WEIGHTS, true)?];
    for f in [CONFIG, METRICS, CURVES_CSV, CURVES_PNG] {
        outputs.push(OutputRef::of(out, f, false)?);
    }
    let seeds = [
        ("train", cfg.seed),
        ("views", cfg.view_seed.unwrap_or_default()),
    ];
    let m = stage.seal(&seeds, outputs, json!(summary))?;
    tracing::info!(out = %out.display(), test_accuracy, "student written");
    Ok(Outcome::Wrote(Box::new(m)))
}

/// The stem each distillation token is the mean of: a teacher's own bias
/// (matched by the arch recorded in the store or the teacher directory), or
/// both stems for the single token of an averaged target.
fn token_stems(source: &Source, tokens: TokenMode, heads: usize) -> Result<Vec<TokenStem>> {
    if heads == 0 {
        return Ok(vec![]);
    }
    if tokens == TokenMode::Averaged {
        return Ok(vec![TokenStem::Both]);
    }
    source
        .teacher_names()
        .iter()
        .zip(source.teacher_archs())
        .map(|(name, arch)| {
            TokenStem::for_arch(&arch).ok_or_else(|| {
                SettingError::rejected(
                    "stem",
                    "conv-involution",
                    format!("teacher '{name}' has arch '{arch}', but a stem token needs a cnn or involution teacher (set stem = patch)"),
                )
                .into()
            })
        })
        .collect()
}

/// `curves.csv` (every number per epoch) and `curves.png` (test accuracy of
/// each head and of their average, and agreement with the teachers).
fn write_curves(out: &Path, history: &[EpochRecord]) -> Result<()> {
    let train_keys: BTreeSet<&String> = history.iter().flat_map(|r| r.train.keys()).collect();
    let eval_keys: BTreeSet<&String> = history
        .iter()
        .flat_map(|r| r.eval.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k))
        .collect();
    let mut csv = String::from("epoch,lr");
    for k in &train_keys {
        let _ = write!(csv, ",train_{k}");
    }
    for k in &eval_keys {
        let _ = write!(csv, ",{k}");
    }
    csv.push_str(",images_per_sec\n");
    for r in history {
        let _ = write!(csv, "{},{}", r.epoch, r.lr);
        for k in &train_keys {
            let _ = write!(
                csv,
                ",{}",
                r.train.get(*k).map(f64::to_string).unwrap_or_default()
            );
        }
        for k in &eval_keys {
            let v = r
                .eval
                .get(*k)
                .and_then(Value::as_f64)
                .map(|v| v.to_string());
            let _ = write!(csv, ",{}", v.unwrap_or_default());
        }
        let _ = writeln!(csv, ",{}", r.images_per_sec);
    }
    let p = out.join(CURVES_CSV);
    std::fs::write(&p, csv).map_err(|source| CoreError::Io { path: p, source })?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in history {
        for k in &eval_keys {
            if let Some(v) = r.eval.get(*k).and_then(Value::as_f64) {
                series
                    .entry((*k).clone())
                    .or_default()
                    .push((r.epoch as f64, v));
            }
        }
    }
    let series: Vec<kd_report::plot::Series> = series
        .into_iter()
        .map(|(k, pts)| kd_report::plot::Series::new(k, pts))
        .collect();
    // Accuracies and agreements share the [0, 1] axis; losses are in the CSV.
    kd_report::plot::Chart::new(
        "Student: test accuracy per head",
        "Epoch",
        "Fraction",
        &series,
    )
    .write_png(&out.join(CURVES_PNG))?;
    Ok(())
}
