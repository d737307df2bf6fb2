//! The teachers' stages: trained ones timed by a probe of their model,
//! imported TorchScript ones by a probe of their forward pass.

use super::*;

impl Planner<'_> {
    pub(super) fn teacher(&mut self, t: &TeacherPlan) -> anyhow::Result<()> {
        let section = format!("teachers.{}", t.name);
        if let Some(file) = &t.torchscript {
            let table = self.prof.table_at(&section).cloned().unwrap_or_default();
            let eval_batch = table
                .get("eval_batch_size")
                .and_then(|v| v.as_integer())
                .unwrap_or(256) as usize;
            let device = self
                .dev_flag
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
                self.probe(
                    &device,
                    ProbeKind::TorchScript {
                        file: file.clone(),
                        batch: eval_batch,
                    },
                )?
            } else {
                None
            };
            let batches = self.images.test.div_ceil(eval_batch);
            let (peak_bytes, peak_measured) = self.peak(&m, &device);
            self.stages.push(StagePlan {
                stage: format!("teacher:{}", t.name),
                what: format!("imported {} (eval only)", file.display()),
                test: self.images.test,
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
            self.teacher_models.push((t.name.clone(), None));
            return Ok(());
        }
        let l = layered::<TeacherConfig>(
            Some(self.prof),
            &section,
            &Overlay::default(),
            &[],
            self.dev_flag,
        )?;
        let mut cfg = l.config;
        if !self
            .prof
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
            self.images.train - self.images.train / folds
        } else {
            self.images.train
        };
        let bpe = per_model.div_ceil(cfg.fit.batch_size);
        let epochs = cfg.fit.epochs;
        let nevals = evals(epochs, cfg.fit.eval_every) + 1;
        let m = self.probe(
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
        let eval_batches = folds * nevals * self.images.test.div_ceil(cfg.eval_batch_size)
            + if folds > 1 {
                self.images.train.div_ceil(cfg.eval_batch_size)
            } else {
                0
            };
        let seconds = m.as_ref().map(|m| {
            folds as f64 * (epochs * bpe) as f64 * m.train_step.unwrap_or(0.0)
                + eval_batches as f64 * m.eval_step.unwrap_or(0.0)
        });
        let (peak_bytes, peak_measured) = self.peak(&m, &l.device);
        self.stages.push(StagePlan {
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
            train: self.images.train,
            val: self.images.val,
            test: self.images.test,
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
        self.teacher_models.push((t.name.clone(), Some(model)));
        Ok(())
    }
}
