//! `kd teacher eval`: one teacher artifact ([`evaluate`]) or several side by
//! side ([`evaluate_ensemble`]) on a split of a dataset artifact.

use crate::error::Result;
use crate::load::load_teacher;
use crate::scoring::{EvalStats, eval_split_with};
use kd_core::{InputError, SettingError};
use kd_core::{Progress, ViewSpec};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor, lut};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

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

/// A teacher ready to evaluate: the model, and what its `logits()` expects.
struct EvalTeacher {
    teacher: Box<dyn kd_core::Teacher>,
    classes: usize,
    lut: Vec<[f32; 256]>,
    batch: usize,
    /// Whose plain view it is shown: a trained teacher's own views (the
    /// central box of its view size); an imported one sees the image.
    spec: ViewSpec,
}

/// Load either kind of teacher and check it fits `ds` (`dataset` names it).
fn open_teacher(
    teacher_dir: &Path,
    ds: &Dataset,
    dataset: &Path,
    device: Device,
) -> Result<EvalTeacher> {
    // What evaluation needs of either kind of teacher: its geometry, the
    // normalisation its logits() expects (part of the model), its batch.
    let (teacher, chw, classes, mean, std, batch, spec): (
        Box<dyn kd_core::Teacher>,
        [usize; 3],
        _,
        _,
        _,
        _,
        _,
    ) = if crate::torchscript::is_torchscript(teacher_dir) {
        let t = crate::torchscript::load_torchscript(teacher_dir, device)?;
        let f = t.file.clone();
        (
            Box::new(t),
            f.chw,
            f.num_classes,
            f.data_mean,
            f.data_std,
            f.eval_batch_size,
            ViewSpec::default(),
        )
    } else {
        let t = load_teacher(teacher_dir, device)?;
        let f = t.file.clone();
        let b = f.teacher.eval_batch_size;
        (
            Box::new(t),
            f.chw,
            f.num_classes,
            f.mean,
            f.std,
            b,
            f.teacher.view,
        )
    };
    if ds.num_classes() != classes {
        return Err(InputError::mismatch(
            dataset.join(kd_data::store::STORE),
            "classes",
            ds.num_classes(),
            format!("teacher {}", teacher_dir.display()),
            classes,
        )
        .into());
    }
    if ds.chw()[0] != chw[0] {
        return Err(InputError::mismatch(
            dataset.join(kd_data::store::STORE),
            "image channels",
            ds.chw()[0],
            format!("teacher {}", teacher_dir.display()),
            chw[0],
        )
        .into());
    }
    Ok(EvalTeacher {
        teacher,
        classes,
        lut: lut(&mean, &std),
        batch,
        spec,
    })
}

/// Re-evaluate a trained teacher on a split of a dataset artifact.
pub fn evaluate(
    teacher_dir: &Path,
    dataset: &Path,
    split: &str,
    device: Device,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    let ds = Dataset::open(dataset)?;
    let t = open_teacher(teacher_dir, &ds, dataset, device)?;
    let s = ds.split(split)?;
    let logits = |x: &Tensor, _: &[usize]| t.teacher.logits(x);
    let stats = eval_split_with(
        &logits, s, &t.spec, &t.lut, t.classes, t.batch, device, progress,
    )?;
    Ok(EvalReport {
        teacher: t.teacher.name().to_string(),
        dataset: dataset.display().to_string(),
        split: split.into(),
        same_dataset: ds.manifest_hash == t.teacher.dataset_hash(),
        stats,
    })
}

/// Two teachers side by side on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    pub a: String,
    pub b: String,
    /// Share of images where both predict the same class.
    pub agreement: f64,
    pub both_right: f64,
    /// Share of images only `a` gets right (what `b` could learn from `a`).
    pub only_a_right: f64,
    pub only_b_right: f64,
    pub both_wrong: f64,
}

/// Several teachers on one split: whether averaging them is worth it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleStats {
    pub samples: usize,
    pub teachers: Vec<String>,
    /// Each teacher's accuracy, in `teachers` order.
    pub accuracy: Vec<f64>,
    /// Accuracy of the argmax of the teachers' averaged softmax
    /// probabilities (what a student matching all of them sees).
    pub averaged_accuracy: f64,
    /// The most accurate teacher (the first on a tie).
    pub best: String,
    /// `averaged_accuracy` minus the best teacher's: the ensemble's premise
    /// holds where this is positive.
    pub averaged_gain: f64,
    /// Every pair, `(0,1), (0,2), ..., (1,2), ...`.
    pub pairs: Vec<PairStats>,
}

/// The statistics of `probs[t]` (teacher t's `[n, classes]` row-major
/// softmax probabilities) against `labels`. Predictions are each row's
/// argmax (the first on a tie, as libtorch's).
pub fn ensemble_stats(
    names: &[String],
    probs: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
) -> EnsembleStats {
    let n = labels.len();
    assert_eq!(names.len(), probs.len(), "one name per teacher");
    assert!(
        probs.iter().all(|p| p.len() == n * classes),
        "[n, classes] rows"
    );
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                if v > bv { (i, v) } else { (bi, bv) }
            })
            .0
    };
    let preds: Vec<Vec<usize>> = probs
        .iter()
        .map(|p| p.chunks_exact(classes).map(argmax).collect())
        .collect();
    let mut mean = vec![0f32; classes];
    let mut avg_right = 0usize;
    for (i, &y) in labels.iter().enumerate() {
        mean.fill(0.0);
        for p in probs {
            for (m, v) in mean.iter_mut().zip(&p[i * classes..(i + 1) * classes]) {
                *m += v / probs.len() as f32;
            }
        }
        avg_right += (argmax(&mean) == y) as usize;
    }
    let share = |k: usize| k as f64 / n.max(1) as f64;
    let right = |t: usize, i: usize| preds[t][i] == labels[i];
    let accuracy: Vec<f64> = (0..probs.len())
        .map(|t| share((0..n).filter(|&i| right(t, i)).count()))
        .collect();
    let best = (0..accuracy.len()).fold(0, |b, t| if accuracy[t] > accuracy[b] { t } else { b });
    let mut pairs = vec![];
    for a in 0..probs.len() {
        for b in a + 1..probs.len() {
            let count = |f: &dyn Fn(usize) -> bool| share((0..n).filter(|&i| f(i)).count());
            pairs.push(PairStats {
                a: names[a].clone(),
                b: names[b].clone(),
                agreement: count(&|i| preds[a][i] == preds[b][i]),
                both_right: count(&|i| right(a, i) && right(b, i)),
                only_a_right: count(&|i| right(a, i) && !right(b, i)),
                only_b_right: count(&|i| !right(a, i) && right(b, i)),
                both_wrong: count(&|i| !right(a, i) && !right(b, i)),
            });
        }
    }
    let averaged_accuracy = share(avg_right);
    EnsembleStats {
        samples: n,
        teachers: names.to_vec(),
        averaged_gain: averaged_accuracy - accuracy.get(best).copied().unwrap_or(0.0),
        best: names.get(best).cloned().unwrap_or_default(),
        accuracy,
        averaged_accuracy,
        pairs,
    }
}

/// Result of `kd teacher eval` over several teachers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnsembleReport {
    pub dataset: String,
    pub split: String,
    #[serde(flatten)]
    pub stats: EnsembleStats,
}

/// Several teachers on the plain images of one split: each one's accuracy,
/// their averaged prediction's, and how they agree and differ.
pub fn evaluate_ensemble(
    teacher_dirs: &[&Path],
    dataset: &Path,
    split: &str,
    device: Device,
    progress: &dyn Progress,
) -> Result<EnsembleReport> {
    let ds = Dataset::open(dataset)?;
    let teachers = teacher_dirs
        .iter()
        .map(|d| open_teacher(d, &ds, dataset, device))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = teachers
        .iter()
        .map(|t| t.teacher.name().to_string())
        .collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(SettingError::Repeated {
                setting: "teacher".into(),
                name: n.clone(),
            }
            .into());
        }
    }
    let s = ds.split(split)?;
    let classes = ds.num_classes();
    let all: Vec<usize> = (0..s.len()).collect();
    let mut probs = vec![Vec::with_capacity(s.len() * classes); teachers.len()];
    let _g = tch::no_grad_guard();
    for (t, p) in teachers.iter().zip(&mut probs) {
        progress.start(&format!("eval {}", t.teacher.name()), s.len() as u64);
        for idx in all.chunks(t.batch.max(1)) {
            let views = vec![t.spec.plain([s.chw[1], s.chw[2]]); idx.len()];
            let x = batch_tensor(s, idx, &views, &t.spec, &t.lut, device)?;
            let sm = t
                .teacher
                .logits(&x)
                .to_kind(Kind::Float)
                .softmax(1, Kind::Float)
                .to_device(Device::Cpu)
                .flatten(0, -1);
            p.extend(Vec::<f32>::try_from(sm)?);
            progress.update((idx[0] + idx.len()) as u64, "");
        }
        progress.finish();
    }
    let labels: Vec<usize> = s.labels.iter().map(|&l| l as usize).collect();
    Ok(EnsembleReport {
        dataset: dataset.display().to_string(),
        split: split.into(),
        stats: ensemble_stats(&names, &probs, &labels, classes),
    })
}

#[cfg(test)]
mod tests;
