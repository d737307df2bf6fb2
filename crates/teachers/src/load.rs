//! Loading a finished teacher artifact for inference ([`load`]): one model
//! or k fold models, every file checked against the hashes its manifest
//! recorded.

use crate::artifact::{CONFIG, FOLDS, STAGE, WEIGHTS, fold_dir};
use crate::config::TeacherFile;
use crate::error::{Result, TeacherError};
use crate::model::{Net, mean_logits};
use kd_core::manifest::{Manifest, read_json};
use std::path::Path;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

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

/// Load a finished teacher artifact onto `device` (concrete type).
pub fn load_teacher(dir: &Path, device: Device) -> Result<LoadedTeacher> {
    let man = Manifest::read_stage(dir, STAGE)?;
    let file: TeacherFile = read_json(&dir.join(CONFIG))?;
    let dataset_hash = man.input_hash(dir, "dataset")?;
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
    let check = |rel: &str| man.checked_output(dir, rel);
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
        vs.load(dir.join(rel))
            .map_err(|source| TeacherError::Weights {
                path: dir.join(rel),
                msg: "does not fit the network in config.json",
                source,
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
