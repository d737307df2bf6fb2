//! The students' stages: each timed by a probe of its ViT with its
//! teachers' heads, views and (for live teachers) the teachers' forward.

use super::*;

impl Planner<'_> {
    pub(super) fn student(
        &mut self,
        name: &str,
        teachers: &StudentTeachers,
        cache: &CacheConfig,
        store_teachers: &[&str],
    ) -> anyhow::Result<()> {
        let section = format!("students.{name}");
        let l = layered::<StudentConfig>(
            Some(self.prof),
            &section,
            &Overlay::default(),
            &["teachers", "live"],
            self.dev_flag,
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
        let view = if !live && !names.is_empty() {
            cache.view_spec()
        } else {
            cfg.view_spec()
        };
        let [c, h, _] = view.out_chw(self.images.chw);
        let mut vit = kd_student::Config::preset(&cfg.preset, h, c, self.images.classes, heads)
            .ok_or_else(|| {
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
                        let arch = self
                            .teacher_model(n)
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
                .filter_map(|n| self.teacher_model(n).cloned())
                .collect()
        } else {
            vec![]
        };
        let bpe = self.images.train.div_ceil(cfg.batch_size);
        let m = self.probe(
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
            * (self.images.test.div_ceil(cfg.eval_batch_size)
                + self.images.val.div_ceil(cfg.eval_batch_size));
        let seconds = m.as_ref().map(|m| {
            (cfg.epochs * bpe) as f64 * m.train_step.unwrap_or(0.0)
                + eval_batches as f64 * m.eval_step.unwrap_or(0.0)
        });
        let (peak_bytes, peak_measured) = self.peak(&m, &l.device);
        self.stages.push(StagePlan {
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
            train: self.images.train,
            val: self.images.val,
            test: self.images.test,
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
        Ok(())
    }
}
