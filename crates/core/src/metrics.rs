//! Typed `metrics.json` files and manifest `metrics` sections: what the
//! teacher, student and data stages record and what the report reads back.
//!
//! Fields are declared in the order the writers emit them, so serialising a
//! value reproduces the file byte for byte (`serde_json` keeps struct field
//! order); a writer can switch from `json!` to these structs without changing
//! a single file. Fields that runs made before they existed lack are
//! `Option` with `#[serde(default)]`, and skipped when absent so that such a
//! file also round-trips unchanged.

use crate::fit::EpochRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `metrics` of a dataset artifact's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetMetrics {
    /// Images per split (`train`, `test`, and `val` when one was cut).
    pub samples: BTreeMap<String, u64>,
    pub class_counts: SplitClassCounts,
    pub chw: [usize; 3],
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub num_classes: usize,
}

/// Images per class in each split, in the order the splits are cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitClassCounts {
    pub train: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<Vec<u64>>,
    pub test: Vec<u64>,
}

/// A teacher's headline numbers: its manifest's `metrics`, and the head of
/// its `metrics.json` ([`TeacherMetrics`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherSummary {
    pub name: String,
    pub arch: String,
    /// `null` when the config named none (the architecture's default).
    pub preset: Option<String>,
    pub params: u64,
    /// 0 for an imported (TorchScript) teacher, which kd never trained.
    #[serde(default)]
    pub epochs: u64,
    /// Accuracy in [0, 1] on the test split (cross-fitted: the fold models'
    /// averaged logits).
    pub test_accuracy: f64,
    pub test_loss: f64,
    /// 0 for an imported teacher.
    #[serde(default)]
    pub train_images_per_sec: f64,
    pub inference_images_per_sec: f64,
    pub device: String,
    /// Cross-fitted teachers only: the number of fold models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folds: Option<usize>,
    /// Cross-fitted teachers only: each training image scored by the fold
    /// model that never saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_accuracy: Option<f64>,
}

/// A teacher artifact's `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherMetrics {
    #[serde(flatten)]
    pub summary: TeacherSummary,
    /// Every epoch (of every fold model, one after the other, when cross-fitted).
    #[serde(default)]
    pub history: Vec<EpochRecord>,
    /// `confusion[true][predicted]` on the test split.
    #[serde(default)]
    pub confusion: Vec<Vec<u64>>,
    /// Absent in runs made before data-parallel training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_parallel_ranks: Option<usize>,
    #[serde(default)]
    pub class_names: Vec<String>,
    #[serde(default)]
    pub train_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold_models: Option<Vec<FoldMetrics>>,
}

/// One fold model of a cross-fitted teacher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    pub fold: usize,
    pub train_samples: usize,
    pub held_out_samples: usize,
    pub held_out_accuracy: f64,
    /// `null` when the fold model's last epoch was not evaluated.
    pub test_accuracy: Option<f64>,
    pub history: Vec<EpochRecord>,
}

/// A student artifact's `metrics.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentMetrics {
    /// Test accuracy of the averaged heads (the student's prediction) at the
    /// last epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Where the teacher logits came from: `none`, `cache` or `live`.
    pub source: String,
    #[serde(default)]
    pub teachers: Vec<String>,
    /// One distillation head per entry (a teacher's name, or `averaged`).
    #[serde(default)]
    pub heads: Vec<String>,
    pub params: u64,
    pub device: String,
    /// Training images per second, the mean over epochs.
    pub images_per_sec: f64,
    /// Absent in runs made before data-parallel training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_parallel_ranks: Option<usize>,
    pub epochs: Vec<EpochRecord>,
}

impl StudentMetrics {
    /// The last epoch's evaluation (`test_acc_avg`, `val_acc_cls`, ...),
    /// empty when there is none.
    pub fn last_eval(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.epochs
            .last()
            .map_or_else(|| EMPTY.get_or_init(Map::new), |r| &r.eval)
    }

    /// Mean wall-clock seconds of a training epoch (0 with no epochs).
    pub fn mean_epoch_seconds(&self) -> f64 {
        self.epochs.iter().map(|r| r.train_seconds).sum::<f64>() / self.epochs.len().max(1) as f64
    }
}

/// `metrics` of a student artifact's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentSummary {
    pub test_accuracy: f64,
    /// `null` for a run of zero epochs.
    pub last_epoch: Option<LastEpoch>,
    pub images_per_sec: f64,
    pub params: u64,
}

/// The training losses and evaluation of a student's last epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastEpoch {
    pub train: BTreeMap<String, f64>,
    pub eval: Map<String, Value>,
}

/// `kd student eval`: a finished student's heads on one split of a
/// dataset, each against the teachers. Whether a distillation head learned
/// *its* teacher shows as a higher agreement with it than with the other
/// teachers, and as more of its teacher's mistakes repeated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentEval {
    pub student: String,
    pub dataset: String,
    pub split: String,
    pub samples: u64,
    /// Whether `dataset` is the artifact the student was trained on.
    pub same_dataset: bool,
    /// `avg` (the student's prediction), `cls`, then `dist_<teacher>` (or
    /// `dist_avg`) per distillation head. With two or more teachers each
    /// head is also compared with their averaged prediction, under the name
    /// `averaged`.
    pub heads: Vec<HeadEval>,
    pub teachers: Vec<TeacherEval>,
    /// Accuracy of the teachers' averaged prediction (argmax of the mean of
    /// their softmaxes); absent with fewer than two teachers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub averaged_accuracy: Option<f64>,
}

/// One head of the student on the split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadEval {
    pub head: String,
    /// In [0, 1].
    pub accuracy: f64,
    /// Fraction of images where this head's top-1 class is teacher `t`'s.
    pub agreement: BTreeMap<String, f64>,
    /// Of the images teacher `t` gets wrong, the fraction where this head
    /// predicts the same wrong class (absent for a teacher without errors).
    pub repeats_errors: BTreeMap<String, f64>,
}

/// One teacher on the split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherEval {
    pub name: String,
    pub arch: String,
    pub accuracy: f64,
    /// Top-1 agreement with each other teacher.
    pub agreement: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `text` as `T` and write it back as the stages write JSON.
    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(text: &str) -> String {
        let v: T = serde_json::from_str(text).expect("parses");
        serde_json::to_string_pretty(&v).expect("serialises") + "\n"
    }

    #[test]
    fn teacher_metrics_round_trip_byte_for_byte() {
        for text in [
            include_str!("../tests/fixtures/teacher-metrics.json"),
            include_str!("../tests/fixtures/teacher-crossfit-metrics.json"),
        ] {
            assert_eq!(round_trip::<TeacherMetrics>(text), text);
        }
    }

    #[test]
    fn student_metrics_round_trip_byte_for_byte() {
        let text = include_str!("../tests/fixtures/student-metrics.json");
        assert_eq!(round_trip::<StudentMetrics>(text), text);
        let m: StudentMetrics = serde_json::from_str(text).unwrap();
        assert_eq!(m.last_eval()["val_acc_avg"], 0.762);
        assert!(m.mean_epoch_seconds() > 0.0);
        assert_eq!(m.data_parallel_ranks, None);
    }

    #[test]
    fn manifest_metrics_round_trip() {
        let ds = r#"{"samples": {"test": 100, "train": 360, "val": 40}, "class_counts": {"train": [36, 36], "val": [4, 4], "test": [50, 50]}, "chw": [1, 28, 28], "mean": [0.28], "std": [0.35], "num_classes": 2}"#;
        let v: Value = serde_json::from_str(ds).unwrap();
        let m: DatasetMetrics = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), v.to_string());
        let st = r#"{"test_accuracy": 0.5, "last_epoch": {"train": {"ce": 1.0, "loss": 1.0}, "eval": {"test_acc_avg": 0.5}}, "images_per_sec": 10.0, "params": 7}"#;
        let v: Value = serde_json::from_str(st).unwrap();
        let m: StudentSummary = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), v.to_string());
    }

    #[test]
    fn newer_fields_are_kept_and_older_files_still_read() {
        let text = include_str!("../tests/fixtures/student-metrics.json");
        let mut v: Value = serde_json::from_str(text).unwrap();
        // What the writer emits since data-parallel training: the field
        // just before `epochs`.
        let o = v.as_object_mut().unwrap();
        let epochs = o.remove("epochs").unwrap();
        o.insert("data_parallel_ranks".into(), 2.into());
        o.insert("epochs".into(), epochs);
        let m: StudentMetrics = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(m.data_parallel_ranks, Some(2));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
    }
}
