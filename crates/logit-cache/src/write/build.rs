//! The build driver: the store planned from the config and inputs, `--out`
//! claimed, then each shard's views drawn and the teachers run on them while
//! the writer thread stores the shard before.
//!
//! Mixed views are assembled by `kd_data::augment::batch_tensor_mixed` from
//! the same `ViewBatch` the store records, so the stored logits are those of
//! the mixed image the student will rebuild.

use super::claim::{check_same_store, create_store, lock_out, remove_if_exists};
use super::finalize::finalize_inner;
use super::infer::run_teacher;
use super::shard_arg::{ShardError, shard};
use super::teachers::check_teachers;
use super::writer::{ShardData, open_for_write, write_shard};
use super::{BuildOptions, BuildStats, Built, TeacherInput};
use crate::config::CacheConfig;
use crate::error::{Result, io_err};
use crate::layout::{MARKERS, STAGE, StoreMeta, marker_path, store_dir, store_key};
use kd_core::ViewBatch;
use kd_core::manifest::{InputRef, Manifest};
use kd_core::stage::{RunOptions, StageRun};
use kd_core::zarr::{self, ZArray};
use kd_core::{CoreError, InputError, Outcome};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor_mixed, lut};
use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::sync_channel;

/// Build (or resume, or take part in) the store `out` of `teachers` on
/// the train split of `dataset`.
pub fn build(
    dataset: &Path,
    teachers: &[TeacherInput],
    out: &Path,
    cfg: &CacheConfig,
    opts: &BuildOptions,
    run: &RunOptions,
) -> Result<Built> {
    let progress = run.progress;
    if let Some((i, n)) = opts.shard {
        shard(i, n)?;
        if run.force {
            return Err(ShardError::Force.into());
        }
    }
    let t_start = std::time::Instant::now();
    let mut stats = BuildStats::default();
    let ds = Dataset::open(dataset)?;
    let tmeta = check_teachers(&ds, teachers)?;
    cfg.validate(ds.num_classes())?;
    let cfg = &cfg.resolved(ds.num_classes());
    let train = ds.split("train")?;
    let mix = cfg.mix_spec().in_chunks_of(train.stored_chunk());
    if !mix.is_none() && !(2..=u32::MAX as usize).contains(&train.len()) {
        return Err(InputError::Unsupported {
            what: format!("{}: {} training samples", dataset.display(), train.len()),
            limit: format!("mix '{}' needs 2..=2^32-1 to draw partners from", mix.mode),
        }
        .into());
    }
    let hw = [train.chw[1], train.chw[2]];
    cfg.view_spec().check(hw)?;
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
    if root.exists() && !run.force {
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
    if !StageRun::new(STAGE, out, cfg.identity(), inputs.clone())
        .leaves(&[MARKERS])
        .claim(run.force)?
    {
        return Ok(Built {
            outcome: Outcome::UpToDate,
            written: 0,
            skipped: 0,
            stats: BuildStats::default(),
        });
    }
    // Before anything is removed: a second build into the same directory
    // stops here instead of computing every shard again.
    let _lock = lock_out(out, opts.shard.is_some())?;
    if run.force || replace {
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
            // The next batch's pixels are assembled on a second thread while
            // the teachers run on this one.
            let batches: Vec<(usize, usize)> = (0..pairs.len())
                .step_by(cfg.batch_size)
                .map(|start| (start, (start + cfg.batch_size).min(pairs.len())))
                .collect();
            let idx_of = |start: usize, end: usize| -> Vec<usize> {
                pairs[start..end].iter().map(|p| p.0).collect()
            };
            std::thread::scope(|assembly| -> Result<()> {
                let (btx, brx) = std::sync::mpsc::sync_channel(1);
                let (batches, vb, spec, table) = (&batches, &vb, &spec, &table);
                assembly.spawn(move || {
                    for &(start, end) in batches {
                        let x = batch_tensor_mixed(
                            train,
                            &idx_of(start, end),
                            &vb.views[start..end],
                            &vb.partner_views[start..end],
                            &vb.mixes[start..end],
                            spec,
                            table,
                            device,
                        );
                        // Inference stopped (an error): nothing more to make.
                        if btx.send(x).is_err() {
                            break;
                        }
                    }
                });
                for &(start, end) in batches {
                    let x = brx
                        .recv()
                        .map_err(|_| CoreError::Worker("batch assembly"))??;
                    let idx = idx_of(start, end);
                    for (ti, t) in teachers.iter().enumerate() {
                        match run_teacher(t.teacher.as_ref(), &idx, &x, meta.num_classes, cfg.top_k)
                        {
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
                    done_views += (end - start) as u64;
                    progress.update(done_views, &format!("shard {s}"));
                }
                Ok(())
            })?;
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
            .map_err(|_| CoreError::Worker("store writer"))??;
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
        return Ok(Built {
            outcome: Outcome::Stopped { done: written },
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
    Ok(Built {
        outcome: Outcome::Wrote(Box::new(manifest)),
        written,
        skipped,
        stats,
    })
}
