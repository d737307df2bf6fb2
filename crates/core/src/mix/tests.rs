use super::*;
use crate::view::ViewSpec;

const HW: [usize; 2] = [28, 28];

fn spec(mode: MixMode, prob: f64, alpha: f64) -> MixSpec {
    MixSpec {
        mode,
        prob,
        alpha,
        ..MixSpec::default()
    }
}

#[test]
fn chunk_partners_stay_in_their_chunk_and_change_nothing_else() {
    let any = spec(MixMode::MixupCutmix, 1.0, 1.0);
    let chunk = MixSpec {
        partners: Partners::Chunk,
        ..any
    }
    .in_chunks_of(64);
    let n = 1000u64;
    let mut spread = std::collections::BTreeSet::new();
    for s in 0..n {
        for v in 1..4 {
            let (a, c) = (any.draw(7, s, v, n, HW), chunk.draw(7, s, v, n, HW));
            assert!(c.is_mixed());
            assert_ne!(c.partner as u64, s, "not itself");
            if s < 960 {
                // Chunks of 64; the last, 40 samples, is its own too.
                assert_eq!(c.partner as u64 / 64, s / 64, "sample {s}");
            } else {
                assert!((960..n).contains(&(c.partner as u64)));
            }
            spread.insert(c.partner as u64 % 64);
            // The rest of the draw is the any-partner rule's.
            assert_eq!(
                (a.kind, a.lam_q, a.y0, a.x0, a.h, a.w),
                (c.kind, c.lam_q, c.y0, c.x0, c.h, c.w)
            );
        }
    }
    assert_eq!(spread.len(), 64, "every position of a chunk is drawn");
    // A last chunk of one sample takes a partner from anywhere.
    let c = chunk.draw(7, 1000, 1, 1001, HW);
    assert!(c.is_mixed() && c.partner < 1000);
    // The recorded spec says "chunk" only when it is.
    assert!(!serde_json::to_string(&any).unwrap().contains("partners"));
    assert!(
        serde_json::to_string(&chunk)
            .unwrap()
            .contains(r#""partners":"chunk""#)
    );
}

#[test]
fn view_zero_and_mode_none_are_never_mixed() {
    let s = spec(MixMode::MixupCutmix, 1.0, 1.0);
    assert!((0..500).all(|i| s.draw(3, i, 0, 1000, HW) == MixParams::NONE));
    assert!((1..500).all(|i| s.draw(3, i, 1, 1000, HW).is_mixed()));
    let none = spec(MixMode::None, 1.0, 1.0);
    assert!((0..500).all(|i| none.draw(3, i, 2, 1000, HW) == MixParams::NONE));
    // One sample has no partner.
    assert_eq!(s.draw(3, 0, 1, 1, HW), MixParams::NONE);
    let never = spec(MixMode::Mixup, 0.0, 1.0);
    assert!((0..500).all(|i| !never.draw(3, i, 1, 1000, HW).is_mixed()));
}

#[test]
fn draws_are_pure_and_keyed() {
    let s = spec(MixMode::MixupCutmix, 0.5, 0.4);
    for i in 0..200 {
        for v in 1..4 {
            assert_eq!(s.draw(9, i, v, 300, HW), s.draw(9, i, v, 300, HW));
        }
    }
    let a: Vec<_> = (0..200).map(|i| s.draw(9, i, 1, 300, HW)).collect();
    let b: Vec<_> = (0..200).map(|i| s.draw(10, i, 1, 300, HW)).collect();
    assert_ne!(a, b);
    // The crop stream does not move when mixing is switched on.
    let vs = ViewSpec::default();
    let pairs: Vec<(usize, usize)> = (0..50).flat_map(|i| (0..4).map(move |v| (i, v))).collect();
    let plain = ViewBatch::draw(&vs, &MixSpec::default(), 9, 50, HW, &pairs);
    let mixed = ViewBatch::draw(&vs, &s, 9, 50, HW, &pairs);
    assert_eq!(plain.views, mixed.views);
    assert!(plain.mixes.iter().all(|m| *m == MixParams::NONE));
    assert_eq!(plain.partner_views, plain.views);
    for ((p, m), &(_, v)) in mixed.partner_views.iter().zip(&mixed.mixes).zip(&pairs) {
        if m.is_mixed() {
            assert_eq!(*p, vs.draw(HW, 9, m.partner as u64, v as u64));
        }
    }
    assert_eq!(mixed.slice(4, 8).mixes, mixed.mixes[4..8]);
}

#[test]
fn proportions_partners_and_lambda() {
    let n = 20_000u64;
    let s = spec(MixMode::MixupCutmix, 0.3, 1.0);
    // 1000 samples x 20 views.
    let d: Vec<MixParams> = (0..n)
        .map(|i| s.draw(1, i % 1000, 1 + i / 1000, 1000, HW))
        .collect();
    let mixed = d.iter().filter(|m| m.is_mixed()).count() as f64 / n as f64;
    assert!((mixed - 0.3).abs() < 0.015, "{mixed}");
    let mixup = d.iter().filter(|m| m.kind == MixKind::Mixup).count() as f64;
    let cutmix = d.iter().filter(|m| m.kind == MixKind::Cutmix).count() as f64;
    assert!((mixup / (mixup + cutmix) - 0.5).abs() < 0.03);
    for (i, m) in d.iter().enumerate().filter(|(_, m)| m.is_mixed()) {
        assert!(m.partner < 1000 && m.partner as usize != i % 1000);
    }
    // Partners: never the sample itself, uniform over the others.
    let s2 = spec(MixMode::Mixup, 1.0, 1.0);
    let mut counts = [0usize; 5];
    for v in 1..4001 {
        let m = s2.draw(2, 3, v, 5, HW);
        counts[m.partner as usize] += 1;
    }
    assert_eq!(counts[3], 0);
    assert!(
        counts
            .iter()
            .enumerate()
            .all(|(i, &c)| i == 3 || (900..1100).contains(&c)),
        "{counts:?}"
    );
    // Beta(1,1) is uniform: mean 1/2, a quarter below 1/4.
    let lams: Vec<f64> = (0..n)
        .map(|i| s2.draw(4, i, 1, 1000, HW).own_weight(28, 28))
        .collect();
    let mean = lams.iter().sum::<f64>() / n as f64;
    let low = lams.iter().filter(|&&l| l < 0.25).count() as f64 / n as f64;
    assert!(
        (mean - 0.5).abs() < 0.01 && (low - 0.25).abs() < 0.015,
        "{mean} {low}"
    );
    // Beta(0.2, 0.2) is U-shaped: most mass near 0 and 1, mean 1/2.
    let u = spec(MixMode::Mixup, 1.0, 0.2);
    let lams: Vec<f64> = (0..n)
        .map(|i| u.draw(4, i, 1, 1000, HW).own_weight(28, 28))
        .collect();
    let ends = lams.iter().filter(|&&l| !(0.1..=0.9).contains(&l)).count() as f64 / n as f64;
    let mean = lams.iter().sum::<f64>() / n as f64;
    // P(|lam - 1/2| > 0.4) for Beta(0.2, 0.2) is about 0.65.
    assert!(ends > 0.6 && (mean - 0.5).abs() < 0.02, "{ends} {mean}");
    // Beta(4, 4): concentrated, variance 1/36.
    let c = spec(MixMode::Mixup, 1.0, 4.0);
    let lams: Vec<f64> = (0..n)
        .map(|i| c.draw(4, i, 1, 1000, HW).own_weight(28, 28))
        .collect();
    let var = lams.iter().map(|l| (l - 0.5).powi(2)).sum::<f64>() / n as f64;
    assert!((var - 1.0 / 36.0).abs() < 0.002, "{var}");
}

#[test]
fn cutmix_boxes_lie_inside_the_image_and_match_lambda() {
    let s = spec(MixMode::Cutmix, 1.0, 1.0);
    let (mut area, n) = (0.0, 20_000u64);
    for i in 0..n {
        for hw in [[28, 28], [7, 5]] {
            let m = s.draw(5, i, 2, 100, hw);
            assert_eq!(m.kind, MixKind::Cutmix);
            assert_eq!(m.lam_q, 0);
            assert!(
                m.y0 as usize + m.h as usize <= hw[0] && m.x0 as usize + m.w as usize <= hw[1],
                "{m:?}"
            );
            let (y0, y1, x0, x1) = m.clipped_box(hw[0], hw[1]);
            assert_eq!(
                (y0, y1 - y0, x0, x1 - x0),
                (m.y0 as usize, m.h as usize, m.x0 as usize, m.w as usize)
            );
            if hw == [28, 28] {
                area += 1.0 - m.own_weight(28, 28);
            }
        }
    }
    // E[box share] < E[1 - lam] = 1/2 because clipping only shrinks boxes.
    let share = area / n as f64;
    assert!((0.2..0.5).contains(&share), "{share}");
}

#[test]
fn own_weight_and_storage_by_hand() {
    assert_eq!(MixParams::NONE.own_weight(28, 28), 1.0);
    let m = MixParams {
        partner: 7,
        kind: MixKind::Mixup,
        lam_q: 16384,
        ..MixParams::NONE
    };
    assert_eq!(m.own_weight(28, 28), 16384.0 / 65535.0);
    assert_eq!(m.lam_f32(), 16384.0f32 / 65535.0);
    let c = MixParams {
        partner: 3,
        kind: MixKind::Cutmix,
        y0: 2,
        x0: 4,
        h: 7,
        w: 4,
        ..MixParams::NONE
    };
    assert_eq!(c.own_weight(14, 14), 1.0 - 28.0 / 196.0);
    // A box hanging over the edge counts only its inside part.
    let over = MixParams { y0: 10, h: 9, ..c };
    assert_eq!(over.own_weight(14, 14), 1.0 - 16.0 / 196.0);
    for p in [MixParams::NONE, m, c] {
        assert_eq!(MixParams::from_slice(&p.to_array()), Some(p));
    }
    assert_eq!(c.to_array(), [2, 3, 0, 2, 4, 7, 4]);
    assert_eq!(MixParams::from_slice(&[3, 0, 0, 0, 0, 0, 0]), None);
    assert_eq!(MixParams::from_slice(&[1, 0, 70000, 0, 0, 0, 0]), None);
    assert_eq!(MixParams::from_slice(&[1, 0, 0]), None);
}

#[test]
fn settings_are_validated_with_their_names() {
    assert!(MixSpec::default().validate().is_ok());
    let setting = |e: crate::CoreError| e.as_setting().map(|s| s.setting().to_string());
    for p in [-0.1, 1.5, f64::NAN] {
        let e = spec(MixMode::Mixup, p, 1.0).validate().unwrap_err();
        assert_eq!(setting(e).as_deref(), Some("mix_prob"));
    }
    for a in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        let e = spec(MixMode::Mixup, 0.5, a).validate().unwrap_err();
        assert_eq!(setting(e).as_deref(), Some("mix_alpha"));
    }
    assert_eq!(
        "mixup-cutmix".parse::<MixMode>().unwrap(),
        MixMode::MixupCutmix
    );
    assert_eq!("CutMix".parse::<MixMode>().unwrap(), MixMode::Cutmix);
    let e = "mixupp".parse::<MixMode>().unwrap_err();
    assert!(
        matches!(e.as_setting(), Some(crate::SettingError::Unknown { setting, value, known })
            if setting == "mix" && value == "mixupp" && known.iter().any(|k| k == "mixup-cutmix")),
        "{e}"
    );
    let j = serde_json::to_value(spec(MixMode::MixupCutmix, 0.25, 0.5)).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"mode": "mixup-cutmix", "prob": 0.25, "alpha": 0.5})
    );
    assert_eq!(
        serde_json::from_value::<MixSpec>(j).unwrap().mode,
        MixMode::MixupCutmix
    );
    for m in MixMode::NAMES {
        assert_eq!(m.parse::<MixMode>().unwrap().name(), m);
    }
}
