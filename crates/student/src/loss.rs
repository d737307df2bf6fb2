//! The student's losses, as small pure functions of logits.
//!
//! With student logits `s_cls, s_1..s_T`, teacher logits `z_1..z_T`, labels `y`:
//!
//! `L = (1-alpha) * CE_ls(s_cls, y) + alpha/T * sum_t KD(s_t, z_t)`
//!
//! where soft `KD = tau^2 * KL(softmax(z/tau) || softmax(s/tau))` and hard
//! `KD = CE(s, argmax z)` (DeiT's hard distillation). Without teachers
//! `L = CE_ls(s_cls, y)`.
//!
//! KL normalisation: **batchmean** (sum over classes, mean over the batch),
//! the true per-sample KL divergence, as in Co-advise and PyTorch's
//! recommendation. DeiT's `reduction='sum' / (batch * classes)` (a legacy
//! kept for reproducibility, DeiT issue 61) would shrink the term by the class
//! count and so tie the meaning of `alpha` to the data set.

use crate::vit::VitOutput;
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distill {
    Soft,
    Hard,
}

impl std::str::FromStr for Distill {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "soft" => Ok(Distill::Soft),
            "hard" => Ok(Distill::Hard),
            _ => Err(format!("'{s}': expected soft or hard")),
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

/// Mean cross-entropy against labels smoothed by `eps` (mass `eps` spread
/// uniformly over all classes, as in PyTorch).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Tensor {
    logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        labels,
        None,
        Reduction::Mean,
        -100,
        eps,
    )
}

/// `tau^2 * KL(softmax(teacher/tau) || softmax(student/tau))`, batchmean.
pub fn soft_kd(student: &Tensor, teacher: &Tensor, tau: f64) -> Tensor {
    let log_q = (student.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float);
    let log_p = (teacher.to_kind(Kind::Float) / tau).log_softmax(-1, Kind::Float);
    let kl = (log_p.exp() * (&log_p - log_q)).sum_dim_intlist(-1, false, Kind::Float);
    kl.mean(Kind::Float) * (tau * tau)
}

/// Cross-entropy of the student against the teacher's argmax (DeiT hard).
pub fn hard_kd(student: &Tensor, teacher: &Tensor) -> Tensor {
    cross_entropy(student, &teacher.argmax(-1, false), 0.0)
}

/// The ablation's target: one token learns the mean of the teachers' logits.
pub fn average_logits(teachers: &[Tensor]) -> Tensor {
    Tensor::stack(teachers, 0)
        .to_kind(Kind::Float)
        .mean_dim(0, false, Kind::Float)
}

/// The loss and its parts (unweighted), for reporting.
#[derive(Debug)]
pub struct LossParts {
    pub total: Tensor,
    pub ce: Tensor,
    /// One unweighted KD term per distillation head.
    pub kd: Vec<Tensor>,
}

/// The training loss of one batch. `targets[t]` is the teacher logits that
/// distillation head `t` learns (one per head).
pub fn student_loss(
    out: &VitOutput,
    labels: &Tensor,
    targets: &[Tensor],
    cfg: &LossConfig,
) -> LossParts {
    assert_eq!(
        out.dist.len(),
        targets.len(),
        "one teacher target per distillation head"
    );
    let ce = cross_entropy(&out.cls, labels, cfg.label_smoothing);
    if targets.is_empty() {
        return LossParts {
            total: ce.shallow_clone(),
            ce,
            kd: vec![],
        };
    }
    let kd: Vec<Tensor> = out
        .dist
        .iter()
        .zip(targets)
        .map(|(s, z)| match cfg.distill {
            Distill::Soft => soft_kd(s, z, cfg.tau),
            Distill::Hard => hard_kd(s, z),
        })
        .collect();
    let t = kd.len() as f64;
    let mut total = &ce * (1.0 - cfg.alpha);
    for k in &kd {
        total += k * (cfg.alpha / t);
    }
    LossParts { total, ce, kd }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, -1])
    }

    fn val(x: &Tensor) -> f64 {
        f64::try_from(x).unwrap()
    }

    const LN3: f32 = 1.098_612_3;

    #[test]
    fn label_smoothed_ce_by_hand() {
        // softmax([0, ln 3]) = [1/4, 3/4]; target 0, eps 0.2 over 2 classes: q = [0.9, 0.1].
        let got = val(&cross_entropy(
            &t(&[&[0.0, LN3]]),
            &Tensor::from_slice(&[0i64]),
            0.2,
        ));
        let want = -(0.9 * 0.25f64.ln() + 0.1 * 0.75f64.ln());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        let plain = val(&cross_entropy(
            &t(&[&[0.0, LN3]]),
            &Tensor::from_slice(&[1i64]),
            0.0,
        ));
        assert!((plain - (-(0.75f64.ln()))).abs() < 1e-6);
    }

    #[test]
    fn soft_kd_is_batchmean_kl_times_tau_squared() {
        // Row 0: teacher [1/4, 3/4] vs student [1/2, 1/2]; row 1: identical (KL 0).
        let s = t(&[&[0.0, 0.0], &[0.3, -0.2]]);
        let z = t(&[&[0.0, LN3], &[0.3, -0.2]]);
        let kl0 = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        let got = val(&soft_kd(&s, &z, 1.0));
        assert!((got - kl0 / 2.0).abs() < 1e-6, "{got} vs {}", kl0 / 2.0);
        // tau 2: teacher softmax([0, ln3/2]) = [1, sqrt 3] / (1 + sqrt 3), times 4.
        let r3 = 3f64.sqrt();
        let (p0, p1) = (1.0 / (1.0 + r3), r3 / (1.0 + r3));
        let kl = p0 * (p0 / 0.5).ln() + p1 * (p1 / 0.5).ln();
        let got = val(&soft_kd(&s, &z, 2.0));
        assert!((got - 4.0 * kl / 2.0).abs() < 1e-6, "{got} vs {}", 2.0 * kl);
        // DeiT's batch*classes normalisation would give half of this here (2 classes).
        assert!((got - 2.0 * kl / 2.0).abs() > 1e-3);
    }

    #[test]
    fn hard_kd_uses_teacher_argmax() {
        let s = t(&[&[0.0, LN3]]);
        let got = val(&hard_kd(&s, &t(&[&[5.0, -1.0]])));
        assert!((got - (-(0.25f64.ln()))).abs() < 1e-6);
    }

    #[test]
    fn weighting_and_ablation_target() {
        let out = VitOutput {
            cls: t(&[&[0.0, LN3]]),
            dist: vec![t(&[&[0.0, 0.0]]), t(&[&[0.0, LN3]])],
        };
        let y = Tensor::from_slice(&[1i64]);
        let z = vec![t(&[&[0.0, LN3]]), t(&[&[0.0, 0.0]])];
        let cfg = LossConfig {
            alpha: 0.25,
            tau: 1.0,
            distill: Distill::Soft,
            label_smoothing: 0.0,
        };
        let p = student_loss(&out, &y, &z, &cfg);
        let ce = -(0.75f64.ln());
        let kl_a = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        let kl_b = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        let want = 0.75 * ce + 0.25 / 2.0 * (kl_a + kl_b);
        assert!(
            (val(&p.total) - want).abs() < 1e-6,
            "{} vs {want}",
            val(&p.total)
        );
        assert_eq!(p.kd.len(), 2);
        let none = student_loss(
            &VitOutput {
                cls: out.cls.shallow_clone(),
                dist: vec![],
            },
            &y,
            &[],
            &cfg,
        );
        assert!(
            (val(&none.total) - ce).abs() < 1e-6,
            "no teacher: plain CE at full weight"
        );
        let avg: Vec<f32> = Vec::try_from(average_logits(&z).view([-1])).unwrap();
        assert!((avg[0] - 0.0).abs() < 1e-7 && (avg[1] - LN3 / 2.0).abs() < 1e-6);
    }
}
