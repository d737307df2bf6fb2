//! The logit cache's stage: every store teacher on K views of every
//! training image.

use super::*;

impl Planner<'_> {
    /// The store's settings; its stage when the profile builds one.
    pub(super) fn cache(&mut self, pplan: &ProfilePlan) -> anyhow::Result<CacheConfig> {
        let store_teachers = pplan.store_teachers();
        let any_store_student = pplan
            .students
            .iter()
            .any(|(_, s)| matches!(s, StudentTeachers::Store(_)));
        let cache_l = layered::<CacheConfig>(
            Some(self.prof),
            "cache",
            &Overlay::default(),
            &[],
            self.dev_flag,
        )?;
        let cache = cache_l.config;
        cache.validate(self.images.classes).context("[cache]")?;
        let cache = cache.resolved(self.images.classes);
        if !store_teachers.is_empty()
            && (any_store_student || self.prof.table_at("cache").is_some())
        {
            let spec = cache.view_spec();
            let mix = if cache.mix_spec().is_none() {
                0
            } else {
                4 * MixParams::LEN
            };
            let size = SizeModel {
                row: SizeModel::row_bytes(self.images.classes, cache.dtype, cache.top_k),
                view: spec.param_fields().len() * spec.param_bytes() + mix,
                folds: 0,
            };
            let rows = (self.images.train * cache.views) as u64;
            let store = size.bytes(
                self.images.train as u64,
                cache.views as u64,
                store_teachers.len() as u64,
            );
            let batches = (self.images.train * cache.views).div_ceil(cache.batch_size);
            let models: Vec<ModelConfig> = store_teachers
                .iter()
                .filter_map(|n| self.teacher_model(n).cloned())
                .collect();
            let all_known = models.len() == store_teachers.len();
            let m = if all_known {
                self.probe(
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
            let (peak_bytes, peak_measured) = self.peak(&m, &cache_l.device);
            self.stages.push(StagePlan {
                stage: "cache".into(),
                what: format!(
                    "{} views x {} teachers, {}{}",
                    cache.views,
                    store_teachers.len(),
                    cache.dtype.name(),
                    cache.top_k.map_or(String::new(), |k| format!(", top-{k}"))
                ),
                train: self.images.train,
                epochs: cache.views,
                batches_per_epoch: self.images.train.div_ceil(cache.batch_size),
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
        Ok(cache)
    }
}
