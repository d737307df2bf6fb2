//! The plan: every stage the profile names, its counts, store bytes and
//! the probe that times it. One [`Planner`] walks the stages in pipeline
//! order; the teachers, the cache and the students each have a file.

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
    // What a stage holds of the dataset: all of it when it fits the data
    // cache, at most the cache when it is read by chunk.
    let ds_bytes = images.dataset_bytes().min(kd_data::pixels::cache_budget()?);
    let mut planner = Planner {
        prof,
        dev_flag: a.device.as_deref(),
        images,
        ds_bytes,
        measure_on: !a.no_measure,
        steps: a.steps.max(1),
        teacher_models: vec![],
        stages: vec![],
    };
    planner.data()?;
    for t in &pplan.teachers {
        planner.teacher(t)?;
    }
    let cache = planner.cache(&pplan)?;
    let store_teachers = pplan.store_teachers();
    for (name, teachers) in &pplan.students {
        planner.student(name, teachers, &cache, &store_teachers)?;
    }
    let Planner {
        images,
        stages,
        steps,
        measure_on,
        ..
    } = planner;
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

/// What every stage's estimate needs: the profile, the images, how to
/// measure; and the plan so far.
pub(super) struct Planner<'a> {
    pub(super) prof: &'a Profile,
    /// `--device`, over each section's own.
    pub(super) dev_flag: Option<&'a str>,
    pub(super) images: Images,
    /// What a stage holds of the dataset in memory.
    pub(super) ds_bytes: u64,
    pub(super) measure_on: bool,
    /// Steps each probe times.
    pub(super) steps: usize,
    /// Each teacher's model, `None` for an imported (TorchScript) one.
    pub(super) teacher_models: Vec<(String, Option<ModelConfig>)>,
    pub(super) stages: Vec<StagePlan>,
}

impl Planner<'_> {
    /// A few timed steps of `kind` on `device`, unless `--no-measure`.
    pub(super) fn probe(&self, device: &str, kind: ProbeKind) -> anyhow::Result<Option<Measured>> {
        if !self.measure_on {
            return Ok(None);
        }
        measure(&Probe {
            device: device.to_string(),
            chw: self.images.chw,
            classes: self.images.classes,
            steps: self.steps,
            kind,
        })
        .map(Some)
    }

    /// Peak memory: measured on the CPU (the probe's high-water mark plus
    /// the dataset), computed from the parameter count on a GPU.
    pub(super) fn peak(&self, m: &Option<Measured>, device: &str) -> (Option<u64>, bool) {
        match m {
            Some(m) if !device.starts_with("cuda") => (m.peak_rss.map(|p| p + self.ds_bytes), true),
            Some(m) => (Some(m.params * 16 + self.ds_bytes), false),
            None => (None, false),
        }
    }

    /// The model of a trained teacher named `name`.
    pub(super) fn teacher_model(&self, name: &str) -> Option<&ModelConfig> {
        self.teacher_models
            .iter()
            .find(|(t, _)| t == name)
            .and_then(|(_, m)| m.as_ref())
    }

    /// The data import.
    fn data(&mut self) -> anyhow::Result<()> {
        let from_raw = self.images.raw_train.is_some();
        let all = self
            .images
            .raw_train
            .unwrap_or(self.images.train + self.images.val)
            + self.images.raw_test.unwrap_or(self.images.test);
        let [c, h, w] = self.images.chw;
        let raw_pixels = (all * c * h * w) as u64;
        let (secs, measured) = if !self.images.sample_files.is_empty() && self.measure_on {
            let size = self.images.chw[1] as u32;
            let t0 = Instant::now();
            for f in &self.images.sample_files {
                let im = image::open(f).with_context(|| format!("{}", f.display()))?;
                let _ = im.resize_to_fill(size, size, image::imageops::FilterType::Triangle);
            }
            let per = t0.elapsed().as_secs_f64() / self.images.sample_files.len() as f64;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            (
                per * all as f64 / cores + raw_pixels as f64 / IMPORT_BYTES_PER_SEC,
                true,
            )
        } else {
            let bytes = if from_raw {
                self.images.raw_bytes + raw_pixels
            } else {
                raw_pixels
            };
            (bytes as f64 / IMPORT_BYTES_PER_SEC, false)
        };
        self.stages.push(StagePlan {
            stage: "data".into(),
            what: self.images.source.clone(),
            train: self.images.train,
            val: self.images.val,
            test: self.images.test,
            // The importer holds every source image, then the cut splits.
            peak_bytes: Some(raw_pixels + self.ds_bytes),
            seconds: Some(secs),
            time_measured: measured,
            device: "cpu".into(),
            ..Default::default()
        });
        Ok(())
    }
}
