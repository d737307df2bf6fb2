//! Building a store: teachers run over every (sample, view) once, a writer
//! thread encodes and stores whole shards while the next shard is inferred.
//!
//! Resumable: a shard counts as done only when its marker exists, and the
//! marker is written after the shard's data, so a killed run redoes at most
//! the shards in flight. Every shard is computed in the same batches whatever
//! ran before, so a resumed store is byte-identical to an uninterrupted one.
//! Shardable: `--shard i/n` takes shards `s % n == i`; the store's metadata
//! is created once, atomically (built in a temporary directory and renamed),
//! so concurrent workers agree on it without locks.
//!
//! An `--out` holding a store of another config or other inputs: a finished
//! one is out of date and rebuilt (Make's rerun after a teacher changed); an
//! unfinished one may be someone's work in progress and is refused unless
//! `--force`; a `--shard` worker never deletes anything. An `--out` holding
//! another stage's artifact or other files is refused by the stage lifecycle
//! (`kd_core::stage`).
//! Two unsharded builds into one directory would both compute every shard:
//! the second finds the build lock taken and stops.
//!
//! Byte-identity needs deterministic kernels: the same device, thread count
//! and batch size give the same logits; batch size and device are left out of
//! the store's identity because they change results only within rounding.
//!
//! Mixed views are assembled by `kd_data::augment::batch_tensor_mixed` from
//! the same `ViewBatch` the store records, so the stored logits are those of
//! the mixed image the student will rebuild. Every teacher is asked through
//! `Teacher::logits_for` with the batch's train indices, so a cross-fitted
//! teacher answers each sample with the fold model that never saw it.

use crate::error::{CacheError, Result, io_err, store_err};
use crate::layout::{
    CacheConfig, Dtype, FoldsMeta, STAGE, StoreMeta, TeacherMeta, marker_path, marker_text,
    store_dir, store_key,
};
use kd_core::manifest::{InputRef, Manifest, OutputRef};
use kd_core::stage::StageRun;
use kd_core::zarr::{self, ZArray};
use kd_core::{MixParams, Progress, Teacher, ViewBatch};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor_mixed, lut};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use tch::{Device, Kind, Tensor};

/// A loaded teacher and the artifact directory it came from (pinned by hash).
pub struct TeacherInput {
    pub dir: PathBuf,
    pub teacher: Box<dyn Teacher>,
}

impl std::fmt::Debug for TeacherInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TeacherInput({}, {})",
            self.teacher.name(),
            self.dir.display()
        )
    }
}

/// How this process takes part in a build (none of it changes the store's bytes).
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `(i, n)`: fill only shards with index % n == i, write no manifest.
    pub shard: Option<(usize, usize)>,
    /// Replace whatever is in `out` (refused together with `shard`).
    pub force: bool,
    /// Stop after writing this many shards, as if killed (tests).
    pub stop_after_shards: Option<usize>,
}

#[derive(Debug)]
pub enum Outcome {
    /// A finished store with the same config and inputs is already there.
    UpToDate,
    /// This worker's shards are all done (`--shard`, or a stop); no manifest.
    Partial {
        written: usize,
        skipped: usize,
        stats: BuildStats,
    },
    /// All shards present; the manifest is written.
    Finished {
        written: usize,
        skipped: usize,
        manifest: Box<Manifest>,
        stats: BuildStats,
    },
}

/// Where a build's time went (seconds). `send_wait` is the time inference
/// waited for the writer; near zero means writing was fully overlapped.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct BuildStats {
    pub total: f64,
    /// Opening the dataset, checking inputs, creating the store.
    pub setup: f64,
    /// Assembling views and running the teachers.
    pub inference: f64,
    pub send_wait: f64,
    /// Encoding and storing shards (on the writer thread, overlapped).
    pub writer_busy: f64,
    /// Waiting for the writer to drain after the last shard.
    pub drain: f64,
    pub finalize: f64,
}

/// Parse `i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        CacheError::Invalid(format!(
            "--shard '{s}': expected i/n with 0 <= i < n (e.g. 0/4)"
        ))
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(CacheError::Invalid(format!(
            "--shard {i}/{n}: out of range (need 0 <= i < n)"
        )));
    }
    Ok((i, n))
}

/// `--shard auto`: this worker's shard from the scheduler's environment.
///
/// - Slurm job array (`sbatch --array=MIN-MAX:STEP`):
///   shard = (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN`) / `SLURM_ARRAY_TASK_STEP`,
///   of `SLURM_ARRAY_TASK_COUNT` shards (or `shards` when given; they must agree).
/// - Kubernetes Indexed Job: shard = `JOB_COMPLETION_INDEX`, of `shards`
///   (the Job's `completions`; Kubernetes does not export it).
///
/// `env` reads a variable (injected so tests need not touch the process's).
pub fn shard_from_env(
    shards: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(usize, usize)> {
    let num = |name: &str| -> Result<Option<usize>> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                CacheError::Invalid(format!("--shard auto: {name}={v:?} is not a number"))
            }),
        }
    };
    let (i, n) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(CacheError::Invalid(format!(
                "--shard auto: SLURM_ARRAY_TASK_ID {id} is not MIN {min} + k * STEP {step}"
            )));
        }
        let count = num("SLURM_ARRAY_TASK_COUNT")?;
        let n = match (count, shards) {
            (Some(c), Some(s)) if c != s => {
                return Err(CacheError::Invalid(format!(
                    "--shard auto: --shards {s} but the Slurm array has {c} tasks"
                )));
            }
            (Some(c), _) => c,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(CacheError::Invalid(
                    "--shard auto: SLURM_ARRAY_TASK_COUNT is not set; give --shards N".into(),
                ));
            }
        };
        ((id - min) / step, n)
    } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        let n = shards.ok_or_else(|| {
            CacheError::Invalid(
                "--shard auto under a Kubernetes Indexed Job needs --shards N (the Job's completions)".into(),
            )
        })?;
        (i, n)
    } else {
        return Err(CacheError::Invalid(
            "--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX \
             (Kubernetes Indexed Job) is set; give --shard i/n"
                .into(),
        ));
    };
    parse_shard(&format!("{i}/{n}"))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Open an array for writing with subchunks laid out in C order: zarrs'
/// default places them in completion order of its parallel encoder, which
/// would make shard files differ from run to run.
fn open_for_write(store: &kd_core::zarr::Store, path: &str) -> Result<ZArray> {
    use zarrs::array::CodecSpecificOptions;
    use zarrs::array::codec::array_to_bytes::sharding::{ShardingCodecOptions, SubchunkWriteOrder};
    let opts = CodecSpecificOptions::default().with_option(
        ShardingCodecOptions::default().with_subchunk_write_order(SubchunkWriteOrder::C),
    );
    Ok(zarr::open_array(store, path)?.with_codec_specific_options(&opts))
}

/// One shard's results, on their way to the writer.
struct ShardData {
    shard: usize,
    /// `views/params` rows, widened to u16 (see `ViewSpec::encode`).
    params: Vec<u16>,
    /// `views/mix` rows; empty when the store does not mix.
    mix: Vec<u32>,
    /// Per teacher: the shard's fold assignment, for cross-fitted teachers.
    folds: Vec<Option<Vec<u8>>>,
    /// Per teacher: the rows (full logits or top-k values), f32.
    rows: Vec<Vec<f32>>,
    /// Per teacher, top-k only: class indices.
    indices: Vec<Vec<i64>>,
}

/// A cross-fitted teacher's folds, checked against the `samples` training
/// samples it must cover.
fn check_folds(t: &dyn Teacher, m: &Path, samples: usize) -> Result<Option<FoldsMeta>> {
    let Some(f) = t.folds() else {
        return Ok(None);
    };
    let bad = |msg: String| Err(store_err(m, format!("teacher '{}' {msg}", t.name())));
    let k = f.k();
    if !(2..=u8::MAX as usize + 1).contains(&k) {
        return bad(format!(
            "is cross-fitted with {k} fold checkpoints: need 2..=256"
        ));
    }
    if f.assignment.len() != samples {
        return bad(format!(
            "assigns folds to {} samples, the train split has {samples}",
            f.assignment.len()
        ));
    }
    if let Some((i, &x)) = f
        .assignment
        .iter()
        .enumerate()
        .find(|(_, x)| **x as usize >= k)
    {
        return bad(format!("puts sample {i} in fold {x}, but has {k} folds"));
    }
    Ok(Some(FoldsMeta {
        k,
        checkpoint_hashes: f.checkpoint_hashes.clone(),
    }))
}

/// Check teachers against the dataset and each other; returns their store metadata.
fn check_teachers(ds: &Dataset, teachers: &[TeacherInput]) -> Result<Vec<TeacherMeta>> {
    if teachers.is_empty() {
        return Err(CacheError::Invalid("no --teacher given".into()));
    }
    let samples = ds.split("train")?.len();
    let mut seen = HashSet::new();
    let mut out = vec![];
    for ti in teachers {
        let t = &ti.teacher;
        let m = ti.dir.join(kd_core::manifest::MANIFEST);
        if !valid_name(t.name()) {
            return Err(store_err(
                &m,
                format!("teacher name '{}' is not [A-Za-z0-9_-]+", t.name()),
            ));
        }
        if !seen.insert(t.name().to_string()) {
            return Err(store_err(
                &m,
                format!("two teachers are named '{}'", t.name()),
            ));
        }
        if t.dataset_hash() != ds.manifest_hash {
            return Err(store_err(
                &m,
                format!(
                    "teacher '{}' was trained on dataset {} but --dataset {} is {}",
                    t.name(),
                    t.dataset_hash(),
                    ds.dir.display(),
                    ds.manifest_hash
                ),
            ));
        }
        if t.num_classes() != ds.num_classes() {
            return Err(store_err(
                &m,
                format!(
                    "teacher '{}' has {} classes, the dataset {} has {}",
                    t.name(),
                    t.num_classes(),
                    ds.dir.display(),
                    ds.num_classes()
                ),
            ));
        }
        out.push(TeacherMeta {
            name: t.name().into(),
            arch: t.arch().into(),
            checkpoint_hash: t.checkpoint_hash().into(),
            dataset_hash: t.dataset_hash().into(),
            folds: check_folds(t.as_ref(), &m, samples)?,
        });
    }
    Ok(out)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(p)(e)),
    }
}

/// Create the store's metadata once: in a private directory renamed into
/// place, so a concurrent worker either sees a complete store or none.
fn create_store(out: &Path, meta: &StoreMeta) -> Result<()> {
    let root = store_dir(out);
    if root.exists() {
        return Ok(());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = out.join(
        format!(
            ".tmp-{}-{nanos}-{:?}.zarr",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    meta.create(&tmp)?;
    if std::fs::rename(&tmp, &root).is_err() {
        // Another worker won the race; its metadata is checked by the caller.
        remove_if_exists(&tmp)?;
        if !root.exists() {
            return Err(store_err(&root, "could not create the store"));
        }
    }
    Ok(())
}

fn check_same_store(out: &Path, key: &serde_json::Value) -> Result<()> {
    let root = store_dir(out);
    let found = StoreMeta::read(&root).map_err(|e| {
        store_err(&root, format!("holds something that is not a logit store of this tool ({e}); use --force to replace it"))
    })?;
    if &found.key != key {
        return Err(store_err(
            &root,
            format!(
                "holds an unfinished store of another config or other inputs ({}); another build may be filling it: use --force to replace it",
                key_diff(&found.key, key)
            ),
        ));
    }
    Ok(())
}

/// What differs between two store keys, as `name stored -> wanted` items.
fn key_diff(found: &serde_json::Value, want: &serde_json::Value) -> String {
    let mut out = vec![];
    if let (Some(a), Some(b)) = (found["config"].as_object(), want["config"].as_object()) {
        // Both ways: `mix` is absent from the key of a store that does not mix.
        let null = serde_json::Value::Null;
        let mut keys: Vec<&String> = b.keys().collect();
        keys.extend(a.keys().filter(|k| !b.contains_key(*k)));
        for k in keys {
            let (old, new) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
            if old != new {
                out.push(format!("{k} {old} -> {new}"));
            }
        }
    }
    let ins = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["role"].as_str().unwrap_or("?").to_string(),
                            i["manifest_hash"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (ins(found), ins(want));
    for (role, hash) in &b {
        match a.iter().find(|(r, _)| r == role) {
            None => out.push(format!("new input {role}")),
            Some((_, old)) if old != hash => out.push(format!(
                "{role} hash {} -> {}",
                &old[..old.len().min(12)],
                &hash[..hash.len().min(12)]
            )),
            _ => {}
        }
    }
    for (role, _) in &a {
        if !b.iter().any(|(r, _)| r == role) {
            out.push(format!("input {role} dropped"));
        }
    }
    if out.is_empty() {
        "store metadata differs".into()
    } else {
        out.join(", ")
    }
}

/// Build (or resume, or take part in) the store `out` of `teachers` on
/// the train split of `dataset`.
pub fn build(
    dataset: &Path,
    teachers: &[TeacherInput],
    out: &Path,
    cfg: &CacheConfig,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Outcome> {
    if let Some((i, n)) = opts.shard {
        if n == 0 || i >= n {
            return Err(CacheError::Invalid(format!(
                "--shard {i}/{n}: out of range (need 0 <= i < n)"
            )));
        }
        if opts.force {
            return Err(CacheError::Invalid(
                "--force with --shard would let one worker delete the others' shards: remove the store, then start the workers".into(),
            ));
        }
    }
    let t_start = std::time::Instant::now();
    let mut stats = BuildStats::default();
    let ds = Dataset::open(dataset)?;
    let tmeta = check_teachers(&ds, teachers)?;
    cfg.validate(ds.num_classes())?;
    let train = ds.split("train")?;
    let mix = cfg.mix_spec();
    if !mix.is_none() && !(2..=u32::MAX as usize).contains(&train.len()) {
        return Err(CacheError::Invalid(format!(
            "mix '{}': needs 2..=2^32-1 training samples to draw partners from, {} has {}",
            mix.mode,
            dataset.display(),
            train.len()
        )));
    }
    let hw = [train.chw[1], train.chw[2]];
    cfg.view_spec().check(hw).map_err(CacheError::Invalid)?;
    let mut inputs = vec![InputRef::of("dataset", dataset, kd_data::store::STAGE)?];
    for ti in teachers {
        inputs.push(InputRef::of(
            &format!("teacher:{}", ti.teacher.name()),
            &ti.dir,
            "teacher",
        )?);
    }
    let key = store_key(cfg, &inputs);
    let samples = train.len();
    let meta = StoreMeta {
        format: crate::layout::FORMAT.into(),
        note: "raw logits, no temperature".into(),
        class_names: ds.class_names.clone(),
        num_classes: ds.num_classes(),
        samples,
        views: cfg.views,
        dtype: cfg.dtype,
        top_k: cfg.top_k,
        seed: cfg.seed,
        view_spec: cfg.view_spec(),
        view_params_fields: cfg
            .view_spec()
            .param_fields()
            .iter()
            .map(|f| f.to_string())
            .collect(),
        shard_samples: cfg.shard_samples,
        chunk_samples: cfg.chunk_samples,
        num_shards: samples.div_ceil(cfg.shard_samples),
        dataset_hash: ds.manifest_hash.clone(),
        teachers: tmeta,
        mix: (!mix.is_none()).then_some(mix),
        inputs: inputs.clone(),
        key: key.clone(),
    };
    let root = store_dir(out);
    let mut replace = false;
    if root.exists() && !opts.force {
        // A finished store of other inputs or config is simply out of date
        // (Make reruns this stage after a teacher changed): rebuild it. An
        // unfinished one may be another build's work in progress: refuse.
        let finished = Manifest::read(out).is_ok_and(|m| m.stage == STAGE);
        match check_same_store(out, &key) {
            Ok(()) => {}
            Err(_) if finished && opts.shard.is_none() => {
                tracing::info!(store = %root.display(), "finished store is out of date (config or inputs changed): rebuilding");
                replace = true;
            }
            Err(e) => return Err(e),
        }
    }
    if !StageRun::new(STAGE, out, cfg.identity(), inputs.clone()).claim(opts.force)? {
        return Ok(Outcome::UpToDate);
    }
    // Before anything is removed: a second build into the same directory
    // stops here instead of computing every shard again.
    let _lock = lock_out(out, opts.shard.is_some())?;
    if opts.force || replace {
        remove_if_exists(&root)?;
        remove_if_exists(&out.join(crate::layout::MARKERS))?;
    }
    create_store(out, &meta)?;
    check_same_store(out, &key)?;
    let markers = out.join(crate::layout::MARKERS);
    std::fs::create_dir_all(&markers).map_err(io_err(&markers))?;

    let mine: Vec<usize> = (0..meta.num_shards)
        .filter(|s| opts.shard.is_none_or(|(i, n)| s % n == i))
        .collect();
    let todo: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|&s| !marker_path(out, s).exists())
        .collect();
    let skipped = mine.len() - todo.len();
    tracing::info!(out = %out.display(), shards = mine.len(), skipped, "building logit cache");

    let store = zarr::open_store(&root)?;
    let params_arr = open_for_write(&store, "/views/params")?;
    let mix_arr = match meta.mix {
        Some(_) => Some(open_for_write(&store, "/views/mix")?),
        None => None,
    };
    let mut fold_arrs: Vec<Option<ZArray>> = vec![];
    for t in &meta.teachers {
        fold_arrs.push(match t.folds {
            Some(_) => Some(open_for_write(
                &store,
                &format!("/teachers/{}/fold", t.name),
            )?),
            None => None,
        });
    }
    let mut arrays: Vec<(ZArray, Option<ZArray>)> = vec![];
    for t in &meta.teachers {
        arrays.push(match meta.top_k {
            None => (
                open_for_write(&store, &format!("/teachers/{}/logits", t.name))?,
                None,
            ),
            Some(_) => (
                open_for_write(&store, &format!("/teachers/{}/values", t.name))?,
                Some(open_for_write(
                    &store,
                    &format!("/teachers/{}/indices", t.name),
                )?),
            ),
        });
    }

    let spec = cfg.view_spec();
    let table = lut(&ds.mean, &ds.std);
    let (k, width) = (cfg.views, meta.row_width());
    let limit = opts.stop_after_shards.unwrap_or(usize::MAX).min(todo.len());
    let total_views: u64 = todo[..limit]
        .iter()
        .map(|&s| {
            let (a, b) = meta.shard_range(s);
            ((b - a) * k) as u64
        })
        .sum();
    progress.start("cache", total_views);
    let device = teachers[0].teacher.device();
    let (tx, rx) = sync_channel::<ShardData>(2);
    let meta_ref = &meta;
    stats.setup = t_start.elapsed().as_secs_f64();
    let written = std::thread::scope(|scope| -> Result<usize> {
        let writer = scope.spawn(move || -> Result<(usize, f64)> {
            let (mut n, mut busy) = (0, 0f64);
            for d in rx {
                let t = std::time::Instant::now();
                write_shard(
                    out,
                    meta_ref,
                    &params_arr,
                    mix_arr.as_ref(),
                    &arrays,
                    &fold_arrs,
                    &d,
                )?;
                busy += t.elapsed().as_secs_f64();
                n += 1;
            }
            Ok((n, busy))
        });
        let _g = tch::no_grad_guard();
        let mut done_views = 0u64;
        let mut infer_err = None;
        for &s in &todo[..limit] {
            let t_shard = std::time::Instant::now();
            let (a, b) = meta.shard_range(s);
            let pairs: Vec<(usize, usize)> =
                (a..b).flat_map(|i| (0..k).map(move |v| (i, v))).collect();
            let vb = ViewBatch::draw(&spec, &mix, cfg.seed, samples, hw, &pairs);
            let mut d = ShardData {
                shard: s,
                params: vb.views.iter().flat_map(|p| spec.encode(p)).collect(),
                mix: match meta.mix {
                    Some(_) => vb.mixes.iter().flat_map(|m| m.to_array()).collect(),
                    None => vec![],
                },
                folds: teachers
                    .iter()
                    .map(|t| t.teacher.folds().map(|f| f.assignment[a..b].to_vec()))
                    .collect(),
                rows: vec![Vec::with_capacity(pairs.len() * width); teachers.len()],
                indices: vec![vec![]; teachers.len()],
            };
            for start in (0..pairs.len()).step_by(cfg.batch_size) {
                let end = (start + cfg.batch_size).min(pairs.len());
                let pb = &pairs[start..end];
                let idx: Vec<usize> = pb.iter().map(|p| p.0).collect();
                let x = batch_tensor_mixed(
                    train,
                    &idx,
                    &vb.views[start..end],
                    &vb.partner_views[start..end],
                    &vb.mixes[start..end],
                    &spec,
                    &table,
                    device,
                );
                for (ti, t) in teachers.iter().enumerate() {
                    match run_teacher(t.teacher.as_ref(), &idx, &x, meta.num_classes, cfg.top_k) {
                        Ok((rows, ind)) => {
                            d.rows[ti].extend_from_slice(&rows);
                            d.indices[ti].extend_from_slice(&ind);
                        }
                        Err(e) => {
                            infer_err = Some(e);
                            break;
                        }
                    }
                }
                if infer_err.is_some() {
                    break;
                }
                done_views += pb.len() as u64;
                progress.update(done_views, &format!("shard {s}"));
            }
            stats.inference += t_shard.elapsed().as_secs_f64();
            if infer_err.is_some() {
                break;
            }
            let t_send = std::time::Instant::now();
            if tx.send(d).is_err() {
                break;
            }
            stats.send_wait += t_send.elapsed().as_secs_f64();
        }
        drop(tx);
        let t_drain = std::time::Instant::now();
        let (n, busy) = writer
            .join()
            .map_err(|_| CacheError::Invalid("the writer thread panicked".into()))??;
        stats.drain = t_drain.elapsed().as_secs_f64();
        stats.writer_busy = busy;
        if let Some(e) = infer_err {
            return Err(e);
        }
        Ok(n)
    })?;
    progress.finish();
    let stopped = written < todo.len();
    if opts.shard.is_some() || stopped {
        stats.total = t_start.elapsed().as_secs_f64();
        tracing::info!(written, skipped, stopped, ?stats, "shards done");
        return Ok(Outcome::Partial {
            written,
            skipped,
            stats,
        });
    }
    let t_fin = std::time::Instant::now();
    let trusted: HashSet<usize> = todo.into_iter().collect();
    let manifest = finalize_inner(out, &trusted)?;
    stats.finalize = t_fin.elapsed().as_secs_f64();
    stats.total = t_start.elapsed().as_secs_f64();
    tracing::debug!(?stats, "build timings");
    Ok(Outcome::Finished {
        written,
        skipped,
        manifest: Box::new(manifest),
        stats,
    })
}

/// One teacher on one batch of train samples `idx`: `[B, classes]` rows, or
/// top-k values + indices.
fn run_teacher(
    t: &dyn Teacher,
    idx: &[usize],
    x: &Tensor,
    classes: usize,
    top_k: Option<usize>,
) -> Result<(Vec<f32>, Vec<i64>)> {
    let b = idx.len();
    let y = t
        .logits_for(idx, &x.to_device(t.device()))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu);
    if y.size() != [b as i64, classes as i64] {
        return Err(CacheError::Invalid(format!(
            "teacher '{}' returned logits of shape {:?}, expected [{b}, {classes}]",
            t.name(),
            y.size()
        )));
    }
    match top_k {
        None => Ok((Vec::<f32>::try_from(&y.contiguous().view(-1))?, vec![])),
        Some(k) => {
            let (v, i) = y.topk(k as i64, -1, true, true);
            Ok((
                Vec::<f32>::try_from(&v.contiguous().view(-1))?,
                Vec::<i64>::try_from(&i.contiguous().view(-1))?,
            ))
        }
    }
}

fn write_floats(
    a: &ZArray,
    dtype: Dtype,
    start: &[u64],
    shape: &[u64],
    rows: &[f32],
) -> Result<()> {
    match dtype {
        Dtype::F16 => {
            let h: Vec<half::f16> = rows.iter().map(|&x| half::f16::from_f32(x)).collect();
            zarr::write_block(a, start, shape, &h)?
        }
        Dtype::F32 => zarr::write_block(a, start, shape, rows)?,
    }
    Ok(())
}

fn write_shard(
    out: &Path,
    meta: &StoreMeta,
    params: &ZArray,
    mix: Option<&ZArray>,
    arrays: &[(ZArray, Option<ZArray>)],
    folds: &[Option<ZArray>],
    d: &ShardData,
) -> Result<()> {
    let (a, b) = meta.shard_range(d.shard);
    let (n, k) = ((b - a) as u64, meta.views as u64);
    let start = [a as u64, 0, 0];
    let shape = [n, k, meta.view_spec.param_fields().len() as u64];
    match meta.view_spec.param_bytes() {
        // Pad-crop values are at most 2 * pad <= 254: they fit.
        1 => {
            let narrow: Vec<u8> = d.params.iter().map(|&v| v as u8).collect();
            zarr::write_block(params, &start, &shape, &narrow)?
        }
        _ => zarr::write_block(params, &start, &shape, &d.params)?,
    }
    if let Some(m) = mix {
        zarr::write_block(m, &start, &[n, k, MixParams::LEN as u64], &d.mix)?;
    }
    let w = meta.row_width() as u64;
    for (ti, (vals, idx)) in arrays.iter().enumerate() {
        write_floats(vals, meta.dtype, &start, &[n, k, w], &d.rows[ti])?;
        if let Some(ia) = idx {
            let ind: Vec<u16> = d.indices[ti].iter().map(|&i| i as u16).collect();
            zarr::write_block(ia, &start, &[n, k, w], &ind)?;
        }
        if let (Some(fa), Some(f)) = (&folds[ti], &d.folds[ti]) {
            zarr::write_block(fa, &[a as u64], &[n], f)?;
        }
    }
    let m = marker_path(out, d.shard);
    let tmp = m.with_extension("tmp");
    std::fs::write(&tmp, marker_text(meta, d.shard)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &m).map_err(io_err(&m))?;
    tracing::debug!(shard = d.shard, "shard written");
    Ok(())
}

/// Check that every shard of `out` is done and its files are present and
/// decode (crc32c), then write the manifest. Run after the `--shard` workers.
pub fn finalize(out: &Path) -> Result<Manifest> {
    let _lock = lock_out(out, false)?;
    finalize_inner(out, &HashSet::new())
}

/// Shard files of every array: present, with every inner chunk that cannot
/// be all zeros (see [`StoreMeta::presence`]), and (unless `trusted`)
/// decodable.
pub fn check_shards(out: &Path, meta: &StoreMeta, trusted: &HashSet<usize>) -> Result<()> {
    let root = store_dir(out);
    let store = zarr::open_store(&root)?;
    for path in meta.array_paths() {
        let arr = zarr::open_array(&store, &path)?;
        let dims = arr.shape().len();
        for s in 0..meta.num_shards {
            let mut at = vec![0u64; dims];
            at[0] = s as u64;
            let key = arr.chunk_key(&at);
            let file = root.join(key.as_str());
            if !file.is_file() {
                return Err(store_err(
                    &file,
                    format!("shard {s} of {path} is missing (zarr would read it as zeros)"),
                ));
            }
            let (a, b) = meta.shard_range(s);
            let mut shape = arr.shape().to_vec();
            shape[0] = (b - a) as u64;
            let mut origin = vec![0u64; dims];
            origin[0] = a as u64;
            zarr::check_present(&arr, &origin, &shape, meta.presence(&path))?;
            if trusted.contains(&s) {
                continue;
            }
            let res = if path == "/views/params" && meta.view_spec.param_bytes() == 2 {
                zarr::read_block_unchecked::<u16>(&arr, &origin, &shape).map(|_| ())
            } else if path == "/views/params" || path.ends_with("/fold") {
                zarr::read_block_unchecked::<u8>(&arr, &origin, &shape).map(|_| ())
            } else if path == "/views/mix" {
                zarr::read_block_unchecked::<u32>(&arr, &origin, &shape).map(|_| ())
            } else if path.ends_with("/indices") {
                zarr::read_block_unchecked::<u16>(&arr, &origin, &shape).map(|_| ())
            } else if meta.dtype == Dtype::F16 {
                zarr::read_block_unchecked::<half::f16>(&arr, &origin, &shape).map(|_| ())
            } else {
                zarr::read_block_unchecked::<f32>(&arr, &origin, &shape).map(|_| ())
            };
            res.map_err(|e| store_err(&file, format!("shard {s} of {path} is corrupt: {e}")))?;
        }
    }
    Ok(())
}

/// The lock that keeps two builds from computing the same shards: an
/// unsharded build (and `finalize`) holds it exclusively, `--shard` workers
/// share it (they fill disjoint shards). Held until the returned file is
/// dropped. A file system without locks (some network file systems) is
/// logged and builds go on unlocked, as before.
fn lock_out(out: &Path, shared: bool) -> Result<Option<std::fs::File>> {
    let p = out.join(crate::layout::LOCK);
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(io_err(&p))?;
    let got = if shared {
        f.try_lock_shared()
    } else {
        f.try_lock()
    };
    match got {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Err(store_err(
            &p,
            if shared {
                "an unsharded `kd cache build` or `kd cache finalize` is using this store: wait for it to finish"
            } else {
                "another `kd cache build` (or --shard worker) is writing this store: wait for it to finish, or split the work with --shard i/n"
            },
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(lock = %p.display(), "cannot lock the store ({e}); building without a lock");
            Ok(None)
        }
    }
}

fn finalize_inner(out: &Path, trusted: &HashSet<usize>) -> Result<Manifest> {
    let root = store_dir(out);
    let meta = StoreMeta::read(&root)?;
    let missing: Vec<usize> = (0..meta.num_shards)
        .filter(|&s| !marker_path(out, s).is_file())
        .collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(8).map(|s| s.to_string()).collect();
        return Err(store_err(
            &root,
            format!(
                "{} of {} shards are not done (shards {}{}): run the missing `kd cache build --shard i/n` workers first",
                missing.len(),
                meta.num_shards,
                shown.join(", "),
                if missing.len() > 8 { ", ..." } else { "" }
            ),
        ));
    }
    check_shards(out, &meta, trusted)?;
    // `finalize` may run in another process and directory than the
    // workers: the lifecycle re-checks the inputs where the store recorded them.
    let stage = StageRun::new(STAGE, out, meta.key["config"].clone(), meta.inputs.clone());
    let info = zarr::describe(&root)?;
    let per_teacher: serde_json::Map<String, serde_json::Value> = meta
        .teachers
        .iter()
        .map(|t| {
            let b: u64 = info
                .iter()
                .filter(|a| a.path.starts_with(&format!("teachers/{}/", t.name)))
                .map(|a| a.stored_bytes)
                .sum();
            (
                t.name.clone(),
                json!((b as f64) / (meta.samples * meta.views).max(1) as f64),
            )
        })
        .collect();
    let mut metrics = json!({
        "samples": meta.samples,
        "views": meta.views,
        "classes": meta.num_classes,
        "dtype": meta.dtype,
        "top_k": meta.top_k,
        "teachers": meta.teachers.iter().map(|t| &t.name).collect::<Vec<_>>(),
        "shards": meta.num_shards,
        "stored_bytes": info.iter().map(|a| a.stored_bytes).sum::<u64>(),
        "bytes_per_view_per_teacher": per_teacher,
    });
    // Only when used, so a plain store's manifest reads as it always did.
    if let Some(mix) = &meta.mix {
        metrics["mix"] = json!(mix);
    }
    let folds: serde_json::Map<String, serde_json::Value> = meta
        .teachers
        .iter()
        .filter_map(|t| t.folds.as_ref().map(|f| (t.name.clone(), json!(f.k))))
        .collect();
    if !folds.is_empty() {
        metrics["cross_fitted_folds"] = json!(folds);
    }
    let outputs = vec![OutputRef::of(out, crate::layout::STORE, false)?];
    let m = stage.seal(&[("views", meta.seed)], outputs, metrics)?;
    tracing::info!(out = %out.display(), shards = meta.num_shards, "logit cache finished");
    Ok(m)
}

#[cfg(test)]
mod shard_env_tests {
    use super::*;

    #[test]
    fn shard_auto_reads_slurm_arrays_and_indexed_jobs() {
        let env = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard_from_env(None, &env(&slurm)).unwrap(), (3, 4));
        assert!(
            shard_from_env(Some(5), &env(&slurm))
                .unwrap_err()
                .to_string()
                .contains("4 tasks")
        );
        let odd = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(shard_from_env(None, &env(&odd)).is_err());
        let plain = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert_eq!(shard_from_env(None, &env(&plain)).unwrap(), (0, 2));
        let k8s = [("JOB_COMPLETION_INDEX", "2")];
        assert_eq!(shard_from_env(Some(3), &env(&k8s)).unwrap(), (2, 3));
        assert!(
            shard_from_env(None, &env(&k8s))
                .unwrap_err()
                .to_string()
                .contains("--shards N")
        );
        assert!(
            shard_from_env(Some(2), &env(&k8s))
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let e = shard_from_env(Some(2), &env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let junk = [("JOB_COMPLETION_INDEX", "x")];
        assert!(
            shard_from_env(Some(2), &env(&junk))
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }
}
