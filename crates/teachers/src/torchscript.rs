//! Teachers a user brings from PyTorch, as TorchScript modules.
//!
//! `kd teacher import --torchscript model.pt` checks the module on the
//! dataset (it must take `[B, C, H, W]` float images and return
//! `[B, classes]` logits), evaluates it on the test split and writes an
//! ordinary teacher artifact: `model.pt` (a copy, pinned by its blake3 in the
//! manifest, which is the teacher's checkpoint hash), `config.json`
//! ([`TorchScriptFile`]) and `metrics.json`. The cache, `live:` students and
//! `kd cache verify` then use it like a teacher trained here.
//!
//! Normalisation is part of the teacher: kd hands every teacher images
//! normalised with the dataset's mean/std; a module trained with other
//! statistics (ImageNet's, say) records them at import and the images are
//! re-normalised to them before the module sees them.
//!
//! Only what libtorch's TorchScript runtime can run loads: a module with
//! custom CUDA kernels (RedNet's CuPy involution) must be exported with a
//! pure-PyTorch implementation of its op.

use crate::artifact::{CONFIG, METRICS, MODULE, STAGE, WORK_FILES};
use crate::error::{Result, TeacherError};
use crate::scoring::{EvalStats, eval_split_with};
use kd_core::SettingError;
use kd_core::ViewSpec;
use kd_core::manifest::{InputRef, Manifest, OutputRef, hash_file, read_json, write_json};
use kd_core::stage::{Outcome, RunOptions, StageRun};
use kd_data::Dataset;
use kd_data::augment::lut;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::{CModule, Device, Kind, Tensor};

/// The module file inside the artifact.

/// `config.json` of an imported teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchScriptFile {
    /// Always `"torchscript"`: what tells this file from a trained teacher's.
    pub kind: String,
    pub name: String,
    /// The file imported, as given (for the record).
    pub source: String,
    pub chw: [usize; 3],
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// The statistics the dataset's images are normalised with.
    pub data_mean: Vec<f32>,
    pub data_std: Vec<f32>,
    /// The statistics the module expects (per channel, pixels in [0, 1]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub eval_batch_size: usize,
}

impl TorchScriptFile {
    pub const KIND: &'static str = "torchscript";
}

/// What `kd teacher import` is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportConfig {
    pub name: String,
    /// Normalisation the module was trained with; default: the dataset's.
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub eval_batch_size: usize,
}

/// An imported TorchScript module, loaded for inference.
#[derive(Debug)]
pub struct TorchScriptTeacher {
    pub file: TorchScriptFile,
    module: CModule,
    arch: String,
    checkpoint_hash: String,
    dataset_hash: String,
    device: Device,
    /// `x * scale + shift` turns dataset-normalised images into the module's.
    scale: Tensor,
    shift: Tensor,
}

fn per_channel(v: &[f32], device: Device) -> Tensor {
    Tensor::from_slice(v).view([1, -1, 1, 1]).to_device(device)
}

impl TorchScriptTeacher {
    fn new(
        file: TorchScriptFile,
        module: CModule,
        checkpoint_hash: String,
        dataset_hash: String,
        device: Device,
    ) -> TorchScriptTeacher {
        // raw = x * std_d + mean_d; y = (raw - mean_m) / std_m.
        let ratio: Vec<f32> = file
            .data_std
            .iter()
            .zip(&file.std)
            .map(|(d, m)| d / m)
            .collect();
        let shift: Vec<f32> = (0..file.mean.len())
            .map(|c| (file.data_mean[c] - file.mean[c]) / file.std[c])
            .collect();
        TorchScriptTeacher {
            arch: format!("torchscript/{}", file.name),
            scale: per_channel(&ratio, device),
            shift: per_channel(&shift, device),
            file,
            module,
            checkpoint_hash,
            dataset_hash,
            device,
        }
    }

    /// The module's logits, or why it cannot give them.
    fn try_logits(&self, images: &Tensor) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let x = images.to_device(self.device).to_kind(Kind::Float) * &self.scale + &self.shift;
        let y = self
            .module
            .forward_ts(&[x])
            .map_err(|e| TeacherError::Artifact {
                path: PathBuf::from(&self.file.source),
                msg: format!(
                    "the module does not run on {:?} float images: {}",
                    images.size(),
                    first_line(&e.to_string())
                ),
            })?;
        let (b, c) = (images.size()[0], self.file.num_classes as i64);
        if y.size() != [b, c] {
            return Err(TeacherError::Artifact {
                path: PathBuf::from(&self.file.source),
                msg: format!(
                    "the module returns shape {:?} for a batch of {b}; the dataset needs [{b}, {c}] logits ({c} classes)",
                    y.size()
                ),
            });
        }
        Ok(y.to_kind(Kind::Float))
    }
}

/// libtorch's messages carry a C++ backtrace after the first line.
fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

impl kd_core::Teacher for TorchScriptTeacher {
    fn name(&self) -> &str {
        &self.file.name
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
        // Checked at import and at load on a real batch; a failure here is a
        // module whose behaviour depends on the batch, which kd cannot fix.
        self.try_logits(images)
            .unwrap_or_else(|e| panic!("TorchScript teacher '{}': {e}", self.file.name))
    }
}

fn load_module(path: &Path, device: Device) -> Result<CModule> {
    let mut m = CModule::load_on_device(path, device).map_err(|e| TeacherError::Artifact {
        path: path.into(),
        msg: format!(
            "not a TorchScript module libtorch can load: {}",
            first_line(&e.to_string())
        ),
    })?;
    m.set_eval();
    Ok(m)
}

fn stats(
    what: &str,
    given: Option<&Vec<f32>>,
    dataset: &[f32],
    channels: usize,
) -> Result<Vec<f32>> {
    let v = given.cloned().unwrap_or_else(|| dataset.to_vec());
    if v.len() != channels {
        return Err(SettingError::rejected(
            what,
            format!("{v:?}"),
            format!("{} values for {channels} channel(s)", v.len()),
        )
        .into());
    }
    if what == "std" && v.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(
            SettingError::out_of_range("std", format!("{v:?}"), "> 0 in every channel").into(),
        );
    }
    if v.iter().any(|s| !s.is_finite()) {
        return Err(SettingError::out_of_range(what, format!("{v:?}"), "finite").into());
    }
    Ok(v)
}

/// Import `module` as the teacher artifact `out`, evaluated on `dataset`.
pub fn import_stage(
    module: &Path,
    cfg: &ImportConfig,
    dataset: &Path,
    out: &Path,
    run: &RunOptions,
) -> Result<Outcome> {
    let (device, progress) = (run.device, run.progress);
    if !module.is_file() {
        return Err(TeacherError::Artifact {
            path: module.into(),
            msg: "no such file".into(),
        });
    }
    kd_core::fit::check::count("eval_batch_size", cfg.eval_batch_size)?;
    let input = InputRef::of("dataset", dataset, kd_data::store::STAGE)?;
    let module_hash = hash_file(module)?;
    let config = json!({"torchscript": cfg, "module_blake3": module_hash});
    let stage = StageRun::new(STAGE, out, config, vec![input]).leaves(WORK_FILES);
    if !stage.claim(run.force)? {
        return Ok(Outcome::UpToDate);
    }
    let ds = Dataset::open(dataset)?;
    let test = ds.split("test")?;
    let chw = ds.chw();
    let file = TorchScriptFile {
        kind: TorchScriptFile::KIND.into(),
        name: cfg.name.clone(),
        source: module.display().to_string(),
        chw,
        num_classes: ds.num_classes(),
        class_names: ds.class_names.clone(),
        data_mean: ds.mean.clone(),
        data_std: ds.std.clone(),
        mean: stats("mean", cfg.mean.as_ref(), &ds.mean, chw[0])?,
        std: stats("std", cfg.std.as_ref(), &ds.std, chw[0])?,
        eval_batch_size: cfg.eval_batch_size,
    };
    let loaded = load_module(module, device)?;
    // Trainable or not, every parameter the module holds counts.
    let params: usize = loaded
        .named_parameters()
        .map(|ps| ps.iter().map(|(_, t)| t.numel()).sum())
        .unwrap_or(0);
    let teacher = TorchScriptTeacher::new(
        file.clone(),
        loaded,
        module_hash.clone(),
        stage.inputs()[0].manifest_hash.clone(),
        device,
    );
    // One real batch first: a wrong input or class count is one clear error.
    let probe = Tensor::zeros(
        [2, chw[0] as i64, chw[1] as i64, chw[2] as i64],
        (Kind::Float, device),
    );
    let _ = teacher.try_logits(&probe)?;
    let spec = ViewSpec::default();
    let l = lut(&ds.mean, &ds.std);
    let eval: EvalStats = eval_split_with(
        &|x: &Tensor, _: &[usize]| teacher.try_logits(x).expect("probed above"),
        test,
        &spec,
        &l,
        file.num_classes,
        cfg.eval_batch_size,
        device,
        progress,
    )?;
    std::fs::copy(module, out.join(MODULE)).map_err(|source| kd_core::CoreError::Io {
        path: out.join(MODULE),
        source,
    })?;
    write_json(&out.join(CONFIG), &file)?;
    let summary = json!({
        "name": cfg.name,
        "arch": "torchscript",
        "preset": cfg.name,
        "params": params,
        "test_accuracy": eval.accuracy,
        "test_loss": eval.loss,
        "inference_images_per_sec": eval.images_per_sec,
        "device": kd_core::device::device_name(device),
        "module_blake3": module_hash,
    });
    let mut metrics = summary.clone();
    metrics["confusion"] = json!(eval.confusion);
    metrics["class_names"] = json!(ds.class_names);
    write_json(&out.join(METRICS), &metrics)?;
    let outputs = vec![
        OutputRef::of(out, MODULE, true)?,
        OutputRef::of(out, CONFIG, true)?,
        OutputRef::of(out, METRICS, false)?,
    ];
    let man = stage.seal(&[], outputs, summary)?;
    tracing::info!(out = %out.display(), test_accuracy = eval.accuracy, "TorchScript teacher imported");
    Ok(Outcome::Wrote(Box::new(man)))
}

/// Whether the teacher artifact in `dir` is an imported TorchScript module.
pub fn is_torchscript(dir: &Path) -> bool {
    read_json::<serde_json::Value>(&dir.join(CONFIG))
        .is_ok_and(|v| v["kind"] == TorchScriptFile::KIND)
}

/// Load an imported teacher artifact.
pub fn load_torchscript(dir: &Path, device: Device) -> Result<TorchScriptTeacher> {
    let man = Manifest::read_stage(dir, STAGE)?;
    let file: TorchScriptFile = read_json(&dir.join(CONFIG))?;
    let path = dir.join(MODULE);
    let actual = man.checked_output(dir, MODULE)?;
    let dataset_hash = man.input_hash(dir, "dataset")?;
    let module = load_module(&path, device)?;
    let [c, h, w] = file.chw;
    let t = TorchScriptTeacher::new(file, module, actual, dataset_hash, device);
    // The same probe as at import: a module that no longer runs here (other
    // libtorch, other device) fails now, with its reason, not mid-build.
    let _ = t.try_logits(&Tensor::zeros(
        [2, c as i64, h as i64, w as i64],
        (Kind::Float, device),
    ))?;
    Ok(t)
}
