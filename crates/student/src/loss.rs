//! The student's losses, as small pure functions of logits.
//!
//! With student logits `s_cls, s_1..s_T`, teacher logits `z_1..z_T`, labels `y`
//! and per-sample teacher weights `w[b, t]`:
//!
//! `L = (1-alpha) * mean_b CE_ls(s_cls, y) + alpha * sum_t mean_b w[b,t] * KD(s_t, z_t)`
//!
//! where soft `KD = tau^2 * KL(softmax(z/tau) || softmax(s/tau))` and hard
//! `KD = CE(s, argmax z)` (DeiT's hard distillation). Without teachers
//! `L = CE_ls(s_cls, y)`.
//!
//! Weighting ([`teacher_weights`]): `uniform` is `w = 1/T`, which gives the
//! familiar `alpha/T * sum_t KD_t`; `confidence` is
//! `w[b, .] = softmax_t(-CE(z_t, y_b))` (confidence-aware multi-teacher KD:
//! a view's weight moves to the teachers that predict its label best);
//! `correct` keeps only the teachers whose argmax is the label, renormalised,
//! so a view that no teacher gets right keeps only its label term
//! (`(1-alpha) * CE`). Each row of `w` sums to 1 (or 0), so `alpha` keeps its
//! meaning under every weighting.
//!
//! KL normalisation: **batchmean** (sum over classes, mean over the batch),
//! the true per-sample KL divergence, as in Co-advise and PyTorch's
//! recommendation. DeiT's `reduction='sum' / (batch * classes)` (a legacy
//! kept in DeiT for reproducibility) would shrink the term by the class
//! count and so tie the meaning of `alpha` to the data set.
//!
//! Function matching (`alpha = 1`, no label term): the class head would get
//! no gradient and still vote at inference, so it learns the teachers
//! instead: `L = KD(s_cls, mean_t z_t) + sum_t mean_b w[b,t] * KD(s_t, z_t)`,
//! the mean of the teacher targets' logits being the function the heads'
//! average should match. Labels then enter no term at all. (Below 1 nothing
//! changes: a continuous blend would have changed every earlier result.)
//!
//! Mixed views (mixup / cutmix stored with the logits) carry two labels and
//! the own label's weight `lam`; their label term is
//! `lam * CE(s, y) + (1 - lam) * CE(s, y2)`.

use crate::vit::VitOutput;
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distill {
    Soft,
    Hard,
}

/// How each view's distillation weight is shared among the teachers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    #[default]
    Uniform,
    Confidence,
    Correct,
}

impl Weighting {
    pub fn is_uniform(&self) -> bool {
        *self == Weighting::Uniform
    }
    pub fn name(self) -> &'static str {
        match self {
            Weighting::Uniform => "uniform",
            Weighting::Confidence => "confidence",
            Weighting::Correct => "correct",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub alpha: f64,
    pub tau: f64,
    pub distill: Distill,
    pub label_smoothing: f64,
}

/// A batch's labels: one class per sample, or for mixed views a second class
/// and the own class's weight `lam` (`[B]`, float).
#[derive(Debug)]
pub struct Labels {
    pub y: Tensor,
    pub mix: Option<(Tensor, Tensor)>,
}

impl Labels {
    pub fn plain(y: Tensor) -> Labels {
        Labels { y, mix: None }
    }

    /// The class a view mostly shows (the partner's when `lam < 1/2`).
    pub fn dominant(&self) -> Tensor {
        match &self.mix {
            None => self.y.shallow_clone(),
            Some((y2, lam)) => self.y.where_self(&lam.ge(0.5), y2),
        }
    }
}

/// Per-sample cross-entropy `[B]` against labels smoothed by `eps` (mass
/// `eps` spread uniformly over all classes, as in PyTorch).
fn ce_rows(logits: &Tensor, y: &Tensor, eps: f64) -> Tensor {
    logits
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, eps)
}

/// Per-sample cross-entropy `[B]` against (possibly mixed) labels.
pub fn cross_entropy_rows(logits: &Tensor, labels: &Labels, eps: f64) -> Tensor {
    let own = ce_rows(logits, &labels.y, eps);
    match &labels.mix {
        None => own,
        Some((y2, lam)) => &own * lam + ce_rows(logits, y2, eps) * (1.0 - lam),
    }
}

/// Mean cross-entropy against labels smoothed by `eps`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Tensor {
    ce_rows(logits, labels, eps).mean(Kind::Float)
}

/// `tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))` per sample `[B]`.
pub fn soft_kd_rows(student: &Tensor, teacher: &Tensor, tau: f64) -> Tensor {
    let log_q = (student.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float);
    let log_p = (teacher.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float);
    (log_p.exp() * (&log_p - log_q)).sum_dim_intlist(-1, false, Kind::Float) * (tau * tau)
}

/// `tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))`, batchmean.
pub fn soft_kd(student: &Tensor, teacher: &Tensor, tau: f64) -> Tensor {
    soft_kd_rows(student, teacher, tau).mean(Kind::Float)
}

/// Cross-entropy of the student against the teacher's argmax, per sample.
pub fn hard_kd_rows(student: &Tensor, teacher: &Tensor) -> Tensor {
    ce_rows(student, &teacher.argmax(-1, false), 0.0)
}

/// Cross-entropy of the student against the teacher's argmax (DeiT hard).
pub fn hard_kd(student: &Tensor, teacher: &Tensor) -> Tensor {
    hard_kd_rows(student, teacher).mean(Kind::Float)
}

/// The ablation's target: one token learns the mean of the teachers' logits.
pub fn average_logits(teachers: &[Tensor]) -> Tensor {
    Tensor::stack(teachers, 0)
        .to_kind(Kind::Float)
        .mean_dim(0, false, Kind::Float)
}

/// Per-view weights `[B, T]` of the teachers (see the module header); each
/// row sums to 1, or to 0 under `correct` when no teacher is right.
pub fn teacher_weights(teachers: &[Tensor], labels: &Labels, w: Weighting) -> Tensor {
    let b = labels.y.size()[0];
    let t = teachers.len() as i64;
    let dev = labels.y.device();
    match w {
        Weighting::Uniform => Tensor::full([b, t], 1.0 / t as f64, (Kind::Float, dev)),
        Weighting::Confidence => {
            let ce: Vec<Tensor> = teachers
                .iter()
                .map(|z| cross_entropy_rows(z, labels, 0.0))
                .collect();
            (-Tensor::stack(&ce, 1)).softmax(1, Kind::Float)
        }
        Weighting::Correct => {
            let target = labels.dominant();
            let right: Vec<Tensor> = teachers
                .iter()
                .map(|z| z.argmax(-1, false).eq_tensor(&target).to_kind(Kind::Float))
                .collect();
            let right = Tensor::stack(&right, 1);
            let n = right.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0);
            right / n
        }
    }
}

/// What the distillation heads learn: one target per head, and each view's
/// weight `[B, heads]` for each head's term.
#[derive(Debug)]
pub struct Targets {
    pub logits: Vec<Tensor>,
    pub weights: Tensor,
}

/// One head per teacher, weighted per view.
pub fn per_teacher_targets(teachers: Vec<Tensor>, labels: &Labels, w: Weighting) -> Targets {
    let weights = teacher_weights(&teachers, labels, w);
    Targets {
        logits: teachers,
        weights,
    }
}

/// One head learning the teachers' logits averaged with the view's weights
/// (the plain mean under `uniform`); its weight is the row's total (0 for a
/// view no teacher gets right under `correct`).
pub fn averaged_target(teachers: &[Tensor], labels: &Labels, w: Weighting) -> Targets {
    let weights = teacher_weights(teachers, labels, w);
    let logits = if w.is_uniform() {
        average_logits(teachers)
    } else {
        let z = Tensor::stack(teachers, 1).to_kind(Kind::Float);
        let total = weights.sum_dim_intlist(1, true, Kind::Float);
        (z * weights.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float) / total.clamp_min(1e-12)
    };
    let weights = weights.sum_dim_intlist(1, true, Kind::Float);
    Targets {
        logits: vec![logits],
        weights,
    }
}

/// The loss and its parts (unweighted), for reporting.
#[derive(Debug)]
pub struct LossParts {
    pub total: Tensor,
    pub ce: Tensor,
    /// One unweighted KD term per distillation head.
    pub kd: Vec<Tensor>,
}

/// The training loss of one batch; `targets` has one target per
/// distillation head (none without teachers).
pub fn student_loss(
    out: &VitOutput,
    labels: &Labels,
    targets: Option<&Targets>,
    cfg: &LossConfig,
) -> LossParts {
    let ce = cross_entropy_rows(&out.cls, labels, cfg.label_smoothing).mean(Kind::Float);
    let Some(targets) = targets.filter(|t| !t.logits.is_empty()) else {
        assert!(out.dist.is_empty(), "distillation heads without targets");
        return LossParts {
            total: ce.shallow_clone(),
            ce,
            kd: vec![],
        };
    };
    assert_eq!(
        out.dist.len(),
        targets.logits.len(),
        "one teacher target per distillation head"
    );
    let kd_rows = |s: &Tensor, z: &Tensor| match cfg.distill {
        Distill::Soft => soft_kd_rows(s, z, cfg.tau),
        Distill::Hard => hard_kd_rows(s, z),
    };
    let mut total = if cfg.alpha >= 1.0 {
        kd_rows(&out.cls, &average_logits(&targets.logits)).mean(Kind::Float)
    } else {
        &ce * (1.0 - cfg.alpha)
    };
    let mut kd = vec![];
    for (h, (s, z)) in out.dist.iter().zip(&targets.logits).enumerate() {
        let rows = kd_rows(s, z);
        let w = targets.weights.select(1, h as i64);
        total += (&rows * w).mean(Kind::Float) * cfg.alpha;
        kd.push(rows.mean(Kind::Float));
    }
    LossParts { total, ce, kd }
}

#[cfg(test)]
mod tests;
