//! The `teacher` stage: train one teacher on a dataset artifact, evaluate it,
//! and load it back for the stages that use its logits.
//!
//! Artifact layout (`<out>/`): `weights.safetensors` (PyTorch key names),
//! `config.json` ([`TeacherFile`]: everything needed to rebuild the network),
//! `metrics.json` (per-epoch history, `test_accuracy` in [0,1], confusion
//! matrix, images/s), `manifest.json` last. While training, `<out>/ckpt/`
//! holds the checkpoint the same command resumes from.
//!
//! A *cross-fitted* teacher (`folds = k`) is k models instead of one: the
//! training split is cut into k stratified folds and model `f` is trained on
//! every fold but `f`, so each training image has a model that never saw it.
//! Its logits on training images come from that model ([`kd_core::Teacher::
//! logits_for`]), so a student distilled from them learns the teacher's
//! behaviour off its training data rather than its memory of the labels;
//! on other images the k models' logits are averaged. Layout:
//! `fold-<f>/weights.safetensors` (and `fold-<f>/ckpt/` while training),
//! `folds.json` (each sample's fold and each fold's weights hash, the file
//! whose hash is the teacher's checkpoint hash), `config.json`,
//! `metrics.json`, `manifest.json`.

use crate::error::{Result, TeacherError};
use crate::model::{Arch, ModelConfig, ModelOverrides, Net, param_count};
use kd_core::fit::{EpochRecord, FitConfig, FitOptions, Learner, fit, remove_checkpoint};
use kd_core::manifest::{Manifest, OutputRef, hash_file, needs_run, read_json, write_json};
use kd_core::{InputRef, Progress, ViewParams, ViewSpec};
use kd_data::augment::{batch_tensor, label_tensor, lut};
use kd_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Instant;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

pub const STAGE: &str = "teacher";
pub const WEIGHTS: &str = "weights.safetensors";
pub const CONFIG: &str = "config.json";
pub const METRICS: &str = "metrics.json";
pub const FOLDS: &str = "folds.json";

/// Everything that determines a trained teacher (a profile's
/// `[teachers.<name>]` section; flags override).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Name in stores and reports; default: the architecture's name.
    pub name: Option<String>,
    pub arch: Arch,
    /// Default: `cnn-small` / `rednet-small`.
    pub preset: Option<String>,
    /// Expected class count; checked against the dataset when given.
    pub num_classes: Option<usize>,
    pub fit: FitConfig,
    /// Training views (the shared augmentation contract).
    pub view: ViewSpec,
    pub label_smoothing: f64,
    pub eval_batch_size: usize,
    /// Cross-fitting: train k fold models (k >= 2); absent for one model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    /// `[teachers.<n>.model]`: knobs over the preset.
    #[serde(default, skip_serializing_if = "ModelOverrides::is_empty")]
    pub model: ModelOverrides,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig {
            name: None,
            arch: Arch::Cnn,
            preset: None,
            num_classes: None,
            fit: FitConfig::default(),
            view: ViewSpec::default(),
            label_smoothing: 0.1,
            eval_batch_size: 500,
            folds: None,
            model: ModelOverrides::default(),
        }
    }
}

impl TeacherConfig {
    /// Fill in the defaults that depend on the architecture and check the preset.
    pub fn resolve(&self) -> Result<(TeacherConfig, ModelConfig)> {
        let mut c = self.clone();
        c.name.get_or_insert_with(|| self.arch.name().to_string());
        let preset = c
            .preset
            .get_or_insert_with(|| self.arch.default_preset().to_string());
        let mut model = ModelConfig::preset(self.arch, preset)?;
        self.model.apply(&mut model)?;
        c.view.validate().map_err(TeacherError::Invalid)?;
        c.fit
            .validate()
            .map_err(|e| TeacherError::Invalid(e.to_string()))?;
        if c.eval_batch_size == 0 {
            return Err(TeacherError::Invalid(
                "setting eval_batch_size = 0: must be at least 1".into(),
            ));
        }
        if let Some(k) = c.folds
            && !(2..=64).contains(&k)
        {
            return Err(TeacherError::Invalid(format!(
                "folds {k}: cross-fitting needs 2 to 64 folds"
            )));
        }
        if !(0.0..1.0).contains(&c.label_smoothing) {
            return Err(TeacherError::Invalid(format!(
                "setting label_smoothing = {}: must be in [0, 1)",
                c.label_smoothing
            )));
        }
        Ok((c, model))
    }
}

/// `config.json`: what [`load`] needs to rebuild the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherFile {
    pub teacher: TeacherConfig,
    pub model: ModelConfig,
    pub chw: [usize; 3],
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// Normalisation the inputs must have (per channel, pixels in [0,1]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// What the stage did.
#[derive(Debug)]
pub enum Outcome {
    UpToDate,
    Wrote(Box<Manifest>),
    /// Stopped early by [`FitOptions::stop_after`]; the checkpoint remains.
    Stopped {
        epochs_done: usize,
    },
    /// A data-parallel rank other than 0 trained its share of every batch;
    /// rank 0 wrote the artifact.
    Follower {
        rank: usize,
    },
}

/// Accuracy, loss and confusion of a model on one split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalStats {
    pub samples: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub images_per_sec: f64,
}

/// Evaluate `net` (eval mode, no grad) on the plain images of `split`.
#[allow(clippy::too_many_arguments)]
pub fn eval_split(
    net: &Net,
    split: &Split,
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    classes: usize,
    batch: usize,
    device: Device,
    progress: &dyn Progress,
) -> Result<EvalStats> {
    let f = |x: &Tensor, _: &[usize]| net.forward_t(x, false);
    eval_split_with(&f, split, spec, lut, classes, batch, device, progress)
}

/// Evaluate any logits function of (images, sample indices) on the plain
/// images of `split`: one model, or a cross-fitted teacher's folds.
#[allow(clippy::too_many_arguments)]
pub fn eval_split_with(
    logits_of: &dyn Fn(&Tensor, &[usize]) -> Tensor,
    split: &Split,
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    classes: usize,
    batch: usize,
    device: Device,
    progress: &dyn Progress,
) -> Result<EvalStats> {
    let _g = tch::no_grad_guard();
    let n = split.len();
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut correct, mut loss_sum) = (0usize, 0f64);
    let ident = ViewParams::identity(spec);
    let t0 = Instant::now();
    progress.start("eval", n as u64);
    let all: Vec<usize> = (0..n).collect();
    for idx in all.chunks(batch.max(1)) {
        let x = batch_tensor(split, idx, &vec![ident; idx.len()], spec, lut, device);
        let y = label_tensor(split, idx, device);
        let logits = logits_of(&x, idx).to_kind(Kind::Float);
        let l = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0);
        loss_sum += f64::try_from(&l)?;
        let pred: Vec<i64> = Vec::try_from(logits.argmax(1, false).to_device(Device::Cpu))?;
        for (&i, &p) in idx.iter().zip(&pred) {
            let t = split.labels[i] as usize;
            confusion[t][p as usize] += 1;
            correct += (t == p as usize) as usize;
        }
        progress.update(
            (idx[0] + idx.len()) as u64,
            &format!("acc {:.4}", correct as f64 / (idx[0] + idx.len()) as f64),
        );
    }
    progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    Ok(EvalStats {
        samples: n,
        accuracy: correct as f64 / n.max(1) as f64,
        loss: loss_sum / n.max(1) as f64,
        confusion,
        images_per_sec: n as f64 / secs.max(1e-9),
    })
}

struct TeacherLearner<'a> {
    vs: VarStore,
    net: Net,
    train: &'a Split,
    test: &'a Split,
    lut: Vec<[f32; 256]>,
    cfg: &'a TeacherConfig,
    classes: usize,
    device: Device,
    progress: &'a dyn Progress,
}

impl Learner for TeacherLearner<'_> {
    fn var_store(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, f64)>)> {
        let spec = &self.cfg.view;
        let seed = self.cfg.fit.seed;
        let hw = [self.train.chw[1], self.train.chw[2]];
        let views: Vec<ViewParams> = idx
            .iter()
            .map(|&i| spec.draw(hw, seed, i as u64, 1 + epoch as u64))
            .collect();
        let x = batch_tensor(self.train, idx, &views, spec, &self.lut, self.device);
        let y = label_tensor(self.train, idx, self.device);
        let logits = self.net.forward_t(&x, true).to_kind(Kind::Float);
        let loss = logits.cross_entropy_loss::<Tensor>(
            &y,
            None,
            Reduction::Mean,
            -100,
            self.cfg.label_smoothing,
        );
        let acc = f64::try_from(
            logits
                .argmax(1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float),
        )?;
        let l = f64::try_from(&loss)?;
        Ok((loss, vec![("loss".into(), l), ("acc".into(), acc)]))
    }

    fn evaluate(&mut self, _epoch: usize) -> kd_core::Result<Map<String, Value>> {
        let s = eval_split(
            &self.net,
            self.test,
            &self.cfg.view,
            &self.lut,
            self.classes,
            self.cfg.eval_batch_size,
            self.device,
            self.progress,
        )
        .map_err(|e| kd_core::CoreError::Invalid(e.to_string()))?;
        let mut m = Map::new();
        m.insert("test_accuracy".into(), json!(s.accuracy));
        m.insert("test_loss".into(), json!(s.loss));
        Ok(m)
    }
}

/// Train a teacher into `out` unless an identical one is already there.
pub fn train_stage(
    cfg: &TeacherConfig,
    dataset: &Path,
    out: &Path,
    device: Device,
    force: bool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    train_stage_with(
        cfg,
        dataset,
        out,
        device,
        force,
        progress,
        &FitOptions::default(),
    )
}

/// [`train_stage`] with fit options (tests interrupt training with them).
pub fn train_stage_with(
    cfg: &TeacherConfig,
    dataset: &Path,
    out: &Path,
    device: Device,
    force: bool,
    progress: &dyn Progress,
    opts: &FitOptions,
) -> Result<Outcome> {
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
    // Rank 0 alone looks at (and under --force empties) `--out`.
    let run = kd_core::data_parallel::leader_decides(opts.group(), || -> Result<bool> {
        if !needs_run(out, STAGE, &config, std::slice::from_ref(&input), force)? {
            return Ok(false);
        }
        if force {
            remove_checkpoint(out)?;
            remove_folds(out)?;
        }
        Ok(true)
    })?;
    if !run {
        return Ok(Outcome::UpToDate);
    }
    let ds = Dataset::open(dataset)?;
    let classes = ds.num_classes();
    if let Some(k) = cfg.num_classes
        && k != classes
    {
        return Err(TeacherError::Invalid(format!(
            "{}: dataset has {classes} classes, the teacher config asks for {k}",
            dataset.join(kd_data::store::STORE).display()
        )));
    }
    let train = ds.split("train")?;
    let test = ds.split("test")?;
    if let Some(&bad) = train
        .labels
        .iter()
        .chain(&test.labels)
        .find(|&&l| l as usize >= classes)
    {
        return Err(TeacherError::Invalid(format!(
            "{}: label {bad} but only {classes} class names",
            dataset.display()
        )));
    }
    let chw = ds.chw();
    let name = cfg.name.clone().unwrap_or_default();
    tracing::info!(%name, preset = cfg.preset.as_deref().unwrap_or(""), ?device, train = train.len(), test = test.len(), "training teacher");

    let lut = lut(&ds.mean, &ds.std);
    let identity = json!({
        "stage": STAGE,
        "config": config,
        "model": model_cfg,
        "dataset": input.manifest_hash,
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
            Err(epochs_done) => return Ok(Outcome::Stopped { epochs_done }),
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
                    Err(epochs_done) => return Ok(Outcome::Stopped { epochs_done }),
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
                let fold_test = h
                    .last()
                    .and_then(|r| r.eval.get("test_accuracy"))
                    .cloned()
                    .unwrap_or(Value::Null);
                fold_metrics.push(json!({
                    "fold": f,
                    "train_samples": keep.len(),
                    "held_out_samples": held_out.len(),
                    "held_out_accuracy": oof.accuracy,
                    "test_accuracy": fold_test,
                    "history": h,
                }));
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
    let train_ips =
        history.iter().map(|r| r.images_per_sec).sum::<f64>() / history.len().max(1) as f64;
    let mut summary = json!({
        "name": name,
        "arch": cfg.arch,
        "preset": cfg.preset,
        "params": params,
        "epochs": cfg.fit.epochs,
        "test_accuracy": fin.accuracy,
        "test_loss": fin.loss,
        "train_images_per_sec": train_ips,
        "inference_images_per_sec": fin.images_per_sec,
        "device": kd_core::device::device_name(device),
    });
    if let Some(f) = &folds {
        let held_out: f64 = fold_metrics
            .iter()
            .map(|m| {
                m["held_out_accuracy"].as_f64().unwrap_or(0.0)
                    * m["held_out_samples"].as_f64().unwrap_or(0.0)
            })
            .sum::<f64>()
            / train.len().max(1) as f64;
        let o = summary.as_object_mut().expect("object");
        o.insert("folds".into(), json!(f.k()));
        // Accuracy of each training image's own fold model: what the store's
        // logits on view 0 will score.
        o.insert("held_out_accuracy".into(), json!(held_out));
    }
    let mut metrics = summary.clone();
    let m = metrics.as_object_mut().expect("object");
    m.insert("history".into(), json!(history));
    m.insert("confusion".into(), json!(fin.confusion));
    m.insert("data_parallel_ranks".into(), json!(world));
    m.insert("class_names".into(), json!(ds.class_names));
    m.insert(
        "train_seconds".into(),
        json!(history.iter().map(|r| r.train_seconds).sum::<f64>()),
    );
    if !fold_metrics.is_empty() {
        m.insert("fold_models".into(), json!(fold_metrics));
    }
    write_json(&out.join(METRICS), &metrics)?;
    remove_checkpoint(out)?;

    // The dataset must still be the one trained on when the result is sealed.
    input.verify()?;
    let mut man = Manifest::new(STAGE, config);
    man.seeds.insert("fit".into(), cfg.fit.seed);
    man.inputs.push(input);
    match &folds {
        None => man.outputs.push(OutputRef::of(out, WEIGHTS, true)?),
        Some(f) => {
            for k in 0..f.k() {
                man.outputs.push(OutputRef::of(
                    out,
                    &format!("{}/{WEIGHTS}", fold_dir(k)),
                    true,
                )?);
            }
            man.outputs.push(OutputRef::of(out, FOLDS, true)?);
        }
    }
    man.outputs.push(OutputRef::of(out, CONFIG, true)?);
    man.outputs.push(OutputRef::of(out, METRICS, false)?);
    man.metrics = summary;
    man.write(out)?;
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

fn fold_dir(f: usize) -> String {
    format!("fold-{f}")
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

fn mean_logits(models: &[(VarStore, Net)], x: &Tensor) -> Tensor {
    let all: Vec<Tensor> = models
        .iter()
        .map(|(_, net)| net.forward_t(x, false).to_kind(Kind::Float))
        .collect();
    if all.len() == 1 {
        return all.into_iter().next().expect("one model");
    }
    Tensor::stack(&all, 0).mean_dim(0, false, Kind::Float)
}

/// What training one model needs besides its training split and directory.
struct FitJob<'a> {
    cfg: &'a TeacherConfig,
    model_cfg: &'a ModelConfig,
    test: &'a Split,
    lut: &'a [[f32; 256]],
    classes: usize,
    chw: [usize; 3],
    device: Device,
    opts: &'a FitOptions,
    progress: &'a dyn Progress,
}

type Trained = (VarStore, Net, Vec<EpochRecord>);

impl FitJob<'_> {
    fn new_model(&self) -> (VarStore, Net) {
        // Seeded initialisation: a resumed run's first epoch must have started
        // from the same weights as an uninterrupted one.
        tch::manual_seed(kd_core::rng::key(self.cfg.fit.seed, &[0x696e_6974]) as i64 & i64::MAX);
        let vs = VarStore::new(self.device);
        let net = Net::for_images(&vs.root(), self.model_cfg, self.chw, self.classes as i64);
        (vs, net)
    }

    fn eval(&self, f: &dyn Fn(&Tensor, &[usize]) -> Tensor, split: &Split) -> Result<EvalStats> {
        eval_split_with(
            f,
            split,
            &self.cfg.view,
            self.lut,
            self.classes,
            self.cfg.eval_batch_size,
            self.device,
            self.progress,
        )
    }

    /// Train one model on `train` with its checkpoint in `dir`; `Err(epochs)`
    /// when stopped early on purpose.
    fn train_one(
        &self,
        train: &Split,
        dir: &Path,
        identity: &Value,
    ) -> Result<std::result::Result<Trained, usize>> {
        let (vs, net) = self.new_model();
        let mut learner = TeacherLearner {
            vs,
            net,
            train,
            test: self.test,
            lut: self.lut.to_vec(),
            cfg: self.cfg,
            classes: self.classes,
            device: self.device,
            progress: self.progress,
        };
        let history = fit(
            &mut learner,
            &self.cfg.fit,
            identity,
            dir,
            self.opts,
            self.progress,
        )?;
        if history.len() < self.cfg.fit.epochs {
            return Ok(Err(history.len()));
        }
        Ok(Ok((learner.vs, learner.net, history)))
    }

    /// A fold model: trained into `dir`, or loaded from it when an earlier
    /// run of the same fold finished there (a killed k-fold run resumes
    /// fold by fold).
    fn train_fold(
        &self,
        train: &Split,
        dir: &Path,
        identity: &Value,
    ) -> Result<std::result::Result<Trained, usize>> {
        let id_path = dir.join("fold.json");
        let weights = dir.join(WEIGHTS);
        let finished = || {
            weights.is_file()
                && read_json::<Value>(&id_path).is_ok_and(|done| done["identity"] == *identity)
        };
        // Rank 0 decides (the others may not see its files); a finished fold
        // is skipped by all, and only rank 0 loads it.
        let leader = self.opts.is_leader();
        if kd_core::data_parallel::leader_decides(self.opts.group(), || {
            Ok::<bool, TeacherError>(finished())
        })? && !leader
        {
            // A stand-in the caller never uses: a follower's fold loop moves
            // on to the next fold at once.
            let (vs, net) = self.new_model();
            return Ok(Ok((vs, net, vec![])));
        }
        if leader
            && weights.is_file()
            && let Ok(done) = read_json::<Value>(&id_path)
            && done["identity"] == *identity
        {
            let (mut vs, net) = self.new_model();
            vs.load(&weights).map_err(|e| TeacherError::Artifact {
                path: weights.clone(),
                msg: format!("cannot reload a finished fold: {e}"),
            })?;
            let history: Vec<EpochRecord> =
                serde_json::from_value(done["history"].clone()).unwrap_or_default();
            return Ok(Ok((vs, net, history)));
        }
        let trained = self.train_one(train, dir, identity)?;
        if let Ok((vs, _, history)) = &trained
            && self.opts.is_leader()
        {
            vs.save(&weights)?;
            write_json(&id_path, &json!({"identity": identity, "history": history}))?;
            remove_checkpoint(dir)?;
        }
        Ok(trained)
    }
}

/// A trained teacher, loaded for inference: one model, or k fold models.
#[derive(Debug)]
pub struct LoadedTeacher {
    pub file: TeacherFile,
    name: String,
    arch: String,
    checkpoint_hash: String,
    dataset_hash: String,
    device: Device,
    /// One model, or fold `f`'s model at index `f`.
    pub models: Vec<(VarStore, Net)>,
    folds: Option<kd_core::Folds>,
}

/// The manifest hash of the dataset a teacher artifact was made from.
pub(crate) fn dataset_input(dir: &Path, man: &Manifest) -> Result<String> {
    man.inputs
        .iter()
        .find(|i| i.role == "dataset")
        .map(|i| i.manifest_hash.clone())
        .ok_or_else(|| TeacherError::Artifact {
            path: kd_core::manifest::manifest_path(dir),
            msg: "records no 'dataset' input".into(),
        })
}

/// The blake3 of output `rel` of the artifact in `dir`, refusing a missing
/// file or one whose hash is not the one its manifest recorded.
pub(crate) fn checked_output(dir: &Path, man: &Manifest, rel: &str) -> Result<String> {
    let path = dir.join(rel);
    if !path.is_file() {
        return Err(TeacherError::Artifact {
            path,
            msg: "missing".into(),
        });
    }
    let actual = hash_file(&path)?;
    if let Some(rec) = man
        .outputs
        .iter()
        .find(|o| o.path == rel)
        .and_then(|o| o.blake3.clone())
        && rec != actual
    {
        return Err(kd_core::CoreError::HashMismatch {
            path,
            recorded: rec,
            actual,
        }
        .into());
    }
    Ok(actual)
}

/// Load a finished teacher artifact onto `device` (concrete type).
pub fn load_teacher(dir: &Path, device: Device) -> Result<LoadedTeacher> {
    let man = Manifest::read_stage(dir, STAGE)?;
    let file: TeacherFile = read_json(&dir.join(CONFIG))?;
    let dataset_hash = dataset_input(dir, &man)?;
    // The file whose hash names the teacher: its weights, or for a
    // cross-fitted teacher the fold list that pins every fold's weights.
    let (id_file, weight_files) = match file.teacher.folds {
        None => (WEIGHTS.to_string(), vec![WEIGHTS.to_string()]),
        Some(k) => (
            FOLDS.to_string(),
            (0..k)
                .map(|f| format!("{}/{WEIGHTS}", fold_dir(f)))
                .collect(),
        ),
    };
    let check = |rel: &str| checked_output(dir, &man, rel);
    let checkpoint_hash = check(&id_file)?;
    let folds = match file.teacher.folds {
        None => None,
        Some(k) => {
            let f: kd_core::Folds = read_json(&dir.join(FOLDS))?;
            if f.k() != k || f.assignment.iter().any(|&a| a as usize >= k) {
                return Err(TeacherError::Artifact {
                    path: dir.join(FOLDS),
                    msg: format!("does not describe {k} folds"),
                });
            }
            Some(f)
        }
    };
    let mut models = vec![];
    for (i, rel) in weight_files.iter().enumerate() {
        let actual = check(rel)?;
        if let Some(f) = &folds
            && f.checkpoint_hashes[i] != actual
        {
            return Err(kd_core::CoreError::HashMismatch {
                path: dir.join(rel),
                recorded: f.checkpoint_hashes[i].clone(),
                actual,
            }
            .into());
        }
        let mut vs = VarStore::new(device);
        let net = Net::for_images(&vs.root(), &file.model, file.chw, file.num_classes as i64);
        vs.load(dir.join(rel)).map_err(|e| TeacherError::Artifact {
            path: dir.join(rel),
            msg: format!("does not fit the network in config.json: {e}"),
        })?;
        vs.freeze();
        models.push((vs, net));
    }
    Ok(LoadedTeacher {
        name: file
            .teacher
            .name
            .clone()
            .unwrap_or_else(|| file.model.arch().name().into()),
        arch: format!(
            "{}/{}",
            file.model.arch().name(),
            file.teacher.preset.clone().unwrap_or_default()
        ),
        file,
        checkpoint_hash,
        dataset_hash,
        device,
        models,
        folds,
    })
}

impl LoadedTeacher {
    /// Logits of the mean of all models (the only model for a plain teacher).
    fn ensemble_logits(&self, x: &Tensor) -> Tensor {
        mean_logits(&self.models, x)
    }
}

impl kd_core::Teacher for LoadedTeacher {
    fn name(&self) -> &str {
        &self.name
    }
    fn arch(&self) -> &str {
        &self.arch
    }
    fn num_classes(&self) -> usize {
        self.file.num_classes
    }
    fn checkpoint_hash(&self) -> &str {
        &self.checkpoint_hash
    }
    fn dataset_hash(&self) -> &str {
        &self.dataset_hash
    }
    fn device(&self) -> Device {
        self.device
    }
    fn logits(&self, images: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        self.ensemble_logits(&images.to_device(self.device).to_kind(Kind::Float))
    }
    fn logits_for(&self, samples: &[usize], images: &Tensor) -> Tensor {
        let Some(folds) = &self.folds else {
            return self.logits(images);
        };
        let _g = tch::no_grad_guard();
        let x = images.to_device(self.device).to_kind(Kind::Float);
        let mut out = Tensor::zeros(
            [samples.len() as i64, self.file.num_classes as i64],
            (Kind::Float, self.device),
        );
        for (f, (_, net)) in self.models.iter().enumerate() {
            let rows: Vec<i64> = samples
                .iter()
                .enumerate()
                .filter(|&(_, &s)| folds.of(s) == f)
                .map(|(r, _)| r as i64)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let rows = Tensor::from_slice(&rows).to_device(self.device);
            let z = net
                .forward_t(&x.index_select(0, &rows), false)
                .to_kind(Kind::Float);
            let _ = out.index_copy_(0, &rows, &z);
        }
        out
    }
    fn folds(&self) -> Option<&kd_core::Folds> {
        self.folds.as_ref()
    }
}

/// Load a finished teacher artifact for the stages that use its logits.
pub fn load(dir: &Path, device: Device) -> Result<Box<dyn kd_core::Teacher>, TeacherError> {
    if crate::torchscript::is_torchscript(dir) {
        return Ok(Box::new(crate::torchscript::load_torchscript(dir, device)?));
    }
    Ok(Box::new(load_teacher(dir, device)?))
}

/// Result of `kd teacher eval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub teacher: String,
    pub dataset: String,
    pub split: String,
    /// Whether `dataset` is the artifact the teacher was trained on.
    pub same_dataset: bool,
    #[serde(flatten)]
    pub stats: EvalStats,
}

/// Re-evaluate a trained teacher on a split of a dataset artifact.
pub fn evaluate(
    teacher_dir: &Path,
    dataset: &Path,
    split: &str,
    device: Device,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    // What evaluation needs of either kind of teacher: its geometry, the
    // normalisation its logits() expects (part of the model), its batch.
    let (teacher, chw, classes, mean, std, batch): (Box<dyn kd_core::Teacher>, _, _, _, _, _) =
        if crate::torchscript::is_torchscript(teacher_dir) {
            let t = crate::torchscript::load_torchscript(teacher_dir, device)?;
            let f = t.file.clone();
            (
                Box::new(t),
                f.chw,
                f.num_classes,
                f.data_mean,
                f.data_std,
                f.eval_batch_size,
            )
        } else {
            let t = load_teacher(teacher_dir, device)?;
            let f = t.file.clone();
            let b = f.teacher.eval_batch_size;
            (Box::new(t), f.chw, f.num_classes, f.mean, f.std, b)
        };
    let ds = Dataset::open(dataset)?;
    if ds.num_classes() != classes {
        return Err(TeacherError::Invalid(format!(
            "{}: dataset has {} classes, teacher {} was trained on {}",
            dataset.join(kd_data::store::STORE).display(),
            ds.num_classes(),
            teacher_dir.display(),
            classes
        )));
    }
    if ds.chw()[0] != chw[0] {
        return Err(TeacherError::Invalid(format!(
            "{}: images have {} channels, teacher {} expects {}",
            dataset.join(kd_data::store::STORE).display(),
            ds.chw()[0],
            teacher_dir.display(),
            chw[0]
        )));
    }
    let s = ds.split(split)?;
    let l = lut(&mean, &std);
    let logits = |x: &Tensor, _: &[usize]| teacher.logits(x);
    let stats = eval_split_with(
        &logits,
        s,
        &ViewSpec::default(),
        &l,
        classes,
        batch,
        device,
        progress,
    )?;
    let t = teacher;
    Ok(EvalReport {
        teacher: t.name().to_string(),
        dataset: dataset.display().to_string(),
        split: split.into(),
        same_dataset: ds.manifest_hash == t.dataset_hash(),
        stats,
    })
}
