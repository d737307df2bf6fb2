//! The plan: every stage the profile names, its counts, store bytes and
//! the probe that times it.

use super::*;

#[derive(Clone, Debug, Default, Serialize)]
pub struct StagePlan {
    /// `data`, `teacher:<name>`, `cache`, `student:<name>`.
    pub stage: String,
    /// What the stage does, in a few words (model, source).
    pub what: String,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub epochs: usize,
    pub batches_per_epoch: usize,
    /// Training steps (epochs x batches), or forward batches for the cache
    /// and imported teachers.
    pub steps: usize,
    pub store_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    /// Peak memory measured (child's VmHWM + the dataset) or computed.
    pub peak_measured: bool,
    pub seconds: Option<f64>,
    /// Time extrapolated from measured steps, or computed.
    pub time_measured: bool,
    pub device: String,
}

#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub profile: String,
    pub images: Images,
    pub stages: Vec<StagePlan>,
    pub total_seconds: f64,
    pub total_store_bytes: u64,
    pub max_peak_bytes: u64,
    pub timed_steps: usize,
    pub measured: bool,
}

pub(super) fn evals(epochs: usize, every: usize) -> usize {
    (1..=epochs)
        .filter(|e| e % every.max(1) == 0 || *e == epochs)
        .count()
}

pub(super) fn dev_name(spec: &str) -> anyhow::Result<String> {
    Ok(kd_core::device::device_name(kd_core::parse_device(spec)?))
}

pub(super) fn make_plan(prof: &Profile, a: &Args) -> anyhow::Result<PlanReport> {
    let dev_flag = a.device.as_deref();
    let pplan = ProfilePlan::read(prof)?;
    let data: ImportConfig = layered(Some(prof), "data", &Overlay::default(), &[], None)?.config;
    let stem = prof
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let default_ds = PathBuf::from("data/runs").join(&stem).join("dataset");
    let images = match &a.dataset {
        Some(d) => from_dataset(d)?,
        None if default_ds.join("manifest.json").is_file() => from_dataset(&default_ds)?,
        None => {
            let src = data
                .src
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_RAW));
            from_raw(&data, &src)?
        }
    };
    let chw = images.chw;
    let classes = images.classes;
    // What a stage holds of the dataset: all of it when it fits the data
    // cache, at most the cache when it is read by chunk.
    let ds_bytes = images.dataset_bytes().min(kd_data::pixels::cache_budget()?);
    let measure_on = !a.no_measure;
    let steps = a.steps.max(1);
    let probe = |device: &str, kind: ProbeKind| -> anyhow::Result<Option<Measured>> {
        if !measure_on {
            return Ok(None);
        }
        measure(&Probe {
            device: device.to_string(),
            chw,
            classes,
            steps,
            kind,
        })
        .map(Some)
    };
    let peak = |m: &Option<Measured>, device: &str, held: u64| -> (Option<u64>, bool) {
        match m {
            Some(m) if !device.starts_with("cuda") => (m.peak_rss.map(|p| p + held), true),
            Some(m) => (Some(m.params * 16 + held), false),
            None => (None, false),
        }
    };
    let mut stages = vec![];

    // Data import.
    {
        let from_raw = images.raw_train.is_some();
        let all = images.raw_train.unwrap_or(images.train + images.val)
            + images.raw_test.unwrap_or(images.test);
        let [c, h, w] = chw;
        let raw_pixels = (all * c * h * w) as u64;
        let (secs, measured) = if !images.sample_files.is_empty() && measure_on {
            let size = chw[1] as u32;
            let t0 = Instant::now();
            for f in &images.sample_files {
                let im = image::open(f).with_context(|| format!("{}", f.display()))?;
                let _ = im.resize_to_fill(size, size, image::imageops::FilterType::Triangle);
            }
            let per = t0.elapsed().as_secs_f64() / images.sample_files.len() as f64;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            (
                per * all as f64 / cores + raw_pixels as f64 / IMPORT_BYTES_PER_SEC,
                true,
            )
        } else {
            let bytes = if from_raw {
                images.raw_bytes + raw_pixels
            } else {
                raw_pixels
            };
            (bytes as f64 / IMPORT_BYTES_PER_SEC, false)
        };
        stages.push(StagePlan {
            stage: "data".into(),
            what: images.source.clone(),
            train: images.train,
            val: images.val,
            test: images.test,
            // The importer holds every source image, then the cut splits.
            peak_bytes: Some(raw_pixels + ds_bytes),
            seconds: Some(secs),
            time_measured: measured,
            device: "cpu".into(),
            ..Default::default()
        });
    }

    // Teachers.
    let mut teacher_models: Vec<(String, Option<ModelConfig>)> = vec![];
    for t in &pplan.teachers {
        let section = format!("teachers.{}", t.name);
        if let Some(file) = &t.torchscript {
            let table = prof.table_at(&section).cloned().unwrap_or_default();
            let eval_batch = table
                .get("eval_batch_size")
                .and_then(|v| v.as_integer())
                .unwrap_or(256) as usize;
            let device = dev_flag
                .map(String::from)
                .or_else(|| {
                    table
                        .get("device")
                        .and_then(|v| v.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| kd_core::profile::DEFAULT_DEVICE.to_string());
            let file = PathBuf::from(file);
            let m = if file.is_file() {
                probe(
                    &device,
                    ProbeKind::TorchScript {
                        file: file.clone(),
                        batch: eval_batch,
                    },
                )?
            } else {
                None
            };
            let batches = images.test.div_ceil(eval_batch);
            let (peak_bytes, peak_measured) = peak(&m, &device, ds_bytes);
            stages.push(StagePlan {
                stage: format!("teacher:{}", t.name),
                what: format!("imported {} (eval only)", file.display()),
                test: images.test,
                batches_per_epoch: batches,
                steps: batches,
                seconds: m
                    .as_ref()
                    .and_then(|m| m.forward.first())
                    .map(|s| s * batches as f64),
                time_measured: m.is_some(),
                peak_bytes,
                peak_measured,
                device: dev_name(&device)?,
                ..Default::default()
            });
            teacher_models.push((t.name.clone(), None));
            continue;
        }
        let l = layered::<TeacherConfig>(Some(prof), &section, &Overlay::default(), &[], dev_flag)?;
        let mut cfg = l.config;
        if !prof
            .table_at(&section)
            .is_some_and(|s| s.contains_key("arch"))
        {
            cfg.arch = kd_core::profile::parse_setting(&t.name).map_err(|_| {
                anyhow::anyhow!("[{section}]: no arch, and the name is none of cnn, involution")
            })?;
        }
        let (cfg, model) = cfg.resolve().with_context(|| format!("[{section}]"))?;
        let folds = cfg.folds.unwrap_or(1);
        let per_model = if folds > 1 {
            images.train - images.train / folds
        } else {
            images.train
        };
        let bpe = per_model.div_ceil(cfg.fit.batch_size);
        let epochs = cfg.fit.epochs;
        let nevals = evals(epochs, cfg.fit.eval_every) + 1;
        let m = probe(
            &l.device,
            ProbeKind::Teacher {
                model: model.clone(),
                batch: cfg.fit.batch_size,
                eval_batch: cfg.eval_batch_size,
                precision: cfg.fit.precision,
                label_smoothing: cfg.label_smoothing,
                view: cfg.view.clone(),
            },
        )?;
        let eval_batches = folds * nevals * images.test.div_ceil(cfg.eval_batch_size)
            + if folds > 1 {
                images.train.div_ceil(cfg.eval_batch_size)
            } else {
                0
            };
        let seconds = m.as_ref().map(|m| {
            folds as f64 * (epochs * bpe) as f64 * m.train_step.unwrap_or(0.0)
                + eval_batches as f64 * m.eval_step.unwrap_or(0.0)
        });
        let (peak_bytes, peak_measured) = peak(&m, &l.device, ds_bytes);
        stages.push(StagePlan {
            stage: format!("teacher:{}", t.name),
            what: format!(
                "{}{}",
                cfg.preset.as_deref().unwrap_or_default(),
                if folds > 1 {
                    format!(", {folds} folds")
                } else {
                    String::new()
                }
            ),
            train: images.train,
            val: images.val,
            test: images.test,
            epochs: folds * epochs,
            batches_per_epoch: bpe,
            steps: folds * epochs * bpe,
            seconds,
            time_measured: m.is_some(),
            peak_bytes,
            peak_measured,
            device: dev_name(&l.device)?,
            ..Default::default()
        });
        teacher_models.push((t.name.clone(), Some(model)));
    }

    // The logit cache: every store teacher on K views of every training image.
    let store_teachers = pplan.store_teachers();
    let any_store_student = pplan
        .students
        .iter()
        .any(|(_, s)| matches!(s, StudentTeachers::Store(_)));
    let cache_l = layered::<CacheConfig>(Some(prof), "cache", &Overlay::default(), &[], dev_flag)?;
    let cache = cache_l.config;
    cache.validate(classes).context("[cache]")?;
    let cache = cache.resolved(classes);
    if !store_teachers.is_empty() && (any_store_student || prof.table_at("cache").is_some()) {
        let spec = cache.view_spec();
        let mix = if cache.mix_spec().is_none() {
            0
        } else {
            4 * MixParams::LEN
        };
        let size = SizeModel {
            row: SizeModel::row_bytes(classes, cache.dtype, cache.top_k),
            view: spec.param_fields().len() * spec.param_bytes() + mix,
            folds: 0,
        };
        let rows = (images.train * cache.views) as u64;
        let store = size.bytes(
            images.train as u64,
            cache.views as u64,
            store_teachers.len() as u64,
        );
        let batches = (images.train * cache.views).div_ceil(cache.batch_size);
        let models: Vec<ModelConfig> = store_teachers
            .iter()
            .filter_map(|n| {
                teacher_models
                    .iter()
                    .find(|(t, _)| t == n)
                    .and_then(|(_, m)| m.clone())
            })
            .collect();
        let all_known = models.len() == store_teachers.len();
        let m = if all_known {
            probe(
                &cache_l.device,
                ProbeKind::Forward {
                    models,
                    batch: cache.batch_size,
                    view: spec,
                },
            )?
        } else {
            None
        };
        let (peak_bytes, peak_measured) = peak(&m, &cache_l.device, ds_bytes);
        stages.push(StagePlan {
            stage: "cache".into(),
            what: format!(
                "{} views x {} teachers, {}{}",
                cache.views,
                store_teachers.len(),
                cache.dtype.name(),
                cache.top_k.map_or(String::new(), |k| format!(", top-{k}"))
            ),
            train: images.train,
            epochs: cache.views,
            batches_per_epoch: images.train.div_ceil(cache.batch_size),
            steps: batches * store_teachers.len(),
            store_bytes: Some(store),
            seconds: m
                .as_ref()
                .map(|m| m.forward.iter().sum::<f64>() * batches as f64),
            time_measured: m.is_some(),
            peak_bytes,
            peak_measured,
            device: dev_name(&cache_l.device)?,
            ..Default::default()
        });
        tracing::debug!(rows, "cache rows");
    }

    // Students.
    for (name, teachers) in &pplan.students {
        let section = format!("students.{name}");
        let l = layered::<StudentConfig>(
            Some(prof),
            &section,
            &Overlay::default(),
            &["teachers", "live"],
            dev_flag,
        )?;
        let cfg = l.config;
        cfg.validate().with_context(|| format!("[{section}]"))?;
        let (names, live): (Vec<String>, bool) = match teachers {
            StudentTeachers::None => (vec![], false),
            StudentTeachers::Store(ts) => (ts.clone(), false),
            StudentTeachers::Live(ts) => (ts.clone(), true),
            StudentTeachers::Source(s) => {
                let n = s
                    .split_once('#')
                    .map_or(store_teachers.len(), |(_, t)| t.split(',').count());
                if s.starts_with("live:") {
                    (vec![], true)
                } else if s.trim() == "none" {
                    (vec![], false)
                } else {
                    (
                        store_teachers
                            .iter()
                            .take(n)
                            .map(|t| t.to_string())
                            .collect(),
                        false,
                    )
                }
            }
        };
        let heads = match (cfg.tokens, names.is_empty()) {
            (_, true) => 0,
            (kd_student::TokenMode::PerTeacher, false) => names.len(),
            (kd_student::TokenMode::Averaged, false) => 1,
        };
        let [c, h, _] = chw;
        let mut vit =
            kd_student::Config::preset(&cfg.preset, h, c, classes, heads).ok_or_else(|| {
                anyhow::anyhow!(
                    "[{section}]: unknown student preset '{}' (have: {})",
                    cfg.preset,
                    kd_student::vit::PRESETS.join(", ")
                )
            })?;
        cfg.model.apply(&mut vit);
        if let Some(dp) = cfg.drop_path {
            vit.drop_path = dp;
        }
        vit.stem = cfg.stem;
        if cfg.stem == kd_student::Stem::ConvInvolution && heads > 0 {
            vit.token_stems = if cfg.tokens == kd_student::TokenMode::Averaged {
                vec![kd_student::TokenStem::Both]
            } else {
                names
                    .iter()
                    .map(|n| {
                        let arch = teacher_models
                            .iter()
                            .find(|(t, _)| t == n)
                            .and_then(|(_, m)| m.as_ref())
                            .map_or("torchscript", |m| m.arch().name());
                        kd_student::TokenStem::for_arch(arch).ok_or_else(|| {
                            anyhow::anyhow!("[{section}]: stem conv-involution needs cnn or involution teachers ('{n}' is not)")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            };
        }
        vit.validate().map_err(|e| {
            anyhow::anyhow!(
                "[{section}]: student model (preset '{}') on {h}x{h} images: {e}",
                cfg.preset
            )
        })?;
        let live_models: Vec<ModelConfig> = if live {
            names
                .iter()
                .filter_map(|n| {
                    teacher_models
                        .iter()
                        .find(|(t, _)| t == n)
                        .and_then(|(_, m)| m.clone())
                })
                .collect()
        } else {
            vec![]
        };
        let view = if !live && !names.is_empty() {
            cache.view_spec()
        } else if let Some(r) = &cfg.view_crop {
            ViewSpec::resized(
                CropRange {
                    scale: r.scale,
                    ratio: r.ratio,
                },
                cfg.view_flip.unwrap_or(true),
            )
        } else {
            ViewSpec {
                pad: cfg.view_pad.unwrap_or(ViewSpec::default().pad),
                flip: cfg.view_flip.unwrap_or(true),
                ..ViewSpec::default()
            }
        };
        let _ = Crop::PadCrop;
        let bpe = images.train.div_ceil(cfg.batch_size);
        let m = probe(
            &l.device,
            ProbeKind::Student {
                cfg: cfg.clone(),
                vit,
                cached: if live { 0 } else { names.len() },
                live: live_models,
                view,
            },
        )?;
        let eval_batches = evals(cfg.epochs, cfg.eval_every)
            * (images.test.div_ceil(cfg.eval_batch_size)
                + images.val.div_ceil(cfg.eval_batch_size));
        let seconds = m.as_ref().map(|m| {
            (cfg.epochs * bpe) as f64 * m.train_step.unwrap_or(0.0)
                + eval_batches as f64 * m.eval_step.unwrap_or(0.0)
        });
        let (peak_bytes, peak_measured) = peak(&m, &l.device, ds_bytes);
        stages.push(StagePlan {
            stage: format!("student:{name}"),
            what: format!(
                "{}, {}",
                cfg.preset,
                match (names.is_empty(), live) {
                    (true, true) => "live".to_string(),
                    (true, false) => "no teacher".to_string(),
                    (false, true) => format!("live {}", names.join("+")),
                    (false, false) => format!("store {}", names.join("+")),
                }
            ),
            train: images.train,
            val: images.val,
            test: images.test,
            epochs: cfg.epochs,
            batches_per_epoch: bpe,
            steps: cfg.epochs * bpe,
            seconds,
            time_measured: m.is_some(),
            peak_bytes,
            peak_measured,
            device: dev_name(&l.device)?,
            ..Default::default()
        });
    }
    let _ = json!(null);
    Ok(PlanReport {
        profile: prof.path.display().to_string(),
        total_seconds: stages.iter().filter_map(|s| s.seconds).sum(),
        total_store_bytes: stages.iter().filter_map(|s| s.store_bytes).sum(),
        max_peak_bytes: stages
            .iter()
            .filter_map(|s| s.peak_bytes)
            .max()
            .unwrap_or(0),
        images,
        stages,
        timed_steps: steps,
        measured: measure_on,
    })
}
