//! Where the teachers' logits come from ([`Source`]) and the checks that
//! the source fits the dataset the student trains on.

use crate::error::{Result, StudentError};
use kd_core::{InputError, SettingError, Teacher};
use kd_data::{Dataset, Split};
use kd_logit_cache::LogitStore;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Where the teachers' logits come from.
#[allow(clippy::large_enum_variant)] // one per run
pub enum Source {
    /// No distillation: the class token only.
    None,
    /// Read from a logit store; `teachers` is the subset used, in token order.
    Cache {
        store: LogitStore,
        teachers: Vec<String>,
    },
    /// Run the teachers on every batch.
    Live(Vec<Box<dyn Teacher>>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind(), self.teacher_names().join(","))
    }
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::None => "none",
            Source::Cache { .. } => "cache",
            Source::Live(_) => "live",
        }
    }

    /// Each teacher's recorded architecture (`cnn/cnn-small`), in token order.
    pub fn teacher_archs(&self) -> Vec<String> {
        match self {
            Source::None => vec![],
            Source::Cache { store, teachers } => teachers
                .iter()
                .map(|t| {
                    store
                        .meta()
                        .teachers
                        .iter()
                        .find(|m| &m.name == t)
                        .map(|m| m.arch.clone())
                        .unwrap_or_default()
                })
                .collect(),
            Source::Live(ts) => ts.iter().map(|t| t.arch().to_string()).collect(),
        }
    }

    /// Teacher names in token order.
    pub fn teacher_names(&self) -> Vec<String> {
        match self {
            Source::None => vec![],
            Source::Cache { teachers, .. } => teachers.clone(),
            Source::Live(ts) => ts.iter().map(|t| t.name().to_string()).collect(),
        }
    }
}

/// Check the source against the dataset; return a description for the config.
pub(crate) fn check_source(source: &Source, ds: &Dataset, train: &Split) -> Result<Value> {
    let names = source.teacher_names();
    let mut seen = BTreeSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(*n)) {
        return Err(SettingError::Repeated {
            setting: "teacher".into(),
            name: twice.clone(),
        }
        .into());
    }
    let classes = ds.num_classes();
    match source {
        Source::None => Ok(json!({"kind": "none"})),
        Source::Cache { store, teachers } => {
            let at = store.dir();
            let dataset = ds.dir.display().to_string();
            if store.dataset_hash() != ds.manifest_hash {
                return Err(InputError::mismatch(
                    at,
                    "dataset hash",
                    store.dataset_hash(),
                    dataset,
                    &ds.manifest_hash,
                )
                .fix("rebuild the cache")
                .into());
            }
            if teachers.is_empty() {
                return Err(SettingError::Missing {
                    setting: "teacher".into(),
                    hint: format!(
                        "the store's teachers to learn from, of {}",
                        store.teachers().join(", ")
                    ),
                }
                .into());
            }
            for t in teachers {
                if !store.teachers().contains(t) {
                    return Err(InputError::not_found(at, "teacher", t, store.teachers()).into());
                }
            }
            if store.num_classes() != classes {
                return Err(InputError::mismatch(
                    at,
                    "classes",
                    store.num_classes(),
                    dataset,
                    classes,
                )
                .into());
            }
            check_store_teachers(store, teachers)?;
            if store.num_samples() != train.len() {
                return Err(InputError::mismatch(
                    at,
                    "samples",
                    store.num_samples(),
                    format!("the train split of {dataset}"),
                    train.len(),
                )
                .into());
            }
            Ok(json!({"kind": "cache", "teachers": teachers, "store": store.manifest_hash()}))
        }
        Source::Live(ts) => {
            if ts.is_empty() {
                return Err(SettingError::Missing {
                    setting: "teacher".into(),
                    hint: "a live source needs its teachers".into(),
                }
                .into());
            }
            let mut desc = vec![];
            for t in ts {
                let teacher = format!("teacher '{}'", t.name());
                let dataset = ds.dir.display().to_string();
                if t.dataset_hash() != ds.manifest_hash {
                    return Err(InputError::mismatch(
                        teacher,
                        "training dataset hash",
                        t.dataset_hash(),
                        dataset,
                        &ds.manifest_hash,
                    )
                    .into());
                }
                if t.num_classes() != classes {
                    return Err(InputError::mismatch(
                        teacher,
                        "classes",
                        t.num_classes(),
                        dataset,
                        classes,
                    )
                    .into());
                }
                desc.push(
                    json!({"name": t.name(), "arch": t.arch(), "checkpoint": t.checkpoint_hash()}),
                );
            }
            Ok(json!({"kind": "live", "teachers": desc}))
        }
    }
}

/// Refuse a store whose teachers were retrained after it was built: the
/// store pins each teacher directory by its manifest hash. A directory that
/// is gone (a store copied elsewhere) cannot be checked; that is logged.
fn check_store_teachers(store: &LogitStore, used: &[String]) -> Result<()> {
    for t in used {
        let role = format!("teacher:{t}");
        let Some(pin) = store.meta().inputs.iter().find(|i| i.role == role) else {
            continue;
        };
        if !kd_core::manifest::manifest_path(&pin.path).is_file() {
            tracing::warn!(store = %store.dir().display(), teacher = %t, path = %pin.path.display(),
                "the teacher directory the store was built from is not there; cannot check it is unchanged");
            continue;
        }
        if let Err(source) = pin.verify() {
            return Err(StudentError::TeacherChanged {
                store: store.dir().to_path_buf(),
                teacher: t.clone(),
                source,
            });
        }
    }
    Ok(())
}
