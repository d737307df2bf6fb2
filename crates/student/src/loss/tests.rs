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
    let y = Labels::plain(Tensor::from_slice(&[1i64]));
    let z = vec![t(&[&[0.0, LN3]]), t(&[&[0.0, 0.0]])];
    let cfg = LossConfig {
        alpha: 0.25,
        tau: 1.0,
        distill: Distill::Soft,
        label_smoothing: 0.0,
    };
    let tg = per_teacher_targets(
        z.iter().map(Tensor::shallow_clone).collect(),
        &y,
        Weighting::Uniform,
    );
    let p = student_loss(&out, &y, Some(&tg), &cfg);
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
        None,
        &cfg,
    );
    assert!(
        (val(&none.total) - ce).abs() < 1e-6,
        "no teacher: plain CE at full weight"
    );
    let avg: Vec<f32> = Vec::try_from(average_logits(&z).view([-1])).unwrap();
    assert!((avg[0] - 0.0).abs() < 1e-7 && (avg[1] - LN3 / 2.0).abs() < 1e-6);
}

/// alpha = 1: no label term; the class head matches the teachers'
/// averaged logits, so it is trained, and the labels change nothing.
#[test]
fn alpha_one_trains_every_head_on_the_teachers_alone() {
    let cls = t(&[&[0.0, LN3]]).set_requires_grad(true);
    let out = VitOutput {
        cls: cls.shallow_clone(),
        dist: vec![t(&[&[0.0, 0.0]]), t(&[&[0.0, LN3]])],
    };
    let z = [t(&[&[0.0, LN3]]), t(&[&[0.0, 0.0]])];
    let cfg = LossConfig {
        alpha: 1.0,
        tau: 1.0,
        distill: Distill::Soft,
        label_smoothing: 0.1,
    };
    let loss_for = |label: i64| {
        let y = Labels::plain(Tensor::from_slice(&[label]));
        let tg = per_teacher_targets(
            z.iter().map(Tensor::shallow_clone).collect(),
            &y,
            Weighting::Uniform,
        );
        student_loss(&out, &y, Some(&tg), &cfg).total
    };
    // Mean teacher logits (0, ln3 / 2): p = (1, sqrt 3) / (1 + sqrt 3).
    let r3 = 3f64.sqrt();
    let (p0, p1) = (1.0 / (1.0 + r3), r3 / (1.0 + r3));
    let kl_cls = p0 * (p0 / 0.25).ln() + p1 * (p1 / 0.75).ln();
    let kl_a = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
    let kl_b = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
    let want = kl_cls + 0.5 * (kl_a + kl_b);
    let l0 = loss_for(0);
    assert!((val(&l0) - want).abs() < 1e-6, "{} vs {want}", val(&l0));
    assert_eq!(val(&l0), val(&loss_for(1)), "a label entered the loss");
    l0.backward();
    let g = f64::try_from(cls.grad().abs().sum(Kind::Float)).unwrap();
    assert!(g > 1e-3, "class head got no gradient");
}

fn rows(x: &Tensor) -> Vec<Vec<f32>> {
    let (b, _) = x.size2().unwrap();
    (0..b)
        .map(|i| Vec::<f32>::try_from(x.get(i)).unwrap())
        .collect()
}

fn close(a: &[Vec<f32>], b: &[&[f32]]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(r, s)| r.len() == s.len() && r.iter().zip(*s).all(|(x, y)| (x - y).abs() < 1e-6))
}

#[test]
fn confidence_weights_by_hand() {
    // y = 1: CE(z1) = -ln 3/4, CE(z2) = -ln 1/2, so w = [3/4, 1/2] / (5/4).
    let z = [t(&[&[0.0, LN3]]), t(&[&[0.0, 0.0]])];
    let y = Labels::plain(Tensor::from_slice(&[1i64]));
    let w = rows(&teacher_weights(&z, &y, Weighting::Confidence));
    assert!(close(&w, &[&[0.6, 0.4]]), "{w:?}");
    let u = rows(&teacher_weights(&z, &y, Weighting::Uniform));
    assert!(close(&u, &[&[0.5, 0.5]]), "{u:?}");
}

#[test]
fn correct_weights_drop_wrong_teachers_and_renormalise() {
    // Row 0: only z1 right; row 1: both right; row 2: neither right.
    let z1 = t(&[&[0.0, 1.0], &[5.0, 0.0], &[1.0, 0.0]]);
    let z2 = t(&[&[1.0, 0.0], &[4.0, 0.0], &[2.0, 0.0]]);
    let y = Labels::plain(Tensor::from_slice(&[1i64, 0, 1]));
    let w = rows(&teacher_weights(
        &[z1.shallow_clone(), z2.shallow_clone()],
        &y,
        Weighting::Correct,
    ));
    assert!(close(&w, &[&[1.0, 0.0], &[0.5, 0.5], &[0.0, 0.0]]), "{w:?}");
    // A view no teacher gets right keeps only (1 - alpha) * CE.
    let s = t(&[&[0.0, LN3], &[0.0, LN3], &[0.0, LN3]]);
    let out = VitOutput {
        cls: s.shallow_clone(),
        dist: vec![s.shallow_clone(), s.shallow_clone()],
    };
    let cfg = LossConfig {
        alpha: 0.5,
        tau: 1.0,
        distill: Distill::Soft,
        label_smoothing: 0.0,
    };
    let tg = per_teacher_targets(vec![z1, z2], &y, Weighting::Correct);
    let p = student_loss(&out, &y, Some(&tg), &cfg);
    let ce = [-(0.75f64.ln()), -(0.25f64.ln()), -(0.75f64.ln())];
    let kd = |zt: [f64; 2]| {
        // KL(softmax(zt) || [1/4, 3/4]).
        let m = zt[0].max(zt[1]);
        let e = [(zt[0] - m).exp(), (zt[1] - m).exp()];
        let p = [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])];
        p[0] * (p[0] / 0.25).ln() + p[1] * (p[1] / 0.75).ln()
    };
    let want = 0.5 * (ce[0] + ce[1] + ce[2]) / 3.0
        + 0.5 * (kd([0.0, 1.0]) + 0.5 * kd([5.0, 0.0]) + 0.5 * kd([4.0, 0.0])) / 3.0;
    assert!(
        (val(&p.total) - want).abs() < 1e-5,
        "{} vs {want}",
        val(&p.total)
    );
}

#[test]
fn averaged_target_under_weights() {
    let z = [t(&[&[0.0, LN3]]), t(&[&[0.0, 0.0]])];
    let y = Labels::plain(Tensor::from_slice(&[1i64]));
    let a = averaged_target(&z, &y, Weighting::Confidence);
    assert!(close(&rows(&a.logits[0]), &[&[0.0, 0.6 * LN3]]));
    assert!(close(&rows(&a.weights), &[&[1.0]]));
    let u = averaged_target(&z, &y, Weighting::Uniform);
    assert!(close(&rows(&u.logits[0]), &[&[0.0, LN3 / 2.0]]));
    // Neither right under `correct` (z2's argmax is class 0; y = 0 makes z1 wrong).
    let y0 = Labels::plain(Tensor::from_slice(&[0i64]));
    let c = averaged_target(
        &[t(&[&[0.0, 1.0]]), t(&[&[0.0, 2.0]])],
        &y0,
        Weighting::Correct,
    );
    assert!(close(&rows(&c.weights), &[&[0.0]]));
    assert!(val(&c.logits[0].abs().sum(Kind::Float)).is_finite());
}

#[test]
fn mixed_labels_weight_both_classes() {
    // softmax = [1/4, 3/4]; own class 0 with lam 0.25, partner class 1.
    let l = Labels {
        y: Tensor::from_slice(&[0i64]),
        mix: Some((Tensor::from_slice(&[1i64]), Tensor::from_slice(&[0.25f32]))),
    };
    let got = val(&cross_entropy_rows(&t(&[&[0.0, LN3]]), &l, 0.0).sum(Kind::Float));
    let want = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    assert_eq!(i64::try_from(l.dominant().get(0)).unwrap(), 1);
}
