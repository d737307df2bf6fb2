//! Probes: a few timed steps of one stage's real model on random input,
//! run in a child process so its memory high-water mark is the stage's own.

use super::*;

/// One measurement, run in a child process.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Probe {
    pub(super) device: String,
    pub(super) chw: [usize; 3],
    pub(super) classes: usize,
    pub(super) steps: usize,
    pub(super) kind: ProbeKind,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ProbeKind {
    /// A teacher's training step and evaluation forward.
    Teacher {
        model: ModelConfig,
        batch: usize,
        eval_batch: usize,
        precision: Precision,
        label_smoothing: f64,
        view: ViewSpec,
    },
    /// Forward passes of every model at `batch`, all held at once (the cache).
    Forward {
        models: Vec<ModelConfig>,
        batch: usize,
        view: ViewSpec,
    },
    /// An imported TorchScript teacher's forward.
    TorchScript { file: PathBuf, batch: usize },
    /// A student's training step (with `live` teachers run on each batch,
    /// or `cached` random teacher logits) and its evaluation forward.
    Student {
        cfg: StudentConfig,
        vit: kd_student::Config,
        cached: usize,
        live: Vec<ModelConfig>,
        view: ViewSpec,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Measured {
    /// Seconds per training step (forward + backward + AdamW).
    pub(super) train_step: Option<f64>,
    /// Seconds per evaluation forward batch.
    pub(super) eval_step: Option<f64>,
    /// Seconds per forward batch of each model (cache, imported teacher).
    pub(super) forward: Vec<f64>,
    /// The child's peak resident set (VmHWM), bytes.
    pub(super) peak_rss: Option<u64>,
    /// CUDA: parameters x 16 bytes (weights, gradients, AdamW moments).
    pub(super) params: u64,
}

pub(crate) fn vm_hwm() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub(super) fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Seconds per call of `f`: one warm-up call, then the fastest of at least
/// `steps` timed calls (more, up to 20, while they add up to under half a
/// second). The fastest, not the mean: on a machine shared with other jobs
/// a step that lost its cores to them says nothing about this run's steps.
pub(super) fn timed(
    device: Device,
    steps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    f()?;
    sync(device);
    let (mut best, mut spent, mut n) = (f64::INFINITY, 0.0, 0);
    while n < steps.max(1) || (spent < 0.5 && n < 20) {
        let t0 = Instant::now();
        f()?;
        sync(device);
        let dt = t0.elapsed().as_secs_f64();
        best = best.min(dt);
        spent += dt;
        n += 1;
    }
    Ok(best)
}

/// Random uint8 images of the dataset's shape, as the data crate holds them.
pub(super) fn random_split(chw: [usize; 3], n: usize, classes: usize) -> Split {
    let len = n * chw.iter().product::<usize>();
    let mut rng = kd_core::Rng::keyed(0, &[0x706c_616e]);
    let images = (0..len).map(|_| (rng.next_u64() & 0xff) as u8).collect();
    let labels = (0..n).map(|i| (i % classes.max(1)) as u16).collect();
    Split::in_memory(images, labels, chw)
}

/// A batch as the stages make it: views drawn and applied to uint8 images.
pub(super) fn batch(
    split: &Split,
    spec: &ViewSpec,
    n: usize,
    epoch: u64,
    device: Device,
) -> kd_data::Result<Tensor> {
    let idx: Vec<usize> = (0..n).collect();
    let hw = [split.chw[1], split.chw[2]];
    let views: Vec<ViewParams> = idx
        .iter()
        .map(|&i| spec.draw(hw, 0, i as u64, 1 + epoch))
        .collect();
    let lut = kd_data::augment::lut(&vec![0.5; split.chw[0]], &vec![0.25; split.chw[0]]);
    kd_data::augment::batch_tensor(split, &idx, &views, spec, &lut, device)
}

pub(super) fn teacher_net(vs: &VarStore, m: &ModelConfig, chw: [usize; 3], classes: usize) -> Net {
    Net::for_images(&vs.root(), m, chw, classes as i64)
}

impl Probe {
    pub(super) fn run(&self) -> anyhow::Result<Measured> {
        let device = kd_core::parse_device(&self.device)?;
        let (chw, classes, steps) = (self.chw, self.classes, self.steps);
        let mut m = Measured::default();
        match &self.kind {
            ProbeKind::Teacher {
                model,
                batch: b,
                eval_batch,
                precision,
                label_smoothing,
                view,
            } => {
                let data = random_split(chw, (*b).max(*eval_batch), classes);
                let vs = VarStore::new(device);
                let net = teacher_net(&vs, model, chw, classes);
                m.params = kd_core::stage::param_count(&vs) as u64;
                let mut opt = AdamW::new(&vs, AdamWConfig::default());
                let idx: Vec<usize> = (0..*b).collect();
                let y = kd_data::augment::label_tensor(&data, &idx, device);
                let mut epoch = 0;
                m.train_step = Some(timed(device, steps, || {
                    epoch += 1;
                    opt.zero_grad()?;
                    let x = batch(&data, view, *b, epoch, device)?;
                    let loss = autocast(device, *precision, || {
                        net.forward_t(&x, true)
                            .to_kind(Kind::Float)
                            .cross_entropy_loss::<Tensor>(
                                &y,
                                None,
                                tch::Reduction::Mean,
                                -100,
                                *label_smoothing,
                            )
                    });
                    loss.backward();
                    opt.step(1e-3)?;
                    Ok(())
                })?);
                let _g = tch::no_grad_guard();
                let x = batch(&data, &ViewSpec::default(), *eval_batch, 0, device)?;
                m.eval_step = Some(timed(device, steps, || {
                    let _ = net.forward_t(&x, false);
                    Ok(())
                })?);
            }
            ProbeKind::Forward {
                models,
                batch: b,
                view,
            } => {
                let data = random_split(chw, *b, classes);
                let vs = VarStore::new(device);
                let nets: Vec<Net> = models
                    .iter()
                    .map(|mc| teacher_net(&vs, mc, chw, classes))
                    .collect();
                let _g = tch::no_grad_guard();
                for net in &nets {
                    m.forward.push(timed(device, steps, || {
                        let x = batch(&data, view, *b, 0, device)?;
                        let _ = net.forward_t(&x, false);
                        Ok(())
                    })?);
                }
            }
            ProbeKind::TorchScript { file, batch: b } => {
                let module = tch::CModule::load_on_device(file, device)
                    .with_context(|| format!("{}: cannot load TorchScript", file.display()))?;
                let data = random_split(chw, *b, classes);
                let _g = tch::no_grad_guard();
                let x = batch(&data, &ViewSpec::default(), *b, 0, device)?;
                m.forward.push(timed(device, steps, || {
                    let _ = module.forward_ts(&[&x])?;
                    Ok(())
                })?);
            }
            ProbeKind::Student {
                cfg,
                vit,
                cached,
                live,
                view,
            } => {
                let b = cfg.batch_size;
                let data = random_split(chw, b.max(cfg.eval_batch_size), classes);
                let tvs = VarStore::new(device);
                let teachers: Vec<Net> = live
                    .iter()
                    .map(|mc| teacher_net(&tvs, mc, chw, classes))
                    .collect();
                let vs = VarStore::new(device);
                let model = kd_student::Vit::new(&vs.root(), vit);
                m.params = kd_core::stage::param_count(&vs) as u64;
                let mut opt = AdamW::new(
                    &vs,
                    AdamWConfig {
                        weight_decay: cfg.weight_decay,
                        ..Default::default()
                    },
                );
                let idx: Vec<usize> = (0..b).collect();
                let y = kd_data::augment::label_tensor(&data, &idx, device);
                let loss_cfg = cfg.loss_config();
                let mut epoch = 0;
                m.train_step = Some(timed(device, steps, || {
                    epoch += 1;
                    opt.zero_grad()?;
                    let x = batch(&data, view, b, epoch, device)?;
                    let logits: Vec<Tensor> = {
                        let _g = tch::no_grad_guard();
                        let mut v: Vec<Tensor> = teachers
                            .iter()
                            .map(|t| t.forward_t(&x, false).to_kind(Kind::Float))
                            .collect();
                        v.extend((0..*cached).map(|_| {
                            Tensor::randn([b as i64, classes as i64], (Kind::Float, device))
                        }));
                        v
                    };
                    let labels = kd_student::loss::Labels::plain(y.shallow_clone());
                    let targets = (!logits.is_empty()).then(|| match cfg.tokens {
                        kd_student::TokenMode::PerTeacher => {
                            kd_student::loss::per_teacher_targets(logits, &labels, cfg.weighting)
                        }
                        kd_student::TokenMode::Averaged => {
                            kd_student::loss::averaged_target(&logits, &labels, cfg.weighting)
                        }
                    });
                    let parts = autocast(device, cfg.precision, || {
                        let out = model.forward_t(&x, true);
                        kd_student::loss::student_loss(&out, &labels, targets.as_ref(), &loss_cfg)
                    });
                    parts.total.backward();
                    opt.step(1e-3)?;
                    Ok(())
                })?);
                let _g = tch::no_grad_guard();
                let x = batch(&data, &ViewSpec::default(), cfg.eval_batch_size, 0, device)?;
                m.eval_step = Some(timed(device, steps, || {
                    let _ = model.forward_t(&x, false).averaged();
                    Ok(())
                })?);
            }
        }
        m.peak_rss = vm_hwm();
        Ok(m)
    }
}

/// Run `probe` in a child `kd plan --probe` (a fresh process: its peak
/// memory is this stage's alone).
pub(super) fn measure(probe: &Probe) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("kd plan: cannot find its own executable")?;
    let spec = serde_json::to_string(probe)?;
    tracing::info!(probe = ?probe.kind_name(), device = %probe.device, "measuring");
    let o = std::process::Command::new(exe)
        .args(["plan", "--probe", &spec])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("kd plan: cannot start a measuring process")?;
    if !o.status.success() {
        bail!(
            "measuring {} failed (its error is above)",
            probe.kind_name()
        );
    }
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).context("kd plan: unreadable measurement")
}

impl Probe {
    pub(super) fn kind_name(&self) -> &'static str {
        match self.kind {
            ProbeKind::Teacher { .. } => "teacher step",
            ProbeKind::Forward { .. } => "cache forward",
            ProbeKind::TorchScript { .. } => "TorchScript forward",
            ProbeKind::Student { .. } => "student step",
        }
    }
}
