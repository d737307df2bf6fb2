//! The `teacher` stage: train one teacher on a dataset artifact, evaluate it,
//! and load it back for the stages that use its logits.
//!
//! Artifact layout (`<out>/`): `weights.safetensors` (PyTorch key names),
//! `config.json` ([`TeacherFile`]: everything needed to rebuild the network),
//! `metrics.json` (per-epoch history, `test_accuracy` in [0,1], confusion
//! matrix, images/s), `manifest.json` last. While training, `<out>/ckpt/`
//! holds the checkpoint the same command resumes from.

use crate::error::{Result, TeacherError};
use crate::model::{Arch, ModelConfig, Net, param_count};
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
        let model = ModelConfig::preset(self.arch, preset)?;
        if c.eval_batch_size == 0 {
            return Err(TeacherError::Invalid("eval_batch_size must be > 0".into()));
        }
        if !(0.0..1.0).contains(&c.label_smoothing) {
            return Err(TeacherError::Invalid(format!(
                "label_smoothing {} is outside [0, 1)",
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
        let logits = net.forward_t(&x, false).to_kind(Kind::Float);
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
        let views: Vec<ViewParams> = idx
            .iter()
            .map(|&i| spec.draw(seed, i as u64, 1 + epoch as u64))
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
    let config = serde_json::to_value(&cfg).expect("config serialises");
    if !needs_run(out, STAGE, &config, std::slice::from_ref(&input), force)? {
        return Ok(Outcome::UpToDate);
    }
    if force {
        remove_checkpoint(out)?;
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

    // Seeded initialisation: a resumed run's first epoch must have started
    // from the same weights as an uninterrupted one.
    tch::manual_seed(kd_core::rng::key(cfg.fit.seed, &[0x696e_6974]) as i64 & i64::MAX);
    let vs = VarStore::new(device);
    let net = Net::new(&vs.root(), &model_cfg, chw[0] as i64, classes as i64);
    let params = param_count(&vs);
    let mut learner = TeacherLearner {
        vs,
        net,
        train,
        test,
        lut: lut(&ds.mean, &ds.std),
        cfg: &cfg,
        classes,
        device,
        progress,
    };
    let identity = json!({
        "stage": STAGE,
        "config": config,
        "model": model_cfg,
        "dataset": input.manifest_hash,
        "classes": classes,
        "chw": chw,
    });
    let history: Vec<EpochRecord> = fit(&mut learner, &cfg.fit, &identity, out, opts, progress)?;
    if history.len() < cfg.fit.epochs {
        return Ok(Outcome::Stopped {
            epochs_done: history.len(),
        });
    }
    let fin = eval_split(
        &learner.net,
        test,
        &cfg.view,
        &learner.lut,
        classes,
        cfg.eval_batch_size,
        device,
        progress,
    )?;

    learner.vs.save(out.join(WEIGHTS))?;
    let file = TeacherFile {
        teacher: cfg.clone(),
        model: model_cfg,
        chw,
        num_classes: classes,
        class_names: ds.class_names.clone(),
        mean: ds.mean.clone(),
        std: ds.std.clone(),
    };
    write_json(&out.join(CONFIG), &file)?;
    let train_ips =
        history.iter().map(|r| r.images_per_sec).sum::<f64>() / history.len().max(1) as f64;
    let summary = json!({
        "name": name,
        "arch": cfg.arch,
        "preset": cfg.preset,
        "params": params,
        "epochs": history.len(),
        "test_accuracy": fin.accuracy,
        "test_loss": fin.loss,
        "train_images_per_sec": train_ips,
        "inference_images_per_sec": fin.images_per_sec,
        "device": kd_core::device::device_name(device),
    });
    let mut metrics = summary.clone();
    let m = metrics.as_object_mut().expect("object");
    m.insert("history".into(), json!(history));
    m.insert("confusion".into(), json!(fin.confusion));
    m.insert("class_names".into(), json!(ds.class_names));
    m.insert(
        "train_seconds".into(),
        json!(history.iter().map(|r| r.train_seconds).sum::<f64>()),
    );
    write_json(&out.join(METRICS), &metrics)?;
    remove_checkpoint(out)?;

    // The dataset must still be the one trained on when the result is sealed.
    input.verify()?;
    let mut man = Manifest::new(STAGE, config);
    man.seeds.insert("fit".into(), cfg.fit.seed);
    man.inputs.push(input);
    man.outputs.push(OutputRef::of(out, WEIGHTS, true)?);
    man.outputs.push(OutputRef::of(out, CONFIG, true)?);
    man.outputs.push(OutputRef::of(out, METRICS, false)?);
    man.metrics = summary;
    man.write(out)?;
    tracing::info!(out = %out.display(), test_accuracy = fin.accuracy, "teacher written");
    Ok(Outcome::Wrote(Box::new(man)))
}

/// A trained teacher, loaded for inference.
#[derive(Debug)]
pub struct LoadedTeacher {
    pub file: TeacherFile,
    name: String,
    arch: String,
    checkpoint_hash: String,
    dataset_hash: String,
    device: Device,
    pub vs: VarStore,
    pub net: Net,
}

/// Load a finished teacher artifact onto `device` (concrete type).
pub fn load_teacher(dir: &Path, device: Device) -> Result<LoadedTeacher> {
    let man = Manifest::read_stage(dir, STAGE)?;
    let file: TeacherFile = read_json(&dir.join(CONFIG))?;
    let weights = dir.join(WEIGHTS);
    if !weights.is_file() {
        return Err(TeacherError::Artifact {
            path: weights,
            msg: "missing".into(),
        });
    }
    let dataset_hash = man
        .inputs
        .iter()
        .find(|i| i.role == "dataset")
        .map(|i| i.manifest_hash.clone())
        .ok_or_else(|| TeacherError::Artifact {
            path: kd_core::manifest::manifest_path(dir),
            msg: "records no 'dataset' input".into(),
        })?;
    let checkpoint_hash = hash_file(&weights)?;
    if let Some(rec) = man
        .outputs
        .iter()
        .find(|o| o.path == WEIGHTS)
        .and_then(|o| o.blake3.clone())
        && rec != checkpoint_hash
    {
        return Err(kd_core::CoreError::HashMismatch {
            path: weights,
            recorded: rec,
            actual: checkpoint_hash,
        }
        .into());
    }
    let mut vs = VarStore::new(device);
    let net = Net::new(
        &vs.root(),
        &file.model,
        file.chw[0] as i64,
        file.num_classes as i64,
    );
    vs.load(&weights).map_err(|e| TeacherError::Artifact {
        path: weights.clone(),
        msg: format!("does not fit the network in config.json: {e}"),
    })?;
    vs.freeze();
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
        vs,
        net,
    })
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
        self.net
            .forward_t(&images.to_device(self.device).to_kind(Kind::Float), false)
            .to_kind(Kind::Float)
    }
}

/// Load a finished teacher artifact for the stages that use its logits.
pub fn load(dir: &Path, device: Device) -> Result<Box<dyn kd_core::Teacher>, TeacherError> {
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
    let t = load_teacher(teacher_dir, device)?;
    let ds = Dataset::open(dataset)?;
    if ds.num_classes() != t.file.num_classes {
        return Err(TeacherError::Invalid(format!(
            "{}: dataset has {} classes, teacher {} was trained on {}",
            dataset.join(kd_data::store::STORE).display(),
            ds.num_classes(),
            teacher_dir.display(),
            t.file.num_classes
        )));
    }
    if ds.chw()[0] != t.file.chw[0] {
        return Err(TeacherError::Invalid(format!(
            "{}: images have {} channels, teacher {} expects {}",
            dataset.join(kd_data::store::STORE).display(),
            ds.chw()[0],
            teacher_dir.display(),
            t.file.chw[0]
        )));
    }
    let s = ds.split(split)?;
    // The teacher's own normalisation: it is part of the model.
    let l = lut(&t.file.mean, &t.file.std);
    let stats = eval_split(
        &t.net,
        s,
        &t.file.teacher.view,
        &l,
        t.file.num_classes,
        t.file.teacher.eval_batch_size,
        device,
        progress,
    )?;
    Ok(EvalReport {
        teacher: kd_core::Teacher::name(&t).to_string(),
        dataset: dataset.display().to_string(),
        split: split.into(),
        same_dataset: ds.manifest_hash == t.dataset_hash,
        stats,
    })
}
