//! Where the teachers' logits come from ([`Source`]) and the checks that
//! the source fits the dataset the student trains on.

use crate::config::invalid;
use crate::error::Result;
use kd_core::Teacher;
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
    let unique: BTreeSet<&String> = names.iter().collect();
    if unique.len() != names.len() {
        return Err(invalid(format!(
            "teacher names repeat: {}",
            names.join(",")
        )));
    }
    let classes = ds.num_classes();
    match source {
        Source::None => Ok(json!({"kind": "none"})),
        Source::Cache { store, teachers } => {
            let at = store.dir().display();
            if store.dataset_hash() != ds.manifest_hash {
                return Err(invalid(format!(
                    "{at}: logit store was made from dataset {} but {} has hash {} (rebuild the cache)",
                    store.dataset_hash(),
                    ds.dir.display(),
                    ds.manifest_hash
                )));
            }
            if teachers.is_empty() {
                return Err(invalid(format!("{at}: no teachers chosen from the store")));
            }
            for t in teachers {
                if !store.teachers().contains(t) {
                    return Err(invalid(format!(
                        "{at}: no teacher '{t}' in the store (has: {})",
                        store.teachers().join(", ")
                    )));
                }
            }
            if store.num_classes() != classes {
                return Err(invalid(format!(
                    "{at}: store has {} classes, dataset {classes}",
                    store.num_classes()
                )));
            }
            check_store_teachers(store, teachers)?;
            if store.num_samples() != train.len() {
                return Err(invalid(format!(
                    "{at}: store has {} samples, the train split {}",
                    store.num_samples(),
                    train.len()
                )));
            }
            Ok(json!({"kind": "cache", "teachers": teachers, "store": store.manifest_hash()}))
        }
        Source::Live(ts) => {
            if ts.is_empty() {
                return Err(invalid("live source without teachers"));
            }
            let mut desc = vec![];
            for t in ts {
                if t.dataset_hash() != ds.manifest_hash {
                    return Err(invalid(format!(
                        "teacher '{}' was trained on dataset {} but {} has hash {}",
                        t.name(),
                        t.dataset_hash(),
                        ds.dir.display(),
                        ds.manifest_hash
                    )));
                }
                if t.num_classes() != classes {
                    return Err(invalid(format!(
                        "teacher '{}' has {} classes, dataset {classes}",
                        t.name(),
                        t.num_classes()
                    )));
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
        if let Err(e) = pin.verify() {
            return Err(invalid(format!(
                "{}: teacher '{t}' changed after the store was built ({e}); rebuild the cache",
                store.dir().display()
            )));
        }
    }
    Ok(())
}
