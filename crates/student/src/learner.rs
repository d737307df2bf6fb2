//! The student's [`Learner`]: one training step (forward, loss over the
//! label and distillation heads) and the evaluation after each epoch, for
//! `kd_core::fit`'s epoch loop.

use crate::batch::{Batcher, Prepared};
use crate::config::TokenMode;
use crate::loss::{
    Labels, LossConfig, Targets, Weighting, averaged_target, per_teacher_targets, student_loss,
};
use crate::source::Source;
use crate::vit::Vit;
use kd_core::fit::Learner;
use kd_data::Split;
use kd_data::augment::{batch_tensor, label_tensor};
use serde_json::{Map, Value, json};
use tch::{Device, Kind, Tensor, nn::VarStore};

pub(crate) struct StudentLearner<'a> {
    pub(crate) vs: VarStore,
    pub(crate) model: Vit,
    pub(crate) batcher: &'a Batcher<'a>,
    pub(crate) test: &'a Split,
    /// Name of each distillation head (teacher name, or `avg`).
    pub(crate) heads: Vec<String>,
    pub(crate) tokens: TokenMode,
    pub(crate) weighting: Weighting,
    pub(crate) loss: LossConfig,
    pub(crate) eval_batch: usize,
    /// The held-out part of the training data, when the dataset has one
    /// (settings are chosen on it, never on test).
    pub(crate) val: Option<&'a Split>,
    /// Live mode: each head's teacher prediction on the test split (fixed, so computed once).
    pub(crate) teacher_test_pred: Option<Vec<Vec<i64>>>,
}

impl StudentLearner<'_> {
    /// One training step on a batch's inputs: live teachers (if any) on its
    /// images, then the student's forward and loss.
    fn step(
        &mut self,
        p: Prepared,
        idx: &[usize],
    ) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        let logits = match p.stored {
            Some(l) => l,
            None => self.batcher.teacher_logits(idx, &p.vids, &p.images)?,
        };
        let targets = self.targets(logits, &p.labels);
        let out = self.model.forward_t(&p.images, true);
        let parts = student_loss(&out, &p.labels, targets.as_ref(), &self.loss);
        let mut stats = vec![
            ("loss".to_string(), parts.total.detach()),
            ("ce".to_string(), parts.ce.detach()),
        ];
        for (h, k) in self.heads.iter().zip(&parts.kd) {
            stats.push((format!("kd_{h}"), k.detach()));
        }
        Ok((parts.total, stats))
    }

    fn targets(&self, logits: Vec<Tensor>, labels: &Labels) -> Option<Targets> {
        if logits.is_empty() {
            return None;
        }
        Some(match self.tokens {
            TokenMode::PerTeacher => per_teacher_targets(logits, labels, self.weighting),
            TokenMode::Averaged => averaged_target(&logits, labels, self.weighting),
        })
    }

    fn eval_batches(&self, split: &Split) -> Vec<Vec<usize>> {
        let idx: Vec<usize> = (0..split.len()).collect();
        idx.chunks(self.eval_batch.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }

    fn plain_images(&self, split: &Split, idx: &[usize]) -> kd_core::Result<Tensor> {
        let b = &self.batcher;
        let views = vec![b.spec.plain([split.chw[1], split.chw[2]]); idx.len()];
        Ok(batch_tensor(split, idx, &views, &b.spec, &b.lut, b.device)?)
    }

    /// Accuracy of the averaged heads, the class head and each distillation
    /// head on the plain images of `split`, and (live teachers, test split)
    /// each head's agreement with its teacher.
    fn accuracies(
        &mut self,
        split: &Split,
        prefix: &str,
        m: &mut Map<String, Value>,
    ) -> kd_core::Result<()> {
        let batches = self.eval_batches(split);
        let agree_with = if prefix == "test" {
            self.teacher_test_pred.as_ref()
        } else {
            None
        };
        let nh = self.heads.len();
        let (mut cls_ok, mut avg_ok) = (0usize, 0usize);
        let mut head_ok = vec![0usize; nh];
        let mut agree = vec![0usize; nh];
        for b in &batches {
            let x = self.plain_images(split, b)?;
            let out = self.model.forward_t(&x, false);
            let labels: Vec<i64> = b.iter().map(|&i| split.labels[i] as i64).collect();
            let hits = |p: &[i64]| p.iter().zip(&labels).filter(|(a, b)| a == b).count();
            cls_ok += hits(&argmax_vec(&out.cls)?);
            avg_ok += hits(&argmax_vec(&out.averaged())?);
            for (h, d) in out.dist.iter().enumerate() {
                let p = argmax_vec(d)?;
                head_ok[h] += hits(&p);
                if let Some(tp) = agree_with {
                    agree[h] += p
                        .iter()
                        .zip(&tp[h][b[0]..b[0] + b.len()])
                        .filter(|(a, b)| a == b)
                        .count();
                }
            }
        }
        let n = split.len().max(1) as f64;
        m.insert(format!("{prefix}_acc_avg"), json!(avg_ok as f64 / n));
        m.insert(format!("{prefix}_acc_cls"), json!(cls_ok as f64 / n));
        for (h, name) in self.heads.iter().enumerate() {
            m.insert(
                format!("{prefix}_acc_dist_{name}"),
                json!(head_ok[h] as f64 / n),
            );
            if agree_with.is_some() {
                m.insert(format!("agree_{name}"), json!(agree[h] as f64 / n));
            }
        }
        Ok(())
    }
}

/// Top-1 class of each row, on the CPU.
pub(crate) fn argmax_vec(t: &Tensor) -> kd_core::Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        t.argmax(-1, false).to_device(Device::Cpu),
    )?)
}

impl Learner for StudentLearner<'_> {
    fn var_store(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    fn train_len(&self) -> usize {
        self.batcher.train.len()
    }

    fn shuffle(&self) -> kd_core::sampler::Shuffle {
        self.batcher.train.shuffle()
    }

    fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        let p = self.batcher.inputs.prepare(idx, epoch)?;
        self.step(p, idx)
    }

    fn train_prepared(
        &mut self,
        prepared: kd_core::fit::Prepared,
        idx: &[usize],
        _epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        self.step(kd_core::fit::unpack::<Prepared>(prepared), idx)
    }

    fn evaluate(&mut self, _epoch: usize) -> kd_core::Result<Map<String, Value>> {
        let _g = tch::no_grad_guard();
        if self.teacher_test_pred.is_none() && matches!(self.batcher.source, Source::Live(_)) {
            // Teachers see the plain test images; their predictions are fixed.
            let mut preds = vec![vec![]; self.heads.len()];
            for b in &self.eval_batches(self.test) {
                let x = self.plain_images(self.test, b)?;
                let labels = Labels::plain(label_tensor(self.test, b, self.batcher.device));
                let logits = match self.batcher.source {
                    Source::Live(ts) => ts
                        .iter()
                        .map(|t| {
                            t.logits(&x.to_device(t.device()))
                                .to_kind(Kind::Float)
                                .to_device(self.batcher.device)
                        })
                        .collect(),
                    _ => vec![],
                };
                if let Some(t) = self.targets(logits, &labels) {
                    for (p, z) in preds.iter_mut().zip(&t.logits) {
                        p.extend(argmax_vec(z)?);
                    }
                }
            }
            self.teacher_test_pred = Some(preds);
        }
        let mut m = Map::new();
        let test = self.test;
        self.accuracies(test, "test", &mut m)?;
        if let Some(val) = self.val {
            self.accuracies(val, "val", &mut m)?;
        }
        Ok(m)
    }
}
