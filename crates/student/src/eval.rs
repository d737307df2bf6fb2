//! `kd student eval` ([`evaluate`]): a finished student artifact on one
//! split of a dataset, each head alone and each against every teacher.
//!
//! The diagnostic the ensemble needs: a distillation token that learned
//! *its* teacher agrees with it more than with the other teacher and repeats
//! more of its mistakes; tokens that all learned the same function agree
//! with every teacher alike. Training only records this for live teachers
//! (the store holds no test logits), so the question is asked after the
//! fact, of the weights, with the teachers loaded once.

use crate::artifact::{CONFIG, STAGE, WEIGHTS};
use crate::config::StudentConfig;
use crate::error::{Result, StudentError};
use crate::learner::argmax_vec;
use crate::vit::{Config, Vit};
use kd_core::manifest::{Manifest, read_json};
use kd_core::metrics::{HeadEval, StudentEval, TeacherEval};
use kd_core::{InputError, Progress, SettingError, Teacher};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor, lut};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// A student artifact's `config.json`: the network and its heads.
#[derive(Deserialize)]
struct StudentFile {
    model: Config,
    student: StudentConfig,
    #[serde(default)]
    heads: Vec<String>,
}

/// A trained student, loaded for inference.
#[derive(Debug)]
pub struct LoadedStudent {
    pub model: Vit,
    pub config: StudentConfig,
    /// Distillation heads in token order (teacher names, or `avg`).
    pub heads: Vec<String>,
    /// Manifest hash of the dataset it was trained on.
    pub dataset_hash: String,
    _vs: VarStore,
}

/// Load a finished student artifact onto `device`, its weights checked
/// against the hash its manifest recorded.
pub fn load_student(dir: &Path, device: Device) -> Result<LoadedStudent> {
    let man = Manifest::read_stage(dir, STAGE)?;
    let file: StudentFile = read_json(&dir.join(CONFIG))?;
    man.checked_output(dir, WEIGHTS)?;
    let dataset_hash = man.input_hash(dir, "dataset")?;
    if file.heads.len() != file.model.dist_tokens {
        return Err(InputError::Malformed {
            at: dir.join(CONFIG),
            what: format!(
                "{} distillation token(s) but {} head name(s)",
                file.model.dist_tokens,
                file.heads.len()
            ),
        }
        .into());
    }
    let mut vs = VarStore::new(device);
    let model = Vit::new(&vs.root(), &file.model);
    let path = dir.join(WEIGHTS);
    vs.load(&path)
        .map_err(|source| StudentError::Weights { path, source })?;
    vs.freeze();
    Ok(LoadedStudent {
        model,
        config: file.student,
        heads: file.heads,
        dataset_hash,
        _vs: vs,
    })
}

/// Evaluate the student in `dir` on `split` of the dataset in `dataset_dir`,
/// against `teachers` (its own, and any others as controls). Images are the
/// plain ones, normalised as in training; teachers see the same tensors, as
/// in live training.
pub fn evaluate(
    dir: &Path,
    dataset_dir: &Path,
    split: &str,
    teachers: &[Box<dyn Teacher>],
    device: Device,
    progress: &dyn Progress,
) -> Result<StudentEval> {
    let student = load_student(dir, device)?;
    let ds = Dataset::open(dataset_dir)?;
    let s = ds.split(split)?;
    let cfg = &student.model.cfg;
    // The plain view of the student's own views: the image, or its central
    // box of the student's view size.
    let spec = student.config.view_spec();
    let [c, h, w] = spec.out_chw(s.chw);
    let whose = format!("student {}", dir.display());
    if (c, h, w) != (cfg.in_chans, cfg.image_size, cfg.image_size) {
        return Err(InputError::mismatch(
            dataset_dir,
            "image shape",
            format!("{c}x{h}x{w}"),
            &whose,
            format!("{}x{}x{}", cfg.in_chans, cfg.image_size, cfg.image_size),
        )
        .into());
    }
    if ds.num_classes() != cfg.num_classes {
        return Err(InputError::mismatch(
            dataset_dir,
            "classes",
            ds.num_classes(),
            &whose,
            cfg.num_classes,
        )
        .into());
    }
    let mut names: Vec<&str> = vec![];
    for t in teachers {
        if t.num_classes() != cfg.num_classes {
            return Err(InputError::mismatch(
                format!("teacher '{}'", t.name()),
                "classes",
                t.num_classes(),
                &whose,
                cfg.num_classes,
            )
            .into());
        }
        if names.contains(&t.name()) {
            return Err(SettingError::Repeated {
                setting: "teacher".into(),
                name: t.name().into(),
            }
            .into());
        }
        names.push(t.name());
    }

    let _g = tch::no_grad_guard();
    let l = lut(&ds.mean, &ds.std);
    let head_names: Vec<String> = ["avg".to_string(), "cls".to_string()]
        .into_iter()
        .chain(student.heads.iter().map(|h| format!("dist_{h}")))
        .collect();
    let mut head_pred = vec![Vec::with_capacity(s.len()); head_names.len()];
    let mut teacher_pred = vec![Vec::with_capacity(s.len()); teachers.len()];
    // The teachers' averaged prediction (argmax of the mean of their
    // softmaxes: what a student matching all of them is pulled towards),
    // compared with like a teacher when there are two or more.
    let averaged = teachers.len() >= 2 && !names.contains(&AVERAGED);
    let mut averaged_pred = Vec::with_capacity(if averaged { s.len() } else { 0 });
    let batch = student.config.eval_batch_size.max(1);
    let all: Vec<usize> = (0..s.len()).collect();
    progress.start("eval", s.len() as u64);
    for idx in all.chunks(batch) {
        let x = batch_tensor(
            s,
            idx,
            &vec![spec.plain([s.chw[1], s.chw[2]]); idx.len()],
            &spec,
            &l,
            device,
        )?;
        let out = student.model.forward_t(&x, false);
        let mut logits = vec![out.averaged(), out.cls.shallow_clone()];
        logits.extend(out.dist.iter().map(Tensor::shallow_clone));
        for (p, z) in head_pred.iter_mut().zip(&logits) {
            p.extend(argmax_vec(z)?);
        }
        let mut prob_sum: Option<Tensor> = None;
        for (p, t) in teacher_pred.iter_mut().zip(teachers) {
            let z = t.logits(&x.to_device(t.device())).to_device(device);
            p.extend(argmax_vec(&z)?);
            if averaged {
                let sm = z.to_kind(Kind::Float).softmax(1, Kind::Float);
                prob_sum = Some(match prob_sum {
                    None => sm,
                    Some(acc) => acc + sm,
                });
            }
        }
        if let Some(sum) = prob_sum {
            averaged_pred.extend(argmax_vec(&sum)?);
        }
        progress.update((idx[0] + idx.len()) as u64, "");
    }
    progress.finish();

    let labels: Vec<i64> = s.labels.iter().map(|&y| y as i64).collect();
    let teacher_preds: Vec<(String, Vec<i64>)> = names
        .iter()
        .map(|n| n.to_string())
        .zip(teacher_pred)
        .collect();
    let teachers: Vec<TeacherEval> = teachers
        .iter()
        .zip(&teacher_preds)
        .map(|(t, (n, p))| {
            let others: Vec<(String, Vec<i64>)> = teacher_preds
                .iter()
                .filter(|(o, _)| o != n)
                .cloned()
                .collect();
            let e = compare(n, p, &labels, &others);
            TeacherEval {
                name: n.clone(),
                arch: t.arch().to_string(),
                accuracy: e.accuracy,
                agreement: e.agreement,
            }
        })
        .collect();
    // The heads are compared with the teachers and their averaged prediction.
    let averaged_accuracy =
        averaged.then(|| compare(AVERAGED, &averaged_pred, &labels, &[]).accuracy);
    let mut against = teacher_preds;
    if averaged {
        against.push((AVERAGED.to_string(), averaged_pred));
    }
    let heads = head_names
        .into_iter()
        .zip(&head_pred)
        .map(|(n, p)| compare(&n, p, &labels, &against))
        .collect();
    Ok(StudentEval {
        student: dir.display().to_string(),
        dataset: dataset_dir.display().to_string(),
        split: split.into(),
        samples: s.len() as u64,
        same_dataset: ds.manifest_hash == student.dataset_hash,
        heads,
        teachers,
        averaged_accuracy,
    })
}

/// The name under which each head's agreement with the teachers' averaged
/// prediction is reported, beside the teachers' own names.
pub const AVERAGED: &str = "averaged";

/// One head's predictions `pred` against the labels and each teacher's
/// predictions: accuracy, agreement, and the share of each teacher's
/// mistakes the head repeats (same wrong class).
pub fn compare(
    head: &str,
    pred: &[i64],
    labels: &[i64],
    teachers: &[(String, Vec<i64>)],
) -> HeadEval {
    let n = labels.len().max(1) as f64;
    let hits = |a: &[i64], b: &[i64]| a.iter().zip(b).filter(|(x, y)| x == y).count();
    let mut agreement = BTreeMap::new();
    let mut repeats_errors = BTreeMap::new();
    for (name, tp) in teachers {
        agreement.insert(name.clone(), hits(pred, tp) as f64 / n);
        let (wrong, repeated) = tp
            .iter()
            .zip(labels)
            .zip(pred)
            .filter(|((t, y), _)| t != y)
            .fold((0usize, 0usize), |(w, r), ((t, _), p)| {
                (w + 1, r + usize::from(p == t))
            });
        if wrong > 0 {
            repeats_errors.insert(name.clone(), repeated as f64 / wrong as f64);
        }
    }
    HeadEval {
        head: head.into(),
        accuracy: hits(pred, labels) as f64 / n,
        agreement,
        repeats_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_by_hand() {
        // 6 images; teacher a wrong on images 2, 3, 5 (predicting 0, 2, 2);
        // the head repeats a's mistake on 2 and 5, not on 3.
        let labels = [0, 1, 1, 1, 2, 0];
        let a = vec![0, 1, 0, 2, 2, 2];
        let b = labels.to_vec();
        let head = [0, 1, 0, 1, 2, 2];
        let e = compare(
            "dist_a",
            &head,
            &labels,
            &[("a".into(), a), ("b".into(), b)],
        );
        assert_eq!(e.head, "dist_a");
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((e.agreement["a"] - 5.0 / 6.0).abs() < 1e-12);
        assert!((e.agreement["b"] - 4.0 / 6.0).abs() < 1e-12);
        assert!((e.repeats_errors["a"] - 2.0 / 3.0).abs() < 1e-12);
        // A teacher without mistakes has no error share to repeat.
        assert!(!e.repeats_errors.contains_key("b"));
    }
}
