//! `kd cache verify`: decode every shard (checksums, missing files), then
//! recompute a random sample of (sample, view) rows with the live teachers
//! on images rebuilt from the stored view parameters (mixed views included,
//! through the same assembly the writer used). A cross-fitted teacher is
//! asked per sample (`logits_for`), and must still be the fold models and
//! the fold assignment the store recorded.

use crate::error::{Result, store_err};
use crate::layout::{Dtype, StoreMeta, store_dir};
use crate::store::LogitStore;
use crate::write::check_shards;
use kd_core::manifest::{MANIFEST, Manifest};
use kd_core::{InputError, Progress, Rng, Teacher, ViewBatch};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor_mixed, lut};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;
use tch::{Device, Kind};

#[derive(Clone, Debug, Serialize)]
pub struct TeacherDiff {
    pub name: String,
    pub max_abs_diff: f64,
    pub max_abs_logit: f64,
    pub tolerance: f64,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub pairs: usize,
    pub shards_decoded: usize,
    pub teachers: Vec<TeacherDiff>,
    pub ok: bool,
}

/// The largest difference a store of `dtype` may show against live logits
/// whose largest magnitude is `max_abs` (f16 keeps 11 significant bits; the
/// rest covers batch-dependent float reordering).
pub fn tolerance(dtype: Dtype, max_abs: f64) -> f64 {
    match dtype {
        Dtype::F16 => (1e-2 * max_abs).max(2e-2),
        Dtype::F32 => 1e-4 * max_abs.max(1.0),
    }
}

/// A cross-fitted teacher must be the fold models (hashes) and the fold
/// assignment the store recorded; a plain one must have stayed plain.
fn check_folds(
    dir: &Path,
    store: &LogitStore,
    t: &crate::layout::TeacherMeta,
    live: &dyn Teacher,
) -> Result<()> {
    let here = dir.join(MANIFEST);
    match (&t.folds, live.folds()) {
        (None, None) => Ok(()),
        (None, Some(f)) => Err(store_err(
            here,
            format!(
                "teacher '{}' is cross-fitted ({} folds) now, the store was built from a plain teacher",
                t.name,
                f.k()
            ),
        )),
        (Some(r), None) => Err(store_err(
            here,
            format!(
                "teacher '{}' is a plain teacher now, the store was built from {} cross-fitted folds",
                t.name, r.k
            ),
        )),
        (Some(r), Some(f)) => {
            if r.checkpoint_hashes != f.checkpoint_hashes {
                let short = |v: &[String]| {
                    v.iter()
                        .map(|h| h[..h.len().min(12)].to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(store_err(
                    here,
                    format!(
                        "teacher '{}' fold checkpoints are [{}] now, the store was built from [{}]",
                        t.name,
                        short(&f.checkpoint_hashes),
                        short(&r.checkpoint_hashes)
                    ),
                ));
            }
            let path = store_dir(dir).join(format!("teachers/{}/fold", t.name));
            if f.assignment.len() != store.num_samples() {
                return Err(store_err(
                    path,
                    format!(
                        "teacher '{}' assigns folds to {} samples now, the store has {}",
                        t.name,
                        f.assignment.len(),
                        store.num_samples()
                    ),
                ));
            }
            for (i, &want) in f.assignment.iter().enumerate() {
                let got = store.fold_of(&t.name, i);
                if got != Some(want) {
                    return Err(store_err(
                        path,
                        format!(
                            "sample {i} is stored in fold {}, teacher '{}' now puts it in fold {want}",
                            got.map(|g| g.to_string()).unwrap_or_else(|| "?".into()),
                            t.name
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Check the store in `dir` against `teachers` (matched by name) on `samples`
/// random (sample, view) pairs drawn from `seed`.
pub fn verify(
    dir: &Path,
    teachers: &[Box<dyn Teacher>],
    samples: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    Manifest::read_stage(dir, crate::STAGE)?;
    let meta = StoreMeta::read(&store_dir(dir))?;
    check_shards(dir, &meta, &HashSet::new())?;
    let store = LogitStore::open(dir)?;
    // The store's copy of its inputs, located from the store.
    let ds_ref = store
        .meta()
        .inputs
        .iter()
        .find(|i| i.role == "dataset")
        .ok_or_else(|| store_err(store_dir(dir).join("zarr.json"), "records no dataset input"))?;
    let ds = Dataset::open(&ds_ref.verify_at(dir)?)?;
    let train = ds.split("train")?;
    for t in &meta.teachers {
        let live = teachers
            .iter()
            .find(|x| x.name() == t.name)
            .ok_or_else(|| {
                InputError::not_found(
                    dir,
                    "live teacher",
                    &t.name,
                    teachers.iter().map(|x| x.name()),
                )
            })?;
        if live.checkpoint_hash() != t.checkpoint_hash {
            return Err(store_err(
                dir.join(MANIFEST),
                format!(
                    "teacher '{}' checkpoint is {} now, the store was built from {}",
                    t.name,
                    live.checkpoint_hash(),
                    t.checkpoint_hash
                ),
            ));
        }
        check_folds(dir, &store, t, live.as_ref())?;
    }
    let spec = meta.view_spec;
    let mut r = Rng::keyed(seed, &[0x7665_7269]);
    let pairs: Vec<(usize, usize)> = (0..samples)
        .map(|_| {
            (
                r.below(meta.samples as u64) as usize,
                r.below(meta.views as u64) as usize,
            )
        })
        .collect();
    let views = store.view_batch(&pairs)?;
    let hw = [train.chw[1], train.chw[2]];
    let drawn = ViewBatch::draw(
        &spec,
        &meta
            .mix
            .unwrap_or_default()
            .in_chunks_of(train.stored_chunk()),
        meta.seed,
        meta.samples,
        hw,
        &pairs,
    );
    for (i, &(s, v)) in pairs.iter().enumerate() {
        let p = views.views[i];
        if p != drawn.views[i] {
            return Err(store_err(
                store_dir(dir).join("views/params"),
                format!(
                    "view params of (sample {s}, view {v}) are {p:?}, the generator says otherwise"
                ),
            ));
        }
        let m = views.mixes[i];
        if m != drawn.mixes[i] {
            return Err(store_err(
                store_dir(dir).join("views/mix"),
                format!(
                    "mixing of (sample {s}, view {v}) is {m:?}, the generator says {:?}",
                    drawn.mixes[i]
                ),
            ));
        }
    }
    let table = lut(&ds.mean, &ds.std);
    let c = meta.num_classes;
    let mut report = vec![];
    let _g = tch::no_grad_guard();
    progress.start("verify", (pairs.len() * meta.teachers.len()) as u64);
    let mut done = 0u64;
    for t in &meta.teachers {
        let live = teachers
            .iter()
            .find(|x| x.name() == t.name)
            .expect("checked above");
        let (mut diff, mut max_abs) = (0f64, 0f64);
        for start in (0..pairs.len()).step_by(256) {
            let end = (start + 256).min(pairs.len());
            let pb = &pairs[start..end];
            let idx: Vec<usize> = pb.iter().map(|p| p.0).collect();
            let x = batch_tensor_mixed(
                train,
                &idx,
                &views.views[start..end],
                &views.partner_views[start..end],
                &views.mixes[start..end],
                &spec,
                &table,
                live.device(),
            )?;
            let y = live
                .logits_for(&idx, &x)
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .contiguous()
                .view(-1);
            let y = Vec::<f32>::try_from(&y)?;
            let stored = store.logits(&t.name, pb)?;
            for (ly, sy) in y.chunks_exact(c).zip(stored.chunks_exact(c)) {
                for (&a, &b) in ly.iter().zip(sy) {
                    max_abs = max_abs.max(a.abs() as f64);
                    // Top-k stores: only the kept classes are comparable.
                    if b != crate::layout::TOPK_FILL || meta.top_k.is_none() {
                        diff = diff.max((a - b).abs() as f64);
                    }
                }
            }
            done += pb.len() as u64;
            progress.update(done, &t.name);
        }
        let tol = tolerance(meta.dtype, max_abs);
        report.push(TeacherDiff {
            name: t.name.clone(),
            max_abs_diff: diff,
            max_abs_logit: max_abs,
            tolerance: tol,
            ok: diff <= tol,
        });
    }
    progress.finish();
    Ok(VerifyReport {
        pairs: pairs.len(),
        shards_decoded: meta.num_shards * meta.array_paths().len(),
        ok: report.iter().all(|t| t.ok),
        teachers: report,
    })
}
